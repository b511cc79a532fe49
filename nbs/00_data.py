# %% [markdown]
# # Data: real datasets, batches and synthetic sets
#
# > Loading TFDS datasets as NumPy arrays without TensorFlow, a batching iterator, and the toy sets the sources use.
#
# ## Purpose
#
# Every experiment in this book runs on data, and the data layer has three
# jobs:
#
# 1. **Real datasets as plain arrays.** MNIST, Fashion-MNIST, CIFAR-10,
#    Omniglot, Tiny Shakespeare and the IMDB movie reviews come from
#    [TensorFlow Datasets](https://www.tensorflow.org/datasets)
#    (TFDS). TFDS can read datasets prepared in the `array_record` format with
#    NumPy alone (`tfds.data_source`), so TensorFlow is never needed. `load`
#    returns images as `uint8` arrays in NHWC layout, labels as `int64`,
#    a text corpus as one `str`, and labelled texts (the reviews) as an array
#    of `str` beside their labels. Besides the datasets, a handful of
#    paintings and photographs (for neural style transfer) load with
#    `load_image` as float arrays.
# 2. **Minibatches.** `BatchIterator` slices any set of aligned arrays into
#    batches, shuffling with an explicit random generator.
# 3. **Synthetic sets** small enough to reason about: a linear-regression set,
#    XOR, two moons, the deeplearning.ai "flower", and spirals.
#
# ### Where the data comes from
#
# `load` looks in the TFDS data directory: the `data_dir` argument, else the
# environment variable `TFDS_DATA_DIR`, else `~/tensorflow_datasets`. It never
# touches the network unless you pass `download=True`. Decoding 60,000 PNG
# images through TFDS takes several seconds, so the decoded arrays are cached
# as an `.npz` file (in `~/.cache/dl_from_scratch`, or `DLFS_CACHE_DIR`) and
# later loads read that file.
#
# Reading needs no TensorFlow, but *preparing* a dataset does: TFDS's
# builders read the downloaded files and encode the images with it. `prepare`
# (and `make data`, which installs the package's `data` extra first) downloads
# and prepares every dataset of the book once, in the `array_record` format.
#
# The examples of this book that need a real dataset carry its name as an
# nbdev test flag (`#| mnist`; those that need the images of style transfer,
# `#| images`). The test run turns on the flags of the data that is
# present, so on a machine without it those examples
# are skipped, and named in a summary, rather than failing; nothing
# fabricated stands in for a real result.

# %%
#| default_exp data

# %%
#| export
from __future__ import annotations
import contextlib, hashlib, importlib.util, io, logging, os, socket, tempfile, urllib.parse, urllib.request, warnings
from pathlib import Path
import numpy as np
from tqdm.auto import tqdm
from dl_from_scratch.core import as_rng, get_dtype, check_array

# %%
#| hide
from fastcore.test import test_eq, test_fail, test_close
import time

# %% [markdown]
# ## The datasets we know
#
# Each dataset `load` knows has a *kind*: image sets have `image` and `label`
# features, text sets a single `text` feature per split (one long corpus), and
# labelled-text sets a `text` and a `label` per example (one review each), and
# Omniglot is an image set whose examples also name their *alphabet* (its
# kind `alphabet_image`; see below). Asking for anything
# else is an error that lists what is known. `BOOK_DATASETS` adds the
# datasets that later chapters read through TFDS directly; `make data`
# prepares them all.
#
# A dataset is *prepared* when its folder `NAME/[CONFIG/]VERSION` in the
# data directory holds a `dataset_info.json` and `array_record` files, the
# format TFDS reads without TensorFlow. `is_prepared` looks for exactly that,
# without importing TFDS, so it is cheap enough to decide which examples of
# the book can run.

# %%
#| export
DATASETS = {
    'mnist': 'image', 'fashion_mnist': 'image', 'cifar10': 'image', 'tiny_shakespeare': 'text',
    'imdb_reviews': 'labelled_text', 'omniglot': 'alphabet_image',
}
BOOK_DATASETS = ('mnist', 'fashion_mnist', 'cifar10', 'tiny_shakespeare', 'imdb_reviews', 'omniglot')

class DatasetNotFoundError(FileNotFoundError):
    "A known dataset that is not prepared in the data directory (and `download=False`)."

def data_dir(path=None) -> Path:
    "The TFDS data directory: `path`, else `$TFDS_DATA_DIR`, else `~/tensorflow_datasets`."
    return Path(path or os.environ.get('TFDS_DATA_DIR') or Path.home() / 'tensorflow_datasets').expanduser()

def cache_dir(path=None) -> Path:
    "Where decoded arrays are cached: `path`, else `$DLFS_CACHE_DIR`, else `~/.cache/dl_from_scratch`."
    return Path(path or os.environ.get('DLFS_CACHE_DIR') or Path.home() / '.cache' / 'dl_from_scratch').expanduser()

def _check_name(name: str) -> str:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset {name!r}; known datasets: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]

def _versions(name: str, ddir: Path) -> list[Path]:
    "Version folders of `name` in `ddir`: NAME/VERSION or NAME/CONFIG/VERSION, those with a dataset_info.json."
    return sorted(p.parent for p in [*ddir.glob(f'{name}/*/dataset_info.json'), *ddir.glob(f'{name}/*/*/dataset_info.json')])

def is_prepared(name: str, data_dir=None) -> bool:
    "Whether dataset `name` is prepared in the `array_record` format under `data_dir` (default as `data_dir()`)."
    return any(any(v.glob('*.array_record*')) for v in _versions(name, globals()['data_dir'](data_dir)))

# %%
test_fail(lambda: _check_name('imagenet'), contains='known datasets: cifar10, fashion_mnist, imdb_reviews, mnist, omniglot, tiny_shakespeare')
test_eq(data_dir('/x'), Path('/x'))
with tempfile.TemporaryDirectory() as d:
    v = Path(d) / 'imdb_reviews' / 'plain_text' / '1.0.0'; v.mkdir(parents=True)
    (v / 'dataset_info.json').write_text('{}')
    test_eq(is_prepared('imdb_reviews', d), False)         # described, but no records: not prepared
    (v / 'imdb_reviews-train.array_record-00000-of-00001').touch()
    test_eq((is_prepared('imdb_reviews', d), is_prepared('mnist', d)), (True, False))

# %% [markdown]
# ## Writing a cache file atomically
#
# A process killed half-way through `np.savez` leaves a truncated file, and a
# truncated cache is worse than none: the next load would fail, or worse,
# read garbage. So we write to a temporary file in the same directory and
# `os.replace` it onto the final name. On POSIX and Windows that rename is
# atomic: readers see either the old file or the complete new one.

# %%
#| export
def atomic_savez(path, **arrays) -> Path:
    "Save `arrays` to the `.npz` file `path` atomically: a crash mid-write leaves any old file intact."
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f:
            np.savez(f, **arrays)
            f.flush(); os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp): os.remove(tmp)
        raise
    return path

