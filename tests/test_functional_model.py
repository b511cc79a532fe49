"Functional models: graphs of layers gradient-checked in float64, Sequential = the chain, bad graphs, save/load, Keras counts."
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.layers import Dense, Activation, Flatten, Dropout
from dl_from_scratch.conv import Conv2D, MaxPool2D
from dl_from_scratch.merge import Add, Subtract, Multiply, Average, Concatenate, Reshape, Permute, RepeatVector, check_graph_grad
from dl_from_scratch.model import Model, Sequential, Input
from dl_from_scratch.losses import SparseCategoricalCrossentropy
from dl_from_scratch.optim import SGD, Adam

TOL = 1e-6
r = np.random.default_rng(7)


def residual_block(rng=0):
    "A residual block with a projection shortcut (stride 2, 3 -> 4 channels), as in ResNet."
    x = Input((6, 6, 3))
    h = Conv2D(4, 3, strides=2, padding='same', activation='tanh', rng=rng)(x)
    h = Conv2D(4, 3, padding='same', rng=rng + 1)(h)
    s = Conv2D(4, 1, strides=2, rng=rng + 2)(x)                    # the projection shortcut
    return Model(x, Activation('tanh')(Add()([h, s])), name='residual')


def inception_block(rng=0):
    "Four branches (1x1; 1x1-3x3; 1x1-5x5; 3x3 max-pool-1x1) concatenated on the channels."
    x = Input((5, 5, 3))
    b1 = Conv2D(2, 1, rng=rng)(x)
    b2 = Conv2D(3, 3, padding='same', rng=rng + 2)(Conv2D(2, 1, activation='tanh', rng=rng + 1)(x))
    b3 = Conv2D(2, 5, padding='same', rng=rng + 4)(Conv2D(1, 1, activation='tanh', rng=rng + 3)(x))
    b4 = Conv2D(2, 1, rng=rng + 5)(MaxPool2D(3, strides=1, padding='same')(x))
    return Model(x, Concatenate()([b1, b2, b3, b4]), name='inception')


def two_in_two_out(rng=0):
    a, b = Input((5,), name='a'), Input((3,), name='b')
    h, g = Dense(4, 'tanh', rng=rng)(a), Dense(4, 'tanh', rng=rng + 1)(b)
    m = Multiply()([h, g])
    y1 = Dense(2, rng=rng + 2, name='y1')(Add()([h, m]))
    y2 = Dense(1, 'sigmoid', rng=rng + 3, name='y2')(Concatenate()([h, g, Subtract()([h, g]), Average()([h, m])]))
    return Model([a, b], [y1, y2])


def encoder(rng=0):
    x = Input((4, 4, 1))
    h = Flatten()(Conv2D(2, 3, activation='tanh', rng=rng)(x))
    return Model(x, Dense(3, 'tanh', rng=rng + 1)(h), name='encoder')


def siamese(rng=0):
    "Two images through one encoder (a nested model called twice); a head on their squared difference."
    enc = encoder(rng)
    a, b = Input((4, 4, 1)), Input((4, 4, 1))
    d = Subtract()([enc(a), enc(b)])
    return Model([a, b], Dense(1, rng=rng + 5)(Multiply()([d, d])), name='siamese'), enc


def nested(rng=0):
    inner_x = Input((4,))
    inner = Model(inner_x, Dense(3, 'tanh', rng=rng + 1)(Dense(5, 'tanh', rng=rng)(inner_x)), name='inner')
    x = Input((6,))
    h = Dense(4, 'tanh', rng=rng + 2)(x)
    y = Dense(2, rng=rng + 3)(Concatenate()([inner(h), h]))
    return Model(x, Reshape((2, 1))(y), name='outer')


GRAPHS = {
    'residual block, projection shortcut': (residual_block, [(2, 6, 6, 3)]),
    'Inception block, 4 branches': (inception_block, [(2, 5, 5, 3)]),
    'two inputs, two outputs': (two_in_two_out, [(3, 5), (3, 3)]),
    'siamese pair, one encoder': (lambda: siamese()[0], [(2, 4, 4, 1), (2, 4, 4, 1)]),
    'nested model': (nested, [(3, 6)]),
}


@pytest.mark.parametrize('name', list(GRAPHS))
def test_graph_gradients_float64(name):
    make, shapes = GRAPHS[name]
    with precision(np.float64):
        model = make()
        errs = check_graph_grad(model, [r.standard_normal(s) for s in shapes])
    assert max(errs.values()) < TOL, errs
    assert {f'x{i}' for i in range(len(shapes))} <= set(errs)   # dL/dx for every input
    assert set(errs) - {'x0', 'x1'} == set(model.params)


