"""Few-shot learning: the episodic sampler, the losses (gradient-checked in float64), the training loop and the
evaluation; Omniglot at 28x28 when it is prepared."""
import itertools, math
import numpy as np
import pytest

from dl_from_scratch import data
from dl_from_scratch.core import precision
from dl_from_scratch.gradcheck import check_grad, numerical_grad
from dl_from_scratch.fewshot import (
    EpisodeSampler, Prototypical, Matching, Relation, conv4, sq_distances, sq_distances_backward, contrastive_loss,
    batch_hard_triplet_loss, create_pairs, pair_accuracy, source_pair_accuracy, with_rotations, downsample,
    episode_batches, episodic, pair_batches, contrastive, class_batches, triplet, fit_embedding, evaluate,
    evaluate_all, embed, blobs, siamese_mlp, train_siamese, pair_distances, make_run, omniglot28, SETTINGS, METHODS)

RNG = np.random.default_rng(0)


# ---------------------------------------------------------------- data and sampling
def test_sampler_rows_are_distinct_classes_and_examples():
    y = np.repeat(np.arange(12), 5)[np.random.default_rng(1).permutation(60)]      # shuffled labels
    s = EpisodeSampler(y, 6, 3, 2, rng=0)
    for _ in range(20):
        ep = s.sample()
        assert ep.shape == (6, 5) and len(set(ep.ravel())) == 30
        assert all(len(set(y[r])) == 1 for r in ep) and len(set(y[ep[:, 0]])) == 6

def test_sampler_covers_every_class_and_skips_small_ones():
    y = np.r_[np.repeat(np.arange(6), 4), [99]]                 # class 99 has one example: never drawn
    s = EpisodeSampler(y, 3, 2, 1, rng=0)
    seen = {int(y[i]) for _ in range(50) for i in s.sample()[:, 0]}
    assert seen == set(range(6))

@pytest.mark.parametrize('args,msg', [((11, 1, 1), 'needs 11 classes'), ((5, 5, 2), 'at least 7 examples'),
                                      ((0, 1, 1), 'n_way an integer >= 1'), ((2, 1, -1), 'n_query an integer >= 0')])
def test_sampler_rejects_impossible_episodes(args, msg):
    with pytest.raises(ValueError, match=msg): EpisodeSampler(np.repeat(np.arange(10), 6), *args)
    with pytest.raises(ValueError, match='integer labels'): EpisodeSampler(np.zeros((3, 2), int), 1, 1, 1)

def test_rotations_are_new_classes():
    x = RNG.integers(0, 255, (3, 5, 5, 1)).astype(np.uint8)
    xr, yr = with_rotations(x, np.array([0, 1, 2]))
    assert xr.shape == (12, 5, 5, 1) and sorted(yr.tolist()) == list(range(12))
    assert (xr[yr == 4 * 1 + 3][0] == np.rot90(x[1], 3)).all()
    with pytest.raises(ValueError, match='square'): with_rotations(np.zeros((1, 4, 5, 1)), np.zeros(1, int))

def test_downsample_keeps_ink_where_it_was():
    x = np.zeros((1, 105, 105, 1), np.uint8); x[0, :, :52] = 255            # left half ink
    d = downsample(x)[0, ..., 0]
    assert d.shape == (28, 28) and (d[:, :10] >= 245).all() and (d[:, 18:] <= 10).all()   # Lanczos rings a little at the edge

@pytest.mark.skipif(not data.is_prepared('omniglot'), reason='omniglot is not prepared under TFDS_DATA_DIR')
def test_omniglot28_real():
    x, y, a = omniglot28('test')
    assert x.shape == (13180, 28, 28, 1) and x.dtype == np.uint8 and len(np.unique(y)) == 659 and len(np.unique(a)) == 20
    ink = (x > 127).mean()
    assert 0.03 < ink < 0.3                                     # strokes survive the downsampling as ink


# ---------------------------------------------------------------- losses: gradients in float64 and meaning
def test_sq_distances_and_gradients():
    with precision(np.float64):
        a, b, G = RNG.normal(size=(4, 3)), RNG.normal(size=(6, 3)), RNG.normal(size=(4, 6))
        assert np.allclose(sq_distances(a, b), ((a[:, None] - b[None]) ** 2).sum(-1))
        assert check_grad(lambda t: (sq_distances(t, b) * G).sum(), lambda t: sq_distances_backward(G, t, b)[0], a) < 1e-7
        assert check_grad(lambda t: (sq_distances(a, t) * G).sum(), lambda t: sq_distances_backward(G, a, t)[1], b) < 1e-7

