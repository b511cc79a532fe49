"Attention and the transformer: layers gradient-checked in float64, masks, blocks, the warm-up schedule, BLEU, beam search, CTC."
import math
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.merge import check_graph_grad
from dl_from_scratch.model import Model, Input
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.optim import Adam
from dl_from_scratch.attention import (
    scaled_dot_product_attention, scaled_dot_product_attention_backward, masked_softmax, causal_mask, padding_mask,
    MultiHeadAttention, positional_encoding, PositionalEncoding, LayerNorm, PositionwiseDense,
    TransformerEncoderBlock, TransformerDecoderBlock, NoamSchedule, Attention,
    ngrams, modified_precision, brevity_penalty, closest_ref_length, corpus_bleu, sentence_bleu,
    beam_search, greedy_search, sequence_score, sequence_log_prob, blame, ctc_collapse,
    DATE_FORMATS, human_date, date_pairs)
import datetime

TOL = 1e-6
r = np.random.default_rng(13)
PAD = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool)


class WithKeywords:
    "A layer with forward's keywords (masks) bound, as check_graph_grad calls it."
    def __init__(self, layer, **kw): self.layer, self.kw = layer, kw
    params = property(lambda s: s.layer.params)
    grads = property(lambda s: s.layer.grads)
    input_shape = property(lambda s: s.layer.input_shape)
    def __call__(self, a, training=False): return self.layer(a, training, **self.kw)
    def forward(self, a, training=False): return self.layer.forward(a, training, **self.kw)
    def backward(self, g): return self.layer.backward(g)


def grad_errors(layer, xs, **kw):
    "Relative errors of every input's and weight's gradient; the key biases (gradient exactly 0) are checked as zero."
    with precision(np.float64):
        e = check_graph_grad(WithKeywords(layer, **kw), xs)
    for k in [k for k in e if k.endswith('bk')]:
        assert np.abs(layer.grads[k]).max() < 1e-12, k
        del e[k]
    return e


# --- scaled dot-product attention ------------------------------------------------------------------
def test_sdpa_matches_definition_and_masks():
    Q, K, V = r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 4)), r.standard_normal((2, 5, 6))
    O, c = scaled_dot_product_attention(Q, K, V, PAD[:, None, :])
    for n in range(2):
        for i in range(3):
            s = np.array([Q[n, i] @ K[n, j] / 2 if PAD[n, j] else -np.inf for j in range(5)])
            w = np.exp(s - s.max()); w /= w.sum()
            np.testing.assert_allclose(c.A[n, i], w, atol=1e-12)
            np.testing.assert_allclose(O[n, i], w @ V[n], atol=1e-12)


def test_sdpa_gradcheck_padding_and_causal():
    Q, K, V = r.standard_normal((2, 2, 5, 4)), r.standard_normal((2, 2, 5, 4)), r.standard_normal((2, 2, 5, 3))
    mask = PAD[:, None, None, :] & causal_mask(5)
    G = r.standard_normal((2, 2, 5, 3))
    loss = lambda: float((scaled_dot_product_attention(Q, K, V, mask)[0] * G).sum())
    grads = scaled_dot_product_attention_backward(G, scaled_dot_product_attention(Q, K, V, mask)[1])
    for g, a in zip(grads, (Q, K, V)):
        assert rel_error(g, numerical_grad(lambda _: loss(), a)) < TOL


def test_causal_output_ignores_the_future():
    Q, K, V = (r.standard_normal((1, 6, 4)) for _ in range(3))
    O = scaled_dot_product_attention(Q, K, V, causal_mask(6))[0]
    K2, V2 = K.copy(), V.copy(); K2[:, 4:] += 3; V2[:, 4:] -= 2
    np.testing.assert_allclose(scaled_dot_product_attention(Q, K2, V2, causal_mask(6))[0][:, :4], O[:, :4], atol=1e-12)


def test_fully_masked_row_is_zero_not_nan():
    A = masked_softmax(r.standard_normal((2, 3)), np.array([[True, False, True], [False, False, False]]))
    assert np.isfinite(A).all() and A[1].sum() == 0 and abs(A[0].sum() - 1) < 1e-12 and A[0, 1] == 0


