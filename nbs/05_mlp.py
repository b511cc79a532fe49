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
import functools, inspect
import numpy as np
from dl_from_scratch.core import (check_array, as_rng, get_dtype, get_array_module, to_device, on_device, resolve_backend,
                                  KernelArrays, cuda_kernels, launch)
from dl_from_scratch import init as initializers
from dl_from_scratch import functional as F

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
# The contract every layer in this book follows (DESIGN.md), with Keras's
# names where Keras has one:
#
# | member | meaning |
# |---|---|
# | `build(input_shape)` | create the weights once the input shape (batch axis excluded) is known |
# | `add_weight(name, shape, initializer, regularizer, constraint, trainable)` | make one weight in `build`: drawn with the layer's `rng`, kept in `params` (trainable) or `state`, its penalty and projection recorded |
# | `forward(x, training=False) -> y` | compute the output; cache what backward needs |
# | `backward(dy, need_dx=True) -> dx` | fill `self.grads` (same keys and shapes as `self.params`), return $\bar{X}$; with `need_dx=False` a layer may skip $\bar{X}$ and return `None` |
# | `params`, `grads` | `dict[str, ndarray]`: trainable arrays and their gradients |
# | `state` | `dict[str, ndarray]`: non-trainable arrays that are saved (BatchNorm's running averages) |
# | `trainable` | `False` freezes the layer: `fit` leaves its weights alone and `summary` counts them as non-trainable |
# | `output_shape(input_shape)` | shape of the output, batch axis excluded |
# | `count_params()` | number of scalars in `params` and `state` (what Keras' `summary` counts) |
# | `__call__(x, training=False)` | build on first call, then `forward` |
# | `compute_mask(x, mask)` | the padding mask `(N, T)` of the output (Keras's name): passed on unchanged by default, made by `Embedding(mask_zero=True)`, ended by a layer that reads the whole sequence |
# | `regularization_loss()`, `regularization_grads()` | the weights' penalties added to the loss, and their gradients |
# | `apply_constraints()` | project the weights after an update (max-norm, chapter 06) |
#
# Three rules keep every layer honest without each repeating them. Weights
# come from `add_weight`, so the base class knows each weight's regularizer
# and constraint, and its three methods above serve every layer: no layer
# handles those options itself. `backward` always takes `need_dx`: a model
# asks its first layer not to compute $\bar{X}$, which nothing reads in
# training (a layer whose `backward(dy)` ignores the option may omit it;
# the base class drops it for that layer once, when the class is defined).
# And misuse fails at once with the layer's name: `forward` on an unbuilt
# layer that has weights to make, and `backward` before any `forward`, raise
# a `ValueError` instead of an obscure `KeyError` or unpacking error deep
# inside. The base class wraps each subclass's `forward` and `backward` for
# that when the subclass is defined, so the checks cost one attribute test
# per call.
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

def _who(layer) -> str:
    "How messages name a layer: its class, and its name when it has one."
    return type(layer).__name__ + (f" '{layer.name}'" if getattr(layer, 'name', None) else '')

def _guard_forward(f):
    "Wrap a subclass's `forward`: an unbuilt layer is built (if it has nothing to create) or refused."
    @functools.wraps(f)
    def forward(self, x, *args, **kwargs):
        if not self.built and not self._builds_on_forward:
            if type(self).build is not Layer.build:
                raise ValueError(f"{_who(self)}: forward called on an unbuilt layer; call the layer, layer(x), "
                                 "or build(input_shape) first, so that its weights exist")
            self.build(_shape_of(x))              # nothing to create: the first input fixes the shape
        y = f(self, x, *args, **kwargs)
        self._forward_done = True
        return y
    return forward

def _guard_backward(f):
    "Wrap a subclass's `backward`: refuse it before any forward; drop `need_dx` for a `backward(dy)` without it."
    takes_need_dx = 'need_dx' in inspect.signature(f).parameters       # read once, when the class is defined
    @functools.wraps(f)
    def backward(self, dy, *args, **kwargs):
        if not self._forward_done:
            raise ValueError(f"{_who(self)}: backward called before forward; run forward (or call the layer) "
                             "on a batch first, since backward needs what forward keeps")
        if not takes_need_dx: kwargs.pop('need_dx', None)
        return f(self, dy, *args, **kwargs)
    return backward

class Layer:
    """Base class of all layers. Subclasses implement `forward(x, training)` and
    `backward(dy, need_dx=True)`, and create their arrays in `build(input_shape)` with `add_weight`.

    Shapes: `x` is `(N, *input_shape)`; `input_shape` never includes the batch axis N."""
    _forward_done = False      # set by the first forward; backward before it is an error
    _builds_on_forward = False # True: the subclass's forward builds it (a Sequential model)
    _forward_takes_mask = False # forward has a `mask` keyword (set for each subclass)

    def __init_subclass__(cls, **kw):
        super().__init_subclass__(**kw)
        LAYERS[cls.__name__] = cls
        if 'forward' in cls.__dict__: cls.forward = _guard_forward(cls.__dict__['forward'])
        if 'backward' in cls.__dict__: cls.backward = _guard_backward(cls.__dict__['backward'])
        cls._forward_takes_mask = 'mask' in inspect.signature(cls.forward).parameters   # a model hands it the mask

    def __new__(cls, *args, **kwargs):
        obj = super().__new__(cls)
        obj._config = (args, kwargs)     # constructor arguments, for get_config / save
        return obj

    def __init__(self, name: str | None = None):
        self.name = name
        self.params: dict = {}           # trainable arrays
        self.grads: dict = {}
        self.state: dict = {}            # non-trainable arrays (saved, not trained)
        self.regularizers: dict = {}     # weight name -> Regularizer, from add_weight
        self.constraints: dict = {}      # weight name -> Constraint, from add_weight
        self.trainable = True            # False: fit and the optimizers leave the weights alone
        self.cache = None
        self.built = False
        self.input_shape = None

    # --- shapes and weights ----------------------------------------------------------------------
    def build(self, input_shape: tuple) -> None:
        "Create weights for inputs of shape `(N, *input_shape)`."
        self.input_shape = tuple(None if s is None else int(s) for s in input_shape)   # None: any size (a sequence's T)
        self.built = True

    def add_weight(self, name: str, shape: tuple, initializer='glorot_uniform', regularizer=None, constraint=None,
                   trainable: bool = True):
        """Create a weight of `shape` (dtype `core.get_dtype()`, drawn from `self.rng` when the layer has one),
        keep it in `params[name]` (trainable) or `state[name]`, record its regularizer and constraint
        (anything `get_regularizer` / `get_constraint` accept), and return it. `initializer`: a name or
        callable of `init`, or a number (a constant)."""
        if isinstance(initializer, (int, float)) and not isinstance(initializer, bool):
            w = np.full(tuple(shape), initializer, dtype=get_dtype())
        else:
            w = initializers.get_initializer(initializer)(tuple(shape), rng=getattr(self, 'rng', None), dtype=get_dtype())
        (self.params if trainable else self.state)[name] = w
        if regularizer is not None: self.regularizers[name] = get_regularizer(regularizer)
        if constraint is not None: self.constraints[name] = get_constraint(constraint)
        return w

    def output_shape(self, input_shape: tuple) -> tuple:
        "Output shape (batch axis excluded) for an input of shape `input_shape`."
        return tuple(input_shape)

    def count_params(self) -> int:
        "Number of scalars in `params` and `state`, as Keras counts them."
        return int(sum(int(np.prod(p.shape)) for p in {**self.params, **self.state}.values()))

    def count_trainable_params(self) -> int:
        "Scalars the optimizer updates: `params`, or none when the layer is frozen (`trainable = False`)."
        return int(sum(int(np.prod(p.shape)) for p in self.params.values())) if self.trainable else 0

    @property
    def dtype(self):
        for p in self.params.values(): return p.dtype
        return get_dtype()

    # --- computation -----------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        "`x` `(N, *input_shape)` -> `y` `(N, *output_shape)`; keeps in `self.cache` what backward needs."
        raise NotImplementedError

    def backward(self, dy, need_dx: bool = True):
        """`dy` = dL/dy `(N, *output_shape)` -> dL/dx `(N, *input_shape)`; fills `self.grads`.
        `need_dx=False` (a model's first layer in training) lets a layer skip dL/dx and return `None`."""
        raise NotImplementedError

    def compute_mask(self, x, mask=None):
        """The mask of this layer's output, `(N, T)` booleans (True: a real step) or None, from its input `x` and
        the input's `mask`. By default the mask passes on unchanged, and the masks of several inputs are combined
        with AND (None counts as all True). A layer that reads or reorders the time axis (a recurrent layer
        returning its last state, pooling, `Flatten`) returns None; a layer that makes a mask (`Embedding` with
        `mask_zero`) returns it."""
        if not isinstance(mask, (list, tuple)): return mask
        ms = [m for m in mask if m is not None]
        if not ms or any(m.shape != ms[0].shape for m in ms): return None
        out = ms[0] != 0
        for m in ms[1:]: out = out & (m != 0)
        return out

    def _scratch(self) -> dict:
        "This layer's dict of internal work arrays, kept between batches (`core.scratch`)."
        return self.__dict__.setdefault('_ws', {})

    def __call__(self, x, training: bool = False):
        "Build on the first call, then `forward`; on symbolic tensors (`Input`, chapter 05c) add a node to a graph."
        if isinstance(x, SymbolicTensor) or (isinstance(x, (list, tuple)) and x and isinstance(x[0], SymbolicTensor)):
            return _call_symbolic(self, x)
        if not self.built: self.build(_shape_of(x))
        return self.forward(x, training=training)

    def zero_grads(self) -> None:
        xp = None
        for k, p in self.params.items():
            xp = xp or get_array_module(p)
            self.grads[k] = xp.zeros_like(p)

    # --- regularisation and constraints (used from chapter 06 on) -------------------------------
    # `add_weight` records a regularizer and a constraint per weight, so these three serve every layer.
    def regularization_loss(self) -> float:
        "Penalty this layer adds to the loss: the sum of its weights' regularizers (0 when none is set)."
        return float(sum(r(self.params[k] if k in self.params else self.state[k]) for k, r in self.regularizers.items()))

    def regularization_grads(self) -> dict:
        "Gradients of `regularization_loss()` w.r.t. `params` (only the keys it depends on)."
        return {k: r.grad(self.params[k]) for k, r in self.regularizers.items() if k in self.params}

    def apply_constraints(self) -> None:
        "Project each constrained weight onto its set after an optimizer step (no-op when none is set)."
        for k, c in self.constraints.items(): self.params[k][...] = c(self.params[k])

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
# Calling a layer on *symbolic* tensors instead of arrays records the call
# instead of computing it: `Input(shape)` (chapter 05a's `model`) makes a
# `SymbolicTensor`, and `layer(t)` adds a `Node` (this layer, these input
# tensors) and returns the tensor it will produce. A graph of such nodes is
# a model; chapter 05c derives how it runs forward and backward. Here we
# only need the two small records and the call.

