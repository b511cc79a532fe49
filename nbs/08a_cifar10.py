# %% [markdown]
# # CIFAR-10 from scratch on two cores
#
# > The build-your-own book's VGG-like net, trained to its recipe; then the
# > best CIFAR-10 test accuracy we can reach in 30 minutes of training on this
# > book's 2-core machine.
#
# ## Purpose
#
# Chapter 08 trained the CS231n report's CIFAR-10 nets. Two CIFAR-10 runs
# remain, and both are about what a from-scratch library can do with little
# compute:
#
# 1. **The build-your-own book's VGG-like net** (2,915,114 parameters): three
#    blocks of two 3×3 convolutions (32, 64, 128 filters) with dropout 0.2
#    between them, then dense layers of 1,024 and 512 units with max-norm 3.
#    The source trains it with SGD ($\eta = 0.01$, momentum 0.9) for 5 epochs
#    in batches of 32 and reports **65.05 %** test accuracy.
# 2. **Past them.** The best test accuracy we can reach in at most 30
#    minutes of training here. The goal is 80 %.
#
# Nothing new is derived: every layer, the optimiser and the loss come from
# chapters 04–08. What is new is the *recipe* of the second run, explained
# where it is used.
#
# This chapter exports nothing. Its two runs train for 35 minutes in all (12.8
# and 22.2, as the table at the end prints) and are marked `slow`;
# `nbdev_test` runs each of them on a few hundred images.

# %%
import os
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')   # before NumPy: OpenBLAS's idle threads must not spin (00_core)
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()

# %%
import math, time
import numpy as np
import matplotlib.pyplot as plt
from dl_from_scratch.core import set_num_threads, as_rng
from dl_from_scratch.data import load
from dl_from_scratch.layers import Dense, Flatten, Dropout, BatchNorm, Activation, MaxNorm, L2
from dl_from_scratch.conv import Conv2D, MaxPool2D
from dl_from_scratch.model import Sequential, Callback
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.optim import SGD
from dl_from_scratch import viz
from fastcore.test import test_eq

set_num_threads(2)        # both cores: Numba's kernels and OpenBLAS's products
CLASSES = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']

# %% [markdown]
# The data are the real CIFAR-10 (50,000 training and 10,000 test images of
# 32×32×3), scaled to [0, 1] as the source does. In quick mode (`nbdev_test`)
# every run below uses the first 512 training and test images.

# %%
#| cifar10
(x_train, y_train), (x_test, y_test) = load('cifar10', 'train'), load('cifar10', 'test')
x_train, x_test = x_train.astype(np.float32) / 255, x_test.astype(np.float32) / 255
QUICK = True              # the slow cells below set it to False
n_quick = 512
print(x_train.shape, x_test.shape, np.bincount(y_train))

# %% [markdown]
# ## 1. The build-your-own book's VGG-like net
#
# The source's Keras net, layer for layer (`'same'` padding, ReLU, dropout
# 0.2 after the first convolution of each block and before each dense
# layer, max-norm 3 on the two hidden dense layers). Its parameter count must
# be the source's 2,915,114.

# %%
def byo_cifar_vgg(rng=0):
    "The build-your-own book's VGG-like CIFAR-10 net (2,915,114 parameters): dropout 0.2, max-norm 3 on the dense layers."
    L = []
    for f in (32, 64, 128):
        L += [Conv2D(f, 3, padding='same', activation='relu', rng=rng), Dropout(0.2, rng=rng),
              Conv2D(f, 3, padding='same', activation='relu', rng=rng), MaxPool2D(2)]
    L += [Flatten(), Dropout(0.2, rng=rng), Dense(1024, activation='relu', kernel_constraint=MaxNorm(3), rng=rng),
          Dropout(0.2, rng=rng), Dense(512, activation='relu', kernel_constraint=MaxNorm(3), rng=rng),
          Dropout(0.2, rng=rng), Dense(10, rng=rng)]
    return Sequential(L, input_shape=(32, 32, 3), name='byo_cifar_vgg')

vgg = byo_cifar_vgg()
test_eq(vgg.count_params(), 2_915_114)
vgg.summary()

# %% [markdown]
# Trained to the recipe: SGD with $\eta = 0.01$ and momentum 0.9 (no
# Nesterov), batches of 32, 5 epochs, the test set as validation data (as in
# the source; nothing is selected on it).

