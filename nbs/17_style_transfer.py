# %% [markdown]
# # Neural style transfer
#
# > Gram matrices and their gradient, the style, content and total-variation losses, Keras's form of Adam, a VGG-style feature net with BatchNorm and its multi-output extractor, and the loop that paints a photograph in the manner of a painting by optimising its pixels.
#
# ## Purpose
#
# Neural style transfer (Gatys, Ecker and Bethge, 2015 and 2016) paints a
# photograph in the manner of a painting. A convolutional net trained for
# classification is frozen and used only as a measuring instrument: its
# feature maps at one deep layer describe *what* is in the photograph (the
# content), and the correlations between its channels at several layers,
# the Gram matrices, describe *how* the painting looks (the style). An image
# is then optimised, pixel by pixel, so that its content features match the
# photograph's and its Gram matrices match the painting's.
#
# The build-your-own book (§3.9) follows the TensorFlow tutorial: ImageNet
# VGG19 without its top, style layers `block1_conv1` … `block5_conv1`,
# content layer `block5_conv2`, the Gram matrix divided by $H\cdot W$, a
# style weight of $10^{-2}$ shared by 5 layers and a content weight of
# $10^4$, Adam ($\eta = 0.02$, $\beta_1 = 0.99$, $\epsilon = 0.1$) on the
# pixels with clipping to $[0, 1]$. It mentions a total-variation loss as a
# denoiser but never uses it. This chapter
#
# 1. derives the Gram matrix's gradient, the two losses, the
#    total-variation loss and its gradient, and why the book's weights are not
#    dimensionless numbers;
# 2. implements them (`dl_from_scratch.style`), each gradient-checked in
#    float64, and takes the gradient with respect to the image through a
#    frozen feature net with the package's `Model.backward`;
# 3. trains the feature net itself: ImageNet's VGG19 weights can neither be
#    downloaded here nor are they from scratch, so a small VGG-style net with
#    BatchNorm is trained on CIFAR-10 for a few minutes;
# 4. paints two photographs (a cat, a cup of coffee) in the manner of three
#    paintings (van Gogh's *Starry Night*, Hokusai's *Great Wave*, Monet's
#    *Cliff Walk at Pourville*) at 256 pixels, shows the loss curves, and
#    says what features learnt from 32×32 images can and cannot carry over.
#
# The book's figures "after 10, 100 and 200 iterations" are cumulative
# calls on the same image, and each call runs one step more than it says:
# `model(1, 10)` in the test (11 steps), `model(1, 10)` (11), `model(1, 100)`
# (101) and `model(1, 200)` (201) put the three figures after **22, 123 and
# 324 steps**. We show our images after those numbers of steps.

# %%
#| default_exp style

# %%
#| export
from __future__ import annotations
import math
import numpy as np
from tqdm.auto import tqdm
from dl_from_scratch.core import as_rng, check_array, get_array_module
from dl_from_scratch.blocks import conv_bn
from dl_from_scratch.conv import Conv2D, MaxPool2D, GlobalAveragePooling2D
from dl_from_scratch.layers import Dense, L2
from dl_from_scratch.model import Input, Model
from dl_from_scratch.optim import Adam

# %%
#| hide
import os
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')   # before NumPy: OpenBLAS's idle threads must not spin (00_core)

# %%
import time
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import precision, set_num_threads
from dl_from_scratch.gradcheck import check_grad, rel_error
set_num_threads(2)
T_START = time.perf_counter()          # the chapter's own clock: the full run must stay within its budget

# %% [markdown]
# ## 1. Derivation
#
# **Feature maps as matrices.** At layer $l$ the net turns an image into
# $C_l$ feature maps of $H_l \times W_l$ positions. Write them as a matrix
# $F \in \mathbb R^{M \times C}$ with one row per position
# ($M = H_l W_l$) and one column per channel; in NHWC layout this is a
# reshape, not a copy.
#
# **The Gram matrix.** The book's (and the tutorial's) style statistic is
#
# $$G = \frac{1}{M} F^\top F, \qquad G_{cd} = \frac1M \sum_{p=1}^{M} F_{pc} F_{pd},$$
#
# the mean over positions of the product of channels $c$ and $d$: a
# $C \times C$ matrix that no longer says *where* anything is, only which
# features occur together. Dividing by $M$ makes it the same size for an
# image of any size, so the style image need not have the generated image's
# shape.
#
# For a scalar loss $\mathcal L(G)$ with $\bar G = \partial\mathcal L/\partial G$,
# the differential of $G$ is $dG = \frac1M(dF^\top F + F^\top dF)$, so
#
# $$d\mathcal L = \sum_{cd} \bar G_{cd}\, dG_{cd}
#   = \frac1M \operatorname{tr}\!\big(\bar G^\top dF^\top F\big) + \frac1M \operatorname{tr}\!\big(\bar G^\top F^\top dF\big)
#   = \Big\langle \frac1M F\,(\bar G + \bar G^\top),\ dF \Big\rangle,$$
#
# using $\operatorname{tr}(A\,dF^\top) = \langle A, dF\rangle$ and the cyclic
# property of the trace. Hence
#
# $$\frac{\partial \mathcal L}{\partial F} = \frac1M\, F\,(\bar G + \bar G^\top),$$
#
# one $(M \times C)(C \times C)$ product per image, and $\frac2M F \bar G$
# when $\bar G$ is symmetric, as it is for every loss below.
#
# **Style loss.** With $A_l$ the style image's Gram matrix at layer $l$ and
# $G_l$ the generated image's, the book's code computes, over $L_s = 5$
# layers,
#
# $$\mathcal L_{\text{style}} = \frac{\beta}{L_s} \sum_{l} \frac{1}{C_l^2}\sum_{c,d} (G_{l,cd} - A_{l,cd})^2,
# \qquad \bar G_l = \frac{2\beta}{L_s C_l^2}(G_l - A_l),
# \qquad \frac{\partial \mathcal L_{\text{style}}}{\partial F_l} = \frac{4\beta}{L_s C_l^2 M_l} F_l (G_l - A_l),$$
#
# with $\beta = 10^{-2}$ (the mean over the $C_l^2$ entries is `tf.reduce_mean`).
# The book's prose writes a constant $K$ in front and a sum $G = \sum_l G^{[l]}$
# that its code does not compute; we follow the code.
#
# **Content loss.** With $P$ the photograph's features at the content
# layer, $\mathcal L_{\text{content}} = \frac{\alpha}{M C} \sum_{p,c} (F_{pc} - P_{pc})^2$,
# gradient $\frac{2\alpha}{MC}(F - P)$, with $\alpha = 10^4$.
#
# **Total variation.** `tf.image.total_variation`, which the tutorial the
# book follows uses with a weight of 30 and the book mentions but drops, is
# the sum of the absolute differences between neighbouring pixels, down and
# across, over the three colour channels:
#
# $$V(x) = \sum_{i,j,k} |x_{i+1,j,k} - x_{i,j,k}| + |x_{i,j+1,k} - x_{i,j,k}|.$$
#
# Pixel $x_{ij}$ appears in four terms (fewer at the border); with
# $\operatorname{sgn}$ the sign function,
#
# $$\frac{\partial V}{\partial x_{i,j}} = \operatorname{sgn}(x_{i,j} - x_{i-1,j}) - \operatorname{sgn}(x_{i+1,j} - x_{i,j})
#   + \operatorname{sgn}(x_{i,j} - x_{i,j-1}) - \operatorname{sgn}(x_{i,j+1} - x_{i,j}),$$
#
# where a term whose neighbour lies outside the image is left out. $V$ is not
# differentiable where two neighbours are equal; there $\operatorname{sgn}(0) = 0$
# is a subgradient (the middle of $[-1, 1]$). It matters in practice: clipping
# to $[0, 1]$ makes neighbouring pixels equal at 0 or 1. Each pixel is
# pulled towards the median of its neighbours, which removes isolated
# speckles, the high-frequency noise the book sees in its results.
#
# **The weights have units.** If every feature is multiplied by a constant
# $s$ (a net whose activations are larger), $G$ grows by $s^2$, the style
# loss by $s^4$ and the content loss by $s^2$. The balance that
# $\beta/\alpha = 10^{-6}$ strikes therefore holds only for features of the
# size VGG19's have when it is fed pixels in $[0, 255]$ (the book's
# `StyleContentModel` multiplies by 255): the book prints Gram-matrix means
# from 436 to 182,728 at the five style layers and a mean content feature of
# 16.58 on its content image. And the gradient's absolute size matters
# too: Adam divides by $\sqrt{\hat v} + \epsilon$ with $\epsilon = 0.1$, so
# gradients far below 0.1 barely move the pixels. A net with BatchNorm keeps
# its features near unit size, $10^2$ to $10^3$ times smaller than VGG19's.
# Section 4 measures what the book's weights do in those units (nothing
# visible) and then expresses our features in VGG19's units: one factor
# $s_l$ per layer, fixed before any optimisation so that on the content
# image $s_l^2\,\overline{G_l}$ equals the book's printed Gram mean of the
# layer of the same rank and $s\,\overline{F}$ its content mean. With
# those factors the book's $\alpha$, $\beta$, $\epsilon$ and the tutorial's
# total-variation weight 30 mean what they meant there.
#
# **Keras's $\epsilon$.** The book's optimiser is Keras's Adam, which
# computes $p \leftarrow p - \eta\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\cdot\frac{m}{\sqrt v + \hat\epsilon}$:
# its $\epsilon$ is the paper's $\hat\epsilon$ (Kingma and Ba, end of §2),
# added before the bias correction of $v$. Rewriting gives the paper's rule
# (the package's `Adam`) with $\epsilon_t = \hat\epsilon/\sqrt{1 - \beta_2^t}$:
# with $\hat\epsilon = 0.1$ and $\beta_2 = 0.999$ that is 3.16 at the first
# step, 0.68 at step 22 and 0.19 at step 324. `KerasAdam` below is `Adam`
# with that $\epsilon_t$.

