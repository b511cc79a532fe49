"""Training across processes (chapter 18b): the collectives on simulated ranks, data-parallel SGD against one
process, the replica check, Hogwild! parity, and 2 real MPI ranks against one process (needs the `dist` extra)."""
import importlib.util, json, math, pathlib
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch import distributed as D
from dl_from_scratch.layers import Dense
from dl_from_scratch.model import Sequential
from dl_from_scratch.optim import SGD
from dl_from_scratch.losses import SparseCategoricalCrossentropy

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_shard_bounds():
    for n in range(0, 30):
        for p in range(1, 7):
            b = D.shard_bounds(n, p)
            assert b[0] == 0 and b[-1] == n and len(b) == p + 1
            sizes = np.diff(b)
            assert sizes.max() - sizes.min() <= 1 and (sizes >= 0).all()
    with pytest.raises(ValueError, match='p >= 1'): D.shard_bounds(3, 0)


def _collective(comm, algorithm, n, dtype):
    x = (np.arange(n) * (comm.rank + 1)).astype(dtype) if dtype == np.int64 else \
        np.random.default_rng(comm.rank).standard_normal(n).astype(dtype)
    mine = x.copy()
    algorithm(comm, x)
    return mine, x, comm.bytes_sent


@pytest.mark.parametrize('algorithm', [D.ring_allreduce, D.naive_allreduce])
@pytest.mark.parametrize('p', [1, 2, 3, 4, 6])
def test_allreduce_sums_with_identical_bits(algorithm, p):
    for n, dtype in ((0, np.float64), (2, np.float64), (13, np.float32), (48, np.int64), (97, np.float64)):
        out = D.run_ranks(p, _collective, algorithm, n, dtype)
        total = sum(o[0] for o in out)
        for _, x, _ in out:
            assert np.array_equal(x, out[0][1])                     # every rank: the same bits
            np.testing.assert_allclose(x, total, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5)


@pytest.mark.parametrize('p', [2, 3, 4, 6])
def test_ring_sends_2_p_minus_1_over_p_of_the_vector(p):
    n = 12 * p
    sent = [o[2] for o in D.run_ranks(p, _collective, D.ring_allreduce, n, np.float64)]
    assert sent == [2 * (p - 1) * n // p * 8] * p
    naive = [o[2] for o in D.run_ranks(p, _collective, D.naive_allreduce, n, np.float64)]
    assert naive[0] == (p - 1) * n * 8                              # the root's link carries it all
    assert D.allreduce_time(n * 8, p, 0, 1.0) == pytest.approx(sent[0])


def test_reduce_scatter_leaves_each_rank_one_complete_chunk():
    p, n = 4, 10
    out = D.run_ranks(p, lambda c: D.ring_reduce_scatter(c, np.full(n, c.rank + 1.0)))
    b = D.shard_bounds(n, p)
    for r, x in enumerate(out):
        k = (r + 1) % p
        assert (x[b[k]:b[k + 1]] == 10.0).all()


def test_bad_input_and_timeouts():
    with pytest.raises(ValueError, match='of rank 1, got shape'):
        D.run_ranks(2, lambda c: D.ring_allreduce(c, np.zeros((2, 2))))
    with pytest.raises(ValueError, match='contiguous'):
        D.run_ranks(2, lambda c: D.ring_allreduce(c, np.zeros(8)[::2]))
    with pytest.raises(TimeoutError, match='waited'):
        D.run_ranks(2, lambda c: c.recv(np.zeros(1), 1 - c.rank), timeout=0.2)
    with pytest.raises(ValueError, match='message of float64'):
        D.run_ranks(2, lambda c: c.send(np.zeros(2), 1) if c.rank == 0 else c.recv(np.zeros(3), 0))
    with pytest.raises(ValueError, match='allreduce in'):
        D.DataParallel(_net(0), None, allreduce='tree')
    with pytest.raises(ValueError, match='needs an MPIComm'):
        D.run_ranks(1, lambda c: D.DataParallel(_net(0), c, allreduce='mpi'))


def test_tree_broadcast_from_any_root():
    for p in (1, 2, 3, 5, 8):
        for root in range(p):
            out = D.run_ranks(p, lambda c: D.tree_broadcast(c, np.full(4, float(c.rank)), root).copy())
            assert all((x == root).all() for x in out)


def _net(seed):
    m = Sequential([Dense(16, activation='tanh', rng=seed), Dense(4, rng=seed + 1)], input_shape=(6,))
    m.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer=SGD(0.1, momentum=0.9))
    return m


_X = np.random.default_rng(0).standard_normal((90, 6))
_Y = (_X[:, 0] > 0).astype(np.int64) + 2 * (_X[:, 1] * _X[:, 2] > 0)


def _train(comm, batch_size):
    m = _net(seed=comm.rank)                   # every rank starts elsewhere: DataParallel broadcasts rank 0's weights
    hist = D.DataParallel(m, comm).fit(_X, _Y, epochs=2, batch_size=batch_size, rng=3, verbose=False)
    return m.get_weights(), hist, D.replicas_identical(comm, m)


