# %% [markdown]
# # Foundations III: numerical gradients and gradient checking
#
# > Finite differences, their error orders, and the gradient checker that every backward pass in this book must pass; plus exponentially weighted averages, the smoother inside momentum, Adam and batch norm.
#
# ## Purpose
#
# Every layer in this book has a hand-written backward pass, and a backward pass
# is easy to get subtly wrong: a missing transpose, a sum over the wrong axis, a
# forgotten bias gradient (source 002's XOR network never updates its biases).
# The loss still goes down, a little, so training does not reveal the bug. A
# *gradient check* does: compare the analytic gradient with a numerical one
# computed from nothing but forward passes.
#
# This part derives the finite-difference formulas and their errors, builds the
# checker `check_grad` and its layer version `check_layer_grad`, reproduces the
# sources' numbers, and closes chapter 01 with the full table of source numbers
# against ours.
#
# ## Derivation: finite differences and their errors
#
# Taylor's theorem around $x$ gives, for a smooth $f$,
#
# $$f(x\pm h) = f(x) \pm hf'(x) + \tfrac{h^2}{2}f''(x) \pm \tfrac{h^3}{6}f'''(x) + \tfrac{h^4}{24}f^{(4)}(x) \pm \dots$$
#
# * **Forward difference** $D_+(h) = \frac{f(x+h) - f(x)}{h} = f'(x) + \tfrac h2 f''(x) + O(h^2)$:
#   error $O(h)$. The **backward difference** $D_-(h) = \frac{f(x) - f(x-h)}{h}$ is the same
#   with $-h$: also $O(h)$.
# * **Central difference** $D_0(h) = \frac{f(x+h) - f(x-h)}{2h}$: subtracting the two
#   expansions cancels the even powers, so
#   $D_0(h) = f'(x) + \tfrac{h^2}{6}f'''(x) + \tfrac{h^4}{120}f^{(5)}(x) + \dots$, error $O(h^2)$.
# * **Richardson extrapolation** removes the $h^2$ term as well: since
#   $D_0(2h) = f' + \tfrac{4h^2}{6}f''' + O(h^4)$,
#   $\frac{4D_0(h) - D_0(2h)}{3} = f'(x) + O(h^4)$.
#
# That is the *truncation* error, which shrinks with $h$. The other error grows as
# $h$ shrinks: $f(x\pm h)$ is computed with a relative rounding error of about the
# machine epsilon $\varepsilon$ ($2.2\times10^{-16}$ in float64, $1.2\times10^{-7}$ in float32),
# and dividing the difference by $h$ magnifies it to about $\varepsilon|f|/h$. The total
# error of a method of order $p$ is roughly $C_1h^p + C_2\varepsilon/h$, smallest at
# $h^\ast \propto \varepsilon^{1/(p+1)}$:
#
# | method | truncation | best $h$ (float64) | best error |
# |---|---|---|---|
# | forward / backward | $O(h)$ | $\sim\varepsilon^{1/2} \approx 10^{-8}$ | $\sim10^{-8}$ |
# | central | $O(h^2)$ | $\sim\varepsilon^{1/3} \approx 10^{-5}$ | $\sim10^{-11}$ |
# | Richardson | $O(h^4)$ | $\sim\varepsilon^{1/5} \approx 10^{-3}$ | $\sim10^{-13}$ |
#
# Hence the rules of gradient checking: use central differences with
# $h\approx10^{-5}$, and **float64**. In float32 the best central difference is only
# good to about $\varepsilon^{2/3}\approx 2\times10^{-5}$, which swamps the errors we look for.
#
# **Relative error.** An absolute difference means nothing without a scale (a
# gradient of $10^{-6}$ and one of $10^{6}$ differ in what "close" means). We
# report
#
# $$\frac{\lVert \mathbf g_a - \mathbf g_n\rVert}{\lVert \mathbf g_a\rVert + \lVert \mathbf g_n\rVert}\in[0, 1],$$
#
# the measure of source 002 and CS231n: below $10^{-7}$ is right, $10^{-5}$ is
# suspicious, above $10^{-3}$ is a bug. The book's tests require $< 10^{-6}$.
#
# **Cost.** A numerical gradient needs two forward passes *per parameter*, so it
# is only for checking small instances, never for training (Ketkar, ch. 9).

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

# %%
import matplotlib.pyplot as plt
# %matplotlib inline