# %%
#| cifar10
def train_vgg(x, y, xv, yv, epochs):
    net = byo_cifar_vgg(rng=0)
    net.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.01, momentum=0.9), metrics=['accuracy'])
    t0 = time.perf_counter()
    h = net.fit(x, y, epochs=epochs, batch_size=32, validation_data=(xv, yv), rng=0, verbose=2)
    return net, h, time.perf_counter() - t0

vgg, h_vgg, t_vgg = train_vgg(x_train[:n_quick], y_train[:n_quick], x_test[:n_quick], y_test[:n_quick], 1)

# %%
#| slow
#| cifar10
QUICK = False
vgg, h_vgg, t_vgg = train_vgg(x_train, y_train, x_test, y_test, 5)

# %%
#| cifar10
vgg_acc = vgg.evaluate(x_test[:n_quick] if QUICK else x_test, y_test[:n_quick] if QUICK else y_test)[1]
print(f"test accuracy {vgg_acc:.4f} (source: 0.6505) after {t_vgg / 60:.1f} min of training "
      f"({t_vgg / len(h_vgg.epoch):.0f} s per epoch)")
viz.plot_history(h_vgg, title='build-your-own VGG-like net, SGD 0.01 + momentum 0.9, batch 32'); plt.show()

# %% [markdown]
# ## 2. Past them: 80 % in 30 minutes?
#
# Thirty minutes on two cores is about 1.5 × 10¹⁴ floating-point operations
# at the rate our convolutions reach (chapter 07a's table), enough for about
# ten passes of a network of 80 MFLOP per image. Three changes make those
# passes count, each a standard one:
#
# * **BatchNorm after every convolution** (chapter 06), instead of dropout:
#   it allows a large learning rate from the first step, and its batch noise
#   regularises. The VGG layout stays (two 3×3 convolutions of 32, 64 and 128
#   filters per block, 2×2 max-pooling), but the 2,098,176-weight dense layer
#   goes: the last block's 4×4×128 features go straight to the 10 logits
#   (308,842 parameters in all, a tenth of the VGG-like net, at the same
#   convolution cost).
# * **Augmentation that keeps the label**: every epoch sees each image
#   shifted by up to 4 pixels (a random 32×32 crop of the image padded by
#   reflection) and mirrored left-right with probability ½. Chapter 08's
#   Keras-style affine augmentation reads four input pixels for every output
#   pixel and blends them; an integer crop is one gather.
# * **A one-cycle learning rate** (Smith and Topin, 2019): SGD with Nesterov
#   momentum 0.9, the rate rising linearly from 0.004 to 0.08 over the first
#   two epochs and falling linearly to zero at the last step, with weight
#   decay $2.5 \times 10^{-4}$ as an L2 penalty ($\lambda \lVert W\rVert^2$,
#   a gradient of $5 \times 10^{-4} W$). Ending at zero settles the weights
#   without a separate fine-tuning phase.
#
# The plan is 8 epochs in batches of 128, chosen to fit the 30 minutes; the
# clock below counts everything in the loop, augmentation and per-epoch test
# evaluation included.
#
# The crops and flips, the one-cycle rate and the per-batch epoch counter
# are exported to the package (`augment.random_crop_flip`,
# `optim.OneCycle`, `model.FractionalEpoch`): chapter 09 trains with them
# again.

# %%
#| export augment
def random_crop_flip(x, pad: int = 4, rng=None):
    """Random `pad`-pixel shifts (crops of the reflection-padded image) and left-right flips of x `(N, H, W, C)`,
    as one gather: no Python loop over images. Returns an array of x's shape."""
    rng = as_rng(rng)
    N, H, W, _ = x.shape
    xp = np.pad(x, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode='reflect')
    di, dj = rng.integers(0, 2 * pad + 1, N), rng.integers(0, 2 * pad + 1, N)
    cols = np.arange(W)[None, :].repeat(N, 0)
    flip = rng.random(N) < 0.5
    cols[flip] = cols[flip, ::-1]
    rows = di[:, None] + np.arange(H)[None, :]                              # (N, H)
    cols = dj[:, None] + cols                                               # (N, W)
    return xp[np.arange(N)[:, None, None], rows[:, :, None], cols[:, None, :]]

# %%
# each output is a window of the padded image, mirrored or not: found by searching all offsets
x4 = np.random.default_rng(0).random((6, 8, 8, 2), dtype=np.float32)
a, padded = random_crop_flip(x4, pad=2, rng=0), np.pad(x4, ((0, 0), (2, 2), (2, 2), (0, 0)), mode='reflect')
test_eq(a.shape, x4.shape)
for img, p in zip(a, padded):
    windows = [w for i in range(5) for j in range(5) for w in (p[i:i + 8, j:j + 8], p[i:i + 8, j:j + 8][:, ::-1])]
    assert any(np.array_equal(img, w) for w in windows)
