# %% [markdown]
# # Attention kernels: fused softmax and layer normalisation on CPU threads and CUDA
#
# > The hot loops of the transformer outside its matrix products, three ways proven equal: the row softmax of attention (scale, padding and causal masks, fully masked rows give zeros) and its backward, and layer normalisation forward and backward, as Numba CPU kernels (one pass per row, rows in parallel, a bit-level float32 exp) and Numba CUDA kernels (one thread per row), beside chapter 13's NumPy references.
#
# ## Purpose
#
# Chapter 13 builds multi-head attention and the transformer blocks from batched
# matrix products, with no Python loop over heads or positions. Between the
# products sit two computations that NumPy can only write as a chain of whole-array
# operations: the **masked softmax** of the attention scores and **layer
# normalisation**. Each NumPy operation reads and writes the whole array, so the
# masked softmax of scores $(N, h, T_q, T_k) = (32, 4, 128, 128)$ (two million
# numbers, 8 MB in float32) walks 8 MB some ten times: `where` for the mask, the
# maximum, a subtraction, `exp`, a sum, a division. A kernel that takes one row at a
# time reads it once, keeps it in the L1 cache (128 numbers) while it computes the
# maximum, the exponentials and their sum, and writes it once.
#
# This notebook writes those kernels as chapter 07 did for im2col and chapter 16a
# for routing:
#
# * the **NumPy references** are chapter 13's (`masked_softmax`, `softmax_vjp`,
#   `layer_norm_reference` and its backward): the text there derives them;
# * **Numba CPU kernels**: the same equations as scalar loops over one row,
#   rows in parallel (`prange`);
# * **Numba CUDA kernels**: one thread per row, from the same per-row source
#   (`per_element` and `device_twin`, chapter 00).
#
# Chapter 13's layers call these kernels by default (`backend='auto'`: the Numba
# kernels for NumPy arrays, the CUDA kernels for CuPy arrays) and keep the
# reference as `backend='numpy'`. The last section times both at the size of the
# attention benchmark.

# %%
#| default_exp kernels.attention

# %%
#| export
from __future__ import annotations
import math
import numpy as np
from numba import njit, prange
from dl_from_scratch.core import (check_array, resolve_backend, KernelArrays, cuda_kernels, launch, per_element,
                                  device_twin)

# %%
#| hide
import time
from dl_from_scratch.core import simulate_cuda_without_gpu, set_num_threads, openblas_threads
simulate_cuda_without_gpu()   # no GPU: run the CUDA kernels in Numba's simulator
from fastcore.test import test_eq, test_fail, test_close
from dl_from_scratch.attention import masked_softmax, causal_mask, layer_norm_reference, layer_norm_reference_backward
from dl_from_scratch.functional import softmax_vjp
set_num_threads(2)

# %% [markdown]
# ## 1. The equations, row by row
#
# **Softmax of the scores.** For one row $s\in\mathbb R^{T_k}$ of the scores
# $S = QK^\top$ (one query of one head of one sequence), a scale $c = 1/\sqrt{d_k}$
# and the set $J$ of allowed keys (the padding mask, and $j\le i$ under the causal
# mask):
#
# $$m = \max_{j\in J} s_j,\qquad e_j = \exp\big(c\,(s_j - m)\big)\ (j\in J),\quad e_j = 0\ (j\notin J),\qquad
#   p_j = e_j \Big/ \sum_k e_k .$$
#
# Subtracting the maximum keeps every exponent $\le 0$, so nothing overflows, and one
# allowed $e_j$ is $\exp(0) = 1$, so the sum is at least 1. A row with no allowed key
# ($J$ empty) has a sum of 0; chapter 13 gives it all-zero weights, and so do the
# kernels. Folding the scale into the kernel ($c\,(s_j - m)$ rather than a
# multiplication of the whole array before it) saves one pass over the scores. Under
# the causal mask, key $j$ of query $i$ is allowed only for $j\le i$: the kernel stops
# the row at $i+1$ and writes zeros after it, which halves the exponentials.
#
# **Its backward.** With $\bar p = \partial L/\partial p$ for one row (chapter 01's
# `softmax_vjp`, times the scale):
#
# $$\bar s_j = c\,p_j\Big(\bar p_j - \sum_k p_k\,\bar p_k\Big).$$
#
# One dot product of the row, then one elementwise pass. A masked $p_j$ is 0, so its
# score gets no gradient.
#
# **Layer normalisation** of one row $x\in\mathbb R^D$ with $\gamma, \beta\in\mathbb R^D$:
#
# $$\mu = \tfrac1D\textstyle\sum_j x_j,\quad \sigma^2 = \tfrac1D\sum_j (x_j-\mu)^2,\quad
#   s = 1/\sqrt{\sigma^2+\epsilon},\quad \hat x_j = (x_j-\mu)\,s,\quad y_j = \gamma_j\hat x_j + \beta_j,$$
#
# and backward, with $g_j = \gamma_j\,\partial L/\partial y_j$ (chapter 13, section 4):
#
# $$\frac{\partial L}{\partial x_j} = s\Big(g_j - \overline{g} - \hat x_j\,\overline{g\hat x}\Big),\qquad
#   \frac{\partial L}{\partial\gamma} = \sum_{\text{rows}} \frac{\partial L}{\partial y}\odot\hat x,\qquad
#   \frac{\partial L}{\partial\beta} = \sum_{\text{rows}} \frac{\partial L}{\partial y}.$$
#
# The row statistics take two passes over the row (the mean, then the centred
# squares: the one-pass $\overline{x^2}-\mu^2$ cancels badly when $|\mu|\gg\sigma$), both
# in the L1 cache. The two parameter gradients are sums over rows, not rows: the CPU
# kernel gives each thread a block of rows and its own partial sums, added at the
# end; the CUDA kernel sums each column in a second launch.
#
# ## 2. The per-row steps, written once
#
# The kernels work on scores reshaped to four axes $(B, H, T_q, T_k)$ and on a boolean
# mask of four axes, each of length 1 (broadcast) or the scores' length; `_mask4`
# below makes both. The steps of one row $(b, h, i)$, compiled for the CPU kernels
# (inlined) and as CUDA device functions:
#
# * `_softmax_shift`: $m$ over the allowed keys, then $c\,(s_j - m)$ at allowed keys
#   and $-\infty$ at the others; returns where the row ends ($i + 1$ under the causal mask);
# * the exponentials, in place (next section);
# * `_softmax_normalise`: the sum, the division, zeros after the row's end (an
#   all-masked row sums to 0 and becomes all zeros);
# * `_softmax_backward_row`: $\bar s$ from $p$ and $\bar p$, in place if asked;
# * `_layer_norm_row` and `_layer_norm_backward_row`: one row of each pass;
#   `_column_sums`: one column of the parameter gradients over a block of rows.
#
# Every step starts its sums from float32 constants, so that float32 arrays are computed
# in float32 (twice as many numbers per vector instruction as float64) and float64
# arrays in float64; the caller passes the scale and $\epsilon$ in the arrays' dtype.
# The variance is the mean of the centred squares, so float32 loses nothing to
# cancellation.

