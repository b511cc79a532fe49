# %% [markdown]
# # Multilayer perceptrons and the model API
#
# > Layers with an explicit forward and backward pass, stacked into a small Keras.
#
# ## Purpose
#
# Logistic regression (chapter 03) draws one straight line through the data.
# Stacking affine maps with non-linearities between them gives a
# *multilayer perceptron* (MLP), which can bend that line into any shape it
# needs. This chapter
#
# 1. derives backpropagation for an MLP in matrix form, one layer at a time;
# 2. turns each layer into an object with `forward(x, training)` and
#    `backward(dy)`, the `Layer` API that every later chapter (convolutions,
#    recurrent nets, attention) builds on;
# 3. stacks layers in a `Sequential` model with Keras' `compile` / `fit` /
#    `evaluate` / `predict` (chapter 05a holds its code) and plots with `viz`
#    (chapter 05b);
# 4. trains MLPs on XOR, the planar "flower", the CIFAR-10 animal task and
#    MNIST, and sets our numbers beside the source texts'.

# %%
#| default_exp layers

# %%
#| export
from __future__ import annotations
import functools
import numpy as np
from dl_from_scratch.core import check_array, as_rng, get_dtype, get_array_module, to_device
from dl_from_scratch import init as initializers

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail
import numpy as np
from dl_from_scratch.core import precision

# %% [markdown]
# ## Derivation: backpropagation through a stack of layers
#
# We keep the batch on the **first** axis, as NumPy, Keras and PyTorch do:
# a batch of $N$ examples with $D$ features is $X \in \mathbb{R}^{N \times D}$.
# (The deeplearning.ai notes in source 003 and the L-layer code of source 000
# put examples in *columns*, $X \in \mathbb{R}^{D\times N}$; the formulas are
# the same transposed.) A dense (fully connected) layer with $U$ units is
#
# $$Z = X W + \mathbf{1} b^\top, \qquad W \in \mathbb{R}^{D\times U},\; b \in \mathbb{R}^{U},$$
#
# followed by an elementwise activation $A = g(Z)$. An $L$-layer MLP is the
# composition $A^{[l]} = g^{[l]}(A^{[l-1]} W^{[l]} + b^{[l]})$ with
# $A^{[0]} = X$, and the loss $\mathcal{L}(A^{[L]}, Y)$ is a mean over the batch.
#
# **Backward.** Write $\bar{V} = \partial \mathcal{L}/\partial V$ for the
# gradient of the scalar loss with respect to any array $V$ (same shape as
# $V$). The chain rule, applied to one layer, gives three facts:
#
# * through the activation, elementwise: $\bar{Z} = \bar{A} \odot g'(Z)$;
# * through the affine map: since $Z_{nu} = \sum_d X_{nd} W_{du} + b_u$,
#   $$\bar{W} = X^\top \bar{Z}, \qquad \bar{b} = \textstyle\sum_n \bar{Z}_{n,:}, \qquad \bar{X} = \bar{Z} W^\top .$$
#
# The factor $1/N$ of the mean loss is already inside $\bar{A}^{[L]}$ (the
# loss's `grad` returns the gradient of the *mean*), so no layer divides by
# $N$ again. $\bar{X}$ is what the layer below receives as its $\bar{A}$: each
# layer needs only the gradient of its output and what it cached in the
# forward pass. That locality is the whole of backpropagation, and it is why a
# layer can be an object with two methods:
#
# * `forward(x, training)` computes $y$ and keeps in `self.cache` what the
#   backward pass needs ($X$ for a dense layer, $Z$ for an activation);
# * `backward(dy)` takes $\bar{Y}$, fills `self.grads` with $\bar{W}, \bar{b}$
#   and returns $\bar{X}$.
#
# A model is then a list of layers: forward runs them in order, backward in
# reverse, and an optimizer (chapter 04) updates every `params[k]` with
# `grads[k]`.
#
# **Why the non-linearity.** Without $g$, $X W^{[1]} W^{[2]} \cdots$ is one
# linear map $X W$: depth buys nothing. With it, a single hidden layer of
# enough units approximates any continuous function on a compact set
# (Cybenko 1989, Hornik 1991); depth makes that cheaper.

