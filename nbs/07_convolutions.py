# %% [markdown]
# # Convolutions
#
# > The convolution kernels: naive reference loops, im2col and col2im (dilated too) with the sliced im2col products of a convolution layer, max and average pooling, and depthwise convolution, each as a NumPy reference, Numba CPU and Numba CUDA code proven equal; and a direct CPU kernel for thin layers.
#
# ## Purpose
#
# A dense layer connects every input to every output. An image of
# $32\times32\times3$ pixels has 3072 inputs, and a dense layer of 1000 units
# on it holds three million weights, most of which learn the same thing: a
# detector of an edge or a texture is as useful in the top-left corner as in
# the bottom-right. A **convolutional layer** builds that prior in. It slides a
# small filter (say $3\times3\times3$, 27 weights) over the image and
# computes the same weighted sum at every position. Its two properties are
# *parameter sharing* (one filter everywhere) and *sparse connectivity*
# (each output sees a small window).
#
# This chapter
#
# 1. derives the forward and backward pass of a 2-D convolution with stride
#    and padding, and of max, average and L2 pooling;
# 2. writes them as naive loops, the readable reference, and gradient-checks
#    those against central differences on the CS231n fixture;
# 3. turns convolution into one matrix product with **im2col** (and its
#    adjoint **col2im**), and writes those and the pooling loops three times:
#    a NumPy reference, a Numba CPU kernel and a Numba CUDA kernel, tested
#    equal to each other;
# 4. for thin layers (few channels and filters, where im2col's copies cost more
#    than they save) writes a **direct** stride-1 convolution on the CPU, by
#    shifted image planes, forward and backward;
# 5. extends im2col to **dilated** kernels, and writes the **depthwise**
#    convolution (forward, dW, dX), which no matrix product helps, three times;
# 6. (in the second half, [07a: convolution layers](07a_conv_layers.ipynb))
#    builds the layers `Conv2D`, `DepthwiseConv2D`, `Conv2DTranspose`, `MaxPool2D`, `AvgPool2D` and `L2Pool2D` on them, uses
#    convolution as image processing (edge filters on a photo), and times the
#    implementations against each other and against PyTorch.
#
# This notebook exports `dl_from_scratch.kernels.conv` (the kernels and the
# naive reference); 07a exports `dl_from_scratch.conv` (the layers).
#
# Images are NHWC throughout: `x[n, h, w, c]`, as TFDS and Keras give them.
# Kernels are `(KH, KW, C, F)`, Keras's layout.

# %%
#| default_exp kernels.conv

# %%
#| hide
# No GPU here: run the CUDA kernels in Numba's simulator. This must happen before numba.cuda is imported.
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()

# %%
#| export
from __future__ import annotations
import math
import numpy as np
import numba
from numba import njit, prange
from dl_from_scratch.core import (check_array, get_array_module, resolve_backend, KernelArrays, cuda_kernels, launch,
                                  per_element, device_twin)

# %%
#| hide
import time
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import precision

# %% [markdown]
# ## Derivation
#
# ### Cross-correlation and convolution
#
# For an image $X$ and a kernel $K$ of size $f\times f$, **cross-correlation**
# is
#
# $$ (X \star K)_{ij} = \sum_{m=0}^{f-1}\sum_{l=0}^{f-1} X_{i+m,\,j+l}\,K_{m l}, $$
#
# and **convolution**, in the sense of signal processing, flips the kernel:
#
# $$ (X * K)_{ij} = \sum_{m}\sum_{l} X_{i-m,\,j-l}\,K_{m l} = (X \star \operatorname{rot180}(K))_{ij}\ \text{(up to a shift of the index)}. $$
#
# Convolution is commutative and associative; cross-correlation is not. A
# deep-learning "convolution" layer computes the cross-correlation: the kernel
# is learned, so whether it is stored flipped makes no difference to what the
# layer can represent, and skipping the flip saves an index computation.
# (Ketkar's chapter 5 gives both definitions and says that libraries use the
# names interchangeably; so do we, from here on.)
#
# ### Stride, padding and the output size
#
# With $p$ rows of zeros added on each side and the window moved $s$ pixels
# at a time, an input of size $n$ gives
#
# $$ o = \left\lfloor \frac{n + 2p - f}{s} \right\rfloor + 1 $$
#
# outputs along that axis. (The course notes print this with a ceiling and an
# extra $-1$; the floor form above is the right one, for both axes.)
# *Valid* convolution uses $p=0$. *Same* convolution chooses $p$ so that
# $o = \lceil n/s\rceil$; for $s=1$ and odd $f$ that is $p=(f-1)/2$. For an
# even $f$ or $s>1$ the total padding $\max((o-1)s + f - n, 0)$ can be odd,
# and then (as TensorFlow and Keras do) the extra row goes at the bottom and
# the extra column at the right. So our kernels take four paddings
# $(p_t, p_b, p_l, p_r)$.
#
# ### Many channels, many filters
#
# An NHWC input $X$ of $C$ channels and a bank of $F$ filters $W$ of shape
# $(f_h, f_w, C, F)$ with biases $b_k$ give
#
# $$ Y_{n,i,j,k} = b_k + \sum_{m=0}^{f_h-1}\sum_{l=0}^{f_w-1}\sum_{c=0}^{C-1}
#    \tilde X_{n,\,s i+m,\,s j+l,\,c}\; W_{m,l,c,k}, $$
#
# where $\tilde X$ is the zero-padded input. Each filter sums over *all* input
# channels (Ketkar's figure 5-10: convolve each channel, then add), and the
# output has one channel per filter.
#
# ### Backward pass
#
# Write $\delta_{n,i,j,k} = \partial L/\partial Y_{n,i,j,k}$ for the gradient
# that arrives from above. $Y$ is linear in $b$, $W$ and $\tilde X$, so the
# chain rule only has to collect, for each parameter, the outputs it touched:
#
# $$ \frac{\partial L}{\partial b_k} = \sum_{n,i,j} \delta_{n,i,j,k}, \qquad
#    \frac{\partial L}{\partial W_{m,l,c,k}} = \sum_{n,i,j} \delta_{n,i,j,k}\,
#        \tilde X_{n,\,s i+m,\,s j+l,\,c}, $$
#
# $$ \frac{\partial L}{\partial \tilde X_{n,h,w,c}} = \sum_{k}\ \sum_{\substack{i,m:\ s i + m = h\\ j,l:\ s j + l = w}}
#     \delta_{n,i,j,k}\, W_{m,l,c,k}, $$
#
# and $\partial L/\partial X$ is $\partial L/\partial \tilde X$ with the
# padding cut off. In words: $dW$ is the *valid cross-correlation of the input
# with the output gradient* (for $s=1$: $dW_{\cdot,\cdot,c,k} = X_{\cdot,\cdot,c} \star \delta_{\cdot,\cdot,k}$),
# and $dX$, for $s=1$, is $\sum_{i,m:\ i+m=h}\delta_{h-m}W_m$, the
# *full convolution of $\delta$ with $W$*, which is the same as the full
# cross-correlation of the zero-padded $\delta$ with $\operatorname{rot180}(W)$.
# For $s>1$ the same formulas hold with zeros inserted between the entries of
# $\delta$ ("dilated" by $s$).
#
# **The worked example.** Take a $3\times3$ input $x_1,\dots,x_9$ (row by row),
# a $2\times2$ kernel $w_1,\dots,w_4$, stride 1, no padding, so that
# $o_1 = x_1w_1 + x_2w_2 + x_4w_3 + x_5w_4$, $o_2 = x_2w_1 + x_3w_2 + x_5w_3 + x_6w_4$,
# $o_3 = x_4w_1 + x_5w_2 + x_7w_3 + x_8w_4$, $o_4 = x_5w_1 + x_6w_2 + x_8w_3 + x_9w_4$.
# With $\delta_k = \partial L/\partial o_k$, differentiating each $o_k$ gives
#
# | | correct $\partial L/\partial x$ | printed in *Hands-On Deep Learning Algorithms*, ch. 6 |
# |---|---|---|
# | $x_1$ | $\delta_1w_1$ | $\delta_1w_1$ |
# | $x_2$ | $\delta_1w_2+\delta_2w_1$ | $\delta_1w_1+\delta_2w_2$ ✗ |
# | $x_3$ | $\delta_2w_2$ | $\delta_3w_3$ ✗ |
# | $x_4$ | $\delta_1w_3+\delta_3w_1$ | $\delta_1w_1+\delta_4w_4$ ✗ |
# | $x_5$ | $\delta_1w_4+\delta_2w_3+\delta_3w_2+\delta_4w_1$ | $\delta_1w_1+\delta_2w_2+\delta_3w_3+\delta_4w_4$ ✗ |
# | $x_6$ | $\delta_2w_4+\delta_4w_2$ | $\delta_2w_2+\delta_4w_4$ ✗ |
# | $x_7$ | $\delta_3w_3$ | $\delta_3w_3$ |
# | $x_8$ | $\delta_3w_4+\delta_4w_3$ | $\delta_3w_3+\delta_4w_4$ ✗ |
# | $x_9$ | $\delta_4w_4$ | $\delta_4w_4$ |
#
# *Hands-On* states the principle right ("a full convolution with the
# 180°-rotated filter") but its element list is wrong for six of the nine
# inputs: it pairs every $\delta_k$ with $w_k$, as if $x$ and $o$ were aligned.
# The filter gradients it prints ($\partial L/\partial w_1 = \delta_1x_1 + \delta_2x_2 + \delta_3x_4 + \delta_4x_5$, ...)
# are right. The mini-project report derives the same result with index typos
# ($x_{i+k+1}$ for $x_{i+k-1}$) and calls the rotated kernel "$W^\top$", which
# it is not: a transpose swaps $w_{12}$ and $w_{21}$; a 180° rotation maps
# $w_{11}\leftrightarrow w_{22}$ and $w_{12}\leftrightarrow w_{21}$. The code
# cell after the naive reference checks the correct column and shows the printed
# one fails.
#
# ### Pooling
#
# A pooling layer replaces each $f\times f$ window of each channel by one
# number, with no weights:
#
# * **max**: $y = \max_{(m,l)} x_{m l}$; $\partial y/\partial x_{ml} = 1$ for the
#   (first) maximal entry and 0 elsewhere, so backward routes $\delta$ through
#   a *mask* of the winners (the forward pass records the winner's index);
# * **average**: $y = \frac1{|w|}\sum x_{ml}$; each entry gets $\delta/|w|$.
#   With "same" padding we average over the entries inside the image only, as
#   Keras does, so $|w|$ is the number of real entries in the window;
# * **L2**: $y = \sqrt{\sum x_{ml}^2}$; $\partial y/\partial x_{ml} = x_{ml}/y$
#   (where $y = 0$ we pass no gradient). Few nets use it, so it has no kernel
#   here; the layer `L2Pool2D` of 07a computes it with NumPy over the window's taps.
#
# When windows overlap (stride < size) an input collects the gradient of every
# window it belongs to. The output size is the formula above with the
# pooling padding. (The build-your-own book's worked average-pool example
# prints $[[4, 4.5], [3.25, 3.25]]$; the bottom-left value is
# $(8+2+1+3)/4 = 3.5$, which we check below.)

# %% [markdown]
# ## Geometry
#
# Shared by the naive reference and the three fast implementations: the output size, the padding of `'valid'`,
# `'same'` or an explicit number, and the checks that turn a bad geometry into
# a `ValueError` that names both shapes.

# %%
#| export
def _pair(v, name='value'):
    "An int or a pair of ints as a tuple (a, b) of positive ints."
    t = (int(v), int(v)) if np.isscalar(v) else tuple(int(e) for e in v)
    if len(t) != 2 or min(t) < 1:
        raise ValueError(f"{name} must be a positive int or a pair of positive ints, got {v!r}")
    return t

def _pad4(pad):
    "Padding as (top, bottom, left, right) from an int, a pair (ph, pw) or a 4-tuple."
    t = (int(pad),) * 4 if np.isscalar(pad) else tuple(int(e) for e in pad)
    if len(t) == 2: t = (t[0], t[0], t[1], t[1])
    if len(t) != 4 or min(t) < 0:
        raise ValueError(f"padding must be a non-negative int, (ph, pw) or (top, bottom, left, right), got {pad!r}")
    return t

def conv_output_size(n: int, f: int, stride: int = 1, pad_total: int = 0) -> int:
    "Outputs along one axis: floor((n + pad_total - f) / stride) + 1 (pad_total = p_before + p_after = 2p)."
    return (n + pad_total - f) // stride + 1

