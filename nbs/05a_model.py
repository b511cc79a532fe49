# %% [markdown]
# # The model API: `Sequential`, `fit`, callbacks, checkpoints
#
# > Chapter 05, part 2: a small Keras on top of the `Layer` API.
#
# ## Purpose
#
# Chapter 05 built layers with explicit forward and backward passes. Training
# one is always the same loop: cut the data into minibatches; for each,
# run forward, take the loss and its gradient, run backward, let the
# optimizer update the parameters; after each epoch, measure on held-out
# data and decide whether to stop. This part packages that loop as
# `Sequential`, with the names Keras made familiar:
#
# ```python
# model = Sequential([Flatten(), Dense(512, 'relu'), Dense(10)])
# model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=Adam(1e-3), metrics=['accuracy'])
# history = model.fit(x, y, epochs=10, batch_size=128, validation_data=(xv, yv),
#                     callbacks=[EarlyStopping(patience=2, restore_best_weights=True)])
# model.evaluate(xt, yt); model.save('mlp.npz'); Sequential.load('mlp.npz')
# ```
#
# Design points:
#
# * **Minibatches are vectorised**: one fancy-indexing gather per batch, never
#   a Python loop over samples.
# * **Failure is loud and early**: a NaN loss stops `fit` with a message that
#   says when and what to try; a checkpoint of another architecture is refused
#   before any weight is touched.
# * **Saving is atomic**: the `.npz` is written to a temporary file in the
#   same folder and moved over the old one with `os.replace`, which POSIX and
#   Windows make atomic, so an interrupted save leaves the old file intact.

# %%
#| default_exp model

# %%
#| export
from __future__ import annotations
import json, math, os, sys, time
import numpy as np
from tqdm import tqdm
from dl_from_scratch.core import check_array, as_rng, get_array_module, get_dtype
from dl_from_scratch.data import atomic_savez
from dl_from_scratch.layers import Layer, LAYERS, _snake
from dl_from_scratch.losses import get_loss
from dl_from_scratch.optim import get_optimizer

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail
import os, tempfile
import numpy as np
from dl_from_scratch.layers import Dense, Activation, Flatten
from dl_from_scratch.optim import SGD, Adam
from dl_from_scratch.losses import SparseCategoricalCrossentropy
SCE_LOGITS = SparseCategoricalCrossentropy(from_logits=True)     # the tests' models output logits

# %% [markdown]
# ## Metrics
#
# `accuracy` works out what "correct" means from the shapes, as Keras'
# `'accuracy'` string does: with several output columns, the arg-max is
# compared with integer labels or with the arg-max of one-hot targets; with one
# output column the prediction is thresholded (at 0.5 for probabilities, at 0
# for logits).

# %%
#| export
def accuracy(y_pred, y_true, from_logits: bool = False) -> float:
    """Fraction of correct predictions. `y_pred` `(N, C)` scores with `y_true` integer `(N,)` or
    one-hot `(N, C)`; or `y_pred` `(N,)`/`(N, 1)` binary scores with `y_true` in {0, 1}."""
    xp = get_array_module(y_pred)
    y_true = xp.asarray(y_true)
    if y_pred.ndim >= 2 and y_pred.shape[-1] > 1:
        pred = y_pred.argmax(-1)
        true = y_true.argmax(-1) if y_true.shape == y_pred.shape else y_true.reshape(pred.shape)
    else:
        pred = y_pred.reshape(-1) > (0.0 if from_logits else 0.5)
        true = y_true.reshape(-1) > 0.5
    return float((pred == true).mean())

def _mse_metric(y_pred, y_true, from_logits=False):
    xp = get_array_module(y_pred); e = y_pred - xp.asarray(y_true).reshape(y_pred.shape)
    return float((e * e).mean())

def _mae_metric(y_pred, y_true, from_logits=False):
    xp = get_array_module(y_pred); return float(xp.abs(y_pred - xp.asarray(y_true).reshape(y_pred.shape)).mean())

METRICS = {'accuracy': accuracy, 'acc': accuracy, 'mse': _mse_metric, 'mae': _mae_metric}

def get_metric(metric):
    "`(name, fn)` for a metric name ('accuracy', 'mse', 'mae') or a function `fn(y_pred, y_true, from_logits)`."
    if callable(metric): return metric.__name__, metric
    if isinstance(metric, str) and metric.lower() in METRICS:
        return ('accuracy' if metric.lower() == 'acc' else metric.lower()), METRICS[metric.lower()]
    raise ValueError(f"unknown metric {metric!r}; expected a function or one of {sorted(METRICS)}")

# %%
test_eq(accuracy(np.array([[.1, .9], [.8, .2]]), np.array([1, 1])), 0.5)
test_eq(accuracy(np.array([[.1, .9], [.8, .2]]), np.array([[0, 1], [1, 0]])), 1.0)
test_eq(accuracy(np.array([[.7], [.2]]), np.array([1, 0])), 1.0)
test_eq(accuracy(np.array([[-1.], [2.]]), np.array([[0], [1]]), from_logits=True), 1.0)
test_fail(lambda: get_metric('f1'), contains='unknown metric')

