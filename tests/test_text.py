"""Text: tokenisation, vocabularies, padding, byte-pair encoding (the incremental trainer against the plain one), and
word2vec's NumPy mathematics (full softmax, hierarchical softmax, negative sampling) checked in float64."""
from collections import Counter
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dl_from_scratch.text import (standardize, tokenize, Vocab, pad_sequences, pretokenize, bpe_train, bpe_train_naive,
                                  BPE, skipgram_pairs, cbow_windows, softmax_w2v_loss_grad, binary_w2v_loss_grad,
                                  huffman_tree, hs_probability, noise_distribution, unigram_table, keep_probability,
                                  nearest, analogy, pca_2d, phrases, join_phrases, cooccurrence, glove_weights,
                                  glove_loss_grad, glove_train, bias_direction, neutralize, equalize, SPACE,
                                  load_analogies, load_word_similarity, evaluate_analogies, evaluate_similarity,
                                  rankdata, spearman, AnalogyScore)
from dl_from_scratch.gradcheck import numerical_grad, rel_error


# ---------------------------------------------------------------- tokenising and vocabularies
def test_tokenize_words_punctuation_and_case():
    assert tokenize("Don't PANIC!<br />Really.") == ["don't", 'panic', '!', 'really', '.']
    assert tokenize("Don't PANIC!", punctuation=False, lower=False) == ["Don't", 'PANIC']
    assert tokenize('naïve café') == ['naïve', 'café']

@pytest.mark.parametrize('text', ['', '   ', '<br />'])
def test_tokenize_rejects_empty_text(text):
    with pytest.raises(ValueError, match='expected a text with at least one token'):
        tokenize(text)

def test_vocab_order_cutoffs_and_specials():
    counts = Counter(a=5, b=5, c=3, d=1)
    v = Vocab(counts)
    assert v.itos == ['<pad>', '<unk>', 'a', 'b', 'c', 'd'] and v['zzz'] == 1 and v['<pad>'] == 0
    assert Vocab(counts, min_freq=3).itos[2:] == ['a', 'b', 'c']
    assert Vocab(counts, max_size=4).itos[2:] == ['a', 'b']
    assert v.decode(v.encode(['c', 'q', 'a'])) == ['c', '<unk>', 'a']

@pytest.mark.parametrize('counts,kw', [(Counter(a=3), {}), (Counter(a=3, b=1), {'min_freq': 2}), (Counter(), {})])
def test_vocab_of_fewer_than_two_words_is_refused(counts, kw):
    with pytest.raises(ValueError, match='expected at least 2 words'):
        Vocab(counts, **kw)

def test_vocab_encode_rejects_empty_and_all_unknown():
    v = Vocab(Counter(good=2, bad=2))
    with pytest.raises(ValueError, match='at least one token, got none'): v.encode([])
    with pytest.raises(ValueError, match='only unknown ones'): v.encode('terrible awful')
    with pytest.raises(ValueError, match='at least one token'): v.encode('   ')
    assert v.encode('good awful').tolist() == [v['good'], 1]

@given(st.lists(st.lists(st.integers(1, 9), max_size=8), min_size=1, max_size=6), st.integers(1, 10),
       st.sampled_from(['pre', 'post']), st.sampled_from(['pre', 'post']))
def test_pad_sequences_as_keras(seqs, maxlen, padding, truncating):
    out = pad_sequences(seqs, maxlen, padding=padding, truncating=truncating)
    assert out.shape == (len(seqs), maxlen)
    for row, s in zip(out, seqs):
        kept = s[-maxlen:] if truncating == 'pre' else s[:maxlen]
        real = row[row != 0].tolist()
        assert real == kept                                       # the tokens kept, in order
        if kept:
            assert (row[maxlen - len(kept):] if padding == 'pre' else row[:len(kept)]).tolist() == kept

