# %% [markdown]
# # Conventions: dtypes, random numbers, shapes and devices
#
# > The small rules every other chapter leans on: the dtype policy, random generators, input checks, arrays on the CPU and the GPU, threads, denormal numbers, and the one house of the compiled kernels.
#
# ## Purpose
#
# Every chapter of this book builds a piece of a deep-learning library. They
# fit together only if they agree on a few conventions, collected here:
#
# * **dtypes.** We *train* in `float32`, because it halves memory traffic and
#   that is what accelerators are built for. We *check gradients* in `float64`,
#   because central differences with step $h$ have round-off error of order
#   $\varepsilon_{\text{mach}}/h$, which for `float32` ($\varepsilon \approx
#   10^{-7}$) swamps any relative error below $10^{-3}$.
# * **random numbers** always come from an explicit `np.random.Generator`, so
#   every experiment can be re-run bit for bit.
# * **shapes.** Images are NHWC, sequences are `(N, T, D)`, and a wrong shape
#   is an error that names what was expected and what came.
# * **devices.** On the CPU arrays are NumPy arrays; on an NVIDIA GPU they are
#   CuPy arrays. Code asks `get_array_module(x)` which one it holds, so one
#   implementation serves both. Importing the package never needs a GPU.

# %%
#| default_exp core

# %%
#| export
from __future__ import annotations
import contextlib
import numpy as np

# %%
#| hide
from fastcore.test import test_eq, test_fail

# %% [markdown]
# ## Dtype policy
#
# One module-level default decides the dtype of new parameters and of data
# converted by the library. `precision(np.float64)` switches it for a block,
# which is how the gradient checks build their layers. Only these two are
# accepted: the Numba kernels are compiled for float32 and float64, and
# float16 (or a longdouble) would pass here only to fail deep inside one.

# %%
#| export
_DTYPE = np.dtype(np.float32)

def get_dtype() -> np.dtype:
    "The floating dtype new parameters and converted inputs get (float32 unless changed)."
    return _DTYPE

def set_dtype(dtype) -> None:
    "Set the default floating dtype: `np.float32` (training) or `np.float64` (gradient checks); anything else is a `ValueError`."
    global _DTYPE
    try: dt = np.dtype(dtype)
    except TypeError: dt = None
    if dt is None or dt.type not in (np.float32, np.float64):
        raise ValueError(f"set_dtype expected a floating dtype float32 or float64, got {dtype!r}")
    _DTYPE = dt

@contextlib.contextmanager
def precision(dtype):
    "Context manager: use `dtype` as the default floating dtype inside the block."
    old = get_dtype()
    set_dtype(dtype)
    try: yield
    finally: set_dtype(old)

# %%
test_eq(get_dtype(), np.float32)
with precision(np.float64): test_eq(get_dtype(), np.float64)
test_eq(get_dtype(), np.float32)
for bad in (np.int32, np.float16, 'nonsense'):
    test_fail(lambda: set_dtype(bad), contains='set_dtype expected a floating dtype float32 or float64, got')
test_eq(get_dtype(), np.float32)                                          # a rejected dtype changes nothing

# %% [markdown]
# ## Random numbers
#
# Functions that need randomness take `rng=None | int | Generator`.
# `as_rng` turns any of them into a `Generator`: `None` gives a fresh,
# unpredictable one, an `int` a seeded one, and a `Generator` is passed through
# (so a caller can thread one generator through a whole experiment).

# %%
#| export
def as_rng(rng=None) -> np.random.Generator:
    "A `np.random.Generator` from `None`, a seed, or a `Generator` (returned as is)."
    if isinstance(rng, np.random.Generator): return rng
    if rng is None or isinstance(rng, (int, np.integer)): return np.random.default_rng(rng)
    raise TypeError(f"rng must be None, an int seed or a numpy Generator, got {type(rng).__name__}")

# %%
test_eq(as_rng(0).random(3), as_rng(0).random(3))
g = as_rng(1); test_eq(as_rng(g) is g, True)
test_fail(lambda: as_rng('seed'), contains='numpy Generator')

