# %% [markdown]
# # Regularization, initialization, normalization
#
# > How to start a deep net so that it trains, and how to keep it from memorising.
#
# ## Purpose
#
# Chapter 05 built MLPs that train. This chapter is about the three things
# that decide whether a *deep* one does, and whether what it learns carries
# over to data it has not seen:
#
# 1. **initialization**: the scale of the initial weights decides whether the
#    signal survives the trip through many layers (chapter 05's deep net
#    stalled at cost $\ln 2$ with $\times 0.01$ weights);
# 2. **regularization**: L2 / weight decay, dropout, max-norm and early
#    stopping trade a little training fit for better test accuracy;
# 3. **normalization**: batch norm and group norm re-centre and re-scale the
#    activations inside the net, which lets it train faster.
#
# The initialisers are exported to `dl_from_scratch.init`, the layers
# (`Dropout`, `BatchNorm`, `GroupNorm`) and penalties (`L1`, `L2`, `MaxNorm`)
# to `dl_from_scratch.layers`.

# %%
#| default_exp init

# %%
#| export
from __future__ import annotations
import math
import numpy as np
from dl_from_scratch.core import as_rng, get_dtype

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %% [markdown]
# ## Initialisers
#
# ### Derivation: keeping the variance of the signal constant
#
# Take one unit $z = \sum_{i=1}^{n_\text{in}} w_i x_i$ with independent,
# zero-mean $w_i$ and $x_i$. Then
#
# $$\operatorname{Var}(z) = n_\text{in}\,\operatorname{Var}(w)\,\operatorname{Var}(x).$$
#
# For the variance to stay the same from layer to layer we need
# $\operatorname{Var}(w) = 1/n_\text{in}$ (**LeCun**, 1998). The backward pass
# multiplies by $W^\top$, which asks for $1/n_\text{out}$; **Glorot & Bengio**
# (2010) compromise with $\operatorname{Var}(w) = 2/(n_\text{in}+n_\text{out})$.
# These hold for activations that are linear around 0 (tanh, and sigmoid up
# to its slope 1/4). ReLU zeroes half of its inputs, halving the second moment
# of its output, so **He et al.** (2015) double the variance:
# $\operatorname{Var}(w) = 2/n_\text{in}$.
#
# A uniform distribution on $[-a, a]$ has variance $a^2/3$, so the uniform
# variants use $a = \sqrt{3\operatorname{Var}(w)}$, e.g. Glorot-uniform
# $a = \sqrt{6/(n_\text{in}+n_\text{out})}$.
#
# The fan of a kernel: a dense kernel `(n_in, n_out)`; a convolution kernel
# `(KH, KW, C_in, C_out)` has $n_\text{in} = KH\cdot KW\cdot C_\text{in}$ and
# $n_\text{out} = KH\cdot KW\cdot C_\text{out}$ (Keras' convention). Source 003
# writes Xavier for tanh as $\sqrt{2/n^{[l-1]}}$; that is He's scale, and
# Xavier's is $\sqrt{1/n^{[l-1]}}$ (or Glorot's $\sqrt{2/(n_\text{in}+n_\text{out})}$).
#
# Every initialiser is a function `f(shape, rng=None, dtype=None) -> ndarray`.
# Note: Keras draws its `*_normal` initialisers from a *truncated* normal; we
# draw from the plain normal, as the source texts do (`randn * scale`).

# %%
#| export
def compute_fans(shape: tuple) -> tuple[int, int]:
    "`(fan_in, fan_out)` of a kernel: `(n_in, n_out)` for dense, `(KH, KW, C_in, C_out)` for conv."
    shape = tuple(shape)
    if len(shape) == 0: return 1, 1
    if len(shape) == 1: return shape[0], shape[0]
    if len(shape) == 2: return shape[0], shape[1]
    receptive = int(np.prod(shape[:-2]))
    return receptive * shape[-2], receptive * shape[-1]

def _dt(dtype): return np.dtype(get_dtype() if dtype is None else dtype)

def zeros(shape, rng=None, dtype=None):
    "All zeros (biases; fatal for weights: every unit stays the same)."
    return np.zeros(shape, _dt(dtype))

def ones(shape, rng=None, dtype=None):
    "All ones (BatchNorm's gamma)."
    return np.ones(shape, _dt(dtype))

def random_normal(shape, rng=None, dtype=None, stddev: float = 0.01):
    "`N(0, stddev^2)`; the default `stddev=0.01` is the `randn * 0.01` of the source texts."
    return (as_rng(rng).standard_normal(shape) * stddev).astype(_dt(dtype))

def _normal(shape, var, rng, dtype):
    return (as_rng(rng).standard_normal(shape) * math.sqrt(var)).astype(_dt(dtype))