def test_pad_sequences_rejects_bad_arguments():
    with pytest.raises(ValueError, match="truncating 'pre' or 'post', got 'both'"): pad_sequences([[1]], 2, truncating='both')
    with pytest.raises(ValueError, match='maxlen a positive integer, got -1'): pad_sequences([[1]], -1)
    with pytest.raises(ValueError, match='1-D sequences'): pad_sequences([[[1]]], 2)


# ---------------------------------------------------------------- byte-pair encoding
words = st.text(alphabet='abc' + SPACE, min_size=1, max_size=7)

@settings(max_examples=60, deadline=None)
@given(st.dictionaries(words, st.integers(1, 6), min_size=1, max_size=20), st.integers(0, 40))
def test_incremental_bpe_learns_the_plain_merges(counts, n):
    assert bpe_train(counts, n) == bpe_train_naive(counts, n)

@settings(max_examples=40, deadline=None)
@given(st.lists(st.text(alphabet='ab cd,.!', min_size=1, max_size=30), min_size=1, max_size=8))
def test_bpe_round_trip_and_training_segmentation(texts):
    texts = [t for t in texts if standardize(t)] or ['a b']
    bpe = BPE.train(texts, vocab_size=30 + 2)
    for t in texts:
        assert bpe.decode(bpe.encode(t)) == standardize(t)
    # Applying the merges by rank reproduces what training did to each word.
    counts = Counter(w for t in texts for w in pretokenize(t))
    segs = {w: tuple(w) for w in counts}
    for a, b in bpe.merges:
        for w, s in segs.items():
            out, i = [], 0
            while i < len(s):
                if i < len(s) - 1 and s[i] == a and s[i + 1] == b: out.append(a + b); i += 2
                else: out.append(s[i]); i += 1
            segs[w] = tuple(out)
    assert all(bpe._segment(w) == s for w, s in segs.items())

def test_bpe_bad_input():
    bpe = BPE.train(['ab ab ab'], vocab_size=8)
    with pytest.raises(ValueError, match='non-empty text'): bpe.encode('')
    with pytest.raises(ValueError, match='known character'): bpe.encode('zz')
    with pytest.raises(ValueError, match='expected vocab_size >= 5'): BPE.train(['ab ab'], vocab_size=4)


# ---------------------------------------------------------------- word2vec mathematics
def test_windows_and_their_errors():
    ids = np.arange(10)
    c, o = skipgram_pairs(ids, 3)
    assert len(c) == 2 * (9 + 8 + 7) and (np.abs(c - o) <= 3).all() and (c != o).all()
    ctx, tgt = cbow_windows(ids, 2)
    assert ctx[0].tolist() == [1, 2] and ctx[5].tolist() == [3, 4, 6, 7] and (tgt == ids).all()
    for bad in (-1, 0):
        with pytest.raises(ValueError, match='window of at least 1'): skipgram_pairs(ids, bad)
    with pytest.raises(ValueError, match='corpus longer than the window'): skipgram_pairs(ids[:3], 5)
    with pytest.raises(ValueError, match='corpus longer than the window'): cbow_windows(ids[:2], 2)

@pytest.mark.parametrize('inputs,outputs', [([3], [1]), ([0, 2, 2, 5], [4]), ([4], [0, 1, 1, 6])])
def test_full_softmax_gradients(inputs, outputs):
    rng = np.random.default_rng(0)
    W1, W2 = rng.normal(size=(7, 4)), rng.normal(size=(4, 7))
    loss, dW1, dW2 = softmax_w2v_loss_grad(W1, W2, inputs, outputs)
    u = W2.T @ W1[inputs].mean(0)
    logp = u - np.log(np.exp(u).sum())
    assert np.isclose(loss, -logp[outputs].sum())
    assert dW1.shape == W1.shape and dW2.shape == W2.shape
    assert rel_error(dW1, numerical_grad(lambda W: softmax_w2v_loss_grad(W, W2, inputs, outputs)[0], W1.copy())) < 1e-6
    assert rel_error(dW2, numerical_grad(lambda W: softmax_w2v_loss_grad(W1, W, inputs, outputs)[0], W2.copy())) < 1e-6
    assert set(np.flatnonzero(np.abs(dW1).sum(1))) <= set(inputs)      # only the rows used get a gradient

