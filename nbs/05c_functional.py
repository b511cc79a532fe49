# %% [markdown]
# # Graphs of layers: functional models, shared weights, custom training steps
#
# > Models that are not a chain: graphs of layers built with the functional API, the merge layers (`Add`, `Subtract`, `Multiply`, `Average`, `Concatenate`), the reshaping layers (`Reshape`, `Permute`, `RepeatVector`), and a gradient check for whole graphs.
#
# ## Purpose
#
# `Sequential` runs layers one after another. Most networks of the later
# chapters are not a chain: a residual block adds its input to its output
# (chapter 09), an Inception block runs four branches side by side and
# concatenates them, a siamese network runs one encoder on two inputs, a
# VAE's loss reads a hidden layer (chapter 14), a GAN trains two models with
# two optimizers (chapter 15), and style transfer differentiates with
# respect to the input image (chapter 17). This chapter
#
# 1. derives how a *graph* of layer calls runs forward and backward:
#    topological order, gradients summed where a tensor fans out, and
#    parameter gradients summed over every call of a shared layer;
# 2. builds the layers that only graphs need, which join tensors (`Add`,
#    `Subtract`, `Multiply`, `Average`, `Concatenate`) or change their shape
#    (`Reshape`, `Permute`, `RepeatVector`), in the module `merge`;
# 3. uses the functional `Model(inputs, outputs)` of chapter 05a's `model`
#    (where `Sequential` is the special case of a chain) on residual,
#    Inception, two-input and siamese graphs, each gradient-checked;
# 4. writes the training loop out, overrides `train_step` (a GAN step, a
#    VAE-style extra loss), and computes a saliency map of an MNIST CNN from
#    the gradient with respect to the input.

# %%
#| default_exp merge

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import get_array_module
from dl_from_scratch.layers import Layer, _who, _shapes_match

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail
import numpy as np
from dl_from_scratch.core import precision
# %% [markdown]
# ## Derivation: backpropagation through a graph
#
# **The graph.** Calling a layer on symbolic tensors (chapter 05) records a
# *node*: this layer, these input tensors, these output tensors. Tensors are
# the edges, nodes the vertices; since a node can read only tensors that
# exist when it is called, the graph has no cycle. `Model(inputs, outputs)`
# collects the nodes the outputs depend on by a depth-first walk backwards
# from the outputs, and lists each node after every node it reads: a
# *topological order* $v_1, \dots, v_K$. Forward runs the nodes in that order;
# every tensor is computed before anyone reads it.
#
# **Fan-out.** Let a tensor $h$ be read by several nodes, $y_1 = f_1(h)$,
# …, $y_m = f_m(h)$, and let the loss depend on $h$ only through them. The
# multivariate chain rule gives
#
# $$\bar h = \frac{\partial \mathcal L}{\partial h}
#   = \sum_{j=1}^m \Big(\frac{\partial y_j}{\partial h}\Big)^{\!\top} \bar y_j ,$$
#
# the sum of what each reader's backward returns. So the backward pass runs
# the nodes in *reverse* topological order (every reader of $h$ comes after
# $h$'s maker in the forward order, so before it in the backward order): when
# a node's turn comes, all the terms of its outputs' $\bar y$ have arrived and
# been added. A residual block $y = F(x) + x$ is the simplest case: $x$ fans
# out to $F$ and to the `Add`, and $\bar x = J_F^\top \bar y + \bar y$; the
# identity term is why gradients reach the early layers of deep residual
# nets undiminished.
#
# **Shared weights.** A layer called at several nodes uses one $W$ in each:
# $y_j = f(x_j; W)$. By the same rule,
#
# $$\bar W = \sum_j \Big(\frac{\partial y_j}{\partial W}\Big)^{\!\top} \bar y_j ,$$
#
# the sum of the parameter gradients of every call. Each call's backward
# needs what *that* call's forward cached ($x_j$ for a dense layer), so a
# layer's single `cache` slot is not enough: the model keeps each node's
# cache after the node's forward and hands it back to the layer before the
# node's backward. The same holds for a model called at several nodes (a
# siamese encoder), whose cache is the list of its own nodes' caches. A layer
# that keeps work arrays between batches (chapter 07's im2col columns) gets
# fresh ones at each call when it is shared, so that one call does not
# overwrite what another call's cache still points to.
#
# **Inputs.** Running the same recursion down to the model's inputs gives
# $\partial\mathcal L/\partial x$ for every input: `backward` returns it (a
# list for several inputs). Training never reads it, so `train_step` asks
# for `need_dx=False` and the first layers skip that product; style transfer,
# saliency maps and adversarial examples (below) read it.
#
# **The model's layout.** Once the order is known, the model numbers the
# tensors $0, \dots, T-1$ and stores a flat *plan*, one step per node: the
# layer, the numbers of the tensors it reads and writes. Forward and
# backward are then two loops over a list and an array of $T$ slots, the
# same loops a chain would run, which is why `Sequential` is a `Model` of a
# chain and costs nothing extra.
# %% [markdown]
# ## Layers that join tensors
#
# A merge layer takes a *list* of $k$ tensors. Its backward returns a list
# of $k$ gradients, one per input, by the chain rule on its formula:
#
# | layer | forward | backward, for input $i$ |
# |---|---|---|
# | `Add` | $y = \sum_j x_j$ | $\bar x_i = \bar y$ |
# | `Subtract` | $y = x_1 - x_2$ | $\bar x_1 = \bar y$, $\bar x_2 = -\bar y$ |
# | `Multiply` | $y = \prod_j x_j$ | $\bar x_i = \bar y \odot \prod_{j\ne i} x_j$ |
# | `Average` | $y = \frac1k\sum_j x_j$ | $\bar x_i = \bar y / k$ |
# | `Concatenate(axis)` | $y = [x_1, \dots, x_k]$ along `axis` | $\bar x_i$ = the slice of $\bar y$ that $x_i$ filled |
#
# `Add` hands the same array $\bar y$ to every input. That is safe because
# no layer's `backward` writes into the `dy` it is given (the book's layers
# keep to that rule), and the model adds gradients out of place.
#
# The elementwise layers need inputs of one shape; `Concatenate` needs
# equal shapes except on its axis. As in Keras, `axis` counts the batch
# axis, so the default $-1$ joins channels of NHWC images or features.

