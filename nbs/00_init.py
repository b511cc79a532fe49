# %% [markdown]
# # The package's first lines
#
# > What runs when any part of `dl_from_scratch` is imported.
#
# Importing any module of the package first runs `dl_from_scratch/__init__.py`,
# which this notebook writes. It does one thing, before any module of the
# package imports NumPy: it asks OpenBLAS (NumPy's matrix products) to put its
# idle threads to sleep at once after each product, instead of letting them
# spin for about a tenth of a second. Spinning threads take the cores that the
# parallel Numba kernel running next needs; on this book's 2-core machine they
# made a LeNet-5 epoch three times slower (chapter 00, "Threads", has the
# measurements). OpenBLAS reads `OPENBLAS_THREAD_TIMEOUT` once, when NumPy is
# loaded, so this can only work when NumPy is not loaded yet; a value already
# in the environment wins. The version line is nbdev's, taken from
# `settings.ini`.

# %%
#| default_exp __init__

# %%
#| export
import os as _os, sys as _sys
if 'numpy' not in _sys.modules:
    _os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')

# %%
import subprocess, sys
# in a fresh interpreter, importing a module of the package before NumPy sets it
code = "import os; os.environ.pop('OPENBLAS_THREAD_TIMEOUT', None); import dl_from_scratch.model, numpy; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
env = {k: v for k, v in __import__('os').environ.items() if k != 'OPENBLAS_THREAD_TIMEOUT'}
out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env).stdout.strip()
assert out == '4', out
# ... and leaves the environment alone when NumPy came first
code = "import numpy, os; import dl_from_scratch.model; print(os.environ.get('OPENBLAS_THREAD_TIMEOUT'))"
out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env).stdout.strip()
assert out == 'None', out
