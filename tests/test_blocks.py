"Chapter 09's blocks: gradient checks in float64, shapes, Keras's parameter counts, SpatialDropout2D, the fast-training helpers."
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad
from dl_from_scratch.merge import check_graph_grad, Add
from dl_from_scratch.layers import BatchNorm
from dl_from_scratch.conv import Conv2D
from dl_from_scratch.model import Model, Input
from dl_from_scratch.losses import CategoricalCrossentropy
from dl_from_scratch.optim import SGD, OneCycle
from dl_from_scratch.augment import random_crop_flip
from dl_from_scratch.blocks import (SpatialDropout2D, conv_bn, residual_block, bottleneck_block, inception_module,
                                    auxiliary_head, separable_block, inverted_residual_block, resnet20, resnet50, vgg16,
                                    mobilenet_v2, conv_multiplies, smooth_labels,
                                    patch_whitening, fast_resnet, predict_flip_tta)


def _model(make, shape, rng=0):
    x = Input(shape)
    return Model(x, make(x, rng))


def _graph_errors(model, x):
    rg = np.random.default_rng(1)
    for p in model.params.values():                      # zero biases on all-zero ReLU windows would sit on the kink
        p += 0.1 * rg.standard_normal(p.shape)
    errs = check_graph_grad(model, [x])
    before_bn = [k for k in errs if k.endswith('/b') and k.startswith('conv2d')
                 and np.abs(model.grads[k]).max() < 1e-12]          # a bias that a BatchNorm follows: zero gradient
    return {k: v for k, v in errs.items() if k not in before_bn}


GRAPHS = {
    'identity': (lambda x, r: residual_block(x, 4, rng=r), (5, 5, 4)),
    'projection': (lambda x, r: residual_block(x, 6, strides=2, rng=r), (5, 5, 4)),
    'plain': (lambda x, r: residual_block(x, 4, shortcut=False, rng=r), (5, 5, 4)),
    'separable residual': (lambda x, r: residual_block(x, 4, separable=True, rng=r), (5, 5, 4)),
    'bottleneck': (lambda x, r: bottleneck_block(x, 2, strides=2, rng=r), (5, 5, 4)),
    'inception v1': (lambda x, r: inception_module(x, 2, 2, 3, 1, 2, 2, rng=r), (6, 6, 3)),
    'inception 3x3': (lambda x, r: inception_module(x, 2, 2, 3, 1, 2, 2, factorise='3x3', rng=r), (6, 6, 3)),
    'inception asymmetric': (lambda x, r: inception_module(x, 2, 2, 3, 1, 2, 2, factorise='asymmetric', rng=r), (6, 6, 3)),
    'mobilenet v1 block': (lambda x, r: separable_block(x, 5, strides=2, rng=r), (6, 6, 3)),
    'inverted residual': (lambda x, r: inverted_residual_block(x, 3, 3, rng=r), (5, 5, 3)),
    'inverted residual s2': (lambda x, r: inverted_residual_block(x, 3, 4, strides=2, rng=r), (6, 6, 3)),
}


@pytest.mark.parametrize('name', list(GRAPHS))
def test_blocks_gradients_float64(name):
    make, shape = GRAPHS[name]
    with precision(np.float64):
        m = _model(make, shape)
        errs = _graph_errors(m, np.random.default_rng(0).standard_normal((3, *shape)))
    assert max(errs.values()) < 1e-6, errs