def test_shared_encoder_counts_once_and_sums_over_calls():
    with precision(np.float64):
        model, enc = siamese()
        assert model.count_params() == enc.count_params() + 3 + 1
        a = r.standard_normal((2, 4, 4, 1))
        y = model([a, a])                       # the same image twice: distance 0, the encoder's gradient cancels
        model.backward(np.ones_like(y))
        assert all(np.abs(g).max() < 1e-12 for k, g in model.grads.items() if k.startswith('encoder/'))


def test_sequential_and_functional_bit_identical():
    x = r.standard_normal((64, 4)).astype(np.float32); y = r.integers(0, 3, 64)
    seq = Sequential([Dense(8, 'relu', rng=0), Dropout(0.2, rng=5), Dense(3, rng=1)], input_shape=(4,))
    t = Input((4,))
    fun = Model(t, Dense(3, rng=1)(Dropout(0.2, rng=5)(Dense(8, 'relu', rng=0)(t))))
    np.testing.assert_array_equal(seq.predict(x), fun.predict(x))
    for m in (seq, fun):
        m.forward(x, training=True); m.backward(np.ones((64, 3), np.float32))
    for (k1, g1), (k2, g2) in zip(seq.grads.items(), fun.grads.items()):
        assert k1 == k2; np.testing.assert_array_equal(g1, g2)
    for m in (seq, fun): m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.01))
    h1 = seq.fit(x, y, epochs=3, batch_size=16, rng=0, verbose=0).history
    h2 = fun.fit(x, y, epochs=3, batch_size=16, rng=0, verbose=0).history
    assert h1 == h2
    for a, b in zip(seq.get_weights(), fun.get_weights()): np.testing.assert_array_equal(a, b)


def test_bad_graphs_and_inputs_name_layer_and_shapes():
    a, b = Input((5,), name='a'), Input((3,), name='b')
    m = Model([a, b], Dense(2, name='out')(Concatenate()([a, b])))
    with pytest.raises(ValueError, match=r"expected 2 input array\(s\) \[\(5,\), \(3,\)\], got 1"):
        m(np.zeros((2, 5)))
    with pytest.raises(ValueError, match=r"expected input 'b' of shape \(N, 3\), got \(2, 4\)"):
        m([np.zeros((2, 5)), np.zeros((2, 4))])
    with pytest.raises(ValueError, match=r"no output depends on input b of shape \(None, 3\)"):
        Model([a, b], Dense(2)(a))
    with pytest.raises(ValueError, match="not among the model's inputs"):
        Model(a, Dense(2)(Concatenate()([a, b])))
    with pytest.raises(ValueError, match='expected outputs to be symbolic tensors .* got ndarray of shape \\(3,\\)'):
        Model(a, np.zeros(3))
    t1 = Dense(5, name='first')(a); t2 = Dense(5, name='second')(t1)
    t1.node.inputs = [t2]                                  # wire the second layer's output back into the first
    with pytest.raises(ValueError, match="cycle through layer"):
        Model(a, t2)
    d = Dense(2, name='d'); d(Input((5,)))
    with pytest.raises(ValueError, match=r"Dense 'd' was built for input shape \(5,\), but is called on shape \(3,\)"):
        d(b)
    with pytest.raises(ValueError, match='expected a list of 2 or more inputs'):
        Add()(a)


@pytest.mark.parametrize('make', [residual_block, two_in_two_out, nested, lambda: siamese()[0]])
def test_save_load_roundtrip(tmp_path, make):
    m = make()
    xs = [r.standard_normal((3, *t.shape)).astype(np.float32) for t in m.inputs]
    x = xs if len(xs) > 1 else xs[0]
    p = m.save(tmp_path / 'g')
    m2 = Model.load(p)
    assert type(m2) is Model and [l.name for l in m2.layers] == [l.name for l in m.layers]
    for a, b in zip(m.get_weights(), m2.get_weights()): np.testing.assert_array_equal(a, b)
    y1, y2 = m.predict(x), m2.predict(x)
    for a, b in zip(y1 if isinstance(y1, list) else [y1], y2 if isinstance(y2, list) else [y2]):
        np.testing.assert_array_equal(a, b)


def test_multi_output_compile_fit_evaluate_with_dicts():
    m = two_in_two_out()
    a, b = r.standard_normal((60, 5)).astype(np.float32), r.standard_normal((60, 3)).astype(np.float32)
    y1 = (a[:, 0] > 0).astype(np.int64); y2 = (b[:, :1] > 0).astype(np.float32)
    m.compile([SparseCategoricalCrossentropy(from_logits=True), 'binary_crossentropy'], Adam(0.02),
              metrics={'y1': 'accuracy', 'y2': ['accuracy']}, loss_weights={'y1': 1.0, 'y2': 0.3})
    h = m.fit({'a': a, 'b': b}, {'y1': y1, 'y2': y2}, epochs=40, batch_size=20, rng=0, verbose=0)
    assert set(h.history) == {'loss', 'y1_loss', 'y2_loss', 'y1_accuracy', 'y2_accuracy'}
    res = m.evaluate([a, b], [y1, y2], return_dict=True)
    np.testing.assert_allclose(res['loss'], res['y1_loss'] + 0.3 * res['y2_loss'], rtol=1e-5)
    assert res['y1_accuracy'] > 0.9 and res['y2_accuracy'] > 0.9
    p1, p2 = m.predict([a, b])
    assert p1.shape == (60, 2) and p2.shape == (60, 1)
    with pytest.raises(ValueError, match='expected 2 losses'):
        m.compile(['mse'] * 3)


