"""Parity of the convolution and pooling kernels: naive loops = NumPy im2col = Numba CPU = Numba CUDA.

CUDA runs on a GPU when one is present, else in Numba's simulator (NUMBA_ENABLE_CUDASIM=1, set below
before numba.cuda is imported), where it is slow: those examples stay small and few."""
import os
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)

import numpy as np
import pytest
from hypothesis import given, settings, assume, strategies as st, HealthCheck
from dl_from_scratch.kernels import conv as K

SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)


@st.composite
def conv_cases(draw, max_n=3, max_hw=11, max_c=4, max_f=4, max_k=4, max_s=5, max_p=2):
    "A random geometry (odd sizes, stride > kernel and asymmetric padding included) and float32 data."
    N, H, W = draw(st.integers(1, max_n)), draw(st.integers(1, max_hw)), draw(st.integers(1, max_hw))
    C, F = draw(st.integers(1, max_c)), draw(st.integers(1, max_f))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    sh, sw = draw(st.integers(1, max_s)), draw(st.integers(1, max_s))
    pad = tuple(draw(st.integers(0, max_p)) for _ in range(4))
    assume(H + pad[0] + pad[1] >= kh and W + pad[2] + pad[3] >= kw)
    r = np.random.default_rng(draw(st.integers(0, 2**31)))
    x = r.normal(size=(N, H, W, C)).astype(np.float32)
    w = r.normal(size=(kh, kw, C, F)).astype(np.float32)
    return x, w, (kh, kw), (sh, sw), pad, r


def _conv_all(x, w, ks, s, pad, be, r):
    "Forward via im2col @ W, and (dx, dw) via the products and col2im, with one backend."
    N = x.shape[0]
    F = w.shape[-1]
    cols = K.im2col(x, ks, s, pad, be)
    _, _, _, _, _, _, OH, OW = K._geometry(x.shape, *ks, s, pad, 'test')
    y = (cols @ w.reshape(-1, F)).reshape(N, OH, OW, F)
    dy = np.random.default_rng(0).normal(size=y.shape).astype(np.float32)
    d2 = dy.reshape(-1, F)
    dw = (cols.T @ d2).reshape(w.shape)
    dx = K.col2im(d2 @ w.reshape(-1, F).T, x.shape, ks, s, pad, be)
    return cols, y, dy, dx, dw


def _close(a, b, scale_like=None):
    "float32 round-off: relative to the size of the terms."
    scale = max(1.0, float(np.abs(b).max()) if b.size else 1.0)
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * scale)


@settings(max_examples=80, **SETTINGS)
@given(conv_cases())
def test_conv_numpy_numba_naive_agree(case):
    x, w, ks, s, pad, r = case
    cols_np, y_np, dy, dx_np, dw_np = _conv_all(x, w, ks, s, pad, 'numpy', r)
    cols_nb, y_nb, _, dx_nb, dw_nb = _conv_all(x, w, ks, s, pad, 'numba', r)
    np.testing.assert_array_equal(cols_nb, cols_np)           # im2col only copies: bit-equal
    _close(dx_nb, dx_np)
    x64, w64, dy64 = x.astype(np.float64), w.astype(np.float64), dy.astype(np.float64)
    y_ref = K.conv2d_naive_forward(x64, w64, None, s, pad)
    dx_ref, dw_ref, _ = K.conv2d_naive_backward(dy64, x64, w64, s, pad)
    _close(y_np, y_ref); _close(y_nb, y_ref)
    _close(dx_np, dx_ref); _close(dw_np, dw_ref)


@settings(max_examples=60, **SETTINGS)
@given(conv_cases(max_s=1, max_f=6), st.sampled_from([np.float32, np.float64]))
def test_direct_conv_agrees_with_naive(case, dt):
    "The shifted-planes kernels (stride 1) give the naive loops' y, dx, dw, db in float32 and float64."
    x, w, ks, s, pad, r = case
    x, w = x.astype(dt), w.astype(dt)
    b = r.normal(size=w.shape[-1]).astype(dt)
    y, planes, Wp = K.conv2d_direct_forward(x, w, b, pad)
    assert y.dtype == dt
    dy = r.normal(size=y.shape).astype(dt)
    dx, dw, db = K.conv2d_direct_backward(dy, planes, Wp, w, x.shape, pad)
    x64, w64, b64, dy64 = (a.astype(np.float64) for a in (x, w, b, dy))
    refs = (K.conv2d_naive_forward(x64, w64, b64, 1, pad), *K.conv2d_naive_backward(dy64, x64, w64, 1, pad))
    for a, ref in zip((y, dx, dw, db), refs):
        if dt == np.float64: np.testing.assert_allclose(a, ref, rtol=1e-10, atol=1e-10)
        else: _close(a, ref)
    assert K.conv2d_direct_backward(dy, planes, Wp, w, x.shape, pad, need_dx=False)[0] is None


