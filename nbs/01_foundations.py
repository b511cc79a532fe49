# %% [markdown]
# # Foundations I: neurons and activation functions
#
# > The elementwise non-linearities every network is built from, each with its derivative, computed so that no input can overflow them.
#
# ## Purpose
#
# A neuron computes a weighted sum of its inputs and passes it through a fixed
# function, the **activation**:
#
# $$z = \mathbf w^\top \mathbf x + b, \qquad a = f(z).$$
#
# Without $f$ a network is useless however deep: a composition of affine maps
# $W_2(W_1\mathbf x + \mathbf b_1) + \mathbf b_2 = (W_2W_1)\mathbf x + (W_2\mathbf b_1 + \mathbf b_2)$
# is one affine map. A non-linear $f$ between the layers is what lets a two-layer
# network approximate any continuous function on a compact set (the universal
# approximation theorem). Training by gradient descent then needs $f'$ at every
# unit, so each activation below comes with its derivative.
#
# Ketkar (ch. 3) lists what we want of an activation: non-linear, continuously
# differentiable, of bounded range (for stability), monotonic and smooth, and
# close to the identity near 0. No function has all of these; the ones below
# trade them off differently.
#
# Chapter 01 has three parts, one per module of the package:
#
# | part | what | module |
# |---|---|---|
# | 01 (this page) | activations and their derivatives, softmax | `functional` |
# | 01a | loss functions from maximum likelihood, with gradients | `losses` |
# | 01b | numerical differentiation, gradient checking, exponentially weighted averages | `gradcheck` |
#
# Every derivative on this page is checked against the Richardson finite
# difference of part 01b (`derivative(..., method='richardson')`), in float64.

# %%
#| default_exp functional

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import check_array, get_array_module, get_dtype, as_rng

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %%
import time
import matplotlib.pyplot as plt
# %matplotlib inline
from dl_from_scratch.gradcheck import derivative, rel_error, check_grad

# %% [markdown]
# ## Sigmoid and tanh
#
# The logistic sigmoid squashes $\mathbb R$ onto $(0, 1)$, so its output reads
# as a probability:
#
# $$\sigma(x) = \frac{1}{1+e^{-x}}, \qquad
# \sigma'(x) = \frac{e^{-x}}{(1+e^{-x})^2} = \sigma(x)\,\bigl(1-\sigma(x)\bigr).$$
#
# The derivative is largest at 0, where it is $1/4$, and vanishes in both
# tails: a saturated sigmoid passes almost no gradient back (one source says the
# derivative is "always smaller than 0"; it is in $(0, 1/4]$).
#
# The hyperbolic tangent is a sigmoid stretched onto $(-1, 1)$,
# $\tanh x = \frac{e^x-e^{-x}}{e^x+e^{-x}} = 2\sigma(2x) - 1$, with
# $\tanh' x = 1 - \tanh^2 x$ (which reaches 1 at 0). Its outputs are centred
# on 0, which keeps the next layer's inputs centred too.
#
# **Computing σ without overflow.** Written as $1/(1+e^{-x})$, σ overflows for
# $x < -709$ in float64 ($e^{710} > 1.8\times10^{308}$) and already for
# $x < -88$ in float32. The two algebraically equal forms
# $\frac1{1+e^{-x}}$ (for $x\ge0$) and $\frac{e^{x}}{1+e^{x}}$ (for $x<0$) only ever
# exponentiate $-|x| \le 0$, so the exponential lies in $(0, 1]$ and nothing
# overflows. `_asfloat` validates the input once (a string array is a
# `ValueError`, integers become the default float) and every function keeps
# the dtype it is given, so float32 training stays float32.

# %%
#| export
def _asfloat(x, who):
    "`x` as a floating array (ints and bools become the default dtype); anything else is a `ValueError`."
    xp = get_array_module(x)
    x = check_array(x, 'x', kind='f', finite=False, who=who)
    return x if x.dtype.kind == 'f' else xp.asarray(x, dtype=get_dtype())

def sigmoid(x):
    "Logistic function σ(x) = 1/(1+e^{-x}), elementwise, any shape. Never overflows: exp only sees -|x|."
    x = _asfloat(x, 'sigmoid'); xp = get_array_module(x)
    e = xp.exp(-xp.abs(x))                       # in (0, 1]: no overflow for any x
    r = 1 / (1 + e)
    return xp.where(x >= 0, r, e * r)

def sigmoid_grad(x):
    "dσ/dx = σ(x)(1-σ(x)), elementwise, same shape as `x`."
    s = sigmoid(x)
    return s * (1 - s)

def tanh(x):
    "Hyperbolic tangent (e^x-e^{-x})/(e^x+e^{-x}), elementwise, any shape."
    x = _asfloat(x, 'tanh'); xp = get_array_module(x)
    return xp.tanh(x)

def tanh_grad(x):
    "d tanh/dx = 1 - tanh²(x). Elementwise: any shape, returns the shape and dtype of `x`."
    t = tanh(x)
    return 1 - t * t

