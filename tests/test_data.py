"""The data layer: TFDS loading (mock data anywhere, real data when prepared), caching, preparing, batching,
synthetic sets; and tools/data_cells.py, which flags the notebook cells that need a dataset."""
import http.server, importlib.util, json, os, socket, subprocess, sys, threading, time
from pathlib import Path
import numpy as np
import pytest
import tensorflow_datasets as tfds

from dl_from_scratch import data
from dl_from_scratch.data import (load, BatchIterator, DatasetNotFoundError, DatasetDownloadError, synthetic_linear,
                                  xor, make_moons, planar_flower, spirals, one_hot, atomic_savez, train_test_split,
                                  is_prepared, prepare)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / 'tools'))
import data_cells

REAL = data.data_dir()
needs = lambda name: pytest.mark.skipif(not is_prepared(name), reason=f"{name} is not prepared under TFDS_DATA_DIR ({REAL})")
HAVE_TF = importlib.util.find_spec('tensorflow') is not None


# ---------------------------------------------------------------- anywhere: mock data and errors
@pytest.mark.parametrize('name,shape', [('mnist', (28, 28, 1)), ('fashion_mnist', (28, 28, 1)), ('cifar10', (32, 32, 3))])
def test_mock_images(tmp_path, monkeypatch, name, shape):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'empty'))
    with tfds.testing.mock_data(num_examples=5):
        x, y = load(name, 'test', cache_dir=tmp_path, progress=False)
    assert x.shape == (5, *shape) and x.dtype == np.uint8
    assert y.shape == (5,) and y.dtype == np.int64 and ((0 <= y) & (y < 10)).all()
    assert (tmp_path / f'{name}-test.npz').exists()

def test_mock_text(tmp_path):
    with tfds.testing.mock_data(num_examples=1):
        t = load('tiny_shakespeare', 'train', cache_dir=tmp_path, progress=False)
    assert isinstance(t, str) and len(t) > 0

def test_mock_labelled_text(tmp_path):
    with tfds.testing.mock_data(num_examples=6):
        texts, y = load('imdb_reviews', 'train', cache_dir=tmp_path, progress=False)
    assert texts.shape == (6,) and texts.dtype == object and all(isinstance(t, str) for t in texts)
    assert y.shape == (6,) and y.dtype == np.int64 and set(y) <= {0, 1}
    with np.load(tmp_path / 'imdb_reviews-train.npz') as f:        # packed: bytes and offsets, not fixed-width str
        assert set(f.files) == {'utf8', 'offsets', 'y'} and f['utf8'].dtype == np.uint8
    texts2, y2 = load('imdb_reviews', 'train', cache_dir=tmp_path, data_dir=tmp_path / 'nothing', progress=False)
    assert texts2.tolist() == texts.tolist() and (y2 == y).all()      # the cache answered

@pytest.mark.parametrize('texts', [[], [''], ['a', 'bc'], ['Très émouvant — 10/10', '', '\x00\n']])
def test_pack_texts_round_trip(texts):
    packed = data._pack_texts(texts)
    assert packed['offsets'][-1] == len(packed['utf8']) and len(packed['offsets']) == len(texts) + 1
    assert data._unpack_texts(**packed).tolist() == texts

def test_inconsistent_text_cache_is_rebuilt(tmp_path):
    atomic_savez(tmp_path / 'imdb_reviews-test.npz', utf8=np.zeros(5, np.uint8), offsets=np.array([0, 2, 4]),
                 y=np.zeros(2, np.int64))                               # offsets end at 4, not at the 5 bytes stored
    with tfds.testing.mock_data(num_examples=3):
        texts, y = load('imdb_reviews', 'test', cache_dir=tmp_path, progress=False)
    assert len(texts) == len(y) == 3

def test_cache_is_used(tmp_path):
    with tfds.testing.mock_data(num_examples=4):
        x, y = load('mnist', 'train', cache_dir=tmp_path, progress=False)
    # Outside the mock, TFDS would read different data (or none): equal arrays prove the cache answered.
    x2, y2 = load('mnist', 'train', cache_dir=tmp_path, data_dir=tmp_path / 'nothing', progress=False)
    np.testing.assert_array_equal(x, x2); np.testing.assert_array_equal(y, y2)