def test_block_shapes_and_shortcuts():
    assert _model(GRAPHS['identity'][0], (5, 5, 4)).output_shape() == (5, 5, 4)
    assert _model(GRAPHS['projection'][0], (5, 5, 4)).output_shape() == (3, 3, 6)
    assert _model(GRAPHS['bottleneck'][0], (5, 5, 4)).output_shape() == (3, 3, 8)
    assert _model(GRAPHS['inception v1'][0], (6, 6, 3)).output_shape() == (6, 6, 2 + 3 + 2 + 2)
    adds = lambda m: sum(isinstance(l, Add) for l in m.layers)
    assert adds(_model(GRAPHS['identity'][0], (5, 5, 4))) == 1
    assert adds(_model(GRAPHS['plain'][0], (5, 5, 4))) == 0
    assert adds(_model(GRAPHS['inverted residual'][0], (5, 5, 3))) == 1      # stride 1, same channels
    assert adds(_model(GRAPHS['inverted residual s2'][0], (6, 6, 3))) == 0
    projections = [l for l in _model(GRAPHS['projection'][0], (5, 5, 4)).layers
                   if isinstance(l, Conv2D) and l.kernel_size == (1, 1)]
    assert len(projections) == 1 and projections[0].strides == (2, 2)


def test_inception_rejects_unknown_factorisation():
    with pytest.raises(ValueError, match="factorise None, '3x3' or 'asymmetric'"):
        _model(lambda x, r: inception_module(x, 1, 1, 1, 1, 1, 1, factorise='7x7'), (4, 4, 2))


def test_auxiliary_head_loss_weight():
    x = Input((12, 12, 3))
    h = conv_bn(x, 4, rng=0)
    main = residual_block(h, 4, rng=1)
    from dl_from_scratch.conv import GlobalAveragePooling2D
    from dl_from_scratch.layers import Dense
    m = Model(x, [Dense(3, name='main')(GlobalAveragePooling2D()(main)),
                  auxiliary_head(h, 3, filters=4, units=5, dropout=0.0, pool_size=3, pool_stride=3, rng=2)])
    ce = CategoricalCrossentropy(from_logits=True)
    m.compile([ce, ce], SGD(0.1), loss_weights=[1.0, 0.3])
    xb = np.random.default_rng(0).standard_normal((4, 12, 12, 3)).astype(np.float32)
    yb = smooth_labels(np.array([0, 1, 2, 0]), 3, 0.1)
    pm, pa = m.predict(xb)
    assert m.evaluate(xb, [yb, yb], return_dict=True)['loss'] == pytest.approx(ce(pm, yb) + 0.3 * ce(pa, yb), rel=1e-5)


def test_spatial_dropout_drops_whole_maps_and_checks_gradient():
    x = np.random.default_rng(0).random((32, 4, 4, 6), dtype=np.float32) + 1
    layer = SpatialDropout2D(0.4, rng=0)
    y = layer(x, training=True)
    assert y.dtype == np.float32
    kept = (y != 0).all(axis=(1, 2))
    assert ((y == 0).all(axis=(1, 2)) | kept).all()
    np.testing.assert_allclose(y[kept.nonzero()[0], :, :, kept.nonzero()[1]],
                               x[kept.nonzero()[0], :, :, kept.nonzero()[1]] / 0.6, rtol=1e-6)
    assert 0.45 < kept.mean() < 0.75
    assert np.array_equal(layer(x, training=False), x)
    dy = np.ones_like(y)
    assert np.array_equal(layer.backward(dy), dy)                       # after an inference call: identity
    with precision(np.float64):
        errs = check_layer_grad(SpatialDropout2D(0.5, rng=3), np.random.default_rng(1).standard_normal((5, 3, 3, 4)))
    assert max(errs.values()) < 1e-6
    with pytest.raises(ValueError, match='0 <= rate < 1'): SpatialDropout2D(1.0)
    with pytest.raises(ValueError, match='rank 4'): SpatialDropout2D(0.5)(np.zeros((2, 3, 4)))


@pytest.mark.parametrize('make,total,trainable', [(resnet50, 25_636_712, 25_583_592), (vgg16, 138_357_544, 138_357_544),
                                                  (mobilenet_v2, 3_538_984, 3_504_872)])
def test_keras_parameter_counts(make, total, trainable):
    m = make(kernel_initializer='zeros')
    assert (m.count_params(), m.count_trainable_params()) == (total, trainable)


