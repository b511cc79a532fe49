# %% [markdown]
# # Capsule networks
#
# > Capsule layers (squash, prediction vectors, dynamic routing by agreement, lengths, the label mask), the margin loss, and Sabour et al.'s MNIST capsule network built from them with the functional Model API.
#
# ## Purpose
#
# A convolutional network detects features and pools them away: a max-pool keeps that
# a feature is present somewhere in a window, and forgets where. Hinton called pooling
# "a big mistake" (source 002 quotes him): a face with its eyes and mouth swapped has the
# same features as a face. *Capsule networks* (Sabour, Frosst and Hinton, 2017) replace
# scalar feature detectors by **capsules**, groups of neurons whose output is a
# vector: its length is the probability that an entity is present, its direction
# encodes the entity's properties (position, size, stroke thickness, ...). A capsule of
# the layer above is active when the predictions of the capsules below *agree*, which
# the network finds by **dynamic routing by agreement**.
#
# This chapter
#
# 1. derives the squash non-linearity and its derivative, the prediction vectors
#    $\hat u_{j|i} = W_{ij} u_i$, and dynamic routing, forward and backward, through every
#    iteration and in the stop-gradient variant of source 002's code;
# 2. builds each piece as a layer of the package (`Squash`, `PredictionVectors`,
#    `DynamicRouting`, `Length`, `Mask`) and the `MarginLoss`, each gradient-checked in
#    float64; routing runs on the kernels of the companion notebook *Routing kernels*
#    (`kernels.routing`: NumPy reference, Numba CPU, CUDA);
# 3. assembles Sabour et al.'s MNIST network with the functional `Model` API of
#    chapter 05c: Conv 256 9×9 → 32 × 8-D primary capsules (1,152 of them) → 10 × 16-D
#    digit capsules, with the label-masked decoder 512 → 1024 → 784;
# 4. reruns source 002's first training iterations, trains on MNIST for as long as two
#    shared CPU cores allow, and shows the reconstructions and what each dimension of a
#    digit capsule encodes;
# 5. compares 3 routing iterations (the paper) with source 002's 10, and sets every
#    number beside the source's.

# %%
#| default_exp capsules

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import as_rng, check_array, get_array_module
from dl_from_scratch.layers import Layer, Dense, _who, _shapes_match
from dl_from_scratch.losses import Loss
from dl_from_scratch.conv import Conv2D
from dl_from_scratch.merge import Reshape
from dl_from_scratch.model import Model, Input, Sequential
from dl_from_scratch.kernels.routing import EPS, squash, squash_vjp, routing_forward, routing_backward

# %%
#| hide
import os
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')   # before NumPy: OpenBLAS's idle threads must not spin (00_core)

# %%
import time
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import precision, set_num_threads, simulate_cuda_without_gpu
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.merge import check_graph_grad
from dl_from_scratch.optim import Adam
from dl_from_scratch.kernels.routing import routing_reference
simulate_cuda_without_gpu()
set_num_threads(2)

# %% [markdown]
# ## 1. A capsule is a vector
#
# A capsule's output is a vector $v$ whose **length** $\lVert v\rVert \in [0, 1)$ is the
# probability that its entity is present and whose **direction** describes it. Source
# 002's example is $v = [0.3, 1.2]$, whose length it gives as
# $\sqrt{0.3^2 + 1.2^2} = 1.53$; but $0.3^2 + 1.2^2 = 1.53$ is the *squared* length:

# %%
v_book = np.array([0.3, 1.2])
print(f"||[0.3, 1.2]|| = {np.linalg.norm(v_book):.4f}; 0.3^2 + 1.2^2 = {v_book @ v_book:.2f} (source 002 prints 1.53)")
test_close(np.linalg.norm(v_book), 1.2369, eps=1e-4)

# %% [markdown]
# A length above 1 cannot be a probability either; that is what the squash is for.
#
# ## 2. The squash and its derivative
#
# $$v = \operatorname{squash}(s) = \frac{\lVert s\rVert^2}{1 + \lVert s\rVert^2}\,\frac{s}{\lVert s\rVert}$$
#
# keeps the direction of $s$ and maps its length $\ell$ to $\ell^2/(1+\ell^2)$: near 0
# for short vectors (quadratically, so that noise stays quiet), towards 1 for long
# ones. Source 002's code divides by $\sqrt{\lVert s\rVert^2 + \epsilon}$, so that
# $s = 0$ is no division by zero; we do the same with $\epsilon = 10^{-7}$.
#
# **Derivative.** Write $q = s\cdot s$ and $v = f(q)\,s$ with
# $f(q) = q\,g(q)$, $g(q) = (1+q)^{-1}(q+\epsilon)^{-1/2}$. Then
# $g'(q) = -g(q)\bigl(\tfrac{1}{1+q} + \tfrac{1}{2(q+\epsilon)}\bigr)$, so
#
# $$f'(q) = g + q g' = g(q)\Bigl(\frac{1}{1+q} - \frac{q}{2(q+\epsilon)}\Bigr),$$
#
# finite at $q = 0$. The Jacobian is $\partial v_d/\partial s_e = f\,\delta_{de} + 2 f'(q)\, s_d s_e$,
# symmetric, so the gradient of a loss is
#
# $$\bar s = f(q)\,\bar v + 2 f'(q)\,(s\cdot\bar v)\,s,$$
#
# one dot product per capsule, never the $D\times D$ Jacobian. `squash` and `squash_vjp`
# live with the routing kernels (which need them) and are exported here too. The
# derivative checked against central differences, and the length curve:

# %%
rng = np.random.default_rng(0)
s = rng.standard_normal((4, 5, 16))
dv = rng.standard_normal(s.shape)
err = rel_error(squash_vjp(s, dv), numerical_grad(lambda z: float((squash(z) * dv).sum()), s.copy()))
J_num = np.stack([numerical_grad(lambda z: float(squash(z)[d]), s[0, 0].copy()) for d in range(16)])
q = s[0, 0] @ s[0, 0]
f = q / ((1 + q) * np.sqrt(q + EPS)); fp = (1 / (1 + q) - q / (2 * (q + EPS))) / ((1 + q) * np.sqrt(q + EPS))
print(f"squash_vjp: relative error {err:.1e}; the Jacobian f I + 2 f' s s^T: "
      f"{rel_error(f * np.eye(16) + 2 * fp * np.outer(s[0, 0], s[0, 0]), J_num):.1e}")
assert err < 1e-8

ell = np.linspace(0, 5, 200)
lengths = np.linalg.norm(squash(ell[:, None] * np.array([[0.6, 0.8]])), axis=-1)
test_close(lengths, ell ** 2 / (1 + ell ** 2), eps=1e-3)
fig, ax = plt.subplots(figsize=(4.5, 2.8))
ax.plot(ell, lengths); ax.set_xlabel(r'$\|s\|$'); ax.set_ylabel(r'$\|$squash$(s)\|$'); ax.grid(alpha=0.3)
ax.set_title('The squash maps lengths into [0, 1)'); plt.tight_layout(); plt.show()