# %% [markdown]
# ## The `Layer` base class
#
# The contract every layer in this book follows (DESIGN.md):
#
# | member | meaning |
# |---|---|
# | `build(input_shape)` | create parameters once the input shape (batch axis excluded) is known |
# | `forward(x, training=False) -> y` | compute the output; cache what backward needs |
# | `backward(dy) -> dx` | fill `self.grads` (same keys and shapes as `self.params`), return $\bar{X}$ |
# | `params`, `grads` | `dict[str, ndarray]`: trainable arrays and their gradients |
# | `state` | `dict[str, ndarray]`: non-trainable arrays that are saved (BatchNorm's running averages) |
# | `output_shape(input_shape)` | shape of the output, batch axis excluded |
# | `count_params()` | number of scalars in `params` and `state` (what Keras' `summary` counts) |
# | `__call__(x, training=False)` | build on first call, then `forward` |
# | `regularization_loss()`, `regularization_grads()` | penalty added to the loss, and its gradient |
# | `apply_constraints()` | project parameters after an update (max-norm, chapter 06) |
#
# Layers register themselves by class name, so a saved model can be rebuilt
# from its configuration (`Sequential.load`). The constructor's arguments are
# recorded automatically for that purpose.

# %%
#| export
LAYERS: dict = {}   # class name -> Layer subclass, for rebuilding saved models

def _snake(name: str) -> str:
    out = ''.join('_' + c.lower() if c.isupper() else c for c in name).lstrip('_')
    return out.replace('_n_n', 'nn')

class Layer:
    """Base class of all layers. Subclasses implement `forward(x, training)` and
    `backward(dy)`, and create their arrays in `build(input_shape)`.

    Shapes: `x` is `(N, *input_shape)`; `input_shape` never includes the batch axis N."""
    trainable = True

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        LAYERS[cls.__name__] = cls

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._config = (args, kwargs)     # constructor arguments, for get_config / save
        return obj

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict = {}
        self.grads: dict = {}
        self.state: dict = {}
        self.cache = None
        self.built = False
        self.input_shape = None

    # --- shapes and parameters -------------------------------------------------------------------
    def build(self, input_shape: tuple) -> None:
        "Create parameters for inputs of shape `(N, *input_shape)`."
        self.input_shape = tuple(int(s) for s in input_shape)
        self.built = True

    def output_shape(self, input_shape: tuple) -> tuple:
        "Output shape (batch axis excluded) for an input of shape `input_shape`."
        return tuple(input_shape)

    def count_params(self) -> int:
        "Number of scalars in `params` (trainable) and `state` (non-trainable), as Keras counts them."
        return int(sum(int(np.prod(p.shape)) for p in {**self.params, **self.state}.values()))

    def count_trainable_params(self) -> int:
        return int(sum(int(np.prod(p.shape)) for p in self.params.values()))

    @property
    def dtype(self):
        for p in self.params.values(): return p.dtype
        return get_dtype()

    # --- computation -----------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        "`x` `(N, *input_shape)` -> `y` `(N, *output_shape)`; keeps in `self.cache` what backward needs."
        raise NotImplementedError

    def backward(self, dy):
        "`dy` = dL/dy `(N, *output_shape)` -> dL/dx `(N, *input_shape)`; fills `self.grads`."
        raise NotImplementedError

    def __call__(self, x, training: bool = False):
        if not self.built: self.build(tuple(x.shape[1:]))
        return self.forward(x, training=training)

    def zero_grads(self) -> None:
        xp = None
        for k, p in self.params.items():
            xp = xp or get_array_module(p)
            self.grads[k] = xp.zeros_like(p)

    # --- regularisation and constraints (used from chapter 06 on) -------------------------------
    def regularization_loss(self) -> float:
        "Penalty this layer adds to the loss (0 unless a regularizer is set)."
        return 0.0

    def regularization_grads(self) -> dict:
        "Gradients of `regularization_loss()` w.r.t. `params` (only the keys it depends on)."
        return {}

    def apply_constraints(self) -> None:
        "Project parameters onto their constraint set after an optimizer step (no-op by default)."

    # --- devices, configuration ------------------------------------------------------------------
    def to(self, device: str = 'cpu'):
        "Move parameters and state to `'cpu'` (NumPy) or `'cuda'` (CuPy); returns self."
        for d in (self.params, self.state):
            for k in d: d[k] = to_device(d[k], device)
        self.grads = {}
        self.cache = None
        return self

    def get_config(self) -> dict:
        "Class name and constructor arguments (JSON-friendly ones only) to rebuild the layer."
        args, kwargs = self._config
        return {'class': type(self).__name__, 'args': list(args), 'kwargs': dict(kwargs)}

    def __repr__(self) -> str:
        args, kwargs = self._config
        inner = ', '.join([repr(a) for a in args] + [f'{k}={v!r}' for k, v in kwargs.items()])
        return f'{type(self).__name__}({inner})'

# %% [markdown]
# The input check every layer shares: rank and feature size, with a message
# that names what was expected and what came.

