"Recurrent layers: gradient checks (masking, Bidirectional, stacking, state in/out), padding invariance, bad input, Sequential; Bidirectional and StackedRNN as models (save/load, names, penalties)."
import os
from dl_from_scratch.core import simulate_cuda_without_gpu
simulate_cuda_without_gpu()   # before numba.cuda is imported (conftest does it too)
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.rnn import SimpleRNN, LSTM, GRU, Bidirectional, StackedRNN

N, T, D, H = 3, 5, 4, 3

class Masked:
    "check_layer_grad adapter: a fixed mask, and the layer's rng (reseeded by check_layer_grad before every forward)."
    def __init__(self, layer, mask): self.layer, self.mask = layer, mask
    def __call__(self, x, training=False): return self.layer(x, training, mask=self.mask)
    def forward(self, x, training=False): return self.layer.forward(x, training, mask=self.mask)
    def backward(self, dy): return self.layer.backward(dy)
    params = property(lambda self: self.layer.params)
    grads = property(lambda self: self.layer.grads)
    @property
    def rng(self): return getattr(self.layer, 'rng', None)
    @rng.setter
    def rng(self, r):
        for l in ([self.layer.forward_layer, self.layer.backward_layer] if isinstance(self.layer, Bidirectional) else [self.layer]):
            l.rng = r

def data(seed=0):
    rng = np.random.default_rng(seed)
    mask = np.ones((N, T)); mask[0, 3:] = 0; mask[2, 1] = 0
    return rng.normal(size=(N, T, D)), mask

MAKERS = {
    'rnn': lambda **k: SimpleRNN(H, rng=0, **k),
    'lstm': lambda **k: LSTM(H, rng=0, **k),
    'lstm_peep': lambda **k: LSTM(H, peepholes=True, rng=0, **k),
    'gru': lambda **k: GRU(H, rng=0, **k),
}

@pytest.mark.parametrize('cell', list(MAKERS))
@pytest.mark.parametrize('return_sequences', [False, True])
@pytest.mark.parametrize('go_backwards', [False, True])
@pytest.mark.parametrize('backend', ['numpy', 'numba'])
def test_layer_gradients_with_mask(cell, return_sequences, go_backwards, backend):
    x, mask = data()
    with precision(np.float64):
        layer = MAKERS[cell](return_sequences=return_sequences, go_backwards=go_backwards, backend=backend)
        layer.build((T, D))
        if 'P' in layer.params: layer.params['P'][...] = np.random.default_rng(1).normal(size=(3, H))
        errs = check_layer_grad(Masked(layer, mask), x)
    assert set(errs) == {'x', *layer.params}
    assert max(errs.values()) < 1e-6, errs

@pytest.mark.parametrize('wrapper', ['bi_concat_seq', 'bi_sum', 'bi_ave', 'stack'])
def test_wrapper_gradients(wrapper):
    x, mask = data(1)
    with precision(np.float64):
        layer = {'bi_concat_seq': lambda: Bidirectional(LSTM(H, return_sequences=True, rng=1)),
                 'bi_sum': lambda: Bidirectional(GRU(H, rng=2), merge_mode='sum'),
                 'bi_ave': lambda: Bidirectional(SimpleRNN(H, rng=3), merge_mode='ave'),
                 'stack': lambda: StackedRNN([GRU(H, return_sequences=True, rng=3),
                                              Bidirectional(LSTM(2, peepholes=True, rng=4))])}[wrapper]()
        errs = check_layer_grad(Masked(layer, mask), x)
    assert max(errs.values()) < 1e-6, errs

@pytest.mark.parametrize('cell', ['rnn', 'lstm', 'gru'])
def test_state_in_and_out_gradients(cell):
    x, mask = data(2)
    rng = np.random.default_rng(3)
    with precision(np.float64):
        layer = MAKERS[cell](return_sequences=True); layer.build((T, D))
        n = layer.n_states
        s0 = [rng.normal(size=(N, H)) for _ in range(n)]
        dy = rng.normal(size=(N, T, H)); ds = [rng.normal(size=(N, H)) for _ in range(n)]
        def L(*s):
            y = layer.forward(x, mask=mask, initial_state=tuple(s))
            return float((y * dy).sum() + sum((f * d).sum() for f, d in zip(layer.final_state, ds)))
        L(*s0); layer.backward(dy, d_final_state=tuple(ds))
        for i in range(n):
            num = numerical_grad(lambda v: L(*[v if j == i else s0[j] for j in range(n)]), s0[i].copy())
            assert rel_error(layer.d_initial_state[i], num) < 1e-6

