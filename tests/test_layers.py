"Gradient checks of every layer of chapters 05-06 (float64, central differences, relative error < 1e-6) and their input checks."
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad
from dl_from_scratch.layers import (Layer, LAYERS, Dense, Activation, Flatten, Dropout, BatchNorm, GroupNorm, Embedding,
                                    L2, L1, L1L2, MaxNorm, get_regularizer, get_constraint)
from dl_from_scratch import init

TOL = 1e-6
rng = np.random.default_rng(1234)


def _check(layer, x, training=True, build=None):
    with precision(np.float64):
        if build is not None:
            layer.build(build)
            if 'gamma' in layer.params:           # non-trivial scale and shift
                layer.params['gamma'][:] = rng.normal(size=layer.params['gamma'].shape)
                layer.params['beta'][:] = rng.normal(size=layer.params['beta'].shape)
        errs = check_layer_grad(layer, x, training=training)
    assert max(errs.values()) < TOL, errs
    return errs


@pytest.mark.parametrize('act', [None, 'sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'softplus', 'swish',
                                 'lecun_tanh', 'softmax'])
@pytest.mark.parametrize('use_bias', [True, False])
def test_dense_grad(act, use_bias):
    errs = _check(Dense(5, activation=act, use_bias=use_bias, rng=0), rng.normal(size=(6, 4)) + 0.05)
    assert set(errs) == ({'x', 'W', 'b'} if use_bias else {'x', 'W'})


@pytest.mark.parametrize('name', ['sigmoid', 'tanh', 'relu', 'leaky_relu', 'elu', 'softplus', 'swish',
                                  'hard_sigmoid', 'lecun_tanh', 'softmax'])
def test_activation_grad(name):
    x = rng.normal(size=(4, 7)) * 2
    x[np.abs(x) < 0.05] += 0.1                  # away from kinks (relu at 0, hard_sigmoid corners)
    if name == 'hard_sigmoid': x[np.abs(np.abs(x) - 2.5) < 0.05] += 0.1
    _check(Activation(name), x)


def test_rrelu_layer_draws_slopes_in_training_and_backward_uses_them():
    x = rng.normal(size=(6, 7)); x[np.abs(x) < 0.05] += 0.1
    _check(Activation('rrelu', rng=5, lower=0.1, upper=0.4), x)                 # training: the drawn slopes
    _check(Activation('rrelu', lower=0.1, upper=0.4), x, training=False)
    lay, neg = Activation('rrelu', rng=0, lower=0.1, upper=0.4), -np.ones((3, 400))
    y1, y2 = lay(neg, training=True), lay(neg, training=True)
    assert (y1 != y2).any() and y1.std() > 0.05 and -0.4 <= y1.min() and y1.max() <= -0.1
    np.testing.assert_allclose(lay(neg), -0.25)                                  # inference: the mean slope


def test_flatten_grad():
    _check(Flatten(), rng.normal(size=(3, 4, 5, 2)))


def test_dropout_grad_and_statistics():
    _check(Dropout(0.4, rng=7), rng.normal(size=(8, 9)))
    x = np.ones((4000, 25), np.float32)
    y = Dropout(0.25, rng=0)(x, training=True)
    assert abs((y == 0).mean() - 0.25) < 0.01 and abs(y.mean() - 1) < 0.02
    assert Dropout(0.25)(x, training=False) is x


@pytest.mark.parametrize('shape', [(16, 5), (2, 4, 5, 3), (3, 6, 3)])
def test_batchnorm_grad_train(shape):
    _check(BatchNorm(), 5 * rng.normal(size=shape) + 12, build=shape[1:])


def test_batchnorm_grad_inference_and_running_stats():
    with precision(np.float64):
        bn = BatchNorm(momentum=0.9)
        xs = [rng.normal(2, 3, size=(32, 4)) for _ in range(3)]
        mm, mv = np.zeros(4), np.ones(4)
        for x in xs:
            bn(x, training=True)
            mm, mv = 0.9 * mm + 0.1 * x.mean(0), 0.9 * mv + 0.1 * x.var(0)
        np.testing.assert_allclose(bn.state['moving_mean'], mm, rtol=1e-12)
        np.testing.assert_allclose(bn.state['moving_var'], mv, rtol=1e-12)
        y = bn(xs[0], training=False)
        np.testing.assert_allclose(y, (xs[0] - mm) / np.sqrt(mv + 1e-5), rtol=1e-10)
    _check(bn, rng.normal(size=(5, 4)), training=False)