# %%
#| export
def _check_input(layer: Layer, x, ndim=None):
    "Check `x` against the shape `layer` was built for; cast to the layer's dtype."
    shape = None if layer.input_shape is None else (None, *layer.input_shape)
    who = f"{type(layer).__name__}" + (f" '{layer.name}'" if layer.name else '')
    x = check_array(x, 'input', ndim=ndim if shape is None else len(shape), shape=shape, finite=False, who=who)
    dt = layer.dtype
    return x if x.dtype == dt else x.astype(dt)

# %% [markdown]
# ## Dense
#
# `Dense(units)` holds `W` of shape `(D, U)` (Keras calls it the *kernel*)
# and `b` of shape `(U,)`, and may fuse an activation: then `forward` caches
# $Z$ as well, and `backward` first multiplies by $g'(Z)$. The kernel's
# default initialiser is Glorot-uniform, as in Keras; chapter 06 explains why
# the scale matters, and `init` holds the initialisers.

# %%
#| export
def _get_activation(name, **kwargs):
    "`(f, f_grad)` for an activation name, from `functional` (imported lazily)."
    from dl_from_scratch import functional as F
    f, f_grad = F.get_activation(name)
    if kwargs: f, f_grad = functools.partial(f, **kwargs), functools.partial(f_grad, **kwargs)
    return f, f_grad

def _softmax(z):
    xp = get_array_module(z)
    e = xp.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)

def _softmax_backward(y, dy):
    "Vector-Jacobian product of softmax: dz = y * (dy - sum(dy * y))."
    return y * (dy - (dy * y).sum(axis=-1, keepdims=True))

class Dense(Layer):
    """Fully connected layer `y = g(x @ W + b)`.

    x: `(N, D)` -> y: `(N, units)`; `W` `(D, units)`, `b` `(units,)`.
    `activation`: None/'linear' or a name from `functional` (incl. 'softmax').
    `kernel_regularizer` / `kernel_constraint`: see chapter 06 (`L2(0.01)`, `'l2'`, `MaxNorm(3)`)."""
    def __init__(self, units: int, activation=None, use_bias: bool = True,
                 kernel_initializer='glorot_uniform', bias_initializer='zeros',
                 kernel_regularizer=None, kernel_constraint=None, rng=None, name=None):
        super().__init__(name)
        if int(units) < 1: raise ValueError(f"Dense expected units >= 1, got {units}")
        self.units, self.use_bias = int(units), use_bias
        self.activation = None if activation in (None, 'linear') else activation
        self.kernel_initializer = initializers.get_initializer(kernel_initializer)
        self.bias_initializer = initializers.get_initializer(bias_initializer)
        self.kernel_regularizer = None if kernel_regularizer is None else get_regularizer(kernel_regularizer)
        self.kernel_constraint = None if kernel_constraint is None else get_constraint(kernel_constraint)
        self.rng = as_rng(rng)
        if self.activation is not None and self.activation != 'softmax':
            self._g, self._g_grad = _get_activation(self.activation)

    def build(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"Dense expected input of rank 2 (N, features), got input shape (N, *{tuple(input_shape)}); "
                             "put a Flatten layer in front")
        super().build(input_shape)
        D, dt = self.input_shape[0], get_dtype()
        self.params['W'] = self.kernel_initializer((D, self.units), rng=self.rng, dtype=dt)
        if self.use_bias: self.params['b'] = self.bias_initializer((self.units,), rng=self.rng, dtype=dt)

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        x = _check_input(self, x, ndim=2)
        z = x @ self.params['W']
        if self.use_bias: z = z + self.params['b']
        if self.activation is None: y = z
        elif self.activation == 'softmax': y = _softmax(z)
        else: y = self._g(z)
        self.cache = (x, z, y)
        return y

    def backward(self, dy):
        x, z, y = self.cache
        if self.activation is None: dz = dy
        elif self.activation == 'softmax': dz = _softmax_backward(y, dy)
        else: dz = dy * self._g_grad(z)
        self.grads['W'] = x.T @ dz
        if self.use_bias: self.grads['b'] = dz.sum(axis=0)
        return dz @ self.params['W'].T

    def regularization_loss(self):
        return 0.0 if self.kernel_regularizer is None else float(self.kernel_regularizer(self.params['W']))

    def regularization_grads(self):
        return {} if self.kernel_regularizer is None else {'W': self.kernel_regularizer.grad(self.params['W'])}

    def apply_constraints(self):
        if self.kernel_constraint is not None: self.params['W'][...] = self.kernel_constraint(self.params['W'])

# %% [markdown]
# A first test: shapes, the parameter count ($D\cdot U + U$, as Keras counts
# it), and the input check, which names the expected and the actual shapes.

