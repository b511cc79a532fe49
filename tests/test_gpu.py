"""Chapter 18's kernels: the CUDA versions (in Numba's simulator without a GPU) and the Numba CPU versions reproduce
the NumPy references on random shapes; the timer, the device query, the occupancy and roofline arithmetic give the
values NVIDIA's calculator and the formulas give; bad input is refused; the GPU benchmark skips cleanly without a GPU."""
import math, os, subprocess, sys, time
from pathlib import Path

import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st, HealthCheck

from dl_from_scratch import gpu
from dl_from_scratch.core import gpu_present

SIM = bool(numba.config.ENABLE_CUDASIM)
FEW = settings(max_examples=5, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))


def test_device_info():
    info = gpu.device_info()
    assert info['simulator'] == SIM and len(info['compute_capability']) == 2
    text = gpu.describe_device(info)
    if SIM:
        assert 'simulator' in info['name'] and info['peak_bandwidth'] is None and 'simulator' in text
    else:
        assert info['multiprocessors'] > 0 and info['memory_bytes'] > 0 and info['name'] in text


@pytest.mark.parametrize('blocks, threads', [((1, 1), (1, 1)), ((2, 3), (3, 2)), ((1, 4), (2, 5))])
def test_thread_ids_are_block_times_size_plus_thread(blocks, threads):
    ids = gpu.thread_ids(blocks, threads)
    np.testing.assert_array_equal(ids, gpu.thread_ids_reference(blocks, threads))
    gy, gx = ids[..., 4], ids[..., 5]                   # cuda.grid(2) = blockIdx * blockDim + threadIdx
    np.testing.assert_array_equal(gy, ids[..., 0] * threads[0] + ids[..., 2])
    np.testing.assert_array_equal(gx, ids[..., 1] * threads[1] + ids[..., 3])


def test_thread_ids_bad_input():
    with pytest.raises(ValueError, match=r'blocks as a pair \(y, x\) of positive ints, got \(0, 1\)'):
        gpu.thread_ids((0, 1), (1, 1))
    with pytest.raises(ValueError, match='at most 1024 threads per block, got 33 x 32'):
        gpu.thread_ids((1, 1), (33, 32))


@FEW
@given(st.integers(1, 300), st.sampled_from([np.float32, np.float64]))
def test_vector_add_parity(n, dtype):
    r = np.random.default_rng(n)
    a, b = r.standard_normal(n).astype(dtype), r.standard_normal(n).astype(dtype)
    for be in ('numpy', 'numba', 'cuda'):
        out = gpu.vector_add(a, b, be)
        assert out.dtype == dtype and isinstance(out, np.ndarray)
        np.testing.assert_array_equal(out, a + b)


def test_vector_add_bad_input():
    with pytest.raises(ValueError, match=r'vector_add expected b of shape \(3,\), got \(2,\)'):
        gpu.vector_add(np.zeros(3), np.zeros(2))
    with pytest.raises(ValueError, match='one dtype, got float64 and float32'):
        gpu.vector_add(np.zeros(3), np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="backend must be 'auto' or one of"):
        gpu.vector_add(np.zeros(3), np.zeros(3), 'opencl')


@FEW
@given(st.integers(1, 7), st.integers(1, 7), st.integers(1, 7), st.sampled_from(['naive', 'tiled']),
       st.sampled_from([2, 3, 4]), st.sampled_from([np.float32, np.float64]))
def test_matmul_parity(M, K, N, kernel, tile, dtype):
    r = np.random.default_rng(M * 100 + K * 10 + N)
    A, B = r.standard_normal((M, K)).astype(dtype), r.standard_normal((K, N)).astype(dtype)
    exact = A.astype(np.float64) @ B.astype(np.float64)
    tol = 1e-5 if dtype == np.float32 else 1e-12
    for be in ('numpy', 'numba'):
        np.testing.assert_allclose(gpu.matmul(A, B, be), exact, rtol=tol, atol=tol * K)
    got = gpu.matmul(A, B, 'cuda', kernel, tile)
    assert got.dtype == dtype and got.shape == (M, N)
    np.testing.assert_allclose(got, exact, rtol=tol, atol=tol * K)