# %%
#| export
class _Merge(Layer):
    "Base of the layers that combine a list of at least two tensors of one shape, elementwise."
    min_inputs, max_inputs = 2, None

    def _check_shapes(self, shapes: list) -> None:
        if not isinstance(shapes, list) or not self.min_inputs <= len(shapes) <= (self.max_inputs or len(shapes)):
            n = f"{self.min_inputs}" + ('' if self.max_inputs == self.min_inputs else ' or more')
            raise ValueError(f"{_who(self)} expected a list of {n} inputs, got "
                             f"{shapes if isinstance(shapes, list) else 'one input of shape ' + str(shapes)}")
        for s in shapes[1:]:
            if not (_shapes_match(shapes[0], s) or _shapes_match(s, shapes[0])):
                raise ValueError(f"{_who(self)} expected inputs of one shape, got {[(None, *t) for t in shapes]}")

    def build(self, input_shape):
        self._check_shapes(list(input_shape) if isinstance(input_shape, (list, tuple)) and input_shape
                           and isinstance(input_shape[0], (list, tuple)) else input_shape)
        self.input_shape = [tuple(s) for s in input_shape]
        self.built = True

    def output_shape(self, input_shape):
        return tuple(input_shape[0])

    def _inputs(self, xs) -> list:
        "The list of input arrays, checked against the shapes the layer was built for."
        if not isinstance(xs, (list, tuple)): self._check_shapes(tuple(xs.shape[1:]))
        shapes = [tuple(x.shape[1:]) for x in xs]
        if not _shapes_match(self.input_shape, shapes) or len({x.shape[0] for x in xs}) != 1:
            raise ValueError(f"{_who(self)} expected inputs of shapes {[(None, *s) for s in self.input_shape]}, "
                             f"got {[tuple(x.shape) for x in xs]}")
        return list(xs)

class Add(_Merge):
    "`y = x_1 + ... + x_k`: a list of k >= 2 arrays `(N, ...)` of one shape -> `(N, ...)`."
    def forward(self, xs, training=False):
        xs = self._inputs(xs)
        self.cache = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]: y += x
        return y

    def backward(self, dy, need_dx: bool = True):
        return [dy] * self.cache

class Subtract(_Merge):
    "`y = x_1 - x_2`: a list of two arrays `(N, ...)` of one shape -> `(N, ...)`."
    min_inputs = max_inputs = 2
    def forward(self, xs, training=False):
        a, b = self._inputs(xs)
        self.cache = 2
        return a - b

    def backward(self, dy, need_dx: bool = True):
        return [dy, -dy]

class Multiply(_Merge):
    "`y = x_1 * ... * x_k` elementwise: a list of k >= 2 arrays `(N, ...)` of one shape -> `(N, ...)`."
    def forward(self, xs, training=False):
        xs = self._inputs(xs)
        self.cache = xs
        y = xs[0] * xs[1]
        for x in xs[2:]: y = y * x
        return y

    def backward(self, dy, need_dx: bool = True):
        xs = self.cache
        out = []
        for i in range(len(xs)):
            g = dy
            for j, x in enumerate(xs):
                if j != i: g = g * x
            out.append(g)
        return out

class Average(_Merge):
    "`y = (x_1 + ... + x_k) / k`: a list of k >= 2 arrays `(N, ...)` of one shape -> `(N, ...)`."
    def forward(self, xs, training=False):
        xs = self._inputs(xs)
        self.cache = len(xs)
        y = xs[0] + xs[1]
        for x in xs[2:]: y += x
        return y / len(xs)

    def backward(self, dy, need_dx: bool = True):
        return [dy / self.cache] * self.cache

class Concatenate(_Merge):
    """Join a list of k >= 2 arrays along `axis` (counting the batch axis, as Keras; default the last):
    shapes equal except on `axis` -> the sizes on `axis` add up."""
    def __init__(self, axis: int = -1, name=None):
        super().__init__(name)
        self.axis = int(axis)
        if self.axis == 0: raise ValueError("Concatenate expected an axis other than the batch axis 0, got 0")

    def _check_shapes(self, shapes):
        if not isinstance(shapes, list) or len(shapes) < 2:
            raise ValueError(f"{_who(self)} expected a list of 2 or more inputs, got {shapes}")
        rank = len(shapes[0])
        a = self.axis - 1 if self.axis > 0 else rank + self.axis
        if not 0 <= a < rank or any(len(s) != rank for s in shapes):
            raise ValueError(f"{_who(self)} expected inputs of one rank with axis {self.axis}, got {[(None, *s) for s in shapes]}")
        rest = lambda s: s[:a] + s[a + 1:]
        for s in shapes[1:]:
            if not (_shapes_match(rest(shapes[0]), rest(s)) or _shapes_match(rest(s), rest(shapes[0]))):
                raise ValueError(f"{_who(self)} expected inputs of equal shapes except on axis {self.axis}, "
                                 f"got {[(None, *t) for t in shapes]}")
        self._a = a

    def output_shape(self, input_shape):
        s = list(input_shape[0])
        sizes = [t[self._a] for t in input_shape]
        s[self._a] = None if None in sizes else sum(sizes)
        return tuple(s)

    def forward(self, xs, training=False):
        xs = self._inputs(xs)
        xp = get_array_module(xs[0])
        ends = np.cumsum([x.shape[self._a + 1] for x in xs])
        self.cache = ends
        return xp.concatenate(xs, axis=self._a + 1)

    def backward(self, dy, need_dx: bool = True):
        ends = self.cache
        return [dy[(slice(None),) * (self._a + 1) + (slice(e - n, e),)]
                for e, n in zip(ends, np.diff(np.concatenate([[0], ends])))]

    def _inputs(self, xs):
        if not isinstance(xs, (list, tuple)): self._check_shapes(tuple(xs.shape[1:]))
        shapes = [tuple(x.shape[1:]) for x in xs]
        if len(shapes) != len(self.input_shape) or len({x.shape[0] for x in xs}) != 1 or any(
                not _shapes_match(e[:self._a] + e[self._a + 1:], g[:self._a] + g[self._a + 1:])
                for e, g in zip(self.input_shape, shapes)):
            raise ValueError(f"{_who(self)} expected inputs of shapes {[(None, *s) for s in self.input_shape]} "
                             f"(any size on axis {self.axis}), got {[tuple(x.shape) for x in xs]}")
        return list(xs)
# %% [markdown]
# Each merge layer's backward against central differences, in float64. The
# checker below works for any layer or model with a list of inputs: the
# loss is $\sum_o \langle f_o(X), G_o\rangle$ for random $G_o$, and every
# input and every parameter is compared with its numerical gradient.

