# %% [markdown]
# # Regularization, initialization, normalization
#
# > How to start a deep net so that it trains (the weight initialisers, from the variance of each layer's outputs), and how to keep it from memorising (penalties, dropout, batch normalisation, early stopping).
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
from dl_from_scratch.layers import Layer, Activation, _check_input, _who, _keep_mask
from dl_from_scratch.core import get_array_module

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

def variance_scaling(shape, rng=None, dtype=None, scale: float = 1.0, mode: str = 'fan_in',
                     distribution: str = 'normal'):
    """Keras' `VarianceScaling`, the one rule behind Glorot, He and LeCun: weights of `shape` with
    variance `scale / n`, `n` = fan_in, fan_out or their mean (`mode` 'fan_in' | 'fan_out' | 'fan_avg'),
    drawn from `N(0, var)` or from `U(-a, a)` with `a = sqrt(3 var)` (`distribution` 'normal' | 'uniform')."""
    fi, fo = compute_fans(shape)
    modes = {'fan_in': fi, 'fan_out': fo, 'fan_avg': (fi + fo) / 2}
    if mode not in modes or distribution not in ('normal', 'uniform'):
        raise ValueError(f"variance_scaling expected mode in {tuple(modes)} and distribution 'normal' | 'uniform', "
                         f"got {mode!r}, {distribution!r}")
    var, g = scale / modes[mode], as_rng(rng)
    if distribution == 'normal': w = g.standard_normal(shape) * math.sqrt(var)
    else: w = g.uniform(-math.sqrt(3.0 * var), math.sqrt(3.0 * var), size=shape)
    return w.astype(_dt(dtype))

def glorot_uniform(shape, rng=None, dtype=None):
    "Glorot/Xavier uniform: `U(-a, a)`, `a = sqrt(6 / (fan_in + fan_out))` (Keras' default kernel init)."
    return variance_scaling(shape, rng, dtype, 1.0, 'fan_avg', 'uniform')

def glorot_normal(shape, rng=None, dtype=None):
    "Glorot/Xavier normal: `N(0, 2 / (fan_in + fan_out))`."
    return variance_scaling(shape, rng, dtype, 1.0, 'fan_avg', 'normal')

def he_normal(shape, rng=None, dtype=None):
    "He/Kaiming normal: `N(0, 2 / fan_in)`, for ReLU nets."
    return variance_scaling(shape, rng, dtype, 2.0, 'fan_in', 'normal')

def he_uniform(shape, rng=None, dtype=None):
    "He/Kaiming uniform: `U(-a, a)`, `a = sqrt(6 / fan_in)`."
    return variance_scaling(shape, rng, dtype, 2.0, 'fan_in', 'uniform')

def lecun_normal(shape, rng=None, dtype=None):
    "LeCun normal: `N(0, 1 / fan_in)` (for tanh, and SELU)."
    return variance_scaling(shape, rng, dtype, 1.0, 'fan_in', 'normal')

def lecun_uniform(shape, rng=None, dtype=None):
    "LeCun uniform: `U(-a, a)`, `a = sqrt(3 / fan_in)`."
    return variance_scaling(shape, rng, dtype, 1.0, 'fan_in', 'uniform')

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
test_fail(lambda: variance_scaling((3, 4), mode='fan_sum'), contains="got 'fan_sum'")
test_close(variance_scaling(big, rng=0, scale=3.0, mode='fan_out', distribution='uniform').var() / (3 / 600), 1.0, eps=0.02)
test_eq(zeros((2, 3), dtype=np.float64).dtype, np.float64)

# %% [markdown]
# ## Penalties: L2 (weight decay), L1, and the max-norm constraint
#
# ### L2 and weight decay
#
# Adding $R(W) = \lambda \sum_{ij} W_{ij}^2$ to the loss adds $2\lambda W$ to
# the gradient. One SGD step with learning rate $\alpha$ becomes
#
# $$W \leftarrow W - \alpha(\nabla_W \mathcal{L} + 2\lambda W) = (1 - 2\alpha\lambda)\,W - \alpha \nabla_W \mathcal{L},$$
#
# so every step first shrinks ("decays") the weights by a constant factor:
# for plain SGD, L2 regularisation *is* weight decay. (For adaptive
# optimizers like Adam the two differ, because Adam rescales the penalty's
# gradient too; decoupled weight decay, AdamW, applies the shrink directly.)
# We follow Keras' convention, $R = \lambda\sum W^2$ without a $\tfrac12$;
# the deeplearning.ai course writes $\tfrac{\lambda}{2m}\|W\|_F^2$, which is
# Keras' $\lambda_\text{Keras} = \lambda / (2m)$. Only kernels are
# penalised, not biases. L1, $\lambda\sum|W_{ij}|$, with subgradient
# $\lambda\,\operatorname{sign}(W)$, pushes weights to exactly zero.
#
# ### Max-norm
#
# Instead of penalising large weights, *forbid* them: after every update,
# rescale each unit's incoming weight vector $w_{:,u}$ to norm at most $c$
# (Srebro & Shraibman 2005; used with dropout by Srivastava et al. 2014 and
# by source 000's CIFAR-10 net, $c = 3$). It is a projection onto a convex
# set, applied by the model after each optimizer step.

# %%
#| export layers
class Regularizer:
    "A penalty `R(w) -> float` on a weight array, with `grad(w) -> dR/dw` (shape of `w`)."
    def __call__(self, w) -> float: raise NotImplementedError
    def grad(self, w): raise NotImplementedError
    def get_config(self) -> dict: return dict(vars(self))
    def __repr__(self): return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in vars(self).items())})"

class L2(Regularizer):
    "`l2 * sum(w**2)` (Keras' convention, no 1/2); gradient `2 * l2 * w`."
    def __init__(self, l2: float = 0.01): self.l2 = float(l2)
    def __call__(self, w): return self.l2 * float((w * w).sum())
    def grad(self, w): return (2 * self.l2) * w

class L1(Regularizer):
    "`l1 * sum(|w|)`; subgradient `l1 * sign(w)`."
    def __init__(self, l1: float = 0.01): self.l1 = float(l1)
    def __call__(self, w): return self.l1 * float(get_array_module(w).abs(w).sum())
    def grad(self, w): return self.l1 * get_array_module(w).sign(w)

class L1L2(Regularizer):
    "`l1 * sum(|w|) + l2 * sum(w**2)` (elastic net)."
    def __init__(self, l1: float = 0.0, l2: float = 0.0): self.l1, self.l2 = float(l1), float(l2)
    def __call__(self, w): return L1(self.l1)(w) + L2(self.l2)(w)
    def grad(self, w): return L1(self.l1).grad(w) + L2(self.l2).grad(w)

def get_regularizer(reg) -> Regularizer:
    "A `Regularizer` from 'l1', 'l2', 'l1_l2' (strength 0.01, as Keras) or an object with `__call__` and `grad`."
    if isinstance(reg, str):
        table = {'l1': L1, 'l2': L2, 'l1_l2': lambda: L1L2(0.01, 0.01)}
        if reg.lower() in table: return table[reg.lower()]()
    elif callable(reg) and hasattr(reg, 'grad'): return reg
    raise ValueError(f"unknown regularizer {reg!r}; expected 'l1', 'l2', 'l1_l2' or an object with __call__ and grad")

