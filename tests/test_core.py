"Core conventions: the dtype policy accepts only the two dtypes the kernels are compiled for; the kernel backends' one rule."
import math
import numpy as np
import pytest
from dl_from_scratch import core


@pytest.fixture(autouse=True)
def float32_after():
    "Each test starts and ends at the default float32, whatever the code under test did."
    yield
    core._DTYPE = np.dtype(np.float32)


@pytest.mark.parametrize('dtype', [np.float16, 'float16', np.int32, np.complex64, 'nonsense'], ids=str)
def test_set_dtype_rejects_all_but_float32_and_float64(dtype):
    with pytest.raises(ValueError, match='set_dtype expected a floating dtype float32 or float64, got'):
        core.set_dtype(dtype)
    assert core.get_dtype() == np.float32                   # unchanged


@pytest.mark.parametrize('dtype', [np.float64, 'float64', np.dtype('float32'), float])
def test_set_dtype_accepts_float32_and_float64(dtype):
    with core.precision(dtype):
        assert core.get_dtype() in (np.float32, np.float64) and core.get_dtype() == np.dtype(dtype)
    assert core.get_dtype() == np.float32


def test_precision_float16_fails_before_entering_the_block():
    with pytest.raises(ValueError, match='float16'):
        with core.precision(np.float16):
            pytest.fail('the block must not run')
    assert core.get_dtype() == np.float32


# ---- the kernel backends: one rule for every kernel module ----

class _DeviceArray:
    "Stands in for a CuPy array: `on_device` knows an array only by the module its type comes from."
    __module__ = 'cupy._core.core'


def test_auto_backend_is_cuda_on_device_arrays_and_numba_on_host_arrays():
    assert core.resolve_backend(np.zeros(2)) == 'numba'
    assert core.resolve_backend(_DeviceArray()) == 'cuda'
    assert core.resolve_backend(_DeviceArray(), 'numpy') == 'numpy'       # the reference runs on either
    with pytest.raises(ValueError, match="im2col: backend 'numba' runs on the CPU and needs a NumPy array, got a CuPy"):
        core.resolve_backend(_DeviceArray(), 'numba', 'im2col')
    with pytest.raises(ValueError, match="lstm_forward: backend must be 'auto' or one of"):
        core.resolve_backend(np.zeros(2), 'gpu', 'lstm_forward')


@pytest.mark.parametrize('n, config', [(0, (1, 1)), (1, (1, 1)), (127, (1, 127)), (128, (1, 128)), (129, (2, 128)),
                                       (10_000, (79, 128))])
def test_launch_config_covers_every_element_once(n, config):
    blocks, tpb = core.launch_config(n)
    assert (blocks, tpb) == config
    assert blocks * tpb >= n and (blocks - 1) * tpb < max(n, 1)           # enough threads, no idle block


def test_kernel_arrays_give_host_results_for_host_inputs():
    ka = core.KernelArrays('cuda', np.zeros(3))
    a = np.arange(6.0).reshape(2, 3)
    assert not core.on_device(ka.result(ka.put(a)))
    np.testing.assert_array_equal(ka.result(ka.put(a.T)), a.T)
    assert ka.put(a.T).flags.c_contiguous
    assert core.KernelArrays('numba', a).xp is np


cuda = None   # set by the build below, as `cuda_kernels` asks of a kernel module


@core.per_element
def _hypot_clip(a, b, hi):
    r = math.sqrt(a * a + b * b)
    return r if r < hi else hi


def _build_hypot_kernels():
    global cuda
    from numba import cuda
    hypot = core.device_twin(_hypot_clip)

    @cuda.jit
    def hypot_k(a, b, out, hi):
        t = cuda.grid(1)
        if t < out.shape[0]: out[t] = hypot(a[t], b[t], hi)
    return hypot_k


def test_a_per_element_helper_gives_the_same_numbers_on_cpu_and_cuda():
    "One source, two targets: inlined into a Numba loop, and a CUDA device function (the simulator without a GPU)."
    from numba import njit

    @njit
    def cpu(a, b, out, hi):
        for t in range(out.shape[0]): out[t] = _hypot_clip(a[t], b[t], hi)

    r = np.random.default_rng(0)
    a, b = r.normal(size=300), r.normal(size=300)
    on_cpu, on_cuda = np.empty(300), np.empty(300)
    cpu(a, b, on_cpu, 2.0)
    k = core.cuda_kernels('test_core.hypot', _build_hypot_kernels)
    assert core.cuda_kernels('test_core.hypot', _build_hypot_kernels) is k            # built once
    core.launch(k, 300, a, b, on_cuda, 2.0)
    np.testing.assert_array_equal(on_cpu, np.minimum(np.sqrt(a * a + b * b), 2.0))
    np.testing.assert_allclose(on_cuda, on_cpu, rtol=1e-15)
