"""NumPy augmentation (chapter 08): the affine maps do what Keras's ImageDataGenerator does."""
import numpy as np
import pytest
from dl_from_scratch.augment import affine_transform, random_augment


@pytest.fixture
def img():
    return np.random.default_rng(0).random((4, 7, 7, 3)).astype(np.float32)


def test_identity_rotation_shift_and_fill(img):
    np.testing.assert_array_equal(affine_transform(img), img)
    np.testing.assert_allclose(affine_transform(img, theta=np.pi / 2), np.rot90(img, k=-1, axes=(1, 2)), atol=1e-5)
    np.testing.assert_allclose(affine_transform(img, theta=np.pi), img[:, ::-1, ::-1], atol=1e-5)
    np.testing.assert_allclose(affine_transform(img, ty=2.0)[:, :, :-2], img[:, :, 2:], atol=1e-6)   # columns shift
    np.testing.assert_allclose(affine_transform(img, tx=-50.0), np.broadcast_to(img[:, :1], img.shape), atol=1e-6)


def test_zoom_keeps_the_centre_and_per_image_parameters(img):
    z = affine_transform(img, zx=np.array([0.5, 1.0, 1.5, 2.0]), zy=0.7)
    np.testing.assert_allclose(z[:, 3, 3], img[:, 3, 3], atol=1e-6)       # odd size: the centre pixel is a fixed point
    np.testing.assert_allclose(z[1], affine_transform(img[1:2], zy=0.7)[0], atol=1e-6)


def test_random_augment_is_seeded_and_flips(img):
    a, b = random_augment(img, rotation_range=40, zoom_range=0.2, rng=3), random_augment(img, rotation_range=40, zoom_range=0.2, rng=3)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, img)
    f = random_augment(np.repeat(img[:1], 64, 0), horizontal_flip=True, rng=0)
    flipped = [np.allclose(x, img[0, :, ::-1]) for x in f]
    assert all(fl or np.allclose(x, img[0]) for fl, x in zip(flipped, f))
    assert 10 < sum(flipped) < 54                                          # about half
    assert random_augment(img.astype(np.uint8)).dtype == np.float32


def test_bad_input():
    with pytest.raises(ValueError, match=r'rank 4, got shape \(7, 7\)'):
        affine_transform(np.zeros((7, 7)))
    with pytest.raises(ValueError, match='NaN'):
        random_augment(np.full((1, 2, 2, 1), np.nan))
