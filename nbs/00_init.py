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
# in the environment wins.
#
# The same holds the other way round. Numba's parallel kernels run on GNU
# OpenMP threads, which spin after each kernel (`GOMP_SPINCOUNT`, 300,000
# rounds by default) and then take the cores the next matrix product needs.
# Importing the package sets `GOMP_SPINCOUNT=10000`, read once when Numba
# first loads OpenMP (again: a value already set wins). A LeNet-5 training step
# on 2 cores went from 14.1 ms to 10.4 ms (chapter 00, "Threads"). OpenMP is one
# library per process, so PyTorch imported in the same process gets the short
# spin too, and was slower with it in our runs (one LeNet-5 epoch: a median of
# 3.39 s with it against 2.95 s without, three runs each, single runs varying by
# about ±30 %): the benchmarks time PyTorch in a process of its own, without it
# (`ENV_SET_BY_PACKAGE` names what to drop). The version line is nbdev's:
# each export rewrites it from `settings.ini`. It stands in the exported code,
# not above it, so that the module's docstring stays the file's first
# statement, where Python looks for it.

# %%
#| default_exp __init__

# %%
#| export
__version__ = "0.1.0"       # rewritten by nbdev_export from settings.ini's `version`
import os as _os, sys as _sys
ENV_SET_BY_PACKAGE = {}      # name -> value, for the variables below that the user had not set
def _setdefault_env(name, value):
    if name not in _os.environ: _os.environ[name] = ENV_SET_BY_PACKAGE[name] = value
if 'numpy' not in _sys.modules: _setdefault_env('OPENBLAS_THREAD_TIMEOUT', '4')
_setdefault_env('GOMP_SPINCOUNT', '10000')

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
# GOMP_SPINCOUNT: set when absent, and recorded as set by the package; a user's value wins
code = "import os, dl_from_scratch as d; print(os.environ['GOMP_SPINCOUNT'], d.ENV_SET_BY_PACKAGE.get('GOMP_SPINCOUNT'))"
env = {k: v for k, v in __import__('os').environ.items() if k != 'GOMP_SPINCOUNT'}
assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env).stdout.split() == ['10000', '10000']
env['GOMP_SPINCOUNT'] = '5'
assert subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, env=env).stdout.split() == ['5', 'None']