def test_matmul_tiles_past_the_edges():
    "Sides that are not multiples of the tile, and a tile larger than the matrices: zeros fill the partial tiles."
    r = np.random.default_rng(0)
    A, B = r.standard_normal((5, 6)), r.standard_normal((6, 3))
    for tile in (4, 8):
        np.testing.assert_allclose(gpu.matmul(A, B, 'cuda', 'tiled', tile), A @ B, rtol=1e-12, atol=1e-12)


def test_matmul_bad_input():
    A = np.zeros((3, 4))
    with pytest.raises(ValueError, match=r'matmul expected B of shape \(4, N\), got \(3, 4\)'):
        gpu.matmul(A, A)
    with pytest.raises(ValueError, match='both float32 or both float64, got float64 and float32'):
        gpu.matmul(A, np.zeros((4, 2), np.float32))
    with pytest.raises(ValueError, match='both float32 or both float64, got int64'):
        gpu.matmul(np.zeros((3, 4), np.int64), np.zeros((4, 2), np.int64))
    with pytest.raises(ValueError, match="kernel in \\('naive', 'tiled'\\), got 'cublas'"):
        gpu.matmul(A, np.zeros((4, 2)), kernel='cublas')
    with pytest.raises(ValueError, match=r'tile an int in \[1, 32\]'):
        gpu.matmul(A, np.zeros((4, 2)), tile=0)


@FEW
@given(st.integers(1, 200), st.sampled_from([1, 4, 8, 16]), st.sampled_from([np.float32, np.float64]))
def test_reduce_sum_parity(n, block, dtype):
    x = np.random.default_rng(n).standard_normal(n).astype(dtype)
    exact = math.fsum(x.astype(np.float64))
    tol = 1e-5 * np.abs(x).sum() if dtype == np.float32 else 1e-12 * np.abs(x).sum()
    for be in ('numpy', 'numba'):
        assert abs(float(gpu.reduce_sum(x, be)) - exact) <= tol
    got = gpu.reduce_sum(x, 'cuda', block=block)
    assert type(got) is np.dtype(dtype).type and abs(float(got) - exact) <= tol


def test_reduce_sum_grid_stride_covers_more_than_the_grid():
    "More elements than threads in the grid, and more block sums than threads in a block: each counted once."
    x = np.arange(1, 101, dtype=np.float64)                # 100 > 3 blocks x 4 threads; 6 block sums > 4 threads
    assert gpu.reduce_sum(x, 'cuda', block=4, max_blocks=3) == 5050.0
    assert gpu.reduce_sum(x, 'cuda', block=4, max_blocks=6) == 5050.0


def test_reduce_sum_bad_input():
    with pytest.raises(ValueError, match='block a power of two in \\[1, 1024\\], got 6'):
        gpu.reduce_sum(np.ones(3), block=6)
    with pytest.raises(ValueError, match='float32 or float64, got int64'):
        gpu.reduce_sum(np.ones(3, np.int64))
    with pytest.raises(ValueError, match='rank 1'):
        gpu.reduce_sum(np.ones((2, 2)))
    with pytest.raises(ValueError, match='max_blocks a positive int, got 0'):
        gpu.reduce_sum(np.ones(3), max_blocks=0)


def test_time_kernel():
    calls = []
    t = gpu.time_kernel(lambda: (calls.append(1), time.sleep(0.003)), repeat=3, warmup=2, method='sync')
    assert len(calls) == 5 and 0.0029 < t < 0.5
    t = gpu.time_kernel(lambda: time.sleep(0.003), repeat=1, warmup=0, method='nosync')
    assert 0.0029 < t < 0.5
    with pytest.raises(ValueError, match="method in \\('auto', 'events', 'sync', 'nosync'\\), got 'cpu'"):
        gpu.time_kernel(lambda: None, method='cpu')
    with pytest.raises(ValueError, match='repeat >= 1 and warmup >= 0'):
        gpu.time_kernel(lambda: None, warmup=-1)
    if SIM:
        with pytest.raises(ValueError, match="'events' needs a real GPU"):
            gpu.time_kernel(lambda: None, method='events')


