# %% [markdown]
# # Deployment: saved models, NumPy inference, quantisation and transfer learning
#
# > The NumPy-only inference plan of a saved model, its post-training quantisation to float16 and int8 (per-channel weight scales, calibrated activation scales), and the int8 matrix product (NumPy reference, Numba CPU, CUDA).
#
# ## Purpose
#
# A trained network is worth something only once it answers requests. This
# chapter takes the models of the earlier chapters out of the training loop:
#
# 1. **save and load**: the checkpoint `Model.save` writes (chapter 05a) is
#    data, never code, and reproduces the source's save-and-restore demo;
# 2. **a NumPy-only inference path**: a few functions that read such a file
#    and run its forward pass with nothing but NumPy, checked against
#    `Model.predict`;
# 3. **post-training quantisation** of our MNIST and CIFAR-10 nets to float16
#    and to int8, with one scale per output channel for the weights and one
#    per layer for the activations, calibrated on 100 images, measured by the
#    size of the file and the accuracy lost;
# 4. **an int8 matrix product** (int8 × int8, summed in int32) as a NumPy
#    reference, a Numba CPU kernel and a CUDA kernel, and its speed beside
#    float32 BLAS;
# 5. **transfer learning and fine-tuning** with source 003's recipe: freeze a
#    trained base, train a new head, then unfreeze the top of the base at a
#    tenth of the learning rate; against training from scratch on the same
#    small labelled set.
#
# Chapter 20a serves a saved model over HTTP with the standard library.

# %%
#| default_exp quantize

# %%
#| hide
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # no GPU: the CUDA kernel runs in Numba's simulator

# %%
#| export
from __future__ import annotations
import functools, json, os
import numpy as np
from dl_from_scratch.core import check_array, resolve_backend, KernelArrays, cuda_kernels, launch, to_numpy
from dl_from_scratch import functional as F
from dl_from_scratch.model import _read_checkpoint
from dl_from_scratch.data import atomic_savez

# %%
import inspect, subprocess, sys, tempfile, time, zipfile
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import set_num_threads
from dl_from_scratch.data import load
from dl_from_scratch.layers import Dense, Flatten, Dropout, BatchNorm, Activation, ReLU
from dl_from_scratch.conv import Conv2D, MaxPool2D, AvgPool2D, GlobalAveragePooling2D
from dl_from_scratch.model import Sequential
from dl_from_scratch.optim import Adam, RMSprop
from dl_from_scratch.losses import SparseCategoricalCrossentropy
tmp = tempfile.mkdtemp()

# %% [markdown]
# ## 1. Save and load
#
# `Model.save(path)` (chapter 05a) writes one `.npz` file: every weight array
# under the key `'<layer>/<name>'` and, under `'__config__'`, a JSON
# description of the architecture (each layer's class name and constructor
# arguments). `Model.load` reads it with `np.load(..., allow_pickle=False)`
# and constructs only classes the package registers, so opening a checkpoint
# never runs code that came with it (a pickle can; Keras's old HDF5 and
# Python's `pickle` both could). Here is what such a file holds, and the
# refusal of a file that carries a pickled object.

# %%
def small_net(rng=0):
    "A net with every layer kind the NumPy path runs: (N, 12, 12, 2) -> (N, 5) probabilities."
    return Sequential([Conv2D(4, 3, padding='same', rng=rng), BatchNorm(), Activation('relu'), MaxPool2D(2),
                       Conv2D(6, 3, strides=2, padding='same', activation='tanh', rng=rng), AvgPool2D(2, padding='same'),
                       Dropout(0.3, rng=rng), Flatten(), Dense(7, activation='relu', rng=rng), ReLU(max_value=0.5),
                       Dense(5, activation='softmax', rng=rng)], input_shape=(12, 12, 2), name='small')

net = small_net()
rng = np.random.default_rng(0)
x_small = rng.normal(size=(9, 12, 12, 2)).astype(np.float32)
net.compile(loss='sparse_categorical_crossentropy', optimizer=Adam(1e-2))
net.fit(x_small, rng.integers(0, 5, 9), epochs=2, batch_size=3, rng=0, verbose=0)   # BatchNorm's statistics move
path = net.save(os.path.join(tmp, 'small.npz'))
with np.load(path, allow_pickle=False) as f:
    print({k: f[k].shape for k in f.files if k != '__config__'})
    print(json.loads(str(f['__config__']))['layers'][0])
test_eq(Sequential.load(path).predict(x_small), net.predict(x_small))

evil = os.path.join(tmp, 'evil.npz')
np.savez(evil, **{'__config__': np.array('{}'), 'x': np.array([print], dtype=object)})
test_fail(lambda: Sequential.load(evil), contains='not a dl_from_scratch checkpoint')

# %% [markdown]
# Source 003 (§25) saves and restores Keras's small MNIST net,
# Dense(512, ReLU) → Dropout(0.2) → Dense(10), trained for 10 epochs on the
# first 1,000 training images: a fresh model scores about 10 % on the first
# 1,000 test images, the restored one about 87 %. The same with ours:

# %%
#| mnist
set_num_threads(2)

def mnist_like(name):
    "A dataset as float32 in [0, 1], NHWC, with int64 labels: (x_train, y_train), (x_test, y_test)."
    (xtr, ytr), (xte, yte) = load(name, 'train'), load(name, 'test')
    return (xtr.astype(np.float32) / 255, ytr), (xte.astype(np.float32) / 255, yte)

(x_train, y_train), (x_test, y_test) = mnist_like('mnist')

def create_model(rng=0):
    "Source 003's save-and-load net: 784 -> Dense(512, ReLU) -> Dropout(0.2) -> Dense(10) logits."
    m = Sequential([Flatten(), Dense(512, activation='relu', rng=rng), Dropout(0.2, rng=rng), Dense(10, rng=rng)],
                   input_shape=(28, 28, 1))
    m.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=Adam(1e-3), metrics=['accuracy'])
    return m

m = create_model()
m.fit(x_train[:1000], y_train[:1000], epochs=10, batch_size=32, rng=0, verbose=0)
saved = m.save(os.path.join(tmp, 'cp.npz'))
fresh = create_model(rng=1)
_, acc_fresh = fresh.evaluate(x_test[:1000], y_test[:1000])
restored = create_model(rng=1).load_weights(saved)
_, acc_restored = restored.evaluate(x_test[:1000], y_test[:1000])
print(f"untrained model: {acc_fresh:.3f} (source: about 0.10); restored: {acc_restored:.3f} (source: about 0.87)")
assert acc_fresh < 0.3 < 0.8 < acc_restored

# %% [markdown]
# ## 2. A NumPy-only inference path
#
# Inference needs only the forward pass, in inference mode: dropout is the
# identity, batch normalisation is a fixed affine map per channel,
# $y = \gamma(x-\mu)/\sqrt{\sigma^2+\epsilon} + \beta$, with the running
# averages. A convolution is chapter 07's im2col product. Its columns are
# built tap by tap: for tap $(i, j)$ of the kernel, the strided slice
# `xp[:, i::s, j::s]` of the padded input, `(N, OH, OW, C)`, is copied into
# its place, $K_H K_W$ vectorised copies in all. Pooling takes the maximum or
# the sum over the same slices.
#
# An **inference plan** is the model as a list of such operations with their
# arrays. It is built from a checkpoint file (or a model in memory) by reading
# the JSON: each layer's constructor arguments name what the operation needs.
# Positional arguments are matched to names through a table of the layers'
# leading parameters, which a test below compares with the classes'
# signatures. Only `Sequential` checkpoints with the layers below are
# supported; anything else is a `ValueError` naming the layer.
#
# Nothing in this path imports Numba: the plan runs where only NumPy is
# installed (a test runs it in a fresh process that cannot import Numba).

# %%
#| export
_POSITIONAL = {   # each layer's leading constructor parameters, to name a checkpoint's positional arguments
    'Dense': ('units', 'activation', 'use_bias'),
    'Conv2D': ('filters', 'kernel_size', 'strides', 'padding', 'activation', 'use_bias'),
    'MaxPool2D': ('pool_size', 'strides', 'padding'), 'AvgPool2D': ('pool_size', 'strides', 'padding'),
    'Activation': ('activation',), 'ReLU': ('max_value',), 'Sigmoid': (), 'Tanh': (), 'Softmax': (),
    'Flatten': (), 'Dropout': ('rate',), 'BatchNorm': ('momentum', 'eps'), 'GlobalAveragePooling2D': ('keepdims',)}

def _pair(v) -> tuple:
    return (int(v), int(v)) if np.isscalar(v) else tuple(int(a) for a in v)