# %%
#| export
class SymbolicTensor:
    """A placeholder for a batch of shape `(N, *shape)` in a graph of layers: the `node` that makes it
    (None for an `Input`) and which of that node's outputs it is (`index`)."""
    __slots__ = ('shape', 'node', 'index', 'name')
    def __init__(self, shape, node=None, index: int = 0, name: str | None = None):
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.node, self.index, self.name = node, index, name

    def __repr__(self):
        src = self.name if self.node is None else self.node.layer.name
        return f"SymbolicTensor(shape=(None, {', '.join(map(str, self.shape))}), from {src!r})"

class Node:
    """One call of `layer` in a graph: the `inputs` it reads and the `outputs` it makes (lists of `SymbolicTensor`);
    `multi_in` / `multi_out`: whether the layer takes / gives a list of arrays rather than one array."""
    __slots__ = ('layer', 'inputs', 'outputs', 'multi_in', 'multi_out')
    def __init__(self, layer, inputs: list, multi_in: bool = False):
        self.layer, self.inputs, self.outputs, self.multi_in, self.multi_out = layer, list(inputs), [], multi_in, False

def _shape_of(x):
    "Input shape(s), batch axis excluded, of an array or a list of arrays (layers with several inputs)."
    return [tuple(a.shape[1:]) for a in x] if isinstance(x, (list, tuple)) else tuple(x.shape[1:])

def _shapes_match(expected, got) -> bool:
    "Whether shape(s) `got` fit `expected`, where `None` in `expected` matches any size."
    if isinstance(expected, list) or isinstance(got, list):
        return (isinstance(expected, list) and isinstance(got, list) and len(expected) == len(got)
                and all(_shapes_match(e, g) for e, g in zip(expected, got)))
    return len(expected) == len(got) and all(e is None or e == g for e, g in zip(expected, got))

def _call_symbolic(layer: Layer, x):
    "Record `layer(x)` for symbolic `x` (one tensor or a list): build the layer, add a node, return its output(s)."
    xs = list(x) if isinstance(x, (list, tuple)) else [x]
    if not all(isinstance(t, SymbolicTensor) for t in xs):
        raise ValueError(f"{_who(layer)} expected only symbolic tensors (from Input) in a graph, got "
                         f"{[type(t).__name__ for t in xs]}")
    shape = [t.shape for t in xs] if isinstance(x, (list, tuple)) else xs[0].shape
    if not layer.built: layer.build(shape)
    elif not _shapes_match(layer.input_shape, shape):
        raise ValueError(f"{_who(layer)} was built for input shape {layer.input_shape}, "
                         f"but is called on shape {shape}")
    node = Node(layer, xs, multi_in=isinstance(x, (list, tuple)))
    out = layer.output_shape(shape)
    node.multi_out = isinstance(out, list)
    node.outputs = [SymbolicTensor(s, node, i) for i, s in enumerate(out)] if node.multi_out \
        else [SymbolicTensor(out, node, 0)]
    return node.outputs if node.multi_out else node.outputs[0]

# %% [markdown]
# The contract at work on a toy layer, $y = x \odot w$: `add_weight` draws
# from the layer's `rng` and records the options, misuse names the layer,
# and a `backward(dy)` without `need_dx` still accepts it.

# %%
class Scale(Layer):
    def __init__(self, rng=None, name=None): super().__init__(name); self.rng = as_rng(rng)
    def build(self, input_shape):
        super().build(input_shape)
        self.add_weight('w', input_shape, 'glorot_uniform')
        self.add_weight('seen', (), 0.0, trainable=False)
    def forward(self, x, training=False): self.cache = x; return x * self.params['w']
    def backward(self, dy):
        self.grads['w'] = (dy * self.cache).sum(0); return dy * self.params['w']

sc = Scale(rng=0)
test_fail(lambda: sc.forward(np.ones((2, 3))), contains="Scale: forward called on an unbuilt layer")
test_fail(lambda: Scale(name='s').backward(np.ones((2, 3))), contains="Scale 's': backward called before forward")
y = sc(np.ones((2, 3)))                                    # calling builds
test_eq(sc.params['w'], initializers.glorot_uniform((3,), rng=0, dtype=np.float32))
test_eq(list(sc.state), ['seen']); test_eq(sc.count_params(), 4); test_eq(sc.count_trainable_params(), 3)
test_eq(sc.backward(np.ones((2, 3)), need_dx=False).shape, (2, 3))   # need_dx dropped for backward(dy)
sc.trainable = False; test_eq(sc.count_trainable_params(), 0)

# %% [markdown]
# The input check every layer shares: rank and feature size, with a message
# that names what was expected and what came.

# %%
#| export
def _check_input(layer: Layer, x, ndim=None):
    "Check `x` against the shape `layer` was built for; cast to the layer's dtype."
    shape = None if layer.input_shape is None else (None, *layer.input_shape)
    x = check_array(x, 'input', ndim=ndim if shape is None else len(shape), shape=shape, finite=False, who=_who(layer))
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
    "`(f, f_grad)` for an activation name, from `functional`, with `kwargs` bound (e.g. `alpha=0.2`)."
    f, f_grad = F.get_activation(name)
    if kwargs: f, f_grad = functools.partial(f, **kwargs), functools.partial(f_grad, **kwargs)
    return f, f_grad