class Constraint:
    "A projection `w -> w'` applied after each optimizer step."
    def __call__(self, w): raise NotImplementedError
    def get_config(self) -> dict: return dict(vars(self))
    def __repr__(self): return f"{type(self).__name__}({', '.join(f'{k}={v}' for k, v in vars(self).items())})"

class MaxNorm(Constraint):
    """Rescale so that the L2 norm along `axis` is at most `max_value`. For a Dense kernel
    `(D, U)`, `axis=0` bounds the incoming weight vector of every unit (Keras' default)."""
    def __init__(self, max_value: float = 2.0, axis=0): self.max_value, self.axis = float(max_value), axis
    def __call__(self, w):
        xp = get_array_module(w)
        norms = xp.sqrt((w * w).sum(axis=self.axis, keepdims=True))
        return w * (xp.clip(norms, 0, self.max_value) / (norms + 1e-7))

def get_constraint(c) -> Constraint:
    "A `Constraint` from 'max_norm' (max 2, as Keras) or a callable `w -> w'`."
    if isinstance(c, str) and c.lower() in ('max_norm', 'maxnorm'): return MaxNorm()
    if callable(c): return c
    raise ValueError(f"unknown constraint {c!r}; expected 'max_norm' or a callable w -> w'")

# %%
from dl_from_scratch.layers import L1, L2, L1L2, MaxNorm, get_regularizer, Dense
from dl_from_scratch.gradcheck import check_grad
from dl_from_scratch.core import precision
w = np.random.default_rng(0).normal(size=(4, 3))
for r in [L2(0.3), L1L2(0.1, 0.2)]:
    assert check_grad(r, r.grad, w + 0.01) < 1e-8, r
test_close(L2(0.5)(np.array([1., 2.])), 2.5); test_close(L1(0.5)(np.array([1., -2.])), 1.5)
wc = MaxNorm(1.0)(w * 10); test_close(np.linalg.norm(wc, axis=0), np.ones(3), eps=1e-5)
small = w * 1e-3; test_close(MaxNorm(1.0)(small), small, eps=1e-6)       # inside the ball: unchanged (up to the 1e-7 guard)
test_fail(lambda: get_regularizer('l3'), contains='unknown regularizer')

# %% [markdown]
# For plain SGD, L2 and weight decay are the same update. A model with
# `kernel_regularizer=L2(λ)` trained one step must equal the hand-written
# $(1-2\alpha\lambda)W - \alpha\nabla_W\mathcal{L}$; and the max-norm layer's
# weights never leave the ball.

# %%
from dl_from_scratch.model import Sequential
from dl_from_scratch.optim import SGD
from dl_from_scratch.losses import SparseCategoricalCrossentropy
rng = np.random.default_rng(1)
xb, yb = rng.normal(size=(8, 5)).astype(np.float32), rng.integers(0, 3, 8)
lam, lr = 0.1, 0.5
m0 = Sequential([Dense(3, rng=0)], input_shape=(5,)); m0.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(lr))
W0 = m0.layers[0].params['W'].copy()
m0.forward(xb, training=True); _, dy = m0.loss.value_and_grad(m0.forward(xb, True), yb); m0.backward(dy)
gW = m0.layers[0].grads['W'].copy()
m1 = Sequential([Dense(3, rng=0, kernel_regularizer=L2(lam))], input_shape=(5,)); m1.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(lr))
m1.fit(xb, yb, epochs=1, batch_size=8, shuffle=False, verbose=0)
test_close(m1.layers[0].params['W'], (1 - 2 * lr * lam) * W0 - lr * gW, eps=1e-6)
m2 = Sequential([Dense(3, rng=0, kernel_constraint=MaxNorm(0.1))], input_shape=(5,)); m2.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(lr))
m2.fit(xb, yb, epochs=3, batch_size=4, verbose=0)
assert (np.linalg.norm(m2.layers[0].params['W'], axis=0) <= 0.1 + 1e-6).all()

# %% [markdown]
# ## Inverted dropout
#
# During training, each unit's output is kept with probability $p = 1 -
# \text{rate}$ and zeroed otherwise (Srivastava et al. 2014). *Inverted*
# dropout divides the kept outputs by $p$ at training time,
#
# $$y = \frac{m \odot x}{p}, \quad m_i \sim \text{Bernoulli}(p), \qquad \mathbb{E}[y] = x,$$
#
# so that at test time the layer is the identity, with nothing to rescale.
# The backward pass uses the same mask: $\bar x = m\odot\bar y / p$. The mask
# comes from the layer's own `self.rng`, so a run is reproducible and the
# gradient check (which reseeds `rng` before every forward pass) sees the same
# mask each time.

# %%
#| export layers
class Dropout(Layer):
    """Inverted dropout: in training, zero each element with probability `rate` and scale the rest
    by `1/(1-rate)`; the identity at inference. Any shape `(N, ...)`; the mask comes from `self.rng`."""
    def __init__(self, rate: float, rng=None, name=None):
        super().__init__(name)
        if not 0.0 <= float(rate) < 1.0: raise ValueError(f"Dropout expected 0 <= rate < 1, got {rate}")
        self.rate, self.rng = float(rate), as_rng(rng)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        if not training or self.rate == 0.0:
            self.cache = None
            return x
        mask = _keep_mask(self.rng, x.shape, self.rate, x.dtype, get_array_module(x))   # chapter 05's draw
        self.cache = mask
        return x * mask

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        return dy if self.cache is None else dy * self.cache

# %%
from dl_from_scratch.layers import Dropout
from dl_from_scratch.gradcheck import check_layer_grad
x = np.ones((2000, 50), np.float32)
dr = Dropout(0.3, rng=0); y = dr(x, training=True)
test_close((y == 0).mean(), 0.3, eps=0.01)                      # the dropped fraction
test_close(y.mean(), 1.0, eps=0.01)                             # expectation kept: inverted scaling
test_eq(set(np.unique(y)), {0.0, np.float32(1 / 0.7)})
test_eq(dr(x, training=False) is x, True)                       # identity at test time
test_eq(Dropout(0.3, rng=5)(x, training=True), Dropout(0.3, rng=5)(x, training=True))   # fixed rng, same mask
test_fail(lambda: Dropout(1.0), contains='0 <= rate < 1')
with precision(np.float64):
    errs = check_layer_grad(Dropout(0.5, rng=3), np.random.default_rng(0).normal(size=(6, 7)))
print('Dropout gradient check:', errs); assert max(errs.values()) < 1e-6