def _uniform(shape, var, rng, dtype):
    a = math.sqrt(3.0 * var)
    return as_rng(rng).uniform(-a, a, size=shape).astype(_dt(dtype))

def glorot_uniform(shape, rng=None, dtype=None):
    "Glorot/Xavier uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))` (Keras' default kernel init)."
    fi, fo = compute_fans(shape); return _uniform(shape, 2.0 / (fi + fo), rng, dtype)

def glorot_normal(shape, rng=None, dtype=None):
    "Glorot/Xavier normal: `N(0, 2 / (fan_in + fan_out))`."
    fi, fo = compute_fans(shape); return _normal(shape, 2.0 / (fi + fo), rng, dtype)

def he_normal(shape, rng=None, dtype=None):
    "He/Kaiming normal: `N(0, 2 / fan_in)`, for ReLU nets."
    fi, _ = compute_fans(shape); return _normal(shape, 2.0 / fi, rng, dtype)

def he_uniform(shape, rng=None, dtype=None):
    "He/Kaiming uniform: `U(-a, a)`, `a = sqrt(6 / fan_in)`."
    fi, _ = compute_fans(shape); return _uniform(shape, 2.0 / fi, rng, dtype)

def lecun_normal(shape, rng=None, dtype=None):
    "LeCun normal: `N(0, 1 / fan_in)` (for tanh, and SELU)."
    fi, _ = compute_fans(shape); return _normal(shape, 1.0 / fi, rng, dtype)

def lecun_uniform(shape, rng=None, dtype=None):
    "LeCun uniform: `U(-a, a)`, `a = sqrt(3 / fan_in)`."
    fi, _ = compute_fans(shape); return _uniform(shape, 1.0 / fi, rng, dtype)

def orthogonal(shape, rng=None, dtype=None, gain: float = 1.0):
    "A (semi-)orthogonal matrix from the QR decomposition of a Gaussian one (recurrent kernels); shape `(..., n_out)`."
    rows, cols = int(np.prod(shape[:-1])), shape[-1]
    a = as_rng(rng).standard_normal((max(rows, cols), min(rows, cols)))
    q, r = np.linalg.qr(a)
    q = q * np.sign(np.diag(r))          # make the decomposition unique (uniform over orthogonal matrices)
    if rows < cols: q = q.T
    return (gain * q).reshape(shape).astype(_dt(dtype))

INITIALIZERS = {
    'zeros': zeros, 'ones': ones, 'random_normal': random_normal, 'small': random_normal,
    'glorot_uniform': glorot_uniform, 'glorot_normal': glorot_normal,
    'xavier_uniform': glorot_uniform, 'xavier_normal': glorot_normal,
    'he_normal': he_normal, 'he_uniform': he_uniform, 'kaiming_normal': he_normal, 'kaiming_uniform': he_uniform,
    'lecun_normal': lecun_normal, 'lecun_uniform': lecun_uniform, 'orthogonal': orthogonal,
}

def get_initializer(init):
    "An initialiser from its name (Keras names; 'xavier_*', 'kaiming_*', 'small' = x0.01 normal) or a callable."
    if callable(init): return init
    if isinstance(init, str) and init.lower() in INITIALIZERS: return INITIALIZERS[init.lower()]
    raise ValueError(f"unknown initializer {init!r}; expected a callable or one of {sorted(INITIALIZERS)}")

# %% [markdown]
# Tests: the sample variance matches the formula, fans follow Keras for
# convolution kernels, and the orthogonal matrix is orthogonal.

# %%
test_eq(compute_fans((784, 512)), (784, 512))
test_eq(compute_fans((3, 3, 16, 32)), (144, 288))
big = (400, 600)
for f, var in [(glorot_uniform, 2 / 1000), (glorot_normal, 2 / 1000), (he_normal, 2 / 400), (he_uniform, 2 / 400),
               (lecun_normal, 1 / 400), (lecun_uniform, 1 / 400), (random_normal, 1e-4)]:
    w = f(big, rng=0)
    test_eq(w.dtype, np.float32); test_close(w.var() / var, 1.0, eps=0.02); test_close(w.mean(), 0.0, eps=3e-3 * var ** .5 * 10)
test_eq(np.abs(glorot_uniform((10, 10), rng=0)).max() <= math.sqrt(6 / 20), True)
test_eq(he_normal((3, 4), rng=5), he_normal((3, 4), rng=5))
q = orthogonal((6, 4), rng=0, dtype=np.float64); test_close(q.T @ q, np.eye(4), eps=1e-12)
q = orthogonal((4, 6), rng=0, dtype=np.float64); test_close(q @ q.T, np.eye(4), eps=1e-12)
test_eq(get_initializer('Xavier_Uniform') is glorot_uniform, True)
test_fail(lambda: get_initializer('gaussian'), contains='unknown initializer')
test_eq(zeros((2, 3), dtype=np.float64).dtype, np.float64)
