"Autoencoders: the sparse autoencoder's preprocessing and cost, the penalty layers and the VAE, gradient-checked in float64."
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import numerical_grad, rel_error
from dl_from_scratch.layers import Dense
from dl_from_scratch.merge import check_graph_grad
from dl_from_scratch.model import Model, Input
from dl_from_scratch.optim import RMSprop
from dl_from_scratch.autoencoders import (luminance, random_patches, preprocess_patches, bernoulli_kl, kl_sparsity,
                                          init_sparse_ae, sparse_ae_cost, train_sparse_ae, mosaic, KLSparsity,
                                          ContractiveDense, check_penalty_grad, add_noise, Sampling, vae_loss, VAE)

TOL = 1e-6
r = np.random.default_rng(14)


# --- source 001's sparse autoencoder ---------------------------------------------------------------------------
def test_preprocessing_range_and_report_inversion():
    imgs = r.integers(0, 256, (30, 20, 20, 3), dtype=np.uint8)
    p = random_patches(imgs, 30, 8, rng=0)
    assert p.shape == (30, 8, 8, 3) and p.dtype == np.uint8
    x = preprocess_patches(p)
    assert x.shape == (30, 64) and x.dtype == np.float32
    assert abs(x.min() - 0.1) < 1e-6 and abs(x.max() - 0.9) < 1e-6
    np.testing.assert_allclose(preprocess_patches(p, swap_min_max=True), 1 - x, atol=1e-6)
    # per-patch mean removal: before the clip every patch is centred, so after it the patch means sit near 0.5
    gray = luminance(p.astype(np.float64))
    assert gray.shape == (30, 8, 8)
    np.testing.assert_allclose(luminance(np.array([0.0, 1.0, 0.0])), 0.7152, rtol=1e-6)


def test_preprocessing_bad_input():
    with pytest.raises(ValueError, match=r'1 <= n <= 3'): random_patches(np.zeros((3, 8, 8, 3)), 4, 4)
    with pytest.raises(ValueError, match=r'1 <= size <= 8'): random_patches(np.zeros((3, 8, 8, 3)), 2, 9)
    with pytest.raises(ValueError, match=r'\(\.\.\., 3\)'): luminance(np.zeros((2, 4)))
    with pytest.raises(ValueError, match='rank 4'): preprocess_patches(np.zeros((2, 4, 3)))


@pytest.mark.parametrize('lam,beta,rho', [(5e-4, 0.1, 0.05), (0.0, 0.0, 0.05), (1e-2, 3.0, 0.2)])
def test_sparse_ae_cost_gradient(lam, beta, rho):
    X = r.uniform(0.1, 0.9, (15, 12))
    P = init_sparse_ae(12, 4, seed=1, dtype=np.float64)
    J, g, parts = sparse_ae_cost(P, X, lam, beta, rho)
    assert abs(J - parts['mse'] - parts['decay'] - parts['kl']) < 1e-12
    for k, p in P.items():
        num = numerical_grad(lambda _: sparse_ae_cost(P, X, lam, beta, rho)[0], p)
        assert rel_error(g[k], num) < TOL, k


def test_sparse_ae_cost_terms():
    X = r.uniform(0.1, 0.9, (10, 6))
    P = init_sparse_ae(6, 3, seed=2, dtype=np.float64)
    A1 = 1 / (1 + np.exp(-(X @ P['W1'] + P['b1'])))
    A2 = 1 / (1 + np.exp(-(A1 @ P['W2'] + P['b2'])))
    _, _, parts = sparse_ae_cost(P, X, 0.3, 0.7, 0.1)
    np.testing.assert_allclose(parts['mse'], ((A2 - X) ** 2).sum() / 20, rtol=1e-10)
    np.testing.assert_allclose(parts['decay'], 0.15 * ((P['W1'] ** 2).sum() + (P['W2'] ** 2).sum()), rtol=1e-10)
    rh = A1.mean(0)
    np.testing.assert_allclose(parts['kl'], 0.7 * (0.1 * np.log(0.1 / rh) + 0.9 * np.log(0.9 / (1 - rh))).sum(), rtol=1e-10)
    # the report's variant: one scalar rho_hat, a KL term that is not summed over the units
    _, _, rep = sparse_ae_cost(P, X, 0.3, 0.7, 0.1, report=True)
    np.testing.assert_allclose(rep['kl'], 0.7 * bernoulli_kl(0.1, A1.mean()), rtol=1e-10)


def test_report_gradient_is_half_the_data_gradient():
    "With no decay and no sparsity the report's gradient is exactly half the true one."
    X = r.uniform(0.1, 0.9, (9, 5))
    P = init_sparse_ae(5, 3, seed=3, dtype=np.float64)
    _, g, _ = sparse_ae_cost(P, X, 0.0, 0.0)
    _, g_rep, _ = sparse_ae_cost(P, X, 0.0, 0.0, report=True)
    for k in P: np.testing.assert_allclose(g_rep[k], g[k] / 2, rtol=1e-12, atol=1e-15)


