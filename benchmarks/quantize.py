"""The int8 matrix product (int8 x int8, summed in int32) against float32 BLAS on the CPU, and an int8 LeNet-5 plan
against its float32 plan, on this machine, the same threads for both.

    python benchmarks/quantize.py [--repeat 5] [--threads N]      # or: make bench

Table 1: `quantize.int8_matmul` (Numba kernel; B transposed so the inner loop is a contiguous int8 dot product)
against `numpy.matmul` on float32 (OpenBLAS sgemm) and against NumPy's int32 product (the reference: no BLAS),
on the products of LeNet-5 at batch 256 (im2col of conv1 and conv2, the dense layers) and on square matrices.
GOP/s counts 2*M*K*N operations. Table 2: one LeNet-5 forward pass over 2,048 images: `Model.predict`, the float32
`InferencePlan` (NumPy only), and the int8 plan. With a GPU (CuPy), the CUDA int8 kernel against cuBLAS float32
is timed as well. No goal is set: the honest number is what a plain loop gets beside a tuned BLAS.
"""
from __future__ import annotations
import argparse, os, sys
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time

SHAPES = [  # name, M, K, N
    ('LeNet conv1 im2col', 256 * 28 * 28, 25, 6),
    ('LeNet conv2 im2col', 256 * 10 * 10, 150, 16),
    ('LeNet dense 400->120', 256, 400, 120),
    ('LeNet dense 120->84', 256, 120, 84),
    ('square 256', 256, 256, 256),
    ('square 1024', 1024, 1024, 1024),
]


def lenet5(rng=0):
    "LeNet-5 as chapter 08 builds it (untrained weights: speed does not depend on them)."
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    from dl_from_scratch.conv import Conv2D, MaxPool2D
    return Sequential([Conv2D(6, 5, padding='same', activation='relu', rng=rng), MaxPool2D(2),
                       Conv2D(16, 5, activation='relu', rng=rng), MaxPool2D(2), Flatten(),
                       Dense(120, activation='relu', rng=rng), Dense(84, activation='relu', rng=rng),
                       Dense(10, rng=rng)], input_shape=(28, 28, 1))


def matmul_table(repeat: int) -> list[dict]:
    from dl_from_scratch.quantize import int8_matmul
    rng = np.random.default_rng(0)
    print(f"{'product':<22}{'M x K x N':>22}{'f32 BLAS ms':>12}{'int8 ms':>10}{'int32 ref ms':>13}"
          f"{'int8/f32':>10}{'f32 GFLOP/s':>12}{'int8 GOP/s':>11}")
    rows = []
    for name, M, K, N in SHAPES:
        a, b = rng.integers(-127, 128, (M, K)).astype(np.int8), rng.integers(-127, 128, (K, N)).astype(np.int8)
        af, bf = a.astype(np.float32), b.astype(np.float32)
        assert (int8_matmul(a, b) == a.astype(np.int32) @ b.astype(np.int32)).all()
        r = dict(name=name, f32=median_time(lambda: af @ bf, repeat), int8=median_time(lambda: int8_matmul(a, b), repeat))
        r['ref'] = median_time(lambda: a.astype(np.int32) @ b.astype(np.int32), 1) if M * K * N <= 2**28 else float('nan')
        ops = 2 * M * K * N
        rows.append(r)
        print(f"{name:<22}{f'{M} x {K} x {N}':>22}{r['f32']*1e3:>12.2f}{r['int8']*1e3:>10.2f}{r['ref']*1e3:>13.1f}"
              f"{r['int8']/r['f32']:>9.2f}x{ops/r['f32']/1e9:>12.1f}{ops/r['int8']/1e9:>11.1f}")
    print("int8/f32: time of the int8 kernel / time of float32 BLAS (> 1: the int8 product is slower)")
    return rows


def plan_table(repeat: int) -> dict:
    from dl_from_scratch.quantize import InferencePlan, quantize_plan
    model = lenet5()
    x = np.random.default_rng(1).random((2048, 28, 28, 1)).astype(np.float32)
    plan = InferencePlan.from_model(model)
    p8 = quantize_plan(plan, 'int8', x[:100])
    t = {'Model.predict (Numba conv kernels)': median_time(lambda: model.predict(x), repeat),
         'float32 plan (NumPy only)': median_time(lambda: plan.predict(x), repeat),
         'int8 plan (Numba int8 product)': median_time(lambda: p8.predict(x), repeat)}
    print("\nLeNet-5 forward pass, 2,048 images (batches of 256):")
    for k, v in t.items(): print(f"  {k:<36}{v*1e3:>9.1f} ms  {v / t['float32 plan (NumPy only)']:>5.2f}x the float32 plan")
    return t


def cuda_table(repeat: int) -> None:
    from dl_from_scratch.core import has_cuda, cupy_or_none
    if not has_cuda(): print("\nno GPU (CuPy): the CUDA int8 kernel is not timed"); return
    cp = cupy_or_none()
    from dl_from_scratch.quantize import int8_matmul
    sync = cp.cuda.Device().synchronize
    print("\nCUDA: int8 kernel (one thread per output) against cuBLAS float32")
    for name, M, K, N in SHAPES:
        a = cp.asarray(np.random.default_rng(0).integers(-127, 128, (M, K)).astype(np.int8))
        b = cp.asarray(np.random.default_rng(1).integers(-127, 128, (K, N)).astype(np.int8))
        af, bf = a.astype(cp.float32), b.astype(cp.float32)
        t8, t32 = median_time(lambda: int8_matmul(a, b), repeat, sync=sync), median_time(lambda: af @ bf, repeat, sync=sync)
        print(f"  {name:<22}{t32*1e3:>9.3f} ms f32 {t8*1e3:>9.3f} ms int8 {t8/t32:>7.2f}x")


def main(repeat: int = 5, threads: int | None = None):
    import numba
    from dl_from_scratch.core import set_num_threads
    if threads: set_num_threads(threads)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f"\n== int8 product against float32 BLAS, CPU ({numba.get_num_threads()} threads; load average {load:.1f} "
          f"on {os.cpu_count()} cores) ==")
    rows = matmul_table(repeat)
    t = plan_table(repeat)
    cuda_table(repeat)
    return rows, t


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repeat', type=int, default=5)
    p.add_argument('--threads', type=int, default=None)
    a = p.parse_args()
    main(a.repeat, a.threads)