test_eq(random_crop_flip(x4, pad=0, rng=1)[:, :, ::-1].sum(), x4.sum())     # pad 0: only flips, nothing lost

# %%
#| cifar10
viz.show_images(np.concatenate([x_train[:8], random_crop_flip(x_train[:8], rng=1)]), ncols=8, scale=1.1,
                suptitle='eight training images and one random crop + flip of each'); plt.show()

# %%
#| export optim
class OneCycle:
    "Learning rate at (fractional) epoch e: linear lo -> peak over `warmup` epochs, then linear to 0 at `total`."
    def __init__(self, peak: float, total: float, warmup: float, lo: float | None = None):
        if not 0 <= warmup < total:
            raise ValueError(f"OneCycle expected 0 <= warmup < total epochs, got warmup={warmup}, total={total}")
        self.peak, self.total, self.warmup, self.lo = peak, total, warmup, lo or peak / 20
    def __call__(self, e):
        if e < self.warmup: return self.lo + (self.peak - self.lo) * e / self.warmup
        return self.peak * max(0.0, (self.total - e) / (self.total - self.warmup))

# %%
#| export model
class FractionalEpoch(Callback):
    "Advance the optimizer's epoch counter after every batch, so that an epoch-indexed schedule is applied per step."
    def __init__(self, steps: int): self.steps = steps
    def on_batch_end(self, batch, logs=None):
        self.model.optimizer.epoch = math.floor(self.model.optimizer.epoch) + (batch + 1) / self.steps

# %%
def vgg_bn(widths=(32, 64, 128), weight_decay=2.5e-4, rng=0):
    "Two 3x3 conv-BN-ReLU per block, 2x2 max-pool after each block, then one dense layer to the 10 logits."
    L = []
    for f in widths:
        for _ in range(2):
            L += [Conv2D(f, 3, padding='same', use_bias=False, kernel_initializer='he_normal',
                         kernel_regularizer=L2(weight_decay), rng=rng), BatchNorm(), Activation('relu')]
        L.append(MaxPool2D(2))
    L += [Flatten(), Dense(10, kernel_regularizer=L2(weight_decay), rng=rng)]
    return Sequential(L, input_shape=(32, 32, 3), name='vgg_bn')

test_eq(vgg_bn().count_params(), 308_842)
sched = OneCycle(0.08, 9, 2)
test_eq([round(sched(e), 4) for e in (0, 1, 2, 5.5, 9)], [0.004, 0.042, 0.08, 0.04, 0.0])

# %%
#| cifar10
def train_fast(x, y, xv, yv, epochs, batch_size=128, peak=0.08, warmup=2, rng=0):
    "Train `vgg_bn` with fresh crops and flips every epoch and a one-cycle rate; return the net, its logs and seconds."
    net = vgg_bn(rng=rng)
    net.compile(loss=SparseCategoricalCrossentropy(from_logits=True), metrics=['accuracy'],
                optimizer=SGD(OneCycle(peak, epochs, min(warmup, epochs / 4)), momentum=0.9, nesterov=True))
    steps, aug_rng, logs = math.ceil(len(x) / batch_size), np.random.default_rng(rng), {}
    t0 = time.perf_counter()
    for e in range(epochs):
        h = net.fit(random_crop_flip(x, rng=aug_rng), y, epochs=e + 1, initial_epoch=e, batch_size=batch_size,
                    validation_data=(xv, yv), callbacks=[FractionalEpoch(steps)], rng=e, verbose=0)
        for k, v in h.history.items(): logs.setdefault(k, []).extend(v)
        logs.setdefault('minutes', []).append((time.perf_counter() - t0) / 60)
        print(f"epoch {e + 1}/{epochs}: {logs['minutes'][-1]:5.1f} min, lr now {net.optimizer.current_lr:.4f}, "
              f"train loss {logs['loss'][-1]:.4f} acc {logs['accuracy'][-1]:.4f}, test acc {logs['val_accuracy'][-1]:.4f}")
    return net, logs, time.perf_counter() - t0

fast, h_fast, t_fast = train_fast(x_train[:n_quick], y_train[:n_quick], x_test[:n_quick], y_test[:n_quick], 2)