def test_corrupt_cache_is_rebuilt(tmp_path):
    (tmp_path / 'mnist-train.npz').write_bytes(b'not a zip file')
    with tfds.testing.mock_data(num_examples=3):
        x, _ = load('mnist', 'train', cache_dir=tmp_path, progress=False)
    assert x.shape[0] == 3
    assert np.load(tmp_path / 'mnist-train.npz')['x'].shape[0] == 3

def test_unknown_dataset_lists_known_names():
    with pytest.raises(ValueError, match='known datasets: cifar10, fashion_mnist, imdb_reviews, mnist, omniglot, tiny_shakespeare'):
        load('imagenet')

def test_bad_split_name():
    with pytest.raises(ValueError, match='plain split name'):
        load('mnist', 'train[:10%]')

def test_absent_dataset_names_directory_and_how_to_get_it(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(DatasetNotFoundError) as e:
        load('mnist', 'train', data_dir=tmp_path, cache_dir=tmp_path, progress=False)
    msg = str(e.value)
    assert str(tmp_path) in msg and 'make data' in msg and 'download=True' in msg and 'TFDS_DATA_DIR' in msg
    assert time.perf_counter() - t0 < 30, "an offline miss must fail fast, never wait on the network"

def test_absent_dataset_error_is_short_and_true(tmp_path):
    "No chained TFDS text (a folder 'already prepared', a cut-off 'Possible root causes:'), one sentence of advice."
    with pytest.raises(DatasetNotFoundError) as e:
        load('cifar10', 'test', data_dir=tmp_path, cache=False)
    assert e.value.__cause__ is None and e.value.__context__ is None
    msg = str(e.value)
    assert 'already prepared' not in msg and 'root causes' not in msg and len(msg) < 400
    assert f"no {tmp_path / 'cifar10'} folder" in msg

def test_dataset_prepared_without_array_record_is_named_as_such(tmp_path):
    v = tmp_path / 'mnist' / '3.0.1'; v.mkdir(parents=True)
    (v / 'dataset_info.json').write_text('{}'); (v / 'mnist-train.tfrecord-00000-of-00001').touch()
    assert not is_prepared('mnist', tmp_path)
    with pytest.raises(DatasetNotFoundError, match='holds no array_record files'):
        load('mnist', data_dir=tmp_path, cache=False)

def test_is_prepared_finds_versions_and_configs(tmp_path):
    for name, sub in [('mnist', '3.0.1'), ('imdb_reviews', 'plain_text/1.0.0')]:
        assert not is_prepared(name, tmp_path)
        v = tmp_path / name / sub; v.mkdir(parents=True); (v / 'dataset_info.json').write_text('{}')
        (v / f'{name}-test.array_record-00000-of-00001').touch()
        assert is_prepared(name, tmp_path)
    assert all(is_prepared(n, REAL) == any((REAL / n).glob('**/*.array_record*')) for n in data.BOOK_DATASETS)

@pytest.mark.parametrize('x,y', [(np.zeros((5, 28, 28, 1), np.uint8), np.zeros(4, np.int64)),   # lengths differ
                                 (np.zeros((5, 28, 28), np.uint8), np.zeros(5, np.int64))])     # not NHWC
def test_inconsistent_cache_is_rebuilt(tmp_path, x, y):
    atomic_savez(tmp_path / 'mnist-train.npz', x=x, y=y)
    with tfds.testing.mock_data(num_examples=3):
        x2, y2 = load('mnist', 'train', cache_dir=tmp_path, progress=False)
    assert x2.shape == (3, 28, 28, 1) and len(y2) == 3
    with np.load(tmp_path / 'mnist-train.npz') as f: assert len(f['x']) == len(f['y']) == 3   # and healed on disk

def test_atomic_savez_keeps_old_file_on_crash(tmp_path, monkeypatch):
    p = atomic_savez(tmp_path / 'c.npz', x=np.arange(5))
    def crash(f, **kw):
        f.write(b'PK partial'); raise KeyboardInterrupt   # killed mid-write
    monkeypatch.setattr(np, 'savez', crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_savez(p, x=np.arange(99))
    monkeypatch.undo()
    np.testing.assert_array_equal(np.load(p)['x'], np.arange(5))
    assert sorted(os.listdir(tmp_path)) == ['c.npz']


# ---------------------------------------------------------------- batching and synthetic sets
def test_batch_iterator_covers_every_example_once_per_epoch():
    x, y = np.arange(103)[:, None], np.arange(103)
    it = BatchIterator(x, y, batch_size=10, shuffle=True, rng=np.random.default_rng(3))
    assert len(it) == 11
    for _ in range(2):
        seen = np.concatenate([yb for _, yb in it]); assert sorted(seen) == list(range(103))
        assert all((xb[:, 0] == yb).all() for xb, yb in it)
    assert len(BatchIterator(x, batch_size=10, drop_last=True)) == 10
    assert all(len(b) == 10 for b in BatchIterator(x, batch_size=10, drop_last=True))

def test_batch_iterator_rejects_bad_input():
    with pytest.raises(ValueError, match='equal length'): BatchIterator(np.zeros(3), np.zeros(4))
    with pytest.raises(ValueError, match='batch_size'): BatchIterator(np.zeros(3), batch_size=0)

def test_synthetic_linear_matches_d2l_parameters():
    X, y = synthetic_linear(n=5000, rng=1)
    A = np.c_[X, np.ones(len(X))].astype(np.float64)
    coef = np.linalg.lstsq(A, y.astype(np.float64), rcond=None)[0].ravel()
    np.testing.assert_allclose(coef, [2, -3.4, 4.2], atol=1e-3)
    resid = y.ravel() - A @ coef
    assert abs(resid.std() - 0.01) < 1e-3

def test_moons_flower_spirals_xor():
    X, y = make_moons(1000, noise=0.0, rng=0, shuffle=False)
    np.testing.assert_allclose(np.hypot(*X[y == 0].T), 1, atol=1e-6)            # upper moon on the unit circle
    np.testing.assert_allclose(np.hypot(X[y == 1, 0] - 1, X[y == 1, 1] - 0.5), 1, atol=1e-6)
    Xf, yf = planar_flower()
    assert Xf.shape == (400, 2) and np.bincount(yf).tolist() == [200, 200] and np.abs(Xf).max() < 5
    Xs, ys = spirals(30, 4, rng=0); assert Xs.shape == (120, 2) and set(ys) == {0, 1, 2, 3}
    X4, y4 = xor(); assert ((X4[:, 0] != X4[:, 1]) == y4.ravel().astype(bool)).all()

def test_train_test_split_rejects_unequal_lengths():
    with pytest.raises(ValueError, match='equal length 10, got length 9 for array 1'):
        train_test_split(np.arange(10), np.arange(9))
    with pytest.raises(ValueError, match='at least one array'): train_test_split()

@pytest.mark.parametrize('test_size', [0.0, 1.0, -0.1, 1.5, float('nan'), 0, 10, -3, 11, True, '0.2', None])
def test_train_test_split_rejects_test_size_outside_range(test_size):
    with pytest.raises(ValueError, match='test_size'):
        train_test_split(np.arange(10), np.arange(10), test_size=test_size)

def test_train_test_split_sizes_and_alignment():
    x, y = np.arange(10) * 10, np.arange(10)
    xtr, xte, ytr, yte = train_test_split(x, y, test_size=0.3, rng=0)
    assert (len(xtr), len(xte)) == (7, 3) and (xtr == ytr * 10).all() and (xte == yte * 10).all()
    assert [len(a) for a in train_test_split(x, test_size=4, shuffle=False)] == [6, 4]

def test_one_hot():
    np.testing.assert_array_equal(one_hot(np.array([1, 0, 2])), np.eye(3)[[1, 0, 2]])
    with pytest.raises(ValueError, match='labels'): one_hot(np.array([0.5]))


# ---------------------------------------------------------------- real data (skipped unless prepared)
@needs('mnist')
def test_mnist_real():
    (xtr, ytr), (xte, yte) = load('mnist', 'train'), load('mnist', 'test')
    assert (len(xtr), len(xte)) == (60000, 10000)
    assert xtr.shape[1:] == (28, 28, 1) and xtr.dtype == np.uint8 and ytr.dtype == np.int64
    assert ytr.min() == 0 and ytr.max() == 9 and len(np.unique(ytr)) == 10
    assert abs(xte.mean() / 255 - 0.1325) < 5e-4

@needs('fashion_mnist')
def test_fashion_mnist_real():
    (xtr, _), (xte, yte) = load('fashion_mnist', 'train'), load('fashion_mnist', 'test')
    assert (len(xtr), len(xte)) == (60000, 10000) and set(np.unique(yte)) == set(range(10))
    assert abs(xte.mean() / 255 - 0.2868) < 5e-4

@needs('cifar10')
def test_cifar10_real():
    (xtr, ytr), (xte, yte) = load('cifar10', 'train'), load('cifar10', 'test')
    assert (len(xtr), len(xte)) == (50000, 10000) and xtr.shape[1:] == (32, 32, 3)
    assert np.bincount(ytr).tolist() == [5000] * 10
    np.testing.assert_allclose(xtr.reshape(-1, 3).mean(0) / 255, [0.4914, 0.4822, 0.4465], atol=5e-4)

@needs('tiny_shakespeare')
def test_tiny_shakespeare_real():
    text = load('tiny_shakespeare', 'train')
    assert isinstance(text, str) and len(text) == 1_003_854
    assert text.startswith('First Citizen')


@needs('imdb_reviews')
def test_imdb_reviews_real():
    (rtr, ytr), (rte, yte) = load('imdb_reviews', 'train'), load('imdb_reviews', 'test')
    assert (len(rtr), len(rte)) == (25000, 25000) and rtr.dtype == object and isinstance(rtr[0], str)
    assert np.bincount(ytr).tolist() == [12500, 12500] and np.bincount(yte).tolist() == [12500, 12500]
    assert min(map(len, rtr)) == 52 and max(map(len, rtr)) == 13704
    assert sum('<br />' in t for t in rtr) == 14665                      # HTML line breaks, which chapter 12 strips


# ---------------------------------------------------------------- preparing data (make data), up to the network
def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0)); return s.getsockname()[1]