# %% [markdown]
# ## 2. Implementation
#
# ### Gram matrices

# %%
#| export
def gram_matrix(F):
    """Gram matrices of the feature maps F `(N, H, W, C)`: `G[n] = F_n^T F_n / (H W)`, with `F_n` the `(H W, C)`
    matrix of image n, -> `(N, C, C)`. Entry (c, d) is the mean over positions of channel c times channel d."""
    F = check_array(F, 'F', ndim=4, finite=False, who='gram_matrix')
    xp, (N, H, W, C) = get_array_module(F), F.shape
    M = F.reshape(N, H * W, C)
    return xp.matmul(M.transpose(0, 2, 1), M) / (H * W)

def gram_matrix_backward(F, dG):
    """dL/dF `(N, H, W, C)` from F `(N, H, W, C)` and dL/dG `(N, C, C)` of `G = gram_matrix(F)`:
    `F_n (dG_n + dG_n^T) / (H W)` for every image n."""
    F = check_array(F, 'F', ndim=4, finite=False, who='gram_matrix_backward')
    N, H, W, C = F.shape
    dG = check_array(dG, 'dG', shape=(N, C, C), finite=False, who='gram_matrix_backward')
    xp = get_array_module(F)
    return xp.matmul(F.reshape(N, H * W, C), dG + dG.transpose(0, 2, 1)).reshape(F.shape) / (H * W)

# %% [markdown]
# The definition, entry by entry, and the gradient by central differences
# in float64 for a loss with a non-symmetric $\bar G$ (so that both terms of
# $\bar G + \bar G^\top$ are tested):

# %%
rng = np.random.default_rng(0)
F = rng.standard_normal((2, 3, 4, 5))
G = gram_matrix(F)
test_eq(G.shape, (2, 5, 5))
test_close(G[1, 2, 4], np.mean(F[1, :, :, 2] * F[1, :, :, 4]), eps=1e-12)
test_close(G, G.transpose(0, 2, 1), eps=1e-12)
assert np.all(np.linalg.eigvalsh(G) > -1e-12)                   # positive semi-definite, as F^T F is
R = rng.standard_normal((2, 5, 5))                              # L = sum(R * G): dL/dG = R, not symmetric
err = check_grad(lambda f: np.sum(R * gram_matrix(f)), lambda f: gram_matrix_backward(f, R), F)
print(f'Gram matrix: relative error of dL/dF {err:.1e}'); assert err < 1e-7
test_fail(lambda: gram_matrix(F[0]), contains='of rank 4')
test_fail(lambda: gram_matrix_backward(F, R[:, :4]), contains='shape')

# %% [markdown]
# ### The style and content loss
#
# One object holds the targets and the weights. It takes the feature
# extractor's outputs in the order style layers, then content layers, and
# returns the loss, its two parts and the gradient with respect to each
# output, ready for `Model.backward`. The `scales` are the factors $s_l$ of
# the derivation (the units of the features); the targets are given in the
# net's own units and scaled like the generated image's features.

# %%
#| export
class StyleContentLoss:
    """The book's style transfer loss on a feature extractor's outputs `[F_1 .. F_Ls, F_Ls+1 ..]`, each
    `(N, H_l, W_l, C_l)`: `style_weight / Ls * sum_l mean((G_l - A_l)^2)` over the Ls style layers, with
    G_l = `gram_matrix(s_l F_l)` and A_l the Gram matrix of `s_l` times the style image's features, plus
    `content_weight / Lc * sum_l mean((s_l F_l - s_l P_l)^2)` over the Lc content layers. The targets are given in
    the net's own units: `style_grams` `(1 or N, C_l, C_l)` (Gram matrices of the style image's features) and
    `content_features` `(1 or N, H_l, W_l, C_l)`. `scales` (one per layer, default 1): the factors s_l that put the
    features in the units the weights were chosen for. Call: `features -> (loss, {'style', 'content'}, dL/dfeatures)`."""
    def __init__(self, style_grams, content_features, style_weight: float = 1e-2, content_weight: float = 1e4,
                 scales=None):
        A = [check_array(A, f'style_grams[{i}]', ndim=3, who='StyleContentLoss') for i, A in enumerate(style_grams)]
        self.P = [check_array(P, f'content_features[{i}]', ndim=4, who='StyleContentLoss')
                  for i, P in enumerate(content_features)]
        n = len(A) + len(self.P)
        self.scales = [1.0] * n if scales is None else [float(s) for s in scales]
        if len(self.scales) != n or not all(s > 0 for s in self.scales):
            raise ValueError(f"StyleContentLoss expected {n} positive scales (one per style and content layer), "
                             f"got {scales!r}")
        self.A = [s * s * a for a, s in zip(A, self.scales)]     # Gram matrices of s_l times the style features
        self.style_weight, self.content_weight = float(style_weight), float(content_weight)

    def __call__(self, features):
        Ls = len(self.A)
        if len(features) != Ls + len(self.P):
            raise ValueError(f"StyleContentLoss expected {Ls} style and {len(self.P)} content feature maps, "
                             f"got {len(features)}")
        style, content, dfs = 0.0, 0.0, []
        for F, A, s in zip(features[:Ls], self.A, self.scales):
            C = F.shape[-1]
            if A.shape[-1] != C:
                raise ValueError(f"StyleContentLoss expected style features with {A.shape[-1]} channels, got {F.shape}")
            D = s * s * gram_matrix(F) - A                   # Gram matrix of s F minus the target
            style += self.style_weight / Ls * float((D * D).sum()) / (C * C)
            dG = (2 * self.style_weight * s * s / (Ls * C * C)) * D    # dL/dG(F), as G(s F) = s^2 G(F)
            dfs.append(gram_matrix_backward(F, dG))
        Lc = len(self.P)
        for F, P, s in zip(features[Ls:], self.P, self.scales[Ls:]):
            if F.shape[1:] != P.shape[1:]:
                raise ValueError(f"StyleContentLoss expected content features of shape (N, {', '.join(map(str, P.shape[1:]))}), "
                                 f"got {F.shape}")
            D = s * (F - P)
            content += self.content_weight / Lc * float((D * D).sum()) / D[0].size
            dfs.append((2 * self.content_weight * s / (Lc * D[0].size)) * D)
        return style + content, {'style': style, 'content': content}, dfs