# %%
with tempfile.TemporaryDirectory() as d:
    p = atomic_savez(Path(d) / 'a.npz', x=np.arange(3))
    test_eq(np.load(p)['x'], np.arange(3))
    class Boom:            # an array-like whose conversion fails mid-save
        def __array__(self, *a, **k): raise RuntimeError('disk full')
    test_fail(lambda: atomic_savez(p, x=Boom()), contains='disk full')
    test_eq(np.load(p)['x'], np.arange(3))               # the old file survives
    test_eq(sorted(os.listdir(d)), ['a.npz'])             # and no temporary is left behind

# %% [markdown]
# ## Reading through TFDS
#
# `tfds.data_source` gives random access to the examples of a prepared split.
# We read them in chunks of 1,000 (one `__getitems__` call each, which lets
# TFDS batch the file reads) and stack them into arrays. A dataset missing
# from the data directory raises `DatasetNotFoundError` before TFDS is even
# imported; the message names the directory searched and says how to get the
# data. TFDS logs through `absl` while it reads (that OpenCV would decode
# faster than PIL; that its own test metadata lacks a `dataset_info.json`):
# advice for TFDS's developers, not for us, so those calls run with its
# warnings off.

# %%
#| export
def _not_found(name, ddir):
    found = _versions(name, ddir)
    why = (f"{found[-1]} holds no array_record files (prepared in another file format?)" if found else
           f"no {ddir / name} folder")
    return DatasetNotFoundError(
        f"dataset {name!r} is not prepared in {ddir}: {why}. Run `make data` (or call "
        f"load({name!r}, ..., download=True) with the package's `data` extra installed) to download and prepare it, "
        f"or point TFDS_DATA_DIR (or data_dir=) at a folder that holds it prepared.")

@contextlib.contextmanager
def quiet_tfds():
    "Silence TFDS's absl warnings (advice on OpenCV, missing metadata of its test fixtures) for the block."
    log = logging.getLogger('absl'); level = log.level
    log.setLevel(logging.ERROR)
    try: yield
    finally: log.setLevel(level)

def _read_tfds(name: str, split: str, ddir: Path, progress: bool = True) -> dict:
    "Decode one split of a TFDS dataset into NumPy arrays (`x`, `y`; `text` or `utf8`, `offsets`, `y` for text)."
    import tensorflow_datasets as tfds    # imported here: it is slow to import and only needed on a cache miss
    with quiet_tfds():
        src = tfds.data_source(name, split=split, data_dir=str(ddir), download=False)
        return _decode(name, split, src, progress)

def _decode(name, split, src, progress):
    "Every example of the data source `src`, read in chunks and stacked into arrays (or joined into one text)."
    n, step = len(src), 1000
    def get(idx):
        try: return src.__getitems__(idx)       # one batched read per chunk
        except (AttributeError, TypeError): return [src[i] for i in idx]   # sources without batched reads (mocks)
    examples = []
    with tqdm(total=n, desc=f'decoding {name}[{split}]', unit='ex', disable=not progress, leave=False) as bar:
        for s in range(0, n, step):
            examples += get(list(range(s, min(n, s + step))))
            bar.update(min(n, s + step) - s)
    as_str = lambda t: t.decode('utf-8') if isinstance(t, bytes) else str(t)
    if DATASETS[name] == 'text':
        return {'text': np.array(''.join(as_str(e['text']) for e in examples))}
    if DATASETS[name] == 'labelled_text':
        return {**_pack_texts([as_str(e['text']) for e in examples]),
                'y': np.array([int(e['label']) for e in examples], dtype=np.int64)}
    y = np.array([int(e['label']) for e in examples], dtype=np.int64)
    if DATASETS[name] == 'alphabet_image':
        return {'x': np.stack([omniglot_ink(e['image']) for e in examples]), 'y': y,
                'alphabet': np.array([int(e['alphabet']) for e in examples], dtype=np.int64)}
    return {'x': np.stack([np.asarray(e['image'], dtype=np.uint8) for e in examples]), 'y': y}

# %% [markdown]
# Labelled texts need another layout. A NumPy array of `str` has one fixed
# width, that of its longest element (4 bytes a character): the 25,000 IMDB
# training reviews, the longest 13,704 characters long, would take 1.4 GB.
# So the reviews are stored the way a compiler stores a string table: all
# of them UTF-8 encoded back to back in one `uint8` array, and the `N + 1`
# byte offsets where each begins (and the last ends). Unpacked, they come
# back as an object array of `str`, which indexes like the labels beside it.

# %%
#| export
def _pack_texts(texts) -> dict:
    "A list of N `str` -> {'utf8': uint8 (total bytes,), 'offsets': int64 (N + 1,)}, text i = utf8[offsets[i]:offsets[i+1]]."
    encoded = [t.encode('utf-8') for t in texts]
    offsets = np.zeros(len(encoded) + 1, np.int64)
    np.cumsum([len(b) for b in encoded], out=offsets[1:])
    return {'utf8': np.frombuffer(b''.join(encoded), np.uint8), 'offsets': offsets}

def _unpack_texts(utf8, offsets) -> np.ndarray:
    "Inverse of `_pack_texts`: an object array (N,) of `str`."
    raw = utf8.tobytes()
    out = np.empty(len(offsets) - 1, dtype=object)
    out[:] = [raw[a:b].decode('utf-8') for a, b in zip(offsets[:-1].tolist(), offsets[1:].tolist())]
    return out

# %%
texts = ['Great film!', '', 'Très émouvant — 10/10', 'x' * 3]
packed = _pack_texts(texts)
test_eq((packed['utf8'].dtype, packed['offsets'].tolist()), (np.uint8, [0, 11, 11, 36, 39]))   # é, è: 2 bytes; —: 3
test_eq(_unpack_texts(**packed).tolist(), texts)

# %% [markdown]
# Omniglot (B. Lake, R. Salakhutdinov and J. Tenenbaum, 2015) stores its
# handwritten characters as black-and-white PNGs of 105×105 pixels, with
# three equal channels. How they decode depends on the decoder: PIL (which
# TFDS uses without OpenCV) gives 0 for ink and 1 for paper, TensorFlow 0
# and 255. Only `img > 0` (paper) means the same either way, so that is what
# we read, and we store one channel in the convention of MNIST: **255 = ink,
# 0 = paper**, `uint8` of shape (105, 105, 1). A network then sees white
# strokes on black whichever decoder ran.

# %%
#| export
def omniglot_ink(image) -> np.ndarray:
    "An Omniglot image (105, 105, 3) decoded as 0/1 (PIL) or 0/255 (TensorFlow) -> uint8 (105, 105, 1), 255 = ink."
    paper = np.asarray(image)[..., :1] > 0
    return np.where(paper, 0, 255).astype(np.uint8)

