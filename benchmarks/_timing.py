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


def in_clean_process(module: str, call: str):
    """`module.call` (e.g. `'conv'`, `'torch_times([...], 7, 2)'`) evaluated in a fresh Python, without the
    variables the package sets for itself (`GOMP_SPINCOUNT`), so that PyTorch runs with its own defaults, as its
    users run it; OpenMP settings are per process, which is why PyTorch is timed in one of its own. The result
    must be JSON. None when torch is not installed."""
    import json, os, subprocess, sys, tempfile
    import dl_from_scratch
    env = {k: v for k, v in os.environ.items() if k not in dl_from_scratch.ENV_SET_BY_PACKAGE}
    with tempfile.TemporaryDirectory() as d:
        out = os.path.join(d, 'result.json')
        code = (f"import sys, json; sys.path.insert(0, {os.path.dirname(os.path.abspath(__file__))!r}); "
                f"import {module}; json.dump({module}.{call}, open({out!r}, 'w'))")
        r = subprocess.run([sys.executable, '-c', code], env=env, capture_output=True, text=True)
        if r.returncode:
            if "No module named 'torch'" in r.stderr: return None
            raise RuntimeError(r.stderr[-3000:])
        with open(out) as f: return json.load(f)
