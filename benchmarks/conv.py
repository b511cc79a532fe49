"""Convolution forward + backward, float32 NHWC, on the CPU: our Numba im2col layer against the NumPy im2col
reference, the naive loops and `torch.nn.functional.conv2d` (same thread count), with GFLOP/s as a fraction
of this machine's NumPy float32 matmul rate.

    python benchmarks/conv.py [--repeat 5] [--no-naive] [--lenet]      # or: make bench

Cases: LeNet conv1 (1->6, 5x5 on 28x28) and conv2 (6->16, 5x5 on 14x14) at batch 128,
and a 3x3 32->64 'same' conv on 32x32 at batch 64. Goals: <= 1.0x PyTorch, >= 10x faster than the naive
loops, >= 40% of the matmul rate on the 3x3 layer. A second table times the other convolution layers against
PyTorch: a depthwise 3x3 on 32 channels at 32x32 (PyTorch: groups=C) and a Conv2DTranspose 64->32, 4x4,
stride 2, 8x8 -> 16x16, both at batch 64 (goals <= 1.0x). With --lenet: one LeNet-5 MNIST epoch (batch 128)
against the same net in PyTorch (goal <= 1.2x). With a GPU (CuPy) the CUDA path is timed against PyTorch
CUDA too. Without torch, the PyTorch columns are left out.
"""
from __future__ import annotations
import argparse, statistics, time
import os, sys
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time, in_clean_process, CleanProcess, interleaved

CASES = [  # name, N, H, W, C, F, k, stride, padding
    ('LeNet conv1 1->6 5x5 28x28', 128, 28, 28, 1, 6, 5, 1, 'valid'),
    ('LeNet conv2 6->16 5x5 14x14', 128, 14, 14, 6, 16, 5, 1, 'valid'),
    ('3x3 32->64 32x32', 64, 32, 32, 32, 64, 3, 1, 'same'),
]


LAYER_CASES = [  # name, kind, N, H, W, C (in), F (out), k, stride, padding
    ('depthwise 3x3 32ch 32x32', 'depthwise', 64, 32, 32, 32, 32, 3, 1, 'same'),
    ('transpose 64->32 4x4 s2 8->16', 'transpose', 64, 8, 8, 64, 32, 4, 2, 'same'),
]


def set_threads(n: int) -> None:
    "Use `n` threads in Numba, OpenBLAS (NumPy's matmul) and PyTorch."
    from dl_from_scratch.core import set_num_threads
    set_num_threads(n)


def matmul_gflops(n=1024, repeat=10):
    "This machine's peak NumPy float32 matmul rate (GFLOP/s): the best of `repeat` n x n products."
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    b = np.random.default_rng(1).standard_normal((n, n), dtype=np.float32)
    return 2 * n**3 / median_time(lambda: a @ b, repeat, best=True) / 1e9


def conv_flops(N, OH, OW, K, F):
    "Multiply-adds x 2 of the three products (forward, dW, dX) of an im2col convolution."
    return 3 * 2 * N * OH * OW * K * F


def _ours(x, dy, F, k, s, pad, backend):
    from dl_from_scratch.conv import Conv2D
    layer = Conv2D(F, k, strides=s, padding=pad, rng=0, backend=backend)
    layer(x)
    def step():
        layer.forward(x, training=True)
        layer.backward(dy)
    return step


def _gemms(N, OH, OW, K, F):
    """The three matrix products of an im2col convolution alone (forward, dW, dX columns), on random data:
    a lower bound on any im2col layer's time with this BLAS, however fast im2col and col2im are."""
    r = np.random.default_rng(0)
    cols = r.standard_normal((N * OH * OW, K), dtype=np.float32)
    w = r.standard_normal((K, F), dtype=np.float32); d2 = r.standard_normal((N * OH * OW, F), dtype=np.float32)
    y, dw, dcols = np.empty_like(d2), np.empty_like(w), np.empty_like(cols)    # no fresh pages: products only
    def step():
        np.matmul(cols, w, out=y); np.matmul(cols.T, d2, out=dw); np.matmul(d2, w.T, out=dcols)
    return step


