# %% [markdown]
# # Convolution layers
#
# > Convolution layers for NHWC images (`Conv2D`, `DepthwiseConv2D`, `Conv2DTranspose`, `ZeroPadding2D`, `UpSampling2D`) and pooling layers (max, average, L2, global average), on the kernels of chapter 07.
#
# ## Purpose
#
# [Chapter 07](07_convolutions.ipynb) derived the forward and backward pass
# of a convolution and of pooling, and wrote the hot loops (im2col, col2im,
# pooling) three times. This half of the chapter wraps them into layers with
# the `Layer` interface of chapter 05 (`build`, `forward`, `backward`,
# `params`, `grads`), so that chapter 08 can stack them into networks;
# gradient-checks the layers; adds dilation, L2 pooling, depthwise convolution, zero
# padding and global average pooling for the modern nets of chapter 09, and
# transposed convolution and upsampling for the generative ones;
# uses a convolution with hand-made filters as
# image processing; and times the naive loops, the NumPy im2col reference and
# the Numba kernels against each other and against PyTorch.

# %%
#| default_exp conv

# %%
#| hide
# No GPU here: run the CUDA kernels in Numba's simulator. This must happen before numba.cuda is imported.
import os
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()

# %%
#| export
from __future__ import annotations
import threading
from typing import NamedTuple
import numpy as np
from dl_from_scratch.core import check_array, get_array_module, get_dtype, as_rng, resolve_backend, scratch
from dl_from_scratch.layers import Layer, _get_activation, get_regularizer, get_constraint
from dl_from_scratch import init as initializers
from dl_from_scratch.kernels.conv import (conv_output_size, resolve_padding, im2col, col2im, maxpool2d_forward,
    maxpool2d_backward, avgpool2d_forward, avgpool2d_backward, _pair, _pad4, _geometry,
    conv2d_naive_forward, conv2d_naive_backward, pool2d_naive_forward, pool2d_naive_backward,
    conv2d_direct_forward, conv2d_direct_backward, conv2d_im2col_forward, conv2d_im2col_backward,
    depthwise_forward, depthwise_backward)

# %%
#| hide
import time
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad

# %% [markdown]
# ## `Conv2D`
#
# The layer holds a kernel `W` of shape $(KH, KW, C, F)$ (Keras's layout) and
# a bias `b` of shape $(F,)$. Forward is
# $Y = \operatorname{im2col}(X)\,W_{(KH\cdot KW\cdot C)\times F} + b$; it keeps
# the columns for backward (in a workspace reused from batch to batch: the
# columns of a $3\times3$ layer on a batch are tens of megabytes, and a fresh
# array that size per call costs more in page faults than filling it), which is
#
# $$ dW = \text{cols}^\top \delta,\quad db = \textstyle\sum_{\text{rows}} \delta,\quad dX = \operatorname{col2im}(\delta\, W^\top). $$
#
# The bias rides in the product, as in the recurrent kernels of chapter 10 (the *bias trick*): the
# workspace has one more column, set to 1 once when it is made and never written by `im2col`, and
# the weights get $b$ as one more row. Then $[\text{cols}\mid 1]\,[W; b] = \text{cols}\,W + b$ and
# $[\text{cols}\mid 1]^\top\delta = [dW; db]$: one product each way, and no separate pass adding a
# bias of $F$ numbers to every row. With NumPy's broadcasting that pass loops over rows of only $F$
# numbers (6 in LeNet's first layer), which is slow for so little work.
#
# Two more details of the workspace. Its rows are padded to whole 64-byte cache lines
# (`_line_width`: LeNet's second layer has $150 + 1$ columns, kept in rows of 160 numbers), so
# that every row starts at the same place in a cache line and im2col's copies into it are not
# split across lines at a different place in each row; the products read the first $K + 1$
# columns through a view. And backward writes $d\,\text{cols} = \delta W^\top$ over the columns
# once $dW$ has read them: one work array instead of two, half the memory a step runs through. A
# second `backward` after the same `forward` builds the columns again from the input.
#
# The initialiser is Glorot uniform with Keras's fans for a kernel,
# $\text{fan}_\text{in} = KH\cdot KW\cdot C$ and $\text{fan}_\text{out} = KH\cdot KW\cdot F$
# (`init.compute_fans`). `padding` is `'valid'`, `'same'`, an int, a pair or
# a 4-tuple; `'same'` is resolved for each input size, so one layer serves
# images of any height and width with the channel count it was built for.
# An optional activation is fused in, as in Keras.
#
# **Big layers, a few images at a time.** For a 3×3, 32-channel layer on 32×32
# images the columns of a batch of 64 take 75 MB: im2col writes them, and the
# forward product and the weight gradient's product each read them back from
# memory. When a batch's columns would pass `Conv2D.chunk_bytes` (32 MB) on the
# CPU, the layer hands chapter 07's `conv2d_im2col_forward` a work array for a
# few images (about 8 MB) instead of the whole batch, and the kernel builds and
# multiplies one slice at a time, each while it is still in cache; the backward
# pass (`conv2d_im2col_backward`) builds them again, slice by slice, rather than
# keeping them, so im2col runs twice. It keeps about 8 MB rather than 75 MB of
# columns per layer; the last section times it against no slicing and other
# slice sizes. Small layers (LeNet's columns are 8 MB a batch) run in one slice.
#
# **Two paths, one cache.** `forward` takes one of two paths, each with its own
# method: `_forward_im2col` (the derivation above) or `_forward_direct`, the
# shifted-planes kernels of chapter 07 for thin stride-1 layers (`algorithm`
# chooses; `'auto'` takes the direct path where it is faster). Each fills a
# `Conv2DCache`, a named tuple tagged with its path, and `backward` takes the
# matching path back; a slot never holds different things on different paths.