# %% [markdown]
# The loss is checked against its definition written out with NumPy, and
# its gradient with respect to every feature map by central differences in
# float64; scales other than 1 are included, so the $s^4$ and $s^2$ of the
# derivation are tested too.

# %%
rng = np.random.default_rng(1)
Fs = [rng.random((1, 4, 5, 3)), rng.random((1, 3, 2, 4)), rng.random((1, 3, 4, 2))]   # two style maps, one content
A = [gram_matrix(rng.random((1, 6, 6, 3))), gram_matrix(rng.random((1, 5, 5, 4)))]
P = [rng.random((1, 3, 4, 2))]
scales = [3.0, 0.5, 2.0]
loss = StyleContentLoss(A, P, scales=scales)
value, parts, dfs = loss(Fs)
by_hand_style = 1e-2 / 2 * sum(np.mean((s**2 * gram_matrix(F) - s**2 * a) ** 2) for F, a, s in zip(Fs[:2], A, scales))
by_hand_content = 1e4 * np.mean((2.0 * (Fs[2] - P[0])) ** 2)
test_close(parts['style'], by_hand_style, eps=1e-12); test_close(parts['content'], by_hand_content, eps=1e-9)
test_close(value, by_hand_style + by_hand_content, eps=1e-9)
balanced = StyleContentLoss(A, P, style_weight=3.0, content_weight=0.5, scales=scales)   # terms of one size:
for i in range(3):                                                   # differences of 1e4 would hide the style's
    def f(x, i=i): return balanced(Fs[:i] + [x] + Fs[i + 1:])[0]
    err = check_grad(f, lambda x, i=i: balanced(Fs[:i] + [x] + Fs[i + 1:])[2][i], Fs[i])
    print(f'feature map {i} ({"style" if i < 2 else "content"}): relative error {err:.1e}'); assert err < 1e-7
test_fail(lambda: loss(Fs[:2]), contains='2 style and 1 content')
test_fail(lambda: StyleContentLoss(A, P, scales=[1, 1]), contains='3 positive scales')
test_fail(lambda: loss([Fs[1], Fs[1], Fs[2]]), contains='3 channels')

# %% [markdown]
# ### Total variation

# %%
#| export
def total_variation(x):
    """`tf.image.total_variation`: for each image of x `(N, H, W, C)` the sum of |x[i+1, j] - x[i, j]| and
    |x[i, j+1] - x[i, j]| over rows, columns and channels -> `(N,)`."""
    x = check_array(x, 'x', ndim=4, finite=False, who='total_variation')
    xp = get_array_module(x)
    return xp.abs(xp.diff(x, axis=1)).sum(axis=(1, 2, 3)) + xp.abs(xp.diff(x, axis=2)).sum(axis=(1, 2, 3))

def total_variation_grad(x):
    """d(sum of `total_variation(x)`)/dx `(N, H, W, C)`: sgn(x_ij - x_i-1,j) - sgn(x_i+1,j - x_ij) and the same
    across, with sgn(0) = 0 (a subgradient where neighbours are equal)."""
    x = check_array(x, 'x', ndim=4, finite=False, who='total_variation_grad')
    xp = get_array_module(x)
    g = xp.zeros_like(x)
    for axis in (1, 2):
        d = xp.sign(xp.diff(x, axis=axis))                   # sgn(x[k+1] - x[k]) along `axis`
        hi = [slice(None)] * 4; hi[axis] = slice(1, None)
        lo = [slice(None)] * 4; lo[axis] = slice(None, -1)
        g[tuple(hi)] += d                                    # x[k+1] gains +sgn
        g[tuple(lo)] -= d                                    # x[k] gains -sgn
    return g

# %%
rng = np.random.default_rng(2)
x = rng.random((2, 5, 6, 3))
by_hand = sum(abs(x[1, i + 1, j, k] - x[1, i, j, k]) for i in range(4) for j in range(6) for k in range(3)) + \
          sum(abs(x[1, i, j + 1, k] - x[1, i, j, k]) for i in range(5) for j in range(5) for k in range(3))
test_close(total_variation(x)[1], by_hand, eps=1e-12)
err = check_grad(lambda v: total_variation(v).sum(), total_variation_grad, x)    # no ties: differentiable here
print(f'total variation: relative error of the gradient {err:.1e}'); assert err < 1e-7
flat = np.full((1, 4, 4, 3), 0.5)
test_eq(total_variation(flat), [0.0]); test_eq(total_variation_grad(flat), np.zeros_like(flat))   # sgn(0) = 0
test_fail(lambda: total_variation(x[0]), contains='of rank 4')

# %% [markdown]
# ### Keras's Adam
#
# `KerasAdam` is `Adam` with $\epsilon_t = \hat\epsilon/\sqrt{1-\beta_2^t}$
# at step $t$, as derived above. The test writes Keras's update out and
# compares.

# %%
#| export
class KerasAdam(Adam):
    """Adam as Keras computes it: `p -= lr sqrt(1 - b2^t) / (1 - b1^t) * m / (sqrt(v) + eps)`. Its `eps` is the
    paper's eps-hat, which is `Adam`'s rule with `eps / sqrt(1 - b2^t)` at step t."""
    name = 'keras_adam'
    def _update(self, p, g, st, lr):
        eps = self.eps
        self.eps = eps / math.sqrt(1 - self.beta_2 ** st['t'])
        try: super()._update(p, g, st, lr)
        finally: self.eps = eps

# %%
rng = np.random.default_rng(3)
p0, gs = rng.standard_normal(6), rng.standard_normal((5, 6)) * 0.05
opt, p = KerasAdam(0.02, beta_1=0.99, eps=0.1), {'x': p0.copy()}
q, m, v = p0.copy(), np.zeros(6), np.zeros(6)
for t, g in enumerate(gs, 1):
    opt.step(p, {'x': g})
    m = 0.99 * m + 0.01 * g; v = 0.999 * v + 0.001 * g * g                 # Keras's update, written out
    q -= 0.02 * math.sqrt(1 - 0.999 ** t) / (1 - 0.99 ** t) * m / (np.sqrt(v) + 0.1)
    test_close(p['x'], q, eps=1e-12)
test_eq(opt.eps, 0.1)
print('epsilon_t = 0.1 / sqrt(1 - 0.999^t) at t = 1, 22, 123, 324:',
      [round(0.1 / math.sqrt(1 - 0.999 ** t), 2) for t in (1, 22, 123, 324)])

