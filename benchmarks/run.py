"""`make bench`: run every benchmark in this folder and print its tables.

Each benchmark is a script that prints its own table (medians and ratios, measured in one run on this
machine); this runs each in a fresh process, so one's thread settings and memory do not skew the next.
PyTorch columns appear when the `bench` extra (torch) is installed.
"""
from __future__ import annotations
import os, platform, subprocess, sys, time
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ['data', 'conv', 'rnn', 'model']
ARGS = {'conv': ['--lenet', '--rounds', '5'],    # the conv tables, alternating with PyTorch, and a LeNet-5 epoch
        'word2vec': ['--rounds', '3'],           # our kernel alternating with gensim
        'sentiment': ['--rounds', '3']}          # and a BiLSTM epoch alternating with PyTorch's


def main():
    sys.path.insert(0, str(HERE))
    import numpy as np
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"python {platform.python_version()}, numpy {np.__version__}")
    try:
        import torch; print(f"torch {torch.__version__} ({torch.get_num_threads()} threads)")
    except ImportError:
        print("torch not installed: PyTorch columns are skipped (pip install -e '.[bench]')")
    failed = 0
    names = [n for n in ORDER if (HERE / f'{n}.py').exists()]
    names += sorted(p.stem for p in HERE.glob('*.py') if p.stem not in ORDER + ['run'] and not p.stem.startswith('_'))
    for n in names:   # each in a fresh process, with its own thread settings and no state left by the others
        t0 = time.perf_counter()
        r = subprocess.run([sys.executable, str(HERE / f'{n}.py'), *ARGS.get(n, [])])
        print(f"[{n}: {time.perf_counter() - t0:.0f} s{'' if r.returncode == 0 else f', FAILED with exit code {r.returncode}'}]")
        failed += r.returncode != 0
    sys.exit(1 if failed else 0)


if __name__ == '__main__':
    main()