class Dense(Layer):
    """Fully connected layer `y = g(x @ W + b)`.

    x: `(N, D)` -> y: `(N, units)`; `W` `(D, units)`, `b` `(units,)`.
    `activation`: None/'linear' or a name from `functional` (incl. 'softmax').
    `kernel_regularizer` / `kernel_constraint`: see chapter 06 (`L2(0.01)`, `'l2'`, `MaxNorm(3)`)."""
    def __init__(self, units: int, activation=None, use_bias: bool = True, kernel_initializer='glorot_uniform',
                 kernel_regularizer=None, rng=None, bias_initializer='zeros', kernel_constraint=None, name=None):
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
        self.add_weight('W', (self.input_shape[0], self.units), self.kernel_initializer,
                        self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias: self.add_weight('b', (self.units,), self.bias_initializer)

    def output_shape(self, input_shape):
        return (self.units,)

    def forward(self, x, training=False):
        x = _check_input(self, x, ndim=2)
        z = x @ self.params['W']
        if self.use_bias: z = z + self.params['b']
        if self.activation is None: y = z
        elif self.activation == 'softmax': y = F.softmax(z)
        else: y = self._g(z)
        self.cache = (x, z, y)
        return y

    def backward(self, dy, need_dx: bool = True):
        "`need_dx=False` (a model's first layer in training) skips the unused dL/dx and returns `None`."
        x, z, y = self.cache
        if self.activation is None: dz = dy
        elif self.activation == 'softmax': dz = F.softmax_vjp(y, dy)
        else: dz = dy * self._g_grad(z)
        self.grads['W'] = x.T @ dz
        if self.use_bias: self.grads['b'] = dz.sum(axis=0)
        return dz @ self.params['W'].T if need_dx else None

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
    """Elementwise activation `y = f(x)` (or softmax over the last axis). Any shape `(N, ...)` -> same shape.

    `'rrelu'` draws a new negative slope per element in every training forward pass (from `rng`;
    `lower`, `upper` as in `functional.rrelu`) and uses the mean slope at inference."""
    def __init__(self, activation: str, name=None, rng=None, **kwargs):
        super().__init__(name)
        self.activation, self.kwargs, self.rng = activation, kwargs, as_rng(rng)
        if activation not in ('softmax', 'rrelu'): self._f, self._f_grad = _get_activation(activation, **kwargs)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        if self.activation == 'softmax': y = a = F.softmax(x)
        elif self.activation == 'rrelu':       # the slopes drawn here are the ones backward must use
            a = F.rrelu_alpha(x.shape, training=training, rng=self.rng, **self.kwargs)
            y = F.rrelu(x, alpha=a)
        else: y, a = self._f(x), None
        self.cache = (x, a)
        return y

    def backward(self, dy, need_dx: bool = True):
        x, a = self.cache
        if self.activation == 'softmax': return F.softmax_vjp(a, dy)
        if self.activation == 'rrelu': return dy * F.rrelu_grad(x, alpha=a)
        return dy * self._f_grad(x)

class ReLU(Activation):
    "`Activation('relu')`; with `max_value` the output is capped there (`ReLU(max_value=6)`: MobileNet's ReLU6)."
    def __init__(self, max_value=None, name=None):
        super().__init__('relu', name=name, **({} if max_value is None else {'max_value': float(max_value)}))

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

    def backward(self, dy, need_dx: bool = True):
        return dy.reshape(self.cache)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)

    def compute_mask(self, x, mask=None): return None       # the time axis is gone

# %% [markdown]
# **PReLU** (He et al. 2015) is the one activation with a parameter: a
# learnable slope $\alpha_c$ per channel (last axis) for negative inputs,
# $y = \max(x, 0) + \alpha\min(x, 0)$. Its gradients are
# $\bar x = \bar y\,(1 \text{ if } x \ge 0 \text{ else } \alpha)$ and
# $\bar\alpha_c = \sum \bar y \min(x, 0)$, summed over every axis but the
# channel one, because $\alpha_c$ is shared by all of them.

# %%
#| export
class PReLU(Layer):
    "Parametric ReLU with a learnable slope `alpha` `(C,)` per channel (last axis). `(N, ..., C)` -> same shape."
    def __init__(self, alpha_initializer: float = 0.25, name=None):
        super().__init__(name)
        self.alpha_initializer = float(alpha_initializer)

    def build(self, input_shape):
        super().build(input_shape)
        self.add_weight('alpha', (self.input_shape[-1],), self.alpha_initializer)

    def forward(self, x, training=False):
        x = _check_input(self, x)
        self.cache = x
        return F.prelu(x, self.params['alpha'])

    def backward(self, dy, need_dx: bool = True):
        x, a = self.cache, self.params['alpha']
        self.grads['alpha'] = (dy * F.prelu_grad_alpha(x, a)).reshape(-1, x.shape[-1]).sum(axis=0)
        return dy * F.prelu_grad(x, a)

# %%
test_eq(Flatten()(np.zeros((2, 3, 4, 5))).shape, (2, 60))
test_eq(Flatten().forward(np.zeros((2, 3, 4))).shape, (2, 12))   # nothing to create: forward builds it
test_eq(Flatten().output_shape((28, 28, 1)), (784,))
f = Flatten(); f(np.arange(24.).reshape(2, 3, 4)); test_eq(f.backward(np.ones((2, 12))).shape, (2, 3, 4))
sm = Activation('softmax'); p = sm(np.array([[1., 2., 3.], [1e4, 0., -1e4]]))
test_close(p.sum(1), [1., 1.]); assert np.isfinite(p).all()
rr, xn = Activation('rrelu', rng=0, lower=0.1, upper=0.3), -np.ones((2, 500))
y1, y2 = rr(xn, training=True), rr(xn, training=True)
assert (y1 != y2).any() and -0.3 <= y1.min() and y1.max() <= -0.1      # fresh slopes in each training pass
test_close(rr(xn), -0.2 * np.ones((2, 500)))                             # the mean slope at inference

# %% [markdown]
# ## Embedding: a dense layer on one-hot inputs
#
# A token id $i \in \{0, \dots, V-1\}$ as a one-hot row $e_i$ times a
# matrix $W \in \mathbb{R}^{V\times D}$ is just row $i$ of $W$. `Embedding`
# does that lookup directly, `W[x]`, and its backward pass is the dense
# layer's $\bar W = X^\top \bar Z$ with one-hot $X$: add each upstream row
# $\bar y_n$ into row $x_n$ of $\bar W$ (`np.add.at`, which sums repeated ids;
# `scatter_rows` below adds the same rows in the same order with a Numba
# loop, faster and to the same bits). Ids are integers, so there is no gradient to pass down.
# The text chapters (12 on) use it; Keras' default initialiser is
# uniform on $[-0.05, 0.05]$.
#
# **Padding and masks.** Sentences of different lengths share a batch
# only once they are padded to one length $T$ with a reserved id, 0. With
# `mask_zero=True` the layer also reports *which* steps are real: the mask
# $m_{nt} = [x_{nt} \ne 0]$, of shape $(N, T)$. It is not part of the
# output; a model (chapters 05a, 05c) asks every layer for the mask of its
# output with `compute_mask(x, mask)` and hands it to the next layer's
# `forward(..., mask=...)` when that layer takes one. Elementwise layers
# pass it on unchanged, a recurrent layer keeps its state over masked
# steps (chapter 11) and pooling averages over real steps only, so a padded
# sentence gives the same result as the unpadded one. Id 0 then means
# padding and nothing else, so a masked vocabulary needs at least two ids.
#
# **Embedding dropout.** Gal and Ghahramani (2016, §4) drop *word types*
# rather than single positions: in a training batch each row $W_v$ is kept
# with probability $1-p$, the same decision wherever word $v$ occurs, and a
# kept row is scaled by $1/(1-p)$:
#
# $$y_n = s_{x_n} W_{x_n}, \qquad s_v = \frac{b_v}{1-p},\; b_v \sim \text{Bernoulli}(1-p).$$
#
# Since $\mathbb{E}[s_v] = 1$, $\mathbb{E}[y_n] = W_{x_n}$: at inference the
# layer is the plain lookup. The scale is a constant of the batch, so the
# backward pass is the lookup's with each upstream row scaled,
# $\bar W_v = s_v \sum_{n:\,x_n = v} \bar y_n$. Dropping the word everywhere
# at once is the point: the net cannot recover a dropped word from another
# occurrence in the same sentence (Merity et al. 2017 use it in the AWD-LSTM).
# `Embedding(..., dropout=p)` does this; `_keep_mask` draws the inverted
# dropout multipliers, here and in chapter 11's recurrent dropout.

# %%
#| export
def _keep_mask(rng, shape, rate: float, dtype, xp=np):
    """Inverted-dropout multipliers of `shape` and `dtype`: 0 with probability `rate`, else `1/(1 - rate)`,
    drawn from `rng` (a NumPy Generator; on the GPU it seeds CuPy's generator)."""
    dtype = np.dtype(dtype)
    if xp is np: u = rng.random(shape, dtype=np.float64 if dtype == np.float64 else np.float32)
    else: u = xp.random.RandomState(int(rng.integers(2 ** 31))).random_sample(shape, dtype=dtype)
    return (u >= rate).astype(dtype) / dtype.type(1.0 - rate)

# Embedding's backward pass adds each upstream row into the row of its id. `np.add.at` does it (the reference),
# but it is a general indexed ufunc and slow for this; the Numba loop adds the same rows in the same order
# (row i before row i+1, element by element), so it gives the same bits. The CUDA kernel adds with atomics:
# their order, and so the last bits of a repeated id's sum, vary from run to run.
@functools.cache
def _scatter_rows_nb():
    "The Numba loop of `scatter_rows`, compiled on first use: importing the layers needs no Numba (chapter 20's path)."
    from numba import njit

    @njit(cache=True)
    def scatter_rows_loop(dW, ids, rows):
        for i in range(ids.shape[0]):
            w, r = dW[ids[i]], rows[i]
            for j in range(r.shape[0]): w[j] += r[j]
    return scatter_rows_loop

def _build_scatter_cuda():
    "The CUDA kernel of `scatter_rows`, one thread per element of `rows` (built once, by `core.cuda_kernels`)."
    global cuda
    from numba import cuda   # a module global: the simulator swaps it for its fake `cuda`

    @cuda.jit
    def scatter(dW, ids, rows):
        k = cuda.grid(1)
        n, D = rows.shape
        if k < n * D:
            i = k // D; j = k % D
            cuda.atomic.add(dW, (ids[i], j), rows[i, j])
    return {'scatter_rows': scatter}