# %% [markdown]
# The squash as a layer, over the last axis of any `(N, ..., D)` input (the primary
# capsules squash their 8-D vectors with it):

# %%
#| export
class Squash(Layer):
    "v = squash(s) over the last axis: `(N, ..., D)` -> the same shape, every vector's length in [0, 1)."
    def __init__(self, eps: float = EPS, name=None):
        super().__init__(name)
        self.eps = float(eps)

    def forward(self, x, training=False):
        x = check_array(x, 'capsules (N, ..., D)', ndim=tuple(range(2, 8)), finite=False, who=_who(self))
        self.cache = x
        return squash(x, eps=self.eps)

    def backward(self, dy, need_dx: bool = True):
        return squash_vjp(self.cache, dy, eps=self.eps)

# %%
with precision(np.float64):
    errs = check_layer_grad(Squash(), rng.standard_normal((3, 7, 8)))
print('Squash:', {k: f'{e:.1e}' for k, e in errs.items()})
assert max(errs.values()) < 1e-6
test_fail(lambda: Squash()(np.zeros(3)), contains='rank')

# %% [markdown]
# ## 3. Primary capsules and prediction vectors
#
# **Primary capsules.** The network's first layer is an ordinary convolution, 256
# filters of 9×9 with ReLU, which turns a 28×28 digit into 20×20×256 features. The
# *primary capsule* layer is a second convolution, 256 filters of 9×9 with stride 2
# (6×6×256 outputs), read as 32 channels of 8-D capsules at each of the 6×6 positions:
# $6\cdot 6\cdot 32 = 1152$ capsules $u_i\in\mathbb R^8$, squashed. Source 002 builds
# it as 8 convolutions of 32 filters whose outputs it stacks as the 8 components; one
# convolution of 256 filters reshaped to `(1152, 8)` is the same family of functions
# (its filters are those 8 convolutions' filters, in another order), so we use
# `Conv2D` and `Reshape` of chapters 07a and 05c as they are.
#
# **Prediction vectors.** Each primary capsule $i$ predicts the output of each digit
# capsule $j$ through its own matrix: $\hat u_{j|i} = W_{ij}\,u_i$, with
# $W_{ij}\in\mathbb R^{16\times 8}$: $1152\cdot 10 = 11{,}520$ matrices, 1,474,560
# weights, kept as one array of shape `(1152, 10, 16, 8)`. $W_{ij}$ is what the network
# learns about how a part (a stroke at some place) relates to the whole (a digit).
#
# For a batch, the products are one batched matrix product per input capsule $i$:
# `u[:, i]` `(N, 8)` times $W_i$ reshaped to `(8, 160)`. With $\bar{\hat u}$ the gradient
# of the loss, $\bar W_i = u_{:,i}^\top\,\bar{\hat u}_{:,i}$ and $\bar u_{:,i} = \bar{\hat u}_{:,i}\,W_i^\top$.

# %%
#| export
class PredictionVectors(Layer):
    """u_hat[n, i, j] = W[i, j] @ u[n, i]: input capsules u `(N, I, K)` -> predictions `(N, I, J, D)` for J output
    capsules of D dimensions; `W` `(I, J, D, K)`, initialised N(0, `stddev`^2)."""
    def __init__(self, num_capsules: int, dim_capsule: int, stddev: float = 0.01, rng=None, name=None):
        super().__init__(name)
        if int(num_capsules) < 1 or int(dim_capsule) < 1:
            raise ValueError(f"PredictionVectors expected num_capsules >= 1 and dim_capsule >= 1, got {num_capsules}, {dim_capsule}")
        self.num_capsules, self.dim_capsule, self.stddev = int(num_capsules), int(dim_capsule), float(stddev)
        self.rng = as_rng(rng)

    def build(self, input_shape):
        if len(input_shape) != 2:
            raise ValueError(f"PredictionVectors expected capsules of shape (N, I, K), got (N, *{tuple(input_shape)})")
        super().build(input_shape)
        I, K = self.input_shape
        w = self.add_weight('W', (I, self.num_capsules, self.dim_capsule, K), 'zeros')
        w[...] = self.rng.normal(0.0, self.stddev, w.shape)

    def output_shape(self, input_shape):
        return (input_shape[0], self.num_capsules, self.dim_capsule)

    def forward(self, x, training=False):
        x = check_array(x, 'capsules', shape=(None, *self.input_shape), finite=False, who=_who(self)).astype(self.dtype, copy=False)
        xp = get_array_module(x)
        W = self.params['W']
        I, J, D, K = W.shape
        xt = x.transpose(1, 0, 2)                                   # (I, N, K)
        u_hat = xt @ W.reshape(I, J * D, K).transpose(0, 2, 1)      # (I, N, J*D): one product per input capsule
        self.cache = xt
        return xp.ascontiguousarray(u_hat.transpose(1, 0, 2)).reshape(x.shape[0], I, J, D)

    def backward(self, dy, need_dx: bool = True):
        xt, W = self.cache, self.params['W']
        I, J, D, K = W.shape
        d = dy.reshape(dy.shape[0], I, J * D).transpose(1, 0, 2)   # (I, N, J*D)
        self.grads['W'] = (xt.transpose(0, 2, 1) @ d).transpose(0, 2, 1).reshape(I, J, D, K)
        return (d @ W.reshape(I, J * D, K)).transpose(1, 0, 2) if need_dx else None

# %%
with precision(np.float64):
    layer = PredictionVectors(3, 4, stddev=0.5, rng=0)
    u = rng.standard_normal((2, 5, 6))
    out = layer(u)
    test_eq(out.shape, (2, 5, 3, 4))
    test_close(out, np.einsum('ijdk,nik->nijd', layer.params['W'], u), eps=1e-12)
    errs = check_layer_grad(layer, u)
print('PredictionVectors:', {k: f'{e:.1e}' for k, e in errs.items()})
assert max(errs.values()) < 1e-6
test_fail(lambda: PredictionVectors(10, 16)(np.zeros((2, 8))), contains='(N, I, K)')
test_eq(PredictionVectors(10, 16).output_shape((1152, 8)), (1152, 10, 16))

