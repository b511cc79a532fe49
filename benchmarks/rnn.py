"""Recurrent kernels: forward + BPTT, float32, on the CPU: our Numba LSTM and GRU against the NumPy reference and
`torch.nn.LSTM` / `torch.nn.GRU` on the same number of threads, medians over repeated runs.

    python benchmarks/rnn.py [--repeat 7] [--threads 1]     # or: make bench

Cases: B=32, T=150, D=3, H=128 (the activity-recognition report's size) and B=64, T=28,
D=28, H=128 (row-by-row MNIST). One timed run = forward over the whole sequence + BPTT (gradients of the
input, the initial state and all weights) for dL/dh_t given at every step. Goals: <= 1.0x PyTorch's CPU time,
>= 5x faster than the NumPy reference, Numba's compile cost reported separately and a warm start
(`cache=True`) under 2 s. Without torch the PyTorch columns are left out. With a GPU (CuPy) the CUDA path
is timed against PyTorch CUDA too.

The per-step products are small, so BLAS runs on `--threads` threads (1 by default, also for PyTorch):
set before NumPy is imported, which is why this module reads the flag at import when run as a script.
"""
from __future__ import annotations
import os, sys
if __name__ == '__main__':   # the BLAS thread count must be fixed before NumPy loads
    _t = sys.argv[sys.argv.index('--threads') + 1] if '--threads' in sys.argv else '1'
    os.environ.setdefault('OPENBLAS_NUM_THREADS', _t); os.environ.setdefault('OMP_NUM_THREADS', _t)
    os.environ.setdefault('MKL_NUM_THREADS', _t)
import argparse, subprocess, tempfile, textwrap
import numpy as np

CASES = [  # name, B, T, D, H
    ('report task B=32 T=150 D=3 H=128', 32, 150, 3, 128),
    ('row MNIST B=64 T=28 D=28 H=128', 64, 28, 28, 128),
]
CELLS = ('lstm', 'gru')


def blas_threads() -> int:
    "The BLAS thread count in force (from the environment NumPy was started with)."
    for k in ('OPENBLAS_NUM_THREADS', 'OMP_NUM_THREADS', 'MKL_NUM_THREADS'):
        if os.environ.get(k): return int(os.environ[k])
    return os.cpu_count() or 1


sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402


def make_problem(cell, B, T, D, H, xp=np, seed=0):
    rng = np.random.default_rng(seed)
    G = {'lstm': 4, 'gru': 3}[cell]
    f = lambda *s, sc=1.0: xp.asarray((rng.standard_normal(s) * sc).astype(np.float32))
    return dict(x=f(B, T, D), h0=f(B, H, sc=0.0), Wx=f(D, G * H, sc=0.1), Wh=f(H, G * H, sc=0.1),
                b=f(G * H, sc=0.0)), f(B, T, H)


def ours_step(cell, args, dhs, backend):
    """A closure running forward + BPTT with our kernels on `backend`, keeping the work arrays between runs in
    a workspace dict as the `LSTM` and `GRU` layers do (the NumPy reference runs the same driver, so it does too)."""
    from dl_from_scratch.kernels import recurrent as K
    ws = {}
    if cell == 'lstm':
        def step():
            _, _, c = K.lstm_forward(args['x'], args['h0'], args['h0'], args['Wx'], args['Wh'], args['b'],
                                     backend=backend, workspace=ws)
            K.lstm_backward(dhs, None, c)
    else:
        def step():
            _, c = K.gru_forward(**args, backend=backend, workspace=ws)
            K.gru_backward(dhs, c)
    return step