def test_direct_conv_bad_input():
    x, w = np.zeros((1, 5, 5, 2), np.float32), np.zeros((3, 3, 2, 4), np.float32)
    with pytest.raises(ValueError, match=r'to match w of shape \(3, 3, 3, 4\), got x shape \(1, 5, 5, 2\)'):
        K.conv2d_direct_forward(x, np.zeros((3, 3, 3, 4), np.float32))
    with pytest.raises(ValueError, match='larger than the padded input'):
        K.conv2d_direct_forward(x[:, :2], w)
    y, planes, Wp = K.conv2d_direct_forward(x, w)
    with pytest.raises(ValueError, match=r'expected dz of shape \(1, 3, 3, 4\), got \(1, 3, 3, 5\)'):
        K.conv2d_direct_backward(np.zeros((1, 3, 3, 5), np.float32), planes, Wp, w, x.shape)


@settings(max_examples=20, **SETTINGS)
@given(conv_cases(max_n=2, max_hw=7, max_c=2, max_f=2, max_k=3, max_s=4, max_p=1))
def test_conv_cuda_agrees(case):
    x, w, ks, s, pad, r = case
    cols_np, y_np, dy, dx_np, dw_np = _conv_all(x, w, ks, s, pad, 'numpy', r)
    cols_cu, y_cu, _, dx_cu, dw_cu = _conv_all(x, w, ks, s, pad, 'cuda', r)
    np.testing.assert_array_equal(cols_cu, cols_np)
    _close(dx_cu, dx_np)


@st.composite
def pool_cases(draw, max_n=3, max_hw=11, max_c=4, max_k=4, max_s=5):
    N, H, W, C = (draw(st.integers(1, m)) for m in (max_n, max_hw, max_hw, max_c))
    kh, kw = draw(st.integers(1, max_k)), draw(st.integers(1, max_k))
    sh, sw = draw(st.integers(1, max_s)), draw(st.integers(1, max_s))
    pad = (draw(st.integers(0, kh - 1)), draw(st.integers(0, kh - 1)), draw(st.integers(0, kw - 1)), draw(st.integers(0, kw - 1)))
    assume(H + pad[0] + pad[1] >= kh and W + pad[2] + pad[3] >= kw)
    x = np.random.default_rng(draw(st.integers(0, 2**31))).normal(size=(N, H, W, C)).astype(np.float32)
    return x, (kh, kw), (sh, sw), pad


def _pool_all(x, ks, s, pad, be):
    y, idx = K.maxpool2d_forward(x, ks, s, pad, be)
    dy = np.random.default_rng(1).normal(size=y.shape).astype(np.float32)
    dxm = K.maxpool2d_backward(dy, idx, x.shape, ks, s, pad, be)
    ya = K.avgpool2d_forward(x, ks, s, pad, be)
    dxa = K.avgpool2d_backward(dy, x.shape, ks, s, pad, be)
    return y, idx, dy, dxm, ya, dxa


@settings(max_examples=80, **SETTINGS)
@given(pool_cases())
def test_pool_numpy_numba_agree(case):
    x, ks, s, pad = case
    ref, nb = _pool_all(x, ks, s, pad, 'numpy'), _pool_all(x, ks, s, pad, 'numba')
    np.testing.assert_array_equal(nb[0], ref[0]); np.testing.assert_array_equal(nb[1], ref[1])
    _close(nb[3], ref[3]); _close(nb[4], ref[4]); _close(nb[5], ref[5])
    # the max is attained where idx points
    kh, kw = ks
    assert ref[1].min() >= 0 and ref[1].max() < kh * kw
    if pad == (0, 0, 0, 0):   # the naive loops have no padding
        np.testing.assert_array_equal(ref[0], K.pool2d_naive_forward(x, ks, s, 'max'))
        _close(ref[4], K.pool2d_naive_forward(x, ks, s, 'avg'))
        _close(ref[3], K.pool2d_naive_backward(ref[2], x, ks, s, 'max'))
        _close(ref[5], K.pool2d_naive_backward(ref[2], x, ks, s, 'avg'))