# %% [markdown]
# ## 4. Dynamic routing by agreement
#
# **Forward.** The digit capsule $j$'s input is a weighted sum of the predictions,
# $s_j = \sum_i c_{ij}\hat u_{j|i}$, its output $v_j = \operatorname{squash}(s_j)$. The
# *coupling coefficients* $c_{ij}$ say how much capsule $i$ sends to $j$; they sum to 1
# over $j$ and are not learned weights: they are computed, for every image, by a few
# iterations of agreement. Start with logits $b_{ij} = 0$ (so $c_{ij} = 1/10$) and
# repeat $R$ times:
#
# $$c_{i\cdot} = \operatorname{softmax}(b_{i\cdot}),\quad s_j = \sum_i c_{ij}\hat u_{j|i},\quad
#   v_j = \operatorname{squash}(s_j),\quad b_{ij} \mathrel{+}= \hat u_{j|i}\cdot v_j .$$
#
# A prediction that points the way the output already points ($\hat u_{j|i}\cdot v_j > 0$)
# gets a larger share of its capsule next time: the parts that agree on a whole are
# routed to it. Sabour et al. use $R = 3$; source 002's code uses 10 (section 8
# compares).
#
# **Backward, through the iterations.** Everything above is differentiable, so the
# exact gradient runs back through all $R$ iterations. Keep every iteration's
# $c^r$, $s^r$, $v^r$. Given $\bar v^R = \partial L/\partial v$, and $G = 0$ (the
# gradient of the logits), for $r = R, \dots, 1$:
#
# 1. the squash: $\bar s^r_j = f\,\bar v^r_j + 2 f'\,(s^r_j\cdot\bar v^r_j)\,s^r_j$ (section 2);
# 2. the weighted sum $s^r_j = \sum_i c^r_{ij}\hat u_{j|i}$:
#    $\bar{\hat u}_{j|i} \mathrel{+}= c^r_{ij}\,\bar s^r_j$, and $\bar c^r_{ij} = \hat u_{j|i}\cdot\bar s^r_j$;
# 3. the softmax over $j$ (chapter 01's vector-Jacobian product):
#    $G_{ij} \mathrel{+}= c^r_{ij}\bigl(\bar c^r_{ij} - \sum_k c^r_{ik}\bar c^r_{ik}\bigr)$; since
#    every $b^r = b^{r-1} + (\dots)$, the gradient of each earlier $b$ is this same running sum;
# 4. the agreement $b^{r-1}_{ij} = b^{r-2}_{ij} + \hat u_{j|i}\cdot v^{r-1}_j$ (for $r > 1$):
#    $\bar{\hat u}_{j|i} \mathrel{+}= G_{ij}\,v^{r-1}_j$ and $\bar v^{r-1}_j = \sum_i G_{ij}\,\hat u_{j|i}$,
#    the gradient the previous iteration's squash receives.
#
# $\hat u$ is reached three ways (through the weighted sums, the agreements, and through
# $v^{r-1}$ into later couplings), and the four steps collect all of them.
#
# **The stop-gradient variant.** Source 002's code (like many others) stops the
# gradient at the coupling coefficients: the intermediate iterations see a copy of
# $\hat u$ that backpropagation ignores, so only step 2's first half of the last
# iteration remains, $\bar{\hat u}_{j|i} = c^R_{ij}\,\bar s^R_j$, as if $c^R$ were constants.
# It is cheaper and not the gradient of the forward; it treats routing as an
# inference procedure, not part of the model. This chapter trains with the exact
# gradient (`stop_gradient=False`) and offers the variant for source 002's recipe.
#
# The loop runs for every image of every batch; the companion notebook *Routing kernels*
# implements it three times (`kernels.routing`: a NumPy reference, a Numba CPU kernel
# over the batch, CUDA kernels per capsule) and tests them against each other. The layer
# calls it:

# %%
#| export
class DynamicRouting(Layer):
    """Dynamic routing by agreement: predictions u_hat `(N, I, J, D)` -> output capsules v `(N, J, D)`, after
    `iterations` rounds. Backward runs through every iteration, or (`stop_gradient`) treats the last coupling
    coefficients as constants, as source 002's code does. `backend`: 'auto' | 'numpy' | 'numba' | 'cuda'."""
    def __init__(self, iterations: int = 3, stop_gradient: bool = False, backend: str = 'auto', name=None):
        super().__init__(name)
        if not isinstance(iterations, (int, np.integer)) or iterations < 1:
            raise ValueError(f"DynamicRouting expected iterations a positive integer, got {iterations!r}")
        self.iterations, self.stop_gradient, self.backend = int(iterations), bool(stop_gradient), backend

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"DynamicRouting expected predictions of shape (N, I, J, D), got (N, *{tuple(input_shape)})")
        super().build(input_shape)

    def output_shape(self, input_shape):
        return tuple(input_shape[1:])

    def forward(self, x, training=False):
        x = check_array(x, 'predictions', shape=(None, *self.input_shape), finite=False, who=_who(self))
        v, self.cache = routing_forward(x, self.iterations, self.backend)
        return v

    def backward(self, dy, need_dx: bool = True):
        return routing_backward(dy, self.cache, self.stop_gradient, self.backend) if need_dx else None

    def coupling(self):
        "The last forward's coupling coefficients of the final iteration, `(N, I, J)`."
        return self.cache.c[:, -1]

# %% [markdown]
# **Gradient checks** in float64: the exact backward against central differences of the
# forward, for 1, 3 and 10 iterations and every backend (the CUDA kernels in Numba's
# simulator, on a smaller case); the stop-gradient backward
# against central differences of the forward with the final coupling coefficients
# frozen, the function whose gradient it claims to be.

# %%
u_hat = rng.standard_normal((2, 7, 3, 4)) * 0.5
with precision(np.float64):
    for R in (1, 3, 10):
        errs = {be: check_layer_grad(DynamicRouting(R, backend=be), u_hat)['x'] for be in ('numpy', 'numba')}
        print(f"DynamicRouting, {R:2d} iterations, through the iterations: relative error "
              + ', '.join(f"{e:.1e} ({be})" for be, e in errs.items()))
        assert max(errs.values()) < 1e-6
    err_cuda = check_layer_grad(DynamicRouting(3, backend='cuda'), u_hat[:1, :4])['x']   # the simulator is slow: smaller
    print(f"DynamicRouting, 3 iterations, CUDA kernels: relative error {err_cuda:.1e}")
    assert err_cuda < 1e-6
    layer = DynamicRouting(3, stop_gradient=True)
    v = layer(u_hat)
    g = rng.standard_normal(v.shape)
    c_last = layer.coupling().copy()
    frozen = lambda z: float((squash((c_last[..., None] * z).sum(1)) * g).sum())
    err_stop = rel_error(layer.backward(g), numerical_grad(frozen, u_hat.copy()))
    err_vs_exact = rel_error(layer.backward(g), routing_backward(g, routing_forward(u_hat, 3)[1]))
print(f"stop-gradient variant against the frozen-coupling forward: {err_stop:.1e}; "
      f"its distance from the exact gradient: {err_vs_exact:.2f}")
assert err_stop < 1e-6 and err_vs_exact > 1e-3
test_fail(lambda: DynamicRouting(0), contains='positive integer')
test_fail(lambda: DynamicRouting()(np.zeros((2, 3, 4))), contains='(N, I, J, D)')

# %% [markdown]
# What routing does, on a toy case: 8 input capsules, 6 of which predict one output
# vector (plus noise) for capsule 0, and 2 of which predict random vectors for
# capsule 1. Routing moves the agreeing capsules' coupling onto capsule 0, and that
# capsule grows long:

# %%
toy = rng.standard_normal((1, 8, 2, 4)) * 0.3
toy[0, :6, 0] = np.array([0.5, -0.4, 0.3, 0.2]) + 0.05 * rng.standard_normal((6, 4))
for R in (1, 3, 10):
    v, cache = routing_reference(toy, R)
    print(f"{R:2d} iterations: lengths {np.round(np.linalg.norm(v[0], axis=-1), 3)}, "
          f"mean coupling of the agreeing capsules to capsule 0: {cache.c[0, -1, :6, 0].mean():.3f}")

