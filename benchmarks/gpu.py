"""GPU figures that need a real NVIDIA card (CuPy and a device): chapter 18's kernels against the card's peaks and
cuBLAS, and the package's CUDA convolution and recurrent kernels against PyTorch CUDA (cuDNN).

    python benchmarks/gpu.py [--repeat 20] [--json out.json] [--no-package]     # or: make bench

Tables, all float32, medians of `--repeat` runs, kernel times by CUDA events:
1. the device (name, compute capability, SMs, memory, peak bandwidth and float32 rate from its clocks);
2. the vector add on 5,000,000 numbers: the kernel alone, with the copies in and out, launched without waiting
   (the time source 004 printed), CuPy's `a + b`; achieved bandwidth as a fraction of the peak;
3. the sum of 2^26 numbers (the shared-memory tree) against CuPy's `sum`, as bandwidth;
4. n x n products (n = 4096): the naive and the tiled kernel against cuBLAS (CuPy's `@`, full float32: CuPy
   does not use TF32 unless CUPY_TF32=1), as TFLOP/s, fraction of cuBLAS and of the float32 peak;
5. registers per thread of the compiled kernels and the occupancy they allow on this card;
6. with --package (default): `benchmarks/conv.py`'s and `benchmarks/rnn.py`'s CUDA tables (our Conv2D, LSTM and
   GRU on CuPy arrays against PyTorch CUDA).
Without a GPU (or CuPy) it prints why and exits 0. A set NUMBA_ENABLE_CUDASIM (the Makefile sets it for the
tests) is switched off here when a GPU is present: timings of the simulator measure nothing.
"""
from __future__ import annotations
import argparse, json, os, sys
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
N_VECTOR = 5_000_000
N_SUM = 2 ** 26
N_MATMUL = 4096


def why_not() -> str | None:
    "None when a real GPU can be benchmarked here, else the reason it cannot. Call before numba is imported."
    from dl_from_scratch.core import gpu_present, has_cuda
    if not gpu_present(): return "no NVIDIA GPU (nvidia-smi finds none)"
    if 'numba' not in sys.modules and os.environ.get('NUMBA_ENABLE_CUDASIM') == '1':
        os.environ['NUMBA_ENABLE_CUDASIM'] = '0'          # a GPU is here: run the kernels on it, not in the simulator
    import numba
    if numba.config.ENABLE_CUDASIM: return "Numba's CUDA simulator is on in this process (NUMBA_ENABLE_CUDASIM=1)"
    if not has_cuda(): return "CuPy is missing or sees no device (pip install -e '.[cuda]')"
    return None


def card_limits(info: dict) -> dict:
    "This device's per-SM limits in the form `gpu.occupancy` takes, from its attributes (H100 figures where missing)."
    from numba import cuda
    from dl_from_scratch import gpu
    dev = cuda.get_current_device()
    get = lambda name, default: gpu._attribute(dev, name) or default      # None where the driver lacks it
    c = dict(gpu.H100_SXM)
    c.update(name=info['name'], multiprocessors=info['multiprocessors'], peak_fp32=info['peak_fp32'] or c['peak_fp32'],
             peak_bandwidth=info['peak_bandwidth'] or c['peak_bandwidth'],
             max_threads_per_sm=get('MAX_THREADS_PER_MULTI_PROCESSOR', c['max_threads_per_sm']),
             max_blocks_per_sm=get('MAX_BLOCKS_PER_MULTIPROCESSOR', c['max_blocks_per_sm']),
             registers_per_sm=get('MAX_REGISTERS_PER_MULTIPROCESSOR', c['registers_per_sm']),
             shared_per_sm=get('MAX_SHARED_MEMORY_PER_MULTIPROCESSOR', c['shared_per_sm']),
             shared_per_block=get('MAX_SHARED_MEMORY_PER_BLOCK_OPTIN', c['shared_per_block']))
    c.pop('peak_tf32_tensor', None)
    return c