@pytest.mark.parametrize('groups,shape', [(2, (2, 4, 5, 6)), (1, (3, 3, 3, 4)), (4, (2, 2, 3, 4)), (3, (5, 6))])
def test_groupnorm_grad(groups, shape):
    _check(GroupNorm(groups), 4 * rng.normal(size=shape) + 10, build=shape[1:])


def test_groupnorm_normalises_each_group():
    gn = GroupNorm(2)
    with precision(np.float64):
        y = gn(rng.normal(3, 5, size=(2, 4, 4, 6)))
    g = y.reshape(2, 4, 4, 2, 3)
    np.testing.assert_allclose(g.mean((1, 2, 4)), 0, atol=1e-12)
    np.testing.assert_allclose(g.std((1, 2, 4)), 1, atol=1e-4)


def test_dense_bad_input_names_shapes():
    d = Dense(3, rng=0)
    d(np.zeros((2, 4), np.float32))
    with pytest.raises(ValueError, match=r'Dense expected input of shape \(N, 4\), got \(2, 5\)'):
        d(np.zeros((2, 5), np.float32))
    with pytest.raises(ValueError, match=r'rank 2.*got shape \(2, 4, 1\)'):
        d(np.zeros((2, 4, 1), np.float32))
    with pytest.raises(ValueError, match=r'rank 2 \(N, features\).*\(N, \*\(4, 4\)\)'):
        Dense(3)(np.zeros((2, 4, 4), np.float32))
    with pytest.raises(ValueError, match='dtype'):
        d(np.array([['a'] * 4]))


def test_float32_default_and_float64_under_precision():
    assert Dense(2, rng=0)(np.ones((1, 3))).dtype == np.float32
    with precision(np.float64):
        assert Dense(2, rng=0)(np.ones((1, 3))).dtype == np.float64


def test_regularizer_and_constraint_factories():
    assert isinstance(get_regularizer('l2'), L2) and get_regularizer('l2').l2 == 0.01
    assert isinstance(get_regularizer('l1'), L1) and isinstance(get_regularizer('l1_l2'), L1L2)
    assert isinstance(get_constraint('max_norm'), MaxNorm)
    with pytest.raises(ValueError):
        get_constraint('unit_norm')
    d = Dense(3, kernel_regularizer=L2(0.5), rng=0)
    d(np.ones((1, 4), np.float32))
    W = d.params['W']
    assert np.isclose(d.regularization_loss(), 0.5 * float((W.astype(np.float64) ** 2).sum()), rtol=1e-5)
    np.testing.assert_allclose(d.regularization_grads()['W'], W)


def test_layers_register_for_loading():
    for name in ['Dense', 'Activation', 'Flatten', 'Dropout', 'BatchNorm', 'GroupNorm']:
        assert LAYERS[name].__name__ == name and issubclass(LAYERS[name], Layer)


@pytest.mark.parametrize('name,var', [('glorot_uniform', 2 / 500), ('glorot_normal', 2 / 500), ('he_normal', 2 / 200),
                                      ('he_uniform', 2 / 200), ('lecun_normal', 1 / 200), ('lecun_uniform', 1 / 200)])
def test_initializer_variance(name, var):
    w = init.get_initializer(name)((200, 300), rng=0, dtype=np.float64)
    assert abs(w.var() / var - 1) < 0.03


def test_embedding_grad_and_ids():
    from dl_from_scratch.layers import Embedding
    from dl_from_scratch.gradcheck import numerical_grad, rel_error
    with precision(np.float64):
        emb = Embedding(10, 4, rng=0)
        ids = rng.integers(0, 10, size=(5, 6))
        y = emb(ids)
        assert y.shape == (5, 6, 4)
        g = rng.normal(size=y.shape)
        emb.forward(ids); emb.backward(g)
        num = numerical_grad(lambda _: float((emb.forward(ids) * g).sum()), emb.params['W'])
        assert rel_error(emb.grads['W'], num) < TOL
    with pytest.raises(ValueError, match=r'ids in \[0, 10\)'):
        emb(np.full((1, 6), 10))
    with pytest.raises(ValueError, match=r'shape \(N, 6\), got \(1, 5\)'):
        emb(np.zeros((1, 5), np.int64))