# %% [markdown]
# ### The feature net
#
# A VGG-style net: per block two 3×3 convolutions, each followed by
# BatchNorm and ReLU (chapter 09's `conv_bn`), then 2×2 max-pooling; five
# blocks, as VGG19 has, so that the book's layer names exist here too. Each
# convolution is named as Keras names VGG19's (`block3_conv1`); its feature
# map is the ReLU's output, as in VGG19, where the ReLU is part of the
# convolution layer. After the fifth block a 32×32 CIFAR image is 1×1; global
# average pooling and a dense layer give the 10 logits.
#
# For style transfer the same layers are built again for the image's size,
# ending at the deepest layer asked for, with several outputs (chapter 05c's
# functional `Model`); `feature_extractor` copies the trained weights and
# BatchNorm statistics into them by name. Called with `training=False`,
# BatchNorm uses its moving statistics: a fixed affine map, so that the
# features of an image do not depend on the other images of a batch.

# %%
#| export
STYLE_LAYERS = ('block1_conv1', 'block2_conv1', 'block3_conv1', 'block4_conv1', 'block5_conv1')
CONTENT_LAYERS = ('block5_conv2',)

def vgg_bn_net(input_shape=(32, 32, 3), widths=(16, 32, 64, 128, 128), outputs=None, classes: int = 10,
               weight_decay: float = 2.5e-4, rng=0) -> Model:
    """A VGG-style net with BatchNorm: for each width f (block b = 1, 2, ...) two `conv_bn` 3x3 convolutions named
    `block{b}_conv1`, `block{b}_conv2`, then 2x2 max-pooling; global average pooling and `Dense(classes)` logits:
    `(N, *input_shape)` -> `(N, classes)`. With `outputs` (names of convolutions): a feature extractor instead,
    `(N, *input_shape)` -> one ReLU output `(N, H_l, W_l, f)` per name, built only up to the deepest of them."""
    rng = as_rng(rng)
    names = [f'block{b}_conv{j}' for b in range(1, len(widths) + 1) for j in (1, 2)]
    unknown = [n for n in (outputs or ()) if n not in names]
    if unknown:
        raise ValueError(f"vgg_bn_net expected output names among {names}, got {unknown}")
    inp, taps = Input(input_shape), {}
    x = inp
    for b, f in enumerate(widths, 1):
        for j in (1, 2):
            x = taps[f'block{b}_conv{j}'] = conv_bn(x, f, weight_decay=weight_decay, rng=rng, name=f'block{b}_conv{j}')
            if outputs and all(n in taps for n in outputs):
                return Model(inp, [taps[n] for n in outputs], name='vgg_bn_features')
        x = MaxPool2D(2)(x)
    y = Dense(classes, kernel_regularizer=L2(weight_decay) if weight_decay else None, rng=rng)(GlobalAveragePooling2D()(x))
    return Model(inp, y, name='vgg_bn_net')

def feature_extractor(net: Model, names, input_shape) -> Model:
    """The outputs `names` of the trained `vgg_bn_net` `net` for images of shape `input_shape` `(H, W, 3)`: the same
    layers built for that size, `net`'s weights and BatchNorm statistics copied in, frozen. Call it with
    `training=False` (BatchNorm's moving statistics)."""
    widths = tuple(l.filters for l in net.layers if isinstance(l, Conv2D))[::2]
    fe = vgg_bn_net(tuple(input_shape), widths, outputs=list(names))
    src = {**net.params, **net.state}
    for k, w in {**fe.params, **fe.state}.items():
        if k not in src or src[k].shape != w.shape:
            raise ValueError(f"feature_extractor expected {net.name!r} to hold {k} of shape {w.shape} "
                             f"(a vgg_bn_net), got {src[k].shape if k in src else 'none'}")
        w[...] = src[k]
    fe.trainable = False
    return fe

# %% [markdown]
# The extractor's outputs must be the trained net's own intermediate
# feature maps. The net is a chain, so running its layers one by one up to a
# layer gives that layer's output; we compare at 32×32 (random BatchNorm
# statistics, so that copying them matters) and check that the extractor
# runs on a larger image and stops at the deepest layer asked for.

# %%
net = vgg_bn_net(widths=(4, 8, 8, 8, 8), rng=0)
rng = np.random.default_rng(4)
for k, w in net.state.items(): w[...] = rng.random(w.shape) + (0.5 if k.endswith('var') else 0.0)
x32 = rng.random((2, 32, 32, 3), dtype=np.float32)
fe = feature_extractor(net, ['block2_conv1', 'block1_conv2'], (32, 32, 3))
h, by_layer = x32, {}
for l in net.layers:
    h = l.forward(h, training=False); by_layer[l.name] = h
names = [l.name for l in net.layers]
relu_after = {c: names[names.index(c) + 2] for c in names if c.startswith('block')}   # conv -> BN -> ReLU
outs = fe(x32, training=False)
test_close(outs[0], by_layer[relu_after['block2_conv1']], eps=1e-6)
test_close(outs[1], by_layer[relu_after['block1_conv2']], eps=1e-6)
test_eq(fe.count_trainable_params(), 0)
test_eq(len([l for l in fe.layers if isinstance(l, Conv2D)]), 3)           # stops at block2_conv1
big = feature_extractor(net, STYLE_LAYERS + CONTENT_LAYERS, (40, 56, 3))
test_eq([o.shape for o in big(rng.random((1, 40, 56, 3), dtype=np.float32))],
        [(1, 40, 56, 4), (1, 20, 28, 8), (1, 10, 14, 8), (1, 5, 7, 8), (1, 2, 3, 8), (1, 2, 3, 8)])
test_fail(lambda: vgg_bn_net(outputs=['block6_conv1']), contains='block6_conv1')
test_fail(lambda: feature_extractor(net, ['block1_conv1'], (8, 8, 2)),
          contains='block1_conv1/W')

# %% [markdown]
# ### Units, and the loop on the pixels
#
# `feature_scales` computes the factors $s_l$ from one image's features;
# `BOOK_VGG19_UNITS` holds the book's printed statistics of VGG19 on its
# content image (the mean of each style layer's Gram matrix and the mean
# content feature). `stylize` is the book's `train_step` repeated: features
# of the current image, the loss, its gradient through the frozen extractor
# (`Model.backward`, which returns $\partial\mathcal L/\partial x$), the
# total-variation term if asked for, one optimiser step, clipping to
# $[0, 1]$. `style_transfer` puts the pieces together for one photograph and
# one painting.

# %%
#| export
BOOK_VGG19_UNITS = {'gram_means': (436.2575, 13139.537, 11392.026, 182728.28, 2137.6206), 'feature_means': (16.581339,)}

def feature_scales(features, gram_means, feature_means) -> list:
    """Factors s_l that put one image's feature maps `[(1, H_l, W_l, C_l), ...]` (the style layers first, one per
    entry of `gram_means`, then one per entry of `feature_means`) in another net's units: s_l^2 times the mean of
    `gram_matrix(F_l)` equals `gram_means[l]`, and s_l times the mean of F_l equals `feature_means[l]`."""
    n = len(gram_means)
    if len(features) != n + len(feature_means):
        raise ValueError(f"feature_scales expected {n + len(feature_means)} feature maps ({n} style, "
                         f"{len(feature_means)} content), got {len(features)}")
    ours = [float(gram_matrix(F).mean()) for F in features[:n]] + [float(F.mean()) for F in features[n:]]
    if not all(o > 0 for o in ours):
        raise ValueError(f"feature_scales expected feature maps with a positive mean, got means {ours}")
    return [math.sqrt(g / o) for g, o in zip(gram_means, ours[:n])] + [f / o for f, o in zip(feature_means, ours[n:])]