def test_sdpa_bad_input():
    Q, K, V = np.zeros((2, 3, 4)), np.zeros((2, 5, 4)), np.zeros((2, 5, 6))
    with pytest.raises(ValueError, match='same length'): scaled_dot_product_attention(Q, K, V[:, :4])
    with pytest.raises(ValueError, match='broadcasts'): scaled_dot_product_attention(Q, K, V, np.ones((2, 3, 4), bool))
    with pytest.raises(ValueError, match='broadcasts'): scaled_dot_product_attention(Q, K, V, np.ones((3, 3, 5), bool))
    with pytest.raises(ValueError, match='0/1'): scaled_dot_product_attention(Q, K, V, np.full((3, 5), 2))
    with pytest.raises(ValueError, match='d_k'): scaled_dot_product_attention(Q, K[..., :3], V)


def test_padding_mask():
    np.testing.assert_array_equal(padding_mask([[5, 3, 0, 0]]), [[True, True, False, False]])


# --- multi-head attention --------------------------------------------------------------------------
def test_mha_equals_loop_over_heads():
    with precision(np.float64):
        x = r.standard_normal((2, 5, 8))
        mha = MultiHeadAttention(4, rng=0)
        y = mha(x, mask=PAD)
        P = mha.params
        heads = [scaled_dot_product_attention(*(x @ P['W' + n][:, 2 * i:2 * i + 2] + P['b' + n][2 * i:2 * i + 2] for n in 'qkv'),
                                              PAD[:, None, :])[0] for i in range(4)]
        np.testing.assert_allclose(y, np.concatenate(heads, -1) @ P['Wo'] + P['bo'], atol=1e-12)
        assert mha.attention_weights.shape == (2, 4, 5, 5) and not mha.attention_weights[1, :, :, 3:].any()


@pytest.mark.parametrize('causal', [False, True])
def test_mha_self_attention_gradcheck(causal):
    with precision(np.float64):
        e = grad_errors(MultiHeadAttention(2, causal=causal, rng=1), [r.standard_normal((2, 4, 6))],
                        mask=np.array([[1, 1, 1, 1], [1, 1, 0, 0]], bool))
    assert len(e) == 8 and max(e.values()) < TOL, e


def test_mha_cross_and_separate_key_gradcheck():
    with precision(np.float64):
        e = grad_errors(MultiHeadAttention(2, d_model=4, rng=2), [r.standard_normal((2, 3, 6)), r.standard_normal((2, 5, 5))],
                        mask=np.ones((2, 3, 5), bool))
        assert max(e.values()) < TOL, e
        e = grad_errors(MultiHeadAttention(2, use_bias=False, rng=3),
                        [r.standard_normal((2, 3, 4)), r.standard_normal((2, 5, 3)), r.standard_normal((2, 5, 2))])
        assert set(e) == {'x0', 'x1', 'x2', 'Wq', 'Wk', 'Wv', 'Wo'} and max(e.values()) < TOL, e


def test_mha_bad_input():
    with pytest.raises(ValueError, match='divisible'): MultiHeadAttention(3, d_model=8)
    with pytest.raises(ValueError, match='divisible'): MultiHeadAttention(3)(np.zeros((1, 2, 8)))
    with pytest.raises(ValueError, match='num_heads'): MultiHeadAttention(0)
    with pytest.raises(ValueError, match='same length'):
        MultiHeadAttention(2, rng=0)([np.zeros((1, 2, 4)), np.zeros((1, 3, 4)), np.zeros((1, 4, 4))])
    mha = MultiHeadAttention(2, rng=0)
    with pytest.raises(ValueError, match='mask of shape'): mha(np.zeros((2, 3, 4)), mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match='mask of shape'): mha(np.zeros((2, 3, 4)), mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match='built for'): mha([np.zeros((2, 3, 4)), np.zeros((2, 3, 4))])


# --- positional encoding, LayerNorm, position-wise dense ------------------------------------------
def test_positional_encoding_sin_even_cos_odd():
    PE = positional_encoding(20, 6)
    for pos in (0, 7, 19):
        for i in range(3):
            angle = pos / 10000 ** (2 * i / 6)
            assert abs(PE[pos, 2 * i] - math.sin(angle)) < 1e-12 and abs(PE[pos, 2 * i + 1] - math.cos(angle)) < 1e-12
    assert positional_encoding(3, 5).shape == (3, 5)          # an odd width: the last dimension is a sine
    with precision(np.float64):
        e = check_layer_grad(PositionalEncoding(), r.standard_normal((2, 3, 4)))
        assert e['x'] < TOL
        np.testing.assert_allclose(PositionalEncoding()(np.ones((1, 4, 6))), 1 + positional_encoding(4, 6)[None], atol=1e-12)


