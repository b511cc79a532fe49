"Kernel parity (NumPy reference, Numba CPU, Numba CUDA), BPTT gradient checks and input checks of `kernels.recurrent`."
import os
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)
import numpy as np
import pytest
from dl_from_scratch.kernels import recurrent as K
from dl_from_scratch.gradcheck import numerical_grad, rel_error
from dl_from_scratch.core import has_cuda, to_numpy

G = {'rnn': 1, 'lstm': 4, 'gru': 3}

def problem(cell, N=3, T=5, D=4, H=3, dtype=np.float32, seed=0, masked=True):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.normal(size=s).astype(dtype)
    mask = np.ones((N, T))
    if masked: mask[0, 3:] = 0; mask[1, 1] = 0
    a = dict(x=f(N, T, D), h0=f(N, H) * 0.5, Wx=f(D, G[cell] * H) * 0.5, Wh=f(H, G[cell] * H) * 0.5,
             b=f(G[cell] * H) * 0.1, mask=mask)
    if cell == 'lstm': a.update(c0=f(N, H) * 0.5, peep=f(3, H) * 0.5)
    return a, f(N, T, H), f(N, H)

def run(cell, args, dhs, dcT, backend):
    "(outputs, gradients) as NumPy arrays."
    if cell == 'rnn':
        hs, c = K.rnn_forward(**args, backend=backend); return [hs], K.rnn_backward(dhs, c)
    if cell == 'gru':
        hs, c = K.gru_forward(**args, backend=backend); return [hs], K.gru_backward(dhs, c)
    hs, cT, c = K.lstm_forward(**args, backend=backend)
    return [hs, cT], K.lstm_backward(dhs, dcT, c)

def run_ws(cell, args, dhs, dcT, backend, ws):
    "As `run`, with a workspace dict kept by the caller."
    if cell == 'rnn':
        hs, c = K.rnn_forward(**args, backend=backend, workspace=ws); return [hs], K.rnn_backward(dhs, c)
    if cell == 'gru':
        hs, c = K.gru_forward(**args, backend=backend, workspace=ws); return [hs], K.gru_backward(dhs, c)
    hs, cT, c = K.lstm_forward(**args, backend=backend, workspace=ws)
    return [hs, cT], K.lstm_backward(dhs, dcT, c)

@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_workspace_reuse_changes_nothing(cell, backend):
    """Kept work arrays give the same numbers as fresh ones, call after call (other shapes in between),
    and what a call returns is never overwritten by the next call."""
    args, dhs, dcT = problem(cell)
    ref_out, ref_g = run(cell, args, dhs, dcT, backend)
    ws = {}
    out1, g1 = run_ws(cell, args, dhs, dcT, backend, ws)
    kept = [a.copy() for a in out1 + list(g1) if a is not None]
    other, odhs, odcT = problem(cell, N=2, T=7, seed=1)
    run_ws(cell, other, odhs, odcT, backend, ws)                       # another shape: the arrays are replaced
    args2, dhs2, dcT2 = problem(cell, seed=2)
    out2, g2 = run_ws(cell, args2, dhs2, dcT2, backend, ws)             # the first shape again, other data
    for a, k in zip([a for a in out1 + list(g1) if a is not None], kept): np.testing.assert_array_equal(a, k)
    out3, g3 = run_ws(cell, args, dhs, dcT, backend, ws)
    for a, r in zip(out3 + list(g3), ref_out + list(ref_g)):
        if r is None: assert a is None
        else: np.testing.assert_array_equal(a, r)
    assert ws, 'the workspace was not used'

@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
@pytest.mark.parametrize('backend', ['numba', 'cuda'])
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_backends_agree(cell, backend, dtype):
    args, dhs, dcT = problem(cell, dtype=dtype)
    ref_out, ref_g = run(cell, args, dhs, dcT, 'numpy')
    out, g = run(cell, args, dhs, dcT, backend)
    tol = 2e-5 if dtype == np.float32 else 1e-12
    for a, r in zip(out + list(g), ref_out + list(ref_g)):
        if r is None: continue
        a = to_numpy(a)
        assert a.dtype == dtype
        np.testing.assert_allclose(a, r, rtol=tol, atol=tol)

@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_bptt_matches_central_differences(cell, backend):
    args, dhs, dcT = problem(cell, dtype=np.float64, seed=1)
    names = {'rnn': ['x', 'h0', 'Wx', 'Wh', 'b'], 'gru': ['x', 'h0', 'Wx', 'Wh', 'b'],
             'lstm': ['x', 'h0', 'c0', 'Wx', 'Wh', 'b', 'peep']}[cell]
    def loss(a):
        if cell == 'lstm':
            hs, cT, _ = K.lstm_forward(**a, backend=backend); return float((hs * dhs).sum() + (cT * dcT).sum())
        f = K.rnn_forward if cell == 'rnn' else K.gru_forward
        return float((f(**a, backend=backend)[0] * dhs).sum())
    _, grads = run(cell, args, dhs, dcT, backend)
    for k, g in zip(names, grads):
        num = numerical_grad(lambda v: loss({**args, k: v}), args[k].copy())
        assert rel_error(g, num) < 1e-6, (cell, k)