# %% [markdown]
# ## Implementation
#
# `derivative` differentiates a scalar function, or an elementwise function of
# an array, with any of the four formulas.

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
# For a large parameter array a full numerical gradient costs two forward
# passes per entry. A cheaper, weaker check projects both gradients on one
# random unit direction $\mathbf v$: the numerical directional derivative
# $\bigl(f(\mathbf x + \tfrac h2\mathbf v) - f(\mathbf x - \tfrac h2\mathbf v)\bigr)/h$ needs two
# evaluations whatever the size of $\mathbf x$, and must equal $\nabla f\cdot\mathbf v$. This
# is what HIPS Autograd's `quick_grad_check` does (Ketkar listing 9-2), with
# $h = 10^{-4}$; a bug that happens to be orthogonal to $\mathbf v$ escapes it, so the
# book's tests use the full check.

# %%
#| export
def directional_check(f, grad_f, x, h=1e-4, rng=0):
    """Autograd-style quick check: `(numeric, analytic)` directional derivatives of `f` at `x` along
    a random unit direction v (seeded by `rng`): (f(x + h/2·v) - f(x - h/2·v))/h and ∇f(x)·v.
    Two evaluations of f for any size of `x` (a scalar or a float array)."""
    g = np.random.default_rng(rng)
    if isinstance(x, np.ndarray):
        x = x.astype(np.float64, copy=True)
        v = g.standard_normal(x.shape); v /= np.linalg.norm(v)
        return float((f(x + h / 2 * v) - f(x - h / 2 * v)) / h), float(np.sum(np.asarray(grad_f(x)) * v))
    v = 1.0 if g.standard_normal() >= 0 else -1.0
    x = float(x)
    return float((f(x + h / 2 * v) - f(x - h / 2 * v)) / h), float(grad_f(x)) * v

# %%
num_d, ana_d = directional_check(f, grad_f, w)
test_close(num_d, ana_d, eps=1e-8)
num_bad, ana_bad = directional_check(f, lambda w: 1.01 * grad_f(w), w)
assert abs(num_bad - ana_bad) > 1e-4 * abs(ana_bad)            # a 1% error shows here too
test_close(directional_check(np.sin, np.cos, 0.5)[0] ** 2, np.cos(0.5) ** 2, eps=1e-9)

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

# %% [markdown]
# ## Experiments
#
# ### The error orders, measured
#
# The error of each formula for $f = \exp$ at $x = 1$ (where every derivative is
# $e$), over $h$ from $10^{-13}$ to 1, in float64. On the right of each V the
# truncation error grows with slope $p$, the order of the method; on the left the
# rounding error grows as $h$ shrinks, with slope $-1$. The slopes are fitted on
# the truncation-dominated range of each method.

# %%
hs = np.logspace(0, -13, 131)
x0, exact = 1.0, np.exp(1.0)
errs_h = {m: np.array([abs(derivative(np.exp, x0, h, m) - exact) for h in hs]) for m in METHODS}
fit_range = {'forward': (1e-1, 1e-4), 'backward': (1e-1, 1e-4), 'central': (1e-1, 1e-3), 'richardson': (3e-1, 3e-2)}
expected = {'forward': 1, 'backward': 1, 'central': 2, 'richardson': 4}
fig, ax = plt.subplots(figsize=(8, 5))
print(f"{'method':11s} {'expected order':>15s} {'fitted slope':>13s} {'best h':>9s} {'best error':>11s}")
for i, m in enumerate(METHODS):
    e = np.maximum(errs_h[m], 1e-17)
    ax.loglog(hs, e, label=m, color=f'C{i}', lw=1.4)
    hi, lo = fit_range[m]
    sel = (hs <= hi) & (hs >= lo)
    slope = np.polyfit(np.log10(hs[sel]), np.log10(e[sel]), 1)[0]
    k = np.argmin(e)
    print(f"{m:11s} {expected[m]:>15d} {slope:>13.3f} {hs[k]:>9.1e} {e[k]:>11.1e}")
for p, c in [(1, 'C0'), (2, 'C2'), (4, 'C3')]:
    ax.loglog(hs[hs > 1e-3], 0.3 * hs[hs > 1e-3] ** p, ls=':', color=c, lw=1)
ax.loglog(hs[hs < 1e-4], 3e-16 / hs[hs < 1e-4], ls='--', color='grey', lw=1, label='round-off ε/h')
ax.set_xlabel('h'); ax.set_ylabel('|error|'); ax.set_ylim(1e-17, 10)
ax.set_title("error of finite differences of exp at x = 1 (dotted: slopes 1, 2, 4)")
ax.legend(); ax.grid(alpha=0.3, which='both')
plt.tight_layout(); plt.show()