# %% [markdown]
# ## Devices: one code path for NumPy and CuPy
#
# CuPy mirrors NumPy's API, so most of the library is written against an
# "array module" `xp` obtained from the data itself. CuPy is imported lazily
# and only when it is installed *and* a GPU answers, so `import dl_from_scratch`
# works on any machine.

# %%
#| export
_cupy = None
_cupy_checked = False

def cupy_or_none():
    "The `cupy` module when it is installed and a CUDA device is usable, else `None`."
    global _cupy, _cupy_checked
    if not _cupy_checked:
        _cupy_checked = True
        try:
            import cupy
            cupy.cuda.runtime.getDeviceCount()
            _cupy = cupy
        except Exception:
            _cupy = None
    return _cupy

def has_cuda() -> bool:
    "True when CuPy and a CUDA GPU are available."
    return cupy_or_none() is not None

def on_device(x) -> bool:
    "True for an array in GPU memory (a CuPy array), False for a host (NumPy) array. Never imports CuPy."
    return type(x).__module__.startswith('cupy')

def get_array_module(x):
    "`cupy` for a CuPy array, else `numpy`. Never imports CuPy for a NumPy input."
    if on_device(x):
        import cupy
        return cupy
    return np

def to_numpy(x):
    "Copy a CuPy array to the host; NumPy arrays and scalars come back as NumPy arrays."
    return x.get() if on_device(x) else np.asarray(x)

def to_device(x, device: str = 'cpu'):
    "Move `x` to `'cpu'` (NumPy) or `'cuda'` (CuPy)."
    if device == 'cpu': return to_numpy(x)
    if device == 'cuda':
        cp = cupy_or_none()
        if cp is None: raise RuntimeError("to_device('cuda') needs CuPy and a CUDA GPU; neither was found")
        return cp.asarray(x)
    raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")

# %% [markdown]
# Without an NVIDIA GPU, the CUDA kernels still run: Numba's *CUDA simulator*
# executes them in Python, thread by thread, which is slow but checks that
# they compute what the NumPy reference computes. The simulator is switched
# on by an environment variable that must be set before `numba.cuda` is first
# imported, so chapters and tests call `simulate_cuda_without_gpu()` at the top.

# %%
#| export
import os, shutil, subprocess

def gpu_present() -> bool:
    "True when `nvidia-smi` finds an NVIDIA GPU."
    if shutil.which('nvidia-smi') is None: return False
    try: return subprocess.run(['nvidia-smi', '-L'], capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError): return False

def simulate_cuda_without_gpu() -> bool:
    """Run CUDA kernels in Numba's simulator when no GPU is present (call before `numba.cuda` is imported).
    An explicit `NUMBA_ENABLE_CUDASIM` in the environment wins. Returns True when the simulator is on."""
    if 'NUMBA_ENABLE_CUDASIM' not in os.environ and not gpu_present():
        os.environ['NUMBA_ENABLE_CUDASIM'] = '1'
    return os.environ.get('NUMBA_ENABLE_CUDASIM') == '1'

# %%
test_eq(simulate_cuda_without_gpu(), not gpu_present() or os.environ.get('NUMBA_ENABLE_CUDASIM') == '1')

# %% [markdown]
# ## Scratch arrays kept between batches
#
# A fresh NumPy array of several megabytes comes from the operating system as
# untouched pages, and every page costs a fault the first time it is written:
# on this machine a 10 MB work array cost more to fault in than the arithmetic
# that filled it. Layers therefore keep their large *internal* work arrays
# (im2col's columns, an LSTM's gates and pre-activations) in a dict of their
# own and get them back on the next batch of the same shape. `scratch` is that
# dict's one accessor. Only arrays that never leave the layer may live there:
# an output handed to the caller would be overwritten by the next call.