# %% [markdown]
# ## Callbacks and `History`
#
# A callback is told when training begins and ends and when each epoch
# ends, with the epoch's `logs` (`loss`, `accuracy`, `val_loss`, ...). It may
# set `model.stop_training = True`. `History` is the callback `fit` always
# adds: it appends every epoch's logs.
#
# **Early stopping** watches a monitored quantity (default `val_loss`) and
# stops after `patience` epochs without an improvement of at least
# `min_delta`. With `restore_best_weights=True` it keeps a copy of the
# weights of the best epoch and puts them back when training ends (as Keras 3
# does, also when training ran to the last epoch). Early stopping is
# regularization (chapter 06): it chooses the number of epochs on held-out data.
#
# **ModelCheckpoint** saves the model after each epoch, or only when the
# monitored quantity improved (`save_best_only=True`); the file name may hold
# `{epoch}` and any log, e.g. `'ckpt-{epoch:02d}-{val_loss:.3f}.npz'`.

# %%
#| export
class Callback:
    "Base class: override any of the hooks; `self.model` is set by `fit`."
    def set_model(self, model): self.model = model
    def on_train_begin(self, logs=None): pass
    def on_epoch_begin(self, epoch, logs=None): pass
    def on_batch_end(self, batch, logs=None): pass
    def on_epoch_end(self, epoch, logs=None): pass
    def on_train_end(self, logs=None): pass

class History(Callback):
    "Records the logs of every epoch: `history.history['loss']`, `history.epoch`."
    def on_train_begin(self, logs=None):
        self.epoch, self.history = [], {}
    def on_epoch_end(self, epoch, logs=None):
        self.epoch.append(epoch)
        for k, v in (logs or {}).items(): self.history.setdefault(k, []).append(v)
    def __repr__(self):
        return f"History(epochs={len(getattr(self, 'epoch', []))}, keys={list(getattr(self, 'history', {}))})"

