"""The cost of the graph: a LeNet-5 MNIST epoch as a functional `Model` against the same net as `Sequential`, and
`fit`'s per-step overhead at batch 1, for this package and for an earlier revision of it.

    python benchmarks/model.py [--repeat 3] [--before REV]        # or: make bench

`Sequential` is a `Model` whose graph is a chain, so the two LeNet-5 epochs run the same plan; they alternate in
one process and each side keeps the median of `--repeat` epochs. The per-step overhead is timed on a net whose
arithmetic is negligible (8 -> 4 -> 2 dense units, batch 1): `fit`'s time per step, and the same steps as a bare
loop (forward, loss, backward, `optimizer.step`), whose difference is what `fit` adds. `--before REV` also times
the package as it was at git revision REV (extracted with `git archive` into a temporary folder and run in a
process of its own), so the two columns are measured on the same machine in one run.
"""
from __future__ import annotations
import argparse, os, subprocess, sys, tempfile, time, json, statistics
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)


def lenet_epochs(repeat: int = 3, n: int = 60000) -> dict:
    "Seconds per LeNet-5 MNIST epoch (batch 64, Adam), Sequential and functional, median of `repeat` alternating epochs."
    import numpy as np
    from dl_from_scratch import data
    from dl_from_scratch.model import Sequential, Model, Input
    from dl_from_scratch.layers import Dense, Flatten
    from dl_from_scratch.conv import Conv2D, MaxPool2D
    from dl_from_scratch.losses import SparseCategoricalCrossentropy
    from dl_from_scratch.optim import Adam
    x, y = data.load('mnist', 'train', progress=False)
    x, y = x[:n].astype(np.float32) / 255, y[:n]
    layers = lambda: [Conv2D(6, 5, padding='same', activation='relu', rng=0), MaxPool2D(2),
                      Conv2D(16, 5, activation='relu', rng=1), MaxPool2D(2), Flatten(),
                      Dense(120, 'relu', rng=2), Dense(84, 'relu', rng=3), Dense(10, rng=4)]
    seq = Sequential(layers(), input_shape=(28, 28, 1))
    t = inp = Input((28, 28, 1))
    for l in layers(): t = l(t)
    fun = Model(inp, t)
    times = {'Sequential': [], 'functional Model': []}
    for m in (seq, fun):
        m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-3))
        m.fit(x[:1024], y[:1024], epochs=1, batch_size=64, verbose=0)               # kernels loaded, pages touched
    for i in range(repeat):                                 # alternate, and swap who goes first each round
        for label, m in [('Sequential', seq), ('functional Model', fun)][::1 if i % 2 == 0 else -1]:
            t0 = time.perf_counter(); m.fit(x, y, epochs=1, batch_size=64, rng=0, verbose=0)
            times[label].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def step_overhead(steps: int = 3000, repeat: int = 5) -> dict:
    "Microseconds per step at batch 1 on a tiny net: `fit`, and the bare loop. Works with any revision's `fit`."
    import numpy as np
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense
    from dl_from_scratch.losses import SparseCategoricalCrossentropy
    from dl_from_scratch.optim import SGD
    r = np.random.default_rng(0)
    x, y = r.standard_normal((steps, 8)).astype(np.float32), r.integers(0, 2, steps)
    make = lambda: Sequential([Dense(4, 'relu', rng=0), Dense(2, rng=1)], input_shape=(8,))
    loss = SparseCategoricalCrossentropy(from_logits=True)
    m = make(); m.compile(loss, SGD(0.01), metrics=[])
    fit_t = []
    for _ in range(repeat):
        t0 = time.perf_counter(); m.fit(x, y, epochs=1, batch_size=1, shuffle=False, verbose=0)
        fit_t.append((time.perf_counter() - t0) / steps)
    m, opt, loop_t = make(), SGD(0.01), []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for i in range(steps):
            yp = m.forward(x[i:i + 1], training=True)
            _, dy = loss.value_and_grad(yp, y[i:i + 1])
            m.backward(dy)
            opt.step(m.params, m.grads)
        loop_t.append((time.perf_counter() - t0) / steps)
    f, l = min(fit_t) * 1e6, min(loop_t) * 1e6            # the fastest run: load on the machine only adds
    return {'fit_us': f, 'loop_us': l, 'overhead_us': f - l}


def step_overhead_at(rev: str, steps: int, repeat: int) -> dict:
    "`step_overhead` for the package at git revision `rev`, run from a temporary copy in a fresh process."
    with tempfile.TemporaryDirectory() as tmp:
        archive = subprocess.run(['git', '-C', ROOT, 'archive', rev, 'dl_from_scratch'], capture_output=True, check=True)
        subprocess.run(['tar', '-x', '-C', tmp], input=archive.stdout, check=True)
        code = (f"import sys; sys.path.insert(0, {tmp!r}); sys.path.insert(1, {HERE!r}); import json, model; "
                f"print(json.dumps(model.step_overhead({steps}, {repeat})))")
        out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp)
        if out.returncode: raise RuntimeError(out.stderr[-3000:])
        return json.loads(out.stdout.split('\n')[-2])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--repeat', type=int, default=3, help='LeNet-5 epochs per side')
    p.add_argument('--steps', type=int, default=3000, help='batch-1 steps per timing')
    p.add_argument('--before', default=None, help='also time fit at this git revision (e.g. a commit before a change)')
    p.add_argument('--mnist', type=int, default=60000, help='MNIST training images per epoch')
    a = p.parse_args(argv)
    sys.path.insert(0, ROOT)
    ep = lenet_epochs(a.repeat, a.mnist)
    print(f"\n## LeNet-5 MNIST epoch ({a.mnist} images, batch 64), median of {a.repeat}, {os.cpu_count()} cores")
    print('| model | s per epoch | vs Sequential |\n|---|---|---|')
    for k, v in ep.items(): print(f"| {k} | {v:.2f} | {v / ep['Sequential']:.3f}x |")
    rows = {'this tree': step_overhead(a.steps, 5)}
    if a.before: rows[f'revision {a.before}'] = step_overhead_at(a.before, a.steps, 5)
    print(f"\n## fit at batch 1 (Dense 8-4-2, SGD), microseconds per step, best of 5 x {a.steps} steps")
    print('| package | fit | bare loop | fit - loop |\n|---|---|---|---|')
    for k, v in rows.items(): print(f"| {k} | {v['fit_us']:.1f} | {v['loop_us']:.1f} | {v['overhead_us']:.1f} |")
    return ep, rows


if __name__ == '__main__':
    main()
