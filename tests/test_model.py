"The model API: fit reaches 100% on separable data, NaN stops fit, checkpoints load only into the same shape, saves are atomic."
import os
import numpy as np
import pytest
import dl_from_scratch.model as model_mod
from dl_from_scratch.model import Sequential, EarlyStopping, ModelCheckpoint, History
from dl_from_scratch.layers import Dense, Activation, Flatten, Dropout, BatchNorm, GroupNorm, L2, MaxNorm
from dl_from_scratch.optim import SGD, Adam
from dl_from_scratch.losses import SparseCategoricalCrossentropy


def blobs(n=200, seed=0):
    r = np.random.default_rng(seed)
    x = np.concatenate([r.normal(-1.5, 0.6, (n // 2, 2)), r.normal(1.5, 0.6, (n // 2, 2))]).astype(np.float32)
    return x, np.repeat([0, 1], n // 2)


@pytest.mark.parametrize('head,loss', [((Dense(2, rng=1),), SparseCategoricalCrossentropy(from_logits=True)),
                                       ((Dense(1, 'sigmoid', rng=1),), 'binary_crossentropy')])
def test_fit_separable_reaches_100(head, loss):
    x, y = blobs()
    m = Sequential([Dense(8, 'relu', rng=0), *head])
    m.compile(loss, Adam(0.05), ['accuracy'])
    h = m.fit(x, y if not isinstance(loss, str) else y[:, None].astype(np.float32), epochs=30, batch_size=20,
              rng=0, verbose=0)
    assert isinstance(h, History) and len(h.history['loss']) == 30
    assert h.history['accuracy'][-1] == 1.0
    assert m.evaluate(x, y if not isinstance(loss, str) else y[:, None].astype(np.float32))[1] == 1.0


def test_fit_with_every_chapter06_layer_and_validation():
    x, y = blobs(256)
    m = Sequential([Dense(16, kernel_regularizer=L2(1e-3), kernel_constraint=MaxNorm(3), rng=0), BatchNorm(),
                    Activation('relu'), Dropout(0.2, rng=0), Dense(8, rng=2), GroupNorm(2), Activation('tanh'),
                    Dense(2, rng=1)])
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.01))
    h = m.fit(x, y, epochs=15, batch_size=32, validation_data=(x, y), rng=0, verbose=0)
    assert {'loss', 'accuracy', 'val_loss', 'val_accuracy'} <= set(h.history)
    assert h.history['val_accuracy'][-1] >= 0.99
    assert np.all(np.linalg.norm(m.layers[0].params['W'], axis=0) <= 3 + 1e-5)


def test_fit_vectorised_batches_sizes():
    x, y = blobs(50)
    seen = []

    class Spy(Dense):
        def forward(self, x, training=False):
            if training: seen.append(len(x))
            return super().forward(x, training)
    m = Sequential([Spy(2, rng=0)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1))
    m.fit(x, y, epochs=1, batch_size=16, verbose=0)
    assert seen == [16, 16, 16, 2]


def test_nan_loss_stops_fit_with_clear_message():
    x, y = blobs()
    m = Sequential([Dense(2, rng=0)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(1e30))
    with np.errstate(all='ignore'), pytest.raises(FloatingPointError, match='fit stopped at epoch 1, batch 1/7: the update made parameter .W. of layer .dense. non-finite'):
        m.fit(x * 1e10, y, epochs=5, verbose=0)
    assert m.history is not None


def test_early_stopping_restores_best_weights():
    x, y = blobs()
    m = Sequential([Dense(2, rng=0)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.05))
    first = []

    class Snap(model_mod.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if epoch == 0: first.extend(self.model.get_weights())
    es = EarlyStopping(patience=1, restore_best_weights=True)
    h = m.fit(x, y, epochs=20, validation_data=(x, 1 - y), callbacks=[Snap(), es], verbose=0)
    assert len(h.epoch) == 2 and es.best_epoch == 0
    for a, b in zip(m.get_weights(), first): np.testing.assert_array_equal(a, b)


def test_save_load_roundtrip_with_state(tmp_path):
    x, y = blobs()
    m = Sequential([Dense(8, rng=0, kernel_regularizer=L2(0.01)), BatchNorm(), Activation('relu'), Dropout(0.1),
                    Dense(2, rng=1)])
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.01)); m.fit(x, y, epochs=2, verbose=0)
    p = m.save(tmp_path / 'm')
    assert p.endswith('m.npz')
    m2 = Sequential.load(p)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))
    np.testing.assert_array_equal(m2.layers[1].state['moving_var'], m.layers[1].state['moving_var'])
    assert isinstance(m2.layers[0].kernel_regularizer, L2) and m2.layers[0].kernel_regularizer.l2 == 0.01


def test_load_into_other_shape_fails_cleanly(tmp_path):
    m = Sequential([Dense(8, rng=0), Dense(2, rng=1)], input_shape=(3,))
    p = m.save(tmp_path / 'a.npz')
    other = Sequential([Dense(8, rng=0), Dense(3, rng=1)], input_shape=(3,))
    before = other.get_weights()
    with pytest.raises(ValueError, match=r'dense_1/W: model expects shape \(8, 3\), file has \(8, 2\)'):
        other.load_weights(p)
    for a, b in zip(other.get_weights(), before): np.testing.assert_array_equal(a, b)
    deeper = Sequential([Dense(8), Dense(2), Dense(2)], input_shape=(3,))
    with pytest.raises(ValueError, match='missing from the file'):
        deeper.load_weights(p)


def test_interrupted_save_keeps_old_file(tmp_path, monkeypatch):
    m = Sequential([Dense(4, rng=0)], input_shape=(3,))
    p = m.save(tmp_path / 'ck.npz')
    old = open(p, 'rb').read()
    W_saved = m.layers[0].params['W'].copy()
    m.layers[0].params['W'] += 1

    def dying(f, **arrays):
        f.write(b'PK\x03\x04 partial'); raise KeyboardInterrupt
    monkeypatch.setattr(model_mod.np, 'savez', dying)
    with pytest.raises(KeyboardInterrupt):
        m.save(p)
    monkeypatch.undo()
    assert open(p, 'rb').read() == old
    assert sorted(os.listdir(tmp_path)) == ['ck.npz']
    np.testing.assert_array_equal(Sequential([Dense(4)], input_shape=(3,)).load_weights(p).layers[0].params['W'],
                                  W_saved)


def test_checkpoint_best_only(tmp_path):
    x, y = blobs()
    m = Sequential([Dense(2, rng=0)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1))
    ck = ModelCheckpoint(str(tmp_path / 'best.npz'), monitor='val_accuracy', save_best_only=True)
    m.fit(x, y, epochs=3, validation_data=(x, y), callbacks=[ck], verbose=0)
    assert os.path.exists(tmp_path / 'best.npz') and 1 <= len(ck.saved) <= 3


def test_summary_keras_counts():
    lines = []
    m = Sequential([Flatten(), Dense(512, 'relu'), Dense(256, 'relu'), Dense(128, 'relu'), Dense(10)],
                   input_shape=(28, 28, 1))
    m.summary(print_fn=lines.append)
    assert 'Total params: 567,434' in lines[0] and '(None, 784)' in lines[0]
    m = Sequential([Dense(64), BatchNorm(), Dense(10)], input_shape=(32,))
    m.summary(print_fn=lines.append)
    assert 'Non-trainable params: 128' in lines[1]


def test_bad_data_rejected_before_training():
    x, y = blobs()
    m = Sequential([Dense(2)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), 'sgd')
    with pytest.raises(ValueError, match='as many rows'):
        m.fit(x, y[:-1], verbose=0)
    x2 = x.copy(); x2[0, 0] = np.nan
    with pytest.raises(ValueError, match='finite'):
        m.fit(x2, y, verbose=0)


def test_fit_with_integer_ids_through_embedding():
    from dl_from_scratch.layers import Embedding
    r = np.random.default_rng(0)
    x = r.integers(0, 20, size=(200, 3)); y = (x[:, 0] < 10).astype(np.int64)     # class given by the first id
    m = Sequential([Embedding(20, 4, rng=0), Flatten(), Dense(2, rng=1)])
    m.compile(SparseCategoricalCrossentropy(from_logits=True), Adam(0.05))
    h = m.fit(x, y, epochs=30, batch_size=50, rng=0, verbose=0)
    assert h.history['accuracy'][-1] == 1.0


def test_unserialisable_config_saves_weights_only(tmp_path):
    init = lambda shape, rng=None, dtype=None: np.full(shape, 0.5, dtype)
    m = Sequential([Dense(3, kernel_initializer=init)], input_shape=(2,))
    p = m.save(tmp_path / 'w.npz')
    with pytest.raises(ValueError, match='weights only'):
        Sequential.load(p)
    m2 = Sequential([Dense(3)], input_shape=(2,)).load_weights(p)
    np.testing.assert_array_equal(m2.layers[0].params['W'], np.full((2, 3), 0.5, np.float32))


def test_to_cpu_keeps_model_working():
    x, y = blobs(40)
    m = Sequential([Dense(4, 'relu', rng=0), BatchNorm(), Dense(2, rng=1)])
    m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1)); m.fit(x, y, epochs=1, verbose=0)
    before = m.predict(x)
    m.to('cpu')
    np.testing.assert_array_equal(m.predict(x), before)
    m.fit(x, y, epochs=1, verbose=0)


