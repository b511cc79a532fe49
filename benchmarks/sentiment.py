"""One BiLSTM epoch on IMDB reviews, float32, CPU: source 000's net (Embedding 64 -> Bidirectional(LSTM 64) ->
Dense 64 ReLU -> Dense 1 logit, Adam 1e-4, batches of 64) built from the package's layers against the same net in
PyTorch, on the same threads and the same padded batches.

    python benchmarks/sentiment.py [--n 8000] [--repeat 3] [--threads 2] [--rounds R]     # or: make bench

The first `--n` training reviews, encoded with chapter 12's BPE (8,000 ids, trained on them), in batches of 64
sorted by length in windows (`sentiment.length_batches`), post-padded, no mask (as source 000). One timed epoch =
forward, loss, backward and an Adam update for every batch; the median of `--repeat` epochs per side is reported,
after one untimed batch (Numba's compile). PyTorch runs in a fresh process without the variables the package sets
for itself (`GOMP_SPINCOUNT`), as its users run it. With `--rounds R`, one epoch of each side alternates R
times instead (PyTorch's process kept alive), and the median of the per-round ratios is reported: on a shared
machine the fairer comparison. Goal: ours <= 1.2x PyTorch's time.

Each side is timed twice: as it comes, and with denormal floats flushed to zero (ours: `core.set_flush_denormal`;
PyTorch: in all its threads, `flush_denormals`); the goal is read on the flushed pair. The gradient that reaches
back from the last step of a long review shrinks below float32's smallest normal number (1.2e-38), and on some
CPUs every operation on such numbers slows down many times (seen on an Intel Xeon with AVX-512: PyTorch's backward
over 300 steps took 0.85 s as it comes, 0.08 s flushed; ours over 1,000 steps 3.2 s as it comes, 0.55 s flushed).
"""
from __future__ import annotations
import argparse, os, statistics, sys, tempfile, time
# Before NumPy loads: OpenBLAS's idle threads must sleep at once, or they starve the Numba kernels (nbs/00_core).
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')
import numpy as np
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import in_clean_process, CleanProcess

BATCH = 64


def prepare(n: int, path: str) -> dict:
    "Encode the first `n` training reviews and save the padded batches to `path` (.npz); returns their sizes."
    from dl_from_scratch.data import load
    from dl_from_scratch.text import BPE, pad_sequences
    from dl_from_scratch.sentiment import length_batches, padded_steps
    texts, y = load('imdb_reviews', 'train', progress=False)
    texts, y = texts[:n], y[:n]
    bpe = BPE.train(texts, vocab_size=8000)
    seqs = [bpe.encode(t) for t in texts]
    lengths = np.array([len(s) for s in seqs])
    batches = length_batches(lengths, BATCH, rng=0)
    arrays = {}
    for i, b in enumerate(batches):
        arrays[f'x{i}'] = pad_sequences([seqs[j] for j in b], padding='post', truncating='post')
        arrays[f'y{i}'] = y[b, None].astype(np.float32)
    np.savez(path, vocab_size=len(bpe), n_batches=len(batches), **arrays)
    return dict(reviews=len(seqs), tokens=int(lengths.sum()), steps=padded_steps(lengths, batches), batches=len(batches),
                vocab=len(bpe))


def _batches(path):
    d = np.load(path)
    return int(d['vocab_size']), [(d[f'x{i}'], d[f'y{i}']) for i in range(int(d['n_batches']))]