def stylize(extractor: Model, loss: StyleContentLoss, image, steps: int, optimizer=None, tv_weight: float = 0.0,
            snapshots=(), progress: bool = True):
    """Optimise the pixels of a copy of `image` `(H, W, 3)` (values in [0, 1]; usually the content image) for
    `steps` steps: `loss(extractor(x)) + tv_weight * total_variation(x)`, its gradient through
    `extractor.backward`, one `optimizer` step (default the book's `KerasAdam(0.02, beta_1=0.99, eps=0.1)`),
    clipping to [0, 1]. Returns the image `(H, W, 3)`, the history {'loss', 'style', 'content', 'tv'} (values
    before each step; 'tv' weighted) and {step: image} after each step in `snapshots`."""
    x = check_array(image, 'image', ndim=3, who='stylize')
    if tuple(x.shape) != tuple(extractor.input_shape):
        raise ValueError(f"stylize expected an image of the extractor's shape {tuple(extractor.input_shape)}, "
                         f"got {x.shape}")
    x = x[None].astype(np.float32)                         # a copy: the caller's image is left alone
    opt = optimizer or KerasAdam(0.02, beta_1=0.99, eps=0.1)
    history, shots = {'loss': [], 'style': [], 'content': [], 'tv': []}, {}
    for t in tqdm(range(1, steps + 1), desc='style transfer', disable=not progress, leave=False):
        value, parts, dfs = loss(extractor(x, training=False))
        dx = extractor.backward(dfs)
        tv = 0.0
        if tv_weight:
            tv = tv_weight * float(total_variation(x)[0])
            dx = dx + tv_weight * total_variation_grad(x)
        for k, v in (('loss', value + tv), ('style', parts['style']), ('content', parts['content']), ('tv', tv)):
            history[k].append(v)
        opt.step({'image': x}, {'image': dx})
        np.clip(x, 0.0, 1.0, out=x)
        if t in snapshots: shots[t] = x[0].copy()
    return x[0], history, shots

def style_transfer(net: Model, content, style, steps: int, style_weight: float = 1e-2, content_weight: float = 1e4,
                   tv_weight: float = 30.0, units: dict | None = BOOK_VGG19_UNITS, snapshots=(), progress: bool = True,
                   style_layers=STYLE_LAYERS, content_layers=CONTENT_LAYERS):
    """Paint `content` `(H, W, 3)` in the manner of `style` `(H', W', 3)` (both in [0, 1]) with the trained
    `vgg_bn_net` `net`: targets from the two images, features in the units of `units` (`feature_scales` on the
    content image; None: the net's own), then `stylize` from the content image. Returns `stylize`'s
    (image, history, snapshots) and the scales used."""
    fe = feature_extractor(net, (*style_layers, *content_layers), content.shape)
    F_content = fe(content[None].astype(np.float32), training=False)
    S = feature_extractor(net, style_layers, style.shape)(style[None].astype(np.float32), training=False)
    scales = None if units is None else feature_scales(F_content, units['gram_means'], units['feature_means'])
    loss = StyleContentLoss([gram_matrix(F) for F in S], F_content[len(style_layers):], style_weight, content_weight,
                            scales)
    return (*stylize(fe, loss, content, steps, tv_weight=tv_weight, snapshots=snapshots, progress=progress),
            loss.scales)

# %% [markdown]
# Checks: the scales do what they promise; the gradient that reaches the
# pixels, through a small random net (random BatchNorm statistics, float64),
# the style and content losses and the total variation, agrees with central
# differences; a few steps lower the loss and keep the pixels in $[0, 1]$.

# %%
with precision(np.float64):
    tiny = vgg_bn_net(widths=(3, 4, 4, 5, 5), rng=5)
    rng = np.random.default_rng(5)
    shift = {'gamma': 1.0, 'beta': 0.2, 'moving_mean': -0.1, 'moving_var': 0.9}   # BatchNorm: random, units alive
    for l in tiny.layers:
        for k, w in {**l.params, **l.state}.items():
            if k in shift: w[...] = shift[k] + 0.2 * rng.random(w.shape)
    content, style = rng.random((16, 20, 3)), rng.random((18, 16, 3))
    fe = feature_extractor(tiny, STYLE_LAYERS + CONTENT_LAYERS, content.shape)
    Fc = fe(content[None], training=False)
    sc = feature_scales(Fc, BOOK_VGG19_UNITS['gram_means'], BOOK_VGG19_UNITS['feature_means'])
    test_close([s * s * gram_matrix(F).mean() for s, F in zip(sc, Fc[:5])], BOOK_VGG19_UNITS['gram_means'], eps=1e-6)
    test_close(sc[5] * Fc[5].mean(), 16.581339, eps=1e-9)
    S = feature_extractor(tiny, STYLE_LAYERS, style.shape)(style[None], training=False)
    chain = StyleContentLoss([gram_matrix(F) for F in S], Fc[5:], style_weight=1.0, content_weight=1.0)
    x = rng.random((1, 16, 20, 3))
    def f(v): return chain(fe(v, training=False))[0] + 0.3 * total_variation(v)[0]
    g = (fe.backward(chain(fe(x, training=False))[2]) + 0.3 * total_variation_grad(x)).ravel()
    num = []
    for i in rng.choice(x.size, 60, replace=False):          # central differences at 60 random pixels
        e = np.zeros(x.size); e[i] = 1e-5; e = e.reshape(x.shape)
        num.append((i, (f(x + e) - f(x - e)) / 2e-5))
    i, n = map(np.array, zip(*num))
    err = rel_error(g[i], n)
    print(f'dL/d(pixels) through the extractor, at 60 pixels: relative error {err:.1e}'); assert err < 1e-6
test_fail(lambda: feature_scales(Fc[:5], BOOK_VGG19_UNITS['gram_means'], (1.0,)), contains='6 feature maps')

tiny32 = vgg_bn_net(widths=(3, 4, 4, 5, 5), rng=5)
content32, style32 = content.astype(np.float32), style.astype(np.float32)
out, hist, shots, _ = style_transfer(tiny32, content32, style32, 8, snapshots=(3, 8), progress=False)
test_eq(out.shape, content.shape); test_eq(sorted(shots), [3, 8]); test_eq(shots[8], out)
assert 0.0 <= out.min() and out.max() <= 1.0 and not np.array_equal(out, content32)
test_eq(hist['content'][0], 0.0)                             # the generated image starts as the photograph
assert hist['style'][-1] < hist['style'][0]
print(f"8 steps on a random 16x20 image: style loss {hist['style'][0]:.4g} -> {hist['style'][-1]:.4g}")
test_fail(lambda: stylize(feature_extractor(tiny32, ['block1_conv1'], (16, 20, 3)), chain, style32, 1),
          contains='(16, 20, 3)')

# %% [markdown]
# ### Receptive fields
#
# How much of the image does a feature see? After a layer with kernel $k$
# and stride $s$ the receptive field grows by $(k-1)\,j$ input pixels, where
# $j$ is the product of the strides before it (the *jump*). Our net has two
# convolutions per block; VGG19 has 2, 2, 4, 4, 4.

# %%
def receptive_fields(steps):
    "Receptive field and jump (in input pixels) after each `(name, kernel, stride)` of a chain of layers."
    r, j, out = 1, 1, {}
    for name, k, s in steps:
        r += (k - 1) * j; j *= s
        out[name] = (r, j)
    return out

def vgg_steps(convs_per_block):
    return [step for b, n in enumerate(convs_per_block, 1)
            for step in [(f'block{b}_conv{c}', 3, 1) for c in range(1, n + 1)] + [(f'block{b}_pool', 2, 2)]]

ours_rf, vgg19_rf = receptive_fields(vgg_steps((2, 2, 2, 2, 2))), receptive_fields(vgg_steps((2, 2, 4, 4, 4)))
test_eq(receptive_fields([(l.name, l.kernel_size[0], l.strides[0]) if isinstance(l, Conv2D) else
                          (l.name, l.pool_size[0], l.strides[0]) for l in net.layers if isinstance(l, (Conv2D, MaxPool2D))])
        ['block5_conv2'], ours_rf['block5_conv2'])                 # the formula read off the net's own layers
