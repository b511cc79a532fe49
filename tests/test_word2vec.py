"""word2vec kernels (skip-gram and CBOW, negative sampling and hierarchical softmax, PV-DBOW and PV-DM): the Numba
CPU kernel on one thread and the CUDA kernel (in the simulator without a GPU) reproduce the NumPy reference; parallel
runs agree statistically; one update is one SGD step on the gradient-checked loss; training separates topics; bad
input is refused."""
import numba
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dl_from_scratch.kernels.word2vec import sgns_train, word2vec_train, word2vec_reference, _w2v_cuda, _kernel_args
from dl_from_scratch.text import unigram_table, alias_table, keep_probability, binary_w2v_loss_grad, huffman_tree
from dl_from_scratch.gradcheck import numerical_grad, rel_error


def corpus_of(n_sentences, V=24, topics=3, length=6, seed=0):
    rng = np.random.default_rng(seed)
    per = V // topics
    return np.concatenate([rng.integers(per, size=length) + per * rng.integers(topics) for _ in range(n_sentences)])

def weights(V, N, dtype, seed=0):
    rng = np.random.default_rng(seed)
    return ((rng.random((V, N)) - 0.5) / N).astype(dtype), ((rng.random((V, N)) - 0.5) / N).astype(dtype)

def run(backend, corpus, V=24, N=5, dtype=np.float64, threads=1, W=None, **kw):
    W_in, W_out = weights(V, N, dtype) if W is None else W
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
    loss_r, pairs_r = word2vec_reference(corpus, R_in, R_out, table, keep, 2, 2, 2, 0.05, chunks, 3)
    args = _kernel_args(corpus, W_in, W_out, table, keep, 2, 2, 2, 0.05, chunks, 3)
    _w2v_cuda()[chunks, 1](*args)
    loss, pairs = args[-2:]
    assert (pairs == pairs_r).all()
    np.testing.assert_allclose(loss, loss_r, rtol=1e-12)
    np.testing.assert_allclose(W_in, R_in, rtol=0, atol=1e-12)