# %% [markdown]
# The test helper `_check` compares each derivative with the Richardson
# difference at 80 points of $[-4, 4]$ that avoid the kinks, and checks that the
# function and its derivative are finite, in float32 and float64, at
# $|x|$ up to $10^4$ — with numpy told to *raise* on overflow, so that a warning
# cannot hide one.

# %%
_x = np.concatenate([np.linspace(-4, -0.05, 40), np.linspace(0.05, 4, 40)])   # float64, no kinks
_big = np.array([-1e4, -1e3, -100., -20., 0., 20., 100., 1e3, 1e4])

def _check(f, df, x=_x, **kw):
    "Derivative against Richardson differences (float64), finiteness and dtype at |x| ≤ 1e4."
    err = rel_error(df(x, **kw), derivative(lambda t: f(t, **kw), x, 1e-3, 'richardson'))
    assert err < 1e-9, (f.__name__, kw, err)
    for dt in (np.float32, np.float64):
        with np.errstate(over='raise', invalid='raise', divide='raise'):
            y, dy = f(_big.astype(dt), **kw), df(_big.astype(dt), **kw)
        assert np.isfinite(y).all() and np.isfinite(dy).all(), f.__name__
        test_eq(y.dtype, dt); test_eq(dy.dtype, dt)
    return err

# %%
_check(sigmoid, sigmoid_grad); _check(tanh, tanh_grad)
test_close(sigmoid(np.array([-1., 0, 1])), [0.26894142, 0.5, 0.73105858])
test_close(sigmoid(np.array([-1e4, -100., 100., 1e4])), [0., 3.72e-44, 1., 1.], eps=1e-12)
test_close(tanh(_x), 2 * sigmoid(2 * _x) - 1)                         # tanh is a rescaled sigmoid
test_close(sigmoid_grad(np.array([0.])), [0.25])
test_fail(lambda: sigmoid(np.array(['a'])), contains='dtype')
test_eq(sigmoid(np.array([0, 1])).dtype, np.float32)                 # integers become the default float

# %% [markdown]
# ## The ReLU family
#
# The rectified linear unit $\mathrm{ReLU}(x) = \max(0, x)$ has derivative 1 for
# $x>0$ and 0 for $x<0$ (at the kink we take 0, a valid subgradient). It does
# not saturate for positive inputs and costs one comparison, which is why it
# became the default hidden unit. Its weakness is the **dying ReLU**: a unit
# whose pre-activation is negative for every input gets zero gradient and never
# recovers. Its variants keep a small slope $\alpha$ for $x<0$,
#
# $$f(x) = \begin{cases} x & x \ge 0\\ \alpha x & x < 0\end{cases},\qquad
# f'(x) = \begin{cases} 1 & x \ge 0\\ \alpha & x < 0,\end{cases}$$
#
# and differ in where $\alpha$ comes from:
#
# * **leaky ReLU**: a constant, usually $\alpha = 0.01$;
# * **parametric ReLU** (He et al. 2015): $\alpha$ is a parameter learned with the
#   weights, one per channel, so we also need $\partial f/\partial\alpha = \min(x, 0)$;
# * **randomized ReLU** (Xu et al. 2015): while training, each element draws its own
#   $\alpha \sim U(l, u)$ (default $l = 1/8$, $u = 1/3$); at inference the mean
#   $(l+u)/2$ is used. The forward and backward passes must use the *same*
#   draws, so `rrelu_alpha` samples them once and both functions accept them.
#
# Source 002 codes ReLU and leaky ReLU with a scalar Python `if`, which works on
# one number at a time; ours are `np.where` over whole arrays (timed below).

# %%
#| export
def relu(x, max_value=None):
    "max(0, x), elementwise, any shape; capped at `max_value` when given (Keras's `ReLU(max_value=6)` is ReLU6)."
    x = _asfloat(x, 'relu'); xp = get_array_module(x)
    y = xp.maximum(x, 0)
    return (y if max_value is None else xp.minimum(y, max_value)).astype(x.dtype, copy=False)

def relu_grad(x, max_value=None):
    "1 where 0 < x (< `max_value`) else 0 (the subgradient 0 is taken at the kinks), same shape and dtype as `x`."
    x = _asfloat(x, 'relu_grad')
    inside = x > 0
    if max_value is not None: inside &= x < max_value
    return inside.astype(x.dtype)

def relu6(x):
    "min(max(0, x), 6): MobileNet's ReLU, whose bounded range survives low-precision arithmetic."
    return relu(x, max_value=6.0)

def relu6_grad(x):
    "1 where 0 < x < 6 else 0."
    return relu_grad(x, max_value=6.0)

def leaky_relu(x, alpha=0.01):
    "x for x ≥ 0, αx for x < 0 (α = 0.01 keeps a small gradient alive for negative inputs). Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'leaky_relu'); xp = get_array_module(x)
    return xp.where(x >= 0, x, alpha * x).astype(x.dtype, copy=False)

def leaky_relu_grad(x, alpha=0.01):
    "1 for x ≥ 0, α for x < 0. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'leaky_relu_grad'); xp = get_array_module(x)
    return xp.where(x >= 0, 1, alpha).astype(x.dtype)