@pytest.mark.parametrize('cell', ['rnn', 'lstm_peep', 'gru', 'bi_lstm', 'bi_gru_last'])
@pytest.mark.parametrize('pad', ['post', 'pre'])
def test_padded_equals_unpadded(cell, pad):
    rng = np.random.default_rng(4)
    x = rng.normal(size=(2, 4, D)).astype(np.float32)
    lengths = [4, 2]
    make = {'rnn': lambda: SimpleRNN(H, rng=0, return_sequences=True),
            'lstm_peep': lambda: LSTM(H, peepholes=True, rng=0, return_sequences=True),
            'gru': lambda: GRU(H, rng=0, return_sequences=True),
            'bi_lstm': lambda: Bidirectional(LSTM(H, rng=0, return_sequences=True)),
            'bi_gru_last': lambda: Bidirectional(GRU(H, rng=0))}[cell]
    layer = make()
    xp = np.zeros((2, 7, D), np.float32); mask = np.zeros((2, 7))
    for i, L in enumerate(lengths):
        sl = slice(0, L) if pad == 'post' else slice(7 - L, 7)
        xp[i, sl] = x[i, :L]; mask[i, sl] = 1
    y_pad = layer(xp, mask=mask)
    for i, L in enumerate(lengths):
        y1 = layer(x[i:i + 1, :L])
        if layer.return_sequences:
            np.testing.assert_allclose(y_pad[i, mask[i] == 1], y1[0], rtol=1e-5, atol=1e-6)
            assert np.abs(y_pad[i, mask[i] == 0]).max(initial=0) == 0
        else:
            np.testing.assert_allclose(y_pad[i], y1[0], rtol=1e-5, atol=1e-6)

def test_bad_input_names_shapes():
    layer = GRU(4, rng=0); layer(np.zeros((2, 5, 3), np.float32))
    with pytest.raises(ValueError, match=r'rank 3'): layer(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r'expected input of shape \(N, T, 3\), got \(2, 5, 4\)'):
        layer(np.zeros((2, 5, 4), np.float32))
    with pytest.raises(ValueError, match=r'mask of shape \(2, 5\) to match the input, got \(5, 2\)'):
        layer(np.zeros((2, 5, 3), np.float32), mask=np.ones((5, 2)))
    with pytest.raises(ValueError, match='NaN'): layer(np.full((2, 5, 3), np.nan, np.float32))
    with pytest.raises(ValueError, match=r'initial_state of shape \(2, 4\), got \(2, 3\)'):
        layer(np.zeros((2, 5, 3), np.float32), initial_state=np.zeros((2, 3)))
    with pytest.raises(ValueError, match='units >= 1'): LSTM(0)

def test_sequential_fit_save_load(tmp_path):
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense
    rng = np.random.default_rng(0)
    x = rng.normal(size=(256, 10, 1)).astype(np.float32); y = (x.sum((1, 2)) > 0).astype(np.int64)
    model = Sequential([Bidirectional(LSTM(8, rng=0)), Dense(2, rng=0)])
    from dl_from_scratch.losses import SparseCategoricalCrossentropy
    model.compile(loss=SparseCategoricalCrossentropy(from_logits=True), optimizer='adam', metrics=['accuracy'])
    h = model.fit(x, y, epochs=10, batch_size=32, rng=0, verbose=0)
    assert h.history['loss'][-1] < h.history['loss'][0] * 0.7
    model.save(tmp_path / 'm.npz')
    m2 = Sequential.load(tmp_path / 'm.npz')
    np.testing.assert_allclose(m2.predict(x[:5]), model.predict(x[:5]), rtol=1e-6)