# %%
#| export
@per_element
def _softmax_shift(b, h, i, S, mask, causal, scale, P):
    """Row (b, h, i) of the scores: m = max of the allowed S[b, h, i, j]; P = scale (S - m) where allowed, -inf
    elsewhere. Returns the row's end: i + 1 under the causal mask (later keys are not looked at), else Tk."""
    Tk = S.shape[3]
    end = min(i + 1, Tk) if causal else Tk
    mb = b if mask.shape[0] > 1 else 0
    mh = h if mask.shape[1] > 1 else 0
    mi = i if mask.shape[2] > 1 else 0
    m = np.float32(-math.inf)                  # float32 constants: float32 arithmetic for float32 scores
    for j in range(end): m = max(m, S[b, h, i, j] if mask[mb, mh, mi, j] else np.float32(-math.inf))
    for j in range(end):
        P[b, h, i, j] = scale * (S[b, h, i, j] - m) if mask[mb, mh, mi, j] else np.float32(-math.inf)
    return end

@per_element
def _softmax_normalise(b, h, i, end, P):
    "Row (b, h, i) of exponentials up to `end`: divided by their sum (0 if the sum is 0), zeros from `end` on."
    z = np.float32(0.0)
    for j in range(end): z += P[b, h, i, j]
    inv = np.float32(1.0) / z if z > 0.0 else np.float32(0.0)
    for j in range(end): P[b, h, i, j] *= inv
    for j in range(end, P.shape[3]): P[b, h, i, j] = 0.0

@per_element
def _softmax_backward_row(b, h, i, end, P, dP, scale, dS):
    "Row (b, h, i): dS = scale P (dP - sum(P dP)) up to `end` (P is 0 after it); `dS` may be `dP`."
    a = np.float32(0.0)
    for j in range(end): a += P[b, h, i, j] * dP[b, h, i, j]
    for j in range(end): dS[b, h, i, j] = scale * P[b, h, i, j] * (dP[b, h, i, j] - a)
    for j in range(end, P.shape[3]): dS[b, h, i, j] = 0.0

@per_element
def _layer_norm_row(r, x, gamma, beta, eps, y, xhat, s):
    "Row r of x (M, D): s[r, 0] = 1/sqrt(var + eps), xhat[r] = (x[r] - mean) s, y[r] = gamma xhat[r] + beta."
    D = x.shape[1]
    mu = np.float32(0.0)
    for j in range(D): mu += x[r, j]
    mu /= D
    var = np.float32(0.0)
    for j in range(D):
        c = x[r, j] - mu
        var += c * c
    sr = 1.0 / math.sqrt(var / D + eps)
    s[r, 0] = sr
    for j in range(D):
        xh = (x[r, j] - mu) * sr
        xhat[r, j] = xh
        y[r, j] = gamma[j] * xh + beta[j]