def prelu(x, alpha):
    "Parametric ReLU: x for x ≥ 0, αx for x < 0, with a learnable `alpha` broadcastable to `x` (e.g. shape `(C,)`)."
    x = _asfloat(x, 'prelu'); xp = get_array_module(x)
    return xp.where(x >= 0, x, alpha * x).astype(x.dtype, copy=False)

def prelu_grad(x, alpha):
    "∂prelu/∂x: 1 for x ≥ 0, α for x < 0 (broadcast to the shape of `x`)."
    x = _asfloat(x, 'prelu_grad'); xp = get_array_module(x)
    return xp.where(x >= 0, 1, alpha * xp.ones_like(x)).astype(x.dtype)

def prelu_grad_alpha(x, alpha):
    "∂prelu/∂α elementwise: min(x, 0), shape of `x`. A layer sums it over the axes along which α is shared."
    x = _asfloat(x, 'prelu_grad_alpha'); xp = get_array_module(x)
    return xp.minimum(x, 0).astype(x.dtype, copy=False)

def rrelu_alpha(shape, lower=1/8, upper=1/3, training=False, rng=None):
    """Slopes for randomized ReLU: α ~ U(lower, upper) per element while training,
    the mean (lower+upper)/2 at inference. Returns an array of `shape` (float64)."""
    if not 0 <= lower <= upper: raise ValueError(f"rrelu expected 0 <= lower <= upper, got lower={lower}, upper={upper}")
    if not training: return np.full(shape, (lower + upper) / 2)
    return as_rng(rng).uniform(lower, upper, size=shape)

def rrelu(x, lower=1/8, upper=1/3, training=False, rng=None, alpha=None):
    """Randomized leaky ReLU (Xu et al. 2015): x for x ≥ 0, αx for x < 0, α random while training.
    Pass the `alpha` array from `rrelu_alpha` to reuse the same slopes in `rrelu_grad`."""
    x = _asfloat(x, 'rrelu'); xp = get_array_module(x)
    a = rrelu_alpha(x.shape, lower, upper, training, rng) if alpha is None else alpha
    return xp.where(x >= 0, x, xp.asarray(a) * x).astype(x.dtype, copy=False)

def rrelu_grad(x, lower=1/8, upper=1/3, training=False, rng=None, alpha=None):
    "∂rrelu/∂x: 1 for x ≥ 0, α for x < 0 (same `alpha` or `rng` state as the forward call). Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'rrelu_grad'); xp = get_array_module(x)
    a = rrelu_alpha(x.shape, lower, upper, training, rng) if alpha is None else alpha
    return xp.where(x >= 0, 1, xp.asarray(a) * xp.ones_like(x)).astype(x.dtype)

# %%
_check(relu, relu_grad); _check(leaky_relu, leaky_relu_grad); _check(leaky_relu, leaky_relu_grad, alpha=0.2)
_check(prelu, prelu_grad, alpha=0.3)
test_close(prelu_grad_alpha(_x, 0.3), derivative(lambda a: prelu(_x, a), 0.3, 1e-3, 'central'), eps=1e-9)
test_close(prelu(np.array([[-1., 2.], [-3., -4.]]), np.array([0.1, 0.5])), [[-0.1, 2.], [-0.3, -2.]])   # per-channel α
test_eq(relu(np.array([-1., 0, 2])), np.array([0., 0, 2]))
test_eq(relu6(np.array([-1., 3, 7])), np.array([0., 3, 6])); _check(relu6, relu6_grad); test_eq(relu6_grad(np.array([-1., 3, 7])), np.array([0., 1, 0]))
test_eq(leaky_relu(np.array([-100.])), np.array([-1.]))
# randomized ReLU: slopes in [l, u], the same slopes forward and backward, the mean at inference
_a = rrelu_alpha(_x.shape, training=True, rng=0)
assert ((_a >= 1/8) & (_a <= 1/3)).all() and _a.std() > 0.05
assert rel_error(rrelu_grad(_x, alpha=_a), derivative(lambda t: rrelu(t, alpha=_a), _x, 1e-3, 'richardson')) < 1e-9
_check(rrelu, rrelu_grad)                                                    # inference mode: the mean slope
test_eq(rrelu(np.array([-2.]), training=False), np.array([-2 * (1/8 + 1/3) / 2]))
test_eq(rrelu(_x, training=True, rng=5), rrelu(_x, training=True, rng=5))
test_fail(lambda: rrelu_alpha(3, lower=0.5, upper=0.1), contains='lower <= upper')