def scatter_rows(dW, ids, rows, backend: str = 'auto'):
    """Add row `rows[i]` into row `ids[i]` of `dW` for every i, repeated ids summed, and return `dW`.
    dW (V, D); ids (n,) integers in [0, V); rows (n, D). `backend`: 'numpy' is `np.add.at` (`cupyx.scatter_add`
    on the GPU), 'numba' the CPU loop (the same sums in the same order as 'numpy': the same bits, in place),
    'cuda' one thread per element with atomic adds; 'auto' picks 'cuda' for a CuPy `dW`, else 'numba'."""
    be = resolve_backend(dW, backend, 'scatter_rows')
    check_array(dW, 'dW', ndim=2, finite=False, who='scatter_rows')
    check_array(ids, 'ids', ndim=1, kind='iu', who='scatter_rows')
    check_array(rows, 'rows', shape=(ids.shape[0], dW.shape[1]), finite=False, who='scatter_rows')
    if be == 'numba':
        _scatter_rows_nb()(dW, ids, rows)
    elif be == 'numpy':
        if on_device(dW):
            import cupyx; cupyx.scatter_add(dW, ids, rows)
        else: np.add.at(dW, ids, rows)
    else:
        ka = KernelArrays(be, dW)
        d = ka.put(dW)
        launch(cuda_kernels('embedding', _build_scatter_cuda)['scatter_rows'], rows.size, d, ka.put(ids), ka.put(rows, d.dtype))
        dW = ka.result(d)
    return dW

class Embedding(Layer):
    """Lookup `y = W[x]`: integer ids `x` `(N, ...)` in [0, input_dim) -> `(N, ..., output_dim)`;
    `W` `(input_dim, output_dim)`. `backward` fills `grads['W']` and returns None (ids have no gradient).

    `mask_zero`: id 0 is padding; `compute_mask` returns `x != 0` `(N, ...)`, which a model hands to the layers
    that follow (id 0 is then reserved, so `input_dim` must be >= 2). `dropout`: embedding dropout in training,
    each word type's row of `W` dropped with probability `dropout` for the whole batch, kept rows scaled by
    `1/(1 - dropout)`; drawn from `rng`."""
    def __init__(self, input_dim: int, output_dim: int, embeddings_initializer='uniform', mask_zero: bool = False,
                 dropout: float = 0.0, rng=None, name=None):
        super().__init__(name)
        self.input_dim, self.output_dim, self.rng = int(input_dim), int(output_dim), as_rng(rng)
        self.mask_zero, self.dropout = bool(mask_zero), float(dropout)
        if self.input_dim < 1 or self.output_dim < 1:
            raise ValueError(f"Embedding expected input_dim >= 1 and output_dim >= 1, got {input_dim} and {output_dim}")
        if self.mask_zero and self.input_dim < 2:
            raise ValueError(f"Embedding with mask_zero=True reserves id 0 for padding, so it expected a vocabulary of "
                             f"input_dim >= 2, got input_dim={input_dim}")
        if not 0.0 <= self.dropout < 1.0: raise ValueError(f"Embedding expected 0 <= dropout < 1, got {dropout}")
        self.embeddings_initializer = (
            (lambda shape, rng=None, dtype=None: as_rng(rng).uniform(-0.05, 0.05, shape).astype(dtype or get_dtype()))
            if embeddings_initializer == 'uniform' else initializers.get_initializer(embeddings_initializer))

    def build(self, input_shape):
        super().build(input_shape)
        self.add_weight('W', (self.input_dim, self.output_dim), self.embeddings_initializer)

    def output_shape(self, input_shape):
        return (*input_shape, self.output_dim)

    def compute_mask(self, x, mask=None):
        return x != 0 if self.mask_zero else None

    def forward(self, x, training=False):
        shape = (None, *self.input_shape)
        x = check_array(x, 'ids', shape=shape, kind='iu', who='Embedding')
        if x.size and (int(x.min()) < 0 or int(x.max()) >= self.input_dim):
            raise ValueError(f"Embedding expected ids in [0, {self.input_dim}), got values in [{int(x.min())}, {int(x.max())}]")
        W = self.params['W']
        s = None                              # (N, ..., 1): the scale s_v of each position's word, in training
        if training and self.dropout:
            s = _keep_mask(self.rng, (self.input_dim,), self.dropout, W.dtype, get_array_module(W))[x][..., None]
        self.cache = (x, s)
        return W[x] if s is None else W[x] * s

    def backward(self, dy, need_dx: bool = True):
        (x, s), W = self.cache, self.params['W']
        xp = get_array_module(W)
        rows = (dy if s is None else dy * s).reshape(-1, self.output_dim)
        self.grads['W'] = scatter_rows(xp.zeros_like(W), x.reshape(-1), rows)
        return None

# %%
from dl_from_scratch.gradcheck import numerical_grad, rel_error
with precision(np.float64):
    emb = Embedding(7, 3, rng=0); ids = np.array([[1, 2, 1], [6, 0, 1]])
    y = emb(ids); test_eq(y.shape, (2, 3, 3)); test_eq(y[0, 0], emb.params['W'][1])
    g = np.random.default_rng(0).normal(size=y.shape)
    emb.forward(ids); emb.backward(g)
    err = rel_error(emb.grads['W'], numerical_grad(lambda _: float((emb.forward(ids) * g).sum()), emb.params['W']))
    print('Embedding dW relative error', err); assert err < 1e-6
    # embedding dropout, with the draw fixed by reseeding: rows dropped whole, dW checked numerically
    embd = Embedding(7, 3, dropout=0.5, rng=0); embd.build((3,))
    def fwd_d(): embd.rng = np.random.default_rng(5); return embd.forward(ids, training=True)
    yd = fwd_d(); embd.backward(g)
    err = rel_error(embd.grads['W'], numerical_grad(lambda _: float((fwd_d() * g).sum()), embd.params['W']))
    print('Embedding dropout dW relative error', err); assert err < 1e-6
    kept = (yd != 0).all(-1)
    test_eq(kept[0, 0], kept[0, 2]); test_eq(kept[0, 0], kept[1, 2])          # id 1 at three places: one decision
    test_close(yd[kept], 2 * embd.params['W'][ids][kept])                     # kept rows scaled by 1/(1-p)
    test_eq(embd.forward(ids), embd.params['W'][ids])                         # inference: the plain lookup
test_eq(emb.count_params(), 21)
test_fail(lambda: emb(np.array([[7, 0, 0]])), contains='ids in [0, 7)')
test_fail(lambda: emb(np.array([[0.5, 0, 0]])), contains='dtype')
test_eq(Embedding(7, 3, mask_zero=True).compute_mask(ids), ids != 0)
test_eq(emb.compute_mask(ids), None)
test_fail(lambda: Embedding(1, 3, mask_zero=True), contains='input_dim >= 2, got input_dim=1')
test_fail(lambda: Embedding(7, 3, dropout=1.0), contains='0 <= dropout < 1')

# %%
# scatter_rows, three ways: the Numba loop gives np.add.at's bits; the CUDA kernel (Numba's simulator without a GPU)
# the same sums up to the order of its atomic adds
rng = np.random.default_rng(0)
for dt in (np.float32, np.float64):
    ids, rows = rng.integers(0, 9, 500), rng.normal(size=(500, 6)).astype(dt)          # every id repeated
    ref = scatter_rows(np.zeros((9, 6), dt), ids, rows, backend='numpy')
    got = scatter_rows(np.zeros((9, 6), dt), ids, rows, backend='numba')
    assert got.dtype == dt and np.array_equal(got.view(np.uint8), ref.view(np.uint8))    # bit for bit
    test_close(scatter_rows(np.zeros((9, 6), dt), ids, rows, backend='cuda'), ref, eps=1e-5)
    test_close(ref, np.stack([rows[ids == v].sum(0) for v in range(9)]), eps=1e-4)
test_fail(lambda: scatter_rows(np.zeros((9, 6)), ids, rows[:, :5]), contains='rows of shape (500, 6), got (500, 5)')
test_fail(lambda: scatter_rows(np.zeros((9, 6)), ids * 0.5, rows), contains='ids with dtype kind')

# %% [markdown]
# Averaging a sentence's embeddings is the simplest sentence model (the
# averaged-embedding baseline of chapter 12). With a mask it averages over
# the real words only, $y_n = \sum_t m_{nt} x_{nt} / \sum_t m_{nt}$, so the
# padding neither adds zeros to the sum nor counts in the length; the
# backward pass spreads $\bar y_n$ over the real steps with the same weights,
# $\bar x_{nt} = m_{nt}\bar y_n / \sum_{t'} m_{nt'}$. The output has no time
# axis, so the mask ends here.