# %%
#| export
def scratch(ws: dict | None, name: str, shape, dtype, xp=np, fill=None):
    """An array of `shape` and `dtype` in array module `xp`, kept as `ws[name]` and handed out again while
    shape, dtype and module stay the same; a fresh array every call when `ws` is None. Its contents are what
    the last user left, or `fill` (if given) when it is made."""
    shape = tuple(int(s) for s in shape)
    a = None if ws is None else ws.get(name)
    if a is None or a.shape != shape or a.dtype != np.dtype(dtype) or get_array_module(a) is not xp:
        a = xp.empty(shape, dtype) if fill is None else xp.full(shape, fill, dtype)
        if ws is not None: ws[name] = a
    return a

# %%
ws = {}
a = scratch(ws, 'cols', (4, 3), np.float32, fill=1)
test_eq(a, np.ones((4, 3), np.float32))
a[0] = 7
test_eq(scratch(ws, 'cols', (4, 3), np.float32) is a, True)            # the same array, contents kept
test_eq(scratch(ws, 'cols', (5, 3), np.float32).shape, (5, 3))          # a new shape: a new array
test_eq(scratch(ws, 'cols', (5, 3), np.float64).dtype, np.float64)
test_eq(scratch(None, 'cols', (5, 3), np.float64) is ws['cols'], False) # no dict: always fresh

# %% [markdown]
# ## Threads
#
# A CPU step alternates between NumPy's matrix products (OpenBLAS threads)
# and our parallel Numba kernels (OpenMP threads). After each product,
# OpenBLAS keeps its idle threads *spinning* for about $2^{28}$ cycles (a
# tenth of a second) before they sleep; on a small machine those spinning
# threads take the cores the Numba kernel that follows needs. On this book's
# 2-core machine that made `col2im` on a LeNet layer several times slower
# right after a product than alone. OpenBLAS reads
# `OPENBLAS_THREAD_TIMEOUT` (a power of two of cycles, 4 to 30) once, when
# NumPy loads, so the Makefile, the benchmarks and the chapter runner set it
# to 4 before anything starts, and importing the package sets it when NumPy
# has not been loaded yet (`00_init`; in a notebook of your own that imports
# NumPy first, set it in the environment before `import numpy`).
#
# The Numba side has the same habit. Its parallel kernels run on GNU OpenMP
# threads, which spin for `GOMP_SPINCOUNT` rounds (300,000 by default) after
# each kernel before they sleep, and then slow the product that follows. So
# importing the package sets `GOMP_SPINCOUNT=10000` unless it is set already;
# OpenMP reads it once, when Numba first loads it. The table at the end of this
# section (`benchmarks/threads.py`, each setting in fresh processes) times one
# LeNet-5 training step with each setting. The default spin costs more per
# step than 10,000 rounds (37 % more in the run printed there). Sleeping at
# once (`0`, or `OMP_WAIT_POLICY=PASSIVE`) lands within about 10 % of 10,000
# rounds on either side, and the two change places from run to run (waking a
# sleeping thread costs time too); any short spin beats the default.
# `set_num_threads` changes the thread counts of
# Numba, OpenBLAS and (if it is loaded) PyTorch together.

# %%
#| export
import sys, ctypes, glob, functools

@functools.cache
def openblas_threads():
    """`(set, get)`: the C functions that set and read the thread count of NumPy's bundled OpenBLAS, or None
    if it is not found. Looked up once; `set(n)` takes effect for the next product."""
    for lib in glob.glob(os.path.join(os.path.dirname(np.__file__) + '.libs', '*openblas*')):
        dll = ctypes.CDLL(lib)
        for suffix in ('64_', ''):
            for prefix in ('scipy_openblas', 'openblas'):
                set_, get = (getattr(dll, f'{prefix}_{op}_num_threads{suffix}', None) for op in ('set', 'get'))
                if set_ is not None and get is not None: return set_, get
    return None

def _openblas_set_num_threads(n: int) -> bool:
    "Set OpenBLAS's thread count through its C API (NumPy's bundled library). False if it was not found."
    fns = openblas_threads()
    if fns is not None: fns[0](ctypes.c_int(n))
    return fns is not None