# %%
#| export
def check_graph_grad(f, xs: list, seed: int = 0, h: float = 1e-5) -> dict:
    """Relative errors of `f.backward` (dL/dx for every input, a list) and of `f.grads` against central
    differences, for L = sum of <output_o, G_o> with random G_o. `f`: a layer or model taking a list of
    float64 arrays `xs`; run it under `precision(np.float64)`. Returns `{'x0': err, ..., param: err}`."""
    from dl_from_scratch.gradcheck import numerical_grad, rel_error
    xs = [np.array(x, dtype=np.float64) for x in xs]
    arg = lambda: xs if len(xs) > 1 or isinstance(getattr(f, 'input_shape', None), list) else xs[0]
    outs = lambda: (lambda y: y if isinstance(y, list) else [y])(f.forward(arg(), training=True))
    f(arg(), training=True)
    r = np.random.default_rng(seed)
    G = [r.standard_normal(y.shape) for y in outs()]
    loss = lambda: float(sum((y * g).sum() for y, g in zip(outs(), G)))
    outs()
    dx = f.backward(G if len(G) > 1 else G[0])
    dx = dx if isinstance(dx, list) else [dx]
    grads = {k: np.array(v) for k, v in f.grads.items()}
    errs = {}
    for i, x in enumerate(xs):
        errs[f'x{i}'] = rel_error(dx[i], numerical_grad(lambda v: loss(), x, h))
    for k, p in f.params.items():
        errs[k] = rel_error(grads[k], numerical_grad(lambda v: loss(), p, h))
    return errs

# %%
r = np.random.default_rng(0)
with precision(np.float64):
    a, b, c = (r.standard_normal((3, 4, 5)) for _ in range(3))
    for layer, xs in [(Add(), [a, b, c]), (Subtract(), [a, b]), (Multiply(), [a, b, c]), (Average(), [a, b, c]),
                      (Concatenate(), [a, b[..., :2]]), (Concatenate(axis=1), [a, b[:, :1]])]:
        errs = check_graph_grad(layer, xs)
        assert max(errs.values()) < 1e-6, (layer, errs)
    test_close(Add()([a, b, c]), a + b + c); test_close(Average()([a, b]), (a + b) / 2)
    test_eq(Concatenate(axis=1)([a, b[:, :1]]).shape, (3, 5, 5))
test_fail(lambda: Add()(a), contains='expected a list of 2 or more inputs')
test_fail(lambda: Subtract()([a, b, c]), contains='expected a list of 2 inputs')
test_fail(lambda: Add()([a, b[..., :2]]), contains='expected inputs of one shape')
test_fail(lambda: Concatenate()([a, b[:, :2]]), contains='equal shapes except on axis -1')
# %% [markdown]
# ## Layers that change shape
#
# `Reshape(target_shape)` and `Permute(dims)` move the same numbers into a
# new shape (batch axis untouched), so their backward moves the gradient
# back: the inverse reshape, and the inverse permutation. `RepeatVector(n)`
# turns `(N, D)` into `(N, n, D)` (a decoder that reads one code at every
# time step, chapter 13); each copy's gradient flows back to the same
# vector, so the backward pass sums over the $n$ copies. `dims` counts from
# 1, as in Keras: `Permute((2, 1))` swaps the two axes after the batch.
# All three end a padding mask (chapter 05a), as Keras's do: after them the
# time axis is gone, moved, or new. The merge layers above keep Keras's
# rule instead: the output's mask is the AND of the inputs' masks.