def vector_table(repeat, info) -> list[dict]:
    import cupy as cp
    from dl_from_scratch import gpu
    r = np.random.default_rng(0)
    a, b = r.random(N_VECTOR, dtype=np.float32), r.random(N_VECTOR, dtype=np.float32)
    da, db = cp.asarray(a), cp.asarray(b)
    assert float(cp.abs(gpu.vector_add(da, db) - (da + db)).max()) == 0.0
    rows = [dict(what='ours, kernel only (events)', s=gpu.time_kernel(lambda: gpu.vector_add(da, db), repeat)),
            dict(what="CuPy's a + b (events)", s=gpu.time_kernel(lambda: da + db, repeat)),
            dict(what='ours, with the copies in and out (synchronised)',
                 s=gpu.time_kernel(lambda: gpu.vector_add(a, b, 'cuda'), repeat, method='sync')),
            dict(what='ours, launch not waited for (the source\'s method)',
                 s=gpu.time_kernel(lambda: gpu.vector_add(da, db), repeat, method='nosync')),
            dict(what='NumPy on the CPU', s=gpu.time_kernel(lambda: a + b, repeat))]
    traffic, peak = 12 * N_VECTOR, info['peak_bandwidth']
    print(f"\n== vector add, {N_VECTOR:,} float32 ({traffic / 1e6:.0f} MB of traffic) ==")
    print(f"{'':<52}{'ms':>10}{'GB/s':>9}{'of peak':>9}")
    for row in rows:
        row['GBps'] = traffic / row['s'] / 1e9
        frac = f"{traffic / row['s'] / peak:8.0%}" if peak and 'CPU' not in row['what'] else ''
        print(f"{row['what']:<52}{row['s'] * 1e3:>10.4f}{row['GBps']:>9.0f}{frac:>9}")
    print("(source 004: GPU 0.00203 s without synchronising, CPU 0.00995 s; the launch row is what its timer saw)")
    return rows


def sum_table(repeat, info) -> list[dict]:
    import cupy as cp
    from dl_from_scratch import gpu
    x = cp.asarray(np.random.default_rng(1).random(N_SUM, dtype=np.float32))
    ref = float(cp.sum(x.astype(cp.float64)))
    assert abs(float(gpu.reduce_sum(x)) - ref) / ref < 1e-5
    rows = [dict(what='ours, shared-memory tree (2 launches)', s=gpu.time_kernel(lambda: gpu.reduce_sum(x), repeat)),
            dict(what="CuPy's sum", s=gpu.time_kernel(lambda: cp.sum(x), repeat))]
    print(f"\n== sum of {N_SUM:,} float32 ({4 * N_SUM / 1e6:.0f} MB read) ==")
    for row in rows:
        row['GBps'] = 4 * N_SUM / row['s'] / 1e9
        frac = f", {4 * N_SUM / row['s'] / info['peak_bandwidth']:.0%} of peak" if info['peak_bandwidth'] else ''
        print(f"{row['what']:<44}{row['s'] * 1e3:>9.3f} ms {row['GBps']:>7.0f} GB/s{frac}")
    print("(ours includes reading the total back to the host, which CuPy's, left on the device, does not)")
    return rows