def set_num_threads(n: int | None = None) -> int:
    """Use `n` threads (default: all cores) in Numba's parallel kernels, OpenBLAS (NumPy's products) and,
    if it is already imported, PyTorch. Returns `n`."""
    import numba
    n = int(n or os.cpu_count() or 1)
    if not 1 <= n <= numba.config.NUMBA_NUM_THREADS:
        raise ValueError(f"set_num_threads expected 1 <= n <= {numba.config.NUMBA_NUM_THREADS} (this machine's "
                         f"threads), got {n}")
    numba.set_num_threads(n)
    _openblas_set_num_threads(n)
    if 'torch' in sys.modules: sys.modules['torch'].set_num_threads(n)
    return n

# %%
import numba
_before = numba.get_num_threads()
test_eq(set_num_threads(1), 1); test_eq(numba.get_num_threads(), 1)
set_num_threads(_before)
test_fail(lambda: set_num_threads(10_000), contains='set_num_threads expected')
assert _openblas_set_num_threads(_before) == bool(glob.glob(os.path.join(os.path.dirname(np.__file__) + '.libs', '*openblas*')))
if openblas_threads() is not None: test_eq(openblas_threads()[1](), _before)   # the getter reads what was set

# %% [markdown]
# Some work splits into independent pieces that are each too small to keep
# two cores busy: the two directions of a bidirectional RNN run a loop of
# small products and small kernels each, step after step, and the threads of
# OpenBLAS and Numba wake up and go back to sleep at every step. Such pieces
# are better run side by side, one per core, each with one BLAS thread.
# `concurrently` does that; the pieces must release the GIL for most of their
# time (NumPy's products and `nogil` Numba kernels do). One BLAS thread gives
# the same bits as two for the products the recurrent layers make inside
# their loops (a check in chapter 11).

# %%
#| export
import threading
from concurrent.futures import ThreadPoolExecutor, wait

_BLAS_LOCK, _blas_one = threading.Lock(), [0, None]     # blocks inside `one_blas_thread` now, the count before them

@contextlib.contextmanager
def one_blas_thread():
    """Run the NumPy products inside the `with` block on one OpenBLAS thread, and restore the count after. The
    count is one setting for the whole process: blocks in several threads at once keep it at one until the last
    of them ends, which restores the count from before the first."""
    fns = openblas_threads()
    if fns is None:
        yield; return
    set_, get = fns
    with _BLAS_LOCK:
        if _blas_one[0] == 0: _blas_one[1] = get()
        _blas_one[0] += 1
        set_(1)
    try: yield
    finally:
        with _BLAS_LOCK:
            _blas_one[0] -= 1
            if _blas_one[0] == 0: set_(_blas_one[1])

_POOL, _POOL_LOCK = None, threading.Lock()

def concurrently(fns: list) -> list:
    """Call the functions of no arguments `fns` at the same time, one thread each (the first in the calling
    thread), and return their results in order. Meanwhile OpenBLAS runs on one thread, so that each piece's
    products stay on its core. One after the other instead when Numba has one thread (`set_num_threads(1)`),
    OpenBLAS's thread count cannot be set, or there is one piece. An exception in any piece is raised here,
    after all have ended."""
    global _POOL
    import numba
    fns = list(fns)
    if len(fns) < 2 or numba.get_num_threads() < 2 or openblas_threads() is None: return [f() for f in fns]
    with _POOL_LOCK:          # the helper threads are made once and kept (a thread costs ~50 us to start)
        if _POOL is None: _POOL = ThreadPoolExecutor(max(1, (os.cpu_count() or 2) - 1), 'dl_from_scratch')
    with one_blas_thread():
        futures = [_POOL.submit(f) for f in fns[1:]]
        try: first = fns[0]()
        finally: wait(futures)                       # every piece ends before BLAS gets its threads back
        return [first, *(fu.result() for fu in futures)]

# %%
_ids = concurrently([threading.get_ident, threading.get_ident, lambda: openblas_threads() and openblas_threads()[1]()])
if numba.get_num_threads() > 1 and openblas_threads() is not None:
    assert _ids[0] == threading.get_ident() and _ids[1] != _ids[0]      # the first here, the others beside it
    test_eq(_ids[2], 1); test_eq(openblas_threads()[1](), _before)       # one BLAS thread meanwhile, then as before