# %% [markdown]
# ## Batch normalization
#
# Ioffe & Szegedy (2015) normalise each feature over the batch, then let the
# net re-scale it:
#
# $$\mu = \frac1M\sum_{i} x_i,\quad \sigma^2 = \frac1M\sum_i (x_i-\mu)^2,\quad
# \hat x_i = \frac{x_i-\mu}{\sqrt{\sigma^2+\epsilon}},\quad y_i = \gamma\hat x_i + \beta .$$
#
# For a dense input `(N, D)` the statistics run over the $M=N$ rows, per
# feature; for an image batch `(N, H, W, C)` ("spatial" batch norm) over the
# $M = NHW$ positions, per channel. In NHWC both cases are "every axis but
# the last", which is why one class serves both. At inference there is no
# batch to average, so the layer uses running averages kept during training,
#
# $$\mu_\text{run} \leftarrow m\,\mu_\text{run} + (1-m)\,\mu, \qquad \sigma^2_\text{run} \leftarrow m\,\sigma^2_\text{run} + (1-m)\,\sigma^2,$$
#
# with momentum $m = 0.9$ (CS231n's and source 001's value; Keras uses 0.99).
# An average needs $0 \le m \le 1$: with $m = 2$ the running variance
# $2\sigma^2_\text{run} - \sigma^2$ can turn negative, so the layer refuses
# any other momentum. A training batch must not be empty (its mean is $0/0$),
# and one NaN or infinity in a batch would enter the running averages and
# stay there for good: the layer checks the batch's $C$ means and variances
# (a cheap test, as they are only $C$ numbers) and raises
# `FloatingPointError`, as `fit` does for a diverging loss, before it
# updates them.
#
# **Backward.** $\hat x$ depends on every $x_i$ of the batch through $\mu$
# and $\sigma$. With $\bar{\hat x} = \gamma\bar y$ and $s = (\sigma^2+\epsilon)^{-1/2}$,
# summing the three paths and simplifying gives the compact form
#
# $$\bar\beta = \sum_i \bar y_i, \qquad \bar\gamma = \sum_i \bar y_i\hat x_i, \qquad
# \bar x_i = \frac{s}{M}\Big(M\bar{\hat x}_i - \sum_j \bar{\hat x}_j - \hat x_i \sum_j \bar{\hat x}_j \hat x_j\Big),$$
#
# the "alt" backward of CS231n: the gradient is $\bar{\hat x}$ with its mean
# and its component along $\hat x$ removed, scaled by $s$. In inference mode
# the layer is a fixed affine map and $\bar x = \gamma s_\text{run}\bar y$.
#
# The running averages are *state*: saved with the model and counted by
# `summary` as non-trainable parameters, as Keras does (4C parameters, 2C
# trainable).

# %%
#| export layers
def _colsum(a):
    """Column sums of a contiguous `(M, C)` array -> `(C,)`. Numpy's axis-0 sum of a narrow array
    (C = 16) walks rows of 16 numbers and is ~10x slower than summing a wide `(M/k, k*C)` view
    (then the k partial rows); the two-level sum also rounds less. BLAS `ones @ a` is as fast but
    its thread wake-up sometimes costs milliseconds."""
    M, C = a.shape
    k = 1
    while k < 256 and M % (2 * k) == 0: k *= 2
    return a.reshape(M // k, k * C).sum(axis=0).reshape(k, C).sum(axis=0)

class BatchNorm(Layer):
    """Batch normalization over every axis but the last: dense `(N, D)` or spatial NHWC `(N, H, W, C)`.
    `gamma`, `beta` `(C,)` are trained; `moving_mean`, `moving_var` `(C,)` are updated in training
    with `momentum` (in [0, 1]) and used at inference. A training batch must be non-empty and finite: an empty
    one raises `ValueError`, a non-finite one `FloatingPointError`, before the running statistics change.
    `gamma_regularizer`, `beta_regularizer`, `gamma_constraint`, `beta_constraint`: as Keras's."""
    def __init__(self, momentum: float = 0.9, eps: float = 1e-5, gamma_regularizer=None, beta_regularizer=None,
                 gamma_constraint=None, beta_constraint=None, name=None):
        super().__init__(name)
        if not 0.0 <= float(momentum) <= 1.0: raise ValueError(f"BatchNorm expected momentum in [0, 1], got {momentum}")
        self.momentum, self.eps = float(momentum), float(eps)
        self.options = {'gamma': (gamma_regularizer, gamma_constraint), 'beta': (beta_regularizer, beta_constraint)}

    def build(self, input_shape):
        super().build(input_shape)
        C = self.input_shape[-1]
        for k, init in (('gamma', 'ones'), ('beta', 'zeros')): self.add_weight(k, (C,), init, *self.options[k])
        self.add_weight('moving_mean', (C,), 'zeros', trainable=False)
        self.add_weight('moving_var', (C,), 'ones', trainable=False)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        xp, C = get_array_module(x), x.shape[-1]
        x2 = x.reshape(-1, C)                        # contiguous (M, C): per-channel sums are column sums
        if training:
            who = _who(self)
            if x2.shape[0] == 0:
                raise ValueError(f"{who} expected a non-empty batch in training, got input shape {tuple(x.shape)}")
            mu = _colsum(x2) / x2.shape[0]
            xhat = x2 - mu
            buf = xp.multiply(xhat, xhat)
            var = _colsum(buf) / x2.shape[0]
            if not bool(xp.isfinite(mu).all() and xp.isfinite(var).all()):   # C numbers: a cheap test
                raise FloatingPointError(f"{who} got a batch of input shape {tuple(x.shape)} whose statistics are not "
                                         "finite (NaN or inf in the input); its running statistics are unchanged")
            m = self.momentum
            self.state['moving_mean'][...] = m * self.state['moving_mean'] + (1 - m) * mu
            self.state['moving_var'][...] = m * self.state['moving_var'] + (1 - m) * var
        else:
            mu, var = self.state['moving_mean'], self.state['moving_var']
            xhat = x2 - mu
            buf = xp.empty_like(xhat)
        s = 1.0 / xp.sqrt(var + self.eps)
        xhat *= s                                    # in place: x - mu becomes xhat
        self.cache = (xhat, s, training)
        y = xp.multiply(xhat, self.params['gamma'], out=buf)   # reuse the squares' buffer
        y += self.params['beta']
        return y.reshape(x.shape)

    def backward(self, dy, need_dx: bool = True):
        xhat, s, training = self.cache
        xp, C = get_array_module(dy), dy.shape[-1]
        dy2 = dy.reshape(-1, C)
        M = dy2.shape[0]
        t = xp.multiply(dy2, xhat)
        self.grads['beta'] = _colsum(dy2)
        self.grads['gamma'] = _colsum(t)
        if not need_dx: return None
        gs = self.params['gamma'] * s
        if not training: return xp.multiply(dy2, gs, out=t).reshape(dy.shape)
        # dx = γs/M (M dy − Σdy − x̂ Σ(dy x̂)), since Σ dx̂ = γ dβ and Σ dx̂ x̂ = γ dγ: one pass, one array
        xp.multiply(xhat, self.grads['gamma'] / M, out=t)
        xp.subtract(dy2, t, out=t)
        t -= self.grads['beta'] / M
        t *= gs
        return t.reshape(dy.shape)

BatchNormalization = BatchNorm   # Keras' name

# %% [markdown]
# ## Group normalization
#
# Batch norm's statistics get noisy when the batch is small. Wu & He (2018)
# normalise each *example* instead, over groups of channels: split the $C$
# channels into $G$ groups and compute $\mu, \sigma^2$ over the positions and
# the $C/G$ channels of each group, separately for every example. $G=1$ is
# layer norm, $G=C$ instance norm. $\gamma, \beta$ stay per channel, and
# there are no running averages: training and inference compute the same
# thing. The backward pass is batch norm's formula with $M = HW\,C/G$ and the
# sums taken per (example, group). $\epsilon = 10^{-5}$, as in source 001.

# %%
#| export layers
class GroupNorm(Layer):
    """Group normalization of `(N, ..., C)` (NHWC images or `(N, C)`): statistics per example over
    the positions and the `C/groups` channels of each group. `gamma`, `beta` `(C,)`, with optional
    regularizers and constraints as in `BatchNorm`."""
    def __init__(self, groups: int, eps: float = 1e-5, gamma_regularizer=None, beta_regularizer=None,
                 gamma_constraint=None, beta_constraint=None, name=None):
        super().__init__(name)
        self.groups, self.eps = int(groups), float(eps)
        self.options = {'gamma': (gamma_regularizer, gamma_constraint), 'beta': (beta_regularizer, beta_constraint)}

    def build(self, input_shape):
        C = int(input_shape[-1])
        if self.groups < 1 or C % self.groups:
            raise ValueError(f"GroupNorm expected the channel count to be a multiple of groups={self.groups}, got C={C}")
        super().build(input_shape)
        for k, init in (('gamma', 'ones'), ('beta', 'zeros')): self.add_weight(k, (C,), init, *self.options[k])

    def _grouped(self, x):
        "View `(N, ..., C)` as `(N, ..., G, C/G)`; return it and the axes a group's statistics run over."
        xg = x.reshape(*x.shape[:-1], self.groups, x.shape[-1] // self.groups)
        return xg, tuple(range(1, xg.ndim - 2)) + (xg.ndim - 1,)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        xp = get_array_module(x)
        xg, axes = self._grouped(x)
        mu, var = xg.mean(axis=axes, keepdims=True), xg.var(axis=axes, keepdims=True)
        s = 1.0 / xp.sqrt(var + self.eps)
        xhat = ((xg - mu) * s).reshape(x.shape)
        self.cache = (xhat, s)
        return self.params['gamma'] * xhat + self.params['beta']

    def backward(self, dy, need_dx: bool = True):
        xhat, s = self.cache
        red = tuple(range(dy.ndim - 1))
        self.grads['beta'] = dy.sum(axis=red)
        self.grads['gamma'] = (dy * xhat).sum(axis=red)
        if not need_dx: return None
        dxh, axes = self._grouped(dy * self.params['gamma'])
        xh, _ = self._grouped(xhat)
        M = xh.size // (xh.shape[0] * self.groups)
        dx = (s / M) * (M * dxh - dxh.sum(axis=axes, keepdims=True) - xh * (dxh * xh).sum(axis=axes, keepdims=True))
        return dx.reshape(dy.shape)

# %% [markdown]
# ### Tests: the CS231n fixtures
#
# Source 001 reproduces CS231n's checks of spatial batch norm and group
# norm. We run the same fixtures with the same draws: each check starts from
# `np.random.seed(231)` and draws its arrays in CS231n's order and NCHW shapes
# (`(N, C, H, W) = (2, 3, 4, 5)`), which we transpose to our NHWC. So the
# statistics before and after normalisation are the report's own numbers,
# and so is the test-time check after 50 training passes, once our running
# variance starts where CS231n's does, at 0 (ours starts at 1, as Keras's
# does). The gradient checks use CS231n's measure as well: central
# differences of the output against an upstream gradient `dout`
# (`eval_numerical_gradient_array`, $h = 10^{-5}$) and the largest
# elementwise relative error $|a - n| / \max(10^{-8}, |a| + |n|)$.

# %%
from dl_from_scratch.layers import BatchNorm, GroupNorm

def eval_numerical_gradient_array(f, x, df, h=1e-5):
    "CS231n's check: the gradient of sum(f(x) * df) w.r.t. the array x by central differences, x changed in place."
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h; pos = f(x).copy()
        x[i] = old - h; neg = f(x).copy()
        x[i] = old
        grad[i] = np.sum((pos - neg) * df) / (2 * h)
    return grad

def max_rel_error(a, n):
    "CS231n's `rel_error`: the largest elementwise |a - n| / max(1e-8, |a| + |n|)."
    return float(np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n))))