@pytest.mark.parametrize('labels', [[1, 0, 0, 0, 0], [0, 1, 1, 0, 1]])
def test_binary_loss_gradients(labels):
    rng = np.random.default_rng(1)
    h, U = rng.normal(size=6), rng.normal(size=(5, 6)) * 3
    loss, dh, dU = binary_w2v_loss_grad(h, U, labels)
    assert rel_error(dh, numerical_grad(lambda z: binary_w2v_loss_grad(z, U, labels)[0], h.copy())) < 1e-6
    assert rel_error(dU, numerical_grad(lambda z: binary_w2v_loss_grad(h, z, labels)[0], U.copy())) < 1e-6
    assert np.isfinite(binary_w2v_loss_grad(h * 1e3, U, labels)[0])        # no overflow for large scores

@settings(max_examples=30, deadline=None)
@given(st.lists(st.integers(1, 1000), min_size=2, max_size=40))
def test_huffman_leaves_sum_to_one_and_codes_are_optimal(counts):
    points, codes = huffman_tree(counts)
    V = len(counts)
    assert all(len(p) == len(c) and ((0 <= p) & (p < V - 1)).all() for p, c in zip(points, codes))
    bits = [''.join(map(str, c)) for c in codes]
    assert not any(a != b and b.startswith(a) for a in bits for b in bits)          # a prefix code
    rng = np.random.default_rng(len(counts))
    Wn, h = rng.normal(size=(V - 1, 3)), rng.normal(size=3)
    assert np.isclose(sum(hs_probability(h, Wn, p, c) for p, c in zip(points, codes)), 1.0)
    f = np.asarray(counts) / sum(counts)
    L = np.array([len(c) for c in codes])
    H = -(f * np.log2(f)).sum()
    assert H - 1e-9 <= f @ L < H + 1                                               # within one bit of the entropy

def test_hierarchical_softmax_worked_example():
    W = np.log(np.array([[0.4 / 0.6], [0.8 / 0.2]]))
    assert np.isclose(hs_probability(np.ones(1), W, np.array([0, 1]), np.array([0, 1])), 0.6 * 0.8)

def test_unigram_table_and_subsampling():
    counts = np.array([0, 10, 100, 1000, 10000])
    p = noise_distribution(counts)
    assert np.allclose(p, counts ** 0.75 / (counts ** 0.75).sum())
    share = np.bincount(unigram_table(counts, 10 ** 5), minlength=5) / 10 ** 5
    assert np.abs(share - p).max() < 2e-5 and share[0] == 0
    keep = keep_probability(counts[1:], t=1e-3)
    f = counts[1:] / counts.sum()
    assert np.allclose(keep, np.minimum(1, np.sqrt(1e-3 / f))) and keep[0] == 1 and keep[-1] < 0.05
    with pytest.raises(ValueError, match='positive count'): noise_distribution([0, 0])
    c_keep = keep_probability(counts[1:], t=1e-3, rule='word2vec.c')   # word2vec.c: (sqrt(f/t) + 1) t/f
    assert np.allclose(c_keep, np.minimum(1, (np.sqrt(f / 1e-3) + 1) * 1e-3 / f)) and (c_keep >= keep).all()
    with pytest.raises(ValueError, match="rule 'paper' or 'word2vec.c'"): keep_probability(counts, rule='x')

def test_nearest_analogy_pca():
    E = np.array([[1., 0, 0], [0.9, 0.1, 0], [0, 1, 0], [0, 0.9, 0.1], [0, 0, 1]])
    ids, cos = nearest(E, E[0], topn=2)
    assert ids.tolist() == [0, 1] and np.isclose(cos[0], 1)
    assert nearest(E, E[0], topn=1, exclude=[0])[0].tolist() == [1]
    # man(0) : woman(2) :: king(1) : queen(3), in a space where "royal" is the small third axis shift
    assert analogy(E, 0, 2, 1)[0].tolist() == [3]
    P = pca_2d(E)
    assert P.shape == (5, 2) and np.allclose(P.mean(0), 0)