# %%
# The fitted orders, as a test (the printed table above comes from the same data).
for m in METHODS:
    hi, lo = fit_range[m]; sel = (hs <= hi) & (hs >= lo)
    slope = np.polyfit(np.log10(hs[sel]), np.log10(errs_h[m][sel]), 1)[0]
    assert abs(slope - expected[m]) < 0.1, (m, slope)

# %% [markdown]
# The same experiment in float32 shows why the gradient checks of this book run
# in float64: the best central difference is only good to about $10^{-5}$.

# %%
f32 = lambda t: np.exp(np.float32(t))
for m in ('forward', 'central', 'richardson'):
    e32 = np.array([abs(float(derivative(f32, np.float32(x0), np.float32(h), m)) - exact) for h in hs[hs > 1e-7]])
    print(f"float32 {m:10s}: best error {e32.min():.1e} at h = {hs[hs > 1e-7][e32.argmin()]:.0e}"
          f"   (float64: {errs_h[m].min():.1e})")

# %% [markdown]
# ### Source 002: the derivative of $x^2$ at 3
#
# *Hands-On Deep Learning Algorithms* (ch. 1) checks $f(x) = x^2$ at $x = 3$
# "with $\varepsilon = 10^{-2}$" and prints the numerical derivative
# 6.000000000012662. For a quadratic the central difference is *exact* in real
# arithmetic ($f''' = 0$), so what it prints is pure rounding error — and the
# rounding error depends on $\varepsilon$. With $\varepsilon = 10^{-2}$ float64 gives
# 5.999999999999872; the printed value comes out, to every digit, with
# $\varepsilon = 10^{-4}$. So the book's printout was made with a different epsilon
# from the one its text states. We print both.

# %%
f_sq, df_sq = lambda x: x ** 2, lambda x: 2 * x
d_stated = derivative(f_sq, 3.0, 1e-2, 'central')
d_replica = derivative(f_sq, 3.0, 1e-4, 'central')
print(f"analytic                 : {df_sq(3.0)}")
print(f"central, eps = 1e-2 (text): {d_stated!r}")
print(f"central, eps = 1e-4       : {d_replica!r}   <- source 002 prints 6.000000000012662")
print(f"relative error (check_grad, h = 1e-5): {check_grad(f_sq, df_sq, 3.0):.2e}")
test_eq(d_replica, 6.000000000012662)
test_close(d_stated, 6.0, eps=1e-12)

# %% [markdown]
# The same book checks a network by perturbing **all** weights at once
# (`weights_plus = weights + epsilon`). That measures the derivative along the
# direction $(1, 1, \dots, 1)$, i.e. the *sum* of the partial derivatives, not the
# gradient; comparing it with the gradient by the relative-error formula
# compares vectors of different meaning. `numerical_grad` perturbs one
# parameter at a time. On $f(\mathbf w) = \sum\tanh(A\mathbf w)$:

# %%
A4 = np.random.default_rng(0).standard_normal((3, 4)); w4 = np.random.default_rng(1).standard_normal(4)
f4 = lambda w: np.sum(np.tanh(A4 @ w)); g4 = lambda w: A4.T @ (1 - np.tanh(A4 @ w) ** 2)
eps = 1e-5
all_at_once = (f4(w4 + eps) - f4(w4 - eps)) / (2 * eps)               # source 002's check: one number
print("analytic gradient         :", np.round(g4(w4), 6))
print("per-parameter (ours)      :", np.round(numerical_grad(f4, w4.copy()), 6))
print(f"all weights at once       : {all_at_once:.6f}  (= sum of the partials {g4(w4).sum():.6f})")
test_close(all_at_once, g4(w4).sum(), eps=1e-8)

# %% [markdown]
# ### Ketkar: the gradient of $\sqrt{x_1^2 + x_2^2}$ at $(1, 2)$
#
# Ketkar's running example of chapter 9 is $f(x_1, x_2) = \sqrt{x_1^2 + x_2^2}$, with
# $\nabla f = (x_1, x_2)/f$, so at $(1, 2)$ the gradient is
# $(1, 2)/\sqrt5 = (0.4472, 0.8944)$. His listing 9-2 runs Autograd's
# `quick_grad_check` and prints "numeric grad: 0.447213595409, analytic grad:
# 0.4472135955": the directional check above, along a random unit direction
# (for a scalar, $\pm1$), with $h = 10^{-4}$, printed by Python 2's `str` with 12
# significant digits. Ours, full and quick:

