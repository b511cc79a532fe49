# %% [markdown]
# # The model API: `Sequential`, `fit`, callbacks, checkpoints
#
# > A small Keras on top of the `Layer` API: `Sequential` and the functional `Model`, `compile`, `fit`, `evaluate` and `predict`, metrics, and callbacks (history, early stopping, checkpoints).
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
# * **Failure is loud and early**: a NaN loss, or an update that makes a
#   weight non-finite, stops `fit` with a message that says when, which
#   weight and what to try (the weights stay at their last finite values); a
#   checkpoint of another architecture is refused before any weight is
#   touched, and loading a checkpoint runs no code.
# * **Saving is atomic**: the `.npz` is written to a temporary file in the
#   same folder and moved over the old one with `os.replace`, which POSIX and
#   Windows make atomic, so an interrupted save leaves the old file intact.

# %%
#| default_exp model

# %%
#| export
from __future__ import annotations
import glob, importlib, json, math, os, pkgutil, sys, time
import numpy as np
from tqdm import tqdm
from dl_from_scratch.core import check_array, as_rng, get_array_module, get_dtype
from dl_from_scratch.data import atomic_savez
from dl_from_scratch.layers import Layer, LAYERS, Node, SymbolicTensor, _snake, _shapes_match
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
# ## Saving and loading, atomically and safely
#
# A checkpoint is one `.npz`: every parameter and state array under
# `'<layer name>/<key>'`, plus a JSON string `__config__` with the layer
# classes, their constructor arguments and how they are connected, so
# `Model.load` can rebuild the model. The writer follows the usual
# recipe for crash-safe files: write a temporary file in the *same*
# directory (so the rename cannot cross file systems), flush and `fsync` it,
# then `os.replace` it over the target. A crash (or `KeyboardInterrupt`) before
# the rename leaves the old checkpoint as it was, and the temporary file is
# removed. The data chapter's `atomic_savez` does exactly this for the
# dataset cache, so the model uses it too. A process killed outright cannot
# remove its temporary file; the next save of the same target does.
#
# **Loading runs no code.** The configuration names classes and functions,
# and a loader that imported whatever module a file names would run whatever
# a file's author wished. So the loader builds only what the package
# registers (its layers, initialisers, regularizers, constraints,
# activations, losses and optimizers) or what the caller passes as
# `custom_objects={'Name': obj}`, as Keras does; any other name is refused
# with a `ValueError` that names it. A file that is not a checkpoint at all
# (truncated, random bytes, another program's `.npz`) gets one `ValueError`
# that says so, whatever the zip or pickle reader would have said.

# %%
#| export
def _npz_path(path) -> str:
    path = os.fspath(path)
    return path if path.endswith('.npz') else path + '.npz'

def _remove_stale_temps(path: str) -> None:
    "Delete temporary files that a killed save of `path` left (`atomic_savez` names them `<name>.<random>.tmp`)."
    folder, name = os.path.split(os.path.abspath(path))
    for f in glob.glob(os.path.join(glob.escape(folder), glob.escape(name) + '.*.tmp')): os.remove(f)

def _registry() -> dict:
    """Name -> class or function that a checkpoint may construct: the package's layers (`LAYERS`, from the
    package's own modules), regularizers, constraints, initialisers, activations, losses and optimizers."""
    import dl_from_scratch
    from dl_from_scratch import layers, init, functional, losses, optim
    # every module of the package (not the kernels), so that a layer of any chapter loads without its module
    # having been imported first; importing them registers their layers in LAYERS
    mods = [importlib.import_module(f'dl_from_scratch.{m.name}') for m in pkgutil.iter_modules(dl_from_scratch.__path__)
            if not m.ispkg and not m.name.startswith('_')]
    def subclasses(c): return [c] + [s for d in c.__subclasses__() for s in subclasses(d)]
    reg = {n: c for n, c in LAYERS.items() if c.__module__.startswith('dl_from_scratch.')}
    # a class redefined outside the package (a chapter running its own cells) replaces its entry in LAYERS:
    # the package's own class still loads
    for m in mods:
        reg.update({n: c for n, c in vars(m).items() if n not in reg and isinstance(c, type) and issubclass(c, Layer)
                    and c.__module__.startswith('dl_from_scratch.')})
    for base in (layers.Regularizer, layers.Constraint, losses.Loss, optim.Optimizer):
        reg.update({c.__name__: c for c in subclasses(base) if c.__module__.startswith('dl_from_scratch.')})
    reg.update({f.__name__: f for f in init.INITIALIZERS.values()})
    reg.update({n: f for n, f in vars(functional).items() if callable(f) and getattr(f, '__module__', '') == functional.__name__})
    return reg

def _lookup(name: str, custom_objects: dict | None):
    "The class or function `name`, from `custom_objects` or the package's registry; anything else is refused."
    if custom_objects and name in custom_objects: return custom_objects[name]
    reg = _registry()
    if name not in reg:
        raise ValueError(f"cannot load {name!r}: a checkpoint may construct only what dl_from_scratch registers "
                         f"or what is passed as custom_objects={{{name!r}: ...}}")
    return reg[name]

def _to_json(obj):
    "JSON-friendly form of constructor arguments: layers, regularizers and constraints by config."
    if isinstance(obj, Layer): return {'__layer__': _layer_config(obj)}
    if isinstance(obj, np.random.Generator): return None         # weights are loaded, the rng is not needed
    if isinstance(obj, (np.integer, np.floating)): return obj.item()
    if isinstance(obj, (list, tuple)): return [_to_json(o) for o in obj]
    if isinstance(obj, dict): return {str(k): _to_json(v) for k, v in obj.items()}
    if obj is None or isinstance(obj, (bool, int, float, str)): return obj
    if hasattr(obj, 'get_config') and not isinstance(obj, type):
        return {'__object__': type(obj).__name__, 'config': _to_json(obj.get_config())}
    if callable(obj) and getattr(obj, '__module__', '').startswith('dl_from_scratch'):
        return {'__function__': obj.__name__}
    raise TypeError(f"cannot serialise {obj!r} ({type(obj).__name__}) into a model config")

def _layer_config(layer):
    c = layer.get_config()
    if 'format' in c: return {'class': type(layer).__name__, 'name': layer.name, 'model': c}   # a graph: its nodes
    return {'class': c['class'], 'name': layer.name, 'args': _to_json(c['args']), 'kwargs': _to_json(c['kwargs'])}

def _from_json(obj, custom_objects=None):
    if isinstance(obj, list): return [_from_json(o, custom_objects) for o in obj]
    if isinstance(obj, dict):
        if '__layer__' in obj: return _layer_from_config(obj['__layer__'], custom_objects)
        if '__object__' in obj:
            cls = _lookup(obj['__object__'], custom_objects)
            if not isinstance(cls, type): raise ValueError(f"cannot load {obj['__object__']!r}: it is not a class")
            return cls(**_from_json(obj['config'], custom_objects))
        if '__function__' in obj: return _lookup(obj['__function__'], custom_objects)
        return {k: _from_json(v, custom_objects) for k, v in obj.items()}
    return obj

def _layer_from_config(c, custom_objects=None):
    cls = _lookup(c['class'], custom_objects)
    if not (isinstance(cls, type) and issubclass(cls, Layer)):
        raise ValueError(f"cannot load layer {c['class']!r}: {cls!r} is not a Layer class")
    if 'model' in c: return _model_from_config(c['model'], custom_objects)
    layer = cls(*_from_json(c['args'], custom_objects), **_from_json(c['kwargs'], custom_objects))
    layer.name = c['name']
    return layer

