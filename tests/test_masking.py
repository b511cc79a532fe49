"Padding masks (Embedding(mask_zero), compute_mask, masks carried by models), embedding dropout and recurrent dropout: padded = unpadded, gradient checks, save/load, bad input."
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.layers import Layer, Embedding, Dense, Flatten, GlobalAveragePooling1D, _keep_mask
from dl_from_scratch.merge import Add, Concatenate
from dl_from_scratch.model import Sequential, Model, Input
from dl_from_scratch.losses import BinaryCrossentropy
from dl_from_scratch.optim import Adam
from dl_from_scratch.rnn import SimpleRNN, LSTM, GRU, Bidirectional, StackedRNN
from dl_from_scratch.kernels import recurrent as K
from test_rnn import Masked              # check_layer_grad's adapter: a layer called with a fixed mask

V, E, H = 12, 5, 4
CELLS = {'rnn': SimpleRNN, 'lstm': LSTM, 'gru': GRU}
REVIEWS = [np.array([3, 7, 1, 9, 4]), np.array([5, 2]), np.array([11, 6, 8, 2, 10, 3, 7])]

def pad(seqs, T, padding):
    "Pad integer sequences with 0 to length T, at the end ('post') or the front ('pre')."
    out = np.zeros((len(seqs), T), np.int64)
    for i, s in enumerate(seqs):
        if padding == 'post': out[i, :len(s)] = s
        else: out[i, T - len(s):] = s
    return out

def review_model(cell, bidirectional=False, mask_zero=True, pool=False):
    "Embedding -> (Bidirectional) recurrent layer with both dropouts -> Dense(1): source 003's masked review classifier."
    rnn = CELLS[cell](H, dropout=0.2, recurrent_dropout=0.3, return_sequences=pool, rng=1)
    layers = [Embedding(V, E, mask_zero=mask_zero, dropout=0.25, rng=0), Bidirectional(rnn) if bidirectional else rnn]
    if pool: layers.append(GlobalAveragePooling1D())
    return Sequential(layers + [Dense(1, rng=2)], input_shape=(None,))

@pytest.mark.parametrize('cell', list(CELLS))
@pytest.mark.parametrize('bidirectional', [False, True])
@pytest.mark.parametrize('padding', ['pre', 'post'])
def test_padded_review_predicts_as_unpadded(cell, bidirectional, padding):
    with precision(np.float64):
        m = review_model(cell, bidirectional)
        alone = np.concatenate([m.predict(r[None]) for r in REVIEWS])
        padded = m.predict(pad(REVIEWS, 10, padding))
        np.testing.assert_allclose(padded, alone, rtol=0, atol=1e-6)
        # the same net without the mask reads the padding as words: the check can fail
        m0 = review_model(cell, bidirectional, mask_zero=False)
        m0.set_weights(m.get_weights())
        assert np.abs(m0.predict(pad(REVIEWS, 10, padding)) - alone).max() > 1e-4

@pytest.mark.parametrize('padding', ['pre', 'post'])
def test_masked_sequences_pooled(padding):
    "return_sequences=True: the mask goes on to the pooling, which averages over the real steps only."
    with precision(np.float64):
        m = review_model('lstm', bidirectional=True, pool=True)
        alone = np.concatenate([m.predict(r[None]) for r in REVIEWS])
        np.testing.assert_allclose(m.predict(pad(REVIEWS, 9, padding)), alone, rtol=0, atol=1e-6)

def test_without_mask_bit_identical():
    "No mask anywhere: a model computes exactly what its layers compute one after the other."
    ids = pad(REVIEWS, 7, 'post')
    m = Sequential([Embedding(V, E, rng=0), Bidirectional(GRU(H, return_sequences=True, rng=1)), LSTM(H, rng=2),
                    Dense(1, rng=3)], input_shape=(None,))
    y = ids
    for l in m.layers: y = l.forward(y)
    assert np.array_equal(m.predict(ids), y)

def test_mask_reaches_layers_and_ends():
    ids = pad(REVIEWS, 8, 'post')
    seen = {}
    class Spy(Layer):                      # the identity, recording the mask it was handed
        def forward(self, x, training=False, mask=None): self.cache = True; seen['mask'] = mask; return x
        def backward(self, dy, need_dx=True): return dy
    x = Input((8,))
    e = Embedding(V, E, mask_zero=True, rng=0)(x)
    h = LSTM(H, return_sequences=True, rng=1)(e)
    s = Spy()(h)
    model = Model(x, [Dense(1, rng=2)(LSTM(H, rng=3)(s)), Flatten()(Embedding(V, E, rng=4)(x))])
    model.predict(ids)
    np.testing.assert_array_equal(seen['mask'], ids != 0)
    assert model.compute_mask(ids) == [None, None]
    # several inputs: the merge layer's output mask is the AND of its inputs' masks
    a, b = Input((None,)), Input((None,))
    add = Add()([Embedding(V, E, mask_zero=True, rng=0)(a), Embedding(V, E, mask_zero=True, rng=1)(b)])
    two = Model([a, b], [Spy()(add), Concatenate()([add, add])])
    ia, ib = pad(REVIEWS, 8, 'post'), pad(REVIEWS, 8, 'pre')
    two.forward([ia, ib])
    np.testing.assert_array_equal(seen['mask'], (ia != 0) & (ib != 0))
    np.testing.assert_array_equal(two.compute_mask([ia, ib])[1], (ia != 0) & (ib != 0))

