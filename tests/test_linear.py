"""Linear models: normal equations and ridge, polynomial features, logistic regression (values, gradients, source tests)."""
import os
from pathlib import Path
import numpy as np
import pytest
from dl_from_scratch.linear import (add_intercept, normal_equations, polynomial_features, rmse, root_sse,
                                    logistic_propagate, logistic_predict, fit_logistic_regression, animal_labels)
from dl_from_scratch.gradcheck import check_grad


def test_normal_equations_recover_exact_coefficients():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(50, 4)); beta = np.array([1.5, -2.0, 0.0, 3.0])
    np.testing.assert_allclose(normal_equations(add_intercept(X), X @ beta + 0.7), np.r_[beta, 0.7], atol=1e-10)
    B = rng.normal(size=(4, 3))                                     # several targets at once
    np.testing.assert_allclose(normal_equations(X, X @ B), B, atol=1e-10)


def test_ridge_by_hand_and_shrinkage():
    # one feature x = (1, 2), y = (1, 2): (5 + lam) beta = 5
    for lam in (0.0, 1.0, 5.0):
        np.testing.assert_allclose(normal_equations(np.array([[1.0], [2.0]]), np.array([1.0, 2.0]), lam=lam),
                                   [5 / (5 + lam)], atol=1e-12)
    rng = np.random.default_rng(1); X = rng.normal(size=(30, 5)); y = rng.normal(size=30)
    norms = [np.linalg.norm(normal_equations(X, y, lam=l)) for l in (0.0, 0.1, 1.0, 10.0, 100.0)]
    assert all(a > b for a, b in zip(norms, norms[1:]))            # the penalty shrinks monotonically


def test_ridge_matches_augmented_least_squares():
    "Ridge = least squares on X stacked over sqrt(lam) I with zero targets."
    rng = np.random.default_rng(2); X = rng.normal(size=(20, 3)); y = rng.normal(size=20); lam = 0.7
    Xa = np.vstack([X, np.sqrt(lam) * np.eye(3)]); ya = np.r_[y, np.zeros(3)]
    np.testing.assert_allclose(normal_equations(X, y, lam=lam), np.linalg.lstsq(Xa, ya, rcond=None)[0], atol=1e-10)


def test_unpenalized_intercept():
    X = add_intercept(np.array([[0.0], [1.0], [2.0]])); y = np.array([1.0, 3.0, 5.0])
    w, b = normal_equations(X, y, lam=1.0, penalize_last=False)
    # minimise (w x + b - y)^2 + w^2 with b free: b = ybar - w xbar, w = Sxy/(Sxx + 1) = 4/(2 + 1)
    np.testing.assert_allclose([w, b], [4 / 3, 3 - 4 / 3], atol=1e-12)


def test_polynomial_features_and_errors():
    np.testing.assert_array_equal(polynomial_features(np.array([2.0]), 2), [[1.0, 2.0, 4.0]])
    np.testing.assert_array_equal(polynomial_features(np.array([3.0, -1.0]), 0), [[1.0], [1.0]])
    # a degree-3 polynomial is fitted exactly from its own features
    x = np.linspace(-1, 1, 10); y = 1 - 2 * x + 0.5 * x ** 3
    np.testing.assert_allclose(normal_equations(polynomial_features(x, 3), y), [1, -2, 0, 0.5], atol=1e-10)
    assert rmse(np.zeros(4), np.full(4, 2.0)) == 2.0 and root_sse(np.zeros(4), np.full(4, 2.0)) == 4.0


def test_bad_input():
    with pytest.raises(ValueError, match='singular'):
        normal_equations(np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match='rank 2'):
        normal_equations(np.ones(4), np.ones(4))
    with pytest.raises(ValueError, match='NaN'):
        normal_equations(np.array([[1.0], [np.nan]]), np.ones(2))
    with pytest.raises(ValueError, match='degree >= 0'):
        polynomial_features(np.ones(3), -1)
    with pytest.raises(ValueError, match=r'shape \(2,\), got \(3,\)'):
        logistic_propagate(np.zeros(3), 0.0, np.ones((4, 2)), np.ones(4))
    with pytest.raises(ValueError, match='one shape'):
        rmse(np.ones(3), np.ones(4))