def _naive(x, dy, w, b, s, pad_t):
    from dl_from_scratch.kernels.conv import conv2d_naive_forward, conv2d_naive_backward
    def step():
        conv2d_naive_forward(x, w, b, s, pad_t)
        conv2d_naive_backward(dy, x, w, s, pad_t)
    return step


def _torch_step(torch, x, dy, w, b, s, pad_t, device='cpu'):
    "F.conv2d forward + autograd backward on NCHW tensors (PyTorch's native layout)."
    F_ = torch.nn.functional
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), device=device, requires_grad=True)
    wt = torch.tensor(w.transpose(3, 2, 0, 1).copy(), device=device, requires_grad=True)
    bt = torch.tensor(b, device=device, requires_grad=True)
    gt = torch.tensor(dy.transpose(0, 3, 1, 2).copy(), device=device)
    pt, pb, pl, pr = pad_t
    def step():
        xin = xt if (pt, pl) == (pb, pr) else F_.pad(xt, (pl, pr, pt, pb))
        y = F_.conv2d(xin, wt, bt, stride=s, padding=(pt, pl) if (pt, pl) == (pb, pr) else 0)
        xt.grad = wt.grad = bt.grad = None
        y.backward(gt)
    return step


def main(repeat: int = 5, naive: bool = True, lenet: bool = False, cases=CASES, threads: int | None = None,
         rounds: int = 0) -> list[dict]:
    import numba, os
    if threads: set_threads(threads)
    from dl_from_scratch.core import has_cuda
    threads = numba.get_num_threads()
    theirs = torch_in_own_process(cases, repeat, threads, lenet)     # {} without torch
    torch = bool(theirs)
    peak = matmul_gflops()
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f"\n== conv2d forward + backward, float32 NHWC, CPU ({threads} threads; load average {load:.1f} on {os.cpu_count()} cores) ==")
    print(f"numpy float32 matmul rate (1024^3, best of 10): {peak:.1f} GFLOP/s" + ("" if torch else "; torch not installed"))
    head = f"{'case':<30}{'numba ms':>10}{'numpy ms':>10}{'naive ms':>10}{'torch ms':>10}" \
           f"{'vs torch':>10}{'vs numpy':>10}{'naive/us':>10}{'GFLOP/s':>9}{'% mm':>7}{'GEMMs ms':>10}{'GEMMs/torch':>12}"
    print(head); print('-' * len(head))
    rows = []
    for name, N, H, W, C, F, k, s, pad in cases:
        x, dy, w, b, pad_t = _case_data(N, H, W, C, F, k, s, pad)
        OH, OW = dy.shape[1:3]
        row = dict(case=name, numba=median_time(_ours(x, dy, F, k, s, pad, 'numba'), repeat),
                   numpy=median_time(_ours(x, dy, F, k, s, pad, 'numpy'), repeat))
        row['naive'] = median_time(_naive(x, dy, w, b, s, pad_t), 1, warmup=0) if naive else float('nan')
        row['torch'] = theirs.get(name, float('nan'))
        row['gemms'] = median_time(_gemms(N, OH, OW, k * k * C, F), repeat)
        row['gflops'] = conv_flops(N, OH, OW, k * k * C, F) / row['numba'] / 1e9
        row['frac_matmul'] = row['gflops'] / peak
        rows.append(row)
        print(f"{name:<30}{row['numba']*1e3:>10.2f}{row['numpy']*1e3:>10.2f}{row['naive']*1e3:>10.0f}{row['torch']*1e3:>10.2f}"
              f"{row['numba']/row['torch']:>9.2f}x{row['numba']/row['numpy']:>9.2f}x{row['naive']/row['numba']:>9.0f}x"
              f"{row['gflops']:>9.1f}{100*row['frac_matmul']:>6.0f}%{row['gemms']*1e3:>10.2f}{row['gemms']/row['torch']:>11.2f}x")
    print("vs torch, vs numpy: our time / theirs (< 1 is faster); naive/us: speed-up over the naive loops;")
    print("% mm: our GFLOP/s as a fraction of the matmul rate. Goals: <= 1.0x torch, >= 10x naive, >= 40% on the 3x3 layer.")
    print("GEMMs: the layer's three matrix products alone (NumPy/OpenBLAS), the floor for any im2col layer; where")
    print("GEMMs/torch > 1, PyTorch's direct convolution (oneDNN) beats im2col + this BLAS whatever im2col costs.")
    print("PyTorch ran in a process of its own, without the GOMP_SPINCOUNT this package sets (nbs/00_init):")
    print("OpenMP is shared within a process, and PyTorch is slower with the short spin our kernels want.")
    rows += layers_table(repeat, theirs)
    if has_cuda():
        try: import torch as _torch
        except ImportError: _torch = None
        rows += cuda_table(repeat, _torch, cases)
    if rounds and torch: rows += interleaved_table(repeat, rounds, threads, cases)
    if lenet: rows.append(lenet_epoch(theirs.get('lenet', float('nan'))))
    return rows


