"""Training across processes: a LeNet-5 MNIST epoch on 1 and 2 MPI ranks, and the ring all-reduce against MPI's own.

    python benchmarks/distributed.py [--images 60000] [--repeat 30]      # or: make bench

Each configuration (ranks x threads per rank: 1x1, 1x2, 2x1, 2x2) runs `examples/mpi_train.py lenet` under
`mpiexec` in processes of its own and reports rank 0's epoch seconds, split into compute and all-reduce, with the
test accuracy. The all-reduce table times `ring_allreduce` and `naive_allreduce` (built on point-to-point
messages) and MPI's `Allreduce` on 2 ranks for several float32 sizes, and fits the latency alpha and bandwidth
1/beta of T = 2 alpha + n beta (the ring on 2 ranks). Needs the `dist` extra (mpi4py, MPICH) and, for the epochs,
MNIST prepared (`make data`); what is missing is skipped with the reason.
"""
from __future__ import annotations
import argparse, importlib.util, json, os
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SCRIPT = os.path.join(os.path.dirname(HERE), 'examples', 'mpi_train.py')
CONFIGS = ((1, 1), (1, 2), (2, 1), (2, 2))
SIZES = (1_000, 10_000, 61_706, 250_000, 1_000_000, 4_000_000)


def result(p: int, args: list, timeout: float = 900) -> dict:
    "Rank 0's RESULT line of `examples/mpi_train.py args` on `p` ranks."
    from dl_from_scratch.distributed import run_mpi
    out = run_mpi(p, [SCRIPT, *map(str, args)], timeout=timeout)
    return json.loads(next(l for l in out.splitlines()[::-1] if l.startswith('RESULT '))[7:])


def allreduce_table(repeat: int) -> dict:
    ar = result(2, ['allreduce', '--repeat', repeat, '--sizes', *SIZES])
    print(f"\n== all-reduce on 2 ranks, float32, median of {repeat} ==")
    print(f"{'numbers':>12}{'ring ms':>10}{'naive ms':>10}{'MPI ms':>10}{'ring/MPI':>10}")
    for n in SIZES:
        r, nv, m = ar[f'ring {n}'], ar[f'naive {n}'], ar[f'mpi {n}']
        print(f"{n:>12,}{r * 1e3:>10.3f}{nv * 1e3:>10.3f}{m * 1e3:>10.3f}{r / m:>9.2f}x")
    A = np.array([[2.0, 4.0 * n] for n in SIZES])
    (alpha, beta), *_ = np.linalg.lstsq(A, np.array([ar[f'ring {n}'] for n in SIZES]), rcond=None)
    print(f"ring fit T = 2 alpha + n beta: alpha = {alpha * 1e6:.1f} us, 1/beta = {1 / beta / 1e9:.2f} GB/s")
    return ar


def lenet_table(images: int | None) -> dict:
    runs = {}
    for p, t in CONFIGS:
        runs[p, t] = result(p, ['--threads', t, 'lenet'] + (['--images', images] if images else []))
    base = runs[1, 1]['epoch_s']
    print(f"\n== one LeNet-5 MNIST epoch ({runs[1, 1]['images']:,} images, global batch 128, SGD) over MPI ranks ==")
    print(f"{'ranks x threads':<16}{'epoch s':>9}{'compute s':>11}{'all-reduce s':>14}{'speed-up':>10}{'test acc':>10}")
    for (p, t), r in runs.items():
        print(f"{f'{p} x {t}':<16}{r['epoch_s']:>9.1f}{r['compute_s']:>11.1f}{r['allreduce_s']:>14.2f}"
              f"{base / r['epoch_s']:>10.2f}{r['test_accuracy']:>10.4f}")
    return runs


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--images', type=int, default=None, help='MNIST training images per epoch (default: all)')
    p.add_argument('--repeat', type=int, default=30, help='all-reduce calls timed per size')
    a = p.parse_args(argv)
    from dl_from_scratch.distributed import find_mpiexec
    if importlib.util.find_spec('mpi4py') is None or find_mpiexec() is None:
        print("distributed: skipped, mpi4py or mpiexec is missing (pip install -e '.[dist]')"); return
    allreduce_table(a.repeat)
    from dl_from_scratch.data import is_prepared
    if not is_prepared('mnist'):
        print("distributed: LeNet-5 epochs skipped, MNIST is not prepared (make data)"); return
    lenet_table(a.images)


if __name__ == '__main__':
    main()