# %%
#| export
class Reshape(Layer):
    "`(N, *input_shape)` -> `(N, *target_shape)` with as many elements; one entry of `target_shape` may be -1."
    def __init__(self, target_shape, name=None):
        super().__init__(name)
        self.target_shape = tuple(int(s) for s in target_shape)
        if sum(s == -1 for s in self.target_shape) > 1 or any(s < -1 or s == 0 for s in self.target_shape):
            raise ValueError(f"Reshape expected sizes >= 1 and at most one -1, got {target_shape}")

    def output_shape(self, input_shape):
        n, known = int(np.prod(input_shape)), int(np.prod([s for s in self.target_shape if s != -1]))
        out = tuple(n // known if s == -1 else s for s in self.target_shape)
        if int(np.prod(out)) != n or (-1 in self.target_shape and n % known):
            raise ValueError(f"{_who(self)} cannot reshape (None, {', '.join(map(str, input_shape))}) "
                             f"({n} values per example) to {self.target_shape}")
        return out

    def build(self, input_shape):
        super().build(input_shape)
        self._out = self.output_shape(self.input_shape)

    def forward(self, x, training=False):
        if tuple(x.shape[1:]) != self.input_shape:
            raise ValueError(f"{_who(self)} expected input of shape (N, {', '.join(map(str, self.input_shape))}), got {x.shape}")
        self.cache = x.shape
        return x.reshape(x.shape[0], *self._out)

    def backward(self, dy, need_dx: bool = True):
        return dy.reshape(self.cache)

    def compute_mask(self, x, mask=None): return None       # the time axis may be gone

class Permute(Layer):
    "Permute the axes after the batch axis: `dims` is a permutation of 1..rank (Keras's convention)."
    def __init__(self, dims, name=None):
        super().__init__(name)
        self.dims = tuple(int(d) for d in dims)
        if sorted(self.dims) != list(range(1, len(self.dims) + 1)):
            raise ValueError(f"Permute expected a permutation of 1..{len(self.dims)}, got {dims}")
        self._inverse = tuple(int(i) + 1 for i in np.argsort(self.dims))

    def output_shape(self, input_shape):
        if len(input_shape) != len(self.dims):
            raise ValueError(f"{_who(self)} expected input of rank {len(self.dims) + 1}, got (None, {', '.join(map(str, input_shape))})")
        return tuple(input_shape[d - 1] for d in self.dims)

    def forward(self, x, training=False):
        if x.ndim != len(self.dims) + 1:
            raise ValueError(f"{_who(self)} expected input of rank {len(self.dims) + 1}, got shape {x.shape}")
        self.cache = True
        return x.transpose(0, *self.dims)

    def backward(self, dy, need_dx: bool = True):
        return dy.transpose(0, *self._inverse)

    def compute_mask(self, x, mask=None): return None       # the time axis may have moved

class RepeatVector(Layer):
    "`(N, D)` -> `(N, n, D)`: the vector repeated `n` times."
    def __init__(self, n: int, name=None):
        super().__init__(name)
        if int(n) < 1: raise ValueError(f"RepeatVector expected n >= 1, got {n}")
        self.n = int(n)

    def output_shape(self, input_shape):
        if len(input_shape) != 1:
            raise ValueError(f"{_who(self)} expected input of rank 2 (N, D), got (None, {', '.join(map(str, input_shape))})")
        return (self.n, input_shape[0])

    def forward(self, x, training=False):
        if x.ndim != 2: raise ValueError(f"{_who(self)} expected input of rank 2 (N, D), got shape {x.shape}")
        self.cache = True
        return get_array_module(x).repeat(x[:, None, :], self.n, axis=1)

    def backward(self, dy, need_dx: bool = True):
        return dy.sum(axis=1)

    def compute_mask(self, x, mask=None): return None       # a new time axis, every step real

# %%
from dl_from_scratch.gradcheck import check_layer_grad
with precision(np.float64):
    for layer, x in [(Reshape((2, -1)), r.standard_normal((3, 4, 5))), (Permute((2, 3, 1)), r.standard_normal((2, 3, 4, 5))),
                     (RepeatVector(3), r.standard_normal((4, 5)))]:
        errs = check_layer_grad(layer, x)
        assert max(errs.values()) < 1e-6, (layer, errs)
test_eq(Reshape((2, -1))(np.zeros((3, 4, 5))).shape, (3, 2, 10))
test_eq(Permute((2, 1))(np.arange(6.).reshape(1, 2, 3))[0], np.arange(6.).reshape(2, 3).T)
test_eq(RepeatVector(2)(np.array([[1., 2.]]))[0], [[1., 2.], [1., 2.]])
test_fail(lambda: Reshape((3, -1))(np.zeros((1, 4, 5))), contains='cannot reshape (None, 4, 5)')
test_fail(lambda: Permute((1, 1)), contains='permutation')
m2 = np.array([[True, False], [True, True]])
test_eq(Reshape((2, -1)).compute_mask(r.standard_normal((2, 2, 3)), m2), None)
test_eq(Add().compute_mask([None, None], [m2, None]), m2)
test_eq(Concatenate().compute_mask([None, None], [m2, ~m2]), np.zeros((2, 2), bool))
# %% [markdown]
# ## Graphs, gradient-checked
#
# Five graphs that the later chapters need, each built with `Input`, layer
# calls and `Model`, and each checked in float64 against central
# differences (every input and every parameter):
#
# * a **residual block with a projection shortcut** (ResNet, chapter 09):
#   two 3×3 convolutions, the first with stride 2, and a 1×1 stride-2
#   convolution on the shortcut so that the shapes agree;
# * an **Inception-style block** (GoogLeNet, chapter 09): 1×1, 1×1→3×3,
#   1×1→5×5 and 3×3-max-pool→1×1 branches, concatenated on the channels;
# * a **two-input, two-output** model that uses every merge layer;
# * a **siamese pair**: one encoder (itself a `Model`) run on two images, a
#   head on the squared difference of the two codes (chapter 16);
# * a **nested model**: a model called inside another, beside a skip.

# %%
from dl_from_scratch.layers import Dense, Activation, Flatten, Dropout, BatchNorm
from dl_from_scratch.conv import Conv2D, MaxPool2D, DepthwiseConv2D, ZeroPadding2D, GlobalAveragePooling2D
from dl_from_scratch.model import Model, Sequential, Input

def residual_block(rng=0):
    x = Input((6, 6, 3))
    h = Conv2D(4, 3, strides=2, padding='same', activation='tanh', rng=rng)(x)
    h = Conv2D(4, 3, padding='same', rng=rng + 1)(h)
    s = Conv2D(4, 1, strides=2, rng=rng + 2)(x)                       # projection shortcut
    return Model(x, Activation('tanh')(Add()([h, s])), name='residual')

def inception_block(rng=0):
    x = Input((5, 5, 3))
    b1 = Conv2D(2, 1, rng=rng)(x)
    b2 = Conv2D(3, 3, padding='same', rng=rng + 2)(Conv2D(2, 1, activation='tanh', rng=rng + 1)(x))
    b3 = Conv2D(2, 5, padding='same', rng=rng + 4)(Conv2D(1, 1, activation='tanh', rng=rng + 3)(x))
    b4 = Conv2D(2, 1, rng=rng + 5)(MaxPool2D(3, strides=1, padding='same')(x))
    return Model(x, Concatenate()([b1, b2, b3, b4]), name='inception')

def two_in_two_out(rng=0):
    a, b = Input((5,), name='a'), Input((3,), name='b')
    h, g = Dense(4, 'tanh', rng=rng)(a), Dense(4, 'tanh', rng=rng + 1)(b)
    m = Multiply()([h, g])
    y1 = Dense(2, rng=rng + 2, name='y1')(Add()([h, m]))
    y2 = Dense(1, 'sigmoid', rng=rng + 3, name='y2')(Concatenate()([h, g, Subtract()([h, g]), Average()([h, m])]))
    return Model([a, b], [y1, y2], name='two_in_two_out')

def siamese(rng=0):
    x = Input((4, 4, 1))
    enc = Model(x, Dense(3, 'tanh', rng=rng + 1)(Flatten()(Conv2D(2, 3, activation='tanh', rng=rng)(x))), name='encoder')
    a, b = Input((4, 4, 1)), Input((4, 4, 1))
    d = Subtract()([enc(a), enc(b)])
    return Model([a, b], Dense(1, rng=rng + 5)(Multiply()([d, d])), name='siamese')

def nested(rng=0):
    xi = Input((4,))
    inner = Model(xi, Dense(3, 'tanh', rng=rng + 1)(Dense(5, 'tanh', rng=rng)(xi)), name='inner')
    x = Input((6,))
    h = Dense(4, 'tanh', rng=rng + 2)(x)
    return Model(x, Dense(2, rng=rng + 3)(Concatenate()([inner(h), h])), name='outer')

GRAPHS = {'residual block, projection shortcut': (residual_block, [(2, 6, 6, 3)]),
          'Inception block, 4 branches': (inception_block, [(2, 5, 5, 3)]),
          'two inputs, two outputs': (two_in_two_out, [(3, 5), (3, 3)]),
          'siamese pair, one encoder': (siamese, [(2, 4, 4, 1), (2, 4, 4, 1)]),
          'nested model': (nested, [(3, 6)])}
rg = np.random.default_rng(7)
print(f"{'graph':38} {'params':>7} {'max relative error':>20}")
for name, (make, shapes) in GRAPHS.items():
    with precision(np.float64):
        model = make()
        errs = check_graph_grad(model, [rg.standard_normal(s) for s in shapes])
    print(f'{name:38} {model.count_params():7d} {max(errs.values()):20.2e}')
    assert max(errs.values()) < 1e-6, (name, errs)

# %% [markdown]
# Every error is below $10^{-10}$, the level of the central differences'
# own round-off, far below the $10^{-6}$ we require. The
# siamese model's summary shows the encoder once, read by both inputs, and
# its parameters counted once:

# %%
siamese().summary()

# %% [markdown]
# **A chain is a graph.** `Sequential` builds the same plan as the
# equivalent functional model, so from the same seeds the two give the same
# outputs, gradients and training run, bit for bit:

# %%
rg = np.random.default_rng(0)
x = rg.standard_normal((64, 4)).astype(np.float32); y = rg.integers(0, 3, 64)
seq = Sequential([Dense(8, 'relu', rng=0), Dropout(0.2, rng=5), Dense(3, rng=1)], input_shape=(4,))
t = Input((4,))
fun = Model(t, Dense(3, rng=1)(Dropout(0.2, rng=5)(Dense(8, 'relu', rng=0)(t))))
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.optim import SGD, Adam
hist = {}
for label, m in [('Sequential', seq), ('functional', fun)]:
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.01))
    hist[label] = m.fit(x, y, epochs=3, batch_size=16, rng=0, verbose=0).history['loss']