# %%
fn = lambda v: np.sqrt(np.sum(v ** 2))
gn = lambda v: v / fn(v)
x12 = np.array([1.0, 2.0])
num12 = numerical_grad(fn, x12.copy())
print(f"f(1, 2)           = {fn(x12):.4f}")
print(f"analytic gradient = {gn(x12)}")
print(f"numerical (h=1e-5)= {num12}")
print(f"relative error    = {check_grad(fn, gn, x12):.2e}")
qn, qa = directional_check(lambda t: np.sqrt(t ** 2 + 2.0 ** 2), lambda t: t / np.sqrt(t ** 2 + 4.0), 1.0)
print(f"quick check as Autograd (h = 1e-4, Python 2 str): numeric grad: {qn:.12g}, analytic grad: {qa:.10g}")
print( "Ketkar 9-2 prints                               : numeric grad: 0.447213595409, analytic grad: 0.4472135955")
test_eq((f'{qn:.12g}', f'{qa:.10g}'), ('0.447213595409', '0.4472135955'))
test_close(num12, [0.4472, 0.8944], eps=1e-4)
assert check_grad(fn, gn, x12) < 1e-9

# %% [markdown]
# ## Exponentially weighted averages
#
# Momentum, RMSprop, Adam and batch norm's running statistics all keep an
# exponentially weighted average (EWA) of a noisy sequence $\theta_1, \theta_2, \dots$:
#
# $$v_0 = 0,\qquad v_t = \beta v_{t-1} + (1-\beta)\,\theta_t .$$
#
# Unrolled, $v_t = (1-\beta)\sum_{k=1}^{t}\beta^{t-k}\theta_k$: weights decaying by β per
# step that sum to $1 - \beta^t$, so $v_t$ averages over roughly the last
# $1/(1-\beta)$ values (10 for β = 0.9). Because the weights sum to $1-\beta^t < 1$,
# the early $v_t$ are biased toward the initial 0; dividing by that sum gives the
# **bias-corrected** average $\hat v_t = v_t/(1-\beta^t)$, which matters only while
# $\beta^t$ is not small.
#
# Source 000 (§3.6) applies this to 48 monthly temperatures of Paris. Its code
# differs from the formula in two ways, and its printed numbers depend on both:
#
# 1. the list it returns stores $v$ *before* adding $\theta_t$, so it lags by one:
#    its last value is $v_{47}$, not $v_{48}$;
# 2. its bias-corrected list divides that lagged $v_{t-1}$ by $(1-\beta^{t})$, an
#    index mismatch.
#
# (Its prose also misprints the weight as "$0.1-\beta$".) We implement the formula,
# and reproduce the source's lists as labelled replicas.

# %%
paris = np.array([4, 8, 2, 6, 8, 2, 11, 6, 10, 7, 11, 7, 12, 14, 11, 10, 14, 17, 17, 15, 20, 20, 21, 18,
                  22, 24, 21, 21, 21, 22, 20, 21, 17, 18, 16, 21, 13, 14, 14, 19, 8, 8, 8, 12, 7, 7, 6, 8], float)

def ewa(theta, beta, bias_correction=False):
    "v_t = βv_{t-1} + (1-β)θ_t for t = 1..T (v_0 = 0), optionally divided by 1-β^t; shape (T,)."
    v, out = 0.0, np.empty(len(theta))
    for t, th in enumerate(theta, start=1):      # a recurrence: each step needs the previous one
        v = beta * v + (1 - beta) * th
        out[t - 1] = v / (1 - beta ** t) if bias_correction else v
    return out

def ewa_source000(theta, beta, bias_correction=False):
    "REPLICA of source 000's lists: stores v_{t-1} (lagged by one) and divides it by 1-β^t."
    v, out = 0.0, []
    for t, th in enumerate(theta, start=1):
        out.append(v / (1 - beta ** t) if bias_correction else v)
        v = beta * v + (1 - beta) * th
    return np.array(out)

test_eq(len(ewa(paris, 0.9)), 48)
test_close(ewa(paris, 0.5)[:3], [2.0, 5.0, 3.5])                          # by hand
test_close(ewa(np.full(5, 7.), 0.9, bias_correction=True), np.full(5, 7.))  # a constant is recovered exactly