def _better_fn(monitor: str, mode: str, min_delta: float):
    if mode not in ('auto', 'min', 'max'): raise ValueError(f"mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == 'auto': mode = 'max' if ('acc' in monitor or monitor.endswith('auc')) else 'min'
    d = abs(min_delta)
    return (lambda cur, best: cur > best + d) if mode == 'max' else (lambda cur, best: cur < best - d), mode

def _monitored(logs, monitor, who):
    if monitor not in logs:
        raise ValueError(f"{who} monitors {monitor!r}, but the logs hold only {sorted(logs)} "
                         "(pass validation_data to fit for val_* quantities)")
    return logs[monitor]

class EarlyStopping(Callback):
    """Stop when `monitor` has not improved by `min_delta` for `patience` epochs.
    `restore_best_weights`: put back the weights of the best epoch when training ends."""
    def __init__(self, monitor='val_loss', min_delta=0.0, patience=0, mode='auto', baseline=None,
                 restore_best_weights=False, verbose=0):
        self.monitor, self.patience, self.baseline = monitor, int(patience), baseline
        self.restore_best_weights, self.verbose = restore_best_weights, verbose
        self._better, self.mode = _better_fn(monitor, mode, min_delta)

    def on_train_begin(self, logs=None):
        self.wait, self.stopped_epoch, self.best_epoch, self.best_weights = 0, None, None, None
        self.best = self.baseline if self.baseline is not None else (math.inf if self.mode == 'min' else -math.inf)

    def on_epoch_end(self, epoch, logs=None):
        cur = _monitored(logs or {}, self.monitor, 'EarlyStopping')
        if self._better(cur, self.best):
            self.best, self.best_epoch, self.wait = cur, epoch, 0
            if self.restore_best_weights: self.best_weights = [w.copy() for w in self.model.get_weights()]
        else:
            self.wait += 1
            if self.wait >= self.patience:
                self.stopped_epoch = epoch
                self.model.stop_training = True

    def on_train_end(self, logs=None):
        if self.restore_best_weights and self.best_weights is not None:
            self.model.set_weights(self.best_weights)
            if self.verbose: print(f"EarlyStopping: restored the weights of epoch {self.best_epoch + 1} "
                                   f"({self.monitor} = {self.best:.4g})")
        if self.stopped_epoch is not None and self.verbose:
            print(f"EarlyStopping: stopped after epoch {self.stopped_epoch + 1}")

class ModelCheckpoint(Callback):
    """Save the model to `filepath` (may contain `{epoch}` and log keys) after every epoch,
    or only when `monitor` improved if `save_best_only`. Each save is atomic."""
    def __init__(self, filepath, monitor='val_loss', save_best_only=False, mode='auto', verbose=0):
        self.filepath, self.monitor, self.save_best_only, self.verbose = str(filepath), monitor, save_best_only, verbose
        self._better, self.mode = _better_fn(monitor, mode, 0.0)

    def on_train_begin(self, logs=None):
        self.best = math.inf if self.mode == 'min' else -math.inf
        self.saved = []

    def on_epoch_end(self, epoch, logs=None):
        logs = logs or {}
        if self.save_best_only:
            cur = _monitored(logs, self.monitor, 'ModelCheckpoint')
            if not self._better(cur, self.best): return
            self.best = cur
        path = self.filepath.format(epoch=epoch + 1, **logs)
        self.model.save(path)
        self.saved.append(path)
        if self.verbose: print(f"ModelCheckpoint: saved {path}")

# %% [markdown]
# ## Saving and loading, atomically
#
# A checkpoint is one `.npz`: every parameter and state array under
# `'<layer name>/<key>'`, plus a JSON string `__config__` with the layer
# classes, their constructor arguments and the input shape, so
# `Sequential.load` can rebuild the model. The writer follows the usual
# recipe for crash-safe files: write a temporary file in the *same*
# directory (so the rename cannot cross file systems), flush and `fsync` it,
# then `os.replace` it over the target. A crash (or `KeyboardInterrupt`) before
# the rename leaves the old checkpoint as it was, and the temporary file is
# removed. The data chapter's `atomic_savez` already does exactly this for the
# dataset cache, so the model reuses it.

# %%
#| export
def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith('.npz') else path + '.npz'

def atomic_save_npz(path, arrays: dict) -> str:
    "Write `arrays` (name -> ndarray) to `path` (`.npz` added if missing) atomically; returns the path."
    path = _npz_path(path)
    atomic_savez(path, **arrays)      # the data chapter's crash-safe writer: temp file, fsync, os.replace
    return path

def _to_json(obj):
    "JSON-friendly form of constructor arguments: layers, regularizers and constraints by config."
    if isinstance(obj, Layer): return {'__layer__': _layer_config(obj)}
    if isinstance(obj, np.random.Generator): return None         # weights are loaded, the rng is not needed
    if isinstance(obj, (np.integer, np.floating)): return obj.item()
    if isinstance(obj, (list, tuple)): return [_to_json(o) for o in obj]
    if isinstance(obj, dict): return {str(k): _to_json(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)): return obj
    if hasattr(obj, 'get_config') and hasattr(obj, '__class__'):
        return {'__object__': type(obj).__name__, 'module': type(obj).__module__, 'config': _to_json(obj.get_config())}
    if callable(obj) and getattr(obj, '__module__', '').startswith('dl_from_scratch'):
        return {'__function__': obj.__name__, 'module': obj.__module__}
    raise TypeError(f"cannot serialise {obj!r} ({type(obj).__name__}) into a model config")

def _layer_config(layer):
    c = layer.get_config()
    return {'class': c['class'], 'module': type(layer).__module__, 'name': layer.name,
            'args': _to_json(c['args']), 'kwargs': _to_json(c['kwargs'])}

def _from_json(obj):
    import importlib
    if isinstance(obj, list): return [_from_json(o) for o in obj]
    if isinstance(obj, dict):
        if '__layer__' in obj: return _layer_from_config(obj['__layer__'])
        if '__object__' in obj:
            cls = getattr(importlib.import_module(obj['module']), obj['__object__'])
            return cls(**_from_json(obj['config']))
        if '__function__' in obj: return getattr(importlib.import_module(obj['module']), obj['__function__'])
        return {k: _from_json(v) for k, v in obj.items()}
    return obj

def _layer_from_config(c):
    import importlib
    if c['class'] not in LAYERS: importlib.import_module(c['module'])   # registers conv/rnn layers
    layer = LAYERS[c['class']](*_from_json(c['args']), **_from_json(c['kwargs']))
    layer.name = c['name']
    return layer

# %%
d = tempfile.mkdtemp()
p = atomic_save_npz(os.path.join(d, 'a'), {'w': np.arange(3.)})
test_eq(p.endswith('a.npz'), True); test_eq(np.load(p)['w'], np.arange(3.))
test_eq(sorted(os.listdir(d)), ['a.npz'])          # no temporary file left behind

# %% [markdown]
# ## `Sequential`
#
# A `Sequential` is a list of layers. It gives each layer a unique name
# (`dense`, `dense_1`, ... as Keras does), builds them in order from the input
# shape, and exposes all parameters as one flat `dict` keyed
# `'<layer>/<param>'` whose values *are* the layers' arrays, so the optimizer
# (chapter 04), which updates in place, updates the layers.
#
# One training step on a minibatch $(X_B, Y_B)$ is
#
# 1. $\hat Y = f(X_B)$ in training mode (dropout on, batch statistics);
# 2. $\mathcal{L} = \text{loss}(\hat Y, Y_B) + \sum_\ell R_\ell(\theta_\ell)$ and
#    $\bar{\hat Y} = \partial\,\text{loss}/\partial\hat Y$;
# 3. backward through the layers in reverse; add $\nabla R_\ell$. Nothing
#    uses $\partial\mathcal{L}/\partial X_B$, so the step asks for
#    `backward(dy, need_dx=False)` of the first layer, and `Dense` and
#    `Conv2D` then skip that product (one matrix product of the layer's three);
# 4. `optimizer.step(params, grads)`, then each layer's constraint.
#
# `fit` runs it over shuffled minibatches, with a progress bar (`verbose=1`),
# one line per epoch (`verbose=2`) or silently (`verbose=0`).

# %%
#| export
class Sequential:
    """A linear stack of layers. `x` `(N, *input_shape)` -> `(N, *output_shape)`.

    `layers`: a list of `Layer`s; `input_shape` (batch axis excluded) builds the model at once,
    otherwise it is built on the first call, `build(input_shape)` or `fit`."""
    def __init__(self, layers=None, input_shape=None, name: str = 'sequential'):
        self.layers: list = []
        self.name, self.input_shape, self.built = name, None, False
        self.loss = self.optimizer = None
        self.metrics: list = []
        self.stop_training = False
        self.history = None
        for layer in layers or []: self.add(layer)
        if input_shape is not None: self.build(input_shape)

    # --- structure -------------------------------------------------------------------------------
    def add(self, layer: Layer):
        "Append a layer; it gets a unique snake_case name if it has none."
        if not isinstance(layer, Layer):
            raise ValueError(f"Sequential.add expected a Layer, got {type(layer).__name__}")
        taken = {l.name for l in self.layers}
        if layer.name is None or layer.name in taken:
            base = layer.name or _snake(type(layer).__name__)
            name, i = base, 0
            while name in taken: i += 1; name = f'{base}_{i}'
            layer.name = name
        self.layers.append(layer)
        if self.built: self.build(self.input_shape)
        return self

    def build(self, input_shape):
        """Build every layer for inputs of shape `(N, *input_shape)`. A `None` size (Keras's convention) accepts
        any size on that axis, e.g. `(None, 12)` for sequences of any length with 12 features."""
        shape = tuple(None if s is None else int(s) for s in input_shape)
        self.input_shape = shape
        for layer in self.layers:
            try:
                if not layer.built: layer.build(shape)
                elif tuple(layer.input_shape) != shape:
                    raise ValueError(f"layer '{layer.name}' was built for input shape {layer.input_shape}, "
                                     f"but receives {shape} in this model")
                shape = tuple(layer.output_shape(shape))
            except TypeError as e:       # int(None) or prod with None: a size this layer must know
                if None not in shape: raise
                raise ValueError(f"layer '{layer.name}' ({type(layer).__name__}) needs every size of its input "
                                 f"known, got input shape (N, {', '.join(map(str, shape))})") from e
        self.built = True
        return self

    def output_shape(self, input_shape=None):
        "Output shape (batch axis excluded) for inputs of `input_shape` (default: the built one)."
        shape = tuple(self.input_shape if input_shape is None else input_shape)
        for layer in self.layers: shape = tuple(layer.output_shape(shape))
        return shape

    def __len__(self): return len(self.layers)
    def __getitem__(self, i): return self.layers[i]
    def __repr__(self): return f"Sequential([{', '.join(map(repr, self.layers))}])"

    # --- parameters ------------------------------------------------------------------------------
    @property
    def params(self) -> dict:
        "Every trainable array, keyed `'<layer>/<param>'` (the layers' own arrays, not copies)."
        return {f'{l.name}/{k}': p for l in self.layers for k, p in l.params.items()}

    @property
    def grads(self) -> dict:
        return {f'{l.name}/{k}': g for l in self.layers for k, g in l.grads.items()}

    def _weight_items(self):
        "`(key, layer, dict, name)` for every saved array: params, then state, layer by layer."
        for l in self.layers:
            for d in (l.params, l.state):
                for k in d: yield f'{l.name}/{k}', l, d, k

    def get_weights(self) -> list:
        "All parameter and state arrays, in a fixed order (copies)."
        return [d[k].copy() for _, _, d, k in self._weight_items()]

    def set_weights(self, weights: list) -> None:
        "Copy `weights` (as from `get_weights`) into the model, after checking every shape."
        items = list(self._weight_items())
        if len(weights) != len(items):
            raise ValueError(f"set_weights expected {len(items)} arrays, got {len(weights)}")
        for (key, _, d, k), w in zip(items, weights):
            if tuple(w.shape) != tuple(d[k].shape):
                raise ValueError(f"set_weights expected {key} of shape {tuple(d[k].shape)}, got {tuple(w.shape)}")
        for (_, _, d, k), w in zip(items, weights):
            d[k][...] = get_array_module(d[k]).asarray(w)

    def count_params(self) -> int:
        "Scalars in every layer's `params` and `state` (the summary's 'Total params')."
        return sum(l.count_params() for l in self.layers)

    def to(self, device: str = 'cpu'):
        "Move every layer to `'cpu'` or `'cuda'`; the optimizer's state is reset."
        for l in self.layers: l.to(device)
        if self.optimizer is not None: self.optimizer.reset()
        return self

    def summary(self, print_fn=print) -> None:
        "Print each layer's output shape and parameter count, and the totals (counted as Keras does)."
        if not self.built:
            raise ValueError("summary() needs a built model: pass input_shape=, call build(input_shape), or fit first")
        rows, shape = [], self.input_shape
        for l in self.layers:
            shape = tuple(l.output_shape(shape))
            rows.append((f'{l.name} ({type(l).__name__})', str((None, *shape)), f'{l.count_params():,}'))
        total = self.count_params()
        trainable = sum(l.count_trainable_params() for l in self.layers)
        w0 = max([len('Layer (type)')] + [len(r[0]) for r in rows]) + 2
        w1 = max([len('Output Shape')] + [len(r[1]) for r in rows]) + 2
        w2 = max([len('Param #')] + [len(r[2]) for r in rows])
        line = '_' * (w0 + w1 + w2)
        out = [f'Model: "{self.name}"', line, f"{'Layer (type)':<{w0}}{'Output Shape':<{w1}}{'Param #':>{w2}}",
               '=' * (w0 + w1 + w2)]
        for r in rows: out.append(f'{r[0]:<{w0}}{r[1]:<{w1}}{r[2]:>{w2}}')
        out += ['=' * (w0 + w1 + w2), f'Total params: {total:,}', f'Trainable params: {trainable:,}',
                f'Non-trainable params: {total - trainable:,}', line]
        print_fn('\n'.join(out))

    # --- computation -----------------------------------------------------------------------------
    def forward(self, x, training: bool = False):
        "`x` `(N, *input_shape)` -> output `(N, *output_shape())` through every layer (builds on first use)."
        if not self.built: self.build(tuple(x.shape[1:]))
        for l in self.layers: x = l.forward(x, training=training)
        return x

    __call__ = forward

    def backward(self, dy, need_dx: bool = True):
        """`dy` = dL/d(output) `(N, *output_shape())` -> dL/dx `(N, *input_shape)`; fills every layer's
        `grads`. `need_dx=False` lets the first layer skip dL/dx (then the result may be `None`)."""
        if not self.layers: return dy
        for l in reversed(self.layers[1:]): dy = l.backward(dy)
        return self.layers[0].backward(dy, need_dx=need_dx)

    def regularization_loss(self) -> float:
        "Sum of the layers' penalties (added to the data loss in `fit` and `evaluate`)."
        return float(sum(l.regularization_loss() for l in self.layers))

    # --- training --------------------------------------------------------------------------------
    def compile(self, loss='mse', optimizer='sgd', metrics=('accuracy',)):
        """Set the loss (`losses.get_loss` name or object), the optimizer (`optim.get_optimizer`
        name or object) and the metrics ('accuracy', 'mse', 'mae' or functions)."""
        self.loss = get_loss(loss)
        self.optimizer = get_optimizer(optimizer)
        self.metrics = [get_metric(m) for m in (metrics or [])]
        return self

    def _check_compiled(self, who):
        if self.loss is None: raise ValueError(f"{who} needs a compiled model: call model.compile(loss, optimizer) first")

    def _metric_values(self, y_pred, y_true) -> dict:
        logits = getattr(self.loss, 'from_logits', False)
        return {name: fn(y_pred, y_true, from_logits=logits) for name, fn in self.metrics}

    def _batch(self, a, idx, xp):
        "Rows `idx` of `a`, on the model's device. No dtype cast: each layer casts what it takes (ids stay ints)."
        b = a[idx]
        return b if xp is np else xp.asarray(b)

    def _xp(self):
        for p in self.params.values(): return get_array_module(p)
        return np

    def train_step(self, xb, yb):
        "One update on a minibatch; returns `(loss incl. regularization, y_pred)`."
        y_pred = self.forward(xb, training=True)
        if not bool(get_array_module(y_pred).isfinite(y_pred).all()):
            return math.nan, y_pred                  # fit reports it; the loss would refuse NaN input
        loss, dy = self.loss.value_and_grad(y_pred, yb)
        loss += self.regularization_loss()
        self.backward(dy, need_dx=False)             # nothing uses dL/dx_batch
        grads = {}
        for l in self.layers:
            if not l.trainable: continue             # a frozen layer gets no update
            reg = l.regularization_grads()
            for k, g in l.grads.items():
                grads[f'{l.name}/{k}'] = g + reg[k] if k in reg else g
        self.optimizer.step({k: p for k, p in self.params.items() if k in grads}, grads)
        for l in self.layers:
            if l.trainable: l.apply_constraints()
        return loss, y_pred

    def _check_xy(self, x, y, who):
        x = check_array(x, 'x', kind=None, who=who)
        if x.dtype.kind == 'f' and not np.isfinite(x).all():
            raise ValueError(f"{who} expected x to be finite, got {int((~np.isfinite(x)).sum())} NaN/inf value(s)")
        if y is not None:
            y = check_array(y, 'y', kind=None, finite=False, who=who)
            if len(y) != len(x):
                raise ValueError(f"{who} expected y with as many rows as x ({len(x)}), got {len(y)} (shape {tuple(y.shape)})")
        if self.built and (x.ndim != len(self.input_shape) + 1 or
                           any(e is not None and e != d for e, d in zip(self.input_shape, x.shape[1:]))):
            raise ValueError(f"{who} expected x of shape (N, {', '.join(map(str, self.input_shape))}), got {tuple(x.shape)}")
        return x, y

    def fit(self, x, y, epochs: int = 1, batch_size: int = 32, validation_data=None, callbacks=None,
            shuffle: bool = True, rng=None, verbose: int = 1, initial_epoch: int = 0) -> History:
        """Train on `x` `(N, *input_shape)`, `y` `(N, ...)` for `epochs` passes of minibatches of
        `batch_size`. `validation_data=(x_val, y_val)` adds `val_*` logs. Returns a `History`
        (also `model.history`). Stops with `FloatingPointError` when the loss becomes NaN/inf."""
        self._check_compiled('fit')
        x, y = self._check_xy(x, y, 'fit')
        if not self.built: self.build(tuple(x.shape[1:]))
        if validation_data is not None:
            if len(validation_data) != 2: raise ValueError("fit expected validation_data=(x_val, y_val)")
            self._check_xy(*validation_data, 'fit (validation_data)')
        rng, n, bs = as_rng(rng), len(x), int(batch_size)
        if bs < 1: raise ValueError(f"fit expected batch_size >= 1, got {batch_size}")
        steps = math.ceil(n / bs)
        history = History()
        cbs = [history] + list(callbacks or [])
        for cb in cbs: cb.set_model(self)
        self.stop_training, self.history = False, history
        for cb in cbs: cb.on_train_begin()
        xp = self._xp()
        try:
            for epoch in range(initial_epoch, epochs):
                self.optimizer.epoch = epoch
                for cb in cbs: cb.on_epoch_begin(epoch)
                order = rng.permutation(n) if shuffle else np.arange(n)
                sums, t0 = {}, time.perf_counter()
                bar = tqdm(total=steps, desc=f'Epoch {epoch + 1}/{epochs}', disable=verbose != 1,
                           file=sys.stdout, leave=True, mininterval=0.5)
                for b in range(steps):
                    idx = order[b * bs:(b + 1) * bs]
                    xb, yb = self._batch(x, idx, xp), self._batch(y, idx, xp)
                    loss, y_pred = self.train_step(xb, yb)
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"fit stopped: the loss became {loss} at epoch {epoch + 1}, batch {b + 1}/{steps}. "
                            "The weights are no longer finite; lower the learning rate, clip gradients "
                            "(clipvalue / global_clipnorm), or check the data and the loss's from_logits setting.")
                    vals = {'loss': loss, **self._metric_values(y_pred, yb)}
                    for k, v in vals.items(): sums[k] = sums.get(k, 0.0) + v * len(idx)
                    seen = min((b + 1) * bs, n)
                    if verbose == 1: bar.set_postfix({k: f'{v / seen:.4f}' for k, v in sums.items()}, refresh=False)
                    bar.update(1)
                    for cb in cbs: cb.on_batch_end(b, vals)
                bar.close()
                logs = {k: v / n for k, v in sums.items()}
                if validation_data is not None:
                    logs.update({f'val_{k}': v for k, v in
                                 self.evaluate(*validation_data, batch_size=max(bs, 256), return_dict=True).items()})
                for cb in cbs: cb.on_epoch_end(epoch, logs)
                if verbose == 2 or (verbose == 1 and validation_data is not None):
                    print(f"Epoch {epoch + 1}/{epochs} - {time.perf_counter() - t0:.1f}s - "
                          + ' - '.join(f'{k}: {v:.4f}' for k, v in logs.items()))
                if self.stop_training: break
        finally:
            for cb in cbs: cb.on_train_end()
        return history

    def predict(self, x, batch_size: int = 256):
        "Outputs for `x` `(N, *input_shape)` in inference mode, computed in batches; NumPy or CuPy like the model."
        x, _ = self._check_xy(x, None, 'predict')
        xp = self._xp()
        outs = [self.forward(self._batch(x, slice(i, i + batch_size), xp), training=False)
                for i in range(0, len(x), batch_size)]
        return xp.concatenate(outs) if outs else xp.zeros((0, *self.output_shape(x.shape[1:])))

    def evaluate(self, x, y, batch_size: int = 256, verbose: int = 0, return_dict: bool = False):
        """Loss (incl. regularization) and metrics on `(x, y)` in inference mode.
        Returns `[loss, *metrics]` (a float when there are no metrics), or a dict with `return_dict`."""
        self._check_compiled('evaluate')
        x, y = self._check_xy(x, y, 'evaluate')
        xp, n = self._xp(), len(x)
        sums = {}
        for i in range(0, n, batch_size):
            idx = slice(i, i + batch_size)
            xb, yb = self._batch(x, idx, xp), self._batch(y, idx, xp)
            y_pred = self.forward(xb, training=False)
            vals = {'loss': self.loss(y_pred, yb), **self._metric_values(y_pred, yb)}
            for k, v in vals.items(): sums[k] = sums.get(k, 0.0) + v * len(xb)
        res = {k: v / n for k, v in sums.items()}
        res['loss'] += self.regularization_loss()
        if verbose: print(' - '.join(f'{k}: {v:.4f}' for k, v in res.items()))
        if return_dict: return res
        return res['loss'] if len(res) == 1 else list(res.values())

    # --- persistence -----------------------------------------------------------------------------
    def get_config(self) -> dict:
        "JSON-friendly description (name, input shape, each layer's config) that `Sequential.load` rebuilds from."
        return {'format': 'dl_from_scratch.Sequential', 'version': 1, 'name': self.name,
                'input_shape': list(self.input_shape) if self.input_shape is not None else None,
                'layers': [_layer_config(l) for l in self.layers]}

    def save(self, path) -> str:
        """Save weights (and, when the layers' arguments allow, the architecture) to a `.npz`,
        atomically: the old file survives an interrupted save. Returns the path written."""
        if not self.built: raise ValueError("save() needs a built model (call build(input_shape) or fit first)")
        arrays = {key: np.asarray(d[k].get() if hasattr(d[k], 'get') and not isinstance(d[k], np.ndarray) else d[k])
                  for key, _, d, k in self._weight_items()}
        try: config = json.dumps(self.get_config())
        except TypeError: config = json.dumps(None)        # e.g. a custom lambda activation: weights only
        arrays['__config__'] = np.array(config)
        return atomic_save_npz(path, arrays)

    save_weights = save

    def load_weights(self, path) -> 'Sequential':
        """Load the arrays saved by `save` into this model. Every array must be present with the
        shape this model has; otherwise a `ValueError` lists the differences and no weight changes."""
        path = _npz_path(path)
        with np.load(path, allow_pickle=False) as f:
            if not self.built:
                cfg = json.loads(str(f['__config__'])) if '__config__' in f.files else None
                if not cfg or cfg.get('input_shape') is None:
                    raise ValueError(f"load_weights: the model is not built and {path} holds no input shape; "
                                     "call build(input_shape) first")
                self.build(cfg['input_shape'])
            saved = {k: f[k] for k in f.files if k != '__config__'}
        problems, items = [], list(self._weight_items())
        for key, _, d, k in items:
            if key not in saved: problems.append(f"{key}: missing from the file (model has shape {tuple(d[k].shape)})")
            elif saved[key].shape != tuple(d[k].shape):
                problems.append(f"{key}: model expects shape {tuple(d[k].shape)}, file has {saved[key].shape}")
        extra = sorted(set(saved) - {key for key, *_ in items})
        if extra: problems.append(f"arrays in the file that this model lacks: {extra}")
        if problems:
            raise ValueError(f"cannot load {path} into this model (nothing was changed):\n  " + '\n  '.join(problems))
        for key, _, d, k in items:
            d[k][...] = get_array_module(d[k]).asarray(saved[key])
        return self

    @classmethod
    def load(cls, path) -> 'Sequential':
        "Rebuild a model saved by `save` (architecture and weights); compile it again to train."
        path = _npz_path(path)
        with np.load(path, allow_pickle=False) as f:
            cfg = json.loads(str(f['__config__'])) if '__config__' in f.files else None
        if not cfg or cfg.get('format') != 'dl_from_scratch.Sequential':
            raise ValueError(f"{path} holds weights only (its layers' arguments could not be saved); "
                             "build the model in code and call load_weights")
        model = cls([_layer_from_config(c) for c in cfg['layers']], name=cfg.get('name', 'sequential'))
        if cfg['input_shape'] is not None: model.build(cfg['input_shape'])
        return model.load_weights(path)