def resolve_padding(padding, input_hw, kernel_hw, strides=1):
    """Explicit padding (top, bottom, left, right) for `padding` = 'valid', 'same' (TensorFlow's rule:
    output ceil(n/s), the odd extra row/column at the bottom/right), an int, (ph, pw) or a 4-tuple."""
    if isinstance(padding, str):
        if padding == 'valid': return (0, 0, 0, 0)
        if padding != 'same': raise ValueError(f"padding must be 'valid', 'same' or ints, got {padding!r}")
        out = []
        for n, f, s in zip(input_hw, _pair(kernel_hw, 'kernel_size'), _pair(strides, 'strides')):
            total = max((-(-n // s) - 1) * s + f - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    return _pad4(padding)

def _geometry(x_shape, kh, kw, stride, pad, who):
    "Check the window fits and return (sh, sw, pt, pb, pl, pr, OH, OW)."
    sh, sw = _pair(stride, 'stride')
    N, H, W, C = x_shape
    pt, pb, pl, pr = resolve_padding(pad, (H, W), (kh, kw), (sh, sw))
    Hp, Wp = H + pt + pb, W + pl + pr
    if kh > Hp or kw > Wp:
        raise ValueError(f"{who}: the window {kh}x{kw} is larger than the padded input {Hp}x{Wp} "
                         f"(input shape {tuple(x_shape)}, padding {(pt, pb, pl, pr)}, kernel shape {(kh, kw)})")
    return sh, sw, pt, pb, pl, pr, conv_output_size(H, kh, sh, pt + pb), conv_output_size(W, kw, sw, pl + pr)

# %%
test_eq(conv_output_size(32, 5, 1, 4), 32); test_eq(conv_output_size(7, 3, 2, 0), 3); test_eq(conv_output_size(28, 4, 2, 2), 14)
test_eq(resolve_padding('same', (6, 6), 3), (1, 1, 1, 1))
test_eq(resolve_padding('same', (6, 6), 4), (1, 2, 1, 2))           # odd total: extra row at the bottom
test_eq(resolve_padding('same', (7, 8), 3, 2), (1, 1, 0, 1))        # ceil(7/2)=4 rows, ceil(8/2)=4 cols
test_eq(resolve_padding('valid', (6, 6), 3), (0, 0, 0, 0)); test_eq(resolve_padding(2, (6, 6), 3), (2, 2, 2, 2))
test_fail(lambda: _geometry((2, 4, 4, 3), 7, 7, 1, (1, 1, 1, 1), 'im2col'), contains='7x7 is larger than the padded input 6x6')
test_fail(lambda: resolve_padding('full', (6, 6), 3), contains="'valid', 'same'")

# %% [markdown]
# ## The naive reference
#
# Loops over the batch and the output positions, with the sum over the window
# (and over all filters at once) done by `np.tensordot`. It is slow, but
# every line is a formula from above, so it is the reference the fast
# versions are tested against. Padding is `int` (the same on all sides) or
# `(top, bottom, left, right)`.

# %%
#| export
def _naive_pad(x, pad):
    pt, pb, pl, pr = _pad4(pad)
    return np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0))), (pt, pb, pl, pr)

def conv2d_naive_forward(x, w, b=None, stride=1, pad=0):
    """Naive 2-D cross-correlation. x (N, H, W, C), w (KH, KW, C, F), b (F,) or None -> y (N, OH, OW, F).
    `stride` int or (sh, sw); `pad` int or (top, bottom, left, right)."""
    sh, sw = _pair(stride, 'stride')
    xp, (pt, pb, pl, pr) = _naive_pad(x, pad)
    N, Hp, Wp, C = xp.shape
    KH, KW, _, F = w.shape
    OH, OW = (Hp - KH) // sh + 1, (Wp - KW) // sw + 1
    y = np.zeros((N, OH, OW, F), np.result_type(x, w))
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                window = xp[n, i*sh:i*sh + KH, j*sw:j*sw + KW, :]        # (KH, KW, C)
                y[n, i, j] = np.tensordot(window, w, axes=3)              # sum over m, l, c for every k
    return y if b is None else y + b

def conv2d_naive_backward(dy, x, w, stride=1, pad=0):
    """Gradients of `conv2d_naive_forward`: dy (N, OH, OW, F) -> (dx (N, H, W, C), dw (KH, KW, C, F), db (F,))."""
    sh, sw = _pair(stride, 'stride')
    xp, (pt, pb, pl, pr) = _naive_pad(x, pad)
    KH, KW, _, F = w.shape
    N, OH, OW, _ = dy.shape
    dxp, dw = np.zeros_like(xp, dtype=dy.dtype), np.zeros_like(w, dtype=dy.dtype)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                d = dy[n, i, j]                                           # (F,)
                dw += xp[n, i*sh:i*sh + KH, j*sw:j*sw + KW, :, None] * d  # dW[m,l,c,k] += X~[si+m, sj+l, c] delta_k
                dxp[n, i*sh:i*sh + KH, j*sw:j*sw + KW, :] += w @ d        # dX~[si+m, sj+l, c] += W[m,l,c,k] delta_k
    H, W = x.shape[1:3]
    return dxp[:, pt:pt + H, pl:pl + W, :], dw, dy.sum(axis=(0, 1, 2))

def pool2d_naive_forward(x, pool=2, stride=None, mode='max'):
    """Naive max/average pooling without padding. x (N, H, W, C) -> y (N, OH, OW, C)."""
    kh, kw = _pair(pool, 'pool')
    sh, sw = _pair(kh if stride is None else stride, 'stride')
    N, H, W, C = x.shape
    OH, OW = (H - kh) // sh + 1, (W - kw) // sw + 1
    y = np.zeros((N, OH, OW, C), x.dtype)
    reduce = {'max': np.max, 'avg': np.mean}[mode]
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                y[n, i, j] = reduce(x[n, i*sh:i*sh + kh, j*sw:j*sw + kw, :], axis=(0, 1))
    return y

def pool2d_naive_backward(dy, x, pool=2, stride=None, mode='max'):
    """Gradient of `pool2d_naive_forward`: dy (N, OH, OW, C) -> dx (N, H, W, C)."""
    kh, kw = _pair(pool, 'pool')
    sh, sw = _pair(kh if stride is None else stride, 'stride')
    N, OH, OW, C = dy.shape
    dx = np.zeros_like(x, dtype=dy.dtype)
    for n in range(N):
        for i in range(OH):
            for j in range(OW):
                for c in range(C):
                    win = x[n, i*sh:i*sh + kh, j*sw:j*sw + kw, c]
                    if mode == 'max':   # the mask: only the (first) winner gets the gradient
                        m, l = np.unravel_index(np.argmax(win), win.shape)
                        dx[n, i*sh + m, j*sw + l, c] += dy[n, i, j, c]
                    else:
                        dx[n, i*sh:i*sh + kh, j*sw:j*sw + kw, c] += dy[n, i, j, c] / (kh * kw)
    return dx

# %% [markdown]
# First the worked example: the $3\times3$ input and $2\times2$ kernel of the
# derivation, with random numbers for $x$, $w$ and $\delta$. The naive
# backward pass must equal the correct column of the table, and differ from
# the printed one.

# %%
r = np.random.default_rng(0)
X, Wk, D = r.normal(size=(3, 3)), r.normal(size=(2, 2)), r.normal(size=(2, 2))
x1, x2, x3, x4, x5, x6, x7, x8, x9 = X.ravel(); w1, w2, w3, w4 = Wk.ravel(); d1, d2, d3, d4 = D.ravel()
o = conv2d_naive_forward(X[None, :, :, None], Wk[:, :, None, None])[0, :, :, 0]
test_close(o.ravel(), [x1*w1 + x2*w2 + x4*w3 + x5*w4, x2*w1 + x3*w2 + x5*w3 + x6*w4,
                       x4*w1 + x5*w2 + x7*w3 + x8*w4, x5*w1 + x6*w2 + x8*w3 + x9*w4])
dx, dw, db = conv2d_naive_backward(D[None, :, :, None], X[None, :, :, None], Wk[:, :, None, None])
correct = [d1*w1, d1*w2 + d2*w1, d2*w2, d1*w3 + d3*w1, d1*w4 + d2*w3 + d3*w2 + d4*w1, d2*w4 + d4*w2,
           d3*w3, d3*w4 + d4*w3, d4*w4]
printed = [d1*w1, d1*w1 + d2*w2, d3*w3, d1*w1 + d4*w4, d1*w1 + d2*w2 + d3*w3 + d4*w4, d2*w2 + d4*w4,
           d3*w3, d3*w3 + d4*w4, d4*w4]
test_close(dx.ravel(), correct)
wrong = ~np.isclose(dx.ravel(), printed)
print('entries where the printed formula is wrong:', [f'x{i+1}' for i in np.flatnonzero(wrong)])
test_eq(wrong.sum(), 6)
# dW is the valid cross-correlation of X with delta (the book's filter gradients), and dX the full
# cross-correlation of the zero-padded delta with the 180-degree rotated kernel.
test_close(dw[:, :, 0, 0], conv2d_naive_forward(X[None, :, :, None], D[:, :, None, None])[0, :, :, 0])
test_close(dx[0, :, :, 0], conv2d_naive_forward(np.pad(D, 1)[None, :, :, None], Wk[::-1, ::-1, None, None])[0, :, :, 0])
test_close(db, D.sum())

# %% [markdown]
# The pooling worked example of the build-your-own book: max pooling is
# printed right; average pooling's bottom-left entry is 3.5, not 3.25.

# %%
A = np.array([[2, 3, 1, 9], [4, 7, 3, 5], [8, 2, 2, 2], [1, 3, 4, 5]], float)[None, :, :, None]
test_eq(pool2d_naive_forward(A, 2, 2, 'max')[0, :, :, 0], [[7, 9], [8, 5]])
print(pool2d_naive_forward(A, 2, 2, 'avg')[0, :, :, 0])
test_eq(pool2d_naive_forward(A, 2, 2, 'avg')[0, :, :, 0], [[4, 4.5], [3.5, 3.25]])

# %% [markdown]
# ### Gradient check on the CS231n fixture
#
# The mini-project report (CS231n's assignment) checks its naive backward
# pass on `x` of shape $4\times3\times5\times5$ (NCHW), `w` $2\times3\times3\times3$,
# stride 1, pad 1, all drawn with `np.random.seed(231)`, against centred
# differences with $h=10^{-5}$, and measures
# $\max|a-n| / \max(10^{-8}, |a|+|n|)$ (CS231n's `rel_error`). We draw the
# very same numbers with the legacy `RandomState(231)`, transpose them to NHWC
# and the kernel to $(KH, KW, C, F)$, and run the same check. Our figure also
# gives this book's norm-based relative error $\|a-n\|/(\|a\|+\|n\|)$.

# %%
def numerical_grad_array(f, x, df, h=1e-5):
    "Centred differences of the array function `f` at `x`, contracted with the upstream gradient `df` (CS231n's eval_numerical_gradient_array)."
    g = np.zeros_like(x)
    it = np.nditer(x, flags=['multi_index'])
    for _ in it:
        i = it.multi_index
        old = x[i]
        x[i] = old + h; fp = f(x).copy()
        x[i] = old - h; fm = f(x).copy()
        x[i] = old
        g[i] = np.sum((fp - fm) * df) / (2 * h)
    return g

def rel_error_cs231n(a, n): return np.max(np.abs(a - n) / np.maximum(1e-8, np.abs(a) + np.abs(n)))
def rel_error(a, n): return np.linalg.norm(a - n) / (np.linalg.norm(a) + np.linalg.norm(n))

rs = np.random.RandomState(231)
x_ = rs.randn(4, 3, 5, 5); w_ = rs.randn(2, 3, 3, 3); b_ = rs.randn(2,); dout_ = rs.randn(4, 2, 5, 5)
x0, w0, b0, dout = x_.transpose(0, 2, 3, 1).copy(), w_.transpose(2, 3, 1, 0).copy(), b_.copy(), dout_.transpose(0, 2, 3, 1).copy()
dx_num = numerical_grad_array(lambda v: conv2d_naive_forward(v, w0, b0, 1, 1), x0, dout)
dw_num = numerical_grad_array(lambda v: conv2d_naive_forward(x0, v, b0, 1, 1), w0, dout)
db_num = numerical_grad_array(lambda v: conv2d_naive_forward(x0, w0, v, 1, 1), b0, dout)
dx0, dw0, db0 = conv2d_naive_backward(dout, x0, w0, 1, 1)
report = {'dx': 1.159803161159293e-08, 'dw': 2.2471264748452487e-10, 'db': 3.37264006649648e-11}
print(f"{'':4}{'report (CS231n rel_error)':>28}{'ours (CS231n rel_error)':>26}{'ours (norm rel. error)':>24}")
for k, (a, n) in {'dx': (dx0, dx_num), 'dw': (dw0, dw_num), 'db': (db0, db_num)}.items():
    print(f"{k:4}{report[k]:28.3e}{rel_error_cs231n(a, n):26.3e}{rel_error(a, n):24.3e}")
    assert rel_error_cs231n(a, n) < 1e-7 and rel_error(a, n) < 1e-8

# %% [markdown]
# The same for the naive max pool (the report: $3.28\times10^{-12}$ on
# x $3\times2\times8\times8$, `dout` $3\times2\times4\times4$) and average pool.

# %%
rs = np.random.RandomState(231)
xp_ = rs.randn(3, 2, 8, 8).transpose(0, 2, 3, 1).copy(); dp_ = rs.randn(3, 2, 4, 4).transpose(0, 2, 3, 1).copy()
for mode in ('max', 'avg'):
    num = numerical_grad_array(lambda v: pool2d_naive_forward(v, 2, 2, mode), xp_, dp_)
    ana = pool2d_naive_backward(dp_, xp_, 2, 2, mode)
    print(f"{mode} pool dx: CS231n rel_error {rel_error_cs231n(ana, num):.3e}" + ("  (report 3.28e-12)" if mode == 'max' else ''))
    assert rel_error_cs231n(ana, num) < 1e-8