def resolve_padding(padding, input_hw, field, strides) -> tuple:
    """(top, bottom, left, right) for `padding` = 'valid', 'same' (TensorFlow's rule: output ceil(n/s), the odd
    extra row or column at the bottom/right), an int, (ph, pw) or a 4-tuple."""
    if isinstance(padding, str):
        if padding == 'valid': return (0, 0, 0, 0)
        if padding != 'same': raise ValueError(f"padding must be 'valid', 'same' or ints, got {padding!r}")
        out = []
        for n, f, s in zip(input_hw, field, strides):
            total = max((-(-n // s) - 1) * s + f - n, 0)
            out += [total // 2, total - total // 2]
        return tuple(out)
    p = np.atleast_1d(padding).astype(int).tolist()
    return tuple({1: p * 4, 2: [p[0], p[0], p[1], p[1]], 4: p}[len(p)])

def _tap_slices(xp, field, strides, dilation, out_hw):
    "For each tap of the window (row-major), the slice `(N, OH, OW, C)` of the padded input `xp` it reads."
    (kh, kw), (sh, sw), (dh, dw), (OH, OW) = field, strides, dilation, out_hw
    for i in range(kh):
        for j in range(kw):
            yield xp[:, i * dh:i * dh + sh * (OH - 1) + 1:sh, j * dw:j * dw + sw * (OW - 1) + 1:sw]

def _padded(x, field, strides, padding, dilation, fill):
    "`x` padded by `padding` (top, bottom, left, right) with `fill`, and the output size `(OH, OW)` of the windows."
    pt, pb, pl, pr = padding
    span = [(k - 1) * d + 1 for k, d in zip(field, dilation)]
    out = ((x.shape[1] + pt + pb - span[0]) // strides[0] + 1, (x.shape[2] + pl + pr - span[1]) // strides[1] + 1)
    xp = np.pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)), constant_values=fill) if any(padding) else x
    return xp, out

def im2col(x, field, strides, padding, dilation=(1, 1)):
    """The columns of NHWC `x` `(N, H, W, C)`: `(N, OH, OW, KH*KW*C)`, tap by tap (row-major) then channel, the
    order of a kernel `(KH, KW, C, F)` reshaped to `(KH*KW*C, F)`. Zero `padding` (top, bottom, left, right)."""
    xp, (OH, OW) = _padded(x, field, strides, padding, dilation, 0)
    cols = np.empty((x.shape[0], OH, OW, field[0] * field[1], x.shape[3]), x.dtype)
    for t, tap in enumerate(_tap_slices(xp, field, strides, dilation, (OH, OW))): cols[:, :, :, t] = tap
    return cols.reshape(x.shape[0], OH, OW, -1)

def pool2d(x, kind: str, pool_size, strides, padding):
    """Max ('max') or average ('avg', over the real, unpadded entries, as `AvgPool2D`) pooling of NHWC `x`:
    `(N, H, W, C)` -> `(N, OH, OW, C)`; `padding` (top, bottom, left, right)."""
    xp, out = _padded(x, pool_size, strides, padding, (1, 1), -np.inf if kind == 'max' else 0)
    taps = _tap_slices(xp, pool_size, strides, (1, 1), out)
    y = np.array(next(taps))
    for tap in taps: (np.maximum if kind == 'max' else np.add)(y, tap, out=y)
    if kind == 'max': return y
    ones, _ = _padded(np.ones((1, *x.shape[1:3], 1), x.dtype), pool_size, strides, padding, (1, 1), 0)
    return y / sum(_tap_slices(ones, pool_size, strides, (1, 1), out))

# %%
xw = np.arange(2 * 5 * 5 * 3, dtype=np.float32).reshape(2, 5, 5, 3)
cols = im2col(xw, (3, 3), (2, 2), (1, 1, 1, 1))
test_eq(cols.shape, (2, 3, 3, 27))
test_eq(cols[1, 1, 2].reshape(3, 3, 3), np.pad(xw[1], ((1, 1), (1, 1), (0, 0)))[2:5, 4:7])   # window (1, 2), stride 2
test_eq(im2col(xw, (2, 2), (1, 1), (0, 0, 0, 0), dilation=(2, 2))[0, 0, 0].reshape(2, 2, 3), xw[0, :3:2, :3:2])
test_eq(pool2d(xw, 'max', (2, 2), (2, 2), (0, 1, 0, 1))[0, :, :, 0], [[18, 24, 27], [48, 54, 57], [63, 69, 72]])
test_eq(pool2d(xw, 'avg', (2, 2), (2, 2), (0, 1, 0, 1))[0, 2, 2, 0], xw[0, 4, 4, 0])          # a corner of one real entry
test_eq(resolve_padding('same', (28, 28), (5, 5), (1, 1)), (2, 2, 2, 2))
test_eq(resolve_padding('same', (7, 8), (3, 3), (2, 2)), (1, 1, 0, 1))
test_eq(resolve_padding((1, 2), (7, 8), (3, 3), (1, 1)), (1, 1, 2, 2))
test_fail(lambda: resolve_padding('full', (7, 8), (3, 3), (1, 1)), contains="'valid', 'same'")

# %% [markdown]
# Each operation is a small dict: its kind, its settings (JSON) and its arrays.
# `_run_op` is the whole interpreter. The weighted operations (`conv`,
# `dense`) go through one product, `_weighted_product`, which section 4
# teaches a second, int8 kind of weights.

# %%
#| export
def _activation(y, name, kwargs):
    "The activation `name` (a `functional` name, or 'softmax') applied to `y`."
    if name in (None, 'linear'): return y
    if name == 'softmax': return F.softmax(y)
    f, _ = F.get_activation(name)
    return f(y, **kwargs)

def _weighted_product(cols, op, backend):
    "`cols` `(M, K)` times the op's weights `(K, F)` plus bias: float32 (float16 weights widened), or int8 (section 4)."
    W = op['W'].reshape(-1, op['W'].shape[-1])
    if W.dtype == np.int8: y = _int8_product(cols, W, op, backend)
    else: y = cols @ W.astype(np.float32, copy=False)
    return y + op['b'] if 'b' in op else y

def _run_op(op, x, backend='numpy'):
    "One operation of a plan on a batch `x` (NumPy only, unless int8 weights run on `backend`)."
    kind = op['op']
    if kind == 'dense': return _activation(_weighted_product(x, op, backend), op['activation'], op['act_kwargs'])
    if kind == 'conv':
        KH, KW, C, Fo = op['W'].shape
        pad = resolve_padding(op['padding'], x.shape[1:3], ((KH - 1) * op['dilation'][0] + 1,
                              (KW - 1) * op['dilation'][1] + 1), op['strides'])
        if op['W'].dtype == np.int8: x = quantize_activations(x, op['x_scale'])   # zero padding stays 0
        cols = im2col(x, (KH, KW), op['strides'], pad, op['dilation'])
        N, OH, OW = cols.shape[:3]
        y = _weighted_product(cols.reshape(N * OH * OW, -1), op, backend).reshape(N, OH, OW, Fo)
        return _activation(y, op['activation'], op['act_kwargs'])
    if kind in ('maxpool', 'avgpool'):
        pad = resolve_padding(op['padding'], x.shape[1:3], op['pool_size'], op['strides'])
        return pool2d(x, kind[:3], op['pool_size'], op['strides'], pad)
    if kind == 'affine': return x * op['scale'] + op['shift']
    if kind == 'activation': return _activation(x, op['activation'], op['act_kwargs'])
    if kind == 'flatten': return x.reshape(len(x), -1)
    if kind == 'gap': return x.mean(axis=(1, 2), keepdims=op['keepdims'])
    if kind == 'identity': return x
    raise ValueError(f"unknown operation {kind!r}")

# %% [markdown]
# `_op_from_layer` turns one layer's config and arrays into an operation. A
# batch normalisation becomes the `affine` operation
# $x \cdot s + t$ with $s = \gamma/\sqrt{\sigma^2+\epsilon}$ and
# $t = \beta - \mu s$.

# %%
#| export
def _op_from_layer(cls: str, kwargs: dict, arrays: dict) -> dict:
    "The operation of one layer: class name, its constructor arguments by name, its arrays by weight name."
    act = lambda: {'activation': kwargs.get('activation'), 'act_kwargs': {}}
    if cls == 'Dense': return {'op': 'dense', **act(), **arrays}
    if cls == 'Conv2D':
        return {'op': 'conv', 'strides': _pair(kwargs.get('strides', 1)), 'padding': kwargs.get('padding', 'valid'),
                'dilation': _pair(kwargs.get('dilation_rate', 1)), **act(), **arrays}
    if cls in ('MaxPool2D', 'AvgPool2D'):
        size = _pair(kwargs.get('pool_size', 2))
        strides = size if kwargs.get('strides') is None else _pair(kwargs['strides'])
        return {'op': 'maxpool' if cls == 'MaxPool2D' else 'avgpool', 'pool_size': size, 'strides': strides,
                'padding': kwargs.get('padding', 'valid')}
    if cls == 'BatchNorm':
        s = arrays['gamma'] / np.sqrt(arrays['moving_var'] + kwargs.get('eps', 1e-5))
        return {'op': 'affine', 'scale': s.astype(np.float32), 'shift': (arrays['beta'] - arrays['moving_mean'] * s).astype(np.float32)}
    if cls in ('Activation', 'ReLU', 'Sigmoid', 'Tanh', 'Softmax'):
        name = kwargs.get('activation', {'ReLU': 'relu', 'Sigmoid': 'sigmoid', 'Tanh': 'tanh', 'Softmax': 'softmax'}.get(cls))
        if name == 'rrelu': raise ValueError("the NumPy path runs fixed activations, got 'rrelu'")
        extra = {k: v for k, v in kwargs.items() if k not in ('activation', 'name', 'rng')}
        return {'op': 'activation', 'activation': name, 'act_kwargs': extra}
    if cls == 'Flatten': return {'op': 'flatten'}
    if cls == 'Dropout': return {'op': 'identity'}
    if cls == 'GlobalAveragePooling2D': return {'op': 'gap', 'keepdims': bool(kwargs.get('keepdims', False))}
    raise ValueError(f"the NumPy inference path runs the layers {sorted(_POSITIONAL)}, got {cls!r}")

# %% [markdown]
# The plan itself: built from a checkpoint or a model, it predicts in batches,
# and it saves and loads in the same safe way as a checkpoint (one `.npz`, the
# settings as JSON, no pickles). Its arrays keep their dtypes, so a float16 or
# an int8 plan is that much smaller on disk.

# %%
#| export
_QUANTISED_KINDS = ('conv', 'dense')

class InferencePlan:
    """A `Sequential` model as a list of NumPy operations (inference mode). `predict(x)`: `x` `(N, *input_shape)`
    float -> outputs `(N, ...)` float32. Build with `from_checkpoint(path)` or `from_model(model)`; `save`/`load`."""
    def __init__(self, ops: list, input_shape, name: str = 'plan'):
        self.ops, self.input_shape, self.name = ops, tuple(int(s) for s in input_shape), name

    @classmethod
    def from_config(cls, cfg, arrays: dict) -> 'InferencePlan':
        "A plan from a `Sequential` config (`Model.get_config()`) and its arrays keyed `'<layer>/<weight>'`."
        if not isinstance(cfg, dict) or cfg.get('format') != 'dl_from_scratch.Sequential':
            got = cfg.get('format') if isinstance(cfg, dict) else type(cfg).__name__
            raise ValueError(f"the NumPy inference path expected a 'dl_from_scratch.Sequential' checkpoint, got {got!r}")
        if cfg.get('input_shape') is None: raise ValueError("the NumPy inference path expected a built model (an input shape), got none")
        ops, by_name = [], {}
        for c in cfg['layers']:
            if 'same_as' in c: ops.append(by_name[c['same_as']]); continue
            if c['class'] not in _POSITIONAL:
                raise ValueError(f"the NumPy inference path runs the layers {sorted(_POSITIONAL)}, got {c['class']!r}")
            kwargs = {**dict(zip(_POSITIONAL[c['class']], c['args'])), **c['kwargs']}
            mine = {k.split('/', 1)[1]: np.asarray(v) for k, v in arrays.items() if k.split('/', 1)[0] == c['name']}
            ops.append(by_name.setdefault(c['name'], _op_from_layer(c['class'], kwargs, mine)))
        return cls(ops, cfg['input_shape'], cfg.get('name', 'plan'))

    @classmethod
    def from_checkpoint(cls, path) -> 'InferencePlan':
        "The plan of a checkpoint written by `Model.save` (read with `allow_pickle=False`, constructs nothing)."
        arrays, cfg = _read_checkpoint(str(path))
        return cls.from_config(cfg, arrays)

    @classmethod
    def from_model(cls, model) -> 'InferencePlan':
        "The plan of a built `Sequential` model in memory (its arrays copied to the host)."
        return cls.from_config(model.get_config(), {k: to_numpy(v) for k, v in {**model.params, **model.state}.items()})

    def predict(self, x, batch_size: int = 256, backend: str = 'auto', inputs: list | None = None):
        """Outputs for `x` `(N, *input_shape)`, in batches. `backend` runs int8 products ('auto', 'numpy',
        'numba', 'cuda'); float plans use NumPy only. `inputs`: a list that receives, per batch, the input of
        every conv and dense op (calibration)."""
        x = check_array(x, 'input', shape=(None, *self.input_shape), who=f'{self.name}.predict')
        if int(batch_size) < 1: raise ValueError(f"{self.name}.predict expected batch_size >= 1, got {batch_size}")
        outs = []
        for i in range(0, max(len(x), 1), int(batch_size)):
            h = x[i:i + int(batch_size)].astype(np.float32)
            for op in self.ops:
                if inputs is not None and op['op'] in _QUANTISED_KINDS: inputs.append((id(op), h))
                h = _run_op(op, h, backend)
            outs.append(h.astype(np.float32, copy=False))
        return np.concatenate(outs)

    def save(self, path) -> str:
        "Write the plan to one `.npz` (settings as JSON, arrays in their own dtypes), atomically. Returns the path."
        path = str(path) if str(path).endswith('.npz') else str(path) + '.npz'
        arrays, specs = {}, []
        for i, op in enumerate(self.ops):
            specs.append({k: v for k, v in op.items() if not isinstance(v, np.ndarray)})
            arrays.update({f'{i}/{k}': v for k, v in op.items() if isinstance(v, np.ndarray)})
        meta = {'format': 'dl_from_scratch.InferencePlan', 'version': 1, 'name': self.name,
                'input_shape': list(self.input_shape), 'ops': specs}
        atomic_savez(path, __plan__=np.array(json.dumps(meta)), **arrays)
        return path

    @classmethod
    def load(cls, path) -> 'InferencePlan':
        "A plan written by `save` (read with `allow_pickle=False`)."
        arrays, _ = _read_checkpoint(str(path))
        meta = json.loads(str(arrays.pop('__plan__'))) if '__plan__' in arrays else {}
        if meta.get('format') != 'dl_from_scratch.InferencePlan':
            raise ValueError(f"{path} is not an inference plan: expected format 'dl_from_scratch.InferencePlan', "
                             f"got {meta.get('format')!r}")
        ops = [dict(spec) for spec in meta['ops']]
        for key, a in arrays.items():
            i, k = key.split('/', 1)
            ops[int(i)][k] = a
        for op in ops:
            for k in ('strides', 'pool_size', 'dilation'):
                if k in op: op[k] = tuple(op[k])
        return cls(ops, meta['input_shape'], meta.get('name', 'plan'))

def numpy_predict(path, x, batch_size: int = 256):
    "Run the checkpoint at `path` (written by `Model.save`) on `x` `(N, *input_shape)` with NumPy only."
    return InferencePlan.from_checkpoint(path).predict(x, batch_size)

# %% [markdown]
# The tests: the plan of the small net above (every supported layer: 'same'
# and strided convolutions, BatchNorm with moved statistics, max and average
# pooling with padding, dropout, a capped ReLU, softmax) agrees with
# `Model.predict` to float32 rounding, from the file and from memory; the
# positional table agrees with the constructors' signatures; unsupported
# checkpoints are refused by name; and a plan saved and loaded predicts the
# same.

# %%
plan = InferencePlan.from_checkpoint(path)
ref = net.predict(x_small)
test_close(plan.predict(x_small), ref, eps=1e-5)
test_close(numpy_predict(path, x_small, batch_size=4), ref, eps=1e-5)
test_close(InferencePlan.from_model(net).predict(x_small), ref, eps=1e-5)
print([op['op'] for op in plan.ops])
print('largest difference from Model.predict:', np.abs(plan.predict(x_small) - ref).max())

import dl_from_scratch.layers as _layers, dl_from_scratch.conv as _conv
for name, params in _POSITIONAL.items():
    cls = getattr(_layers, name, None) or getattr(_conv, name)
    test_eq(tuple(inspect.signature(cls).parameters)[:len(params)], params)

test_fail(lambda: plan.predict(x_small[..., :1]), contains='(N, 12, 12, 2)')
from dl_from_scratch.layers import Embedding
emb = Sequential([Embedding(10, 4), Flatten()], input_shape=(3,))
test_fail(lambda: InferencePlan.from_model(emb), contains="got 'Embedding'")
plan_path = plan.save(os.path.join(tmp, 'small_plan'))
test_eq(InferencePlan.load(plan_path).predict(x_small), plan.predict(x_small))
test_fail(lambda: InferencePlan.load(path), contains='not an inference plan')

# %% [markdown]
# And the claim of this section: in a fresh Python process where importing
# Numba fails, the package's plan still loads the file and predicts the same
# numbers.

# %%
no_numba = f"""
import sys, numpy as np
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] == 'numba': raise ImportError('numba is blocked here')
sys.meta_path.insert(0, Block())
from dl_from_scratch.quantize import numpy_predict
x = np.load({os.path.join(tmp, 'x.npy')!r})
np.save({os.path.join(tmp, 'y.npy')!r}, numpy_predict({path!r}, x))
print('numba' in sys.modules)
"""
np.save(os.path.join(tmp, 'x.npy'), x_small)
r = subprocess.run([sys.executable, '-c', no_numba], capture_output=True, text=True, timeout=120)
print('numba imported:', r.stdout.strip())
assert r.stdout.strip() == 'False', r.stderr[-2000:]
test_close(np.load(os.path.join(tmp, 'y.npy')), ref, eps=1e-5)

# %% [markdown]
# ## 3. Post-training quantisation: the derivation
#
# **Float16.** Storing every weight as IEEE half precision halves the file.
# A float16 has an 11-bit significand, so rounding a weight $w$ changes it by
# at most $2^{-11}|w|$ (relative error $\le 4.9\cdot 10^{-4}$), as long as
# $|w|$ lies in float16's normal range, $[6.1\cdot 10^{-5}, 65504]$; smaller
# weights lose relative precision (subnormals), larger ones would overflow
# (a trained net's weights are far from that). On a CPU the weights are
# widened back to float32 for the products, as TFLite does on CPUs; the
# saving is in storage and memory traffic.
#
# **Int8, symmetric, per channel.** A weight matrix $W$ with columns
# $W_{:,c}$ (one per output channel: a Dense unit, a Conv2D filter) is stored
# as integers $q_{kc} \in \{-127,\dots,127\}$ and one float scale per column,
#
# $$ s_c = \frac{\max_k |W_{kc}|}{127}, \qquad q_{kc} = \operatorname{round}\!\left(\frac{W_{kc}}{s_c}\right), \qquad W_{kc} \approx s_c\, q_{kc}, $$
#
# with an error of at most $s_c/2$ per weight. *Symmetric* (no zero point)
# keeps 0 exactly 0 and keeps the product simple; *per channel* matters
# because the columns of a trained layer differ in size by an order of
# magnitude, and one scale for the whole matrix would round the small
# columns to a few levels. We leave $-128$ unused, so that $-q$ is
# representable.
#
# **Activations.** The input $x$ of a layer is quantised the same way,
# with one scale $s_x$ for the whole tensor, fixed in advance from a
# *calibration* set (about 100 training images, as TFLite's
# `representative_dataset`): $s_x = r/127$ with $r$ the largest $|x|$
# seen (**min/max**) or a high percentile of $|x|$ (**percentile**, e.g.
# 99.99 %, which clips rare outliers to buy finer steps for the rest).
# Then
#
# $$ y_c = \sum_k x_k W_{kc} + b_c \;\approx\; s_x s_c \sum_k q^x_k\, q_{kc} + b_c , $$
#
# and the sum is an **int8 × int8 product accumulated in int32**: each term is
# at most $127^2$, so $K$ terms fit in an int32 for $K \le 2^{31}/127^2
# \approx 133{,}000$. The bias stays float32 (it is one number per channel).
# After a ReLU the activations are non-negative and a symmetric int8 code
# uses only half its range, 7 bits; an asymmetric code (a zero point, as
# TFLite's int8) would recover that bit at the price of correction terms in
# the product.
#
# **Batch normalisation folds away.** A BatchNorm right after a convolution
# without activation is $y = s \odot (xW + b) + t = x (W \operatorname{diag}
# s) + (s \odot b + t)$: scale each output column of $W$ by $s_c$ and the bias
# likewise. Folding before quantising makes the per-channel scales absorb
# BatchNorm's, and removes an operation at inference.

# %%
#| export
def quantize_symmetric(w, axis: int | None = -1, bits: int = 8):
    """Symmetric quantisation of a float array `w` to signed `bits`-bit integers (int8 storage, `bits` <= 8):
    one scale per index of `axis` (per channel; `None`: one scale for all). Returns `(q, scale)` with
    `w ~= q * scale`; `q` int8 of `w`'s shape, `scale` float32 of shape `(w.shape[axis],)` (or `()`);
    |q| <= 2**(bits-1) - 1 and |w - q*scale| <= scale/2. An all-zero channel gets scale 1."""
    w = check_array(w, 'weights', who='quantize_symmetric')
    if not 2 <= int(bits) <= 8: raise ValueError(f"quantize_symmetric expected 2 <= bits <= 8, got {bits}")
    qmax = 2 ** (int(bits) - 1) - 1
    if axis is None: r = np.abs(w).max(initial=0.0)
    else:
        axis = axis % w.ndim
        r = np.abs(w).max(axis=tuple(a for a in range(w.ndim) if a != axis), initial=0.0)
    scale = np.where(r > 0, r / qmax, 1.0).astype(np.float32)
    shape = [1] * w.ndim
    if axis is not None: shape[axis] = -1
    q = np.clip(np.rint(w / scale.reshape(shape)), -qmax, qmax).astype(np.int8)
    return q, scale

def dequantize(q, scale, axis: int | None = -1):
    "`q * scale` as float32, `scale` broadcast along `axis` (the inverse of `quantize_symmetric`, up to rounding)."
    shape = [1] * q.ndim
    if axis is not None: shape[axis % q.ndim] = -1
    return q.astype(np.float32) * np.asarray(scale, np.float32).reshape(shape)

# %%
w = np.random.default_rng(1).normal(size=(5, 5, 3, 8)).astype(np.float32) * np.logspace(-2, 0, 8, dtype=np.float32)
q, s = quantize_symmetric(w)
test_eq((q.dtype, q.shape, s.shape), (np.int8, w.shape, (8,)))
test_eq(np.abs(q).max(axis=(0, 1, 2)), np.full(8, 127))                  # every channel uses the full range
assert (np.abs(dequantize(q, s) - w) <= s / 2 + 1e-7).all()
q1, s1 = quantize_symmetric(w, axis=None)                                  # one scale: small channels lose levels
err = lambda a: np.abs(a - w).max(axis=(0, 1, 2)) / np.abs(w).max(axis=(0, 1, 2))
print('relative error per channel, per-channel scales:', err(dequantize(q, s)).round(4))
print('relative error per channel, one scale         :', err(dequantize(q1, s1, axis=None)).round(4))
assert err(dequantize(q, s)).max() < 0.005 < err(dequantize(q1, s1, axis=None)).max()
test_eq(quantize_symmetric(np.zeros((3, 2)))[1], np.ones(2, np.float32))
test_eq(np.abs(quantize_symmetric(w, bits=4)[0]).max(), 7)
test_fail(lambda: quantize_symmetric(w, bits=9), contains='bits <= 8')
test_fail(lambda: quantize_symmetric(np.array([1.0, np.nan])), contains='finite')

# %% [markdown]
# Calibration: the scale of a layer's input from the calibration batch, by
# min/max or by a percentile of $|x|$; and the input quantiser
# $q^x = \operatorname{clip}(\operatorname{round}(x/s_x), \pm 127)$.

# %%
#| export
def activation_scale(x, method: str = 'minmax', percentile: float = 99.99) -> float:
    """The int8 scale `r / 127` of activations `x` (any shape): `r` = max |x| ('minmax') or the `percentile`-th
    percentile of |x| ('percentile'). A tensor of zeros gets scale 1."""
    x = check_array(x, 'activations', who='activation_scale')
    if method == 'minmax': r = float(np.abs(x).max(initial=0.0))
    elif method == 'percentile':
        if not 0 < percentile <= 100: raise ValueError(f"activation_scale expected 0 < percentile <= 100, got {percentile}")
        r = float(np.percentile(np.abs(x), percentile)) if x.size else 0.0
    else: raise ValueError(f"activation_scale expected method 'minmax' or 'percentile', got {method!r}")
    return r / 127 if r > 0 else 1.0

def quantize_activations(x, scale: float):
    "`x` as int8 codes `clip(round(x / scale), -127, 127)` (values beyond the calibrated range saturate)."
    return np.clip(np.rint(x * np.float32(1 / scale)), -127, 127).astype(np.int8)

# %%
a = np.concatenate([np.linspace(0, 1, 9999), [50.0]]).astype(np.float32)   # one outlier
test_close(activation_scale(a), 50 / 127)
assert activation_scale(a, 'percentile', 99.9) < 1.01 / 127
test_eq(quantize_activations(np.array([-1.0, 0.0, 0.3, 5.0]), 0.01), np.array([-100, 0, 30, 127], np.int8))
test_eq(activation_scale(np.zeros(4)), 1.0)
test_fail(lambda: activation_scale(a, 'mean'), contains="'minmax' or 'percentile'")

# %% [markdown]
# ## 4. The int8 matrix product
#
# $C = A B$ with $A$ `(M, K)` and $B$ `(K, N)` int8, $C$ int32. The NumPy
# reference widens both to int32 and calls `@` (NumPy's integer product has
# no BLAS behind it). The Numba kernel takes $B^T$ `(N, K)`, so that the
# inner loop is a dot product of two contiguous int8 rows, which LLVM turns
# into vector multiply-adds; the rows of $C$ are split across threads
# (`prange`). The CUDA kernel computes one element of $C$ per thread, the
# same loop. All three must agree exactly: integer sums have no rounding.

# %%
#| export
INT8_MAX_K = (2 ** 31 - 1) // (128 * 128)    # the longest int8 dot product an int32 holds without overflow

@functools.cache
def _int8_matmul_numba():
    "The Numba CPU kernel (built on first use: the NumPy path never imports Numba)."
    from numba import njit, prange, int32

    @njit(parallel=True, cache=True)
    def int8_matmul_kernel(a, bt, c):
        M, K = a.shape
        for i in prange(M):
            for j in range(bt.shape[0]):
                acc = int32(0)
                for k in range(K): acc += int32(a[i, k]) * int32(bt[j, k])
                c[i, j] = acc
    return int8_matmul_kernel

def _build_cuda_kernels():
    "The CUDA kernel of the int8 product (built once, by `core.cuda_kernels`)."
    global cuda
    from numba import cuda, int32

    @cuda.jit
    def int8_matmul_k(a, bt, c):
        t = cuda.grid(1)
        M, N = c.shape
        if t >= M * N: return
        i, j = t // N, t % N
        acc = int32(0)
        for k in range(a.shape[1]): acc += int32(a[i, k]) * int32(bt[j, k])
        c[i, j] = acc
    return {'int8_matmul': int8_matmul_k}

def int8_matmul(a, b, backend: str = 'auto'):
    """`a @ b` for int8 `a` `(M, K)` and `b` `(K, N)`, summed in int32: `(M, N)` int32, exact for
    K <= `INT8_MAX_K`. `backend`: 'auto' (Numba on NumPy arrays, CUDA on CuPy arrays), 'numpy', 'numba', 'cuda'."""
    a = check_array(a, 'a', ndim=2, kind='i', who='int8_matmul')
    b = check_array(b, 'b', ndim=2, kind='i', who='int8_matmul')
    if a.dtype != np.int8 or b.dtype != np.int8:
        raise ValueError(f"int8_matmul expected int8 a and b, got {a.dtype} and {b.dtype}")
    if a.shape[1] != b.shape[0]:
        raise ValueError(f"int8_matmul expected b of shape ({a.shape[1]}, N) for a of shape {a.shape}, got {b.shape}")
    if a.shape[1] > INT8_MAX_K:
        raise ValueError(f"int8_matmul expected K <= {INT8_MAX_K} (int32 sums), got K = {a.shape[1]}")
    be = resolve_backend(a, backend, 'int8_matmul')
    if be == 'numpy': return a.astype(np.int32) @ b.astype(np.int32)
    ka = KernelArrays(be, a)
    c = ka.xp.zeros((a.shape[0], b.shape[1]), np.int32)
    if c.size == 0: return ka.result(c)
    A, bt = ka.put(a), ka.put(b.T)
    if be == 'numba': _int8_matmul_numba()(A, bt, c)
    else:
        if isinstance(A, np.ndarray) and not A.flags.writeable: A = A.copy()   # the simulator writes host arguments back
        launch(cuda_kernels('quantize', _build_cuda_kernels)['int8_matmul'], c.size, A, bt, c)
    return ka.result(c)

# %%
rng = np.random.default_rng(2)
for M, K, N in [(1, 1, 1), (7, 13, 5), (3, 64, 9), (33, 150, 16)]:
    A = rng.integers(-128, 128, (M, K)).astype(np.int8)
    B = rng.integers(-128, 128, (K, N)).astype(np.int8)
    C = int8_matmul(A, B, 'numpy')
    test_eq(C.dtype, np.int32)
    test_eq(C, A.astype(np.int64) @ B.astype(np.int64))
    test_eq(int8_matmul(A, B, 'numba'), C)
    if M * N <= 64: test_eq(int8_matmul(A, B, 'cuda'), C)           # the simulator runs each thread in Python
A = np.full((2, INT8_MAX_K), -128, np.int8)
test_eq(int8_matmul(A, A[:1].T.copy(), 'numba'), np.full((2, 1), INT8_MAX_K * 128 * 128))   # the largest sum fits
test_eq(int8_matmul(np.zeros((0, 3), np.int8), np.zeros((3, 4), np.int8)).shape, (0, 4))
test_fail(lambda: int8_matmul(np.zeros((2, 3), np.int8), np.zeros((4, 2), np.int8)), contains='b of shape (3, N)')
test_fail(lambda: int8_matmul(np.zeros((2, 3), np.int16), np.zeros((3, 2), np.int8)), contains='int8 a and b')
test_fail(lambda: int8_matmul(np.zeros((2, 3)), np.zeros((3, 2), np.int8)), contains='dtype kind')
test_fail(lambda: int8_matmul(np.zeros((1, INT8_MAX_K + 1), np.int8), np.zeros((INT8_MAX_K + 1, 1), np.int8)),
          contains='K <=')

# %% [markdown]
# With the product, the int8 path of a weighted operation: the input codes
# (quantised before im2col, so that the padding is exact zeros) times the
# weight codes, then one float multiply per output by $s_x s_c$.

# %%
#| export
def _int8_product(x, Wq, op, backend):
    "Float `x` (or its int8 codes) `(M, K)` times int8 weights `(K, F)`: `s_x * s_w * (q_x @ q_W)` as float32."
    qx = x if x.dtype == np.int8 else quantize_activations(x, op['x_scale'])
    return int8_matmul(qx, Wq, backend).astype(np.float32) * (np.float32(op['x_scale']) * op['w_scale'])

# %% [markdown]
# ## 5. Quantising a plan
#
# `fold_batchnorm` merges each `affine` op into the weighted op before it
# (when that op has no activation); `quantize_plan` then converts every
# weighted op: float16 casts the weights; int8 quantises them per output
# channel and fixes each op's input scale from the calibration batch, run
# through the float plan.

# %%
#| export
def fold_batchnorm(plan: InferencePlan) -> InferencePlan:
    "A new plan with every `affine` op (inference BatchNorm) folded into a conv/dense op without activation just before it."
    ops = []
    for op in plan.ops:
        prev = ops[-1] if ops else None
        if op['op'] == 'affine' and prev is not None and prev['op'] in _QUANTISED_KINDS \
                and prev['activation'] in (None, 'linear') and prev['W'].dtype.kind == 'f':
            b = prev.get('b', np.zeros(prev['W'].shape[-1], np.float32))
            ops[-1] = {**prev, 'W': (prev['W'] * op['scale']).astype(np.float32), 'b': (b * op['scale'] + op['shift']).astype(np.float32)}
        else: ops.append(dict(op))
    return InferencePlan(ops, plan.input_shape, plan.name)

def quantize_plan(plan: InferencePlan, dtype: str = 'int8', x_calib=None, method: str = 'minmax',
                  percentile: float = 99.99) -> InferencePlan:
    """A quantised copy of `plan` (BatchNorm folded first). `dtype` 'float16': weights stored as float16.
    'int8': weights int8 with per-output-channel scales, each weighted op's input scale calibrated on
    `x_calib` `(n, *input_shape)` (about 100 samples) by `method` 'minmax' or 'percentile'."""
    if dtype not in ('float16', 'int8'): raise ValueError(f"quantize_plan expected dtype 'float16' or 'int8', got {dtype!r}")
    folded = fold_batchnorm(plan)
    if dtype == 'float16':
        ops = [{**op, 'W': op['W'].astype(np.float16)} if op['op'] in _QUANTISED_KINDS else op for op in folded.ops]
        return InferencePlan(ops, plan.input_shape, plan.name)
    if x_calib is None: raise ValueError("quantize_plan expected calibration inputs x_calib for dtype 'int8', got None")
    seen = []
    folded.predict(x_calib, batch_size=len(x_calib) or 1, inputs=seen)
    inputs = {}
    for key, h in seen: inputs.setdefault(key, []).append(h)
    ops = []
    for op in folded.ops:
        if op['op'] in _QUANTISED_KINDS:
            q, s = quantize_symmetric(op['W'], axis=-1)
            x_scale = activation_scale(np.concatenate(inputs[id(op)]), method, percentile)
            op = {**op, 'W': q, 'w_scale': s, 'x_scale': float(x_scale)}
        ops.append(op)
    return InferencePlan(ops, plan.input_shape, plan.name)

# %% [markdown]
# Tests on the small net: folding is exact up to rounding and removes the
# BatchNorm; the float16 plan is within float16's rounding; the int8 plan,
# calibrated on the batch itself, stays close, gives the same result on every
# backend, and survives a save and a load with int8 weights on disk.

# %%
folded = fold_batchnorm(plan)
test_eq(len(folded.ops), len(plan.ops) - 1)
test_close(folded.predict(x_small), ref, eps=1e-5)
p16 = quantize_plan(plan, 'float16')
test_eq(p16.ops[0]['W'].dtype, np.float16)
test_close(p16.predict(x_small), ref, eps=2e-3)
p8 = quantize_plan(plan, 'int8', x_small)
y8 = p8.predict(x_small, backend='numba')
print('float16 largest error:', np.abs(p16.predict(x_small) - ref).max(), ' int8 largest error:', np.abs(y8 - ref).max())
test_close(y8, ref, eps=0.03)
test_eq(p8.predict(x_small, backend='numpy'), y8)
test_eq(p8.predict(x_small[:2], backend='cuda'), y8[:2])
p8_path = p8.save(os.path.join(tmp, 'small_int8'))
test_eq(InferencePlan.load(p8_path).predict(x_small), y8)
test_eq(InferencePlan.load(p8_path).ops[0]['W'].dtype, np.int8)
test_fail(lambda: quantize_plan(plan, 'int8'), contains='x_calib')
test_fail(lambda: quantize_plan(plan, 'int4'), contains="'float16' or 'int8'")

# %% [markdown]
# ## 6. Quantising the MNIST and CIFAR-10 nets
#
# Two trained nets: chapter 08's LeNet-5 on MNIST (61,706 parameters), and
# the CS231n report's small CIFAR-10 net of chapter 08, three blocks of
# convolution, BatchNorm, ReLU and max pooling (35,050 parameters), whose
# BatchNorms fold into the convolutions. For each: the file `Model.save`
# writes (float32), and the float16 and int8 plans, with their size on disk
# and their accuracy on the test set; *agree* is the fraction of test images
# whose predicted class is the float32 plan's. The calibration set is 100
# training images. The time column is one pass over the test images by the
# plan (NumPy float32 products, or the Numba int8 product).

# %%
def lenet5(rng=0, classes=10):
    "LeNet-5 for 28x28 digits (chapter 08): 6@5x5 'same' -> pool -> 16@5x5 -> pool -> 120 -> 84 -> `classes` logits."
    return Sequential([Conv2D(6, 5, padding='same', activation='relu', rng=rng), MaxPool2D(2),
                       Conv2D(16, 5, activation='relu', rng=rng), MaxPool2D(2), Flatten(),
                       Dense(120, activation='relu', rng=rng), Dense(84, activation='relu', rng=rng),
                       Dense(classes, rng=rng)], input_shape=(28, 28, 1), name='lenet5')

def cifar_net(rng=0):
    "The CS231n report's CIFAR-10 challenge net (chapter 08): 3 x [conv - BN - ReLU - maxpool] (16, 32, 64) -> FC 10."
    L = []
    for f, k in ((16, 5), (32, 3), (64, 3)):
        L += [Conv2D(f, k, padding='same', rng=rng), BatchNorm(), Activation('relu'), MaxPool2D(2)]
    return Sequential(L + [Flatten(), Dense(10, rng=rng)], input_shape=(32, 32, 3), name='cifar_net')

def train(model, x, y, epochs, lr=1e-3, batch_size=128, optimizer=None):
    "Compile (logits, accuracy) and fit; prints the time."
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=optimizer or Adam(lr), metrics=['accuracy'])
    t0 = time.perf_counter()
    model.fit(x, y, epochs=epochs, batch_size=batch_size, rng=0, verbose=0)
    print(f"{model.name}: {len(x):,} images x {epochs} epoch(s) in {time.perf_counter() - t0:.1f} s")
    return model

def quantisation_table(model, x_calib, x_test, y_test):
    "Size on disk, test accuracy, agreement with float32 and predict time of the model's float32, float16 and int8 forms."
    d = tempfile.mkdtemp()
    ckpt = model.save(os.path.join(d, model.name))
    plan = InferencePlan.from_checkpoint(ckpt)
    variants = {'float32 (Model.save)': plan, 'float16': quantize_plan(plan, 'float16'),
                'int8, min/max': quantize_plan(plan, 'int8', x_calib, 'minmax'),
                'int8, 99.99th pct': quantize_plan(plan, 'int8', x_calib, 'percentile')}
    rows, base = {}, None
    for label, p in variants.items():
        file = ckpt if p is plan else p.save(os.path.join(d, label.replace(' ', '').replace(',', '_').replace('/', '')))
        t0 = time.perf_counter()
        pred = p.predict(x_test).argmax(1)
        t = time.perf_counter() - t0
        base = pred if base is None else base
        rows[label] = dict(kb=os.path.getsize(file) / 1024, acc=float((pred == y_test).mean()),
                           agree=float((pred == base).mean()), s=t)
    a32 = rows['float32 (Model.save)']['acc']
    print(f"{model.name}: {model.count_params():,} parameters, {len(x_test):,} test images")
    print(f"{'form':<22}{'KB on disk':>11}{'size':>7}{'accuracy':>10}{'drop (pp)':>11}{'agree':>8}{'predict s':>11}")
    for label, r in rows.items():
        print(f"{label:<22}{r['kb']:>11.1f}{r['kb'] / rows['float32 (Model.save)']['kb']:>7.2f}{r['acc']:>10.4f}"
              f"{100 * (a32 - r['acc']):>11.2f}{r['agree']:>8.4f}{r['s']:>11.2f}")
    return rows

# %% [markdown]
# A quick version first: LeNet-5 after one epoch on 5,000 images, the
# CIFAR-10 net after one epoch on 2,000, each measured on 1,000 test images.

# %%
#| mnist
lenet = train(lenet5(), x_train[:5000], y_train[:5000], epochs=1)
calib = x_train[np.random.default_rng(0).choice(len(x_train), 100, replace=False)]
rows_mnist = quantisation_table(lenet, calib, x_test[:1000], y_test[:1000])
assert rows_mnist['int8, min/max']['acc'] > rows_mnist['float32 (Model.save)']['acc'] - 0.02
assert rows_mnist['int8, min/max']['kb'] < 0.35 * rows_mnist['float32 (Model.save)']['kb']

# %%
#| cifar10
(c_train, cy_train), (c_test, cy_test) = load('cifar10', 'train'), load('cifar10', 'test')
c_train, c_test = c_train.astype(np.float32) / 255, c_test.astype(np.float32) / 255
cnet = train(cifar_net(), c_train[:2000], cy_train[:2000], epochs=1)
c_calib = c_train[np.random.default_rng(0).choice(len(c_train), 100, replace=False)]
rows_cifar = quantisation_table(cnet, c_calib, c_test[:1000], cy_test[:1000])
assert rows_cifar['int8, min/max']['agree'] > 0.8

# %% [markdown]
# The full run: LeNet-5 for 3 epochs on all 60,000 MNIST images, the CIFAR-10
# net for 2 epochs on all 50,000 CIFAR-10 images (a short training, which
# leaves it far from what the net reaches in more epochs), both measured on
# the whole test sets.

# %%
#| slow
#| mnist
lenet = train(lenet5(), x_train, y_train, epochs=3)
rows_mnist = quantisation_table(lenet, calib, x_test, y_test)

# %%
#| slow
#| cifar10
cnet = train(cifar_net(), c_train, cy_train, epochs=2)
rows_cifar = quantisation_table(cnet, c_calib, c_test, cy_test)

# %% [markdown]
# Reading the full run's tables (the quick run's above them are smoke tests:
# its CIFAR-10 net, after one epoch on 2,000 images, is still at chance).
#
# * **Size.** float16 halves the file (×0.51 for LeNet-5, ×0.50 for the
#   CIFAR-10 net), int8 brings it to ×0.28 (246.9 KB → 69.0 KB; 147.2 KB →
#   41.9 KB). Not ×0.25, because the biases and the per-channel scales stay
#   float32, the JSON description and the zip headers cost the same in every
#   form, and a small net's file is far from all weights.
# * **Accuracy.** float16 changes no prediction of LeNet-5 and 4 of the 10,000
#   CIFAR-10 predictions (agreement 0.9996, accuracy 0.6307 → 0.6303). int8
#   costs 0.05 percentage points on MNIST (0.9867 → 0.9862) and 0.04 on
#   CIFAR-10 (0.6307 → 0.6303) with min/max calibration; the percentile
#   calibration loses 0.04 and 0.00. The predictions that change are those
#   near a tie: int8 agrees with float32 on 99.92 % of the MNIST test images
#   but on 98.2 % of CIFAR-10's, whose short training leaves many images near
#   a boundary. With 100 calibration images min/max and the 99.99th
#   percentile are nearly the same range (one value in 10,000 is clipped), so
#   the two columns differ by noise; a lower percentile clips more and helps
#   only when a few activations are far out, which these ReLU nets' are not.
# * **Time.** The plan's time over the test set is about the same in every
#   form on this CPU: the int8 product is no faster than float32 BLAS here
#   (section 7), and the work around the products (im2col, pooling,
#   quantising the inputs) is the same.

# %% [markdown]
# Where the int8 error comes from, layer by layer: the relative error of each
# weighted layer's output (the int8 plan against the float plan, run on the
# calibration images with the same input), for LeNet-5.

# %%
#| mnist
def layer_errors(plan, qplan, x):
    "Relative L2 error of each conv/dense op's output, the quantised op against the float op on the same input."
    fplan = fold_batchnorm(plan)
    seen = []
    fplan.predict(x, batch_size=len(x), inputs=seen)
    errs = []
    for (key, h), qop in zip(seen, [op for op in qplan.ops if op['op'] in _QUANTISED_KINDS]):
        fop = next(op for op in fplan.ops if id(op) == key)
        yf, yq = _run_op(fop, h), _run_op(qop, h, 'numba')
        errs.append((fop['op'], np.linalg.norm(yq - yf) / np.linalg.norm(yf)))
    return errs

lplan = InferencePlan.from_model(lenet)
for (kind, e_mm), (_, e_pc) in zip(layer_errors(lplan, quantize_plan(lplan, 'int8', calib), calib),
                                   layer_errors(lplan, quantize_plan(lplan, 'int8', calib, 'percentile'), calib)):
    print(f"{kind:<6} relative error: min/max {e_mm:.4f}, percentile {e_pc:.4f}")

# %% [markdown]
# ## 7. Speed of the int8 product
#
# The int8 product moves a quarter of float32's bytes, and CPUs have int8
# dot-product instructions (AVX-512 VNNI, ARM's `sdot`) that do four times
# float32's multiply-adds per cycle. Our Numba kernel reaches those only as
# far as LLVM vectorises a plain loop, with no blocking for the caches; the
# float32 product is OpenBLAS, tuned by hand for decades. The timings (best
# of a few runs, the same threads for both) on the shapes of LeNet-5's
# products at a batch of 256, and on a square matrix. `benchmarks/quantize.py`
# times more shapes.

# %%
def time_best(fn, repeat=3):
    fn()
    ts = []
    for _ in range(repeat):
        t0 = time.perf_counter(); fn(); ts.append(time.perf_counter() - t0)
    return min(ts)

shapes = {'conv1 im2col (256*28*28, 25) x (25, 6)': (256 * 784, 25, 6),
          'conv2 im2col (256*10*10, 150) x (150, 16)': (256 * 100, 150, 16),
          'dense (256, 400) x (400, 120)': (256, 400, 120), 'square 512': (512, 512, 512)}
rng = np.random.default_rng(0)
print(f"{'product':<44}{'float32 ms':>11}{'int8 ms':>9}{'int8 / float32':>16}")
speed = {}
for label, (M, K, N) in shapes.items():
    A, B = rng.integers(-127, 128, (M, K)).astype(np.int8), rng.integers(-127, 128, (K, N)).astype(np.int8)
    Af, Bf = A.astype(np.float32), B.astype(np.float32)
    t32, t8 = time_best(lambda: Af @ Bf), time_best(lambda: int8_matmul(A, B))
    speed[label] = t8 / t32
    print(f"{label:<44}{t32 * 1e3:>11.2f}{t8 * 1e3:>9.2f}{t8 / t32:>15.2f}x")

# %% [markdown]
# Given the same input, every weighted layer's int8 output is within
# 0.35–0.7 % (relative L2) of its float32 output, with either calibration:
# with per-channel weight scales each layer adds well under one percent of
# noise, too little to move more than a few predictions out of 10,000.
#
# The int8 kernel is 2–3.4 times *slower* than float32 BLAS on LeNet-5's
# products, and faster only on the square 512 product (×0.52): single
# best-of-three timings on two cores shared with other work, which
# `benchmarks/quantize.py` repeats with medians over more shapes. The
# int8 product's promise (a quarter of the bytes, four times the
# multiply-adds per instruction with VNNI) needs a kernel that packs the
# operands into cache-sized blocks and uses those instructions, as FBGEMM,
# oneDNN and XNNPACK do; a plain loop compiled by LLVM does not get there.
# What int8 gives us here is size, not speed.

# %% [markdown]
# ## 8. Transfer learning and fine-tuning
#
# Source 003 (§40) fine-tunes an ImageNet MobileNetV2 for cats and dogs:
# freeze the base (`base_model.trainable = False`), train a new head
# (pooling, dropout, one logit) with Adam at $10^{-3}$ for 10 epochs, then
# unfreeze the base from layer 100 on and train 10 more epochs with RMSprop
# at a tenth of the rate. We have no ImageNet weights, so our base is our own:
# LeNet-5 trained on the MNIST digits 0–4, reused for new classes, the digits
# 5–9, with few labelled images: 20 per class (100 in all), and in the full
# run also 5 and 100 per class. The base is
# LeNet-5's convolutional part (two convolutions and poolings, flattened to
# 400 features); the source's head, dropout 0.2 and one linear layer, here
# with 5 outputs, is trained on the frozen base with Adam at $10^{-3}$; then
# the base is unfrozen from its second convolution on (the first stays
# frozen, as the source keeps MobileNetV2's first 100 layers) and everything
# above it trained with RMSprop at $10^{-4}$. The baseline is the whole
# LeNet-5 trained from scratch on the same images for as many epochs in
# all. Batches of 16 (7 steps per epoch); 30 epochs of head, 15 of
# fine-tuning. Accuracy is measured on every test image of the digits 5–9.

# %%
#| mnist
def digits(x, y, classes):
    "The images of the given digits, labels renumbered 0..len(classes)-1."
    keep = np.isin(y, classes)
    return x[keep], np.searchsorted(np.asarray(classes), y[keep])

def labelled_subset(x, y, per_class, rng=0):
    "`per_class` random images of each label."
    g = np.random.default_rng(rng)
    idx = np.concatenate([g.choice(np.flatnonzero(y == c), per_class, replace=False) for c in np.unique(y)])
    return x[idx], y[idx]

xa_train, ya_train = digits(x_train, y_train, [0, 1, 2, 3, 4])
xb_train, yb_train = digits(x_train, y_train, [5, 6, 7, 8, 9])
xb_test, yb_test = digits(x_test, y_test, [5, 6, 7, 8, 9])
def transfer_experiment(base_epochs, per_class=(20,), head_epochs=30, tune_epochs=15, n_base=None):
    """Base LeNet-5 on 0-4; then, for each number of labels per class of 5-9: frozen base + new head, then
    fine-tuning; and from scratch. Returns {labels per class: {method: test accuracy on 5-9}}."""
    n = len(xa_train) if n_base is None else n_base
    source = train(lenet5(rng=0, classes=5), xa_train[:n], ya_train[:n], epochs=base_epochs)
    print(f"base on digits 0-4: test accuracy {source.evaluate(*digits(x_test, y_test, [0, 1, 2, 3, 4]))[1]:.4f}")
    source_path = source.save(os.path.join(tmp, 'base_0to4'))
    results = {}
    for k in per_class:
        xs, ys = labelled_subset(xb_train, yb_train, k)
        base = Sequential.load(source_path).layers[:5]         # a fresh copy: conv, pool, conv, pool, flatten (400)
        for l in base: l.trainable = False
        new = Sequential(base + [Dropout(0.2, rng=1), Dense(5, rng=1)], input_shape=(28, 28, 1), name='transfer')
        train(new, xs, ys, epochs=head_epochs, batch_size=16)
        acc_head = new.evaluate(xb_test, yb_test)[1]
        for l in base[2:]: l.trainable = True                  # unfreeze from the second convolution on
        train(new, xs, ys, epochs=tune_epochs, batch_size=16, optimizer=RMSprop(1e-4))
        acc_tuned = new.evaluate(xb_test, yb_test)[1]
        scratch = train(lenet5(rng=1, classes=5), xs, ys, epochs=head_epochs + tune_epochs, batch_size=16)
        results[k] = {'frozen base + new head': acc_head, 'then fine-tuned (lr/10)': acc_tuned,
                      'from scratch': scratch.evaluate(xb_test, yb_test)[1]}
    print(f"\ndigits 5-9, test accuracy ({len(xb_test):,} images)")
    print(f"{'labels':>8}" + ''.join(f"{m:>26}" for m in results[per_class[0]]))
    for k, r in results.items(): print(f"{5 * k:>8}" + ''.join(f"{v:>26.4f}" for v in r.values()))
    return results


# %% [markdown]
# The quick version: a base trained one epoch on 3,000 images.

# %%
#| mnist
transfer = transfer_experiment(base_epochs=1, n_base=3000)
assert min(transfer[20].values()) > 0.5                           # chance is 0.2

# %% [markdown]
# The full run: the base trained 3 epochs on all 30,596 images of the digits
# 0–4, and 5, 20 and 100 labelled images per class.

# %%
#| slow
#| mnist
transfer = transfer_experiment(base_epochs=3, per_class=(5, 20, 100))

# %% [markdown]
# The base reaches 0.9946 on the digits 0–4. On the new digits, reusing it
# pays only once there are enough labels: with 100 per class (500 images)
# the frozen base and a linear head reach 0.9619 against 0.9517 from
# scratch; with 20 per class, 0.9058, then 0.9169 after fine-tuning, against
# 0.9099 from scratch; with 5 per class (25 images) the net trained from
# scratch does better (0.8218 against 0.7811 and 0.7797). Fine-tuning at a
# tenth of the rate moves the accuracy by at most about one point. Two
# things make this small experiment unlike the source's: a LeNet-5 trained
# from scratch on MNIST is already a strong learner from a few images (digits
# are easy), and a base that has seen five digit classes carries much less
# than an ImageNet base that has seen a thousand object classes; a linear head
# on its 400 features cannot reshape them, while the net from scratch learns
# features for the new digits themselves. Each number is one run (one
# labelled subset, one initialisation); on 4,861 test images an accuracy
# near 0.9 has a sampling error of about 0.4 points, and another subset of
# 25 images would move the first row by more. Larger gains need a base whose
# features are more general than the target, which is the case source 003
# (MobileNetV2 from ImageNet to cats and dogs) describes.

# %% [markdown]
# ## 9. Out of scope: TensorFlow's deployment software
#
# Source 003 deploys with TensorFlow's own programs. They serve TensorFlow
# graphs, so they are outside a from-scratch book; here is what each does and
# what stands for it in this one.
#
# * **TensorFlow Lite** converts a SavedModel into a flat `.tflite` file for
#   phones and microcontrollers, with post-training float16, hybrid (int8
#   weights, float activations) and full int8 quantisation calibrated on a
#   `representative_dataset` of about 100 samples, and an interpreter with
#   kernels for CPUs, GPUs, DSPs and NPUs. Here: sections 3–7.
# * **TensorFlow Serving** is a C++ server that loads SavedModels from a
#   versioned folder and answers gRPC and REST requests
#   (`POST /v1/models/NAME:predict` with `{"instances": ...}`), batching them
#   and swapping model versions without a restart. Here: chapter 20a's
#   standard-library server speaks the same REST form.
# * **TFX** (TensorFlow Extended) builds production pipelines as graphs of
#   components (ExampleGen, StatisticsGen, SchemaGen, ExampleValidator,
#   Transform, Trainer, Evaluator, Pusher) run by Airflow, Kubeflow or Beam,
#   with ML Metadata recording every artefact's lineage. Nothing here
#   replaces it: this book trains in notebooks.

# %% [markdown]
# ## 10. Comparison with the source
#
# Source 003 reports two numbers for this chapter's material, the
# save-and-restore accuracies; for quantisation (§43) and fine-tuning (§40)
# it gives the recipes without results. Its one deployment result, 87.3 %
# accuracy (precision 82.3, recall 76.7, F1 79.4) of a MobileNet V1 on an
# Android phone, is for a problem and data set it does not name, so nothing can
# be set beside it. The table prints our numbers beside what the source says.

# %%
#| cifar10
#| mnist
drop = lambda rows, k: 100 * (rows['float32 (Model.save)']['acc'] - rows[k]['acc'])
ratio = lambda rows, k: rows[k]['kb'] / rows['float32 (Model.save)']['kb']
table = [
    ('§25 untrained model, first 1,000 test images', 'about 10 %', f"{100 * acc_fresh:.1f} %"),
    ('§25 restored after 10 epochs on 1,000 images', 'about 87 %', f"{100 * acc_restored:.1f} %"),
    ('§43 float16: size', 'halved (no number)', f"x{ratio(rows_mnist, 'float16'):.2f} MNIST, x{ratio(rows_cifar, 'float16'):.2f} CIFAR-10"),
    ('§43 int8: size', 'int8 weights (no number)', f"x{ratio(rows_mnist, 'int8, min/max'):.2f} MNIST, x{ratio(rows_cifar, 'int8, min/max'):.2f} CIFAR-10"),
    ('§43 int8 (min/max): accuracy drop', 'not reported', f"{drop(rows_mnist, 'int8, min/max'):+.2f} pp MNIST, {drop(rows_cifar, 'int8, min/max'):+.2f} pp CIFAR-10"),
    ('§40 frozen base + head, then fine-tuned', 'not reported', f"{100 * transfer[20]['frozen base + new head']:.1f} % -> "
     f"{100 * transfer[20]['then fine-tuned (lr/10)']:.1f} % (100 labels)"),
    ('§40 (ours) from scratch, same 100 labels', '-', f"{100 * transfer[20]['from scratch']:.1f} %"),
]
print(f"{'quantity':<46}{'source 003':<28}{'ours'}")
for row in table: print(f"{row[0]:<46}{row[1]:<28}{row[2]}")

# %% [markdown]
# Our save-and-restore run reproduces the source's demo: a fresh model at
# chance (9.1 % against the source's "about 10 %") and the restored one at
# 90.9 % against its "about 87 %"; the three points are within what another
# initialisation and shuffling of 1,000 training images give.

# %% [markdown]
# ## Summary
#
# | piece | what it is |
# |---|---|
# | `InferencePlan` (`from_checkpoint`, `from_model`, `predict`, `save`, `load`), `numpy_predict` | a `Sequential` checkpoint as a list of NumPy operations, run without Numba; saved as data (JSON and arrays), never code |
# | `im2col`, `pool2d`, `resolve_padding` | the NumPy convolution columns and pooling, built tap by tap |
# | `quantize_symmetric`, `dequantize` | symmetric per-channel (or per-tensor) integer codes and scales, error at most half a step |
# | `activation_scale`, `quantize_activations` | an activation scale from calibration data (min/max or a percentile), and the int8 codes |
# | `int8_matmul` | int8 × int8 → int32: NumPy reference, Numba CPU, CUDA; exact, K ≤ `INT8_MAX_K` |
# | `fold_batchnorm`, `quantize_plan` | BatchNorm folded into the layer before it; float16 or int8 plans calibrated on about 100 inputs |
#
# ## References
#
# * Source 003 (course notes on the TensorFlow tutorials): §25 save and load (the 10 % and 87 % demo), §40 transfer learning and fine-tuning (MobileNetV2, freeze, new head, unfreeze from layer 100 at a tenth of the rate), §41 TF Serving and TFX, §43 TFLite post-training quantisation (float16, hybrid, int8 with a representative data set of about 100 samples).
# * B. Jacob et al., "Quantization and training of neural networks for efficient integer-arithmetic-only inference", CVPR 2018.
# * R. Krishnamoorthi, "Quantizing deep convolutional networks for efficient inference: a whitepaper", arXiv 1806.08342 (per-channel weight scales, calibration, folding batch normalisation).
# * H. Wu et al., "Integer quantization for deep learning inference: principles and empirical evaluation", arXiv 2004.09602 (max and percentile calibration).
# * J. Yosinski, J. Clune, Y. Bengio, H. Lipson, "How transferable are features in deep neural networks?", NIPS 2014.
# * IEEE 754-2008 (binary16).