def _boom(): raise KeyError('piece 2')
test_fail(lambda: concurrently([lambda: 1, _boom]), contains='piece 2')
if openblas_threads() is not None:       # blocks that overlap in two threads: the count comes back after the last
    _inner = threading.Event(); _outer_done = threading.Event(); _seen = []
    def _second():
        with one_blas_thread():
            _inner.set(); _outer_done.wait(5); _seen.append(openblas_threads()[1]())
    _t = threading.Thread(target=_second)
    with one_blas_thread():
        _t.start(); _inner.wait(5)
    _outer_done.set(); _t.join()
    test_eq(_seen, [1]); test_eq(openblas_threads()[1](), _before)
test_eq(concurrently([lambda: 'a']), ['a'])

# %% [markdown]
# ### Denormal numbers
#
# Float32 numbers below $2^{-126} \approx 1.2\times10^{-38}$ are *denormal*: they
# give up precision to reach further towards zero. A gradient carried back through
# hundreds of steps of a recurrent net shrinks into that range, and on many x86
# CPUs an operation that reads or writes one leaves the fast path for microcode,
# tens of times slower. Two bits of the SSE control register MXCSR flush them to
# zero: FTZ (results) and DAZ (inputs). TensorFlow sets both in its threads;
# PyTorch leaves them off unless asked (`torch.set_flush_denormal`), and so does
# this package: `set_flush_denormal(True)` makes its recurrent loops run with both
# bits set, in whichever thread runs them (`denormals_flushed`), and changes
# nothing else. Numba reads and writes the register through LLVM's
# `llvm.x86.sse.stmxcsr` and `ldmxcsr`; on other CPUs the setting is refused.

# %%
#| export
import platform

_FTZ_DAZ = 0x8040                     # MXCSR bit 15: flush results to zero; bit 6: read denormal inputs as zero
_X86 = platform.machine().lower() in ('x86_64', 'amd64')
_flush_denormal = False

@functools.cache
def _mxcsr():
    """`(get, set)`: Numba functions that read and write this thread's MXCSR (x86-64 only), compiled on first use
    (Numba is imported here, not when the package loads: `simulate_cuda_without_gpu` must come first)."""
    import numba
    from numba.extending import intrinsic
    from numba.core import cgutils
    from llvmlite import ir
    def call(builder, name, slot):
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer()]), name)
        builder.call(fn, [builder.bitcast(slot, ir.IntType(8).as_pointer())])
    @intrinsic
    def stmxcsr(typingctx):
        def codegen(context, builder, sig, args):
            slot = cgutils.alloca_once(builder, ir.IntType(32))
            call(builder, 'llvm.x86.sse.stmxcsr', slot)
            return builder.load(slot)
        return numba.types.uint32(), codegen
    @intrinsic
    def ldmxcsr(typingctx, value):
        def codegen(context, builder, sig, args):
            call(builder, 'llvm.x86.sse.ldmxcsr', cgutils.alloca_once_value(builder, args[0]))
            return context.get_dummy_value()
        return numba.types.void(numba.types.uint32), codegen
    return numba.njit(lambda: stmxcsr()), numba.njit(lambda v: ldmxcsr(np.uint32(v)))

def set_flush_denormal(on: bool) -> bool:
    """Whether the package's recurrent loops flush denormal floats to zero (FTZ and DAZ; off by default, as in
    PyTorch). Returns True if the setting took (an x86-64 CPU), False otherwise (the loops then run as they are)."""
    global _flush_denormal
    _flush_denormal = bool(on) and _X86
    return _flush_denormal == bool(on)

@contextlib.contextmanager
def denormals_flushed():
    "With `set_flush_denormal(True)`: FTZ and DAZ in the calling thread inside the `with` block, as before after it."
    if not _flush_denormal:
        yield; return
    get, set_ = _mxcsr()
    before = int(get())
    set_(before | _FTZ_DAZ)
    try: yield
    finally: set_(before)

