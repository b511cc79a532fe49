"Capsule networks: squash, routing kernels (NumPy = Numba = CUDA simulator), layer gradients, margin loss, the network."
import os
os.environ.setdefault('NUMBA_ENABLE_CUDASIM', '1')
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_layer_grad, numerical_grad, rel_error
from dl_from_scratch.merge import check_graph_grad
from dl_from_scratch.model import Model
from dl_from_scratch.kernels.routing import (squash, squash_vjp, routing_forward, routing_backward, routing_reference,
                                             RoutingCache)
from dl_from_scratch.capsules import (Squash, PredictionVectors, DynamicRouting, Length, Mask, MarginLoss, capsnet,
                                      compile_capsnet)
from dl_from_scratch.optim import Adam


def test_squash_length_direction_and_vjp():
    rng = np.random.default_rng(0)
    s = rng.standard_normal((6, 5)) * rng.uniform(0.01, 10, (6, 1))
    v = squash(s)
    q = (s * s).sum(-1)
    np.testing.assert_allclose(np.linalg.norm(v, axis=-1), q / (1 + q), rtol=1e-6)
    np.testing.assert_allclose((v * s).sum(-1), np.linalg.norm(v, axis=-1) * np.sqrt(q), rtol=1e-6)   # same direction
    dv = rng.standard_normal(s.shape)
    assert rel_error(squash_vjp(s, dv), numerical_grad(lambda z: float((squash(z) * dv).sum()), s.copy())) < 1e-7
    assert np.all(squash_vjp(np.zeros((1, 5)), dv[:1]) == 0)


@pytest.mark.parametrize('shape,R', [((1, 5, 3, 4), 3), ((3, 9, 2, 6), 1), ((2, 4, 5, 3), 10), ((2, 3, 1, 2), 2)])
@pytest.mark.parametrize('dtype,tol', [(np.float64, 1e-12), (np.float32, 3e-5)])
def test_routing_backends_agree(shape, R, dtype, tol):
    rng = np.random.default_rng(sum(shape) + R)
    u = (rng.standard_normal(shape) * 0.4).astype(dtype)
    g = rng.standard_normal(shape[:1] + shape[2:]).astype(dtype)
    v0, c0 = routing_forward(u, R, backend='numpy')
    for be in ('numba', 'cuda'):
        v1, c1 = routing_forward(u, R, backend=be)
        assert v1.dtype == dtype and v1.shape == shape[:1] + shape[2:]
        for a, b in ((v1, v0), (c1.c, c0.c), (c1.s, c0.s), (c1.v, c0.v)):
            assert np.abs(a - b).max() <= tol * max(np.abs(b).max(), 1)
        for stop in (False, True):
            d1, d0 = routing_backward(g, c1, stop, backend=be), routing_backward(g, c0, stop, backend='numpy')
            assert np.abs(d1 - d0).max() <= tol * max(np.abs(d0).max(), 1), (be, stop)


def test_routing_couplings_and_agreement():
    rng = np.random.default_rng(1)
    u = rng.standard_normal((1, 8, 2, 4)) * 0.3
    u[0, :6, 0] = np.array([0.5, -0.4, 0.3, 0.2]) + 0.05 * rng.standard_normal((6, 4))
    v1, c1 = routing_forward(u, 1)
    v3, c3 = routing_forward(u, 3)
    np.testing.assert_allclose(c3.c.sum(-1), 1, rtol=1e-12)
    np.testing.assert_allclose(c1.c, 0.5)                                  # first iteration: uniform couplings
    assert c3.c[0, -1, :6, 0].mean() > 0.6                                 # the agreeing capsules route to capsule 0
    assert np.linalg.norm(v3[0, 0]) > np.linalg.norm(v1[0, 0])


@pytest.mark.parametrize('R', [1, 3, 10])
def test_routing_exact_gradient(R):
    rng = np.random.default_rng(R)
    u = rng.standard_normal((2, 5, 3, 4)) * 0.5
    with precision(np.float64):
        for be in ('numpy', 'numba'):
            assert check_layer_grad(DynamicRouting(R, backend=be), u)['x'] < 1e-6
        if R == 3:                                        # the CUDA simulator is slow: one small case
            assert check_layer_grad(DynamicRouting(R, backend='cuda'), u[:1, :3])['x'] < 1e-6


def test_routing_stop_gradient_is_the_frozen_coupling_gradient():
    rng = np.random.default_rng(2)
    u = rng.standard_normal((2, 6, 3, 4)) * 0.5
    g = rng.standard_normal((2, 3, 4))
    for be in ('numpy', 'numba'):
        layer = DynamicRouting(4, stop_gradient=True, backend=be)
        layer(u)
        c = layer.coupling().copy()
        frozen = lambda z: float((squash((c[..., None] * z).sum(1)) * g).sum())
        assert rel_error(layer.backward(g), numerical_grad(frozen, u.copy())) < 1e-6


@pytest.mark.parametrize('make,x', [
    (lambda: Squash(), (3, 7, 8)),
    (lambda: PredictionVectors(3, 4, stddev=0.5, rng=0), (2, 5, 6)),
    (lambda: Length(), (3, 10, 16)),
])
def test_layer_gradients(make, x):
    with precision(np.float64):
        errs = check_layer_grad(make(), np.random.default_rng(3).standard_normal(x) * 0.3)
    assert max(errs.values()) < 1e-6, errs