def test_phrases_score_as_gensim_and_join():
    sents = [['new', 'york', 'is', 'big']] * 30 + [['big', 'is', 'new']] * 5
    words = Counter(w for s in sents for w in s)
    V = len(words) + len({p for s in sents for p in zip(s, s[1:])})
    found = phrases(sents, min_count=25, threshold=0)
    assert np.isclose(found[('new', 'york')], (30 - 25) / (35 * 30) * V)
    assert ('big', 'is') not in found                                     # 5 < min_count: never above zero
    assert set(phrases(sents, min_count=25, threshold=found[('new', 'york')])) == set()   # strictly above
    assert join_phrases(['new', 'york', 'new', 'york', 'is'], found) == ['new_york', 'new_york', 'is']


def test_cooccurrence_counts_and_errors():
    X = cooccurrence(np.array([1, 2, 1, 3]), 2, 4)
    assert np.array_equal(X, X.T) and X[1, 2] == 2 + 0 and X[1, 3] == 1 and X[2, 3] == 0.5
    assert X[1, 1] == 2 * 0.5                      # a word twice at distance 2: both directions land on the diagonal, as in GloVe
    with pytest.raises(ValueError, match='window of at least 1'): cooccurrence(np.arange(5), -1, 5)
    with pytest.raises(ValueError, match='corpus longer than the window'): cooccurrence(np.arange(3), 3, 5)

def test_glove_gradients_and_fit():
    rng = np.random.default_rng(0)
    X = rng.integers(0, 300, size=(5, 5)).astype(float); X = X + X.T; X[0, 1] = X[1, 0] = 0
    f, log_x = glove_weights(X)
    assert f[0, 1] == 0 and f.max() == 1 and np.all(f[X > 0] > 0)
    P = [rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=5), rng.normal(size=5)]
    J, *grads = glove_loss_grad(*P, f, log_x)
    R = P[0] @ P[1].T + P[2][:, None] + P[3][None, :] - np.log(np.where(X > 0, X, 1))
    assert np.isclose(J, (f * R ** 2)[X > 0].sum())
    for k, g in enumerate(grads):
        def J_of(z, k=k):
            Q = list(P); Q[k] = z
            return glove_loss_grad(*Q, f, log_x)[0]
        assert rel_error(g, numerical_grad(J_of, P[k].copy())) < 1e-6
    E, losses = glove_train(X, 4, epochs=400, lr=0.3, dtype=np.float64)
    assert E.shape == (5, 4) and losses[-1] < 1e-3 * losses[0]

def test_debiasing():
    rng = np.random.default_rng(1)
    E = rng.normal(size=(6, 8))
    g = bias_direction(E, [(0, 1), (2, 3)])
    En = E / np.linalg.norm(E, axis=1, keepdims=True)
    assert np.allclose(g, ((En[0] - En[1]) + (En[2] - En[3])) / 2)
    assert abs(neutralize(E[4], g) @ g) < 1e-12
    a, b = equalize(E[0], E[1], g)
    assert np.allclose(neutralize(a, g), neutralize(b, g)) and np.isclose(a @ g, -(b @ g))
    assert np.allclose([np.linalg.norm(a), np.linalg.norm(b)], 1)
    w = neutralize(E[5], g)
    assert np.isclose(np.linalg.norm(a - w), np.linalg.norm(b - w))


# ---------------------------------------------------------------- benchmarks for word vectors
def test_shipped_benchmarks_load():
    q = load_analogies()
    assert len(q) == 14 and sum(map(len, q.values())) == 19544
    assert all(len(t) == 4 and all(w == w.lower() for w in t) for qs in q.values() for t in qs)
    assert [len(load_word_similarity(n)) for n in ('wordsim353', 'simlex999')] == [353, 999]
    with pytest.raises(ValueError, match="got 'men'"): load_word_similarity('men')

