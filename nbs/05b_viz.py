# %% [markdown]
# # Plots for training: curves, decision boundaries, image grids, confusion matrices
#
# > The plots every experiment in the book uses: training histories, decision boundaries, grids of images, and confusion matrices.
#
# ## Purpose
#
# Four pictures answer most questions about a training run:
#
# * **loss and accuracy curves** (train and validation): is it learning,
#   is it over-fitting, did it stop at the right time?
# * **decision boundaries** of a 2-D classifier: what function did it learn?
# * **image grids**: what do the inputs (or the learned filters) look like?
# * **a confusion matrix**: which classes does it mix up?
#
# All functions take NumPy (or CuPy, copied to the host) arrays, draw on a
# given matplotlib `Axes` or a new figure, and return the `Axes` (or the
# `Figure`), so a chapter can combine and label them.

# %%
#| default_exp viz

# %%
#| export
from __future__ import annotations
import numpy as np
import matplotlib.pyplot as plt
from dl_from_scratch.core import to_numpy, check_array

# %%
#| hide
from fastcore.test import test_eq, test_fail
import numpy as np

# %% [markdown]
# ## Loss and accuracy curves
#
# `plot_history` takes a `History` (from `fit`), its `.history` dict, or
# any `dict[str, list]`, and draws one panel per quantity, with the
# validation curve (`val_<name>`) beside the training one. Several runs can be
# compared by passing a dict `{label: history}`.

# %%
#| export
def _hist_dict(h) -> dict:
    return h.history if hasattr(h, 'history') else dict(h)

def plot_history(history, metrics=('loss', 'accuracy'), axes=None, logy=False, title=None):
    """Training (solid) and validation (dashed) curves per metric. `history`: a `History`,
    a dict of lists, or `{label: History}` to overlay runs. Returns the list of `Axes`."""
    runs = history if isinstance(history, dict) and history and all(
        hasattr(v, 'history') or isinstance(v, dict) for v in history.values()) else {None: history}
    runs = {k: _hist_dict(v) for k, v in runs.items()}
    metrics = [m for m in metrics if any(m in h or f'val_{m}' in h for h in runs.values())]
    if not metrics: raise ValueError(f"plot_history: none of the metrics are in the history (keys: "
                                     f"{sorted(set().union(*[h.keys() for h in runs.values()]))})")
    if axes is None:
        _, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.5), squeeze=False)
        axes = list(axes[0])
    for ax, m in zip(axes, metrics):
        for i, (label, h) in enumerate(runs.items()):
            c = f'C{i}'
            pre = '' if label is None else f'{label} '
            if m in h: ax.plot(np.arange(1, len(h[m]) + 1), h[m], c=c, label=f'{pre}train')
            if f'val_{m}' in h: ax.plot(np.arange(1, len(h[f'val_{m}']) + 1), h[f'val_{m}'], c=c, ls='--', label=f'{pre}validation')
        ax.set_xlabel('epoch'); ax.set_ylabel(m)
        if logy: ax.set_yscale('log')
        ax.legend(fontsize=8); ax.grid(alpha=.3)
    if title: axes[0].figure.suptitle(title)
    return axes

# %%
axs = plot_history({'loss': [1., .5, .3], 'val_loss': [1.1, .7, .6], 'accuracy': [.5, .8, .9]})
test_eq(len(axs), 2); test_eq(len(axs[0].lines), 2)
axs = plot_history({'a': {'loss': [1, 2]}, 'b': {'loss': [2, 1]}}, metrics=['loss']); test_eq(len(axs[0].lines), 2)
test_fail(lambda: plot_history({'loss': [1.]}, metrics=['f1']), contains='none of the metrics')
plt.show()

# %% [markdown]
# ## Decision boundaries
#
# Evaluate the classifier on a grid covering the data (with a margin), colour
# each grid cell by the predicted class, and scatter the data on top. The
# predictor may return class scores `(M, C)`, one probability/logit
# `(M, 1)`, or labels `(M,)`; `threshold` decides the class of a single
# score. The grid is evaluated in one vectorised call.

# %%
#| export
def _classes(scores, threshold):
    s = to_numpy(scores)
    if s.ndim == 2 and s.shape[1] > 1: return s.argmax(1)
    return (s.reshape(-1) > threshold).astype(int)

