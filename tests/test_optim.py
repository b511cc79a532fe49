"""Optimizers: each rule's first two steps against a hand computation, plus state, dtype and input checks."""
import math
import numpy as np
import pytest
from dl_from_scratch.optim import (SGD, Adagrad, Adadelta, RMSprop, Adam, Adamax, Nadam, Rprop, Optimizer,
                                   get_optimizer, InverseTimeDecay, ExponentialDecay, StepDecay,
                                   clip_by_value, clip_by_global_norm, global_norm)

P0, G1, G2 = 1.0, 1.0, -2.0   # scalar start and two gradients used by every hand computation
TINY = 1e-300                 # an eps that changes no float64 sum below (eps=0 is rejected)


def two_steps(opt, g1=G1, g2=G2, p0=P0):
    params = {'w': np.array([p0])}
    opt.step(params, {'w': np.array([g1])}); p1 = float(params['w'][0])
    opt.step(params, {'w': np.array([g2])}); p2 = float(params['w'][0])
    return p1, p2


# Hand computations, written out step by step (scalars, lr and betas given in each case).
HAND = {
    'sgd': (SGD(0.1), (0.9, 1.1)),
    'momentum': (SGD(0.1, momentum=0.9), (0.9, 0.9 + 0.11)),                   # v1=-0.1, v2=-0.09+0.2
    'nesterov': (SGD(0.1, momentum=0.9, nesterov=True), (0.81, 0.81 + 0.9 * 0.11 + 0.2)),
    'adagrad': (Adagrad(0.1, eps=TINY), (0.9, 0.9 + 0.1 * 2 / math.sqrt(5))),      # G1=1, G2=5
    'rmsprop': (RMSprop(0.01, rho=0.9, eps=TINY),                                  # E1=0.1, E2=0.49
                (1 - 0.01 / math.sqrt(0.1), 1 - 0.01 / math.sqrt(0.1) + 0.02 / 0.7)),
    'adam': (Adam(0.1, 0.9, 0.99, eps=TINY),                                       # m2=-0.11, v2=0.0499
             (0.9, 0.9 + 0.1 * (0.11 / 0.19) / math.sqrt(0.0499 / 0.0199))),
    'adamax': (Adamax(0.1, 0.9, 0.99, eps=TINY), (0.9, 0.9 + 0.1 / 0.19 * 0.11 / 2)),  # u1=1, u2=2
    'nadam_const': (Nadam(0.1, 0.9, 0.99, eps=TINY, schedule_decay=None),
                    (1 - 0.1 * (0.09 / 0.19 + 1.0),
                     1 - 0.1 * (0.09 / 0.19 + 1.0) - 0.1 * (0.9 * -0.11 / 0.271 - 0.2 / 0.19) / math.sqrt(0.0499 / 0.0199))),
}


@pytest.mark.parametrize('name', list(HAND))
def test_first_two_steps_by_hand(name):
    opt, expected = HAND[name]
    np.testing.assert_allclose(two_steps(opt), expected, rtol=0, atol=1e-12)


def test_adadelta_by_hand():
    # rho 0.9, eps 1e-2 (large so that it matters), lr 1
    d1 = math.sqrt(0.01) / math.sqrt(0.1 + 0.01) * 1.0
    e1 = 0.1 * d1 ** 2
    d2 = math.sqrt(e1 + 0.01) / math.sqrt(0.49 + 0.01) * -2.0
    np.testing.assert_allclose(two_steps(Adadelta(1.0, rho=0.9, eps=1e-2)), (1 - d1, 1 - d1 - d2), atol=1e-12)