def test_sequential_any_length():
    "input_shape=(None, D): one model predicts sequences of any length, as its layers called directly do."
    from dl_from_scratch.model import Sequential
    from dl_from_scratch.layers import Dense, Flatten
    rng = np.random.default_rng(0)
    model = Sequential([LSTM(6, rng=0), Dense(3, rng=0)], input_shape=(None, D))
    assert model.input_shape == (None, D)
    for T_ in (2, 7, 11):
        x = rng.normal(size=(4, T_, D)).astype(np.float32)
        y = model.predict(x)
        assert y.shape == (4, 3)
        np.testing.assert_allclose(y, model.layers[1](model.layers[0](x)), rtol=1e-6)
    with pytest.raises(ValueError, match=r"expected x of shape \(N, None, 4\)"):
        model.predict(np.zeros((2, 5, D + 1), np.float32))
    with pytest.raises(ValueError, match="needs every size of its input known"):
        Sequential([Flatten(), Dense(2)], input_shape=(None, D))
    import tempfile
    with tempfile.TemporaryDirectory() as d:          # the None survives a save and load
        model.save(f'{d}/m.npz'); m2 = Sequential.load(f'{d}/m.npz')
    assert m2.input_shape == (None, D)
    x = rng.normal(size=(2, 9, D)).astype(np.float32)
    np.testing.assert_allclose(m2.predict(x), model.predict(x), rtol=1e-6)


@pytest.mark.parametrize('cls', [SimpleRNN, LSTM, GRU])
def test_outputs_survive_the_next_call(cls):
    "The layer keeps its work arrays between calls; what it returned (outputs, final states) stays as it was."
    r = np.random.default_rng(0)
    layer = cls(4, return_sequences=True, rng=0)
    x1, x2 = r.normal(size=(3, 6, 2)).astype(np.float32), r.normal(size=(3, 6, 2)).astype(np.float32)
    y1 = layer(x1); s1 = [s.copy() for s in layer.final_state]; finals = layer.final_state; c1 = y1.copy()
    y2 = layer(x2)
    np.testing.assert_array_equal(y1, c1)
    for s, k in zip(finals, s1): np.testing.assert_array_equal(s, k)
    assert not np.allclose(y1, y2)
    assert layer._scratch(), 'the layer kept no work arrays'


@pytest.mark.parametrize('cls', [SimpleRNN, LSTM, GRU])
def test_regularizers_and_constraints_through_add_weight(cls):
    from dl_from_scratch.layers import L2, L1, MaxNorm
    layer = cls(4, kernel_regularizer=L2(0.01), recurrent_regularizer=L1(0.02), bias_regularizer='l2',
                recurrent_constraint=MaxNorm(0.5), rng=0)
    layer.build((5, 3))
    p = {k: v.astype(np.float64) for k, v in layer.params.items()}
    want = 0.01 * (p['Wx'] ** 2).sum() + 0.02 * np.abs(p['Wh']).sum() + 0.01 * (p['b'] ** 2).sum()
    np.testing.assert_allclose(layer.regularization_loss(), want, rtol=1e-5)
    assert set(layer.regularization_grads()) == {'Wx', 'Wh', 'b'}
    layer.apply_constraints()
    assert (np.linalg.norm(layer.params['Wh'], axis=0) <= 0.5 + 1e-6).all()
    assert cls(4, rng=0).regularization_loss() == 0.0


@pytest.mark.parametrize('make', [lambda: LSTM(H, return_sequences=True, peepholes=True, rng=0), lambda: GRU(H, rng=0),
                                  lambda: SimpleRNN(H, go_backwards=True, rng=0),
                                  lambda: Bidirectional(LSTM(H, return_sequences=True, rng=0)),
                                  lambda: StackedRNN([GRU(H, return_sequences=True, rng=0), LSTM(H, rng=1)])])
def test_need_dx_false_returns_none_and_the_same_weight_gradients(make):
    layer = make()
    with precision(np.float64):
        x = np.random.default_rng(0).normal(size=(N, T, D))
        g = np.random.default_rng(1).normal(size=layer(x).shape)
        dx = layer.backward(g); grads = {k: v.copy() for k, v in layer.grads.items()}
        layer(x)
        assert layer.backward(g, need_dx=False) is None
    assert dx.shape == x.shape
    for k in grads: np.testing.assert_array_equal(layer.grads[k], grads[k])