# --- hardening: checkpoints load no code, sharing is correct, divergence and bad arguments are errors ------------

def test_load_constructs_only_registered_classes(tmp_path):
    "A checkpoint whose config names an unregistered object (os.system) is refused, naming it; nothing runs."
    import json, zipfile
    x, y = blobs(20)
    m = Sequential([Dense(2, rng=0, kernel_regularizer=L2(0.1))], input_shape=(2,))
    p = m.save(tmp_path / 'm')
    with np.load(p) as f: arrays = {k: f[k] for k in f.files}
    cfg = json.loads(str(arrays['__config__']))
    marker = tmp_path / 'ran'
    cfg['layers'][0]['kwargs']['kernel_regularizer'] = {'__object__': 'system', 'module': 'os',
                                                        'config': {'command': f'touch {marker}'}}
    arrays['__config__'] = np.array(json.dumps(cfg)); np.savez(tmp_path / 'evil.npz', **arrays)
    with pytest.raises(ValueError, match="cannot load 'system'"):
        Sequential.load(tmp_path / 'evil.npz')
    assert not marker.exists()
    cfg['layers'][0]['class'] = 'Popen'
    arrays['__config__'] = np.array(json.dumps(cfg)); np.savez(tmp_path / 'evil2.npz', **arrays)
    with pytest.raises(ValueError, match="cannot load 'Popen'"):
        Sequential.load(tmp_path / 'evil2.npz')


