"""Run chapters fully (slow cells included), saving their outputs in place, and print a timing summary.

    python tools/execute.py [--timeout SECONDS] [nbs/NN_topic.ipynb ...]   # default: every notebook in nbs/

A notebook that fails keeps its previous outputs on disk; the summary marks it FAILED and the exit status is 1.
"""
from __future__ import annotations
import argparse, os, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]


def execute(path: Path, timeout: int) -> tuple[str, float]:
    # A non-interactive MPLBACKEND (e.g. Agg) in the environment would make the kernel drop every figure.
    os.environ.pop('MPLBACKEND', None)
    # OpenBLAS's idle threads must sleep at once, or they starve the parallel Numba kernels (nbs/00_core, 'Threads').
    os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=timeout, kernel_name='python3', resources={'metadata': {'path': str(path.parent)}})
    t0 = time.perf_counter()
    try:
        client.execute()
    except (CellExecutionError, CellTimeoutError) as e:
        print(f"  {path.name}: {type(e).__name__}: {str(e).strip().splitlines()[-1][:300]}", file=sys.stderr)
        return 'FAILED', time.perf_counter() - t0
    dt = time.perf_counter() - t0
    nbformat.write(nb, path)          # only a complete run replaces the committed outputs
    return 'ok', dt


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('notebooks', nargs='*', type=Path)
    ap.add_argument('--timeout', type=int, default=5400, help='per-cell timeout in seconds')
    args = ap.parse_args(argv)
    nbs = args.notebooks or sorted((ROOT / 'nbs').glob('*.ipynb'))
    rows = []
    for p in nbs:
        print(f"executing {p} ...", flush=True)
        status, dt = execute(Path(p).resolve(), args.timeout)
        rows.append((Path(p).name, status, dt))
        print(f"  {status} in {dt:.1f} s", flush=True)
    w = max(len(r[0]) for r in rows) if rows else 10
    print(f"\n{'notebook':<{w}}  status   seconds\n{'-' * (w + 18)}")
    for name, status, dt in rows: print(f"{name:<{w}}  {status:<7} {dt:8.1f}")
    print(f"{'total':<{w}}  {'':<7} {sum(r[2] for r in rows):8.1f}")
    if any(r[1] != 'ok' for r in rows): sys.exit(1)


if __name__ == '__main__':
    main()