def test_frozen_nested_model_is_not_updated_and_counts_as_non_trainable():
    "A GAN's combined model: D frozen inside it; fit moves only G."
    z = Input((2,)); G = Model(z, Dense(3, rng=0, name='g')(z), name='G')
    xin = Input((3,)); D = Model(xin, Dense(1, 'sigmoid', rng=1, name='d')(xin), name='D')
    zc = Input((2,)); combined = Model(zc, D(G(zc)))
    D.trainable = False
    before = D.get_weights()
    combined.compile('binary_crossentropy', SGD(0.5), metrics=[])
    g0 = G.get_weights()
    combined.fit(r.standard_normal((32, 2)).astype(np.float32), np.ones((32, 1), np.float32), epochs=2, verbose=0)
    for w, w0 in zip(D.get_weights(), before): np.testing.assert_array_equal(w, w0)
    assert any((w != w0).any() for w, w0 in zip(G.get_weights(), g0))
    lines = []; combined.summary(print_fn=lines.append)
    assert 'Trainable params: 9' in lines[0] and 'Non-trainable params: 4' in lines[0] and 'Connected to' in lines[0]


def test_train_step_can_be_overridden():
    class Counting(Model):
        calls = 0
        def train_step(self, batch):
            Counting.calls += 1
            logs = super().train_step(batch)
            return {**logs, 'extra': 1.0}
    t = Input((2,)); m = Counting(t, Dense(1, rng=0)(t))
    m.compile('mse', SGD(0.1), metrics=[])
    h = m.fit(np.ones((10, 2), np.float32), np.zeros((10, 1), np.float32), epochs=2, batch_size=5, verbose=0)
    assert Counting.calls == 4 and h.history['extra'] == [1.0, 1.0]


def test_shape_layers_in_a_graph_and_permute_gradient():
    with precision(np.float64):
        x = Input((3, 4))
        y = Reshape((12,))(Permute((2, 1))(x))
        m = Model(x, Dense(2, rng=0)(Concatenate()([y, Flatten()(RepeatVector(2)(Dense(3, rng=1)(y)))])))
        errs = check_graph_grad(m, [r.standard_normal((2, 3, 4))])
    assert max(errs.values()) < TOL, errs


# --- parameter counts equal to Keras's (models built, not trained; zeros initialisers keep it cheap) -----------
# The builders are chapter 09's (blocks); this checks the graph machinery's counts and summary on them.
from dl_from_scratch.blocks import resnet50, vgg16, mobilenet_v2


@pytest.mark.parametrize('make,total,trainable', [(resnet50, 25_636_712, 25_583_592), (vgg16, 138_357_544, 138_357_544),
                                                  (mobilenet_v2, 3_538_984, 3_504_872)])
def test_keras_parameter_counts(make, total, trainable):
    m = make(kernel_initializer='zeros')
    assert (m.count_params(), m.count_trainable_params()) == (total, trainable)
    lines = []; m.summary(print_fn=lines.append)
    assert f'Total params: {total:,}' in lines[0]


def test_sequential_inside_a_model_and_a_model_inside_sequential_round_trip(tmp_path):
    inner = Sequential([Dense(4, 'tanh', rng=0), Dense(3, rng=1)], input_shape=(5,), name='body')
    x = Input((5,)); outer = Model(x, Dense(2, rng=2)(inner(x)))
    t = Input((3,)); head = Model(t, Dense(2, rng=3)(t), name='head')
    seq = Sequential([Dense(3, rng=4), head], input_shape=(5,))
    xb = r.standard_normal((4, 5)).astype(np.float32)
    for m in (outer, seq):
        m2 = Model.load(m.save(tmp_path / 'm'))
        np.testing.assert_array_equal(m2.predict(xb), m.predict(xb))
        assert type(m2) is type(m)


def test_load_finds_the_layers_of_modules_not_yet_imported(tmp_path):
    "A checkpoint with a layer from a later chapter's module loads in a process that has imported only `model`."
    import subprocess, sys
    from dl_from_scratch.attention import LayerNorm
    path = str(tmp_path / 'ln.npz')
    Sequential([Dense(4, rng=0), LayerNorm()], input_shape=(3,)).save(path)
    code = ("import numpy as np; from dl_from_scratch.model import Model; "
            f"m = Model.load({path!r}); print(type(m.layers[-1]).__module__, m.predict(np.ones((2, 3))).shape)")
    out = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ['dl_from_scratch.attention', '(2,', '4)']
