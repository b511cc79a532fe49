# %% [markdown]
# # Numerical gradients and gradient checking

# %%
#| default_exp gradcheck

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import check_array, precision

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %% [markdown]
# ## Numerical differentiation

# %%
#| export
METHODS = ('forward', 'backward', 'central', 'richardson')

def derivative(f, x, h=1e-5, method='central'):
    """Finite-difference derivative of a scalar function (or an elementwise function of an array) at `x`.

    * `'forward'`  (f(x+h) - f(x))/h, error O(h);
    * `'backward'` (f(x) - f(x-h))/h, error O(h);
    * `'central'`  (f(x+h) - f(x-h))/(2h), error O(h²);
    * `'richardson'` (4·D₀(h) - D₀(2h))/3 with D₀ the central difference, error O(h⁴).

    Returns an array shaped like `f(x)` (a float for scalar `x`)."""
    if method == 'forward': return (f(x + h) - f(x)) / h
    if method == 'backward': return (f(x) - f(x - h)) / h
    if method == 'central': return (f(x + h) - f(x - h)) / (2 * h)
    if method == 'richardson':
        d1, d2 = derivative(f, x, h, 'central'), derivative(f, x, 2 * h, 'central')
        return (4 * d1 - d2) / 3
    raise ValueError(f"derivative expected method in {METHODS}, got {method!r}")

# %%
for m, tol in [('forward', 1e-4), ('backward', 1e-4), ('central', 1e-9), ('richardson', 1e-10)]:
    test_close(derivative(np.sin, 1.0, 1e-5, m), np.cos(1.0), eps=tol)
test_close(derivative(np.exp, np.array([0., 1., 2.])), np.exp([0., 1., 2.]), eps=1e-8)   # elementwise f
test_fail(lambda: derivative(np.sin, 1.0, method='five-point'), contains='richardson')

# %% [markdown]
# A gradient is many partial derivatives. `numerical_grad` nudges one entry at
# a time, **in place**, and puts it back: the function being differentiated
# often reads the array through a reference it already holds (a layer's
# `params['W']`), so a perturbed copy would go unnoticed.

# %%
#| export
def numerical_grad(f, x, h=1e-5):
    """Central-difference gradient of a scalar function `f` at the array `x`; same shape as `x`.

    `x` is perturbed entry by entry in place and restored, so `f` may read `x` through
    any reference. Use float64: in float32 the round-off error ε/h swamps the result.
    A Python scalar `x` gives a float."""
    if np.ndim(x) == 0 and not isinstance(x, np.ndarray):
        return float(derivative(lambda t: float(f(t)), float(x), h, 'central'))
    if not isinstance(x, np.ndarray) or x.dtype.kind != 'f':
        raise ValueError(f"numerical_grad expected x as a floating ndarray (it is perturbed in place), got "
                         f"{type(x).__name__} of dtype {getattr(x, 'dtype', None)}")
    g = np.zeros(x.shape, dtype=np.float64)
    for idx in np.ndindex(x.shape):
        old = x[idx]
        x[idx] = old + h; fp = float(f(x))
        x[idx] = old - h; fm = float(f(x))
        x[idx] = old
        g[idx] = (fp - fm) / (2 * h)
    return g

def rel_error(a, n):
    "Relative error ‖a-n‖/(‖a‖+‖n‖) of two arrays (0 when both are zero); scale-free, in [0, 1]."
    a, n = np.asarray(a, dtype=np.float64), np.asarray(n, dtype=np.float64)
    if a.shape != n.shape: raise ValueError(f"rel_error expected arrays of equal shape, got {a.shape} and {n.shape}")
    den = np.linalg.norm(a) + np.linalg.norm(n)
    return 0.0 if den == 0 else float(np.linalg.norm(a - n) / den)

def check_grad(f, grad_f, x, h=1e-5):
    """Relative error between the analytic gradient `grad_f(x)` and central differences of the
    scalar function `f` at `x` (a scalar or a float array). Below ~1e-7 in float64 means correct."""
    if isinstance(x, np.ndarray):
        x = x.astype(np.float64, copy=True)
        a = np.array(grad_f(x), dtype=np.float64)
        return rel_error(a, numerical_grad(f, x, h))
    x = float(x)
    return rel_error(float(grad_f(x)), numerical_grad(f, x, h))

# %%
A = np.random.default_rng(0).standard_normal((3, 4))
w = np.random.default_rng(1).standard_normal(4)
f = lambda w: np.sum(np.tanh(A @ w))                     # f: R^4 -> R
grad_f = lambda w: A.T @ (1 - np.tanh(A @ w) ** 2)
assert check_grad(f, grad_f, w) < 1e-9
assert check_grad(f, lambda w: 1.01 * grad_f(w), w) > 1e-3   # a 1% error is caught
w0 = w.copy(); numerical_grad(f, w); test_eq(w, w0)           # restored after the in-place nudges
test_eq(rel_error(np.zeros(3), np.zeros(3)), 0.0)
test_close(rel_error(np.array([1., 0]), np.array([-1., 0])), 1.0)
test_fail(lambda: numerical_grad(f, np.arange(4)), contains='floating ndarray')
test_fail(lambda: rel_error(np.zeros(2), np.zeros(3)), contains='equal shape')