# --- Bidirectional and StackedRNN: containers over the functional Model -------------------------------------
from dl_from_scratch.model import Model, Sequential, Input
from dl_from_scratch.merge import Concatenate, Add, Average

BI_CELLS = {'rnn': lambda **k: SimpleRNN(H, rng=3, **k), 'lstm_peep': lambda **k: LSTM(H, peepholes=True, rng=1, **k),
            'gru': lambda **k: GRU(H, rng=2, **k)}

@pytest.mark.parametrize('cell', list(BI_CELLS))
@pytest.mark.parametrize('merge_mode', ['concat', 'sum', 'ave'])
@pytest.mark.parametrize('return_sequences', [False, True])
def test_bidirectional_gradients_with_mask(cell, merge_mode, return_sequences):
    x, mask = data(5)
    with precision(np.float64):
        layer = Bidirectional(BI_CELLS[cell](return_sequences=return_sequences), merge_mode=merge_mode)
        errs = check_layer_grad(Masked(layer, mask), x)
    inner = set(layer.forward_layer.params)
    assert set(errs) == {'x', *(f'fw_{k}' for k in inner), *(f'bw_{k}' for k in inner)}
    assert max(errs.values()) < 1e-6, errs

@pytest.mark.parametrize('cell', list(BI_CELLS))
@pytest.mark.parametrize('merge_mode', ['concat', 'sum', 'ave'])
def test_bidirectional_state_in_and_out_gradients(cell, merge_mode):
    "initial_state (forward layer's states, then the backward one's) and d_final_state, checked numerically."
    x, mask = data(6)
    rng = np.random.default_rng(7)
    with precision(np.float64):
        layer = Bidirectional(BI_CELLS[cell](return_sequences=True), merge_mode=merge_mode); layer.build((T, D))
        n = 2 * layer.forward_layer.n_states
        s0 = [rng.normal(size=(N, H)) for _ in range(n)]
        dy = rng.normal(size=layer(x).shape); ds = [rng.normal(size=(N, H)) for _ in range(n)]
        def L(x_, *s):
            y = layer.forward(x_, mask=mask, initial_state=list(s))
            assert len(layer.final_state) == n
            return float((y * dy).sum() + sum((f * d).sum() for f, d in zip(layer.final_state, ds)))
        L(x, *s0); dx = layer.backward(dy, d_final_state=ds)
        grads = {k: v.copy() for k, v in layer.grads.items()}
        d_init = layer.d_initial_state
        assert len(d_init) == n
        for i in range(n):
            num = numerical_grad(lambda v: L(x, *[v if j == i else s0[j] for j in range(n)]), s0[i].copy())
            assert rel_error(d_init[i], num) < 1e-6, i
        assert rel_error(dx, numerical_grad(lambda v: L(v, *s0), x.copy())) < 1e-6
        for k, p in layer.params.items():
            assert rel_error(grads[k], numerical_grad(lambda _: L(x, *s0), p)) < 1e-6, k

def test_stacked_gradients_with_a_bidirectional_inside():
    x, mask = data(8)
    make = lambda mask_value=None: StackedRNN([LSTM(H, return_sequences=True, rng=1), Bidirectional(GRU(2, return_sequences=True, rng=2), 'ave'),
                                               SimpleRNN(2, rng=3)], mask_value=mask_value)
    with precision(np.float64):
        layer = make()
        errs = check_layer_grad(Masked(layer, mask), x)
        assert {'l0_Wx', 'l1_fw_Wh', 'l1_bw_b', 'l2_Wx'} <= set(errs)
        assert max(errs.values()) < 1e-6, errs
        # mask_value finds the same padding in the input and hands it to every layer
        x[mask == 0] = 0
        by_value = make(0.0)
        dy = np.random.default_rng(1).normal(size=(N, 2))
        y = layer(x, mask=mask); dx = layer.backward(dy)
        np.testing.assert_array_equal(by_value(x), y)
        np.testing.assert_array_equal(by_value.backward(dy), dx)
        for k, g in layer.grads.items(): np.testing.assert_array_equal(by_value.grads[k], g)