def test_custom_layer_loads_only_through_custom_objects(tmp_path):
    class Twice(Activation):
        def __init__(self, name=None): super().__init__('linear', name=name)
        def forward(self, x, training=False): self.cache = None; return 2 * x
        def backward(self, dy, need_dx=True): return 2 * dy
    m = Sequential([Dense(2, rng=0), Twice()], input_shape=(3,))
    p = m.save(tmp_path / 'c')
    with pytest.raises(ValueError, match="cannot load 'Twice'.*custom_objects"):
        Sequential.load(p)
    m2 = Sequential.load(p, custom_objects={'Twice': Twice})
    x = np.ones((2, 3), np.float32)
    np.testing.assert_array_equal(m2.predict(x), m.predict(x))


def test_layer_used_twice_in_sequential_shares_weights_and_sums_gradients():
    "Sequential([d, d]) keeps d's name, counts its weights once, and its gradient is the sum over both calls."
    from dl_from_scratch.core import precision
    from dl_from_scratch.gradcheck import numerical_grad, rel_error
    with precision(np.float64):
        d = Dense(3, 'tanh', rng=0)
        m = Sequential([d, d], input_shape=(3,))
        assert [l.name for l in m.layers] == ['dense', 'dense'] and m.count_params() == 12
        x = np.random.default_rng(1).normal(size=(4, 3)); g = np.random.default_rng(2).normal(size=(4, 3))
        m.forward(x, training=True); dx = m.backward(g)
        loss = lambda: float((m.forward(x) * g).sum())
        for k in ('W', 'b'):
            assert rel_error(m.grads[f'dense/{k}'], numerical_grad(lambda _: loss(), d.params[k])) < 1e-6
        assert rel_error(dx, numerical_grad(lambda v: float((m.forward(v) * g).sum()), x.copy())) < 1e-6