# %% [markdown]
# ## 5. Lengths, the label mask and the margin loss
#
# **Lengths.** The class scores are the digit capsules' lengths,
# $\ell_k = \sqrt{\lVert v_k\rVert^2 + \epsilon}$, with $\bar v_k = \bar\ell_k\, v_k/\ell_k$.
#
# **Margin loss.** A digit may be present or not independently of the others, so each
# class has its own loss: with $T_k = 1$ when class $k$ is present,
#
# $$L_k = T_k \max(0, m^+ - \ell_k)^2 + \lambda\,(1 - T_k)\max(0, \ell_k - m^-)^2,$$
#
# $m^+ = 0.9$, $m^- = 0.1$, $\lambda = 0.5$ (which keeps the absent classes from
# shrinking every capsule early in training). The loss of an image is $\sum_k L_k$, and
# its gradient $\partial L/\partial\ell_k = -2T_k\max(0, m^+-\ell_k) + 2\lambda(1-T_k)\max(0, \ell_k - m^-)$.
#
# **The label mask.** The decoder reconstructs the image from the digit capsules, all
# set to zero but the one of the true class in training (so the reconstruction
# teaches that capsule to encode its digit), or of the longest capsule at test time.
# `Mask` takes `[v, y]`: a one-hot `y` picks the capsule; an all-zero row of `y` means
# "no label", and the longest capsule is used. Its output is the masked capsules,
# flattened to 160 numbers.

# %%
#| export
class Length(Layer):
    "Lengths of capsules: `(N, J, D)` -> `(N, J)`, sqrt(||v||^2 + eps) (eps keeps the gradient finite at v = 0)."
    def __init__(self, eps: float = EPS, name=None):
        super().__init__(name)
        self.eps = float(eps)

    def output_shape(self, input_shape):
        return tuple(input_shape[:-1])

    def forward(self, x, training=False):
        x = check_array(x, 'capsules (N, J, D)', ndim=3, finite=False, who=_who(self))
        ell = get_array_module(x).sqrt((x * x).sum(-1) + self.eps)
        self.cache = (x, ell)
        return ell

    def backward(self, dy, need_dx: bool = True):
        x, ell = self.cache
        return (dy / ell)[..., None] * x

class Mask(Layer):
    """[v `(N, J, D)`, y `(N, J)`] -> the capsules times y, flattened `(N, J*D)`. A one-hot y keeps the labelled
    capsule; a row of y that is all zero keeps the longest capsule (what a network without labels predicts)."""
    def build(self, input_shape):
        ok = (isinstance(input_shape, (list, tuple)) and len(input_shape) == 2 and len(input_shape[0]) == 2
              and len(input_shape[1]) == 1 and _shapes_match((input_shape[0][0],), tuple(input_shape[1])))
        if not ok:
            raise ValueError(f"Mask expected [capsules (N, J, D), labels (N, J)], got {input_shape}")
        self.input_shape = [tuple(s) for s in input_shape]
        self.built = True

    def output_shape(self, input_shape):
        J, D = input_shape[0]
        return (J * D,)

    def forward(self, xs, training=False):
        if not isinstance(xs, (list, tuple)) or len(xs) != 2:
            raise ValueError(f"{_who(self)} expected a list [capsules (N, J, D), labels (N, J)], got {type(xs).__name__}")
        v, y = xs
        if v.ndim != 3 or y.shape != v.shape[:2]:
            raise ValueError(f"{_who(self)} expected capsules (N, J, D) and labels (N, J), got {tuple(v.shape)} and {tuple(y.shape)}")
        xp = get_array_module(v)
        m = xp.asarray(y, dtype=v.dtype)
        unlabelled = ~(m != 0).any(-1)
        if unlabelled.any():                                   # no label: the longest capsule
            m = m.copy()
            m[unlabelled] = (xp.arange(v.shape[1]) == (v[unlabelled] ** 2).sum(-1).argmax(-1)[:, None])
        self.cache = (v, m)
        return (v * m[..., None]).reshape(v.shape[0], -1)

    def backward(self, dy, need_dx: bool = True):
        v, m = self.cache
        dy = dy.reshape(v.shape)
        return [dy * m[..., None], (dy * v).sum(-1)]

class MarginLoss(Loss):
    """Margin loss of capsule lengths `(N, J)` against integer labels `(N,)` or one-hot `(N, J)`: the mean over the
    batch of sum_k T_k max(0, m_plus - l_k)^2 + lam (1 - T_k) max(0, l_k - m_minus)^2."""
    name = 'margin'
    def __init__(self, m_plus: float = 0.9, m_minus: float = 0.1, lam: float = 0.5):
        self.m_plus, self.m_minus, self.lam = float(m_plus), float(m_minus), float(lam)

    def value_and_grad(self, y_pred, y_true):
        ell = check_array(y_pred, 'lengths (N, J)', ndim=2, who='MarginLoss')
        xp = get_array_module(ell)
        N, J = ell.shape
        y = xp.asarray(y_true)
        if y.shape == (N,) or y.shape == (N, 1):
            y = y.reshape(N)
            if y.dtype.kind not in 'iu' or N and (int(y.min()) < 0 or int(y.max()) >= J):
                raise ValueError(f"MarginLoss expected integer labels in [0, {J}), got dtype {y.dtype} "
                                 f"and values {y.min() if N else '-'}..{y.max() if N else '-'}")
            T = (xp.arange(J) == y[:, None]).astype(ell.dtype)
        elif y.shape == (N, J): T = y.astype(ell.dtype)
        else: raise ValueError(f"MarginLoss expected labels of shape ({N},) or ({N}, {J}), got {tuple(y.shape)}")
        if N == 0: raise ValueError("MarginLoss expected at least one sample, got an empty batch")
        hi, lo = xp.maximum(0, self.m_plus - ell), xp.maximum(0, ell - self.m_minus)
        loss = (T * hi ** 2 + self.lam * (1 - T) * lo ** 2).sum() / N
        return float(loss), (-2 * T * hi + 2 * self.lam * (1 - T) * lo) / N

# %%
with precision(np.float64):
    errs = check_layer_grad(Length(), rng.standard_normal((3, 10, 16)) * 0.2)
    print('Length:', {k: f'{e:.1e}' for k, e in errs.items()}); assert max(errs.values()) < 1e-6
    mask = Mask()
    vv, y1 = rng.standard_normal((4, 10, 16)), np.eye(10)[[3, 1, 4, 1]]
    errs = check_graph_grad(mask, [vv, y1])
    print('Mask:', {k: f'{e:.1e}' for k, e in errs.items()}); assert max(errs.values()) < 1e-6
out = mask([vv, y1]).reshape(4, 10, 16)
test_eq(out[0, 3], vv[0, 3]); test_eq(np.abs(out[0]).sum(), np.abs(vv[0, 3]).sum())           # only capsule 3 survives
longest = (vv ** 2).sum(-1).argmax(-1)
out0 = mask([vv, np.zeros((4, 10))]).reshape(4, 10, 16)
test_eq(out0[np.arange(4), longest], vv[np.arange(4), longest]); test_eq(np.abs(out0).sum(), np.abs(vv[np.arange(4), longest]).sum())
test_fail(lambda: Mask()([vv, np.zeros((4, 9))]), contains='labels (N, J)')