def test_layernorm_and_gradcheck():
    with precision(np.float64):
        ln = LayerNorm()
        z = ln(3 + 2 * r.standard_normal((2, 4, 6)))
        np.testing.assert_allclose(z.mean(-1), 0, atol=1e-12)
        np.testing.assert_allclose(z.var(-1), 1, atol=1e-4)
        ln2 = LayerNorm(); ln2(np.zeros((1, 5)))
        ln2.params['gamma'][:] = r.standard_normal(5); ln2.params['beta'][:] = r.standard_normal(5)
        for layer, x in ((LayerNorm(), r.standard_normal((2, 4, 6))), (ln2, r.standard_normal((3, 5)))):
            e = check_layer_grad(layer, x)
            assert max(e.values()) < TOL, e
    with pytest.raises(ValueError, match='eps'): LayerNorm(eps=0)


def test_positionwise_dense_gradcheck_and_shape():
    with precision(np.float64):
        e = check_layer_grad(PositionwiseDense(5, 'tanh', rng=0), r.standard_normal((2, 3, 4)))
        assert max(e.values()) < TOL, e
    assert PositionwiseDense(7)(np.zeros((2, 3, 5, 4))).shape == (2, 3, 5, 7)
    with pytest.raises(ValueError, match='softmax'): PositionwiseDense(3, 'softmax')


# --- transformer blocks -----------------------------------------------------------------------------
@pytest.mark.parametrize('norm_first', [False, True])
def test_encoder_block_gradcheck(norm_first):
    with precision(np.float64):
        e = grad_errors(TransformerEncoderBlock(2, 12, norm_first=norm_first, rng=0), [r.standard_normal((2, 4, 8))],
                        mask=np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool))
    assert len(e) == 16 and max(e.values()) < TOL, e


@pytest.mark.parametrize('norm_first', [False, True])
def test_decoder_block_gradcheck(norm_first):
    with precision(np.float64):
        e = grad_errors(TransformerDecoderBlock(2, 12, norm_first=norm_first, rng=1),
                        [r.standard_normal((2, 3, 8)), r.standard_normal((2, 4, 6))],
                        mask=np.array([[1, 1, 1], [1, 1, 0]], bool), memory_mask=np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool))
    assert len(e) == 26 and max(e.values()) < TOL, e


class FixedDropout(WithKeywords):
    "A layer whose dropout masks are the same at every forward: the generator's state is put back before each call."
    def __init__(self, layer, rng, **kw):
        super().__init__(layer, **kw)
        self.rng, self.state = rng, rng.bit_generator.state
    def __call__(self, a, training=False):
        self.rng.bit_generator.state = self.state; return super().__call__(a, training)
    def forward(self, a, training=False):
        self.rng.bit_generator.state = self.state; return super().forward(a, training)


def dropout_grad_errors(layer, xs, **kw):
    "Gradient check of `layer` in training with dropout active and the masks fixed (key biases checked as zero)."
    with precision(np.float64):
        e = check_graph_grad(FixedDropout(layer, layer.rng, **kw), xs)
    for k in [k for k in e if k.endswith('bk')]:
        assert np.abs(layer.grads[k]).max() < 1e-12, k
        del e[k]
    return e


def test_mha_dropout_gradcheck_and_masks_weights():
    with precision(np.float64):
        mha = MultiHeadAttention(2, causal=True, rng=4, dropout=0.4)
        x = r.standard_normal((2, 5, 6))
        e = dropout_grad_errors(mha, [x], mask=np.array([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]], bool))
        assert max(e.values()) < TOL, e
        y_train = mha.forward(x, training=True)
        A = mha.attention_weights                          # before dropout; the dropped weights are 0 or A / 0.6
        Ad = A * mha.dropout.cache
        assert ((Ad == 0) | np.isclose(Ad, A / 0.6)).all() and (Ad[A > 0] == 0).any()
        y_test = mha(x)
        assert np.abs(y_train - y_test).max() > 1e-3      # dropout acted in training