def plot_decision_boundary(predict, X, y, ax=None, resolution: int = 300, margin: float = 0.5,
                           threshold: float = 0.5, cmap='coolwarm', title=None, s=15):
    """Colour the plane by `predict(grid)` and scatter `X` `(N, 2)` coloured by `y` `(N,)`.
    `predict`: a function (or a model with `.predict`) from `(M, 2)` to scores or labels."""
    X = check_array(to_numpy(X), 'X', ndim=2, shape=(None, 2), who='plot_decision_boundary')
    f = predict.predict if hasattr(predict, 'predict') else predict
    x0, x1 = X[:, 0].min() - margin, X[:, 0].max() + margin
    y0, y1 = X[:, 1].min() - margin, X[:, 1].max() + margin
    gx, gy = np.meshgrid(np.linspace(x0, x1, resolution), np.linspace(y0, y1, resolution))
    grid = np.c_[gx.ravel(), gy.ravel()].astype(np.float32)
    zz = _classes(f(grid), threshold).reshape(gx.shape)
    ax = ax or plt.subplots(figsize=(5, 4))[1]
    ax.contourf(gx, gy, zz, alpha=0.35, cmap=cmap, levels=np.arange(zz.max() + 2) - 0.5)
    ax.scatter(X[:, 0], X[:, 1], c=to_numpy(y).reshape(-1), cmap=cmap, s=s, edgecolors='k', linewidths=0.3)
    ax.set_xlim(x0, x1); ax.set_ylim(y0, y1)
    if title: ax.set_title(title)
    return ax

# %%
Xd = np.random.default_rng(0).normal(size=(50, 2)); yd = (Xd[:, 0] > 0).astype(int)
ax = plot_decision_boundary(lambda g: g[:, :1], Xd, yd, resolution=50, threshold=0.0)
test_eq(len(ax.collections) >= 2, True)
test_fail(lambda: plot_decision_boundary(lambda g: g, np.zeros((3, 3)), np.zeros(3)), contains='(N, 2)')
plt.show()

# %% [markdown]
# ## Image grids
#
# Images come as `(N, H, W)`, `(N, H, W, 1)` or `(N, H, W, 3)` (NHWC), of
# any range; each is min–max scaled for display unless `vmin`/`vmax` are
# given (uint8 images are shown as they are). `titles` labels each tile.

# %%
#| export
def show_images(images, titles=None, ncols: int = 8, cmap='gray', scale: float = 1.5, normalize: bool = True,
                suptitle=None):
    "Show `images` `(N, H, W[, C])` in a grid of `ncols` columns; returns the `Figure`."
    imgs = to_numpy(images)
    imgs = check_array(imgs, 'images', ndim=(3, 4), kind=None, finite=False, who='show_images')
    if imgs.ndim == 4 and imgs.shape[-1] == 1: imgs = imgs[..., 0]
    if imgs.ndim == 4 and imgs.shape[-1] not in (3, 4):
        raise ValueError(f"show_images expected (N, H, W), (N, H, W, 1) or (N, H, W, 3) images, got {imgs.shape}")
    n = len(imgs); ncols = max(1, min(ncols, n)); nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(scale * ncols, scale * nrows + (0.3 if titles is not None else 0)),
                             squeeze=False)
    for i, ax in enumerate(axes.ravel()):
        ax.axis('off')
        if i >= n: continue
        im = imgs[i]
        if normalize and im.dtype != np.uint8:
            lo, hi = float(im.min()), float(im.max())
            im = (im - lo) / (hi - lo) if hi > lo else np.zeros_like(im, dtype=float)
        ax.imshow(im, cmap=cmap if im.ndim == 2 else None)
        if titles is not None: ax.set_title(str(titles[i]), fontsize=8)
    if suptitle: fig.suptitle(suptitle)
    fig.tight_layout()
    return fig

# %%
fig = show_images(np.random.default_rng(0).random((10, 8, 8, 1)), titles=list(range(10)), ncols=5)
test_eq(len(fig.axes), 10)
test_eq(len(show_images(np.zeros((3, 4, 4, 3), np.uint8)).axes), 3)
test_fail(lambda: show_images(np.zeros((2, 4, 4, 5))), contains='(N, H, W, 3)')
plt.show()

# %% [markdown]
# ## Confusion matrix
#
# Entry $(i, j)$ counts the examples of true class $i$ predicted as $j$.
# It is one `np.bincount` over $i\cdot C + j$, no loop. With
# `normalize='true'` each row is divided by its total (per-class recall on the
# diagonal).