margin = MarginLoss()
ell = rng.uniform(0, 1, (6, 10)); labels = rng.integers(0, 10, 6)
val, grad = margin.value_and_grad(ell, labels)
T = np.eye(10)[labels]
test_close(val, (T * np.maximum(0, 0.9 - ell) ** 2 + 0.5 * (1 - T) * np.maximum(0, ell - 0.1) ** 2).sum() / 6, eps=1e-12)
test_close(margin(ell, T), val, eps=1e-12)                                # one-hot labels alike
e_margin = rel_error(grad, numerical_grad(lambda z: margin(z, labels), ell.copy()))
print(f"MarginLoss gradient: relative error {e_margin:.1e}")
assert e_margin < 1e-6
test_eq(margin(np.where(T == 1, 0.95, 0.05), labels), 0.0)                # beyond both margins: no loss
test_fail(lambda: margin(ell, labels + 10), contains='[0, 10)')
test_fail(lambda: margin(ell, np.zeros((6, 3))), contains='(6,) or (6, 10)')

# %% [markdown]
# **What the loss is at the start.** If every capsule had the same length $\ell$
# (between the margins), an image's loss would be $(0.9 - \ell)^2 + 9\cdot 0.5\,(\ell - 0.1)^2$,
# at least 0.522 (at $\ell = 0.245$). Source 002's first logged loss, 0.5528, is this
# curve at $\ell \approx 0.17$ or $0.32$. With tiny initial weights all lengths start
# near 0 and the loss near $m^{+2} = 0.81$.

# %%
ls = np.linspace(0, 0.6, 601)
curve = (0.9 - ls) ** 2 + 4.5 * np.maximum(0, ls - 0.1) ** 2
print(f"minimum {curve.min():.4f} at l = {ls[curve.argmin()]:.3f}; loss 0.5528 at l = "
      f"{', '.join(f'{l:.3f}' for l in ls[np.abs(curve - 0.5528) < 6e-4])}; at l = 0: {curve[0]:.2f}")

# %% [markdown]
# ## 6. The network
#
# Sabour et al.'s MNIST network, with the functional API of chapter 05c. Two inputs
# (the image and the one-hot label for the mask), two outputs (the 10 lengths and the
# 784 reconstructed pixels). The decoder is a `Sequential` model used as a layer
# (models nest), so it can also be run alone on capsules we edit (section 7).
#
# The loss is the margin loss plus the reconstruction's sum of squared errors per
# image, scaled by 0.0005 so that it does not dominate (Sabour et al.). `MeanSquaredError`
# averages over the 784 pixels as well, so its weight is $0.0005\cdot 784 = 0.392$. Source
# 002's code averages and weights by 0.0005, which makes the reconstruction 784 times
# weaker than the paper's (its loss is then nearly the margin loss alone).

# %%
#| export
RECONSTRUCTION_WEIGHT = 0.0005   # Sabour et al.: the sum of squared pixel errors, scaled down

def capsnet(input_shape=(28, 28, 1), n_classes: int = 10, conv_filters: int = 256, kernel_size: int = 9,
            primary_channels: int = 32, primary_dim: int = 8, digit_dim: int = 16, routing_iterations: int = 3,
            stop_gradient: bool = False, decoder_units=(512, 1024), stddev: float = 0.01, backend: str = 'auto',
            rng=None, name: str = 'capsnet'):
    """Sabour et al.'s capsule network: [images (N, H, W, C), one-hot labels (N, n_classes)] -> [lengths
    (N, n_classes), reconstructions (N, H*W*C) in (0, 1)]. Conv(conv_filters, kernel_size, ReLU) -> primary capsules
    (a stride-2 convolution read as primary_channels capsules of primary_dim per position, squashed) -> prediction
    vectors -> dynamic routing -> n_classes digit capsules of digit_dim; the label-masked capsules go through the
    decoder Dense(decoder_units, ReLU) -> Dense(H*W*C, sigmoid). Returns the `Model`, with two models that share its
    layers: `model.decoder` (masked capsules (N, n_classes*digit_dim) -> pixels) and `model.predictions` (images ->
    prediction vectors (N, I, n_classes, digit_dim), what routing starts from)."""
    rng = as_rng(rng)
    x, y = Input(input_shape, name='image'), Input((n_classes,), name='label')
    h = Conv2D(conv_filters, kernel_size, activation='relu', rng=rng, backend=backend, name='conv1')(x)
    h = Conv2D(primary_channels * primary_dim, kernel_size, strides=2, rng=rng, backend=backend, name='primary_conv')(h)
    u = Squash(name='primary_capsules')(Reshape((-1, primary_dim), name='to_capsules')(h))
    u_hat = PredictionVectors(n_classes, digit_dim, stddev=stddev, rng=rng, name='predictions')(u)
    v = DynamicRouting(routing_iterations, stop_gradient, backend=backend, name='digit_capsules')(u_hat)
    lengths = Length(name='length')(v)
    decoder = Sequential([Dense(n, activation='relu', rng=rng) for n in decoder_units]
                         + [Dense(int(np.prod(input_shape)), activation='sigmoid', rng=rng)], name='decoder')
    recon = decoder(Mask(name='mask')([v, y]))
    model = Model([x, y], [lengths, recon], name=name)
    model.decoder, model.predictions = decoder, Model(x, u_hat, name=name + '_predictions')
    return model

def compile_capsnet(model, optimizer, reconstruction_weight: float = RECONSTRUCTION_WEIGHT, per_pixel: bool = False):
    """Compile `model` (from `capsnet`) with the margin loss and the weighted reconstruction loss; targets are
    [labels (N,), flattened images (N, H*W*C)]. The weight multiplies the per-image sum of squared errors (the paper),
    or with `per_pixel` their mean (source 002's code)."""
    n_pixels = model.outputs[1].shape[0]
    w = reconstruction_weight * (1 if per_pixel else n_pixels)
    return model.compile([MarginLoss(), 'mse'], optimizer, metrics=[['accuracy'], []], loss_weights=[1.0, w])

# %% [markdown]
# The full network: its layers and parameter count. Sabour et al. report 8.2M parameters,
# 6.8M without the decoder.

# %%
net = capsnet(rng=0)
net.summary()
n_decoder = net.decoder.count_params()
n_primary = net.predictions.output_shape()[0]
print(f"{net.count_params():,} parameters; {net.count_params() - n_decoder:,} without the decoder; "
      f"{n_primary} primary capsules")
test_eq(n_primary, 1152)
test_eq(net.count_params(), 20_992 + 5_308_672 + 1_474_560 + 82_432 + 525_312 + 803_600)

# %% [markdown]
# **The whole graph, gradient-checked.** The same constructor, scaled down (a 10×10
# image, 4 filters of 3×3, 2 × 3-D primary capsules of 3×3 stride 2, 3 digit capsules of
# 4 dimensions, a decoder of 6 units), in float64, with both routing variants' forward; the
# exact one checked against central differences of the whole model, inputs and every
# parameter. The gradient of the label input is that of the mask's product (the labels
# are data; the model ignores it).

