"Losses: every gradient against central differences in float64, reproduced source values, stability, bad input."
import re
import warnings
import numpy as np
import pytest
from dl_from_scratch import losses as L
from dl_from_scratch.functional import softmax, sigmoid
from dl_from_scratch.gradcheck import check_grad

r = np.random.default_rng(11)
Z, T = r.standard_normal((5, 3)) * 2, r.standard_normal((5, 3))
P, Y01 = r.uniform(0.05, 0.95, (5, 3)), (r.random((5, 3)) > 0.5).astype(float)
LAB = r.integers(0, 3, 5)
YPM = np.where(r.random((5, 3)) > 0.5, 1., -1.)
ZH = YPM * (1 + np.where(r.random((5, 3)) > .5, 1, -1) * r.uniform(0.1, 2, (5, 3)))
CASES = [(L.MeanSquaredError(), Z, T), (L.MeanAbsoluteError(), Z, T), (L.BinaryCrossentropy(), P, Y01),
         (L.BinaryCrossentropy(from_logits=True), Z, Y01), (L.CategoricalCrossentropy(), softmax(T), np.eye(3)[LAB]),
         (L.CategoricalCrossentropy(from_logits=True), Z, np.eye(3)[LAB]), (L.SparseCategoricalCrossentropy(from_logits=True), Z, LAB),
         (L.SparseCategoricalCrossentropy(from_logits=False), softmax(T), LAB), (L.Hinge(), ZH, YPM),
         (L.Huber(), Z + np.where(r.random((5, 3)) > .5, 2.0, 0.3), Z)]


@pytest.mark.parametrize('loss,p,y', CASES, ids=lambda o: type(o).__name__ if isinstance(o, L.Loss) else '')
def test_gradient_float64(loss, p, y):
    assert check_grad(lambda q: loss(q, y), lambda q: loss.grad(q, y), p) < 1e-6


@pytest.mark.parametrize('pen', [L.l1_penalty, L.l2_penalty])
def test_penalty_gradient(pen):
    assert check_grad(lambda w: pen(w, 0.3)[0], lambda w: pen(w, 0.3)[1], T) < 1e-6


def test_source_values():
    # source 000: cost(3, [.8,.9,.4], [1,1,0]) = 0.279776
    assert abs(L.BinaryCrossentropy()(np.array([[.8, .9, .4]]), np.array([[1., 1, 0]])) - 0.279776) < 1e-6   # printed truncated
    out, tgt = np.array([[0.01, 0.01, 0.01]]), np.array([[0.99, 0.99, 0.01]])
    assert abs(L.BinaryCrossentropy()(out, tgt) - 3.058146503109446) < 1e-12      # Ketkar listing 4-7
    with pytest.warns(UserWarning, match='row sums in'):          # the output row sums to 0.03
        assert abs(L.CategoricalCrossentropy()(out, tgt) - 9.16428867) < 1e-8
    np.testing.assert_allclose((out - tgt) ** 2, [[0.9604, 0.9604, 0]], atol=1e-12)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_log_losses_finite_at_1e4(dtype):
    z = np.array([[-1e4, 1e4, 0.], [1e4, -1e4, 5.]], dtype)
    y = np.array([[1., 0, 1], [1, 1, 0]])
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        outs = [L.BinaryCrossentropy(from_logits=True).value_and_grad(z, y),
                L.BinaryCrossentropy().value_and_grad(sigmoid(z), y),
                L.SparseCategoricalCrossentropy(from_logits=True).value_and_grad(z, np.array([0, 2])),
                L.CategoricalCrossentropy().value_and_grad(softmax(z), np.eye(3)[[0, 2]]),
                L.softmax_cross_entropy(z, np.array([1, 1]))]
    for v, g in outs:
        assert np.isfinite(v) and np.isfinite(g).all() and g.dtype == dtype
    assert outs[0][0] == pytest.approx((3e4 + np.log(2) + 5 + np.log1p(np.exp(-5))) / 6, rel=1e-6)


def test_bad_input_names_shapes():
    with pytest.raises(ValueError, match=r'expected y_true of shape \(5, 3\) \(the shape of y_pred\), got \(5,\)'):
        L.MeanSquaredError()(Z, LAB.astype(float))
    with pytest.raises(ValueError, match=r'labels in \[0, 3\)'):
        L.SparseCategoricalCrossentropy(from_logits=True)(Z, LAB + 3)
    with pytest.raises(ValueError, match='NaN'):
        L.Huber()(np.full((2, 1), np.nan), np.zeros((2, 1)))
    with pytest.raises(ValueError, match='get_loss'):
        L.get_loss('nope')
    assert isinstance(L.get_loss('sparse_categorical_crossentropy'), L.SparseCategoricalCrossentropy)