def test_prelu_grad_and_param_count():
    from dl_from_scratch.layers import PReLU
    x = rng.normal(size=(3, 4, 6)); x[np.abs(x) < 0.05] += 0.1
    errs = _check(PReLU(0.1), x)
    assert set(errs) == {'x', 'alpha'}
    p = PReLU(); p(np.zeros((2, 5, 7), np.float32))
    assert p.count_params() == 7
    np.testing.assert_allclose(p(np.array([[[-2.0] * 7] * 5])), -0.5)


def test_add_weight_records_options_and_serves_every_weight():
    "add_weight draws with the layer's rng, keeps trainable weights in params and the rest in state, and the base "
    "class's regularization_loss / regularization_grads / apply_constraints serve each weight it made."
    class TwoKernels(Layer):
        def __init__(self, rng=None):
            super().__init__(); self.rng = np.random.default_rng(rng)
        def build(self, input_shape):
            super().build(input_shape)
            self.add_weight('A', (input_shape[-1], 3), 'glorot_uniform', regularizer=L2(0.5), constraint=MaxNorm(0.1))
            self.add_weight('B', (3,), 'ones', regularizer='l1')
            self.add_weight('count', (), 0.0, trainable=False)
    l = TwoKernels(rng=3)
    l.build((4,))
    np.testing.assert_array_equal(l.params['A'], init.glorot_uniform((4, 3), rng=np.random.default_rng(3),
                                                                      dtype=np.float32))
    assert set(l.params) == {'A', 'B'} and set(l.state) == {'count'} and l.params['A'].dtype == np.float32
    A = l.params['A'].astype(np.float64)
    assert np.isclose(l.regularization_loss(), 0.5 * (A ** 2).sum() + 0.01 * 3, rtol=1e-5)
    g = l.regularization_grads()
    np.testing.assert_allclose(g['A'], l.params['A']); np.testing.assert_allclose(g['B'], 0.01)
    l.apply_constraints()
    assert np.all(np.linalg.norm(l.params['A'], axis=0) <= 0.1 + 1e-6)
    assert l.count_params() == 16 and l.count_trainable_params() == 15


def test_dense_prelu_embedding_make_weights_with_add_weight():
    d = Dense(3, kernel_regularizer='l2', kernel_constraint='max_norm', rng=0); d.build((4,))
    assert set(d.regularizers) == {'W'} and set(d.constraints) == {'W'}
    from dl_from_scratch.layers import PReLU, Embedding
    p = PReLU(0.3); p.build((2, 5)); np.testing.assert_array_equal(p.params['alpha'], np.full(5, 0.3, np.float32))
    e = Embedding(7, 2, rng=0); e.build((3,)); assert e.params['W'].shape == (7, 2) and np.abs(e.params['W']).max() <= 0.05


@pytest.mark.parametrize('make,shape', [(lambda: Dense(3), (2, 4)), (lambda: Embedding(5, 2), (2, 3))])
def test_unbuilt_forward_and_backward_before_forward_name_the_layer(make, shape):
    "Item: forward on an unbuilt layer raised KeyError: 'W'; backward before forward raised a TypeError."
    layer = make(); layer.name = 'mine'
    x = np.zeros(shape, np.int64 if isinstance(layer, Embedding) else np.float32)
    with pytest.raises(ValueError, match="'mine': forward called on an unbuilt layer"):
        layer.forward(x)
    layer.build(shape[1:])
    with pytest.raises(ValueError, match="'mine': backward called before forward"):
        layer.backward(np.zeros((2, 3, 2) if isinstance(layer, Embedding) else (2, 3), np.float32))
    layer.forward(x)
    layer.backward(np.zeros(layer.forward(x).shape, np.float32))


def test_every_backward_takes_need_dx():
    "The model passes need_dx to any layer; weightless layers built by their first forward."
    with precision(np.float64):
        x = rng.normal(size=(3, 4))
        for layer in [Dense(2, rng=0), Activation('tanh'), Flatten(), Dropout(0.5, rng=0), BatchNorm(), GroupNorm(2)]:
            y = layer(x, training=True)
            dx = layer.backward(np.ones_like(y), need_dx=True)
            assert dx.shape == x.shape
            layer.backward(np.ones_like(y), need_dx=False)