@per_element
def _layer_norm_backward_row(r, dy, xhat, s, gamma, dx):
    "Row r: dx[r] = s (g - mean(g) - xhat mean(g xhat)) with g = gamma dy[r]."
    D = dy.shape[1]
    mg, mgx = np.float32(0.0), np.float32(0.0)
    for j in range(D):
        g = gamma[j] * dy[r, j]
        mg += g
        mgx += g * xhat[r, j]
    mg /= D
    mgx /= D
    for j in range(D): dx[r, j] = s[r, 0] * (gamma[j] * dy[r, j] - mg - xhat[r, j] * mgx)

@per_element
def _column_sums(j, c, r0, r1, dy, xhat, dgamma, dbeta):
    "Column j over rows r0..r1-1: dgamma[c, j] = sum of dy xhat, dbeta[c, j] = sum of dy (block c's partial sums)."
    a, b = np.float32(0.0), np.float32(0.0)
    for r in range(r0, r1):
        a += dy[r, j] * xhat[r, j]
        b += dy[r, j]
    dgamma[c, j] = a
    dbeta[c, j] = b

# %% [markdown]
# ## 3. A float32 exponential the CPU can vectorise
#
# The exponentials are most of the softmax's arithmetic. Numba calls the C library's
# `expf` once per number, which LLVM cannot turn into vector instructions (without
# Intel's SVML, absent here); NumPy's own `exp` is vectorised. The kernel
# therefore computes $e^x$ itself, the classic way (Cody and Waite's reduction, the
# Cephes polynomial):
#
# $$n = \operatorname{round}(x\log_2 e),\qquad f = x - n\ln 2\in[-\tfrac12\ln2, \tfrac12\ln2],\qquad
#   e^x = 2^n\,e^f,$$
#
# with $\ln 2$ split into a short high part (exact in $n\ln2_{\text{hi}}$) and a low
# correction, $e^f = 1 + f + f^2 P(f)$ with a degree-5 polynomial $P$, and $2^n$ made by
# adding $n$ to the float's exponent bits (a view of the row as int32). Rounding to the
# nearest integer is the "magic number" trick: $x + 1.5\cdot 2^{23}$ rounds $x$ in the
# float32 adder, and subtracting the constant gives $n$; the function is compiled
# without the fast-math reassociation that would cancel the two. Inputs below $-87$
# (where $e^x$ is below float32's smallest normal number) give 0, and so does
# $-\infty$, a masked score. Every operation is the same for each element, so LLVM
# vectorises the loop: 8 numbers per AVX2 instruction.
#
# The float64 kernels use `math.exp`: the gradient checks of chapter 13 run in float64
# and must see the exact function. The CUDA kernels use `math.exp` too (the GPU's
# exponential is a fast hardware instruction).

# %%
#| export
@njit(cache=True, fastmath={'contract'})
def exp_inplace_f32(p, n):
    """p[:n] = exp(p[:n]) for a contiguous float32 row `p`, within about one unit in the last place; inputs below
    -87 (and -inf) give 0. Cody-Waite reduction, the Cephes polynomial, 2^n through the exponent bits."""
    bits = p.view(np.int32)
    for j in range(n):
        x = p[j]
        v = max(x, np.float32(-87.0))
        t = v * np.float32(1.4426950408889634)                    # x log2(e)
        k = (t + np.float32(12582912.0)) - np.float32(12582912.0)  # round to nearest: 1.5 * 2**23
        f = v - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
        e = ((((((np.float32(1.9875691500e-4) * f + np.float32(1.3981999507e-3)) * f + np.float32(8.3334519073e-3)) * f
                + np.float32(4.1665795894e-2)) * f + np.float32(1.6666665459e-1)) * f + np.float32(5.0000001201e-1))
             * f * f + f + np.float32(1.0))
        under = x < np.float32(-87.0)
        p[j] = np.float32(0.0) if under else e
        bits[j] += 0 if under else np.int32(k) << 23                # times 2**k

# %% [markdown]
# Against NumPy's `exp` (float64 as the truth), on the range a softmax sees:

# %%
xs = np.concatenate([-np.logspace(-8, np.log10(87), 100_000), [0.0, -86.9, -87.5, -100.0, -np.inf]]).astype(np.float32)
ex = xs.copy(); exp_inplace_f32(ex, len(ex))
truth = np.exp(xs.astype(np.float64))
ok = xs >= -87
rel = np.abs(ex[ok] - truth[ok]) / truth[ok]
ulp = np.abs(ex[ok].astype(np.float64) - truth[ok]) / np.spacing(truth[ok].astype(np.float32)).astype(np.float64)
print(f"max relative error {rel.max():.1e}, max {ulp.max():.2f} units in the last place; exp(-87.5), exp(-100), exp(-inf): {ex[~ok]}")
assert rel.max() < 2e-7 and (ex[~ok] == 0).all() and ex[xs == 0][0] == 1.0
part = np.full(8, -1.0, np.float32); exp_inplace_f32(part, 5)
test_close(part[:5], np.exp(np.float32(-1.0)), eps=1e-7); test_eq(part[5:], np.full(3, -1.0, np.float32))   # only the first n

