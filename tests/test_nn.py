"Define-by-run: parameters accumulate gradients until zero_grad, modules register them, optimizers step them."
import numpy as np
import pytest
from dl_from_scratch import nn
from dl_from_scratch.autodiff import Tensor
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import numerical_grad, rel_error


def test_parameter_grad_accumulates_until_zero_grad():
    w = nn.Parameter([1., 2.])
    for _ in range(3): (w * w).sum().backward()
    np.testing.assert_array_equal(w.grad, 3 * 2 * np.array([1., 2.]))
    w.zero_grad()
    assert w.grad is None


def test_module_registers_in_order_and_shares_once():
    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(3, 2, rng=0)
            self.b = self.a                      # the same module twice: its parameters once
            self.c = nn.Parameter(np.zeros(2))
    net = Net()
    assert [n for n, _ in net.named_parameters()] == ['c', 'a.weight', 'a.bias']
    net.a = nn.Linear(3, 2, bias=False, rng=1)
    assert [n for n, _ in net.named_parameters()] == ['c', 'a.weight', 'b.weight', 'b.bias']


def test_linear_and_cross_entropy_gradients():
    with precision(np.float64):
        lin = nn.Linear(4, 3, rng=0)
        X, y = np.random.default_rng(1).normal(size=(5, 4)), np.array([0, 2, 1, 1, 0])
        nn.cross_entropy(lin(X), y).backward()
        W0 = lin.weight.data.copy()
        def loss(W):
            lin.weight.data[...] = W
            return float(nn.cross_entropy(lin(X), y).data)
        num = numerical_grad(loss, W0.copy())
        assert rel_error(lin.weight.grad, num) < 1e-8


def test_sgd_momentum_matches_pytorch_rule():
    p = nn.Parameter(np.array([1.0, -2.0]))
    opt = nn.SGD([p], lr=0.1, momentum=0.9)
    v, ref = np.zeros(2), np.array([1.0, -2.0])
    for _ in range(3):
        opt.zero_grad(); (p * p).sum().backward(); opt.step()
        v = 0.9 * v + 2 * ref; ref = ref - 0.1 * v                      # PyTorch: v = μv + g, p -= lr·v
    np.testing.assert_allclose(p.data, ref, rtol=1e-12)


def test_forgetting_zero_grad_sums_old_gradients():
    p = nn.Parameter(np.array([1.0]))
    opt = nn.SGD([p], lr=0.1)
    for _ in range(2): (p * 3.0).sum().backward(); opt.step()          # no zero_grad
    assert p.data[0] == pytest.approx(1.0 - 0.1 * 3 - 0.1 * 6)


def test_bad_input():
    with pytest.raises(ValueError, match=r'Linear expected x of shape \(N, 3\)'): nn.Linear(3, 1)(np.ones((2, 4)))
    with pytest.raises(ValueError, match='targets in'): nn.cross_entropy(Tensor(np.zeros((2, 3))), np.array([0, 5]))
    with pytest.raises(ValueError, match='at least one'): nn.SGD([])
    with pytest.raises(TypeError, match='Parameters'): nn.SGD([Tensor(np.ones(1))])
    class Bad(nn.Module):
        def __init__(self): self.w = nn.Parameter(1.0)
    with pytest.raises(AttributeError, match='super'): Bad()
