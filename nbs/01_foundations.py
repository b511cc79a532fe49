# %% [markdown]
# # Foundations: activations, losses and numerical gradients
#
# > The elementwise non-linearities, the loss functions, and the finite-difference
# > machinery that checks every derivative in the rest of the book.

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
#| hide
from dl_from_scratch.gradcheck import derivative, rel_error, check_grad

# %% [markdown]
# ## Activations
#
# ### Implementation

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
    return xp.where(x >= 0, 1 / (1 + e), e / (1 + e))

def sigmoid_grad(x):
    "dσ/dx = σ(x)(1-σ(x)), elementwise, same shape as `x`."
    s = sigmoid(x)
    return s * (1 - s)

def tanh(x):
    "Hyperbolic tangent (e^x-e^{-x})/(e^x+e^{-x}), elementwise, any shape."
    x = _asfloat(x, 'tanh'); xp = get_array_module(x)
    return xp.tanh(x)

def tanh_grad(x):
    "d tanh/dx = 1 - tanh²(x), elementwise."
    t = tanh(x)
    return 1 - t * t

def relu(x):
    "max(0, x), elementwise, any shape."
    x = _asfloat(x, 'relu'); xp = get_array_module(x)
    return xp.maximum(x, 0).astype(x.dtype, copy=False)

def relu_grad(x):
    "1 where x > 0 else 0 (the subgradient 0 is taken at x = 0), same shape and dtype as `x`."
    x = _asfloat(x, 'relu_grad')
    return (x > 0).astype(x.dtype)

def leaky_relu(x, alpha=0.01):
    "x for x ≥ 0, αx for x < 0 (α = 0.01 keeps a small gradient alive for negative inputs)."
    x = _asfloat(x, 'leaky_relu'); xp = get_array_module(x)
    return xp.where(x >= 0, x, alpha * x).astype(x.dtype, copy=False)

def leaky_relu_grad(x, alpha=0.01):
    "1 for x ≥ 0, α for x < 0."
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
    "∂rrelu/∂x: 1 for x ≥ 0, α for x < 0 (same `alpha` or `rng` state as the forward call)."
    x = _asfloat(x, 'rrelu_grad'); xp = get_array_module(x)
    a = rrelu_alpha(x.shape, lower, upper, training, rng) if alpha is None else alpha
    return xp.where(x >= 0, 1, xp.asarray(a) * xp.ones_like(x)).astype(x.dtype)

def elu(x, alpha=1.0):
    "x for x > 0, α(e^x - 1) for x ≤ 0. `expm1` keeps precision near 0; exp only sees x ≤ 0."
    x = _asfloat(x, 'elu'); xp = get_array_module(x)
    return xp.where(x > 0, x, alpha * xp.expm1(xp.minimum(x, 0))).astype(x.dtype, copy=False)

def elu_grad(x, alpha=1.0):
    "1 for x > 0, αe^x for x ≤ 0."
    x = _asfloat(x, 'elu_grad'); xp = get_array_module(x)
    return xp.where(x > 0, 1, alpha * xp.exp(xp.minimum(x, 0))).astype(x.dtype, copy=False)

def swish(x, beta=1.0):
    "Swish (Ramachandran et al. 2017): x·σ(βx). β = 1 is SiLU; β → ∞ tends to ReLU, β = 0 gives x/2."
    x = _asfloat(x, 'swish')
    return x * sigmoid(beta * x)

def swish_grad(x, beta=1.0):
    "d/dx xσ(βx) = σ(βx) + βx·σ(βx)(1-σ(βx))."
    x = _asfloat(x, 'swish_grad')
    s = sigmoid(beta * x)
    return s + beta * x * s * (1 - s)

def softplus(x):
    "log(1 + e^x), a smooth ReLU; computed as logaddexp(0, x), finite for every finite x."
    x = _asfloat(x, 'softplus'); xp = get_array_module(x)
    return xp.logaddexp(xp.zeros((), x.dtype), x)

def softplus_grad(x):
    "d softplus/dx = σ(x)."
    return sigmoid(x)