print(f"{'layer':14}{'ours: field':>12}{'jump':>6}{'VGG19: field':>14}{'jump':>6}")
for name in STYLE_LAYERS + CONTENT_LAYERS:
    print(f'{name:14}{ours_rf[name][0]:12d}{ours_rf[name][1]:6d}{vgg19_rf[name][0]:14d}{vgg19_rf[name][1]:6d}')
test_eq(ours_rf['block5_conv2'], (140, 16)); test_eq(vgg19_rf['block5_conv2'], (188, 16))

# %% [markdown]
# The first layers see what VGG19's see; from `block4` on ours see less, as
# our blocks 3–5 have two convolutions where VGG19's have four. Both nets
# pool four times before `block5`, so a `block5` feature moves 16 pixels per
# position in both.
#
# ## 3. The feature net, trained on CIFAR-10
#
# The net: widths 16, 32, 64, 128, 128 (VGG19 has 64, 128, 256, 512, 512),
# so that a step of style transfer on a 256-pixel image stays well under a
# second on two cores. It is trained as chapter 08a trains `vgg_bn`:
# crops and flips, SGD with Nesterov momentum and the one-cycle rate,
# weight decay $2.5\times10^{-4}$, batches of 128, on the 50,000 CIFAR-10
# training images in $[0, 1]$ for four epochs (minutes on two cores; more
# epochs give a better classifier). Quick mode trains a
# much smaller net (widths 4, 8, 8, 8, 8) for one epoch on 512 images.

# %%
import math
from dl_from_scratch.data import load
from dl_from_scratch.augment import random_crop_flip
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.model import FractionalEpoch
from dl_from_scratch.optim import SGD, OneCycle

def train_feature_net(x, y, epochs, widths, batch_size=128, peak=0.08, rng=0):
    "Train `vgg_bn_net(widths)` with fresh crops and flips every epoch and a one-cycle rate; return it and the seconds."
    net = vgg_bn_net(widths=widths, rng=rng)
    net.compile(SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'],
                optimizer=SGD(OneCycle(peak, epochs, min(2, epochs / 4)), momentum=0.9, nesterov=True))
    steps, aug_rng, t0 = math.ceil(len(x) / batch_size), np.random.default_rng(rng), time.perf_counter()
    for e in range(epochs):
        h = net.fit(random_crop_flip(x, rng=aug_rng), y, epochs=e + 1, initial_epoch=e, batch_size=batch_size,
                    callbacks=[FractionalEpoch(steps)], rng=e, verbose=0)
        print(f"epoch {e + 1}/{epochs}: {(time.perf_counter() - t0) / 60:.1f} min, train loss {h.history['loss'][-1]:.4f}, "
              f"accuracy {h.history['accuracy'][-1]:.4f}", flush=True)
    return net, time.perf_counter() - t0

# %%
#| cifar10
(x_train, y_train), (x_test, y_test) = load('cifar10', 'train'), load('cifar10', 'test')
x_train, x_test = x_train.astype(np.float32) / 255, x_test.astype(np.float32) / 255
net, t_train = train_feature_net(x_train[:512], y_train[:512], 1, (4, 8, 8, 8, 8))
QUICK = True

# %%
#| slow
#| cifar10
net, t_train = train_feature_net(x_train, y_train, 4, (16, 32, 64, 128, 128))
QUICK = False

# %%
#| cifar10
test_acc = net.evaluate(x_test, y_test)[1]
print(f"feature net: {net.count_params():,} parameters, test accuracy {test_acc:.4f} after {t_train / 60:.1f} min "
      f"of training")

# %% [markdown]
# The net reached 80.87 % test accuracy after four epochs (6.6 minutes):
# a fair CIFAR-10 classifier, short of chapter 08a's `vgg_bn` (87.04 %
# after 8 epochs). The quick run's line above it (11 % after one epoch on
# 512 images, with a much smaller net) only shows that the code runs.
#
# ## 4. Painting
#
# The images: two photographs and three paintings (`../shared/images/`, with
# their licences), loaded by `data.load_image` with the long side at 256
# pixels (the book uses 512). In quick mode they are 64 pixels wide and each
# run takes a few steps.
#
# **The book's weights in our net's units.** First, one run of the book's
# method exactly (its weights applied to our features as they are, no total
# variation) for 22 steps, the book's first figure: how far do the pixels
# move?

# %%
#| images
#| cifar10
from dl_from_scratch.data import load_image
CONTENTS, STYLES = ('chelsea_cat', 'coffee'), ('starry_night', 'great_wave', 'monet_cliff_walk_pourville')
SIZE, STEPS, SNAPS, LONG = (64, 6, (2, 4, 6), 6) if QUICK else (256, 123, (22, 123), 324)
photos = {n: load_image(n, SIZE) for n in CONTENTS}
paintings = {n: load_image(n, SIZE) for n in STYLES}
print({n: im.shape for n, im in {**photos, **paintings}.items()})

cat, starry = photos['chelsea_cat'], paintings['starry_night']
raw, h_raw, _, _ = style_transfer(net, cat, starry, SNAPS[0], units=None, tv_weight=0.0, progress=False)
print(f"book's weights on our raw features, {SNAPS[0]} steps: style loss {h_raw['style'][0]:.3g} -> {h_raw['style'][-1]:.3g}, "
      f"content loss {h_raw['content'][-1]:.3g}, largest pixel change {np.abs(raw - cat).max():.2g}")

# %% [markdown]
# Nothing visible moves. In the net's own units the style loss is about
# $10^{-3}$ (printed above) and stays there, and no pixel changes by more
# than 0.0029, less than one of the image's 256 grey levels: the gradients
# are so small that Adam's $\epsilon_t$ (0.68 to 3.16 over these steps)
# swallows them. The book's weights, $\epsilon$ and
# step size presuppose VGG19's feature sizes.
#
# The units of the derivation: the factors $s_l$ that bring our features on
# the cat photograph to the book's VGG19 statistics on its photograph.

# %%
#| images
#| cifar10
fe_cat = feature_extractor(net, STYLE_LAYERS + CONTENT_LAYERS, cat.shape)
F_cat = fe_cat(cat[None], training=False)
scales = feature_scales(F_cat, BOOK_VGG19_UNITS['gram_means'], BOOK_VGG19_UNITS['feature_means'])
print(f"{'layer':14}{'our mean':>12}{'VGG19 (book)':>14}{'s_l':>9}")
for name, F, s, ref in zip(STYLE_LAYERS + CONTENT_LAYERS, F_cat, scales,
                           BOOK_VGG19_UNITS['gram_means'] + BOOK_VGG19_UNITS['feature_means']):
    ours = gram_matrix(F).mean() if name in STYLE_LAYERS else F.mean()
    print(f"{name:14}{ours:12.4g}{ref:14.7g}{s:9.1f}   ({'Gram matrix' if name in STYLE_LAYERS else 'features'})")

# %% [markdown]
# Our Gram matrices have means of 0.0955 to 0.2376, BatchNorm's doing;
# VGG19's, in the book's table, 436 to 182,728. The factors run from 47.7
# (`block1_conv1`) to 1383.3 (`block4_conv1`). Since the style term grows with $s^4$, the
# layer with the largest Gram matrices in VGG19, `block4_conv1`, also
# weighs most here, as it did in the book.
#
# **Six pairs.** Each photograph in the manner of each painting, with the
# book's weights in those units, the book's Adam, and the total-variation
# term with the tutorial's weight 30; snapshots after 22 and 123 steps, the
# book's second and third figures being after 123 and 324. The cat and
# *Starry Night* go on to 324 steps, the book's total.