@pytest.mark.parametrize('norm_first', [False, True])
def test_block_dropout_gradcheck(norm_first):
    "Both blocks with dropout 0.3 on the sub-layers' outputs and the attention weights, the masks fixed by the seed."
    with precision(np.float64):
        enc = TransformerEncoderBlock(2, 12, norm_first=norm_first, rng=0, dropout=0.3)
        e = dropout_grad_errors(enc, [r.standard_normal((2, 4, 8))], mask=np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool))
        assert len(e) == 16 and max(e.values()) < TOL, e
        dec = TransformerDecoderBlock(2, 12, norm_first=norm_first, rng=1, dropout=0.3)
        e = dropout_grad_errors(dec, [r.standard_normal((2, 3, 8)), r.standard_normal((2, 4, 6))])
        assert len(e) == 26 and max(e.values()) < TOL, e


def test_block_dropout_only_in_training():
    "Inference ignores dropout: the same weights give the same output with and without it; training differs."
    with precision(np.float64):
        x = r.standard_normal((3, 5, 8))
        plain = TransformerEncoderBlock(2, 16, norm_first=True, rng=0)
        drop = TransformerEncoderBlock(2, 16, norm_first=True, rng=0, dropout=0.5)
        y = plain(x)
        drop(x)
        for k in plain.params: drop.params[k][...] = plain.params[k]
        np.testing.assert_array_equal(drop(x), y)
        np.testing.assert_array_equal(drop.forward(x, training=False), y)
        assert np.abs(drop.forward(x, training=True) - y).max() > 1e-3
        np.testing.assert_array_equal(plain.forward(x, training=True), y)     # dropout 0: training is inference
    assert sorted(drop.params) == sorted(plain.params)                          # dropout adds no weights
    with pytest.raises(ValueError, match='dropout'): TransformerEncoderBlock(2, 16, dropout=1.0)
    with pytest.raises(ValueError, match='rate'): MultiHeadAttention(2, dropout=-0.1)


def test_model_with_dropout_blocks_saves_and_loads(tmp_path):
    inp = Input((None, 8))
    h = TransformerEncoderBlock(2, 16, norm_first=True, rng=0, dropout=0.25)(inp)
    g = TransformerDecoderBlock(2, 16, rng=1, dropout=0.1)([h, h])
    model = Model(inp, PositionwiseDense(3, rng=2)(g))
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    y = model.predict(x)
    model.save(tmp_path / 'm.npz')
    loaded = Model.load(tmp_path / 'm.npz')
    np.testing.assert_array_equal(loaded.predict(x), y)
    rates = sorted(l.drops[0].rate for l in loaded.layers if isinstance(l, (TransformerEncoderBlock, TransformerDecoderBlock)))
    assert rates == [0.1, 0.25]
    mhas = [l for b in loaded.layers if isinstance(b, (TransformerEncoderBlock, TransformerDecoderBlock))
            for l in b.layers if isinstance(l, MultiHeadAttention)]
    assert sorted(m.dropout.rate for m in mhas) == [0.1, 0.1, 0.25]


def test_blocks_respect_masks():
    with precision(np.float64):
        x, m = r.standard_normal((2, 4, 8)), np.array([[1, 1, 1, 1], [1, 1, 1, 0]], bool)
        enc = TransformerEncoderBlock(2, 16, rng=0)
        y = enc(x, mask=m)
        x2 = x.copy(); x2[1, 3] += 5
        np.testing.assert_allclose(enc(x2, mask=m)[1, :3], y[1, :3], atol=1e-12)
        dec = TransformerDecoderBlock(2, 16, rng=1)
        yd = r.standard_normal((2, 3, 8))
        o = dec([yd, x], memory_mask=m)
        yd2 = yd.copy(); yd2[:, 2] += 1
        x3 = x.copy(); x3[1, 3] -= 4
        np.testing.assert_allclose(dec([yd2, x3], memory_mask=m)[:, :2], o[:, :2], atol=1e-12)


def test_block_in_a_model_trains():
    "An embedding-free sequence tagger (encoder block -> position-wise logits) learns to copy the sign of a feature."
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 6, 8)).astype(np.float32)
    y = (x[..., 0] > 0).astype(np.int64)
    inp = Input((None, 8))
    model = Model(inp, PositionwiseDense(2, rng=1)(TransformerEncoderBlock(2, 16, norm_first=True, rng=0)(inp)))
    model.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.01), metrics=['accuracy'])
    h = model.fit(x, y, epochs=15, batch_size=16, verbose=0, rng=0)
    assert h.history['loss'][-1] < 0.5 * h.history['loss'][0] and h.history['accuracy'][-1] > 0.9