rows_ewa = [
    ('β = 0.9, last value', '12.261606029039104', ewa_source000(paris, 0.9)[-1], ewa(paris, 0.9)[-1]),
    ('β = 0.9, bias-corrected, last', '12.340122345830757', ewa_source000(paris, 0.9, True)[-1], ewa(paris, 0.9, True)[-1]),
    ('β = 0.09, last value', '6.093383', ewa_source000(paris, 0.09)[-1], ewa(paris, 0.09)[-1]),
    ('β = 0.09, bias-corrected, last', '6.093383', ewa_source000(paris, 0.09, True)[-1], ewa(paris, 0.09, True)[-1]),
]
rows_ewa = [(q, s, float(rep), float(ok)) for q, s, rep, ok in rows_ewa]
print(f"{'EWA of the Paris temperatures':32s} {'source 000':>20s} {'replica (lagged)':>20s} {'ours (formula)':>20s}")
for q, s, rep, ok in rows_ewa: print(f"{q:32s} {s:>20s} {rep!r:>20} {ok!r:>20}")
test_eq(ewa_source000(paris, 0.9)[-1], 12.261606029039104)
test_eq(ewa_source000(paris, 0.9, True)[-1], 12.340122345830757)
test_close(ewa_source000(paris, 0.09)[-1], 6.093383, eps=1e-6)

# %%
months = np.arange(1, 49)
fig, axs = plt.subplots(1, 2, figsize=(13, 3.8), sharey=True)
ax = axs[0]
ax.scatter(months, paris, s=14, color='C0', label='temperature (°C)')
ax.plot(months, ewa(paris, 0.9), color='C3', label='EWA β=0.9')
ax.plot(months, ewa(paris, 0.9, True), color='C2', label='bias-corrected')
ax.plot(months, ewa_source000(paris, 0.9), color='C3', ls=':', label='source 000 replica (lagged)')
ax.set_title('β = 0.9: about the last 10 months'); ax.set_xlabel('month')
ax = axs[1]
ax.scatter(months, paris, s=14, color='C0')
for i, b in enumerate([0.5, 0.9, 0.98]):
    ax.plot(months, ewa(paris, b, True), color=f'C{i + 4}', label=f'bias-corrected β={b}')
ax.plot(months, ewa(paris, 0.98), color='C6', ls='--', lw=1, label='β=0.98 uncorrected')
ax.set_title('larger β: smoother, later'); ax.set_xlabel('month')
for ax in axs: ax.legend(fontsize=8); ax.grid(alpha=0.3)
plt.tight_layout(); plt.show()

# %% [markdown]
# The replica matches the source to every printed digit; the correct values
# differ because the source's list is one step behind. With β = 0.09 the
# average follows the data almost exactly ($1/(1-\beta)\approx 1.1$ values) and
# $0.09^{48}$ is 0 to machine precision, so correction changes nothing — which is
# why the source's two β = 0.09 tests agree.
#
# ## Chapter 01: our numbers beside the sources'
#
# Every source number of chapter 01, recomputed here with the package (the
# losses and activations from parts 01a and 01, the rest from this page).

