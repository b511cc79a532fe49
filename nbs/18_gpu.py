# %% [markdown]
# # GPU programming with Numba CUDA
#
# > The GPU as a machine: the device, its grid of threads, a vector add timed correctly, a matrix product in shared memory, a reduction, and the arithmetic of occupancy and bandwidth.
#
# ## Purpose
#
# Every chapter so far has a CUDA kernel beside its NumPy reference and its Numba CPU
# kernel, dispatched through the kernel house of chapter 0 (`core.resolve_backend`,
# `KernelArrays`, `cuda_kernels`, `launch`). This chapter steps back and looks at the
# machine those kernels run on. It follows source 004's chapter 10 (Ketkar, *Deep
# Learning with Python*, "Introduction to GPUs"), which does the same with OpenCL
# through PyOpenCL: a device query, a vector add on 5,000,000 numbers and a naive
# matrix product. We redo each listing with Numba CUDA (and CuPy, whose `@` is
# cuBLAS), fix what the source gets wrong, and go further:
#
# * **the device**: name, compute capability, multiprocessors, memory;
# * **the index space**: grid, block and thread, and the global index
#   $g = b\cdot B + t$ whose last term the source forgets;
# * **a vector add timed correctly**: a GPU launch returns before the kernel has
#   run, so a timer must wait for it, and copies to and from the card count
#   when the data starts on the host;
# * **matrix multiply**, naive and then tiled in shared memory, against cuBLAS;
# * **a reduction**, a tree in shared memory;
# * **occupancy and bandwidth arithmetic**, and the *roofline* that says which of
#   the two limits a kernel.
#
# The OpenCL words map onto CUDA's one for one:
#
# | OpenCL (source 004) | CUDA | Numba |
# |---|---|---|
# | work-item | thread | `cuda.threadIdx` |
# | work-group (size $S$) | block (size $B$, `blockDim`) | `cuda.blockIdx`, `cuda.blockDim` |
# | NDRange (global size $G$) | grid | `cuda.gridDim`, `cuda.grid(ndim)` |
# | compute unit | streaming multiprocessor (SM) | `MULTIPROCESSOR_COUNT` |
# | private memory | registers (and local memory) | local variables |
# | local memory | shared memory | `cuda.shared.array` |
# | global / constant memory | global / constant memory | device arrays, `cuda.const.array_like` |
# | `barrier(CLK_LOCAL_MEM_FENCE)` | `__syncthreads()` | `cuda.syncthreads()` |
#
# **Where this chapter ran.** Without an NVIDIA GPU, Numba's *CUDA simulator*
# (`NUMBA_ENABLE_CUDASIM=1`) runs each kernel in Python, one Python thread per CUDA
# thread. It checks that a kernel computes what its reference computes, shared
# memory and barriers included, but it is thousands of times slower than a GPU and
# says nothing about speed. The sizes below shrink when the simulator is on, and
# every figure that needs a real card (bandwidth as a fraction of the peak, the tiled
# product as a fraction of cuBLAS, our convolution and recurrent kernels against
# PyTorch's) comes from `benchmarks/gpu.py`, which skips cleanly without a GPU.
# Section 8 prints which case this run was.

# %%
#| default_exp gpu

# %%
#| export
from __future__ import annotations
import math, statistics, time
import numpy as np
from numba import njit, prange
from dl_from_scratch.core import (resolve_backend, KernelArrays, cuda_kernels, launch, THREADS_PER_BLOCK, cupy_or_none,
                                  check_array)

# %%
#| hide
import os
from dl_from_scratch.core import simulate_cuda_without_gpu, has_cuda, to_numpy
simulate_cuda_without_gpu()   # no GPU: run the CUDA kernels in Numba's simulator (before numba.cuda is imported)
import numba
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_fail, test_close
SIM = bool(numba.config.ENABLE_CUDASIM)

# %% [markdown]
# ## 1. The device
#
# Source 004's listing 10-1 walks OpenCL's platforms and prints, per device, its
# name, clock, compute units and memories (an Intel Iris Pro: 1200 MHz, 40 compute
# units, 64 KB local memory, 2 GB global memory). The CUDA equivalents come from
# Numba's device object. Two more numbers follow from the attributes and matter
# more than any other for what comes next:
#
# * the **peak memory bandwidth**, $2 \times f_\text{mem} \times
#   \text{bus width}/8$ bytes per second (double data rate: two transfers per clock);
# * the **peak float32 rate**, $2 \times \text{SMs} \times \text{cores per SM}
#   \times f_\text{core}$ FLOP/s (a fused multiply-add counts as two). The cores
#   per SM are not an attribute; they follow from the compute capability (64 on
#   the 7.x and 8.0 parts, 128 on 8.6 to 9.0 and later, from NVIDIA's CUDA
#   programming guide).
#
# In the simulator there is no device to ask: `device_info` says so, and gives
# the simulator's nominal compute capability.

# %%
#| export
# float32 cores per multiprocessor by compute capability (NVIDIA, CUDA C++ Programming Guide, "Arithmetic Instructions")
CORES_PER_SM = {(6, 0): 64, (6, 1): 128, (6, 2): 128, (7, 0): 64, (7, 2): 64, (7, 5): 64, (8, 0): 64, (8, 6): 128,
                (8, 7): 128, (8, 9): 128, (9, 0): 128, (10, 0): 128, (12, 0): 128}

def _attribute(dev, name):
    "A device attribute, or None where this driver does not report it."
    try: return getattr(dev, name)
    except Exception: return None

def device_info() -> dict:
    """What the current CUDA device is: `name`, `simulator` (True in Numba's CUDA simulator), `compute_capability`,
    `multiprocessors`, `memory_bytes`, `clock_hz`, `warp_size`, `max_threads_per_block`, `shared_per_block` (bytes),
    `peak_bandwidth` (bytes/s, from the memory clock and bus width) and `peak_fp32` (FLOP/s, from the cores per SM of
    its compute capability). Entries a device does not report, and all of them in the simulator, are None.
    Raises RuntimeError when there is neither a GPU nor the simulator."""
    import numba
    from numba import cuda
    keys = ('multiprocessors', 'memory_bytes', 'clock_hz', 'warp_size', 'max_threads_per_block', 'shared_per_block',
            'peak_bandwidth', 'peak_fp32')
    if numba.config.ENABLE_CUDASIM:
        cc = tuple(cuda.current_context().device.compute_capability)
        return dict(name="Numba's CUDA simulator (no GPU: each CUDA thread is a Python thread on the CPU)",
                    simulator=True, compute_capability=cc, **dict.fromkeys(keys))
    if not cuda.is_available():
        raise RuntimeError("device_info needs an NVIDIA GPU with its driver, or Numba's CUDA simulator "
                           "(NUMBA_ENABLE_CUDASIM=1); neither was found")
    dev = cuda.get_current_device()
    name = dev.name.decode() if isinstance(dev.name, bytes) else str(dev.name)
    cc = tuple(dev.compute_capability)
    sms, clock_khz = _attribute(dev, 'MULTIPROCESSOR_COUNT'), _attribute(dev, 'CLOCK_RATE')
    mem_khz, bus_bits = _attribute(dev, 'MEMORY_CLOCK_RATE'), _attribute(dev, 'GLOBAL_MEMORY_BUS_WIDTH')
    cores = CORES_PER_SM.get(cc)
    return dict(name=name, simulator=False, compute_capability=cc, multiprocessors=sms,
                memory_bytes=int(cuda.current_context().get_memory_info()[1]),
                clock_hz=clock_khz * 1e3 if clock_khz else None, warp_size=_attribute(dev, 'WARP_SIZE'),
                max_threads_per_block=_attribute(dev, 'MAX_THREADS_PER_BLOCK'),
                shared_per_block=_attribute(dev, 'MAX_SHARED_MEMORY_PER_BLOCK'),
                peak_bandwidth=2 * mem_khz * 1e3 * bus_bits / 8 if mem_khz and bus_bits else None,
                peak_fp32=2 * sms * cores * clock_khz * 1e3 if cores and sms and clock_khz else None)