# %%
#| images
#| cifar10
runs, t0 = {}, time.perf_counter()
for c in CONTENTS:
    for s in STYLES:
        steps = LONG if (c, s) == ('chelsea_cat', 'starry_night') else STEPS
        t = time.perf_counter()
        out, hist, shots, _ = style_transfer(net, photos[c], paintings[s], steps,
                                             snapshots=SNAPS + ((LONG,) if steps == LONG else ()), progress=False)
        runs[c, s] = dict(image=out, history=hist, shots=shots, seconds=time.perf_counter() - t)
        print(f"{c:12} x {s:27}: {steps} steps in {runs[c, s]['seconds']:5.1f} s; loss {hist['loss'][0]:.3g} -> "
              f"{hist['loss'][-1]:.3g} (style {hist['style'][-1]:.3g}, content {hist['content'][-1]:.3g}, "
              f"tv {hist['tv'][-1]:.3g})", flush=True)
t_paint = time.perf_counter() - t0
print(f"{len(runs)} runs in {t_paint / 60:.1f} min; {sum(len(r['history']['loss']) for r in runs.values())} steps in all")

# %%
#| images
#| cifar10
fig, axs = plt.subplots(3, 4, figsize=(14, 8.5))
axs[0, 0].axis('off')
for j, s in enumerate(STYLES, 1):
    axs[0, j].imshow(paintings[s]); axs[0, j].set_title(s.replace('_', ' '), fontsize=9)
for i, c in enumerate(CONTENTS, 1):
    axs[i, 0].imshow(photos[c]); axs[i, 0].set_title(c.replace('_', ' '), fontsize=9)
    for j, s in enumerate(STYLES, 1):
        axs[i, j].imshow(runs[c, s]['shots'][SNAPS[-1]]); axs[i, j].set_title(f'after {SNAPS[-1]} steps', fontsize=9)
for a in axs.ravel(): a.set_xticks([]); a.set_yticks([])
fig.suptitle(f'top: the paintings; left: the photographs; each photograph in the manner of each painting ({SIZE} px)')
plt.tight_layout(); plt.show()

# %% [markdown]
# **What the images show.** The photographs survive: the cat's eyes, nose
# and whiskers and the cup, saucer and spoon are where they were, and each
# picture takes something of its painting's colours, most visibly in the
# corners and the table of the coffee picture (dark green and blue from
# *Starry Night*, paler from the *Great Wave*, yellow-green from Monet). But
# what arrives is not brushwork. It is a dense, high-frequency speckle of
# saturated red, green and blue, strongest in the smooth regions (the
# cat's fur, the wooden table), with no trace of van Gogh's swirls, of the
# Wave's curling crests or of Monet's dabs. The three paintings give three
# similar-looking results, differing mostly in the overall cast. Section 5
# says why.
#
# The cat and *Starry Night* after the book's three figures: 22, 123 and
# 324 steps (the book labels them 10, 100 and 200).

# %%
#| images
#| cifar10
r = runs['chelsea_cat', 'starry_night']
fig, axs = plt.subplots(1, 4, figsize=(15, 3.2))
for a, (title, im) in zip(axs, [('photograph', cat)] + [(f'after {t} steps', r['shots'][t]) for t in SNAPS + (LONG,)]):
    a.imshow(im); a.set_title(title); a.axis('off')
plt.tight_layout(); plt.show()

# %% [markdown]
# After 22 steps the colour shift and a fine grain have appeared; by 123
# steps the speckle covers the picture, and from 123 to 324 steps it only
# grows denser. The book saw the style grow "while the content is kept, with
# a little noise"; here the noise is the main thing that grows.
#
# **The loss curves.** Style, content and total variation along the runs
# (log scale). The content loss starts at zero, since the image starts as the
# photograph.

# %%
#| images
#| cifar10
fig, axs = plt.subplots(1, 3, figsize=(15, 3.8), sharex=True)
for (c, s), run in runs.items():
    for a, k in zip(axs, ('style', 'content', 'tv')):
        a.plot(np.arange(1, len(run['history'][k]) + 1), run['history'][k], label=f"{c} x {s.split('_')[0]}")
for a, k in zip(axs, ('style loss', 'content loss', 'total variation x 30')):
    a.set_yscale('log'); a.set_xlabel('step'); a.set_title(k)
axs[0].legend(fontsize=7); plt.tight_layout(); plt.show()
h = runs['chelsea_cat', 'starry_night']['history']
print(f"cat x starry night: loss after {min(11, len(h['loss']))} steps {h['loss'][min(11, len(h['loss'])) - 1]:.4g} "
      f"(the book's test, on its own images and VGG19: 27180544)")

# %% [markdown]
# The style loss falls steadily: from 9.73e+07 to 3.83e+08 at the first
# step (when the loss is all style) to 3.67e+06 to 1.22e+07 after 123 steps
# in the five shorter runs (for the cat and *Starry Night* the total loss goes
# from 3.83e+08 to 1.18e+07 in 324 steps, its style part ending at
# 3.15e+06), and it is still falling at the end: more steps would lower it
# further. The content loss starts at zero (the image is the photograph),
# jumps within a few steps as the style gradient moves the pixels, and then
# slowly falls, as the content term pulls back. The total variation,
# weighted, rises fast and levels off. After the test's 11 steps our loss is
# 5.371e+07 against the book's 27,180,544: the same order of magnitude, as
# the units intend, though the images and the net differ, so nothing more
# is to be read from it.
#
# **What the total variation does, and what the training does.** Two more
# runs of the cat and *Starry Night*, 123 steps each: without the
# total-variation term, and with the same architecture untrained (random
# He-normal weights, BatchNorm statistics at their initial 0 and 1), in
# units calibrated the same way. The total variation of each image says how
# much high-frequency change it holds (the photograph's is the reference).

# %%
#| images
#| cifar10
no_tv, h_no_tv, _, _ = style_transfer(net, cat, starry, STEPS, tv_weight=0.0, progress=False)
untrained = vgg_bn_net(widths=tuple(l.filters for l in net.layers if isinstance(l, Conv2D))[::2], rng=1)
rand, h_rand, _, _ = style_transfer(untrained, cat, starry, STEPS, progress=False)
with_tv = runs['chelsea_cat', 'starry_night']['shots'][SNAPS[-1]]
fig, axs = plt.subplots(1, 3, figsize=(13, 3.4))
for a, (title, im) in zip(axs, [('trained net, total variation 30', with_tv), ('trained net, no total variation', no_tv),
                                ('untrained net, total variation 30', rand)]):
    a.imshow(im); a.set_title(f'{title}\n(V = {total_variation(im[None])[0]:.0f})', fontsize=9); a.axis('off')
plt.tight_layout(); plt.show()
print(f"total variation V: photograph {total_variation(cat[None])[0]:.0f}, painting {total_variation(starry[None])[0]:.0f} "
      f"(per pixel: {total_variation(cat[None])[0] / cat[..., 0].size:.3f} and {total_variation(starry[None])[0] / starry[..., 0].size:.3f})")
print(f"style loss after {STEPS} steps: trained with TV {runs['chelsea_cat', 'starry_night']['history']['style'][STEPS - 1]:.3g}, "
      f"without TV {h_no_tv['style'][-1]:.3g}, untrained net {h_rand['style'][-1]:.3g} (its own units)")

