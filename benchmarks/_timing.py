"Timing helper shared by the benchmarks."
import statistics, time


def median_time(fn, repeat=7, warmup=1, sync=None, best=False):
    """Median wall time (s) of `fn()` over `repeat` runs, after `warmup` untimed runs; `sync()` waits for a GPU.
    `best=True` gives the fastest run instead (for a peak rate, which noise can only lower)."""
    for _ in range(warmup): fn()
    if sync: sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn()
        if sync: sync()
        ts.append(time.perf_counter() - t0)
    return min(ts) if best else statistics.median(ts)


class CleanProcess:
    """A fresh Python, without the variables the package sets for itself (`GOMP_SPINCOUNT`), that stays alive:
    `proc(call)` evaluates `module.call` (e.g. `proc('torch_case(...)')`) there and returns its result, which must
    be JSON. PyTorch then runs with its own defaults, as its users run it; OpenMP settings are per process, which
    is why PyTorch is timed in one of its own. Keeping it alive lets a benchmark alternate our timings with
    PyTorch's in short blocks, so that both sides see the same load. Use as a context manager."""
    def __init__(self, module: str):
        import os, subprocess, sys
        import dl_from_scratch
        env = {k: v for k, v in os.environ.items() if k not in dl_from_scratch.ENV_SET_BY_PACKAGE}
        # results go back on the original stdout, one JSON line per call; anything the call prints goes to stderr
        code = (f"import sys, os, json, traceback; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"out = os.fdopen(os.dup(1), 'w'); sys.stdout = sys.stderr; import {module}\n"
                f"for line in sys.stdin:\n"
                f"    try: r = {{'ok': eval({module!r} + '.' + line.strip(), {{{module!r}: {module}}})}}\n"
                f"    except BaseException: r = {{'error': traceback.format_exc()}}\n"
                f"    out.write(json.dumps(r) + '\\n'); out.flush()")
        self.proc = subprocess.Popen([sys.executable, '-c', code], env=env, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True)

    def __call__(self, call: str):
        import json
        self.proc.stdin.write(call + '\n'); self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line: raise RuntimeError(f"the clean process died while running {call!r}")
        r = json.loads(line)
        if 'error' in r: raise RuntimeError(r['error'][-3000:])
        return r['ok']

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.close(); self.proc.wait()

    def __enter__(self): return self
    def __exit__(self, *exc): self.close()


def in_clean_process(module: str, call: str):
    """`module.call` (e.g. `'conv'`, `'torch_times([...], 7, 2)'`) evaluated once in a fresh `CleanProcess`. The
    result must be JSON. None when torch is not installed."""
    with CleanProcess(module) as proc:
        try: return proc(call)
        except RuntimeError as e:
            if "No module named 'torch'" in str(e): return None
            raise


def interleaved(ours, theirs, rounds: int):
    """Our seconds and a peer's, measured alternately: `rounds` times `ours()` then `theirs()`, each returning
    the seconds of one block of timed runs. Returns (our list, their list, the per-round ratios ours / theirs).
    A load that comes and goes then weighs on both sides alike, where two separate runs could catch it on
    one side only."""
    mine, peer = [], []
    for _ in range(rounds):
        mine.append(ours()); peer.append(theirs())
    return mine, peer, [m / t for m, t in zip(mine, peer)]