# %%
#| export
def confusion_matrix(y_true, y_pred, num_classes: int | None = None):
    "Counts `(C, C)`: row = true class, column = predicted class. Integer labels `(N,)` in [0, C)."
    t, p = (to_numpy(a).reshape(-1) for a in (y_true, y_pred))
    for name, a in (('y_true', t), ('y_pred', p)):     # a float label would be truncated silently
        if a.dtype.kind not in 'iub' and not (a.dtype.kind == 'f' and np.array_equal(a, np.floor(a))):
            raise ValueError(f"confusion_matrix expected integer class labels in {name}, got dtype {a.dtype}")
    t, p = t.astype(np.int64), p.astype(np.int64)
    if t.shape != p.shape: raise ValueError(f"confusion_matrix expected y_pred of shape {t.shape}, got {p.shape}")
    C = int(num_classes if num_classes is not None else max(t.max(initial=-1), p.max(initial=-1)) + 1)
    lo, hi = min(t.min(initial=0), p.min(initial=0)), max(t.max(initial=0), p.max(initial=0))
    if lo < 0 or hi >= C:       # bincount would count such a pair in another cell
        raise ValueError(f"confusion_matrix expected labels in [0, {C}), got values in [{lo}, {hi}]")
    return np.bincount(t * C + p, minlength=C * C).reshape(C, C)

def plot_confusion_matrix(y_true, y_pred, class_names=None, normalize: str | None = None, ax=None,
                          cmap='Blues', title=None):
    """Draw the confusion matrix of integer labels `y_true`, `y_pred` `(N,)` (rows: true class) with counts (or row
    fractions, `normalize='true'`) in the cells; `class_names` (C,) labels the axes. Returns the `Axes`."""
    cm = confusion_matrix(y_true, y_pred, None if class_names is None else len(class_names))
    C = len(cm)
    vals = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize == 'true' else cm
    ax = ax or plt.subplots(figsize=(0.5 * C + 2.5, 0.5 * C + 2))[1]
    ax.imshow(vals, cmap=cmap)
    names = class_names if class_names is not None else list(range(C))
    ax.set_xticks(range(C), names, rotation=45, ha='right', fontsize=8); ax.set_yticks(range(C), names, fontsize=8)
    ax.set_xlabel('predicted'); ax.set_ylabel('true')
    hi = vals.max() if vals.size else 0
    for i in range(C):
        for j in range(C):
            ax.text(j, i, f'{vals[i, j]:.2f}' if normalize == 'true' else f'{vals[i, j]:d}', ha='center', va='center',
                    fontsize=7, color='white' if vals[i, j] > hi / 2 else 'black')
    if title: ax.set_title(title)
    return ax

# %%
cm = confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1])
test_eq(cm, np.array([[1, 0, 0], [0, 1, 1], [0, 0, 2]]))
test_eq(cm.sum(), 5)
test_eq(confusion_matrix([0], [0], num_classes=3).shape, (3, 3))
ax = plot_confusion_matrix([0, 1, 2, 2, 1], [0, 2, 2, 2, 1], class_names=['a', 'b', 'c'], normalize='true')
test_eq(len(ax.texts), 9)
test_fail(lambda: confusion_matrix([0, 1], [0]), contains='y_pred of shape')
test_fail(lambda: confusion_matrix([0, 1], [0, 3], num_classes=3), contains='labels in [0, 3), got values in [0, 3]')
test_fail(lambda: confusion_matrix([0, 1], [0.5, 1.0]), contains='integer class labels in y_pred')
test_eq(confusion_matrix(np.array([0., 1.]), np.array([True, True])), np.array([[0, 1], [0, 1]]))
plt.show()

# %% [markdown]
# These functions draw the figures of chapters 05 and 06 (loss curves,
# decision boundaries of the XOR and planar nets, MNIST confusion matrix and
# misclassified digits) and of the later chapters.
#
# ## References
#
# * J. D. Hunter, *Matplotlib: A 2D graphics environment*, Computing in Science & Engineering 9(3), 2007; the Matplotlib API reference (`contourf`, `imshow`).
# * scikit-learn's `confusion_matrix` and `DecisionBoundaryDisplay`, whose conventions (rows = true class) we follow.