# %% [markdown]
# ### Tests
#
# `summary` counts parameters as Keras does. For the MNIST MLP of this
# chapter, 784–512–256–128–10, Keras reports 567,434 parameters:
# $784\cdot512+512 + 512\cdot256+256 + 256\cdot128+128 + 128\cdot10+10$.

# %%
m = Sequential([Flatten(), Dense(512, 'relu'), Dense(256, 'relu'), Dense(128, 'relu'), Dense(10)], input_shape=(28, 28, 1))
m.summary()
test_eq(m.count_params(), 567_434)
test_eq([l.name for l in m.layers], ['flatten', 'dense', 'dense_1', 'dense_2', 'dense_3'])
test_eq(m.output_shape(), (10,))
test_fail(lambda: Sequential([Dense(2)]).summary(), contains='built model')

# %% [markdown]
# `backward(dy)` returns $\partial\mathcal{L}/\partial X$; with
# `need_dx=False` (what `train_step` asks) a first `Dense` returns `None`
# and fills the same gradients. A first layer with nothing to skip (here
# `Flatten`) is called as before and still returns its dx.

# %%
r = np.random.default_rng(1)
mb = Sequential([Dense(4, 'tanh'), Dense(3)], input_shape=(5,))
xb, dyb = r.standard_normal((6, 5)), r.standard_normal((6, 3))
mb.forward(xb, training=True); dx = mb.backward(dyb)
W0, b0, W1 = mb.layers[0].params['W'], mb.layers[0].params['b'], mb.layers[1].params['W']
test_close(dx, (dyb @ W1.T * (1 - np.tanh(xb @ W0 + b0)**2)) @ W0.T)
g_full = {(l.name, k): v.copy() for l in mb.layers for k, v in l.grads.items()}
for l in mb.layers: l.zero_grads()
test_eq(mb.backward(dyb, need_dx=False), None)
for (n, k), v in g_full.items(): test_eq({l.name: l for l in mb.layers}[n].grads[k], v)
mf = Sequential([Flatten(), Dense(3)], input_shape=(2, 5)); mf.forward(xb.reshape(3, 2, 5))
test_eq(mf.backward(r.standard_normal((3, 3)), need_dx=False).shape, (3, 2, 5))