def ours_epochs(path: str, repeat: int, flush: bool = False) -> list[float]:
    """Seconds of `repeat` epochs of the package's net over the saved batches; with `flush`, its recurrent loops
    flush denormals to zero (`core.set_flush_denormal`)."""
    from dl_from_scratch.core import set_flush_denormal
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Embedding, Dense
    from dl_from_scratch.rnn import LSTM, Bidirectional
    from dl_from_scratch.losses import BinaryCrossentropy
    from dl_from_scratch.optim import Adam
    V, batches = _batches(path)
    net = Sequential([Embedding(V, 64, rng=0), Bidirectional(LSTM(64, rng=1)), Dense(64, activation='relu', rng=2),
                      Dense(1, rng=3)], input_shape=(None,))
    net.compile(BinaryCrossentropy(from_logits=True), Adam(1e-4), ['accuracy'])
    net.train_step(batches[0])                                   # compile the kernels
    set_flush_denormal(flush)
    ts = []
    try:
        for _ in range(repeat):
            t0 = time.perf_counter()
            for b in batches: net.train_step(b)
            ts.append(time.perf_counter() - t0)
    finally: set_flush_denormal(False)
    return ts


def flush_denormals(torch, threads: int) -> None:
    """Flush denormal floats to zero (FTZ and DAZ) in every thread of PyTorch's OpenMP pool, as TensorFlow does by
    default. `torch.set_flush_denormal` sets them in the calling thread only, and the LSTM's products run in the
    pool: the body of one parallel region of PyTorch's own libgomp sets them in each of its threads."""
    import ctypes, glob
    libs = glob.glob(os.path.join(os.path.dirname(torch.__file__), 'lib', 'libgomp*'))
    if not libs: raise RuntimeError("flush_denormals expected PyTorch's libgomp in torch/lib, found none")
    gomp = ctypes.CDLL(libs[0])
    body = ctypes.CFUNCTYPE(None, ctypes.c_void_p)(lambda _: torch.set_flush_denormal(True))
    gomp.GOMP_parallel.argtypes = [type(body), ctypes.c_void_p, ctypes.c_uint, ctypes.c_uint]
    gomp.GOMP_parallel(body, None, threads, 0)


def torch_epochs(path: str, repeat: int, threads: int, flush: bool = False) -> list[float]:
    """Seconds of `repeat` epochs of the same net in PyTorch (nn.LSTM, bidirectional; final states concatenated);
    with `flush`, denormals flushed to zero in all its threads (`flush_denormals`)."""
    import torch                     # first: its OpenMP starts with the environment as given
    torch.set_num_threads(threads)
    if flush: flush_denormals(torch, threads)
    nn = torch.nn
    V, batches = _batches(path)
    batches = [(torch.as_tensor(x), torch.as_tensor(y)) for x, y in batches]

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.emb, self.lstm = nn.Embedding(V, 64), nn.LSTM(64, 64, batch_first=True, bidirectional=True)
            self.d1, self.d2 = nn.Linear(128, 64), nn.Linear(64, 1)
        def forward(self, x):
            _, (h, _) = self.lstm(self.emb(x))                   # h: (2, N, 64), forward then backward direction
            return self.d2(torch.relu(self.d1(torch.cat([h[0], h[1]], 1))))

    torch.manual_seed(0)
    net = Net()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    def step(x, y):
        opt.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(net(x), y).backward()
        opt.step()
    step(*batches[0])
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        for b in batches: step(*b)
        ts.append(time.perf_counter() - t0)
    return ts


def torch_in_own_process(path: str, repeat: int, threads: int, flush: bool = False) -> list[float] | None:
    "`torch_epochs` in a fresh process (`_timing.in_clean_process`); None when torch is not installed."
    return in_clean_process('sentiment', f'torch_epochs({path!r}, {repeat}, {threads}, {flush})')


SIDES = ('ours_flushed', 'torch_flushed', 'ours', 'torch')


