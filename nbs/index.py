# %% [markdown]
# # Preface
#
# > Every algorithm derived, implemented in NumPy (hot loops in Numba, for the CPU and CUDA), tested where it is written, and trained on real data.
#
# ## What this book is
#
# This is a book and a Python package at once. Each chapter is a Jupyter
# notebook that
#
# 1. states what it is for,
# 2. **derives** an algorithm in mathematics and prose,
# 3. **implements** it in NumPy, one exported cell at a time, each followed by a
#    test cell that checks it (gradients are checked against finite
#    differences; compiled kernels against their NumPy reference),
# 4. runs **experiments** on real data (MNIST, Fashion-MNIST, CIFAR-10, Tiny
#    Shakespeare) with plots, and
# 5. sets our numbers **beside the published ones** it reproduces, explaining
#    any difference — including the places where a source text is wrong.
#
# The exported cells form the package `dl_from_scratch`, a small Keras-like
# library whose only run-time dependencies are NumPy, Numba, matplotlib, tqdm
# and TensorFlow Datasets (for loading data, without TensorFlow).
#
# The content comes from five texts: a Hy/org-mode "build your own deep
# learning" book; a university report on sparse autoencoders, CNNs and
# RNN/LSTM/GRU with hand-written BPTT; *Hands-On Deep Learning Algorithms with
# Python*; study notes on *Dive into Deep Learning* and the deeplearning.ai
# courses; and N. Ketkar's *Deep Learning with Python*. Where a text used a
# framework, we build the thing ourselves.
#
# ## How to read it and run it
#
# From a checkout, on a machine with Python ≥ 3.10 and `make`, two commands
# do everything; each sets itself up first (a virtual environment `.venv`,
# installed once and again only when the packaging files change):
#
# * `make book` renders this site into `_book/index.html`: with Quarto when
#   `quarto` is installed, else with Sphinx and the Sphinx Book Theme. Either
#   way the pages show the outputs stored in the notebooks; nothing is re-run.
# * `make test` checks that the package is the notebooks' export and that each
#   notebook agrees with its text twin, then runs `pytest tests/` and the
#   inline tests of every chapter (quick mode: cells marked `#| slow` are
#   skipped; `make test-all` runs them).
#
# **Data.** The chapters train on real datasets (MNIST, Fashion-MNIST,
# CIFAR-10, Tiny Shakespeare, ...), read through TensorFlow Datasets from
# `TFDS_DATA_DIR`, else `~/tensorflow_datasets`. A fresh machine has none of
# them, and `make test` still passes there: it skips the cells that need a
# missing dataset, names the dataset, and ends with one summary line of what it
# skipped. `make data` downloads and prepares every dataset the book uses,
# through TFDS, into `TFDS_DATA_DIR` or `~/tensorflow_datasets` (preparing
# needs TensorFlow, which it installs; reading the prepared data does not).
# After that nothing is skipped. CI keeps the prepared data beside the
# project, in `../shared/tensorflow_datasets`, and there a skipped data cell
# fails the run.
#
# * **Run** a chapter: `make setup`, then open `nbs/NN_topic.ipynb` in Jupyter
#   with the `.venv` kernel.
# * **Use** the package: `pip install .` from a checkout (it is not on PyPI;
#   extras: `'.[cuda]'` for CuPy and numba-cuda, `'.[bench]'` for the PyTorch
#   benchmarks).
# * The first call of a compiled kernel takes a few seconds while Numba
#   compiles it; the CPU kernels are then cached on disk, so later runs start
#   at once.
# * `make help` lists every target, `make data` and `make book-check` (which
#   opens the built site in headless Chromium and checks its pages, math,
#   search and links) among them.
#
# Each notebook has a plain-text twin (`nbs/NN_topic.py`, jupytext percent
# format) for editing and reviewing diffs; `make sync` keeps the two in step.
#
# ## Chapter map
#
# | part | chapter | exports |
# |---|---|---|
# | 0 | Conventions: dtypes, random numbers, shapes and devices | `core` |
# | 0 | Data: real datasets, batches and synthetic sets | `data` |
# | 0 | The package's first lines | `__init__` |
# | I | 01 Foundations I: neurons and activation functions | `functional` |
# | I | 01a Foundations II: loss functions | `losses` |
# | I | 01b Foundations III: numerical gradients and gradient checking | `gradcheck` |
# | I | 02 Automatic differentiation | `autodiff` |
# | I | 03 Linear models | `linear` |
# | I | 04 Optimization algorithms | `optim` |
# | I | 05 Multilayer perceptrons | `layers` |
# | I | 05a The model API: `Sequential`, `fit`, callbacks, checkpoints | `model` |
# | I | 05b Plots for training | `viz` |
# | I | 05c Graphs of layers: functional models, shared weights, custom training steps | `merge` |
# | I | 06 Regularization, initialization, normalization | `init`, `layers` (Dropout, BatchNorm, GroupNorm, L1/L2, MaxNorm) |
# | II | 07 Convolutions: naive, im2col, Numba CPU and CUDA | `kernels.conv` |
# | II | 07a Convolution layers | `conv` |
# | II | 08 Convolutional networks | `augment` |
# | II | 08a CIFAR-10 from scratch on two cores | (experiments) |
# | III | 10 Recurrent networks and backpropagation through time | `kernels.recurrent`, `rnn` |
# | III | 11 LSTM and GRU | `kernels.recurrent`, `rnn` |
#
# Later parts (modern CNN blocks, text and word2vec, attention, autoencoders
# and VAEs, GANs, capsules, style transfer, GPU programming) follow the map in
# `DESIGN.md`.
#
# ## A taste of the package

# %%
#| hide
from fastcore.test import test_eq

# %%
import numpy as np
from dl_from_scratch.data import make_moons
from dl_from_scratch.layers import Dense
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.model import Sequential
from dl_from_scratch.optim import Adam

X, y = make_moons(1000, noise=0.1, rng=0)
model = Sequential([Dense(32, activation='tanh'), Dense(32, activation='tanh'), Dense(2)])
model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=Adam(0.01), metrics=['accuracy'])
history = model.fit(X, y, epochs=30, batch_size=32, rng=0, verbose=0)
model.summary()
print(f"training accuracy after 30 epochs: {history.history['accuracy'][-1]:.3f}")
assert history.history['accuracy'][-1] > 0.95