def test_prepare_offline_fails_fast_and_says_what_to_do(tmp_path, monkeypatch):
    port = _free_port()                                     # nothing listens there: the connection is refused
    monkeypatch.setattr(data, '_download_hosts', lambda name: [('127.0.0.1', port)])
    t0 = time.perf_counter()
    with pytest.raises(DatasetDownloadError) as e:
        prepare(['mnist'], tmp_path, timeout=2)
    assert time.perf_counter() - t0 < 10
    msg = str(e.value)
    assert 'cannot download mnist' in msg and f'127.0.0.1:{port}' in msg and 'needs the network' in msg
    assert 'TFDS_DATA_DIR' in msg and list(tmp_path.iterdir()) == []       # nothing written
    with pytest.raises(DatasetDownloadError, match='needs the network'):    # load(download=True) takes the same path
        load('mnist', data_dir=tmp_path, cache=False, download=True)

def test_prepare_knows_the_download_hosts():
    hosts = {n: data._download_hosts(n) for n in data.BOOK_DATASETS}
    assert hosts['mnist'] == [('storage.googleapis.com', 443)] and hosts['cifar10'] == [('www.cs.toronto.edu', 443)]
    assert all(hosts.values())

def test_prepare_skips_what_is_prepared_and_rejects_unknown_names(tmp_path):
    v = tmp_path / 'mnist' / '3.0.1'; v.mkdir(parents=True)
    (v / 'dataset_info.json').write_text('{}'); (v / 'mnist-train.array_record-00000-of-00001').touch()
    assert prepare(['mnist'], tmp_path) == []
    with pytest.raises(ValueError, match='the book uses'): prepare(['imagenet'], tmp_path)