# %% [markdown]
# `fit` on a linearly separable toy set must reach 100% training accuracy,
# and the loss must go down. The data: two Gaussian blobs far apart.

# %%
rng = np.random.default_rng(0)
x = np.concatenate([rng.normal(-2, 0.5, (100, 2)), rng.normal(2, 0.5, (100, 2))]).astype(np.float32)
y = np.repeat([0, 1], 100)
m = Sequential([Dense(8, 'tanh', rng=0), Dense(2, rng=1)])
m.compile(SCE_LOGITS, SGD(0.1), ['accuracy'])
h = m.fit(x, y, epochs=20, batch_size=16, rng=0, verbose=0)
test_eq(h.history['accuracy'][-1], 1.0)
assert h.history['loss'][-1] < h.history['loss'][0] / 5
test_eq(m.evaluate(x, y)[1], 1.0)
test_eq(m.predict(x).shape, (200, 2))
test_eq(len(h.epoch), 20)

# %% [markdown]
# A frozen layer (`trainable = False`) keeps its weights through `fit`, and
# `summary` counts them as non-trainable, as Keras does.

# %%
m = Sequential([Dense(8, 'tanh', rng=0), Dense(2, rng=1)], input_shape=(2,))
m.layers[0].trainable = False
W0 = m.layers[0].params['W'].copy(); W1 = m.layers[1].params['W'].copy()
m.compile(SCE_LOGITS, SGD(0.1)); m.fit(x, y, epochs=2, verbose=0)
test_eq(m.layers[0].params['W'], W0); assert (m.layers[1].params['W'] != W1).any()
lines = []; m.summary(print_fn=lines.append)
assert 'Trainable params: 18' in lines[0] and 'Non-trainable params: 24' in lines[0]