def cs231n_check(layer, x, dout):
    "Errors (dx, dgamma, dbeta) of the layer's backward against CS231n's numerical gradients, in training mode."
    f = lambda _: layer(x, training=True)
    num = [eval_numerical_gradient_array(f, a, dout) for a in (x, layer.params['gamma'], layer.params['beta'])]
    layer(x, training=True); dx = layer.backward(dout)
    return [max_rel_error(a, n) for a, n in zip((dx, layer.grads['gamma'], layer.grads['beta']), num)]

nhwc = lambda a: np.ascontiguousarray(a.transpose(0, 2, 3, 1))     # CS231n's (N, C, H, W) -> our (N, H, W, C)
with precision(np.float64):
    np.random.seed(231)
    x = 4 * np.random.randn(2, 3, 4, 5) + 10
    bn = BatchNorm(); y = bn(nhwc(x), training=True)
    print('spatial BN, before: means', x.mean((0, 2, 3)), 'stds', x.std((0, 2, 3)))
    print('after (γ=1, β=0): means', y.mean((0, 1, 2)), 'stds', y.std((0, 1, 2)))
    test_close(y.mean((0, 1, 2)), np.zeros(3), eps=1e-12); test_close(y.std((0, 1, 2)), np.ones(3), eps=1e-5)
    test_close(y.std((0, 1, 2)), [0.99999962, 0.99999951, 0.9999996], eps=1e-8)               # the report's stds
    bn.params['gamma'][:] = [3, 4, 5]; bn.params['beta'][:] = [6, 7, 8]; y = bn(nhwc(x), training=True)
    print('after (γ=[3,4,5], β=[6,7,8]): means', y.mean((0, 1, 2)), 'stds', y.std((0, 1, 2)))
    test_close(y.mean((0, 1, 2)), [6, 7, 8], eps=1e-12); test_close(y.std((0, 1, 2)), [2.99999885, 3.99999804, 4.99999798], eps=1e-8)

    np.random.seed(231)
    bn = BatchNorm(); bn.build((11, 12, 4)); bn.state['moving_var'][:] = 0     # CS231n's running variance starts at 0
    for _ in range(50): bn(nhwc(2.3 * np.random.randn(10, 4, 11, 12) + 13), training=True)
    y = bn(nhwc(2.3 * np.random.randn(10, 4, 11, 12) + 13), training=False)
    print('test time after 50 training passes: means', y.mean((0, 1, 2)), 'stds', y.std((0, 1, 2)))
    test_close(y.mean((0, 1, 2)), [-0.08034406, 0.07562881, 0.05716371, 0.04378383], eps=1e-8)
    test_close(y.std((0, 1, 2)), [0.96718744, 1.0299714, 1.02887624, 1.00585577], eps=1e-8)

    np.random.seed(231)
    x = 5 * np.random.randn(2, 3, 4, 5) + 12
    gamma, beta, dout = np.random.randn(3), np.random.randn(3), np.random.randn(2, 3, 4, 5)
    bn = BatchNorm(); bn.build((4, 5, 3)); bn.params['gamma'][:] = gamma; bn.params['beta'][:] = beta
    e_bn = cs231n_check(bn, nhwc(x), nhwc(dout))

    np.random.seed(231)
    x = 4 * np.random.randn(2, 6, 4, 5) + 10
    gn = GroupNorm(2); y = gn(nhwc(x))
    groups = lambda a: a.reshape(2 * 2, -1)                    # CS231n's (N*G, C/G*H*W) view of NCHW
    print('GroupNorm(G=2), before: means', groups(x).mean(1), 'stds', groups(x).std(1))
    y_g = groups(y.transpose(0, 3, 1, 2))
    print('after: means', y_g.mean(1), 'stds', y_g.std(1))
    test_close(y_g.std(1), [0.99999963, 0.99999948, 0.99999973, 0.99999968], eps=1e-8)

    np.random.seed(231)
    x = 5 * np.random.randn(2, 6, 4, 5) + 12
    gamma, beta, dout = np.random.randn(1, 6, 1, 1), np.random.randn(1, 6, 1, 1), np.random.randn(2, 6, 4, 5)
    gn = GroupNorm(2); gn.build((4, 5, 6)); gn.params['gamma'][:] = gamma.ravel(); gn.params['beta'][:] = beta.ravel()
    e_gn = cs231n_check(gn, nhwc(x), nhwc(dout))