def test_amsgrad_keeps_the_max():
    # g2 small: v2 = 0.0099 + 1e-6 < v1 = 0.01, AMSGrad keeps v1 and takes the smaller step
    ams = two_steps(Adam(0.1, 0.9, 0.99, eps=TINY, amsgrad=True), 1.0, 0.01)
    adam = two_steps(Adam(0.1, 0.9, 0.99, eps=TINY), 1.0, 0.01)
    np.testing.assert_allclose(ams, (0.9, 0.9 - 0.1 * (0.091 / 0.19) / math.sqrt(0.01 / 0.0199)), atol=1e-12)
    np.testing.assert_allclose(adam, (0.9, 0.9 - 0.1 * (0.091 / 0.19) / math.sqrt(0.009901 / 0.0199)), atol=1e-12)


def test_nadam_dozat_schedule_by_hand():
    mu = [0.9 * (1 - 0.5 * 0.96 ** (0.004 * t)) for t in (1, 2, 3)]
    m1 = (1 - mu[0]) * G1
    mb1 = mu[1] * m1 / (1 - mu[0] * mu[1]) + (1 - mu[0]) * G1 / (1 - mu[0])
    m2 = mu[1] * m1 + (1 - mu[1]) * G2
    mb2 = mu[2] * m2 / (1 - mu[0] * mu[1] * mu[2]) + (1 - mu[1]) * G2 / (1 - mu[0] * mu[1])
    p1 = P0 - 0.1 * mb1 / 1.0
    p2 = p1 - 0.1 * mb2 / math.sqrt(0.0499 / 0.0199)
    np.testing.assert_allclose(two_steps(Nadam(0.1, 0.9, 0.99, eps=TINY)), (p1, p2), atol=1e-12)


def test_rprop_by_hand():
    opt, params = Rprop(0.1), {'w': np.array([1.0, 1.0])}
    opt.step(params, {'w': np.array([1.0, 1.0])})
    np.testing.assert_allclose(params['w'], [0.9, 0.9], atol=1e-12)
    opt.step(params, {'w': np.array([1.0, -2.0])})       # same sign: step 0.12; flip: step 0.05, no move
    np.testing.assert_allclose(params['w'], [0.78, 0.9], atol=1e-12)
    opt.step(params, {'w': np.array([1.0, -2.0])})       # after a flip the step is neither grown nor shrunk
    np.testing.assert_allclose(params['w'], [0.636, 0.95], atol=1e-12)


def test_nesterov_equals_lookahead_form():
    "Keras/PyTorch Nesterov on theta~ = theta + mu v traces the textbook look-ahead iterates."
    rng = np.random.default_rng(0)
    A = rng.normal(size=(5, 3)); A = A.T @ A + np.eye(3); b = rng.normal(size=3)
    grad = lambda th: A @ th - b
    lr, mu = 0.05, 0.9
    th, v = np.zeros(3), np.zeros(3)
    opt, params = SGD(lr, momentum=mu, nesterov=True), {'w': np.zeros(3)}
    for _ in range(30):
        v = mu * v - lr * grad(th + mu * v)      # textbook: gradient at the look-ahead point
        th = th + v
        opt.step(params, {'w': grad(params['w'])})
        np.testing.assert_allclose(params['w'], th + mu * v, atol=1e-12)


def test_state_is_per_key_and_in_place():
    opt = Adam(0.1)
    w, b = np.ones((2, 3), np.float32), np.zeros(3, np.float32)
    params = {'w': w, 'b': b}
    opt.step(params, {'w': np.ones((2, 3), np.float32)})           # only w gets a gradient
    assert params['w'] is w and w.dtype == np.float32
    assert set(opt.state) == {'w'} and (b == 0).all()
    opt.step(params, {'w': np.ones((2, 3), np.float32), 'b': np.ones(3, np.float32)})
    assert opt.state['w']['t'] == 2 and opt.state['b']['t'] == 1    # b's bias correction starts at its first step
    np.testing.assert_allclose(b, -0.1, rtol=1e-5)                  # Adam's first step is lr, whatever the scale
    opt.reset(); assert opt.state == {} and opt.iterations == 0


