"""Conv2D, DepthwiseConv2D, the pooling and padding layers: float64 gradient checks, the CS231n fixture, shapes, parameter counts, bad input."""
import os
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)

import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.conv import (Conv2D, MaxPool2D, AvgPool2D, L2Pool2D, DepthwiseConv2D, ZeroPadding2D,
    GlobalAveragePooling2D, Conv2DTranspose, UpSampling2D)
from dl_from_scratch.kernels import conv as K

CONV_CASES = [
    dict(filters=3, kernel_size=3, strides=1, padding='same'),
    dict(filters=2, kernel_size=(3, 2), strides=(2, 3), padding=(1, 0, 2, 1)),
    dict(filters=2, kernel_size=2, strides=3, padding='valid', activation='relu'),   # stride > kernel
    dict(filters=3, kernel_size=4, strides=2, padding='same', use_bias=False),        # even kernel: asymmetric 'same'
    dict(filters=2, kernel_size=1, strides=1, padding=0, activation='tanh'),
]


@pytest.mark.parametrize('kw', CONV_CASES)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_conv2d_gradients_float64(kw, backend):
    with precision(np.float64):
        x = np.random.default_rng(2).normal(size=(2, 7, 8, 2))
        errs = check_layer_grad(Conv2D(rng=1, backend=backend, **kw), x)
    assert set(errs) == {'x', 'W'} | ({'b'} if kw.get('use_bias', True) else set())
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize('kw', [c for c in CONV_CASES if c['strides'] == 1])
@pytest.mark.parametrize('algorithm', ['im2col', 'direct'])
def test_conv2d_gradients_float64_both_algorithms(kw, algorithm):
    "Whatever `algorithm='auto'` would choose, both algorithms pass the check on every stride-1 case."
    with precision(np.float64):
        x = np.random.default_rng(2).normal(size=(2, 7, 8, 2))
        errs = check_layer_grad(Conv2D(rng=1, algorithm=algorithm, **kw), x)
    assert max(errs.values()) < 1e-6, errs


def _sliced(layer, images_per_slice, shape):
    "Make `layer` run im2col `images_per_slice` images at a time, as it does for big layers."
    layer._images_per_chunk = lambda x, per_image: min(images_per_slice, x.shape[0])
    return layer


def test_conv2d_slices_only_big_batches_on_the_cpu():
    layer = Conv2D(64, 3, padding='same', rng=0, algorithm='im2col')
    per_image = 32 * 32 * (3 * 3 * 32 + 1)                        # rows x columns of one image's im2col
    big, small = np.zeros((64, 32, 32, 32), np.float32), np.zeros((4, 32, 32, 32), np.float32)
    n = layer._images_per_chunk(big, per_image)
    assert 1 <= n < 64 and n * per_image * 4 <= Conv2D.chunk_target      # 75 MB of columns: slices of <= 8 MB
    assert layer._images_per_chunk(small, per_image) == 4                  # 4.7 MB: the whole batch