class _Server:
    "A file server on 127.0.0.1 that stops itself; `paths` lists what was requested."
    def __init__(self, root):
        paths = self.paths = []
        class H(http.server.SimpleHTTPRequestHandler):
            def __init__(s, *a, **k): super().__init__(*a, directory=str(root), **k)
            def log_message(s, *a): paths.append(s.path)
        self.httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), H)
        self.port = self.httpd.server_address[1]
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
    def __enter__(self): return self
    def __exit__(self, *a): self.httpd.shutdown(); self.httpd.server_close()

TEXT = ''.join(f"CITIZEN {i}:\nSpeak, speak.\n\n" for i in range(200))

def _serve_tiny_shakespeare(tmp_path, monkeypatch):
    "Serve a small input.txt where TFDS would fetch tiny_shakespeare's, through TFDS's own downloader."
    (tmp_path / 'www').mkdir(); (tmp_path / 'www' / 'input.txt').write_text(TEXT)
    server = _Server(tmp_path / 'www')
    monkeypatch.setattr(data, '_download_hosts', lambda name: [('127.0.0.1', server.port)])
    download = tfds.download.DownloadManager.download
    local = lambda self, url, **k: download(self, f'http://127.0.0.1:{server.port}/' + url.rsplit('/', 1)[1], **k)
    monkeypatch.setattr(tfds.download.DownloadManager, 'download', local)
    return server