# %% [markdown]
# Bad input: a NaN loss stops `fit` with a message that says when and what
# to try; data of the wrong shape is refused before training starts.

# %%
bad = Sequential([Dense(2, rng=0)]); bad.compile(SCE_LOGITS, SGD(1e30))
with np.errstate(all='ignore'):
    test_fail(lambda: bad.fit(x * 1e10, y, epochs=3, verbose=0), contains='fit stopped: the loss became')
test_fail(lambda: m.fit(x[:, :1], y, verbose=0), contains='fit expected x of shape (N, 2), got (200, 1)')
test_fail(lambda: m.fit(x, y[:10], verbose=0), contains='as many rows as x')
test_fail(lambda: m.fit(np.full_like(x, np.nan), y, verbose=0), contains='finite')
test_fail(lambda: Sequential([Dense(2)]).fit(x, y), contains='compile')

# %% [markdown]
# Early stopping with best-weight restore: with a validation set that the
# model gets *worse* on (labels flipped), the best epoch is the first, so
# training stops after `patience` more and the first epoch's weights return.

# %%
m = Sequential([Dense(2, rng=0)]); m.compile(SCE_LOGITS, SGD(0.05))
es = EarlyStopping(monitor='val_loss', patience=2, restore_best_weights=True)
snap = []
class Snap(Callback):
    def on_epoch_end(self, epoch, logs=None): snap.append(self.model.get_weights())