def test_contrastive_loss_gradient_and_margin():
    with precision(np.float64):
        za, zb, y = RNG.normal(size=(7, 5)) * 0.4, RNG.normal(size=(7, 5)) * 0.4, np.array([1, 0, 1, 0, 0, 1, 0])
        assert check_grad(lambda t: contrastive_loss(t, zb, y)[0], lambda t: contrastive_loss(t, zb, y)[2], za) < 1e-7
        assert check_grad(lambda t: contrastive_loss(za, t, y)[0], lambda t: contrastive_loss(za, t, y)[3], zb) < 1e-7
        loss, d, *_ = contrastive_loss(np.zeros((2, 2)), np.array([[0.3, 0.4], [3.0, 4.0]]), np.array([0, 0]))
        assert np.allclose(d, [0.5, 5.0]) and math.isclose(loss, 0.5 ** 2 / 2)   # only the pair inside the margin costs
    with pytest.raises(ValueError, match='labels of shape'): contrastive_loss(np.zeros((2, 2)), np.zeros((2, 2)), [1])

def test_inverted_source_accuracy_is_one_minus_the_right_one():
    d, y = RNG.random(200), RNG.integers(0, 2, 200)
    assert math.isclose(pair_accuracy(d, y) + source_pair_accuracy(d, y), 1.0)
    assert pair_accuracy([0.1, 0.9], [1, 0]) == 1.0 and source_pair_accuracy([0.1, 0.9], [1, 0]) == 0.0

def test_create_pairs_follows_the_source_recipe():
    y = np.r_[np.repeat(np.arange(10), 4), [3]]                   # class 3 has 5: n = min count - 1 = 3
    p, lab = create_pairs(y, rng=0)
    assert len(p) == 10 * 3 * 2 and lab.tolist()[:2] == [1, 0] and lab.mean() == 0.5
    assert (y[p[lab == 1, 0]] == y[p[lab == 1, 1]]).all() and (y[p[lab == 0, 0]] != y[p[lab == 0, 1]]).all()

def test_batch_hard_triplet_gradient_and_mining():
    with precision(np.float64):
        z, lab = RNG.normal(size=(12, 4)), np.repeat(np.arange(4), 3)
        assert check_grad(lambda t: batch_hard_triplet_loss(t, lab)[0], lambda t: batch_hard_triplet_loss(t, lab)[2], z) < 1e-7
        # anchor 0 at the origin; its positives at distance 1 and 3; negatives at 2 and 10: hardest are 3 and 2
        z = np.array([[0.0], [1.0], [3.0], [2.0], [10.0], [12.0]]); lab = np.array([0, 0, 0, 1, 1, 1])
        loss, active, dz = batch_hard_triplet_loss(z, lab, margin=0.5)
        D = (z - z.T) ** 2
        want = np.mean([max(D[a][lab == lab[a]].max() - D[a][lab != lab[a]].min() + 0.5, 0) for a in range(6)])
        assert math.isclose(loss, want)

@pytest.mark.parametrize('make', [Prototypical, Matching, lambda: Relation(dim=5, rng=0)])
def test_episodic_losses_gradient_check(make):
    with precision(np.float64):
        m = make()
        zs, zq = RNG.normal(size=(3, 2, 5)), RNG.normal(size=(3, 4, 5))
        assert check_grad(lambda s: m.loss(s, zq)[0], lambda s: m.loss(s, zq)[2], zs) < 1e-6
        assert check_grad(lambda q: m.loss(zs, q)[0], lambda q: m.loss(zs, q)[3], zq) < 1e-6
        assert m.scores(zs, zq).shape == (12, 3)
        with pytest.raises(ValueError, match='same n and d'): m.loss(zs, zq[:2])

