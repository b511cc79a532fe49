# %% [markdown]
# # Graphs of layers: functional models, shared weights, custom training steps
#
# > Chapter 05, part 4: models that are not a chain.
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