print(hist)
assert hist['Sequential'] == hist['functional']
assert all((a == b).all() for a, b in zip(seq.get_weights(), fun.get_weights()))

# %% [markdown]
# **Bad graphs** are refused when the model is made, with the layer and
# the shapes in the message:

# %%
a, b = Input((5,), name='a'), Input((3,), name='b')
for make in [lambda: Model([a, b], Dense(2)(a)),                                   # b reaches no output
             lambda: Model(a, Dense(2)(Concatenate()([a, b]))),                     # b is needed but not an input
             lambda: Model(a, np.zeros(3)),                                         # not a symbolic tensor
             lambda: Model([a, b], Dense(2)(Concatenate()([a, b])))([np.zeros((2, 5)), np.zeros((2, 4))])]:
    try: make(); raise AssertionError('accepted')
    except ValueError as e: print(e)
t1 = Dense(5, name='first')(a); t2 = Dense(5, name='second')(t1)
t1.node.inputs = [t2]                                   # wire a layer's output back into its own input
test_fail(lambda: Model(a, t2), contains='cycle through layer')
# %% [markdown]
# ## Parameter counts equal to Keras's
#
# Three reference networks of `keras.applications`, built here layer for
# layer (not trained; zero initialisers keep the build cheap) at
# 224×224×3 with 1000 classes. `Model.count_params()` counts each layer
# once; BatchNorm's moving mean and variance are non-trainable, as in
# Keras. MobileNetV2's ReLU6 has no weights, so a ReLU stands in for it in
# the count.

# %%
def _conv(f, k, s=1, bias=True, padding='valid'):
    return Conv2D(f, k, strides=s, padding=padding, use_bias=bias, kernel_initializer='zeros')

def resnet50():
    "keras.applications.ResNet50: bottleneck blocks, a 1x1 projection on each stage's first shortcut."
    def block(x, filters, stride=1, conv_shortcut=True):
        s = BatchNorm(eps=1.001e-5)(_conv(4 * filters, 1, stride)(x)) if conv_shortcut else x
        x = Activation('relu')(BatchNorm(eps=1.001e-5)(_conv(filters, 1, stride)(x)))
        x = Activation('relu')(BatchNorm(eps=1.001e-5)(_conv(filters, 3, padding='same')(x)))
        x = BatchNorm(eps=1.001e-5)(_conv(4 * filters, 1)(x))
        return Activation('relu')(Add()([s, x]))
    inp = Input((224, 224, 3))
    x = Activation('relu')(BatchNorm(eps=1.001e-5)(_conv(64, 7, 2)(ZeroPadding2D(3)(inp))))
    x = MaxPool2D(3, strides=2)(ZeroPadding2D(1)(x))
    for filters, blocks, stride in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        x = block(x, filters, stride)
        for _ in range(blocks - 1): x = block(x, filters, conv_shortcut=False)
    return Model(inp, Dense(1000, 'softmax', kernel_initializer='zeros')(GlobalAveragePooling2D()(x)), name='resnet50')

def vgg16():
    "keras.applications.VGG16: 13 3x3 convolutions in five stages, then 4096-4096-1000."
    inp = x = Input((224, 224, 3))
    for filters, n in [(64, 2), (128, 2), (256, 3), (512, 3), (512, 3)]:
        for _ in range(n): x = Conv2D(filters, 3, padding='same', activation='relu', kernel_initializer='zeros')(x)
        x = MaxPool2D(2)(x)
    x = Flatten()(x)
    for units in (4096, 4096): x = Dense(units, 'relu', kernel_initializer='zeros')(x)
    return Model(inp, Dense(1000, 'softmax', kernel_initializer='zeros')(x), name='vgg16')

def mobilenet_v2():
    "keras.applications.MobileNetV2(alpha=1.0): inverted residual blocks (1x1 expand, 3x3 depthwise, 1x1 project)."
    bn = lambda: BatchNorm(eps=1e-3, momentum=0.999)
    def inverted_res(x, expansion, stride, filters, block_id):
        c, h = x.shape[-1], x
        if block_id: h = Activation('relu')(bn()(_conv(expansion * c, 1, bias=False)(h)))
        if stride == 2: h = ZeroPadding2D(((0, 1), (0, 1)))(h)
        h = DepthwiseConv2D(3, strides=stride, use_bias=False, padding='same' if stride == 1 else 'valid',
                            depthwise_initializer='zeros')(h)
        h = bn()(_conv(filters, 1, bias=False)(Activation('relu')(bn()(h))))
        return Add()([x, h]) if c == filters and stride == 1 else h
    inp = Input((224, 224, 3))
    x = Activation('relu')(bn()(_conv(32, 3, 2, bias=False, padding='same')(inp)))
    block_id = 0
    for filters, stride, t, n in [(16, 1, 1, 1), (24, 2, 6, 2), (32, 2, 6, 3), (64, 2, 6, 4), (96, 1, 6, 3),
                                  (160, 2, 6, 3), (320, 1, 6, 1)]:
        for i in range(n):
            x = inverted_res(x, t, stride if i == 0 else 1, filters, block_id); block_id += 1
    x = Activation('relu')(bn()(_conv(1280, 1, bias=False)(x)))
    return Model(inp, Dense(1000, 'softmax', kernel_initializer='zeros')(GlobalAveragePooling2D()(x)), name='mobilenetv2')

