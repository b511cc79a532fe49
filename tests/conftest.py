"""Shared pytest set-up: CUDA kernels run in Numba's simulator unless a GPU is present, plots never open windows."""
import os
from dl_from_scratch.core import simulate_cuda_without_gpu

os.environ.setdefault('MPLBACKEND', 'Agg')
simulate_cuda_without_gpu()