# %%
stroke = np.ones((105, 105, 3), np.uint8); stroke[50, 10:90] = 0           # a horizontal stroke, as PIL decodes it
test_eq(omniglot_ink(stroke), omniglot_ink(stroke * 255))                  # TensorFlow's 0/255: the same array
test_eq((omniglot_ink(stroke).shape, omniglot_ink(stroke)[50, 10:90, 0].tolist(), int(omniglot_ink(stroke).sum())),
        ((105, 105, 1), [255] * 80, 255 * 80))

# %% [markdown]
# ## `load`
#
# A cache file is trusted only when it holds what a load returns: the keys of
# the dataset's kind, and as many labels as images. Anything else (a
# truncated file, a file from another program) is decoded again and
# overwritten, so the cache heals itself.

# %%
#| export
def _read_cache(path: Path, kind: str) -> dict | None:
    "The arrays of a cache file, or None when it is missing, unreadable or inconsistent."
    if not path.exists(): return None
    try:
        with np.load(path) as f: arrays = {k: f[k] for k in f.files}
    except Exception: return None
    if kind == 'text': return arrays if set(arrays) == {'text'} else None
    if kind == 'alphabet_image':
        ok = (set(arrays) == {'x', 'y', 'alphabet'} and arrays['x'].ndim == 4 and arrays['y'].ndim == 1
              and len(arrays['x']) == len(arrays['y']) == len(arrays['alphabet']))
        return arrays if ok else None
    if kind == 'labelled_text':
        ok = (set(arrays) == {'utf8', 'offsets', 'y'} and arrays['offsets'].ndim == 1 and arrays['y'].ndim == 1
              and len(arrays['offsets']) == len(arrays['y']) + 1 and arrays['offsets'][-1] == len(arrays['utf8']))
        return arrays if ok else None
    ok = set(arrays) == {'x', 'y'} and arrays['x'].ndim == 4 and arrays['y'].ndim == 1 and len(arrays['x']) == len(arrays['y'])
    return arrays if ok else None

def _mocked() -> bool:
    "Whether `tfds.testing.mock_data` is active: it swaps TFDS's reader for one that fabricates examples."
    import sys
    mod = sys.modules.get('tensorflow_datasets.core.dataset_builder')
    return mod is not None and mod.DatasetBuilder.as_data_source.__module__ != mod.__name__

def _arrays(name, split, data_dir, cache, cache_dir, download, progress) -> dict:
    "The decoded arrays of a split, from the cache when it holds them, else from TFDS (then cached)."
    kind = _check_name(name)
    if not isinstance(split, str) or not split.isidentifier():
        raise ValueError(f"split must be a plain split name such as 'train' or 'test', got {split!r}")
    ddir = globals()['data_dir'](data_dir)
    path = globals()['cache_dir'](cache_dir) / f'{name}-{split}.npz'
    arrays = _read_cache(path, kind) if cache else None
    if arrays is None:
        if not is_prepared(name, ddir) and not _mocked():
            if not download: raise _not_found(name, ddir)
            prepare([name], ddir)
        arrays = _read_tfds(name, split, ddir, progress)
        if cache: atomic_savez(path, **arrays)
    return arrays

def load(name: str, split: str = 'train', *, data_dir: str | os.PathLike | None = None,
         cache: bool = True, cache_dir: str | os.PathLike | None = None,
         download: bool = False, progress: bool = True):
    """Load a split of a known dataset as NumPy arrays.

    Returns `(x, y)` for image datasets, with `x` uint8 of shape (N, H, W, C)
    (NHWC) and `y` int64 of shape (N,); a `str` for text datasets; and
    `(texts, y)` for labelled-text datasets (`imdb_reviews`), with `texts` an
    object array (N,) of `str` and `y` int64 (N,). Omniglot's `x` is
    (N, 105, 105, 1) with 255 = ink and 0 = paper, `y` the character (0-1622);
    `load_omniglot_alphabets` gives the alphabet of each example.

    Reads the prepared dataset from `data_dir` (default `$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets`) through `tfds.data_source`; no TensorFlow needed.
    Decoded arrays are cached in `cache_dir` as `NAME-SPLIT.npz` (written atomically).
    Touches the network only when `download=True`, which prepares a missing
    dataset with `prepare` (and so needs TensorFlow, the `data` extra)."""
    arrays = _arrays(name, split, data_dir, cache, cache_dir, download, progress)
    kind = DATASETS[name]
    if kind == 'text': return str(arrays['text'])
    if kind == 'labelled_text': return _unpack_texts(arrays['utf8'], arrays['offsets']), arrays['y']
    return arrays['x'], arrays['y']

def load_omniglot_alphabets(split: str = 'train', *, data_dir: str | os.PathLike | None = None,
                            cache: bool = True, cache_dir: str | os.PathLike | None = None,
                            download: bool = False, progress: bool = True) -> np.ndarray:
    """The alphabet (int64 (N,), 0-49) of each Omniglot example of `split`, aligned with `load('omniglot', split)`.

    `train` holds the 30 "background" alphabets, `test` the 20 "evaluation" ones.
    The arguments are `load`'s, and the two share one cache file."""
    return _arrays('omniglot', split, data_dir, cache, cache_dir, download, progress)['alphabet']

def label_names(name: str, feature: str = 'label', data_dir: str | os.PathLike | None = None) -> list[str]:
    "The names of the values of a class feature of a prepared dataset (TFDS's `FEATURE.labels.txt`), index = value."
    _check_name(name)
    ddir = globals()['data_dir'](data_dir)
    files = [v / f'{feature}.labels.txt' for v in _versions(name, ddir) if (v / f'{feature}.labels.txt').exists()]
    if not files:
        if not is_prepared(name, ddir): raise _not_found(name, ddir)
        raise ValueError(f"dataset {name!r} has no class feature {feature!r} with names in {ddir}")
    return files[-1].read_text(encoding='utf-8').splitlines()

# %% [markdown]
# Tests that must run anywhere use TFDS's mock data, which fabricates random
# examples with the right features, so they exercise the whole decoding path
# without any files:

# %%
import tensorflow_datasets as tfds
with tempfile.TemporaryDirectory() as d, tfds.testing.mock_data(num_examples=7):
    x, y = load('mnist', 'train', cache_dir=d, progress=False)
    test_eq((x.shape, x.dtype, y.shape, y.dtype), ((7, 28, 28, 1), np.uint8, (7,), np.int64))
    assert (Path(d) / 'mnist-train.npz').exists()
    x2, y2 = load('mnist', 'train', cache_dir=d)           # second load: from the cache
    test_eq(x2, x); test_eq(y2, y)
    assert isinstance(load('tiny_shakespeare', 'train', cache=False, progress=False), str)
    texts, y = load('imdb_reviews', 'test', cache_dir=d, progress=False)
    test_eq((texts.shape, texts.dtype, type(texts[0]), y.dtype), ((7,), object, str, np.int64))
    test_eq((load('imdb_reviews', 'test', cache_dir=d)[0] == texts).all(), True)    # and back from the cache