def test_containers_are_models_and_compute_what_their_layers_do():
    "The containers run the Model's plan; their output and gradients equal their layers' (bit for bit)."
    x, mask = data(9)
    for mode, merge, combine in [('concat', Concatenate, lambda a, b: np.concatenate([a, b], -1)),
                                 ('sum', Add, lambda a, b: a + b), ('ave', Average, lambda a, b: (a + b) / 2)]:
        bi = Bidirectional(LSTM(H, return_sequences=True, rng=0), mode)
        y = bi(x, mask=mask)
        assert isinstance(bi, Model) and [type(s.layer) for s in bi._plan] == [LSTM, LSTM, merge]
        fw, bw = bi.forward_layer, bi.backward_layer
        assert (fw.name, bw.name, fw.go_backwards, bw.go_backwards) == ('fw', 'bw', False, True)
        np.testing.assert_array_equal(y, combine(fw.forward(x, mask=mask), bw.forward(x, mask=mask)))
        dy = np.random.default_rng(1).normal(size=y.shape)
        bi(x, mask=mask); dx = bi.backward(dy)
        dyf, dyb = (dy[..., :H], dy[..., H:]) if mode == 'concat' else (dy, dy) if mode == 'sum' else (dy / 2, dy / 2)
        fw.forward(x, mask=mask); dxf = fw.backward(dyf); bw.forward(x, mask=mask); dxb = bw.backward(dyb)
        np.testing.assert_array_equal(dx, dxf + dxb)
        for k in fw.params:
            np.testing.assert_array_equal(bi.grads[f'fw_{k}'], fw.grads[k])
            np.testing.assert_array_equal(bi.grads[f'bw_{k}'], bw.grads[k])
    st = StackedRNN([GRU(H, return_sequences=True, rng=0), LSTM(2, rng=1)])
    y = st(x, mask=mask)
    assert isinstance(st, Sequential) and [s.layer for s in st._plan] == st.layers and [l.name for l in st.layers] == ['l0', 'l1']
    np.testing.assert_array_equal(y, st.layers[1].forward(st.layers[0].forward(x, mask=mask), mask=mask))
    # one container reads sequences of any length, as its layers do
    assert bi.input_shape == (None, D) and st.input_shape == (None, D)
    assert bi(x[:, :2]).shape == (N, 2, H) and st(np.concatenate([x, x], 1)).shape == (N, 2)