h = m.fit(x, y, epochs=50, batch_size=32, validation_data=(x, 1 - y), callbacks=[Snap(), es], rng=0, verbose=0)
test_eq(len(h.epoch), 3)              # best at epoch 0, then patience 2
test_eq(es.best_epoch, 0)
for a, b in zip(m.get_weights(), snap[0]): test_eq(a, b)
test_fail(lambda: m.fit(x, y, epochs=1, callbacks=[EarlyStopping()], verbose=0), contains="monitors 'val_loss'")

# %% [markdown]
# Checkpoints round-trip: `Sequential.load` rebuilds the architecture and
# the weights, and gives the same predictions. Loading into a model of
# another shape fails, names the difference and changes nothing.

# %%
d = tempfile.mkdtemp()
m = Sequential([Dense(8, 'relu', rng=0), Dense(3, 'softmax', rng=1)], input_shape=(4,))
ck = ModelCheckpoint(os.path.join(d, 'ep{epoch}'), monitor='loss', save_best_only=False)
m.compile('sparse_categorical_crossentropy', SGD(0.1))
xx = rng.normal(size=(30, 4)).astype(np.float32); yy = rng.integers(0, 3, 30)
m.fit(xx, yy, epochs=2, callbacks=[ck], verbose=0)
test_eq(sorted(os.listdir(d)), ['ep1.npz', 'ep2.npz'])
m2 = Sequential.load(os.path.join(d, 'ep2.npz'))
test_eq(m2.predict(xx), m.predict(xx))
test_eq([type(l).__name__ for l in m2.layers], ['Dense', 'Dense'])
other = Sequential([Dense(9, 'relu'), Dense(3)], input_shape=(4,))
before = other.get_weights()
test_fail(lambda: other.load_weights(os.path.join(d, 'ep2.npz')), contains='dense/W: model expects shape (4, 9), file has (4, 8)')
for a, b in zip(other.get_weights(), before): test_eq(a, b)