def alternating(path: str, rounds: int, threads: int) -> dict | None:
    """One epoch of each side, `rounds` times: ours and PyTorch's with denormals flushed to zero, then ours and
    PyTorch's as they come (PyTorch in two clean processes kept alive). Returns {side: seconds per round} for the
    `SIDES`, or None when torch is not installed."""
    import importlib.util
    if importlib.util.find_spec('torch') is None: return None
    t = {k: [] for k in SIDES}
    with CleanProcess('sentiment') as proc, CleanProcess('sentiment') as proc_flush:
        for _ in range(rounds):
            t['ours_flushed'].append(ours_epochs(path, 1, flush=True)[0])
            t['torch_flushed'].append(proc_flush(f'torch_epochs({path!r}, 1, {threads}, True)')[0])
            t['ours'].append(ours_epochs(path, 1)[0])
            t['torch'].append(proc(f'torch_epochs({path!r}, 1, {threads})')[0])
    return t


def main(n: int = 8000, repeat: int = 3, threads: int = 2, rounds: int = 0) -> dict:
    """Time `repeat` epochs per side (PyTorch's first, in a process of its own), or with `rounds`, one epoch of
    each side alternately `rounds` times, so that a passing load weighs on both."""
    from dl_from_scratch.core import set_num_threads
    set_num_threads(threads)
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, 'batches.npz')
        t0 = time.perf_counter()
        info = prepare(n, path)
        t_prep = time.perf_counter() - t0
        t = alternating(path, rounds, threads) if rounds else None
        if t is None:            # --repeat, or no torch
            k = rounds or repeat
            t = {'ours_flushed': ours_epochs(path, k, flush=True), 'ours': ours_epochs(path, k)}
            if not rounds:
                theirs = {'torch_flushed': torch_in_own_process(path, k, threads, flush=True),
                          'torch': torch_in_own_process(path, k, threads)}
                if theirs['torch'] is not None: t.update(theirs)
    load = os.getloadavg()[0] if hasattr(os, 'getloadavg') else float('nan')
    print(f"\n== one BiLSTM epoch on IMDB (source 000's net), float32, CPU, {threads} threads; "
          f"load average {load:.1f} on {os.cpu_count()} cores ==")
    print(f"{info['reviews']:,} reviews, {info['tokens']:,} subwords ({info['vocab']:,} BPE ids), {info['batches']} batches "
          f"of {BATCH} sorted by length, {info['steps']:,} padded steps; prepared in {t_prep:.0f} s")
    label = {'ours_flushed': 'ours, denormals flushed to zero', 'torch_flushed': 'PyTorch, denormals flushed to zero',
             'ours': 'ours as it comes', 'torch': 'PyTorch as it comes'}
    med = {k: statistics.median(v) for k, v in t.items()}
    for k in SIDES:
        if k in t: print(f"{label[k]:<36}{med[k]:7.1f} s per epoch ({', '.join(f'{x:.1f}' for x in t[k])})")
    if 'torch' not in t:
        print("torch not installed: no PyTorch column")
        return dict(ours=med['ours'], ours_flushed=med['ours_flushed'])
    def ratio(a, b):       # alternating: the median of the per-round ratios; otherwise the ratio of the medians
        if not rounds: return med[a] / med[b], ''
        q = [x / y for x, y in zip(t[a], t[b])]
        return statistics.median(q), f" (median of the rounds' {', '.join(f'{x:.2f}' for x in q)})"
    r, how = ratio('ours_flushed', 'torch_flushed')
    print(f"ours / PyTorch, both flushed: {r:.2f}x{how} (goal <= 1.2x)")
    r_plain, how = ratio('ours', 'torch')
    print(f"ours / PyTorch, both as they come: {r_plain:.2f}x{how}")
    return dict(**med, ratio=r, ratio_as_they_come=r_plain, **info)


if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--n', type=int, default=8000, help='training reviews in the epoch (default 8000)')
    p.add_argument('--repeat', type=int, default=3, help='epochs timed per side; the median is reported')
    p.add_argument('--threads', type=int, default=2, help='threads for Numba, OpenBLAS and PyTorch')
    p.add_argument('--rounds', type=int, default=0,
                   help='instead of --repeat: one epoch of each side alternately, this many rounds')
    a = p.parse_args()
    main(a.n, a.repeat, a.threads, a.rounds)