# %% [markdown]
# In the full run the largest error was $8.1\times10^{-8}$ relative, 0.97 units in the last
# place of float32, over $[-87, 0]$; below $-87$ and at $-\infty$ the result is exactly 0.
#
# ## 4. The Numba CPU kernels
#
# One row per iteration of a `prange` loop: the $B H T_q = 16{,}384$ rows of the
# benchmark split into one block per thread. The softmax kernel runs the three steps
# on each row while it is in the L1 cache; `fast_exp` picks the float32 exponential.
# The layer-normalisation backward gives each block of rows its own row of partial
# parameter gradients, so the threads never write the same memory.

# %%
#| export
_FM = {'contract', 'reassoc'}   # fused multiply-adds, and sums that may be reordered (vectorised reductions)

@njit(parallel=True, cache=True, fastmath=_FM)
def _softmax_forward_numba(S, mask, causal, scale, fast_exp, P):
    B, H, Tq = S.shape[0], S.shape[1], S.shape[2]
    for r in prange(B * H * Tq):
        b, h, i = r // (H * Tq), (r // Tq) % H, r % Tq
        end = _softmax_shift(b, h, i, S, mask, causal, scale, P)
        if fast_exp: exp_inplace_f32(P[b, h, i], end)
        else:
            for j in range(end): P[b, h, i, j] = math.exp(P[b, h, i, j])
        _softmax_normalise(b, h, i, end, P)

@njit(parallel=True, cache=True, fastmath=_FM)
def _softmax_backward_numba(P, dP, causal, scale, dS):
    B, H, Tq, Tk = P.shape
    for r in prange(B * H * Tq):
        b, h, i = r // (H * Tq), (r // Tq) % H, r % Tq
        _softmax_backward_row(b, h, i, min(i + 1, Tk) if causal else Tk, P, dP, scale, dS)

@njit(parallel=True, cache=True, fastmath=_FM)
def _layer_norm_forward_numba(x, gamma, beta, eps, y, xhat, s):
    for r in prange(x.shape[0]): _layer_norm_row(r, x, gamma, beta, eps, y, xhat, s)

@njit(parallel=True, cache=True, fastmath=_FM)
def _layer_norm_backward_numba(dy, xhat, s, gamma, dx, dgamma, dbeta):
    M, D = dy.shape
    blocks = dgamma.shape[0]
    for c in prange(blocks):
        r0, r1 = c * M // blocks, (c + 1) * M // blocks
        for r in range(r0, r1): _layer_norm_backward_row(r, dy, xhat, s, gamma, dx)
        for j in range(D): _column_sums(j, c, r0, r1, dy, xhat, dgamma, dbeta)

# %% [markdown]
# ## 5. The CUDA kernels
#
# One thread per row for the softmax and its backward and for the two
# layer-normalisation passes; one thread per column for the parameter gradients.
# The kernels are built on first use (`core.cuda_kernels`), so importing the package
# never needs `numba.cuda`.

# %%
#| exporti
cuda = None  # numba.cuda, imported by the first CUDA call (a module global: the simulator swaps it in kernels)