@pytest.mark.skipif(HAVE_TF, reason='TensorFlow is installed')
def test_prepare_without_tensorflow_names_the_data_extra(tmp_path, monkeypatch):
    with _serve_tiny_shakespeare(tmp_path, monkeypatch) as server:
        with pytest.raises(DatasetDownloadError, match=r"needs TensorFlow.*pip install -e '\.\[data\]'.*make data"):
            prepare(['tiny_shakespeare'], tmp_path / 'tfds')
    assert server.paths == []                               # stopped before downloading anything

@pytest.mark.skipif(not HAVE_TF, reason="preparing needs TensorFlow (the package's data extra)")
def test_prepare_downloads_and_prepares_from_a_local_server(tmp_path, monkeypatch):
    ddir = tmp_path / 'tfds'
    with _serve_tiny_shakespeare(tmp_path, monkeypatch) as server:
        assert prepare(['tiny_shakespeare'], ddir) == ['tiny_shakespeare']
    assert server.paths == ['/input.txt'] and is_prepared('tiny_shakespeare', ddir)
    parts = [load('tiny_shakespeare', s, data_dir=ddir, cache=False, progress=False) for s in ('train', 'validation', 'test')]
    assert ''.join(parts) == TEXT and len(parts[0]) == int(len(TEXT) * 0.9)     # TFDS's 90/5/5 split, read back


# ---------------------------------------------------------------- tools/data_cells.py: which cells need data
def _nb(path, cells):
    nb = {'cells': [{'cell_type': 'code', 'source': c, 'metadata': {}, 'outputs': [], 'execution_count': None}
                    for c in cells], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}
    path.write_text(json.dumps(nb)); return path

CELLS = [
    "from dl_from_scratch.data import load\nimport numpy as np",                 # 1: nothing
    "#| mnist\nx, y = load('mnist', 'train')",                                   # 2: a literal load
    "m = Model()\nm.fit(x, y)",                                                 # 3: reads x; changes m
    "print(m.evaluate())",                                                      # 4: m was trained on mnist
    "#| cifar10\nz = np.zeros(3)",                                              # 5: flagged but needs nothing
    "def pair(name): return load(name, 'train'), load(name, 'test')",           # 6: a loader function
    "(a, b), _ = pair('fashion_mnist')",                                        # 7: fashion_mnist through it
    "for n in ('mnist', 'cifar10'): load(n)",                                   # 8: both, through a loop
    "import tensorflow_datasets as tfds\nwith tfds.testing.mock_data(num_examples=2):\n    xm, _ = load('mnist')\n"
    "test_fail(lambda: load('mnist', data_dir='/nowhere'))",                    # 9: mock data and a failing load
    "x = np.ones(3)\nfmt = lambda v, d=2: [round(t, d) for t in v]\nprint(fmt(x))",   # 10: x rebound: clean again
    "tfds.data_source('omniglot')",                                             # 11: a TFDS entry point
    "import json\nimport numpy as np\nt = load('tiny_shakespeare')",             # 12: json first bound here
    "print(json.dumps([1]), np.pi)",                                            # 13: json is gone if 12 is skipped
    "with open('f') as t:\n    print(t.read())",                              # 14: `as` binds t afresh
]

def test_data_cells_finds_what_each_cell_needs(tmp_path):
    nb = data_cells.Notebook(_nb(tmp_path / 'a.ipynb', CELLS))
    assert nb.needs == [set(), {'mnist'}, {'mnist'}, {'mnist'}, set(), set(), {'fashion_mnist'}, {'mnist', 'cifar10'},
                        set(), set(), {'omniglot'}, {'tiny_shakespeare'}, {'tiny_shakespeare'}, set()]
    probs = '\n'.join(nb.problems)
    assert 'cell 3 (m = Model()): missing #| mnist' in probs and 'cell 5 (z = np.zeros(3)): needs no cifar10' in probs
    assert 'code cell 2 ' not in probs and 'code cell 9 ' not in probs and len(nb.problems) == 8     # cells 3-5, 7, 8, 11-13

def test_data_cells_reports_a_dataset_it_cannot_name(tmp_path):
    nb = data_cells.Notebook(_nb(tmp_path / 'a.ipynb', ["from dl_from_scratch import data", "data.load(pick())"]))
    assert nb.needs == [set(), set()] and 'cannot tell which dataset' in nb.problems[0]