# %%
_a, _b = np.float32(1e-30), np.float32(1e-10)
assert 0 < _a * _b < np.finfo(np.float32).tiny                   # a denormal result, 1e-40
with denormals_flushed(): assert _a * _b > 0                       # off by default: nothing is flushed
if set_flush_denormal(True):
    with denormals_flushed(): test_eq(_a * _b, 0)                  # flushed inside the block ...
    assert _a * _b > 0                                             # ... and only there
test_eq(set_flush_denormal(False), True)

# %%
#| slow
import pathlib
_bench = next(p for p in (pathlib.Path('../benchmarks/threads.py'), pathlib.Path('benchmarks/threads.py')) if p.exists())
_r = subprocess.run([sys.executable, str(_bench)], capture_output=True, text=True)
print(_r.stdout); assert _r.returncode == 0, _r.stderr[-3000:]

# %% [markdown]
# ## Kernel backends: one house for every hot loop
#
# The hot loops (im2col convolution, pooling, BPTT) come in three
# implementations: a NumPy reference, a Numba CPU kernel and a Numba CUDA
# kernel. Every kernel module dispatches the same way, through the few
# functions of this section:
#
# * **Which implementation.** A kernel function takes `backend=` and asks
#   `resolve_backend`. `'auto'` means: the CUDA kernel for arrays in GPU memory
#   (CuPy), the Numba CPU kernel for host (NumPy) arrays. `'numpy'` runs the
#   reference on either, on request. `'numba'` on a device array is an error:
#   the CPU cannot read GPU memory.
# * **Where the arrays live.** `KernelArrays` is the one rule for a CUDA call:
#   its work arrays live in CuPy when a GPU answers (a host input is copied
#   over once), else in NumPy, which Numba's simulator takes as it is; and a
#   result goes back to the side its input came from, to the host for a NumPy
#   input.
# * **Compiling and launching.** CUDA kernels are built on first use
#   (`cuda_kernels`), so `numba.cuda` is imported only when a CUDA backend
#   runs, and kept by name. Every kernel runs one thread per element, in
#   blocks of `THREADS_PER_BLOCK` (`launch`).
# * **Per-element helpers written once.** A function of a few scalars (which
#   window reads this pixel, one step of a recurrent cell) is written as plain
#   Python and decorated with `per_element`: that compiles it for the CPU with
#   `njit(inline='always')`, so the loop that calls it is compiled as if the
#   body were written in place, and `device_twin` compiles the same source
#   with `cuda.jit(device=True)` for the CUDA kernels.

# %%
#| export
BACKENDS = ('numpy', 'numba', 'cuda')

def resolve_backend(x, backend: str = 'auto', who: str = '') -> str:
    """Which kernel implementation runs on data `x`: 'numpy' (the reference, host or device arrays), 'numba'
    (the CPU kernel, host arrays only) or 'cuda'. 'auto' is 'cuda' for a device array and 'numba' for a host array."""
    if backend == 'auto': return 'cuda' if on_device(x) else 'numba'
    if backend not in BACKENDS:
        raise ValueError(f"{who + ': ' if who else ''}backend must be 'auto' or one of {BACKENDS}, got {backend!r}")
    if backend == 'numba' and on_device(x):
        raise ValueError(f"{who + ': ' if who else ''}backend 'numba' runs on the CPU and needs a NumPy array, "
                         f"got a CuPy array")
    return backend

# %%
test_eq(get_array_module(np.zeros(2)), np)
test_eq(on_device(np.zeros(2)), False)
test_eq(resolve_backend(np.zeros(2)), 'numba')
test_eq(resolve_backend(np.zeros(2), 'numpy'), 'numpy')
test_eq(resolve_backend(np.zeros(2), 'cuda'), 'cuda')
test_fail(lambda: resolve_backend(np.zeros(2), 'tpu', 'im2col'), contains="im2col: backend must be 'auto' or one of")
test_eq(to_numpy([1, 2]), np.array([1, 2]))
test_fail(lambda: to_device(np.zeros(2), 'tpu'), contains="'cpu' or 'cuda'")