@pytest.mark.parametrize('shape', [(1, 2, 2, 1), (3, 5, 7, 6), (2, 28, 28, 6), (2, 9, 4, 17), (1, 3, 3, 64)])
def test_maxpool_2x2_fast_path_agrees(shape):
    "The unrolled 2x2/stride-2 kernels (odd sizes leave a row or column out) equal the reference, ties included."
    x = np.round(np.random.default_rng(sum(shape)).normal(size=shape) * 2).astype(np.float32)  # many ties
    ref, nb = _pool_all(x, (2, 2), (2, 2), (0, 0, 0, 0), 'numpy'), _pool_all(x, (2, 2), (2, 2), (0, 0, 0, 0), 'numba')
    np.testing.assert_array_equal(nb[0], ref[0]); np.testing.assert_array_equal(nb[1], ref[1])
    np.testing.assert_array_equal(nb[3], ref[3])                   # one gradient per winner: no sums, bit-equal
    np.testing.assert_array_equal(ref[0], K.pool2d_naive_forward(x, 2, 2, 'max'))
    _close(nb[3], K.pool2d_naive_backward(ref[2], x, 2, 2, 'max'))


@settings(max_examples=40, **SETTINGS)
@given(pool_cases(max_k=3), st.integers(0, 2))
def test_maxpool_backward_without_overlap_agrees(case, gap):
    "Strides >= the window (with padding and gaps between windows): the zero-the-band-then-scatter path."
    x, ks, _, pad = case
    s = (ks[0] + gap, ks[1] + gap)
    assume(x.shape[1] + pad[0] + pad[1] >= ks[0] and x.shape[2] + pad[2] + pad[3] >= ks[1])
    ref, nb = _pool_all(x, ks, s, pad, 'numpy'), _pool_all(x, ks, s, pad, 'numba')
    np.testing.assert_array_equal(nb[1], ref[1])
    np.testing.assert_array_equal(nb[3], ref[3])


@settings(max_examples=20, **SETTINGS)
@given(pool_cases(max_n=2, max_hw=7, max_c=2, max_k=3, max_s=4))
def test_pool_cuda_agrees(case):
    x, ks, s, pad = case
    ref, cu = _pool_all(x, ks, s, pad, 'numpy'), _pool_all(x, ks, s, pad, 'cuda')
    np.testing.assert_array_equal(cu[0], ref[0]); np.testing.assert_array_equal(cu[1], ref[1])
    _close(cu[3], ref[3]); _close(cu[4], ref[4]); _close(cu[5], ref[5])


def test_col2im_is_the_adjoint_of_im2col():
    "<im2col(x), c> = <x, col2im(c)> for every backend: col2im is exactly the transpose."
    r = np.random.default_rng(0)
    x = r.normal(size=(2, 7, 8, 3))
    for be in ('numpy', 'numba', 'cuda'):
        cols = K.im2col(x, (3, 2), (2, 3), (1, 2, 0, 1), be)
        c = r.normal(size=cols.shape)
        lhs = np.sum(cols * c)
        rhs = np.sum(x * K.col2im(c, x.shape, (3, 2), (2, 3), (1, 2, 0, 1), be))
        assert abs(lhs - rhs) < 1e-9 * max(1.0, abs(lhs))


@pytest.mark.parametrize('C, k, s, pad, d', [(16, 4, 2, 1, 1), (32, 4, 2, 1, 1), (13, 5, 1, 2, 1), (40, 3, 2, 0, 1),
                                          (64, 2, 1, (0, 1, 1, 0), 1), (6, 5, 1, 0, 1), (17, 3, 1, 2, 2)])