def products_step(cell, B, T, D, H):
    """The matrix products that both our kernels and the NumPy reference call (the input projection, one
    recurrent product per step forward and one backward, then dWh, dWx and dx), on random data. The NumPy
    reference's time over this is the largest speed-up any faster elementwise code could give over it.
    X carries the column of ones and Wx the bias row (the bias trick of `_setup`)."""
    G = {'lstm': 4, 'gru': 3}[cell]
    r = np.random.default_rng(0); f = lambda *s: r.standard_normal(s, dtype=np.float32)
    X, Wx, Wh, hs, dA = f(T * B, D + 1), f(D + 1, G * H), f(H, G * H), f(T + 1, B, H), f(T, B, G * H)  # X, Wx with the bias column/row
    WhT, out_f, out_b = np.ascontiguousarray(Wh.T), np.empty((B, G * H), np.float32), np.empty((B, H), np.float32)
    def step():
        X @ Wx
        for t in range(T): np.matmul(hs[t], Wh, out=out_f)
        for t in range(T - 1, -1, -1): np.matmul(dA[t], WhT, out=out_b)
        dA2 = dA.reshape(T * B, G * H)
        hs[:-1].reshape(T * B, H).T @ dA2; X.T @ dA2; dA2 @ Wx[:D].T
    return step


def torch_step(cell, args, dhs, device='cpu'):
    "The same computation with torch.nn.LSTM / GRU (cuDNN on CUDA); None when torch is missing."
    try:
        import torch
    except ImportError:
        return None
    D, H = args['x'].shape[2], args['h0'].shape[1]
    mod = (torch.nn.LSTM if cell == 'lstm' else torch.nn.GRU)(D, H, batch_first=True).to(device)
    to = lambda a: torch.as_tensor(np.asarray(a) if device == 'cpu' else a.get(), device=device)
    x, g = to(args['x']).requires_grad_(True), to(dhs)
    def step():
        y, _ = mod(x)
        y.backward(g)
    return step


def compile_and_warm_start(cell='lstm'):
    """Seconds for the first call of the Numba kernels in a fresh process with an empty cache (compile) and
    in a second fresh process that finds the cache (warm start). Both include importing the package."""
    code = textwrap.dedent(f"""
        import time; t0 = time.perf_counter()
        import numpy as np
        from dl_from_scratch.kernels import recurrent as K
        x = np.zeros((2, 3, 4), np.float32); h = np.zeros((2, 5), np.float32)
        G = {{'lstm': 4, 'gru': 3}}['{cell}']
        W, U, b = np.zeros((4, G * 5), np.float32), np.zeros((5, G * 5), np.float32), np.zeros(G * 5, np.float32)
        if '{cell}' == 'lstm':
            _, _, c = K.lstm_forward(x, h, h, W, U, b, backend='numba'); K.lstm_backward(np.ones((2, 3, 5), np.float32), None, c)
        else:
            _, c = K.gru_forward(x, h, W, U, b, backend='numba'); K.gru_backward(np.ones((2, 3, 5), np.float32), c)
        print(time.perf_counter() - t0)
    """)
    out = {}
    with tempfile.TemporaryDirectory() as cache:
        env = {**os.environ, 'NUMBA_CACHE_DIR': cache}
        for k in ('cold', 'warm'):
            r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
            if r.returncode: raise RuntimeError(r.stderr[-2000:])
            out[k] = float(r.stdout.split()[-1])
    return out


def run(repeat=7, cases=CASES, cells=CELLS, numpy_ref=True, with_torch=True):
    "Time every (case, cell) on the CPU; a list of dicts with medians in seconds and the ratios."
    try:
        import torch
        torch.set_num_threads(blas_threads())
    except ImportError:
        with_torch = False
    rows = []
    for name, B, T, D, H in cases:
        for cell in cells:
            args, dhs = make_problem(cell, B, T, D, H)
            r = dict(case=name, cell=cell.upper(), numba=median_time(ours_step(cell, args, dhs, 'numba'), repeat))
            if numpy_ref:
                r['numpy'] = median_time(ours_step(cell, args, dhs, 'numpy'), repeat)
                r['products'] = median_time(products_step(cell, B, T, D, H), repeat)
            if with_torch: r['torch'] = median_time(torch_step(cell, args, dhs), repeat)
            rows.append(r)
    return rows