def test_the_cpu_worker_is_compiled_for_its_mode():
    "hierarchical, cbow and compute_loss reach the CPU worker as constants, so each mode compiles without the others' branches."
    from dl_from_scratch.kernels.word2vec import _w2v_numba
    run('numba', corpus_of(3), chunks=1, compute_loss=False)
    names = _w2v_numba.py_func.__code__.co_varnames
    at = [names.index(k) for k in ('hierarchical', 'cbow', 'compute_loss')]
    sigs = _w2v_numba.signatures
    assert sigs and all(isinstance(sig[i], numba.types.Literal) for sig in sigs for i in at)
    assert (False, False, False) in {tuple(sig[i].literal_value for i in at) for sig in sigs}

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
    (dict(table=np.array([[0, 1]])), r"aliases in \[0, V'\)"), (dict(table=np.zeros((7, 2), int)), 'at most 6 rows'),
    (dict(table=np.array([[2**32, 0]])), 'thresholds below'),
    (dict(negatives=-2), 'negatives a non-negative integer'),
    (dict(W_out=np.zeros((6, 3))), 'of one shape'), (dict(W_out=np.zeros((6, 4), np.float32)), 'of one dtype'),
    (dict(docs=np.zeros(5, int)), r'docs: integer rows in \[0, 6\) of shape \(18,\)'),
    (dict(docs=np.full(18, 6)), r'docs: integer rows in \[0, 6\)'),
])
def test_bad_input(kw, match):
    args = dict(corpus=np.arange(6).repeat(3), W_in=np.zeros((6, 4)), W_out=np.zeros((6, 4)), table=np.arange(6), window=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        sgns_train(**args)


# CBOW, hierarchical softmax and PV-DM: the same kernels, other modes.

def mode_kwargs(mode, corpus, V=24):
    "word2vec_train's arguments for `mode` on `corpus` (ids < V): (rows of W_in, rows of W_out, keyword arguments)."
    counts = np.bincount(corpus, minlength=V) + 1
    tree = huffman_tree(counts)
    kw = {'cbow': dict(cbow=True), 'hs': dict(tree=tree, table=None), 'cbow-hs': dict(cbow=True, tree=tree, table=None),
          'pv-dm': dict(cbow=True, docs=V + np.arange(len(corpus)) // 6),
          'alias': dict(table=alias_table(counts)), 'cbow-alias': dict(cbow=True, table=alias_table(counts))}[mode]
    rows_in = V + (len(corpus) // 6 + 1 if mode == 'pv-dm' else 0)
    return rows_in, V - 1 if 'tree' in kw else rows_in, kw

def run_mode(backend, mode, corpus, dtype=np.float64, threads=1, **kw):
    rows_in, rows_out, mkw = mode_kwargs(mode, corpus)
    W_in, W_out = weights(rows_in, 5, dtype)
    return run(backend, corpus, V=rows_in, dtype=dtype, threads=threads, W=(W_in, W_out[:rows_out].copy()), **mkw, **kw)

MODES = ['cbow', 'hs', 'cbow-hs', 'pv-dm', 'alias', 'cbow-alias']   # alias: Walker's noise table

@pytest.mark.parametrize('mode', MODES)
@settings(max_examples=6, deadline=None)
@given(n=st.integers(3, 10), chunks=st.integers(1, 3), window=st.integers(1, 3), negatives=st.integers(0, 3),
       seed=st.integers(0, 2**31 - 1))
def test_other_modes_numba_reproduces_the_reference(mode, n, chunks, window, negatives, seed):
    corpus = corpus_of(n, seed=seed % 83)
    kw = dict(chunks=chunks, window=window, negatives=negatives, seed=seed)
    ref, got = run_mode('numpy', mode, corpus, **kw), run_mode('numba', mode, corpus, **kw)
    assert got[3] == ref[3] > 0
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12)
    assert np.isclose(got[2], ref[2], rtol=1e-12)

@pytest.mark.parametrize('mode', MODES)
def test_other_modes_cuda_reproduces_the_reference(mode):
    corpus = corpus_of(5)
    ref, got = run_mode('numpy', mode, corpus, chunks=1), run_mode('cuda', mode, corpus, chunks=1)
    assert got[3] == ref[3]
    np.testing.assert_allclose(got[0], ref[0], rtol=0, atol=1e-12)
    np.testing.assert_allclose(got[1], ref[1], rtol=0, atol=1e-12)
    if numba.config.ENABLE_CUDASIM:                             # several workers, run in turn by the simulator
        rows_in, rows_out, mkw = mode_kwargs(mode, corpus)
        W_in, W_out = weights(rows_in, 5, np.float64)
        W_out = W_out[:rows_out].copy()
        R_in, R_out = W_in.copy(), W_out.copy()
        table = mkw.pop('table') if 'table' in mkw else unigram_table(np.bincount(corpus, minlength=24) + 1, 500)
        keep = np.ones(rows_in)
        _, pairs_r = word2vec_reference(corpus, R_in, R_out, table, keep, 2, 2, 2, 0.05, 3, 3, **mkw)
        args = _kernel_args(corpus, W_in, W_out, table, keep, 2, 2, 2, 0.05, 3, 3, **mkw)
        _w2v_cuda()[3, 1](*args)
        assert (args[-1] == pairs_r).all()
        np.testing.assert_allclose(W_in, R_in, rtol=0, atol=1e-12)
        np.testing.assert_allclose(W_out, R_out, rtol=0, atol=1e-12)

def test_cbow_counts_one_example_per_word_and_pv_dm_never_targets_documents():
    corpus = corpus_of(6)
    cbow = run_mode('numpy', 'cbow', corpus, keep=np.ones(24), chunks=1, epochs=1)
    assert cbow[3] == len(corpus)                                # every word has a neighbour: one example each
    pv = run_mode('numpy', 'pv-dm', corpus, chunks=1, epochs=1)
    rows_in, _, _ = mode_kwargs('pv-dm', corpus)
    start_in, start_out = weights(rows_in, 5, np.float64)
    assert not np.allclose(pv[0][24:], start_in[24:])            # the document rows trained
    np.testing.assert_array_equal(pv[1][24:], start_out[24:])   # but never as targets

@pytest.mark.parametrize('backend', ['numpy', 'numba', 'cuda'])
def test_cbow_and_hs_steps_are_sgd_on_the_checked_loss(backend):
    rng = np.random.default_rng(5)
    W_in, W_out = rng.normal(size=(4, 3)), rng.normal(size=(4, 3))
    A, B = W_in.copy(), W_out.copy()
    # CBOW on [0, 1, 2], window 1, noise word 3: first example: 1 predicts 0; second: the mean of 0 and 2 predicts 1
    word2vec_train(np.array([0, 1, 2]), A, B, np.array([3]), window=1, negatives=1, alpha=0.1, chunks=1, backend=backend,
                   cbow=True)
    R_in, R_out = W_in.copy(), W_out.copy()
    for k, (inputs, w) in enumerate([([1], 0), ([0, 2], 1), ([1], 2)]):
        _, dh, dU = binary_w2v_loss_grad(R_in[inputs].mean(0), R_out[[w, 3]], [1, 0])
        for x in inputs: R_in[x] -= 0.1 * (1 - k / 3) * dh      # word2vec.c: the whole step on every input
        R_out[[w, 3]] -= 0.1 * (1 - k / 3) * dU
    np.testing.assert_allclose(A, R_in, atol=1e-14); np.testing.assert_allclose(B, R_out, atol=1e-14)
    # hierarchical softmax on [0, 1], window 1: input 1 predicts 0 along 0's path, then input 0 predicts 1
    points, codes = huffman_tree([5, 3, 2, 1])
    W_nodes = rng.normal(size=(3, 3))
    A, B = W_in.copy(), W_nodes.copy()
    word2vec_train(np.array([0, 1]), A, B, window=1, alpha=0.1, chunks=1, backend=backend, tree=(points, codes))
    R_in, R_nodes = W_in.copy(), W_nodes.copy()
    for x, w, a in ((1, 0, 0.1), (0, 1, 0.05)):
        _, dh, dU = binary_w2v_loss_grad(R_in[x], R_nodes[points[w]], codes[w])
        R_in[x] -= a * dh; R_nodes[points[w]] -= a * dU
    np.testing.assert_allclose(A, R_in, atol=1e-14); np.testing.assert_allclose(B, R_nodes, atol=1e-14)

def two_clusters(n_sentences=120, seed=0):
    "Sentences of 6 words, each drawn from one of two clusters of 8 words (ids 0-7 and 8-15); the sentence's cluster."
    rng = np.random.default_rng(seed)
    cluster = rng.integers(2, size=n_sentences)
    return np.concatenate([rng.integers(8, size=6) + 8 * k for k in cluster]), cluster

def separation(W):
    "Mean cosine of the rows of W to the rows of their own cluster (first half, second half), minus that to the other's."
    Wn = W / np.linalg.norm(W, axis=1, keepdims=True)
    S = Wn @ Wn.T
    half = len(W) // 2
    group = np.arange(len(W)) >= half
    same = group[:, None] == group[None, :]
    np.fill_diagonal(S, np.nan)
    return np.nanmean(np.where(same, S, np.nan), 1) - np.nanmean(np.where(~same, S, np.nan), 1)

@pytest.mark.parametrize('mode', ['cbow', 'hs', 'pv-dm'])
def test_training_puts_words_of_one_cluster_together(mode):
    corpus, cluster = two_clusters()
    V, N = 16, 8
    counts = np.bincount(corpus, minlength=V)
    W_in, W_out = ((np.random.default_rng(1).random((V + len(cluster), N)) - 0.5) / N), np.zeros((V, N))
    kw = dict(table=unigram_table(counts, 1000), cbow=mode != 'hs', alpha=0.05 if mode != 'hs' else 0.025)
    if mode == 'hs': kw.update(table=None, tree=huffman_tree(counts)); W_out = W_out[:V - 1].copy()
    if mode == 'pv-dm': kw['docs'] = V + np.arange(len(corpus)) // 6; W_out = np.zeros_like(W_in)
    else: W_in = W_in[:V].copy()
    word2vec_train(corpus, W_in, W_out, window=3, negatives=4, epochs=30, chunks=2, seed=2, backend='numba', **kw)
    assert (separation(W_in[:V]) > 0.2).all()                   # every word is nearer its own cluster
    if mode == 'pv-dm':                                          # and every document nearer its cluster's documents
        Dn = W_in[V:] / np.linalg.norm(W_in[V:], axis=1, keepdims=True)
        centre = [Dn[cluster == k].mean(0) for k in (0, 1)]
        assert ((Dn @ centre[0] > Dn @ centre[1]) == (cluster == 0)).mean() >= 0.95

def test_parallel_cbow_and_hs_agree_statistically():
    corpus = corpus_of(150, seed=5)
    for mode in ('cbow', 'hs'):
        ref = run_mode('numpy', mode, corpus, chunks=8, epochs=8)
        backends = {'numba': run_mode('numba', mode, corpus, chunks=8, epochs=8, threads=2)}
        if mode == 'cbow': backends['cuda'] = run_mode('cuda', mode, corpus, chunks=8, epochs=8)   # 8 workers at once
        for name, par in backends.items():
            assert par[3] == ref[3], (mode, name)
            assert abs(par[2] - ref[2]) < 0.1 * ref[2], (mode, name)
            Wn = par[0] / np.linalg.norm(par[0], axis=1, keepdims=True)
            S = Wn @ Wn.T; np.fill_diagonal(S, -np.inf)
            assert np.mean(S.argmax(1) // 8 == np.arange(24) // 8) >= 0.9, (mode, name)

TREE = huffman_tree(np.arange(6) + 1)

@pytest.mark.parametrize('kw,match', [
    (dict(tree=TREE), r'noise table \(negative sampling\) or a Huffman tree \(hierarchical softmax\), got both'),
    (dict(table=None), 'got neither'),
    (dict(table=None, tree=TREE), r'W_out of shape \(5, 4\) for hierarchical softmax over 6 words'),
    (dict(table=None, tree=TREE, W_out=np.zeros((5, 4)), corpus=np.arange(7).repeat(3), W_in=np.zeros((7, 4)),
          keep=np.ones(7)), 'tree to hold every word of the corpus, got id 6 in a tree of 6 words'),
    (dict(table=None, tree=(TREE[0],), W_out=np.zeros((5, 4))), r'tree = \(points, codes\) of text.huffman_tree'),
    (dict(table=None, tree=(TREE[0][:1], TREE[1][:1]), W_out=np.zeros((0, 4))), 'for each of V >= 2 words'),
    (dict(table=None, tree=([p + 5 for p in TREE[0]], TREE[1]), W_out=np.zeros((5, 4))), r"inner nodes in \[0, 5\)"),
    (dict(table=None, tree=(TREE[0], [c * 2 for c in TREE[1]]), W_out=np.zeros((5, 4))), r'code bits in \{0, 1\}'),
    (dict(table=np.array([0.5, 1.5])), 'table of ids'),
])
def test_bad_input_of_the_other_modes(kw, match):
    args = dict(corpus=np.arange(6).repeat(3), W_in=np.zeros((6, 4)), W_out=np.zeros((6, 4)), table=np.arange(6), window=5)
    args.update(kw)
    with pytest.raises(ValueError, match=match):
        word2vec_train(**args)