def test_prediction_vectors_values():
    with precision(np.float64):
        layer = PredictionVectors(4, 3, stddev=1.0, rng=0)
        u = np.random.default_rng(4).standard_normal((3, 6, 2))
        np.testing.assert_allclose(layer(u), np.einsum('ijdk,nik->nijd', layer.params['W'], u), rtol=1e-12)
    assert layer.params['W'].shape == (6, 4, 3, 2)


def test_mask_labels_and_longest():
    rng = np.random.default_rng(5)
    v = rng.standard_normal((4, 10, 16))
    y = np.eye(10)[[3, 1, 4, 1]]
    out = Mask()([v, y]).reshape(4, 10, 16)
    assert np.all(out[np.arange(4), [3, 1, 4, 1]] == v[np.arange(4), [3, 1, 4, 1]])
    assert np.count_nonzero(np.abs(out).sum(-1)) == 4
    longest = (v ** 2).sum(-1).argmax(-1)
    out0 = Mask()([v, np.zeros((4, 10))]).reshape(4, 10, 16)
    assert np.all(out0[np.arange(4), longest] == v[np.arange(4), longest])
    assert np.count_nonzero(np.abs(out0).sum(-1)) == 4
    with precision(np.float64):
        assert max(check_graph_grad(Mask(), [v, y]).values()) < 1e-6


def test_margin_loss_values_and_gradient():
    rng = np.random.default_rng(6)
    ell, labels = rng.uniform(0, 1, (5, 10)), rng.integers(0, 10, 5)
    loss = MarginLoss()
    T = np.eye(10)[labels]
    expect = (T * np.maximum(0, 0.9 - ell) ** 2 + 0.5 * (1 - T) * np.maximum(0, ell - 0.1) ** 2).sum() / 5
    assert abs(loss(ell, labels) - expect) < 1e-12 and abs(loss(ell, T) - expect) < 1e-12
    assert rel_error(loss.grad(ell, labels), numerical_grad(lambda z: loss(z, labels), ell.copy())) < 1e-7
    assert loss(np.where(T == 1, 0.95, 0.05), labels) == 0


def test_bad_input_names_what_was_expected():
    with pytest.raises(ValueError, match='rank 4'): routing_forward(np.zeros((2, 3, 4)))
    with pytest.raises(ValueError, match='positive integer'): routing_forward(np.zeros((1, 2, 3, 4)), 0)
    with pytest.raises(ValueError, match='positive integer'): DynamicRouting(0)
    _, cache = routing_forward(np.zeros((1, 2, 3, 4)))
    with pytest.raises(ValueError, match=r'\(1, 3, 4\)'): routing_backward(np.zeros((1, 3, 5)), cache)
    with pytest.raises(ValueError, match='RoutingCache'): routing_backward(np.zeros((1, 3, 4)), None)
    with pytest.raises(ValueError, match=r'\(N, I, K\)'): PredictionVectors(10, 16)(np.zeros((2, 8)))
    with pytest.raises(ValueError, match='labels'): Mask()([np.zeros((2, 10, 16)), np.zeros((2, 9))])
    with pytest.raises(ValueError, match=r'\[0, 10\)'): MarginLoss()(np.zeros((2, 10)), np.array([0, 10]))
    with pytest.raises(ValueError, match='NaN'): routing_forward(np.full((1, 2, 3, 4), np.nan))


def _tiny(dtype=np.float64, **kw):
    with precision(dtype):
        return capsnet((8, 8, 1), n_classes=3, conv_filters=4, kernel_size=3, primary_channels=2, primary_dim=3,
                       digit_dim=4, decoder_units=(6,), stddev=0.5, rng=1, **kw)


def test_small_capsnet_gradient_and_shapes():
    net = _tiny()
    rng = np.random.default_rng(7)
    xs = [rng.uniform(0, 1, (2, 8, 8, 1)), np.eye(3)[[0, 2]]]
    with precision(np.float64):
        lengths, recon = net.predict(xs)
        assert lengths.shape == (2, 3) and recon.shape == (2, 64) and (recon > 0).all() and (recon < 1).all()
        assert net.predictions.predict(xs[0]).shape == (2, 8, 3, 4)       # 2x2 positions x 2 channels
        errs = check_graph_grad(net, xs)
    assert max(errs.values()) < 1e-6, max(errs.items(), key=lambda kv: kv[1])


def test_capsnet_parameter_count_and_save_load(tmp_path):
    net = capsnet(rng=0)
    assert net.count_params() == 8_215_568 and net.count_params() - net.decoder.count_params() == 6_804_224
    tiny = _tiny(np.float32)
    x = [np.random.default_rng(8).uniform(0, 1, (3, 8, 8, 1)).astype(np.float32), np.zeros((3, 3), np.float32)]
    again = Model.load(tiny.save(tmp_path / 'tiny'))
    for a, b in zip(tiny.predict(x), again.predict(x)): np.testing.assert_array_equal(a, b)


def test_small_capsnet_learns():
    "A few Adam steps on two separable classes of 8x8 images lower the loss and fit the batch."
    rng = np.random.default_rng(9)
    y = np.arange(16) % 2
    x = rng.uniform(0, 0.2, (16, 8, 8, 1)).astype(np.float32)
    x[y == 0, :4] += 0.8; x[y == 1, 4:] += 0.8
    net = _tiny(np.float32, routing_iterations=3)
    compile_capsnet(net, Adam(0.01))
    targets = [np.eye(3, dtype=np.float32)[y]]
    first = net.train_step(([x, targets[0]], [y, x.reshape(16, -1)]))['loss']
    for _ in range(30): logs = net.train_step(([x, targets[0]], [y, x.reshape(16, -1)]))
    assert logs['loss'] < 0.5 * first and logs['length_accuracy'] == 1.0