_TORCH_STEPS = {}   # case name -> PyTorch step, built once in the clean process


def torch_case(name: str, repeat: int, threads: int) -> float:
    "PyTorch's median seconds of the case `name` (either table), in the clean process that `interleaved_table` keeps."
    import torch
    torch.set_num_threads(threads)
    if name not in _TORCH_STEPS:
        conv, other = {c[0]: c for c in CASES}, {c[0]: c for c in LAYER_CASES}
        if name in conv:
            x, dy, w, b, pad_t = _case_data(*conv[name][1:])
            _TORCH_STEPS[name] = _torch_step(torch, x, dy, w, b, conv[name][7], pad_t)
        else: _TORCH_STEPS[name] = _torch_layer_step(torch, *other[name][1:])
    return median_time(_TORCH_STEPS[name], repeat)


def interleaved_table(repeat: int, rounds: int, threads: int, cases=CASES) -> list[dict]:
    """Every case of both tables again, ours and PyTorch's alternately: `rounds` blocks of `repeat` runs per side,
    PyTorch in one clean process that stays alive. The ratio is the median of the per-round ratios, with their
    range; on a shared machine this is the fairer comparison, as a passing load weighs on both sides alike."""
    print(f"\n== the same cases, ours and PyTorch alternating ({rounds} rounds of {repeat} runs a side) ==")
    head = f"{'case':<34}{'ours ms':>10}{'torch ms':>10}{'vs torch':>10}{'range':>14}"
    print(head); print('-' * len(head))
    rows = []
    with CleanProcess('conv') as proc:
        for case in [c[:1] + ('conv',) + c[1:] for c in cases] + list(LAYER_CASES):
            name, kind = case[:2]
            step = _ours(*_case_data(*case[2:])[:2], *case[6:10], 'numba') if kind == 'conv' else \
                _ours_layer(*case[1:], 'numba')
            step()                                                     # compile
            mine, peer, ratios = interleaved(lambda: median_time(step, repeat),
                                            lambda: proc(f'torch_case({name!r}, {repeat}, {threads})'), rounds)
            ratio = statistics.median(ratios)
            rows.append(dict(case=name + ' (alternating)', numba=statistics.median(mine), torch=statistics.median(peer),
                             ratio=ratio))
            print(f"{name:<34}{rows[-1]['numba']*1e3:>10.2f}{rows[-1]['torch']*1e3:>10.2f}{ratio:>9.2f}x"
                  f"{f'{min(ratios):.2f}-{max(ratios):.2f}x':>14}")
    print("vs torch: the median over the rounds of our time / PyTorch's in the same round; range: its lowest and highest.")
    return rows