# %% [markdown]
# ## Smooth and scaled variants
#
# * **ELU** (Clevert et al. 2016): $x$ for $x>0$, $\alpha(e^x - 1)$ for $x\le0$,
#   derivative $\alpha e^x$ there. Negative outputs push mean activations toward 0.
#   The conventional $\alpha$ is 1; source 002's code defaults to 0.01 (and has an
#   unbalanced parenthesis). We use 1 and accept any $\alpha$.
#   `expm1` keeps $e^x-1$ accurate for small $|x|$ and we only exponentiate $\min(x,0)$.
# * **Swish** (Ramachandran et al. 2017): $x\,\sigma(\beta x)$, with
#   $\frac{d}{dx} = \sigma(\beta x) + \beta x\,\sigma(\beta x)(1-\sigma(\beta x))$.
#   It is smooth and non-monotonic (it dips below 0 near $x \approx -1.28$ for β = 1).
#   β = 1 is the SiLU; β = 0 gives $x/2$ and $\beta\to\infty$ gives ReLU. Source 002
#   writes the family as $2x\,\sigma(\beta x)$, so that β = 0 is the identity and
#   $\beta\to\infty$ is $2\,\mathrm{ReLU}$: self-consistent, but not the published
#   Swish, which we implement (the figure below shows both).
# * **softplus** $\log(1+e^x)$, a smooth ReLU whose derivative is exactly σ. It
#   is computed as `logaddexp(0, x)`, finite for all $x$ (the literal formula
#   overflows for $x > 709$).
# * **hard sigmoid** $\mathrm{clip}(0.2x + 0.5, 0, 1)$, a piecewise-linear sigmoid
#   that needs no exponential (the Theano/Keras 2 definition; Theano's
#   `ultra_fast_sigmoid` in Ketkar listing 4-4 is a different piecewise approximation).
# * **LeCun's tanh** $1.7159\tanh(2x/3)$ (LeCun et al. 1998): the constants make
#   $f(\pm1) = \pm1$ (since $1/\tanh(2/3) = 1.7159$), so unit-variance inputs give
#   roughly unit-variance outputs, and the second derivative peaks at $x = \pm1$.

# %%
#| export
def elu(x, alpha=1.0):
    "x for x > 0, α(e^x - 1) for x ≤ 0. `expm1` keeps precision near 0; exp only sees x ≤ 0. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'elu'); xp = get_array_module(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)

def elu_grad(x, alpha=1.0):
    "1 for x > 0, αe^x for x ≤ 0. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'elu_grad'); xp = get_array_module(x)
    return xp.where(x > 0, 1, alpha * xp.exp(xp.minimum(x, 0))).astype(x.dtype, copy=False)

def swish(x, beta=1.0):
    "Swish (Ramachandran et al. 2017): x·σ(βx). β = 1 is SiLU; β → ∞ tends to ReLU, β = 0 gives x/2. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'swish')
    return x * sigmoid(beta * x)

def swish_grad(x, beta=1.0):
    "d/dx xσ(βx) = σ(βx) + βx·σ(βx)(1-σ(βx)). Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'swish_grad')
    s = sigmoid(beta * x)
    return s + beta * x * s * (1 - s)

def softplus(x):
    "log(1 + e^x), a smooth ReLU; computed as logaddexp(0, x), finite for every finite x. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'softplus'); xp = get_array_module(x)
    return xp.logaddexp(xp.zeros((), x.dtype), x)

def softplus_grad(x):
    "d softplus/dx = σ(x). Elementwise: any shape, returns the shape and dtype of `x`."
    return sigmoid(x)

def hard_sigmoid(x):
    "Piecewise-linear sigmoid clip(0.2x + 0.5, 0, 1) (Theano / Keras 2 definition). Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'hard_sigmoid'); xp = get_array_module(x)
    return xp.clip(0.2 * x + 0.5, 0, 1).astype(x.dtype, copy=False)

def hard_sigmoid_grad(x):
    "0.2 inside (-2.5, 2.5), 0 outside. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'hard_sigmoid_grad'); xp = get_array_module(x)
    return xp.where(xp.abs(x) < 2.5, 0.2, 0.0).astype(x.dtype)

def lecun_tanh(x):
    "LeCun's scaled tanh 1.7159·tanh(2x/3) (LeCun et al. 1998): f(±1) ≈ ±1 and unit gain near 0. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'lecun_tanh'); xp = get_array_module(x)
    return 1.7159 * xp.tanh(2 * x / 3)

def lecun_tanh_grad(x):
    "1.7159·(2/3)·(1 - tanh²(2x/3)). Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'lecun_tanh_grad'); xp = get_array_module(x)
    t = xp.tanh(2 * x / 3)
    return 1.7159 * 2 / 3 * (1 - t * t)

def linear(x):
    "Identity activation. Elementwise: any shape, returns the shape and dtype of `x`."
    return _asfloat(x, 'linear')

def linear_grad(x):
    "Derivative of the identity: ones. Elementwise: any shape, returns the shape and dtype of `x`."
    x = _asfloat(x, 'linear_grad'); xp = get_array_module(x)
    return xp.ones_like(x)

# %%
_check(elu, elu_grad); _check(elu, elu_grad, alpha=0.5)
_check(swish, swish_grad); _check(swish, swish_grad, beta=2.5); _check(softplus, softplus_grad)
_xh = _x[np.abs(np.abs(_x) - 2.5) > 0.05]                                   # hard sigmoid kinks at ±2.5
_check(hard_sigmoid, hard_sigmoid_grad, x=_xh); _check(lecun_tanh, lecun_tanh_grad); _check(linear, linear_grad)
test_close(softplus(np.array([-1., 0, 1])), [0.31326169, 0.69314718, 1.31326169])
test_close(softplus(np.array([1e4])), [1e4])
test_close(lecun_tanh(np.array([1., -1.])), [1.0, -1.0], eps=2e-4)
test_close(swish(_x, beta=0.), _x / 2); test_close(swish(_x, beta=50.)[_x > 0.5], _x[_x > 0.5], eps=1e-8)
test_close(hard_sigmoid(np.array([-3., 0, 1, 3])), [0, 0.5, 0.7, 1])
test_close(elu(np.array([-1e4, -1., 2.])), [-1., np.expm1(-1.), 2.])

