"Finite differences: error orders, check_grad, and check_layer_grad on a duck-typed stochastic layer."
import numpy as np
import pytest
from dl_from_scratch.gradcheck import derivative, numerical_grad, rel_error, check_grad, check_layer_grad


@pytest.mark.parametrize('method,order', [('forward', 1), ('backward', 1), ('central', 2), ('richardson', 4)])
def test_error_order(method, order):
    # halving h divides the truncation error by 2**order (h large enough that round-off is negligible)
    e1 = abs(derivative(np.exp, 0.5, 0.1, method) - np.exp(0.5))
    e2 = abs(derivative(np.exp, 0.5, 0.05, method) - np.exp(0.5))
    assert abs(np.log2(e1 / e2) - order) < 0.15


def test_source_numbers():
    # Hands-On DL ch.1 prints 6.000000000012662 for f = x**2 at 3 with "eps = 1e-2"; only eps = 1e-4 gives it
    assert derivative(lambda x: x ** 2, 3.0, 1e-4, 'central') == 6.000000000012662
    assert derivative(lambda x: x ** 2, 3.0, 1e-2, 'central') == pytest.approx(6, abs=1e-12)
    g = numerical_grad(lambda v: np.sqrt(np.sum(v ** 2)), np.array([1., 2.]))
    np.testing.assert_allclose(g, [0.4472, 0.8944], atol=1e-4)


def test_check_grad_catches_errors():
    A = np.random.default_rng(0).standard_normal((4, 3))
    f = lambda w: np.sum(np.sin(A @ w))
    g = lambda w: A.T @ np.cos(A @ w)
    w = np.array([0.1, -0.4, 0.3])
    assert check_grad(f, g, w) < 1e-9
    assert check_grad(f, lambda w: g(w) + 1e-3, w) > 1e-5
    assert check_grad(lambda x: x ** 3, lambda x: 3 * x ** 2, 2.0) < 1e-9


class Dropoutish:
    "y = (x * scale) with a random mask; params {'scale'}, rng attribute."
    def __init__(self, bug=False):
        self.params, self.grads, self.rng, self.bug = {'scale': np.array([0.5, -1.5, 2.0])}, {}, np.random.default_rng(3), bug
    def forward(self, x, training=False):
        m = (self.rng.random(x.shape) > 0.4).astype(float) if training else np.ones_like(x)
        self.cache = (x, m)
        return x * self.params['scale'] * m
    def backward(self, dy):
        x, m = self.cache
        self.grads['scale'] = (dy * x * (1 if self.bug else m)).sum(0)
        return dy * self.params['scale'] * m


def test_check_layer_grad_reseeds_rng_and_catches_bugs():
    x = np.random.default_rng(1).standard_normal((6, 3))
    errs = check_layer_grad(Dropoutish(), x)
    assert set(errs) == {'x', 'scale'} and max(errs.values()) < 1e-8
    assert check_layer_grad(Dropoutish(bug=True), x)['scale'] > 1e-3


def test_rel_error_and_bad_input():
    assert rel_error([3., 4.], [3., 4.]) == 0
    with pytest.raises(ValueError, match='floating ndarray'):
        numerical_grad(np.sum, [1, 2])
    with pytest.raises(ValueError, match='method'):
        derivative(np.sin, 1.0, method='spline')


class LazyDense:
    "Builds W on the first __call__ in the default dtype, like the package's layers."
    def __init__(self, units): self.units, self.params, self.grads, self.built = units, {}, {}, False
    def __call__(self, x, training=False):
        from dl_from_scratch.core import get_dtype
        if not self.built:
            self.params['W'] = np.random.default_rng(0).standard_normal((x.shape[-1], self.units)).astype(get_dtype())
            self.built = True
        return self.forward(x, training)
    def forward(self, x, training=False):
        self.cache = x
        return np.tanh(x @ self.params['W'])
    def backward(self, dy):
        dz = dy * (1 - np.tanh(self.cache @ self.params['W']) ** 2)
        self.grads['W'] = self.cache.T @ dz
        return dz @ self.params['W'].T


def test_check_layer_grad_builds_in_float64_and_rejects_float32():
    x = np.random.default_rng(5).standard_normal((4, 3))
    lay = LazyDense(2)
    errs = check_layer_grad(lay, x)
    assert lay.params['W'].dtype == np.float64 and max(errs.values()) < 1e-8
    built32 = LazyDense(2); built32(x.astype(np.float32))          # built outside: float32 parameters
    with pytest.raises(ValueError, match='float64 parameters'):
        check_layer_grad(built32, x)


def test_directional_check_reproduces_autograd_quick_check():
    from dl_from_scratch.gradcheck import directional_check
    num, ana = directional_check(lambda t: np.sqrt(t ** 2 + 4.0), lambda t: t / np.sqrt(t ** 2 + 4.0), 1.0)
    assert (f'{num:.12g}', f'{ana:.10g}') == ('0.447213595409', '0.4472135955')      # Ketkar listing 9-2
    A = np.random.default_rng(2).standard_normal((5, 4))
    f, g = (lambda w: np.sum(np.tanh(A @ w))), (lambda w: A.T @ (1 - np.tanh(A @ w) ** 2))
    n, a = directional_check(f, g, np.ones(4))
    assert abs(n - a) < 1e-8 * max(1, abs(a))
    n, a = directional_check(f, lambda w: g(w) * 1.05, np.ones(4))
    assert abs(n - a) > 1e-3 * abs(a)