def test_masked_steps_carry_state_and_gradient():
    args, dhs, dcT = problem('lstm', dtype=np.float64)
    hs, cT, c = K.lstm_forward(**args, backend='numba')
    np.testing.assert_array_equal(hs[0, 3], hs[0, 2]); np.testing.assert_array_equal(hs[0, 4], hs[0, 2])
    np.testing.assert_array_equal(hs[1, 1], hs[1, 0])   # a hole in the mask
    np.testing.assert_array_equal(cT[0], c['Cs'][3][0])

@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_bad_input(cell):
    args, _, _ = problem(cell)
    f = {'rnn': K.rnn_forward, 'lstm': K.lstm_forward, 'gru': K.gru_forward}[cell]
    with pytest.raises(ValueError, match=r'rank 3'): f(**{**args, 'x': args['x'][0]})
    with pytest.raises(ValueError, match=r'expected Wx of shape \(2, '): f(**{**args, 'x': args['x'][..., :2]})
    with pytest.raises(ValueError, match=r'mask of shape \(3, 5\), got \(3, 4\)'): f(**{**args, 'mask': np.ones((3, 4))})
    with pytest.raises(ValueError, match=r'h0 of shape \(3, 3\), got \(2, 3\)'): f(**{**args, 'h0': args['h0'][:2]})
    bad = args['x'].copy(); bad[1, 2, 3] = np.nan
    with pytest.raises(ValueError, match='NaN'): f(**{**args, 'x': bad})

def test_import_needs_no_gpu():
    import subprocess, sys
    code = "import dl_from_scratch.kernels.recurrent, dl_from_scratch.rnn, sys; print('numba.cuda' in sys.modules, 'cupy' in sys.modules)"
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout.split()
    assert out == ['False', 'False']

@pytest.mark.skipif(not has_cuda(), reason='needs CuPy and a CUDA GPU')
@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_cuda_on_device(cell):
    "On a real GPU: CuPy in, CuPy out (data stays on the device), equal to the NumPy reference."
    import cupy as cp
    args, dhs, dcT = problem(cell, N=16, T=20, D=8, H=32)
    ref_out, ref_g = run(cell, args, dhs, dcT, 'numpy')
    dargs = {k: (cp.asarray(v) if v is not None else None) for k, v in args.items()}
    out, g = run(cell, dargs, cp.asarray(dhs), cp.asarray(dcT), 'auto')
    for a, r in zip(out + list(g), ref_out + list(ref_g)):
        if r is None: continue
        assert isinstance(a, cp.ndarray)
        np.testing.assert_allclose(cp.asnumpy(a), r, rtol=1e-4, atol=1e-4)


# ---- the embedding's backward scatter (`layers.scatter_rows`), which feeds the recurrent nets' first layer ----
from hypothesis import given, settings, strategies as st, HealthCheck
from dl_from_scratch.layers import scatter_rows

@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.integers(1, 9), st.integers(0, 60), st.integers(1, 7), st.sampled_from([np.float32, np.float64]),
       st.integers(0, 2**31))
def test_scatter_rows_backends_agree(V, n, D, dtype, seed):
    """Numba = np.add.at bit for bit (the same sums in the same order, repeated ids included); CUDA (atomic adds,
    in the simulator without a GPU) = np.add.at to rounding; every backend = the per-id sums."""
    rng = np.random.default_rng(seed)
    ids, rows = rng.integers(0, V, n), rng.normal(size=(n, D)).astype(dtype)
    start = rng.normal(size=(V, D)).astype(dtype)                 # adds into what dW holds
    ref = scatter_rows(start.copy(), ids, rows, backend='numpy')
    got = scatter_rows(start.copy(), ids, rows, backend='numba')
    assert got.dtype == dtype and np.array_equal(got.view(np.uint8), ref.view(np.uint8))
    cu = to_numpy(scatter_rows(start.copy(), ids, rows, backend='cuda'))
    tol = 1e-5 if dtype == np.float32 else 1e-12
    np.testing.assert_allclose(cu, ref, rtol=tol, atol=tol)
    per_id = start + np.stack([rows[ids == v].sum(0) for v in range(V)])
    np.testing.assert_allclose(ref, per_id, rtol=tol, atol=tol)

def test_scatter_rows_is_embeddings_backward_and_checks_input():
    from dl_from_scratch.layers import Embedding
    e = Embedding(50, 8, rng=0); ids = np.random.default_rng(1).integers(0, 50, (16, 30))
    dy = np.random.default_rng(2).normal(size=(16, 30, 8)).astype(np.float32)
    e(ids); e.backward(dy)
    ref = np.zeros((50, 8), np.float32); np.add.at(ref, ids.reshape(-1), dy.reshape(-1, 8))
    assert np.array_equal(e.grads['W'].view(np.uint8), ref.view(np.uint8))
    with pytest.raises(ValueError, match=r'rows of shape \(3, 8\), got \(3, 7\)'):
        scatter_rows(np.zeros((50, 8)), np.arange(3), np.zeros((3, 7)))
    with pytest.raises(ValueError, match=r'ids with dtype kind'): scatter_rows(np.zeros((50, 8)), np.zeros(3), np.zeros((3, 8)))
    with pytest.raises(ValueError, match=r'dW of rank 2'): scatter_rows(np.zeros(50), np.arange(3), np.zeros((3, 8)))