def test_data_cells_apply_writes_flags_once_and_check_passes(tmp_path):
    py = tmp_path / 'nb.py'
    py.write_text("# %% [markdown]\n# A chapter\n\n# %%\nfrom dl_from_scratch.data import load\n\n"
                  "# %%\n#| slow\nx = load('cifar10')\n\n# %%\n#| mnist\nprint(x.shape)\n\n# %%\n#| mnist\n1 + 1\n")
    run = lambda *a: subprocess.run([sys.executable, str(ROOT / 'tools' / 'data_cells.py'), *a], capture_output=True, text=True)
    r = run('--check', str(py)); assert r.returncode == 1 and 'missing #| cifar10' in r.stdout
    assert run('--apply', str(py)).returncode == 0
    once = py.read_text()
    assert "#| slow\n#| cifar10\nx = load('cifar10')" in once and '#| cifar10\nprint(x.shape)' in once
    assert '#| mnist' not in once                                               # the stale flags are gone
    assert run('--apply', str(py)).returncode == 0 and py.read_text() == once   # idempotent
    assert run('--check', str(py)).returncode == 0

def test_data_cells_flags_and_summary(tmp_path, monkeypatch):
    run = lambda *a, **env: subprocess.run([sys.executable, str(ROOT / 'tools' / 'data_cells.py'), *a], capture_output=True,
                                           text=True, env={**os.environ, **env})
    empty = str(tmp_path)
    r = run('--flags', 'slow', TFDS_DATA_DIR=empty, REQUIRE_DATA='')
    assert r.returncode == 0 and r.stdout.split() == ['slow']
    r = run('--summary', TFDS_DATA_DIR=empty, REQUIRE_DATA='')
    assert r.returncode == 0 and 'notebooks ran' in r.stdout.splitlines()[-1]
    if 'skipped for missing data' in r.stdout:                                  # once the chapters carry their flags
        assert '(run make data)' in r.stdout
        assert run('--flags', TFDS_DATA_DIR=empty, REQUIRE_DATA='1').returncode != 0   # CI: a skip is a failure
    if all(data.is_available(n) for n in data.DATA_FLAGS):
        r = run('--flags', 'slow', REQUIRE_DATA='1')
        assert r.returncode == 0 and set(r.stdout.split()) == {'slow', *data.DATA_FLAGS}


def test_data_cells_knows_the_images_and_omniglot_alphabets(tmp_path):
    nb = data_cells.Notebook(_nb(tmp_path / 'a.ipynb', [
        "from dl_from_scratch import data\nfrom dl_from_scratch.data import load_image, load_omniglot_alphabets",
        "im = data.load_image('starry_night', 256)",                          # 2: the images, whatever the name
        "print(im.shape)",                                                    # 3: through im
        "a = load_omniglot_alphabets('test')",                                # 4: omniglot
        "t = load_image('coffee', images_dir='/tmp/x')",                      # 5: a folder of the caller's
        "test_fail(lambda: load_image('coffee'))"]))                          # 6: expected to fail
    assert nb.needs == [set(), {'images'}, {'images'}, {'omniglot'}, set(), set()]
    assert 'images' in data_cells.datasets() and 'images' in data_cells.test_flags()


# ---------------------------------------------------------------- Omniglot: one convention for the strokes
OMNIGLOT_INFO = ('{"name": "omniglot", "version": "3.0.0", "splits": [{"name": "train", "shardLengths": ["5"]}, '
                 '{"name": "test", "shardLengths": ["5"]}]}')

def _omniglot_mock(tmp_path, n=5):
    "TFDS's own test metadata lacks Omniglot's splits: a dataset_info.json naming them lets mock_data fabricate examples."
    meta = tmp_path / 'meta' / 'omniglot' / '3.0.0'; meta.mkdir(parents=True)
    (meta / 'dataset_info.json').write_text(OMNIGLOT_INFO)
    return tfds.testing.mock_data(num_examples=n, data_dir=str(tmp_path / 'meta'))

@pytest.mark.parametrize('paper', [1, 255])          # PIL decodes paper as 1, TensorFlow as 255
def test_omniglot_ink_is_255_whichever_decoder(paper):
    img = np.full((105, 105, 3), paper, np.uint8); img[10:20, 30] = 0
    x = data.omniglot_ink(img)
    assert x.shape == (105, 105, 1) and x.dtype == np.uint8
    assert (x[10:20, 30] == 255).all() and x.sum() == 255 * 10