def test_model_with_blocks_saves_and_loads(tmp_path):
    inp = Input((None, 8))
    h = TransformerEncoderBlock(2, 16, norm_first=True, rng=0)(PositionalEncoding(2.0)(inp))
    g = TransformerDecoderBlock(2, 16, rng=1)([h, h])
    model = Model(inp, PositionwiseDense(3, rng=2)(LayerNorm()(g)))
    x = np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32)
    y = model.predict(x)
    model.save(tmp_path / 'm.npz')
    np.testing.assert_array_equal(Model.load(tmp_path / 'm.npz').predict(x), y)


# --- warm-up schedule -----------------------------------------------------------------------------------
def test_noam_schedule():
    s = NoamSchedule(512, 4000)
    lrs = np.array([s(e) for e in range(10000)])
    assert int(lrs.argmax()) == 3999 and abs(lrs.max() - (512 * 4000) ** -0.5) < 1e-15
    assert (np.diff(lrs[:3999]) > 0).all() and (np.diff(lrs[3999:]) < 0).all()
    opt = Adam(lr=NoamSchedule(64, 10, factor=2.0, steps_per_epoch=5)); opt.epoch = 1.4
    assert abs(opt.current_lr - 2 * 64 ** -0.5 * 8 * 10 ** -1.5) < 1e-12
    for bad in ({'warmup_steps': 0}, {'d_model': 1.5}, {'factor': -1.0}, {'steps_per_epoch': 0}):
        with pytest.raises(ValueError): NoamSchedule(**{'d_model': 64, **bad})


# --- attention scores of recurrent decoders --------------------------------------------------------------
@pytest.mark.parametrize('score,units', [('dot', None), ('general', None), ('additive', 5)])
def test_rnn_attention_gradcheck(score, units):
    hs, ss = r.standard_normal((2, 5, 4)), r.standard_normal((2, 3, 4))
    e = grad_errors(Attention(score, units, rng=0), [ss, hs], mask=PAD)
    assert max(e.values()) < TOL, e
    if score != 'dot':
        e = grad_errors(Attention(score, units, rng=0), [r.standard_normal((2, 3, 3)), hs])
        assert max(e.values()) < TOL, e


def test_rnn_attention_context_is_weighted_sum():
    with precision(np.float64):
        hs, ss = r.standard_normal((2, 5, 4)), r.standard_normal((2, 1, 4))
        att = Attention('additive', 3, rng=0)
        c = att([ss, hs], mask=PAD)
        W1, W2, v = att.params['W1'], att.params['W2'], att.params['v']
        for n in range(2):
            e = np.array([v @ np.tanh(W1.T @ hs[n, t] + W2.T @ ss[n, 0]) if PAD[n, t] else -np.inf for t in range(5)])
            a = np.exp(e - e.max()); a /= a.sum()
            np.testing.assert_allclose(att.alpha[n, 0], a, atol=1e-12)
            np.testing.assert_allclose(c[n, 0], a @ hs[n], atol=1e-12)


def test_rnn_attention_bad_input():
    with pytest.raises(ValueError, match='Ds == Dh'): Attention('dot')([np.zeros((1, 2, 3)), np.zeros((1, 4, 5))])
    with pytest.raises(ValueError, match='units'): Attention('additive')
    with pytest.raises(ValueError, match='units'): Attention('dot', units=3)
    with pytest.raises(ValueError, match='score'): Attention('cosine')
    with pytest.raises(ValueError, match='mask'): Attention('dot')([np.zeros((2, 3, 4)), np.zeros((2, 5, 4))], mask=np.ones((2, 3)))


# --- BLEU -----------------------------------------------------------------------------------------------------
REF1, REF2 = 'the cat is on the mat'.split(), 'there is a cat on the mat'.split()


def test_bleu_source_examples():
    assert modified_precision(['the'] * 7, [REF1, REF2], 1) == (2, 7)
    assert modified_precision('the cat the cat on the mat'.split(), [REF1, REF2], 2) == (4, 6)
    assert ngrams('a b a b'.split(), 2) == {('a', 'b'): 2, ('b', 'a'): 1}