# %%
#| export
class GlobalAveragePooling1D(Layer):
    """Mean over the time axis, `(N, T, D)` -> `(N, D)`. `forward(x, training, mask=None)`: with `mask` `(N, T)`
    (True at real steps) only the real steps are averaged, `y_n = Σ_t m_nt x_nt / max(Σ_t m_nt, 1)` (a row that is
    all padding gives zeros)."""
    def output_shape(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"{_who(self)} expected input of rank 3 (N, T, D), got input shape (N, *{tuple(input_shape)})")
        return (input_shape[1],)

    def compute_mask(self, x, mask=None): return None        # the time axis is gone

    def forward(self, x, training=False, mask=None):
        x = _check_input(self, x)
        self.output_shape(x.shape[1:])                          # a sequence, (N, T, D)
        xp, (N, T) = get_array_module(x), x.shape[:2]
        if mask is None: w = xp.full((N, T), 1.0 / max(T, 1), x.dtype)
        else:
            mask = xp.asarray(mask)
            if mask.shape != (N, T):
                raise ValueError(f"{_who(self)} expected mask of shape ({N}, {T}) to match the input, got {tuple(mask.shape)}")
            m = (mask != 0).astype(x.dtype)
            w = m / xp.maximum(m.sum(axis=1, keepdims=True), 1)
        self.cache = w[:, :, None]            # (N, T, 1): each step's weight in its row's mean
        return (x * self.cache).sum(axis=1)

    def backward(self, dy, need_dx: bool = True):
        return dy[:, None, :] * self.cache

# %%
from dl_from_scratch.gradcheck import check_layer_grad
class _WithMask:
    "`forward(x, training)` of `layer` with a fixed mask, for `check_layer_grad`."
    def __init__(self, layer, mask): self.layer, self.mask, self.params, self.grads = layer, mask, layer.params, layer.grads
    def __call__(self, x, training=False): return self.forward(x, training)
    def forward(self, x, training=False): return self.layer.forward(x, training, mask=self.mask)
    def backward(self, dy): return self.layer.backward(dy)
xs = np.random.default_rng(1).normal(size=(3, 5, 4)); mk = np.array([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]], bool)
gap = GlobalAveragePooling1D()
test_close(gap(xs), xs.mean(1)); test_eq(gap.output_shape((None, 4)), (4,))
y = gap.forward(xs, mask=mk)
test_close(y[0], xs[0, :3].mean(0)); test_close(y[1], xs[1].mean(0)); test_eq(y[2], np.zeros(4))
test_close(gap.forward(np.concatenate([xs[:1, :3], np.zeros((1, 2, 4))], 1), mask=mk[:1])[0], xs[0, :3].mean(0))  # padding ignored
for m in (None, mk):
    errs = check_layer_grad(_WithMask(GlobalAveragePooling1D(), m), xs)
    assert max(errs.values()) < 1e-6, errs
test_eq(gap.compute_mask(xs, mk), None)
test_fail(lambda: gap.forward(xs, mask=mk[:, :4]), contains='mask of shape (3, 5)')

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
    errs = check_layer_grad(Activation('rrelu', rng=3), rng.normal(size=(4, 6)) + 0.05)   # training: random slopes
    assert max(errs.values()) < 1e-6, errs
    errs = check_layer_grad(PReLU(), rng.normal(size=(4, 3, 5)) + 0.05)
    assert max(errs.values()) < 1e-6, errs
    x6 = np.concatenate([np.linspace(-3, -0.1, 12), np.linspace(0.1, 5.9, 12), np.linspace(6.1, 9, 12)]).reshape(4, 9)
    errs = check_layer_grad(ReLU(max_value=6), x6)                      # ReLU6: both kinks avoided
    assert max(errs.values()) < 1e-6, errs
    test_eq(ReLU(max_value=6)(x6).max(), 6.0)
    errs = check_layer_grad(Flatten(), rng.normal(size=(2, 3, 4, 2)))
    assert max(errs.values()) < 1e-6
    print('largest relative error, Dense(4, tanh):', max(check_layer_grad(Dense(4, 'tanh', rng=1), rng.normal(size=(5, 3))).values()))

# %% [markdown]
# The layers plug into `Sequential` (chapter 05a), whose `fit` runs the
# training loop; `viz` (chapter 05b) draws the pictures. From here on we use
# them as a user of the package would.

# %%
import time
import matplotlib.pyplot as plt
from dl_from_scratch.layers import Dense, Activation, Flatten, Embedding    # the package's classes (the cells above define copies)
from dl_from_scratch.model import Sequential, EarlyStopping
from dl_from_scratch.losses import Loss, BinaryCrossentropy, SparseCategoricalCrossentropy
from dl_from_scratch.optim import SGD, Adam
from dl_from_scratch import init, data
from dl_from_scratch.viz import plot_history, plot_decision_boundary, show_images, plot_confusion_matrix
RESULTS = {}     # name -> (source's number, ours), for the closing table

# %% [markdown]
# ## The source's layer-by-layer tests
#
# *Build Your Own Deep Learning* (source 000, §3.3) follows each function
# of its L-layer net with a unit test: inputs drawn with `np.random.seed(1)`
# and `randn`, and the mean of each result compared with a printed value.
# Its layout is feature-major, $Z = WA + b$ with $A$ of shape
# $(n_{l-1}, m)$, the transpose of ours, $XW + b$ with $X$ of shape
# $(m, n_{l-1})$; and it puts the cost's $1/m$ into each layer's $dW$ and
# $db$ but not into $dA$, where we put it into the loss's gradient. So the
# same draws go through our `Dense` layers transposed (a mean does not see a
# transpose), with upstream gradient $dZ^\top/m$ and
# $dA_\text{prev} = m\,\bar X^\top$. Two tests draw a $Z$ independently of
# $A$, $W$, $b$; there we apply the activation's derivative from
# `functional` to that $Z$ and call the layer's linear backward. The source's
# `linear_activation_backward` test unpacks the three rows of $dA_\text{prev}$
# as if they were $(dA_\text{prev}, dW, db)$, and the real $dW$, $db$ as
# "cache" and "dz"; its five numbers are printed below under their true
# names. Every value must agree within one unit of its last printed digit
# (the source truncates some, e.g. $-0.1307868$ is printed $-0.130786$).

# %%
from dl_from_scratch.functional import sigmoid_grad, relu_grad
given = lambda a: (lambda shape, rng=None, dtype=None: np.asarray(a, dtype).reshape(shape))   # an initialiser that returns `a`
def dense(W, b, act=None):
    "Our Dense layer holding the source's W (n_l, n_{l-1}) and b (n_l, 1), built for inputs (m, n_{l-1})."
    d = Dense(W.shape[0], act, kernel_initializer=given(W.T), bias_initializer=given(b.ravel()))
    d.build((W.shape[1],)); return d
def linear_back(W, b, A_prev, dZ):
    "The source's linear_backward (dA_prev, dW, db) through Dense.backward: upstream dZᵀ/m, and dA_prev = m·dXᵀ."
    d, m = dense(W, b), A_prev.shape[1]
    d.forward(A_prev.T); dX = d.backward(dZ.T / m)
    return m * dX.T, d.grads['W'].T, d.grads['b'][:, None]