def test_mock_omniglot_loads_images_labels_and_alphabets(tmp_path, monkeypatch):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'empty'))
    with _omniglot_mock(tmp_path):
        x, y = load('omniglot', 'train', cache_dir=tmp_path, progress=False)
        a = data.load_omniglot_alphabets('train', cache_dir=tmp_path, progress=False)
    assert x.shape == (5, 105, 105, 1) and x.dtype == np.uint8 and set(np.unique(x)) <= {0, 255}
    assert y.dtype == a.dtype == np.int64 and y.shape == a.shape == (5,) and ((0 <= a) & (a < 50)).all()
    with np.load(tmp_path / 'omniglot-train.npz') as f: assert set(f.files) == {'x', 'y', 'alphabet'}
    x2, y2 = load('omniglot', 'train', cache_dir=tmp_path, progress=False)     # outside the mock: the cache answers
    assert (x2 == x).all() and (y2 == y).all()

def test_omniglot_cache_without_alphabets_is_rebuilt(tmp_path, monkeypatch):
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'empty'))
    atomic_savez(tmp_path / 'omniglot-test.npz', x=np.zeros((5, 105, 105, 1), np.uint8), y=np.zeros(5, np.int64))
    with _omniglot_mock(tmp_path, 3):
        assert len(data.load_omniglot_alphabets('test', cache_dir=tmp_path, progress=False)) == 3

def test_absent_omniglot_says_make_data(tmp_path):
    with pytest.raises(DatasetNotFoundError, match='make data'):
        data.load_omniglot_alphabets('test', data_dir=tmp_path, cache=False)
    with pytest.raises(DatasetNotFoundError, match='make data'):
        data.label_names('omniglot', 'alphabet', data_dir=tmp_path)

@needs('omniglot')
def test_omniglot_real(tmp_path):
    for split, n, chars, alphabets in (('train', 19280, 964, 30), ('test', 13180, 659, 20)):
        x, y = load('omniglot', split); a = data.load_omniglot_alphabets(split)
        assert x.shape == (n, 105, 105, 1) and len(np.unique(y)) == chars and len(np.unique(a)) == alphabets
        assert set(np.bincount(y)[np.unique(y)]) == {20}                      # 20 drawers per character
        assert set(np.unique(x[:50])) == {0, 255} and 0.01 < (x[:200] == 255).mean() < 0.2   # strokes: sparse ink
        assert all(len(set(a[y == c])) == 1 for c in np.unique(y)[:50])       # a character lives in one alphabet
    assert set(np.unique(data.load_omniglot_alphabets('train'))).isdisjoint(np.unique(a))   # disjoint alphabets
    names = data.label_names('omniglot', 'alphabet')
    assert len(names) == 50 and 'Alphabet_of_the_Magi' in names
    with pytest.raises(ValueError, match="no class feature 'colour'"): data.label_names('omniglot', 'colour')


# ---------------------------------------------------------------- the images of style transfer
def _png(shape, seed=0) -> bytes:
    from PIL import Image
    import io
    b = io.BytesIO(); Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, np.uint8)).save(b, 'PNG')
    return b.getvalue()

def test_image_table_names_five_files_with_sources_and_licences():
    assert list(data.IMAGES) == ['starry_night', 'great_wave', 'monet_cliff_walk_pourville', 'chelsea_cat', 'coffee']
    for m in data.IMAGES.values():
        assert m['url'].startswith('https://') and len(m['sha256']) == len(m['source_sha256']) == 64 and m['licence']

def test_images_dir_order(tmp_path, monkeypatch):
    monkeypatch.delenv('DLFS_IMAGES_DIR', raising=False)
    monkeypatch.setenv('TFDS_DATA_DIR', str(tmp_path / 'tfds')); monkeypatch.setenv('DLFS_CACHE_DIR', str(tmp_path / 'c'))
    assert data.images_dir() == tmp_path / 'c' / 'images'                   # nothing beside the data: the cache
    (tmp_path / 'images').mkdir(); (tmp_path / 'images' / 'coffee.jpg').write_bytes(b'')
    assert data.images_dir() == tmp_path / 'images'                          # beside the TFDS data directory
    monkeypatch.setenv('DLFS_IMAGES_DIR', str(tmp_path / 'env'))
    assert data.images_dir() == tmp_path / 'env' and data.images_dir(tmp_path / 'arg') == tmp_path / 'arg'