KERAS = {'ResNet-50': (resnet50, 25_636_712, 25_583_592), 'VGG-16': (vgg16, 138_357_544, 138_357_544),
         'MobileNetV2 (α 1.0)': (mobilenet_v2, 3_538_984, 3_504_872)}
print(f"{'model':22} {'layers':>6} {'ours: total':>14} {'trainable':>12} {'Keras: total':>14} {'trainable':>12}")
for name, (make, total, trainable) in KERAS.items():
    m = make()
    print(f'{name:22} {len(m.layers):6d} {m.count_params():14,} {m.count_trainable_params():12,} {total:14,} {trainable:12,}')
    assert (m.count_params(), m.count_trainable_params()) == (total, trainable)

# %% [markdown]
# The summary of a graph has Keras's "Connected to" column: each layer,
# with the tensors it reads (`layer[call][output]`). The first lines of
# ResNet-50's, where the first block's shortcut and main path meet:

# %%
lines = []; resnet50().summary(print_fn=lines.append)
print('\n'.join(lines[0].split('\n')[:22] + ['...'] + lines[0].split('\n')[-5:]))

# %% [markdown]
# ## No magic: the training loop written out
#
# `fit` is a loop around `train_step`, and the default `train_step` is
# four lines. Written out by hand on the moons, the loop gives the same
# weights as `fit`, bit for bit:

# %%
from dl_from_scratch import data
from dl_from_scratch.losses import BinaryCrossentropy, MeanSquaredError
from dl_from_scratch.optim import get_optimizer
Xm, ym = data.make_moons(512, noise=0.1, rng=0); Xm = Xm.astype(np.float32); Ym = ym[:, None].astype(np.float32)

def moons_net():
    x = Input((2,)); h = Dense(16, 'tanh', rng=0)(x)
    return Model(x, Dense(1, rng=1)(Dense(16, 'tanh', rng=2)(h)))

by_hand, loss_fn, opt = moons_net(), BinaryCrossentropy(from_logits=True), Adam(0.01)
order_rng = np.random.default_rng(0)
for epoch in range(5):
    order = order_rng.permutation(len(Xm))
    for i in range(0, len(Xm), 32):
        idx = order[i:i + 32]
        y = by_hand(Xm[idx], training=True)                  # forward, caching what backward needs
        loss, dy = loss_fn.value_and_grad(y, Ym[idx])        # the loss and dL/dy
        by_hand.backward(dy, need_dx=False)                  # fills every layer's grads
        opt.step(by_hand.params, by_hand.grads)              # updates the arrays in place
with_fit = moons_net(); with_fit.compile(BinaryCrossentropy(from_logits=True), Adam(0.01), metrics='accuracy')
with_fit.fit(Xm, Ym, epochs=5, batch_size=32, rng=0, verbose=0)
same = all((a == b).all() for a, b in zip(by_hand.get_weights(), with_fit.get_weights()))
print(f'loop by hand and fit give the same weights: {same}; accuracy {with_fit.evaluate(Xm, Ym)[1]:.1%}')
assert same

# %% [markdown]
# ## Custom training steps
#
# `train_step(batch)` is the hook. A subclass of `Model` overrides it and
# uses the same pieces: `forward`, a loss's `value_and_grad`, `backward`,
# and `apply_gradients(optimizer)`, which updates the `trainable` layers
# only and checks that the weights stay finite. `fit` still shuffles,
# batches, averages whatever logs the step returns and calls the callbacks.
#
# **A GAN step** (chapter 15 in full): a generator $G$ maps noise to
# samples, a discriminator $D$ tells real from fake. One step trains $D$ on
# a batch of real (label 1) and generated (label 0) samples with its own
# optimizer, then trains $G$ *through* $D$ with a second optimizer: the
# combined model $D(G(z))$ with $D$ frozen, and labels 1, so that $G$ learns
# what makes $D$ say "real". Here on one dimension: the real data are
# $\mathcal N(3, 0.5^2)$.

# %%
class GAN(Model):
    "D(G(z)) with one D step and one G step (D frozen) per batch of real samples."
    def __init__(self, G, D, rng=0):
        z = Input(G.input_shape)
        super().__init__(z, D(G(z)), name='gan')
        self.G, self.D, self.rng = G, D, np.random.default_rng(rng)

    def compile(self, d_optimizer, g_optimizer):
        self.d_opt, self.g_opt, self.bce = get_optimizer(d_optimizer), get_optimizer(g_optimizer), BinaryCrossentropy()
        return self

    def train_step(self, batch):
        x_real, _ = batch
        n = len(x_real)
        z = self.rng.standard_normal((2 * n, *self.G.input_shape)).astype(np.float32)
        x_fake = self.G(z[:n])
        p = self.D(np.concatenate([x_real, x_fake]), training=True)            # D step
        d_loss, dy = self.bce.value_and_grad(p, np.r_[np.ones((n, 1)), np.zeros((n, 1))].astype(np.float32))
        self.D.backward(dy, need_dx=False); self.D.apply_gradients(self.d_opt)
        self.D.trainable = False                                                 # G step, through a frozen D
        g_loss, dy = self.bce.value_and_grad(self(z[n:], training=True), np.ones((n, 1), np.float32))
        self.backward(dy, need_dx=False); self.apply_gradients(self.g_opt)
        self.D.trainable = True
        return {'d_loss': d_loss, 'g_loss': g_loss}