def run_cuda(repeat=7, cases=CASES, cells=CELLS):
    "The CUDA path (CuPy arrays, cuBLAS, Numba CUDA kernels) against PyTorch CUDA; [] without a GPU."
    from dl_from_scratch.core import has_cuda
    if not has_cuda(): return []
    import cupy as cp
    rows = []
    for name, B, T, D, H in cases:
        for cell in cells:
            args, dhs = make_problem(cell, B, T, D, H, xp=cp)
            r = dict(case=name, cell=cell.upper(),
                     cuda=median_time(ours_step(cell, args, dhs, 'cuda'), repeat, sync=cp.cuda.Device().synchronize))
            t = torch_step(cell, args, dhs, device='cuda')
            if t is not None:
                import torch
                r['torch_cuda'] = median_time(t, repeat, sync=torch.cuda.synchronize)
            rows.append(r)
    return rows


def format_table(rows) -> str:
    "A markdown table of `run`'s rows: times in ms and the ratios."
    has_t, has_n = any('torch' in r for r in rows), any('numpy' in r for r in rows)
    head = ['case', 'cell', 'ours (Numba) ms']
    if has_n: head += ['NumPy ref ms', 'speed-up vs NumPy', 'products ms', 'max speed-up vs NumPy']
    if has_t: head += ['PyTorch ms', 'ours / PyTorch'] + (['products / PyTorch'] if has_n else [])
    lines = ['| ' + ' | '.join(head) + ' |', '|' + '---|' * len(head)]
    for r in rows:
        c = [r['case'], r['cell'], f"{r['numba'] * 1e3:.1f}"]
        if has_n: c += [f"{r['numpy'] * 1e3:.1f}", f"{r['numpy'] / r['numba']:.2f}x", f"{r['products'] * 1e3:.1f}",
                        f"{r['numpy'] / r['products']:.2f}x"]
        if has_t: c += [f"{r['torch'] * 1e3:.1f}", f"{r['numba'] / r['torch']:.2f}x"] + (
            [f"{r['products'] / r['torch']:.2f}x"] if has_n else [])
        lines.append('| ' + ' | '.join(c) + ' |')
    return '\n'.join(lines)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repeat', type=int, default=7, help='timed runs per entry (the median is reported; >= 5)')
    p.add_argument('--threads', type=int, default=None, help='BLAS/PyTorch threads (must match the environment)')
    p.add_argument('--json', default=None, help='also write the rows (times in seconds) to this JSON file')
    a = p.parse_args([] if argv is None and __name__ != '__main__' else argv)
    repeat = max(a.repeat, 5)
    print(f"\n## RNN kernels: forward + BPTT, float32, CPU, {blas_threads()} BLAS/PyTorch thread(s), "
          f"median of {repeat} runs")
    cc = {cell: compile_and_warm_start(cell) for cell in CELLS}
    for cell, v in cc.items():
        print(f"{cell.upper()}: first call with an empty Numba cache (import + compile) {v['cold']:.2f} s; "
              f"warm start from the cache {v['warm']:.2f} s")
    rows = run(repeat)
    print(format_table(rows))
    print("products: the matrix products ours and the NumPy reference share; max speed-up vs NumPy = NumPy ref / products,")
    print("the most any elementwise code could gain over the reference with this BLAS (the 5x goal needs it above 5);")
    print("products / PyTorch: those products alone against PyTorch's whole step, the floor of ours / PyTorch.")
    if not any('torch' in r for r in rows): print("(torch not installed: no PyTorch column)")
    cuda = run_cuda(repeat)
    if cuda:
        print("\nCUDA (CuPy + cuBLAS + Numba CUDA kernels) against PyTorch CUDA (cuDNN):")
        for r in cuda:
            extra = f", PyTorch {r['torch_cuda'] * 1e3:.2f} ms, ratio {r['cuda'] / r['torch_cuda']:.2f}x" if 'torch_cuda' in r else ''
            print(f"  {r['case']} {r['cell']}: ours {r['cuda'] * 1e3:.2f} ms{extra}")
    if a.json:
        import json
        with open(a.json, 'w') as f: json.dump(dict(rows=rows, compile=cc, cuda=cuda), f)
    return rows, cc, cuda


if __name__ == '__main__':
    main(sys.argv[1:])
