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
#    Tiny Shakespeare and the IMDB movie reviews come from
#    [TensorFlow Datasets](https://www.tensorflow.org/datasets)
#    (TFDS). TFDS can read datasets prepared in the `array_record` format with
#    NumPy alone (`tfds.data_source`), so TensorFlow is never needed. `load`
#    returns images as `uint8` arrays in NHWC layout, labels as `int64`,
#    a text corpus as one `str`, and labelled texts (the reviews) as an array
#    of `str` beside their labels.
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
# nbdev test flag (`#| mnist`). The test run turns on the flags of the
# datasets that are prepared, so on a machine without them those examples
# are skipped, and named in a summary, rather than failing; nothing
# fabricated stands in for a real result.

# %%
#| default_exp data

# %%
#| export
from __future__ import annotations
import contextlib, importlib.util, logging, os, socket, tempfile, urllib.parse
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
# labelled-text sets a `text` and a `label` per example (one review each). Asking for anything
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
    'imdb_reviews': 'labelled_text',
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
test_fail(lambda: _check_name('imagenet'), contains='known datasets: cifar10, fashion_mnist, imdb_reviews, mnist, tiny_shakespeare')
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
    x = np.stack([np.asarray(e['image'], dtype=np.uint8) for e in examples])
    y = np.array([int(e['label']) for e in examples], dtype=np.int64)
    return {'x': x, 'y': y}

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

def load(name: str, split: str = 'train', *, data_dir: str | os.PathLike | None = None,
         cache: bool = True, cache_dir: str | os.PathLike | None = None,
         download: bool = False, progress: bool = True):
    """Load a split of a known dataset as NumPy arrays.

    Returns `(x, y)` for image datasets, with `x` uint8 of shape (N, H, W, C)
    (NHWC) and `y` int64 of shape (N,); a `str` for text datasets; and
    `(texts, y)` for labelled-text datasets (`imdb_reviews`), with `texts` an
    object array (N,) of `str` and `y` int64 (N,).

    Reads the prepared dataset from `data_dir` (default `$TFDS_DATA_DIR`, else
    `~/tensorflow_datasets`) through `tfds.data_source`; no TensorFlow needed.
    Decoded arrays are cached in `cache_dir` as `NAME-SPLIT.npz` (written atomically).
    Touches the network only when `download=True`, which prepares a missing
    dataset with `prepare` (and so needs TensorFlow, the `data` extra)."""
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
    if kind == 'text': return str(arrays['text'])
    if kind == 'labelled_text': return _unpack_texts(arrays['utf8'], arrays['offsets']), arrays['y']
    return arrays['x'], arrays['y']

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