# %% [markdown]
# ## Softmax and log-softmax
#
# For $K$ classes the **softmax** turns a vector of scores (logits) into a
# probability distribution,
#
# $$\operatorname{softmax}(\mathbf x)_i = \frac{e^{x_i}}{\sum_{j} e^{x_j}},\qquad
# \frac{\partial s_i}{\partial x_j} = s_i(\delta_{ij} - s_j),$$
#
# so the Jacobian is $\operatorname{diag}(\mathbf s) - \mathbf s\mathbf s^\top$. A
# backward pass never forms it: for an upstream gradient $\mathbf g = \partial L/\partial\mathbf s$,
# $\partial L/\partial\mathbf x = \mathbf s \odot (\mathbf g - \mathbf g^\top\mathbf s)$, which costs $O(K)$
# (`softmax_vjp`). Likewise
# $\log\operatorname{softmax}(\mathbf x)_i = x_i - \log\sum_j e^{x_j}$ has
# $\partial L/\partial\mathbf x = \mathbf g - \mathbf s\sum_i g_i$.
#
# **Stability.** Softmax is unchanged by adding a constant to every score,
# $\operatorname{softmax}(\mathbf x - c) = \operatorname{softmax}(\mathbf x)$. With
# $c = \max_j x_j$ every exponent is $\le 0$: no overflow, and the largest term
# is $e^0 = 1$, so the denominator is at least 1 and the logarithm in
# log-softmax is finite (the *log-sum-exp trick*). Source 002's
# `np.exp(x)/np.exp(x).sum(axis=0)` skips the shift and returns `nan` for
# scores above 709; Ketkar's TensorFlow listing subtracts one global max over
# the whole batch, which is valid but can underflow every entry of a row whose
# scores are all far below another row's maximum.

# %%
#| export
def softmax(x, axis=-1):
    "softmax along `axis`: exp(x - max) / Σ exp(x - max). Any shape; rows sum to 1."
    x = _asfloat(x, 'softmax'); xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

def log_softmax(x, axis=-1):
    "log softmax along `axis`: (x - max) - log Σ exp(x - max). Any shape; same shape as `x`, finite for any finite `x`."
    x = _asfloat(x, 'log_softmax'); xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))

def softmax_vjp(s, dy, axis=-1):
    """Backward of `s = softmax(x)`: given dL/ds (`dy`, shape of `s`) return dL/dx = s ⊙ (dy - Σ dy⊙s).
    The Jacobian diag(s) - ssᵀ is never formed."""
    return s * (dy - (dy * s).sum(axis=axis, keepdims=True))

def log_softmax_vjp(logp, dy, axis=-1):
    "Backward of `logp = log_softmax(x)`: dL/dx = dy - softmax(x)·Σ dy, shape of `logp`."
    xp = get_array_module(logp)
    return dy - xp.exp(logp) * dy.sum(axis=axis, keepdims=True)

# %%
_X = np.random.default_rng(3).standard_normal((4, 5))
test_close(softmax(_X).sum(-1), np.ones(4))
test_close(softmax(_X, axis=0).sum(0), np.ones(5))
test_close(np.exp(log_softmax(_X)), softmax(_X))
test_close(softmax(_X + 1000.), softmax(_X))                              # shift invariance
_G = np.random.default_rng(4).standard_normal((4, 5))
assert check_grad(lambda x: np.sum(softmax(x) * _G), lambda x: softmax_vjp(softmax(x), _G), _X) < 1e-9
assert check_grad(lambda x: np.sum(log_softmax(x) * _G), lambda x: log_softmax_vjp(log_softmax(x), _G), _X) < 1e-9
for dt in (np.float32, np.float64):
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        s, ls = softmax(_big.astype(dt)), log_softmax(_big.astype(dt))
    assert np.isfinite(s).all() and np.isfinite(ls).all()
    test_close(s.sum(), 1.0, eps=1e-6); test_eq(ls[-1], 0); test_eq(s.dtype, dt)
test_close(log_softmax(np.array([[-1e4, 0., 1e4]])), [[-2e4, -1e4, 0.]])
test_close(softmax(np.array([7., 2., 5.])), [0.8756006, 0.00589975, 0.11849965])   # source 002, ch. 2

# %% [markdown]
# Source 003 (the deeplearning.ai notes, course 2 week 3) works one softmax
# by hand for $C = 4$ classes: $z = [5, 2, -1, 3]$, $t = e^z =
# [148.4, 7.39, 0.368, 20.1]$, $\sum_j t_j = 176.3$, so $a = t/\sum_j t_j =
# [0.842, 0.042, 0.002, 0.114]$, where the "hard max" would give $[1, 0, 0, 0]$.