print(f"{'gradient check':22}{'source 001':>14}{'ours':>12}")
for lab, src, ours in [('spatial BN dx', 3.083846820796372e-07, e_bn[0]), ('spatial BN dgamma', 7.09738489671469e-12, e_bn[1]),
                       ('spatial BN dbeta', 3.275608725278405e-12, e_bn[2]), ('GN dx', 6.34590431845254e-08, e_gn[0]),
                       ('GN dgamma', 1.0546047434202244e-11, e_gn[1]), ('GN dbeta', 3.810857316122484e-12, e_gn[2])]:
    print(f'{lab:22}{src:14.3e}{ours:12.3e}')
    assert ours < 1e-6

# %% [markdown]
# Every statistic matches the report's to the eight digits it prints,
# except the means after normalisation, which are round-off of order
# $10^{-16}$ and differ with the order of the float operations. The
# gradient-check errors agree in magnitude; batch norm's $d\gamma$ and
# $d\beta$ errors agree to three digits, the others less closely. Each is
# the largest relative error over all entries, and that is mostly the
# round-off of $f(x+h) - f(x-h)$ divided by $2h$, which depends on how each
# implementation orders its sums. All sit far below the $10^{-6}$ threshold.

# %% [markdown]
# And the rest: BN on dense inputs in train and inference mode, GN on dense
# input and with $G = 1$ (layer norm) and $G = C$ (instance norm), Keras'
# parameter count (4C for BN, with 2C non-trainable), the running-average
# update rule, and the bad-input checks.

# %%
r = np.random.default_rng(231)
with precision(np.float64):
    for layer, xin in [(BatchNorm(), r.normal(size=(7, 4)) * 3 + 1), (GroupNorm(2), r.normal(size=(5, 6))),
                       (GroupNorm(1), r.normal(size=(2, 3, 3, 4))), (GroupNorm(4), r.normal(size=(2, 3, 3, 4)))]:
        layer.build(xin.shape[1:]); layer.params['gamma'][:] = r.normal(size=xin.shape[-1])
        errs = check_layer_grad(layer, xin); assert max(errs.values()) < 1e-6, (layer, errs)
    bn = BatchNorm(); bn(r.normal(size=(8, 3)), training=True)
    errs = check_layer_grad(bn, r.normal(size=(8, 3)), training=False); assert max(errs.values()) < 1e-6, errs
bn = BatchNorm(momentum=0.9); xb = r.normal(3, 2, size=(64, 5)).astype(np.float32); bn(xb, training=True)
test_close(bn.state['moving_mean'], 0.1 * xb.mean(0), eps=1e-5); test_close(bn.state['moving_var'], 0.9 + 0.1 * xb.var(0), eps=1e-5)
bn = BatchNorm(); bn.build((8, 8, 16)); test_eq(bn.count_params(), 64); test_eq(bn.count_trainable_params(), 32)
test_fail(lambda: GroupNorm(4).build((5, 6)), contains='multiple of groups=4, got C=6')
test_fail(lambda: bn(np.zeros((2, 8, 8, 3))), contains='BatchNorm expected input of shape (N, 8, 8, 16), got (2, 8, 8, 3)')
# momentum outside [0, 1], an empty training batch, and a NaN that must not reach the running statistics
test_fail(lambda: BatchNorm(momentum=2), contains='momentum in [0, 1], got 2')
bn = BatchNorm(); xb = r.normal(size=(8, 3)); bn(xb, training=True)
before = {k: v.copy() for k, v in bn.state.items()}
test_fail(lambda: bn(xb[:0], training=True), contains='non-empty batch in training, got input shape (0, 3)')
xb[2, 1] = np.nan
test_fail(lambda: bn(xb, training=True), contains='statistics are not finite (NaN or inf in the input)')
for k in before: test_eq(bn.state[k], before[k])
# gamma and beta are made by `add_weight`, so Keras's per-weight regularizers and constraints work on them
bn = BatchNorm(gamma_regularizer=L2(0.1), beta_constraint=MaxNorm(0.5)); bn.build((6,))
test_close(bn.regularization_loss(), 0.1 * 6); test_eq(set(bn.regularization_grads()), {'gamma'})
bn.params['beta'][:] = 1.0; bn.apply_constraints(); test_close(np.linalg.norm(bn.params['beta']), 0.5, eps=1e-6)
m = Sequential([Dense(64, use_bias=False), BatchNorm(), Activation('relu'), Dense(10)], input_shape=(32,))
m.summary()
test_eq(m.count_params(), 32 * 64 + 4 * 64 + 64 * 10 + 10)

# %% [markdown]
# ## Experiment 1: activations through a 5-layer net, for each initialiser
#
# The experiment of *Deep Learning from Scratch* (Saito, O'Reilly Japan
# 2016, ch. 6.2): push 1000 random inputs (100 features, standard normal)
# through 5 dense layers of 100 units without biases, and look at the
# histogram of each layer's activations. We use `Dense` layers with each
# initialiser in turn ("×1" is `randn`, "×0.01" is `randn * 0.01`,
# LeCun normal is the book's "Xavier" $\sqrt{1/n}$).

# %%
import time
import matplotlib.pyplot as plt
from dl_from_scratch.layers import Dense, Activation, Flatten, Dropout, BatchNorm, GroupNorm, L2, MaxNorm
from dl_from_scratch.model import Sequential, EarlyStopping
from dl_from_scratch.optim import SGD, Adam
from dl_from_scratch import data, init
from dl_from_scratch.viz import plot_history
RESULTS = {}