def _case_data(N, H, W, C, F, k, s, pad):
    "The same random x, dy, w, b and resolved padding for every implementation of a case."
    from dl_from_scratch.kernels.conv import resolve_padding, conv_output_size
    r = np.random.default_rng(0)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    pad_t = resolve_padding(pad, (H, W), k, s)
    OH, OW = conv_output_size(H, k, s, pad_t[0] + pad_t[1]), conv_output_size(W, k, s, pad_t[2] + pad_t[3])
    dy = r.standard_normal((N, OH, OW, F), dtype=np.float32)
    w = r.standard_normal((k, k, C, F), dtype=np.float32) * 0.1
    return x, dy, w, np.zeros(F, np.float32), pad_t


def _layer_case_data(kind, N, H, W, C, F, k, s, pad):
    "x, dy, our kernel w and the symmetric padding p for a depthwise (w (k, k, C, 1)) or transposed (w (k, k, F, C)) case."
    from dl_from_scratch.conv import DepthwiseConv2D, Conv2DTranspose
    r = np.random.default_rng(0)
    x = r.standard_normal((N, H, W, C), dtype=np.float32)
    layer = DepthwiseConv2D(k, strides=s, padding=pad, rng=0) if kind == 'depthwise' else \
        Conv2DTranspose(F, k, strides=s, padding=pad, rng=0)
    layer.build((H, W, C))
    if kind == 'depthwise': p = layer._pad((H, W))
    else: p = layer._geometry((H, W))[1]
    if p[0] != p[1] or p[2] != p[3] or p[0] != p[2]: raise ValueError(f"benchmark cases need symmetric padding, got {p}")
    dy = r.standard_normal((N, *layer.output_shape((H, W, C))), dtype=np.float32)
    return layer, x, dy, p[0]


def _ours_layer(kind, N, H, W, C, F, k, s, pad, backend):
    layer, x, dy, _ = _layer_case_data(kind, N, H, W, C, F, k, s, pad)
    layer.backend = backend
    layer(x)
    def step():
        layer.forward(x, training=True)
        layer.backward(dy)
    return step


def _torch_layer_step(torch, kind, N, H, W, C, F, k, s, pad):
    "conv2d(groups=C) or conv_transpose2d forward + autograd backward, NCHW, with our layer's weights."
    layer, x, dy, p = _layer_case_data(kind, N, H, W, C, F, k, s, pad)
    F_ = torch.nn.functional
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    # ours (k, k, C, 1) -> (C, 1, k, k); ours (k, k, F, C) -> (C, F, k, k)
    wt = torch.tensor(layer.params['W'].transpose((2, 3, 0, 1) if kind == 'depthwise' else (3, 2, 0, 1)).copy(),
                      requires_grad=True)
    bt = torch.tensor(layer.params['b'], requires_grad=True)
    gt = torch.tensor(dy.transpose(0, 3, 1, 2).copy())
    def step():
        y = F_.conv2d(xt, wt, bt, stride=s, padding=p, groups=C) if kind == 'depthwise' else \
            F_.conv_transpose2d(xt, wt, bt, stride=s, padding=p)
        xt.grad = wt.grad = bt.grad = None
        y.backward(gt)
    return step


