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
