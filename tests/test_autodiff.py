"Automatic differentiation: forward and reverse mode against central differences, source values, control flow."
import numpy as np
import pytest
from dl_from_scratch import autodiff as ad
from dl_from_scratch.gradcheck import check_grad, derivative

R = np.random.default_rng(0)
A, B, V = R.standard_normal((4, 3)), R.standard_normal((3, 2)), R.standard_normal(3)

TENSOR_CASES = [
    (lambda a: ad.tanh(a @ B).sum(), A),
    (lambda b: (A @ b).mean(), B),
    (lambda u: ((A @ u) ** 2).sum(), V),
    (lambda u: np.sum(u @ B), V),
    (lambda a: (a[1:3, ::2] ** 2).sum() + a[[0, 0, 1]].sum(), A),
    (lambda a: (a / (a.sum(axis=0, keepdims=True) + 10)).sum(), A),
    (lambda a: (np.exp(np.sin(a)) * a.T.T).sum() + ad.sigmoid(a).sum() + ad.log(a * a + 1).sum(), A),
    (lambda b: np.sum(np.sqrt((A @ B + b) ** 2 + 1)), np.array([0.3, -0.2])),
]


@pytest.mark.parametrize('i', range(len(TENSOR_CASES)))
def test_tensor_grad_matches_central_differences(i):
    f, x = TENSOR_CASES[i]
    assert check_grad(f, ad.grad(f), x.copy()) < 1e-8


def test_value_dual_and_forward_mode_agree():
    f = lambda x, y: x * ad.sin(y) / (1 + x ** 2) + 2.0 ** x - ad.exp(-x * y) + y ** x
    for argnum in (0, 1):
        rev = ad.grad(f, argnum)(0.7, 1.3)
        fwd = ad.fwd_grad(f, argnum)(0.7, 1.3)
        num = derivative(lambda t: f(t, 1.3) if argnum == 0 else f(0.7, t), 0.7 if argnum == 0 else 1.3, 1e-3, 'richardson')
        assert rev == pytest.approx(num, rel=1e-9) and fwd == pytest.approx(num, rel=1e-9)


def test_ketkar_values():
    f = lambda x1, x2: np.sqrt(x1 ** 2 + x2 ** 2)
    val, (g1, g2) = ad.value_and_grad(f, (0, 1))(1.0, 2.0)
    assert (round(val, 4), round(g1, 4), round(g2, 4)) == (2.2361, 0.4472, 0.8944)
    z = lambda x, y: ((x * x + y) * x).sum()
    v, g = ad.value_and_grad(z)(np.array([[1., 2., 3.]]), np.array([[4., 5., 6.]]))
    assert v == 68 and g.tolist() == [[7, 17, 33]]
    v, g = ad.value_and_grad(z)(np.array([[1., 2., 3.]]), np.ones((1, 3)))
    assert v == 42 and g.tolist() == [[4, 13, 28]]


def test_control_flow():
    def f(x):
        y = x
        while y < 100: y = y * x          # data-dependent loop count
        return y if x > 3 else -y         # branch
    for x0 in (2.5, 3.5):
        assert check_grad(f, ad.grad(f), x0) < 1e-8


def test_deep_graph_and_repeated_backward():
    x = ad.Value(1.0); y = x
    for _ in range(20_000): y = y * 1.00001
    y.backward(); y.backward()            # no recursion limit; grads are recomputed, not accumulated
    assert x.grad == pytest.approx(1.00001 ** 20_000)


def test_dtype_and_errors():
    t = ad.Tensor(np.ones((2, 2), np.float32))
    out = (t * 3.0 + 1).mean(); out.backward()
    assert out.data.dtype == np.float32 and t.grad.dtype == np.float32
    with pytest.raises(ValueError, match='scalar'):
        ad.grad(lambda x: x * 2)(np.ones(3))
    with pytest.raises(TypeError, match='cannot combine'):
        ad.Value(1.0) + ad.Tensor(np.ones(2))