def test_long_window_rows_numba_matches_numpy(C, k, s, pad, d):
    """Window rows of k*C numbers from 30 to 128, some clipped by padding, one dilated: the Numba copies and sums run LLVM's
    vector loop and its remainder, which the small cases above (at most 16 numbers) never reach. im2col is
    bit-equal to the NumPy reference; col2im, with a bias, equal up to the order of its float32 sums."""
    r = np.random.default_rng(C * 100 + k)
    x = r.normal(size=(3, 9, 10, C)).astype(np.float32)
    cols = K.im2col(x, k, s, pad, 'numpy', dilation=d)
    np.testing.assert_array_equal(K.im2col(x, k, s, pad, 'numba', dilation=d), cols)
    g, b = r.normal(size=cols.shape).astype(np.float32), r.normal(size=C).astype(np.float32)
    _close(K.col2im(g, x.shape, k, s, pad, 'numba', dilation=d, bias=b),
           K.col2im(g, x.shape, k, s, pad, 'numpy', dilation=d, bias=b))


def test_im2col_into_a_wider_out_keeps_the_extra_columns():
    "Every backend fills the first KH*KW*C columns of a wider `out` and leaves the rest (Conv2D's bias column)."
    x = np.random.default_rng(1).normal(size=(2, 6, 5, 3)).astype(np.float32)
    ref = K.im2col(x, 3, 2, 1, 'numpy')
    for be in ('numpy', 'numba', 'cuda'):
        out = np.full((ref.shape[0], ref.shape[1] + 2), 7.0, np.float32)
        assert K.im2col(x, 3, 2, 1, be, out=out) is out
        np.testing.assert_array_equal(out[:, :-2], ref)
        assert (out[:, -2:] == 7).all(), be
    with pytest.raises(ValueError, match=r'expected out of shape \(18, 27\) \(or with more columns\), got \(18, 26\)'):
        K.im2col(x, 3, 2, 1, out=np.empty((18, 26), np.float32))