def describe_device(info: dict | None = None) -> str:
    "`device_info()` as a few printable lines."
    d = device_info() if info is None else info
    if d['simulator']:
        return f"{d['name']}\n  nominal compute capability {d['compute_capability'][0]}.{d['compute_capability'][1]}"
    fmt = lambda v, f: '?' if v is None else f(v)
    return '\n'.join([d['name'],
        f"  compute capability {d['compute_capability'][0]}.{d['compute_capability'][1]}, "
        f"{fmt(d['multiprocessors'], str)} multiprocessors, clock {fmt(d['clock_hz'], lambda v: f'{v / 1e9:.2f} GHz')}",
        f"  memory {fmt(d['memory_bytes'], lambda v: f'{v / 2**30:.1f} GiB')}, peak bandwidth "
        f"{fmt(d['peak_bandwidth'], lambda v: f'{v / 1e12:.2f} TB/s')}, peak float32 {fmt(d['peak_fp32'], lambda v: f'{v / 1e12:.1f} TFLOP/s')}",
        f"  warp {d['warp_size']}, at most {d['max_threads_per_block']} threads and "
        f"{fmt(d['shared_per_block'], lambda v: f'{v // 1024} KB')} shared memory per block"])

# %%
info = device_info()
print(describe_device(info))
test_eq(info['simulator'], SIM)
test_eq(len(info['compute_capability']), 2)
if not SIM: assert info['multiprocessors'] > 0 and info['memory_bytes'] > 0

# %% [markdown]
# ## 2. Grid, block, thread
#
# A kernel launch `kernel[blocks, threads](...)` starts a **grid** of `blocks`
# blocks of `threads` threads each, both up to three-dimensional. Inside the
# kernel a thread knows its block index $b$ (`cuda.blockIdx`), the block size $B$
# (`cuda.blockDim`) and its index within the block $t$ (`cuda.threadIdx`), per
# axis. Its **global index** along an axis is
#
# $$g = b\,B + t, \qquad 0 \le t < B,$$
#
# and `cuda.grid(ndim)` computes exactly that. Source 004 states OpenCL's version
# (its figure 10-5) as $g = w\,S + F$: group index times group size plus the
# global offset $F$. The local index $s$ is missing; the correct form is
# $g = w\,S + s + F$. Without it every work-item of a group would get the same
# index, and the groups would cover only one element in $S$.
#
# The kernel below writes, at each thread's global position, its block and
# thread indices and what `cuda.grid(2)` says; the NumPy reference computes the
# same from the positions alone ($b = \lfloor g/B\rfloor$, $t = g \bmod B$), so
# equality means every position was written by exactly the thread the formula
# names. (Numba's first grid axis is $x$, the fastest-varying one: $x$ indexes
# columns, $y$ rows.)

# %%
#| export
def _check_launch_shape(v, name, who):
    "A positive (y, x) pair of ints."
    if not (isinstance(v, tuple) and len(v) == 2 and all(isinstance(s, (int, np.integer)) and s > 0 for s in v)):
        raise ValueError(f"{who} expected {name} as a pair (y, x) of positive ints, got {v!r}")
    return int(v[0]), int(v[1])