# %% [markdown]
# The two lines above come from the quick run, on 512 images, that `nbdev_test` stops at: it only
# checks that the code runs. With 4 batches an epoch its warm-up lasts two steps, so the rate reaches
# its peak of 0.08 on a net that has taken two steps, and the training loss jumps to about 16–21. It
# says nothing about the full run (8 epochs of 391 batches, a warm-up of 782 steps) in the next cell.

# %%
#| slow
#| cifar10
fast, h_fast, t_fast = train_fast(x_train, y_train, x_test, y_test, 8)

# %%
#| cifar10
xs_t, ys_t = (x_test[:n_quick], y_test[:n_quick]) if QUICK else (x_test, y_test)
pred_fast = fast.predict(xs_t).argmax(-1)
fast_acc = float((pred_fast == ys_t).mean())
print(f"test accuracy {fast_acc:.4f} after {t_fast / 60:.1f} min of training "
      f"({'within' if t_fast <= 1800 else 'OVER'} the 30-minute budget; goal 0.80)")
fig, axs = plt.subplots(1, 2, figsize=(12, 4.5))
ep = np.arange(1, len(h_fast['loss']) + 1)
axs[0].plot(h_fast['minutes'], h_fast['accuracy'], 'o-', label='train (augmented, while learning)')
axs[0].plot(h_fast['minutes'], h_fast['val_accuracy'], 's-', label='test')
axs[0].axhline(0.8, ls=':', c='gray'); axs[0].set_xlabel('minutes of training'); axs[0].set_ylabel('accuracy')
axs[0].legend(); axs[0].set_title('vgg_bn, one-cycle SGD, crops + flips')
viz.plot_confusion_matrix(ys_t, pred_fast, class_names=CLASSES, normalize='true', ax=axs[1])
plt.tight_layout(); plt.show()
per_class = [(c, float((pred_fast[ys_t == i] == i).mean())) for i, c in enumerate(CLASSES)]
print('per-class test accuracy:', ', '.join(f'{c} {a:.2f}' for c, a in per_class))

# %% [markdown]
# ## Results beside the sources

# %%
#| cifar10
print(f"{'run':<58}{'ours':>8}{'source':>8}{'minutes':>9}")
print(f"{'build-your-own VGG-like net, SGD .01/.9, 5 epochs, batch 32':<58}{vgg_acc:>8.4f}{0.6505:>8.4f}{t_vgg / 60:>9.1f}")
print(f"{'vgg_bn, one-cycle SGD, crops + flips, 8 epochs (goal 0.80)':<58}{fast_acc:>8.4f}{'':>8}{t_fast / 60:>9.1f}")

# %% [markdown]
# ### Reading the table
#
# In the run committed here the VGG-like net reached 69.84 % (the source:
# 65.05 %) after 12.8 minutes, and the 30-minute recipe 87.04 % after 22.2
# minutes, past the 80 % goal from its sixth epoch on (80.97 %). The bullets
# below were written before that run; they say what to look for.
#
# * **The VGG-like net.** The same layers, initialisation (Keras's Glorot
#   uniform and zero biases), optimiser, batch size and number of epochs as
#   the source. Five epochs are far from convergence for this net at
#   $\eta = 0.01$, so a difference of a few points between two runs with
#   different random draws (initial weights, dropout masks, batch order) is
#   expected; Keras's and our float32 arithmetic differ too.
# * **The 30-minute run** spends the same kind of compute per image as the
#   VGG-like net's convolutions, yet trains a tenth of the parameters. Its
#   printed minutes are wall-clock time on this machine's two cores,
#   augmentation and evaluation included. If it falls short of 80 %, the
#   usual next steps are more epochs (the test accuracy is still climbing at
#   the end of a one-cycle schedule this short) or wider layers, both of
#   which need more than 30 minutes here.
#
# ## References
#
# * The build-your-own book, §3.4 (the Keras VGG-like CIFAR-10 net and its 65.05 %).
# * K. Simonyan, A. Zisserman, "Very deep convolutional networks for large-scale image recognition", ICLR 2015 (the 3×3 VGG layout).
# * S. Ioffe, C. Szegedy, "Batch normalization", ICML 2015.
# * L. N. Smith, N. Topin, "Super-convergence: very fast training of neural networks using large learning rates", 2019 (the one-cycle schedule).
# * A. Krizhevsky, *Learning multiple layers of features from tiny images*, 2009 (CIFAR-10; crops and flips as augmentation).