# %%
d = Dense(3, rng=0)
y = d(np.ones((4, 5)))
test_eq(y.shape, (4, 3)); test_eq(y.dtype, np.float32)
test_eq(d.count_params(), 5 * 3 + 3)
test_eq(d.params['W'].shape, (5, 3)); test_eq(d.params['b'], np.zeros(3))
test_fail(lambda: d(np.ones((4, 6))), contains='Dense expected input of shape (N, 5), got (4, 6)')
test_fail(lambda: d(np.ones((4, 5, 1))), contains='rank 2')
test_fail(lambda: Dense(3)(np.ones((4, 5, 2))), contains='rank 2 (N, features)')
test_eq(Dense(2, use_bias=False, rng=0)(np.ones((1, 4))).shape, (1, 2))

# %% [markdown]
# ## Activation and Flatten
#
# `Activation(name)` wraps any activation from chapter 01's `functional`
# (`'relu'`, `'tanh'`, `'sigmoid'`, `'leaky_relu'`, ...; keyword arguments such
# as `alpha=0.2` go to the function). Softmax is not elementwise, so its
# backward pass is the vector-Jacobian product
# $\bar z = y \odot (\bar y - \langle \bar y, y\rangle)$, which never forms
# the $K\times K$ Jacobian $\operatorname{diag}(y) - y y^\top$.
#
# `Flatten` reshapes `(N, H, W, C)` (or any `(N, ...)`) to `(N, H·W·C)` and
# back, in NHWC row-major order, which is Keras' order too.

# %%
#| export
class Activation(Layer):
    "Elementwise activation `y = f(x)` (or softmax over the last axis). Any shape `(N, ...)` -> same shape."
    def __init__(self, activation: str, name=None, **kwargs):
        super().__init__(name)
        self.activation, self.kwargs = activation, kwargs
        if activation != 'softmax': self._f, self._f_grad = _get_activation(activation, **kwargs)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        y = _softmax(x) if self.activation == 'softmax' else self._f(x)
        self.cache = (x, y)
        return y

    def backward(self, dy):
        x, y = self.cache
        return _softmax_backward(y, dy) if self.activation == 'softmax' else dy * self._f_grad(x)

class ReLU(Activation):
    "`Activation('relu')`."
    def __init__(self, name=None): super().__init__('relu', name=name)

class Sigmoid(Activation):
    "`Activation('sigmoid')`."
    def __init__(self, name=None): super().__init__('sigmoid', name=name)

class Tanh(Activation):
    "`Activation('tanh')`."
    def __init__(self, name=None): super().__init__('tanh', name=name)

class Softmax(Activation):
    "`Activation('softmax')` over the last axis."
    def __init__(self, name=None): super().__init__('softmax', name=name)

class Flatten(Layer):
    "`(N, d1, d2, ...)` -> `(N, d1*d2*...)` (row-major, so NHWC images flatten as Keras does)."
    def forward(self, x, training=False):
        x = _check_input(self, x)
        self.cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dy):
        return dy.reshape(self.cache)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

# %%
test_eq(Flatten()(np.zeros((2, 3, 4, 5))).shape, (2, 60))
test_eq(Flatten().output_shape((28, 28, 1)), (784,))
f = Flatten(); f(np.arange(24.).reshape(2, 3, 4)); test_eq(f.backward(np.ones((2, 12))).shape, (2, 3, 4))
sm = Activation('softmax'); p = sm(np.array([[1., 2., 3.], [1e4, 0., -1e4]]))
test_close(p.sum(1), [1., 1.]); assert np.isfinite(p).all()

# %% [markdown]
# ## Gradient checks
#
# Every backward pass is checked against central differences in float64.
# `check_layer_grad` (chapter 01) draws a random upstream gradient $\bar Y$,
# and compares `backward`'s $\bar X$ and `grads` with the numerical gradient
# of the scalar $\langle f(X), \bar Y\rangle$; the relative error
# $\|a-n\|/(\|a\|+\|n\|)$ must stay below $10^{-6}$.

# %%
from dl_from_scratch.gradcheck import check_layer_grad
rng = np.random.default_rng(0)
with precision(np.float64):
    for act in [None, 'sigmoid', 'tanh', 'relu', 'softmax', 'elu', 'softplus', 'swish']:
        errs = check_layer_grad(Dense(4, activation=act, rng=1), rng.normal(size=(5, 3)) + 0.1)
        assert max(errs.values()) < 1e-6, (act, errs)
    for name in ['sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'softplus', 'lecun_tanh', 'softmax']:
        errs = check_layer_grad(Activation(name), rng.normal(size=(4, 6)) + 0.05)
        assert max(errs.values()) < 1e-6, (name, errs)
    errs = check_layer_grad(Flatten(), rng.normal(size=(2, 3, 4, 2)))
    assert max(errs.values()) < 1e-6
    print('largest relative error, Dense(4, tanh):', max(check_layer_grad(Dense(4, 'tanh', rng=1), rng.normal(size=(5, 3))).values()))
