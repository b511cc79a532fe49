"Timing helper shared by the benchmarks."
import statistics, time


def median_time(fn, repeat=7, warmup=1, sync=None):
    "Median wall time (s) of `fn()` over `repeat` runs, after `warmup` untimed runs; `sync()` waits for a GPU."
    for _ in range(warmup): fn()
    if sync: sync()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn()
        if sync: sync()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)