test_fail(lambda: load('imagenet'), contains='known datasets')
test_fail(lambda: load('mnist', 'train', data_dir='/nonexistent', cache=False), contains='/nonexistent: no /nonexistent/mnist folder')
with tempfile.TemporaryDirectory() as d:              # a cache whose x and y disagree is rebuilt, not returned
    atomic_savez(Path(d) / 'mnist-train.npz', x=np.zeros((5, 28, 28, 1), np.uint8), y=np.zeros(4, np.int64))
    with tfds.testing.mock_data(num_examples=3):
        x, y = load('mnist', 'train', cache_dir=d, progress=False)
    test_eq((len(x), len(y)), (3, 3))

# %% [markdown]
# TFDS's mock data fabricates examples from a dataset's metadata, and its
# own test metadata lacks Omniglot's splits; a `dataset_info.json` naming them
# is all it needs. The fabricated pixels are random bytes, so the strokes
# come out as 255 wherever the mock drew a 0:

# %%
with tempfile.TemporaryDirectory() as d:
    meta = Path(d) / 'meta' / 'omniglot' / '3.0.0'; meta.mkdir(parents=True)
    (meta / 'dataset_info.json').write_text('{"name": "omniglot", "version": "3.0.0", "splits": ['
                                            '{"name": "train", "shardLengths": ["6"]}, {"name": "test", "shardLengths": ["6"]}]}')
    with tfds.testing.mock_data(num_examples=6, data_dir=str(meta.parents[1])):
        x, y = load('omniglot', 'test', cache_dir=d, progress=False)
    test_eq((x.shape, x.dtype, y.dtype), ((6, 105, 105, 1), np.uint8, np.int64))
    test_eq(set(np.unique(x)) <= {0, 255}, True)
    with np.load(Path(d) / 'omniglot-test.npz') as f:     # the cache keeps the alphabets for load_omniglot_alphabets
        test_eq((sorted(f.files), f['alphabet'].shape, f['alphabet'].dtype), (['alphabet', 'x', 'y'], (6,), np.int64))

# %% [markdown]
# With the real data (prepared under `TFDS_DATA_DIR`), the first load decodes
# and caches, and the second reads the cache:

# %%
#| mnist
xtr, ytr = load('mnist', 'train'); xte, yte = load('mnist', 'test')
test_eq((len(xtr), len(xte)), (60000, 10000))
print(f"MNIST train {xtr.shape} {xtr.dtype}, labels {ytr.dtype}; test-split pixel mean {xte.mean()/255:.4f} (published 0.1325)")
test_close(xte.mean() / 255, 0.1325, eps=5e-4)

# %% [markdown]
# The IMDB reviews (A. Maas et al., 2011) come as texts and labels, 12,500
# negative (0) and 12,500 positive (1) in each split:

# %%
#| imdb_reviews
rtr, ltr = load('imdb_reviews', 'train'); rte, lte = load('imdb_reviews', 'test')
test_eq((len(rtr), len(rte), np.bincount(ltr).tolist(), np.bincount(lte).tolist()), (25000, 25000, [12500] * 2, [12500] * 2))
print(f"IMDB train {len(rtr):,} reviews, {sum(map(len, rtr)):,} characters; longest {max(map(len, rtr)):,}")
print(f"label {ltr[0]}: {rtr[0][:150]}...")

# %% [markdown]
# The real Omniglot: the "background" set (`train`, 30 alphabets, 964
# characters) and the "evaluation" set (`test`, 20 alphabets, 659
# characters), each character drawn once by 20 people. A character's strokes
# cover a small part of its square:

# %%
#| omniglot
for split, n, chars, alphabets in (('train', 19280, 964, 30), ('test', 13180, 659, 20)):
    xo, yo = load('omniglot', split); ao = load_omniglot_alphabets(split)
    test_eq((xo.shape, len(np.unique(yo)), len(np.unique(ao)), set(np.bincount(yo)[np.unique(yo)])),
            ((n, 105, 105, 1), chars, alphabets, {20}))
    print(f"omniglot[{split}]: {xo.shape}, {len(np.unique(yo))} characters in {len(np.unique(ao))} alphabets, "
          f"ink covers {(xo == 255).mean():.1%} of the pixels")
names = label_names('omniglot', 'alphabet')
print(f"{len(names)} alphabets, e.g. {names[ao[0]]!r} (test); character {yo[0]}: {label_names('omniglot')[yo[0]]!r}")

# %% [markdown]
# How much the cache saves: a first load into an empty cache decodes every
# PNG; the second reads the `.npz`.

# %%
#| slow
#| mnist
with tempfile.TemporaryDirectory() as d:
    t0 = time.perf_counter(); load('mnist', 'train', cache_dir=d, progress=False); t1 = time.perf_counter()
    load('mnist', 'train', cache_dir=d); t2 = time.perf_counter()
print(f"MNIST train: first load (decode + cache) {t1-t0:.2f} s, cached load {t2-t1:.3f} s")

# %% [markdown]
# ## Getting the data: `prepare`
#
# `prepare` downloads and prepares datasets through TFDS, in the
# `array_record` format, into the data directory. TFDS's builders read the
# raw files and encode the images with TensorFlow, so this one step needs it
# (`pip install -e '.[data]'`; `make data` installs it and prepares the
# whole list). Everything after it (`load`, the chapters) runs without.
#
# Two failures are caught before anything is downloaded, because each would
# otherwise surface late and garbled: without TensorFlow, TFDS fails half-way
# through a download; without the network, its downloader retries each file
# ten times with growing pauses. So `prepare` first checks that the hosts of
# the dataset's files (TFDS registers their URLs with their checksums) answer
# within a few seconds and that TensorFlow can be imported, and says what to
# do when they do not.

# %%
#| export
class DatasetDownloadError(RuntimeError):
    "A dataset could not be downloaded or prepared; the message says what to do."

def _download_hosts(name: str) -> list[tuple[str, int]]:
    "(host, port) of each file TFDS downloads to build dataset `name`, from its registered checksums."
    import tensorflow_datasets as tfds
    out = set()
    with quiet_tfds(): urls = tfds.builder_cls(name).url_infos or {}
    for url in urls:
        u = urllib.parse.urlsplit(url)
        out.add((u.hostname, u.port or (443 if u.scheme == 'https' else 80)))
    return sorted(out)

def _unreachable(hosts, timeout: float) -> list[str]:
    "The hosts among `hosts` ((name, port) pairs) that accept no connection within `timeout` seconds, with why."
    bad = []
    for host, port in hosts:
        try: socket.create_connection((host, port), timeout=timeout).close()
        except socket.gaierror: bad.append(f"{host} (name not resolved)")
        except TimeoutError: bad.append(f"{host}:{port} (no answer in {timeout:g} s)")
        except OSError as e: bad.append(f"{host}:{port} ({e.strerror or type(e).__name__})")
    return bad

