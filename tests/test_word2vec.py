"""Skip-gram negative-sampling kernels: the Numba CPU kernel on one thread and the CUDA kernel (in the simulator
without a GPU) reproduce the NumPy reference; parallel runs agree statistically; one update is one SGD step on the
gradient-checked loss; bad input is refused."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dl_from_scratch.kernels.word2vec import sgns_train, sgns_reference, _sgns_cuda, _bounds
from dl_from_scratch.text import unigram_table, keep_probability, binary_w2v_loss_grad
from dl_from_scratch.gradcheck import numerical_grad, rel_error


def corpus_of(n_sentences, V=24, topics=3, length=6, seed=0):
    rng = np.random.default_rng(seed)
    per = V // topics
    return np.concatenate([rng.integers(per, size=length) + per * rng.integers(topics) for _ in range(n_sentences)])

def weights(V, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.random((V, N)) - 0.5) / N).astype(dtype), ((rng.random((V, N)) - 0.5) / N).astype(dtype)

def run(backend, corpus, V=24, N=5, dtype=np.float64, threads=1, **kw):
    W_in, W_out = weights(V, N, dtype)
    counts = np.bincount(corpus, minlength=24) + 1          # the words; rows past 24 hold document vectors
    keep = np.r_[keep_probability(counts, t=0.03), np.ones(V - len(counts))]
    args = dict(table=unigram_table(counts, 500), keep=keep, window=2, negatives=2,
                epochs=2, alpha=0.05, seed=3)
    args.update(kw)
    old = numba.get_num_threads(); numba.set_num_threads(threads)
    try: loss, pairs = sgns_train(corpus, W_in, W_out, backend=backend, **args)
    finally: numba.set_num_threads(old)
    return W_in, W_out, loss, pairs


@settings(max_examples=15, deadline=None)
@given(n=st.integers(3, 12), chunks=st.integers(1, 4), window=st.integers(1, 3), negatives=st.integers(0, 3),
       seed=st.integers(0, 2**31 - 1))
def test_numba_on_one_thread_reproduces_the_reference(n, chunks, window, negatives, seed):
    corpus = corpus_of(n, seed=seed % 97)
    kw = dict(chunks=chunks, window=window, negatives=negatives, seed=seed)
    ref, got = run('numpy', corpus, **kw), run('numba', corpus, **kw)
    assert got[3] == ref[3]
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12)
    assert np.isclose(got[2], ref[2], rtol=1e-12)

@settings(max_examples=10, deadline=None)
@given(n=st.integers(3, 10), chunks=st.integers(1, 3), n_docs=st.integers(1, 4), seed=st.integers(0, 2**31 - 1))
def test_document_vectors_numba_reproduces_the_reference(n, chunks, n_docs, seed):
    corpus = corpus_of(n, seed=seed % 89)
    docs = 24 + np.sort(np.random.default_rng(seed).integers(n_docs, size=len(corpus)))    # rows 24.. of W_in
    kw = dict(V=24 + n_docs, chunks=chunks, docs=docs, seed=seed)
    ref, got = run('numpy', corpus, **kw), run('numba', corpus, **kw)
    plain = run('numpy', corpus, V=24 + n_docs, chunks=chunks, seed=seed)
    assert got[3] == ref[3] > plain[3]                                 # one more pair per kept word
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12)
    assert not np.allclose(ref[0][24:], weights(24 + n_docs, 5, np.float64)[0][24:])    # the document rows moved
    np.testing.assert_array_equal(ref[1][24:], weights(24 + n_docs, 5, np.float64)[1][24:])   # never a target

@pytest.mark.parametrize('backend', ['numpy', 'numba', 'cuda'])
def test_without_the_loss_the_same_weights(backend):
    corpus = corpus_of(5)
    with_loss, without = run(backend, corpus, chunks=1), run(backend, corpus, chunks=1, compute_loss=False)
    assert np.isnan(without[2]) and not np.isnan(with_loss[2]) and without[3] == with_loss[3]
    np.testing.assert_allclose(without[0], with_loss[0], rtol=0, atol=1e-15)
    np.testing.assert_allclose(without[1], with_loss[1], rtol=0, atol=1e-15)

@pytest.mark.parametrize('dtype,tol', [(np.float64, 1e-12), (np.float32, 1e-5)])
def test_cuda_one_worker_reproduces_the_reference(dtype, tol):
    corpus = corpus_of(6)
    docs = 24 + np.arange(len(corpus)) // 12
    for kw in (dict(), dict(V=24 + docs.max() - 23, docs=docs)):
        ref, got = run('numpy', corpus, dtype=dtype, chunks=1, **kw), run('cuda', corpus, dtype=dtype, chunks=1, **kw)
        assert got[3] == ref[3] and got[0].dtype == dtype
        np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=tol)
        np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=tol)

@pytest.mark.skipif(not numba.config.ENABLE_CUDASIM, reason='blocks run in turn only in the simulator')
def test_cuda_workers_in_turn_reproduce_the_reference():
    corpus, V, N, chunks = corpus_of(10), 24, 5, 4
    counts = np.bincount(corpus, minlength=V) + 1
    table, keep = unigram_table(counts, 500), keep_probability(counts, t=0.03)
    W_in, W_out = weights(V, N, np.float64)
    R_in, R_out = W_in.copy(), W_out.copy()
    loss_r, pairs_r = sgns_reference(corpus, R_in, R_out, table, keep, 2, 2, 2, 0.05, chunks, 3)
    loss, pairs = np.zeros(chunks), np.zeros(chunks, np.int64)
    _sgns_cuda()[chunks, 1](corpus.astype(np.int64), np.empty(0, np.int64), _bounds(len(corpus), chunks), keep, W_in, W_out,
                            table.astype(np.int64), 2, 2, 2, 0.05, 3, True, np.empty(len(corpus), np.int64),
                            np.zeros((chunks, N)), loss, pairs)
    assert (pairs == pairs_r).all()
    np.testing.assert_allclose(loss, loss_r, rtol=1e-12)
    np.testing.assert_allclose(W_in, R_in, rtol=0, atol=1e-12)

def test_parallel_cpu_training_agrees_statistically():
    corpus = corpus_of(150, seed=5)
    kw = dict(chunks=8, epochs=8)
    ref, par = run('numpy', corpus, **kw), run('numba', corpus, threads=2, **kw)
    other_seed = run('numpy', corpus, seed=11, **kw)
    assert par[3] == ref[3]
    assert abs(par[2] - ref[2]) < max(3 * abs(other_seed[2] - ref[2]), 0.03 * ref[2])
    for W in (ref[0], par[0]):                       # each word's nearest neighbour is from its own topic
        Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
        S = Wn @ Wn.T; np.fill_diagonal(S, -np.inf)
        assert np.mean(S.argmax(1) // 8 == np.arange(24) // 8) >= 0.9

def test_one_update_is_one_sgd_step_on_the_checked_loss():
    rng = np.random.default_rng(4)
    W_in, W_out = rng.normal(size=(3, 4)), rng.normal(size=(3, 4))
    h, U = W_in[1].copy(), W_out[[0, 2]].copy()
    for backend in ('numpy', 'numba', 'cuda'):
        A, B = W_in.copy(), W_out.copy()
        # corpus [0, 1], window 1: first pair is input 1 -> output 0, noise word 2 (the only entry of the table)
        sgns_train(np.array([0, 1]), A, B, np.array([2]), window=1, negatives=1, alpha=0.1, chunks=1, backend=backend)
        _, dh, dU = binary_w2v_loss_grad(h, U, [1, 0])
        np.testing.assert_allclose(A[1], h - 0.1 * dh, atol=1e-14)
    assert rel_error(dh, numerical_grad(lambda z: binary_w2v_loss_grad(z, U, [1, 0])[0], h.copy())) < 1e-6
    assert rel_error(dU, numerical_grad(lambda z: binary_w2v_loss_grad(h, z, [1, 0])[0], U.copy())) < 1e-6

@pytest.mark.parametrize('kw,match', [
    (dict(window=-1), 'window of at least 1'), (dict(window=0), 'window of at least 1'),
    (dict(corpus=np.array([1, 2])), r'corpus longer than the window \(5\), got 2 words'),
    (dict(corpus=np.array([0.5, 1.5] * 10)), 'integer ids'),
    (dict(corpus=np.array([0, 99] * 10)), r'ids in \[0, 6\)'),
    (dict(table=np.array([7])), 'table of ids'), (dict(keep=np.ones(3)), r'keep of shape \(6,\)'),
    (dict(negatives=-2), 'negatives a non-negative integer'),
    (dict(W_out=np.zeros((6, 3))), 'of one shape'),
    (dict(docs=np.zeros(5, int)), r'docs: integer rows in \[0, 6\) of shape \(18,\)'),
    (dict(docs=np.full(18, 6)), r'docs: integer rows in \[0, 6\)'),
])
def test_bad_input(kw, match):
    args = dict(corpus=np.arange(6).repeat(3), W_in=np.zeros((6, 4)), W_out=np.zeros((6, 4)), table=np.arange(6), window=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        sgns_train(**args)