def hard_sigmoid(x):
    "Piecewise-linear sigmoid clip(0.2x + 0.5, 0, 1) (Theano / Keras 2 definition)."
    x = _asfloat(x, 'hard_sigmoid'); xp = get_array_module(x)
    return xp.clip(0.2 * x + 0.5, 0, 1).astype(x.dtype, copy=False)

def hard_sigmoid_grad(x):
    "0.2 inside (-2.5, 2.5), 0 outside."
    x = _asfloat(x, 'hard_sigmoid_grad'); xp = get_array_module(x)
    return xp.where(xp.abs(x) < 2.5, 0.2, 0.0).astype(x.dtype)

def lecun_tanh(x):
    "LeCun's scaled tanh 1.7159·tanh(2x/3) (LeCun et al. 1998): f(±1) ≈ ±1 and unit gain near 0."
    x = _asfloat(x, 'lecun_tanh'); xp = get_array_module(x)
    return 1.7159 * xp.tanh(2 * x / 3)

def lecun_tanh_grad(x):
    "1.7159·(2/3)·(1 - tanh²(2x/3))."
    x = _asfloat(x, 'lecun_tanh_grad'); xp = get_array_module(x)
    t = xp.tanh(2 * x / 3)
    return 1.7159 * 2 / 3 * (1 - t * t)

def linear(x):
    "Identity activation."
    return _asfloat(x, 'linear')

def linear_grad(x):
    "Derivative of the identity: ones."
    x = _asfloat(x, 'linear_grad'); xp = get_array_module(x)
    return xp.ones_like(x)

# %% [markdown]
# Softmax and log-softmax are not elementwise. Subtracting the maximum along
# `axis` leaves the result unchanged (it cancels between numerator and
# denominator) and makes every exponent ≤ 0, so nothing overflows.

# %%
#| export
def softmax(x, axis=-1):
    "softmax along `axis`: exp(x - max) / Σ exp(x - max). Any shape; rows sum to 1."
    x = _asfloat(x, 'softmax'); xp = get_array_module(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)

def log_softmax(x, axis=-1):
    "log softmax along `axis`: (x - max) - log Σ exp(x - max). Finite for any finite `x`."
    x = _asfloat(x, 'log_softmax'); xp = get_array_module(x)
    z = x - x.max(axis=axis, keepdims=True)
    return z - xp.log(xp.exp(z).sum(axis=axis, keepdims=True))

def softmax_vjp(s, dy, axis=-1):
    """Backward of `s = softmax(x)`: given dL/ds (`dy`, shape of `s`) return dL/dx = s ⊙ (dy - Σ dy⊙s).
    The Jacobian diag(s) - ssᵀ is never formed."""
    return s * (dy - (dy * s).sum(axis=axis, keepdims=True))

def log_softmax_vjp(logp, dy, axis=-1):
    "Backward of `logp = log_softmax(x)`: dL/dx = dy - softmax(x)·Σ dy."
    xp = get_array_module(logp)
    return dy - xp.exp(logp) * dy.sum(axis=axis, keepdims=True)

# %% [markdown]
# A registry gives layers and models the Keras names.