# %%
#| export
class KernelArrays:
    """Where the arrays of one kernel call live, for `backend` and an input `like`: `xp` is CuPy for 'cuda'
    when a GPU answers, else `like`'s own module (NumPy, which the CUDA simulator takes as it is).
    `put(a)` gives `a` as a contiguous `xp` array (copied only when it is not one already);
    `result(a)` gives an output back on `like`'s side: on the host when `like` is a host array."""
    def __init__(self, backend: str, like):
        self.host = not on_device(like)
        self.xp = (cupy_or_none() if backend == 'cuda' else None) or get_array_module(like)

    def put(self, a, dtype=None):
        return self.xp.ascontiguousarray(self.xp.asarray(a, dtype))

    def result(self, a):
        return to_numpy(a) if self.host else a

# %%
_ka = KernelArrays('cuda', np.zeros(2))        # no CuPy here: the simulator's NumPy arrays
_a = np.arange(6.).reshape(2, 3)
test_eq(_ka.xp, cupy_or_none() or np)
if _ka.xp is np:
    test_eq(_ka.put(_a) is _a, True)          # already contiguous and of its dtype: no copy
    test_eq(_ka.put(_a.T).flags.c_contiguous, True)
test_eq(type(_ka.result(_ka.put(_a))), np.ndarray)

# %%
#| export
_CUDA_KERNELS: dict = {}
THREADS_PER_BLOCK = 128

def cuda_kernels(name: str, build):
    """The CUDA kernels of `name` (whatever `build()` returns, e.g. a dict of `cuda.jit` kernels), built on the
    first call and kept. `build` imports `numba.cuda` into its own module, as a module global: the CUDA
    simulator swaps the global `cuda` of a kernel's module for its own. Numba then compiles each kernel once
    per argument types."""
    ks = _CUDA_KERNELS.get(name)
    if ks is None: ks = _CUDA_KERNELS[name] = build()
    return ks