def layers_table(repeat, theirs, cases=LAYER_CASES) -> list[dict]:
    """Depthwise and transposed convolution, forward + backward: ours (Numba, and the NumPy reference) against
    PyTorch; for the transposed one also its three matrix products alone (`_gemms`: those of the convolution it is
    the adjoint of), the floor of a col2im layer with this BLAS. The depthwise kernel has no products."""
    print("\n== other convolution layers, forward + backward, float32, CPU ==")
    head = f"{'case':<34}{'numba ms':>10}{'numpy ms':>10}{'torch ms':>10}{'vs torch':>10}{'GEMMs ms':>10}{'GEMMs/torch':>12}"
    print(head); print('-' * len(head))
    rows = []
    for case in cases:
        kind, N, H, W, C, F, k = case[1:8]
        row = dict(case=case[0], numba=median_time(_ours_layer(*case[1:], 'numba'), repeat),
                   numpy=median_time(_ours_layer(*case[1:], 'numpy'), repeat), torch=theirs.get(case[0], float('nan')),
                   gemms=median_time(_gemms(N, H, W, k * k * F, C), repeat) if kind == 'transpose' else float('nan'))
        print(f"{case[0]:<34}{row['numba']*1e3:>10.2f}{row['numpy']*1e3:>10.2f}{row['torch']*1e3:>10.2f}"
              f"{row['numba']/row['torch']:>9.2f}x{row['gemms']*1e3:>10.2f}{row['gemms']/row['torch']:>11.2f}x")
        rows.append(row)
    print("vs torch: our (Numba) time / PyTorch's (goal <= 1.0x). GEMMs: the transposed convolution's three matrix")
    print("products alone (x W^T, d cols^T x, d cols W), the floor for its col2im/im2col layer with this BLAS.")
    return rows


def torch_times(cases, repeat, threads, lenet) -> dict:
    "PyTorch's seconds per case (and per LeNet-5 epoch); run by `torch_in_own_process` in a fresh process."
    import torch                     # first: its OpenMP starts with the environment as given
    torch.set_num_threads(threads)
    out = {}
    for name, N, H, W, C, F, k, s, pad in cases:
        x, dy, w, b, pad_t = _case_data(N, H, W, C, F, k, s, pad)
        out[name] = median_time(_torch_step(torch, x, dy, w, b, s, pad_t), repeat)
    for case in LAYER_CASES:
        out[case[0]] = median_time(_torch_layer_step(torch, *case[1:]), repeat)
    if lenet: out['lenet'] = torch_lenet_epoch(torch)
    return out


def torch_in_own_process(cases, repeat, threads, lenet) -> dict:
    "`torch_times` in a fresh process (`_timing.in_clean_process`); {} when torch is not installed."
    return in_clean_process('conv', f'torch_times({list(cases)!r}, {repeat}, {threads}, {lenet})') or {}


def cuda_table(repeat, torch, cases=CASES):
    "The CUDA path (CuPy arrays, cuBLAS, Numba CUDA kernels) against PyTorch CUDA."
    import cupy as cp
    from dl_from_scratch.kernels.conv import resolve_padding, conv_output_size
    print("\n== conv2d forward + backward, float32, CUDA ==")
    print(f"{'case':<30}{'ours ms':>10}{'torch ms':>10}{'vs torch':>10}")
    rows = []
    for name, N, H, W, C, F, k, s, pad in cases:
        r = np.random.default_rng(0)
        x = r.standard_normal((N, H, W, C), dtype=np.float32)
        pad_t = resolve_padding(pad, (H, W), k, s)
        OH, OW = conv_output_size(H, k, s, pad_t[0] + pad_t[1]), conv_output_size(W, k, s, pad_t[2] + pad_t[3])
        dy = r.standard_normal((N, OH, OW, F), dtype=np.float32)
        from dl_from_scratch.conv import Conv2D
        layer = Conv2D(F, k, strides=s, padding=pad, rng=0)
        layer(x[:1]); layer.to('cuda')
        xd, dyd = cp.asarray(x), cp.asarray(dy)
        def step():
            layer.forward(xd, training=True); layer.backward(dyd)
        ours = median_time(step, repeat, sync=cp.cuda.Device().synchronize)
        theirs = float('nan')
        if torch is not None and torch.cuda.is_available():
            w = r.standard_normal((k, k, C, F), dtype=np.float32)
            theirs = median_time(_torch_step(torch, x, dy, w, np.zeros(F, np.float32), s, pad_t, 'cuda'), repeat,
                                  sync=torch.cuda.synchronize)
        print(f"{name:<30}{ours*1e3:>10.3f}{theirs*1e3:>10.3f}{ours/theirs:>9.2f}x")
        rows.append(dict(case=name + ' (cuda)', ours=ours, torch=theirs))
    return rows


