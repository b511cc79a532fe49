"""Shared pytest set-up: CUDA kernels run in Numba's simulator unless a GPU is present, plots never open windows."""
import os, shutil, subprocess

os.environ.setdefault('MPLBACKEND', 'Agg')

def _has_gpu():
    if shutil.which('nvidia-smi') is None: return False
    try: return subprocess.run(['nvidia-smi', '-L'], capture_output=True, timeout=10).returncode == 0
    except Exception: return False

if 'NUMBA_ENABLE_CUDASIM' not in os.environ and not _has_gpu():
    os.environ['NUMBA_ENABLE_CUDASIM'] = '1'