def test_animal_labels_follow_the_source():
    np.testing.assert_array_equal(animal_labels(np.arange(10)), [0, 0, 1, 1, 1, 1, 1, 0, 0, 0])   # horse (7) is 0


def test_logistic_source_unit_numbers():
    "Build Your Own Deep Learning, section 3.2: propagate, 100 GD steps at lr 0.009, predict."
    X = np.array([[1.0, 2.0, -1.0], [3.0, 4.0, -3.2]]).T; y = np.array([1, 0, 1]); w = np.array([1.0, 2.0])
    cost, dw, db = logistic_propagate(w, 2.0, X, y)
    assert abs(2 * cost + dw.sum() + 2 * db - 14.999530) < 1e-6
    np.testing.assert_allclose([cost, *dw, db], [5.801545, 0.998456, 2.395072, 0.001456], atol=1e-6)
    w1, b1, costs = fit_logistic_regression(X, y, lr=0.009, iterations=100, w=w, b=2.0)
    _, dw1, db1 = logistic_propagate(w1, b1, X, y)
    np.testing.assert_allclose([w1.mean(), b1, dw1.mean(), db1, costs[1:].sum()],
                               [0.156463, 1.925359, 1.036073, 0.219464, 304.243381], atol=1e-6)
    np.testing.assert_array_equal(
        logistic_predict(np.array([0.1124579, 0.23106775]), -0.3, np.array([[1.0, -1.1, -3.2], [1.2, 2.0, 0.1]]).T),
        [1, 1, 0])


def test_logistic_gradient_and_stability():
    rng = np.random.default_rng(0)
    X = rng.normal(size=(9, 5)); y = rng.integers(0, 2, 9); w = rng.normal(size=5); b = -0.2
    cost = lambda p: logistic_propagate(p[:-1], p[-1], X, y)[0]          # p = (w, b)
    grad = lambda p: np.r_[logistic_propagate(p[:-1], p[-1], X, y)[1:]]
    assert check_grad(cost, grad, np.r_[w, b]) < 1e-8
    assert check_grad(cost, lambda p: grad(p) * np.r_[np.ones(5), 0.9], np.r_[w, b]) > 1e-4   # a wrong db is caught
    for z in (1e4, -1e4):             # the cost from logits stays finite at huge |z|
        c, g, _ = logistic_propagate(np.array([1.0]), 0.0, np.array([[z]]), np.array([0 if z > 0 else 1]))
        assert np.isfinite(c) and abs(c - 1e4) < 1e-6 and np.isfinite(g).all()


def test_logistic_regression_separates_separable_data():
    rng = np.random.default_rng(3)
    X = np.r_[rng.normal(-2, 0.5, (50, 2)), rng.normal(2, 0.5, (50, 2))].astype(np.float32)
    y = np.r_[np.zeros(50, np.int64), np.ones(50, np.int64)]
    w, b, costs = fit_logistic_regression(X, y, lr=0.5, iterations=200)
    assert w.dtype == np.float32 and (logistic_predict(w, b, X) == y).all()
    assert np.all(np.diff(costs) <= 1e-12)                          # convex, small step: cost never rises


def _cifar_available():
    d = Path(os.environ.get('TFDS_DATA_DIR', Path.home() / 'tensorflow_datasets'))
    return (d / 'cifar10').exists()


@pytest.mark.slow
@pytest.mark.skipif(not _cifar_available(), reason='CIFAR-10 is not prepared in TFDS_DATA_DIR')
def test_cifar_animal_logistic_regression_short_run():
    "A short version of the chapter's run: the cost falls from ln 2 and accuracy beats chance clearly."
    from dl_from_scratch.data import load
    x, y = load('cifar10', 'train')
    X = x[:10000].reshape(10000, -1).astype(np.float32) / np.float32(255)
    Y = animal_labels(y[:10000])
    w, b, costs = fit_logistic_regression(X, Y, lr=0.005, iterations=200)
    assert abs(costs[0] - np.log(2)) < 1e-6 and costs[-1] < costs[0]
    assert (logistic_predict(w, b, X) == Y).mean() > 0.6
