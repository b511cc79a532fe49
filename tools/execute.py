"""Run chapters fully (slow cells included), saving their outputs in place, and print a timing summary.

    python tools/execute.py [--timeout SECONDS] [nbs/NN_topic.ipynb ...]   # default: every notebook in nbs/

A notebook that fails keeps its previous outputs on disk; the summary marks it FAILED and the exit status is 1.
Its error is printed whole, and the outputs it reached are saved in build/executed/NAME.partial.ipynb.
The summary also names the outputs a reader should not see in the book: stored warnings (stderr) and local
paths (tools/book_check.py fails on them); silence or fix them at their source, then run the chapter again.
"""
from __future__ import annotations
import argparse, os, re, sys, time
from pathlib import Path
import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError

ROOT = Path(__file__).resolve().parents[1]
# A folder of this machine in an output (a home, a venv, a temp dir) says nothing to a reader elsewhere.
LOCAL_PATH = re.compile(r'(/work/|/root/|/home/|/tmp/|/Users/|site-packages|\.venv/|[A-Z]:\\)')


def stored_noise(nb) -> list[str]:
    "The code cells whose outputs hold a warning (stderr) or a local path, as 'cell N: what'."
    found = []
    for i, c in enumerate(nb.cells):
        for o in c.get('outputs', []) if c.cell_type == 'code' else []:
            text = o.get('text', '') if o.output_type == 'stream' else str(o.get('data', {}).get('text/plain', ''))
            if o.output_type == 'stream' and o.name == 'stderr':
                found.append(f"cell {i}: stored warning: {text.strip().splitlines()[0][:120] if text.strip() else ''}")
            elif (m := LOCAL_PATH.search(text)):
                found.append(f"cell {i}: local path: ...{text[max(0, m.start() - 40):m.end() + 40].strip()}...")
    return found


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
        # The whole error (the failing cell's source and traceback), and the outputs as far as they got, kept
        # beside the build so that a long run that fails late can be read without running it again.
        partial = ROOT / 'build' / 'executed' / f'{path.stem}.partial.ipynb'
        partial.parent.mkdir(parents=True, exist_ok=True)
        nbformat.write(nb, partial)
        print(f"  {path.name}: {type(e).__name__}:\n{str(e).strip()[-4000:]}\n  outputs so far: {partial}", file=sys.stderr)
        return 'FAILED', time.perf_counter() - t0
    dt = time.perf_counter() - t0
    nbformat.write(nb, path)          # only a complete run replaces the committed outputs
    for note in stored_noise(nb): print(f"  {path.name}: {note}", file=sys.stderr)
    return 'ok' if not stored_noise(nb) else 'noisy', dt


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
    if any(r[1] == 'noisy' for r in rows):
        print("noisy: outputs hold a stored warning or a local path (listed above); the book check fails on them")
    if any(r[1] == 'FAILED' for r in rows): sys.exit(1)


if __name__ == '__main__':
    main()