def test_gradients_embedding_lstm_dense_with_mask():
    "Embedding(mask_zero, dropout) -> LSTM(dropout, recurrent_dropout) -> Dense, training mode, draws fixed by reseeding."
    ids = pad(REVIEWS, 8, 'pre')
    with precision(np.float64):
        m = Sequential([Embedding(V, E, mask_zero=True, dropout=0.3, rng=0),
                        LSTM(H, dropout=0.2, recurrent_dropout=0.4, rng=1), Dense(1, rng=2)], input_shape=(None,))
        g = np.random.default_rng(0).normal(size=(len(REVIEWS), 1))
        def loss():
            for i, l in enumerate(m.layers): l.rng = np.random.default_rng(10 + i)
            return float((m.forward(ids, training=True) * g).sum())
        loss(); m.backward(g)
        grads = {k: v.copy() for k, v in m.grads.items()}
        for k, p in m.params.items():
            err = rel_error(grads[k], numerical_grad(lambda _: loss(), p))
            assert err < 1e-6, (k, err)
        assert not grads['embedding/W'][0].any()           # the padding id gets no gradient
        assert grads['embedding/W'][1:].any()

@pytest.mark.parametrize('cell', list(CELLS))
@pytest.mark.parametrize('return_sequences', [False, True])
@pytest.mark.parametrize('go_backwards', [False, True])
def test_recurrent_dropout_gradients(cell, return_sequences, go_backwards):
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3, 6, 4)); mask = np.ones((3, 6)); mask[0, 4:] = 0; mask[1, :2] = 0
    with precision(np.float64):
        layer = CELLS[cell](H, dropout=0.3, recurrent_dropout=0.4, return_sequences=return_sequences,
                            go_backwards=go_backwards, rng=0)
        errs = check_layer_grad(Masked(layer, mask), x)
        assert max(errs.values()) < 1e-6, errs
        bi = Bidirectional(CELLS[cell](H, recurrent_dropout=0.5, return_sequences=return_sequences, rng=0))
        errs = check_layer_grad(Masked(bi, mask), x)
        assert max(errs.values()) < 1e-6, errs

@pytest.mark.parametrize('cell', list(CELLS))
def test_recurrent_dropout_semantics(cell):
    "One draw per sequence for all steps, applied where h_{t-1} enters the product; off at inference."
    rng = np.random.default_rng(4)
    x = rng.normal(size=(3, 5, 4))
    with precision(np.float64):
        layer = CELLS[cell](H, recurrent_dropout=0.5, return_sequences=True, rng=0)
        plain = CELLS[cell](H, return_sequences=True, rng=0)
        y_inf = layer(x); plain.build(x.shape[1:])
        for k in layer.params: plain.params[k][...] = layer.params[k]
        np.testing.assert_array_equal(y_inf, plain(x))                  # inference: no dropout
        layer.rng = np.random.default_rng(7)
        y_tr = layer(x, training=True)
        m = _keep_mask(np.random.default_rng(7), (3, H), 0.5, np.float64)
        p = layer.params
        if cell == 'rnn': ref = K.rnn_forward(x, np.zeros((3, H)), p['Wx'], p['Wh'], p['b'], h_mask=m, backend='numpy')[0]
        elif cell == 'gru': ref = K.gru_forward(x, np.zeros((3, H)), p['Wx'], p['Wh'], p['b'], h_mask=m, backend='numpy')[0]
        else: ref = K.lstm_forward(x, np.zeros((3, H)), np.zeros((3, H)), p['Wx'], p['Wh'], p['b'], h_mask=m, backend='numpy')[0]
        np.testing.assert_allclose(y_tr, ref, rtol=1e-12, atol=1e-12)
        assert np.abs(y_tr - y_inf).max() > 1e-3
        if cell == 'rnn':                                                # the step written out
            h = np.zeros((3, H))
            for t in range(5):
                h = np.tanh(x[:, t] @ p['Wx'] + (m * h) @ p['Wh'] + p['b'])
                np.testing.assert_allclose(y_tr[:, t], h, rtol=1e-12, atol=1e-12)