@pytest.mark.parametrize('name', ['sgd', 'momentum', 'nag', 'adagrad', 'adadelta', 'rmsprop', 'adam', 'amsgrad',
                                  'adamax', 'nadam', 'rprop'])
def test_converges_on_a_quadratic_in_float32(name):
    "Each rule, at a sensible rate, drives 0.5*sum(d*w^2) (condition number 10) towards 0 and keeps float32."
    lr = {'adadelta': 1.0, 'rprop': 0.1, 'adagrad': 0.5, 'sgd': 0.1, 'momentum': 0.05, 'nag': 0.05}.get(name, 0.05)
    opt = get_optimizer(name, lr=lr)
    d = np.array([1.0, 3.0, 10.0], np.float32)
    params = {'w': np.array([1.0, -1.0, 0.5], np.float32)}
    f0 = 0.5 * float((d * params['w'] ** 2).sum())
    for _ in range(300):
        opt.step(params, {'w': d * params['w']})
    assert params['w'].dtype == np.float32
    assert 0.5 * float((d * params['w'] ** 2).sum()) < 1e-2 * f0, (name, params['w'])


def test_schedules():
    s = InverseTimeDecay(0.2, 1, 1.0)
    assert [round(s(e), 3) for e in range(1, 5)] == [0.1, 0.067, 0.05, 0.04]
    assert ExponentialDecay(1.0, 2, 0.5)(4) == 0.25
    assert ExponentialDecay(1.0, 2, 0.5, staircase=True)(3) == 0.5
    assert [StepDecay(1.0, 0.1, 5)(e) for e in (0, 4, 5)] == [1.0, 1.0, pytest.approx(0.1)]
    opt = SGD(StepDecay(1.0, 0.5, 1)); params = {'w': np.zeros(1)}
    opt.epoch = 2; opt.step(params, {'w': np.ones(1)})
    assert params['w'][0] == -0.25


def test_clipping():
    g = {'a': np.array([3.0, -4.0]), 'b': np.array([[12.0]])}
    c, n = clip_by_global_norm(g, 1.3)
    assert n == 13.0 and math.isclose(global_norm(c), 1.3)
    np.testing.assert_allclose(c['a'] / g['a'], 0.1)                  # direction kept
    np.testing.assert_array_equal(clip_by_value(g, 4.0)['b'], [[4.0]])
    assert g['b'][0, 0] == 12.0                                       # inputs untouched
    params = {'a': np.zeros(2), 'b': np.zeros((1, 1))}
    SGD(1.0, clipvalue=1.0).step(params, g)
    np.testing.assert_array_equal(params['a'], [-1.0, 1.0])


def test_bad_input():
    params = {'w': np.zeros((2, 3))}
    with pytest.raises(ValueError, match=r'shape \(2, 3\), got \(3, 2\)'):
        SGD(0.1).step(params, {'w': np.zeros((3, 2))})
    with pytest.raises(ValueError, match='params lacks'):
        SGD(0.1).step(params, {'x': np.zeros((2, 3))})
    with pytest.raises(ValueError, match='floating array'):
        SGD(0.1).step({'w': np.zeros(3, np.int64)}, {'w': np.zeros(3)})
    with pytest.raises(ValueError, match='lr > 0'):
        Adam(lr=0)
    with pytest.raises(ValueError, match='beta_2'):
        Adam(beta_2=1.0)
    with pytest.raises(ValueError, match='one of'):
        get_optimizer('lbfgs')
    opt = Adam(); opt.step(params, {'w': np.ones((2, 3))})
    with pytest.raises(ValueError, match='reset'):
        opt.step({'w': np.zeros(4)}, {'w': np.zeros(4)})
    assert isinstance(get_optimizer('sgd'), Optimizer)


ALL = [SGD, Adagrad, Adadelta, RMSprop, Adam, Adamax, Nadam, Rprop]