# %%
with precision(np.float64):
    tiny = capsnet((10, 10, 1), n_classes=3, conv_filters=4, kernel_size=3, primary_channels=2, primary_dim=3,
                   digit_dim=4, decoder_units=(6,), stddev=0.5, rng=1)
    xs = [rng.uniform(0, 1, (2, 10, 10, 1)), np.eye(3)[[0, 2]]]
    errs = check_graph_grad(tiny, xs)
worst = max(errs, key=errs.get)
print(f"{len(errs)} gradients of the small capsule network checked; largest relative error {errs[worst]:.1e} ({worst})")
assert errs[worst] < 1e-6

# %% [markdown]
# The checkpoint of chapter 05a saves the architecture and the weights; the loaded
# model computes the same outputs:

# %%
import tempfile, pathlib
with tempfile.TemporaryDirectory() as d, precision(np.float64):
    again = Model.load(tiny.save(pathlib.Path(d) / 'tiny_capsnet'))
    for a, b in zip(tiny.predict(xs), again.predict(xs)): test_eq(a, b)

# %% [markdown]
# ## 7. MNIST
#
# **Settings.** The quick version below (what `nbdev_test` runs) trains on a few hundred
# images, enough to check that everything runs, not to judge the network. The full run
# (the `slow` cell after it) uses the settings it prints. Each step of the full network
# costs about 0.6 GFLOP forward per image, 95 % of it in the primary capsules'
# convolution (9·9·256 multiply-adds for each of 6·6·256 outputs), and about twice that
# backward, so two CPU cores train it at some tens of images per second; the full run
# trains for 30 minutes.

# %%
QUICK = True
BOOK_STEPS = 1          # source 002's first iterations, rerun (it logs 0, 10 and 20)
TRAIN_SECONDS = 0       # our run: training time (at least one chunk is trained)
N_TRAIN = 100           # ... and at most this many training images, in chunks of CHUNK
CHUNK = 100
N_TEST = 100            # test images evaluated

# %%
#| slow
QUICK = False
BOOK_STEPS = 21
TRAIN_SECONDS = 30 * 60
N_TRAIN, CHUNK = 180_000, 500
N_TEST = 10_000
print(f"source 002's first {BOOK_STEPS} iterations; our run: {TRAIN_SECONDS / 60:.1f} min of training (at most "
      f"{N_TRAIN:,} images, {N_TRAIN // 60000} passes), {N_TEST:,} test images")

# %%
#| mnist
from dl_from_scratch import data
x_train, y_train = data.load('mnist', 'train')
x_test, y_test = data.load('mnist', 'test')
X_train, X_test = (x_train / 255).astype(np.float32), (x_test / 255).astype(np.float32)
onehot = lambda y: np.eye(10, dtype=np.float32)[y]
print(X_train.shape, X_train.dtype, X_test.shape)

# %% [markdown]
# **Source 002's first iterations.** Its recipe: batches of 50 (implied by its
# accuracies 0.04, 0.2, 0.4), Adam with learning rate $10^{-4}$, 10 routing iterations
# with the gradient stopped at the couplings, and the reconstruction error averaged
# over pixels and weighted by 0.0005. It logs the loss and accuracy of the batch being
# trained (computed before the update) at iterations 0, 10 and 20 of its first epoch.
# Its weights start from `tf.random_normal_initializer(0.01)`, which is a *mean* of 0.01
# with standard deviation 1, probably meant as standard deviation 0.01; we use the
# latter. The logged numbers are of one batch each, so they vary by tens of percent
# with the data order and the initial weights: we compare them in kind.

# %%
#| mnist
book = capsnet(routing_iterations=10, stop_gradient=True, rng=0)
compile_capsnet(book, Adam(1e-4), per_pixel=True)
length_layer = [l for l in book.layers if isinstance(l, Length)][0]
order = np.random.default_rng(0).permutation(len(X_train))
book_log, t0 = {}, time.perf_counter()
for it in range(BOOK_STEPS):
    idx = order[it * 50:(it + 1) * 50]
    logs = book.train_step(([X_train[idx], onehot(y_train[idx])], [y_train[idx], X_train[idx].reshape(50, -1)]))
    book_log[it] = (logs['loss'], logs['length_accuracy'])
    if it % 10 == 0:
        mean_length = float(length_layer.cache[1].mean())          # the lengths of this batch, before the update
        print(f"Epoch 0 Iteration {it:2d}: Loss {logs['loss']:.4f}, Accuracy {logs['length_accuracy']:.2f} "
              f"(mean capsule length {mean_length:.3f})")
book_time = time.perf_counter() - t0
print(f"{BOOK_STEPS} steps of 50 images in {book_time:.0f} s ({BOOK_STEPS * 50 / book_time:.1f} images/s with 10 routing iterations)")

# %% [markdown]
# And the first loss with source 002's initializer taken literally, mean 0.01 and
# standard deviation 1 for $W$ (the predictions a hundred times larger):

# %%
#| mnist
literal = capsnet(routing_iterations=10, rng=0)
W = [l for l in literal.layers if isinstance(l, PredictionVectors)][0].params['W']
W[...] = np.random.default_rng(0).normal(0.01, 1.0, W.shape)
compile_capsnet(literal, Adam(1e-4), per_pixel=True)
idx = order[:50]
lengths_lit = literal.predict([X_train[idx], onehot(y_train[idx])])[0]
loss_lit = literal.evaluate([X_train[idx], onehot(y_train[idx])], [y_train[idx], X_train[idx].reshape(50, -1)],
                            return_dict=True)['loss']
print(f"W ~ N(0.01, 1): first loss {loss_lit:.4f}, mean capsule length {lengths_lit.mean():.3f}")
del literal


# %% [markdown]
# **Reading the first iterations.** Source 002 logs loss 0.5528, 0.5417 and 0.2336 and
# accuracy 0.04, 0.20 and 0.40 at iterations 0, 10 and 20; we get 0.8095, 0.8095 and
# 0.8094 with accuracy 0.08, 0.10 and 0.14 (one batch of 50 each, so 0.04 apart is two
# images). Our accuracies are at chance and climbing, as the book's are; our loss is not
# its loss, and section 5 says why: 0.8095 is $m^{+2} = 0.81$, the loss of capsules of
# length 0 (the printed mean length is 0.000), while 0.5528 means lengths of about 0.17
# or 0.32 at the start. Our initial primary capsules are short (a squash of a short vector
# is shorter still, $\ell^2$), so the digit capsules start near 0, where the squash is flat
# and the margin loss's gradient reaches the weights only weakly; with Adam at $10^{-4}$, 20
# steps do not get out of that corner. Taking the source's initializer literally does not
# give its start either (0.7769, mean length 0.019): its 0.5528 depends on parts of its code
# we do not copy (ReLU on the primary capsules, biases added to the digit capsules), and we
# cannot run it. Its fast fall to 0.2336 by iteration 20 is what a start away from length 0
# allows. The run below, at Adam's usual $10^{-3}$, leaves the corner within 1,000 images.
# %% [markdown]
# **Our run.** Sabour et al.'s recipe as far as the budget goes: 3 routing
# iterations, the exact gradient through them, the paper's reconstruction weight, Adam
# with learning rate $10^{-3}$, batches of 50, passes over the training images (each in a
# fresh random order) for as long as `TRAIN_SECONDS` allows, `fit` on chunks of `CHUNK`
# images so that the run can stop on time. The paper also shifts each image by up to 2
# pixels; in the two passes or so that fit here, augmentation has little to prevent, and
# we leave it out. The test accuracy is over the first `N_TEST` test images, the decoder
# then masked by the longest capsule (labels all zero).