# %%
#| export
_ACTIVATIONS = {
    'linear': (linear, linear_grad), 'sigmoid': (sigmoid, sigmoid_grad), 'tanh': (tanh, tanh_grad),
    'relu': (relu, relu_grad), 'leaky_relu': (leaky_relu, leaky_relu_grad), 'rrelu': (rrelu, rrelu_grad),
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

# %% [markdown]
# Every derivative is checked against the Richardson difference in float64, at
# points away from the kinks (ReLU-like functions are not differentiable at 0).

# %%
_x = np.concatenate([np.linspace(-4, -0.05, 40), np.linspace(0.05, 4, 40)])   # float64, no kinks
_cases = [(sigmoid, sigmoid_grad, {}), (tanh, tanh_grad, {}), (relu, relu_grad, {}),
          (leaky_relu, leaky_relu_grad, {}), (leaky_relu, leaky_relu_grad, {'alpha': 0.2}),
          (prelu, prelu_grad, {'alpha': 0.3}), (elu, elu_grad, {}), (elu, elu_grad, {'alpha': 0.5}),
          (swish, swish_grad, {}), (swish, swish_grad, {'beta': 2.5}), (softplus, softplus_grad, {}),
          (hard_sigmoid, hard_sigmoid_grad, {}), (lecun_tanh, lecun_tanh_grad, {}), (linear, linear_grad, {})]
_xh = _x[np.abs(np.abs(_x) - 2.5) > 0.05]                                     # hard sigmoid kinks at ±2.5
for f, df, kw in _cases:
    num = derivative(lambda t: f(t, **kw), _xh, 1e-3, 'richardson')
    err = rel_error(df(_xh, **kw), num)
    assert err < 1e-9, (f.__name__, kw, err)
# randomized ReLU: same slopes forward and backward
_a = rrelu_alpha(_xh.shape, training=True, rng=0)
assert ((_a >= 1/8) & (_a <= 1/3)).all()
assert rel_error(rrelu_grad(_xh, alpha=_a), derivative(lambda t: rrelu(t, alpha=_a), _xh, 1e-3, 'richardson')) < 1e-9
test_eq(rrelu(np.array([-2.]), training=False), np.array([-2 * (1/8 + 1/3) / 2]))
test_eq(rrelu(_xh, training=True, rng=5), rrelu(_xh, training=True, rng=5))
test_fail(lambda: rrelu_alpha(3, lower=0.5, upper=0.1), contains='lower <= upper')
# PReLU: the alpha gradient
test_close(prelu_grad_alpha(_xh, 0.3), derivative(lambda a: prelu(_xh, a), 0.3, 1e-3, 'central'), eps=1e-9)
# values
test_close(sigmoid(np.array([-1., 0, 1])), [0.26894142, 0.5, 0.73105858])
test_close(softplus(np.array([-1., 0, 1])), [0.31326169, 0.69314718, 1.31326169])
test_close(lecun_tanh(np.array([1., -1.])), [1.0000, -1.0000], eps=2e-3)
test_eq(relu(np.array([-1., 0, 2])), np.array([0., 0, 2]))

# %% [markdown]
# Stability: each function is finite for inputs as large as $|x| = 10^4$ (a naive
# $1/(1+e^{-x})$ overflows at $x \approx -710$ in float64 and $-89$ in float32), and
# float32 stays float32.

# %%
_big = np.array([-1e4, -1e3, -100., -20., 0., 20., 100., 1e3, 1e4])
for dt in (np.float32, np.float64):
    xb_ = _big.astype(dt)
    for f, df, kw in _cases:
        with np.errstate(over='raise', invalid='raise', divide='raise'):   # an overflow raises here, not just warns
            y, dy = f(xb_, **kw), df(xb_, **kw)
        assert np.isfinite(y).all() and np.isfinite(dy).all(), f.__name__
        test_eq(y.dtype, dt)
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        test_close(sigmoid(xb_), [0, 0, 0, 2.06e-9, 0.5, 1, 1, 1, 1], eps=1e-6)
        s, ls = softmax(xb_), log_softmax(xb_)
    assert np.isfinite(s).all() and np.isfinite(ls).all()
    test_close(s.sum(), 1.0, eps=1e-6); test_eq(ls[-1], 0)
test_fail(lambda: sigmoid(np.array(['a'])), contains='dtype')
test_eq(sigmoid(np.array([0, 1])).dtype, np.float32)      # integers become the default float

# %%
_X = np.random.default_rng(3).standard_normal((4, 5))
test_close(softmax(_X).sum(-1), np.ones(4))
test_close(softmax(_X, axis=0).sum(0), np.ones(5))
test_close(np.exp(log_softmax(_X)), softmax(_X))
test_close(softmax(_X + 1000.), softmax(_X))                 # shift invariance
_G = np.random.default_rng(4).standard_normal((4, 5))
assert check_grad(lambda x: np.sum(softmax(x) * _G), lambda x: softmax_vjp(softmax(x), _G), _X) < 1e-9
assert check_grad(lambda x: np.sum(log_softmax(x) * _G), lambda x: log_softmax_vjp(log_softmax(x), _G), _X) < 1e-9
test_eq(get_activation('ReLU'), (relu, relu_grad))
test_eq(get_activation(None), (linear, linear_grad))
test_fail(lambda: get_activation('gelu'), contains="got 'gelu'")