def test_probability_gradients_at_clipped_points_are_finite_and_point_the_right_way():
    # below eps the clipped loss is flat; we keep the gradient at the clipped p (documented), not 0
    g = L.BinaryCrossentropy().grad(np.array([[1e-9], [1 - 1e-12]]), np.array([[1.], [0.]]))
    assert np.isfinite(g).all() and g[0, 0] < -1e5 and g[1, 0] > 1e5
    g = L.CategoricalCrossentropy().grad(np.array([[1e-12, 1 - 1e-12]]), np.array([[1., 0.]]))
    assert np.isfinite(g).all() and g[0, 0] < -1e5 and g[0, 1] == 0


def _caught(f):
    "Messages of the warnings f() raises (every one recorded, none filtered)."
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter('always')
        f()
    return [str(m.message) for m in w]


def test_sparse_categorical_defaults_to_probabilities_as_keras():
    p, y = np.array([[0.9, 0.05, 0.05]]), np.array([0])
    assert L.SparseCategoricalCrossentropy().from_logits is False
    assert L.get_loss('sparse_categorical_crossentropy').from_logits is False
    assert L.SparseCategoricalCrossentropy()(p, y) == pytest.approx(-np.log(0.9))          # 0.105
    with pytest.warns(UserWarning, match='applied twice'):
        assert L.SparseCategoricalCrossentropy(from_logits=True)(p, y) == pytest.approx(0.6178, abs=1e-4)


@pytest.mark.parametrize('loss,p,y,match', [
    (L.SparseCategoricalCrossentropy(from_logits=True), softmax(Z), LAB, 'applied twice'),
    (L.CategoricalCrossentropy(from_logits=True), softmax(Z), np.eye(3)[LAB], 'applied twice'),
    (L.SparseCategoricalCrossentropy(), Z, LAB, r'not probabilities \(logits\?\)'),
    (L.CategoricalCrossentropy(), Z, np.eye(3)[LAB], r'not probabilities \(logits\?\)'),
    (L.SparseCategoricalCrossentropy(), softmax(Z) * 0.5, LAB, r'row sums in \[0.5, 0.5\]'),   # in [0, 1], sums 0.5
    (L.BinaryCrossentropy(), Z, Y01, r'not probabilities \(logits\?\)')], ids=str)
def test_wrong_kind_of_input_warns_once_per_loss_object(loss, p, y, match):
    msgs = _caught(lambda: [loss(p, y) for _ in range(3)])
    assert len(msgs) == 1, msgs
    assert type(loss).__name__ in msgs[0]
    assert re.search(match, msgs[0]), msgs[0]
    assert len(_caught(lambda: type(loss)(from_logits=loss.from_logits)(p, y))) == 1   # a new object warns again


def test_right_kind_of_input_does_not_warn():
    assert _caught(lambda: [L.SparseCategoricalCrossentropy()(softmax(Z), LAB),
                            L.SparseCategoricalCrossentropy(from_logits=True)(Z, LAB),
                            L.CategoricalCrossentropy()(softmax(T), np.eye(3)[LAB]),
                            L.CategoricalCrossentropy(from_logits=True)(Z, np.eye(3)[LAB]),
                            L.BinaryCrossentropy()(P, Y01), L.BinaryCrossentropy(from_logits=True)(Z, Y01),
                            L.BinaryCrossentropy(from_logits=True)(P, Y01),      # small logits are logits too
                            L.softmax_cross_entropy(Z, LAB)]) == []


@pytest.mark.parametrize('from_logits', [False, True])
@pytest.mark.parametrize('bad', [-0.5, 1.5, 2.0])
def test_bce_rejects_targets_outside_0_1(from_logits, bad):
    y = Y01.copy(); y[0, 0] = bad
    with pytest.raises(ValueError, match=r'BinaryCrossentropy expected targets y_true in \[0, 1\], got values in'):
        L.BinaryCrossentropy(from_logits=from_logits)(P, y)
    L.BinaryCrossentropy(from_logits=from_logits)(P, P)            # soft targets in [0, 1] are fine


@pytest.mark.parametrize('loss', [L.MeanSquaredError(), L.MeanAbsoluteError(), L.BinaryCrossentropy(),
                                  L.BinaryCrossentropy(from_logits=True), L.CategoricalCrossentropy(),
                                  L.CategoricalCrossentropy(from_logits=True), L.SparseCategoricalCrossentropy(),
                                  L.SparseCategoricalCrossentropy(from_logits=True), L.Hinge(), L.Huber()],
                         ids=lambda o: repr(o))
def test_empty_batch_is_an_error_not_nan(loss):
    y = np.zeros(0, np.int64) if isinstance(loss, L.SparseCategoricalCrossentropy) else np.zeros((0, 3))
    with pytest.raises(ValueError, match=r'expected a non-empty batch, got y_pred of shape \(0, 3\)'):
        loss.value_and_grad(np.zeros((0, 3)), y)


def test_softmax_cross_entropy_empty_batch():
    with pytest.raises(ValueError, match='non-empty batch'):
        L.softmax_cross_entropy(np.zeros((0, 4)), np.zeros(0, np.int64))