def test_bleu_formula():
    cand = 'the cat is on the red mat'.split()
    p = [6 / 7, 4 / 6, 3 / 5, 2 / 4]
    assert abs(sentence_bleu(cand, [REF1, REF2]) - math.exp(np.mean(np.log(p)))) < 1e-12
    short = 'the cat is on'.split()                         # c = 4, closest r = 6: brevity penalty exp(1 - 6/4)
    assert closest_ref_length(4, [REF1, REF2]) == 6 and abs(brevity_penalty(4, 6) - math.exp(-0.5)) < 1e-15
    assert abs(sentence_bleu(short, [REF1, REF2]) - math.exp(-0.5)) < 1e-12
    assert closest_ref_length(5, ['a b c d'.split(), 'a b c d e f'.split()]) == 4     # a tie goes to the shorter
    assert sentence_bleu(REF1, [REF1]) == 1.0 and sentence_bleu(['dog'], [REF1]) == 0.0
    assert brevity_penalty(0, 3) == 0.0


def test_bleu_bad_input():
    with pytest.raises(ValueError, match='non-empty'): sentence_bleu(['a'], [[]])
    with pytest.raises(ValueError, match='non-empty'): sentence_bleu(['a'], [])
    with pytest.raises(ValueError, match='one list of references per candidate'): corpus_bleu([['a']], [])


def test_corpus_bleu_equals_sacrebleu():
    sacrebleu = pytest.importorskip('sacrebleu', reason='sacrebleu (a test-only dependency, dev extra) is not installed')
    rs = np.random.default_rng(3)
    words = 'the a cat dog sat on mat rug is was there here big small'.split()
    refs, cands = [], []
    for _ in range(300):
        rf = list(rs.choice(words, rs.integers(3, 16)))
        cands.append([w if rs.random() < 0.75 else str(rs.choice(words)) for w in rf][:len(rf) - rs.integers(0, 4)])
        refs.append([rf, list(rs.choice(words, rs.integers(3, 16)))])
    ours = corpus_bleu(cands, refs)
    theirs = sacrebleu.corpus_bleu([' '.join(c) for c in cands], [[' '.join(rf[k]) for rf in refs] for k in range(2)],
                                   tokenize='none', smooth_method='none', force=True)
    assert abs(100 * ours - theirs.score) < 1e-6


# --- beam search ------------------------------------------------------------------------------------------------
def toy_model():
    "<sos>=0 <eos>=1 a=2 b=3 c=4 d=5 e=6: P(a)=.55, P(b)=.45; a -> c .4, d .3, e .3; b -> c .9, d .1; else <eos>."
    T = np.full((7, 7), -np.inf)
    T[0, 2], T[0, 3] = math.log(.55), math.log(.45)
    T[2, 4], T[2, 5], T[2, 6] = math.log(.4), math.log(.3), math.log(.3)
    T[3, 4], T[3, 5] = math.log(.9), math.log(.1)
    T[4:, 1] = 0.0
    return lambda prefixes: T[np.asarray(prefixes)[:, -1]]


def test_beam_beats_greedy_on_toy_model():
    f = toy_model()
    g, glp = greedy_search(f, 0, 1)
    assert g == [2, 4, 1] and abs(math.exp(glp) - 0.22) < 1e-12
    best = beam_search(f, 0, 1, beam_width=2, alpha=0.0)[0]
    assert best[0] == [3, 4, 1] and abs(math.exp(best[1]) - 0.405) < 1e-12
    assert abs(sequence_log_prob(f, 0, [3, 4, 1]) - best[1]) < 1e-12
    assert blame(math.exp(best[1]), math.exp(glp)) == 'beam search'


def exhaustive(f, V, max_len, alpha):
    best, frontier = None, [([], 0.0)]
    for t in range(max_len):
        lp = f(np.array([[0] + s for s, _ in frontier]))
        nxt = []
        for (s, l), row in zip(frontier, lp):
            for v in range(V):
                c = (s + [v], l + row[v])
                if v == 1 or t == max_len - 1:
                    if best is None or sequence_score(c[1], len(c[0]), alpha) > sequence_score(best[1], len(best[0]), alpha): best = c
                else: nxt.append(c)
        frontier = nxt
    return best