@pytest.mark.parametrize('make', ALL, ids=lambda c: c.__name__)
@pytest.mark.parametrize('lr', [math.inf, -math.inf, math.nan, 0.0, -0.1, '0.1', None])
def test_every_optimizer_rejects_a_bad_learning_rate(make, lr):
    with pytest.raises(ValueError, match=rf'{make.__name__} expected lr > 0 and finite .*, got'):
        make(lr)


@pytest.mark.parametrize('make', [Adagrad, Adadelta, RMSprop, Adam, Adamax, Nadam], ids=lambda c: c.__name__)
@pytest.mark.parametrize('eps', [0, 0.0, -1e-7, math.inf, math.nan])
def test_eps_must_be_positive_and_finite(make, eps):
    with pytest.raises(ValueError, match=rf'{make.__name__} expected eps > 0 and finite, got'):
        make(eps=eps)


@pytest.mark.parametrize('make', [Adagrad, RMSprop, Adam, Adamax, Nadam], ids=lambda c: c.__name__)
def test_a_coordinate_with_zero_gradient_stays_put(make):
    # with eps = 0 (now rejected) this coordinate would compute 0/0 and turn NaN
    params = {'w': np.ones(2)}
    for _ in range(3):
        make(0.1).step(params, {'w': np.array([0.0, 1.0])})
    assert params['w'][0] == 1.0 and np.isfinite(params['w']).all()


@pytest.mark.parametrize('make,kw,match', [
    (SGD, dict(momentum=1.0), r'momentum in \[0, 1\)'), (SGD, dict(momentum=-0.1), 'momentum'),
    (RMSprop, dict(rho=1.0), r'rho in \[0, 1\)'), (Adadelta, dict(rho=math.nan), 'rho'),
    (Adam, dict(beta_1=1.0), 'beta_1'), (Adam, dict(beta_2=-0.5), 'beta_2'), (Nadam, dict(beta_2=1.5), 'beta_2'),
    (Adagrad, dict(initial_accumulator_value=-1.0), 'initial_accumulator_value >= 0'),
    (Nadam, dict(schedule_decay=-0.004), 'schedule_decay'), (Rprop, dict(eta_minus=1.5), 'eta_minus'),
    (Rprop, dict(eta_plus=1.0), 'eta_plus > 1'), (Rprop, dict(step_min=0.0), 'step_min > 0'),
    (Rprop, dict(step_min=1.0, step_max=0.5), 'step_min < step_max'),
    (SGD, dict(clipvalue=0.0), 'clipvalue None or > 0'), (Adam, dict(global_clipnorm=math.inf), 'global_clipnorm')])
def test_hyperparameters_out_of_range(make, kw, match):
    with pytest.raises(ValueError, match=match):
        make(**kw)


def test_defaults_and_edge_values_are_accepted():
    for make in ALL:
        make()
    SGD(0.1, momentum=0.0); Adam(beta_1=0.0); Nadam(schedule_decay=None); Adagrad(initial_accumulator_value=0.0)
    SGD(np.float32(0.1)); Adam(lr=1)                                     # NumPy floats and ints are numbers too


def test_schedules_are_checked():
    with pytest.raises(ValueError, match='initial_learning_rate > 0 and finite'):
        ExponentialDecay(math.inf)
    with pytest.raises(ValueError, match='decay_steps > 0'):
        InverseTimeDecay(0.1, decay_steps=0)
    opt = SGD(lambda epoch: math.inf if epoch else 0.1)
    params = {'w': np.ones(1)}
    opt.step(params, {'w': np.ones(1)})
    opt.epoch = 1
    with pytest.raises(ValueError, match='gave lr inf at epoch 1'):
        opt.step(params, {'w': np.ones(1)})
    assert params['w'][0] == pytest.approx(0.9)                      # the bad step never happened
    SGD(lambda epoch: 0.0).step(params, {'w': np.ones(1)})            # a schedule may end at 0 (one-cycle)
