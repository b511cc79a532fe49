"The define-then-run graph: compiled functions, updates, gradients, control flow, loops, random streams, bad input."
import numpy as np
import pytest
from dl_from_scratch import graph as G
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import numerical_grad, rel_error


def test_ketkar_arithmetic():
    a, b, c, d, e = (G.scalar(n, 'float64') for n in 'abcde')
    assert G.function([a, b, c, d, e], ((a - b + c) * d) / e)(1, 2, 3, 4, 5) == 1.6
    A, B, C, D = (G.matrix(n, 'float64') for n in 'ABCD')
    vals = [np.full((2, 2), v) for v in (1., 2., 5., 3.)]
    np.testing.assert_array_equal(G.function([A, B, C, D], (A + B - C) * D)(*vals), np.full((2, 2), -6.))
    E = (((A * a) + (B - b) - (C + c)) * D / d) * e
    np.testing.assert_array_equal(G.function([A, B, C, D, a, b, c, d, e], E)(*vals, 1, 2, 3, 4, 5), np.full((2, 2), -26.25))


def test_variable_get_set_and_updates_use_old_values():
    x = G.matrix('x', 'float64')
    y = G.Variable(np.array([[4., 5., 6.]]), 'y')
    f = G.function([x], x + y)
    np.testing.assert_array_equal(f([[1., 2., 3.]]), [[5., 7., 9.]])
    y.set_value([[5., 6., 7.]])
    np.testing.assert_array_equal(f([[1., 2., 3.]]), [[6., 8., 10.]])
    u, v = G.Variable(1.0, 'u'), G.Variable(10.0, 'v')
    swap = G.function([], [u, v], updates=[(u, v), (v, u)])         # both read the old values
    assert swap() == [1.0, 10.0] and (u.get_value(), v.get_value()) == (10.0, 1.0)
    out = G.function([], u)()
    out += 1                                                            # an output is a copy, not the variable's array
    assert u.get_value() == 10.0


def test_grad_matches_source_and_central_differences():
    x, y = G.matrix('x', 'float64'), G.Variable(np.array([[4., 5., 6.]]))
    z = ((x * x + y) * x).sum()
    zv, gv = G.function([x], [z, G.grad(z, x)])([[1., 2., 3.]])
    assert zv == 68 and gv.tolist() == [[7., 17., 33.]]
    with precision(np.float64):
        X0 = np.random.default_rng(1).normal(size=(3, 4))
        X, W = G.matrix('X'), G.Variable(np.random.default_rng(2).normal(size=(4, 2)))
        cost = G.softmax(G.tanh(X @ W)).max(axis=1).sum() + G.log(1 + G.exp(X.mean(axis=0))).sum()
        gX = G.function([X], G.grad(cost, X))(X0)
        assert rel_error(gX, numerical_grad(lambda a: float(G.function([X], cost)(a)), X0.copy())) < 1e-8


def test_training_step_reaches_tensorflow_summaries_numbers():
    with precision(np.float32):
        W, b = G.Variable(np.array([0.3], np.float32)), G.Variable(np.array([-0.3], np.float32))
        x, y = G.vector('x'), G.vector('y')
        loss = ((W * x + b - y) ** 2).sum()
        train = G.function([x, y], loss, updates=G.sgd_updates(loss, [W, b], 0.01))
        for _ in range(1000): train([1, 2, 3, 4], [0, -1, -2, -3])
    assert W.get_value().dtype == np.float32
    assert W.get_value()[0] == pytest.approx(-0.9999969, abs=2e-6) and b.get_value()[0] == pytest.approx(0.99999082, abs=5e-6)


def test_ifelse_is_lazy_and_switch_is_elementwise():
    x = G.scalar('x', 'float64')
    lazy = G.function([x], G.ifelse(x > 0, x * 2, G.log(x - 100)))      # the other branch would be NaN
    with np.errstate(all='raise'):
        assert lazy(3.0) == 6.0
    v = G.vector('v', 'float64')
    s = G.switch(v > 0, v, 0 * v)
    np.testing.assert_array_equal(G.function([v], [s, G.grad(s.sum(), v)])([-1., 2.])[1], [0., 1.])
    assert G.function([v], G.maximum(v, 1.0))([0., 3.]).tolist() == [1., 3.]


def test_scan_power_and_gradient_through_the_loop():
    k, a = G.scalar('k', 'int64'), G.scalar('a', 'float64')
    res = G.scan(lambda p, a: p * a, outputs_info=a, non_sequences=a, n_steps=k - 1)
    val, d = G.function([a, k], [res[-1], G.grad(res[-1], a)])(2, 5)
    assert (val, d) == (32.0, 80.0)
    xs = G.matrix('xs', 'float64')
    np.testing.assert_array_equal(G.function([xs], G.scan(lambda x, h: h + x, sequences=xs, outputs_info=np.zeros(2)))(
        np.ones((3, 2))), [[1, 1], [2, 2], [3, 3]])


def test_random_streams_reseed_and_redraw():
    s = G.RandomStreams(7)
    f = G.function([], s.uniform((4,)))
    a, b = f(), f()
    assert not np.array_equal(a, b) and ((0 <= a) & (a < 1)).all()
    s.seed(7)
    np.testing.assert_array_equal(f(), a)


def test_bad_input_names_what_was_expected():
    x, w = G.matrix('x'), G.matrix('w')
    with pytest.raises(ValueError, match=r"missing \['w'\]"): G.function([x], x @ w)
    f = G.function([x, w], x @ w)
    with pytest.raises(ValueError, match='expected 2 values'): f(np.ones((2, 2)))
    with pytest.raises(ValueError, match=r"input 'x' of shape \(N, N\), got \(2,\)"): f(np.ones(2), np.ones((2, 2)))
    with pytest.raises(ValueError, match='evaluating the matmul node'): f(np.ones((2, 3)), np.ones((2, 3)))
    with pytest.raises(ValueError, match='does not depend'): G.grad((x * 2).sum(), w)
    with pytest.raises(ValueError, match='scalar cost'): G.function([x], G.grad(x * 2, x))(np.ones((2, 2)))
    with pytest.raises(TypeError, match='no truth value'): bool(x > 0)
    with pytest.raises(ValueError, match='expected a value of shape'): G.Variable(np.zeros(3)).set_value(np.zeros(4))


def test_long_chain_does_not_recurse():
    x = G.scalar('x', 'float64')
    y = x
    for _ in range(5000): y = y + 1.0
    assert G.function([x], [y, G.grad(y, x)])(0.0) == [5000.0, 1.0]
