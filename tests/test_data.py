"""The data layer: TFDS loading (mock data anywhere, real data when prepared), caching, batching, synthetic sets."""
import os, time
from pathlib import Path
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dl_from_scratch import data
from dl_from_scratch.data import (load, BatchIterator, DatasetNotFoundError, synthetic_linear, xor, make_moons,
                                  planar_flower, spirals, one_hot, atomic_savez)

REAL = data.data_dir()
def have(name): return (REAL / name).is_dir()
needs = lambda name: pytest.mark.skipif(not have(name), reason=f"{name} is not prepared under TFDS_DATA_DIR ({REAL})")


# ---------------------------------------------------------------- anywhere: mock data and errors
@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('fashion_mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_mock_images(tmp_path, monkeypatch, name, shape):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'empty'))
    with tfds.testing.mock_data(num_examples=5):
        x, y = load(name, 'test', cache_dir=tmp_path, progress=False)
    assert x.shape == (5, *shape) and x.dtype == np.uint8
    assert y.shape == (5,) and y.dtype == np.int64 and ((0 <= y) & (y < 10)).all()
    assert (tmp_path / f'{name}-test.npz').exists()

def test_mock_text(tmp_path):
    with tfds.testing.mock_data(num_examples=1):
        t = load('tiny_shakespeare', 'train', cache_dir=tmp_path, progress=False)
    assert isinstance(t, str) and len(t) > 0

def test_cache_is_used(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        x, y = load('mnist', 'train', cache_dir=tmp_path, progress=False)
    # Outside the mock, TFDS would read different data (or none): equal arrays prove the cache answered.
    x2, y2 = load('mnist', 'train', cache_dir=tmp_path, data_dir=tmp_path / 'nothing', progress=False)
    np.testing.assert_array_equal(x, x2); np.testing.assert_array_equal(y, y2)

def test_corrupt_cache_is_rebuilt(tmp_path):
    (tmp_path / 'mnist-train.npz').write_bytes(b'not a zip file')
    with tfds.testing.mock_data(num_examples=3):
        x, _ = load('mnist', 'train', cache_dir=tmp_path, progress=False)
    assert x.shape[0] == 3
    assert np.load(tmp_path / 'mnist-train.npz')['x'].shape[0] == 3

def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match='known datasets: cifar10, fashion_mnist, mnist, tiny_shakespeare'):
        load('imagenet')

def test_bad_split_name():
    with pytest.raises(ValueError, match='plain split name'):
        load('mnist', 'train[:10%]')

def test_absent_dataset_names_directory_and_how_to_get_it(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as e:
        load('mnist', 'train', data_dir=tmp_path, cache_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and 'download=True' in msg and 'TFDS_DATA_DIR' in msg
    assert time.perf_counter() - t0 < 30, "an offline miss must fail fast, never wait on the network"

def test_atomic_savez_keeps_old_file_on_crash(tmp_path, monkeypatch):
    p = atomic_savez(tmp_path / 'c.npz', x=np.arange(5))
    def crash(f, **kw):
        f.write(b'PK partial'); raise KeyboardInterrupt   # killed mid-write
    monkeypatch.setattr(np, 'savez', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(p, x=np.arange(99))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(p)['x'], np.arange(5))
    assert sorted(os.listdir(tmp_path)) == ['c.npz']


# ---------------------------------------------------------------- batching and synthetic sets
def test_batch_iterator_covers_every_example_once_per_epoch():
    x, y = np.arange(103)[:, None], np.arange(103)
    it = BatchIterator(x, y, batch_size=10, shuffle=True, rng=np.random.default_rng(3))
    assert len(it) == 11
    for _ in range(2):
        seen = np.concatenate([yb for _, yb in it]); assert sorted(seen) == list(range(103))
        assert all((xb[:, 0] == yb).all() for xb, yb in it)
    assert len(BatchIterator(x, batch_size=10, drop_last=True)) == 10
    assert all(len(b) == 10 for b in BatchIterator(x, batch_size=10, drop_last=True))

def test_batch_iterator_rejects_bad_input():
    with pytest.raises(ValueError, match='equal length'): BatchIterator(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match='batch_size'): BatchIterator(np.zeros(3), batch_size=0)

def test_synthetic_linear_matches_d2l_parameters():
    X, y = synthetic_linear(n=5000, rng=1)
    A = np.c_[X, np.ones(len(X))].astype(np.float64)
    coef = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)[0].ravel()
    np.testing.assert_allclose(coef, [2, -3.4, 4.2], atol=1e-3)
    resid = y.ravel() - A @ coef
    assert abs(resid.std() - 0.01) < 1e-3

def test_moons_flower_spirals_xor():
    X, y = make_moons(1000, noise=0.0, rng=0, shuffle=False)
    np.testing.assert_allclose(np.hypot(*X[y == 0].T), 1, atol=1e-6)            # upper moon on the unit circle
    np.testing.assert_allclose(np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5), 1, atol=1e-6)
    Xf, yf = planar_flower()
    assert Xf.shape == (400, 2) and np.bincount(yf).tolist() == [200, 200] and np.abs(Xf).max() < 5
    Xs, ys = spirals(30, 4, rng=0); assert Xs.shape == (120, 2) and set(ys) == {0, 1, 2, 3}
    X4, y4 = xor(); assert ((X4[:, 0] != X4[:, 1]) == y4.ravel().astype(bool)).all()

def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([1, 0, 2])), np.eye(3)[[1, 0, 2]])
    with pytest.raises(ValueError, match='labels'): one_hot(np.array([0.5]))


# ---------------------------------------------------------------- real data (skipped unless prepared)
@needs('mnist')
def test_mnist_real():
    (xtr, ytr), (xte, yte) = load('mnist', 'train'), load('mnist', 'test')
    assert (len(xtr), len(xte)) == (60000, 10000)
    assert xtr.shape[1:] == (28, 28, 1) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert ytr.min() == 0 and ytr.max() == 9 and len(np.unique(ytr)) == 10
    assert abs(xte.mean() / 255 - 0.1325) < 5e-4

@needs('fashion_mnist')
def test_fashion_mnist_real():
    (xtr, _), (xte, yte) = load('fashion_mnist', 'train'), load('fashion_mnist', 'test')
    assert (len(xtr), len(xte)) == (60000, 10000) and set(np.unique(yte)) == set(range(10))
    assert abs(xte.mean() / 255 - 0.2868) < 5e-4

@needs('cifar10')
def test_cifar10_real():
    (xtr, ytr), (xte, yte) = load('cifar10', 'train'), load('cifar10', 'test')
    assert (len(xtr), len(xte)) == (50000, 10000) and xtr.shape[1:] == (32, 32, 3)
    assert np.bincount(ytr).tolist() == [5000] * 10
    np.testing.assert_allclose(xtr.reshape(-1, 3).mean(0) / 255, [0.4914, 0.4822, 0.4465], atol=5e-4)

@needs('tiny_shakespeare')
def test_tiny_shakespeare_real():
    text = load('tiny_shakespeare', 'train')
    assert isinstance(text, str) and len(text) == 1_003_854
    assert text.startswith('First Citizen')