# %% [markdown]
# ## im2col: convolution as one matrix product
#
# The naive loop does $N\cdot OH\cdot OW$ small dot products. The same
# arithmetic is *one* matrix product if each receptive field is first copied
# into a row of a matrix, the "image to columns" transform:
#
# ```
#  x[n] (H x W x C), kernel KH x KW, stride s        cols: one row per output position
#
#  +----+----+----+----+                               row (n, i, j) = the window at (s*i, s*j),
#  | a  | b  | c  | d  |    window (0,0) = a b e f      flattened in (m, l, c) order:
#  +----+----+----+----+    window (0,1) = b c f g
#  | e  | f  | g  | h  |    ...                         [a b e f]   (x C channels each)
#  +----+----+----+----+                               [b c f g]
#  | i  | j  | k  | l  |                               [c d g h]
#  +----+----+----+----+                               [e f i j]  ...
#
#  Y = cols (N*OH*OW, KH*KW*C)  @  W.reshape(KH*KW*C, F)  ->  (N*OH*OW, F) = (N, OH, OW, F)
# ```
#
# With NHWC input and a kernel stored as $(KH, KW, C, F)$, the row order
# $(m, l, c)$ is exactly the order of `W.reshape(-1, F)`, and the product's
# rows come out in $(n, i, j)$ order, which is NHWC again: no transposes. The
# backward pass is two more products and the adjoint of im2col:
#
# $$ dW = \text{cols}^\top\,\delta, \qquad d\,\text{cols} = \delta\,W^\top, \qquad dX = \operatorname{col2im}(d\,\text{cols}), $$
#
# where $\delta$ is $dY$ reshaped to $(N\cdot OH\cdot OW, F)$, and col2im
# *adds* each row back into the window it came from (a pixel that sits in
# several windows collects several contributions). The price is memory: each
# pixel is copied $KH\cdot KW/s^2$ times. The gain is that the work lands in a
# BLAS matrix product, which runs near the machine's peak.
#
# Each kernel below comes three times:
#
# * **NumPy reference**: loops over the $KH\cdot KW$ kernel offsets (9 for a
#   $3\times3$ kernel) and copies one strided slice of the padded input per
#   offset. Works unchanged on CuPy arrays.
# * **Numba CPU** (`njit(parallel=True, cache=True)`): one pass, `prange` over
#   $N\cdot OH$ rows, reading the padding as zeros instead of building a
#   padded copy. In NHWC one row of a window, $(l, c)$ for fixed $m$, is
#   $KW\cdot C$ *contiguous* numbers, so the inner loop is a plain copy.
#   col2im works by image row: `prange` over $N\cdot H$ rows, each summing
#   straight into its row of the output the window rows that read it, so two
#   threads never write to the same pixel. Each copy (or sum) of a window row
#   is one plain loop over two one-dimensional slices, which LLVM vectorises
#   after one check per run that the slices do not overlap, even for runs as
#   short as LeNet's conv2's ($KW\cdot C = 30$). A window that overlaps the left or
#   right padding is one such run too: its taps inside the image are contiguous,
#   so they are copied (or added) in one run and the padding's places are
#   zeroed around it, rather than tap by tap with a test per number (a 4×4
#   window at stride 2 on 16 columns overlaps the padding in 2 of its 8
#   positions). That pays most when the data sit in cache, less inside a
#   training step, where they come from memory. A 3×3, 32-channel layer at
#   batch 64 has 75 MB of columns: memory speed bounds both loops there.
#   col2im can start its sums from a bias instead of zero (`bias=`), which a
#   transposed convolution (07a) uses to add its bias without a pass of its own.
# * **Numba CUDA** (`cuda.jit`): one thread per output element; col2im is
#   a *gather* there (each thread sums the column entries copied from its
#   pixel), because thousands of threads scattering into the same pixels would
#   need atomics. On a GPU the arrays are CuPy arrays and stay on the device; Numba
#   reads them through `__cuda_array_interface__`. `numba.cuda` is imported
#   only when a CUDA kernel is first used, so importing the package needs no GPU.
#
# `backend='auto'` (see `core.resolve_backend`) picks CUDA for CuPy arrays and
# Numba CPU for NumPy arrays.
#
# **Dilation.** A *dilated* (atrous) convolution with rate $d$ spreads the kernel's taps $d$ pixels
# apart: kernel offset $(m, l)$ reads $x[s i + d m, s j + d l]$, so a $3\times3$ kernel at rate 2 sees a
# $5\times5$ field with 9 weights. It is the convolution with the kernel $d$-fold *stuffed* with zeros
# (`dilate_kernel`), of effective size $KH_d = (KH - 1)\,d + 1$, which sets the output size and the
# `'same'` padding; but im2col copies only the $KH\cdot KW$ taps, so the product does no work on
# the zeros. Every kernel takes `dilation` $(d_h, d_w)$: the NumPy slices start at $d m$, the Numba
# copy runs contiguously only when $d_w = 1$, and col2im and the CUDA kernels invert $h = s i + d m - p$.

# %% [markdown]
# ### The NumPy reference

# %%
#| export
def _im2col_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW, out, dh=1, dw=1):
    xp = get_array_module(x)
    N, H, W, C = x.shape
    xpad = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = out[:, :kh * kw * C].reshape(N, OH, OW, kh, kw, C)   # a view (splitting axes never copies)
    for m in range(kh):            # one strided slice per kernel offset (m, l), read d*m rows down
        for l in range(kw):
            cols[:, :, :, m, l, :] = xpad[:, dh * m:dh * m + sh * (OH - 1) + 1:sh, dw * l:dw * l + sw * (OW - 1) + 1:sw, :]
    return out

def _col2im_numpy(cols, x_shape, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW, dh=1, dw=1):
    xp = get_array_module(cols)
    N, H, W, C = x_shape
    cols = cols.reshape(N, OH, OW, kh, kw, C)
    dxpad = xp.zeros((N, H + pt + pb, W + pl + pr, C), cols.dtype)
    for m in range(kh):            # the adjoint: add each slice back where it was read
        for l in range(kw):
            dxpad[:, dh * m:dh * m + sh * (OH - 1) + 1:sh, dw * l:dw * l + sw * (OW - 1) + 1:sw, :] += cols[:, :, :, m, l, :]
    return xp.ascontiguousarray(dxpad[:, pt:pt + H, pl:pl + W, :])

# %% [markdown]
# ### Which windows read a pixel
#
# The backward passes ask the forward's question the other way round. Window
# row $i$ reads, through kernel row $m$, the padded row $s i + d m$; so the
# padded row $a = h + p_t$ of pixel $h$ is read through kernel row $m$ by the
# window row
#
# $$ i = \frac{a - d\,m}{s}, \qquad \text{if that is a whole number in } [0, OH), $$
#
# and by none otherwise (likewise for columns). Every gather below (col2im,
# the pooling and depthwise backward passes, on the CPU and on CUDA) asks
# this per axis, so it is written once, as a `per_element` function (see
# `core`): Numba compiles it into the CPU loops as if written in place, and
# `device_twin` compiles the same source for the CUDA kernels. At stride 1 it
# needs no division. Average pooling also needs the number of real (not
# padded) entries of a window along an axis: the window starts at $s i - p$,
# is $k$ long, and is clipped to $[0, n)$. And each CUDA thread owns one
# number of a 4-D array, whose four indices it recovers from its flat index $t$
# by division with remainder, last axis first (NumPy's `unravel_index`, for
# one number): `_unravel_index4`, written once for all the CUDA kernels.

# %%
#| export
@per_element
def _window_index(a, s, n):
    "The window i, 0 <= i < n, that reads position a = s*i (a padded and tap-shifted index) at stride s; -1 if none."
    if a < 0: return -1
    if s == 1: return a if a < n else -1     # stride 1: no division
    i = a // s
    return i if i * s == a and i < n else -1

@per_element
def _window_span(i, s, p, k, n):
    "Real (unpadded) entries of window i along an axis of n: it starts at s*i - p and is k long."
    return min(i * s - p + k, n) - max(i * s - p, 0)

@per_element
def _unravel_index4(t, B, C, D):
    "The index (a, b, c, d) of entry t of a C-contiguous (A, B, C, D) array: the element a CUDA thread t owns."
    d, r = t % D, t // D
    c, r = r % C, r // C
    return r // B, r % B, c, d

# %%
test_eq([_window_index(a, 2, 3) for a in range(-1, 7)], [-1, 0, -1, 1, -1, 2, -1, -1])
test_eq([_window_index(a, 1, 3) for a in range(-1, 4)], [-1, 0, 1, 2, -1])
test_eq([_window_index.py_func(a, 3, 2) for a in range(7)], [0, -1, -1, 1, -1, -1, -1])
test_eq([_window_span(i, 2, 1, 3, 5) for i in range(3)], [2, 3, 2])   # padding cuts the first and the last
test_eq([_unravel_index4(t, 3, 4, 5) for t in (0, 7, 59, 119)], [np.unravel_index(t, (2, 3, 4, 5)) for t in (0, 7, 59, 119)])

# %% [markdown]
# ### Numba CPU

# %%
#| export
@njit(parallel=True, cache=True)
def _im2col_numba(x, kh, kw, sh, sw, pt, pl, OH, OW, cols, dh=1, dw=1):
    N, H, W, C = x.shape
    xr = x.reshape(N, H, W * C)        # a window row (l, c) is kw*C contiguous numbers (when dw = 1)
    L = kw * C
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        for j in range(OW):
            row, w0 = r * OW + j, j * sw - pl
            l0 = min(kw, max(0, -w0))              # when dw = 1, the taps l0 <= l < l1 inside the image
            l1 = max(l0, min(kw, W - w0))          # are one contiguous run
            for m in range(kh):
                h, win = i * sh + dh * m - pt, cols[row, m * L:(m + 1) * L]   # one window row (l, c)
                if h < 0 or h >= H:                      # a padding row: zeros, never materialised
                    for q in range(L): win[q] = 0
                elif dw == 1:
                    for q in range(l0 * C): win[q] = 0                   # left padding
                    for q in range(l1 * C, L): win[q] = 0                # right padding
                    run, src = win[l0 * C:l1 * C], xr[n, h, (w0 + l0) * C:(w0 + l1) * C]
                    for q in range(run.shape[0]): run[q] = src[q]
                else:                                    # dilated: tap by tap
                    for l in range(kw):
                        w = w0 + dw * l
                        for c in range(C):
                            win[l * C + c] = xr[n, h, w * C + c] if 0 <= w < W else 0
    return cols

@njit(parallel=True, cache=True)
def _col2im_numba(cols, N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW, dh=1, dw=1, bias=None):
    dx = np.empty((N, H, W * C), cols.dtype)
    L = kw * C                           # one window row: kw*C numbers, contiguous in cols (and in dx when dw = 1)
    for r in prange(N * H):              # a gather by image row: no two threads write one pixel
        n, h = r // H, r % H
        acc = dx[n, h]                   # the sums go straight into the output row
        for w in range(W):               # start from the bias (or zero): no pass of its own
            for c in range(C): acc[w * C + c] = 0 if bias is None else bias[c]
        for m in range(kh):              # the window rows i that read image row h through kernel row m
            i = _window_index(h + pt - dh * m, sh, OH)
            if i < 0: continue
            for j in range(OW):
                row, w0, base = (n * OH + i) * OW + j, j * sw - pl, m * L
                if dw == 1:              # the taps inside the image: one contiguous run
                    l0, l1 = max(0, -w0), min(kw, W - w0)
                    if l1 > l0:
                        run, src = acc[(w0 + l0) * C:(w0 + l1) * C], cols[row, base + l0 * C:base + l1 * C]
                        for q in range(run.shape[0]): run[q] += src[q]
                else:
                    for l in range(kw):
                        w = w0 + dw * l
                        if 0 <= w < W:
                            for c in range(C): acc[w * C + c] += cols[row, base + l * C + c]
    return dx.reshape(N, H, W, C)

# %% [markdown]
# ### Numba CUDA
#
# One thread per output element. The kernels are built by `core.cuda_kernels`
# the first time a CUDA backend is used, so that `numba.cuda` is never
# imported on a machine that does not ask for it; `core.launch` runs them in
# blocks of 128 threads, and `core.KernelArrays` says where their arrays live:
# CuPy inputs stay on the device and CuPy comes back; NumPy inputs are copied
# to the GPU and their results back (under the simulator, which is what the
# tests use without a GPU, NumPy arrays go in as they are).

# %%
#| export
cuda = None  # numba.cuda, imported by the first CUDA call (a module global: the simulator swaps it in kernels)