def prepare(names=BOOK_DATASETS, data_dir=None, timeout: float = 5.0) -> list[str]:
    """Download and prepare the datasets `names` (default: every one the book uses) in `data_dir`.

    Skips those already prepared; returns the names it prepared. Raises
    `DatasetDownloadError` before downloading anything when TensorFlow is
    missing or a download host does not answer within `timeout` seconds."""
    ddir = globals()['data_dir'](data_dir)
    names = [names] if isinstance(names, str) else list(names)
    for n in names:
        if n not in BOOK_DATASETS: raise ValueError(f"unknown dataset {n!r}; the book uses: {', '.join(BOOK_DATASETS)}")
    todo = [n for n in names if not is_prepared(n, ddir)]
    if not todo: return []
    check_downloads(todo, timeout)
    if importlib.util.find_spec('tensorflow') is None:
        raise DatasetDownloadError(
            f"preparing {', '.join(todo)} needs TensorFlow (TFDS's builders read and encode with it; reading "
            f"afterwards does not): pip install -e '.[data]' from the checkout, or run `make data`, which does.")
    import tensorflow_datasets as tfds
    with quiet_tfds():
        for n in todo:
            tfds.builder(n, data_dir=str(ddir), file_format='array_record').download_and_prepare()
    return todo

def check_downloads(names, timeout: float = 5.0):
    "Raise `DatasetDownloadError` unless every host that datasets `names` download from answers within `timeout` s."
    bad = _unreachable(sorted({h for n in names for h in _download_hosts(n)}), timeout)
    if bad:
        raise DatasetDownloadError(
            f"cannot download {', '.join(names)}: no answer from {', '.join(bad)}. Preparing the data needs the "
            f"network. Offline, copy a prepared tensorflow_datasets folder (CI keeps one in "
            f"../shared/tensorflow_datasets beside the checkout) and point TFDS_DATA_DIR at it.")

# %%
test_eq(_download_hosts('mnist'), [('storage.googleapis.com', 443)])     # from TFDS's registered URLs
with socket.socket() as s:
    s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]                # a port that nobody listens on
test_eq(_unreachable([('127.0.0.1', port)], timeout=1), [f'127.0.0.1:{port} (Connection refused)'])
with tempfile.TemporaryDirectory() as d:
    v = Path(d) / 'mnist' / '3.0.1'; v.mkdir(parents=True)
    (v / 'dataset_info.json').write_text('{}'); (v / 'mnist-train.array_record-00000-of-00001').touch()
    test_eq(prepare('mnist', d), [])                                    # prepared already: nothing to fetch
test_fail(lambda: prepare(['imagenet']), contains='the book uses: mnist, fashion_mnist')

# %% [markdown]
# ## Images: paintings and photographs
#
# Neural style transfer needs a few single images rather than a dataset:
# three public-domain paintings for the styles and two CC0 photographs for
# the contents. Each file was made from a public source by one fixed recipe:
# converted to RGB, shrunk with LANCZOS so that its long side is at most 512
# pixels (never enlarged), and saved as JPEG of quality 90 (Pillow 13.0.0).
# `IMAGES` names, for each, its source with that file's SHA-256, the SHA-256
# of the JPEG the recipe made, and the licence.
#
# `load_image` looks for the files in `images_dir`, else `$DLFS_IMAGES_DIR`,
# else a folder `images` beside the TFDS data directory (where it holds the
# book's images: CI keeps `../shared/images` beside
# `../shared/tensorflow_datasets`), else `~/.cache/dl_from_scratch/images`.
# `download=True` (and `make data`) fetches a missing image's source, checks
# its SHA-256, and applies the recipe. Another version of Pillow may encode
# the JPEG with other bytes; that is reported as a warning, since the
# downloaded source itself was verified.

# %%
#| export
_PD = "public domain (artist died over 95 years ago; published before 1930; a faithful reproduction of a 2-D work)"
IMAGES = {
    'starry_night': dict(
        file='starry_night.jpg', sha256='4fe1944f2212fe99d35ce394b9a2d569d5aa502fa673a758393bbff4f94291eb',
        url='https://raw.githubusercontent.com/jcjohnson/neural-style/07c4b8299f8fbdafec0c514fc820ff1d7ff62e46/'
            'examples/inputs/starry_night_google.jpg',
        source_sha256='c31741a09141c2e2d07fc7aa6bdf135c369b804f9433e43fa3ceac19386d1ee6',
        title='The Starry Night, Vincent van Gogh, 1889', licence=_PD),
    'great_wave': dict(
        file='great_wave.jpg', sha256='5fb186e59aa47445a35267bd9c1edc1576704cb0968ff3f266705d2afc3949ec',
        url='https://raw.githubusercontent.com/lengstrom/fast-style-transfer/0d3d981f7ab948253d355585bdbdfa914247b4d0/'
            'examples/style/wave.jpg',
        source_sha256='54f19686bea5117c0bb68ce4425dbed4efafa3e8d7cafe35f0fae80b8223f4be',
        title='The Great Wave off Kanagawa, Katsushika Hokusai, about 1831', licence=_PD),
    'monet_cliff_walk_pourville': dict(
        file='monet_cliff_walk_pourville.jpg', sha256='579d84b8af6e5ee5bf0a58b1542950ed3753d208f5d63d84720e2a04a8bfdd76',
        url='https://raw.githubusercontent.com/Wang-Jasper/Neural-Style-Transfer/8cab809bb35d3cb000ab3f00c07c8a4e54e6eef7/'
            'style/monet.jpg',
        source_sha256='5344922b9c17cb59d21ed91c958ba626461882254a88736b2e4033cdbe64ff97',
        title='The Cliff Walk at Pourville, Claude Monet, 1882', licence=_PD),
    'chelsea_cat': dict(
        file='chelsea_cat.jpg', sha256='2c0357a57121a80b7145db42b093f743c9a0405e33f9e48fd102319a6ce3af89',
        url='https://raw.githubusercontent.com/scikit-image/scikit-image/v0.26.0/skimage/data/chelsea.png',
        source_sha256='596aa1e7cb875eb79f437e310381d26b338a81c2da23439704a73c4651e8c4bb',
        title='Chelsea the cat, Stefan van der Walt (scikit-image sample data)',
        licence='No copyright restrictions. CC0 by the photographer (Stefan van der Walt).'),
    'coffee': dict(
        file='coffee.jpg', sha256='a840b5683a576a77d120d1617c341b09aea8e568b2e14234bed16b549261d85e',
        url='https://raw.githubusercontent.com/scikit-image/scikit-image/v0.26.0/skimage/data/coffee.png',
        source_sha256='cc02f8ca188b167c775a7101b5d767d1e71792cf762c33d6fa15a4599b5a8de7',
        title='Coffee cup, Rachel Michetti (scikit-image sample data)',
        licence='No copyright restrictions. CC0 by the photographer (Rachel Michetti).'),
}
IMAGE_LONG_SIDE, IMAGE_JPEG_QUALITY = 512, 90       # the recipe that made the files from their sources