# %%
#| mnist
net = capsnet(rng=0)
compile_capsnet(net, Adam(1e-3))
r_order = np.random.default_rng(1)
order = np.concatenate([r_order.permutation(len(X_train)) for _ in range(-(-N_TRAIN // len(X_train)))])[:N_TRAIN]
seen, curve, t0 = 0, [], time.perf_counter()
while seen < N_TRAIN and (seen == 0 or time.perf_counter() - t0 < TRAIN_SECONDS):
    idx = order[seen:seen + CHUNK]
    h = net.fit([X_train[idx], onehot(y_train[idx])], [y_train[idx], X_train[idx].reshape(len(idx), -1)],
                epochs=1, batch_size=50, rng=seen, verbose=0).history
    seen += len(idx)
    curve.append((seen, h['length_loss'][0], h['decoder_loss'][0], h['length_accuracy'][0]))
    print(f"{seen:6,} images, {time.perf_counter() - t0:5.0f} s: margin loss {curve[-1][1]:.4f}, "
          f"reconstruction MSE {curve[-1][2]:.4f}, training accuracy {curve[-1][3]:.3f}")
train_time = time.perf_counter() - t0

fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(9, 2.8))
n_seen = [c[0] for c in curve]
ax1.plot(n_seen, [c[1] for c in curve], 'o-', label='margin loss')
ax1.plot(n_seen, [RECONSTRUCTION_WEIGHT * 784 * c[2] for c in curve], 's-', label='0.0005 x reconstruction SSE')
ax1.set_xlabel('training images seen'); ax1.legend(); ax1.grid(alpha=0.3)
ax2.plot(n_seen, [c[3] for c in curve], 'o-'); ax2.set_xlabel('training images seen')
ax2.set_ylabel('training accuracy (per chunk)'); ax2.grid(alpha=0.3)
plt.tight_layout(); plt.show()

def route_test(net, X, iterations=(1, 3, 10), batch=100):
    """Digit capsules `(N, 10, 16)` of images X after each number of routing `iterations` (the convolutions run
    once per batch), the seconds spent routing, and the mean entropy of the final couplings, per number."""
    caps, seconds, entropy = ({R: [] for R in iterations}, dict.fromkeys(iterations, 0.0), dict.fromkeys(iterations, 0.0))
    for i in range(0, len(X), batch):
        U = net.predictions.predict(X[i:i + batch], batch_size=batch)
        for R in iterations:
            t0 = time.perf_counter()
            v, cache = routing_forward(U, R)
            seconds[R] += time.perf_counter() - t0
            caps[R].append(v)
            c = cache.c[:, -1]
            entropy[R] += float(-(c * np.log(c + 1e-12)).sum(-1).mean()) * len(U) / len(X)
    return {R: np.concatenate(v) for R, v in caps.items()}, seconds, entropy

t0 = time.perf_counter()
caps, routing_seconds, entropy = route_test(net, X_test[:N_TEST])
test_time = time.perf_counter() - t0
lengths_test = np.linalg.norm(caps[3], axis=-1)
recon_test = net.decoder.predict(Mask()([caps[3], np.zeros((N_TEST, 10), np.float32)]))   # the longest capsule
test_acc = float((lengths_test.argmax(1) == y_test[:N_TEST]).mean())
print(f"trained on {seen:,} images in {train_time / 60:.1f} min ({seen / train_time:.1f} images/s); "
      f"test accuracy {test_acc:.4f} on {N_TEST:,} test images ({test_time:.0f} s)")


# %% [markdown]
# In 30.1 minutes the network saw 131,500 training images (72.8 images per second on the
# two cores, about 2.2 epochs) and reached a test accuracy of 98.91 % on all 10,000 test
# images. The margin loss fell from 0.7167 (the first 500 images) to about 0.01, the
# per-pixel reconstruction error from 0.2265 to 0.0289; the training accuracy passed 0.9
# after 3,500 images and stayed between 0.958 and 0.998 from 10,000 on.
# %% [markdown]
# **What 99.75 % costs.** Sabour et al.'s 0.25 % test error comes from training on all
# 60,000 images, shifted by up to 2 pixels, for many epochs. At the rate just measured,
# one epoch on these two cores takes:

# %%
#| mnist
rate = seen / train_time
print(f"one epoch of 60,000 images: {60000 / rate / 3600:.1f} h; 50 epochs: {50 * 60000 / rate / 3600:.0f} h "
      f"at {rate:.1f} images/s")

# %% [markdown]
# **Reconstructions.** Test images (top) and the decoder's reconstruction from the
# longest digit capsule (bottom), with the predicted class:

# %%
#| mnist
fig, axes = plt.subplots(2, 10, figsize=(10, 2.4))
for k in range(10):
    axes[0, k].imshow(X_test[k, :, :, 0], cmap='gray'); axes[0, k].set_title(f'{y_test[k]}', fontsize=9)
    axes[1, k].imshow(recon_test[k].reshape(28, 28), cmap='gray')
    axes[1, k].set_title(f'→ {lengths_test[k].argmax()}', fontsize=9)
for a in axes.ravel(): a.axis('off')
plt.suptitle('test images (top) and reconstructions from the longest capsule (bottom)', fontsize=10)
plt.tight_layout(); plt.show()
print(f"mean squared pixel error of the reconstructions: {((recon_test - X_test[:N_TEST].reshape(N_TEST, -1)) ** 2).mean():.4f}")

# %% [markdown]
# **What a dimension of a digit capsule encodes.** Take a test digit's capsule $v_k$ (of
# its predicted class), add $\delta \in \{-0.25, -0.2, \dots, 0.25\}$ to one of its 16
# dimensions, and decode (Sabour et al.'s figure 4). Each row is one dimension:

# %%
#| mnist
k = 0                                                             # the first test image
v_k = routing_forward(net.predictions.predict(X_test[k:k + 1]), 3)[0][0]   # (10, 16): its digit capsules
cls = int(np.linalg.norm(v_k, axis=-1).argmax())
deltas = np.linspace(-0.25, 0.25, 11)
dims = range(16)
masked = np.zeros((len(dims), len(deltas), 10, 16), np.float32)
for a, d in enumerate(dims):
    for b, delta in enumerate(deltas):
        masked[a, b, cls] = v_k[cls]; masked[a, b, cls, d] += delta
images = net.decoder.predict(masked.reshape(-1, 160)).reshape(len(dims), len(deltas), 28, 28)
fig, axes = plt.subplots(len(dims), len(deltas), figsize=(len(deltas) * 0.75, len(dims) * 0.75))
for a in range(len(dims)):
    for b in range(len(deltas)):
        axes[a, b].imshow(images[a, b], cmap='gray'); axes[a, b].axis('off')
    axes[a, 0].text(-6, 14, f'{a}', fontsize=7, ha='right', va='center')
plt.suptitle(f'test image {k} (a {y_test[k]}, capsule {cls}): one dimension per row, -0.25 ... +0.25', fontsize=9)
plt.tight_layout(); plt.show()
change = np.abs(images[:, -1] - images[:, 0]).mean(axis=(1, 2))
print("mean pixel change from -0.25 to +0.25, per dimension:", np.round(change, 3))


# %% [markdown]
# After about two epochs the capsule encodes the digit's form: the reconstructions above
# are right for all ten digits (mean squared pixel error 0.0292), and most rows of the
# grid differ. Seven dimensions change the 2 most (mean pixel change 0.124 to 0.169 over
# the range): dimension 11 (0.169) turns its looped lower stroke into a flat base,
# dimension 2 (0.155) narrows and slants it, dimension 4 (0.136) takes it from thin and
# small to bold, and dimension 9 (0.126) closes its lower stroke into a loop; the other
# nine change it by 0.032 to 0.097. Sabour et al.'s figure shows dimensions for scale and
# thickness, stroke thickness, skew, width and translation, after full training; after
# two epochs several dimensions here have roles of that kind already.
# %% [markdown]
# ## 8. Three routing iterations or ten
#
# Routing is part of inference, so a trained network can be run with another number of
# iterations. The network above was trained with 3; here it is evaluated with 1, 3 and
# 10 on the same test images (`route_test` above ran the convolutions once per batch and
# routed their predictions each way), with the time routing took. With more iterations the
# couplings concentrate further (their entropy falls).

# %%
#| mnist
rows = []
for R in (1, 3, 10):
    acc = float((np.linalg.norm(caps[R], axis=-1).argmax(1) == y_test[:N_TEST]).mean())
    rows.append((R, acc))
    print(f"{R:2d} routing iterations: test accuracy {acc:.4f}, mean coupling entropy {entropy[R]:.3f} nats "
          f"(uniform: {np.log(10):.3f}), routing time {routing_seconds[R] * 1e3 / N_TEST:.2f} ms per image")


# %% [markdown]
# One iteration (no agreement at all: every coupling is $1/10$, so $s_j$ is the plain mean
# of the predictions) gives 98.86 %, three give 98.91 %, ten 98.70 %: 5 and 21 images in
# 10,000 apart, the second about two standard errors of a test of this size
# ($\sqrt{0.989 \cdot 0.011 / 10000} \approx 0.1$ points). The couplings of the trained
# network hardly move: their mean entropy is 2.301 nats after 3 iterations and 2.278
# after 10, against 2.303 for uniform couplings (the toy case of section 4, built to agree,
# went to 0.996). So in this network, at this stage of training, routing by agreement does
# little that a mean would not; the prediction matrices $W_{ij}$ carry the learning. The
# same has been reported of fully trained capsule networks (Paik, Kim and Lee, 2019; Gu and
# Tresp, 2020). What ten iterations certainly cost is time: routing took 0.17, 0.39 and
# 1.22 ms per image for 1, 3 and 10 iterations with the Numba kernel (forward only), and
# source 002's recipe trained at 38.1 images per second against our 72.8, although its
# stopped gradient makes its backward cheaper.
# %% [markdown]
# ## 9. Source numbers beside ours
#
# The table is printed from this run's outputs.

# %%
#| mnist
table = [
    ("||[0.3, 1.2]||", "1.53 (source 002)", f"{np.linalg.norm(v_book):.4f}"),
    ("primary capsules", "1152", f"{n_primary}"),
    ("parameters (without decoder)", "8.2M (6.8M) (Sabour et al.)", f"{net.count_params():,} ({net.count_params() - net.decoder.count_params():,})"),
    ("iteration 0: loss, accuracy", "0.5528, 0.04 (source 002)", f"{book_log[0][0]:.4f}, {book_log[0][1]:.2f}"),
]
if 10 in book_log: table.append(("iteration 10: loss, accuracy", "0.5417, 0.20", f"{book_log[10][0]:.4f}, {book_log[10][1]:.2f}"))
if 20 in book_log: table.append(("iteration 20: loss, accuracy", "0.2336, 0.40", f"{book_log[20][0]:.4f}, {book_log[20][1]:.2f}"))
table += [
    ("test accuracy", "99.75 % (Sabour et al., long training)",
     f"{100 * test_acc:.2f} % ({seen:,} training images, {train_time / 60:.1f} min; {N_TEST:,} test images)"),
    ("routing iterations", "3 (paper), 10 (source 002)",
     ', '.join(f"{R}: {100 * acc:.2f} %" for R, acc in rows)),
]
w0, w1 = max(len(r[0]) for r in table), max(len(r[1]) for r in table)
print(f"{'quantity':<{w0}}  {'source':<{w1}}  ours")
for a, b, c in table: print(f"{a:<{w0}}  {b:<{w1}}  {c}")

# %% [markdown]
# **Reading the table.** The length of $[0.3, 1.2]$ is 1.2369; source 002's 1.53 is the
# squared length. The network has the paper's 1,152 primary capsules and 8,215,568
# parameters, 6,804,224 without the decoder (Sabour et al.: 8.2M and 6.8M). Source 002's
# first iterations are reproduced in kind only: accuracy at chance and rising, but a loss
# of 0.8095 where it logs 0.5528, because its capsules start longer than ours. Our run
# reached 98.91 % test accuracy on the 10,000 test images after 131,500 training images
# (about 2.2 epochs) in 30.1 minutes, 0.84 points short of the paper's 99.75 %. That
# number (0.25 % error, the mean of three trials, with 3 routing iterations and the
# reconstruction loss) comes from training on all 60,000 images shifted by up to 2
# pixels for many epochs; at the rate measured here one epoch takes 0.2 h on these two
# cores and 50 epochs 11 h. One routing iteration and three gave the same accuracy
# within 5 images; ten were 0.21 points worse.

# %% [markdown]
# ## References
#
# * S. Sabour, N. Frosst, G. E. Hinton, *Dynamic Routing Between Capsules*, NeurIPS 2017, arXiv:1710.09829.
# * Source 002 (*Hands-On Deep Learning Algorithms with Python*), chapter 6, "Capsule networks".
# * J. Paik, J. Kim, J. Lee, *Capsule Networks Need an Improved Routing Algorithm*, ACML 2019, arXiv:1907.13327.
# * J. Gu, V. Tresp, *Improving the Robustness of Capsule Networks to Image Affine Transformations*, CVPR 2020
#   (routing removed with no loss of accuracy).
# * Chapter 05c (the functional `Model`), chapter 07a (`Conv2D`), and the companion notebook *Routing kernels*
#   (`kernels.routing`).
