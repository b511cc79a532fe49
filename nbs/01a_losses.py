# %% [markdown]
# # Loss functions

# %%
#| default_exp losses

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import check_array, get_array_module, get_dtype
from dl_from_scratch.functional import sigmoid, softmax, log_softmax

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %%
#| hide
from dl_from_scratch.gradcheck import check_grad

# %%
#| export
def _pred(y_pred, who):
    y_pred = check_array(y_pred, 'y_pred', kind='f', who=who)
    return y_pred if y_pred.dtype.kind == 'f' else y_pred.astype(get_dtype())

def _pair(y_pred, y_true, who):
    """Validate `y_pred` (float, finite) and `y_true` of the same shape; a `(N,)` target next to an
    `(N, 1)` prediction is reshaped (never silently broadcast to `(N, N)`)."""
    y_pred = _pred(y_pred, who); xp = get_array_module(y_pred)
    y_true = check_array(y_true, 'y_true', kind='fiub', who=who)
    if y_true.shape != y_pred.shape and y_pred.shape[-1:] == (1,) and y_true.shape == y_pred.shape[:-1]:
        y_true = y_true.reshape(y_pred.shape)
    if y_true.shape != y_pred.shape:
        raise ValueError(f"{who} expected y_true of shape {tuple(y_pred.shape)} (the shape of y_pred), got {tuple(y_true.shape)}")
    return y_pred, xp.asarray(y_true, dtype=y_pred.dtype)

class Loss:
    """A loss: `loss(y_pred, y_true) -> float`, the mean over the batch (and over every other axis
    but the class axis), and `loss.grad(y_pred, y_true) -> dL/dy_pred`, shaped like `y_pred`."""
    name = 'loss'
    def __call__(self, y_pred, y_true) -> float: return self.value_and_grad(y_pred, y_true)[0]
    def grad(self, y_pred, y_true): return self.value_and_grad(y_pred, y_true)[1]
    def value_and_grad(self, y_pred, y_true):
        "`(loss, dL/dy_pred)` in one pass (what a training step needs)."
        raise NotImplementedError
    def __repr__(self):
        args = ', '.join(f'{k}={v!r}' for k, v in vars(self).items())
        return f'{type(self).__name__}({args})'

class MeanSquaredError(Loss):
    "mean((y_pred - y_true)²) over all elements; gradient 2(y_pred - y_true)/size. Any shape."
    name = 'mse'
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'MeanSquaredError')
        e = p - y
        return float((e * e).mean()), 2 * e / e.size

class MeanAbsoluteError(Loss):
    "mean(|y_pred - y_true|); gradient sign(y_pred - y_true)/size. Any shape."
    name = 'mae'
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'MeanAbsoluteError'); xp = get_array_module(p)
        e = p - y
        return float(xp.abs(e).mean()), xp.sign(e) / e.size

class BinaryCrossentropy(Loss):
    """-mean(y log p + (1-y) log(1-p)) over all elements. `y_pred` holds probabilities p,
    clipped to [eps, 1-eps] as Keras does, or logits z when `from_logits=True`, where the
    loss is computed as max(z,0) - zy + log(1+e^{-|z|}) (finite for every z) and the
    gradient is (σ(z) - y)/size. Targets in [0, 1], shape of `y_pred`."""
    name = 'binary_crossentropy'
    def __init__(self, from_logits=False, eps=1e-7): self.from_logits, self.eps = from_logits, eps
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'BinaryCrossentropy'); xp = get_array_module(p)
        if self.from_logits:
            z = p
            loss = xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))
            return float(loss.mean()), (sigmoid(z) - y) / z.size
        p = xp.clip(p, self.eps, 1 - self.eps)
        loss = -(y * xp.log(p) + (1 - y) * xp.log1p(-p))
        return float(loss.mean()), (p - y) / (p * (1 - p)) / p.size