x_in = np.random.default_rng(0).standard_normal((1000, 100)).astype(np.float32)
std1 = lambda shape, rng=None, dtype=None: init.random_normal(shape, rng, dtype, stddev=1.0)
configs = [('sigmoid', '×1', std1), ('sigmoid', '×0.01', 'small'), ('sigmoid', 'LeCun (√(1/n))', 'lecun_normal'),
           ('sigmoid', 'Glorot normal', 'glorot_normal'), ('relu', '×0.01', 'small'), ('relu', 'LeCun (√(1/n))', 'lecun_normal'),
           ('relu', 'He (√(2/n))', 'he_normal'), ('tanh', 'Glorot normal', 'glorot_normal')]
fig, axes = plt.subplots(len(configs), 5, figsize=(12, 1.5 * len(configs)), sharey='row')
act_std = {}
for row, (act, label, kinit) in zip(axes, configs):
    a, stds = x_in, []
    for j in range(5):
        a = Dense(100, act, use_bias=False, kernel_initializer=kinit, rng=j)(a)
        stds.append(float(a.std()))
        rng_ = (0, 1) if act == 'sigmoid' else (-1, 1) if act == 'tanh' else (0, max(float(a.max()), 1e-6))
        row[j].hist(a.ravel(), bins=30, range=rng_, color='C0' if act == 'sigmoid' else 'C1' if act == 'relu' else 'C2')
        row[j].set_yticks([]); row[j].tick_params(labelsize=7)
        if j == 0: row[j].set_ylabel(f'{act}\n{label}', fontsize=8)
        if row is axes[0]: row[j].set_title(f'layer {j + 1}', fontsize=9)
    act_std[(act, label)] = stds
fig.tight_layout(); plt.show()
print(f"{'activation, init':28}" + ''.join(f'{f"std L{j + 1}":>10}' for j in range(5)))
for (act, label), s in act_std.items(): print(f'{act + ", " + label:28}' + ''.join(f'{v:10.2e}' for v in s))
assert act_std[('relu', '×0.01')][4] < 1e-5 and act_std[('relu', 'He (√(2/n))')][4] > 0.5
assert act_std[('sigmoid', '×0.01')][4] < 0.05 and act_std[('sigmoid', '×1')][4] > 0.3

# %% [markdown]
# The pictures Saito's chapter shows, reproduced:
#
# * **sigmoid, ×1**: activations pile up at 0 and 1, where $\sigma' \approx 0$,
#   so gradients vanish;
# * **sigmoid, ×0.01**: all activations collapse to 0.5: the units are
#   alike and the net has little "expressive power" (the std per layer falls
#   to ~$10^{-2}$ and below);
# * **sigmoid, LeCun/Glorot**: broad histograms in every layer;
# * **ReLU, ×0.01**: the std falls by about $0.01\sqrt{100/2} \approx 0.07$ per
#   layer (to ~$10^{-6}$ after five), which is why chapter 05's deep net sat at
#   cost $\ln 2$;
# * **ReLU, LeCun**: still shrinks, by $1/\sqrt 2$ per layer;
# * **ReLU, He**: the same spread in every layer, as the derivation promised.

# %% [markdown]
# ## Experiment 2: over-fitting and its cures on an MNIST subset
#
# Saito's over-fitting setup (ch. 6.4): only **300** MNIST training images,
# a 7-layer net (six hidden ReLU layers of 100 units, He init), SGD with
# $\alpha = 0.01$, batch 100, 200 epochs. Without regularisation it learns the
# training set perfectly and generalises much worse. We compare the cures of
# this chapter on the same data and initial weights:
#
# * **L2** with Keras $\lambda = 0.05$ on every kernel (Saito's weight decay
#   $\lambda = 0.1$ on $\tfrac{\lambda}{2}\sum W^2$);
# * **dropout** 0.2 after each hidden layer (Saito uses 0.15–0.2);
# * **dropout + max-norm 3** (source 000's CIFAR recipe);
# * **early stopping** on 1000 held-out training images (patience 20, best
#   weights restored).
#
# Test curves are measured on 2000 test images per epoch; the final numbers
# on all 10 000.

# %%
#| slow
#| mnist
xm, ym = data.load('mnist', 'train'); xmt, ymt = data.load('mnist', 'test')
Xm, Xmt = xm.reshape(len(xm), -1).astype(np.float32) / 255, xmt.reshape(len(xmt), -1).astype(np.float32) / 255
Xs, ys = Xm[:300], ym[:300]
Xval, yval = Xm[50000:51000], ym[50000:51000]

def overfit_net(l2=None, drop=0.0, maxnorm=None):
    layers = []
    for i in range(6):
        layers.append(Dense(100, 'relu', kernel_initializer='he_normal', rng=i,
                            kernel_regularizer=None if l2 is None else L2(l2),
                            kernel_constraint=None if maxnorm is None else MaxNorm(maxnorm)))
        if drop: layers.append(Dropout(drop, rng=100 + i))
    layers.append(Dense(10, kernel_initializer='he_normal', rng=6, kernel_regularizer=None if l2 is None else L2(l2)))
    m = Sequential(layers, input_shape=(784,))
    m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.01), ['accuracy'])
    return m

reg_runs, reg_final = {}, {}
for label, kw, cbs in [('none', {}, None), ('L2 0.05', {'l2': 0.05}, None), ('dropout 0.2', {'drop': 0.2}, None),
                       ('dropout 0.2 + max-norm 3', {'drop': 0.2, 'maxnorm': 3.0}, None),
                       ('early stopping', {}, 'es')]:
    m = overfit_net(**kw)
    val = (Xval, yval) if cbs else (Xmt[:2000], ymt[:2000])
    callbacks = [EarlyStopping(monitor='val_accuracy', patience=20, restore_best_weights=True)] if cbs else None
    t0 = time.perf_counter()
    h = m.fit(Xs, ys, epochs=200, batch_size=100, validation_data=val, callbacks=callbacks, rng=0, verbose=0)
    train_acc, test_acc = m.evaluate(Xs, ys)[1], m.evaluate(Xmt, ymt)[1]
    reg_runs[label], reg_final[label] = h, (train_acc, test_acc, len(h.epoch))
    print(f'{label:26} train {train_acc:7.2%}  test {test_acc:7.2%}  gap {train_acc - test_acc:7.2%}  '
          f'epochs {len(h.epoch):3d}  ({time.perf_counter() - t0:.0f} s)')

# %%
#| slow
#| mnist
fig, ax = plt.subplots(1, 2, figsize=(12, 4))
for i, label in enumerate(l for l in reg_runs if l != 'early stopping'):
    h = reg_runs[label].history
    ax[0].plot(h['accuracy'], c=f'C{i}', label=f'{label} train'); ax[0].plot(h['val_accuracy'], c=f'C{i}', ls='--', label=f'{label} test')