def matmul_table(repeat, info) -> list[dict]:
    import cupy as cp
    from dl_from_scratch import gpu
    r = np.random.default_rng(2)
    A, B = (cp.asarray(r.standard_normal((N_MATMUL, N_MATMUL), dtype=np.float32)) for _ in range(2))
    ref = A @ B
    flops = 2.0 * N_MATMUL ** 3
    rows = []
    for what, fn in (('cuBLAS (CuPy @)', lambda: A @ B),
                     (f'ours, tiled {gpu.TILE}x{gpu.TILE}', lambda: gpu.matmul(A, B, kernel='tiled')),
                     ('ours, naive', lambda: gpu.matmul(A, B, kernel='naive'))):
        err = float(cp.abs(fn() - ref).max() / cp.abs(ref).max())
        rows.append(dict(what=what, s=gpu.time_kernel(fn, max(3, repeat // 4)), rel_err=err))
    print(f"\n== {N_MATMUL} x {N_MATMUL} float32 product ==")
    for row in rows:
        row['TFLOPs'] = flops / row['s'] / 1e12
        row['of_cublas'] = rows[0]['s'] / row['s']
        peak = f"{flops / row['s'] / info['peak_fp32']:8.0%}" if info['peak_fp32'] else '       ?'
        print(f"{row['what']:<24}{row['s'] * 1e3:>9.2f} ms{row['TFLOPs']:>8.2f} TFLOP/s  {row['of_cublas']:6.1%} of cuBLAS"
              f"  {peak} of the float32 peak   max rel. difference {row['rel_err']:.1e}")
    return rows


def occupancy_table(info) -> list[dict]:
    "Registers per thread of the compiled kernels (as Numba reports them) and the occupancy they allow."
    from dl_from_scratch import gpu
    from dl_from_scratch.core import cuda_kernels, THREADS_PER_BLOCK
    card = card_limits(info)
    mm = cuda_kernels(f'gpu.matmul.float32.{gpu.TILE}', lambda: gpu._build_matmul('float32', gpu.TILE))
    kernels = [('vector add', cuda_kernels('gpu.vector_add', gpu._build_vector_add), THREADS_PER_BLOCK, 0),
               ('sum (block tree)', cuda_kernels(f'gpu.reduce.float32.{THREADS_PER_BLOCK}',
                                                 lambda: gpu._build_reduce('float32', THREADS_PER_BLOCK)),
                THREADS_PER_BLOCK, THREADS_PER_BLOCK * 4),
               ('matmul naive', mm['naive'], gpu.TILE ** 2, 0),
               ('matmul tiled', mm['tiled'], gpu.TILE ** 2, 2 * gpu.TILE ** 2 * 4)]
    print(f"\n== registers and occupancy on {info['name']} ==")
    rows = []
    for name, k, threads, shared in kernels:
        try:
            regs = k.get_regs_per_thread()            # a dict by signature when several were compiled
            regs = max(regs.values()) if isinstance(regs, dict) else regs
        except Exception as e:
            print(f"{name}: registers not reported ({e!r})"); continue
        o = gpu.occupancy(threads, int(regs), shared, card)
        rows.append(dict(kernel=name, registers=int(regs), threads=threads, shared=shared, **o))
        print(f"{name:<18} {int(regs):>4} registers/thread, {threads:>4} threads, {shared:>5} B shared: "
              f"{o['blocks_per_sm']} blocks/SM, occupancy {o['occupancy']:.0%} ({o['limit']})")
    return rows


def package_tables(repeat) -> dict:
    "Our Conv2D and recurrent kernels on the GPU against PyTorch CUDA, through the CPU benchmarks' CUDA tables."
    try: import torch
    except ImportError: torch = None
    import conv, rnn
    out = dict(conv=conv.cuda_table(repeat, torch))
    out['rnn'] = rnn.run_cuda(repeat)
    print("\n== recurrent kernels, forward + BPTT, CUDA ==")
    for r in out['rnn']:
        extra = f", PyTorch (cuDNN) {r['torch_cuda'] * 1e3:.2f} ms, ratio {r['cuda'] / r['torch_cuda']:.2f}x" if 'torch_cuda' in r else ''
        print(f"  {r['case']} {r['cell']}: ours {r['cuda'] * 1e3:.2f} ms{extra}")
    if torch is None or not torch.cuda.is_available(): print("(PyTorch with CUDA not available: no PyTorch column)")
    return out


def main(repeat: int = 20, package: bool = True, json_path: str | None = None) -> dict | None:
    """Print the tables; return them as a dict (times in seconds), or None (after saying why) without a GPU."""
    reason = why_not()
    if reason:
        print(f"GPU benchmarks skipped: {reason}. The chapter's kernels were checked in Numba's CUDA simulator; "
              f"bandwidth, cuBLAS and cuDNN comparisons need a real card.")
        return None
    import platform
    from dl_from_scratch import gpu
    info = gpu.device_info()
    print(f"machine: {info['name']}; host {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print(gpu.describe_device(info))
    out = dict(device={k: v for k, v in info.items()}, vector=vector_table(repeat, info), sum=sum_table(repeat, info),
               matmul=matmul_table(repeat, info))
    out['occupancy'] = occupancy_table(info)
    if package: out.update(package_tables(max(5, repeat // 2)))
    if json_path:
        with open(json_path, 'w') as f: json.dump(out, f, default=str, indent=1)
    return out


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--repeat', type=int, default=20)
    p.add_argument('--json', default=None, help='also write the tables (times in seconds) to this JSON file')
    p.add_argument('--no-package', action='store_true', help="skip the package's conv and recurrent kernels")
    a = p.parse_args()
    main(a.repeat, not a.no_package, a.json)