def test_relation_module_weight_gradients():
    with precision(np.float64):
        r = Relation(dim=3, rng=1)
        zs, zq = RNG.normal(size=(2, 2, 3)), RNG.normal(size=(2, 3, 3))
        r.loss(zs, zq)
        checked = 0
        for layer in r.g.layers:
            for k, p in layer.params.items():
                if k not in layer.grads: continue                    # batch normalization's running statistics
                g = layer.grads[k].copy()
                def at(w, p=p): p[...] = w; return r.loss(zs, zq)[0]
                if np.abs(g).max() < 1e-12:                          # the bias before batch normalization: no effect
                    assert np.abs(numerical_grad(at, p.copy())).max() < 1e-8, (layer.name, k); continue
                assert check_grad(at, lambda w, g=g: g, p.copy()) < 1e-6, (layer.name, k); checked += 1
        assert checked >= 7                                          # W of 4 dense layers, 2 biases, gamma, beta

def test_prototypical_is_nearest_mean_and_log_n_without_information():
    P = Prototypical()
    zs = np.array([[[0.0, 0], [0, 2]], [[5, 5], [5, 7]]])        # prototypes (0, 1) and (5, 6)
    zq = np.array([[[0.2, 1]], [[4.0, 6]]])
    assert P.scores(zs, zq).argmax(1).tolist() == [0, 1] and P.loss(zs, zq)[1] == 1.0
    assert math.isclose(P.loss(np.zeros((4, 1, 3)), np.zeros((4, 2, 3)))[0], math.log(4))

def test_matching_scores_are_class_probabilities():
    p = Matching().scores(RNG.normal(size=(4, 3, 6)), RNG.normal(size=(4, 2, 6)))
    assert p.shape == (8, 4) and np.allclose(p.sum(1), 1) and (p > 0).all()


# ---------------------------------------------------------------- the embedding, training and evaluation
def test_conv4_shape_and_parameters():
    net = conv4(rng=0)
    assert net.forward(np.zeros((2, 28, 28, 1), np.float32)).shape == (2, 64)
    assert net.count_trainable_params() == 640 + 3 * 36928 + 4 * 128

@pytest.mark.parametrize('name', METHODS)
def test_every_method_fits_one_fixed_batch(name):
    x, y = blobs(12, 6, rng=1, ink=40, noise=215)
    net, batches, loss, heads, _ = make_run(name, x, y, rng=0, n_way=4, k_shot=2, n_query=2, per_step=16)
    h = fit_embedding(net, itertools.repeat(next(batches)), loss, steps=6, heads=heads, progress=False)
    assert h['steps'] == 6 and h['loss'][-1] < 0.8 * h['loss'][0]
    with pytest.raises(ValueError, match='unknown method'): make_run('maml', x, y)

def test_fit_embedding_stops_on_time_and_calls_back():
    x, y = blobs(6, 5, rng=0)
    net, batches, loss, heads, _ = make_run('prototypical', x, y, n_way=3, k_shot=1, n_query=1)
    h = fit_embedding(net, batches, loss, seconds=0.0, progress=False)
    assert h['steps'] == 0
    h = fit_embedding(net, batches, loss, steps=4, on_step=lambda s: s * 10, every=2, progress=False)
    assert h['evals'] == [(2, 20), (4, 40)] and len(h['loss']) == 4
    with pytest.raises(ValueError, match='steps or seconds'): fit_embedding(net, batches, loss)

def test_evaluate_perfect_and_chance_embeddings():
    y = np.repeat(np.arange(25), 10)
    z_perfect = np.eye(25)[y] * 10
    mean, ci, accs = evaluate(z_perfect, y, Prototypical(), 5, 1, episodes=50)
    assert mean == 1.0 and ci == 0.0 and len(accs) == 50
    z_noise = np.random.default_rng(0).normal(size=(250, 8))
    res = evaluate_all(z_noise, y, Prototypical(), episodes=300)
    assert set(res) == set(SETTINGS)
    for (n, k), (m, c) in res.items():
        assert abs(m - 1 / n) < 4 * c and c > 0                             # chance, inside its interval

def test_siamese_mlp_shares_one_base():
    m = siamese_mlp(rng=0)
    x = RNG.random((3, 28, 28, 1)).astype(np.float32)
    za, zb = m.forward([x, x])
    assert za.shape == (3, 128) and np.allclose(za, zb)
    p, s = create_pairs(np.repeat(np.arange(10), 3), rng=0)
    xs = RNG.integers(0, 255, (30, 28, 28, 1)).astype(np.uint8)
    losses = train_siamese(m, xs, p, s, epochs=2, batch_size=20, rng=0, progress=False)
    assert len(losses) == 2 and pair_distances(m, xs, p).shape == (len(p),)