def launch_config(n: int) -> tuple:
    "(blocks, threads per block) for one thread per element of `n`: blocks of `THREADS_PER_BLOCK`, one smaller block when n is less."
    tpb = max(1, min(int(n), THREADS_PER_BLOCK))
    return max(1, -(-int(n) // tpb)), tpb

def launch(kernel, n: int, *args):
    "Run a CUDA `kernel(*args)` with one thread per element of `n` (threads past `n` return at once)."
    blocks, tpb = launch_config(n)
    kernel[blocks, tpb](*args)

# %%
test_eq(launch_config(1000), (8, 128))
test_eq(launch_config(1024), (8, 128))
test_eq(launch_config(6), (1, 6))      # a small step: one block of six threads (the simulator runs each one)
test_eq(launch_config(0), (1, 1))
_built = []
test_eq(cuda_kernels('_test', lambda: _built.append(1) or 'kernels'), 'kernels')
test_eq(cuda_kernels('_test', lambda: _built.append(1) or 'other'), 'kernels')   # built once
test_eq(_built, [1])

# %%
#| export
def per_element(fn):
    """`fn`, a function of a few scalars written once, compiled for the CPU kernels as
    `njit(inline='always')`: Numba inlines it into the kernel that calls it, which is compiled (fast-math,
    error model) as if the body were written there. `device_twin` compiles the same source for CUDA.
    `fn` may use arithmetic and `math` only: a call to another compiled function would, in the CUDA twin,
    call CPU code."""
    from numba import njit
    return njit(inline='always')(fn)

def device_twin(f):
    "The CUDA device function (`cuda.jit(device=True)`) compiled from the source of the `per_element` function `f`."
    from numba import cuda
    return cuda.jit(device=True)(f.py_func)

# %%
@per_element
def _clamp_add(a, b, hi):
    s = a + b
    return s if s < hi else hi

import numba
@numba.njit
def _sum_clamped(xs, hi):
    t = 0.0
    for v in xs: t = _clamp_add(t, v, hi)
    return t

test_eq(_sum_clamped(np.array([1., 2., 3.]), 5.), 5.)

cuda = None   # numba.cuda, imported by the build below (a module global, as `cuda_kernels` asks)
def _build_clamp_kernels():
    global cuda
    from numba import cuda
    clamp = device_twin(_clamp_add)
    @cuda.jit
    def clamp_k(xs, out, hi):
        t = cuda.grid(1)
        if t < xs.shape[0]: out[t] = clamp(xs[t], 1.0, hi)
    return clamp_k

_xs, _out = np.array([0., 3., 9.]), np.zeros(3)
launch(cuda_kernels('_clamp', _build_clamp_kernels), 3, _xs, _out, 5.)
test_eq(_out, [1., 4., 5.])      # the same helper, now on the GPU (here: in the simulator)

# %% [markdown]
# ## Checking inputs
#
# A library that fails deep inside a matrix product with
# `shapes (32,784) and (10,128) not aligned` makes its user do the detective
# work. `check_array` fails early instead, and its message says who expected
# what. A `None` in the expected shape matches any size (the batch axis,
# usually).

# %%
#| export
def _fmt_shape(shape) -> str:
    return '(' + ', '.join('N' if s is None else str(s) for s in shape) + (',)' if len(shape) == 1 else ')')

def check_array(x, name: str = 'input', *, ndim: int | tuple | None = None, shape: tuple | None = None,
                kind: str | None = 'f', finite: bool = True, who: str = ''):
    """Validate an array argument and return it.

    * `ndim`: required rank (an int or a tuple of allowed ranks);
    * `shape`: required shape, `None` entries match any size, e.g. `(None, 784)`;
    * `kind`: required dtype kind(s): `'f'` float, `'i'`/`'u'` integers, `'iu'` either, `None` any;
    * `finite`: reject NaN and ±inf (floats only).

    Raises `ValueError` naming the expected and the actual value."""
    xp = get_array_module(x)
    if not hasattr(x, 'shape') or not hasattr(x, 'dtype'):
        x = np.asarray(x)
    pre = f"{who} expected {name}" if who else f"expected {name}"
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = ' or '.join(str(a) for a in allowed)
            extra = f" {_fmt_shape(shape)}" if shape is not None else ''
            raise ValueError(f"{pre} of rank {want}{extra}, got shape {tuple(x.shape)} (rank {x.ndim})")
    if shape is not None:
        if len(shape) != x.ndim or any(s is not None and s != d for s, d in zip(shape, x.shape)):
            raise ValueError(f"{pre} of shape {_fmt_shape(shape)}, got {tuple(x.shape)}")
    if kind is not None and x.dtype.kind not in kind and not (kind == 'f' and x.dtype.kind in 'iub'):
        raise ValueError(f"{pre} with dtype kind {kind!r}, got dtype {x.dtype}")
    if finite and x.dtype.kind == 'f' and not bool(xp.isfinite(x).all()):
        raise ValueError(f"{pre} to be finite, got {int((~xp.isfinite(x)).sum())} NaN/inf value(s)")
    return x

# %%
x = np.zeros((3, 5), np.float32)
test_eq(check_array(x, ndim=2, shape=(None, 5)) is x, True)
test_fail(lambda: check_array(x, 'x', shape=(None, 4), who='Dense'), contains='Dense expected x of shape (N, 4), got (3, 5)')
test_fail(lambda: check_array(x, ndim=4), contains='rank 4')
test_fail(lambda: check_array(np.array([1., np.nan])), contains='NaN')
test_fail(lambda: check_array(np.array(['a'])), contains='dtype')
check_array(np.arange(3), kind='iu')   # integer labels pass

# %% [markdown]
# ## References
#
# * N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002 (round-off in finite differences).
# * NumPy Enhancement Proposal 19, *Random number generator policy* (why `Generator` objects instead of a global seed).
# * CuPy documentation, *Writing CPU/GPU agnostic code* (`get_array_module`).