def test_init_is_the_reports():
    P = init_sparse_ae(256, 64, seed=1500, dtype=np.float64)
    rs = np.random.RandomState(1500)
    lim = np.sqrt(6 / 320)
    np.testing.assert_array_equal(P['W1'], rs.uniform(-lim, lim, (256, 64)))
    assert all(np.abs(v).max() <= lim for v in P.values())
    assert {k: v.shape for k, v in P.items()} == {'W1': (256, 64), 'b1': (64,), 'W2': (64, 256), 'b2': (256,)}


def test_train_sparse_ae_lowers_the_cost_and_is_seeded():
    X = np.clip(0.5 + 0.15 * r.standard_normal((200, 16)), 0.1, 0.9).astype(np.float32)
    P, L = train_sparse_ae(X, 4, epochs=100)
    assert L.shape == (100,) and L[-1] < L[0]
    np.testing.assert_array_equal(train_sparse_ae(X, 4, epochs=100)[1], L)
    assert P['W1'].dtype == np.float32
    # lr_decay: the step shrinks, so after one epoch the weights moved less than with plain steps
    P0 = init_sparse_ae(16, 4)
    Pd, _ = train_sparse_ae(X, 4, epochs=2, lr_decay=0.1)
    Pp, _ = train_sparse_ae(X, 4, epochs=2)
    assert np.abs(Pd['W1'] - P0['W1']).sum() < np.abs(Pp['W1'] - P0['W1']).sum()
    with pytest.raises(ValueError, match='epochs >= 1'): train_sparse_ae(X, 4, epochs=0)


def test_kl_sparsity_value_gradient_and_bad_input():
    with precision(np.float64):
        a = r.uniform(0.02, 0.98, (6, 4))
        v, da = kl_sparsity(a, 0.05, 2.0)
        num = numerical_grad(lambda x: kl_sparsity(x, 0.05, 2.0)[0], a.copy())
        assert rel_error(np.broadcast_to(da, a.shape), num) < TOL
        assert kl_sparsity(np.full((3, 2), 0.05), 0.05, 1.0)[0] == pytest.approx(0.0, abs=1e-15)
    with pytest.raises(ValueError, match=r'mean activations in \(0, 1\)'): kl_sparsity(np.ones((2, 2)))


def test_mosaic_shape_and_scaling():
    m = mosaic(r.standard_normal((5, 3, 3)), ncols=3, pad=1)
    assert m.shape == (2 * 4 - 1, 3 * 4 - 1)
    assert m.min() == 0.0 and m.max() == 1.0


# --- penalty layers --------------------------------------------------------------------------------------------
def test_kl_sparsity_layer_gradient():
    with precision(np.float64):
        a = 1 / (1 + np.exp(-r.standard_normal((8, 5))))
        errs = check_penalty_grad(KLSparsity(0.1, 3.0), a)
    assert max(errs.values()) < TOL, errs


@pytest.mark.parametrize('lam', [1e-4, 0.5])
def test_contractive_dense_gradient_and_penalty(lam):
    with precision(np.float64):
        layer = ContractiveDense(4, lam=lam, rng=0)
        x = r.standard_normal((7, 6))
        errs = check_penalty_grad(layer, x)
        assert max(errs.values()) < TOL, errs
        h = layer.forward(x)
        jac2 = sum(((h[n:n + 1] * (1 - h[n:n + 1])).T * layer.params['W'].T) ** 2 for n in range(7)).sum()  # dh/dx per row
        np.testing.assert_allclose(layer.penalty, lam * jac2 / 7, rtol=1e-10)


def test_penalties_reach_the_model_loss_and_gradients():
    with precision(np.float64):
        x = Input((5,))
        h = KLSparsity(0.2, 2.0)(Dense(3, 'sigmoid', rng=0)(x))
        h2 = ContractiveDense(3, lam=0.2, rng=1)(Dense(5, 'tanh', rng=2)(h))
        m = Model(x, Dense(5, rng=3)(h2))
        errs = check_penalty_grad(m, r.standard_normal((9, 5)))
    assert max(errs.values()) < TOL, errs
    assert m.regularization_loss() > 0


def test_train_step_logs_the_penalty():
    x = Input((6,))
    m = Model(x, Dense(6, rng=1)(KLSparsity(0.05, 3.0)(Dense(4, 'sigmoid', rng=0)(x))))
    m.compile('mse', 'adam', metrics=[])
    X = r.uniform(0, 1, (64, 6)).astype(np.float32)
    data_loss = m.compute_loss(m.forward(X, training=True), X)[0]
    penalty = m.regularization_loss()
    assert penalty > 1.0                       # mean activations near 0.5 against rho = 0.05, beta 3, four units
    logs = m.train_step((X, X))
    assert logs['loss'] == pytest.approx(data_loss + penalty, rel=1e-6)
    m.fit(X, X, epochs=200, batch_size=64, verbose=0)
    m.forward(X)
    assert m.regularization_loss() < 0.7 * penalty     # training drives the units towards rho


