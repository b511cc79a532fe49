"Chapter 17's style transfer: gradients in float64, the losses' definitions, Keras's Adam, the feature extractor, the pixel loop."
import math
import numpy as np
import pytest
from dl_from_scratch.core import precision
from dl_from_scratch.conv import Conv2D
from dl_from_scratch.gradcheck import check_grad, rel_error
from dl_from_scratch.optim import Adam
from dl_from_scratch.style import (STYLE_LAYERS, CONTENT_LAYERS, BOOK_VGG19_UNITS, gram_matrix, gram_matrix_backward,
                                   StyleContentLoss, total_variation, total_variation_grad, KerasAdam, vgg_bn_net,
                                   feature_extractor, feature_scales, stylize, style_transfer)


def test_gram_matrix_definition_and_gradient():
    rng = np.random.default_rng(0)
    F = rng.standard_normal((3, 4, 2, 6))
    G = gram_matrix(F)
    assert G.shape == (3, 6, 6)
    np.testing.assert_allclose(G[2], F[2].reshape(8, 6).T @ F[2].reshape(8, 6) / 8, rtol=1e-12)
    R = rng.standard_normal((3, 6, 6))                  # not symmetric: both terms of dG + dG^T count
    assert check_grad(lambda f: np.sum(R * gram_matrix(f)), lambda f: gram_matrix_backward(f, R), F) < 1e-8
    # the same picture at twice the size (each pixel repeated) has the same Gram matrix: divided by H W
    np.testing.assert_allclose(gram_matrix(F.repeat(2, 1).repeat(2, 2)), G, rtol=1e-12)


def test_gram_matrix_bad_input():
    with pytest.raises(ValueError, match='of rank 4'): gram_matrix(np.zeros((4, 4, 3)))
    with pytest.raises(ValueError, match='shape'): gram_matrix_backward(np.zeros((1, 2, 2, 3)), np.zeros((1, 3, 4)))


def _maps(rng):
    Fs = [rng.random((1, 5, 4, 3)), rng.random((1, 3, 3, 4)), rng.random((1, 2, 3, 5))]
    A = [gram_matrix(rng.random((1, 7, 3, 3))), gram_matrix(rng.random((1, 4, 4, 4)))]
    return Fs, A, [rng.random((1, 2, 3, 5))]


def test_style_content_loss_value_follows_the_book_code():
    Fs, A, P = _maps(np.random.default_rng(1))
    value, parts, _ = StyleContentLoss(A, P)(Fs)
    style = 1e-2 / 2 * sum(np.mean((gram_matrix(F) - a) ** 2) for F, a in zip(Fs[:2], A))   # (1e-2 / Ls) sum mean
    content = 1e4 * np.mean((Fs[2] - P[0]) ** 2)
    assert math.isclose(parts['style'], style, rel_tol=1e-12) and math.isclose(parts['content'], content, rel_tol=1e-12)
    assert math.isclose(value, style + content, rel_tol=1e-12)


def test_style_content_loss_scales_are_units():
    "Features times s: the style term grows by s^4, the content term by s^2 (and the targets are scaled alike)."
    Fs, A, P = _maps(np.random.default_rng(2))
    _, p1, _ = StyleContentLoss(A, P)(Fs)
    _, p3, _ = StyleContentLoss(A, P, scales=[3.0] * 3)(Fs)
    assert math.isclose(p3['style'], 81 * p1['style'], rel_tol=1e-12)
    assert math.isclose(p3['content'], 9 * p1['content'], rel_tol=1e-12)


@pytest.mark.parametrize('i', [0, 1, 2])
def test_style_content_loss_gradients(i):
    Fs, A, P = _maps(np.random.default_rng(3))
    loss = StyleContentLoss(A, P, style_weight=2.0, content_weight=0.7, scales=[1.5, 0.4, 2.5])
    f = lambda x: loss(Fs[:i] + [x] + Fs[i + 1:])[0]
    assert check_grad(f, lambda x: loss(Fs[:i] + [x] + Fs[i + 1:])[2][i], Fs[i]) < 1e-7


def test_style_content_loss_bad_input():
    Fs, A, P = _maps(np.random.default_rng(4))
    with pytest.raises(ValueError, match='2 style and 1 content'): StyleContentLoss(A, P)(Fs[:2])
    with pytest.raises(ValueError, match='3 positive scales'): StyleContentLoss(A, P, scales=[1.0, 0.0, 1.0])
    with pytest.raises(ValueError, match='3 channels'): StyleContentLoss(A, P)([Fs[1], Fs[1], Fs[2]])
    with pytest.raises(ValueError, match='content features of shape'): StyleContentLoss(A, P)([Fs[0], Fs[1], Fs[2][:, :1]])


def test_total_variation_value_gradient_and_ties():
    rng = np.random.default_rng(5)
    x = rng.random((2, 4, 5, 3))
    by_hand = np.abs(np.diff(x[0], axis=0)).sum() + np.abs(np.diff(x[0], axis=1)).sum()
    assert math.isclose(total_variation(x)[0], by_hand, rel_tol=1e-12)
    assert check_grad(lambda v: total_variation(v).sum(), total_variation_grad, x) < 1e-8
    step = np.zeros((1, 3, 3, 1)); step[0, :, 2] = 1.0         # equal neighbours contribute sgn(0) = 0
    g = total_variation_grad(step)[0, :, :, 0]
    np.testing.assert_array_equal(g, [[0, -1, 1]] * 3)