@pytest.mark.parametrize('threads, regs, shared, blocks, occ, limit', [
    (256, 32, 0, 8, 1.0, 'threads'),           # 8 x 256 = 2048 threads
    (256, 128, 0, 2, 0.25, 'registers'),        # 128 x 32 = 4096 registers per warp: 16 warps
    (32, 16, 0, 32, 0.5, 'blocks'),            # 32 blocks of one warp
    (128, 32, 100 * 1024, 2, 0.125, 'shared'),  # (100 + 1) KB per block in 228 KB
    (96, 33, 0, 17, 51 / 64, 'registers'),      # 33 regs: 1056 per warp, allocated in units of 256: 1280; 51 warps
])
def test_occupancy_matches_the_calculator(threads, regs, shared, blocks, occ, limit):
    o = gpu.occupancy(threads, regs, shared)
    assert (o['blocks_per_sm'], o['limit']) == (blocks, limit)
    assert o['occupancy'] == pytest.approx(occ)


def test_occupancy_bad_input():
    with pytest.raises(ValueError, match=r'threads_per_block an int in \[1, 1024\], got 0'):
        gpu.occupancy(0)
    with pytest.raises(ValueError, match=r'registers_per_thread in \[1, 255\], got 300'):
        gpu.occupancy(128, 300)
    with pytest.raises(ValueError, match='shared_per_block in'):
        gpu.occupancy(128, 32, 10**6)


def test_roofline_arithmetic():
    card = gpu.H100_SXM
    assert gpu.arithmetic_intensity('vector_add') == pytest.approx(1 / 12)
    assert gpu.arithmetic_intensity('vector_add', itemsize=8) == pytest.approx(1 / 24)
    assert gpu.arithmetic_intensity('matmul_naive') == pytest.approx(0.25, rel=1e-3)
    assert gpu.arithmetic_intensity('matmul_tiled', tile=16) == pytest.approx(4.0, rel=1e-2)
    assert gpu.arithmetic_intensity('matmul_ideal', n=1200) == pytest.approx(200.0)
    ridge = card['peak_fp32'] / card['peak_bandwidth']
    rates = gpu.attainable([ridge / 2, ridge, 2 * ridge], card['peak_fp32'], card['peak_bandwidth'])
    np.testing.assert_allclose(rates, [card['peak_fp32'] / 2, card['peak_fp32'], card['peak_fp32']])
    with pytest.raises(ValueError, match="kernel in \\('vector_add'"):
        gpu.arithmetic_intensity('softmax')
    fl = gpu.vector_add_floor(5_000_000)
    assert fl['bytes'] == 60_000_000 and fl['kernel'] == pytest.approx(60e6 / 3.35e12)


def test_plot_roofline():
    import matplotlib
    matplotlib.use('Agg')
    ax = gpu.plot_roofline({'vector add': 1 / 12, 'ideal matmul': 500.0})
    assert len(ax.get_lines()) >= 4 and 'H100' in ax.get_title()


@pytest.mark.skipif(gpu_present(), reason='a GPU is present: the benchmark runs for real (minutes)')
def test_gpu_benchmark_skips_cleanly_without_a_gpu(tmp_path):
    script = Path(__file__).resolve().parents[1] / 'benchmarks' / 'gpu.py'
    r = subprocess.run([sys.executable, str(script), '--json', str(tmp_path / 'g.json')], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert 'GPU benchmarks skipped: no NVIDIA GPU' in r.stdout and not (tmp_path / 'g.json').exists()