# %% [markdown]
# ### Checking a whole layer
#
# A layer computes $y = \text{layer}(x; \theta)$ and its `backward(dy)` must return
# $\partial L/\partial x$ and fill `grads` with $\partial L/\partial\theta$ for any upstream
# gradient `dy`. Taking the scalar $L = \sum_i y_i\,g_i$ with a fixed random $g$ makes
# `dy = g` exactly, so one random $g$ tests the whole vector–Jacobian product, not just
# its sum. Stochastic layers (dropout) are made deterministic by reseeding their
# `rng` before every forward pass: the same mask is drawn each time.

# %%
#| export
def check_layer_grad(layer, x, training=True, seed=0, h=1e-5):
    """Gradient-check any object with `forward(x, training)`, `backward(dy)`, `params` and `grads`.

    `x`: the input batch (copied to float64). The loss is L = Σ forward(x)·g for a random g
    (seeded by `seed`), so `backward(g)` must return dL/dx (shape of `x`) and fill
    `grads[k]` (shape of `params[k]`). Runs under `precision(float64)`: build the layer here
    or inside `precision(np.float64)`. When the layer has an `rng` attribute it is reseeded
    with `seed` before every forward. Returns `{'x': err, name: err, ...}` relative errors."""
    with precision(np.float64):
        x = np.array(x, dtype=np.float64)
        has_rng = hasattr(layer, 'rng')
        rng0 = layer.rng if has_rng else None
        def fwd(inp):
            if has_rng: layer.rng = np.random.default_rng(seed)
            return layer.forward(inp, training=training)
        try:
            if callable(layer):                       # builds the parameters on first call
                if has_rng: layer.rng = np.random.default_rng(seed)
                layer(x, training=training)
            for k, p in layer.params.items():
                if np.asarray(p).dtype != np.float64:
                    raise ValueError(f"check_layer_grad expected float64 parameters (build the layer inside "
                                     f"`precision(np.float64)`), got params[{k!r}] of dtype {p.dtype}")
            y = fwd(x)
            g = np.random.default_rng(seed).standard_normal(np.shape(y))
            y = fwd(x)
            dx = np.array(layer.backward(g), dtype=np.float64)
            if dx.shape != x.shape:
                raise ValueError(f"check_layer_grad expected backward to return dx of shape {x.shape}, got {dx.shape}")
            grads = {k: np.array(layer.grads[k], dtype=np.float64) for k in layer.params}
            loss = lambda inp: float(np.sum(fwd(inp) * g))
            errs = {'x': rel_error(dx, numerical_grad(loss, x.copy(), h))}
            for k, p in layer.params.items():
                errs[k] = rel_error(grads[k], numerical_grad(lambda _: loss(x), p, h))
            return errs
        finally:
            if has_rng: layer.rng = rng0

# %% [markdown]
# A minimal layer to try it on: an affine map followed by inverted dropout, written with
# nothing but the four members the checker needs. A deliberately wrong backward must fail.

# %%
class _AffineDropout:
    "y = dropout(x @ W + b); a test fixture, not part of the library."
    def __init__(self, d_in, d_out, rate=0.5, rng=0, wrong=False):
        g = np.random.default_rng(rng)
        self.params = {'W': g.standard_normal((d_in, d_out)), 'b': g.standard_normal(d_out)}
        self.grads, self.rate, self.rng, self.wrong = {}, rate, np.random.default_rng(rng), wrong
    def forward(self, x, training=False):
        z = x @ self.params['W'] + self.params['b']
        m = (self.rng.random(z.shape) >= self.rate) / (1 - self.rate) if training else np.ones_like(z)
        self.cache = (x, m)
        return z * m
    def backward(self, dy):
        x, m = self.cache
        dz = dy * m
        self.grads = {'W': x.T @ dz, 'b': dz.sum(0) * (1.1 if self.wrong else 1)}
        return dz @ self.params['W'].T

xb = np.random.default_rng(2).standard_normal((5, 3))
errs = check_layer_grad(_AffineDropout(3, 4), xb)
test_eq(sorted(errs), ['W', 'b', 'x'])
assert max(errs.values()) < 1e-8, errs
assert check_layer_grad(_AffineDropout(3, 4, wrong=True), xb)['b'] > 1e-3
lay = _AffineDropout(3, 4); r = lay.rng
check_layer_grad(lay, xb); test_eq(lay.rng is r, True)                  # the layer's own rng is given back
lay.params = {k: v.astype(np.float32) for k, v in lay.params.items()}
test_fail(lambda: check_layer_grad(lay, xb), contains='float64 parameters')
errs