def images_dir(path=None) -> Path:
    """Where the book's images are: `path`, else `$DLFS_IMAGES_DIR`, else `images` beside the TFDS data
    directory when it holds any of them, else `~/.cache/dl_from_scratch/images`."""
    if path or os.environ.get('DLFS_IMAGES_DIR'): return Path(path or os.environ['DLFS_IMAGES_DIR']).expanduser()
    beside = data_dir().parent / 'images'
    if any((beside / m['file']).exists() for m in IMAGES.values()): return beside
    return cache_dir() / 'images'

def _check_image_name(name: str) -> dict:
    if name not in IMAGES: raise ValueError(f"unknown image {name!r}; known images: {', '.join(IMAGES)}")
    return IMAGES[name]

def _sha256(b: bytes) -> str: return hashlib.sha256(b).hexdigest()

def _resize_long_side(img, size: int):
    "A PIL image resized with LANCZOS so that its long side is `size` pixels (the other side rounded)."
    from PIL import Image
    w, h = img.size
    s = size / max(w, h)
    return img.resize((max(1, round(w * s)), max(1, round(h * s))), Image.LANCZOS)

def image_from_source(source: bytes) -> bytes:
    "The recipe: a source image file -> RGB, long side shrunk to at most 512 px with LANCZOS -> JPEG bytes, quality 90."
    from PIL import Image
    img = Image.open(io.BytesIO(source)).convert('RGB')
    if max(img.size) > IMAGE_LONG_SIDE: img = _resize_long_side(img, IMAGE_LONG_SIDE)
    out = io.BytesIO(); img.save(out, format='JPEG', quality=IMAGE_JPEG_QUALITY)
    return out.getvalue()

def atomic_write_bytes(path, b: bytes) -> Path:
    "Write `b` to `path` atomically (a temporary file in the same folder, then `os.replace`)."
    path = Path(path); path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + '.', suffix='.tmp')
    try:
        with os.fdopen(fd, 'wb') as f: f.write(b); f.flush(); os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp): os.remove(tmp)
        raise
    return path

def download_image(name: str, images_dir=None, timeout: float = 30.0) -> Path:
    """Fetch image `name`'s source, check its SHA-256, make the book's file from it and write it atomically.

    Raises `DatasetDownloadError` when the source cannot be fetched or its SHA-256 differs (nothing is
    written then); warns when the JPEG made differs from the book's bytes (another Pillow or libjpeg)."""
    meta = _check_image_name(name)
    try:
        with urllib.request.urlopen(meta['url'], timeout=timeout) as r: source = r.read()
    except OSError as e:
        raise DatasetDownloadError(
            f"cannot download image {name!r} from {meta['url']}: {getattr(e, 'reason', None) or e}. Fetching the images "
            f"needs the network; offline, copy the book's images folder and point DLFS_IMAGES_DIR at it.") from None
    if _sha256(source) != meta['source_sha256']:
        raise DatasetDownloadError(f"image {name!r} downloaded from {meta['url']} has SHA-256 {_sha256(source)}, "
                                   f"expected {meta['source_sha256']}; nothing was written")
    jpeg = image_from_source(source)
    if _sha256(jpeg) != meta['sha256']:
        import PIL
        warnings.warn(f"{meta['file']}: the verified source re-encoded with Pillow {PIL.__version__} gives SHA-256 "
                      f"{_sha256(jpeg)}, not the book's {meta['sha256']} (made with Pillow 13.0.0); the pixels may "
                      f"differ slightly", stacklevel=2)
    return atomic_write_bytes(globals()['images_dir'](images_dir) / meta['file'], jpeg)

def fetch_images(names=None, images_dir=None, timeout: float = 30.0) -> list[str]:
    "Download the images `names` (default all of `IMAGES`) that are missing from `images_dir`; returns those fetched."
    d = globals()['images_dir'](images_dir)
    todo = [n for n in (names or IMAGES) if not (d / _check_image_name(n)['file']).exists()]
    for n in tqdm(todo, desc='images', leave=False, disable=len(todo) < 2): download_image(n, d, timeout)
    return todo

def images_available(images_dir=None) -> bool:
    "Whether every image of `IMAGES` is in `images_dir` (default as `images_dir()`)."
    d = globals()['images_dir'](images_dir)
    return all((d / m['file']).exists() for m in IMAGES.values())

def load_image(name: str, size: int | None = None, *, images_dir=None, download: bool = False) -> np.ndarray:
    """One of the book's images (see `IMAGES`) as float32 (H, W, 3) in [0, 1].

    `size`: resize (LANCZOS) so that the long side is `size` pixels, the aspect ratio kept; None keeps the
    file's size (long side 512 or less). A missing file raises `DatasetNotFoundError` unless `download=True`."""
    from PIL import Image
    meta = _check_image_name(name)
    if size is not None and (isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1):
        raise ValueError(f"size must be a positive number of pixels or None, got {size!r}")
    path = globals()['images_dir'](images_dir) / meta['file']
    if not path.exists():
        if not download:
            raise DatasetNotFoundError(
                f"image {name!r} is not in {path.parent} (no {meta['file']}). Run `make data` (or call "
                f"load_image({name!r}, download=True)) to download it, or point DLFS_IMAGES_DIR (or images_dir=) at a "
                f"folder that holds the book's images.")
        download_image(name, path.parent)
    with Image.open(path) as f: img = f.convert('RGB')
    if size is not None: img = _resize_long_side(img, int(size))
    return np.asarray(img, dtype=np.float32) / 255

DATA_FLAGS = (*BOOK_DATASETS, 'images')     # the test flags of cells that need data: each dataset, and the images

def is_available(flag: str) -> bool:
    "Whether the data behind test flag `flag` (a dataset of `BOOK_DATASETS`, or 'images') is here."
    if flag == 'images': return images_available()
    if flag not in BOOK_DATASETS: raise ValueError(f"unknown data flag {flag!r}; known: {', '.join(DATA_FLAGS)}")
    return is_prepared(flag)

# %%
with tempfile.TemporaryDirectory() as d:
    test_fail(lambda: load_image('starry_night', images_dir=d), contains='Run `make data`')
    test_fail(lambda: load_image('mona_lisa', images_dir=d), contains='known images: starry_night, great_wave')
    rng = np.random.default_rng(0)                          # a made-up "source": the recipe and the loader on it
    src = io.BytesIO(); __import__('PIL.Image').Image.fromarray(rng.integers(0, 256, (600, 900, 3), np.uint8)).save(src, 'PNG')
    atomic_write_bytes(Path(d) / 'coffee.jpg', image_from_source(src.getvalue()))
    test_eq(load_image('coffee', images_dir=d).shape, (341, 512, 3))       # shrunk to a long side of 512, never more
    im = load_image('coffee', 100, images_dir=d)
    test_eq((im.shape, im.dtype, 0 <= im.min(), im.max() <= 1), ((67, 100, 3), np.float32, True, True))
    test_eq(load_image('coffee', 1024, images_dir=d).shape, (682, 1024, 3))   # `size` may enlarge (from the 512 x 341 file)
    test_fail(lambda: load_image('coffee', 0, images_dir=d), contains='positive number of pixels')