zi = Input((4,)); G = Model(zi, Dense(1, rng=1)(Dense(16, 'tanh', rng=0)(zi)), name='G')
xi = Input((1,)); D = Model(xi, Dense(1, 'sigmoid', rng=3)(Dense(16, 'tanh', rng=2)(xi)), name='D')
gan = GAN(G, D).compile(Adam(2e-3, beta_1=0.5), Adam(2e-3, beta_1=0.5))
real = np.random.default_rng(1).normal(3.0, 0.5, (2048, 1)).astype(np.float32)
noise = np.random.default_rng(2).standard_normal((4096, 4)).astype(np.float32)
before = G.predict(noise)
h = gan.fit(real, epochs=30, batch_size=64, rng=0, verbose=0)
after = G.predict(noise)
print(f"generated samples: mean {before.mean():.2f} -> {after.mean():.2f}, std {before.std():.2f} -> {after.std():.2f} "
      f"(real: mean {real.mean():.2f}, std {real.std():.2f}); last epoch d_loss {h.history['d_loss'][-1]:.3f}, "
      f"g_loss {h.history['g_loss'][-1]:.3f}")
assert abs(after.mean() - 3.0) < 0.3 and abs(before.mean() - 3.0) > 1.0
# %% [markdown]
# The step does what it should: the generated mean moves from about 0 to
# the real 3.00. The spread does not follow: it shrinks to about 0.13
# where the real data have 0.50, and both losses sit near $\ln 2 = 0.693$,
# the value at which $D$ answers ½ for everything. The generator has found
# the region $D$ accepts rather than the distribution, a small case of the
# *mode collapse* that chapter 15 takes up (minibatch statistics, other
# losses). The mechanics, two optimizers and a frozen $D$ inside the
# combined model, are what this chapter needed.
#
# **A loss from a hidden layer** (a VAE, chapter 14 in full). The encoder
# gives a mean $\mu$ and a log-variance $\log\sigma^2$ per example; a
# sampling layer draws $z = \mu + \sigma\,\varepsilon$ with
# $\varepsilon \sim \mathcal N(0, 1)$; the decoder reconstructs $x$ from $z$.
# The loss adds to the reconstruction error the KL divergence of
# $\mathcal N(\mu, \sigma^2)$ from $\mathcal N(0, 1)$,
#
# $$\text{KL} = \tfrac{1}{N}\sum_n \tfrac12 \sum_d \big(\mu^2 + \sigma^2 - \log\sigma^2 - 1\big),\qquad
#   \frac{\partial\,\text{KL}}{\partial\mu} = \frac{\mu}{N},\quad
#   \frac{\partial\,\text{KL}}{\partial\log\sigma^2} = \frac{\sigma^2 - 1}{2N},$$
#
# which reads the hidden tensors $\mu$ and $\log\sigma^2$, not the output.
# So the model lists them as outputs too, and the step hands `backward` one
# gradient per output: the reconstruction's, and the KL term's two. The
# sampling layer is the only new layer: $\bar\mu = \bar z$,
# $\overline{\log\sigma^2} = \bar z \odot \tfrac12\sigma\varepsilon$.

# %%
class Sampling(Layer):
    "`[mu, log_var]` `(N, D)` each -> `z = mu + exp(log_var / 2) * eps`, eps ~ N(0, 1) from `rng`."
    def __init__(self, rng=None, name=None):
        super().__init__(name); self.rng = np.random.default_rng(rng)
    def build(self, input_shape):
        self.input_shape, self.built = [tuple(s) for s in input_shape], True
    def output_shape(self, input_shape): return tuple(input_shape[0])
    def forward(self, xs, training=False):
        mu, log_var = xs
        s_eps = np.exp(0.5 * log_var) * self.rng.standard_normal(mu.shape).astype(mu.dtype)
        self.cache = s_eps
        return mu + s_eps
    def backward(self, dz, need_dx=True):
        return [dz, 0.5 * dz * self.cache]

class FixedNoise(Sampling):                        # the same eps at every call, for the gradient check
    def forward(self, xs, training=False):
        self.rng = np.random.default_rng(0); return super().forward(xs, training)
with precision(np.float64):
    errs = check_graph_grad(FixedNoise(), [rg.standard_normal((4, 2)), rg.standard_normal((4, 2))])
print('Sampling gradient check:', errs); assert max(errs.values()) < 1e-6

class VAE(Model):
    "Outputs [x_hat, mu, log_var]; the step's loss is reconstruction MSE + beta * KL(N(mu, sigma^2) || N(0, 1))."
    beta = 0.02
    def train_step(self, batch):
        x, _ = batch
        x_hat, mu, log_var = self(x, training=True)
        rec, d_rec = MeanSquaredError().value_and_grad(x_hat, x)
        n, var = len(x), np.exp(log_var)
        kl = float(0.5 * (mu ** 2 + var - log_var - 1).sum() / n)
        self.backward([d_rec, self.beta * mu / n, self.beta * 0.5 * (var - 1) / n], need_dx=False)
        self.apply_gradients()
        return {'loss': rec + self.beta * kl, 'reconstruction': rec, 'kl': kl}

x = Input((2,))
h = Dense(32, 'tanh', rng=0)(x)
mu, log_var = Dense(1, rng=1, name='mu')(h), Dense(1, rng=2, name='log_var')(h)
dec_hidden, dec_out = Dense(32, 'tanh', rng=3), Dense(2, rng=4, name='x_hat')
x_hat = dec_out(dec_hidden(Sampling(rng=5)([mu, log_var])))
vae = VAE(x, [x_hat, mu, log_var], name='vae')
vae.compile(optimizer=Adam(3e-3))
Xv = (Xm - Xm.mean(0)) / Xm.std(0)
h = vae.fit(Xv, epochs=60, batch_size=32, rng=0, verbose=0)
print(f"reconstruction {h.history['reconstruction'][0]:.3f} -> {h.history['reconstruction'][-1]:.3f}, "
      f"KL {h.history['kl'][0]:.3f} -> {h.history['kl'][-1]:.3f}")
assert h.history['reconstruction'][-1] < 0.5 * h.history['reconstruction'][0]

# %% [markdown]
# The reconstruction error falls (printed above) while the KL term rises
# from its start: at first the code carries almost no information about
# $x$ (a posterior close to the prior costs little KL and reconstructs
# badly); training buys reconstruction with information. With a
# one-dimensional code the VAE can only lay the two moons along a curve;
# codes $z \in [-2.5, 2.5]$ decoded trace it:

# %%
import matplotlib.pyplot as plt
zs = np.linspace(-2.5, 2.5, 200, dtype=np.float32)[:, None]
dec_in = Input((1,)); dec = Model(dec_in, dec_out(dec_hidden(dec_in)), name='decoder')     # the VAE's trained layers
curve = dec.predict(zs)
fig, ax = plt.subplots(figsize=(5, 3.5))
ax.scatter(*Xv.T, s=4, c=ym, cmap='coolwarm', alpha=0.5, label='data')
ax.plot(*curve.T, 'k-', label='decoded z in [-2.5, 2.5]')
ax.set(title='VAE with a 1-D code on the moons'); ax.legend(); plt.show()