def test_col2im_reads_a_wider_cols_and_adds_a_bias():
    """Every backend ignores the columns of `cols` past KH*KW*C (a work array with wider rows, contiguous or a
    view) and, given `bias`, returns col2im(cols) + bias; windows clipped by padding on both sides included."""
    r = np.random.default_rng(2)
    geom = ((4, 3), (2, 1), (1, 2, 2, 1))                   # taps overlap the left and the right padding
    x_shape = (2, 6, 5, 3)                                  # OH = (6 + 3 - 4) // 2 + 1 = 3, OW = 5 + 3 - 3 + 1 = 6
    c = r.normal(size=(2 * 3 * 6, 4 * 3 * 3))
    wide = np.concatenate([c, np.full((36, 5), np.nan)], axis=1)
    b = r.normal(size=3)
    want = K.col2im(c, x_shape, *geom, 'numpy')
    for be in ('numpy', 'numba', 'cuda'):
        np.testing.assert_allclose(K.col2im(wide, x_shape, *geom, be), want, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(K.col2im(wide[:, :37], x_shape, *geom, be, bias=b), want + b, rtol=1e-12, atol=1e-12)
    with pytest.raises(ValueError, match=r'expected bias of shape \(3,\), got \(4,\)'):
        K.col2im(c, x_shape, *geom, bias=np.zeros(4))
    with pytest.raises(ValueError, match=r'expected cols of shape \(36, 36\), got \(36, 35\)'):
        K.col2im(c[:, :35], x_shape, *geom)


def test_string_padding_matches_explicit():
    x = np.random.default_rng(0).normal(size=(1, 7, 6, 2))
    np.testing.assert_array_equal(K.im2col(x, 4, 2, 'same'), K.im2col(x, 4, 2, K.resolve_padding('same', (7, 6), 4, 2)))
    assert K.maxpool2d_forward(x, 2, padding='same')[0].shape == (1, 4, 3, 2)


def test_dtype_preserved_and_auto_backend():
    x = np.random.default_rng(0).normal(size=(1, 5, 5, 2))
    for dt in (np.float32, np.float64):
        assert K.im2col(x.astype(dt), 3).dtype == dt
        assert K.maxpool2d_forward(x.astype(dt), 2)[0].dtype == dt
    np.testing.assert_array_equal(K.im2col(x, 3), K.im2col(x, 3, backend='numpy'))


@pytest.mark.parametrize('call, msg', [
    (lambda: K.im2col(np.zeros((5, 5, 3)), 3), 'x (N, H, W, C) of rank 4, got shape (5, 5, 3)'),
    (lambda: K.im2col(np.zeros((1, 3, 3, 1)), 4), '4x4 is larger than the padded input 3x3 (input shape (1, 3, 3, 1)'),
    (lambda: K.im2col(np.zeros((1, 3, 3, 1)), 4, padding='x'), 'padding'),
    (lambda: K.col2im(np.zeros((5, 9)), (1, 3, 3, 1), 3), 'expected cols of shape (1, 9), got (5, 9)'),
    (lambda: K.maxpool2d_forward(np.zeros((1, 2, 2, 1)), 3), '3x3 is larger than the padded input 2x2'),
    (lambda: K.maxpool2d_backward(np.zeros((1, 2, 2, 1)), np.zeros((1, 2, 2, 1), np.int32), (1, 6, 6, 1), 2),
     'expected dy of shape (1, 3, 3, 1), got (1, 2, 2, 1)'),
    (lambda: K.avgpool2d_forward(np.zeros((1, 4, 4, 1)), 2, padding=(2, 0, 0, 0)), 'smaller than the window'),
    (lambda: K.im2col(np.zeros((1, 4, 4, 1)), 0), 'kernel_size'),
    (lambda: K.im2col(np.zeros((1, 4, 4, 1)), 2, strides=0), 'stride'),
])
def test_bad_input_names_shapes(call, msg):
    with pytest.raises(ValueError, match=None) as e: call()
    assert msg in str(e.value), str(e.value)


@st.composite
def dilated_cases(draw, max_n=2, max_hw=11, max_c=3, max_k=3, max_d=3, max_s=3, max_p=2):
    "A random geometry with dilation rates (d_h, d_w) in 1..max_d, and float32 data."
    x, w, ks, s, pad, r = draw(conv_cases(max_n=max_n, max_hw=max_hw, max_c=max_c, max_k=max_k, max_s=max_s, max_p=max_p))
    d = (draw(st.integers(1, max_d)), draw(st.integers(1, max_d)))
    H, W = x.shape[1:3]
    assume(H + pad[0] + pad[1] >= (ks[0] - 1) * d[0] + 1 and W + pad[2] + pad[3] >= (ks[1] - 1) * d[1] + 1)
    return x, w, ks, s, pad, d, r


def _dilated_all(x, w, ks, s, pad, d, be):
    "The columns of x and dx = col2im(dy W^T) with dilation d on backend `be`; dy is fixed by its shape."
    F = w.shape[-1]
    cols = K.im2col(x, ks, s, pad, be, dilation=d)
    dy = np.random.default_rng(0).normal(size=(cols.shape[0], F)).astype(np.float32)
    dx = K.col2im(dy @ w.reshape(-1, F).T, x.shape, ks, s, pad, be, dilation=d)
    return cols, dy, dx


def _check_dilated(case, backends):
    "Every backend: cols bit-equal to NumPy's, y and dx equal to the naive loops on the zero-stuffed kernel."
    x, w, ks, s, pad, d, r = case
    wd = K.dilate_kernel(w.astype(np.float64), d)
    cols_np, dy, dx_np = _dilated_all(x, w, ks, s, pad, d, 'numpy')
    y_ref = K.conv2d_naive_forward(x.astype(np.float64), wd, None, s, pad)
    dx_ref = K.conv2d_naive_backward(dy.reshape(y_ref.shape).astype(np.float64), x.astype(np.float64), wd, s, pad)[0]
    _close((cols_np @ w.reshape(-1, w.shape[-1])).reshape(y_ref.shape), y_ref)
    _close(dx_np, dx_ref)
    for be in backends:
        cols, _, dx = _dilated_all(x, w, ks, s, pad, d, be)
        np.testing.assert_array_equal(cols, cols_np)
        _close(dx, dx_ref)


@settings(max_examples=80, **SETTINGS)
@given(dilated_cases())
def test_dilated_im2col_numpy_numba_naive_agree(case):
    _check_dilated(case, ['numba'])


@settings(max_examples=15, **SETTINGS)
@given(dilated_cases(max_hw=7, max_c=2, max_k=3, max_d=2, max_s=2, max_p=1))
def test_dilated_im2col_cuda_agrees(case):
    _check_dilated(case, ['cuda'])


def test_dilated_same_padding_and_bad_rate():
    "'same' pads the dilated field ((3 - 1)*2 + 1 = 5): 2 on each side; a rate below 1 is refused."
    x = np.zeros((1, 6, 7, 2), np.float32)
    assert K.im2col(x, 3, 1, 'same', dilation=2).shape == (6 * 7, 18)
    with pytest.raises(ValueError, match='larger than the padded input'):
        K.im2col(x, 3, 1, 0, dilation=(3, 1))     # a 7x3 field on 6 rows
    with pytest.raises(ValueError, match=r'dilation must be a positive int or a pair of positive ints, got 0'):
        K.im2col(x, 3, dilation=0)


@st.composite
def depthwise_cases(draw, max_n=3, max_hw=10, max_c=4, max_m=3, max_k=4, max_s=3, max_p=2):
    "A random depthwise geometry (depth multiplier M, stride > kernel and asymmetric padding included) and float32 data."
    x, w, ks, s, pad, r = draw(conv_cases(max_n=max_n, max_hw=max_hw, max_c=max_c, max_f=1, max_k=max_k, max_s=max_s, max_p=max_p))
    M = draw(st.integers(1, max_m))
    return x, r.normal(size=(*ks, x.shape[3], M)).astype(np.float32), s, pad, r


def _check_depthwise(case, backends):
    "Every backend gives the naive loops' y, dx and dW on the block-diagonal full kernel."
    x, w, s, pad, r = case
    (kh, kw, C, M) = w.shape
    wfull = np.zeros((kh, kw, C, C * M))
    for c in range(C): wfull[:, :, c, c * M:(c + 1) * M] = w[:, :, c]
    x64 = x.astype(np.float64)
    y_ref = K.conv2d_naive_forward(x64, wfull, None, s, pad)
    dy = r.normal(size=y_ref.shape).astype(np.float32)
    dx_ref, dwf_ref, _ = K.conv2d_naive_backward(dy.astype(np.float64), x64, wfull, s, pad)
    dw_ref = np.stack([dwf_ref[:, :, c, c * M:(c + 1) * M] for c in range(C)], axis=2)
    for be in backends:
        y = K.depthwise_forward(x, w, s, pad, be)
        dx, dw = K.depthwise_backward(dy, x, w, s, pad, be)
        assert y.dtype == dx.dtype == dw.dtype == np.float32
        _close(y, y_ref); _close(dx, dx_ref); _close(dw, dw_ref)
        assert K.depthwise_backward(dy, x, w, s, pad, be, need_dx=False)[0] is None


@settings(max_examples=80, **SETTINGS)
@given(depthwise_cases())
def test_depthwise_numpy_numba_naive_agree(case):
    _check_depthwise(case, ['numpy', 'numba'])


@settings(max_examples=15, **SETTINGS)
@given(depthwise_cases(max_n=2, max_hw=6, max_c=2, max_m=2, max_k=3, max_s=2, max_p=1))
def test_depthwise_cuda_agrees(case):
    _check_depthwise(case, ['cuda'])


def test_depthwise_float64_and_bad_input():
    r = np.random.default_rng(0)
    x, w = r.normal(size=(2, 6, 5, 3)), r.normal(size=(3, 3, 3, 2))
    for be in ('numpy', 'numba'):
        assert K.depthwise_forward(x, w, 1, 'same', be).dtype == np.float64
    np.testing.assert_allclose(K.depthwise_forward(x, w, 2, 'same', 'numba'), K.depthwise_forward(x, w, 2, 'same', 'numpy'), rtol=1e-12)
    with pytest.raises(ValueError, match=r'w \(KH, KW, 3, M\) to match x of shape \(2, 6, 5, 3\), got w shape \(3, 3, 2, 1\)'):
        K.depthwise_forward(x, np.zeros((3, 3, 2, 1)))
    with pytest.raises(ValueError, match=r'dy of shape \(2, 6, 5, 6\)'):
        K.depthwise_backward(np.zeros((2, 6, 5, 3)), x, w, 1, 'same')