# %%
from dl_from_scratch.functional import sigmoid, softmax
from dl_from_scratch.losses import BinaryCrossentropy, CategoricalCrossentropy, l1_penalty, l2_penalty, Hinge
bce, cce = BinaryCrossentropy(), CategoricalCrossentropy()
out, tgt = np.array([[0.01, 0.01, 0.01]]), np.array([[0.99, 0.99, 0.01]])
table = [
    ('σ([0,2]) sum / mean', 'source 000 §3.2', '1.380797 / 0.690398',
     f"{sigmoid(np.array([0., 2])).sum():.7f} / {sigmoid(np.array([0., 2])).mean():.7f}"),
    ('softmax([7,2,5])', 'source 002 ch. 2', '0.8756006, 0.00589975, 0.11849965',
     ', '.join(f'{t:.8g}' for t in softmax(np.array([7., 2, 5])))),
    ('BCE cost(3,[.8,.9,.4],[1,1,0])', 'source 000 §3.2', '0.279776', repr(bce(np.array([[.8, .9, .4]]), np.array([[1., 1, 0]])))),
    ('BCE mean', 'Ketkar 4-7', '3.058146503109446', repr(bce(out, tgt))),
    ('CCE', 'Ketkar 4-7', '9.16428867', repr(cce(out, tgt))),
    ('squared error', 'Ketkar 4-7', '9.16428867 (bug: CCE called)', f"{((out - tgt) ** 2).round(4).tolist()} (replica: {cce(out, tgt):.8f})"),
    ('L1 / L2 of [0,1,3]', 'Ketkar 4-8', '4.0 / 10.0', f"{l1_penalty(np.array([0., 1, 3]), 1)[0]} / {l2_penalty(np.array([0., 1, 3]), 1)[0]}"),
    ('hinge(x,1), x=-2..2', 'Ketkar 4-13', '3, 2, 1, 0, 0', ', '.join(f'{Hinge()(np.array([t]), np.ones(1)):g}' for t in (-2., -1, 0, 1, 2))),
    ("d/dx x² at 3, ε = 1e-2", 'source 002 ch. 1', '6.000000000012662', f"{d_stated!r} (ε=1e-2); {d_replica!r} (ε=1e-4)"),
    ('∇√(x1²+x2²) at (1,2)', 'Ketkar 9-1', '0.4472, 0.8944', ', '.join(f'{t:.12f}' for t in num12)),
    ('quick_grad_check numeric / analytic', 'Ketkar 9-2', '0.447213595409 / 0.4472135955', f'{qn:.12g} / {qa:.10g}'),
    ('EWA β=0.9, last', 'source 000 §3.6', '12.261606029039104', f"{rows_ewa[0][2]!r} (replica); {rows_ewa[0][3]!r} (correct)"),
    ('EWA β=0.9 bias-corrected, last', 'source 000 §3.6', '12.340122345830757', f"{rows_ewa[1][2]!r} (replica); {rows_ewa[1][3]!r} (correct)"),
    ('EWA β=0.09, last', 'source 000 §3.6', '6.093383', f"{rows_ewa[2][2]:.6f} (replica); {rows_ewa[2][3]!r} (correct)"),
    ('error orders fwd/bwd/central/Richardson', 'Ketkar ch. 9', 'O(h), O(h), O(h²), O(h⁴)',
     ', '.join(f"{np.polyfit(np.log10(hs[(hs <= fit_range[m][0]) & (hs >= fit_range[m][1])]), np.log10(errs_h[m][(hs <= fit_range[m][0]) & (hs >= fit_range[m][1])]), 1)[0]:.2f}" for m in METHODS)),
]
w0, w1, w2 = (max(len(r[i]) for r in table) for i in range(3))
print(f"{'quantity':{w0}s}  {'where':{w1}s}  {'source':{w2}s}  ours")
for q, wh, s, o in table: print(f"{q:{w0}s}  {wh:{w1}s}  {s:{w2}s}  {o}")

# %% [markdown]
# Where the two differ, the source's number comes from an error in the source,
# which the replica reproduces:
#
# * **Ketkar 4-7's squared error** is the categorical cross-entropy printed a
#   second time; the squared error is `[[0.9604, 0.9604, 0]]`.
# * **Source 002's 6.000000000012662** needs $\varepsilon = 10^{-4}$, not the
#   $10^{-2}$ its text states (either way, the error is rounding: the central
#   difference of a quadratic is exact).
# * **Source 000's EWA values** come from a list lagged by one step and, for the
#   bias-corrected one, a correction with the wrong power of β. The formula gives
#   11.835445426135195 and 11.911232854001328 for β = 0.9, and 7.82840447581329 for β = 0.09.
#
# The BCE cost and the σ mean agree once one notes the source truncates to six
# decimals rather than rounding.
#
# ## References
#
# * N. Ketkar, *Deep Learning with Python*, Apress 2017, ch. 9 (numerical differentiation, error orders, listings 9-1 and 9-2).
# * S. Ravichandiran, *Hands-On Deep Learning Algorithms with Python*, Packt 2019, ch. 1 (gradient checking).
# * *Build Your Own Deep Learning* (source 000), §3.6 (exponentially weighted averages on the Paris temperatures).
# * A. Ng, deeplearning.ai *Improving Deep Neural Networks*, week 1 (gradient checking) and week 2 (exponentially weighted averages, bias correction).
# * CS231n, *Gradient checks* (relative error and its thresholds), https://cs231n.github.io/neural-networks-3/
# * N. J. Higham, *Accuracy and Stability of Numerical Algorithms*, 2nd ed., SIAM 2002 (rounding error of finite differences).
# * L. F. Richardson, *The deferred approach to the limit*, Phil. Trans. R. Soc. A, 1927.