def test_container_weights_penalties_and_counts():
    from dl_from_scratch.layers import L2, MaxNorm, Dense
    bi = Bidirectional(GRU(H, kernel_regularizer=L2(0.01), recurrent_constraint=MaxNorm(0.5), rng=0))
    st = StackedRNN([SimpleRNN(H, return_sequences=True, kernel_regularizer=L2(0.1), rng=0), bi])
    model = Sequential([st, Dense(2, rng=0)], input_shape=(T, D))
    assert list(bi.params) == [f'{p}_{k}' for p in ('fw', 'bw') for k in ('Wx', 'Wh', 'b')]
    assert list(st.params)[:4] == ['l0_Wx', 'l0_Wh', 'l0_b', 'l1_fw_Wx']
    assert list(model.params)[3] == 'stacked_rnn/l1_fw_Wx'
    for k, p in bi.params.items():            # the inner layers' own arrays
        assert p is (bi.forward_layer if k.startswith('fw') else bi.backward_layer).params[k[3:]]
    f, b = bi.forward_layer.params, bi.backward_layer.params
    np.testing.assert_allclose(bi.regularization_loss(), 0.01 * ((f['Wx'] ** 2).sum() + (b['Wx'] ** 2).sum()), rtol=1e-6)
    assert set(bi.regularization_grads()) == {'fw_Wx', 'bw_Wx'} and set(bi.constraints) == {'fw_Wh', 'bw_Wh'}
    np.testing.assert_allclose(st.regularization_loss(), 0.1 * (st.layers[0].params['Wx'] ** 2).sum() + bi.regularization_loss(), rtol=1e-6)
    b['Wh'][...] *= 10; st.apply_constraints()
    assert (np.linalg.norm(b['Wh'], axis=0) <= 0.5 + 1e-6).all()
    n_rnn, n_gru = 2 * (D * H + H * H + H), 2 * 3 * (H * H + H * H + H)
    assert (bi.count_params(), st.count_params(), model.count_params()) == (n_gru, n_rnn // 2 + n_gru, n_rnn // 2 + n_gru + 2 * H * 2 + 2)
    lines = []; model.summary(print_fn=lines.append)
    row = next(r for r in lines[0].splitlines() if r.startswith('stacked_rnn (StackedRNN)')).split()
    assert row[2:] == ['(None,', f'{2 * H})', str(st.count_params())] and f'Total params: {model.count_params():,}' in lines[0]
    x = np.random.default_rng(0).normal(size=(N, T, D)).astype(np.float32)
    y = model.predict(x); model.to('cpu')
    np.testing.assert_array_equal(model.predict(x), y)
    assert all(p is q for p, q in zip(bi.params.values(), [*f.values(), *b.values()]))

def test_container_save_load_round_trips(tmp_path):
    from dl_from_scratch.layers import Dense
    r = np.random.default_rng(0)
    x = r.normal(size=(4, T, D)).astype(np.float32)
    bi = Bidirectional(LSTM(H, peepholes=True, return_sequences=True, rng=0), 'sum'); bi(x)
    bi.forward_layer.params['P'][...] = r.normal(size=(3, H))
    st = StackedRNN([GRU(H, return_sequences=True, rng=1), Bidirectional(SimpleRNN(2, rng=2))], mask_value=0.0)
    inp = Input((None, D))
    func = Model(inp, Dense(2, rng=0)(Bidirectional(GRU(H, rng=3), 'ave')(inp)))
    seq = Sequential([StackedRNN([Bidirectional(LSTM(H, return_sequences=True, rng=4)), GRU(2, rng=5)]), Dense(2, rng=6)])
    for m in (bi, st, func, seq):
        y = m.predict(x)
        m2 = Model.load(m.save(tmp_path / f'{m.name}.npz'))
        assert type(m2) is type(m) and list(m2.params) == list(m.params)
        np.testing.assert_array_equal(m2.predict(x), y)
    assert (m2.layers[0].layers[0].merge_mode, Model.load(tmp_path / 'stacked_rnn.npz').mask_value) == ('concat', 0.0)
    m3 = Model.load(tmp_path / 'bidirectional.npz')
    m3(x, mask=np.ones((4, T)), initial_state=[np.zeros((4, H))] * 4)
    assert len(m3.final_state) == 4 and m3.merge_mode == 'sum' and m3.forward_layer.peepholes

def test_container_bad_input():
    with pytest.raises(ValueError, match='SimpleRNN, LSTM or GRU layer, got ndarray'): Bidirectional(np.zeros(3))
    with pytest.raises(ValueError, match="merge_mode 'concat', 'sum' or 'ave', got 'mul'"): Bidirectional(GRU(2), 'mul')
    with pytest.raises(ValueError, match=r'return_sequences=True on every layer but the last, got LSTM\(3\)'):
        StackedRNN([LSTM(3), LSTM(3)])
    with pytest.raises(ValueError, match='got a Dense'):
        from dl_from_scratch.layers import Dense
        StackedRNN([LSTM(3, return_sequences=True), Dense(3)])
    with pytest.raises(ValueError, match=r'got \[\]'): StackedRNN([])
    for layer in (Bidirectional(GRU(2, rng=0)), StackedRNN([GRU(2, rng=0)])):
        with pytest.raises(ValueError, match='rank 3'): layer(np.zeros((2, 5), np.float32))
        layer(np.zeros((2, 5, 3), np.float32))
        with pytest.raises(ValueError, match=r'expected input of shape \(N, T, 3\), got \(2, 5, 4\)'):
            layer(np.zeros((2, 5, 4), np.float32))
        with pytest.raises(ValueError, match=r'mask of shape \(2, 5\) to match the input, got \(2, 4\)'):
            layer(np.zeros((2, 5, 3), np.float32), mask=np.ones((2, 4)))
    with pytest.raises(ValueError, match='expected 1 initial state'):
        Bidirectional(GRU(2, rng=0))(np.zeros((2, 5, 3), np.float32), initial_state=[np.zeros((2, 2))] * 3)
