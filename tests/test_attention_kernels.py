"Parity of `kernels.attention` (Numba CPU, CUDA in the simulator) with chapter 13's NumPy references, and input checks."
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck
from dl_from_scratch.kernels import attention as K
from dl_from_scratch.attention import (masked_softmax, causal_mask, layer_norm_reference, layer_norm_reference_backward,
                                       scaled_dot_product_attention, scaled_dot_product_attention_backward)
from dl_from_scratch.functional import softmax_vjp

TOL = {np.float64: 1e-12, np.float32: 2e-6}
BACKENDS = ['numba', 'cuda']
SETTINGS = dict(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def close(a, b, dtype):
    np.testing.assert_allclose(a, b, rtol=TOL[dtype], atol=TOL[dtype])


@st.composite
def softmax_problem(draw):
    "Scores of rank 2 to 5, a mask broadcast along some axes (or none), causal or not, a scale, a dtype."
    lead = draw(st.lists(st.integers(1, 3), min_size=0, max_size=3))
    Tq, Tk = draw(st.integers(1, 6)), draw(st.integers(1, 7))
    shape = (*lead, Tq, Tk)
    seed = draw(st.integers(0, 2 ** 16))
    r = np.random.default_rng(seed)
    mask = None
    if draw(st.booleans()):
        mshape = tuple(s if draw(st.booleans()) else 1 for s in shape[:-1]) + (Tk,)
        mshape = mshape[draw(st.integers(0, len(mshape) - 1)):]      # fewer leading axes: broadcast too
        mask = r.random(mshape) < 0.7
    dtype = draw(st.sampled_from([np.float64, np.float32]))
    S = (r.standard_normal(shape) * 3).astype(dtype)
    return S, mask, draw(st.booleans()), draw(st.sampled_from([1.0, 0.5, 0.125])), dtype, r


@pytest.mark.parametrize('backend', BACKENDS)
@given(softmax_problem())
@settings(**SETTINGS)
def test_softmax_parity_with_reference(backend, problem):
    S, mask, causal, scale, dtype, r = problem
    full = mask
    if causal: full = causal_mask(*S.shape[-2:]) if mask is None else mask & causal_mask(*S.shape[-2:])
    P0 = masked_softmax(S * scale, full)
    P = K.softmax_forward(S, mask, causal, scale, backend)
    close(P, P0, dtype)
    dP = r.standard_normal(S.shape).astype(dtype)
    close(K.softmax_backward(P, dP, causal, scale, backend), softmax_vjp(P0, dP) * scale, dtype)


@pytest.mark.parametrize('backend', BACKENDS)
def test_fully_masked_rows_are_zero_and_in_place_output(backend):
    r = np.random.default_rng(0)
    S = r.standard_normal((2, 3, 4, 5)).astype(np.float32)
    mask = np.ones((2, 1, 4, 5), bool); mask[1, 0, 2] = False; mask[0, 0, :, 0] = False
    P = K.softmax_forward(S.copy(), mask, False, 1.0, backend)
    assert (P[1, :, 2] == 0).all() and (P[0, :, :, 0] == 0).all()
    np.testing.assert_allclose(np.delete(P.sum(-1), 2, axis=2)[1], 1, rtol=1e-6)
    S2 = S.copy()
    out = K.softmax_forward(S2, mask, True, 0.5, backend, out=S2)       # over the scores themselves
    assert out is S2 or np.shares_memory(out, S2) or backend == 'cuda'
    close(out, masked_softmax(S * 0.5, mask & causal_mask(4, 5)), np.float32)


@pytest.mark.parametrize('backend', BACKENDS)
@given(lead=st.lists(st.integers(1, 4), min_size=0, max_size=2), D=st.integers(1, 9), dtype=st.sampled_from([np.float64, np.float32]),
       seed=st.integers(0, 2 ** 16))
@settings(**SETTINGS)
def test_layer_norm_parity_with_reference(backend, lead, D, dtype, seed):
    r = np.random.default_rng(seed)
    x = (r.standard_normal((*lead, 3, D)) * 2 + 5).astype(dtype)      # a mean far from 0
    gamma, beta, dy = r.standard_normal(D).astype(dtype), r.standard_normal(D).astype(dtype), r.standard_normal(x.shape).astype(dtype)
    ref = layer_norm_reference(x, gamma, beta, 1e-5)
    got = K.layer_norm_forward(x, gamma, beta, 1e-5, backend)
    tol = {np.float64: 1e-10, np.float32: 2e-4}[dtype]            # 1/sqrt(var + eps) of a nearly constant row amplifies
    for a, b in zip(got, ref): np.testing.assert_allclose(a, b, rtol=tol, atol=tol)
    refb = layer_norm_reference_backward(dy, ref[1], ref[2], gamma)
    for a, b in zip(K.layer_norm_backward(dy, ref[1], ref[2], gamma, backend), refb):
        np.testing.assert_allclose(a, b, rtol=tol, atol=tol * max(1, np.abs(b).max()))


def test_fast_exp_is_accurate_and_zero_below_range():
    x = np.concatenate([-np.logspace(-7, np.log10(87), 20_000), [0, -87.5, -1e4, -np.inf]]).astype(np.float32)
    e = x.copy(); K.exp_inplace_f32(e, len(e))
    ok = x >= -87
    np.testing.assert_allclose(e[ok], np.exp(x[ok].astype(np.float64)), rtol=2e-7)
    assert (e[~ok] == 0).all()


@pytest.mark.parametrize('backend', ['numpy', 'numba', 'cuda'])
def test_attention_backends_agree(backend):
    "scaled_dot_product_attention and its backward on each backend against the reference, padding + causal masks."
    r = np.random.default_rng(3)
    Q, Kk, V = r.standard_normal((2, 2, 5, 4)), r.standard_normal((2, 2, 6, 4)), r.standard_normal((2, 2, 6, 3))
    pad = np.ones((2, 1, 1, 6), bool); pad[1, ..., 4:] = False
    G = r.standard_normal((2, 2, 5, 3))
    O0, c0 = scaled_dot_product_attention(Q, Kk, V, pad, causal=True, backend='numpy')
    O, c = scaled_dot_product_attention(Q, Kk, V, pad, causal=True, backend=backend)
    np.testing.assert_allclose(O, O0, atol=1e-12)
    for a, b in zip(scaled_dot_product_attention_backward(G, c), scaled_dot_product_attention_backward(G, c0)):
        np.testing.assert_allclose(a, b, atol=1e-12)


def test_bad_input():
    S = np.zeros((2, 3, 4))
    with pytest.raises(ValueError, match='broadcasts'): K.softmax_forward(S, np.ones((3, 5), bool))
    with pytest.raises(ValueError, match='rank >= 2'): K.softmax_forward(np.zeros(4))
    with pytest.raises(ValueError, match="reference is chapter 13"): K.softmax_forward(S, backend='numpy')
    with pytest.raises(ValueError, match='backend must be'): K.softmax_forward(S, backend='gpu')
    with pytest.raises(ValueError, match='out of shape'): K.softmax_forward(S, out=np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r'dP of shape \(2, 3, 4\)'): K.softmax_backward(S, np.zeros((2, 3, 5)))
    with pytest.raises(ValueError, match=r'gamma of shape \(4,\)'): K.layer_norm_forward(S, np.ones(3), np.zeros(4))
    with pytest.raises(ValueError, match=r's of shape'): K.layer_norm_backward(S, S, np.ones((2, 3)), np.ones(4))


def test_one_blas_thread_restores_the_count():
    from dl_from_scratch.core import openblas_threads
    fns = openblas_threads()
    if fns is None: pytest.skip("NumPy's OpenBLAS not found")
    before = fns[1]()
    with K.one_blas_thread(): assert fns[1]() == 1
    assert fns[1]() == before