def _build_cuda_kernels():
    "The CUDA kernels of im2col, col2im and pooling (built once, by `core.cuda_kernels`)."
    global cuda
    from numba import cuda
    window_index, window_span, unravel = (device_twin(f) for f in (_window_index, _window_span, _unravel_index4))

    @cuda.jit
    def im2col_k(x, cols, kh, kw, sh, sw, pt, pl, OH, OW, dh, dw):
        t = cuda.grid(1)
        N, H, W, C = x.shape
        K = kh * kw * C
        if t >= cols.shape[0] * K: return
        row, col = t // K, t % K
        c, ml = col % C, col // C
        m, l = ml // kw, ml % kw
        j, r = row % OW, row // OW
        i, n = r % OH, r // OH
        h, w = i * sh + dh * m - pt, j * sw + dw * l - pl
        cols[row, col] = x[n, h, w, c] if (h >= 0 and h < H and w >= 0 and w < W) else 0

    @cuda.jit
    def col2im_k(cols, dx, kh, kw, sh, sw, pt, pl, OH, OW, dh, dw):
        t = cuda.grid(1)
        N, H, W, C = dx.shape
        if t >= N * H * W * C: return
        n, h, w, c = unravel(t, H, W, C)
        acc = cols[0, 0] * 0
        for m in range(kh):
            i = window_index(h + pt - dh * m, sh, OH)
            if i < 0: continue
            for l in range(kw):
                j = window_index(w + pl - dw * l, sw, OW)
                if j < 0: continue
                acc += cols[(n * OH + i) * OW + j, (m * kw + l) * C + c]
        dx[n, h, w, c] = acc

    @cuda.jit
    def maxpool_fwd_k(x, y, idx, kh, kw, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, OH, OW, C = y.shape
        H, W = x.shape[1], x.shape[2]
        if t >= N * OH * OW * C: return
        n, i, j, c = unravel(t, OH, OW, C)
        best, arg = -math.inf, -1
        for m in range(kh):
            h = i * sh + m - pt
            if h < 0 or h >= H: continue
            for l in range(kw):
                w = j * sw + l - pl
                if w < 0 or w >= W: continue
                v = x[n, h, w, c]
                if arg < 0 or v > best: best, arg = v, m * kw + l
        y[n, i, j, c] = best
        idx[n, i, j, c] = arg

    @cuda.jit
    def maxpool_bwd_k(dy, idx, dx, kh, kw, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, H, W, C = dx.shape
        OH, OW = dy.shape[1], dy.shape[2]
        if t >= N * H * W * C: return
        n, h, w, c = unravel(t, H, W, C)
        acc = dy[0, 0, 0, 0] * 0
        for m in range(kh):
            i = window_index(h + pt - m, sh, OH)
            if i < 0: continue
            for l in range(kw):
                j = window_index(w + pl - l, sw, OW)
                if j < 0: continue
                if idx[n, i, j, c] == m * kw + l: acc += dy[n, i, j, c]
        dx[n, h, w, c] = acc

    @cuda.jit
    def avgpool_fwd_k(x, y, kh, kw, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, OH, OW, C = y.shape
        H, W = x.shape[1], x.shape[2]
        if t >= N * OH * OW * C: return
        n, i, j, c = unravel(t, OH, OW, C)
        acc = x[0, 0, 0, 0] * 0
        cnt = 0
        for m in range(kh):
            h = i * sh + m - pt
            if h < 0 or h >= H: continue
            for l in range(kw):
                w = j * sw + l - pl
                if w < 0 or w >= W: continue
                acc += x[n, h, w, c]
                cnt += 1
        y[n, i, j, c] = acc / cnt

    @cuda.jit
    def avgpool_bwd_k(dy, dx, kh, kw, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, H, W, C = dx.shape
        OH, OW = dy.shape[1], dy.shape[2]
        if t >= N * H * W * C: return
        n, h, w, c = unravel(t, H, W, C)
        acc = dy[0, 0, 0, 0] * 0
        for m in range(kh):
            i = window_index(h + pt - m, sh, OH)
            if i < 0: continue
            for l in range(kw):
                j = window_index(w + pl - l, sw, OW)
                if j < 0: continue
                acc += dy[n, i, j, c] / (window_span(i, sh, pt, kh, H) * window_span(j, sw, pl, kw, W))
        dx[n, h, w, c] = acc

    return dict(im2col=im2col_k, col2im=col2im_k, maxpool_fwd=maxpool_fwd_k, maxpool_bwd=maxpool_bwd_k,
                avgpool_fwd=avgpool_fwd_k, avgpool_bwd=avgpool_bwd_k)

def _cuda(name):
    "The CUDA kernel `name` of im2col, col2im or pooling."
    return cuda_kernels('conv', _build_cuda_kernels)[name]

# %% [markdown]
# ### Pooling kernels
#
# Max pooling returns, beside the maxima, the winner's offset $m\cdot KW + l$
# inside its window (`int32`, first winner on ties, as `np.argmax`); backward
# routes each gradient to that offset. Average pooling divides by the number
# of real (not padded) entries in the window. Where windows overlap (stride <
# size), the backward passes are gathers, so that no two threads write one pixel.
# Where they do not, which is the usual case, max pooling's backward pass zeroes
# the band of rows under one row of windows and writes each gradient to its
# winner, once, while the band is in cache.
#
# The 2×2, stride-2 window without padding, which nearly every network here uses,
# has a kernel of its own: four taps written out rather than looped over. The
# loops over taps and over a few channels (LeNet has 6) are too short to
# vectorise, and their bookkeeping costs more than the work.

# %%
#| export
def _maxpool_fwd_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW):
    xp = get_array_module(x)
    xpad = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=-np.inf)
    wins = xp.stack([xpad[:, m:m + sh * (OH - 1) + 1:sh, l:l + sw * (OW - 1) + 1:sw, :]
                     for m in range(kh) for l in range(kw)], axis=3)           # (N, OH, OW, kh*kw, C)
    idx = wins.argmax(axis=3).astype(np.int32)
    return wins.max(axis=3), idx

def _maxpool_bwd_numpy(dy, idx, x_shape, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW):
    xp = get_array_module(dy)
    N, H, W, C = x_shape
    dxpad = xp.zeros((N, H + pt + pb, W + pl + pr, C), dy.dtype)
    for m in range(kh):
        for l in range(kw):     # the mask of offset (m, l): where it won
            dxpad[:, m:m + sh * (OH - 1) + 1:sh, l:l + sw * (OW - 1) + 1:sw, :] += xp.where(idx == m * kw + l, dy, 0)
    return xp.ascontiguousarray(dxpad[:, pt:pt + H, pl:pl + W, :])

def _pool_counts(xp, n, k, s, p, o):
    "Real (unpadded) entries along one axis of each of the `o` windows."
    start = xp.arange(o) * s - p
    return xp.minimum(start + k, n) - xp.maximum(start, 0)

def _avgpool_fwd_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW):
    xp = get_array_module(x)
    N, H, W, C = x.shape
    xpad = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    acc = xp.zeros((N, OH, OW, C), x.dtype)
    for m in range(kh):
        for l in range(kw):
            acc += xpad[:, m:m + sh * (OH - 1) + 1:sh, l:l + sw * (OW - 1) + 1:sw, :]
    cnt = _pool_counts(xp, H, kh, sh, pt, OH)[:, None] * _pool_counts(xp, W, kw, sw, pl, OW)[None, :]
    return acc / cnt[None, :, :, None].astype(x.dtype)

def _avgpool_bwd_numpy(dy, x_shape, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW):
    xp = get_array_module(dy)
    N, H, W, C = x_shape
    cnt = _pool_counts(xp, H, kh, sh, pt, OH)[:, None] * _pool_counts(xp, W, kw, sw, pl, OW)[None, :]
    g = dy / cnt[None, :, :, None].astype(dy.dtype)
    dxpad = xp.zeros((N, H + pt + pb, W + pl + pr, C), dy.dtype)
    for m in range(kh):
        for l in range(kw):
            dxpad[:, m:m + sh * (OH - 1) + 1:sh, l:l + sw * (OW - 1) + 1:sw, :] += g
    return xp.ascontiguousarray(dxpad[:, pt:pt + H, pl:pl + W, :])

# %%
#| export
@njit(parallel=True, cache=True)
def _maxpool_fwd_numba(x, kh, kw, sh, sw, pt, pl, OH, OW):
    N, H, W, C = x.shape
    y = np.empty((N, OH, OW, C), x.dtype)
    idx = np.empty((N, OH, OW, C), np.int32)
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        for j in range(OW):
            for c in range(C):
                y[n, i, j, c] = -np.inf
                idx[n, i, j, c] = -1
            for m in range(kh):
                h = i * sh + m - pt
                if h < 0 or h >= H: continue
                for l in range(kw):
                    w = j * sw + l - pl
                    if w < 0 or w >= W: continue
                    for c in range(C):       # channels innermost: contiguous in NHWC
                        v = x[n, h, w, c]
                        if idx[n, i, j, c] < 0 or v > y[n, i, j, c]:
                            y[n, i, j, c] = v
                            idx[n, i, j, c] = m * kw + l
    return y, idx

@njit(parallel=True, cache=True)
def _maxpool2x2_fwd_numba(x, OH, OW):
    "The common case, 2x2 windows at stride 2 without padding: the four taps unrolled, each image row flat."
    N, H, W, C = x.shape
    y = np.empty((N, OH, OW, C), x.dtype)
    idx = np.empty((N, OH, OW, C), np.int32)
    xr, yr, ir = x.reshape(N, H, W * C), y.reshape(N, OH, OW * C), idx.reshape(N, OH, OW * C)
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        x0, x1, yo, io = xr[n, 2 * i], xr[n, 2 * i + 1], yr[n, i], ir[n, i]
        for j in range(OW):
            for c in range(C):
                p = 2 * j * C + c                    # tap (0, 0); (0, 1) is p + C; (1, *) the next row
                best, k = x0[p], 0                   # strict '>': the first maximum wins, as np.argmax
                if x0[p + C] > best: best, k = x0[p + C], 1
                if x1[p] > best: best, k = x1[p], 2
                if x1[p + C] > best: best, k = x1[p + C], 3
                yo[j * C + c], io[j * C + c] = best, k
    return y, idx

@njit(parallel=True, cache=True)
def _maxpool2x2_bwd_numba(dy, idx, N, H, W, C):
    "Backward of `_maxpool2x2_fwd_numba`: zero the two rows under a row of windows, then write each winner."
    OH, OW = dy.shape[1], dy.shape[2]
    dx = np.empty((N, H, W * C), dy.dtype)
    dyr, ir = dy.reshape(N, OH, OW * C), idx.reshape(N, OH, OW * C)
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        d0, d1, g, ii = dx[n, 2 * i], dx[n, 2 * i + 1], dyr[n, i], ir[n, i]
        for q in range(W * C):                       # an odd width's last column is zeroed here too
            d0[q] = 0; d1[q] = 0
        for j in range(OW):
            for c in range(C):
                k = ii[j * C + c] & 3                # offsets 0..3 from the forward pass; & 3 keeps writes in the rows
                dx[n, 2 * i + (k >> 1), (2 * j + (k & 1)) * C + c] = g[j * C + c]
    for n in prange(N * (H - 2 * OH)):               # an odd height: the last row is in no window
        for q in range(W * C): dx[n, H - 1, q] = 0
    return dx.reshape(N, H, W, C)

@njit(parallel=True, cache=True)
def _maxpool_bwd_numba(dy, idx, N, H, W, C, kh, kw, sh, sw, pt, pl):
    OH, OW = dy.shape[1], dy.shape[2]
    if sh >= kh and sw >= kw:      # windows do not overlap: scatter each gradient to its winner, no search
        dx = np.empty((N, H, W, C), dy.dtype)
        dxr = dx.reshape(N, H, W * C)
        mh = np.array([k // kw for k in range(kh * kw)])   # offset k -> (m, l) by table: no division per element
        ml = np.array([k % kw for k in range(kh * kw)])
        for r in prange(N * OH):
            n, i = r // OH, r % OH
            # zero the band of rows that only window row i reaches (the last band takes the rows below it
            # too) while it is in cache, then write each gradient once
            h0, h1 = (0 if i == 0 else i * sh - pt), (H if i == OH - 1 else (i + 1) * sh - pt)
            for h in range(h0, h1):
                for q in range(W * C): dxr[n, h, q] = 0
            for j in range(OW):
                for c in range(C):
                    k = idx[n, i, j, c]
                    if 0 <= k < kh * kw:
                        h, w = i * sh + mh[k] - pt, j * sw + ml[k] - pl
                        if 0 <= h < H and 0 <= w < W: dx[n, h, w, c] = dy[n, i, j, c]
        return dx
    dx = np.zeros((N, H, W, C), dy.dtype)
    for r in prange(N * H):        # overlapping windows: gather, so that no two threads write one pixel
        n, h = r // H, r % H
        for w in range(W):
            for m in range(kh):
                i = _window_index(h + pt - m, sh, OH)
                if i < 0: continue
                for l in range(kw):
                    j = _window_index(w + pl - l, sw, OW)
                    if j < 0: continue
                    k = m * kw + l
                    for c in range(C):
                        if idx[n, i, j, c] == k: dx[n, h, w, c] += dy[n, i, j, c]
    return dx

@njit(parallel=True, cache=True)
def _avgpool_fwd_numba(x, kh, kw, sh, sw, pt, pl, OH, OW):
    N, H, W, C = x.shape
    y = np.zeros((N, OH, OW, C), x.dtype)
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        h0, h1 = max(i * sh - pt, 0), min(i * sh - pt + kh, H)
        for j in range(OW):
            w0, w1 = max(j * sw - pl, 0), min(j * sw - pl + kw, W)
            for h in range(h0, h1):
                for w in range(w0, w1):
                    for c in range(C): y[n, i, j, c] += x[n, h, w, c]
            cnt = (h1 - h0) * (w1 - w0)
            for c in range(C): y[n, i, j, c] /= cnt
    return y

@njit(parallel=True, cache=True)
def _avgpool_bwd_numba(dy, N, H, W, C, kh, kw, sh, sw, pt, pl):
    OH, OW = dy.shape[1], dy.shape[2]
    dx = np.zeros((N, H, W, C), dy.dtype)
    for r in prange(N * H):
        n, h = r // H, r % H
        for w in range(W):
            for m in range(kh):
                i = _window_index(h + pt - m, sh, OH)
                if i < 0: continue
                ch = _window_span(i, sh, pt, kh, H)
                for l in range(kw):
                    j = _window_index(w + pl - l, sw, OW)
                    if j < 0: continue
                    cnt = ch * _window_span(j, sw, pl, kw, W)
                    for c in range(C): dx[n, h, w, c] += dy[n, i, j, c] / cnt
    return dx

# %% [markdown]
# ### The public kernels
#
# Each validates its input (rank 4, a window that fits), resolves the
# backend, and calls one of the three implementations.

# %%
#| export
def dilate_kernel(w, dilation=1):
    "The kernel (KH, KW, ...) stuffed with zeros: ((KH-1)*d_h + 1, (KW-1)*d_w + 1, ...), w[m, l] at (d_h*m, d_w*l)."
    dh, dw = _pair(dilation, 'dilation')
    out = np.zeros(((w.shape[0] - 1) * dh + 1, (w.shape[1] - 1) * dw + 1, *w.shape[2:]), w.dtype)
    out[::dh, ::dw] = w
    return out

def im2col(x, kernel_size, strides=1, padding=0, backend: str = 'auto', out=None, dilation=1):
    """Receptive fields as rows. x (N, H, W, C) -> cols (N*OH*OW, KH*KW*C): row (n, i, j), column (m, l, c)
    holds x_padded[n, s_h*i + d_h*m, s_w*j + d_w*l, c] (d = `dilation`, 1 for a plain convolution; the window,
    its 'same' padding and the output size are those of the dilated kernel, (KH - 1)*d_h + 1 high).
    `padding`: 'valid', 'same', int, (ph, pw) or (top, bottom, left, right).
    `out`: an optional C-contiguous array of x's dtype to fill (a reused workspace), of that shape or wider,
    (N*OH*OW, K') with K' > KH*KW*C: the columns past KH*KW*C are left as they are (`Conv2D` keeps a column
    of ones there, for its bias)."""
    check_array(x, 'x (N, H, W, C)', ndim=4, finite=False, who='im2col')
    kh, kw = _pair(kernel_size, 'kernel_size')
    dh, dw = _pair(dilation, 'dilation')
    sh, sw, pt, pb, pl, pr, OH, OW = _geometry(x.shape, (kh - 1) * dh + 1, (kw - 1) * dw + 1, strides, padding, 'im2col')
    N, H, W, C = x.shape
    shape = (N * OH * OW, kh * kw * C)
    be = resolve_backend(x, backend, 'im2col')
    if out is not None:
        if out.ndim != 2 or out.shape[0] != shape[0] or out.shape[1] < shape[1]:
            raise ValueError(f"im2col expected out of shape {shape} (or with more columns), got {tuple(out.shape)}")
        if out.dtype != x.dtype or not out.flags.c_contiguous:
            raise ValueError(f"im2col expected out to be C-contiguous with dtype {x.dtype}, got {out.dtype}")
    if be == 'numpy':
        return _im2col_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW,
                             get_array_module(x).empty(shape, x.dtype) if out is None else out, dh, dw)
    if be == 'numba':
        return _im2col_numba(np.ascontiguousarray(x), kh, kw, sh, sw, pt, pl, OH, OW,
                             np.empty(shape, x.dtype) if out is None else out, dh, dw)
    ka = KernelArrays(be, x)
    cols = out if (out is not None and get_array_module(out) is ka.xp) else ka.xp.empty(shape, x.dtype)
    launch(_cuda('im2col'), shape[0] * shape[1], ka.put(x), cols, kh, kw, sh, sw, pt, pl, OH, OW, dh, dw)
    if out is None or cols is out: return ka.result(cols)
    out[:, :shape[1]] = ka.result(cols)
    return out

def col2im(cols, x_shape, kernel_size, strides=1, padding=0, backend: str = 'auto', dilation=1, bias=None):
    """Adjoint of `im2col`: cols (N*OH*OW, KH*KW*C) -> dx (N, H, W, C) = x_shape, each entry the sum
    of the column entries that were copied from it. `cols` may have more columns (a work array with wider
    rows, as `im2col`'s `out`): those past KH*KW*C are ignored. `bias` (C,): added to every pixel (a
    transposed convolution's bias; the Numba kernel starts its sums from it instead of making a pass of its own)."""
    N, H, W, C = (int(s) for s in x_shape)
    kh, kw = _pair(kernel_size, 'kernel_size')
    dh, dw = _pair(dilation, 'dilation')
    sh, sw, pt, pb, pl, pr, OH, OW = _geometry((N, H, W, C), (kh - 1) * dh + 1, (kw - 1) * dw + 1, strides, padding, 'col2im')
    check_array(cols, 'cols', ndim=2, finite=False, who='col2im')
    if cols.shape[0] != N * OH * OW or cols.shape[1] < kh * kw * C:
        raise ValueError(f"col2im expected cols of shape {(N * OH * OW, kh * kw * C)}, got {tuple(cols.shape)} "
                         f"(more columns are allowed: those past {kh * kw * C} are ignored)")
    if bias is not None: check_array(bias, 'bias', shape=(C,), finite=False, who='col2im')
    be = resolve_backend(cols, backend, 'col2im')
    if be == 'numba':
        b = None if bias is None else np.ascontiguousarray(bias, cols.dtype)
        return _col2im_numba(np.ascontiguousarray(cols), N, H, W, C, kh, kw, sh, sw, pt, pl, OH, OW, dh, dw, b)
    cols = cols[:, :kh * kw * C]
    if be == 'numpy': dx = _col2im_numpy(cols, (N, H, W, C), kh, kw, sh, sw, pt, pb, pl, pr, OH, OW, dh, dw)
    else:
        ka = KernelArrays(be, cols)
        dx = ka.xp.empty((N, H, W, C), cols.dtype)
        launch(_cuda('col2im'), dx.size, ka.put(cols), dx, kh, kw, sh, sw, pt, pl, OH, OW, dh, dw)
        dx = ka.result(dx)
    if bias is not None: dx += get_array_module(dx).asarray(bias, dx.dtype)
    return dx

def _pool_geometry(x_shape, pool_size, strides, padding, who):
    kh, kw = _pair(pool_size, 'pool_size')
    g = _geometry(x_shape, kh, kw, (kh, kw) if strides is None else strides, padding, who)
    pt, pb, pl, pr = g[2:6]
    if max(pt, pb) >= kh or max(pl, pr) >= kw:   # a window made of padding only has no maximum
        raise ValueError(f"{who}: padding {(pt, pb, pl, pr)} must be smaller than the window {kh}x{kw}")
    return (kh, kw) + g

def maxpool2d_forward(x, pool_size=2, strides=None, padding=0, backend: str = 'auto'):
    """Max pooling. x (N, H, W, C) -> (y (N, OH, OW, C), idx (N, OH, OW, C) int32), idx = m*KW + l of the
    (first) maximum inside its window. `strides` defaults to `pool_size`; padded entries never win."""
    check_array(x, 'x (N, H, W, C)', ndim=4, finite=False, who='maxpool2d')
    kh, kw, sh, sw, pt, pb, pl, pr, OH, OW = _pool_geometry(x.shape, pool_size, strides, padding, 'maxpool2d')
    be = resolve_backend(x, backend, 'maxpool2d')
    if be == 'numpy': return _maxpool_fwd_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW)
    if be == 'numba':
        if (kh, kw, sh, sw, pt, pb, pl, pr) == (2, 2, 2, 2, 0, 0, 0, 0):
            return _maxpool2x2_fwd_numba(np.ascontiguousarray(x), OH, OW)
        return _maxpool_fwd_numba(np.ascontiguousarray(x), kh, kw, sh, sw, pt, pl, OH, OW)
    N, H, W, C = x.shape
    ka = KernelArrays(be, x)
    y, idx = ka.xp.empty((N, OH, OW, C), x.dtype), ka.xp.empty((N, OH, OW, C), np.int32)
    launch(_cuda('maxpool_fwd'), y.size, ka.put(x), y, idx, kh, kw, sh, sw, pt, pl)
    return ka.result(y), ka.result(idx)

def maxpool2d_backward(dy, idx, x_shape, pool_size=2, strides=None, padding=0, backend: str = 'auto'):
    "Gradient of max pooling: dy, idx (N, OH, OW, C) -> dx (N, H, W, C) = x_shape."
    N, H, W, C = (int(s) for s in x_shape)
    kh, kw, sh, sw, pt, pb, pl, pr, OH, OW = _pool_geometry((N, H, W, C), pool_size, strides, padding, 'maxpool2d')
    check_array(dy, 'dy', shape=(N, OH, OW, C), finite=False, who='maxpool2d backward')
    check_array(idx, 'idx', shape=(N, OH, OW, C), kind='i', finite=False, who='maxpool2d backward')
    be = resolve_backend(dy, backend, 'maxpool2d')
    if be == 'numpy': return _maxpool_bwd_numpy(dy, idx, (N, H, W, C), kh, kw, sh, sw, pt, pb, pl, pr, OH, OW)
    if be == 'numba':
        if (kh, kw, sh, sw, pt, pb, pl, pr) == (2, 2, 2, 2, 0, 0, 0, 0):
            return _maxpool2x2_bwd_numba(np.ascontiguousarray(dy), np.ascontiguousarray(idx, np.int32), N, H, W, C)
        return _maxpool_bwd_numba(np.ascontiguousarray(dy), np.ascontiguousarray(idx, np.int32), N, H, W, C, kh, kw, sh, sw, pt, pl)
    ka = KernelArrays(be, dy)
    dx = ka.xp.empty((N, H, W, C), dy.dtype)
    launch(_cuda('maxpool_bwd'), dx.size, ka.put(dy), ka.put(idx), dx, kh, kw, sh, sw, pt, pl)
    return ka.result(dx)

def avgpool2d_forward(x, pool_size=2, strides=None, padding=0, backend: str = 'auto'):
    "Average pooling over the real entries of each window. x (N, H, W, C) -> y (N, OH, OW, C)."
    check_array(x, 'x (N, H, W, C)', ndim=4, finite=False, who='avgpool2d')
    kh, kw, sh, sw, pt, pb, pl, pr, OH, OW = _pool_geometry(x.shape, pool_size, strides, padding, 'avgpool2d')
    be = resolve_backend(x, backend, 'avgpool2d')
    if be == 'numpy': return _avgpool_fwd_numpy(x, kh, kw, sh, sw, pt, pb, pl, pr, OH, OW)
    if be == 'numba': return _avgpool_fwd_numba(np.ascontiguousarray(x), kh, kw, sh, sw, pt, pl, OH, OW)
    N, H, W, C = x.shape
    ka = KernelArrays(be, x)
    y = ka.xp.empty((N, OH, OW, C), x.dtype)
    launch(_cuda('avgpool_fwd'), y.size, ka.put(x), y, kh, kw, sh, sw, pt, pl)
    return ka.result(y)

def avgpool2d_backward(dy, x_shape, pool_size=2, strides=None, padding=0, backend: str = 'auto'):
    "Gradient of average pooling: dy (N, OH, OW, C) -> dx (N, H, W, C) = x_shape."
    N, H, W, C = (int(s) for s in x_shape)
    kh, kw, sh, sw, pt, pb, pl, pr, OH, OW = _pool_geometry((N, H, W, C), pool_size, strides, padding, 'avgpool2d')
    check_array(dy, 'dy', shape=(N, OH, OW, C), finite=False, who='avgpool2d backward')
    be = resolve_backend(dy, backend, 'avgpool2d')
    if be == 'numpy': return _avgpool_bwd_numpy(dy, (N, H, W, C), kh, kw, sh, sw, pt, pb, pl, pr, OH, OW)
    if be == 'numba': return _avgpool_bwd_numba(np.ascontiguousarray(dy), N, H, W, C, kh, kw, sh, sw, pt, pl)
    ka = KernelArrays(be, dy)
    dx = ka.xp.empty((N, H, W, C), dy.dtype)
    launch(_cuda('avgpool_bwd'), dx.size, ka.put(dy), dx, kh, kw, sh, sw, pt, pl)
    return ka.result(dx)

# %% [markdown]
# The picture of the im2col section, computed: a $4\times4$ one-channel image with entries
# 0..15, a $2\times2$ window, stride 1. Each of the 9 rows of `cols` is one
# window read row by row; the 2×2 kernel flattened the same way turns the
# product into the 3×3 output. A pixel appears in as many rows as windows
# cover it (the centre pixels 5, 6, 9, 10 four times), which is why col2im
# must *add*.

# %%
x_demo = np.arange(16.0).reshape(1, 4, 4, 1)
cols_demo = im2col(x_demo, 2, backend='numpy')
fig, axs = plt.subplots(1, 2, figsize=(7, 3.6), gridspec_kw={'width_ratios': [4, 4]})
for ax, a, title in ((axs[0], x_demo[0, :, :, 0], 'x (4x4)'), (axs[1], cols_demo, 'im2col(x), 2x2 windows: (9, 4)')):
    ax.imshow(a, cmap='Blues', vmin=-4, vmax=20)
    for (i, j), v in np.ndenumerate(a): ax.text(j, i, int(v), ha='center', va='center')
    ax.set_title(title); ax.set_xticks([]); ax.set_yticks([])
plt.tight_layout(); plt.show()
test_eq(cols_demo[0], [0, 1, 4, 5]); test_eq(cols_demo[4], [5, 6, 9, 10])
test_eq(np.bincount(cols_demo.astype(int).ravel(), minlength=16).reshape(4, 4), [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])
test_eq(col2im(np.ones_like(cols_demo), x_demo.shape, 2, backend='numpy')[0, :, :, 0], [[1, 2, 2, 1], [2, 4, 4, 2], [2, 4, 4, 2], [1, 2, 2, 1]])

# %% [markdown]
# ### The three implementations agree
#
# On one awkward geometry (odd sizes, a stride larger than the kernel along one
# axis, asymmetric padding) every backend must give the NumPy reference's
# numbers; and im2col followed by a matrix product must give the naive
# convolution, with col2im giving its input gradient. (`tests/test_conv_kernels.py`
# repeats this for about two hundred random geometries with hypothesis; CUDA runs in
# Numba's simulator when there is no GPU, so the shapes stay small.)

# %%
r = np.random.default_rng(1)
x = r.normal(size=(2, 7, 9, 3)).astype(np.float32)
w = r.normal(size=(3, 2, 3, 4)).astype(np.float32)
geom = dict(kernel_size=(3, 2), strides=(2, 3), padding=(1, 0, 2, 1))
cols = {be: im2col(x, backend=be, **geom) for be in ('numpy', 'numba', 'cuda')}
for be in ('numba', 'cuda'): test_eq(cols[be], cols['numpy'])
y = (cols["numpy"] @ w.reshape(-1, 4)).reshape(2, 3, 4, 4)   # OH = (7+1-3)//2+1, OW = (9+3-2)//3+1
test_close(y, conv2d_naive_forward(x, w, None, (2, 3), (1, 0, 2, 1)), eps=1e-5)
dy = r.normal(size=y.shape).astype(np.float32)
dcols = dy.reshape(-1, 4) @ w.reshape(-1, 4).T
dxs = {be: col2im(dcols, x.shape, backend=be, **geom) for be in ('numpy', 'numba', 'cuda')}
dx_ref, dw_ref, _ = conv2d_naive_backward(dy, x, w, (2, 3), (1, 0, 2, 1))
for be in dxs: test_close(dxs[be], dx_ref, eps=1e-5)
b3 = r.normal(size=3).astype(np.float32)        # col2im starting from a bias: col2im + bias, on every backend
for be in dxs: test_close(col2im(dcols, x.shape, backend=be, bias=b3, **geom), dxs['numpy'] + b3, eps=1e-5)
test_close((cols['numpy'].T @ dy.reshape(-1, 4)).reshape(w.shape), dw_ref, eps=1e-4)
pool = dict(pool_size=3, strides=2, padding=(1, 1, 1, 1))
ym, im = maxpool2d_forward(x, backend='numpy', **pool)
for be in ('numba', 'cuda'):
    yb, ib = maxpool2d_forward(x, backend=be, **pool); test_eq(yb, ym); test_eq(ib, im)
dym = r.normal(size=ym.shape).astype(np.float32)
ref_b = maxpool2d_backward(dym, im, x.shape, backend='numpy', **pool)
for be in ('numba', 'cuda'): test_close(maxpool2d_backward(dym, im, x.shape, backend=be, **pool), ref_b, eps=1e-6)
ya = avgpool2d_forward(x, backend='numpy', **pool)
for be in ('numba', 'cuda'): test_close(avgpool2d_forward(x, backend=be, **pool), ya, eps=1e-6)
ref_a = avgpool2d_backward(dym, x.shape, backend='numpy', **pool)
for be in ('numba', 'cuda'): test_close(avgpool2d_backward(dym, x.shape, backend=be, **pool), ref_a, eps=1e-6)
# without padding, the fast pools equal the naive loops
test_eq(maxpool2d_forward(x, 2)[0], pool2d_naive_forward(x, 2, 2, 'max'))
test_close(avgpool2d_forward(x, 3, 2), pool2d_naive_forward(x, 3, 2, 'avg'), eps=1e-6)

# %% [markdown]
# A dilated convolution is the plain one with the zero-stuffed kernel, on every backend (here rates
# $(2, 3)$ with a $3\times2$ kernel, whose field is $5\times4$):

# %%
geom = dict(kernel_size=(3, 2), strides=1, padding=(2, 1, 0, 3), dilation=(2, 3))
wd = dilate_kernel(w, (2, 3)); test_eq(wd.shape, (5, 4, 3, 4)); test_eq(wd[::2, ::3], w)
cols = {be: im2col(x, backend=be, **geom) for be in ('numpy', 'numba', 'cuda')}
for be in ('numba', 'cuda'): test_eq(cols[be], cols['numpy'])
y = (cols['numpy'] @ w.reshape(-1, 4)).reshape(2, 6, 9, 4)       # OH = 7 + 3 - 5 + 1, OW = 9 + 3 - 4 + 1
test_close(y, conv2d_naive_forward(x, wd, None, 1, (2, 1, 0, 3)), eps=1e-5)
dy = r.normal(size=y.shape).astype(np.float32)
dx_ref = conv2d_naive_backward(dy, x, wd, 1, (2, 1, 0, 3))[0]
for be in ('numpy', 'numba', 'cuda'):
    test_close(col2im(dy.reshape(-1, 4) @ w.reshape(-1, 4).T, x.shape, backend=be, **geom), dx_ref, eps=1e-5)
test_eq(im2col(x, 3, padding='same', dilation=2).shape, (2 * 7 * 9, 27))     # 'same' pads the 5x5 field by 2

# %% [markdown]
# Bad input fails early with both shapes in the message:

# %%
test_fail(lambda: im2col(np.zeros((3, 5, 5)), 3), contains='expected x (N, H, W, C) of rank 4, got shape (3, 5, 5)')
test_fail(lambda: im2col(np.zeros((1, 4, 4, 1)), 5, padding=0), contains='5x5 is larger than the padded input 4x4')
test_fail(lambda: col2im(np.zeros((4, 9)), (1, 4, 4, 2), 3), contains='(4, 18)')
test_fail(lambda: maxpool2d_forward(np.zeros((1, 4, 4, 1)), 2, padding=2), contains='smaller than the window')
test_fail(lambda: im2col(np.zeros((1, 4, 4, 1)), 3, backend='tpu'), contains='backend')

# %% [markdown]
# ## Convolution by im2col, a few images at a time
#
# The derivation's three products, $Y = \text{cols}\,W$, $dW = \text{cols}^\top\delta$ and
# $d\,\text{cols} = \delta\,W^\top$ (then col2im), are the im2col path of a convolution layer. Two
# details make it fast. The *bias trick*: the columns get one more column of ones and the weights
# one more row, $b$, so $[\text{cols}\mid 1]\,[W; b] = \text{cols}\,W + b$ and
# $[\text{cols}\mid 1]^\top\delta = [dW; db]$, with no pass of its own for the bias. And *slices*:
# a big batch's columns (75 MB for a $3\times3$, 32-channel layer on 32×32 images at batch 64) are
# written by im2col and read back by each product from memory; built for a few images at a time,
# each slice is multiplied while it is still in cache. `conv2d_im2col_forward` and
# `conv2d_im2col_backward` run the products slice by slice through a work array `cols` that the
# caller keeps (its rows decide the slice: $n$ images of $OH\cdot OW$ rows each). Backward builds
# each slice's columns again from $x$, unless `cols` still holds the whole batch's. The columns'
# gradient $d\,\text{cols}$ may go into `cols` itself: each slice's $dW$ product has read the columns
# before $\delta W^\top$ overwrites them, so a layer needs one work array, not two, and a step's
# products and copies touch half as much memory. The work array may also be wider than the
# products need (rows padded to whole cache lines, 07a); the products read its first $K'$ columns
# through a view, and im2col and col2im leave or ignore the rest.

# %%
#| export
def _im2col_slices(N, cols, rows):
    "(first image, end image, the rows of `cols` for them) for each slice of as many images as `cols` holds."
    n = cols.shape[0] // rows
    for s in range(0, N, n):
        e = min(N, s + n)
        yield s, e, cols[:(e - s) * rows]

def conv2d_im2col_forward(x, Wb, cols, kernel_size, strides=1, padding=0, dilation=1, backend: str = 'auto'):
    """Convolution as products of columns and weights: x (N, H, W, C), Wb (K', F) -> z (N*OH*OW, F) =
    cols(x) @ Wb, with K = KH*KW*C and K' = K, or K + 1 when Wb's last row is the bias and `cols` the work
    array (n*OH*OW, K') whose last column holds ones (the bias trick). `cols` sets the slice: n images at a
    time (n <= N); it may have more columns than K' (rows padded to whole cache lines), of which the products
    read the first K'. `padding` as in `im2col` (explicit or 'same'/'valid')."""
    xp, N = get_array_module(x), x.shape[0]
    kh, kw = _pair(kernel_size, 'kernel_size')
    dh, dw = _pair(dilation, 'dilation')
    OH, OW = _geometry(x.shape, (kh - 1) * dh + 1, (kw - 1) * dw + 1, strides, padding, 'conv2d_im2col_forward')[6:]
    z = xp.empty((N * OH * OW, Wb.shape[1]), x.dtype)
    for s, e, c in _im2col_slices(N, cols, OH * OW):
        c = im2col(x[s:e], kernel_size, strides, padding, backend, out=c, dilation=dilation)
        xp.matmul(c[:, :Wb.shape[0]], Wb, out=z[s * OH * OW:e * OH * OW])
    return z

def conv2d_im2col_backward(dz, cols, Wm, x_shape, kernel_size, strides=1, padding=0, dilation=1,
                           backend: str = 'auto', x=None, need_dx: bool = True, dcols=None, width=None):
    """Gradients of `conv2d_im2col_forward`, in its slices: dz (N*OH*OW, F) -> (dWb (K', F), dx (N, H, W, C)
    or None when not `need_dx`); dWb's last row is db when `cols` carries the ones column. `width`: K', the
    columns of `cols` the products read (default: all of them).
    `x`: None when `cols` still holds the whole batch's columns; else the input, whose columns are built
    again slice by slice. `Wm` (K, F): the kernel without the bias row. `dcols`: an optional work array
    (at least as many rows as `cols`, K columns or more) for the columns' gradient; it may be `cols` itself,
    whose slice the weight gradient has read by then (its columns past K are left as they are)."""
    xp, N, K = get_array_module(dz), x_shape[0], Wm.shape[0]
    rows = dz.shape[0] // N                                              # OH*OW
    if need_dx and dcols is None: dcols = xp.empty((cols.shape[0], K), dz.dtype)
    dW = dx = None
    for s, e, c in _im2col_slices(N, cols, rows):
        if x is not None:                                                # slices: build the columns again
            c = im2col(x[s:e], kernel_size, strides, padding, backend, out=c, dilation=dilation)
        dzc = dz[s * rows:e * rows]
        g = c[:, :width].T @ dzc                                         # [dW; db] with the bias column
        dW = g if dW is None else dW + g
        if need_dx:
            dc = dcols[:(e - s) * rows]
            xp.matmul(dzc, Wm.T, out=dc[:, :K])
            piece = col2im(dc, (e - s, *x_shape[1:]), kernel_size, strides, padding, backend, dilation=dilation)
            if e - s == N: dx = piece
            else:
                if dx is None: dx = xp.empty(x_shape, dz.dtype)
                dx[s:e] = piece
    return dW, dx

# %%
r = np.random.default_rng(2)
xs, ws, bs = r.normal(size=(5, 6, 7, 3)), r.normal(size=(3, 3, 3, 4)), r.normal(size=4)
geom_s = dict(kernel_size=3, strides=(2, 1), padding=(1, 1, 0, 2))
Wb = np.concatenate([ws.reshape(27, 4), bs[None]])
zs = conv2d_naive_forward(xs, ws, bs, (2, 1), (1, 1, 0, 2))
dzs = r.normal(size=zs.shape)
dx_ref, dw_ref, db_ref = conv2d_naive_backward(dzs, xs, ws, (2, 1), (1, 1, 0, 2))
rows = zs.shape[1] * zs.shape[2]
for n in (5, 2):                           # the whole batch in one slice, and slices of 2, 2, 1 images
    cols_s = np.ones((n * rows, 28))       # the last column stays 1: the bias trick
    test_close(conv2d_im2col_forward(xs, Wb, cols_s, **geom_s).reshape(zs.shape), zs, eps=1e-12)
    dWb, dx = conv2d_im2col_backward(dzs.reshape(-1, 4), cols_s, ws.reshape(27, 4), xs.shape, **geom_s,
                                     x=None if n == 5 else xs)
    test_close(dWb[:27].reshape(ws.shape), dw_ref, eps=1e-12); test_close(dWb[27], db_ref, eps=1e-12)
    test_close(dx, dx_ref, eps=1e-12)
test_eq(conv2d_im2col_backward(dzs.reshape(-1, 4), cols_s, ws.reshape(27, 4), xs.shape, **geom_s, x=xs, need_dx=False)[1], None)
for n in (5, 2):                           # a work array with wider rows (32 columns), d cols written over the columns
    cols_w = np.ones((n * rows, 32))
    test_close(conv2d_im2col_forward(xs, Wb, cols_w, **geom_s).reshape(zs.shape), zs, eps=1e-12)
    dWb, dx = conv2d_im2col_backward(dzs.reshape(-1, 4), cols_w, ws.reshape(27, 4), xs.shape, **geom_s,
                                     x=None if n == 5 else xs, dcols=cols_w, width=28)
    test_close(dWb[:27].reshape(ws.shape), dw_ref, eps=1e-12); test_close(dWb[27], db_ref, eps=1e-12)
    test_close(dx, dx_ref, eps=1e-12)
    test_eq(cols_w[:, 27:], np.ones((n * rows, 5)))                    # the ones column (and the padding) kept

# %% [markdown]
# ## Direct convolution for thin layers
#
# im2col pays for its one big product by writing every window out: $K = KH\cdot KW\cdot C$ numbers per
# output pixel. When $C$ and $F$ are small that trade is bad. LeNet's first layer ($C = 1$, $F = 6$,
# $5\times5$) copies 25 numbers per pixel in runs of 5, then multiplies a $(100352\times25)$ matrix
# by a $(25\times6)$ one, a shape BLAS is not built for; the whole layer costs several times PyTorch's.
#
# The direct loop can be made fast instead, for stride 1, by one change of layout. Store each
# channel of the padded image as one flat plane, $\hat x_c[q]$ with $q = h\,W_p + w$ ($W_p$ the
# padded width). Output $(i, j)$ reads $\hat x_c[(i + m) W_p + (j + l)] = \hat x_c[q + m W_p + l]$
# with $q = i W_p + j$, so for a fixed kernel tap $(m, l)$ the whole output image is a *shifted copy of
# the plane*:
#
# $$ z_f[q] = b_f + \sum_{c,m,l} W_{m,l,c,f}\;\hat x_c[q + m W_p + l],\qquad q = 0, \dots, OH\cdot W_p - 1. $$
#
# Each term is one contiguous loop over $q$ (a vectorised multiply-add of about a thousand numbers),
# $KH\cdot KW\cdot C\cdot F$ of them per image. The columns $j \ge OW$ of this padded grid are computed
# and thrown away, a waste of $(W_p - OW)/W_p$ (1/8 for LeNet's first layer). The same shifts give
# the backward pass, with $\hat\delta_f$ the output gradient laid out on the same grid (zero in the
# thrown-away columns):
#
# $$ \frac{\partial L}{\partial W_{m,l,c,f}} = \sum_n \sum_q \hat x_c[q + m W_p + l]\,\hat\delta_f[q],\qquad
#    \frac{\partial L}{\partial \hat x_c}[q + m W_p + l] \mathrel{+}= W_{m,l,c,f}\,\hat\delta_f[q], $$
#
# a dot product per $(m, l, c, f)$, and the adjoint scatter, each again one contiguous loop. The image
# gradient is the scatter's padded planes with the padding cut off. Each image is one parallel task;
# the weight gradient sums one partial result per thread.
#
# This is the CPU path for thin layers only. Its work grows as $C\cdot F$ while im2col's product gets
# *more* efficient as $C\cdot F$ grows, so `Conv2D` chooses it for stride 1 and $C\cdot F \le 32$
# (LeNet's first layer; its second, $C\cdot F = 96$, is faster with im2col on this machine).
#
# With `relu=True` the forward kernel writes $\max(z, 0)$ as it copies its result out, and the backward
# kernels mask $dY$ by $y > 0$ as they lay it onto the padded grid, so the activation costs no pass over
# memory of its own, where separate NumPy passes for the ReLU and its derivative would read and
# write the layer's whole output twice more.

# %%
#| export
def channel_planes(x, padding):
    """x (N, H, W, C) -> (planes, Wp): each image's channels as flat zero-padded planes,
    planes (N, C, (Hp + 1) * Wp) with Hp, Wp the padded height and width (one spare row, so that the
    shifted reads of the direct kernels never leave a plane). `padding` is (top, bottom, left, right)."""
    pt, pb, pl, pr = padding
    N, H, W, C = x.shape
    Hp, Wp = H + pt + pb, W + pl + pr
    planes = np.zeros((N, C, Hp + 1, Wp), x.dtype)
    planes[:, :, pt:pt + H, pl:pl + W] = x.transpose(0, 3, 1, 2)
    return planes.reshape(N, C, (Hp + 1) * Wp), Wp

@njit(parallel=True, cache=True, fastmath={'contract'})
def _direct_forward(planes, Wp, w, b, OH, OW, z, relu):
    N, C, _ = planes.shape
    KH, KW, _, F = w.shape
    L = OH * Wp                                      # the output on the padded grid, flat
    for n in prange(N):
        acc = np.empty((F, L), z.dtype)
        for f in range(F):
            for q in range(L): acc[f, q] = b[f]
        for c in range(C):
            for m in range(KH):
                for l in range(KW):
                    xs = planes[n, c, m * Wp + l:m * Wp + l + L]     # the plane shifted by tap (m, l)
                    for f in range(F):
                        wv = w[m, l, c, f]
                        for q in range(L): acc[f, q] += wv * xs[q]
        for i in range(OH):                          # keep the columns j < OW, as NHWC
            for j in range(OW):
                for f in range(F):
                    v = acc[f, i * Wp + j]
                    z[n, i, j, f] = 0 if relu and v < 0 else v   # a fused ReLU costs nothing here (NaN stays)
    return z

@njit(cache=True, inline='always')
def _to_padded_grid(dz, n, Wp, g, y, relu):
    """g[f, i*Wp + j] = dz[n, i, j, f]: image n's output gradient as F flat rows on the padded grid (other
    entries kept); with `relu`, dz is dL/dy of y = relu(z) and is masked by y > 0 on the way."""
    _, OH, OW, F = dz.shape
    if relu:     # a product, not a branch: a branch on a random mask is mispredicted half the time
        for i in range(OH):
            for j in range(OW):
                for f in range(F): g[f, i * Wp + j] = dz[n, i, j, f] * (y[n, i, j, f] > 0)
    else:
        for i in range(OH):
            for j in range(OW):
                for f in range(F): g[f, i * Wp + j] = dz[n, i, j, f]

# The weight gradient's inner loop is a sum; LLVM vectorises a float sum only if it may reorder it
# ('reassoc'), which changes the rounding as BLAS's blocked sums do, and nothing else.
@njit(parallel=True, cache=True, fastmath={'contract', 'reassoc'})
def _direct_weight_grad(planes, Wp, dz, y, relu, KH, KW, nt, dW, db):
    N, C, _ = planes.shape
    _, OH, OW, F = dz.shape
    L = OH * Wp
    per = (N + nt - 1) // nt
    parts, bparts = np.zeros((nt, KH, KW, C, F), dz.dtype), np.zeros((nt, F), dz.dtype)
    for t in prange(nt):                             # one partial sum per thread, added up at the end
        g = np.zeros((F, L), dz.dtype)               # dz of one image on the padded grid (0 where j >= OW)
        for n in range(t * per, min(N, (t + 1) * per)):
            _to_padded_grid(dz, n, Wp, g, y, relu)
            for f in range(F):
                s = dz.dtype.type(0)
                for q in range(L): s += g[f, q]
                bparts[t, f] += s
            for c in range(C):
                for m in range(KH):
                    for l in range(KW):
                        xs = planes[n, c, m * Wp + l:m * Wp + l + L]
                        for f in range(F):
                            s = dz.dtype.type(0)
                            for q in range(L): s += xs[q] * g[f, q]
                            parts[t, m, l, c, f] += s
    dW[...] = 0; db[...] = 0
    for t in range(nt):
        dW += parts[t]; db += bparts[t]

@njit(parallel=True, cache=True, fastmath={'contract'})
def _direct_input_grad(dz, y, relu, w, Hp, Wp, pt, pl, dx):
    N, OH, OW, F = dz.shape
    KH, KW, C, _ = w.shape
    H, W = dx.shape[1], dx.shape[2]
    L = OH * Wp
    for n in prange(N):
        buf = np.zeros((C, (Hp + 1) * Wp), dz.dtype)   # dL/d(padded planes) of image n
        g = np.zeros((F, L), dz.dtype)
        _to_padded_grid(dz, n, Wp, g, y, relu)
        for c in range(C):
            for m in range(KH):
                for l in range(KW):
                    bs = buf[c, m * Wp + l:m * Wp + l + L]   # the adjoint of the shifted read
                    for f in range(F):
                        wv = w[m, l, c, f]
                        for q in range(L): bs[q] += wv * g[f, q]
        for h in range(H):                           # cut the padding off, back to NHWC
            for x in range(W):
                for c in range(C): dx[n, h, x, c] = buf[c, (h + pt) * Wp + x + pl]

def _direct_geometry(x_shape, w, padding, who):
    if get_array_module(w) is not np:
        raise ValueError(f"{who} runs on the CPU and needs NumPy arrays, got a {type(w).__module__} array")
    check_array(w, 'w (KH, KW, C, F)', ndim=4, finite=False, who=who)
    KH, KW, C, F = w.shape
    if x_shape[3] != C:
        raise ValueError(f"{who} expected x (N, H, W, {C}) to match w of shape {tuple(w.shape)}, got x shape {tuple(x_shape)}")
    return _geometry(x_shape, KH, KW, 1, padding, who)

def conv2d_direct_forward(x, w, b=None, padding=0, relu: bool = False):
    """Stride-1 convolution of x (N, H, W, C) with w (KH, KW, C, F) (+ b (F,)) by shifted planes (Numba, CPU).
    Returns (z, planes, Wp): z (N, OH, OW, F), or relu(z) with `relu=True` (fused: no extra pass);
    planes and Wp, from `channel_planes`, for the backward pass."""
    check_array(x, 'x (N, H, W, C)', ndim=4, finite=False, who='conv2d_direct_forward')
    _, _, pt, pb, pl, pr, OH, OW = _direct_geometry(x.shape, w, padding, 'conv2d_direct_forward')
    dt = np.result_type(x.dtype, w.dtype)
    planes, Wp = channel_planes(np.asarray(x, dt), (pt, pb, pl, pr))
    F = w.shape[3]
    b = np.zeros(F, dt) if b is None else np.asarray(check_array(b, 'b', shape=(F,), finite=False, who='conv2d_direct_forward'), dt)
    z = _direct_forward(planes, Wp, np.ascontiguousarray(w, dt), b, OH, OW, np.empty((x.shape[0], OH, OW, F), dt), bool(relu))
    return z, planes, Wp

def conv2d_direct_backward(dz, planes, Wp, w, x_shape, padding=0, need_dx=True, relu_out=None):
    """Gradients of `conv2d_direct_forward`: dz (N, OH, OW, F) -> (dx (N, H, W, C) or None, dw, db).
    `relu_out`: the forward's output y when it ran with `relu=True`; dz is then dL/dy, masked by y > 0 here."""
    _, _, pt, pb, pl, pr, OH, OW = _direct_geometry(x_shape, w, padding, 'conv2d_direct_backward')
    N, F = x_shape[0], w.shape[3]
    dz = np.ascontiguousarray(check_array(dz, 'dz', shape=(N, OH, OW, F), finite=False, who='conv2d_direct_backward'), planes.dtype)
    relu = relu_out is not None
    y = np.ascontiguousarray(check_array(relu_out, 'relu_out', shape=(N, OH, OW, F), finite=False,
                                         who='conv2d_direct_backward')) if relu else dz
    w = np.ascontiguousarray(w, planes.dtype)
    dw, db = np.empty_like(w), np.empty(F, planes.dtype)
    nt = min(numba.get_num_threads(), N)     # partial sums, one per thread (asked here: not cacheable inside)
    _direct_weight_grad(planes, Wp, dz, y, relu, w.shape[0], w.shape[1], nt, dw, db)
    if not need_dx: return None, dw, db
    dx = np.empty(tuple(x_shape), planes.dtype)
    _direct_input_grad(dz, y, relu, w, x_shape[1] + pt + pb, Wp, pt, pl, dx)
    return dx, dw, db

# %% [markdown]
# The shifted planes compute the naive loops' numbers, forward and backward, on the awkward geometry
# above (stride 1 now: that is all this path does) in float64, and in float32 to round-off:

# %%
for dt, eps in ((np.float64, 1e-10), (np.float32, 2e-4)):
    xd, wd, bd = x.astype(dt), w.astype(dt), r.normal(size=4).astype(dt)
    pads = (1, 0, 2, 1)
    zd, planes, Wp = conv2d_direct_forward(xd, wd, bd, pads)
    test_close(zd, conv2d_naive_forward(xd, wd, bd, 1, pads), eps=eps)
    dzd = r.normal(size=zd.shape).astype(dt)
    dxd, dwd, dbd = conv2d_direct_backward(dzd, planes, Wp, wd, xd.shape, pads)
    for a, ref in zip((dxd, dwd, dbd), conv2d_naive_backward(dzd, xd, wd, 1, pads)): test_close(a, ref, eps=eps)
test_eq(conv2d_direct_backward(dzd, planes, Wp, wd, xd.shape, pads, need_dx=False)[0], None)
# relu fused into the kernels: the same numbers as the ReLU applied, and differentiated, outside
yr, planes, Wp = conv2d_direct_forward(xd, wd, bd, pads, relu=True)
test_eq(yr, np.maximum(zd, 0))
outside = conv2d_direct_backward(dzd * (zd > 0), planes, Wp, wd, xd.shape, pads)
for a, ref in zip(conv2d_direct_backward(dzd, planes, Wp, wd, xd.shape, pads, relu_out=yr), outside): test_eq(a, ref)
test_fail(lambda: conv2d_direct_forward(x, w[:, :, :2], None, 0), contains='to match w of shape (3, 2, 2, 4)')
test_fail(lambda: conv2d_direct_forward(x[0], w), contains='x (N, H, W, C) of rank 4')

# %% [markdown]
# ## Depthwise convolution
#
# A depthwise convolution (chapter 09's MobileNets) filters each input channel $c$ with its own
# `depth_multiplier` $M$ kernels, $W$ of shape $(KH, KW, C, M)$; output channel $cM + q$ comes from
# input channel $c$ alone:
#
# $$ Y_{n,i,j,cM+q} = \sum_{m,l} X_{n,\,s i+m,\,s j+l,\,c}\,W_{m,l,c,q},\quad
#    dW_{m,l,c,q} = \sum_{n,i,j} X_{n,\,s i+m,\,s j+l,\,c}\,\delta_{n,i,j,cM+q},\quad
#    dX_{n,h,w,c} = \sum_{\substack{m,l,i,j:\\ s i+m=h,\ s j+l=w}} \sum_q \delta_{n,i,j,cM+q}\,W_{m,l,c,q} $$
#
# (indices into the padded image). Each channel has only $KH\cdot KW\cdot M$ weights, so there is no
# matrix product for BLAS to do: the work is a loop, and it comes three times again.
#
# * **NumPy reference**: $KH\cdot KW$ broadcast multiply-adds of a strided slice of the padded batch,
#   $(N, OH, OW, C, 1)\cdot(C, M)$, and the same slices for the gradients.
# * **Numba CPU**: forward `prange` over the $N\cdot OH$ output rows, each output pixel summing its
#   taps into a local row of $C M$ numbers (the inner loop runs over contiguous channels); backward
#   `prange` over images, each thread summing into its own partial $dW$ (added up at the end) and
#   gathering its own image's $dX$ pixel by pixel, as col2im does, so no two threads write one number.
# * **Numba CUDA**: one thread per output number forward, one per weight for $dW$, one per input
#   number for $dX$ (a gather, as col2im).

# %%
#| export
def _depthwise_fwd_numpy(x, w, sh, sw, pt, pb, pl, pr, OH, OW):
    xp = get_array_module(x)
    (N, _, _, C), (kh, kw, _, M) = x.shape, w.shape
    xpad = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    y = xp.zeros((N, OH, OW, C, M), x.dtype)
    for m in range(kh):
        for l in range(kw):
            y += xpad[:, m:m + sh * (OH - 1) + 1:sh, l:l + sw * (OW - 1) + 1:sw, :, None] * w[m, l]
    return y.reshape(N, OH, OW, C * M)

def _depthwise_bwd_numpy(dy, x, w, sh, sw, pt, pb, pl, pr, need_dx):
    xp = get_array_module(x)
    (N, H, W, C), (kh, kw, _, M), (OH, OW) = x.shape, w.shape, dy.shape[1:3]
    xpad = xp.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    d5 = dy.reshape(N, OH, OW, C, M)
    dw, dxpad = xp.empty_like(w), xp.zeros_like(xpad) if need_dx else None
    for m in range(kh):
        for l in range(kw):
            win = (slice(None), slice(m, m + sh * (OH - 1) + 1, sh), slice(l, l + sw * (OW - 1) + 1, sw))
            dw[m, l] = xp.einsum('nhwc,nhwcm->cm', xpad[win], d5)
            if need_dx: dxpad[win] += (d5 * w[m, l]).sum(axis=-1)
    return (xp.ascontiguousarray(dxpad[:, pt:pt + H, pl:pl + W]) if need_dx else None), dw

@njit(parallel=True, cache=True)
def _depthwise_fwd_numba(x, w, sh, sw, pt, pl, OH, OW):
    N, H, W, C = x.shape
    kh, kw, _, M = w.shape
    y = np.empty((N, OH, OW, C * M), x.dtype)
    for r in prange(N * OH):
        n, i = r // OH, r % OH
        acc = np.empty(C * M, x.dtype)
        for j in range(OW):
            acc[:] = 0
            for m in range(kh):
                h = i * sh + m - pt
                if h < 0 or h >= H: continue
                for l in range(kw):
                    u = j * sw + l - pl
                    if u < 0 or u >= W: continue
                    if M == 1:                                   # the common case: one contiguous run of C
                        for c in range(C): acc[c] += x[n, h, u, c] * w[m, l, c, 0]
                    else:
                        for c in range(C):
                            for q in range(M): acc[c * M + q] += x[n, h, u, c] * w[m, l, c, q]
            y[n, i, j, :] = acc
    return y

@njit(parallel=True, cache=True)
def _depthwise_bwd_numba(dy, x, w, sh, sw, pt, pl, need_dx):
    N, H, W, C = x.shape
    kh, kw, _, M = w.shape
    OH, OW, CM = dy.shape[1], dy.shape[2], C * M
    dx = np.empty((N if need_dx else 0, H, W, C), x.dtype)
    dw_n = np.empty((N, kh * kw * CM), x.dtype)      # one partial dW per image: no two threads add into one
    for n in prange(N):
        g = np.empty(CM, x.dtype)                      # one tap's sums: a fresh local row the loop can keep close
        for m in range(kh):                            # dW: for each tap, x times dy summed over the image
            for l in range(kw):
                g[:] = 0
                for i in range(OH):
                    h = i * sh + m - pt
                    if h < 0 or h >= H: continue
                    for j in range(OW):
                        u = j * sw + l - pl
                        if u < 0 or u >= W: continue
                        if M == 1:
                            for c in range(C): g[c] += x[n, h, u, c] * dy[n, i, j, c]
                        else:
                            for c in range(C):
                                for q in range(M): g[c * M + q] += x[n, h, u, c] * dy[n, i, j, c * M + q]
                dw_n[n, (m * kw + l) * CM:(m * kw + l + 1) * CM] = g
        if not need_dx: continue
        acc = np.empty(C, x.dtype)
        for h in range(H):                             # dX: a gather per input pixel, as col2im
            for u in range(W):
                acc[:] = 0
                for m in range(kh):
                    i = _window_index(h + pt - m, sh, OH)
                    if i < 0: continue
                    for l in range(kw):
                        j = _window_index(u + pl - l, sw, OW)
                        if j < 0: continue
                        if M == 1:
                            for c in range(C): acc[c] += dy[n, i, j, c] * w[m, l, c, 0]
                        else:
                            for c in range(C):
                                for q in range(M): acc[c] += dy[n, i, j, c * M + q] * w[m, l, c, q]
                dx[n, h, u, :] = acc
    return dx, dw_n.sum(axis=0).reshape(kh, kw, C, M)

def _build_depthwise_cuda_kernels():
    "The depthwise CUDA kernels: forward, dW and dX (built once, by `core.cuda_kernels`)."
    global cuda
    from numba import cuda
    window_index, unravel = device_twin(_window_index), device_twin(_unravel_index4)

    @cuda.jit
    def dw_fwd_k(x, w, y, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, OH, OW, CM = y.shape
        H, W, C = x.shape[1], x.shape[2], x.shape[3]
        kh, kw, M = w.shape[0], w.shape[1], w.shape[3]
        if t >= N * OH * OW * CM: return
        n, i, j, k = unravel(t, OH, OW, CM)
        c, q = k // M, k % M
        acc = x[0, 0, 0, 0] * 0
        for m in range(kh):
            h = i * sh + m - pt
            if h < 0 or h >= H: continue
            for l in range(kw):
                u = j * sw + l - pl
                if u < 0 or u >= W: continue
                acc += x[n, h, u, c] * w[m, l, c, q]
        y[n, i, j, k] = acc

    @cuda.jit
    def dw_dw_k(dy, x, dw, sh, sw, pt, pl):
        t = cuda.grid(1)
        kh, kw, C, M = dw.shape
        N, H, W = x.shape[0], x.shape[1], x.shape[2]
        OH, OW = dy.shape[1], dy.shape[2]
        if t >= kh * kw * C * M: return
        m, l, c, q = unravel(t, kw, C, M)
        acc = x[0, 0, 0, 0] * 0
        for n in range(N):
            for i in range(OH):
                h = i * sh + m - pt
                if h < 0 or h >= H: continue
                for j in range(OW):
                    u = j * sw + l - pl
                    if u < 0 or u >= W: continue
                    acc += x[n, h, u, c] * dy[n, i, j, c * M + q]
        dw[m, l, c, q] = acc

    @cuda.jit
    def dw_dx_k(dy, w, dx, sh, sw, pt, pl):
        t = cuda.grid(1)
        N, H, W, C = dx.shape
        kh, kw, M = w.shape[0], w.shape[1], w.shape[3]
        OH, OW = dy.shape[1], dy.shape[2]
        if t >= N * H * W * C: return
        n, h, u, c = unravel(t, H, W, C)
        acc = dy[0, 0, 0, 0] * 0
        for m in range(kh):
            i = window_index(h + pt - m, sh, OH)
            if i < 0: continue
            for l in range(kw):
                j = window_index(u + pl - l, sw, OW)
                if j < 0: continue
                for q in range(M): acc += dy[n, i, j, c * M + q] * w[m, l, c, q]
        dx[n, h, u, c] = acc

    return dict(fwd=dw_fwd_k, dw=dw_dw_k, dx=dw_dx_k)

def _depthwise_cuda(name):
    "The depthwise CUDA kernel `name`: 'fwd', 'dw' or 'dx'."
    return cuda_kernels('depthwise', _build_depthwise_cuda_kernels)[name]

def _depthwise_geometry(x, w, strides, padding, who):
    check_array(x, 'x (N, H, W, C)', ndim=4, finite=False, who=who)
    if w.ndim != 4 or w.shape[2] != x.shape[3]:
        raise ValueError(f"{who} expected w (KH, KW, {x.shape[3]}, M) to match x of shape {tuple(x.shape)}, "
                         f"got w shape {tuple(w.shape)}")
    return _geometry(x.shape, w.shape[0], w.shape[1], strides, padding, who)

def depthwise_forward(x, w, strides=1, padding=0, backend: str = 'auto'):
    """Depthwise convolution without bias: x (N, H, W, C), w (KH, KW, C, M) -> y (N, OH, OW, C*M), output channel
    c*M + q from input channel c. `padding`: 'valid', 'same', int, (ph, pw) or (top, bottom, left, right)."""
    sh, sw, pt, pb, pl, pr, OH, OW = _depthwise_geometry(x, w, strides, padding, 'depthwise_forward')
    be = resolve_backend(x, backend, 'depthwise_forward')
    if be == 'numpy': return _depthwise_fwd_numpy(x, w, sh, sw, pt, pb, pl, pr, OH, OW)
    if be == 'numba': return _depthwise_fwd_numba(np.ascontiguousarray(x), np.ascontiguousarray(w), sh, sw, pt, pl, OH, OW)
    ka = KernelArrays(be, x)
    y = ka.xp.empty((x.shape[0], OH, OW, x.shape[3] * w.shape[3]), x.dtype)
    launch(_depthwise_cuda('fwd'), y.size, ka.put(x), ka.put(w), y, sh, sw, pt, pl)
    return ka.result(y)

def depthwise_backward(dy, x, w, strides=1, padding=0, backend: str = 'auto', need_dx: bool = True):
    """Gradients of `depthwise_forward`: dy (N, OH, OW, C*M) -> (dx (N, H, W, C) or None when not `need_dx`,
    dw (KH, KW, C, M))."""
    sh, sw, pt, pb, pl, pr, OH, OW = _depthwise_geometry(x, w, strides, padding, 'depthwise_backward')
    check_array(dy, 'dy', shape=(x.shape[0], OH, OW, x.shape[3] * w.shape[3]), finite=False, who='depthwise_backward')
    be = resolve_backend(x, backend, 'depthwise_backward')
    if be == 'numpy': return _depthwise_bwd_numpy(dy, x, w, sh, sw, pt, pb, pl, pr, need_dx)
    if be == 'numba':
        c = np.ascontiguousarray
        dx, dw = _depthwise_bwd_numba(c(dy), c(x), c(w), sh, sw, pt, pl, need_dx)
        return (dx if need_dx else None), dw
    ka = KernelArrays(be, x)
    d_dy = ka.put(dy)
    dw = ka.xp.empty(w.shape, w.dtype)
    launch(_depthwise_cuda('dw'), dw.size, d_dy, ka.put(x), dw, sh, sw, pt, pl)
    if not need_dx: return None, ka.result(dw)
    dx = ka.xp.empty(x.shape, x.dtype)
    launch(_depthwise_cuda('dx'), dx.size, d_dy, ka.put(w), dx, sh, sw, pt, pl)
    return ka.result(dx), ka.result(dw)

# %% [markdown]
# The three agree with each other and with the full convolution whose kernel is zero except where
# output channel $cM + q$ meets input channel $c$:

# %%
r = np.random.default_rng(9)
x = r.normal(size=(2, 7, 6, 3)).astype(np.float32)
for M, s, pad in ((1, 1, 'same'), (2, (2, 1), (1, 0, 2, 1))):
    w = r.normal(size=(3, 2, 3, M)).astype(np.float32)
    wfull = np.zeros((3, 2, 3, 3 * M), np.float32)
    for c in range(3): wfull[:, :, c, c * M:(c + 1) * M] = w[:, :, c]
    pad4 = resolve_padding(pad, (7, 6), (3, 2), s)
    y_ref = conv2d_naive_forward(x.astype(np.float64), wfull.astype(np.float64), None, s, pad4)
    dy = r.normal(size=y_ref.shape).astype(np.float32)
    dx_ref, dwf_ref, _ = conv2d_naive_backward(dy.astype(np.float64), x.astype(np.float64), wfull.astype(np.float64), s, pad4)
    dw_ref = np.stack([dwf_ref[:, :, c, c * M:(c + 1) * M] for c in range(3)], axis=2)
    for be in ('numpy', 'numba', 'cuda'):
        test_close(depthwise_forward(x, w, s, pad, be), y_ref, eps=1e-5)
        dx, dw = depthwise_backward(dy, x, w, s, pad, be)
        test_close(dx, dx_ref, eps=1e-5); test_close(dw, dw_ref, eps=1e-4)
        test_eq(depthwise_backward(dy, x, w, s, pad, be, need_dx=False)[0], None)
test_fail(lambda: depthwise_forward(x, np.zeros((3, 3, 2, 1), np.float32)), contains='w (KH, KW, 3, M) to match x of shape (2, 7, 6, 3), got w shape (3, 3, 2, 1)')

# %% [markdown]
# ## References
#
# * I. Goodfellow, Y. Bengio, A. Courville, *Deep Learning*, MIT Press 2016, ch. 9 (convolution, cross-correlation, pooling); N. Ketkar, *Deep Learning with Python*, Apress 2017, ch. 5 and listing 11-15 (im2col from primitives).
# * CS231n, *Convolutional Neural Networks for Visual Recognition*, Stanford, assignment 2 (naive and fast layers; the gradient-check fixture and the pooling timings reproduced here).
# * K. Chellapilla, S. Puri, P. Simard, "High Performance Convolutional Neural Networks for Document Processing", IWFHR 2006 (convolution unrolled into a matrix product: im2col).
# * S. Lam, A. Pitrou, S. Seibert, "Numba: a LLVM-based Python JIT compiler", LLVM-HPC 2015; Numba documentation, *Supported Python features in CUDA Python* and *The CUDA simulator*.
# * V. Dumoulin, F. Visin, "A guide to convolution arithmetic for deep learning", arXiv:1603.07285 (output sizes, padding, strides, transposed convolution as the adjoint).