src_tests = []                    # (test, quantity, the source's printed mean, ours)
with precision(np.float64):
    rs = np.random.RandomState(1); A, W, b = rs.randn(3, 2), rs.randn(1, 3), rs.randn(1, 1)
    src_tests += [('linear_forward', 'Z', '1.014326', dense(W, b)(A.T).mean()),
                  ('cache_sys', 'A', '-0.337447', A.mean()), ('cache_sys', 'W', '0.434214', W.mean()), ('cache_sys', 'b', '-0.249370', b.mean()),
                  ('activation_forward', 'sigmoid A', '0.594282', dense(W, b, 'sigmoid')(A.T).mean()),
                  ('activation_forward', 'relu A', '1.631476687327087', dense(W, b, 'relu')(A.T).mean())]
    rs = np.random.RandomState(1); X = rs.randn(5, 4)
    Ws_bs = [(rs.randn(4, 5), rs.randn(4, 1)), (rs.randn(3, 4), rs.randn(3, 1)), (rs.randn(1, 3), rs.randn(1, 1))]
    net = [dense(W_, b_, act) for (W_, b_), act in zip(Ws_bs, ['relu', 'relu', 'sigmoid'])]
    a = X.T
    for layer in net: a = layer(a)
    src_tests += [('model_layer_forward', 'AL', '0.7759899100529316', a.mean()), ('model_layer_forward', 'X', '-0.133364', X.mean()),
                  ('model_layer_forward', 'A1', '1.027273', net[1].cache[0].mean()), ('model_layer_forward', 'A2', '1.809404', net[2].cache[0].mean()),
                  ('model_layer_forward', 'W1', '-0.045831', net[0].params['W'].mean()), ('model_layer_forward', 'b1', '-0.033542', net[0].params['b'].mean()),
                  ('model_layer_forward', 'Z3', '3.481814', net[2].cache[1].mean())]
    rs = np.random.RandomState(1); dZ, A, W, b = rs.randn(3, 4), rs.randn(5, 4), rs.randn(3, 5), rs.randn(3, 1)
    src_tests += [('linear_backward', k, v, o.mean()) for k, v, o in zip(('dA_prev', 'dW', 'db'), ('0.048344507', '0.11302689', '-0.130786'),
                                                                          linear_back(W, b, A, dZ))]
    rs = np.random.RandomState(1); dA, A, W, b, Z = rs.randn(1, 2), rs.randn(3, 2), rs.randn(1, 3), rs.randn(1, 1), rs.randn(2, 1, 1)
    for name, g_, expected in (('sigmoid', sigmoid_grad, ('0.039350', '-0.0307574', '0.180336', '0.240041', '0.123340')),
                               ('relu', relu_grad, ('0.0',) * 5)):
        dA_prev, dW, db = linear_back(W, b, A, dA * g_(Z[0]))          # the test's activation cache is Z[0]
        src_tests += [(f'linear_activation_backward, {name}', k, v, o) for k, v, o in zip(
            ('dA_prev row 0', 'dA_prev row 1', 'dA_prev row 2', 'dW', 'db'), expected,
            (dA_prev[0].mean(), dA_prev[1].mean(), dA_prev[2].mean(), dW.mean(), db.mean()))]
    rs = np.random.RandomState(1)
    AL, Y, A1, W1, b1, Z1 = rs.randn(1, 2), rs.randn(1, 2), rs.randn(4, 2), rs.randn(3, 4), rs.randn(3, 1), rs.randn(1, 3, 2)
    A2, W2, b2, Z2 = rs.randn(3, 2), rs.randn(1, 3), rs.randn(1, 1), rs.randn(1, 2)
    dAL = -Y / AL + (1 - Y) / (1 - AL)                                  # the cross-entropy's dL/dAL, per example
    dA1, dW2, db2 = linear_back(W2, b2, A2, dAL * sigmoid_grad(Z2))
    dA0, dW1, db1 = linear_back(W1, b1, A1, dA1 * relu_grad(Z1[0]))
    src_tests += [('model_layer_backward', k, v, o.mean()) for k, v, o in zip(
        ('dA1', 'dW2', 'db2', 'dA0', 'dW1', 'db1'), ('0.0222427', '0.0314625', '-0.1977597', '-0.002841569', '0.009781', '0.00890932'),
        (dA1, dW2, db2, dA0, dW1, db1))]
    rs = np.random.RandomState(1)
    params = {k: rs.randn(*sh) for k, sh in (('W1', (3, 4)), ('b1', (3, 1)), ('W2', (1, 3)), ('b2', (1, 1)))}
    grads = {k: rs.randn(*v.shape) for k, v in params.items()}
    SGD(0.1).step(params, grads)
    src_tests += [('gradient_descent, lr 0.1', k, v, params[k].mean()) for k, v in
                  zip(params, ('-0.137122', '0.206737023', '-0.6566852', '0.018772'))]
    rs = np.random.RandomState(2)                                       # init_param_deep: W = randn × 0.01, layer by layer
    for l, (n_prev, n, v) in enumerate(zip([1, 2, 3], [2, 3, 4], ('-0.0023651', '-0.0064558', '0.00013353')), 1):
        src_tests.append(('init_param_deep([1,2,3,4])', f'W{l}', v, (rs.randn(n, n_prev) * 0.01).mean()))
print(f"{'test':36s} {'quantity':14s} {'source':>20s} {'ours':>22s}")
for t_, q, v, o in src_tests:
    print(f'{t_:36s} {q:14s} {v:>20s} {o:22.16g}')
    digits = len(v.split('.')[1]) if '.' in v else 0
    assert abs(o - float(v)) <= 10 ** -digits + 1e-12 * abs(o), (t_, q, v, o)   # within one unit of the last printed digit
RESULTS['source 000 §3.3 unit tests (printed means)'] = (f'{len(src_tests)} values', f'all {len(src_tests)} reproduced')

# %% [markdown]
# ## Experiment 1: XOR with a 2–5–1 sigmoid net
#
# *Hands-On Deep Learning Algorithms* (source 002, ch. 1) trains XOR,
# $X = [[0,1],[1,0],[1,1],[0,0]]$, $y = [1,1,0,0]$, with a 2–5–1 net of
# sigmoids, weights from `randn` (standard normal), zero biases, cost
# $J = \tfrac12\sum(y-\hat y)^2$ (a *sum*, not a mean), full-batch gradient
# descent with $\alpha = 0.01$ for 5000 iterations. The book only shows the
# cost falling; its summary notes that at this learning rate the net barely
# learns. We reproduce the setting exactly (the cost as a small `Loss`
# subclass) and then raise the learning rate.

# %%
class HalfSumSquaredError(Loss):
    "Source 002's cost J = ½ Σ (ŷ - y)²; gradient ŷ - y."
    name = 'half_sse'
    def value_and_grad(self, y_pred, y_true):
        e = y_pred - y_true.reshape(y_pred.shape)
        return float(0.5 * (e * e).sum()), e

X_xor = np.array([[0, 1], [1, 0], [1, 1], [0, 0]], np.float32); Y_xor = np.array([[1], [1], [0], [0]], np.float32)
randn = lambda shape, rng=None, dtype=None: init.random_normal(shape, rng, dtype, stddev=1.0)

def xor_net(lr, seed=0, iters=5000):
    m = Sequential([Dense(5, 'sigmoid', kernel_initializer=randn, rng=seed),
                    Dense(1, 'sigmoid', kernel_initializer=randn, rng=seed + 100)])
    m.compile(HalfSumSquaredError(), SGD(lr), ['accuracy'])
    h = m.fit(X_xor, Y_xor, epochs=iters, batch_size=4, shuffle=False, verbose=0)
    return m, h

fig, ax = plt.subplots(1, 2, figsize=(11, 3.5))
xor_runs = {}
for lr in [0.01, 0.1, 1.0, 5.0]:
    t0 = time.perf_counter(); m, h = xor_net(lr); dt = time.perf_counter() - t0
    xor_runs[lr] = m
    p = m.predict(X_xor).ravel()
    print(f"lr {lr:5}: cost {h.history['loss'][0]:.4f} -> {h.history['loss'][-1]:.6f}, "
          f"outputs {np.round(p, 3)}, accuracy {h.history['accuracy'][-1]:.2f}  ({dt:.1f} s)")
    ax[0].plot(h.history['loss'], label=f'α = {lr}')
ax[0].set(xlabel='iteration', ylabel='J = ½Σ(y - ŷ)²', title='XOR, 2–5–1 sigmoid', yscale='log'); ax[0].legend()
plot_decision_boundary(xor_runs[1.0], X_xor, Y_xor, ax=ax[1], resolution=200, title='α = 1: decision regions')
plt.show()
p001 = xor_runs[0.01].predict(X_xor).ravel(); p1 = xor_runs[1.0].predict(X_xor).ravel()
assert np.abs(p001 - 0.5).max() < 0.2                 # α = 0.01: outputs still near 0.5 after 5000 steps
assert ((p1 > 0.5) == (Y_xor.ravel() > 0.5)).all() and np.abs(p1 - Y_xor.ravel()).max() < 0.05   # α = 1 solves XOR
RESULTS['XOR, α 0.01, 5000 it.: outputs'] = ('"loss decreases" (no numbers)', ' '.join(f'{v:.2f}' for v in p001))
RESULTS['XOR, α 1, 5000 it.: outputs'] = ('-', ' '.join(f'{v:.3f}' for v in p1))

# %% [markdown]
# With $\alpha = 0.01$ the outputs are still close to 0.5 after 5000
# steps: the cost does decrease, as the source says, but the net has not
# learnt XOR. The gradient of a sigmoid is at most 1/4 per layer and the
# cost is a sum over only four examples, so the steps are tiny. $\alpha = 1$
# solves it within the same 5000 iterations, and the decision regions show
# the two parallel bands that no single line can draw.

# %% [markdown]
# ## Experiment 2: the planar "flower" with a 2–4–1 tanh net
#
# The deeplearning.ai planar-data assignment (source 003, §15): 400 points
# in two classes arranged as petals (`data.planar_flower`, the course's
# generator with its seed). Logistic regression reached **47%**; a net with
# one hidden layer of 4 tanh units and a sigmoid output, weights
# `randn * 0.01`, zero biases, cross-entropy, full-batch gradient descent
# with $\alpha = 1.2$ for 10 000 iterations reached **90%**. We compute the
# sigmoid and the cross-entropy together from the logit (`from_logits=True`),
# which is the same function, computed stably.