@pytest.mark.parametrize('p', [2, 3, 5])
def test_data_parallel_matches_one_process_full_batch(p):
    with precision(np.float64):
        ref = _net(0)
        ref.fit(_X, _Y, epochs=2, batch_size=32, rng=3, verbose=0)     # one process, the full batches
        out = D.run_ranks(p, _train, 32)                               # 90 = 2 x 32 + 26: unequal shards
    for w, hist, same in out:
        assert same
        for a, b in zip(w, ref.get_weights()): np.testing.assert_allclose(a, b, rtol=0, atol=1e-13)
    assert math.isclose(out[0][1][-1]['loss'], ref.history.history['loss'][-1], rel_tol=1e-12)


def _train_one_epoch(comm, batch_size):
    m = _net(comm.rank)
    D.DataParallel(m, comm).fit(_X, _Y, epochs=1, batch_size=batch_size, rng=3, verbose=False)
    return m.get_weights()


def test_empty_shards_contribute_nothing():
    with precision(np.float64):
        ref = _net(0)
        ref.fit(_X, _Y, epochs=1, batch_size=4, rng=3, verbose=0)      # last batch of 2 rows on 3 ranks: one empty
        out = D.run_ranks(3, _train_one_epoch, 4)
    for w in out:
        for a, b in zip(w, ref.get_weights()): np.testing.assert_allclose(a, b, atol=1e-12)


def test_replicas_identical_detects_one_bit():
    def case(c):
        m = _net(0)
        if c.rank == 2:
            W = m.layers[0].params['W']; W.view(np.uint32)[0, 0] ^= 1   # the lowest bit of one float32
        return D.replicas_identical(c, m)
    assert D.run_ranks(3, case) == [False] * 3
    assert D.run_ranks(3, lambda c: D.replicas_identical(c, _net(0))) == [True] * 3


def test_hogwild_parity_and_convergence():
    import numba
    data = D.sparse_classification(800, 200, 6, skew=0.5, rng=2)
    w_ref = np.zeros(200, np.float32)
    l_ref = D.hogwild_sgd(*data, w_ref, lr=0.1, epochs=2, workers=4, backend='numpy')
    n0 = numba.get_num_threads(); numba.set_num_threads(1)
    try:
        w_nb = np.zeros(200, np.float32)
        l_nb = D.hogwild_sgd(*data, w_nb, lr=0.1, epochs=2, workers=4, backend='numba')   # workers in order
    finally: numba.set_num_threads(n0)
    w_cu = np.zeros(200, np.float32)
    D.hogwild_sgd(*data, w_cu, lr=0.1, epochs=2, workers=1, backend='cuda')
    np.testing.assert_allclose(w_nb, w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(w_cu, w_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(l_nb, l_ref, rtol=1e-5)
    assert l_ref[1] < l_ref[0] < math.log(2)
    serial = D.logistic_loss(*data, w_ref)[0]
    for backend, workers in (('numba', 2), ('cuda', 6)):               # concurrent: compare the loss only
        w = np.zeros(200, np.float32)
        D.hogwild_sgd(*data, w, lr=0.1, epochs=2, workers=workers, backend=backend)
        assert D.logistic_loss(*data, w)[0] < 1.05 * serial
    with pytest.raises(ValueError, match='1 <= workers'): D.hogwild_sgd(*data, w, workers=0)
    with pytest.raises(ValueError, match=r'y of shape \(800,\)'): D.hogwild_sgd(*data[:3], data[3][:10], w)


def test_speedup_model():
    assert D.data_parallel_speedup(8, 1.0, 0, 0, 0) == pytest.approx(8)
    s = D.data_parallel_speedup(np.arange(1, 200), 0.05, 2.5e5, 25e-6, 1 / 1.25e9)
    assert abs(int(np.argmax(s)) + 1 - math.sqrt(0.05 / (2 * 25e-6))) < 8      # the peak near sqrt(T_c / 2 alpha)
    with pytest.raises(ValueError, match='algorithm'): D.allreduce_time(1, 2, 0, 0, 'tree')


def _mpi_ready():
    if importlib.util.find_spec('mpi4py') is None: return "mpi4py is not installed (pip install -e '.[dist]')"
    if D.find_mpiexec() is None: return "no mpiexec beside this Python or on PATH (pip install -e '.[dist]')"
    return None


@pytest.mark.skipif(_mpi_ready() is not None, reason=str(_mpi_ready()))
def test_two_mpi_ranks_reach_the_weights_of_one_process():
    out = D.run_mpi(2, [str(ROOT / 'examples' / 'mpi_train.py'), 'equivalence'], timeout=240)
    res = json.loads(next(l for l in out.splitlines()[::-1] if l.startswith('RESULT '))[7:])
    assert res['ranks'] == 2
    for key, tol in (('float64 ring', 1e-12), ('float64 mpi', 1e-12), ('float32 ring', 1e-5), ('float32 mpi', 1e-5)):
        assert res[key]['replicas_identical'], key
        assert res[key]['max_rel_diff'] < tol, (key, res[key])


def test_mpiexec_command():
    with pytest.raises(ValueError, match='p >= 1'): D.mpiexec_command(0, ['x.py'])
    cmd = D.mpiexec_command(3, ['x.py', 1], mpiexec='/opt/mpi/bin/mpiexec')
    assert cmd[:3] == ['/opt/mpi/bin/mpiexec', '-n', '3'] and cmd[-2:] == ['x.py', '1']
    env = D.mpi_environment({})
    assert env['OMPI_ALLOW_RUN_AS_ROOT'] == '1' and env['OMPI_ALLOW_RUN_AS_ROOT_CONFIRM'] == '1'