class CategoricalCrossentropy(Loss):
    """-mean over rows of Σ_c y_c log p_c for one-hot (or soft) targets, class axis last:
    `y_pred`, `y_true` of shape `(..., C)`. Probabilities are clipped to [eps, 1] and not
    renormalised (as Theano; Keras also divides by their sum). With `from_logits=True`
    the softmax is fused in: gradient (softmax(z)·Σ_c y_c - y)/rows."""
    name = 'categorical_crossentropy'
    def __init__(self, from_logits=False, eps=1e-7): self.from_logits, self.eps = from_logits, eps
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'CategoricalCrossentropy'); xp = get_array_module(p)
        rows = p.size // p.shape[-1]
        if self.from_logits:
            logp = log_softmax(p)
            return float(-(y * logp).sum() / rows), (xp.exp(logp) * y.sum(-1, keepdims=True) - y) / rows
        p = xp.clip(p, self.eps, 1)
        return float(-(y * xp.log(p)).sum() / rows), -y / p / rows

def _labels(y_true, shape, who):
    "Integer labels of shape `shape[:-1]` (an extra trailing 1 is dropped), each in [0, C)."
    y = check_array(y_true, 'y_true', kind='iu', who=who)
    if y.shape == tuple(shape[:-1]) + (1,): y = y.reshape(shape[:-1])
    if y.shape != tuple(shape[:-1]):
        raise ValueError(f"{who} expected integer labels of shape {tuple(shape[:-1])} for y_pred of shape "
                         f"{tuple(shape)}, got {tuple(y.shape)}")
    if y.size and (int(y.min()) < 0 or int(y.max()) >= shape[-1]):
        raise ValueError(f"{who} expected labels in [0, {shape[-1]}), got values in [{int(y.min())}, {int(y.max())}]")
    return y