# %% [markdown]
# **Total variation at weight 30 does almost nothing here.** The image
# made without it has $V$ = 76,998 against 76,324 with it, under 1 % more,
# and the two look alike; both are about eleven times as rough as the
# photograph ($V$ = 7,056) and four times as rough as the painting
# (18,210).
# The style loss after 123 steps is about the same with and without it
# (8.73e+06 and 8.86e+06). Weight 30 was set for VGG19's gradients; ours, in VGG19's
# units, are dominated by the style term's high-frequency gradient, and a
# term whose gradient is at most $4 \times 30 = 120$ per pixel does not
# hold it back. A larger weight would trade style for smoothness; this run
# does not measure how much.
#
# **The untrained net** gives a different picture: a smoother, cyan-tinted
# cat with a fine, even grain ($V$ = 41,189), closer to *Starry Night*'s
# palette, without the red and green speckle. Its style loss is in its own
# units and not comparable. So the speckle is not in the method, nor in
# the architecture: it comes from what four epochs of CIFAR-10 training
# put into the features.
#
# **512 pixels.** The coffee cup and the *Great Wave* at the book's size
# (long side 512; the coffee photograph is 512 pixels wide as stored), for
# 123 steps.

# %%
#| slow
#| images
#| cifar10
coffee512, wave512 = load_image('coffee', 512), load_image('great_wave', 512)
t = time.perf_counter()
big, h_big, _, _ = style_transfer(net, coffee512, wave512, 123, progress=False)
t_big = time.perf_counter() - t
print(f"512 px: {coffee512.shape}, 123 steps in {t_big:.1f} s; loss {h_big['loss'][0]:.3g} -> {h_big['loss'][-1]:.3g}")
fig, axs = plt.subplots(1, 2, figsize=(14, 4.8))
axs[0].imshow(runs['coffee', 'great_wave']['image']); axs[0].set_title(f'{SIZE} px, {STEPS} steps')
axs[1].imshow(big); axs[1].set_title(f'512 px, 123 steps ({t_big:.0f} s)')
for a in axs: a.axis('off')
plt.tight_layout(); plt.show()
print(f"chapter so far: {(time.perf_counter() - T_START) / 60:.1f} min")

# %% [markdown]
# At 512 pixels the 123 steps took 34.5 s, and the loss fell from 1.3e+08
# to 1.31e+07, as at 256. The picture has four times the pixels, and the
# receptive fields of the table in section 2 cover half as much of it: the
# speckle has the same size in pixels, so it is finer against the cup, and
# the saucer, the spoon and the grain of the table read more clearly than
# at 256. Still there are no strokes of the *Great Wave* in it.
#
# ## 5. What features learnt from 32×32 images can and cannot carry over
#
# * **Colour carries over.** The first layers see 3 to 10 pixels (the table
#   in section 2), the same patch at any image size, and their Gram
#   matrices are statistics of local colour and contrast. That is the part
#   of each painting that reached the photographs: their palettes.
# * **Strokes do not.** A brush stroke of *Starry Night* at 256 pixels spans
#   tens of pixels; only `block4` and `block5` features (52 to 140 pixels)
#   see one whole. Those are the features that CIFAR training shaped least
#   for such inputs: in training, `block4` saw maps of 4×4 positions and
#   `block5` of 2×2, mostly border and zero padding, and their receptive
#   fields were larger than the 32-pixel images themselves. On a 256-pixel
#   picture they see 21×32 and 10×16 maps of the inside of an image, which
#   they never met. VGG19 was trained on 224-pixel ImageNet crops, the scale
#   at which the book uses it.
# * **A briefly trained small net is fragile.** The red-green speckle is
#   what the gradient of a classifier with respect to its pixels looks like
#   when the classifier reacts to faint high-frequency patterns: chapter
#   05c's adversarial examples are made of the same stuff. Matching Gram
#   statistics through such features is cheapest by painting those
#   patterns, and the style loss falls, as the curves show, without the
#   picture looking like the painting. VGG19 is unusually good for style
#   transfer in this respect; Nakano (2019) found that other ImageNet
#   classifiers (ResNets) give noisy results too, and that adversarially
#   robust training of the same nets removes most of the noise. The
#   untrained net above, whose features are random and smooth, makes no
#   speckle, but it knows nothing of images either.
# * **Content is kept by the start.** The generated image starts as the
#   photograph and moves by small steps; the content layer, trained to tell
#   ten kinds of 32-pixel objects, sees a cat's face at 256 pixels as a
#   pattern of parts it never learnt to name, and the content loss mostly
#   holds the picture near where it began.
#
# What would make it better, in order of cost: a larger total-variation
# weight (it trades style for smoothness); the style layers restricted to
# the first blocks, whose features do see at the right scale; the
# photographs and paintings at 64 pixels, where CIFAR's scale fits; more
# training epochs than these four, wider layers and adversarially robust
# training; and a net trained on larger images, which is what VGG19 is. None of these was
# run here.
#
# ## 6. The book beside this chapter
#
# | | the book (§3.9) | this chapter |
# |---|---|---|
# | feature net | VGG19, ImageNet weights (downloaded) | `vgg_bn_net`: 5 blocks of 2 convolutions with BatchNorm, widths 16–128, 592,186 parameters, trained here on CIFAR-10 for 4 epochs (6.6 min; test accuracy 80.87 %) |
# | style layers; content layer | `block1_conv1` … `block5_conv1`; `block5_conv2` | the same names |
# | receptive field of `block5_conv2` | 188 pixels (of 512) | 140 pixels (of 256) |
# | image size | long side 512 | long side 256; one pair at 512 (123 steps, 34.5 s) |
# | Gram matrix | $F^\top F/(HW)$ | the same, its gradient derived and checked (relative error 3.8e-11) |
# | style weight | $10^{-2}$, shared by 5 layers | the same |
# | content weight | $10^4$ | the same |
# | feature units | VGG19 on pixels ×255: Gram means 436.3 to 182,728.3, content mean 16.58 | ours scaled to those (factors 47.7 to 1383.3); in our own units the book's weights move no pixel by more than 0.0029 in 22 steps |
# | optimiser | Keras's Adam, $\eta$ 0.02, $\beta_1$ 0.99, $\hat\epsilon$ 0.1 | `KerasAdam`, the same rule; the package's `Adam` with $\epsilon_t$ = 3.16 at step 1 and 0.19 at step 324 |
# | clipping | to $[0, 1]$ after each step | the same |
# | total variation | mentioned, not used | `tf.image.total_variation` with the tutorial's weight 30, gradient derived and checked (7.3e-11); lowers $V$ by under 1 % here |
# | the figures' steps | "10, 100, 200 iterations" | 22, 123, 324 steps: the calls are cumulative and each runs one more step than it says |
# | loss after the test's 11 steps | 27,180,544 | 5.371e+07 (other images, other net) |
# | what the images show | the style grows, the content is kept, a little noise | the palette moves, the content is kept, strong high-frequency noise, no brush strokes |
#
# ## References
#
# * The build-your-own book, §3.9 (neural style transfer with TensorFlow and VGG19).
# * The TensorFlow tutorial "Neural style transfer" (the book's model; `tf.image.total_variation` with weight 30).
# * L. A. Gatys, A. S. Ecker, M. Bethge, "A neural algorithm of artistic style", 2015, and "Image style transfer using convolutional neural networks", CVPR 2016.
# * Y. Li, N. Wang, J. Liu, X. Hou, "Demystifying neural style transfer", IJCAI 2017 (matching Gram matrices as matching feature distributions).
# * A. Mahendran, A. Vedaldi, "Understanding deep image representations by inverting them", CVPR 2015 (the total-variation regulariser).
# * R. Nakano, "A discussion of 'Adversarial examples are not bugs, they are features': adversarially robust neural style transfer", Distill, 2019.
# * D. P. Kingma, J. Ba, "Adam: a method for stochastic optimization", ICLR 2015 ($\hat\epsilon$, end of §2).
# * K. Simonyan, A. Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR 2015 (VGG19).
# * A. Krizhevsky, *Learning multiple layers of features from tiny images*, 2009 (CIFAR-10).
# * The deep-learning course notes (source 003, §23): the Gram matrix and the style cost with its $1/(2 n_H n_W n_C)^2$ normalisation.
