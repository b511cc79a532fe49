"Chapter 15's GANs: loss gradients in float64, the training step's contract, InfoGAN's information term, CycleGAN's cycle loss, the Fréchet distance."
import math
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_grad, numerical_grad
from dl_from_scratch.layers import Dense, BatchNorm, Activation, Flatten
from dl_from_scratch.merge import Concatenate, Reshape
from dl_from_scratch.model import Model, Input
from dl_from_scratch.optim import Adam, SGD
from dl_from_scratch.gan import (get_gan_loss, BCEGANLoss, LSGANLoss, WassersteinLoss, discriminator_update, GAN,
                                 ConditionalGAN, InfoGAN, CycleGAN, gradient_penalty, WGANGP, sqrtm_psd, gaussian_stats, frechet_distance,
                                 sample_scores, SampleGrid)


@pytest.mark.parametrize('name', ['bce', 'minimax', 'lsgan', 'wgan'])
@pytest.mark.parametrize('part', ['real', 'fake', 'generator'])
def test_loss_gradients(name, part):
    f = getattr(get_gan_loss(name), part)
    s = np.random.default_rng(0).uniform(-10, 10, (9, 1))
    assert check_grad(lambda v: f(v)[0], lambda v: f(v)[1], s) < 1e-8


def test_loss_values_at_chance_and_far_tails():
    L = BCEGANLoss()
    z = np.zeros((4, 1))
    assert math.isclose(L.real(z)[0] + L.fake(z)[0], 2 * math.log(2))
    assert math.isclose(L.generator(z)[0], math.log(2))
    v, d = L.fake(np.array([[800.0]]))
    assert math.isclose(v, 800.0) and np.isfinite(d).all()
    # the minimax generator loss saturates where the non-saturating one does not
    assert abs(BCEGANLoss(non_saturating=False).generator(np.array([[-20.0]]))[1][0, 0]) < 1e-8
    assert math.isclose(L.generator(np.array([[-20.0]]))[1][0, 0], -1.0, rel_tol=1e-8)
    assert LSGANLoss(a=-1, b=1, c=0).fake(np.array([[-1.0]]))[0] == 0.0
    assert WassersteinLoss().real(np.array([[2.0], [4.0]]))[0] == -3.0


def test_loss_bad_input():
    with pytest.raises(ValueError, match='finite'): BCEGANLoss().real(np.array([[np.inf]]))
    with pytest.raises(ValueError, match='non-empty'): LSGANLoss().fake(np.zeros((0, 1)))
    with pytest.raises(ValueError, match="'wgan'"): get_gan_loss('wasserstein')


def _nets(rng=0, bn=False):
    z = Input((3,)); G = Model(z, Dense(2, rng=rng)(Dense(8, 'tanh', rng=rng + 1)(z)), name='G')
    x = Input((2,)); h = Dense(8, rng=rng + 2)(x)
    h = Activation('leaky_relu', alpha=0.2)(BatchNorm()(h) if bn else h)
    return G, Model(x, Dense(1, rng=rng + 3)(h), name='D')


def test_discriminator_update_sums_the_passes():
    x = Input((2,)); D = Model(x, Dense(1, rng=0)(x))
    key = [k for k in D.params if k.endswith('/W')][0]
    W0 = D.params[key].copy()
    a, b = np.random.default_rng(1).standard_normal((2, 5, 2))
    L = LSGANLoss()
    terms = lambda part: (lambda out: (part(out)[0], {}, part(out)[1]))
    total, _ = discriminator_update(D, [(a, terms(L.real)), (b, terms(L.fake))], SGD(0.5))
    dW = a.T @ L.real(a @ W0)[1] + b.T @ L.fake(b @ W0)[1]
    np.testing.assert_allclose(D.params[key], W0 - 0.5 * dW, rtol=1e-5, atol=1e-7)
    assert math.isclose(total, L.real(a @ W0)[0] + L.fake(b @ W0)[0], rel_tol=1e-5)


