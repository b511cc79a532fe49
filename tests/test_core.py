"Core conventions: the dtype policy accepts only the two dtypes the kernels are compiled for."
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