def _read_checkpoint(path: str):
    "`(arrays, config)` of a checkpoint; one `ValueError` for anything that is not one."
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in f.files}
        cfg = json.loads(str(arrays.pop('__config__'))) if '__config__' in arrays else None
    except FileNotFoundError: raise
    except Exception as e:        # BadZipFile, EOFError, pickle refused, bad JSON, ...: the file is not ours
        raise ValueError(f"{path} is not a dl_from_scratch checkpoint: {type(e).__name__}: {e}") from e
    return arrays, cfg

# %%
d = tempfile.mkdtemp()
p = _npz_path(os.path.join(d, 'a')); atomic_savez(p, w=np.arange(3.))
test_eq(p.endswith('a.npz'), True); test_eq(np.load(p)['w'], np.arange(3.))
open(p + '.x1y2.tmp', 'wb').write(b'left by a killed save'); _remove_stale_temps(p)
test_eq(sorted(os.listdir(d)), ['a.npz'])
test_eq(_lookup('Dense', None), Dense)
test_fail(lambda: _lookup('system', None), contains="cannot load 'system'")
test_fail(lambda: _from_json({'__object__': 'system', 'config': {'command': 'echo hi'}}), contains="'system'")
open(os.path.join(d, 'junk.npz'), 'wb').write(b'PK\x03\x04 not really')
test_fail(lambda: _read_checkpoint(os.path.join(d, 'junk.npz')), contains='is not a dl_from_scratch checkpoint')

# %% [markdown]
# ## A model is a graph of layer calls
#
# A model maps input batches to output batches through layers. Keras
# writes it two ways, and so do we. `Sequential([...])` is a chain. The
# *functional* form names the inputs and calls layers on them:
#
# ```python
# x = Input((784,)); h = Dense(64, 'relu')(x)
# y = Dense(10)(Add()([h, Dense(64)(x)]))
# model = Model(x, y)
# ```
#
# Calling a layer on a symbolic tensor (chapter 05) records a *node*. The
# nodes form a directed acyclic graph; `Model(inputs, outputs)` walks it
# back from the outputs, puts the nodes in topological order, and from then
# on runs them as a flat plan: forward in that order, backward in the
# reverse order, adding gradients wherever a tensor feeds several layers.
# A layer called at several nodes (shared weights) gets, at each node's
# backward, the cache that node's forward kept, and its gradients are summed
# over the calls. Chapter 05c derives this and builds graphs with it;
# `Sequential` is the special case of a chain, so `fit`, `evaluate`,
# `predict` and `save` have one implementation. A `Model` is itself a
# `Layer`, so a model can be called inside another.
#
# The training step on a minibatch $(X_B, Y_B)$ is `train_step((xb, yb))`:
#
# 1. $\hat Y = f(X_B)$ in training mode (dropout on, batch statistics);
# 2. $\mathcal{L} = \sum_o w_o\,\text{loss}_o(\hat Y_o, Y_o) + \sum_\ell R_\ell(\theta_\ell)$
#    over the outputs $o$ (one for most models) and $\bar{\hat Y}_o = w_o\,\partial\,\text{loss}_o/\partial\hat Y_o$;
# 3. backward through the graph; nothing uses $\partial\mathcal{L}/\partial X_B$, so the step asks for
#    `backward(dy, need_dx=False)`, and the first layers (`Dense`, `Conv2D`) skip that product;
# 4. `apply_gradients()`: $\nabla R_\ell$ added, `optimizer.step(params, grads)` for the layers that are
#    `trainable`, each layer's constraint, and a check that every updated weight is still finite.
#
# A subclass may override `train_step` (two optimizers for a GAN, an extra
# loss from a hidden layer for a VAE: chapter 05c), as in Keras.
#
# `fit` runs the step over shuffled minibatches, with a progress bar (`verbose=1`),
# one line per epoch (`verbose=2`) or silently (`verbose=0`).

# %%
#| export
class InputLayer(Layer):
    "The source of a graph: holds the shape (batch axis excluded) of one model input. Made by `Input`."
    def __init__(self, shape, name=None):
        super().__init__(name)
        self.shape = tuple(None if s is None else int(s) for s in shape)
        self.built, self.input_shape = True, self.shape

    def get_config(self): return {'class': 'InputLayer', 'args': [list(self.shape)], 'kwargs': {}}

def Input(shape, name: str | None = None) -> SymbolicTensor:
    "A symbolic batch `(N, *shape)`: the start of a functional model (`None` in `shape`: any size)."
    layer = InputLayer(shape, name=name)
    node = Node(layer, [])
    node.outputs = [SymbolicTensor(layer.shape, node, 0, name)]
    return node.outputs[0]

def _as_list(x) -> list:
    return list(x) if isinstance(x, (list, tuple)) else [x]