# %%
#| export
def _line_width(k: int, like) -> int:
    """Columns of a work array whose rows hold k numbers: k rounded up to whole 64-byte cache lines on the CPU
    (LeNet's 151 columns of float32 become 160), k on a GPU: a row of 151 numbers would start at a different
    place in its cache line each time, and im2col's copies into it would straddle lines."""
    if get_array_module(like) is not np: return k
    per_line = max(1, 64 // like.dtype.itemsize)
    return -(-k // per_line) * per_line

class Conv2DCache(NamedTuple):
    "What `Conv2D.backward` needs, tagged with the path that filled it: 'empty', 'direct' or 'im2col'."
    path: str
    x_shape: tuple
    padding: tuple            # (top, bottom, left, right)
    z: object = None          # the output before the activation (relu(z) under a fused ReLU), for its derivative
    planes: object = None     # 'direct': the input's zero-padded channel planes (`channel_planes`) ...
    Wp: int = 0               # ... and their padded width
    cols: object = None       # 'im2col': the work array of columns (the whole batch's, or the last slice's) ...
    x: object = None          # ... and the input when it ran in slices: backward builds their columns again
    source: object = None     # ... the input, for a second backward: the first writes d cols over the columns

class Conv2D(Layer):
    """2-D convolution (cross-correlation) over NHWC images.

    x `(N, H, W, C)` -> y `(N, OH, OW, filters)`, OH = floor((H + p_t + p_b - KH) / s_h) + 1;
    `W` `(KH, KW, C, filters)`, `b` `(filters,)`. `padding`: 'valid', 'same', int, (ph, pw) or
    (top, bottom, left, right). `backend`: 'auto' | 'numpy' | 'numba' | 'cuda' for im2col/col2im.
    `algorithm`: 'im2col', 'direct' (shifted planes, Numba on the CPU, stride 1 only) or 'auto': direct for
    stride 1, C*F <= 32 on the Numba backend (thin layers such as LeNet's first), else im2col.
    `dilation_rate` (d_h, d_w): the taps d pixels apart (a field of (KH - 1)*d_h + 1 rows), strides 1 then, as Keras.
    An empty batch gives an empty output and zero gradients. The work arrays kept between batches are per
    thread, so several threads may run `forward` (e.g. `predict`) on one layer at once; training is not
    thread-safe (`cache` and `grads` are the layer's own)."""
    chunk_bytes = 32 * 2**20     # CPU: above this many bytes of columns per batch, im2col works a few images at a time
    chunk_target = 8 * 2**20     # ... of about this many bytes each

    def __init__(self, filters: int, kernel_size, strides=1, padding='valid', activation=None, use_bias: bool = True,
                 kernel_initializer='glorot_uniform', bias_initializer='zeros', kernel_regularizer=None,
                 kernel_constraint=None, rng=None, backend: str = 'auto', algorithm: str = 'auto', dilation_rate=1,
                 name=None):
        super().__init__(name or 'conv2d')      # Keras's default name; Sequential numbers repeats
        if int(filters) < 1: raise ValueError(f"Conv2D expected filters >= 1, got {filters}")
        self.filters, self.kernel_size, self.strides = int(filters), _pair(kernel_size, 'kernel_size'), _pair(strides, 'strides')
        self.dilation_rate = _pair(dilation_rate, 'dilation_rate')
        if self.dilation_rate != (1, 1) and self.strides != (1, 1):
            raise ValueError(f"Conv2D expected strides (1, 1) with dilation_rate {self.dilation_rate}, got strides {self.strides}")
        if algorithm not in ('auto', 'im2col', 'direct'):
            raise ValueError(f"Conv2D expected algorithm 'auto', 'im2col' or 'direct', got {algorithm!r}")
        if algorithm == 'direct' and self.strides != (1, 1):
            raise ValueError(f"Conv2D algorithm='direct' needs strides (1, 1), got {self.strides}")
        if algorithm == 'direct' and self.dilation_rate != (1, 1):
            raise ValueError(f"Conv2D algorithm='direct' needs dilation_rate (1, 1), got {self.dilation_rate}")
        self.algorithm = algorithm
        resolve_padding(padding, (1, 1), 1)                      # validates the spelling now
        self.padding, self.use_bias, self.backend = padding, use_bias, backend
        self.activation = None if activation in (None, 'linear') else activation
        if self.activation is not None: self._g, self._g_grad = _get_activation(self.activation)
        self.kernel_initializer = initializers.get_initializer(kernel_initializer)
        self.bias_initializer = initializers.get_initializer(bias_initializer)
        self.kernel_regularizer = None if kernel_regularizer is None else get_regularizer(kernel_regularizer)
        self.kernel_constraint = None if kernel_constraint is None else get_constraint(kernel_constraint)
        self.rng = as_rng(rng)

    @property
    def field(self):
        "The window the kernel covers: (KH - 1)*d_h + 1 by (KW - 1)*d_w + 1 (the kernel itself when not dilated)."
        return tuple((k - 1) * d + 1 for k, d in zip(self.kernel_size, self.dilation_rate))

    def _pad(self, hw): return resolve_padding(self.padding, hw, self.field, self.strides)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2D expected input of rank 4 (N, H, W, C), got input shape (N, *{tuple(input_shape)})")
        H, W, C = (int(s) for s in input_shape)
        _geometry((1, H, W, C), *self.field, self.strides, self._pad((H, W)), 'Conv2D')
        super().build(input_shape)
        self.add_weight('W', (*self.kernel_size, C, self.filters), self.kernel_initializer,
                        self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias: self.add_weight('b', (self.filters,), self.bias_initializer)

    def output_shape(self, input_shape):
        H, W = int(input_shape[0]), int(input_shape[1])
        pt, pb, pl, pr = self._pad((H, W))
        return (conv_output_size(H, self.field[0], self.strides[0], pt + pb),
                conv_output_size(W, self.field[1], self.strides[1], pl + pr), self.filters)

    def _check(self, x):
        x = check_array(x, 'input', ndim=4, finite=False, who='Conv2D')
        kshape = tuple(self.params['W'].shape)
        if x.shape[3] != kshape[2]:
            raise ValueError(f"Conv2D expected input (N, H, W, {kshape[2]}) to match its kernel of shape {kshape} "
                             f"(KH, KW, C, F), got input shape {tuple(x.shape)}")
        return x if x.dtype == self.dtype else x.astype(self.dtype)

    def _scratch(self) -> dict:
        "The work arrays of the calling thread: concurrent forward passes must not fill each other's columns."
        return super()._scratch().setdefault(threading.get_ident(), {})

    def _workspace(self, name, shape, like, fill=None):
        "A scratch array kept between batches (`core.scratch`): a fresh 100 MB array costs more in page faults than im2col."
        return scratch(self._scratch(), name, shape, like.dtype, get_array_module(like), fill)

    def _direct(self, x) -> bool:
        "Whether this call runs the direct (shifted planes) kernels rather than im2col."
        if self.algorithm != 'auto': return self.algorithm == 'direct'
        return (self.strides == (1, 1) and self.dilation_rate == (1, 1) and x.shape[3] * self.filters <= 32
                and resolve_backend(x, self.backend) == 'numba')

    def forward(self, x, training=False):
        x = self._check(x)
        pad = self._pad(x.shape[1:3])
        if x.shape[0] == 0:                   # an empty batch: an empty output, and zero gradients in backward
            self.cache = Conv2DCache('empty', x.shape, pad)
            return get_array_module(x).zeros((0, *self.output_shape(x.shape[1:3])), x.dtype)
        z = self._forward_direct(x, pad) if self._direct(x) else self._forward_im2col(x, pad)
        return z if self.activation in (None, 'relu') else self._g(z)    # a ReLU is fused into both paths

    def _forward_direct(self, x, pad):
        "z by the shifted-planes kernels of chapter 07 (stride 1, Numba), with the ReLU fused in."
        z, planes, Wp = conv2d_direct_forward(x, self.params['W'], self.params.get('b'), pad,
                                              relu=self.activation == 'relu')
        self.cache = Conv2DCache('direct', x.shape, pad, z, planes=planes, Wp=Wp)
        return z

    def _forward_im2col(self, x, pad):
        "z = [im2col(x) | 1] [W; b] (the bias trick), a few images at a time when the batch's columns are big."
        N, H, W, _ = x.shape
        OH, OW, F = self.output_shape((H, W))
        K, xp = self.params['W'].size // F, get_array_module(x)
        Wm = self.params['W'].reshape(K, F)
        Wb = xp.concatenate([Wm, self.params['b'][None]]) if self.use_bias else Wm
        n = self._images_per_chunk(x, OH * OW * (K + self.use_bias))
        # (n*OH*OW, K), or (n*OH*OW, K + 1) whose column K stays 1: the bias trick; rows padded to cache lines
        cols = self._workspace('cols', (n * OH * OW, _line_width(K + self.use_bias, x)), x,
                               fill=1 if self.use_bias else None)
        z = conv2d_im2col_forward(x, Wb, cols, self.kernel_size, self.strides, pad, self.dilation_rate,
                                  self.backend).reshape(N, OH, OW, F)
        if self.activation == 'relu': z = xp.maximum(z, 0, out=z)  # in place; backward needs only y > 0, which is z > 0
        # one slice: its columns are kept for backward; several: backward builds them again from x
        self.cache = Conv2DCache('im2col', x.shape, pad, z, cols=cols, x=None if n == N else x, source=x)
        return z

    def _images_per_chunk(self, x, per_image: int) -> int:
        "Images per im2col slice: the whole batch, unless its columns pass `chunk_bytes` on the CPU."
        N = x.shape[0]
        if get_array_module(x) is not np or N * per_image * x.itemsize <= self.chunk_bytes: return N
        return max(1, min(N, self.chunk_target // (per_image * x.itemsize)))

    def backward(self, dy, need_dx: bool = True):
        "`need_dx=False` (the model's first layer in training) skips dL/dx (a matmul and col2im) and returns `None`."
        c = self.cache
        if c.path == 'empty':
            xp = get_array_module(dy)
            self.grads.update({k: xp.zeros_like(p) for k, p in self.params.items()})
            return xp.zeros(c.x_shape, dy.dtype) if need_dx else None
        return self._backward_direct(dy, c, need_dx) if c.path == 'direct' else self._backward_im2col(dy, c, need_dx)

    def _backward_direct(self, dy, c, need_dx):
        relu = self.activation == 'relu'      # the kernel masks dy by y > 0 itself
        dz = dy if self.activation is None or relu else dy * self._g_grad(c.z)
        dx, self.grads['W'], db = conv2d_direct_backward(dz, c.planes, c.Wp, self.params['W'], c.x_shape, c.padding,
                                                         need_dx, relu_out=c.z if relu else None)
        if self.use_bias: self.grads['b'] = db
        return dx

    def _backward_im2col(self, dy, c, need_dx):
        relu = self.activation == 'relu'      # c.z is relu(z): y > 0 is z > 0
        dz = dy if self.activation is None else dy * (c.z > 0) if relu else dy * self._g_grad(c.z)
        d2 = dz.reshape(-1, self.filters)                                   # delta as (N*OH*OW, F)
        Wm = self.params['W'].reshape(-1, self.filters)
        K = Wm.shape[0]
        # d cols go into the columns' own work array, which the weight gradient has finished with (its column
        # of ones, past K, stays): half the memory, and what a step touches stays in cache
        dW, dx = conv2d_im2col_backward(d2, c.cols, Wm, c.x_shape, self.kernel_size, self.strides, c.padding,
                                        self.dilation_rate, self.backend, x=c.x, need_dx=need_dx,
                                        dcols=c.cols if need_dx else None, width=K + self.use_bias)
        if need_dx: self.cache = c._replace(x=c.source)     # the columns are gone: build them again if asked
        self.grads['W'] = dW[:K].reshape(self.params['W'].shape)              # [dW; db]: the bias column's row is db
        if self.use_bias: self.grads['b'] = dW[K].copy()
        return dx


# %% [markdown]
# The layer computes what the naive loops compute, its parameter count is
# Keras's ($3\cdot3\cdot3\cdot32 + 32 = 896$ for the first layer of the
# CIFAR-10 net of the build-your-own book), `'same'` keeps the size, and its
# gradients pass the float64 check:

# %%
r = np.random.default_rng(0)
conv = Conv2D(4, (3, 2), strides=(2, 1), padding=(1, 0, 0, 1), rng=0)
x = r.normal(size=(2, 7, 6, 3)).astype(np.float32)
y = conv(x)
test_eq(y.shape, (2, *conv.output_shape((7, 6, 3)))); test_eq(y.dtype, np.float32)
test_close(y, conv2d_naive_forward(x, conv.params['W'], conv.params['b'], (2, 1), (1, 0, 0, 1)), eps=1e-5)
test_eq(Conv2D(32, 3, padding='same', rng=0)(np.zeros((1, 32, 32, 3), np.float32)).shape, (1, 32, 32, 32))
c32 = Conv2D(32, 3); c32.build((32, 32, 3)); test_eq(c32.count_params(), 896)
c = Conv2D(6, 5, strides=2, padding='same'); test_eq(c.output_shape((28, 28, 1)), (14, 14, 6))
# the Glorot limit sqrt(6 / (fan_in + fan_out)) with fan_in = 3*3*3 and fan_out = 3*3*32
test_eq(np.abs(c32.params['W']).max() <= np.sqrt(6 / (27 + 288)), True)

# %%
with precision(np.float64):
    for kw in (dict(kernel_size=3, strides=1, padding='same'), dict(kernel_size=(3, 2), strides=(2, 3), padding=(1, 0, 2, 1)),
               dict(kernel_size=2, strides=3, padding='valid', activation='relu'), dict(kernel_size=4, strides=2, padding='same')):
        errs = check_layer_grad(Conv2D(3, rng=1, **kw), np.random.default_rng(2).normal(size=(2, 7, 8, 2)))
        print(kw, {k: f'{v:.1e}' for k, v in errs.items()})
        assert max(errs.values()) < 1e-6
    for alg in ('im2col', 'direct'):     # both algorithms, on a stride-1 layer with asymmetric padding
        kw = dict(kernel_size=(3, 2), padding=(1, 0, 2, 1), activation='tanh', algorithm=alg)
        errs = check_layer_grad(Conv2D(3, rng=1, **kw), np.random.default_rng(2).normal(size=(2, 7, 8, 2)))
        print(kw, {k: f'{v:.1e}' for k, v in errs.items()})
        assert max(errs.values()) < 1e-6

# %% [markdown]
# `algorithm='auto'` picks the direct kernels of chapter 7 for thin stride-1 layers and im2col for
# the rest; both give the same numbers:

# %%
test_eq(Conv2D(6, 5, padding='same')._direct(np.zeros((1, 28, 28, 1), np.float32)), True)          # LeNet conv1
test_eq(Conv2D(16, 5)._direct(np.zeros((1, 14, 14, 6), np.float32)), False)                        # LeNet conv2
test_eq(Conv2D(6, 5, strides=2)._direct(np.zeros((1, 28, 28, 1), np.float32)), False)
test_eq(Conv2D(6, 5, backend='numpy')._direct(np.zeros((1, 28, 28, 1), np.float32)), False)
xa = np.random.default_rng(3).random((4, 12, 12, 2), dtype=np.float32)
ca, cb = (Conv2D(5, 3, padding='same', activation='relu', rng=0, algorithm=a) for a in ('im2col', 'direct'))
test_close(cb(xa), ca(xa), eps=1e-5)
dya = np.random.default_rng(4).random(ca(xa).shape, dtype=np.float32)
ca(xa); cb(xa)
test_close(cb.backward(dya), ca.backward(dya), eps=1e-5)
for k in ('W', 'b'): test_close(cb.grads[k], ca.grads[k], eps=1e-5 * np.abs(ca.grads[k]).max())   # float32 sums of 576 terms
dxa, dWa = ca.backward(dya), ca.grads['W'].copy()          # backward wrote d cols over the columns: a second one
test_close(ca.backward(dya), dxa, eps=1e-6); test_close(ca.grads['W'], dWa, eps=1e-6)   # builds them again
test_fail(lambda: Conv2D(6, 5, strides=2, algorithm='direct'), contains="algorithm='direct' needs strides (1, 1), got (2, 2)")
test_fail(lambda: Conv2D(6, 5, algorithm='fft'), contains="algorithm 'auto', 'im2col' or 'direct', got 'fft'")

# %% [markdown]
# `dilation_rate` $d$ spreads the taps $d$ pixels apart (chapter 07's dilated im2col): the layer computes
# the convolution with the zero-stuffed kernel, `'same'` pads the dilated field, strides must be 1 as in
# Keras, and the gradients pass the float64 check:

# %%
from dl_from_scratch.kernels.conv import dilate_kernel
r = np.random.default_rng(5)
with precision(np.float64):
    for d, pad in (((2, 2), 'same'), ((3, 1), 'valid'), ((1, 2), (1, 0, 2, 1))):
        cd = Conv2D(3, (3, 2), padding=pad, dilation_rate=d, rng=0)
        x = r.normal(size=(2, 9, 8, 2))
        cd.build(x.shape[1:]); cd.params['b'][...] = r.normal(size=3)
        test_close(cd(x), conv2d_naive_forward(x, dilate_kernel(cd.params['W'], d), cd.params['b'], 1, cd._pad((9, 8))), eps=1e-12)
        errs = check_layer_grad(Conv2D(3, (3, 2), padding=pad, dilation_rate=d, activation='tanh', rng=1), x)
        print(f'Conv2D dilation_rate={d} padding={pad}', {k: f'{v:.1e}' for k, v in errs.items()})
        assert max(errs.values()) < 1e-6
test_eq(Conv2D(4, 3, padding='same', dilation_rate=2).output_shape((9, 8, 2)), (9, 8, 4))
test_eq(Conv2D(4, 3, dilation_rate=2).output_shape((9, 8, 2)), (5, 4, 4))
test_eq(Conv2D(4, 3, dilation_rate=2)._direct(np.zeros((1, 9, 8, 2))), False)
test_fail(lambda: Conv2D(4, 3, strides=2, dilation_rate=2), contains='strides (1, 1) with dilation_rate (2, 2), got strides (2, 2)')
test_fail(lambda: Conv2D(4, 3, dilation_rate=2, algorithm='direct'), contains="needs dilation_rate (1, 1), got (2, 2)")

# %% [markdown]
# Bad input is refused with both shapes in the message: a kernel larger than
# the padded input, a channel count that does not match the kernel, an input
# that is not NHWC.

# %%
test_fail(lambda: Conv2D(2, 5)(np.zeros((1, 4, 4, 1))), contains='5x5 is larger than the padded input 4x4 (input shape (1, 4, 4, 1)')
conv = Conv2D(2, 3); conv.build((8, 8, 3))
test_fail(lambda: conv(np.zeros((1, 8, 8, 1), np.float32)), contains='kernel of shape (3, 3, 3, 2) (KH, KW, C, F), got input shape (1, 8, 8, 1)')
test_fail(lambda: conv(np.zeros((8, 8, 3), np.float32)), contains='rank 4, got shape (8, 8, 3)')
test_fail(lambda: Conv2D(2, 3)(np.zeros((8, 8, 3))), contains='rank 4 (N, H, W, C), got input shape (N, *(8, 3))')
test_fail(lambda: Conv2D(2, 3, padding='full'), contains="'valid', 'same'")

# %% [markdown]
# An empty batch is not an error, as in Keras: the output is empty and the
# gradients are zero. The work arrays kept between batches are kept per
# thread, so several threads may call one trained layer at once (say, a
# server answering requests with `predict`); each gets the numbers it would
# get alone. Training from several threads is not supported: a layer has one
# `cache` and one `grads`.

# %%
import threading
for alg in ('im2col', 'direct'):
    c = Conv2D(3, 3, padding='same', rng=0, algorithm=alg)
    y0 = c(np.zeros((0, 6, 6, 1), np.float32))
    test_eq(y0.shape, (0, 6, 6, 3))
    test_eq(c.backward(y0).shape, (0, 6, 6, 1)); test_eq(c.grads['W'], np.zeros((3, 3, 1, 3), np.float32))
    test_eq(c.backward(y0, need_dx=False), None)
conv = Conv2D(16, 3, padding='same', rng=0, algorithm='im2col')
xs = [np.random.default_rng(i).random((8, 16, 16, 3), dtype=np.float32) for i in range(4)]
alone = [conv(x) for x in xs]
together = [None] * 4
def run(i):
    for _ in range(20): together[i] = conv(xs[i])
threads = [threading.Thread(target=run, args=(i,)) for i in range(4)]
for t in threads: t.start()
for t in threads: t.join()
for a, b in zip(alone, together): test_eq(b, a)

# %% [markdown]
# ## Pooling layers
#
# `MaxPool2D` keeps the winners' offsets in its cache; `AvgPool2D` needs only
# the input shape. `strides` defaults to `pool_size`, and `padding='same'`
# pads as TensorFlow does, the padding never winning a max and never counted
# in an average.

# %%
#| export
class _Pool2D(Layer):
    default_name = 'pool2d'
    def __init__(self, pool_size=2, strides=None, padding='valid', backend: str = 'auto', name=None):
        super().__init__(name or self.default_name)
        self.pool_size = _pair(pool_size, 'pool_size')
        self.strides = self.pool_size if strides is None else _pair(strides, 'strides')
        resolve_padding(padding, (1, 1), 1)
        self.padding, self.backend = padding, backend

    def _pad(self, hw): return resolve_padding(self.padding, hw, self.pool_size, self.strides)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"{type(self).__name__} expected input of rank 4 (N, H, W, C), got input shape (N, *{tuple(input_shape)})")
        H, W, C = (int(s) for s in input_shape)
        _geometry((1, H, W, C), *self.pool_size, self.strides, self._pad((H, W)), type(self).__name__)
        super().build(input_shape)

    def output_shape(self, input_shape):
        H, W, C = (int(s) for s in input_shape)
        pt, pb, pl, pr = self._pad((H, W))
        return (conv_output_size(H, self.pool_size[0], self.strides[0], pt + pb),
                conv_output_size(W, self.pool_size[1], self.strides[1], pl + pr), C)

    def _check(self, x):
        x = check_array(x, 'input', ndim=4, finite=False, who=type(self).__name__)
        if self.input_shape is not None and x.shape[3] != self.input_shape[2]:
            raise ValueError(f"{type(self).__name__} expected input (N, H, W, {self.input_shape[2]}) as built, got input shape {tuple(x.shape)}")
        return x if x.dtype.kind == 'f' else x.astype(get_dtype())

class MaxPool2D(_Pool2D):
    """Max pooling. x `(N, H, W, C)` -> y `(N, OH, OW, C)`; backward routes dy to each window's (first) maximum."""
    default_name = 'max_pooling2d'
    def forward(self, x, training=False):
        x = self._check(x)
        pad = self._pad(x.shape[1:3])
        y, idx = maxpool2d_forward(x, self.pool_size, self.strides, pad, self.backend)
        self.cache = (idx, x.shape, pad)
        return y

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        idx, x_shape, pad = self.cache
        return maxpool2d_backward(dy, idx, x_shape, self.pool_size, self.strides, pad, self.backend)

class AvgPool2D(_Pool2D):
    """Average pooling over the real (unpadded) entries of each window. x `(N, H, W, C)` -> y `(N, OH, OW, C)`."""
    default_name = 'average_pooling2d'
    def forward(self, x, training=False):
        x = self._check(x)
        pad = self._pad(x.shape[1:3])
        self.cache = (x.shape, pad)
        return avgpool2d_forward(x, self.pool_size, self.strides, pad, self.backend)

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        x_shape, pad = self.cache
        return avgpool2d_backward(dy, x_shape, self.pool_size, self.strides, pad, self.backend)

MaxPooling2D, AveragePooling2D = MaxPool2D, AvgPool2D   # Keras's other names

# %%
x = np.random.default_rng(3).normal(size=(2, 9, 7, 3))
test_eq(MaxPool2D()(x), pool2d_naive_forward(x, 2, 2, 'max'))
test_close(AvgPool2D(3, 2)(x), pool2d_naive_forward(x, 3, 2, 'avg'))
test_eq(MaxPool2D(2, padding='same').output_shape((9, 7, 3)), (5, 4, 3))
test_eq(MaxPool2D(2, padding='same')(x).shape, (2, 5, 4, 3))
test_eq(MaxPool2D().count_params(), 0)
with precision(np.float64):
    for cls in (MaxPool2D, AvgPool2D):
        for kw in (dict(), dict(pool_size=3, strides=2), dict(pool_size=3, strides=1, padding='same'), dict(pool_size=2, strides=3)):
            errs = check_layer_grad(cls(**kw), x)
            print(cls.__name__, kw, f"dx rel. error {errs['x']:.1e}")
            assert errs['x'] < 1e-6
test_fail(lambda: MaxPool2D(3)(np.zeros((1, 2, 2, 1))), contains='3x3 is larger than the padded input 2x2')
test_fail(lambda: AvgPool2D()(np.zeros((4, 4, 1))), contains='rank 4')

# %% [markdown]
# On a GPU the same layer runs the CUDA kernels and cuBLAS (CuPy's `@`)
# without leaving the device; here the CUDA kernels run in Numba's simulator
# on NumPy arrays, which is slow but checks the same code:

# %%
x = np.random.default_rng(4).normal(size=(2, 6, 5, 2)).astype(np.float32)
dy = np.random.default_rng(5).normal(size=(2, 3, 3, 4)).astype(np.float32)
outs = {}
for be in ('numpy', 'numba', 'cuda'):
    layer = Conv2D(4, 3, strides=2, padding='same', rng=0, backend=be)
    outs[be] = (layer(x), layer.backward(dy), layer.grads['W'])
for be in ('numba', 'cuda'):
    for a, b in zip(outs[be], outs['numpy']): test_close(a, b, eps=1e-5)

# %% [markdown]
# ## More layers: L2 pooling, depthwise convolution, padding, global average pooling
#
# Four more layers, written plainly in NumPy (CuPy on a GPU), each vectorised over the batch with
# one loop over the kernel's taps. Chapter 09 uses them in modern nets (MobileNet's
# depthwise-separable blocks, a global-average head) and develops the depthwise convolution's own
# kernels.
#
# A window of size $KH\times KW$ touches, for tap $(i, j)$, the padded input rows
# $i, i + s_h, \dots, i + s_h(OH-1)$ and columns $j, j + s_w, \dots$: one strided slice of the whole
# batch. A layer that sums something over its windows loops over the $KH\cdot KW$ taps and adds
# slices; its backward adds the gradient back into the same slices (overlapping windows
# accumulate, as in col2im).

# %%
#| export
def _taps(kernel_size, strides, out_hw):
    "`(i, j, window)` for each kernel tap: `window` slices out the padded input it reads, `(N, OH, OW, C)`."
    (KH, KW), (sh, sw), (OH, OW) = kernel_size, strides, out_hw
    for i in range(KH):
        for j in range(KW):
            yield i, j, (slice(None), slice(i, i + sh * (OH - 1) + 1, sh), slice(j, j + sw * (OW - 1) + 1, sw))

def _zero_pad(x, pad):
    "NHWC `x` padded with zeros by `pad` = (top, bottom, left, right)."
    pt, pb, pl, pr = pad
    return get_array_module(x).pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))

def _unpad(a, pad):
    "The inverse slice of `_zero_pad`: the rows and columns of `a` that came from the input."
    pt, pb, pl, pr = pad
    return a[:, pt:a.shape[1] - pb, pl:a.shape[2] - pr]

# %%
a = np.arange(2 * 5 * 6 * 1).reshape(2, 5, 6, 1)
taps = list(_taps((2, 3), (2, 2), (2, 2)))
test_eq(len(taps), 6)
test_eq(a[taps[5][2]][0, :, :, 0], a[0, 1:4:2, 2:5:2, 0])       # tap (1, 2) reads rows 1, 3 and columns 2, 4
test_eq(_unpad(_zero_pad(a, (1, 0, 2, 3)), (1, 0, 2, 3)), a)
test_eq(_zero_pad(a, (1, 0, 2, 3)).shape, (2, 6, 11, 1))

# %% [markdown]
# **L2 pooling** is the third pooling of chapter 07: $y = \sqrt{\sum_{w} x^2}$ over each window of
# each channel, with $\partial y/\partial x = x/y$. Padding adds zeros, which change no sum of
# squares. Where a window is all zeros $y = 0$ and the derivative is undefined; we pass no gradient
# there (the subgradient 0, which PyTorch's `LPPool2d` also gives at $x = 0$ through its $|x|$).

# %%
#| export
class L2Pool2D(_Pool2D):
    """L2 pooling: the root of the sum of squares over each window of each channel.
    x `(N, H, W, C)` -> y `(N, OH, OW, C)`; backward gives dy * x / y (0 where a window is all zeros)."""
    default_name = 'l2_pooling2d'
    def forward(self, x, training=False):
        x = self._check(x)
        pad = self._pad(x.shape[1:3])
        OH, OW, C = self.output_shape(x.shape[1:])
        xp, x_pad = get_array_module(x), _zero_pad(x, pad)
        s = xp.zeros((x.shape[0], OH, OW, C), x.dtype)
        for _, _, win in _taps(self.pool_size, self.strides, (OH, OW)):
            s += x_pad[win] ** 2
        y = xp.sqrt(s)
        self.cache = (x_pad, y, pad)
        return y

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        x_pad, y, pad = self.cache
        xp = get_array_module(dy)
        g = dy / xp.where(y > 0, y, 1) * (y > 0)        # dL/dy / y, and 0 on all-zero windows
        dx_pad = xp.zeros_like(x_pad)
        for _, _, win in _taps(self.pool_size, self.strides, y.shape[1:3]):
            dx_pad[win] += g * x_pad[win]
        return _unpad(dx_pad, pad)

L2Pooling2D = L2Pool2D

# %%
x = np.random.default_rng(6).normal(size=(2, 7, 6, 3))
naive = np.sqrt(pool2d_naive_forward(x ** 2, 3, 2, 'avg') * 9)        # valid windows: a sum is 9 times the mean
test_close(L2Pool2D(3, 2)(x), naive, eps=1e-12)
test_eq(L2Pool2D(2)(np.full((1, 2, 2, 1), 3.0))[0, 0, 0, 0], 6.0)     # sqrt(4 * 9)
test_eq(L2Pool2D(2, padding='same').output_shape((7, 6, 3)), (4, 3, 3))
with precision(np.float64):
    for kw in (dict(), dict(pool_size=3, strides=2), dict(pool_size=3, strides=1, padding='same'), dict(pool_size=2, strides=3)):
        errs = check_layer_grad(L2Pool2D(**kw), x)
        print('L2Pool2D', kw, f"dx rel. error {errs['x']:.1e}")
        assert errs['x'] < 1e-6
zero = L2Pool2D(2); zero(np.zeros((1, 2, 2, 1)))
test_eq(zero.backward(np.ones((1, 1, 1, 1))), np.zeros((1, 2, 2, 1)))   # an all-zero window passes no gradient
test_fail(lambda: L2Pool2D(3)(np.zeros((1, 2, 2, 1))), contains='3x3 is larger than the padded input 2x2')

# %% [markdown]
# A **depthwise convolution** filters each input channel on its own: channel $c$ is convolved with
# `depth_multiplier` $M$ kernels of $KH\times KW$ and gives output channels $cM, \dots, cM + M - 1$.
# Its kernel is Keras's `(KH, KW, C, M)` and it holds $KH\cdot KW\cdot C\cdot M$ weights (plus
# $C\cdot M$ biases) against $KH\cdot KW\cdot C\cdot F$ for a full convolution; a $1\times1$
# convolution after it mixes the channels (a depthwise-separable convolution). Per tap $(i, j)$,
# with $X^{(ij)}$ the window slice `(N, OH, OW, C)`:
#
# $$ Y_{n,h,w,c,m} = b_{cm} + \sum_{i,j} X^{(ij)}_{n,h,w,c}\,W_{ijcm},\qquad
#    dW_{ijcm} = \sum_{n,h,w} X^{(ij)}_{n,h,w,c}\,\delta_{n,h,w,c,m},\qquad
#    dX^{(ij)}_{n,h,w,c} \mathrel{+}= \sum_m \delta_{n,h,w,c,m}\,W_{ijcm}. $$
#
# No matrix product helps (each channel has its own few weights), so the work is a loop: chapter 07's
# `depthwise_forward` and `depthwise_backward`, whose NumPy reference does $KH\cdot KW$ broadcast
# multiply-adds over the whole batch, beside a Numba CPU and a CUDA kernel (`backend='auto'` picks as
# for `Conv2D`).

# %%
#| export
class DepthwiseConv2D(Layer):
    """Depthwise 2-D convolution over NHWC images: each input channel with its own `depth_multiplier` filters.

    x `(N, H, W, C)` -> y `(N, OH, OW, C * depth_multiplier)` (output channel c*M + m comes from input channel c);
    `W` `(KH, KW, C, depth_multiplier)` (Keras's depthwise kernel), `b` `(C * depth_multiplier,)`.
    `padding`, `strides` and the output size are Conv2D's; `depthwise_regularizer` / `depthwise_constraint`
    act on `W`. `backend`: 'auto' | 'numpy' | 'numba' | 'cuda' (`kernels.conv.depthwise_forward`)."""
    def __init__(self, kernel_size, strides=1, padding='valid', depth_multiplier: int = 1, activation=None,
                 use_bias: bool = True, depthwise_initializer='glorot_uniform', bias_initializer='zeros',
                 depthwise_regularizer=None, depthwise_constraint=None, rng=None, backend: str = 'auto', name=None):
        super().__init__(name or 'depthwise_conv2d')
        self.backend = backend
        if int(depth_multiplier) < 1: raise ValueError(f"DepthwiseConv2D expected depth_multiplier >= 1, got {depth_multiplier}")
        self.kernel_size, self.strides = _pair(kernel_size, 'kernel_size'), _pair(strides, 'strides')
        resolve_padding(padding, (1, 1), 1)
        self.padding, self.depth_multiplier, self.use_bias = padding, int(depth_multiplier), use_bias
        self.activation = None if activation in (None, 'linear') else activation
        if self.activation is not None: self._g, self._g_grad = _get_activation(self.activation)
        self.depthwise_initializer = initializers.get_initializer(depthwise_initializer)
        self.bias_initializer = initializers.get_initializer(bias_initializer)
        self.depthwise_regularizer = None if depthwise_regularizer is None else get_regularizer(depthwise_regularizer)
        self.depthwise_constraint = None if depthwise_constraint is None else get_constraint(depthwise_constraint)
        self.rng = as_rng(rng)

    def _pad(self, hw): return resolve_padding(self.padding, hw, self.kernel_size, self.strides)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"DepthwiseConv2D expected input of rank 4 (N, H, W, C), got input shape (N, *{tuple(input_shape)})")
        H, W, C = (int(s) for s in input_shape)
        _geometry((1, H, W, C), *self.kernel_size, self.strides, self._pad((H, W)), 'DepthwiseConv2D')
        super().build(input_shape)
        M = self.depth_multiplier
        self.add_weight('W', (*self.kernel_size, C, M), self.depthwise_initializer, self.depthwise_regularizer,
                        self.depthwise_constraint)
        if self.use_bias: self.add_weight('b', (C * M,), self.bias_initializer)

    def output_shape(self, input_shape):
        H, W, C = (int(s) for s in input_shape)
        pt, pb, pl, pr = self._pad((H, W))
        return (conv_output_size(H, self.kernel_size[0], self.strides[0], pt + pb),
                conv_output_size(W, self.kernel_size[1], self.strides[1], pl + pr), C * self.depth_multiplier)

    def forward(self, x, training=False):
        x = check_array(x, 'input', ndim=4, finite=False, who='DepthwiseConv2D')
        C = self.params['W'].shape[2]
        if x.shape[3] != C:
            raise ValueError(f"DepthwiseConv2D expected input (N, H, W, {C}) to match its kernel of shape "
                             f"{tuple(self.params['W'].shape)} (KH, KW, C, M), got input shape {tuple(x.shape)}")
        x = x if x.dtype == self.dtype else x.astype(self.dtype)
        N, H, W, _ = x.shape
        pad = self._pad((H, W))
        _geometry(x.shape, *self.kernel_size, self.strides, pad, 'DepthwiseConv2D')
        z = depthwise_forward(x, self.params['W'], self.strides, pad, self.backend)
        if self.use_bias: z += self.params['b']
        self.cache = (x, pad, z)
        return z if self.activation is None else self._g(z)

    def backward(self, dy, need_dx: bool = True):
        "`need_dx=False` skips dL/dx and returns `None`."
        x, pad, z = self.cache
        dz = dy if self.activation is None else dy * self._g_grad(z)
        dx, self.grads['W'] = depthwise_backward(dz, x, self.params['W'], self.strides, pad, self.backend, need_dx)
        if self.use_bias: self.grads['b'] = dz.reshape(-1, dz.shape[-1]).sum(axis=0)
        return dx

# %% [markdown]
# With `depth_multiplier` $M$ the depthwise convolution is a full convolution whose kernel is zero
# except where output channel $cM + m$ meets input channel $c$; that gives a test against `Conv2D`.
# The parameter count is Keras's (MobileNetV2's first depthwise layer, $3\times3$ on 32 channels
# without bias: 288), and the gradients pass the float64 check:

# %%
r = np.random.default_rng(7)
x = r.normal(size=(2, 9, 8, 3))
with precision(np.float64):
    for M, kw in ((1, dict(kernel_size=3, padding='same')), (2, dict(kernel_size=(3, 2), strides=(2, 1), padding=(1, 0, 2, 1)))):
        dw = DepthwiseConv2D(depth_multiplier=M, rng=0, **kw); dw.build(x.shape[1:]); dw.params['b'][...] = r.normal(size=3 * M)
        full = Conv2D(3 * M, rng=0, **kw); full.build(x.shape[1:])
        full.params['W'][...] = 0
        for c in range(3): full.params['W'][:, :, c, c * M:(c + 1) * M] = dw.params['W'][:, :, c]
        full.params['b'][...] = dw.params['b']
        test_close(dw(x), full(x), eps=1e-12)
        test_eq(dw.output_shape(x.shape[1:]), full.output_shape(x.shape[1:]))
        for act in (None, 'tanh'):
            errs = check_layer_grad(DepthwiseConv2D(depth_multiplier=M, activation=act, rng=1, **kw), x)
            print(f'DepthwiseConv2D M={M} {kw} {act}', {k: f'{v:.1e}' for k, v in errs.items()})
            assert max(errs.values()) < 1e-6
d = DepthwiseConv2D(3, padding='same', use_bias=False); d.build((112, 112, 32)); test_eq(d.count_params(), 288)
d = DepthwiseConv2D(3, strides=2, depth_multiplier=2); d.build((9, 9, 4))
test_eq(d.count_params(), 3 * 3 * 4 * 2 + 8); test_eq(d.output_shape((9, 9, 4)), (4, 4, 8))
test_eq(d(np.zeros((1, 9, 9, 4), np.float32)).dtype, np.float32)
d(np.ones((2, 9, 9, 4), np.float32)); test_eq(d.backward(np.ones((2, 4, 4, 8), np.float32), need_dx=False), None)
test_fail(lambda: d(np.zeros((1, 9, 9, 3))), contains='kernel of shape (3, 3, 4, 2) (KH, KW, C, M), got input shape (1, 9, 9, 3)')
test_fail(lambda: DepthwiseConv2D(5)(np.zeros((1, 4, 4, 2))), contains='5x5 is larger than the padded input 4x4')
test_fail(lambda: DepthwiseConv2D(3, depth_multiplier=0), contains='depth_multiplier >= 1, got 0')

# %% [markdown]
# `ZeroPadding2D` pads with zeros as its own layer (Keras's `padding`: an int, `(ph, pw)`, or
# `((top, bottom), (left, right))`; a flat `(top, bottom, left, right)` also works), and
# `GlobalAveragePooling2D` averages each channel over the whole image, `(N, H, W, C)` ->
# `(N, C)`, the classifier head of most nets since Network in Network. Backward slices the padding
# off, and spreads $\delta / (HW)$ over the image.

# %%
#| export
class ZeroPadding2D(Layer):
    """Zero padding of NHWC images. x `(N, H, W, C)` -> `(N, H + top + bottom, W + left + right, C)`.
    `padding`: int, `(ph, pw)`, `((top, bottom), (left, right))` or `(top, bottom, left, right)`."""
    def __init__(self, padding=1, name=None):
        super().__init__(name or 'zero_padding2d')
        if not np.isscalar(padding) and not all(np.isscalar(p) for p in padding):     # ((top, bottom), (left, right))
            try: (pt, pb), (pl, pr) = padding
            except (TypeError, ValueError):
                raise ValueError(f"ZeroPadding2D expected padding ((top, bottom), (left, right)), got {padding!r}") from None
            padding = (pt, pb, pl, pr)
        self.pad = _pad4(padding)

    def output_shape(self, input_shape):
        H, W, C = (int(s) for s in input_shape)
        pt, pb, pl, pr = self.pad
        return (H + pt + pb, W + pl + pr, C)

    def forward(self, x, training=False):
        x = check_array(x, 'input', ndim=4, finite=False, who='ZeroPadding2D')
        return _zero_pad(x, self.pad)

    def backward(self, dy, need_dx: bool = True):
        return _unpad(dy, self.pad) if need_dx else None

class GlobalAveragePooling2D(Layer):
    """Mean over height and width: x `(N, H, W, C)` -> `(N, C)`, or `(N, 1, 1, C)` with `keepdims=True`."""
    def __init__(self, keepdims: bool = False, name=None):
        super().__init__(name or 'global_average_pooling2d')
        self.keepdims = bool(keepdims)

    def output_shape(self, input_shape):
        C = int(input_shape[-1])
        return (1, 1, C) if self.keepdims else (C,)

    def forward(self, x, training=False):
        x = check_array(x, 'input', ndim=4, finite=False, who='GlobalAveragePooling2D')
        self.cache = x.shape
        return x.mean(axis=(1, 2), keepdims=self.keepdims)

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        N, H, W, C = self.cache
        xp = get_array_module(dy)
        return xp.broadcast_to(dy.reshape(N, 1, 1, C) / (H * W), (N, H, W, C)).copy()

GlobalAvgPool2D = GlobalAveragePooling2D

# %%
x = np.random.default_rng(8).normal(size=(2, 5, 4, 3))
zp = ZeroPadding2D(((1, 2), (0, 3)))
test_eq(zp.pad, (1, 2, 0, 3)); test_eq(ZeroPadding2D(2).pad, (2, 2, 2, 2)); test_eq(ZeroPadding2D((1, 2)).pad, (1, 1, 2, 2))
y = zp(x)
test_eq(y.shape, (2, *zp.output_shape((5, 4, 3)))); test_eq(y[:, 1:6, 0:4], x); test_close(y.sum(), x.sum(), eps=1e-12)
test_eq(zp.count_params(), 0)
gap, gapk = GlobalAveragePooling2D(), GlobalAveragePooling2D(keepdims=True)
test_close(gap(x), x.mean(axis=(1, 2))); test_eq(gapk(x).shape, (2, *gapk.output_shape((5, 4, 3))))
for layer in (zp, gap, gapk):
    errs = check_layer_grad(layer, x)
    print(type(layer).__name__, f"dx rel. error {errs['x']:.1e}")
    assert errs['x'] < 1e-6
test_fail(lambda: ZeroPadding2D(-1), contains='non-negative')
test_fail(lambda: ZeroPadding2D(((1, 2), (0,))), contains='((top, bottom), (left, right))')
test_fail(lambda: gap(np.zeros((2, 5, 3))), contains='rank 4')

# %% [markdown]
# ## Transposed convolution and upsampling
#
# The generative nets of later chapters go the other way: from a small map to a larger one.
# **Transposed convolution** is the adjoint of convolution. A convolution with kernel $W$ of shape
# $(KH, KW, F, C)$, stride $s$ and padding $p$ is a linear map $A$ from images $(N, OH, OW, F)$ to
# images $(N, H, W, C)$: $A(y) = \operatorname{im2col}(y)\,W_{(KH\cdot KW\cdot F)\times C}$. Its adjoint
# $A^\top$ is the map with $\langle A(y), x\rangle = \langle y, A^\top(x)\rangle$ for every $y$ and $x$.
# Write $\langle \operatorname{im2col}(y)\,W, x\rangle = \langle \operatorname{im2col}(y), x\,W^\top\rangle$
# (the trace identity) $= \langle y, \operatorname{col2im}(x\,W^\top)\rangle$ (col2im is im2col's adjoint,
# chapter 07), so
#
# $$ A^\top(x) = \operatorname{col2im}\big(x_{(N\cdot H\cdot W)\times C}\,W^\top\big), $$
#
# a map from $(N, H, W, C)$ to $(N, OH, OW, F)$: each input pixel paints a $KH\times KW$ patch of the
# output, weighted by the kernel, and overlapping patches add. This is the input gradient of `Conv2D`
# used as a layer's forward pass, which is what Keras's `Conv2DTranspose` computes (its kernel has
# Keras's shape $(KH, KW, F, C)$, filters before input channels). Its backward pass is then a
# convolution: with $\text{cols} = x\,W^\top$ and $\delta$ the output gradient,
#
# $$ dX = \operatorname{im2col}(\delta)\,W,\qquad dW = \operatorname{im2col}(\delta)^\top x,\qquad
#    db = \textstyle\sum_{n,h,w} \delta_{n,h,w}. $$
#
# The output size follows Keras: $H s + \max(KH - s, 0)$ for `'valid'` ($(H-1)s + KH$ when the kernel is
# at least the stride), $H s$ for `'same'`, and with `output_padding` $o < s$,
# $(H-1)s + KH - 2p + o$ with $p = 0$ (`'valid'`) or $\lfloor KH/2 \rfloor$ (`'same'`). The convolution
# that this is the adjoint of maps that output size back to $H$ with TensorFlow's padding rule,
# $p_\text{total} = \max((H-1)s + KH - OH, 0)$, the smaller half at the top; output rows that no
# window reaches are zero. Since the work is im2col and col2im, the Numba and CUDA kernels of chapter
# 07 run it. The columns $x\,W^\top$ of forward and $\operatorname{im2col}(\delta)$ of backward have
# the same shape, $(N\cdot H\cdot W, KH\cdot KW\cdot F)$, and are never needed at the same time, so
# they share one work array kept between batches (8 MB for 64 images of $8\times8\times64$ through a
# $4\times4$ kernel to 32 filters); col2im starts its sums from the bias rather than adding it in a
# pass of its own; and $db$ is the product of a vector of ones and $\delta$ (`_sum_rows`), which
# reads $\delta$ once at memory speed where NumPy's sum down rows of 32 numbers does not.

# %%
#| export
def transpose_padding(n: int, f: int, s: int, out: int) -> tuple:
    "Padding (before, after) of the convolution from `out` back to `n` (stride s, window f) that a transposed convolution is the adjoint of."
    total = max((n - 1) * s + f - out, 0)
    return total // 2, total - total // 2

def transpose_output_size(n: int, f: int, s: int, padding: str = 'valid', output_padding=None) -> int:
    "Keras's output length of a transposed convolution along one axis."
    if output_padding is None: return n * s + max(f - s, 0) if padding == 'valid' else n * s
    return (n - 1) * s + f - 2 * (f // 2 if padding == 'same' else 0) + output_padding

class Conv2DTranspose(Layer):
    """Transposed 2-D convolution (the adjoint of `Conv2D`) over NHWC images.

    x `(N, H, W, C)` -> y `(N, OH, OW, filters)`, OH = H*s + max(KH - s, 0) ('valid') or H*s ('same'), or
    (H - 1)*s + KH - 2p + o with `output_padding` o (p = 0 or KH // 2); `W` `(KH, KW, filters, C)` (Keras's
    layout), `b` `(filters,)`. Forward is col2im(x W^T), backward im2col of the gradient; `backend` as `im2col`."""
    def __init__(self, filters: int, kernel_size, strides=1, padding='valid', output_padding=None, activation=None,
                 use_bias: bool = True, kernel_initializer='glorot_uniform', bias_initializer='zeros',
                 kernel_regularizer=None, bias_regularizer=None, kernel_constraint=None, bias_constraint=None,
                 rng=None, backend: str = 'auto', name=None):
        super().__init__(name or 'conv2d_transpose')
        if int(filters) < 1: raise ValueError(f"Conv2DTranspose expected filters >= 1, got {filters}")
        self.filters, self.kernel_size, self.strides = int(filters), _pair(kernel_size, 'kernel_size'), _pair(strides, 'strides')
        if padding not in ('valid', 'same'):
            raise ValueError(f"Conv2DTranspose expected padding 'valid' or 'same', got {padding!r}")
        self.output_padding = None
        if output_padding is not None:
            op = (int(output_padding),) * 2 if np.isscalar(output_padding) else tuple(int(o) for o in output_padding)
            if len(op) != 2 or any(not 0 <= o < s for o, s in zip(op, self.strides)):
                raise ValueError(f"Conv2DTranspose expected output_padding in [0, strides) = [0, {self.strides}), "
                                 f"got {output_padding!r}")
            self.output_padding = op
        self.padding, self.use_bias, self.backend = padding, use_bias, backend
        self.activation = None if activation in (None, 'linear') else activation
        if self.activation is not None: self._g, self._g_grad = _get_activation(self.activation)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer
        self.kernel_regularizer, self.bias_regularizer = kernel_regularizer, bias_regularizer
        self.kernel_constraint, self.bias_constraint = kernel_constraint, bias_constraint
        self.rng = as_rng(rng)

    def build(self, input_shape):
        if len(input_shape) != 3:
            raise ValueError(f"Conv2DTranspose expected input of rank 4 (N, H, W, C), got input shape (N, *{tuple(input_shape)})")
        super().build(input_shape)
        self.add_weight('W', (*self.kernel_size, self.filters, int(input_shape[2])), self.kernel_initializer,
                        self.kernel_regularizer, self.kernel_constraint)
        if self.use_bias: self.add_weight('b', (self.filters,), self.bias_initializer, self.bias_regularizer, self.bias_constraint)

    def output_shape(self, input_shape):
        op = self.output_padding or (None, None)
        return (*(transpose_output_size(int(n), f, s, self.padding, o)
                  for n, f, s, o in zip(input_shape[:2], self.kernel_size, self.strides, op)), self.filters)

    def _geometry(self, hw):
        "(OH, OW, F) and the padding (top, bottom, left, right) of the convolution this is the adjoint of."
        out = self.output_shape((*hw, 0))
        pad = sum((transpose_padding(n, f, s, o) for n, f, s, o in zip(hw, self.kernel_size, self.strides, out)), ())
        return out, pad

    def forward(self, x, training=False):
        x = check_array(x, 'input', ndim=4, finite=False, who='Conv2DTranspose')
        kshape = tuple(self.params['W'].shape)
        if x.shape[3] != kshape[3]:
            raise ValueError(f"Conv2DTranspose expected input (N, H, W, {kshape[3]}) to match its kernel of shape "
                             f"{kshape} (KH, KW, F, C), got input shape {tuple(x.shape)}")
        x = x if x.dtype == self.dtype else x.astype(self.dtype)
        N, H, W, C = x.shape
        (OH, OW, F), pad = self._geometry((H, W))
        xp = get_array_module(x)
        cols = self._columns(x)                                                  # (N*H*W, KH*KW*F)
        xp.matmul(x.reshape(-1, C), self.params['W'].reshape(-1, C).T, out=cols)
        z = col2im(cols, (N, OH, OW, F), self.kernel_size, self.strides, pad, self.backend,
                   bias=self.params['b'] if self.use_bias else None)
        self.cache = (x, pad, z)
        return z if self.activation is None else self._g(z)

    def _columns(self, x):
        """The work array of columns, (N*H*W, KH*KW*F), kept between batches and per thread: forward's x W^T,
        then backward's im2col of the gradient (8 MB for 64 images of 8x8x64 through a 4x4 kernel to 32 filters)."""
        ws = self._scratch().setdefault(threading.get_ident(), {})
        return scratch(ws, 'cols', (x.shape[0] * x.shape[1] * x.shape[2], self.params['W'].size // x.shape[3]),
                       x.dtype, get_array_module(x))

    def backward(self, dy, need_dx: bool = True):
        "`need_dx=False` skips dL/dx and returns `None`."
        x, pad, z = self.cache
        dz = dy if self.activation is None else dy * self._g_grad(z)
        C, xp = x.shape[3], get_array_module(dz)
        Wm = self.params['W'].reshape(-1, C)                                     # (KH*KW*F, C)
        dcols = im2col(dz, self.kernel_size, self.strides, pad, self.backend, out=self._columns(x))
        self.grads['W'] = (dcols.T @ x.reshape(-1, C)).reshape(self.params['W'].shape)
        if self.use_bias: self.grads['b'] = _sum_rows(dz.reshape(-1, self.filters))
        return (dcols @ Wm).reshape(x.shape) if need_dx else None

def _sum_rows(a):
    """a (R, F) -> its column sums (F,), as the product ones (R,) @ a: a matrix-vector product reads the rows
    at memory speed, where NumPy's `a.sum(axis=0)` down rows of a few numbers does not."""
    xp = get_array_module(a)
    return xp.ones(a.shape[0], a.dtype) @ a

# %% [markdown]
# The output sizes are Keras's for `'valid'` and `'same'`, strides 1 and 2, with and without
# `output_padding`; the forward pass is `Conv2D`'s input gradient (the adjoint relation, checked as
# $\langle \text{conv}(y), x\rangle = \langle y, \text{conv}^\top(x)\rangle$ and against `Conv2D.backward`);
# the gradients pass the float64 check; and the answer is PyTorch's `conv_transpose2d`'s where PyTorch is
# installed (its padding $p$ crops $p$ rows from each side, which is our symmetric `'same'` case):

# %%
for (H, k, s, pad, op), want in {(8, 4, 2, 'valid', None): 18, (8, 4, 2, 'same', None): 16, (8, 3, 1, 'valid', None): 10,
                                 (8, 3, 1, 'same', None): 8, (8, 1, 2, 'valid', None): 16, (8, 3, 2, 'same', 1): 16,
                                 (8, 3, 2, 'valid', 1): 18, (5, 5, 3, 'same', 2): 15}.items():
    test_eq(Conv2DTranspose(2, k, strides=s, padding=pad, output_padding=op).output_shape((H, H, 3)), (want, want, 2))
r = np.random.default_rng(11)
with precision(np.float64):
    for kw in (dict(kernel_size=4, strides=2, padding='same'), dict(kernel_size=(3, 2), strides=(2, 1), padding='valid'),
               dict(kernel_size=3, strides=2, padding='same', output_padding=1), dict(kernel_size=1, strides=2),
               dict(kernel_size=3, strides=1, padding='same', activation='tanh')):
        ct = Conv2DTranspose(3, rng=0, **kw)
        x = r.normal(size=(2, 5, 4, 2))
        y = ct(x)
        test_eq(y.shape, (2, *ct.output_shape(x.shape[1:])))
        conv = Conv2D(2, ct.kernel_size, strides=ct.strides, padding=ct._geometry(x.shape[1:3])[1], use_bias=False)
        conv.build(y.shape[1:]); conv.params['W'][...] = ct.params['W']
        if 'activation' not in kw:
            v = r.normal(size=y.shape)
            test_close(np.vdot(conv(v), x), np.vdot(v, y - ct.params['b']), eps=1e-10)   # <conv(v), x> = <v, conv^T(x)>
            test_close(conv.backward(x), y - ct.params['b'], eps=1e-12)                   # conv^T is conv's input gradient
        errs = check_layer_grad(Conv2DTranspose(3, rng=1, **kw), x)
        print(f'Conv2DTranspose {kw}', {k: f'{v:.1e}' for k, v in errs.items()})
        assert max(errs.values()) < 1e-6
try:
    import torch
    with precision(np.float64):
        ct = Conv2DTranspose(3, 4, strides=2, padding='same', rng=0); x = r.normal(size=(2, 5, 5, 2)); y = ct(x)
    yt = torch.nn.functional.conv_transpose2d(torch.from_numpy(x).permute(0, 3, 1, 2),
                                              torch.from_numpy(ct.params['W']).permute(3, 2, 0, 1),
                                              torch.from_numpy(ct.params['b']), stride=2, padding=1)
    test_close(y, yt.permute(0, 2, 3, 1).numpy(), eps=1e-12)
except ImportError: pass
a = np.random.default_rng(12).normal(size=(1000, 32)); test_close(_sum_rows(a), a.sum(axis=0), eps=1e-10)
ct = Conv2DTranspose(3, 4, strides=2, padding='same', rng=0); x = r.normal(size=(2, 5, 5, 2)).astype(np.float32)
y = ct(x); dy = r.normal(size=y.shape).astype(np.float32)
dx1 = ct.backward(dy); dW1 = ct.grads['W'].copy()   # forward's and backward's columns share a work array:
test_close(ct.backward(dy), dx1, eps=1e-6); test_close(ct.grads['W'], dW1, eps=1e-6); test_close(ct.forward(x), y, eps=1e-6)
ct = Conv2DTranspose(32, 4, strides=2, padding='same'); ct.build((8, 8, 64)); test_eq(ct.count_params(), 4 * 4 * 32 * 64 + 32)
test_eq(ct.params['W'].shape, (4, 4, 32, 64))
test_eq(ct(np.zeros((1, 8, 8, 64), np.float32)).dtype, np.float32)
test_fail(lambda: ct(np.zeros((1, 8, 8, 3), np.float32)), contains='kernel of shape (4, 4, 32, 64) (KH, KW, F, C), got input shape (1, 8, 8, 3)')
test_fail(lambda: Conv2DTranspose(2, 3, strides=2, output_padding=2), contains='output_padding in [0, strides) = [0, (2, 2)), got 2')
test_fail(lambda: Conv2DTranspose(2, 3, padding=1), contains="padding 'valid' or 'same', got 1")

# %% [markdown]
# **Upsampling** has no weights: `UpSampling2D(size=(s_h, s_w))` repeats each pixel $s_h\times s_w$
# times (`'nearest'`), or interpolates (`'bilinear'`). Keras resizes with `tf.image.resize`, whose
# bilinear rule puts pixel centres at half-integers (`half_pixel_centers=True`, PyTorch's
# `align_corners=False`): output pixel $o$ reads the input at $u = (o + \tfrac12)/s - \tfrac12$, clamped to
# $[0, n-1]$, as $(1-\lambda)\,x_{\lfloor u\rfloor} + \lambda\,x_{\lfloor u\rfloor+1}$ with
# $\lambda = u - \lfloor u \rfloor$. (TensorFlow 1's `resize_images`, with `align_corners=False` and
# `half_pixel_centers=False`, read at $u = o/s$ instead, which shifts the image by a quarter pixel at
# $s = 2$.) Along one axis that is a matrix $A$ of shape $(ns, n)$ with two non-zeros per row, so
# $Y = A_h X A_w^\top$ for each image and channel, and backward is $dX = A_h^\top\,\delta\,A_w$. For
# `'nearest'` backward sums each $s_h\times s_w$ block of $\delta$.

# %%
#| export
def bilinear_matrix(n: int, s: int, dtype=np.float64):
    "(n*s, n) interpolation matrix of bilinear upsampling by s with half-pixel centres (tf.image.resize, PyTorch align_corners=False)."
    u = np.clip((np.arange(n * s) + 0.5) / s - 0.5, 0, n - 1)
    lo = np.floor(u).astype(int)
    hi, lam = np.minimum(lo + 1, n - 1), u - lo
    A = np.zeros((n * s, n), dtype)
    np.add.at(A, (np.arange(n * s), lo), 1 - lam)
    np.add.at(A, (np.arange(n * s), hi), lam)
    return A

class UpSampling2D(Layer):
    """Upsampling of NHWC images by `size` = (s_h, s_w): x `(N, H, W, C)` -> `(N, H*s_h, W*s_w, C)`.
    `interpolation`: 'nearest' (each pixel repeated) or 'bilinear' (half-pixel centres, as Keras)."""
    def __init__(self, size=(2, 2), interpolation: str = 'nearest', name=None):
        super().__init__(name or 'up_sampling2d')
        self.size = _pair(size, 'size')
        if interpolation not in ('nearest', 'bilinear'):
            raise ValueError(f"UpSampling2D expected interpolation 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation

    def output_shape(self, input_shape):
        H, W, C = (int(s) for s in input_shape)
        return (H * self.size[0], W * self.size[1], C)

    def forward(self, x, training=False):
        x = check_array(x, 'input', ndim=4, finite=False, who='UpSampling2D')
        (N, H, W, C), (sh, sw), xp = x.shape, self.size, get_array_module(x)
        if self.interpolation == 'nearest':
            self.cache = (x.shape, None, None)
            return xp.repeat(xp.repeat(x, sh, axis=1), sw, axis=2)
        Ah, Aw = (xp.asarray(bilinear_matrix(n, s, x.dtype)) for n, s in ((H, sh), (W, sw)))
        self.cache = (x.shape, Ah, Aw)
        t = xp.matmul(Ah, x.reshape(N, H, W * C))                                  # rows: (N, OH, W*C)
        return xp.matmul(Aw, t.reshape(N * H * sh, W, C)).reshape(N, H * sh, W * sw, C)   # columns

    def backward(self, dy, need_dx: bool = True):
        if not need_dx: return None
        ((N, H, W, C), Ah, Aw), (sh, sw), xp = self.cache, self.size, get_array_module(dy)
        if self.interpolation == 'nearest': return dy.reshape(N, H, sh, W, sw, C).sum(axis=(2, 4))
        t = xp.matmul(Aw.T, dy.reshape(N * H * sh, W * sw, C))                     # (N*OH, W, C)
        return xp.matmul(Ah.T, t.reshape(N, H * sh, W * C)).reshape(N, H, W, C)

# %% [markdown]
# Nearest repeats, bilinear keeps a constant image constant and a linear ramp linear away from the
# borders, both agree with PyTorch's `interpolate` (where installed), and both pass the float64
# gradient check:

# %%
x = np.arange(4.).reshape(1, 2, 2, 1)
test_eq(UpSampling2D(2)(x)[0, :, :, 0], [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3], [2, 2, 3, 3]])
print(UpSampling2D(2, 'bilinear')(x)[0, :, :, 0])
test_close(UpSampling2D(2, 'bilinear')(x)[0, :, :, 0], [[0, .25, .75, 1], [.5, .75, 1.25, 1.5], [1.5, 1.75, 2.25, 2.5], [2, 2.25, 2.75, 3]])
test_close(UpSampling2D((2, 3), 'bilinear')(np.full((2, 3, 4, 2), 7.)), np.full((2, 6, 12, 2), 7.), eps=1e-12)
test_close(bilinear_matrix(5, 2) @ np.arange(5.), [0, .25, .75, 1.25, 1.75, 2.25, 2.75, 3.25, 3.75, 4])
x = np.random.default_rng(12).normal(size=(2, 5, 4, 3))
for kw in (dict(size=2), dict(size=(3, 2), interpolation='bilinear'), dict(size=(1, 3), interpolation='nearest'),
           dict(size=2, interpolation='bilinear')):
    up = UpSampling2D(**kw)
    test_eq(up(x).shape, (2, *up.output_shape(x.shape[1:])))
    errs = check_layer_grad(up, x)
    print(f'UpSampling2D {kw}', f"dx rel. error {errs['x']:.1e}")
    assert errs['x'] < 1e-6
try:
    import torch
    for mode in ('nearest', 'bilinear'):
        yt = torch.nn.functional.interpolate(torch.from_numpy(x).permute(0, 3, 1, 2), scale_factor=(3, 2), mode=mode,
                                             **({} if mode == 'nearest' else dict(align_corners=False)))
        test_close(UpSampling2D((3, 2), mode)(x), yt.permute(0, 2, 3, 1).numpy(), eps=1e-12)
except ImportError: pass
test_eq(UpSampling2D(2, 'bilinear')(np.zeros((1, 3, 3, 2), np.float32)).dtype, np.float32)
test_fail(lambda: UpSampling2D(2, 'bicubic'), contains="'nearest' or 'bilinear', got 'bicubic'")
test_fail(lambda: UpSampling2D(0), contains='size must be a positive int')

# %% [markdown]
# ## Convolution as image processing
#
# Before any learning, a convolution with a hand-made kernel is a classic
# image filter. The course notes' example: a $6\times6$ image whose left half
# is 10 and right half 0, and the vertical-edge kernel
# $\begin{pmatrix}1&0&-1\\1&0&-1\\1&0&-1\end{pmatrix}$. Every row of the
# $4\times4$ output is $[0, 30, 30, 0]$: a bright band where the light-to-dark
# edge is. Mirror the image (dark to light) and the band becomes $-30$. Sobel
# ($1,2,1$ weights) and Scharr ($3,10,3$) are the same detector with more
# weight on the centre row; on the step they give 40 and 160. (The course
# notes print Sobel as $[[1,0,-1],[2,0,2],[1,0,-1]]$; the middle row is
# $[2,0,-2]$.)

# %%
def filter_layer(kernels, bias=None, padding='valid'):
    "A Conv2D whose filters are the given (KH, KW, C) arrays (float64), stacked as its F filters."
    K = np.stack([np.asarray(k, float).reshape(*np.shape(k)[:2], -1) for k in kernels], axis=-1)
    with precision(np.float64):
        layer = Conv2D(K.shape[-1], K.shape[:2], padding=padding); layer.build((K.shape[0], K.shape[1], K.shape[2]))
    layer.params['W'][...] = K
    layer.params['b'][...] = 0 if bias is None else bias
    return layer

# %%
step = np.zeros((1, 6, 6, 1)); step[:, :, :3] = 10
vertical = np.array([[1, 0, -1]] * 3)
sobel_x = np.array([[1, 0, -1], [2, 0, -2], [1, 0, -1]]); scharr_x = np.array([[3, 0, -3], [10, 0, -10], [3, 0, -3]])
edges = filter_layer([vertical, sobel_x, scharr_x])
out, out_neg = edges(step), edges(step[:, :, ::-1])
print('image:\n', step[0, :, :, 0].astype(int))
print('vertical edge filter:\n', out[0, :, :, 0].astype(int))
print('mirrored image:\n', out_neg[0, :, :, 0].astype(int))
test_eq(out[0, :, :, 0], np.tile([0, 30, 30, 0], (4, 1)))
test_eq(out_neg[0, :, :, 0], np.tile([0, -30, -30, 0], (4, 1)))
test_eq(out[0, 0, :, 1], [0, 40, 40, 0]); test_eq(out[0, 0, :, 2], [0, 160, 160, 0])

# %% [markdown]
# On a real photograph (Matplotlib's sample image of Grace Hopper, $512\times600$
# RGB). First the mini-project report's two-filter layer: filter 0 turns the
# image grey (centre taps 0.3 R, 0.6 G, 0.1 B), filter 1 is a horizontal-edge
# Sobel kernel on the blue channel with bias 128; both with `padding=1`.
# Then, on the grey image, the horizontal and vertical Sobel and Scharr
# responses and the gradient magnitude $\sqrt{G_x^2+G_y^2}$.

# %%
import matplotlib.cbook as cbook
from PIL import Image
with cbook.get_sample_data('grace_hopper.jpg') as f: photo = np.asarray(Image.open(f).convert('RGB'), dtype=np.float64)
print('photo', photo.shape)
grey_k = np.zeros((3, 3, 3)); grey_k[1, 1] = [0.3, 0.6, 0.1]
sobel_blue = np.zeros((3, 3, 3)); sobel_blue[:, :, 2] = [[1, 2, 1], [0, 0, 0], [-1, -2, -1]]
report_layer = filter_layer([grey_k, sobel_blue], bias=[0, 128], padding=1)
y2 = report_layer(photo[None])[0]
grey = y2[..., :1]
test_close(grey[..., 0], photo @ [0.3, 0.6, 0.1])
bank = filter_layer([sobel_x, sobel_x.T, scharr_x, scharr_x.T], padding='same')
g = bank(grey[None])[0]
sobel_mag, scharr_mag = np.hypot(g[..., 0], g[..., 1]), np.hypot(g[..., 2], g[..., 3])
# Scharr is Sobel's job with rounder weights: the two magnitude maps are nearly proportional
print(f"corr(Sobel magnitude, Scharr magnitude) = {np.corrcoef(sobel_mag.ravel(), scharr_mag.ravel())[0, 1]:.4f}")
assert np.corrcoef(sobel_mag.ravel(), scharr_mag.ravel())[0, 1] > 0.98

def show(a): return (a - a.min()) / (np.ptp(a) + 1e-12)
fig, axs = plt.subplots(2, 4, figsize=(14, 7.5))
panels = [(photo / 255, 'original'), (show(y2[..., 0]), 'grey (0.3, 0.6, 0.1)'), (show(y2[..., 1]), 'Sobel on blue, bias 128'),
          (show(sobel_mag), 'Sobel magnitude'), (show(g[..., 0]), 'Sobel $G_x$ (vertical edges)'),
          (show(g[..., 1]), 'Sobel $G_y$ (horizontal edges)'), (show(g[..., 2]), 'Scharr $G_x$'), (show(scharr_mag), 'Scharr magnitude')]
for ax, (im, title) in zip(axs.ravel(), panels):
    ax.imshow(im, cmap=None if im.ndim == 3 else 'gray'); ax.set_title(title); ax.axis('off')
plt.tight_layout(); plt.show()

# %% [markdown]
# ## How fast: naive loops, NumPy im2col, Numba
#
# The report timed CS231n's naive max pool against its Cython "fast" one on
# `x` of $100\times3\times32\times32$ (2×2, stride 2): 0.1336 s against 0.0030 s
# forward (44.8x) and 0.4047 s against 0.0100 s backward (40.6x). We time
# the same pooling, and a convolution on the same input (25 filters of
# $3\times3$, stride 2, pad 1: CS231n's fast-conv test, whose timings the
# report does not show), with the naive loops, the NumPy im2col reference and
# the Numba kernels, float32, median of 5 runs (the naive loops: one run).
# This machine has 2 cores (the load average is printed), so the figures
# are noisy; the ratios are what to read. A parallel Numba kernel suffers
# most from anything else running: when one of its two threads is
# descheduled the other waits at the end of the parallel loop, so the table
# also gives the Numba kernels on one thread ("1T"). The worst such
# neighbour was in this process: OpenBLAS's idle threads spin for a tenth of
# a second after every matrix product, and a kernel run right after a
# product (col2im after $dX_{col} = \delta W^T$) ran several times slower
# until `OPENBLAS_THREAD_TIMEOUT=4` sent them to sleep at once (chapter 00,
# "Threads").

# %%
#| slow
def median_time(fn, repeat=5):
    fn(); ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return float(np.median(ts))

r = np.random.default_rng(0)
x = r.standard_normal((100, 32, 32, 3), dtype=np.float32)
w = (0.1 * r.standard_normal((3, 3, 3, 25))).astype(np.float32); b = np.zeros(25, np.float32)
dy = r.standard_normal((100, 16, 16, 25), dtype=np.float32)
layers_ = {be: Conv2D(25, 3, strides=2, padding=1, backend=be) for be in ('numpy', 'numba')}
for l in layers_.values(): l.build((32, 32, 3)); l.params['W'][...] = w
dyp = r.standard_normal((100, 16, 16, 3), dtype=np.float32)
_, idx = maxpool2d_forward(x, 2)
rows = {
    'conv forward':    [lambda: conv2d_naive_forward(x, w, b, 2, 1)] + [lambda l=l: l.forward(x) for l in layers_.values()],
    'conv backward':   [lambda: conv2d_naive_backward(dy, x, w, 2, 1)] + [lambda l=l: (l.forward(x), l.backward(dy)) for l in layers_.values()],
    'max pool forward':  [lambda: pool2d_naive_forward(x, 2, 2, 'max')] + [lambda be=be: maxpool2d_forward(x, 2, backend=be) for be in ('numpy', 'numba')],
    'max pool backward': [lambda: pool2d_naive_backward(dyp, x, 2, 2, 'max')] + [lambda be=be: maxpool2d_backward(dyp, idx, x.shape, 2, backend=be) for be in ('numpy', 'numba')],
}
import numba
timing = {k: [median_time(fns[0], 1)] + [median_time(f) for f in fns[1:]] for k, fns in rows.items()}
nthreads = numba.get_num_threads(); numba.set_num_threads(1)          # the Numba kernels again, on one thread
for k, fns in rows.items(): timing[k].append(median_time(fns[2]))
numba.set_num_threads(nthreads)
for i in range(1, 4):   # backward alone: the backward rows ran forward + backward
    timing['conv backward'][i] -= timing['conv forward'][i]
report = {'max pool forward': (0.133607, 0.002985), 'max pool backward': (0.404671, 0.009974)}
print(f"load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; Numba threads: {nthreads}")
print(f"{'x 100x32x32x3, float32':<20}{'naive ms':>10}{'NumPy ms':>10}{'Numba ms':>10}{'Numba 1T':>10}{'naive/NumPy':>12}{'naive/Numba':>12}"
      f"{'naive/1T':>10}   report: naive -> Cython")
for k, (tn, tp, tb, t1) in timing.items():
    rep = f"   {report[k][0]*1e3:.1f} -> {report[k][1]*1e3:.2f} ms = {report[k][0]/report[k][1]:.1f}x" if k in report else ''
    print(f"{k:<20}{tn*1e3:>10.1f}{tp*1e3:>10.2f}{tb*1e3:>10.2f}{t1*1e3:>10.2f}{tn/tp:>11.1f}x{tn/tb:>11.1f}x{tn/t1:>9.1f}x{rep}")
# the fast versions compute the same numbers
test_close(layers_['numba'].forward(x), conv2d_naive_forward(x, w, b, 2, 1), eps=1e-4)
test_eq(maxpool2d_forward(x, 2)[0], pool2d_naive_forward(x, 2, 2, 'max'))

# %% [markdown]
# **Slices of im2col.** The 3×3, 32-to-64-channel layer at batch 64 (75 MB of
# columns), forward + backward, median of 9 runs, with the whole batch's columns
# at once and with slices of about 2.5, 8 (the default) and 24 MB:

# %%
#| slow
x33 = np.random.default_rng(0).standard_normal((64, 32, 32, 32), dtype=np.float32)
dy33 = np.random.default_rng(1).standard_normal((64, 32, 32, 64), dtype=np.float32)
slicing = {}
for label, target in [('whole batch', None), ('2.5 MB slices', 2.5 * 2**20), ('8 MB slices', 8 * 2**20), ('24 MB slices', 24 * 2**20)]:
    layer = Conv2D(64, 3, padding='same', rng=0, algorithm='im2col')
    if target is None: layer.chunk_bytes = np.inf                      # never slice
    else: layer.chunk_target = int(target)
    layer(x33)
    slicing[label] = median_time(lambda: (layer.forward(x33), layer.backward(dy33)), repeat=9)
    kept = max(a.nbytes for a in layer._scratch().values())
    print(f"{label:14} {slicing[label] * 1e3:6.1f} ms   largest work array kept: {kept / 2**20:5.1f} MB")
print(f'load average while timing: {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores')

# %% [markdown]
# ## Against PyTorch
#
# `benchmarks/conv.py` (run by `make bench`) times forward + backward of
# three layers (LeNet's two, and a 3×3, 32-to-64-channel layer on 32×32
# images at batch 64), float32, on the CPU, with the same thread count for
# PyTorch's `conv2d` as for Numba, and relates our GFLOP/s to this machine's
# NumPy float32 matmul rate. (PyTorch is used here only as a stopwatch
# reference; the package never imports it.) It runs twice: with Numba's
# default thread count, and with one thread for Numba, OpenBLAS and PyTorch,
# which on a shared machine gives the steadier figures. Our layer chooses its
# algorithm as in training (`algorithm='auto'`): the direct kernels of chapter 7
# for LeNet's first layer ($C\cdot F = 6$), im2col for the other two, whose
# *GEMMs* column is the floor of any im2col layer (its three products alone).
# PyTorch runs in a fresh process of its own: OpenMP is one library per process,
# and the short idle spin this package sets for its kernels (`00_init`) makes
# PyTorch slower. A second table times the other convolution layers the same
# way: a depthwise $3\times3$ on 32 channels at $32\times32$ (PyTorch's `conv2d`
# with `groups=C`) and a `Conv2DTranspose` from 64 to 32 channels, $4\times4$,
# stride 2, $8\times8$ to $16\times16$ (PyTorch's `conv_transpose2d`), both at
# batch 64, with our Numba kernels and with the NumPy reference.

# %%
#| slow
import importlib.util, pathlib
root = next(p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / 'benchmarks' / 'conv.py').exists())
spec = importlib.util.spec_from_file_location('bench_conv', root / 'benchmarks' / 'conv.py')
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
bench_rows = bench.main(repeat=5)                       # Numba's default threads (2 here), torch the same
bench_rows_1t = bench.main(repeat=5, naive=False, threads=1)   # one thread each: steadier on a shared machine
