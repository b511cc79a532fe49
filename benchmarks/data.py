"""How long a cached `load('mnist', 'train')` takes, against the first (decoding) load.

    python benchmarks/data.py          # or: make bench

The goal: a cached load of MNIST train under 0.5 s.
"""
from __future__ import annotations
import statistics, tempfile, time
from dl_from_scratch.data import load, data_dir


def main(repeats: int = 5) -> list[tuple]:
    if not (data_dir() / 'mnist').is_dir():
        print(f"data: skipped, mnist is not prepared under {data_dir()}")
        return []
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter(); load('mnist', 'train', cache_dir=d, progress=False); first = time.perf_counter() - t0
        cached = []
        for _ in range(repeats):
            t0 = time.perf_counter(); load('mnist', 'train', cache_dir=d); cached.append(time.perf_counter() - t0)
    med = statistics.median(cached)
    print("\n== data loading (MNIST train, 60000 images) ==")
    print(f"{'what':<32}{'median s':>10}{'ratio':>10}")
    print(f"{'first load (decode + cache)':<32}{first:>10.3f}{first / med:>10.1f}")
    print(f"{'cached load (npz)':<32}{med:>10.3f}{1.0:>10.1f}")
    print(f"goal: cached load < 0.5 s -> {'met' if med < 0.5 else 'NOT met'}")
    return [('mnist first load', first), ('mnist cached load', med)]


if __name__ == '__main__':
    main()