def test_keras_adam_is_adam_with_eps_hat():
    rng = np.random.default_rng(6)
    p0, gs = rng.standard_normal(5), rng.standard_normal((6, 5)) * 0.1
    k, p, m, v, q = KerasAdam(0.02, beta_1=0.99, eps=0.1), {'w': p0.copy()}, 0.0, 0.0, p0.copy()
    for t, g in enumerate(gs, 1):
        k.step(p, {'w': g})
        m = 0.99 * m + 0.01 * g; v = 0.999 * v + 0.001 * g * g
        q = q - 0.02 * math.sqrt(1 - 0.999 ** t) / (1 - 0.99 ** t) * m / (np.sqrt(v) + 0.1)
        np.testing.assert_allclose(p['w'], q, rtol=1e-12)
    a = Adam(0.02, beta_1=0.99, eps=0.1 / math.sqrt(1 - 0.999)); pa = {'w': p0.copy()}; pk = {'w': p0.copy()}
    Adam.step(a, pa, {'w': gs[0]}); KerasAdam(0.02, beta_1=0.99, eps=0.1).step(pk, {'w': gs[0]})
    np.testing.assert_allclose(pa['w'], pk['w'], rtol=1e-12)       # step 1: Adam with eps / sqrt(1 - b2)


def _random_bn(net, rng):
    shift = {'gamma': 1.0, 'beta': 0.2, 'moving_mean': -0.1, 'moving_var': 0.9}
    for l in net.layers:
        for k, w in {**l.params, **l.state}.items():
            if k in shift: w[...] = shift[k] + 0.2 * rng.random(w.shape)


def test_feature_extractor_gives_the_nets_own_feature_maps():
    rng = np.random.default_rng(7)
    net = vgg_bn_net(widths=(3, 4, 4, 5, 5), rng=0)
    _random_bn(net, rng)
    x = rng.random((2, 32, 32, 3), dtype=np.float32)
    fe = feature_extractor(net, ['block3_conv1', 'block1_conv1'], (32, 32, 3))
    h, out = x, {}
    for l in net.layers:
        h = l.forward(h, training=False); out[l.name] = h
    names = [l.name for l in net.layers]
    a, b = fe(x, training=False)
    np.testing.assert_allclose(a, out[names[names.index('block3_conv1') + 2]], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b, out[names[names.index('block1_conv1') + 2]], rtol=1e-5, atol=1e-6)
    assert sum(isinstance(l, Conv2D) for l in fe.layers) == 5 and fe.count_trainable_params() == 0
    with pytest.raises(ValueError, match='block9_conv1'): vgg_bn_net(outputs=['block9_conv1'])
    with pytest.raises(ValueError, match='block1_conv1/W'): feature_extractor(net, ['block1_conv1'], (16, 16, 1))


def test_gradient_reaches_the_pixels_through_the_extractor():
    rng = np.random.default_rng(8)
    with precision(np.float64):
        net = vgg_bn_net(widths=(2, 3, 3, 3, 3), rng=1)
        _random_bn(net, rng)
        fe = feature_extractor(net, STYLE_LAYERS + CONTENT_LAYERS, (16, 16, 3))
        Fc = fe(rng.random((1, 16, 16, 3)), training=False)
        loss = StyleContentLoss([gram_matrix(F) for F in fe(rng.random((1, 16, 16, 3)), training=False)[:5]], Fc[5:],
                                style_weight=1.0, content_weight=1.0)
        x = rng.random((1, 16, 16, 3))
        f = lambda v: loss(fe(v, training=False))[0] + 0.5 * total_variation(v)[0]
        g = (fe.backward(loss(fe(x, training=False))[2]) + 0.5 * total_variation_grad(x)).ravel()
        idx = rng.choice(x.size, 30, replace=False)
        num = []
        for i in idx:
            e = np.zeros(x.size); e[i] = 1e-5; e = e.reshape(x.shape)
            num.append((f(x + e) - f(x - e)) / 2e-5)
        assert rel_error(g[idx], np.array(num)) < 1e-6


def test_feature_scales_match_the_target_units():
    rng = np.random.default_rng(9)
    Fs = [rng.random((1, 4, 4, 3)) for _ in range(6)]
    s = feature_scales(Fs, BOOK_VGG19_UNITS['gram_means'], BOOK_VGG19_UNITS['feature_means'])
    np.testing.assert_allclose([si ** 2 * gram_matrix(F).mean() for si, F in zip(s[:5], Fs)], BOOK_VGG19_UNITS['gram_means'])
    assert math.isclose(s[5] * Fs[5].mean(), 16.581339)
    with pytest.raises(ValueError, match='6 feature maps'): feature_scales(Fs[:4], BOOK_VGG19_UNITS['gram_means'], (1.0,))
    with pytest.raises(ValueError, match='positive mean'): feature_scales([np.zeros((1, 2, 2, 1))] * 6, (1.0,) * 5, (1.0,))


def test_style_transfer_lowers_the_style_loss_and_keeps_pixels_in_range():
    rng = np.random.default_rng(10)
    net = vgg_bn_net(widths=(3, 4, 4, 5, 5), rng=2)
    content, style = rng.random((20, 24, 3), dtype=np.float32), rng.random((18, 16, 3), dtype=np.float32)
    kept = content.copy()
    out, hist, shots, scales = style_transfer(net, content, style, 10, snapshots=(4, 10), progress=False)
    np.testing.assert_array_equal(content, kept)                  # the photograph itself is left alone
    assert out.shape == content.shape and sorted(shots) == [4, 10] and np.array_equal(shots[10], out)
    assert 0.0 <= out.min() and out.max() <= 1.0
    assert hist['content'][0] == 0.0 and hist['style'][-1] < 0.5 * hist['style'][0]
    assert len(scales) == 6 and all(s > 0 for s in scales)
    fe = feature_extractor(net, ['block1_conv1'], (20, 24, 3))
    with pytest.raises(ValueError, match=r'\(20, 24, 3\)'):
        stylize(fe, StyleContentLoss([np.eye(3)[None]], []), style, 1)