# %% [markdown]
# With the book's images present, each file is the one the table describes:

# %%
#| images
for name, meta in IMAGES.items():
    b = (images_dir() / meta['file']).read_bytes()
    test_eq(_sha256(b), meta['sha256'])
    print(f"{meta['file']:32s} {load_image(name).shape}  {meta['title']}")
test_eq(load_image('starry_night', 256).shape, (203, 256, 3))

# %% [markdown]
# ## Minibatches
#
# Stochastic gradient descent visits the data in random minibatches. The
# iterator below draws a fresh permutation from its generator at the start of
# every pass, so two iterators built with equal seeds visit the data in the
# same order, and different epochs visit it in different orders. `drop_last`
# drops a final short batch (useful when a layer, like BatchNorm, dislikes
# tiny batches).

# %%
#| export
class BatchIterator:
    """Iterate over aligned arrays in minibatches.

    `arrays`: any number of arrays with the same first dimension N.
    Yields tuples of batches (a single array when one array was given), each
    of first dimension `batch_size` (the last may be smaller unless `drop_last`)."""
    def __init__(self, *arrays, batch_size: int = 32, shuffle: bool = False, rng=None, drop_last: bool = False):
        if not arrays: raise ValueError("BatchIterator expected at least one array, got none")
        n = len(arrays[0])
        for i, a in enumerate(arrays):
            if len(a) != n:
                raise ValueError(f"BatchIterator expected arrays of equal length {n}, got length {len(a)} for array {i}")
        if not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.arrays, self.n, self.batch_size = arrays, n, int(batch_size)
        self.shuffle, self.rng, self.drop_last = shuffle, as_rng(rng), drop_last

    def __len__(self) -> int:
        return self.n // self.batch_size if self.drop_last else -(-self.n // self.batch_size)

    def __iter__(self):
        order = self.rng.permutation(self.n) if self.shuffle else None
        for b in range(len(self)):
            sl = slice(b * self.batch_size, min(self.n, (b + 1) * self.batch_size))
            idx = order[sl] if order is not None else sl
            batch = tuple(a[idx] for a in self.arrays)
            yield batch[0] if len(batch) == 1 else batch

# %%
X, Y = np.arange(10).reshape(10, 1), np.arange(10)
it = BatchIterator(X, Y, batch_size=4)
test_eq(len(it), 3); test_eq([len(y) for _, y in it], [4, 4, 2])
test_eq(len(BatchIterator(X, batch_size=4, drop_last=True)), 2)
a = np.concatenate([y for _, y in BatchIterator(X, Y, batch_size=3, shuffle=True, rng=0)])
b = np.concatenate([y for _, y in BatchIterator(X, Y, batch_size=3, shuffle=True, rng=0)])
test_eq(a, b); test_eq(sorted(a), list(range(10))); assert (a != np.arange(10)).any()
it = BatchIterator(X, Y, batch_size=3, shuffle=True, rng=0)
e1, e2 = [np.concatenate([y for _, y in it]) for _ in range(2)]
assert (e1 != e2).any()                                     # a new order every epoch
test_fail(lambda: BatchIterator(X, Y[:5]), contains='equal length 10')

# %% [markdown]
# ## Small helpers: one-hot codes and a train/test split

# %%
#| export
def one_hot(y, n_classes: int | None = None, dtype=None):
    "Integer labels of shape (N,) to one-hot rows of shape (N, n_classes)."
    y = check_array(y, 'labels', ndim=1, kind='iu', who='one_hot')
    k = int(y.max()) + 1 if n_classes is None else n_classes
    if len(y) and (y.min() < 0 or y.max() >= k):
        raise ValueError(f"one_hot expected labels in [0, {k}), got range [{y.min()}, {y.max()}]")
    out = np.zeros((len(y), k), dtype=dtype or get_dtype())
    out[np.arange(len(y)), y] = 1
    return out

def train_test_split(*arrays, test_size: float | int = 0.2, rng=None, shuffle: bool = True):
    """Split aligned arrays into train and test parts; returns `(a_train, a_test, b_train, b_test, ...)`.

    `arrays`: one or more arrays of equal first dimension N. `test_size`: a
    fraction in (0, 1) of N, or a whole number of test examples in [1, N)."""
    if not arrays: raise ValueError("train_test_split expected at least one array, got none")
    n = len(arrays[0])
    for i, a in enumerate(arrays):
        if len(a) != n:
            raise ValueError(f"train_test_split expected arrays of equal length {n}, got length {len(a)} for array {i}")
    if isinstance(test_size, (bool, np.bool_)) or not isinstance(test_size, (int, float, np.integer, np.floating)):
        raise ValueError(f"test_size must be a fraction in (0, 1) or a number of examples, got {test_size!r}")
    if isinstance(test_size, (float, np.floating)):
        if not 0 < test_size < 1: raise ValueError(f"test_size as a fraction must lie in (0, 1), got {test_size}")
        n_test = int(round(test_size * n))
    else:
        if not 0 < test_size < n: raise ValueError(f"test_size as a count must lie in [1, {n - 1}] for {n} examples, got {test_size}")
        n_test = int(test_size)
    idx = as_rng(rng).permutation(n) if shuffle else np.arange(n)
    out = []
    for a in arrays: out += [a[idx[n_test:]], a[idx[:n_test]]]
    return tuple(out)

# %%
test_eq(one_hot(np.array([0, 2])), np.array([[1, 0, 0], [0, 0, 1]], np.float32))
test_fail(lambda: one_hot(np.array([0, 3]), 3), contains='[0, 3)')
a, b = train_test_split(np.arange(10), test_size=0.3, rng=0)
test_eq((len(a), len(b)), (7, 3)); test_eq(sorted(np.concatenate([a, b])), list(range(10)))
test_fail(lambda: train_test_split(np.arange(10), np.arange(9)), contains='equal length 10, got length 9 for array 1')
for bad in (0.0, 1.0, 1.5, -0.2, 0, 10, True):
    test_fail(lambda: train_test_split(np.arange(10), test_size=bad), contains='test_size')

# %% [markdown]
# ## Synthetic sets
#
# **Linear regression** (*Dive into Deep Learning* §3.2): $\mathbf{y} =
# \mathbf{X}\mathbf{w} + b + \boldsymbol\epsilon$ with $\mathbf{w} = [2,
# -3.4]^\top$, $b = 4.2$, $\mathbf{X}$ standard normal and $\epsilon \sim
# \mathcal N(0, 0.01^2)$.

