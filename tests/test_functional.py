"Activations: derivatives against finite differences, stability at |x| = 1e4, dtype and bad input."
import numpy as np
import pytest
from dl_from_scratch import functional as F
from dl_from_scratch.gradcheck import derivative, rel_error, check_grad

X = np.concatenate([np.linspace(-5, -0.05, 50), np.linspace(0.05, 5, 50)])
X = X[np.abs(np.abs(X) - 2.5) > 0.05]            # away from the kinks of relu-likes and hard_sigmoid
CASES = [('sigmoid', {}), ('tanh', {}), ('relu', {}), ('leaky_relu', {'alpha': 0.1}), ('elu', {'alpha': 0.7}),
         ('swish', {'beta': 1.7}), ('softplus', {}), ('hard_sigmoid', {}), ('lecun_tanh', {}), ('linear', {})]


@pytest.mark.parametrize('name,kw', CASES)
def test_derivative_matches_richardson(name, kw):
    f, df = F.get_activation(name)
    num = derivative(lambda t: f(t, **kw), X, 1e-3, 'richardson')
    assert rel_error(df(X, **kw), num) < 1e-9


@pytest.mark.parametrize('name,kw', CASES)
@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_finite_and_dtype_preserving_at_1e4(name, kw, dtype):
    f, df = F.get_activation(name)
    x = np.array([-1e4, -800., -100., 0., 100., 800., 1e4], dtype)
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        y, dy = f(x, **kw), df(x, **kw)
    assert np.isfinite(y).all() and np.isfinite(dy).all()
    assert y.dtype == dtype and dy.dtype == dtype and y.shape == dy.shape == x.shape


@pytest.mark.parametrize('dtype', [np.float32, np.float64])
def test_softmax_log_softmax_stable(dtype):
    z = np.array([[-1e4, 0., 1e4], [1e4, 1e4, -1e4]], dtype)
    with np.errstate(over='raise', invalid='raise', divide='raise'):
        s, ls = F.softmax(z), F.log_softmax(z)
    assert np.isfinite(s).all() and np.isfinite(ls).all()
    np.testing.assert_allclose(s, [[0, 0, 1], [.5, .5, 0]], atol=1e-6)
    np.testing.assert_allclose(ls[0], [-2e4, -1e4, 0], rtol=1e-6)


def test_softmax_vjp():
    r = np.random.default_rng(0)
    x, g = r.standard_normal((3, 5)), r.standard_normal((3, 5))
    assert check_grad(lambda t: np.sum(F.softmax(t) * g), lambda t: F.softmax_vjp(F.softmax(t), g), x) < 1e-8
    assert check_grad(lambda t: np.sum(F.log_softmax(t, axis=0) * g),
                      lambda t: F.log_softmax_vjp(F.log_softmax(t, axis=0), g, axis=0), x) < 1e-8


def test_prelu_alpha_gradient_and_rrelu_slopes():
    x = X.copy()
    np.testing.assert_allclose(F.prelu_grad_alpha(x, 0.2), derivative(lambda a: F.prelu(x, a), 0.2, 1e-4), atol=1e-8)
    a = F.rrelu_alpha(x.shape, 0.1, 0.3, training=True, rng=1)
    assert a.min() >= 0.1 and a.max() <= 0.3 and a.std() > 0
    np.testing.assert_array_equal(F.rrelu(x, training=True, rng=1, lower=0.1, upper=0.3), F.rrelu(x, alpha=a))
    np.testing.assert_allclose(F.rrelu(np.array([-1.]), 0.1, 0.3), [-0.2])      # inference: mean slope


def test_bad_input():
    with pytest.raises(ValueError, match='dtype'):
        F.relu(np.array(['x']))
    with pytest.raises(ValueError, match="got 'nope'"):
        F.get_activation('nope')