# %%
z_003 = np.array([5., 2., -1., 3.])
a_003 = softmax(z_003)
print('t = e^z =', np.round(np.exp(z_003), 3), ' sum', round(float(np.exp(z_003).sum()), 3))
print('softmax([5, 2, -1, 3]) =', np.round(a_003, 3), ' hard max', (a_003 == a_003.max()).astype(int))
test_close(np.round(a_003, 3), [0.842, 0.042, 0.002, 0.114], eps=1e-12)
test_eq((a_003 == a_003.max()).astype(int), [1, 0, 0, 0])

# %% [markdown]
# Layers and models refer to activations by their Keras names; `get_activation`
# returns the pair `(f, f_grad)`.

# %%
#| export
_ACTIVATIONS = {
    'linear': (linear, linear_grad), 'sigmoid': (sigmoid, sigmoid_grad), 'tanh': (tanh, tanh_grad),
    'relu': (relu, relu_grad), 'relu6': (relu6, relu6_grad), 'leaky_relu': (leaky_relu, leaky_relu_grad), 'rrelu': (rrelu, rrelu_grad),
    'elu': (elu, elu_grad), 'swish': (swish, swish_grad), 'silu': (swish, swish_grad),
    'softplus': (softplus, softplus_grad), 'hard_sigmoid': (hard_sigmoid, hard_sigmoid_grad),
    'lecun_tanh': (lecun_tanh, lecun_tanh_grad),
}

def get_activation(name):
    """`(f, f_grad)` for an activation name (`'relu'`, `'tanh'`, ..., `None` = `'linear'`),
    or for a `(f, f_grad)` pair given directly. Softmax is not elementwise, so it is not here:
    use `softmax`/`softmax_vjp` or a fused loss."""
    if name is None: name = 'linear'
    if isinstance(name, tuple) and len(name) == 2 and all(callable(f) for f in name): return name
    if not isinstance(name, str) or name.lower() not in _ACTIVATIONS:
        raise ValueError(f"get_activation expected one of {sorted(_ACTIVATIONS)} or (f, f_grad), got {name!r}")
    return _ACTIVATIONS[name.lower()]

# %%
test_eq(get_activation('ReLU'), (relu, relu_grad))
test_eq(get_activation(None), (linear, linear_grad))
test_eq(get_activation((tanh, tanh_grad)), (tanh, tanh_grad))
test_fail(lambda: get_activation('gelu'), contains="got 'gelu'")

# %% [markdown]
# ## Experiments
#
# ### The sigmoid under an affine change of its input
#
# Source 000 (§3.2) plots $\sigma(x)$, $\sigma(2x)$, $\sigma(2x+5)$ and
# $\sigma(100x+100)$ on `linspace(-10, 10, 100)`: the weight sets the steepness,
# the bias the position ($\sigma(wx+b)$ crosses ½ at $x = -b/w$), and a large
# weight makes a step function — one whose gradient is zero almost everywhere.

# %%
xs = np.linspace(-10, 10, 100)
fig, axs = plt.subplots(1, 4, figsize=(14, 2.8), sharey=True)
for ax, (w, b) in zip(axs, [(1, 0), (2, 0), (2, 5), (100, 100)]):
    ax.plot(xs, sigmoid(w * xs + b), color='C0')
    ax.axvline(-b / w, color='grey', lw=0.6, ls=':')
    ax.set_title(f'σ({w}x+{b})' if b else (f'σ({w}x)' if w != 1 else 'σ(x)')); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()
s02 = sigmoid(np.array([0., 2.]))
print(f"σ([0, 2]): sum {s02.sum():.7f} (source 000: 1.380797), mean {s02.mean():.7f} (source 000: 0.690398, truncated)")

# %% [markdown]
# ### Every activation and its derivative