# %%
#| export
def synthetic_linear(n: int = 1000, w=(2.0, -3.4), b: float = 4.2, noise: float = 0.01, rng=None):
    "D2L's regression set: X (n, len(w)) standard normal, y = X w + b + noise, of shape (n, 1)."
    rng = as_rng(rng)
    w = np.asarray(w, dtype=np.float64)
    X = rng.normal(0.0, 1.0, (n, len(w)))
    y = X @ w + b + rng.normal(0.0, noise, n)
    return X.astype(get_dtype()), y.reshape(-1, 1).astype(get_dtype())

def xor(dtype=None):
    "The four XOR points: X (4, 2) and y (4, 1)."
    dt = dtype or get_dtype()
    return (np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dt), np.array([[0], [1], [1], [0]], dt))

# %%
X, y = synthetic_linear(rng=0)
w_hat = np.linalg.lstsq(np.c_[X, np.ones(len(X))].astype(np.float64), y.astype(np.float64), rcond=None)[0].ravel()
test_close(w_hat, [2, -3.4, 4.2], eps=2e-3)
test_eq(xor()[1].ravel(), [0, 1, 1, 0])

# %% [markdown]
# **Two moons** (the set scikit-learn's `make_moons` makes): the upper half of
# a unit circle, and a lower half circle shifted by $(1, -\tfrac12)$, plus
# Gaussian noise of standard deviation `noise`.

# %%
#| export
def make_moons(n_samples: int = 100, noise: float | None = None, rng=None, shuffle: bool = True):
    "Two interleaving half circles: X (n_samples, 2), y (n_samples,) int64 in {0, 1}."
    rng = as_rng(rng)
    n_out = n_samples // 2; n_in = n_samples - n_out
    t_out, t_in = np.linspace(0, np.pi, n_out), np.linspace(0, np.pi, n_in)
    X = np.r_[np.c_[np.cos(t_out), np.sin(t_out)], np.c_[1 - np.cos(t_in), 1 - np.sin(t_in) - 0.5]]
    y = np.r_[np.zeros(n_out, np.int64), np.ones(n_in, np.int64)]
    if noise: X = X + rng.normal(0.0, noise, X.shape)
    if shuffle:
        p = rng.permutation(n_samples); X, y = X[p], y[p]
    return X.astype(get_dtype()), y

# %% [markdown]
# **The planar "flower"** of the deeplearning.ai course (C1 W3): two classes of
# 200 points on the petals of the rose $r = 4\sin 4\theta$, with noise 0.2 on
# both $\theta$ and $r$. The course seeds NumPy's legacy generator with 1; an
# integer `rng` here seeds the same legacy generator, so `planar_flower()`
# returns the course's exact points. (The course stores examples as columns,
# `X` of shape (2, 400); we use rows.)
#
# **Spirals** (CS231n): `n_classes` arms, each with $r$ from 0 to 1 and
# $\theta$ sweeping 4 radians plus noise.

# %%
#| export
def planar_flower(m: int = 400, noise: float = 0.2, rng=1):
    "The course's 2-class flower: X (m, 2), y (m,) int64. An int `rng` seeds the legacy generator as the course did."
    r_ = np.random.RandomState(rng) if isinstance(rng, (int, np.integer)) else as_rng(rng)
    N, a = m // 2, 4
    X = np.zeros((m, 2)); y = np.zeros(m, np.int64)
    for j in range(2):
        ix = range(N * j, N * (j + 1))
        t = np.linspace(j * 3.12, (j + 1) * 3.12, N) + r_.standard_normal(N) * noise
        r = a * np.sin(4 * t) + r_.standard_normal(N) * noise
        X[ix] = np.c_[r * np.sin(t), r * np.cos(t)]; y[ix] = j
    return X.astype(get_dtype()), y

def spirals(n_per_class: int = 100, n_classes: int = 3, noise: float = 0.2, rng=None):
    "CS231n spirals: X (n_per_class*n_classes, 2), y int64 class ids."
    rng = as_rng(rng)
    X, y = [], []
    for j in range(n_classes):
        r = np.linspace(0.0, 1, n_per_class)
        t = np.linspace(j * 4, (j + 1) * 4, n_per_class) + rng.standard_normal(n_per_class) * noise
        X.append(np.c_[r * np.sin(t), r * np.cos(t)]); y.append(np.full(n_per_class, j, np.int64))
    return np.concatenate(X).astype(get_dtype()), np.concatenate(y)

# %%
X, y = make_moons(200, noise=0.1, rng=0)
test_eq((X.shape, y.shape, set(y)), ((200, 2), (200,), {0, 1}))
X, y = planar_flower()
test_eq((X.shape, np.bincount(y).tolist()), ((400, 2), [200, 200]))
test_eq(planar_flower()[0], X)                        # deterministic, as the course
X, y = spirals(50, 3, rng=0); test_eq((X.shape, np.bincount(y).tolist()), ((150, 2), [50, 50, 50]))

# %% [markdown]
# ## A look at the data

# %%
import matplotlib.pyplot as plt
fig, axs = plt.subplots(1, 3, figsize=(12, 3.6))
for ax, (title, (X, y)) in zip(axs, [('make_moons(500, noise=0.1)', make_moons(500, 0.1, rng=0)),
                                     ('planar flower (course data)', planar_flower()),
                                     ('spirals (3 classes)', spirals(100, 3, rng=0))]):
    ax.scatter(X[:, 0], X[:, 1], c=y, s=8, cmap='coolwarm'); ax.set_title(title); ax.set_aspect('equal')
plt.tight_layout(); plt.show()

# %%
#| cifar10
#| mnist
xs, ys = load('mnist', 'test')
xc, yc = load('cifar10', 'test')
names = ['airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck']
fig, axs = plt.subplots(2, 8, figsize=(12, 3.4))
for i in range(8):
    axs[0, i].imshow(xs[i, ..., 0], cmap='gray'); axs[0, i].set_title(str(ys[i]))
    axs[1, i].imshow(xc[i]); axs[1, i].set_title(names[yc[i]], fontsize=8)
for ax in axs.ravel(): ax.axis('off')
plt.tight_layout(); plt.show()

# %% [markdown]
# ## References
#
# * TensorFlow Datasets, *`tfds.data_source`* and the `array_record` format (random access without TensorFlow).
# * A. Zhang, Z. C. Lipton, M. Li, A. J. Smola, *Dive into Deep Learning*, §3.2 (the synthetic regression set).
# * A. Ng et al., deeplearning.ai *Neural Networks and Deep Learning*, week 3 (the planar flower set).
# * F. Pedregosa et al., scikit-learn, `sklearn.datasets.make_moons` (the two-moons construction).
# * A. Karpathy, CS231n *Neural Networks Case Study* (the spiral set).
