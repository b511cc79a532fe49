"""Metrics: precision, recall, F-scores, ROC and precision-recall curves with their areas, stratified splits and folds,
learning curves and hyperparameter search, each checked against scikit-learn on the same data (a test-only reference)."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dl_from_scratch.metrics import (accuracy, f_score, precision_recall_f1, threshold_counts, roc_curve,
                                     precision_recall_curve, auc, roc_auc, average_precision, stratified_split,
                                     stratified_kfold, learning_curve, grid_search, sample_log_uniform, random_search)

sk = pytest.importorskip('sklearn')
from sklearn import metrics as skm
from sklearn.model_selection import StratifiedKFold, StratifiedShuffleSplit


def scored(n, seed, ties=True):
    "Labels with both classes and noisy scores (rounded, so that many tie, when `ties`)."
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    y[:2] = [0, 1]
    s = y + rng.normal(size=n)
    return y, (np.round(s, 1) if ties else s)


# ---------------------------------------------------------------- labels
@given(st.integers(5, 300), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_precision_recall_f1_as_sklearn(n, seed):
    rng = np.random.default_rng(seed)
    y, p = rng.integers(0, 3, n), rng.integers(0, 3, n)
    for positive in (0, 1, 2):
        ours = precision_recall_f1(y, p, positive=positive)
        theirs = skm.precision_recall_fscore_support(y, p, labels=[positive], average=None, zero_division=0)[:3]
        np.testing.assert_allclose(ours, np.ravel(theirs), atol=1e-12)
    assert accuracy(y, p) == pytest.approx(skm.accuracy_score(y, p))

def test_f_beta_as_sklearn():
    y, s = scored(200, 1)
    p = (s > 0.5).astype(int)
    P, R, _ = precision_recall_f1(y, p)
    for beta in (0.5, 1, 2):
        assert f_score(P, R, beta) == pytest.approx(skm.fbeta_score(y, p, beta=beta))
    assert precision_recall_f1(y, p, beta=2)[2] == pytest.approx(skm.fbeta_score(y, p, beta=2))

def test_source_003_f1():
    assert f_score(0.823, 0.767) == pytest.approx(0.7940, abs=5e-5)

def test_nothing_predicted_positive_gives_zeros():
    assert precision_recall_f1([1, 0, 1], [0, 0, 0]) == (0.0, 0.0, 0.0)

@pytest.mark.parametrize('y_true, y_pred, match', [([1, 0], [1], 'equal length'), ([0.5, 1], [1, 0], "dtype kind 'iu'"),
                                                   (np.zeros((2, 2), int), np.zeros((2, 2), int), 'rank 1')])
def test_bad_labels(y_true, y_pred, match):
    with pytest.raises(ValueError, match=match):
        precision_recall_f1(y_true, y_pred)


# ---------------------------------------------------------------- curves
@pytest.mark.parametrize('ties', [True, False])
@pytest.mark.parametrize('seed', range(4))
def test_curves_and_areas_as_sklearn(seed, ties):
    y, s = scored(400, seed, ties)
    fpr, tpr, t = roc_curve(y, s)
    sf, st_, sth = skm.roc_curve(y, s, drop_intermediate=False)
    np.testing.assert_allclose(fpr, sf); np.testing.assert_allclose(tpr, st_); np.testing.assert_allclose(t[1:], sth[1:])
    p, r, pt = precision_recall_curve(y, s)
    sp, sr, spt = skm.precision_recall_curve(y, s)
    np.testing.assert_allclose(p, sp[::-1]); np.testing.assert_allclose(r, sr[::-1]); np.testing.assert_allclose(pt[1:], spt[::-1])
    assert roc_auc(y, s) == pytest.approx(skm.roc_auc_score(y, s), abs=1e-12)
    assert average_precision(y, s) == pytest.approx(skm.average_precision_score(y, s), abs=1e-12)
    assert auc(fpr, tpr) == pytest.approx(skm.auc(fpr, tpr))

def test_threshold_counts_one_point_per_distinct_score():
    tp, fp, t = threshold_counts([1, 0, 1, 0], [0.9, 0.9, 0.5, 0.1])
    assert t.tolist() == [np.inf, 0.9, 0.5, 0.1] and tp.tolist() == [0, 1, 2, 2] and fp.tolist() == [0, 1, 1, 2]

def test_roc_auc_is_the_pair_ordering_probability():
    y, s = scored(150, 7)
    d = s[y == 1][:, None] - s[y == 0][None]
    assert roc_auc(y, s) == pytest.approx(((d > 0) + 0.5 * (d == 0)).mean())

def test_perfect_and_reversed_scores():
    y = np.array([0, 0, 1, 1])
    assert roc_auc(y, [0.1, 0.2, 0.8, 0.9]) == 1.0 and roc_auc(y, [0.9, 0.8, 0.2, 0.1]) == 0.0
    assert average_precision(y, [0.1, 0.2, 0.8, 0.9]) == 1.0

@pytest.mark.parametrize('y, s, match', [([1, 1, 1], [0.1, 0.2, 0.3], 'both classes'), ([0, 2, 1], [0.1, 0.2, 0.3], 'binary labels'),
                                         ([0, 1], [0.1, np.nan], 'finite'), ([0, 1, 1], [0.1, 0.2], 'equal length')])
def test_curves_reject_bad_input(y, s, match):
    with pytest.raises(ValueError, match=match):
        roc_curve(y, s)

def test_auc_needs_monotone_x():
    with pytest.raises(ValueError, match='monotone'):
        auc([0, 1, 0.5], [0, 1, 1])


# ---------------------------------------------------------------- splits
@given(st.lists(st.integers(1, 40), min_size=2, max_size=5), st.integers(2, 10), st.integers(0, 1000))
@settings(max_examples=30, deadline=None)
def test_stratified_kfold_counts_as_sklearn(class_sizes, k, seed):
    y = np.repeat(np.arange(len(class_sizes)), class_sizes)
    if k > len(y): return
    folds = stratified_kfold(y, k, rng=seed)
    assert sorted(np.concatenate([v for _, v in folds]).tolist()) == list(range(len(y)))
    ours = np.array([np.bincount(y[v], minlength=len(class_sizes)) for _, v in folds])
    # each class's counts per fold differ by at most one, and the fold sizes too
    assert (ours.max(0) - ours.min(0) <= 1).all() and np.ptp(ours.sum(1)) <= 1
    if min(class_sizes) >= k:                    # scikit-learn warns and differs when a class is smaller than k
        theirs = np.array([np.bincount(y[v], minlength=len(class_sizes))
                           for _, v in StratifiedKFold(k, shuffle=True, random_state=seed).split(y[:, None], y)])
        for c in range(len(class_sizes)):
            assert sorted(ours[:, c]) == sorted(theirs[:, c])

@pytest.mark.parametrize('test_size', [0.1, 0.25, 0.5])
def test_stratified_split_counts_as_sklearn(test_size):
    y = np.repeat([0, 1, 2], [190, 10, 33])
    tr, te = stratified_split(y, test_size, rng=0)
    assert len(np.intersect1d(tr, te)) == 0 and len(tr) + len(te) == len(y)
    _, ste = next(StratifiedShuffleSplit(1, test_size=test_size, random_state=0).split(y[:, None], y))
    # the test part holds round(test_size N) examples, like data.train_test_split; scikit-learn takes the ceiling
    assert len(te) == round(test_size * len(y)) and len(ste) == np.ceil(test_size * len(y))
    assert (np.abs(np.bincount(y[te], minlength=3) - np.bincount(y[ste], minlength=3)) <= 1).all()
    assert (np.abs(np.bincount(y[te], minlength=3) - test_size * np.bincount(y)) < 1).all()

def test_splits_are_random_but_reproducible():
    y = np.repeat([0, 1], [50, 50])
    assert np.array_equal(stratified_split(y, 0.2, rng=3)[1], stratified_split(y, 0.2, rng=3)[1])
    assert not np.array_equal(stratified_split(y, 0.2, rng=3)[1], stratified_split(y, 0.2, rng=4)[1])

def test_split_rejects_bad_arguments():
    with pytest.raises(ValueError, match='test_size in'):
        stratified_split([0, 1, 0, 1], 0)
    with pytest.raises(ValueError, match='integer k'):
        stratified_kfold([0, 1, 0, 1], 5)


# ---------------------------------------------------------------- learning curves and search
class Mean:
    "Predicts the rounded mean label of its training set; remembers its training labels."
    seen = []
    def __init__(self, X, y): Mean.seen.append(y.copy()); self.c = int(round(y.mean()))
    def predict(self, X): return np.full(len(X), self.c)

def test_learning_curve_nested_stratified_subsets():
    Mean.seen.clear()
    y = np.repeat([0, 1], [70, 30])
    X = np.arange(100)[:, None]
    tr, va = learning_curve(Mean, accuracy, X, y, X[:5], np.zeros(5, int), [10, 20, 50, 100], rng=1)
    for n, labels in zip([10, 20, 50, 100], Mean.seen):
        assert len(labels) == n and abs(labels.sum() - 0.3 * n) <= 1
    np.testing.assert_allclose(tr, 0.7) and np.testing.assert_allclose(va, 1.0)

def test_grid_search_order_and_scores():
    params, scores = grid_search(lambda a, b: a - b, {'a': [1, 2, 3], 'b': [0, 10]})
    assert params == [{'a': a, 'b': b} for a in (1, 2, 3) for b in (0, 10)]
    np.testing.assert_array_equal(scores, [1, -9, 2, -8, 3, -7])
    with pytest.raises(ValueError, match='non-empty lists'):
        grid_search(lambda a: a, {'a': []})

def test_log_uniform_spreads_decades_evenly():
    r = np.log10(sample_log_uniform(1e-5, 1e-1, 200_000, rng=0))
    assert r.min() >= -5 and r.max() <= -1
    np.testing.assert_allclose(np.histogram(r, bins=4, range=(-5, -1))[0] / 2e5, 0.25, atol=0.01)

def test_random_search_draws_within_the_space_reproducibly():
    space = {'lr': (1e-4, 1.0, 'log'), 'beta': (0.9, 0.999, 'linear'), 'act': ['relu', 'tanh']}
    p1, s1 = random_search(lambda lr, beta, act: lr, space, 40, rng=5)
    p2, _ = random_search(lambda lr, beta, act: lr, space, 40, rng=5)
    assert p1 == p2 and len(p1) == 40
    assert all(1e-4 <= p['lr'] <= 1 and 0.9 <= p['beta'] <= 0.999 and p['act'] in ('relu', 'tanh') for p in p1)
    np.testing.assert_array_equal(s1, [p['lr'] for p in p1])
    with pytest.raises(ValueError, match="'log'|'linear'"):
        random_search(lambda x: x, {'x': (1, 2, 'cubic')}, 3)