@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 5), st.integers(-3, 3)), min_size=3, max_size=30))
def test_spearman_with_ties_as_scipy(xy):
    scipy_stats = pytest.importorskip('scipy.stats')
    x, y = np.array(xy, dtype=float).T
    assert np.allclose(rankdata(x), scipy_stats.rankdata(x))
    if np.ptp(x) > 0 and np.ptp(y) > 0:
        assert np.isclose(spearman(x, y), scipy_stats.spearmanr(x, y).statistic, atol=1e-12)

def _structured_vectors(q, seed=0, noise=0.9):
    "Random vectors for the words of `q`, each section's answers d = c + one offset + noise: partly right."
    rng = np.random.default_rng(seed)
    words = sorted({w for qs in q.values() for t in qs for w in t})
    row = {w: i for i, w in enumerate(words)}
    E = rng.normal(size=(len(words), 20))
    for qs in q.values():
        offset = rng.normal(size=20)
        for a, b, c, d in qs[::7]: E[row[d]] = E[row[c]] + offset + noise * rng.normal(size=20)
    return E, words

def test_analogies_as_gensim(tmp_path):
    gensim_models = pytest.importorskip('gensim.models')
    q_all = load_analogies()
    q = {k: q_all[k][:300] for k in ('capital-common-countries', 'family', 'gram1-adjective-to-adverb')}
    E, words = _structured_vectors(q)
    order = np.random.default_rng(1).permutation(len(words))          # a frequency order with words in and out
    E, words = E[order].astype(np.float32), [words[i] for i in order]
    kv = gensim_models.KeyedVectors(20); kv.add_vectors(words, E)
    path = tmp_path / 'questions.txt'
    path.write_text(''.join(f": {k}\n" + ''.join(' '.join(t) + '\n' for t in ts) for k, ts in q.items()))
    restrict = len(words) * 3 // 4
    _, sections = kv.evaluate_word_analogies(str(path), restrict_vocab=restrict)
    ours = evaluate_analogies(E, words, q, restrict_vocab=restrict, batch=64)
    for s in sections[:-1]:
        sc = ours[s['section']]
        assert (sc.correct, sc.asked) == (len(s['correct']), len(s['correct']) + len(s['incorrect'])), s['section']
    assert 0 < ours['total'].correct < ours['total'].asked < ours['total'].total
    assert ours['total'].correct == len(sections[-1]['correct'])

def test_analogy_groups_and_restriction():
    q = load_analogies()
    E, words = _structured_vectors(q, noise=0.3)
    sc = evaluate_analogies(E, words, q, restrict_vocab=None)
    assert sc['semantic'].asked == sum(sc[k].asked for k in list(q)[:5]) == 8869
    assert sc['syntactic'].total == 10675 and sc['total'].asked == 19544
    assert sc['total'] == AnalogyScore(*(a + b for a, b in zip(sc['semantic'], sc['syntactic'])))
    assert 0.05 < sc['total'].accuracy < 1
    assert evaluate_analogies(E, words, q, restrict_vocab=10)['total'].asked == 0

def test_similarity_as_gensim():
    gensim_models = pytest.importorskip('gensim.models')
    pairs = load_word_similarity('wordsim353')
    words = sorted({w for a, b, _ in pairs for w in (a, b)})
    rng = np.random.default_rng(0)
    E = rng.normal(size=(len(words), 10)).astype(np.float32)
    kv = gensim_models.KeyedVectors(10); kv.add_vectors(words, E)
    import gensim.test.utils
    _, (rho, _), oov = kv.evaluate_word_pairs(gensim.test.utils.datapath('wordsim353.tsv'), restrict_vocab=300)
    ours = evaluate_similarity(E, words, pairs, restrict_vocab=300)
    assert np.isclose(ours.spearman, rho, atol=1e-6) and np.isclose(100 * (1 - ours.pairs / ours.total), oov)
    with pytest.raises(ValueError, match='at least 2 pairs'): evaluate_similarity(E, words, pairs[:1])