def _lenet_data(n=None):
    from dl_from_scratch.data import load
    x, y = load('mnist', 'train')
    if n: x, y = x[:n], y[:n]
    return x.astype(np.float32) / 255, y


LENET_REPEAT = 3   # epochs timed per side, the median reported: single epochs on this shared machine vary by +-30 %


def lenet_epoch(theirs: float, n: int | None = None, batch_size: int = 128, repeat: int = LENET_REPEAT):
    """Seconds for one LeNet-5 epoch on MNIST (SGD, batch 128), the median of `repeat` epochs of fresh nets:
    ours (Sequential, Numba kernels), beside `theirs`, the same for the same net in PyTorch (NCHW, CPU, same
    threads) from `torch_lenet_epoch`."""
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    from dl_from_scratch.conv import Conv2D, MaxPool2D
    from dl_from_scratch.optim import SGD
    from dl_from_scratch.losses import SparseCategoricalCrossentropy
    x, y = _lenet_data(n)
    ts = []
    for _ in range(repeat):
        model = Sequential([Conv2D(6, 5, padding='same', activation='relu', rng=0), MaxPool2D(2),
                            Conv2D(16, 5, activation='relu', rng=1), MaxPool2D(2), Flatten(),
                            Dense(120, activation='relu', rng=2), Dense(84, activation='relu', rng=3), Dense(10, rng=4)])
        model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.05, momentum=0.9))
        model.fit(x[:batch_size], y[:batch_size], epochs=1, batch_size=batch_size, verbose=0)   # compile the kernels
        t0 = time.perf_counter()
        model.fit(x, y, epochs=1, batch_size=batch_size, verbose=0, rng=0)
        ts.append(time.perf_counter() - t0)
    ours = statistics.median(ts)
    print(f"\n== one LeNet-5 MNIST epoch ({len(x)} images, batch {batch_size}, CPU; median of {repeat} epochs each) ==")
    print(f"ours {ours:.1f} s ({', '.join(f'{t:.1f}' for t in ts)}), torch {theirs:.1f} s, "
          f"ratio {ours / theirs:.2f}x (goal <= 1.2x)")
    return dict(case='LeNet-5 MNIST epoch', ours=ours, torch=theirs)


def torch_lenet_epoch(torch, n: int | None = None, batch_size: int = 128, repeat: int = LENET_REPEAT) -> float:
    "Seconds for one epoch of the same LeNet-5 in PyTorch (SGD 0.05, momentum 0.9, batch 128): median of `repeat`."
    x, y = _lenet_data(n)
    nn = torch.nn
    xt, yt = torch.tensor(x.transpose(0, 3, 1, 2).copy()), torch.tensor(y)
    ts = []
    for _ in range(repeat):
        net = nn.Sequential(nn.Conv2d(1, 6, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(6, 16, 5), nn.ReLU(),
                            nn.MaxPool2d(2), nn.Flatten(), nn.Linear(400, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                            nn.Linear(84, 10))
        opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
        t0 = time.perf_counter()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), batch_size):
            idx = perm[i:i + batch_size]
            opt.zero_grad()
            loss = nn.functional.cross_entropy(net(xt[idx]), yt[idx])
            loss.backward(); opt.step()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--no-naive', action='store_true', help='skip the (slow) naive loops')
    p.add_argument('--lenet', action='store_true', help='also time one LeNet-5 MNIST epoch against PyTorch')
    p.add_argument('--threads', type=int, default=None, help='threads for Numba, OpenBLAS and PyTorch (default: Numba\'s)')
    p.add_argument('--rounds', type=int, default=0,
                   help='also time every case alternating with a PyTorch process kept alive, in this many rounds')
    a = p.parse_args()
    main(a.repeat, not a.no_naive, a.lenet, threads=a.threads, rounds=a.rounds)