# %% [markdown]
# The decoder here is a new model made of the VAE's own trained layers
# (called on a new input): layers are shared between models as freely as
# between nodes of one model.
#
# ## Gradients with respect to the input: saliency and adversarial examples
#
# `backward` returns $\partial\mathcal L/\partial x$, so a trained net can
# say which pixels its decision depends on (a *saliency map*, Simonyan et
# al. 2014: $|\partial\mathcal L/\partial x|$), and how to change an image,
# imperceptibly, to make it wrong (the *fast gradient sign method*,
# Goodfellow et al. 2015: $x' = x + \epsilon\,\operatorname{sign}(\partial\mathcal L/\partial x)$).
# We train chapter 08's LeNet-5, written as a functional model, on MNIST:
# one epoch on 10 000 images in the quick run, three epochs on all 60 000
# in the full one.

# %%
#| mnist
xtr, ytr = data.load('mnist', 'train'); xte, yte = data.load('mnist', 'test')
Xtr, Xte = xtr.astype(np.float32) / 255, xte.astype(np.float32) / 255

def lenet5(rng=0):
    x = Input((28, 28, 1))
    h = MaxPool2D(2)(Conv2D(6, 5, padding='same', activation='relu', rng=rng)(x))
    h = Flatten()(MaxPool2D(2)(Conv2D(16, 5, activation='relu', rng=rng)(h)))
    h = Dense(84, 'relu', rng=rng)(Dense(120, 'relu', rng=rng)(h))
    return Model(x, Dense(10, rng=rng)(h), name='lenet5')

cnn = lenet5()
cnn.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-3), metrics='accuracy')
cnn.fit(Xtr[:10000], ytr[:10000], epochs=1, batch_size=64, rng=0, verbose=0)
print(f'quick run: test accuracy {cnn.evaluate(Xte, yte)[1]:.2%}')

# %%
#| slow
#| mnist
cnn = lenet5()
cnn.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(1e-3), metrics='accuracy')
cnn.fit(Xtr, ytr, epochs=3, batch_size=64, rng=0, verbose=0)
print(f'full run: test accuracy {cnn.evaluate(Xte, yte)[1]:.2%}')

# %%
#| mnist
def input_gradient(model, x, y):
    "dL/dx of the mean cross-entropy over the batch, (N, 28, 28, 1), from one forward and one backward."
    logits = model(x, training=False)
    _, dy = SparseCategoricalCrossentropy(from_logits=True).value_and_grad(logits, y)
    return model.backward(dy)                                  # need_dx=True: the gradient reaches the image

idx = np.arange(8)
g = input_gradient(cnn, Xte[idx], yte[idx])
fig, ax = plt.subplots(2, 8, figsize=(12, 3.2))
for j in range(8):
    ax[0, j].imshow(Xte[j, :, :, 0], cmap='gray'); ax[0, j].set_title(f'label {yte[j]}')
    ax[1, j].imshow(np.abs(g[j, :, :, 0]), cmap='hot')
for a in ax.ravel(): a.axis('off')
fig.suptitle('test digits and their saliency |dL/dx|'); plt.show()

n_adv = 2000
g = input_gradient(cnn, Xte[:n_adv], yte[:n_adv])
print(f"{'epsilon':>8} {'test accuracy (first 2000)':>28}")
accs = {}
for eps in [0.0, 0.05, 0.1, 0.2]:
    x_adv = np.clip(Xte[:n_adv] + eps * np.sign(g), 0, 1)
    accs[eps] = float((cnn.predict(x_adv).argmax(1) == yte[:n_adv]).mean())
    print(f'{eps:8.2f} {accs[eps]:28.2%}')
assert accs[0.2] < accs[0.0] - 0.3

# %% [markdown]
# The saliency maps light up the strokes and the gaps that tell one digit
# from another. The fast gradient sign method moves every pixel by
# $\epsilon$ in the direction that raises the loss; the table shows the
# accuracy fall as $\epsilon$ grows, for changes that leave the digits
# plainly readable. Both come from one backward pass per batch: the same
# `backward` that trains the net, asked for `need_dx=True`.
#
# ## Summary
#
# | piece | where |
# |---|---|
# | `Input`, `Model(inputs, outputs)`, `Sequential` (a chain), `train_step`, `apply_gradients`, `compute_loss`, multi-output `compile` / `fit` / `evaluate` / `predict`, `summary` with "Connected to", safe `save` / `load` | `model` (chapter 05a) |
# | `Add`, `Subtract`, `Multiply`, `Average`, `Concatenate`, `Reshape`, `Permute`, `RepeatVector`, `check_graph_grad` | `merge` (this chapter) |
# | symbolic tensors and nodes (`Layer.__call__` on an `Input`) | `layers` (chapter 05) |
#
# ## References
#
# * F. Chollet et al., Keras API reference: the functional API (`Input`, `Model`), merging and reshaping layers, `Model.train_step` (customising `fit`), `keras.applications` (ResNet50, VGG16, MobileNetV2 and their parameter counts).
# * K. He, X. Zhang, S. Ren, J. Sun, *Deep residual learning for image recognition*, CVPR 2016.
# * C. Szegedy et al., *Going deeper with convolutions*, CVPR 2015 (Inception).
# * K. Simonyan, A. Zisserman, *Very deep convolutional networks for large-scale image recognition*, ICLR 2015 (VGG).
# * M. Sandler, A. Howard, M. Zhu, A. Zhmoginov, L.-C. Chen, *MobileNetV2: inverted residuals and linear bottlenecks*, CVPR 2018.
# * J. Bromley et al., *Signature verification using a "siamese" time delay neural network*, NIPS 1993.
# * I. Goodfellow et al., *Generative adversarial nets*, NIPS 2014; D. P. Kingma, M. Welling, *Auto-encoding variational Bayes*, ICLR 2014.
# * K. Simonyan, A. Vedaldi, A. Zisserman, *Deep inside convolutional networks: visualising image classification models and saliency maps*, ICLR 2014 workshop.
# * I. Goodfellow, J. Shlens, C. Szegedy, *Explaining and harnessing adversarial examples*, ICLR 2015.
# * A. Griewank, A. Walther, *Evaluating Derivatives*, SIAM 2008 (reverse mode on a computational graph).