@pytest.mark.parametrize('bn', [False, True])
def test_steps_touch_only_their_player(bn):
    G, D = _nets(bn=bn)
    gan = GAN(G, D, latent_dim=3, rng=0).compile(Adam(1e-2), Adam(1e-2))
    x = np.random.default_rng(2).standard_normal((16, 2)).astype(np.float32)
    g0 = [w.copy() for w in G.get_weights()]
    d_trainable0 = {k: v.copy() for k, v in D.params.items()}
    gan._d_step(x, None)
    assert all((a == b).all() for a, b in zip(g0, G.get_weights()))
    d1 = {k: v.copy() for k, v in D.params.items()}
    assert any((d1[k] != d_trainable0[k]).any() for k in d1)
    gan._g_step(16, None)
    assert all((d1[k] == v).all() for k, v in D.params.items())
    assert any((a != b).any() for a, b in zip(g0, G.get_weights())) and D.trainable


def test_critic_steps_and_clipping():
    class Counting(SGD):
        steps = 0
        def step(self, params, grads):
            Counting.steps += 1
            return super().step(params, grads)
    G, D = _nets()
    wgan = GAN(G, D, latent_dim=3, loss='wgan', d_steps=3, clip_value=0.02, rng=0).compile(Counting(0.1), Adam(1e-3))
    x = np.random.default_rng(3).standard_normal((12, 2)).astype(np.float32)
    wgan.train_step((x, None))
    assert max(float(np.abs(p).max()) for p in D.params.values()) <= 0.02
    assert Counting.steps == 3
    with pytest.raises(ValueError, match='at least d_steps = 3'): wgan.train_step((x[:2], None))


def test_gan_bad_arguments():
    G, D = _nets()
    with pytest.raises(ValueError, match='latent_dim'): GAN(G, D, latent_dim=0)
    with pytest.raises(ValueError, match='d_steps'): GAN(G, D, latent_dim=3, d_steps=0)
    with pytest.raises(ValueError, match='clip_value'): GAN(G, D, latent_dim=3, clip_value=-1)
    with pytest.raises(ValueError, match='compile'): GAN(G, D, latent_dim=3).train_step((np.zeros((2, 2)), None))


def test_gan_learns_a_shifted_gaussian():
    G, D = _nets()
    gan = GAN(G, D, latent_dim=3, rng=0).compile(Adam(3e-3, beta_1=0.5), Adam(3e-3, beta_1=0.5))
    real = (np.random.default_rng(4).standard_normal((1024, 2)) * 0.5 + [2.0, -1.0]).astype(np.float32)
    gan.fit(real, epochs=25, batch_size=64, rng=0, verbose=0)
    np.testing.assert_allclose(gan.generate(2000, rng=1).mean(0), [2.0, -1.0], atol=0.4)


def test_conditional_inputs():
    z, c = Input((3,)), Input((4,)); G = Model([z, c], Dense(2, rng=0)(Concatenate()([z, c])))
    x, c2 = Input((2,)), Input((4,)); D = Model([x, c2], Dense(1, rng=1)(Concatenate()([x, c2])))
    cg = ConditionalGAN(G, D, latent_dim=3, n_classes=4).compile(Adam(1e-3), Adam(1e-3))
    zin, cin = cg.generator_input(3, y=np.array([3, 0, 1]))
    np.testing.assert_array_equal(cin.argmax(1), [3, 0, 1])
    logs = cg.train_step((np.zeros((4, 2), np.float32), np.array([0, 1, 2, 3])))
    assert np.isfinite(list(logs.values())).all()
    with pytest.raises(ValueError, match=r'in \[0, 4\)'): cg.generator_input(1, y=np.array([4]))
    with pytest.raises(ValueError, match='labels'): cg.discriminator_input(np.zeros((1, 2)))