# %%
Xp, yp = data.planar_flower()
Yp = yp[:, None].astype(np.float32)
runs = {}
for name, layers in [('logistic regression', [Dense(1, kernel_initializer='zeros')]),
                     ('2–4–1 tanh', [Dense(4, 'tanh', kernel_initializer='small', rng=2), Dense(1, kernel_initializer='small', rng=3)])]:
    m = Sequential(layers); m.compile(BinaryCrossentropy(from_logits=True), SGD(1.2), ['accuracy'])
    t0 = time.perf_counter(); h = m.fit(Xp, Yp, epochs=10000, batch_size=len(Xp), shuffle=False, verbose=0)
    runs[name] = (m, h)
    print(f"{name}: cost {h.history['loss'][0]:.6f} (it. 0), {h.history['loss'][9000]:.6f} (it. 9000); "
          f"train accuracy {m.evaluate(Xp, Yp)[1]:.2%}  ({time.perf_counter() - t0:.1f} s)")
fig, ax = plt.subplots(1, 2, figsize=(10, 4))
for a, (name, (m, h)) in zip(ax, runs.items()):
    plot_decision_boundary(lambda g, m=m: m.predict(g), Xp, yp, ax=a, threshold=0.0, title=f'{name}: {m.evaluate(Xp, Yp)[1]:.1%}')
plt.show()
acc_lr, acc_mlp = runs['logistic regression'][0].evaluate(Xp, Yp)[1], runs['2–4–1 tanh'][0].evaluate(Xp, Yp)[1]
assert acc_lr < 0.6 and acc_mlp > 0.88
RESULTS['planar, logistic regression'] = ('47%', f'{acc_lr:.1%}')
RESULTS['planar, 2–4–1 tanh, α 1.2, 10 000 it.'] = ('90%', f'{acc_mlp:.1%}')

# %% [markdown]
# ## Experiment 3: a deep net on the CIFAR-10 "animal" task
#
# *Build Your Own Deep Learning* (source 000, §3.3) builds an L-layer net
# [3072, 10, 7, 5, 1] (ReLU, sigmoid output) for chapter 03's task: is a
# CIFAR-10 image an animal? Classes 2–6 (bird, cat, deer, dog, frog) are
# labelled 1 and all others 0. The source leaves *horse* (class 7) out of the
# animals; we keep its labelling so the numbers are comparable. Inputs are
# pixels/255, flattened in HWC order. Weights are `randn(n_l, n_{l-1}) * 0.01`
# drawn with `np.random.seed(2)` in layer order, biases zero, full-batch
# gradient descent with $\alpha = 0.0075$. The source printed three costs,
# then ran out of memory on a 4 GB machine (the float64 input alone is
# 1.14 GiB), and reported no accuracy.
#
# **Replica.** Same seed, same draws (transposed to our `(n_in, n_out)`
# layout), same data, float64, full batch, three steps:

# %%
#| slow
#| cifar10
xtr, ytr = data.load('cifar10', 'train'); xte, yte = data.load('cifar10', 'test')
from dl_from_scratch.linear import animal_labels                       # chapter 03's labelling
animal = lambda y: animal_labels(y).astype(np.float32)[:, None]
dims = [3072, 10, 7, 5, 1]
rs = np.random.RandomState(2)
Ws = [rs.randn(dims[l], dims[l - 1]) * 0.01 for l in range(1, len(dims))]    # the source's draws, in its order
fixed = lambda W: (lambda shape, rng=None, dtype=None: W.T.astype(dtype))
with precision(np.float64):
    X64 = xtr.reshape(len(xtr), -1) / 255.0
    deep = Sequential([Dense(n, 'relu' if i < 3 else 'sigmoid', kernel_initializer=fixed(Ws[i]))
                       for i, n in enumerate(dims[1:])], input_shape=(3072,))
    deep.compile('binary_crossentropy', SGD(0.0075), metrics=[])
    src = [0.6931471834644863, 0.6931471811113991, 0.6931471787358986]
    ours = [deep.train_step((X64, animal(ytr).astype(np.float64)))['loss'] for _ in range(3)]
del X64
for i, (s, o) in enumerate(zip(src, ours)):
    print(f'cost {i}: source {s!r}  ours {o!r}  difference {o - s:.1e}')
    assert abs(o - s) < 1e-12
    RESULTS[f'deep net ×0.01 init, cost {i}'] = (repr(s), repr(o))
print(f'ln 2 = {float(np.log(2))!r}')

# %% [markdown]
# All three costs agree to 15–16 significant digits (the last digit
# differs by the order of a floating-point sum). They sit at
# $\ln 2 = 0.693147\ldots$, the cost of answering 0.5 for every image. That
# is not a sanity check passing, as the source reads it: it is the signal
# dying. Each layer multiplies the activations' scale by about
# $0.01\sqrt{n_\text{in}}$ (and ReLU halves the variance), so after four
# layers the output's logit is $\approx 10^{-6}$, and the backward pass
# shrinks the gradients the same way. Chapter 06 derives the fix: He
# initialisation, $\operatorname{Var}(w) = 2/n_\text{in}$, keeps the scale
# at 1 through ReLU layers.
#
# **Training it.** Full-batch descent is slow on two cores, so both runs use
# minibatches (64, shuffled) of float32 SGD with the source's
# $\alpha = 0.0075$, 10 epochs, differing only in the initialiser:

# %%
#| slow
#| cifar10
Xtr = (xtr.reshape(len(xtr), -1) / np.float32(255)).astype(np.float32); Xte = (xte.reshape(len(xte), -1) / np.float32(255)).astype(np.float32)
Ytr, Yte = animal(ytr), animal(yte)
deep_runs = {}
for label, kinit in [('×0.01 (source)', 'small'), ('He normal', 'he_normal')]:
    m = Sequential([Dense(n, 'relu', kernel_initializer=kinit, rng=i) for i, n in enumerate(dims[1:-1])]
                   + [Dense(1, 'sigmoid', kernel_initializer=kinit if kinit == 'small' else 'glorot_uniform', rng=9)])
    m.compile('binary_crossentropy', SGD(0.0075), ['accuracy'])
    t0 = time.perf_counter()
    h = m.fit(Xtr, Ytr, epochs=10, batch_size=64, validation_data=(Xte, Yte), rng=0, verbose=0)
    deep_runs[label] = h
    print(f"{label:15} loss {h.history['loss'][0]:.4f} -> {h.history['loss'][-1]:.4f}; train accuracy "
          f"{h.history['accuracy'][-1]:.2%}, test accuracy {h.history['val_accuracy'][-1]:.2%}  ({time.perf_counter() - t0:.0f} s)")
plot_history(deep_runs, title='[3072, 10, 7, 5, 1] on CIFAR-10 animal vs not (SGD 0.0075, batch 64)')
plt.show()
h_small, h_he = deep_runs['×0.01 (source)'], deep_runs['He normal']
assert abs(h_small.history['loss'][-1] - np.log(2)) < 2e-3 and h_he.history['loss'][-1] < 0.6
RESULTS['deep net ×0.01 init, test accuracy'] = ('none (out of memory)', f"{h_small.history['val_accuracy'][-1]:.2%}")
RESULTS['deep net He init, test accuracy'] = ('none (out of memory)', f"{h_he.history['val_accuracy'][-1]:.2%}")

# %% [markdown]
# With ×0.01 weights the loss never leaves $\ln 2$ and the net predicts
# one class for everything (50% of CIFAR-10 is in classes 2–6, so that is
# chance). He initialisation trains the same net with the same optimizer.
# Source 000's logistic regression on this task (chapter 03) reached 76.47%
# (train) and 76.72% (test) after 2000 full-batch steps; the deep net with He
# init gets the accuracy printed above (about 79% on the test set in the
# committed run) after 10 cheap epochs. With only 10 units in its first
# layer it cannot be much better than the linear model; the point here is the
# initialisation, not the architecture.

# %% [markdown]
# ## Experiment 4: an MLP on MNIST
#
# A 784–512–256–128–10 ReLU MLP with Adam ($\alpha = 10^{-3}$, batch 128),
# Glorot-uniform kernels (Keras' default), logits and the fused softmax
# cross-entropy. We hold out the last 5000 training images for validation and
# stop early on validation accuracy (patience 3, restoring the best weights);
# the test set is used once, at the end. Target: about 98% test accuracy, the
# usual figure for an MLP of this size with Adam and no regularisation.
#
# A quick version first (one epoch on 10 000 images), which the fast test run
# executes; the full run is the slow cell after it.

# %%
#| mnist
xm, ym = data.load('mnist', 'train'); xmt, ymt = data.load('mnist', 'test')
Xm, Xmt = xm.astype(np.float32) / 255, xmt.astype(np.float32) / 255
def mnist_mlp(seed=0):
    m = Sequential([Flatten(), Dense(512, 'relu', rng=seed), Dense(256, 'relu', rng=seed + 1),
                    Dense(128, 'relu', rng=seed + 2), Dense(10, rng=seed + 3)], input_shape=(28, 28, 1))
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-3), ['accuracy'])
    return m
m = mnist_mlp()
t0 = time.perf_counter(); h = m.fit(Xm[:10000], ym[:10000], epochs=1, batch_size=128, rng=0, verbose=0)
quick_acc = m.evaluate(Xmt, ymt)[1]
print(f'1 epoch on 10 000 images: test accuracy {quick_acc:.2%} ({time.perf_counter() - t0:.1f} s)')
assert quick_acc > 0.9