@pytest.mark.parametrize('cell', list(CELLS))
def test_h_mask_kernel_parity(cell):
    "NumPy, Numba and CUDA (simulator) kernels agree with recurrent dropout and a sequence mask."
    rng = np.random.default_rng(5)
    N_, T_, D_ = 2, 4, 3
    G = {'rnn': 1, 'lstm': 4, 'gru': 3}[cell]
    x, h0 = rng.normal(size=(N_, T_, D_)), rng.normal(size=(N_, H))
    Wx, Wh, b = rng.normal(size=(D_, G * H)), rng.normal(size=(H, G * H)) * 0.5, rng.normal(size=G * H)
    mask = np.ones((N_, T_)); mask[1, 2:] = 0
    hm = _keep_mask(rng, (N_, H), 0.5, np.float64)
    dhs = rng.normal(size=(N_, T_, H))
    outs = []
    for be in ('numpy', 'numba', 'cuda'):
        if cell == 'lstm':
            hs, cT, c = K.lstm_forward(x, h0, h0 * 0.5, Wx, Wh, b, mask=mask, backend=be, h_mask=hm)
            res = [hs, cT, *K.lstm_backward(dhs, None, c)[:6]]
        else:
            f, bw = (K.rnn_forward, K.rnn_backward) if cell == 'rnn' else (K.gru_forward, K.gru_backward)
            hs, c = f(x, h0, Wx, Wh, b, mask=mask, backend=be, h_mask=hm)
            res = [hs, *bw(dhs, c)]
        outs.append([np.asarray(a) for a in res])
    for o in outs[1:]:
        for a, b_ in zip(outs[0], o): np.testing.assert_allclose(b_, a, rtol=1e-9, atol=1e-9)

def test_save_load_keeps_masks(tmp_path):
    with precision(np.float64):
        m = Sequential([Embedding(V, E, mask_zero=True, dropout=0.1, rng=0),
                        Bidirectional(LSTM(H, return_sequences=True, recurrent_dropout=0.2, rng=1)),
                        GlobalAveragePooling1D(), Dense(1, rng=2)], input_shape=(None,))
        ids = pad(REVIEWS, 9, 'post')
        path = m.save(tmp_path / 'masked')
        m2 = Sequential.load(path)
        e2, rnn2 = m2.layers[0], m2.layers[1].forward_layer
        assert (e2.mask_zero, e2.dropout, rnn2.recurrent_dropout, rnn2.return_sequences) == (True, 0.1, 0.2, True)
        np.testing.assert_array_equal(m2.predict(ids), m.predict(ids))
        alone = np.concatenate([m2.predict(r[None]) for r in REVIEWS])
        np.testing.assert_allclose(m2.predict(ids), alone, rtol=0, atol=1e-6)

def test_fit_with_mask_leaves_padding_row():
    "fit / evaluate / predict run with the mask; the padding id's embedding gets no update."
    rng = np.random.default_rng(0)
    lengths = rng.integers(2, 9, 64)
    seqs = [rng.integers(1, V, n) for n in lengths]
    y = np.array([float((s > V // 2).mean() > 0.5) for s in seqs])
    ids = pad(seqs, 8, 'pre')
    m = Sequential([Embedding(V, 8, mask_zero=True, rng=0), Bidirectional(LSTM(8, rng=1)), Dense(1, rng=2)],
                   input_shape=(None,))
    m.compile(BinaryCrossentropy(from_logits=True), Adam(0.02), ['accuracy'])
    w0 = m.layers[0].params['W'][0].copy()
    h = m.fit(ids, y, epochs=8, batch_size=16, rng=0, verbose=0)
    assert h.history['loss'][-1] < h.history['loss'][0]
    assert m.evaluate(ids, y)[1] > 0.8
    assert np.array_equal(m.layers[0].params['W'][0], w0)
    np.testing.assert_array_equal(m.layers[0].grads['W'][0], 0)

def test_bad_input():
    with pytest.raises(ValueError, match=r'input_dim >= 2, got input_dim=1'): Embedding(1, 4, mask_zero=True)
    with pytest.raises(ValueError, match=r'0 <= dropout < 1'): Embedding(5, 4, dropout=1.0)
    with pytest.raises(ValueError, match=r'0 <= recurrent_dropout < 1'): LSTM(3, recurrent_dropout=-0.1)
    with pytest.raises(ValueError, match=r'0 <= dropout < 1'): GRU(3, dropout=1)
    with pytest.raises(ValueError, match=r'ids in \[0, 5\)'): Embedding(5, 2, mask_zero=True)(np.array([[1, 5]]))
    with pytest.raises(ValueError, match=r'h_mask'):
        K.rnn_forward(np.zeros((2, 3, 4)), np.zeros((2, 3)), np.zeros((4, 3)), np.zeros((3, 3)), np.zeros(3),
                      h_mask=np.ones((3, 3)))
    with pytest.raises(ValueError, match=r'mask of shape \(2, 3\)'):
        GlobalAveragePooling1D().forward(np.zeros((2, 3, 4)), mask=np.ones((2, 4)))