@pytest.mark.parametrize('seed', range(4))
@pytest.mark.parametrize('alpha', [0.0, 0.7, 1.0])
def test_wide_beam_is_exhaustive(seed, alpha):
    T = np.log(np.random.default_rng(seed).dirichlet(np.full(4, 0.5), size=4))
    f = lambda prefixes: T[np.asarray(prefixes)[:, -1]]
    top, ex = beam_search(f, 0, 1, beam_width=256, max_len=4, alpha=alpha)[0], exhaustive(f, 4, 4, alpha)
    assert top[0] == ex[0] and abs(top[1] - ex[1]) < 1e-12


def test_beam_results_sorted_and_scored():
    T = np.log(np.random.default_rng(9).dirichlet(np.ones(5), size=5))
    hyps = beam_search(lambda p: T[np.asarray(p)[:, -1]], 0, 1, beam_width=4, max_len=6, alpha=0.7)
    assert len(hyps) == 4
    assert all(h[2] == sequence_score(h[1], len(h[0]), 0.7) for h in hyps)
    assert [h[2] for h in hyps] == sorted((h[2] for h in hyps), reverse=True)
    assert all(h[0][-1] == 1 or len(h[0]) == 6 for h in hyps)


def test_beam_bad_input():
    with pytest.raises(ValueError, match='beam_width'): beam_search(toy_model(), 0, 1, beam_width=0)
    with pytest.raises(ValueError, match='beam_width'): beam_search(toy_model(), 0, 1, beam_width=1.5)
    with pytest.raises(ValueError, match='max_len'): beam_search(toy_model(), 0, 1, max_len=0)
    with pytest.raises(ValueError, match='log_probs'): beam_search(lambda p: np.zeros(3), 0, 1)


def test_beam_without_eos_gives_fixed_length():
    T = np.log(np.random.default_rng(2).dirichlet(np.ones(4), size=4))
    f = lambda p: T[np.asarray(p)[:, -1]]
    hyps = beam_search(f, 0, None, beam_width=3, max_len=5)
    assert len(hyps) == 3 and all(len(h[0]) == 5 for h in hyps)
    toks, lp = greedy_search(f, 0, None, max_len=5)
    assert len(toks) == 5 and abs(sequence_log_prob(f, 0, toks) - lp) < 1e-12


def test_blame():
    assert blame(2e-10, 1e-10) == 'beam search' and blame(1e-10, 2e-10) == 'model'


# --- CTC ---------------------------------------------------------------------------------------------------------
def test_ctc_collapse():
    assert ctc_collapse('ttt_h_eee___ ___qqq__') == 'the q'
    assert ctc_collapse('hel_lo') == 'hello' and ctc_collapse('hello') == 'helo'
    assert ctc_collapse([3, 3, 0, 3, 5, 5, 0], blank=0) == [3, 3, 5]
    assert ctc_collapse('') == '' and ctc_collapse('___') == ''


# --- dates -----------------------------------------------------------------------------------------------------
def test_date_pairs_reproducible_and_correct():
    pairs = date_pairs(300, seed=5)
    assert pairs == date_pairs(300, seed=5) and pairs != date_pairs(300, seed=6)
    for text, iso in pairs:
        d = datetime.date.fromisoformat(iso)
        assert datetime.date(1950, 1, 1) <= d <= datetime.date(2049, 12, 31)
        assert text in {human_date(d, f) for f in DATE_FORMATS}
    assert human_date(datetime.date(1979, 5, 3), '{weekday}, {mm}/{dd}/{yy}') == 'thursday, 05/03/79'
    assert human_date(datetime.date(2001, 12, 25), '{dd}.{mm}.{yy}') == '25.12.01'
    assert human_date(datetime.date(1979, 5, 3), '{mon} {d}, {yyyy}') == 'may 3, 1979'


def test_date_pairs_exclude_and_bad_input():
    train = date_pairs(500, seed=0)
    test = date_pairs(200, seed=1, exclude={a for a, _ in train})
    assert len(test) == 200 and not {a for a, _ in test} & {a for a, _ in train}
    with pytest.raises(ValueError, match='first <= last'): date_pairs(3, first=datetime.date(2000, 1, 2), last=datetime.date(2000, 1, 1))
    with pytest.raises(ValueError, match='n >= 0'): date_pairs(-1)