# %%
#| slow
#| cifar10
#| mnist
m = mnist_mlp()
m.summary()
t0 = time.perf_counter()
h = m.fit(Xm[:55000], ym[:55000], epochs=20, batch_size=128, validation_data=(Xm[55000:], ym[55000:]), rng=0, verbose=2,
          callbacks=[EarlyStopping(monitor='val_accuracy', patience=3, restore_best_weights=True, verbose=1)])
t_mnist = time.perf_counter() - t0
test_loss, test_acc = m.evaluate(Xmt, ymt)
print(f'test accuracy {test_acc:.2%}, test loss {test_loss:.4f}; training took {t_mnist:.0f} s '
      f'({t_mnist / len(h.epoch):.1f} s per epoch on this machine)')
assert test_acc >= 0.975                 # about 98%: the table below gives this run's value
RESULTS['MNIST MLP 784–512–256–128–10, Adam: test accuracy'] = ('≈ 98% (usual figure)', f'{test_acc:.2%}')

# %%
#| slow
#| cifar10
#| mnist
plot_history(h, title='MNIST MLP'); plt.show()
pred = m.predict(Xmt).argmax(1)
plot_confusion_matrix(ymt, pred, class_names=[str(i) for i in range(10)], title='MNIST test, MLP'); plt.show()
wrong = np.flatnonzero(pred != ymt)[:16]
show_images(xmt[wrong], titles=[f'{t}→{p}' for t, p in zip(ymt[wrong], pred[wrong])], ncols=8,
            suptitle='misclassified test digits (true→predicted)'); plt.show()

# %% [markdown]
# **The *Hands-On* recipe, replicated.** Source 002 (ch. 2) trains the same
# 784–512–256–128–10 architecture in TensorFlow 1.x with another recipe:
# weights from a normal truncated at two standard deviations (σ = 0.1),
# biases 0.1, Adam with $\alpha = 10^{-4}$, batches of 128 from the 55 000
# training images (TensorFlow's loader keeps the first 5000 for
# validation), 1000 iterations, and it prints the loss and accuracy *of the
# current batch* every 100 iterations, from 2.31 and 0.117 at the start to
# 1.52 and 0.945 at iteration 900. Its output layer is a **sigmoid**, fed to
# `softmax_cross_entropy_with_logits` as if it were logits. The sigmoid
# squeezes every "logit" into (0, 1), so the loss can never fall below
# $-\log\frac{e}{e + 9} = \log(e + 9) - 1 \approx 1.461$ (the correct class
# at 1, the nine others at 0), which is why the source's loss stalls near
# 1.5 while its accuracy is fine. We replicate it exactly that way: a
# sigmoid output layer and a softmax cross-entropy that takes it as logits,
# and the batch's loss and accuracy measured after each printed step, as the
# source's `sess.run` after the update does.

# %%
#| cifar10
#| mnist
def truncated_normal(shape, rng=None, dtype=None, stddev=0.1):
    "TensorFlow's truncated_normal: N(0, stddev^2), values beyond 2 stddev drawn again."
    g = np.random.default_rng(rng)
    w = g.standard_normal(shape)
    while (bad := np.abs(w) > 2).any(): w[bad] = g.standard_normal(int(bad.sum()))
    return (w * stddev).astype(dtype or np.float32)
bias_01 = lambda shape, rng=None, dtype=None: np.full(shape, 0.1, dtype or np.float32)
replica = Sequential([Flatten()] + [Dense(n, 'relu', kernel_initializer=truncated_normal, bias_initializer=bias_01, rng=i)
                                   for i, n in enumerate([512, 256, 128])]
                     + [Dense(10, 'sigmoid', kernel_initializer=truncated_normal, bias_initializer=bias_01, rng=3)],
                     input_shape=(28, 28, 1))
replica.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-4), ['accuracy'])   # softmax CE on sigmoid outputs
g, bs, log = np.random.default_rng(0), 128, {}
order = np.concatenate([g.permutation(np.arange(5000, 60000)) for _ in range(3)])   # reshuffled each epoch, as TF's next_batch
for it in range(1000):
    idx = order[it * bs:(it + 1) * bs]
    replica.train_step((Xm[idx], ym[idx]))
    if it % 100 == 0: log[it] = replica.evaluate(Xm[idx], ym[idx])        # the batch's loss and accuracy after the step
floor = float(np.log(np.e + 9) - 1)
src_log = {0: (2.30789709091, 0.1171875), 100: (1.76062202454, 0.859375), 900: (1.52060437202, 0.9453125)}
print(f"{'iteration':>9} {'batch loss':>11} {'batch accuracy':>15}   source (loss / accuracy)")
for it, (l, a) in log.items():
    print(f'{it:9d} {l:11.4f} {a:15.4f}   ' + (f'{src_log[it][0]:.4f} / {src_log[it][1]:.4f}' if it in src_log else ''))
rep_test = replica.evaluate(Xmt, ymt)
print(f'loss floor log(e + 9) - 1 = {floor:.4f}; replica test accuracy {rep_test[1]:.2%}, test loss {rep_test[0]:.4f}')
assert min(l for l, _ in log.values()) > floor and log[900][1] > 0.85
RESULTS['Hands-On MLP replica, batch loss at it. 0 / 900'] = ('2.31 / 1.52', f'{log[0][0]:.2f} / {log[900][0]:.2f}')
RESULTS['Hands-On MLP replica, batch accuracy at it. 0 / 900'] = ('0.117 / 0.945', f'{log[0][1]:.3f} / {log[900][1]:.3f}')
RESULTS['Hands-On MLP replica, test accuracy'] = ('not reported', f'{rep_test[1]:.2%}')

# %% [markdown]
# The replica follows the source's course: a per-batch loss that falls fast
# and then stalls above the floor of about 1.46, and a per-batch accuracy
# that jumps around 0.9 (one batch of 128 is a noisy measure; the source's
# own log goes 0.9375, 0.890625, 0.921875, 0.859375 between iterations 200
# and 500). The test accuracy, which the source does not report, is printed
# above. Our own recipe (logits into the fused loss, $\alpha = 10^{-3}$,
# early stopping) is the one to use: its loss has no floor.

# %% [markdown]
# ## Our numbers beside the sources'
#
# The table is printed from the runs above (slow cells included in the
# committed run).

# %%
#| cifar10
#| mnist
print(f"{'experiment':52} {'source':>32} {'ours':>26}")
for k, (s, o) in RESULTS.items(): print(f'{k:52} {str(s):>32} {str(o):>26}')

# %% [markdown]
# Notes on the comparison:
#
# * **XOR** (source 002): the source shows only a falling cost curve. At its
#   $\alpha = 0.01$ the outputs stay near 0.5 after 5000 iterations; the
#   net has not learnt XOR. $\alpha = 1$ solves it in the same number of
#   steps.
# * **Planar flower** (source 003): our generator is the course's
#   (`np.random.seed(1)`, 400 points), so the data are the same; our
#   initial draws come from our own generator, so the accuracy differs from
#   the course's 90% by a point or so depending on the seed.
# * **Deep net** (source 000): the three printed costs are reproduced to
#   the last digit or two; they equal $\ln 2$ because the ×0.01 init stalls
#   the net, which the source took for a sanity check. The source reports no
#   accuracy; ours is printed above.
# * **MNIST** (source 002): the *Hands-On* book trains this very MLP, but
#   reports only per-batch numbers (loss 2.31 → 1.52, accuracy 0.117 →
#   0.945 on one batch of 128) of a net whose sigmoid output feeds a softmax
#   cross-entropy, so its loss cannot go below about 1.46. The replica above
#   reproduces that course; the table gives both. Our recipe is judged on the
#   test set instead, against the usual figure of about 98% for an MLP of
#   this size with Adam and no regularisation (chapter 06 adds dropout); the
#   table gives what this run reached.
#
# ## References
#
# * D. E. Rumelhart, G. E. Hinton, R. J. Williams, *Learning representations by back-propagating errors*, Nature 323, 1986.
# * G. Cybenko, *Approximation by superpositions of a sigmoidal function*, 1989; K. Hornik, *Approximation capabilities of multilayer feedforward networks*, 1991.
# * X. Glorot, Y. Bengio, *Understanding the difficulty of training deep feedforward neural networks*, AISTATS 2010.
# * K. He, X. Zhang, S. Ren, J. Sun, *Delving deep into rectifiers*, ICCV 2015.
# * Source texts: 000 *Build Your Own Deep Learning* §3.3 (L-layer net, CIFAR-10 animal task); 002 *Hands-On Deep Learning Algorithms with Python* ch. 1 (XOR) and ch. 2 (the TensorFlow MNIST MLP); 003 deeplearning.ai course notes §15 (planar data).
# * F. Chollet et al., Keras API reference (`Sequential`, `Dense`, `summary`), for the names and parameter counts.