def _check_positive_int(v, what: str, who: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{who} expected {what} to be an integer >= {minimum}, got {v!r}")
    return int(v)

def _mask_fits(mask, y) -> bool:
    """Whether `mask` `(N, T)` can describe output `y`: `y` keeps the mask's axes first and adds features.
    A layer that reshapes or reduces the time axis without saying so (`compute_mask`) thus ends the mask."""
    return mask is None or (getattr(y, 'ndim', 0) > mask.ndim and tuple(y.shape[:mask.ndim]) == tuple(mask.shape))

class _Step:
    "One node of the plan: the layer, the slots it reads and writes, and how (lists or single arrays)."
    __slots__ = ('layer', 'ins', 'outs', 'multi_in', 'multi_out', 'from_inputs', 'shared')
    def __init__(self, layer, ins, outs, multi_in, multi_out, from_inputs, shared):
        self.layer, self.ins, self.outs, self.multi_in, self.multi_out = layer, ins, outs, multi_in, multi_out
        self.from_inputs, self.shared = from_inputs, shared

def _topological(outputs: list) -> list:
    "Nodes that `outputs` depend on, each after the nodes it reads (depth-first from the outputs)."
    order, mark = [], {}                       # mark: 1 while a node's inputs are visited, 2 when placed
    for t in outputs:
        stack = [(t.node, False)]
        while stack:
            node, done = stack.pop()
            if done: mark[node] = 2; order.append(node); continue
            if mark.get(node) == 2: continue
            if mark.get(node) == 1:
                raise ValueError(f"the graph has a cycle through layer '{node.layer.name}' "
                                 f"({type(node.layer).__name__}): a layer's output feeds back into its own input")
            mark[node] = 1
            stack.append((node, True))
            for s in reversed(node.inputs): stack.append((s.node, False))
    return order

class Model(Layer):
    """A graph of layers from `inputs` to `outputs` (symbolic tensors, one or a list), trained as Keras's `Model`.

    `forward(x)`: `x` is an array `(N, *input_shape)`, or a list (or dict by input name) of arrays for several
    inputs; returns an array, or a list for several outputs. `backward(dy)` returns dL/dx for every input."""
    _key_sep = '/'       # joins a layer's name and its weight's name in the keys of `params`

    def __init__(self, inputs=None, outputs=None, name: str | None = None):
        self.name, self.trainable, self.cache, self.built = name or 'model', True, None, False
        self.input_shape, self.inputs, self.outputs, self._layers, self._nodes = None, [], [], [], []
        self._entries = None
        self.loss = self.optimizer = None
        self.metrics: list = []
        self.stop_training, self.history = False, None
        self._fresh_scratch = False
        if inputs is not None or outputs is not None: self._init_graph(inputs, outputs)

    # --- the graph -------------------------------------------------------------------------------
    def _init_graph(self, inputs, outputs):
        "Check the graph, name its layers, and lay it out as a flat plan of steps over numbered tensor slots."
        who = f"Model '{self.name or 'model'}'"
        ins, outs = _as_list(inputs), _as_list(outputs)
        for t in outs:
            if not isinstance(t, SymbolicTensor):
                raise ValueError(f"{who} expected outputs to be symbolic tensors (from calling layers on Input), "
                                 f"got {type(t).__name__}" + (f" of shape {t.shape}" if hasattr(t, 'shape') else ''))
        for t in ins:
            if not (isinstance(t, SymbolicTensor) and isinstance(t.node.layer, InputLayer)):
                raise ValueError(f"{who} expected inputs made by Input(shape), got {t!r}")
        nodes = _topological(outs)
        sources = [n for n in nodes if isinstance(n.layer, InputLayer)]
        for n in sources:
            if n.outputs[0] not in ins:
                raise ValueError(f"{who}: the outputs depend on an Input of shape {n.layer.shape} that is not among "
                                 f"the model's inputs {[t.shape for t in ins]}")
        for t in ins:
            if t.node not in sources:
                raise ValueError(f"{who}: no output depends on input {t.name or ''} of shape (None, "
                                 f"{', '.join(map(str, t.shape))}); every input must reach an output")
        self.inputs, self.outputs = ins, outs
        nodes = [t.node for t in ins] + [n for n in nodes if not isinstance(n.layer, InputLayer)]   # inputs first
        self._single_in, self._single_out = not isinstance(inputs, (list, tuple)), not isinstance(outputs, (list, tuple))
        layers, calls = [], {}
        for n in nodes:
            if n.layer not in calls: layers.append(n.layer); calls[n.layer] = 0
            calls[n.layer] += 1
        taken = set()
        for l in layers:                       # unique names in this model ('dense', 'dense_1', ... as Keras)
            base = l.name or ('input' if isinstance(l, InputLayer) else _snake(type(l).__name__))
            name, i = base, 0
            while name in taken: i += 1; name = f'{base}_{i}'
            l.name = name; taken.add(name)
        self._nodes, self._entries = nodes, None
        self._layers = [l for l in layers if not isinstance(l, InputLayer)]
        slot = {}
        for n in nodes:
            for t in n.outputs: slot[t] = len(slot)
        self._n_slots, self._in_slots, self._out_slots = len(slot), [slot[t] for t in ins], [slot[t] for t in outs]
        in_slots = set(self._in_slots)
        self._plan = []
        for n in nodes:
            if isinstance(n.layer, InputLayer): continue
            shared = calls[n.layer] > 1
            if shared and isinstance(n.layer, Model): n.layer._use_fresh_scratch()
            ins_ = [slot[t] for t in n.inputs]
            self._plan.append(_Step(n.layer, ins_, [slot[t] for t in n.outputs], n.multi_in, n.multi_out,
                                    all(i in in_slots for i in ins_), shared))
        self.input_names = [t.node.layer.name for t in ins]
        self.output_names = [t.node.layer.name if t.node.layer not in [u.node.layer for u in outs[:k]]
                             else f'{t.node.layer.name}_{k}' for k, t in enumerate(outs)]
        shapes = [t.shape for t in ins]
        self.input_shape = shapes[0] if self._single_in else shapes
        self.built = True

    @property
    def layers(self) -> list:
        "The model's layers, each once, in the graph's order (inputs excluded)."
        return self._layers

    def _use_fresh_scratch(self):
        "This model runs at several nodes: its layers must not keep work arrays between calls (one call's cache may hold them)."
        self._fresh_scratch = True
        for l in self._layers:
            if isinstance(l, Model): l._use_fresh_scratch()

    def build(self, input_shape):
        "A functional model is built by its graph; here only check that `input_shape` fits it."
        if not _shapes_match(self.input_shape, list(input_shape) if isinstance(input_shape, list) else tuple(input_shape)):
            raise ValueError(f"Model '{self.name}' expected input shape {self.input_shape}, got {input_shape}")
        return self

    def output_shape(self, input_shape=None):
        "Output shape(s), batch axis excluded."
        shapes = [t.shape for t in self.outputs]
        return shapes[0] if self._single_out else shapes

    # --- parameters ------------------------------------------------------------------------------
    def _weight_items(self, prefix: str = '', trainable_only: bool = False):
        """`(key, layer, dict, name)` for every array (params, then state, layer by layer; nested models
        recursively, keys `'<model>/<layer>/<name>'`; `_key_sep` instead of `/` in a container that keys them
        `'fw_Wx'`, as `Bidirectional` does). `trainable_only`: the params `fit` updates."""
        sep = self._key_sep
        for l in self._layers:
            if trainable_only and not l.trainable: continue
            if isinstance(l, Model): yield from l._weight_items(f'{prefix}{l.name}{sep}', trainable_only); continue
            for d in ((l.params,) if trainable_only else (l.params, l.state)):
                for k in d: yield f'{prefix}{l.name}{sep}{k}', l, d, k

    @property
    def params(self) -> dict:
        "Every trainable array, keyed `'<layer>/<param>'` (the layers' own arrays, not copies)."
        return {key: d[k] for key, l, d, k in self._weight_items() if d is l.params}

    @property
    def grads(self) -> dict:
        "The layers' gradients, keyed as `params`."
        return {key: l.grads[k] for key, l, d, k in self._weight_items() if d is l.params and k in l.grads}

    @grads.setter
    def grads(self, value: dict):
        "Hand gradients keyed as `params` back to the layers (a model called at several nodes sums its calls')."
        for key, l, d, k in self._weight_items():
            if key in value: l.grads[k] = value[key]

    @property
    def state(self) -> dict:
        return {key: d[k] for key, l, d, k in self._weight_items() if d is l.state}

    def _param_entries(self, chain: tuple, prefix: str):
        "`(key, chain of models and layer, layer, name)` for every parameter; a weight is trained if every link is `trainable`."
        sep = self._key_sep
        for l in self._layers:
            if isinstance(l, Model): yield from l._param_entries(chain + (l,), f'{prefix}{l.name}{sep}'); continue
            for k in l.params: yield f'{prefix}{l.name}{sep}{k}', chain + (l,), l, k

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
        "Scalars in every layer's `params` and `state`, shared layers once (the summary's 'Total params')."
        return sum(l.count_params() for l in self._layers)

    def count_trainable_params(self) -> int:
        return sum(l.count_trainable_params() for l in self._layers) if self.trainable else 0

    def regularization_loss(self) -> float:
        "Sum of the layers' penalties (added to the data loss in `fit` and `evaluate`)."
        return float(sum(l.regularization_loss() for l in self._layers))

    @property
    def regularizers(self) -> dict:
        "The layers' regularizers, keyed as their weights in `params` / `state`."
        return {key: l.regularizers[k] for key, l, d, k in self._weight_items() if k in l.regularizers}

    @property
    def constraints(self) -> dict:
        "The layers' constraints, keyed as their weights in `params`."
        return {key: l.constraints[k] for key, l, d, k in self._weight_items() if k in l.constraints}

    def regularization_grads(self) -> dict:
        "Gradients of `regularization_loss()` w.r.t. `params`, keyed as `params` (only the keys it depends on)."
        params = self.params
        return {key: r.grad(params[key]) for key, r in self.regularizers.items() if key in params}

    def apply_constraints(self) -> None:
        "Every layer's constraints (`apply_gradients` applies them layer by layer; this serves a model used as a layer)."
        for l in self._layers: l.apply_constraints()

    def zero_grads(self) -> None:
        "Zero every layer's gradients (a model whose output the loss ignores)."
        for l in self._layers: l.zero_grads()

    def to(self, device: str = 'cpu'):
        "Move every layer to `'cpu'` or `'cuda'`; the optimizer's state is reset."
        for l in self._layers: l.to(device)
        if self.optimizer is not None: self.optimizer.reset()
        return self

    # --- computation -----------------------------------------------------------------------------
    def _input_list(self, x, who: str | None = None) -> list:
        "The input arrays in the order of `self.inputs`, from an array, a list or a dict by input name; shapes checked."
        if self._single_in and not isinstance(x, (list, tuple, dict)):      # the common case, checked cheaply
            s, t = getattr(x, 'shape', None), self.inputs[0].shape
            if s is not None and len(s) == len(t) + 1 and all(e is None or e == g for e, g in zip(t, s[1:])): return [x]
        n, who = len(self.inputs), who or f"Model '{self.name}'"
        if isinstance(x, dict):
            missing = [k for k in self.input_names if k not in x]
            if missing or len(x) != n:
                raise ValueError(f"{who} expected a dict with the inputs {self.input_names}, got keys {sorted(x)}")
            xs = [x[k] for k in self.input_names]
        else:
            xs = list(x) if isinstance(x, (list, tuple)) else [x]
            if len(xs) != n:
                raise ValueError(f"{who} expected {n} input array(s) {[t.shape for t in self.inputs]}, got {len(xs)}")
        for a, t, name in zip(xs, self.inputs, self.input_names):
            s = getattr(a, 'shape', None)
            if s is None or len(s) != len(t.shape) + 1 or any(e is not None and e != g for e, g in zip(t.shape, s[1:])):
                what = 'x' if n == 1 else f"input '{name}'"
                raise ValueError(f"{who} expected {what} of shape (N, {', '.join(map(str, t.shape))}), "
                                 f"got {tuple(s) if s is not None else type(a).__name__}")
        return xs

    def forward(self, x, training: bool = False, layer_kwargs: dict | None = None, mask=None):
        """Run the plan: `x` (array, list or dict) -> output array, or a list for several outputs.
        `layer_kwargs`: {layer: {keyword: value}}, more arguments for those layers' `forward` (a container
        passes an initial state on to its recurrent layers). `mask`: the inputs' masks `(N, T)` (a list for
        several inputs), or None. Masks travel with the tensors: each layer's `compute_mask` gives the mask of
        its output, and a layer with one input whose `forward` takes `mask` receives its input's mask (unless
        `layer_kwargs` gives it one)."""
        vals, masks = [None] * self._n_slots, [None] * self._n_slots
        for i, a in zip(self._in_slots, self._input_list(x)): vals[i] = a
        if mask is not None:
            for i, m in zip(self._in_slots, [mask] if self._single_in else mask): masks[i] = m
        caches, fresh, extra = [], self._fresh_scratch, layer_kwargs or {}
        for s in self._plan:
            l = s.layer
            if fresh or s.shared: l.__dict__.pop('_ws', None)
            xin = [vals[i] for i in s.ins] if s.multi_in else vals[s.ins[0]]
            m, kw = [masks[i] for i in s.ins] if s.multi_in else masks[s.ins[0]], extra.get(l, {})
            if m is not None and not s.multi_in and l._forward_takes_mask and 'mask' not in kw: kw = {**kw, 'mask': m}
            y = l.forward(xin, training=training, **kw)
            caches.append(l.cache)
            ys = y if s.multi_out else [y]
            om = l.compute_mask(xin, m)
            for i, v, mo in zip(s.outs, ys, om if isinstance(om, list) else [om] * len(ys)):
                vals[i], masks[i] = v, mo if _mask_fits(mo, v) else None
        outs = [vals[i] for i in self._out_slots]
        self.cache = (caches, outs)
        self._output_mask = [masks[i] for i in self._out_slots]
        return outs[0] if self._single_out else outs

    def compute_mask(self, x, mask=None):
        "The mask(s) of the outputs, as the last `forward` computed them through the graph."
        om = self.__dict__.get('_output_mask', [None] * len(self.outputs))
        return om[0] if self._single_out else om

    def backward(self, dy, need_dx: bool = True, layer_kwargs: dict | None = None):
        """`dy` = dL/d(output) (a list for several outputs; `None` for an output the loss ignores) -> dL/dx
        for every input (a list for several). Fills every layer's `grads`; a layer called at several nodes
        gets the sum over its calls. `need_dx=False`: layers that read only model inputs may skip dL/dx.
        `layer_kwargs`: as in `forward`, for the layers' `backward` (a recurrent layer's `d_final_state`)."""
        extra = layer_kwargs or {}
        caches, out_meta = self.cache
        g = [None] * self._n_slots
        for i, d in zip(self._out_slots, [dy] if self._single_out else dy):
            if d is not None: g[i] = d if g[i] is None else g[i] + d
        for i, o in zip(self._out_slots, out_meta):
            if g[i] is None: g[i] = get_array_module(o).zeros_like(o)     # an output the loss ignores
        summed = {}                                      # shared layer -> its gradients summed so far
        for s, c in zip(reversed(self._plan), reversed(caches)):
            l = s.layer
            d = [g[i] for i in s.outs] if s.multi_out else g[s.outs[0]]
            if d is None:                                # feeds only layers that pass no gradient (ids)
                if not s.shared: l.zero_grads()
                continue
            l.cache = c
            dx = l.backward(d, need_dx=need_dx or not s.from_inputs, **extra.get(l, {}))
            if s.shared:
                acc = summed.get(l)
                summed[l] = {k: v.copy() for k, v in l.grads.items()} if acc is None else \
                            {k: acc[k] + v for k, v in l.grads.items()}
            for i, v in zip(s.ins, dx if s.multi_in else [dx]):
                if v is not None: g[i] = v if g[i] is None else g[i] + v
        for l, gr in summed.items(): l.grads = gr
        dxs = [g[i] for i in self._in_slots]
        return dxs[0] if self._single_in else dxs

    # --- training --------------------------------------------------------------------------------
    def compile(self, loss='mse', optimizer='sgd', metrics=('accuracy',), loss_weights=None):
        """Set the loss (a `losses.get_loss` name or object; for several outputs one for all, or a list or dict
        by output name), the optimizer (`optim.get_optimizer` name or object), the metrics ('accuracy', 'mse',
        'mae' or functions: one name, a list for every output, or a list of lists / dict by output) and
        `loss_weights` (list or dict; default 1 for every output)."""
        names = self.output_names if self.built else [None]
        def per_output(v, what, default):
            if isinstance(v, dict):
                unknown = sorted(set(v) - set(names))
                if unknown: raise ValueError(f"compile got {what} for unknown outputs {unknown}; outputs are {names}")
                return [v.get(k, default) for k in names]
            if isinstance(v, (list, tuple)) and len(names) > 1 and what != 'metrics':
                if len(v) != len(names): raise ValueError(f"compile expected {len(names)} {what} (one per output {names}), got {len(v)}")
                return list(v)
            return [v] * len(names)
        self._losses = [get_loss(l) for l in per_output(loss, 'losses', None)]
        w = per_output(loss_weights, 'loss_weights', 1.0) if loss_weights is not None else [1.0] * len(names)
        self._loss_weights = [float(v) for v in w]
        if isinstance(metrics, str) or callable(metrics): metrics = [metrics]      # 'accuracy' alone, as Keras takes it
        if isinstance(metrics, dict): ms = per_output(metrics, 'metrics', [])
        elif metrics and len(names) > 1 and all(isinstance(m, (list, tuple)) for m in metrics):
            if len(metrics) != len(names): raise ValueError(f"compile expected {len(names)} metric lists, got {len(metrics)}")
            ms = list(metrics)
        else: ms = [list(metrics or [])] * len(names)
        self._metrics = [[get_metric(m) for m in _as_list(ml)] for ml in ms]
        self.loss, self.metrics = (self._losses[0], self._metrics[0]) if len(names) == 1 else (self._losses, self._metrics)
        self.optimizer = get_optimizer(optimizer)
        return self

    def _check_compiled(self, who):
        if self.loss is None: raise ValueError(f"{who} needs a compiled model: call model.compile(loss, optimizer) first")

    def compute_loss(self, y_pred, y_true):
        """Weighted loss over the outputs and metrics: `(loss, dy, logs)`; `dy` = dL/d(output) (a list for several
        outputs), `logs` = {'loss', metric names; with several outputs also '<output>_loss', '<output>_<metric>'}.
        The regularization penalty is not included (`regularization_loss()`)."""
        preds, trues = ([y_pred], [y_true]) if self._single_out else (y_pred, y_true)
        total, dys, logs, multi = 0.0, [], {}, len(preds) > 1
        for name, p, t, loss, w, mets in zip(self.output_names, preds, trues, self._losses, self._loss_weights, self._metrics):
            v, d = loss.value_and_grad(p, t)
            total += w * v
            dys.append(d if w == 1.0 else d * w)
            logits = getattr(loss, 'from_logits', False)
            if multi: logs[f'{name}_loss'] = v
            for m, fn in mets: logs[f'{name}_{m}' if multi else m] = fn(p, t, from_logits=logits)
        return total, (dys[0] if self._single_out else dys), {'loss': total, **logs}

    def apply_gradients(self, optimizer=None) -> None:
        """One update of the trainable layers' params from their `grads` (+ regularization gradients) with
        `optimizer` (default: the compiled one), then the constraints. Every updated array is checked: if one
        is no longer finite, all of them return to their values before the update and `FloatingPointError`
        names the layer and the parameter."""
        opt = optimizer or self.optimizer
        if self._entries is None:           # (key, the layers that hold it, layer, name): the keys, worked out once
            self._entries = [(key, chain, l, k) for key, chain, l, k in self._param_entries((), '')]
        params, grads, owners = {}, {}, {}
        for key, chain, l, k in self._entries:
            g = l.grads.get(k)
            if g is None or not all(c.trainable for c in chain): continue
            if l not in owners: owners[l] = l.regularization_grads()
            reg = owners[l]
            params[key], grads[key] = l.params[k], (g + reg[k] if k in reg else g)
        saved = self.__dict__.setdefault('_last_finite', {})
        for key, p in params.items():
            b = saved.get(key)
            if b is None or b.shape != p.shape or type(b) is not type(p): saved[key] = b = p.copy()
            else: b[...] = p
        opt.step(params, grads)
        for l in owners: l.apply_constraints()
        for key, p in params.items():
            if not math.isfinite(float(p.sum())) and not bool(get_array_module(p).isfinite(p).all()):
                for k2, p2 in params.items(): p2[...] = saved[k2]
                layer, _, name = key.rpartition('/')
                raise FloatingPointError(f"the update made parameter '{name}' of layer '{layer or self.name}' non-finite (NaN or inf); "
                                         "the weights are back to their values before it. Lower the learning rate, "
                                         "clip gradients, or check the data and the loss's from_logits setting")

    def train_step(self, batch) -> dict:
        """One update on `batch = (x, y)`: forward, loss, backward, `apply_gradients`. Returns the batch's logs
        (`'loss'` incl. regularization, metrics). Override it for custom training (GANs, extra losses)."""
        self._check_compiled('train_step')
        x, y = batch
        y_pred = self.forward(x, training=True)
        xp = get_array_module(y_pred[0] if isinstance(y_pred, list) else y_pred)
        if not all(bool(xp.isfinite(p).all()) for p in _as_list(y_pred)):
            return {'loss': math.nan}                # fit reports it; the loss would refuse NaN input
        loss, dy, logs = self.compute_loss(y_pred, y)
        logs['loss'] = loss + self.regularization_loss()
        self.backward(dy, need_dx=False)             # nothing uses dL/dx_batch
        self.apply_gradients()
        return logs

    def _arrays(self, a, who: str, what: str, names: list | None, kind_check: bool) -> list:
        """A list of arrays from an array, a list or a dict by name, each checked (finite floats for inputs);
        `names` None: any number of arrays (a custom `train_step` decides what they mean)."""
        if names is None: names = list(a) if isinstance(a, dict) else [f'{what}{i}' for i in range(len(_as_list(a)))]
        if isinstance(a, dict):
            if sorted(a) != sorted(names): raise ValueError(f"{who} expected {what} as a dict with keys {names}, got {sorted(a)}")
            a = [a[k] for k in names]
        out = []
        for v in _as_list(a):
            v = check_array(v, what, kind=None, finite=False, who=who)
            if kind_check and v.dtype.kind == 'f' and not np.isfinite(v).all():
                raise ValueError(f"{who} expected {what} to be finite, got {int((~np.isfinite(v)).sum())} NaN/inf value(s)")
            out.append(v)
        if len(out) != len(names):
            raise ValueError(f"{who} expected {len(names)} {what} array(s) (for {names}), got {len(out)}")
        return out

    def _check_xy(self, x, y, who, against_model: bool = True):
        """Inputs and targets as lists of arrays, checked: rows, finiteness, at least one sample; with `against_model`
        also their number and shapes against the model's inputs and outputs."""
        in_names = (self.input_names if self.built else ['input']) if against_model else None
        xs = self._arrays(x, who, 'x', in_names, True)
        n = len(xs[0])
        if n == 0: raise ValueError(f"{who} expected at least one sample, got x of shape {tuple(xs[0].shape)}")
        for a in xs[1:]:
            if len(a) != n: raise ValueError(f"{who} expected every input with {n} rows, got {len(a)}")
        if self.built and against_model: self._input_list(xs, who)
        ys = None
        if y is not None:
            ys = self._arrays(y, who, 'y', (self.output_names if self.built else ['output']) if against_model else None, False)
            for a in ys:
                if len(a) != n:
                    raise ValueError(f"{who} expected y with as many rows as x ({n}), got {len(a)} (shape {tuple(a.shape)})")
        return xs, ys

    def _take(self, arrays, idx, xp, single):
        "Rows `idx` of each array, on the model's device (no dtype cast: each layer casts what it takes)."
        if arrays is None: return None
        out = [a[idx] if xp is np else xp.asarray(a[idx]) for a in arrays]
        return out[0] if single else out

    def _xp(self):
        for _, _, d, k in self._weight_items(): return get_array_module(d[k])
        return np

    def fit(self, x, y=None, epochs: int = 1, batch_size: int = 32, validation_data=None, callbacks=None,
            shuffle: bool = True, rng=None, verbose: int = 1, initial_epoch: int = 0) -> History:
        """Train on `x` `(N, *input_shape)` (a list or dict for several inputs), `y` likewise for the outputs, for
        `epochs` passes of minibatches of `batch_size`, each through `train_step`. `validation_data=(x_val, y_val)`
        adds `val_*` logs. Returns a `History` (also `model.history`). Stops with `FloatingPointError` when the loss
        becomes NaN/inf or an update makes a weight non-finite."""
        custom = type(self).train_step is not Model.train_step     # then the batch means what the step says
        if not custom: self._check_compiled('fit')
        epochs = _check_positive_int(epochs, 'epochs', 'fit')
        bs = _check_positive_int(batch_size, 'batch_size', 'fit')
        initial_epoch = _check_positive_int(initial_epoch, 'initial_epoch', 'fit', 0)
        if initial_epoch >= epochs: raise ValueError(f"fit expected initial_epoch < epochs, got {initial_epoch} and {epochs}")
        xs, ys = self._check_xy(x, y, 'fit', against_model=not custom)
        single_x, single_y = ((not isinstance(x, (list, tuple, dict)), not isinstance(y, (list, tuple, dict))) if custom
                              else (self._single_in, self._single_out))
        if not self.built: self.build(tuple(xs[0].shape[1:]))
        if validation_data is not None:
            if len(validation_data) != 2: raise ValueError("fit expected validation_data=(x_val, y_val)")
            self._check_xy(*validation_data, 'fit (validation_data)')
        rng, n = as_rng(rng), len(xs[0])
        steps = math.ceil(n / bs)
        history = History()
        cbs = [history] + list(callbacks or [])
        for cb in cbs: cb.set_model(self)
        self.stop_training, self.history = False, history
        for cb in cbs: cb.on_train_begin()
        xp = self._xp()
        try:
            for epoch in range(initial_epoch, epochs):
                if self.optimizer is not None: self.optimizer.epoch = epoch
                for cb in cbs: cb.on_epoch_begin(epoch)
                order = rng.permutation(n) if shuffle else np.arange(n)
                sums, t0 = {}, time.perf_counter()
                bar = tqdm(total=steps, desc=f'Epoch {epoch + 1}/{epochs}', disable=verbose != 1,
                           file=sys.stdout, leave=True, mininterval=0.5)
                for b in range(steps):
                    idx = order[b * bs:(b + 1) * bs]
                    where = f"fit stopped at epoch {epoch + 1}, batch {b + 1}/{steps}"
                    try:
                        vals = self.train_step((self._take(xs, idx, xp, single_x), self._take(ys, idx, xp, single_y)))
                    except FloatingPointError as e: raise FloatingPointError(f"{where}: {e}") from e
                    loss = vals.get('loss', 0.0)
                    if not math.isfinite(loss):
                        raise FloatingPointError(
                            f"{where}: the loss became {loss}. Lower the learning rate, clip gradients "
                            "(clipvalue / global_clipnorm), or check the data and the loss's from_logits setting.")
                    for k, v in vals.items(): sums[k] = sums.get(k, 0.0) + float(v) * len(idx)
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
        "Outputs for `x` in inference mode, computed in batches (an array, or a list for several outputs)."
        bs = _check_positive_int(batch_size, 'batch_size', 'predict')
        xs, _ = self._check_xy(x, None, 'predict')
        xp, n = self._xp(), len(xs[0])
        outs = [_as_list(self.forward(self._take(xs, slice(i, i + bs), xp, self._single_in), training=False))
                for i in range(0, n, bs)]
        res = [xp.concatenate(o) for o in zip(*outs)]
        return res[0] if self._single_out else res

    def evaluate(self, x, y, batch_size: int = 256, verbose: int = 0, return_dict: bool = False):
        """Loss (incl. regularization) and metrics on `(x, y)` in inference mode.
        Returns `[loss, *metrics]` (a float when there are no metrics), or a dict with `return_dict`."""
        self._check_compiled('evaluate')
        bs = _check_positive_int(batch_size, 'batch_size', 'evaluate')
        xs, ys = self._check_xy(x, y, 'evaluate')
        if ys is None: raise ValueError("evaluate expected targets y")
        xp, n = self._xp(), len(xs[0])
        sums = {}
        for i in range(0, n, bs):
            idx = slice(i, i + bs)
            y_pred = self.forward(self._take(xs, idx, xp, self._single_in), training=False)
            _, _, vals = self.compute_loss(y_pred, self._take(ys, idx, xp, self._single_out))
            m = len(range(n)[idx])
            for k, v in vals.items(): sums[k] = sums.get(k, 0.0) + float(v) * m
        res = {k: v / n for k, v in sums.items()}
        res['loss'] += self.regularization_loss()
        if verbose: print(' - '.join(f'{k}: {v:.4f}' for k, v in res.items()))
        if return_dict: return res
        return res['loss'] if len(res) == 1 else list(res.values())

    # --- summary ---------------------------------------------------------------------------------
    def _summary_rows(self) -> list:
        "Rows `(layer (type), output shape, params, connected to)`, one per layer, in the graph's order."
        calls = {}
        for n in self._nodes: calls.setdefault(n.layer, []).append(n)
        index = {n: calls[n.layer].index(n) for n in self._nodes}
        fmt = lambda s: str((None, *s)) if isinstance(s, tuple) else str([(None, *t) for t in s])
        rows = []
        for l, ns in calls.items():
            out = [t.shape for t in ns[0].outputs]
            conn = ', '.join(f'{t.node.layer.name}[{index[t.node]}][{t.index}]' for n in ns for t in n.inputs)
            rows.append((f'{l.name} ({type(l).__name__})', fmt(out[0] if len(out) == 1 else out),
                         f'{l.count_params():,}', conn or '-'))
        return rows

    def summary(self, print_fn=print) -> None:
        "Print each layer's output shape, parameter count and inputs, and the totals (counted as Keras does)."
        if not self.built:
            raise ValueError("summary() needs a built model: pass input_shape=, call build(input_shape), or fit first")
        rows = self._summary_rows()
        heads = ('Layer (type)', 'Output Shape', 'Param #', 'Connected to')[:len(rows[0]) if rows else 3]
        widths = [max([len(h)] + [len(r[i]) for r in rows]) + 2 for i, h in enumerate(heads)]
        fmt = lambda r: ''.join(f'{c:>{w - 2}}  ' if i == 2 else f'{c:<{w}}' for i, (c, w) in enumerate(zip(r, widths))).rstrip()
        total, trainable = self.count_params(), self.count_trainable_params()
        line = '_' * sum(widths)
        out = [f'Model: "{self.name}"', line, fmt(heads), '=' * sum(widths)] + [fmt(r) for r in rows]
        out += ['=' * sum(widths), f'Total params: {total:,}', f'Trainable params: {trainable:,}',
                f'Non-trainable params: {total - trainable:,}', line]
        print_fn('\n'.join(out))

    # --- persistence -----------------------------------------------------------------------------
    def get_config(self) -> dict:
        "JSON-friendly description: each layer's config once, then the nodes (which layer reads which tensors)."
        calls = {}
        for n in self._nodes: calls.setdefault(n.layer, []).append(n)
        ref = lambda t: [t.node.layer.name, calls[t.node.layer].index(t.node), t.index]
        return {'format': 'dl_from_scratch.Model', 'version': 1, 'name': self.name,
                'layers': [_layer_config(l) for l in calls],
                'nodes': [[n.layer.name, [ref(t) for t in n.inputs], n.multi_in] for n in self._nodes
                          if not isinstance(n.layer, InputLayer)],
                'inputs': [ref(t) for t in self.inputs], 'outputs': [ref(t) for t in self.outputs],
                'single_in': self._single_in, 'single_out': self._single_out}

    def save(self, path) -> str:
        """Save the architecture (when the layers' arguments allow) and the weights to one `.npz`, atomically:
        the old file survives an interrupted save, and temporary files a killed save left are removed. Returns the path."""
        if not self.built: raise ValueError("save() needs a built model (call build(input_shape) or fit first)")
        arrays = {key: np.asarray(d[k].get() if hasattr(d[k], 'get') and not isinstance(d[k], np.ndarray) else d[k])
                  for key, _, d, k in self._weight_items()}
        try: config = json.dumps(_checkpoint_config(self))
        except TypeError: config = json.dumps(None)        # e.g. a custom lambda activation: weights only
        arrays['__config__'] = np.array(config)
        path = _npz_path(path)
        _remove_stale_temps(path)
        atomic_savez(path, **arrays)
        return path

    save_weights = save

    def load_weights(self, path) -> 'Model':
        """Load the arrays saved by `save` into this model. Every array must be present with the
        shape this model has; otherwise a `ValueError` lists the differences and no weight changes."""
        path = _npz_path(path)
        saved, cfg = _read_checkpoint(path)
        if not self.built:
            if not cfg or cfg.get('input_shape') is None:
                raise ValueError(f"load_weights: the model is not built and {path} holds no input shape; "
                                 "call build(input_shape) first")
            self.build(cfg['input_shape'])
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
    def load(cls, path, custom_objects: dict | None = None) -> 'Model':
        """Rebuild a model saved by `save` (architecture and weights); compile it again to train. Only the package's
        registered classes and functions, or those in `custom_objects` (name -> object), are constructed."""
        path = _npz_path(path)
        _, cfg = _read_checkpoint(path)
        if not isinstance(cfg, dict):
            raise ValueError(f"{path} holds weights only (its layers' arguments could not be saved); "
                             "build the model in code and call load_weights")
        if cfg.get('format') not in ('dl_from_scratch.Sequential', 'dl_from_scratch.Model', 'dl_from_scratch.Layer'):
            raise ValueError(f"{path} is not a dl_from_scratch checkpoint: its config has format {cfg.get('format')!r}")
        return _model_from_config(cfg, custom_objects).load_weights(path)

def _checkpoint_config(model: Model) -> dict:
    """What `save` writes: the graph (`get_config()`), or, for a model that its constructor's arguments build
    (a container such as `Bidirectional`, whose `get_config` is a layer's), those arguments and the input shape."""
    c = model.get_config()
    if 'format' in c: return c
    return {'format': 'dl_from_scratch.Layer', 'version': 1, 'layer': _layer_config(model),
            'input_shape': list(model.input_shape)}

def _model_from_config(cfg: dict, custom_objects=None) -> Model:
    "A model (without its weights) from `get_config()`'s description."
    if cfg['format'] == 'dl_from_scratch.Sequential': return Sequential._from_config(cfg, custom_objects)
    if cfg['format'] == 'dl_from_scratch.Layer':
        model = _layer_from_config(cfg['layer'], custom_objects)
        if not isinstance(model, Model): raise ValueError(f"cannot load {cfg['layer']['class']!r} as a model: it is not one")
        return model.build(tuple(cfg['input_shape']))
    layers = {c['name']: _layer_from_config(c, custom_objects) for c in cfg['layers']}
    outs = {}                                        # layer name -> list of its calls' outputs
    for name, l in layers.items():
        if isinstance(l, InputLayer): outs[name] = [[Input(l.shape, name=name)]]
    for name, inbound, multi_in in cfg['nodes']:
        xs = [outs[ln][ni][ti] for ln, ni, ti in inbound]
        y = layers[name](xs if multi_in else xs[0])
        outs.setdefault(name, []).append(_as_list(y))
    pick = lambda refs, single: (outs[refs[0][0]][refs[0][1]][refs[0][2]] if single
                                 else [outs[ln][ni][ti] for ln, ni, ti in refs])
    return Model(pick(cfg['inputs'], cfg['single_in']), pick(cfg['outputs'], cfg['single_out']), name=cfg['name'])

# %% [markdown]
# A first graph: two inputs, one shared layer, two outputs. The summary
# lists each layer once, with the tensors it reads; the shared `Dense`
# reads two, and its weights count once.

# %%
from dl_from_scratch.merge import Add
a, b = Input((3,), name='a'), Input((3,), name='b')
shared = Dense(4, 'tanh', rng=0, name='shared')
ha, hb = shared(a), shared(b)
g = Model([a, b], [Dense(1, rng=1, name='y')(Add()([ha, hb])), ha], name='two_views')
g.summary()
test_eq(g.count_params(), 16 + 5); test_eq([l.name for l in g.layers], ['shared', 'add', 'y'])
xa, xb = np.ones((2, 3), np.float32), np.zeros((2, 3), np.float32)
y, h = g([xa, xb]); test_eq(y.shape, (2, 1)); test_eq(h, shared.forward(xa))
g([xa, xb]); dxa, dxb = g.backward([np.ones((2, 1), np.float32), None])      # None: an output the loss ignores
test_eq(dxa.shape, (2, 3)); test_eq(dxb.shape, (2, 3))
test_fail(lambda: g(xa), contains="Model 'two_views' expected 2 input array(s)")
test_fail(lambda: Model(a, np.zeros(2)), contains='expected outputs to be symbolic tensors')

# %% [markdown]
# A graph carries arrays and nothing else. A layer whose `forward` takes
# more than its input (chapter 11's recurrent layers take an initial
# state) gets it through `layer_kwargs={layer: {keyword: value}}`,
# which `forward` and `backward` hand to that layer at each of its nodes;
# chapter 11's `Bidirectional` is a model that passes its initial states on
# this way. A model used as a layer also answers for its layers'
# penalties (`regularizers`, `regularization_grads()`, keyed as `params`),
# their `constraints`, and `zero_grads()`.

# %%
from dl_from_scratch.layers import L2, MaxNorm
class Scale(Layer):
    "`y = k x`, `k` a keyword of forward and backward."
    def forward(self, x, training=False, k=1.0): self.cache = k; return k * x
    def backward(self, dy, need_dx=True): return self.cache * dy
xs, sc = Input((3,)), Scale()
inner = Model(xs, Dense(2, kernel_regularizer=L2(0.1), kernel_constraint=MaxNorm(0.5), rng=0, name='d')(sc(xs)), name='inner')
y2 = inner.forward(2 * xa)
test_eq(inner.forward(xa, layer_kwargs={sc: {'k': 2.0}}), y2)
test_close(inner.backward(np.ones((2, 2), np.float32)), 2 * inner.layers[1].params['W'].sum(1) * np.ones((2, 1), np.float32))
W = inner.layers[1].params['W']
test_eq(list(inner.regularizers), ['d/W']); test_eq(inner.regularization_grads()['d/W'], 0.2 * W)
W[...] = 10; inner.apply_constraints(); test_close(np.linalg.norm(W, axis=0), 0.5, eps=1e-5)
inner.zero_grads(); test_eq(inner.grads['d/W'], np.zeros_like(W))

# %% [markdown]
# `Sequential` is a `Model` whose graph is a chain. It keeps its own list
# of layers (`add` appends one) and builds the chain from the input shape,
# on the first call or `fit`, or at once when `input_shape` is given.

# %%
#| export
class Sequential(Model):
    """A linear stack of layers. `x` `(N, *input_shape)` -> `(N, *output_shape)`.

    `layers`: a list of `Layer`s; `input_shape` (batch axis excluded) builds the model at once,
    otherwise it is built on the first call, `build(input_shape)` or `fit`. A layer listed twice
    shares its weights between its two places (its gradients are summed)."""
    _builds_on_forward = True

    def __init__(self, layers=None, input_shape=None, name: str = 'sequential'):
        super().__init__(name=name)
        self._stack: list = []
        self.input_names, self.output_names, self._single_in, self._single_out = ['input'], ['output'], True, True
        for layer in layers or []: self.add(layer)
        if input_shape is not None: self.build(input_shape)

    @property
    def layers(self) -> list:
        "The layers in order (a shared layer once per place)."
        return self._stack

    def add(self, layer: Layer):
        "Append a layer; it gets a unique snake_case name if it has none."
        if not isinstance(layer, Layer):
            raise ValueError(f"Sequential.add expected a Layer, got {type(layer).__name__}")
        if all(l is not layer for l in self._stack):          # a repeated layer keeps its name
            taken = {l.name for l in self._stack}
            base = layer.name or _snake(type(layer).__name__)
            name, i = base, 0
            while name in taken: i += 1; name = f'{base}_{i}'
            layer.name = name
        self._stack.append(layer)
        if self.built: self.build(self.input_shape)
        return self

    def build(self, input_shape):
        """Build every layer for inputs of shape `(N, *input_shape)`. A `None` size (Keras's convention) accepts
        any size on that axis, e.g. `(None, 12)` for sequences of any length with 12 features."""
        t = x = Input(tuple(input_shape))
        for layer in self._stack:
            try: t = layer(t)
            except TypeError as e:       # int(None) or prod with None: a size this layer must know
                if None not in t.shape: raise
                raise ValueError(f"layer '{layer.name or _snake(type(layer).__name__)}' ({type(layer).__name__}) needs "
                                 f"every size of its input known, got input shape (N, {', '.join(map(str, t.shape))})") from e
        self._init_graph(x, t)
        return self

    def output_shape(self, input_shape=None):
        "Output shape (batch axis excluded) for inputs of `input_shape` (default: the built one)."
        shape = tuple(self.input_shape if input_shape is None else input_shape)
        for layer in self._stack: shape = tuple(layer.output_shape(shape))
        return shape

    def forward(self, x, training: bool = False, layer_kwargs: dict | None = None, mask=None):
        """`x` `(N, *input_shape)` -> output `(N, *output_shape())` through every layer (builds on first use);
        masks travel along the chain as in `Model.forward`."""
        if not self.built: self.build(tuple(x.shape[1:]))
        return super().forward(x, training, layer_kwargs, mask)

    def _summary_rows(self) -> list:
        "Keras's Sequential summary lists no input layer and has no 'Connected to' column."
        return [r[:3] for r in super()._summary_rows() if not r[0].endswith('(InputLayer)')]

    def __len__(self): return len(self._stack)
    def __getitem__(self, i): return self._stack[i]
    def __repr__(self): return f"Sequential([{', '.join(map(repr, self._stack))}])"

    def get_config(self) -> dict:
        "JSON-friendly description (name, input shape, each layer's config; a repeated layer by name)."
        seen, layers = set(), []
        for l in self._stack:
            layers.append({'same_as': l.name} if id(l) in seen else _layer_config(l)); seen.add(id(l))
        return {'format': 'dl_from_scratch.Sequential', 'version': 1, 'name': self.name,
                'input_shape': list(self.input_shape) if self.input_shape is not None else None, 'layers': layers}

    @classmethod
    def _from_config(cls, cfg, custom_objects=None) -> 'Sequential':
        made = {}
        for c in cfg['layers']:
            made[c.get('same_as', c.get('name'))] = made[c['same_as']] if 'same_as' in c else _layer_from_config(c, custom_objects)
        model = cls([made[c.get('same_as', c.get('name'))] for c in cfg['layers']], name=cfg.get('name', 'sequential'))
        if cfg['input_shape'] is not None: model.build(cfg['input_shape'])
        return model

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
# **Masks travel with the tensors.** Padded sequences carry a mask
# $(N, T)$ beside the array (chapter 05's `Embedding(mask_zero=True)` makes
# one), as in Keras. `forward` keeps one mask per tensor slot: after each
# layer it asks `compute_mask(x, mask)` for the mask of the output, and a
# layer with one input whose `forward` has a `mask` keyword (a recurrent
# layer, `GlobalAveragePooling1D`, attention) gets its input's mask. A mask
# that no longer fits the output (the output lost the time axis, or a layer
# reshaped it) is dropped, so a layer that knows nothing of masks cannot
# pass on a wrong one. Nothing of this runs in `backward`: a layer that uses
# the mask keeps it in its cache. Without a mask every slot holds `None`
# and the arrays are computed exactly as before. A model used as a layer
# takes `forward(x, mask=...)` for its inputs and reports its outputs' masks.

# %%
from dl_from_scratch.layers import Embedding, GlobalAveragePooling1D, Flatten
class Spy(Layer):
    "The identity, recording the mask it was handed."
    def forward(self, x, training=False, mask=None): self.cache, self.seen = True, mask; return x
    def backward(self, dy, need_dx=True): return dy
ids = np.array([[3, 1, 4, 0, 0], [5, 9, 2, 6, 5]])            # post-padded with id 0
spy = Spy()
bag = Sequential([Embedding(10, 4, mask_zero=True, rng=0), spy, GlobalAveragePooling1D(), Dense(1, rng=1)],
                 input_shape=(None,))                        # sequences of any length
p = bag.predict(ids)
test_eq(spy.seen, ids != 0)                                   # the Embedding's mask reached the next layer
test_close(p[0], bag.predict(ids[:1, :3])[0], eps=1e-6)       # padding changes nothing
test_eq(bag.compute_mask(ids), None)                          # the pooled output has no time axis
x3 = Input((5,)); h3 = Embedding(10, 4, mask_zero=True, rng=0)(x3)
fm = Model(x3, [Spy()(h3), Flatten()(h3)])
fm.forward(ids); test_eq(fm.compute_mask(ids), [ids != 0, None])      # Flatten ends the mask
from dl_from_scratch.losses import BinaryCrossentropy
W_pad = bag.layers[0].params['W'][0].copy()
bag.compile(BinaryCrossentropy(from_logits=True), Adam(0.01), ['accuracy'])
bag.fit(ids, np.array([0, 1]), epochs=3, batch_size=2, verbose=0); bag.evaluate(ids, np.array([0, 1]))
test_eq(bag.layers[0].params['W'][0], W_pad)                 # the padding row got no gradient
test_close(bag.predict(ids)[0], bag.predict(ids[:1, :3])[0], eps=1e-6)

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
    test_fail(lambda: bad.fit(x * 1e10, y, epochs=3, verbose=0), contains='fit stopped at epoch 1, batch 1/7')
assert all(np.isfinite(w).all() for w in bad.get_weights())      # the last finite weights are kept
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