def thread_ids_reference(blocks: tuple, threads: tuple) -> np.ndarray:
    """For a 2-D grid of `blocks` (by, bx) blocks of `threads` (ty, tx) threads: an int32 array
    (by*ty, bx*tx, 6) whose entry at global position (gy, gx) is (block y, block x, thread y, thread x, gy, gx)."""
    (by, bx), (ty, tx) = _check_launch_shape(blocks, 'blocks', 'thread_ids'), _check_launch_shape(threads, 'threads', 'thread_ids')
    gy, gx = np.meshgrid(np.arange(by * ty), np.arange(bx * tx), indexing='ij')
    return np.stack([gy // ty, gx // tx, gy % ty, gx % tx, gy, gx], axis=-1).astype(np.int32)

def _build_thread_ids():
    global cuda
    from numba import cuda
    @cuda.jit
    def thread_ids_k(out):
        gy = cuda.blockIdx.y * cuda.blockDim.y + cuda.threadIdx.y     # g = b B + t, per axis
        gx = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x
        x, y = cuda.grid(2)                                            # the same, as Numba computes it
        out[gy, gx, 0] = cuda.blockIdx.y; out[gy, gx, 1] = cuda.blockIdx.x
        out[gy, gx, 2] = cuda.threadIdx.y; out[gy, gx, 3] = cuda.threadIdx.x
        out[gy, gx, 4] = y; out[gy, gx, 5] = x
    return thread_ids_k

def thread_ids(blocks: tuple, threads: tuple) -> np.ndarray:
    """What each thread of a 2-D launch of `blocks` (by, bx) blocks of `threads` (ty, tx) threads sees, written by
    the threads themselves on the GPU (or in the simulator): the array of `thread_ids_reference`."""
    (by, bx), (ty, tx) = _check_launch_shape(blocks, 'blocks', 'thread_ids'), _check_launch_shape(threads, 'threads', 'thread_ids')
    if ty * tx > 1024:
        raise ValueError(f"thread_ids expected at most 1024 threads per block, got {ty} x {tx} = {ty * tx}")
    ka = KernelArrays('cuda', np.empty(0))
    out = ka.xp.full((by * ty, bx * tx, 6), -1, np.int32)
    cuda_kernels('gpu.thread_ids', _build_thread_ids)[(bx, by), (tx, ty)](out)   # Numba lists axes x first
    return ka.result(out)

# %%
ids = thread_ids((2, 3), (2, 4))
test_eq(ids, thread_ids_reference((2, 3), (2, 4)))
print("block (y, x) of each position of a grid of 2 x 3 blocks of 2 x 4 threads:")
print('\n'.join(' '.join(f"{r[0]}{r[1]}" for r in row) for row in ids))
test_fail(lambda: thread_ids((2, 0), (4, 4)), contains='positive ints')
test_fail(lambda: thread_ids((1, 1), (64, 32)), contains='at most 1024 threads')

# %% [markdown]
# The source's formula, with the offset $F=0$, gives one index per group:

# %%
G, S = 16, 4                                     # 16 work-items in groups of 4
w, s = np.arange(G) // S, np.arange(G) % S       # group index and local index of each work-item
print("source's w*S + F:", w * S)
print("with the local id, w*S + s + F:", w * S + s)
test_eq(len(set(w * S)), G // S); test_eq(w * S + s, np.arange(G))

# %% [markdown]
# ## 3. A vector add, timed correctly
#
# Listing 10-2 adds two vectors of 5,000,000 random float32 numbers on the GPU
# with the kernel `result[i] = v1[i] + v2[i]`, and reports **0.00203 s on the GPU
# against 0.00995 s for NumPy on the CPU** (norm of the difference 0.0). The
# kernel is right; the timing is not. A kernel launch (OpenCL's
# `enqueue_nd_range_kernel`, CUDA's `kernel[grid, block](...)`) only *queues* the
# work and returns; the GPU runs it later, while the host goes on. The source
# stops its clock when the launch returns and copies the result back afterwards,
# outside the timed region, so its 0.00203 s measures putting the kernel in a
# queue (plus whatever had to happen before that), not the addition. A correct
# timing waits for the device before it reads the clock: either a
# **synchronise** (`cuda.synchronize()`, CuPy's `Device().synchronize()`) before
# `perf_counter`, or **CUDA events** recorded in the stream before and after the
# kernel, whose difference the GPU measures itself.
#
# A second question is *what* to time. If the vectors start on the host, the
# GPU's answer costs two copies in and one out over PCIe, 60 MB for 5,000,000
# float32 triples, against a kernel that moves the same 60 MB through the card's
# own memory. The copies dominate: at PCIe's tens of GB/s they take milliseconds,
# the kernel on a modern card tens of microseconds. So a vector add alone is
# never worth a trip to the GPU; it is worth doing there when the data already
# lives there, as it does for a whole training step (chapter 0: data stays on
# the device). Both figures are worth printing, with and without the copies.
#
# The three implementations follow the house rule (NumPy reference, Numba CPU,
# CUDA), and `vector_add` runs the CUDA one on device arrays where they are, or
# copies host arrays over and back: timing it on host arrays therefore times the
# copies too.

# %%
#| export
@njit(parallel=True, cache=True)
def _vector_add_numba(a, b, out):
    for i in prange(a.shape[0]): out[i] = a[i] + b[i]

def _build_vector_add():
    global cuda
    from numba import cuda
    @cuda.jit
    def vector_add_k(a, b, out):
        i = cuda.blockIdx.x * cuda.blockDim.x + cuda.threadIdx.x    # g = b B + t
        if i < out.shape[0]:                                         # the last block may run past the end
            out[i] = a[i] + b[i]
    return vector_add_k

def vector_add(a, b, backend: str = 'auto'):
    """a + b for two 1-D float arrays of one shape (n,) and dtype: 'numpy' (the reference), 'numba' (CPU threads) or
    'cuda' (one thread per element; host inputs are copied to the GPU and the result back, device inputs stay)."""
    be = resolve_backend(a, backend, 'vector_add')
    a = check_array(a, 'a', ndim=1, finite=False, who='vector_add')
    b = check_array(b, 'b', shape=a.shape, finite=False, who='vector_add')
    if a.dtype != b.dtype: raise ValueError(f"vector_add expected a and b of one dtype, got {a.dtype} and {b.dtype}")
    if be == 'numpy': return a + b
    if be == 'numba':
        out = np.empty_like(a); _vector_add_numba(a, b, out); return out
    ka = KernelArrays('cuda', a)
    da, db = ka.put(a), ka.put(b)
    out = ka.xp.empty_like(da)
    launch(cuda_kernels('gpu.vector_add', _build_vector_add), a.shape[0], da, db, out)
    return ka.result(out)

# %%
rng = np.random.default_rng(0)
for n in (1, 5, 300):
    a, b = rng.random(n, dtype=np.float32), rng.random(n, dtype=np.float32)
    for be in ('numpy', 'numba', 'cuda'): test_eq(vector_add(a, b, be), a + b)
test_fail(lambda: vector_add(np.zeros(3), np.zeros(4)), contains='vector_add expected b of shape (3,), got (4,)')
test_fail(lambda: vector_add(np.zeros(3), np.zeros(3, np.float32)), contains='one dtype')
test_fail(lambda: vector_add(np.zeros((2, 3)), np.zeros((2, 3))), contains='rank 1')

# %% [markdown]
# ### A timer that waits
#
# `time_kernel` runs a function a few times and gives the median. Its `method`
# says how the clock meets the GPU:
#
# * `'events'`: CUDA events recorded on the stream around the call; the GPU
#   timestamps them itself, so the interval is the device's time for the work
#   between them (a real GPU only; the simulator's events do not time anything);
# * `'sync'`: `perf_counter` around the call followed by a synchronise, so the
#   interval holds the launch, the wait and the host's own overhead;
# * `'nosync'`: `perf_counter` around the call alone, the source's method, kept to
#   show what it measures: for a launch, only the launch.
#
# `'auto'` is events on a real GPU and `'sync'` otherwise. On the host (NumPy,
# Numba CPU) all three agree, since nothing runs after the call returns; in the
# simulator too, since it runs every launch to the end before returning.

# %%
#| export
def synchronize() -> None:
    "Wait until the GPU has run everything queued (CuPy's and Numba's work); nothing to wait for without a GPU."
    cp = cupy_or_none()
    if cp is not None:
        cp.cuda.Device().synchronize(); return
    import numba
    if numba.config.ENABLE_CUDASIM: return          # the simulator runs every launch to the end before returning
    from numba import cuda
    if cuda.is_available(): cuda.synchronize()

TIMING_METHODS = ('auto', 'events', 'sync', 'nosync')

def time_kernel(fn, repeat: int = 5, warmup: int = 1, method: str = 'auto') -> float:
    """Median seconds of `fn()` over `repeat` runs, after `warmup` untimed runs (compilation, caches).
    `method`: 'events' (CUDA events around the call: the GPU's own time; a real GPU only), 'sync' (perf_counter
    around the call and a synchronise), 'nosync' (perf_counter around the call alone: for an asynchronous launch,
    the time to queue it, not to run it) or 'auto' (events on a real GPU, else 'sync')."""
    import numba
    if method not in TIMING_METHODS:
        raise ValueError(f"time_kernel expected method in {TIMING_METHODS}, got {method!r}")
    if not (isinstance(repeat, (int, np.integer)) and repeat >= 1 and isinstance(warmup, (int, np.integer)) and warmup >= 0):
        raise ValueError(f"time_kernel expected repeat >= 1 and warmup >= 0 (ints), got repeat={repeat!r}, warmup={warmup!r}")
    real_gpu = not numba.config.ENABLE_CUDASIM and cupy_or_none() is not None
    if method == 'auto': method = 'events' if real_gpu else 'sync'
    if method == 'events' and not real_gpu:
        raise ValueError("time_kernel: method 'events' needs a real GPU (CuPy and a device; the simulator's events "
                         "do not time anything), got none: use 'sync'")
    for _ in range(warmup): fn()
    synchronize()
    ts = []
    for _ in range(repeat):
        if method == 'events':
            from numba import cuda
            start, end = cuda.event(timing=True), cuda.event(timing=True)
            start.record(); fn(); end.record(); end.synchronize()
            ts.append(cuda.event_elapsed_time(start, end) / 1e3)
        else:
            t0 = time.perf_counter(); fn()
            if method == 'sync': synchronize()
            ts.append(time.perf_counter() - t0)
            if method == 'nosync': synchronize()   # let the queue drain before the next run starts its clock
    return statistics.median(ts)

# %%
_calls = []
t = time_kernel(lambda: _calls.append(time.sleep(0.002)), repeat=3, warmup=2)
test_eq(len(_calls), 5); assert 0.0019 < t < 0.2, t
test_fail(lambda: time_kernel(lambda: None, method='wall'), contains="method in ('auto', 'events', 'sync', 'nosync')")
test_fail(lambda: time_kernel(lambda: None, repeat=0), contains='repeat >= 1')
if SIM: test_fail(lambda: time_kernel(lambda: None, method='events'), contains="needs a real GPU")

# %% [markdown]
# The source's experiment, on the CPU at full size (5,000,000 float32), and the
# CUDA kernel at the size the simulator allows (a real GPU runs it at full size):
# kernel alone (the vectors already in device memory), with the copies (host
# vectors in, host vector out), and launched without waiting. In the simulator
# the "device" arrays are host arrays and every launch finishes before it
# returns, so those three rows time Python threads, all alike; they are printed
# to show the code path, not the speed of a GPU.

# %%
N_SOURCE = 5_000_000
a_host, b_host = rng.random(N_SOURCE, dtype=np.float32), rng.random(N_SOURCE, dtype=np.float32)
vec_times = {'numpy (CPU), n = 5,000,000': time_kernel(lambda: a_host + b_host, repeat=7),
             'numba (CPU threads), n = 5,000,000': time_kernel(lambda: vector_add(a_host, b_host, 'numba'), repeat=7)}
n_gpu = N_SOURCE if not SIM else 128
rep, warm = (7, 1) if not SIM else (1, 0)     # the simulator: one run of each, nothing to compile or warm
a_small, b_small = a_host[:n_gpu], b_host[:n_gpu]
cp = cupy_or_none() if not SIM else None
a_dev, b_dev = (cp.asarray(a_small), cp.asarray(b_small)) if cp is not None else (a_small, b_small)
where = 'GPU' if not SIM else 'simulator'
vec_times[f'cuda ({where}) kernel only, n = {n_gpu:,}'] = time_kernel(
    lambda: vector_add(a_dev, b_dev, 'cuda'), repeat=rep, warmup=warm)
vec_times[f'cuda ({where}) with copies in and out, n = {n_gpu:,}'] = time_kernel(
    lambda: vector_add(a_small, b_small, 'cuda'), repeat=rep, warmup=warm, method='sync')
vec_times[f'cuda ({where}) launch not waited for, n = {n_gpu:,}'] = time_kernel(
    lambda: vector_add(a_dev, b_dev, 'cuda'), repeat=rep, warmup=warm, method='nosync')
for k, v in vec_times.items(): print(f"{k:<55} {v * 1e3:9.3f} ms")
print(f"load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
test_eq(np.linalg.norm(vector_add(a_small, b_small, 'cuda') - (a_small + b_small)), 0.0)
print(f"norm of the difference, CUDA against NumPy: {np.linalg.norm(vector_add(a_small, b_small, 'cuda') - (a_small + b_small))}")
print(f"(source 004, listing 10-2, n = 5,000,000: GPU 0.00203 s (not synchronised), CPU 0.00995 s, norm 0.0)")

# %% [markdown]
# The CPU rows read $3\times4\times5{,}000{,}000 = 60$ MB of traffic. What the
# GPU row *should* be follows from the same count: a vector add does one
# addition per 12 bytes, so its time is the traffic divided by the memory
# bandwidth, on any machine. The figures below use NVIDIA's published numbers for
# an H100 SXM card as assumptions (section 7 lists them), and a PCIe 5.0 x16 link
# at an effective 50 GB/s for the copies:

# %%
#| export
H100_SXM = dict(
    name='NVIDIA H100 SXM5 80 GB (datasheet figures, assumed)',
    multiprocessors=132, peak_fp32=67e12, peak_tf32_tensor=495e12, peak_bandwidth=3.35e12, pcie_bandwidth=50e9,
    warp_size=32, max_threads_per_sm=2048, max_blocks_per_sm=32, registers_per_sm=65536, register_unit=256,
    shared_per_sm=228 * 1024, shared_per_block=227 * 1024, shared_reserved_per_block=1024)
# NVIDIA's H100 SXM5 figures: 132 SMs, 67 TFLOP/s float32 on the CUDA cores, 495 TFLOP/s TF32 on the tensor cores
# (dense), HBM3 at 3.35 TB/s; per SM 2048 threads, 32 blocks, 64 K registers, 228 KB shared memory.
# `pcie_bandwidth` is an effective rate for host copies over PCIe 5.0 x16, an assumption.

def vector_add_floor(n: int, card: dict = H100_SXM, itemsize: int = 4) -> dict:
    """Lower bounds (s) for a vector add of `n` numbers on `card`: the kernel (3 n items through its memory at peak
    bandwidth) and the three copies over the host link (2 n items in, n out)."""
    traffic = 3 * n * itemsize
    return dict(bytes=traffic, kernel=traffic / card['peak_bandwidth'], copies=traffic / card['pcie_bandwidth'])

# %%
fl = vector_add_floor(N_SOURCE)
print(f"traffic {fl['bytes'] / 1e6:.0f} MB; H100 kernel floor {fl['kernel'] * 1e6:.1f} us; "
      f"copies over the host link {fl['copies'] * 1e3:.2f} ms; the CPU here: "
      f"{fl['bytes'] / vec_times['numpy (CPU), n = 5,000,000'] / 1e9:.1f} GB/s (NumPy)")
test_close(fl['kernel'], 60e6 / 3.35e12, eps=1e-12)


# %% [markdown]
# **What the run shows.** NumPy added the 5,000,000 pairs in 1.95 ms here (30.8
# GB/s) and the Numba kernel in 1.69 ms, with a load average of 2.6 on our 2
# cores, against the source's 9.95 ms for NumPy on its 2.2 GHz Core i7-4770HQ. A
# GPU that truly needed the source's 2.03 ms for this kernel would be no faster
# than two CPU cores today. The three simulator rows time 128 Python threads: they
# differ by noise, not by anything a GPU does (the
# simulator's "device" is host memory, so there is nothing to copy, and every
# launch has finished when it returns). The result is exact, norm 0.0, as in the
# source. What a card would show follows from the traffic: on the H100 figures
# the kernel needs at least 17.9 µs and the copies over the host link about
# 1.20 ms, nearly two orders of magnitude more. Neither bound has anything to do
# with the source's 2.03 ms, which its method could only have measured as the
# time for the launch call to return. `benchmarks/gpu.py` prints all three
# timings of the kernel (events, with copies, not waited for) on a real card.

# %% [markdown]
# ## 4. Matrix multiply: naive, then tiled in shared memory
#
# $C = AB$ with $A\in\mathbb R^{M\times K}$, $B\in\mathbb R^{K\times N}$ costs
# $2MKN$ FLOPs. Listing 10-3 gives one work-item per output element and loops
# over $k$: `result[i + size*j] = sum_k m1[k + size*i] * m2[j + size*k]`, which
# writes $(M_1M_2)^T$ into the result buffer (the listing compares it with
# `cpu_result.T` for that reason), and reports output identical, digit for digit,
# to listing 10-2's, which can only be a copy of the earlier output.
#
# **Naive.** One thread per $C_{ij}$, the thread's $x$ index on the column $j$ so
# that the 32 threads of a warp read 32 neighbouring elements of a row of $B$
# and write 32 neighbours of $C$ (*coalesced* accesses: one memory transaction
# serves the warp), while all of them read the same $A_{ik}$ (a broadcast). Each
# multiply-add loads two numbers from global memory: 8 bytes per 2 FLOPs in
# float32, an *arithmetic intensity* of 0.25 FLOP/byte if no cache helps.
#
# **Tiled.** A block of $T\times T$ threads computes a $T\times T$ tile of $C$.
# It walks along $k$ in steps of $T$: each thread loads *one* element of the
# current $T\times T$ tile of $A$ and one of $B$ into shared memory (on-chip,
# about as fast as the L1 cache), the block waits at a barrier
# (`cuda.syncthreads()`) until both tiles are complete, every thread does its
# $T$ multiply-adds from shared memory, and the block waits again before the next
# tiles overwrite them. Every element loaded from global memory is now used $T$
# times: the intensity rises $T$-fold, to $T/4$ FLOP/byte in float32 (4 for
# $T=16$). Elements past the matrix edges load as zeros, so any shape works.
# Both barriers matter: without the first a thread would read a tile slot not
# yet written, without the second a fast thread would overwrite a slot a slow
# one still reads.
#
# cuBLAS goes further (register tiles per thread, double-buffered loads,
# tensor cores for TF32 and lower precisions); section 8 measures how far. The
# reference here is NumPy's `@`, which on CuPy arrays *is* cuBLAS, and on the host
# is OpenBLAS.

# %%
#| export
TILE = 16

@njit(parallel=True, cache=True)
def _matmul_numba(A, B, C):
    for i in prange(A.shape[0]):                  # rows in parallel; i-k-j order reads B and writes C along rows
        for j in range(C.shape[1]): C[i, j] = 0
        for k in range(A.shape[1]):
            a = A[i, k]
            for j in range(C.shape[1]): C[i, j] += a * B[k, j]

def _build_matmul(dtype: str, tile: int):
    "The naive and tiled CUDA kernels for float arrays of `dtype` and `tile` x `tile` blocks."
    global cuda
    from numba import cuda, from_dtype
    nbt, zero, T = from_dtype(np.dtype(dtype)), np.dtype(dtype).type(0), tile

    @cuda.jit
    def naive(A, B, C):
        j, i = cuda.grid(2)                       # x: column, y: row
        if i < C.shape[0] and j < C.shape[1]:
            s = zero
            for k in range(A.shape[1]): s += A[i, k] * B[k, j]
            C[i, j] = s

    @cuda.jit
    def tiled(A, B, C):
        sA = cuda.shared.array((T, T), nbt)       # the block's current tiles of A and B
        sB = cuda.shared.array((T, T), nbt)
        tx, ty = cuda.threadIdx.x, cuda.threadIdx.y
        i, j = cuda.blockIdx.y * T + ty, cuda.blockIdx.x * T + tx
        M, K, N = A.shape[0], A.shape[1], B.shape[1]
        s = zero
        for t in range((K + T - 1) // T):
            k = t * T + tx                        # each thread loads one element of each tile (zero past the edges)
            sA[ty, tx] = A[i, k] if i < M and k < K else zero
            k = t * T + ty
            sB[ty, tx] = B[k, j] if k < K and j < N else zero
            cuda.syncthreads()                    # both tiles complete
            for kk in range(T): s += sA[ty, kk] * sB[kk, tx]
            cuda.syncthreads()                    # everyone done with them before they are overwritten
        if i < M and j < N: C[i, j] = s
    return dict(naive=naive, tiled=tiled)

MATMUL_KERNELS = ('naive', 'tiled')

def matmul(A, B, backend: str = 'auto', kernel: str = 'tiled', tile: int = TILE):
    """C = A @ B for float arrays A (M, K) and B (K, N) of one dtype: 'numpy' (`@`: OpenBLAS on the host, cuBLAS
    on CuPy arrays), 'numba' (CPU threads over rows) or 'cuda' with `kernel` 'naive' (one thread per C[i, j])
    or 'tiled' (`tile` x `tile` blocks through shared memory). Host inputs to 'cuda' are copied over and back."""
    be = resolve_backend(A, backend, 'matmul')
    A = check_array(A, 'A', ndim=2, finite=False, who='matmul')
    B = check_array(B, 'B', shape=(A.shape[1], None), finite=False, who='matmul')
    if A.dtype != B.dtype or A.dtype not in (np.float32, np.float64):
        raise ValueError(f"matmul expected A and B both float32 or both float64, got {A.dtype} and {B.dtype}")
    if kernel not in MATMUL_KERNELS: raise ValueError(f"matmul expected kernel in {MATMUL_KERNELS}, got {kernel!r}")
    if not (isinstance(tile, (int, np.integer)) and 1 <= tile <= 32):
        raise ValueError(f"matmul expected tile an int in [1, 32] (tile^2 threads per block), got {tile!r}")
    if be == 'numpy': return A @ B
    M, N = A.shape[0], B.shape[1]
    if be == 'numba':
        C = np.empty((M, N), A.dtype); _matmul_numba(np.ascontiguousarray(A), np.ascontiguousarray(B), C); return C
    ka = KernelArrays('cuda', A)
    dA, dB = ka.put(A), ka.put(B)
    C = ka.xp.empty((M, N), A.dtype)
    blocks = (-(-N // tile), -(-M // tile))       # (x, y): columns, rows
    cuda_kernels(f'gpu.matmul.{A.dtype}.{tile}', lambda: _build_matmul(str(A.dtype), int(tile)))[kernel][blocks, (tile, tile)](dA, dB, C)
    return ka.result(C)

# %%
A, B = rng.standard_normal((7, 5)), rng.standard_normal((5, 9))
for be, k, tl in (('numpy', 'tiled', 16), ('numba', 'tiled', 16), ('cuda', 'naive', 4), ('cuda', 'tiled', 4), ('cuda', 'tiled', 3)):
    test_close(matmul(A, B, be, k, tl), A @ B, eps=1e-12)
A32, B32 = A.astype(np.float32), B.astype(np.float32)
got = matmul(A32, B32, 'cuda', 'tiled', 4)
test_eq(got.dtype, np.float32); test_close(got, A @ B, eps=1e-5)
test_fail(lambda: matmul(A, A), contains='matmul expected B of shape (5, N), got (7, 5)')
test_fail(lambda: matmul(A, B32), contains='both float32 or both float64')
test_fail(lambda: matmul(A, B, kernel='fast'), contains="kernel in ('naive', 'tiled')")
test_fail(lambda: matmul(A, B, tile=64), contains='tile an int in [1, 32]')

# %% [markdown]
# The source's 500×500 product on the CPU, and the CUDA kernels at the simulator's
# size (full size on a GPU, where the reference is cuBLAS through CuPy; here it is
# NumPy's OpenBLAS, on the host):

# %%
n_mm = 500 if not SIM else 12
M1, M2 = rng.random((500, 500), dtype=np.float32), rng.random((500, 500), dtype=np.float32)
mm_times = {'numpy @ (OpenBLAS, CPU), 500 x 500': time_kernel(lambda: M1 @ M2, repeat=7),
            'numba (CPU threads), 500 x 500': time_kernel(lambda: matmul(M1, M2, 'numba'), repeat=3)}
m1, m2 = M1[:n_mm, :n_mm].copy(), M2[:n_mm, :n_mm].copy()
d1, d2 = (cp.asarray(m1), cp.asarray(m2)) if cp is not None else (m1, m2)
tile = TILE if not SIM else 4
products = {}
for k in MATMUL_KERNELS:
    def run_mm(k=k): products[k] = matmul(d1, d2, 'cuda', k, tile)
    mm_times[f'cuda {k} ({where}, tile {tile}), {n_mm} x {n_mm}'] = time_kernel(run_mm, repeat=rep, warmup=warm)
    err = np.abs(to_numpy(products[k]) - m1.astype(np.float64) @ m2).max()
    print(f"cuda {k}: largest difference from the float64 product {err:.1e}"); assert err < 1e-4 * n_mm
if cp is not None: mm_times[f'cuBLAS (CuPy @), {n_mm} x {n_mm}'] = time_kernel(lambda: d1 @ d2, repeat=7)
for k, v in mm_times.items(): print(f"{k:<50} {v * 1e3:9.3f} ms")
print(f"OpenBLAS here: {2 * 500**3 / mm_times['numpy @ (OpenBLAS, CPU), 500 x 500'] / 1e9:.1f} GFLOP/s; "
      f"load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")


# %% [markdown]
# Both kernels agree with the float64 product to 5.9e-07, float32's rounding.
# OpenBLAS took 1.46 ms for the 500×500 product here (170.8 GFLOP/s, at a load
# average of 2.6 on 2 cores) and the Numba CPU loop 4.39 ms. The source prints no
# time of its own for this listing, only listing 10-2's output again. In the
# simulator the tiled kernel took 0.96 s and the naive one 0.04 s: the
# simulator switches Python threads at every `syncthreads`, which costs far
# more than the loads the tiles save. On a GPU
# it is the other way round, and only a GPU can say by how much; section 8's
# script measures both against cuBLAS.

# %% [markdown]
# ## 5. A reduction
#
# A sum turns $n$ numbers into one, so threads must combine their work. The
# classic GPU scheme (Harris, *Optimizing Parallel Reduction in CUDA*) works in
# two launches:
#
# 1. A grid of $G$ blocks of $B$ threads ($B$ a power of two; $G$ at most 1,024 by
#    default, enough blocks to keep every SM of a large card busy). Each thread
#    first adds up the elements $i, i+P, i+2P, \dots$ where $P$ is the number of
#    threads in the grid (a *grid-stride* loop: consecutive threads read
#    consecutive elements, so the loads are coalesced). Then each block combines
#    its $B$ partial sums in shared memory as a **tree**: in round $r$ the first
#    $h = B/2^r$ threads add the element $h$ places above their own, with a
#    barrier after each round, until thread 0 holds the block's sum. ($\log_2 B$
#    rounds; the active threads stay contiguous, so whole warps retire together and
#    shared-memory accesses do not collide.)
# 2. One block of $B$ threads reduces the $G$ block sums with the same kernel:
#    its grid-stride loop takes $G/B$ sums per thread, then the tree.
#
# A tree also adds more accurately than a running sum: the rounding error of
# pairwise summation grows like $\log n$ rather than $n$ (Higham, ch. 4), which
# is why NumPy's `sum` is pairwise too. The Numba CPU kernel lets each thread sum
# its share in float64 and adds the shares.

# %%
#| export
@njit(parallel=True, cache=True)
def _sum_numba(x):
    s = 0.0                                       # float64 accumulator; Numba combines the threads' partial sums
    for i in prange(x.shape[0]): s += x[i]
    return s

def _build_reduce(dtype: str, block: int):
    "The block-tree sum kernel for `dtype` and `block` threads per block (a power of two)."
    global cuda
    from numba import cuda, from_dtype
    nbt, zero = from_dtype(np.dtype(dtype)), np.dtype(dtype).type(0)

    @cuda.jit
    def block_sums(x, out):
        sh = cuda.shared.array(block, nbt)
        t = cuda.threadIdx.x
        i, P = cuda.grid(1), cuda.gridsize(1)
        s = zero
        while i < x.shape[0]:                     # grid-stride loop: each thread's own partial sum
            s += x[i]; i += P
        sh[t] = s
        cuda.syncthreads()
        h = block // 2
        while h > 0:                              # the tree: log2(block) rounds
            if t < h: sh[t] += sh[t + h]
            cuda.syncthreads()
            h //= 2
        if t == 0: out[cuda.blockIdx.x] = sh[0]
    return block_sums

def reduce_sum(x, backend: str = 'auto', block: int = THREADS_PER_BLOCK, max_blocks: int = 1024):
    """The sum of a 1-D float array x (n,): 'numpy' (`sum`, pairwise), 'numba' (CPU threads, float64 accumulator)
    or 'cuda' (two launches of a shared-memory tree: up to `max_blocks` blocks of `block` threads, a power of two
    <= 1024, then one block over their sums). Returns a scalar of x's dtype."""
    be = resolve_backend(x, backend, 'reduce_sum')
    x = check_array(x, 'x', ndim=1, finite=False, who='reduce_sum')
    if x.dtype not in (np.float32, np.float64):
        raise ValueError(f"reduce_sum expected x float32 or float64, got {x.dtype}")
    if not (isinstance(block, (int, np.integer)) and 1 <= block <= 1024 and block & (block - 1) == 0):
        raise ValueError(f"reduce_sum expected block a power of two in [1, 1024], got {block!r}")
    if not (isinstance(max_blocks, (int, np.integer)) and max_blocks >= 1):
        raise ValueError(f"reduce_sum expected max_blocks a positive int, got {max_blocks!r}")
    if be == 'numpy': return x.dtype.type(x.sum())
    if be == 'numba': return x.dtype.type(_sum_numba(x))
    ka = KernelArrays('cuda', x)
    dx = ka.put(x)
    k = cuda_kernels(f'gpu.reduce.{x.dtype}.{block}', lambda: _build_reduce(str(x.dtype), int(block)))
    blocks = max(1, min(max_blocks, -(-x.shape[0] // block)))
    partial, total = ka.xp.empty(blocks, x.dtype), ka.xp.empty(1, x.dtype)
    k[blocks, block](dx, partial)
    k[1, block](partial, total)
    return x.dtype.type(float(total[0]))

# %%
for n in (1, 7, 100, 333):
    x = rng.standard_normal(n)
    for be in ('numpy', 'numba'): test_close(reduce_sum(x, be), math.fsum(x), eps=1e-12)
    test_close(reduce_sum(x, 'cuda', block=8), math.fsum(x), eps=1e-12)
test_eq(type(reduce_sum(x.astype(np.float32), 'cuda', block=8)), np.float32)
test_close(reduce_sum(x, 'cuda', block=4, max_blocks=3), math.fsum(x), eps=1e-12)   # 12 threads, 333 numbers
test_fail(lambda: reduce_sum(x, block=12), contains='power of two')
test_fail(lambda: reduce_sum(x, max_blocks=0), contains='max_blocks a positive int')
test_fail(lambda: reduce_sum(x.astype(int)), contains='float32 or float64')

# %% [markdown]
# Accuracy in float32, on uniform numbers in $[0, 1)$ (one sign: the running total
# only grows, and each addition rounds to the precision of the total): a running
# sum in float32, NumPy's pairwise sum and the CUDA tree, each against the exact
# sum of the same float32 numbers (`math.fsum` in float64). The tree runs on
# 2,048 numbers in the simulator, so the three are compared at that size too.

# %%
@njit(cache=True)
def running_sum32(x):
    s = np.float32(0)
    for v in x: s += v
    return s

for n_sum in (20_000, 2048):
    x = rng.random(n_sum, dtype=np.float32)
    truth = math.fsum(x.astype(np.float64))
    sums = {'running float32 sum': running_sum32(x), "NumPy's pairwise float32 sum": x.sum()}
    if n_sum <= 2048 or not SIM:     # the simulator's pace: the CUDA tree on the smaller set only
        sums[f'CUDA tree in float32 ({where}, blocks of {16 if SIM else THREADS_PER_BLOCK})'] = \
            reduce_sum(x, 'cuda', block=16, max_blocks=16) if SIM else reduce_sum(x, 'cuda')
    for k, v in sums.items(): print(f"n = {n_sum:>6,}: {k:<48} relative error {abs(float(v) - truth) / truth:.1e}")
    assert all(abs(float(v) - truth) / truth < 1e-5 for v in sums.values())


# %% [markdown]
# On 20,000 numbers the running float32 sum is off by 1.4e-06 (relative) and
# NumPy's pairwise sum by 4.0e-08. On 2,048 numbers the running sum is off by
# 1.2e-07, and NumPy's pairwise sum and the CUDA tree both by 5.7e-09. The tree is
# a pairwise sum too, and its error shows it: an order of magnitude and more
# below the running sum's, which grows with $n$.

# %% [markdown]
# ## 6. Parity on random shapes
#
# The tests above use fixed shapes; `tests/test_gpu.py` draws them with
# Hypothesis (matrix sides that are and are not multiples of the tile, vector
# lengths around the block size, one-element and odd cases) and holds the CUDA
# kernels, run in the simulator here, to the NumPy references. A few of those
# draws, at the simulator's pace:

# %%
from hypothesis import given, settings, strategies as st, HealthCheck

@settings(max_examples=4, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
@given(st.integers(1, 9), st.integers(1, 9), st.integers(1, 9), st.sampled_from(['naive', 'tiled']))
def check_matmul(M, K, N, kernel):
    r = np.random.default_rng(M * 100 + K * 10 + N)
    A, B = r.standard_normal((M, K)).astype(np.float32), r.standard_normal((K, N)).astype(np.float32)
    test_close(matmul(A, B, 'cuda', kernel, tile=4), A.astype(np.float64) @ B, eps=1e-5)
check_matmul()

# %% [markdown]
# ## 7. Occupancy, bandwidth and the roofline
#
# **Occupancy.** An SM keeps many warps resident and switches between them
# whenever one waits for memory; that is how a GPU hides a memory latency of
# several hundred cycles. How many warps fit is set by whichever resource runs
# out first: threads per SM, blocks per SM, registers (allocated per warp in
# units of 256) or shared memory (per block, plus 1 KB the system keeps on
# compute capability 8.0 and later). The fraction of the SM's maximum warps that
# are resident is the **occupancy**. It is a means, not an end: a kernel that
# keeps enough loads in flight per warp can run at full bandwidth at 50 %, but a
# kernel at 12 % rarely can. `occupancy` computes it from a card's limits (those
# of NVIDIA's occupancy calculator, taken from `H100_SXM` by default); on a real
# GPU, Numba reports a compiled kernel's registers per thread, which
# `benchmarks/gpu.py` feeds in.
#
# **Bandwidth and the roofline.** A kernel that does $W$ FLOPs while moving $Q$
# bytes between the SMs and memory has **arithmetic intensity** $I = W/Q$. At
# most it runs at
#
# $$P(I) = \min\left(P_\text{peak},\; I \cdot \beta\right)$$
#
# FLOP/s, where $P_\text{peak}$ is the arithmetic peak and $\beta$ the memory
# bandwidth (Williams, Waterman and Patterson's *roofline*). Below the ridge
# $I^* = P_\text{peak}/\beta$ the memory limits, above it the arithmetic. For the
# H100 figures in `H100_SXM`, $I^* = 67/3.35 = 20$ FLOP/byte for float32 on the
# CUDA cores. A vector add ($1/12$), a sum ($1/4$) and the naive product counted
# without caches ($1/4$) sit far left: bandwidth is all that matters, and the
# right figure of merit for them is achieved bandwidth as a fraction of $\beta$.
# Tiling lifts the product to $T/4$; a whole large product, each matrix read
# once, has $I = 2n^3/(3\cdot4n^2) = n/6$, far right. The TF32 tensor-core roof
# (dashed) is far higher again, which is how cuBLAS can pass the CUDA-core peak when
# it is allowed TF32 (PyTorch and CuPy leave float32 products in full float32 by
# default).

# %%
#| export
def occupancy(threads_per_block: int, registers_per_thread: int = 32, shared_per_block: int = 0,
              card: dict = H100_SXM) -> dict:
    """Resident blocks and warps per SM for a kernel launched with `threads_per_block`, using
    `registers_per_thread` and `shared_per_block` bytes of shared memory, on `card` (a dict like `H100_SXM`).
    Returns `blocks_per_sm`, `warps_per_sm`, `occupancy` (resident warps / the SM's maximum) and `limit` (the
    resource that binds: 'threads', 'blocks', 'registers' or 'shared')."""
    warp = card['warp_size']
    if not (isinstance(threads_per_block, (int, np.integer)) and 1 <= threads_per_block <= 1024):
        raise ValueError(f"occupancy expected threads_per_block an int in [1, 1024], got {threads_per_block!r}")
    if not 1 <= registers_per_thread <= 255:
        raise ValueError(f"occupancy expected registers_per_thread in [1, 255], got {registers_per_thread!r}")
    if not 0 <= shared_per_block <= card['shared_per_block']:
        raise ValueError(f"occupancy expected shared_per_block in [0, {card['shared_per_block']}] bytes, "
                         f"got {shared_per_block!r}")
    warps_per_block = -(-threads_per_block // warp)
    unit = card['register_unit']
    regs_per_warp = -(-registers_per_thread * warp // unit) * unit
    shared = shared_per_block + card['shared_reserved_per_block']
    limits = {'threads': card['max_threads_per_sm'] // (warps_per_block * warp),
              'blocks': card['max_blocks_per_sm'],
              'registers': (card['registers_per_sm'] // regs_per_warp) // warps_per_block,
              'shared': card['shared_per_sm'] // shared}
    limit = min(limits, key=limits.get)
    blocks = limits[limit]
    return dict(blocks_per_sm=blocks, warps_per_sm=blocks * warps_per_block, limit=limit,
                occupancy=blocks * warps_per_block / (card['max_threads_per_sm'] // warp))

def arithmetic_intensity(kernel: str, n: int = 4096, tile: int = TILE, itemsize: int = 4) -> float:
    """FLOPs per byte of memory traffic for `kernel` on size `n` (vector length, or n x n matrices), counting each
    load from global memory at every use (no help from caches): 'vector_add' (n adds; 2n reads, n writes),
    'reduce' (n - 1 adds, n reads), 'matmul_naive' (2 loads per multiply-add), 'matmul_tiled' (each load used
    `tile` times) and 'matmul_ideal' (A and B read once, C written once)."""
    i = itemsize
    flops_mm = 2.0 * n ** 3
    table = {'vector_add': n / (3.0 * n * i), 'reduce': (n - 1) / (n * i),
             'matmul_naive': flops_mm / ((2.0 * n ** 3 + n * n) * i),
             'matmul_tiled': flops_mm / ((2.0 * n ** 3 / tile + n * n) * i),
             'matmul_ideal': flops_mm / (3.0 * n * n * i)}
    if kernel not in table: raise ValueError(f"arithmetic_intensity expected kernel in {tuple(table)}, got {kernel!r}")
    return table[kernel]

def attainable(intensity, peak_flops: float, bandwidth: float):
    "The roofline: min(peak_flops, intensity * bandwidth) FLOP/s, for an intensity (FLOP/byte) or an array of them."
    return np.minimum(peak_flops, np.asarray(intensity, dtype=float) * bandwidth)

def plot_roofline(points: dict, card: dict = H100_SXM, ax=None):
    """Log-log roofline of `card` (float32 CUDA cores, and TF32 tensor cores when the card has that entry) with
    `points` {label: intensity} marked at their attainable rate; returns the axes."""
    import matplotlib.pyplot as plt
    ax = ax or plt.subplots(figsize=(7, 4.2))[1]
    I = np.logspace(-3, 3.5, 200)
    ax.loglog(I, attainable(I, card['peak_fp32'], card['peak_bandwidth']) / 1e12, 'k', label='float32 (CUDA cores)')
    if 'peak_tf32_tensor' in card:
        ax.loglog(I, attainable(I, card['peak_tf32_tensor'], card['peak_bandwidth']) / 1e12, 'k--', lw=1,
                  label='TF32 (tensor cores, dense)')
    at = {}                                       # points within 1 % of each other share a marker and a label
    for label, x in points.items(): at.setdefault(round(math.log10(x), 2), (x, []))[1].append(label)
    for x, labels in at.values():
        y = attainable(x, card['peak_fp32'], card['peak_bandwidth']) / 1e12
        ax.plot(x, y, 'o')                        # label up and to the left: above the roof, where nothing is drawn
        ax.annotate(', '.join(labels), (x, y), textcoords='offset points', xytext=(-6, 5), ha='right', fontsize=8)
    ax.axvline(card['peak_fp32'] / card['peak_bandwidth'], color='grey', lw=0.5)
    ax.set(xlabel='arithmetic intensity (FLOP/byte)', ylabel='attainable TFLOP/s', title=f"Roofline: {card['name']}")
    ax.legend(loc='lower right', fontsize=8)
    return ax

# %%
test_eq(occupancy(256, 32)['occupancy'], 1.0)                            # 8 blocks x 8 warps = 64 warps
test_eq(occupancy(256, 128), dict(blocks_per_sm=2, warps_per_sm=16, limit='registers', occupancy=0.25))
test_eq(occupancy(32, 16)['limit'], 'blocks')                            # 32 blocks of one warp: half the SM
test_eq(occupancy(128, 32, 100 * 1024)['blocks_per_sm'], 2)              # two 101 KB blocks in 228 KB
test_fail(lambda: occupancy(2048), contains='threads_per_block an int in [1, 1024]')
test_close(arithmetic_intensity('vector_add'), 1 / 12, eps=1e-12)
test_close(arithmetic_intensity('matmul_ideal', n=600), 100.0, eps=1e-9)   # n/6
test_eq(attainable([1.0, 1000.0], 10.0, 2.0), [2.0, 10.0])
test_fail(lambda: arithmetic_intensity('conv'), contains='kernel in')

# %%
print(f"{'kernel':<36}{'threads':>8}{'regs':>6}{'shared B':>10}{'blocks/SM':>10}{'occupancy':>10}  limit")
for name, t, r, sh in (('vector add', THREADS_PER_BLOCK, 16, 0), ('reduction (block 128)', 128, 24, 128 * 4),
                       ('tiled matmul 16x16', 256, 40, 2 * 16 * 16 * 4), ('tiled matmul 32x32', 1024, 40, 2 * 32 * 32 * 4),
                       ('a register-heavy kernel', 256, 128, 0)):
    o = occupancy(t, r, sh)
    print(f"{name:<36}{t:>8}{r:>6}{sh:>10}{o['blocks_per_sm']:>10}{o['occupancy']:>10.2f}  {o['limit']}")
print("(registers per thread are assumptions here: the compiler decides them; benchmarks/gpu.py reads them from a real GPU)")

# %%
points = {'vector add': arithmetic_intensity('vector_add'), 'sum': arithmetic_intensity('reduce'),
          'matmul naive (no cache)': arithmetic_intensity('matmul_naive'),
          'matmul tiled T=16': arithmetic_intensity('matmul_tiled', tile=16),
          'matmul tiled T=32': arithmetic_intensity('matmul_tiled', tile=32),
          'matmul 4096, ideal': arithmetic_intensity('matmul_ideal', n=4096)}
card = H100_SXM
print(f"{card['name']}: ridge at {card['peak_fp32'] / card['peak_bandwidth']:.1f} FLOP/byte")
for k, v in points.items():
    print(f"{k:<26} I = {v:8.3f} FLOP/byte -> at most {attainable(v, card['peak_fp32'], card['peak_bandwidth']) / 1e12:6.2f} TFLOP/s")
plot_roofline(points); plt.show()


# %% [markdown]
# The occupancy table shows the two limits that bite most often. With an
# assumed 40 registers per thread, the 16×16 tiled kernel fits 6 blocks per SM
# (75 %, limited by registers), and the 32×32 one a single block of 1,024 threads
# (50 %); a kernel at 128 registers per thread gets 2 blocks of 256 threads
# (25 %). On the roofline, the vector add can reach at most 0.28 TFLOP/s of the
# card's 67: for it only bytes per second count. Even a perfect 16×16 tiled
# product stays under the ridge at 20 FLOP/byte (at most 13.37 TFLOP/s from its
# memory traffic), and 32×32 tiles reach 26.70; cuBLAS gets to the flat part of
# the roof with larger tiles per block and a small tile of $C$ held in registers
# by each thread, so that each value loaded from shared memory is used several
# times too (Volkov and Demmel).

# %% [markdown]
# ## 8. On a real card
#
# `benchmarks/gpu.py` measures what the simulator cannot: the device query with
# the peak bandwidth and float32 rate derived from the card's own clocks; the
# vector add on 5,000,000 float32 (kernel alone by events, with the copies,
# launched without waiting) and its bandwidth as a fraction of the peak; the
# sum's bandwidth against CuPy's `sum`; the naive and tiled products at
# $4096^2$ as fractions of cuBLAS (CuPy's `@`); the registers and occupancy of
# the compiled kernels; and the package's CUDA convolution and recurrent kernels
# (`benchmarks/conv.py`, `benchmarks/rnn.py`) against PyTorch CUDA (cuDNN).
# Without a GPU it says so and stops, and that is what this run printed: no
# NVIDIA GPU was present, so the book's stored outputs hold none of these
# figures. Every kernel of this chapter was checked against its reference in
# the simulator; the fractions of peak bandwidth and of cuBLAS, and the
# comparison with cuDNN, are printed by `python benchmarks/gpu.py` on any
# machine with an NVIDIA GPU and CuPy (PyTorch with CUDA for the last table).

# %%
#| slow
import json, pathlib, subprocess, sys, tempfile
root = next(p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / 'benchmarks' / 'gpu.py').exists())
with tempfile.TemporaryDirectory() as d:      # a fresh process: it leaves the simulator off when a GPU is present
    r = subprocess.run([sys.executable, str(root / 'benchmarks' / 'gpu.py'), '--json', f'{d}/gpu.json'],
                       capture_output=True, text=True)
    print(r.stdout); assert r.returncode == 0, r.stderr[-3000:]
    gpu_report = json.load(open(f'{d}/gpu.json')) if os.path.exists(f'{d}/gpu.json') else None
print('ran on a GPU' if gpu_report else 'no GPU here: every timing in this chapter comes from the CPU or the simulator')

# %% [markdown]
# ## 9. Beside the source
#
# | source 004, chapter 10 | reported | here |
# |---|---|---|
# | 10-1 device query | Iris Pro GPU: 1200 MHz, 40 compute units, 64 KB local, 2 GB global memory | no GPU: Numba's CUDA simulator, nominal compute capability 5.2 (section 1) |
# | NDRange indexing | $g = wS + F$ | $g = wS + s + F$; without $s$ the 16 work-items in groups of 4 got 4 distinct indices (section 2) |
# | 10-2 vector add, 5,000,000 float32, GPU | 0.00203 s, not synchronised | not measurable here (simulator); on the H100 figures at least 17.9 µs for the kernel, about 1.20 ms for the copies (section 3) |
# | 10-2 vector add, CPU (NumPy) | 0.00995 s | 1.95 ms (Numba: 1.69 ms), at a load average of 2.6 on 2 cores |
# | 10-2 norm of the difference | 0.0 | 0.0 |
# | 10-3 naive matmul 500×500 | output identical to 10-2's (a copy) | naive and tiled CUDA kernels within 5.9e-07 of the float64 product; OpenBLAS 1.46 ms (170.8 GFLOP/s) on the CPU |
#
# The simulator checks what a kernel computes, not how fast: every GPU figure
# this chapter can stand behind is arithmetic on stated assumptions (the H100
# rows). The measured ones need a card, and `benchmarks/gpu.py` is written to
# produce them.
#
# ## References
#
# * N. Ketkar, *Deep Learning with Python*, Apress 2017, ch. 10 (source 004).
# * NVIDIA, *CUDA C++ Programming Guide* (thread hierarchy, shared memory, compute capabilities) and *CUDA C++ Best Practices Guide* (coalescing, occupancy, timing with events).
# * NVIDIA, *H100 Tensor Core GPU* datasheet and architecture whitepaper (the figures of `H100_SXM`).
# * M. Harris, *Optimizing Parallel Reduction in CUDA*, NVIDIA 2007.
# * S. Williams, A. Waterman, D. Patterson, *Roofline: An Insightful Visual Performance Model for Multicore Architectures*, CACM 52(4), 2009.
# * V. Volkov, J. Demmel, *Benchmarking GPUs to Tune Dense Linear Algebra*, SC 2008 (register and shared-memory tiling).
# * N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002, ch. 4 (summation).
# * Numba documentation, *CUDA Kernel API* and *The CUDA Simulator*; CuPy documentation, *Interoperability* (`__cuda_array_interface__`).