# %%
xs = np.linspace(-5, 5, 1001)
names = ['sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'swish', 'softplus', 'hard_sigmoid', 'lecun_tanh']
fig, axs = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
for i, n in enumerate(names):
    f, df = get_activation(n)
    kw = {'alpha': 0.1} if n == 'leaky_relu' else {}          # a visible slope
    axs[0].plot(xs, f(xs, **kw), label=n + (' (α=0.1)' if kw else ''), color=f'C{i}')
    axs[1].plot(xs, df(xs, **kw), color=f'C{i}')
axs[0].set_ylim(-2, 3); axs[0].legend(ncol=3, fontsize=8); axs[0].set_title('f(x)')
axs[1].set_ylim(-0.3, 1.4); axs[1].set_title("f'(x)"); axs[1].set_xlabel('x')
for ax in axs: ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
# ### Swish and source 002's re-parametrisation
#
# Published Swish $x\sigma(\beta x)$ moves from $x/2$ (β = 0) through the SiLU
# (β = 1) to ReLU; source 002's $2x\sigma(\beta x)$ is the same curve doubled,
# from the identity to $2\,\mathrm{ReLU}$.

# %%
xs = np.linspace(-4, 4, 401)
fig, axs = plt.subplots(1, 2, figsize=(11, 3.3), sharey=True)
for i, beta in enumerate([0, 0.5, 1, 2, 10]):
    axs[0].plot(xs, swish(xs, beta=beta), color=f'C{i}', label=f'β={beta}')
    axs[1].plot(xs, 2 * swish(xs, beta=beta), color=f'C{i}')
axs[0].set_title('Swish xσ(βx) (implemented)'); axs[1].set_title("source 002's 2xσ(βx)")
axs[0].legend(); [ax.grid(alpha=0.3) for ax in axs]; plt.tight_layout(); plt.show()
print(f"min of Swish (β=1): {swish(xs).min():.4f} at x = {xs[swish(xs).argmin()]:.2f}  (non-monotonic)")

# %% [markdown]
# ### Naive formulas break; ours do not
#
# The textbook formulas, evaluated literally, against ours at large inputs.
# Source 002 computes tanh as $(1-e^{-2x})/(1+e^{-2x})$ and softmax without the
# shift. The naive sigmoid happens to return the right limit at $-1000$, but
# only through an overflow to `inf`; its derivative, written the same way, is
# `inf/inf = nan` there.

# %%
naive = {
    'sigmoid 1/(1+e^-x)': (lambda x: 1 / (1 + np.exp(-x)), sigmoid),
    "σ' e^-x/(1+e^-x)²": (lambda x: np.exp(-x) / (1 + np.exp(-x)) ** 2, sigmoid_grad),
    'tanh (1-e^-2x)/(1+e^-2x)': (lambda x: (1 - np.exp(-2 * x)) / (1 + np.exp(-2 * x)), tanh),
    'softplus log(1+e^x)': (lambda x: np.log(1 + np.exp(x)), softplus),
    'softmax e^x/Σe^x': (lambda x: np.exp(x) / np.exp(x).sum(), softmax),
}
probe = np.array([-1000., -100., 0., 100., 1000.])
with np.errstate(all='ignore'):
    for name, (nf, ours) in naive.items():
        for dt in (np.float64, np.float32):
            p = probe.astype(dt)
            print(f"{name:26s} {np.dtype(dt).name:8s} naive {np.array2string(nf(p), precision=3):46s} ours {np.array2string(ours(p), precision=3)}")

# %% [markdown]
# ### How much gradient gets through, on real inputs
#
# A unit passes back $f'(z)$ times the gradient it receives. Feed 2,000 MNIST
# test images (pixels/255) through one random layer of 256 units,
# $z = \mathbf x W + b$ with $W_{ij}\sim\mathcal N(0, s^2/784)$, and look at the
# distribution of $f'(z)$. At $s = 1$ the pre-activations are moderate; at
# $s = 8$ (a careless initialisation, or weights grown large in training) the
# sigmoid and tanh saturate — their mean derivative drops by a factor of two to
# three and a large share of their derivatives falls below 0.01 — while the
# ReLU family still passes 1 on its active side. A bias pushed to $b = -3$ (as
# one large update can do) kills ReLU units outright, zero gradient on *every*
# image, while leaky ReLU, ELU and swish keep a small gradient alive.

# %%
#| mnist
from dl_from_scratch import data
xm = data.load('mnist', 'test')[0][:2000].reshape(2000, -1).astype(np.float64) / 255
acts = ['sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'swish', 'softplus']
settings = {'s = 1': (1.0, 0.0), 's = 8': (8.0, 0.0), 's = 1, b = -3': (1.0, -3.0)}
zs = {k: xm @ (np.random.default_rng(0).standard_normal((784, 256)) * s / np.sqrt(784)) + b
      for k, (s, b) in settings.items()}
print(f"{'':12s}" + ''.join(f"{k:^33s}" for k in settings))
print(f"{'activation':12s}" + ''.join(f"{'mean |f′|':>12s}{'f′ < 0.01':>11s}{'dead':>10s}" for k in settings))
stats = {}
for n in acts:
    _, df = get_activation(n)
    row = f"{n:12s}"
    for k, z in zs.items():
        d = np.abs(df(z))
        stats[n, k] = (d.mean(), (d < 0.01).mean(), ((d < 0.01).all(axis=0)).mean())
        row += f"{stats[n, k][0]:>12.3f}{stats[n, k][1]:>11.1%}{stats[n, k][2]:>10.0%}"
    print(row)
fig, axs = plt.subplots(1, 3, figsize=(15, 3.2), sharey=True)
for ax, (k, z) in zip(axs, zs.items()):
    for i, n in enumerate(['sigmoid', 'tanh', 'relu', 'elu', 'swish']):
        ax.hist(get_activation(n)[1](z).ravel(), bins=60, range=(-0.15, 1.15), histtype='step', density=True,
                color=f'C{i}', label=n)
    ax.set_title(f"f′(z) on MNIST, {k}"); ax.set_yscale('log'); ax.set_xlabel("f′(z)")
axs[0].legend(fontsize=8); plt.tight_layout(); plt.show()
assert stats['sigmoid', 's = 8'][1] > stats['sigmoid', 's = 1'][1]          # saturation grows with the scale
assert stats['relu', 's = 1, b = -3'][2] > 0.5 and stats['leaky_relu', 's = 1, b = -3'][2] == 0   # dead vs alive

# %% [markdown]
# "dead" is the share of units whose derivative is below 0.01 on all 2,000
# images: such a unit's weights get no gradient from this data at all. The
# sigmoid's derivative never exceeds 1/4, so even unsaturated it shrinks every
# gradient passing through it by at least four — one reason deep sigmoid
# networks train slowly, taken up again with initialisation in chapter 06.

# %% [markdown]
# ### Vectorised versus a Python loop
#
# Source 002's `relu` tests `if x < 0` on one number. Applied to a layer's
# activations element by element in Python it is orders of magnitude slower than
# one `np.where` over the array (timings on this machine, float32, $10^6$ values).

# %%
xt = np.random.default_rng(0).standard_normal(1_000_000).astype(np.float32)
def relu_scalar(x): return 0 if x < 0 else x        # source 002's form

def best_of(fn, n=3):
    ts = []
    for _ in range(n):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)

t_loop = best_of(lambda: [relu_scalar(v) for v in xt.tolist()], 1)
t_vec = best_of(lambda: relu(xt))
t_sig = best_of(lambda: sigmoid(xt))
print(f"relu, Python loop : {t_loop * 1e3:8.1f} ms")
print(f"relu, vectorised  : {t_vec * 1e3:8.2f} ms  ({t_loop / t_vec:.0f}x faster)")
print(f"sigmoid (stable)  : {t_sig * 1e3:8.2f} ms")

# %% [markdown]
# ## Our numbers beside the sources'
#
# Ketkar's listing 4-4 applies Theano's activations to `[[-1, 0, 1]]` but prints
# nothing; the source summary gives the correct values, which we print beside
# ours.

# %%
v = np.array([[-1., 0., 1.]])
fmt = lambda a, d=4: '[' + ', '.join(f'{t:.{d}f}' for t in np.ravel(a)) + ']'
rows = [
    ('source 000: σ([0,2]) sum', '1.380797', f'{sigmoid(np.array([0., 2.])).sum():.7f}'),
    ('source 000: σ([0,2]) mean', '0.690398', f'{sigmoid(np.array([0., 2.])).mean():.7f}'),
    ('Ketkar 4-4: sigmoid([-1,0,1])', '[0.2689, 0.5, 0.7311]', fmt(sigmoid(v))),
    ('Ketkar 4-4: tanh([-1,0,1])', '[-0.7616, 0, 0.7616]', fmt(tanh(v))),
    ('Ketkar 4-4: softplus([-1,0,1])', '[0.3133, 0.6931, 1.3133]', fmt(softplus(v))),
    ('Ketkar 4-4: relu([-1,0,1])', '[0, 0, 1]', fmt(relu(v))),
    ('Ketkar 4-4: softmax([-1,0,1])', '[0.0900, 0.2447, 0.6652]', fmt(softmax(v))),
    ('source 002 ch. 2: softmax([7,2,5])', '[0.8756006, 0.00589975, 0.11849965]', fmt(softmax(np.array([7., 2., 5.])), 8)),
    ('source 003: softmax([5,2,-1,3])', '[0.842, 0.042, 0.002, 0.114]', fmt(softmax(np.array([5., 2., -1., 3.])), 3)),
]
print(f"{'quantity':38s} {'source':38s} ours")
for q, s, o in rows: print(f"{q:38s} {s:38s} {o}")

# %% [markdown]
# All agree. The source numbers for losses, gradients and averages are in parts
# [01a](01a_losses.ipynb) and [01b](01b_gradcheck.ipynb); 01b closes the chapter
# with the full table.
#
# ## References
#
# * N. Ketkar, *Deep Learning with Python: A Hands-on Introduction*, Apress 2017, ch. 3 (units and their desirable properties) and listing 4-4.
# * S. Ravichandiran, *Hands-On Deep Learning Algorithms with Python*, Packt 2019, ch. 1 (activation functions).
# * *Build Your Own Deep Learning* (source 000), §3.2 (sigmoid plots and tests).
# * Source 003: study notes on the deeplearning.ai *Improving Deep Neural Networks* course, week 3 (the softmax worked by hand).
# * K. He, X. Zhang, S. Ren, J. Sun, *Delving Deep into Rectifiers*, ICCV 2015 (PReLU).
# * B. Xu, N. Wang, T. Chen, M. Li, *Empirical Evaluation of Rectified Activations in Convolutional Network*, 2015 (RReLU, slopes U(1/8, 1/3)).
# * D.-A. Clevert, T. Unterthiner, S. Hochreiter, *Fast and Accurate Deep Network Learning by Exponential Linear Units*, ICLR 2016.
# * P. Ramachandran, B. Zoph, Q. V. Le, *Searching for Activation Functions*, 2017 (Swish).
# * Y. LeCun, L. Bottou, G. Orr, K.-R. Müller, *Efficient BackProp*, 1998 (the 1.7159 tanh).
# * Y. LeCun, C. Cortes, C. J. C. Burges, *The MNIST database of handwritten digits* (via TensorFlow Datasets).
# * G. Cybenko, *Approximation by Superpositions of a Sigmoidal Function*, 1989.
