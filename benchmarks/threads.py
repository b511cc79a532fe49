"""Thread hand-over: one LeNet-5 training step (batch 128, synthetic MNIST-sized data) with GNU OpenMP's idle
spin after each Numba kernel set to several values, each in a fresh process (OpenMP reads `GOMP_SPINCOUNT` once,
when it loads).

    python benchmarks/threads.py [--steps 100] [--repeat 3]      # or: make bench

A CPU training step alternates Numba's parallel kernels (OpenMP threads) and NumPy's matrix products (OpenBLAS
threads). Threads that spin after their work take the cores the next library needs; the package sets
`OPENBLAS_THREAD_TIMEOUT=4` and `GOMP_SPINCOUNT=10000` for that reason (nbs/00_init, nbs/00_core "Threads").
This prints the milliseconds per step for each spin setting, the median of `--repeat` fresh processes.
"""
from __future__ import annotations
import argparse, json, os, statistics, subprocess, sys

SETTINGS = [  # label, environment changes (None removes the variable)
    ('GOMP_SPINCOUNT=10000 (the package default)', {'GOMP_SPINCOUNT': '10000'}),
    ('GOMP_SPINCOUNT=300000 (OpenMP default)', {'GOMP_SPINCOUNT': '300000'}),
    ('GOMP_SPINCOUNT=0', {'GOMP_SPINCOUNT': '0'}),
    ('OMP_WAIT_POLICY=PASSIVE', {'GOMP_SPINCOUNT': None, 'OMP_WAIT_POLICY': 'PASSIVE'}),
]


def step_ms(steps: int) -> float:
    "Milliseconds per LeNet-5 training step (SGD + momentum, batch 128), in this process's settings."
    import time
    import dl_from_scratch  # noqa: F401  (sets the package's environment defaults first)
    import numpy as np
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    from dl_from_scratch.conv import Conv2D, MaxPool2D
    from dl_from_scratch.optim import SGD
    from dl_from_scratch.losses import SparseCategoricalCrossentropy
    r = np.random.default_rng(0)
    x = r.random((128 * steps, 28, 28, 1), dtype=np.float32)
    y = r.integers(0, 10, len(x))
    model = Sequential([Conv2D(6, 5, padding='same', activation='relu', rng=0), MaxPool2D(2),
                        Conv2D(16, 5, activation='relu', rng=1), MaxPool2D(2), Flatten(),
                        Dense(120, activation='relu', rng=2), Dense(84, activation='relu', rng=3), Dense(10, rng=4)])
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.05, momentum=0.9))
    model.fit(x[:256], y[:256], epochs=1, batch_size=128, verbose=0)          # compile / load the kernels
    t0 = time.perf_counter()
    model.fit(x, y, epochs=1, batch_size=128, verbose=0, rng=0)
    return (time.perf_counter() - t0) / steps * 1e3


def run(steps=100, repeat=3) -> list[dict]:
    here = os.path.dirname(os.path.abspath(__file__))
    code = f"import sys; sys.path.insert(0, {here!r}); import threads; print(threads.step_ms({steps}))"
    rows = []
    for label, change in SETTINGS:
        env = dict(os.environ)
        for k, v in change.items():
            if v is None: env.pop(k, None)
            else: env[k] = v
        ms = []
        for _ in range(repeat):
            out = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
            if out.returncode: raise RuntimeError(out.stderr[-3000:])
            ms.append(float(out.stdout.split()[-1]))
        rows.append(dict(setting=label, ms=statistics.median(ms), runs=ms))
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--steps', type=int, default=100)
    p.add_argument('--repeat', type=int, default=3)
    p.add_argument('--json', default=None, help='also write the rows to this JSON file')
    a = p.parse_args(argv)
    rows = run(a.steps, a.repeat)
    print(f"\n## LeNet-5 training step (batch 128) by OpenMP idle-spin setting, {os.cpu_count()} cores, "
          f"median of {a.repeat} fresh processes")
    print('| setting | ms per step | vs the package default |')
    print('|---|---|---|')
    for r in rows:
        print(f"| {r['setting']} | {r['ms']:.2f} | {r['ms'] / rows[0]['ms']:.2f}x |")
    if a.json:
        with open(a.json, 'w') as f: json.dump(rows, f)
    return rows


if __name__ == '__main__':
    main(sys.argv[1:])