ax[0].set(xlabel='epoch', ylabel='accuracy', title='300 MNIST images, 7-layer ReLU net, SGD 0.01'); ax[0].legend(fontsize=7)
h = reg_runs['early stopping'].history
ax[1].plot(h['accuracy'], label='train'); ax[1].plot(h['val_accuracy'], label='validation (1000 held-out train images)')
ax[1].axvline(int(np.argmax(h['val_accuracy'])), c='k', ls=':', label='best epoch (weights restored)')
ax[1].set(xlabel='epoch', title='early stopping'); ax[1].legend(fontsize=7)
plt.show()
gap = {k: v[0] - v[1] for k, v in reg_final.items()}
assert reg_final['none'][0] > 0.99 and gap['L2 0.05'] < gap['none'] - 0.01    # L2 narrows the gap
assert abs(gap['dropout 0.2'] - gap['none']) < 0.02                            # dropout barely changes it
for k, (tr, te, ep) in reg_final.items(): RESULTS[f'MNIST-300 {k}: train / test'] = ('Saito: a figure', f'{tr:.1%} / {te:.1%}')

# %% [markdown]
# What the run shows, read honestly:
#
# * **No regularisation**: 100% on the 300 training images, about 80% on
#   the test set: a gap of about 20 points, as in Saito's figure 6-20.
# * **L2** narrows the gap by about two points, but by *lowering* the
#   training accuracy, not by raising the test accuracy; this is also what
#   Saito's figure 6-21 shows (train about 0.9, test about 0.75).
# * **Dropout 0.2** (with or without max-norm) trains more slowly: after 200
#   epochs at $\alpha = 0.01$ it has not caught up with the plain net, so
#   its test accuracy is lower and the gap barely changes.
# * **Early stopping** (patience 20 on 1000 held-out images) never
#   triggered: validation accuracy kept creeping up, so it trained all 200
#   epochs and restored the best of them, which is no better on the test set.
#
# At this learning rate the regularised nets are simply under-trained. The
# next cell trains the same nets to convergence with $\alpha = 0.1$, which
# separates the effect of the regulariser from that of the short schedule.

# %%
#| slow
#| mnist
conv_final = {}
for label, kw in [('none', {}), ('L2 0.005', {'l2': 0.005}), ('dropout 0.2', {'drop': 0.2})]:
    m = overfit_net(**kw)
    m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1), ['accuracy'])
    t0 = time.perf_counter()
    m.fit(Xs, ys, epochs=200, batch_size=100, rng=0, verbose=0)
    conv_final[label] = (m.evaluate(Xs, ys)[1], m.evaluate(Xmt, ymt)[1])
    print(f'SGD 0.1, {label:12} train {conv_final[label][0]:7.2%}  test {conv_final[label][1]:7.2%}  '
          f'({time.perf_counter() - t0:.0f} s)')
    RESULTS[f'MNIST-300, SGD 0.1, {label}: train / test'] = ('-', f'{conv_final[label][0]:.1%} / {conv_final[label][1]:.1%}')
test_accs = [te for _, te in conv_final.values()]
print(f'test accuracies from {min(test_accs):.2%} to {max(test_accs):.2%}: a spread of {max(test_accs) - min(test_accs):.1%}')

# %% [markdown]
# Trained to convergence, every net fits the 300 images perfectly, and the
# test accuracies lie within 2.5 points of each other (printed above):
# dropout gains about a point over no regulariser, L2 with $\lambda = 0.005$
# loses about one and a half. On this tiny training set the architecture and
# the data, not the regulariser, limit what the net can learn.
# Regularisation strength (λ, the dropout rate) is a hyper-parameter to tune
# on a validation set (never on the test set, which is why early stopping
# watched held-out *training* images), and here it moved the test accuracy
# by a point or so either way: no cure for too little data.

# %% [markdown]
# ### Checkpoints
#
# Early stopping keeps the best weights in memory; a checkpoint keeps
# weights on disk, so that a run can be resumed or its model used later.
# Source 003's demo (TensorFlow's "save and load" tutorial): the first 1000
# MNIST training and test images, a net Dense(512, ReLU) – Dropout(0.2) –
# Dense(10) trained with Adam ($10^{-3}$) for 10 epochs of batch 32, while
# `ModelCheckpoint` saves the weights after every epoch. A fresh net of the
# same shape scores about 10 % on the 1000 test images (chance), and the same
# fresh net with the checkpoint loaded scores about 87 % in the source.

# %%
#| slow
#| mnist
import tempfile, pathlib
from dl_from_scratch.model import ModelCheckpoint

def create_model(seed):
    m = Sequential([Dense(512, 'relu', rng=seed), Dropout(0.2, rng=seed + 1), Dense(10, rng=seed + 2)], input_shape=(784,))
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-3), ['accuracy'])
    return m

X1k, y1k, X1k_test, y1k_test = Xm[:1000], ym[:1000], Xmt[:1000], ymt[:1000]
ckpt = pathlib.Path(tempfile.mkdtemp()) / 'cp.npz'
model = create_model(0)
model.fit(X1k, y1k, epochs=10, batch_size=32, validation_data=(X1k_test, y1k_test), callbacks=[ModelCheckpoint(ckpt)],
          rng=0, verbose=0)
trained = model.evaluate(X1k_test, y1k_test)[1]
fresh = create_model(1)
untrained = fresh.evaluate(X1k_test, y1k_test)[1]
fresh.load_weights(ckpt)
restored = fresh.evaluate(X1k_test, y1k_test)[1]
print(f'1000 MNIST test images: untrained {untrained:.1%}, restored from the checkpoint {restored:.1%} '
      f'(the trained model: {trained:.1%})')
assert restored == trained and untrained < 0.2 < 0.8 < restored
RESULTS['checkpoint demo, 1000 MNIST test images: untrained / restored'] = ('source 003: ≈10% / ≈87%', f'{untrained:.1%} / {restored:.1%}')

# %% [markdown]
# The restored net scores exactly what the trained one did, as it must: the
# checkpoint holds every weight. Our numbers differ from the source's in
# both directions, as two runs with different random draws do. An untrained
# net is near chance but not at it: its argmax favours a few classes, so it
# scores the share of the test images those classes hold. Trained, ours
# scores a few points more than the source's ≈87 %, on the same 1000 images
# and recipe; its weights, drawn by our initialisers, are not TensorFlow's.

# %% [markdown]
# ## Experiment 3: batch norm and training speed
#
# Saito's BN experiment (ch. 6.3): 1000 MNIST images, a net of five hidden
# ReLU layers of 100 units, SGD with $\alpha = 0.01$, batch 100, 20 epochs,
# for a range of initial weight scales. With BN (`Dense(use_bias=False)` →
# `BatchNorm` → ReLU; the bias is redundant before BN, whose β takes its
# place), training is faster and barely depends on the initial scale.

# %%
#| slow
#| mnist
def bn_net(scale, bn, seed=0):
    kinit = 'he_normal' if scale == 'He' else (lambda shape, rng=None, dtype=None, s=scale: init.random_normal(shape, rng, dtype, stddev=s))
    layers = []
    for i in range(5):
        layers += [Dense(100, use_bias=not bn, kernel_initializer=kinit, rng=seed + i)] + ([BatchNorm()] if bn else []) + [Activation('relu')]
    layers.append(Dense(10, kernel_initializer=kinit, rng=seed + 5))
    m = Sequential(layers, input_shape=(784,))
    m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.01), ['accuracy'])
    return m