def test_infogan_information_term():
    gi = Input((5,)); G = Model(gi, Dense(2, rng=0)(gi))
    xi = Input((2,)); h = Dense(4, 'tanh', rng=1)(xi); D = Model(xi, [Dense(1, rng=2)(h), Dense(3, rng=3)(h)])
    info = InfoGAN(G, D, latent_dim=2, n_codes=3, lam=0.7, rng=0)
    with precision(np.float64):
        g_in = info.generator_input(5, rng=1).astype(np.float64)
        q = np.random.default_rng(2).standard_normal((5, 3))
        assert check_grad(lambda v: -info.lam * info._info(v, g_in)[0], lambda v: info._info(v, g_in)[1], q) < 1e-8
        # a Q that is sure and right reaches the ceiling H(c) = ln 3
        sure = 50 * g_in[:, :3]
        assert math.isclose(info._info(sure, g_in)[0], math.log(3), abs_tol=1e-9)
    info.compile(Adam(1e-3), Adam(1e-3))
    logs = info.train_step((np.zeros((4, 2), np.float32), None))
    assert {'mi', 'd_loss', 'g_loss'} <= set(logs)


def test_cyclegan_cycle_gradient_and_step():
    def net(name, rng): i = Input((2,)); return Model(i, Dense(2, rng=rng)(Dense(4, 'tanh', rng=rng + 10)(i)), name=name)
    with precision(np.float64):
        cyc = CycleGAN(net('G', 0), net('F', 1), net('Dx', 2), net('Dy', 3))
        x, y = np.random.default_rng(0).standard_normal((2, 3, 2))
        key = [k for k in cyc.params if k.startswith('G/')][0]
        p = cyc.params[key]
        def f(v):
            old = p.copy(); p[...] = v; o = cyc([x, y]); p[...] = old
            return cyc._l1(o[2], x)[0] + cyc._l1(o[3], y)[0]
        def g(v):
            o = cyc([x, y], training=True)
            cyc.backward([np.zeros_like(o[0]), np.zeros_like(o[1]), cyc._l1(o[2], x)[1], cyc._l1(o[3], y)[1], None, None])
            return cyc.grads[key]
        assert check_grad(f, g, p.copy()) < 1e-6
    cyc = CycleGAN(net('G', 0), net('F', 1), net('Dx', 2), net('Dy', 3)).compile(Adam(1e-3), Adam(1e-3), Adam(1e-3))
    dx0 = {k: v.copy() for k, v in cyc.D_x.params.items()}
    logs = cyc.train_step((np.ones((4, 2), np.float32), np.zeros((4, 2), np.float32)))
    assert {'cycle', 'dx_loss', 'dy_loss', 'g_loss', 'f_loss'} <= set(logs)
    assert any((dx0[k] != v).any() for k, v in cyc.D_x.params.items()) and cyc.D_x.trainable
    with pytest.raises(ValueError, match='three optimizer'): cyc.compile(*(Adam(1e-3),) * 3)


def test_sqrtm_and_frechet_known_cases():
    np.testing.assert_allclose(sqrtm_psd(np.diag([1.0, 16.0])), np.diag([1.0, 4.0]))
    r3 = math.sqrt(3)
    np.testing.assert_allclose(sqrtm_psd(np.array([[2.0, 1.0], [1.0, 2.0]])),
                               np.array([[1 + r3, r3 - 1], [r3 - 1, 1 + r3]]) / 2, atol=1e-12)
    A = np.random.default_rng(0).standard_normal((5, 3)); S = A @ A.T          # rank 3: two zero eigenvalues
    R = sqrtm_psd(S)
    np.testing.assert_allclose(R @ R, S, atol=1e-9)
    assert math.isclose(frechet_distance((np.array([0.0]), np.array([[9.0]])), (np.array([2.0]), np.array([[1.0]]))), 4 + 4)
    f = np.random.default_rng(1).standard_normal((500, 4))
    st = gaussian_stats(f)
    assert abs(frechet_distance(st, st)) < 1e-9
    B = np.random.default_rng(2).standard_normal((4, 4)); S2 = B @ B.T + np.eye(4)
    expect = np.trace(st[1] + S2) - 2 * np.sqrt(np.linalg.eigvals(st[1] @ S2).real).sum() + (st[0] ** 2).sum()
    assert math.isclose(frechet_distance(st, (np.zeros(4), S2)), expect, rel_tol=1e-9)
    with pytest.raises(ValueError, match='symmetric'): sqrtm_psd(np.array([[1.0, 1.0], [0.0, 1.0]]))
    with pytest.raises(ValueError, match='at least 2'): gaussian_stats(np.zeros((1, 3)))
    with pytest.raises(ValueError, match='one dimension'): frechet_distance(st, (np.zeros(3), np.eye(3)))