def _build_cuda_kernels():
    "The CUDA kernels of this module (built once, by `core.cuda_kernels`)."
    global cuda
    from numba import cuda
    shift, normalise, sm_back, ln_row, ln_back, col_sums = (device_twin(f) for f in (
        _softmax_shift, _softmax_normalise, _softmax_backward_row, _layer_norm_row, _layer_norm_backward_row, _column_sums))

    @cuda.jit
    def softmax_forward(S, mask, causal, scale, P):
        r = cuda.grid(1)
        H, Tq = S.shape[1], S.shape[2]
        if r < S.shape[0] * H * Tq:
            b, h, i = r // (H * Tq), (r // Tq) % H, r % Tq
            end = shift(b, h, i, S, mask, causal, scale, P)
            for j in range(end): P[b, h, i, j] = math.exp(P[b, h, i, j])
            normalise(b, h, i, end, P)

    @cuda.jit
    def softmax_backward(P, dP, causal, scale, dS):
        r = cuda.grid(1)
        H, Tq, Tk = P.shape[1], P.shape[2], P.shape[3]
        if r < P.shape[0] * H * Tq:
            i = r % Tq
            sm_back(r // (H * Tq), (r // Tq) % H, i, min(i + 1, Tk) if causal else Tk, P, dP, scale, dS)

    @cuda.jit
    def layer_norm_forward(x, gamma, beta, eps, y, xhat, s):
        r = cuda.grid(1)
        if r < x.shape[0]: ln_row(r, x, gamma, beta, eps, y, xhat, s)

    @cuda.jit
    def layer_norm_backward(dy, xhat, s, gamma, dx):
        r = cuda.grid(1)
        if r < dy.shape[0]: ln_back(r, dy, xhat, s, gamma, dx)

    @cuda.jit
    def column_sums(dy, xhat, dgamma, dbeta):
        j = cuda.grid(1)
        if j < dy.shape[1]: col_sums(j, 0, 0, dy.shape[0], dy, xhat, dgamma, dbeta)

    return dict(softmax_forward=softmax_forward, softmax_backward=softmax_backward,
                layer_norm_forward=layer_norm_forward, layer_norm_backward=layer_norm_backward, column_sums=column_sums)

def _cuda(name):
    "The CUDA kernel `name` of this module."
    return cuda_kernels('attention', _build_cuda_kernels)[name]

# %% [markdown]
# ## 6. The batched products on one BLAS thread
#
# Attention's other hot spot is not a loop of ours. The products $QK^\top$, $AV$ and
# the four of the backward are $N h = 128$ small products each ($128\times 32$ by
# $32\times 128$, or $128\times128$ by $128\times 32$), which NumPy's `matmul` hands
# to OpenBLAS one at a time. OpenBLAS splits each across its threads, and on two
# cores waking and joining them can cost more than the half of a product they save
# (the cell below times the batch both ways). `one_blas_thread()` (chapter 00) sets OpenBLAS to one thread for the products inside it and
# back afterwards (a call into the library, well under a microsecond); the large
# projections $XW$ keep both threads.

# %%
#| export
from dl_from_scratch.core import one_blas_thread     # chapter 00's, beside the (set, get) of OpenBLAS's thread count

# %%
with one_blas_thread():
    inside = openblas_threads()[1]()
test_eq(inside, 1)
test_eq(openblas_threads()[1](), 2)          # restored

def median_ms(f, repeat=9):
    "Median wall time of f() in milliseconds, after one untimed run."
    f(); ts = []
    for _ in range(repeat):
        t = time.perf_counter(); f(); ts.append(time.perf_counter() - t)
    return 1e3 * float(np.median(ts))

Qh = np.random.default_rng(0).standard_normal((32, 128, 128), dtype=np.float32).reshape(32, 128, 4, 32).transpose(0, 2, 1, 3)
products = lambda: np.matmul(Qh, Qh.swapaxes(-1, -2))          # S = Q K^T for 32 x 4 heads
two = median_ms(products)
with one_blas_thread(): one = median_ms(products)
print(f"Q K^T, 128 products of 128x32 by 32x128 (float32): {two:.2f} ms on two BLAS threads, {one:.2f} ms on one")

# %% [markdown]
# In the full run the 128 products took 5.90 ms on two BLAS threads and 2.98 ms on
# one: the second thread made them slower.
#
# ## 7. The entry points
#
# `softmax_forward`, `softmax_backward`, `layer_norm_forward` and `layer_norm_backward`
# check their arguments, bring the arrays to the kernels' shapes and run one backend:
# `'auto'` is the CUDA kernels for a CuPy array and the Numba kernels for a NumPy
# array; `'numba'` and `'cuda'` ask for one. The NumPy references are chapter 13's
# (`backend='numpy'` of its layers). Scores of any rank $(\dots, T_q, T_k)$ become four
# axes without a copy when they are contiguous; the mask, broadcastable to the scores'
# shape, becomes four axes of length 1 or the scores' length (copied only where more
# than two leading axes must be merged). `out=` lets the caller write the result over
# an array it no longer needs, such as the scores themselves.

# %%
#| export
def _backend(x, backend: str, who: str) -> str:
    be = resolve_backend(x, backend, who)
    if be == 'numpy':
        raise ValueError(f"{who} runs the 'numba' or 'cuda' kernels (or 'auto'); the NumPy reference is chapter 13's "
                         f"(attention.masked_softmax, functional.softmax_vjp, attention.layer_norm_reference), got 'numpy'")
    return be

def _four_axes(shape) -> tuple:
    "`(..., Tq, Tk)` as `(B, H, Tq, Tk)`: leading 1s added, or all leading axes but the last merged into B."
    lead = tuple(shape[:-2])
    if len(lead) <= 2: return (1,) * (2 - len(lead)) + lead + tuple(shape[-2:])
    return (int(np.prod(lead[:-1])), lead[-1]) + tuple(shape[-2:])

def _check_rank(x, name: str, least: int, who: str):
    "x as a float array of rank >= `least`, else a `ValueError`."
    x = check_array(x, name, finite=False, who=who)
    if x.ndim < least: raise ValueError(f"{who} expected {name} of rank >= {least}, got shape {tuple(x.shape)}")
    return x

def _out(out, like, ka, who: str):
    "The output array: `out` (checked: `like`'s shape and dtype, contiguous) or a new one."
    if out is None: return ka.xp.empty(like.shape, like.dtype)
    if out.shape != like.shape or out.dtype != like.dtype or not out.flags.c_contiguous:
        raise ValueError(f"{who} expected out of shape {tuple(like.shape)} and dtype {like.dtype}, C-contiguous, "
                         f"got shape {tuple(out.shape)}, dtype {out.dtype}")
    return out

def _mask4(mask, shape, xp, who: str):
    """A boolean `mask` broadcastable to the scores' `shape` `(..., Tq, Tk)` as a contiguous `(B|1, H|1, Tq|1, Tk)`
    array (all True when `mask` is None)."""
    if mask is None: return xp.ones((1, 1, 1, shape[-1]), dtype=np.bool_)
    mask = xp.asarray(mask)
    fits = (1 <= mask.ndim <= len(shape) and mask.shape[-1] == shape[-1]
            and all(m in (1, s) for m, s in zip(mask.shape[::-1], shape[::-1])))
    if not fits:
        raise ValueError(f"{who} expected a mask that broadcasts to the scores' shape {tuple(shape)} (last axis = the "
                         f"{shape[-1]} keys), got mask shape {tuple(mask.shape)}")
    m = mask.reshape((1,) * (len(shape) - mask.ndim) + tuple(mask.shape)).astype(np.bool_, copy=False)
    if len(shape) > 4 and any(a != 1 for a in m.shape[:-3]):
        m = xp.broadcast_to(m, tuple(shape[:-2]) + m.shape[-2:]).copy()         # merged axes need real copies
    return xp.ascontiguousarray(m.reshape(_four_axes(m.shape)))

def softmax_forward(S, mask=None, causal: bool = False, scale: float = 1.0, backend: str = 'auto', out=None):
    """P = softmax(scale * S) over the last axis of the scores `S` `(..., Tq, Tk)` (float, contiguous), where the
    boolean `mask` (broadcastable to S, True: allowed) and, with `causal`, j <= i allow; other weights are 0 and a row
    with no allowed key is all 0. `out`: an array of S's shape and dtype to write P into (S itself is allowed)."""
    who = 'softmax_forward'
    S = _check_rank(S, 'scores S (..., Tq, Tk)', 2, who)
    be = _backend(S, backend, who)
    ka = KernelArrays(be, S)
    S4 = ka.put(S).reshape(_four_axes(S.shape))
    m4 = _mask4(mask, S.shape, ka.xp, who)
    P = _out(out, S, ka, who)
    P4 = P.reshape(S4.shape)
    if be == 'numba':
        _softmax_forward_numba(S4, m4, bool(causal), S4.dtype.type(scale), S4.dtype == np.float32, P4)
    else:
        launch(_cuda('softmax_forward'), S4.shape[0] * S4.shape[1] * S4.shape[2], S4, m4, bool(causal), S4.dtype.type(scale), P4)
    return ka.result(P)

def softmax_backward(P, dP, causal: bool = False, scale: float = 1.0, backend: str = 'auto', out=None):
    """dL/dS `(..., Tq, Tk)` for P = softmax_forward(S, ..., scale): scale P (dP - rowsum(P dP)). `causal`: P is 0 for
    j > i (rows end there). `out`: where to write dS (dP itself is allowed)."""
    who = 'softmax_backward'
    P = _check_rank(P, 'weights P (..., Tq, Tk)', 2, who)
    dP = check_array(dP, 'dP', shape=P.shape, finite=False, who=who)
    be = _backend(P, backend, who)
    ka = KernelArrays(be, P)
    shape4 = _four_axes(P.shape)
    P4, dP4 = ka.put(P).reshape(shape4), ka.put(dP, P.dtype).reshape(shape4)
    dS = _out(out, P, ka, who)
    dS4 = dS.reshape(shape4)
    sc = P4.dtype.type(scale)
    if be == 'numba': _softmax_backward_numba(P4, dP4, bool(causal), sc, dS4)
    else: launch(_cuda('softmax_backward'), shape4[0] * shape4[1] * shape4[2], P4, dP4, bool(causal), sc, dS4)
    return ka.result(dS)

def layer_norm_forward(x, gamma, beta, eps: float = 1e-5, backend: str = 'auto'):
    """Layer normalisation over the last axis of `x` `(..., D)` with `gamma`, `beta` `(D,)`:
    `(y, xhat, s)`, y and xhat shaped as x, s = 1/sqrt(var + eps) `(..., 1)`."""
    who = 'layer_norm_forward'
    x = _check_rank(x, 'x (..., D)', 1, who)
    D = x.shape[-1]
    be = _backend(x, backend, who)
    ka = KernelArrays(be, x)
    gamma, beta = (ka.put(check_array(a, name, shape=(D,), who=who), x.dtype) for a, name in ((gamma, 'gamma'), (beta, 'beta')))
    x2 = ka.put(x).reshape(-1, D)
    y, xhat, s = ka.xp.empty_like(x2), ka.xp.empty_like(x2), ka.xp.empty((x2.shape[0], 1), x.dtype)
    if be == 'numba': _layer_norm_forward_numba(x2, gamma, beta, x2.dtype.type(eps), y, xhat, s)
    else: launch(_cuda('layer_norm_forward'), x2.shape[0], x2, gamma, beta, x2.dtype.type(eps), y, xhat, s)
    return tuple(ka.result(a) for a in (y.reshape(x.shape), xhat.reshape(x.shape), s.reshape(x.shape[:-1] + (1,))))

def layer_norm_backward(dy, xhat, s, gamma, backend: str = 'auto'):
    """`(dx, dgamma, dbeta)` from dL/dy `dy` `(..., D)` and the `xhat`, `s` of `layer_norm_forward`."""
    who = 'layer_norm_backward'
    xhat = _check_rank(xhat, 'xhat (..., D)', 1, who)
    D = xhat.shape[-1]
    dy = check_array(dy, 'dy', shape=xhat.shape, finite=False, who=who)
    s = check_array(s, 's', shape=xhat.shape[:-1] + (1,), finite=False, who=who)
    be = _backend(xhat, backend, who)
    ka = KernelArrays(be, xhat)
    gamma = ka.put(check_array(gamma, 'gamma', shape=(D,), who=who), xhat.dtype)
    dy2, xhat2, s2 = ka.put(dy, xhat.dtype).reshape(-1, D), ka.put(xhat).reshape(-1, D), ka.put(s).reshape(-1, 1)
    M = dy2.shape[0]
    dx = ka.xp.empty_like(dy2)
    blocks = max(1, min(M, 64)) if be == 'numba' else 1      # the CPU's blocks of rows, each with its partial sums
    dgamma, dbeta = ka.xp.empty((blocks, D), xhat.dtype), ka.xp.empty((blocks, D), xhat.dtype)
    if be == 'numba': _layer_norm_backward_numba(dy2, xhat2, s2, gamma, dx, dgamma, dbeta)
    else:
        launch(_cuda('layer_norm_backward'), M, dy2, xhat2, s2, gamma, dx)
        launch(_cuda('column_sums'), D, dy2, xhat2, dgamma, dbeta)
    return ka.result(dx.reshape(xhat.shape)), ka.result(dgamma.sum(axis=0)), ka.result(dbeta.sum(axis=0))

# %% [markdown]
# ## 8. Parity
#
# Every backend against chapter 13's reference, forward and backward, in float64 to
# rounding and in float32 to its precision, on scores of two to five axes with masks
# broadcast along different axes (padding masks `(N, 1, 1, T_k)`, full masks, none),
# with and without the causal mask, fully masked rows included; then layer
# normalisation on rows whose mean is far from 0. (`tests/test_attention_kernels.py`
# draws many more shapes with hypothesis.)

# %%
def softmax_parity(shape, mask_shape, causal, dtype, backend, seed=0):
    "Largest differences (forward, backward) of `backend` from the reference, on random scores."
    r = np.random.default_rng(seed)
    S = (r.standard_normal(shape) * 3).astype(dtype)
    mask = None if mask_shape is None else r.random(mask_shape) < 0.6
    full = mask
    if causal: full = causal_mask(*shape[-2:]) if mask is None else mask & causal_mask(*shape[-2:])
    P0 = masked_softmax(S * 0.5, full)
    P = softmax_forward(S, mask, causal, 0.5, backend)
    dP = r.standard_normal(shape).astype(dtype)
    return float(np.abs(P - P0).max()), float(np.abs(softmax_backward(P, dP, causal, 0.5, backend) - softmax_vjp(P0, dP) * 0.5).max())

cases = [((4, 6), None), ((2, 3, 5, 7), (2, 1, 1, 7)), ((2, 3, 5, 7), (2, 3, 5, 7)), ((3, 5, 5), (5, 5)),
         ((2, 2, 2, 3, 4), (2, 1, 1, 1, 4)), ((1, 1, 3, 3), (1, 1, 3, 3))]
for dtype, tol in ((np.float64, 1e-14), (np.float32, 1e-6)):
    worst = 0.0
    for shape, mshape in cases:
        for causal in (False, True):
            for be in ('numba', 'cuda'):
                worst = max(worst, *softmax_parity(shape, mshape, causal, dtype, be))
    print(f"softmax, {np.dtype(dtype).name}: largest difference from the reference {worst:.1e} over {len(cases)} shapes x causal x 2 backends")
    assert worst < tol

P = softmax_forward(np.ones((1, 1, 2, 3)), np.array([[True, False, True], [False, False, False]]), backend='numba')
test_eq(P[0, 0, 1], np.zeros(3)); test_close(P[0, 0, 0], [0.5, 0, 0.5], eps=1e-15)     # a fully masked row is 0

r = np.random.default_rng(1)
for dtype, tol in ((np.float64, 1e-12), (np.float32, 1e-4)):
    x = (r.standard_normal((3, 5, 16)) + 100).astype(dtype)                        # a mean far from 0
    gamma, beta, dy = (r.standard_normal(16).astype(dtype), r.standard_normal(16).astype(dtype),
                       r.standard_normal(x.shape).astype(dtype))
    ref = layer_norm_reference(x, gamma, beta)
    refb = layer_norm_reference_backward(dy, ref[1], ref[2], gamma)
    for be in ('numba', 'cuda'):
        out = layer_norm_forward(x, gamma, beta, 1e-5, be)
        back = layer_norm_backward(dy, out[1], out[2], gamma, be)
        err = max(float(np.abs(a - b).max() / (np.abs(b).max() + 1e-30)) for a, b in zip(out + back, ref + refb))
        assert err < tol, (dtype, be, err)
    print(f"LayerNorm, {np.dtype(dtype).name}: numba and cuda equal the reference (relative difference < {tol:g})")

# %% [markdown]
# Bad input is refused with a message that names what was expected:

# %%
test_fail(lambda: softmax_forward(np.zeros((2, 3, 4)), np.ones((3, 5), bool)), contains='broadcasts')
test_fail(lambda: softmax_forward(np.zeros(4)), contains='rank >= 2')
test_fail(lambda: softmax_forward(np.zeros((2, 3)), backend='numpy'), contains="reference is chapter 13")
test_fail(lambda: softmax_forward(np.zeros((2, 3)), out=np.zeros((3, 2))), contains='out of shape')
test_fail(lambda: softmax_backward(np.zeros((2, 3)), np.zeros((2, 4))), contains='dP of shape (2, 3)')
test_fail(lambda: layer_norm_forward(np.zeros((2, 4)), np.ones(3), np.zeros(4)), contains='gamma of shape (4,)')

# %% [markdown]
# ## 9. Speed
#
# At the size of the attention benchmark: $N = 32$ sequences of $T = 128$ tokens,
# $d_{\text{model}} = 128$ and 4 heads, so scores of shape $(32, 4, 128, 128)$ and
# $32\cdot128 = 4{,}096$ rows of 128 numbers for the layer normalisation; float32, two
# threads, the median of several runs. `benchmarks/attention.py` holds the timing
# code: its second table times the kernels alone against chapter 13's NumPy
# references, and its first times the whole multi-head self-attention layer
# (forward in training mode and backward, causal) and a pre-norm encoder block on
# both backends against PyTorch's `nn.MultiheadAttention` and an `nn.TransformerEncoderLayer`
# of the same shape. The quick version below times the kernels alone on a quarter of
# the batch; the full run runs the benchmark.

# %%
import importlib.util, pathlib
ROOT = next(p for p in [pathlib.Path.cwd(), *pathlib.Path.cwd().parents] if (p / 'benchmarks').is_dir() and (p / 'nbs').is_dir())
spec = importlib.util.spec_from_file_location('bench_attention', ROOT / 'benchmarks' / 'attention.py')
bench = importlib.util.module_from_spec(spec); spec.loader.exec_module(bench)
bench.B = 8                     # the quick version: a quarter of the batch, the kernels only
for name, f_ref, f_k in bench.kernel_steps():
    t_ref, t_k = bench.median_time(f_ref, 3), bench.median_time(f_k, 3)
    print(f"{name:26} NumPy {t_ref * 1e3:6.2f} ms, Numba {t_k * 1e3:5.2f} ms")

# %%
#| slow
bench.B = 32
rows = bench.main(repeat=15, threads=2)

# %% [markdown]
# **What the full run measured** (two threads, load average 1.2 on the two cores).
# The kernels alone: the causal softmax took 1.44 ms against the reference's 27.87 ms
# (19.4 times faster), its backward 0.83 ms against 4.53 ms (5.5 times), layer
# normalisation 0.22 ms against 1.10 ms forward (5.0 times) and 0.72 ms against 1.63 ms
# backward (2.3 times). (The quick table before it, a quarter of the batch and three
# runs each, is too short to compare ratios from: on a busy machine it has even put
# the small LayerNorm kernels behind NumPy.) The reference's softmax makes seven passes over the 8 MB of
# scores (the scale, the mask's `where`, the maximum, the subtraction, `exp`, the sum,
# the division) and the kernel one, and it skips the masked half of each row; the
# backward's reference is five simpler passes (no mask, no exponential), so fusing
# it saves less.
#
# The whole layer, forward and backward: our multi-head self-attention took 31.98 ms
# against PyTorch's 33.71 ms, 0.95 times PyTorch's time, within the goal of 1.2; on
# the NumPy reference it took 47.38 ms. The pre-norm encoder block took 61.91 ms
# against 53.80 ms, 1.15 times, within the goal but with less to spare (90.28 ms on
# the reference). What the block adds to the attention is the feed-forward layer and two layer normalisations. The feed-forward layer's
# two products of $4{,}096\times128$ by $128\times512$ and back, and their four
# backward products, carry 1.3 times the multiply-adds of the whole attention layer;
# ours are OpenBLAS calls on two threads, the same as NumPy's, and the layer
# normalisations are now a small part (the kernels' table). The block's larger ratio must
# then lie in those products and the elementwise passes around them (the bias, ReLU, the residual
# sums and their gradients), which this book leaves as NumPy operations. The timings
# come from a small machine shared with other work, where single runs vary by
# $\pm30\,\%$; the benchmark reports medians of 15 runs for that reason.

# %% [markdown]
# ## References
#
# * A. Vaswani et al., *Attention Is All You Need*, NeurIPS 2017: scaled dot-product attention, the masks,
#   layer normalisation in the residual blocks.
# * J. L. Ba, J. R. Kiros, G. E. Hinton, *Layer Normalization*, arXiv:1607.06450, 2016.
# * W. J. Cody, W. Waite, *Software Manual for the Elementary Functions*, Prentice-Hall, 1980: the
#   reduction of the argument of exp; S. L. Moshier, *Cephes Mathematical Library* (`expf.c`): the polynomial.
# * Chapter 13 of this book: the derivations and the NumPy references; chapter 00: the kernel house
#   (`resolve_backend`, `per_element`, `device_twin`, `cuda_kernels`).
