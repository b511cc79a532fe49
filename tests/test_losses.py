"Losses: every gradient against central differences in float64, reproduced source values, stability, bad input."
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
         (L.CategoricalCrossentropy(from_logits=True), Z, np.eye(3)[LAB]), (L.SparseCategoricalCrossentropy(), Z, LAB),
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
    assert abs(L.CategoricalCrossentropy()(out, tgt) - 9.16428867) < 1e-8
    np.testing.assert_allclose((out - tgt) ** 2, [[0.9604, 0.9604, 0]], atol=1e-12)


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_log_losses_finite_at_1e4(dtype):
    z = np.array([[-1e4, 1e4, 0.], [1e4, -1e4, 5.]], dtype)
    y = np.array([[1., 0, 1], [1, 1, 0]])
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        outs = [L.BinaryCrossentropy(from_logits=True).value_and_grad(z, y),
                L.BinaryCrossentropy().value_and_grad(sigmoid(z), y),
                L.SparseCategoricalCrossentropy().value_and_grad(z, np.array([0, 2])),
                L.CategoricalCrossentropy().value_and_grad(softmax(z), np.eye(3)[[0, 2]]),
                L.softmax_cross_entropy(z, np.array([1, 1]))]
    for v, g in outs:
        assert np.isfinite(v) and np.isfinite(g).all() and g.dtype == dtype
    assert outs[0][0] == pytest.approx((3e4 + np.log(2) + 5 + np.log1p(np.exp(-5))) / 6, rel=1e-6)


def test_bad_input_names_shapes():
    with pytest.raises(ValueError, match=r'expected y_true of shape \(5, 3\) \(the shape of y_pred\), got \(5,\)'):
        L.MeanSquaredError()(Z, LAB.astype(float))
    with pytest.raises(ValueError, match=r'labels in \[0, 3\)'):
        L.SparseCategoricalCrossentropy()(Z, LAB + 3)
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