def test_sample_scores_and_grid():
    probs = np.full((100, 10), 0.01); probs[np.arange(100), np.arange(100) % 3] = 0.91
    sc = sample_scores(probs, np.random.default_rng(0).standard_normal((100, 2)), (np.zeros(2), np.eye(2)))
    assert sc['coverage'] == 3 and math.isclose(sc['confidence'], 0.91) and sc['counts'].sum() == 100
    G, D = _nets()
    gan = GAN(G, D, latent_dim=3, rng=0).compile(Adam(1e-3), Adam(1e-3))
    grid = SampleGrid(gan.generator_input(4, rng=0))
    gan.fit(np.zeros((8, 2), np.float32), epochs=2, batch_size=4, callbacks=[grid], verbose=0)
    assert len(grid.images) == 3 and grid.images[0].shape == (4, 2)


def _critic(rng=0, alpha=0.2):
    x = Input((3, 2)); h = Flatten()(x)
    h = Activation('leaky_relu', alpha=alpha)(Dense(5, rng=rng)(h))
    h = Activation('relu')(Dense(4, rng=rng + 1)(h))
    return Model(x, Dense(1, rng=rng + 2)(h))


def test_gradient_penalty_matches_backward_and_differences():
    with precision(np.float64):
        D = _critic()
        for p in D.params.values(): p += 0.2 * np.random.default_rng(0).standard_normal(p.shape)
        xh = np.random.default_rng(1).standard_normal((6, 3, 2))
        v, n, grads = gradient_penalty(D, xh, lam=3.0)
        D(xh, training=True)
        dx = D.backward(np.ones((6, 1))).reshape(6, -1)
        np.testing.assert_allclose(n, np.linalg.norm(dx, axis=1), rtol=1e-12)
        assert math.isclose(v, 3.0 * float(((n - 1) ** 2).mean()), rel_tol=1e-12)
        for key, p in D.params.items():
            def f(w, p=p):
                old = p.copy(); p[...] = w; out = gradient_penalty(D, xh, lam=3.0)[0]; p[...] = old; return out
            if key.endswith('/W'): assert check_grad(f, lambda w: grads[key], p.copy()) < 1e-6, key
            else: assert np.abs(grads[key]).max() == 0 and np.abs(numerical_grad(f, p.copy())).max() < 1e-7, key


def test_gradient_penalty_refuses_other_critics():
    x = Input((2,)); D = Model(x, Dense(1, 'sigmoid')(Dense(3, 'tanh')(x)))
    with pytest.raises(ValueError, match='Dense'): gradient_penalty(D, np.zeros((1, 2)))
    x = Input((2,)); D2 = Model(x, Dense(2)(Activation('leaky_relu', alpha=0.2)(Dense(3)(x))))
    with pytest.raises(ValueError, match='1 unit'): gradient_penalty(D2, np.zeros((1, 2)))
    G, _ = _nets()
    with pytest.raises(ValueError, match='Dense'): WGANGP(G, D, latent_dim=3)


def test_wgan_gp_step_adds_the_penalty():
    z = Input((3,)); G = Model(z, Reshape((3, 2))(Dense(6, rng=0)(z)))
    D = _critic()
    wgp = WGANGP(G, D, latent_dim=3, d_steps=2, rng=0).compile(SGD(1e-3), SGD(1e-3))
    logs = wgp.train_step((np.random.default_rng(2).standard_normal((8, 3, 2)).astype(np.float32), None))
    assert logs['gp'] > 0 and 0 < logs['grad_norm']
    assert math.isclose(logs['d_loss'], logs['d_real'] + logs['d_fake'] + logs['gp'], rel_tol=1e-6)