def test_resnet20_and_plain20():
    res, plain = resnet20(), resnet20(shortcut=False)
    assert res.output_shape() == (10,) and plain.output_shape() == (10,)
    assert res.count_params() - plain.count_params() == (16 * 32 + 4 * 32) + (32 * 64 + 4 * 64)
    assert 0.26e6 < res.count_params() < 0.28e6                          # He et al.: 0.27M
    x = np.random.default_rng(0).standard_normal((2, 32, 32, 3)).astype(np.float32)
    assert res(x).shape == (2, 10)


def test_conv_multiplies():
    assert conv_multiplies(28, 5, 192, 32) == 120_422_400
    assert conv_multiplies(28, 1, 192, 16) + conv_multiplies(28, 5, 16, 32) == 2_408_448 + 10_035_200
    assert conv_multiplies(4, 3, 3, 3, depthwise=True) + conv_multiplies(4, 1, 3, 5) == 672
    assert conv_multiplies((4, 2), (1, 3), 2, 5) == 4 * 2 * 5 * 3 * 2
    with pytest.raises(ValueError, match='c_out == c_in'): conv_multiplies(4, 3, 3, 5, depthwise=True)


def test_training_helpers():
    q = smooth_labels(np.array([2, 0, 1]), 4, 0.2)
    np.testing.assert_allclose(q.sum(1), 1.0, rtol=1e-6)
    np.testing.assert_allclose(q[0], [0.05, 0.05, 0.85, 0.05], rtol=1e-6)
    with pytest.raises(ValueError, match='0 <= alpha < 1'): smooth_labels(np.array([0]), 3, -0.1)
    s = OneCycle(0.1, 10, 2)
    assert s(0) == pytest.approx(0.005) and s(2) == pytest.approx(0.1) and s(6) == pytest.approx(0.05) and s(10) == 0
    with pytest.raises(ValueError, match='warmup < total'): OneCycle(0.1, 1, 1)
    x = np.random.default_rng(0).random((5, 6, 6, 2), dtype=np.float32)
    a = random_crop_flip(x, pad=0, rng=0)                               # no padding: each image kept or mirrored
    assert all(np.array_equal(ai, xi) or np.array_equal(ai, xi[:, ::-1]) for ai, xi in zip(a, x))


def test_patch_whitening_decorrelates():
    rg = np.random.default_rng(0)
    base = rg.standard_normal((200, 9, 9, 3)).astype(np.float32)
    x = base + np.roll(base, 1, axis=1) + 0.5 * base[..., :1]           # correlated neighbours and channels
    W = patch_whitening(x, 2, eps=1e-6)
    assert W.shape == (2, 2, 3, 12)
    conv = Conv2D(12, 2, use_bias=False); conv.build((9, 9, 3)); conv.params['W'][...] = W
    cov = np.cov(conv(x).reshape(-1, 12), rowvar=False)
    np.testing.assert_allclose(cov, np.eye(12), atol=1e-3)


def test_fast_resnet_whitening_is_frozen_and_flips_average():
    rg = np.random.default_rng(0)
    x = rg.standard_normal((16, 32, 32, 3)).astype(np.float32)
    W = patch_whitening(x)
    for sep in (False, True):
        net = fast_resnet(W, widths=(8, 8, 8), separable=sep)
        white = [l for l in net.layers if l.name == 'whiten'][0]
        w0 = white.params['W'].copy()
        net.compile(CategoricalCrossentropy(from_logits=True), SGD(0.1, momentum=0.9))
        net.fit(x, smooth_labels(rg.integers(0, 10, 16), 10, 0.2), epochs=1, batch_size=8, verbose=0)
        assert np.array_equal(white.params['W'], w0) and np.array_equal(w0, W)
        sym = (x[:3] + x[:3, :, ::-1]) / 2
        np.testing.assert_allclose(predict_flip_tta(net, sym), net.predict(sym), rtol=1e-4, atol=1e-5)