xm, ym = data.load('mnist', 'train'); xmt, ymt = data.load('mnist', 'test')
Xm, Xmt = xm.reshape(len(xm), -1).astype(np.float32) / 255, xmt.reshape(len(xmt), -1).astype(np.float32) / 255
scales = [1.0, 0.1, 0.01, 'He']
fig, axes = plt.subplots(1, len(scales), figsize=(14, 3), sharey=True)
bn_acc = {}
for ax, s in zip(axes, scales):
    for bn in (False, True):
        with np.errstate(all='ignore'):
            try:
                h = bn_net(s, bn).fit(Xm[:1000], ym[:1000], epochs=20, batch_size=100, rng=0, verbose=0)
                acc = h.history['accuracy']
            except FloatingPointError:
                acc = [np.nan]                    # the loss diverged (large initial weights without BN)
        bn_acc[(s, bn)] = acc
        ax.plot(acc, label='with BN' if bn else 'without BN', ls='-' if bn else '--')
    ax.set(title=f'W std = {s}', xlabel='epoch'); ax.legend(fontsize=8)
axes[0].set_ylabel('training accuracy'); plt.show()
fmt = lambda a: 'diverged (NaN loss)' if np.isnan(a) else f'{a:.1%}'
for s in scales:
    print(f'W std {str(s):5}: final training accuracy without BN {fmt(bn_acc[(s, False)][-1])}, with BN {fmt(bn_acc[(s, True)][-1])}')
final = {k: np.nan_to_num(v[-1]) for k, v in bn_acc.items()}
assert all(final[(s, True)] > final[(s, False)] for s in scales)     # BN ahead at every initial scale
assert final[(0.01, False)] < 0.2 < 0.9 < final[(0.01, True)]        # the small init stalls without BN, trains with it
for s in scales: RESULTS[f'1000 MNIST images, W std {s}: train acc. after 20 epochs, no BN / BN'] = (
    'Saito: a figure (BN faster)', f'{fmt(bn_acc[(s, False)][-1])} / {fmt(bn_acc[(s, True)][-1])}')

# %% [markdown]
# BN is ahead at every initial scale. Without it, std 0.01 stalls at
# chance (the signal vanishes, as in Experiment 1) and std 1 diverges (the
# loss turns NaN in the first epoch and `fit` stops, plotted as an empty
# curve); with BN, std 0.01 trains fastest of all, and std 1 trains, if
# slowly: BN normalises the hidden layers, but the last, un-normalised layer
# still starts with logits of order 10. Saito's figure shows the same
# ordering. On the full training set, the same nets with He init, SGD 0.01
# and batch 100 for 3 epochs: per-epoch test accuracy, then the cost of one
# training step. The book is built on a shared 2-core machine, so whole-epoch
# wall times swing with the load; the step time below alternates the two nets
# and keeps the best of several repeats. With 100-unit layers and batches
# of 100 a step is dominated by NumPy call overhead, of which BN adds about
# ten calls per layer: a small cost, which the load of a shared machine can
# hide entirely, as in the run below.

# %%
#| slow
#| mnist
bn_full = {}
for bn in (False, True):
    m = bn_net('He', bn)
    h = m.fit(Xm, ym, epochs=3, batch_size=100, validation_data=(Xmt, ymt), rng=0, verbose=0)
    bn_full[bn] = h.history['val_accuracy']
    print(f"{'with' if bn else 'without':7} BN: test accuracy per epoch {[f'{a:.2%}' for a in h.history['val_accuracy']]}")
assert bn_full[True][0] > bn_full[False][0]

# Cost per step, measured fairly on a shared machine: the two nets alternate, and each keeps its best of 7 repeats.
nets = {bn: bn_net('He', bn) for bn in (False, True)}
xb, yb = Xm[:100], ym[:100]
best = {False: np.inf, True: np.inf}
for _ in range(7):
    for bn, m in nets.items():
        t0 = time.perf_counter()
        for _ in range(50): m.train_step((xb, yb))
        best[bn] = min(best[bn], (time.perf_counter() - t0) / 50)
print(f'one SGD step on a batch of 100: {best[False] * 1e3:.2f} ms without BN, {best[True] * 1e3:.2f} ms with BN '
      f'(×{best[True] / best[False]:.2f})')
RESULTS['BN vs no BN, full MNIST, test acc. after 1 epoch'] = ('Saito: a figure (faster with BN)', f"{bn_full[True][0]:.2%} vs {bn_full[False][0]:.2%}")
RESULTS['time per step, BN vs no BN (batch 100)'] = ('-', f"{best[True] * 1e3:.2f} ms vs {best[False] * 1e3:.2f} ms")

# %% [markdown]
# ## Our numbers beside the sources'
#
# The table collects the CS231n gradient checks of source 001 (printed in the
# tests above), source 003's checkpoint demo, and this chapter's experiments.
# The experiments are Saito's, and his book is not one of this book's
# sources; it gives figures, not numbers, so for those rows the "reported"
# column says what his figures show.

# %%
#| mnist
RESULTS.update({'spatial BN gradient check dx / dγ / dβ': ('source 001: 3.08e-07 / 7.10e-12 / 3.28e-12', ' / '.join(f'{e:.2e}' for e in e_bn)),
                'GN gradient check dx / dγ / dβ': ('source 001: 6.35e-08 / 1.05e-11 / 3.81e-12', ' / '.join(f'{e:.2e}' for e in e_gn))})
print(f"{'experiment':66} {'reported':>42} {'ours':>34}")
for k, (s, o) in RESULTS.items(): print(f'{k:66} {s:>42} {o:>34}')

# %% [markdown]
# ## References
#
# * Y. LeCun, L. Bottou, G. Orr, K.-R. Müller, *Efficient BackProp*, 1998 (LeCun init).
# * X. Glorot, Y. Bengio, *Understanding the difficulty of training deep feedforward neural networks*, AISTATS 2010.
# * K. He, X. Zhang, S. Ren, J. Sun, *Delving deep into rectifiers*, ICCV 2015.
# * A. M. Saxe, J. L. McClelland, S. Ganguli, *Exact solutions to the nonlinear dynamics of learning in deep linear networks*, 2014 (orthogonal init).
# * N. Srivastava, G. Hinton, A. Krizhevsky, I. Sutskever, R. Salakhutdinov, *Dropout*, JMLR 15, 2014 (dropout, max-norm).
# * I. Loshchilov, F. Hutter, *Decoupled weight decay regularization*, ICLR 2019 (L2 ≠ weight decay for Adam).
# * S. Ioffe, C. Szegedy, *Batch normalization*, ICML 2015. Y. Wu, K. He, *Group normalization*, ECCV 2018.
# * K. Saito, *Deep Learning from Scratch* (ゼロから作るDeep Learning), O'Reilly Japan 2016, ch. 6 (the histogram, over-fitting and BN experiments).
# * Source texts: 001 (CS231n batch/group-norm fixtures), 003 (L2, dropout, init and BN in the deeplearning.ai notes), 000 (max-norm 3 with dropout).