@pytest.mark.parametrize('kw', CONV_CASES)
def test_conv2d_gradients_float64_in_slices(kw):
    "The sliced im2col path (columns built again in backward) passes the gradient check too."
    with precision(np.float64):
        x = np.random.default_rng(2).normal(size=(5, 7, 8, 2))
        layer = _sliced(Conv2D(rng=1, algorithm='im2col', **kw), 2, x.shape)
        errs = check_layer_grad(layer, x)
        assert layer.cache.path == 'im2col' and layer.cache.x is not None      # sliced: x kept, not the columns
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize('kw', CONV_CASES)
@pytest.mark.parametrize('n', [1, 2, 3])
def test_conv2d_slices_give_the_whole_batch_numbers(kw, n):
    "Slices of 1, 2 or 3 images (the last one short) give the numbers of one im2col over the batch."
    r = np.random.default_rng(3)
    with precision(np.float64):
        x = r.normal(size=(5, 7, 8, 2))
        whole, sliced = Conv2D(rng=1, algorithm='im2col', **kw), _sliced(Conv2D(rng=1, algorithm='im2col', **kw), n, x.shape)
        y0, y1 = whole(x, training=True), sliced(x, training=True)
        assert whole.cache.path == sliced.cache.path == 'im2col'
        assert whole.cache.x is None and sliced.cache.x is x                # the whole batch keeps its columns
        assert sliced._scratch()['cols'].shape[0] < whole._scratch()['cols'].shape[0]
        dy = r.normal(size=y0.shape)
        np.testing.assert_allclose(y1, y0, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(sliced.backward(dy), whole.backward(dy), rtol=1e-12, atol=1e-12)
        for k in whole.grads: np.testing.assert_allclose(sliced.grads[k], whole.grads[k], rtol=1e-12, atol=1e-12)
        assert sliced.backward(dy, need_dx=False) is None


def test_conv2d_algorithm_choice_and_errors():
    x1, x6 = np.zeros((2, 28, 28, 1), np.float32), np.zeros((2, 14, 14, 6), np.float32)
    assert Conv2D(6, 5, padding='same')._direct(x1)                      # LeNet conv1: C*F = 6
    assert not Conv2D(16, 5)._direct(x6)                                 # LeNet conv2: C*F = 96
    assert not Conv2D(6, 5, strides=2)._direct(x1)
    assert not Conv2D(6, 5, backend='numpy')._direct(x1)                 # the NumPy reference stays im2col
    assert Conv2D(16, 5, algorithm='direct')._direct(x6) and not Conv2D(6, 5, algorithm='im2col')._direct(x1)
    with pytest.raises(ValueError, match=r"algorithm='direct' needs strides \(1, 1\), got \(1, 2\)"):
        Conv2D(6, 5, strides=(1, 2), algorithm='direct')
    with pytest.raises(ValueError, match="got 'winograd'"):
        Conv2D(6, 5, algorithm='winograd')
    assert Conv2D(6, 5, algorithm='direct').get_config()['kwargs']['algorithm'] == 'direct'   # saved with the model


POOL_CASES = [dict(), dict(pool_size=3, strides=2), dict(pool_size=3, strides=1, padding='same'),
              dict(pool_size=2, strides=3), dict(pool_size=(2, 3), strides=(1, 2), padding='same')]


@pytest.mark.parametrize('cls', [MaxPool2D, AvgPool2D, L2Pool2D])
@pytest.mark.parametrize('kw', POOL_CASES)
def test_pool_gradients_float64(cls, kw):
    x = np.random.default_rng(3).normal(size=(2, 9, 7, 3))
    errs = check_layer_grad(cls(**kw), x)
    assert errs['x'] < 1e-6, errs


def test_cs231n_fixture():
    "The report's check (seed 231, x 4x3x5x5, w 2x3x3x3, stride 1, pad 1) gives errors at its level."
    rs = np.random.RandomState(231)
    x = rs.randn(4, 3, 5, 5).transpose(0, 2, 3, 1).copy()
    w = rs.randn(2, 3, 3, 3).transpose(2, 3, 1, 0).copy()
    b = rs.randn(2)
    dout = rs.randn(4, 2, 5, 5).transpose(0, 2, 3, 1).copy()
    dx, dw, db = K.conv2d_naive_backward(dout, x, w, 1, 1)
    f = lambda: float(np.sum(K.conv2d_naive_forward(x, w, b, 1, 1) * dout))
    assert rel_error(dx, numerical_grad(lambda v: f(), x)) < 1e-8
    assert rel_error(dw, numerical_grad(lambda v: f(), w)) < 1e-8
    assert rel_error(db, numerical_grad(lambda v: f(), b)) < 1e-8
    # the layer, given the same weights, gives the same gradients
    with precision(np.float64):
        layer = Conv2D(2, 3, padding=1)
        layer.build((5, 5, 3)); layer.params['W'][...] = w; layer.params['b'][...] = b
        np.testing.assert_allclose(layer(x), K.conv2d_naive_forward(x, w, b, 1, 1), rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(layer.backward(dout), dx, rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(layer.grads['W'], dw, rtol=1e-10, atol=1e-12)


def test_layers_match_naive_and_backends_agree():
    r = np.random.default_rng(0)
    x = r.normal(size=(3, 9, 8, 2)).astype(np.float32)
    outs = []
    for be in ('numpy', 'numba', 'cuda'):
        c = Conv2D(3, 3, strides=2, padding='same', rng=5, backend=be)
        y = c(x)
        dy = np.random.default_rng(1).normal(size=y.shape).astype(np.float32)
        outs.append((y, c.backward(dy), c.grads['W'], c.grads['b']))
        assert y.dtype == np.float32 and outs[-1][1].dtype == np.float32
    for o in outs[1:]:
        for a, b in zip(o, outs[0]): np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)
    pt, pb, pl, pr = K.resolve_padding('same', (9, 8), 3, 2)
    np.testing.assert_allclose(outs[0][0], K.conv2d_naive_forward(x.astype(np.float64), c.params['W'].astype(np.float64),
                               c.params['b'], 2, (pt, pb, pl, pr)), rtol=1e-4, atol=1e-5)
    for cls in (MaxPool2D, AvgPool2D):
        ys = [cls(3, 2, padding='same', backend=be)(x) for be in ('numpy', 'numba', 'cuda')]
        for y in ys[1:]: np.testing.assert_allclose(y, ys[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize('layer, in_shape, n_params, out_shape', [
    (Conv2D(32, 3, padding='same'), (32, 32, 3), 896, (32, 32, 32)),       # build-your-own CIFAR net, first conv
    (Conv2D(64, 3), (26, 26, 32), 18496, (24, 24, 64)),                    # its MNIST net, second conv
    (Conv2D(6, 5), (28, 28, 1), 156, (24, 24, 6)),                         # LeNet-5 C1
    (Conv2D(16, 5, use_bias=False), (12, 12, 6), 2400, (8, 8, 16)),
    (Conv2D(20, 7, padding=2), (28, 28, 1), 1000, (26, 26, 20)),           # Ketkar's primitives CNN
    (MaxPool2D(2), (24, 24, 64), 0, (12, 12, 64)),
    (AvgPool2D(3, 2, padding='same'), (7, 7, 5), 0, (4, 4, 5)),
    (L2Pool2D(3, 2, padding='same'), (7, 7, 5), 0, (4, 4, 5)),
    (DepthwiseConv2D(3, padding='same', use_bias=False), (112, 112, 32), 288, (112, 112, 32)),   # MobileNetV2
    (DepthwiseConv2D(3, strides=2, depth_multiplier=2), (9, 9, 4), 80, (4, 4, 8)),
    (ZeroPadding2D(((0, 1), (0, 1))), (224, 224, 3), 0, (225, 225, 3)),                          # MobileNetV2's stem
    (GlobalAveragePooling2D(), (7, 7, 1280), 0, (1280,)),
])
def test_param_counts_and_shapes_as_keras(layer, in_shape, n_params, out_shape):
    layer.build(in_shape)
    assert layer.count_params() == n_params
    assert layer.output_shape(in_shape) == out_shape
    assert layer(np.zeros((2, *in_shape), np.float32)).shape == (2, *out_shape)


def test_bad_input_names_both_shapes():
    with pytest.raises(ValueError, match=r'5x5 is larger than the padded input 4x4 \(input shape \(1, 4, 4, 1\)'):
        Conv2D(2, 5)(np.zeros((1, 4, 4, 1)))
    conv = Conv2D(2, 3); conv.build((8, 8, 3))
    with pytest.raises(ValueError, match=r'kernel of shape \(3, 3, 3, 2\).*got input shape \(1, 8, 8, 1\)'):
        conv(np.zeros((1, 8, 8, 1), np.float32))
    with pytest.raises(ValueError, match=r'rank 4, got shape \(8, 8, 3\)'):
        conv(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r'rank 4 \(N, H, W, C\)'):
        MaxPool2D()(np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r'3x3 is larger than the padded input 2x2'):
        MaxPool2D(3)(np.zeros((1, 2, 2, 1)))
    with pytest.raises(ValueError, match='filters'):
        Conv2D(0, 3)


def test_sequential_save_load_roundtrip(tmp_path):
    "A CNN saved to .npz and loaded back predicts the same (Conv2D/pool configs rebuild from their arguments)."
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    m = Sequential([Conv2D(4, 3, padding='same', activation='relu', rng=0), MaxPool2D(2), AvgPool2D(2, padding='same'),
                    Flatten(), Dense(3, rng=0)], input_shape=(9, 9, 2))
    x = np.random.default_rng(0).normal(size=(5, 9, 9, 2)).astype(np.float32)
    path = m.save(tmp_path / 'cnn.npz')
    m2 = Sequential.load(path)
    np.testing.assert_allclose(m2.predict(x), m.predict(x), rtol=1e-6)
    assert [type(l).__name__ for l in m2.layers] == ['Conv2D', 'MaxPool2D', 'AvgPool2D', 'Flatten', 'Dense']


def test_conv2d_regularizer_and_constraint_use_the_layer_base():
    from dl_from_scratch.layers import L2, MaxNorm
    layer = Conv2D(4, 3, kernel_regularizer=L2(0.01), kernel_constraint=MaxNorm(0.5), rng=0)
    layer(np.zeros((1, 6, 6, 2), np.float32))
    W = layer.params['W']
    np.testing.assert_allclose(layer.regularization_loss(), 0.01 * float((W.astype(np.float64) ** 2).sum()), rtol=1e-5)
    np.testing.assert_allclose(layer.regularization_grads()['W'], 2 * 0.01 * W, rtol=1e-5)
    layer.params['W'][...] = 10.0
    layer.apply_constraints()
    assert np.abs(layer.params['W']).max() < 10.0      # projected back into the max-norm ball
    assert Conv2D(4, 3, rng=0).regularization_loss() == 0.0


@pytest.mark.parametrize('layer_fn', [
    lambda: Conv2D(3, 3, padding='same', rng=0, algorithm='im2col'),
    lambda: Conv2DTranspose(3, 4, strides=2, padding='same', rng=0),
])
def test_a_second_backward_gives_the_same_gradients(layer_fn):
    """Backward writes the columns' gradient over the columns (Conv2D) or the gradient's columns over forward's
    (Conv2DTranspose), in one work array: a second backward after one forward must still be right."""
    r = np.random.default_rng(3)
    x = r.normal(size=(3, 6, 5, 2)).astype(np.float32)
    layer = layer_fn()
    y = layer(x)
    dy1, dy2 = r.normal(size=(2, *y.shape)).astype(np.float32)
    dx1 = layer.backward(dy1); g1 = {k: v.copy() for k, v in layer.grads.items()}
    dx2 = layer.backward(dy2); g2 = {k: v.copy() for k, v in layer.grads.items()}
    np.testing.assert_allclose(layer.backward(dy1), dx1, rtol=1e-6, atol=1e-6)
    for k in g1: np.testing.assert_allclose(layer.grads[k], g1[k], rtol=1e-5, atol=1e-5)
    fresh = layer_fn(); fresh(x); fresh.params['W'][...] = layer.params['W']
    fresh.forward(x); np.testing.assert_allclose(fresh.backward(dy2), dx2, rtol=1e-6, atol=1e-6)
    for k in g2: np.testing.assert_allclose(fresh.grads[k], g2[k], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(layer.forward(x), y, rtol=1e-6, atol=1e-6)     # forward is unchanged by backward


def test_conv2d_columns_rows_fill_whole_cache_lines():
    "The work array of columns has rows of whole 64-byte lines on the CPU; the products read only K + 1 of them."
    from dl_from_scratch.conv import _line_width
    assert _line_width(151, np.zeros(1, np.float32)) == 160 and _line_width(151, np.zeros(1)) == 152
    assert _line_width(160, np.zeros(1, np.float32)) == 160 and _line_width(1, np.zeros(1, np.float32)) == 16
    layer = Conv2D(16, 5, rng=0, algorithm='im2col')
    x = np.random.default_rng(4).normal(size=(2, 14, 14, 6)).astype(np.float32)
    layer(x)
    assert layer.cache.cols.shape == (2 * 10 * 10, 160)
    assert (layer.cache.cols[:, 150] == 1).all()                              # the bias trick's column of ones
    np.testing.assert_allclose(layer(x), K.conv2d_naive_forward(x, layer.params['W'], layer.params['b']), rtol=1e-4, atol=1e-4)


def test_backward_need_dx_false_skips_dx_and_keeps_param_grads():
    "The model's first layer is asked `need_dx=False` in training: it returns None and the same W, b gradients."
    r = np.random.default_rng(3)
    with precision(np.float64):
        c = Conv2D(4, 3, padding='same', activation='relu', rng=0); x = r.normal(size=(2, 6, 5, 3))
        dy = r.normal(size=c(x).shape)
        dx = c.backward(dy); gW, gb = c.grads['W'].copy(), c.grads['b'].copy()
        c.grads['W'][...] = 0; c.grads['b'][...] = 0
        assert dx.shape == x.shape
        assert c.backward(dy, need_dx=False) is None
        np.testing.assert_array_equal(c.grads['W'], gW); np.testing.assert_array_equal(c.grads['b'], gb)


def test_l2pool_is_the_root_of_the_window_sum_of_squares():
    x = np.random.default_rng(4).normal(size=(2, 7, 6, 3))
    np.testing.assert_allclose(L2Pool2D(3, 2)(x), np.sqrt(K.pool2d_naive_forward(x * x, 3, 2, 'avg') * 9), rtol=1e-12)
    layer = L2Pool2D(2)
    layer(np.zeros((1, 4, 4, 1)))
    assert np.all(layer.backward(np.ones((1, 2, 2, 1))) == 0)       # all-zero windows pass no gradient, not NaN


DEPTHWISE_CASES = [
    dict(kernel_size=3, padding='same'),
    dict(kernel_size=(3, 2), strides=(2, 1), padding=(1, 0, 2, 1), depth_multiplier=2),
    dict(kernel_size=2, strides=3, activation='relu', depth_multiplier=3),
    dict(kernel_size=4, strides=2, padding='same', use_bias=False),
]


@pytest.mark.parametrize('kw', DEPTHWISE_CASES)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_depthwise_gradients_float64(kw, backend):
    with precision(np.float64):
        x = np.random.default_rng(2).normal(size=(2, 7, 8, 3))
        errs = check_layer_grad(DepthwiseConv2D(rng=1, backend=backend, **kw), x)
    assert set(errs) == {'x', 'W'} | ({'b'} if kw.get('use_bias', True) else set())
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize('kw', DEPTHWISE_CASES)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_depthwise_is_a_conv2d_with_a_block_diagonal_kernel(kw, backend):
    "Output channel c*M + m is input channel c convolved with W[:, :, c, m]: a Conv2D zero elsewhere."
    M, C = kw.get('depth_multiplier', 1), 3
    with precision(np.float64):
        x = np.random.default_rng(5).normal(size=(2, 7, 8, C))
        dw = DepthwiseConv2D(rng=1, backend=backend, **kw); y = dw(x)
        full = Conv2D(C * M, **{k: v for k, v in kw.items() if k != 'depth_multiplier'}); full.build(x.shape[1:])
        full.params['W'][...] = 0
        for c in range(C): full.params['W'][:, :, c, c * M:(c + 1) * M] = dw.params['W'][:, :, c]
        if 'b' in full.params: full.params['b'][...] = dw.params['b']
        np.testing.assert_allclose(y, full(x), rtol=1e-12, atol=1e-12)
        dy = np.random.default_rng(6).normal(size=y.shape)
        np.testing.assert_allclose(dw.backward(dy), full.backward(dy), rtol=1e-12, atol=1e-12)
        for c in range(C):
            np.testing.assert_allclose(dw.grads['W'][:, :, c], full.grads['W'][:, :, c, c * M:(c + 1) * M], rtol=1e-12, atol=1e-12)
        assert dw.backward(dy, need_dx=False) is None


@pytest.mark.parametrize('layer', [ZeroPadding2D(((1, 2), (0, 3))), ZeroPadding2D(1), GlobalAveragePooling2D(),
                                   GlobalAveragePooling2D(keepdims=True)])
def test_padding_and_global_pooling_gradients_float64(layer):
    x = np.random.default_rng(8).normal(size=(2, 5, 4, 3))
    assert layer(x).shape == (2, *layer.output_shape((5, 4, 3)))
    assert check_layer_grad(layer, x)['x'] < 1e-6


def test_new_layers_refuse_bad_input():
    with pytest.raises(ValueError, match=r'kernel of shape \(3, 3, 4, 1\) \(KH, KW, C, M\), got input shape \(1, 9, 9, 3\)'):
        d = DepthwiseConv2D(3); d.build((9, 9, 4)); d(np.zeros((1, 9, 9, 3)))
    with pytest.raises(ValueError, match='depth_multiplier >= 1, got 0'):
        DepthwiseConv2D(3, depth_multiplier=0)
    with pytest.raises(ValueError, match=r'\(\(top, bottom\), \(left, right\)\)'):
        ZeroPadding2D(((1, 2), (3,)))
    with pytest.raises(ValueError, match='rank 4'):
        GlobalAveragePooling2D()(np.zeros((2, 3, 4)))


def test_depthwise_regularizer_and_constraint_through_add_weight():
    from dl_from_scratch.layers import L2, MaxNorm
    layer = DepthwiseConv2D(3, depthwise_regularizer=L2(0.01), depthwise_constraint=MaxNorm(0.5), rng=0)
    layer.build((6, 6, 2))
    W = layer.params['W'].astype(np.float64)
    np.testing.assert_allclose(layer.regularization_loss(), 0.01 * (W ** 2).sum(), rtol=1e-5)
    assert set(layer.regularization_grads()) == {'W'}
    layer.params['W'][...] = 10.0
    layer.apply_constraints()
    assert np.abs(layer.params['W']).max() < 10.0


TRANSPOSE_CASES = [
    dict(kernel_size=4, strides=2, padding='same'),
    dict(kernel_size=(3, 2), strides=(2, 1), padding='valid'),
    dict(kernel_size=3, strides=2, padding='same', output_padding=1),
    dict(kernel_size=1, strides=2, padding='valid'),                              # kernel < stride: zero rows
    dict(kernel_size=3, strides=1, padding='same', activation='tanh', use_bias=False),
]


@pytest.mark.parametrize('kw', TRANSPOSE_CASES)
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_conv2d_transpose_gradients_float64(kw, backend):
    with precision(np.float64):
        x = np.random.default_rng(2).normal(size=(2, 5, 4, 2))
        errs = check_layer_grad(Conv2DTranspose(3, rng=1, backend=backend, **kw), x)
    assert set(errs) == {'x', 'W'} | ({'b'} if kw.get('use_bias', True) else set())
    assert max(errs.values()) < 1e-6, errs


@pytest.mark.parametrize('kw', [c for c in TRANSPOSE_CASES if 'activation' not in c])
def test_conv2d_transpose_is_the_adjoint_of_conv2d(kw):
    "Conv2DTranspose(x) = Conv2D's input gradient for dy = x, with the same kernel: <conv(v), x> = <v, conv^T(x)>."
    r = np.random.default_rng(3)
    with precision(np.float64):
        ct = Conv2DTranspose(3, rng=0, use_bias=False, **kw)
        x = r.normal(size=(2, 5, 4, 2))
        y = ct(x)
        conv = Conv2D(2, ct.kernel_size, strides=ct.strides, padding=ct._geometry(x.shape[1:3])[1], use_bias=False)
        conv.build(y.shape[1:]); conv.params['W'][...] = ct.params['W']
        v = r.normal(size=y.shape)
        np.testing.assert_allclose(np.vdot(conv(v), x), np.vdot(v, y), rtol=1e-12)
        np.testing.assert_allclose(conv.backward(x), y, atol=1e-12)


@pytest.mark.parametrize('H,k,s,padding,op,want', [
    (8, 4, 2, 'valid', None, 18), (8, 4, 2, 'same', None, 16), (8, 3, 1, 'valid', None, 10), (8, 3, 1, 'same', None, 8),
    (8, 1, 2, 'valid', None, 16), (8, 3, 2, 'same', 1, 16), (8, 3, 2, 'valid', 1, 18), (5, 5, 3, 'same', 2, 15)])
def test_conv2d_transpose_output_size_is_keras(H, k, s, padding, op, want):
    ct = Conv2DTranspose(2, k, strides=s, padding=padding, output_padding=op)
    assert ct.output_shape((H, H, 3)) == (want, want, 2)
    assert ct(np.zeros((1, H, H, 3), np.float32)).shape == (1, want, want, 2)


@pytest.mark.parametrize('padding,torch_pad', [('valid', 0), ('same', 1)])
def test_conv2d_transpose_matches_pytorch(padding, torch_pad):
    torch = pytest.importorskip('torch')
    with precision(np.float64):
        ct = Conv2DTranspose(3, 4, strides=2, padding=padding, rng=0)
        x = np.random.default_rng(4).normal(size=(2, 5, 6, 2))
        y = ct(x)
    yt = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                              torch.from_numpy(ct.params['W']).permute(3, 2, 0, 1),
                                              torch.from_numpy(ct.params['b']), stride=2, padding=torch_pad)
    np.testing.assert_allclose(y, yt.permute(0, 2, 3, 1).numpy(), atol=1e-12)


def test_conv2d_transpose_bad_input():
    ct = Conv2DTranspose(32, 4, strides=2, padding='same'); ct.build((8, 8, 64))
    assert ct.params['W'].shape == (4, 4, 32, 64) and ct.count_params() == 4 * 4 * 32 * 64 + 32
    with pytest.raises(ValueError, match=r'kernel of shape \(4, 4, 32, 64\) \(KH, KW, F, C\), got input shape \(1, 8, 8, 3\)'):
        ct(np.zeros((1, 8, 8, 3), np.float32))
    with pytest.raises(ValueError, match=r'output_padding in \[0, strides\)'):
        Conv2DTranspose(2, 3, strides=2, output_padding=2)
    with pytest.raises(ValueError, match="padding 'valid' or 'same', got 1"):
        Conv2DTranspose(2, 3, padding=1)


@pytest.mark.parametrize('size', [2, (3, 2), (1, 3)])
@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear'])
def test_upsampling2d_gradients_float64(size, interpolation):
    with precision(np.float64):
        up = UpSampling2D(size, interpolation)
        x = np.random.default_rng(5).normal(size=(2, 5, 4, 3))
        assert up(x).shape == (2, *up.output_shape(x.shape[1:]))
        errs = check_layer_grad(up, x)
    assert errs['x'] < 1e-6, errs


def test_upsampling2d_values():
    "Nearest repeats; bilinear uses half-pixel centres (tf.image.resize), so a 2x2 ramp becomes 0, .25, .75, 1."
    x = np.arange(4.).reshape(1, 2, 2, 1)
    np.testing.assert_array_equal(UpSampling2D(2)(x)[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
    np.testing.assert_allclose(UpSampling2D(2, 'bilinear')(x)[0, :, :, 0],
                               [[0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]])
    np.testing.assert_allclose(UpSampling2D((2, 3), 'bilinear')(np.full((2, 3, 4, 2), 7.)), 7., rtol=1e-12)
    assert UpSampling2D(2, 'bilinear')(np.zeros((1, 3, 3, 2), np.float32)).dtype == np.float32
    with pytest.raises(ValueError, match="'nearest' or 'bilinear', got 'bicubic'"):
        UpSampling2D(2, 'bicubic')


@pytest.mark.parametrize('interpolation', ['nearest', 'bilinear'])
def test_upsampling2d_matches_pytorch(interpolation):
    torch = pytest.importorskip('torch')
    x = np.random.default_rng(6).normal(size=(2, 5, 4, 3))
    kw = {} if interpolation == 'nearest' else dict(align_corners=False)
    yt = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=(3, 2), mode=interpolation, **kw)
    np.testing.assert_allclose(UpSampling2D((3, 2), interpolation)(x), yt.permute(0, 2, 3, 1).numpy(), atol=1e-12)


@pytest.mark.parametrize('d,padding', [((2, 2), 'same'), ((3, 1), 'valid'), ((1, 2), (1, 0, 2, 1)), (2, 'same')])
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_conv2d_dilated_gradients_float64_and_zero_stuffed_kernel(d, padding, backend):
    "A dilated Conv2D is the naive convolution with the zero-stuffed kernel, and passes the float64 check."
    r = np.random.default_rng(5)
    with precision(np.float64):
        x = r.normal(size=(2, 9, 8, 2))
        cd = Conv2D(3, (3, 2), padding=padding, dilation_rate=d, rng=0, backend=backend)
        cd.build(x.shape[1:]); cd.params['b'][...] = r.normal(size=3)
        ref = K.conv2d_naive_forward(x, K.dilate_kernel(cd.params['W'], d), cd.params['b'], 1, cd._pad((9, 8)))
        np.testing.assert_allclose(cd(x), ref, atol=1e-12)
        if padding == 'same': assert cd(x).shape == (2, 9, 8, 3)
        errs = check_layer_grad(Conv2D(3, (3, 2), padding=padding, dilation_rate=d, activation='tanh', rng=1, backend=backend), x)
    assert max(errs.values()) < 1e-6, errs


def test_conv2d_dilation_needs_stride_one():
    with pytest.raises(ValueError, match=r'strides \(1, 1\) with dilation_rate \(2, 2\), got strides \(2, 2\)'):
        Conv2D(4, 3, strides=2, dilation_rate=2)
    with pytest.raises(ValueError, match=r'needs dilation_rate \(1, 1\), got \(2, 2\)'):
        Conv2D(4, 3, dilation_rate=2, algorithm='direct')
    assert not Conv2D(4, 3, dilation_rate=2)._direct(np.zeros((1, 9, 8, 2), np.float32))


def test_new_layers_save_and_load(tmp_path):
    "Conv2DTranspose, UpSampling2D and a dilated Conv2D rebuild from a saved model with the same outputs."
    from dl_from_scratch.model import Sequential, Model
    x = np.random.default_rng(7).random((2, 6, 6, 3), dtype=np.float32)
    m = Sequential([Conv2D(4, 3, padding='same', dilation_rate=2, rng=0),
                    Conv2DTranspose(2, 4, strides=2, padding='same', output_padding=1, rng=1),
                    UpSampling2D((2, 1), 'bilinear'), DepthwiseConv2D(3, depth_multiplier=2, rng=2)])
    y = m.predict(x)
    assert y.shape == (2, 20, 9, 4)       # 6 -> 6 -> (6 - 1)*2 + 4 - 2*2 + 1 = 11 -> 22 x 11 -> 20 x 9
    m2 = Model.load(m.save(str(tmp_path / 'm')))
    np.testing.assert_array_equal(m2.predict(x), y)