# %% [markdown]
# An interrupted save keeps the old file: we make `np.savez` die halfway
# through writing (as a crash or Ctrl-C would) and check that the previous
# checkpoint is still there, loads, and that no temporary file is left.

# %%
import dl_from_scratch.model as model_mod
path = os.path.join(d, 'keep.npz'); m.save(path); good = open(path, 'rb').read()
real_savez = np.savez
def dying_savez(f, **arrays):
    f.write(b'PK\x03\x04 half a zip file'); raise KeyboardInterrupt
model_mod.np.savez = dying_savez
try:
    m.save(path); raise AssertionError('save should have been interrupted')
except KeyboardInterrupt: pass
finally: model_mod.np.savez = real_savez
test_eq(open(path, 'rb').read(), good)
test_eq([f for f in os.listdir(d) if f.endswith('.tmp')], [])
test_eq(Sequential.load(path).predict(xx), m.predict(xx))

# %% [markdown]
# The model API is put to work in chapter 05 (XOR, the planar flower,
# CIFAR-10, MNIST) and chapter 06 (regularisation and normalisation), and
# by every later chapter.
#
# ## References
#
# * F. Chollet et al., Keras API reference: `Sequential`, `Model.fit`, `callbacks.EarlyStopping`, `callbacks.ModelCheckpoint` (the names, the `summary` counts and the early-stopping semantics followed here).
# * L. Prechelt, *Early stopping — but when?*, in *Neural Networks: Tricks of the Trade*, 1998.
# * The POSIX `rename(2)` specification and Python's `os.replace` documentation (atomic replacement), and `fsync(2)`.
# * NumPy documentation, `numpy.savez` / `numpy.load` (the `.npz` format; `allow_pickle=False`).