def test_load_image_missing_names_make_data_and_unknown_lists_known(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=r'Run `make data`.*DLFS_IMAGES_DIR'):
        data.load_image('starry_night', 256, images_dir=tmp_path)
    with pytest.raises(ValueError, match='known images: starry_night'): data.load_image('mona_lisa', images_dir=tmp_path)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match='positive number of pixels'):
            data.load_image('coffee', bad, images_dir=tmp_path)

def test_recipe_shrinks_never_enlarges_and_load_image_resizes_the_long_side(tmp_path):
    from PIL import Image
    import io
    big, small = data.image_from_source(_png((600, 900, 3))), data.image_from_source(_png((300, 451, 3)))
    assert Image.open(io.BytesIO(big)).size == (512, 341) and Image.open(io.BytesIO(small)).size == (451, 300)
    data.atomic_write_bytes(tmp_path / 'starry_night.jpg', data.image_from_source(_png((1014, 1280, 3))))
    im = data.load_image('starry_night', 256, images_dir=tmp_path)
    assert im.shape == (203, 256, 3) and im.dtype == np.float32 and 0 <= im.min() and im.max() <= 1
    assert data.load_image('starry_night', images_dir=tmp_path).shape == (406, 512, 3)   # as the book's file

def _serve_image(tmp_path, monkeypatch, source: bytes, name='coffee', sha=None):
    (tmp_path / 'www').mkdir(exist_ok=True); (tmp_path / 'www' / 'src.png').write_bytes(source)
    server = _Server(tmp_path / 'www')
    meta = {**data.IMAGES[name], 'url': f'http://127.0.0.1:{server.port}/src.png',
            'source_sha256': data._sha256(source), 'sha256': sha or data._sha256(data.image_from_source(source))}
    monkeypatch.setitem(data.IMAGES, name, meta)
    return server

def test_download_image_checks_the_source_and_writes_the_file(tmp_path, monkeypatch):
    source = _png((400, 600, 3))
    with _serve_image(tmp_path, monkeypatch, source) as server:
        im = data.load_image('coffee', 64, images_dir=tmp_path / 'img', download=True)
        assert server.paths == ['/src.png'] and im.shape == (43, 64, 3)
        assert data._sha256((tmp_path / 'img' / 'coffee.jpg').read_bytes()) == data.IMAGES['coffee']['sha256']
        assert data.fetch_images(['coffee'], tmp_path / 'img') == [] and server.paths == ['/src.png']   # present: not fetched
        assert sorted(p.name for p in (tmp_path / 'img').iterdir()) == ['coffee.jpg']                # no temporary left

def test_download_image_with_a_wrong_source_writes_nothing(tmp_path, monkeypatch):
    with _serve_image(tmp_path, monkeypatch, _png((40, 60, 3))):
        monkeypatch.setitem(data.IMAGES['coffee'], 'source_sha256', '0' * 64)
        with pytest.raises(DatasetDownloadError, match='expected 0000.*nothing was written'):
            data.fetch_images(['coffee'], tmp_path / 'img')
    assert not (tmp_path / 'img').exists() or list((tmp_path / 'img').iterdir()) == []

def test_download_image_warns_when_the_jpeg_bytes_differ(tmp_path, monkeypatch):
    with _serve_image(tmp_path, monkeypatch, _png((40, 60, 3)), sha='1' * 64):
        with pytest.warns(UserWarning, match='not the book'):
            data.download_image('coffee', tmp_path / 'img')
    assert (tmp_path / 'img' / 'coffee.jpg').exists()

def test_download_image_offline_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.setitem(data.IMAGES, 'coffee', {**data.IMAGES['coffee'], 'url': f'http://127.0.0.1:{_free_port()}/x.png'})
    with pytest.raises(DatasetDownloadError, match='needs the network.*DLFS_IMAGES_DIR'):
        data.download_image('coffee', tmp_path, timeout=2)

@pytest.mark.skipif(not data.images_available(), reason=f"the book's images are not in {data.images_dir()}")
def test_book_images_match_the_table():
    for name, m in data.IMAGES.items():
        assert data._sha256((data.images_dir() / m['file']).read_bytes()) == m['sha256']
    assert data.load_image('starry_night', 256).shape == (203, 256, 3)
    assert data.load_image('chelsea_cat').shape == (300, 451, 3)