def test_penalty_layers_bad_arguments():
    with pytest.raises(ValueError, match='0 < rho < 1'): KLSparsity(rho=0)


def test_add_noise():
    x = np.full((500, 4), 0.5, np.float32)
    n1, n2 = add_noise(x, 1.0, rng=3), add_noise(x, 1.0, rng=3)
    np.testing.assert_array_equal(n1, n2)
    assert n1.dtype == np.float32 and n1.min() >= 0 and n1.max() <= 1 and np.abs(n1 - x).max() > 0.4
    np.testing.assert_array_equal(add_noise(x, 0.0, rng=0), x)


# --- the VAE ---------------------------------------------------------------------------------------------------
class FixedNoise(Sampling):
    def forward(self, xs, training=False):
        self.rng = np.random.default_rng(0)
        return super().forward(xs, training)


def test_sampling_gradient_and_statistics():
    with precision(np.float64):
        errs = check_graph_grad(FixedNoise(), [r.standard_normal((4, 3)), r.standard_normal((4, 3))])
    assert max(errs.values()) < TOL, errs
    s = Sampling(rng=0)
    mu, lv = np.full((20000, 2), 1.5), np.full((20000, 2), np.log(0.25))
    z = s([mu, lv])
    np.testing.assert_allclose(z.mean(0), 1.5, atol=0.02)
    np.testing.assert_allclose(z.std(0), 0.5, atol=0.02)
    with pytest.raises(ValueError, match='two inputs of one shape'): Sampling()([Input((2,)), Input((3,))])


def test_vae_loss_gradient_and_values():
    with precision(np.float64):
        lg, x, mu, lv = r.standard_normal((3, 5)), r.uniform(0, 1, (3, 5)), r.standard_normal((3, 2)), r.standard_normal((3, 2))
        loss, logs, grads = vae_loss(lg, x, mu, lv)
        for g, v in zip(grads, (lg, mu, lv)):
            assert rel_error(g, numerical_grad(lambda _: vae_loss(lg, x, mu, lv)[0], v)) < TOL
        p = 1 / (1 + np.exp(-lg))
        np.testing.assert_allclose(logs['reconstruction'], -(x * np.log(p) + (1 - x) * np.log(1 - p)).sum() / 3, rtol=1e-10)
        assert loss == pytest.approx(logs['reconstruction'] + logs['kl'])
        # KL is zero at the prior
        assert vae_loss(lg, x, np.zeros((3, 2)), np.zeros((3, 2)))[1]['kl'] == 0.0


def tiny_vae(rng=0):
    x = Input((6,)); h = Dense(5, 'tanh', rng=rng)(x)
    enc = Model(x, [Dense(2, rng=rng + 1)(h), Dense(2, rng=rng + 2)(h)], name='encoder')
    z = Input((2,))
    dec = Model(z, Dense(6, rng=rng + 4)(Dense(5, 'tanh', rng=rng + 3)(z)), name='decoder')
    return VAE(enc, dec, rng=rng)


def test_whole_vae_gradient():
    with precision(np.float64):
        v = tiny_vae()
        sampler = next(l for l in v.layers if isinstance(l, Sampling))
        x = r.uniform(0, 1, (4, 6))
        def neg_elbo():
            sampler.rng = np.random.default_rng(1)
            logits, mu, lv = v.forward(x, training=True)
            return vae_loss(logits, x, mu, lv)
        _, _, g = neg_elbo(); v.backward(g, need_dx=False)
        grads = {k: np.array(a) for k, a in v.grads.items()}
        for k, p in v.params.items():
            assert rel_error(grads[k], numerical_grad(lambda _: neg_elbo()[0], p)) < TOL, k


def test_vae_trains_and_generates():
    protos = np.array([[1, 1, 1, 0, 0, 0], [0, 0, 0, 1, 1, 1], [1, 0, 1, 0, 1, 0], [0, 1, 0, 1, 0, 1]])
    X = np.abs(protos[r.integers(0, 4, 256)] - 0.02).astype(np.float32)
    v = tiny_vae(); v.compile(RMSprop(3e-3))
    before = v.elbo(X)['loss']
    h = v.fit(X, epochs=20, batch_size=32, rng=0, verbose=0)
    assert v.elbo(X)['loss'] < before and set(h.history) == {'loss', 'reconstruction', 'kl'}
    g = v.generate(np.zeros((3, 2), np.float32))
    assert g.shape == (3, 6) and ((g > 0) & (g < 1)).all()