def test_divergent_update_raises_and_keeps_last_finite_weights():
    "A finite loss whose update overflows float32: the check runs after every update (not only on the loss), names "
    "the layer and the parameter, and puts back the weights of before the update."
    x, y = blobs(40)
    m = Sequential([Dense(4, rng=0, name='hidden'), Dense(2, rng=1)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(1e30))
    m.build((2,)); before = m.get_weights()
    with np.errstate(all='ignore'), pytest.raises(FloatingPointError, match="parameter '(W|b)' of layer '(hidden|dense)' non-finite"):
        m.fit(x * 1e20, 1 - y, epochs=1, batch_size=40, verbose=0)          # wrong labels: large gradients
    for a, b in zip(m.get_weights(), before): np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize('call,msg', [
    (lambda m, x, y: m.predict(x, batch_size=-1), 'batch_size to be an integer >= 1, got -1'),
    (lambda m, x, y: m.predict(x, batch_size=2.5), 'batch_size to be an integer >= 1, got 2.5'),
    (lambda m, x, y: m.evaluate(x, y, batch_size=0), 'batch_size to be an integer >= 1, got 0'),
    (lambda m, x, y: m.evaluate(x[:0], y[:0]), 'at least one sample'),
    (lambda m, x, y: m.predict(x[:0]), 'at least one sample'),
    (lambda m, x, y: m.fit(x, y, epochs=-1, verbose=0), 'epochs to be an integer >= 1, got -1'),
    (lambda m, x, y: m.fit(x, y, batch_size=2.5, verbose=0), 'batch_size to be an integer >= 1, got 2.5'),
    (lambda m, x, y: m.fit(x[:0], y[:0], verbose=0), 'at least one sample'),
    (lambda m, x, y: m.fit(x, y, batch_size=True, verbose=0), 'batch_size to be an integer'),
])
def test_batch_and_epoch_arguments_rejected(call, msg):
    x, y = blobs(20)
    m = Sequential([Dense(2, rng=0)], input_shape=(2,)); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1))
    with pytest.raises(ValueError, match=msg.replace('(', r'\(').replace(')', r'\)')):
        call(m, x, y)


def test_compile_accepts_a_single_metric_string():
    x, y = blobs(20)
    m = Sequential([Dense(2, rng=0)]); m.compile(SparseCategoricalCrossentropy(from_logits=True), SGD(0.1), metrics='accuracy')
    h = m.fit(x, y, epochs=1, verbose=0)
    assert set(h.history) == {'loss', 'accuracy'}


@pytest.mark.parametrize('content', [b'', b'garbage' * 100, b'PK\x03\x04truncated zip', None])
def test_load_of_a_non_checkpoint_raises_one_value_error(tmp_path, content):
    p = tmp_path / 'bad.npz'
    if content is None:                               # a real checkpoint, cut in half
        m = Sequential([Dense(2, rng=0)], input_shape=(3,)); m.save(p)
        data = p.read_bytes(); p.write_bytes(data[:len(data) // 2])
    else: p.write_bytes(content)
    with pytest.raises(ValueError, match='bad.npz is not a dl_from_scratch checkpoint: '):
        Sequential.load(p)
    with pytest.raises(ValueError, match='is not a dl_from_scratch checkpoint'):
        Sequential([Dense(2)], input_shape=(3,)).load_weights(p)
    np.savez(tmp_path / 'other.npz', a=np.zeros(3))    # someone else's npz: no config
    with pytest.raises(ValueError, match='holds weights only'):
        Sequential.load(tmp_path / 'other.npz')


def test_stale_temp_file_of_a_killed_save_is_removed(tmp_path):
    m = Sequential([Dense(2, rng=0)], input_shape=(3,))
    stale = tmp_path / 'm.npz.abc123.tmp'; stale.write_bytes(b'x' * 1000)     # as a killed atomic_savez leaves it
    other = tmp_path / 'n.npz.abc123.tmp'; other.write_bytes(b'y')              # another target's: kept
    m.save(tmp_path / 'm.npz')
    assert not stale.exists() and other.exists()


def test_model_uses_one_atomic_writer():
    assert not hasattr(model_mod, 'atomic_save_npz')