class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer labels: `y_pred` `(..., C)` logits (default, fused and stable:
    gradient (softmax(z) - onehot(y))/rows) or probabilities (`from_logits=False`);
    `y_true` integer labels of shape `(...)`. Mean over every position."""
    name = 'sparse_categorical_crossentropy'
    def __init__(self, from_logits=True, eps=1e-7): self.from_logits, self.eps = from_logits, eps
    def value_and_grad(self, y_pred, y_true):
        p = _pred(y_pred, 'SparseCategoricalCrossentropy'); xp = get_array_module(p)
        y = xp.asarray(_labels(y_true, p.shape, 'SparseCategoricalCrossentropy'))[..., None]
        rows = p.size // p.shape[-1]
        onehot = y == xp.arange(p.shape[-1])             # (..., C) boolean, never a Python loop
        if self.from_logits:
            logp = log_softmax(p)
            return float(-xp.take_along_axis(logp, y, -1).sum() / rows), (xp.exp(logp) - onehot) / rows
        py = xp.clip(xp.take_along_axis(p, y, -1), self.eps, 1)
        return float(-xp.log(py).sum() / rows), xp.where(onehot, -1 / py, 0).astype(p.dtype) / rows

class Hinge(Loss):
    """mean(max(0, 1 - y·y_pred)) with labels y in {-1, +1} (labels in {0, 1} are mapped to
    {-1, +1}, as Keras does); gradient -y·[1 - y·y_pred > 0]/size."""
    name = 'hinge'
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'Hinge'); xp = get_array_module(p)
        if bool(((y == 0) | (y == 1)).all()): y = 2 * y - 1
        m = 1 - y * p
        return float(xp.maximum(m, 0).mean()), xp.where(m > 0, -y, 0).astype(p.dtype) / p.size

class Huber(Loss):
    """Huber loss, quadratic ½e² for |e| ≤ δ and linear δ(|e| - ½δ) beyond (e = y_pred - y_true):
    robust to outliers; gradient clip(e, -δ, δ)/size. Any shape."""
    name = 'huber'
    def __init__(self, delta=1.0): self.delta = delta
    def value_and_grad(self, y_pred, y_true):
        p, y = _pair(y_pred, y_true, 'Huber'); xp = get_array_module(p)
        e = p - y; a = xp.abs(e); d = self.delta
        loss = xp.where(a <= d, 0.5 * e * e, d * (a - 0.5 * d))
        return float(loss.mean()), xp.clip(e, -d, d) / e.size

# %% [markdown]
# Regularisation penalties are functions of the weights, not of the predictions, so they
# are plain functions returning the value and its gradient, in the Keras convention
# (`l2(λ)` adds λΣw², not λ/2·Σw²).

# %%
#| export
def l1_penalty(w, lam):
    "(λΣ|w|, λ·sign(w)) for a weight array `w` of any shape."
    w = check_array(w, 'w', who='l1_penalty'); xp = get_array_module(w)
    return float(lam * xp.abs(w).sum()), lam * xp.sign(w)

def l2_penalty(w, lam):
    "(λΣw², 2λw) for a weight array `w` of any shape."
    w = check_array(w, 'w', who='l2_penalty')
    return float(lam * (w * w).sum()), 2 * lam * w

def softmax_cross_entropy(logits, labels):
    """Fused, stable softmax + cross-entropy: `logits` `(..., C)`, `labels` integer `(...)` or
    one-hot/soft `(..., C)`. Returns `(mean loss, dL/dlogits)`, the gradient shaped like `logits`."""
    labels_kind = np.asarray(labels).dtype.kind if not hasattr(labels, 'dtype') else labels.dtype.kind
    if labels_kind in 'iu': return SparseCategoricalCrossentropy(from_logits=True).value_and_grad(logits, labels)
    return CategoricalCrossentropy(from_logits=True).value_and_grad(logits, labels)

_LOSSES = {'mse': MeanSquaredError, 'mean_squared_error': MeanSquaredError,
           'mae': MeanAbsoluteError, 'mean_absolute_error': MeanAbsoluteError,
           'binary_crossentropy': BinaryCrossentropy, 'bce': BinaryCrossentropy,
           'categorical_crossentropy': CategoricalCrossentropy,
           'sparse_categorical_crossentropy': SparseCategoricalCrossentropy,
           'hinge': Hinge, 'huber': Huber}

def get_loss(name):
    "A `Loss` from a Keras name (`'mse'`, `'binary_crossentropy'`, ...), a `Loss` class, or an instance (returned as is)."
    if isinstance(name, Loss): return name
    if isinstance(name, type) and issubclass(name, Loss): return name()
    if isinstance(name, str) and name.lower() in _LOSSES: return _LOSSES[name.lower()]()
    raise ValueError(f"get_loss expected a Loss or one of {sorted(_LOSSES)}, got {name!r}")

# %% [markdown]
# Every loss's gradient against central differences, in float64, at random points
# (probabilities kept inside the clipping range, residuals away from the kinks of Huber
# and hinge).

# %%
_r = np.random.default_rng(7)
_P = _r.uniform(0.05, 0.95, (6, 4)); _Y01 = (_r.random((6, 4)) > 0.5).astype(float)
_Z = _r.standard_normal((6, 4)) * 3; _T = _r.standard_normal((6, 4))
_Yoh = np.eye(4)[_r.integers(0, 4, 6)]; _lab = _r.integers(0, 4, 6)
_Ypm = np.where(_r.random((6, 4)) > 0.5, 1., -1.)
_Zh = _Ypm * (1 + np.sign(_r.standard_normal((6, 4))) * _r.uniform(0.1, 2, (6, 4)))  # margins away from 1
_Th = _Z + np.sign(_r.standard_normal((6, 4))) * _r.uniform(0.1, 3, (6, 4)) * np.where(_r.random((6, 4)) > .5, 1, 0.2)
_loss_cases = [
    (MeanSquaredError(), _Z, _T), (MeanAbsoluteError(), _Z, _T),
    (BinaryCrossentropy(), _P, _Y01), (BinaryCrossentropy(from_logits=True), _Z, _Y01),
    (BinaryCrossentropy(from_logits=True), _Z, _P),                  # soft targets
    (CategoricalCrossentropy(), softmax(_T), _Yoh), (CategoricalCrossentropy(from_logits=True), _Z, _Yoh),
    (CategoricalCrossentropy(from_logits=True), _Z, softmax(_T)),
    (SparseCategoricalCrossentropy(), _Z, _lab), (SparseCategoricalCrossentropy(from_logits=False), softmax(_T), _lab),
    (Hinge(), _Zh, _Ypm), (Huber(), _Th, _Z), (Huber(delta=0.5), _Th, _Z)]
for L, p_, y_ in _loss_cases:
    err = check_grad(lambda q: L(q, y_), lambda q: L.grad(q, y_), p_)
    assert err < 1e-6, (L, err)
    assert L.grad(p_, y_).shape == p_.shape
for lam in (0.1, 2.0):
    for pen in (l1_penalty, l2_penalty):
        assert check_grad(lambda w: pen(w, lam)[0], lambda w: pen(w, lam)[1], _Th) < 1e-6
# the fused forms agree with the composed ones
test_close(SparseCategoricalCrossentropy()(_Z, _lab), CategoricalCrossentropy()(softmax(_Z), np.eye(4)[_lab]))
test_close(BinaryCrossentropy(from_logits=True)(_Z, _Y01), BinaryCrossentropy()(sigmoid(_Z), _Y01))
test_close(softmax_cross_entropy(_Z, _lab)[0], softmax_cross_entropy(_Z, np.eye(4)[_lab])[0])
test_close(softmax_cross_entropy(_Z, _lab)[1], softmax_cross_entropy(_Z, np.eye(4)[_lab])[1])
# sequences: (N, T, C) logits with (N, T) labels
_Z3 = _r.standard_normal((2, 3, 4)); _l3 = _r.integers(0, 4, (2, 3))
test_close(SparseCategoricalCrossentropy()(_Z3, _l3), SparseCategoricalCrossentropy()(_Z3.reshape(6, 4), _l3.reshape(6)))
assert check_grad(lambda q: SparseCategoricalCrossentropy()(q, _l3), lambda q: SparseCategoricalCrossentropy().grad(q, _l3), _Z3) < 1e-6
# values by hand
test_close(MeanSquaredError()(np.array([1., 2]), np.array([0., 0])), 2.5)
test_close(Hinge()(np.array([-2., -1, 0, 1, 2]), np.ones(5)), np.mean([3, 2, 1, 0, 0]))
test_close(Huber()(np.array([0.5, 3.]), np.zeros(2)), (0.125 + 2.5) / 2)
test_eq(l1_penalty(np.array([0., 1, -3]), 1.0)[0], 4.0)      # Ketkar listing 4-8: L1 = 4
test_eq(l2_penalty(np.array([0., 1, 3]), 1.0)[0], 10.0)      # and L2 = 10
test_eq(type(get_loss('MSE')), MeanSquaredError); test_eq(get_loss(Huber) .delta, 1.0)
_h = Huber(2.0); test_eq(get_loss(_h) is _h, True)
test_fail(lambda: get_loss('kl'), contains="got 'kl'")

# %% [markdown]
# Bad input fails early with the expected and actual shapes, and the log-losses stay
# finite however confident (or wrong) the model is.

# %%
test_fail(lambda: MeanSquaredError()(np.zeros((4, 1)), np.zeros(5)), contains='expected y_true of shape (4, 1)')
test_eq(MeanSquaredError()(np.ones((4, 1)), np.zeros(4)), 1.0)     # (N,) targets next to (N, 1) outputs
test_fail(lambda: SparseCategoricalCrossentropy()(_Z, _lab[:3]), contains='labels of shape (6,)')
test_fail(lambda: SparseCategoricalCrossentropy()(_Z, _lab + 4), contains='labels in [0, 4)')
test_fail(lambda: SparseCategoricalCrossentropy()(_Z, _lab.astype(float)), contains="dtype kind 'iu'")
test_fail(lambda: BinaryCrossentropy()(np.array([np.nan]), np.array([1.])), contains='NaN')
_zbig = np.array([[-1e4, 1e4, 0.], [1e4, -1e4, 3.]])
for dt in (np.float32, np.float64):
    z = _zbig.astype(dt)
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        vals = [BinaryCrossentropy(from_logits=True).value_and_grad(z, np.array([[1., 0, 1], [1, 1, 0]])),
                BinaryCrossentropy().value_and_grad(sigmoid(z), np.array([[1., 0, 1], [1, 1, 0]])),
                SparseCategoricalCrossentropy().value_and_grad(z, np.array([0, 1])),
                CategoricalCrossentropy(from_logits=True).value_and_grad(z, np.eye(3)[[0, 1]]),
                CategoricalCrossentropy().value_and_grad(softmax(z), np.eye(3)[[0, 1]])]
    for v, g in vals: assert np.isfinite(v) and np.isfinite(g).all()
    test_close(vals[0][0], (3e4 + np.log(2) + 3 + np.log1p(np.exp(-3))) / 6, eps=1e-3)   # exact even at 1e4
test_eq(BinaryCrossentropy(from_logits=True).grad(_zbig.astype(np.float32), np.ones((2, 3))).dtype, np.float32)
