"""Classical learners against scikit-learn on the same data (a test-only reference): sparse bags of words and TF-IDF,
multinomial naive Bayes, decision trees, the linear SVM's objective, the SMO kernel SVM, k-means and PCA; and the
source's worked numbers (Bayes' rule, entropy and information gain, k-means on six points)."""
from collections import Counter
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from dl_from_scratch.classical import (bayes_posterior, CSRMatrix, xt_dot, bag_of_words, text_bags, idf_weights, tfidf,
                                       MultinomialNB, entropy, information_gain, DecisionTree, hinge_objective,
                                       hinge_subgradient, LinearSVM, sq_distances, rbf_kernel, SVC, kmeans_plus_plus,
                                       lloyd, KMeans, svd_flip, randomized_svd, PCA)
from dl_from_scratch.text import tokenize, Vocab
from dl_from_scratch.gradcheck import numerical_grad, rel_error

sk = pytest.importorskip('sklearn')
from scipy import sparse


# ---------------------------------------------------------------- the source's numbers (source 003)
def test_bayes_rule_numbers():
    assert bayes_posterior([0.01, 0.99], [0.9, 0.1])[0] == pytest.approx(0.08333, abs=5e-6)
    lik = np.array([[0.1, 0.1, 0.8], [0.5, 0.3, 0.2]])          # Chris, Sara: love, life, deal
    assert bayes_posterior([0.5, 0.5], lik[:, [0]])[0] == pytest.approx(0.1667, abs=5e-5)
    assert bayes_posterior([0.5, 0.5], lik[:, [1]])[0] == pytest.approx(0.25)
    assert bayes_posterior([0.5, 0.5], lik[:, [1, 2]])[0] == pytest.approx(0.5714, abs=5e-5)

def test_entropy_and_information_gain_numbers():
    speed = ['slow', 'slow', 'fast', 'fast']
    assert entropy([2, 2]) == 1.0
    assert entropy([2, 1]) == pytest.approx(0.9183, abs=5e-5)
    assert 0.75 * entropy([2, 1]) == pytest.approx(0.6887, abs=5e-5)
    assert information_gain(speed, ['steep', 'steep', 'flat', 'steep']) == pytest.approx(0.3113, abs=5e-5)
    assert information_gain(speed, ['yes', 'yes', 'no', 'no']) == 1.0

def test_kmeans_six_points():
    X = np.array([[1, 2], [1, 4], [1, 0], [10, 2], [10, 4], [10, 0]])
    km = KMeans(2, rng=0).fit(X)
    assert sorted(km.cluster_centers_.tolist()) == [[1, 2], [10, 2]] and km.inertia_ == 16
    assert km.cluster_centers_[km.predict([[0, 0], [12, 3]])].tolist() == [[1, 2], [10, 2]]

def test_bad_bayes_input():
    with pytest.raises(ValueError, match='summing to 1'):
        bayes_posterior([0.2, 0.2], [0.5, 0.5])
    with pytest.raises(ValueError, match=r'in \[0, 1\]'):
        bayes_posterior([0.5, 0.5], [1.5, 0.5])


# ---------------------------------------------------------------- sparse rows, bags of words, TF-IDF
@given(st.integers(1, 30), st.integers(1, 20), st.integers(0, 10_000))
@settings(max_examples=30, deadline=None)
def test_csr_products_and_rows_as_dense(n, v, seed):
    rng = np.random.default_rng(seed)
    A = rng.poisson(0.3, size=(n, v)).astype(float)
    X = CSRMatrix.from_dense(A)
    np.testing.assert_array_equal(X.toarray(), A)
    W, G = rng.normal(size=(v, 3)), rng.normal(size=(n, 2))
    np.testing.assert_allclose(X @ W, A @ W, atol=1e-12); np.testing.assert_allclose(X @ W[:, 0], A @ W[:, 0], atol=1e-12)
    np.testing.assert_allclose(xt_dot(X, G), A.T @ G, atol=1e-12); np.testing.assert_allclose(X.rmatmul(G[:, 0]), A.T @ G[:, 0], atol=1e-12)
    idx = rng.integers(0, n, 7)
    np.testing.assert_array_equal(X[idx].toarray(), A[idx])
    rows = [rng.integers(0, v, rng.integers(0, 6)) for _ in range(n)]
    counts = np.zeros((n, v))
    for i, r in enumerate(rows): np.add.at(counts[i], r, 1)
    np.testing.assert_array_equal(CSRMatrix.from_rows(rows, v).toarray(), counts)
    assert CSRMatrix.from_rows(rows, v).nnz == (counts > 0).sum()

DOCS = ['The movie was great, great fun.', "A great cast; a dull movie. Don't!", 'Dull, dull, dull!',
        'Nothing known here', 'fun fun fun and more fun', 'the the the']

def sk_counts(docs, vocab):
    from sklearn.feature_extraction.text import CountVectorizer
    return CountVectorizer(tokenizer=lambda d: tokenize(d, punctuation=False), lowercase=False, token_pattern=None,
                           vocabulary=vocab.stoi).transform(docs)

@pytest.mark.filterwarnings("ignore:divide by zero")     # scikit-learn's own idf without smoothing
def test_bag_of_words_and_tfidf_as_sklearn():
    from sklearn.feature_extraction.text import TfidfTransformer
    vocab, X, X2 = text_bags(DOCS[:3], DOCS[3:], min_freq=1)
    C1, C2 = sk_counts(DOCS[:3], vocab), sk_counts(DOCS[3:], vocab)
    np.testing.assert_array_equal(X.toarray(), C1.toarray()); np.testing.assert_array_equal(X2.toarray(), C2.toarray())
    for smooth in (True, False):
        for sub in (True, False):
            tt = TfidfTransformer(smooth_idf=smooth, sublinear_tf=sub).fit(C1)
            idf = idf_weights(X, smooth=smooth)
            np.testing.assert_allclose(idf[np.isfinite(idf)], tt.idf_[np.isfinite(idf)])
            if smooth:     # without smoothing an unseen word has idf inf; scikit-learn then drops the vocabulary's zeros
                np.testing.assert_allclose(tfidf(X2, idf, sublinear=sub).toarray(), tt.transform(C2).toarray(), atol=1e-12)
                np.testing.assert_allclose(tfidf(X2.toarray(), idf, sublinear=sub), tt.transform(C2).toarray(), atol=1e-12)

def test_bag_of_words_drops_unknown_words():
    vocab = Vocab(Counter(great=3, movie=2))
    X = bag_of_words(['great unknown movie great', 'zzz'], vocab)
    assert X.toarray().tolist() == [[0, 0, 2, 1], [0, 0, 0, 0]]


# ---------------------------------------------------------------- naive Bayes
@pytest.mark.parametrize('alpha', [1.0, 0.1])
def test_multinomial_nb_as_sklearn(alpha):
    from sklearn.naive_bayes import MultinomialNB as SkNB
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    A = rng.poisson(0.5 + y[:, None] * np.linspace(0, 1, 40), size=(300, 40)).astype(float)
    ours, theirs = MultinomialNB(alpha).fit(CSRMatrix.from_dense(A), y), SkNB(alpha=alpha).fit(sparse.csr_matrix(A), y)
    np.testing.assert_allclose(ours.feature_log_prob_, theirs.feature_log_prob_, atol=1e-12)
    np.testing.assert_allclose(ours.class_log_prior_, theirs.class_log_prior_, atol=1e-12)
    np.testing.assert_allclose(ours.predict_log_proba(A), theirs.predict_log_proba(A), atol=1e-10)
    np.testing.assert_array_equal(ours.predict(CSRMatrix.from_dense(A)), theirs.predict(A))

def test_nb_rejects_negative_counts():
    with pytest.raises(ValueError, match='counts >= 0'):
        MultinomialNB().fit(-np.ones((2, 3)), [0, 1])


# ---------------------------------------------------------------- trees
def test_tree_matches_sklearn():
    from sklearn.tree import DecisionTreeClassifier
    rng = np.random.default_rng(1)
    X = rng.normal(size=(400, 6))
    y = ((X[:, 0] > 0.2) ^ (X[:, 1] + X[:, 2] > 0)).astype(int) + (X[:, 3] > 1)
    X_test = rng.normal(size=(2000, 6))
    for criterion in ('entropy', 'gini'):
        # near the root no two cuts tie: the same cuts (scikit-learn keeps X in float32, hence the tolerance)
        ours = DecisionTree(max_depth=3, criterion=criterion).fit(X, y)
        theirs = DecisionTreeClassifier(criterion=criterion, max_depth=3, random_state=0).fit(X, y)
        assert ours.node_count == theirs.tree_.node_count
        split, sk_split = ours.feature >= 0, theirs.tree_.feature >= 0
        cuts = np.array(sorted(zip(ours.feature[split], ours.threshold[split])))
        sk_cuts = np.array(sorted(zip(theirs.tree_.feature[sk_split], theirs.tree_.threshold[sk_split])))
        np.testing.assert_allclose(cuts, sk_cuts, atol=1e-6)
        np.testing.assert_array_equal(ours.predict(X_test), theirs.predict(X_test))
        np.testing.assert_allclose(ours.predict_proba(X_test), theirs.predict_proba(X_test), atol=1e-12)
        # grown to purity, small nodes offer several cuts of equal gain, which the two break differently
        ours, theirs = DecisionTree(criterion=criterion).fit(X, y), DecisionTreeClassifier(criterion=criterion, random_state=0).fit(X, y)
        assert (ours.predict(X) == y).all() and (ours.predict(X_test) == theirs.predict(X_test)).mean() > 0.9

def test_tree_root_gain_is_information_gain():
    rng = np.random.default_rng(2)
    X, y = rng.normal(size=(200, 3)), rng.integers(0, 3, 200)
    t = DecisionTree(max_depth=1).fit(X, y)
    assert t.gain[0] == pytest.approx(information_gain(y, X[:, t.feature[0]] <= t.threshold[0]))

def test_tree_cut_at_depth_is_tree_grown_to_depth():
    rng = np.random.default_rng(12)
    X, y = rng.normal(size=(300, 4)), rng.integers(0, 3, 300)
    full = DecisionTree().fit(X, y)
    for d in (1, 2, 4, 7):
        grown = DecisionTree(max_depth=d).fit(X, y)
        np.testing.assert_array_equal(full.predict_proba(X, max_depth=d), grown.predict_proba(X))
        assert (full.node_depth <= d).sum() == grown.node_count

def test_tree_min_samples_split_and_depth():
    rng = np.random.default_rng(3)
    X, y = rng.normal(size=(300, 2)), rng.integers(0, 2, 300)
    assert DecisionTree(max_depth=4).fit(X, y).depth() == 4
    leaves = DecisionTree(min_samples_split=50).fit(X, y)
    sizes = leaves.value[leaves.feature < 0].sum(1)
    parents = leaves.value[leaves.feature >= 0].sum(1)
    assert parents.min() >= 50 and sizes.sum() == 300


# ---------------------------------------------------------------- SVMs
def test_hinge_subgradient_is_the_gradient_off_the_kinks():
    rng = np.random.default_rng(4)
    X, s = rng.normal(size=(50, 4)), np.where(rng.random(50) > 0.5, 1.0, -1.0)
    w, b = rng.normal(size=4), 0.1
    g_w, g_b = hinge_subgradient(w, b, X, s, 0.3)
    assert rel_error(g_w, numerical_grad(lambda v: hinge_objective(v, b, X, s, 0.3), w.copy())) < 1e-6
    assert rel_error(np.array([g_b]), numerical_grad(lambda v: hinge_objective(w, v[0], X, s, 0.3), np.array([b]))) < 1e-6

def test_linear_svm_reaches_liblinear_objective():
    from sklearn.svm import LinearSVC
    rng = np.random.default_rng(5)
    X = rng.normal(size=(1000, 10))
    y = (X @ rng.normal(size=10) + 0.5 + rng.normal(size=1000) > 0).astype(int)
    s, lam = np.where(y == 1, 1.0, -1.0), 1e-2
    ours = LinearSVM(lam, epochs=40, batch_size=32, rng=0).fit(X, y)
    theirs = LinearSVC(C=1 / (lam * len(y)), loss='hinge', tol=1e-8, max_iter=100_000).fit(X, y)
    J_ours, J_theirs = (hinge_objective(ours.coef_, ours.intercept_, X, s, lam),
                        hinge_objective(theirs.coef_[0], theirs.intercept_[0], X, s, lam))
    assert J_theirs <= J_ours < 1.01 * J_theirs
    assert (ours.predict(X) == theirs.predict(X)).mean() > 0.98

def test_svc_matches_libsvm():
    from sklearn.svm import SVC as SkSVC
    rng = np.random.default_rng(6)
    X = rng.normal(size=(300, 5))
    y = (X[:, 0] ** 2 + X[:, 1] + 0.3 * rng.normal(size=300) > 1).astype(int)
    X_test = rng.normal(size=(200, 5))
    for C, gamma in ((1.0, 0.2), (100.0, 'scale')):
        ours, theirs = SVC(C=C, gamma=gamma, tol=1e-6).fit(X, y), SkSVC(C=C, gamma=gamma, tol=1e-6).fit(X, y)
        np.testing.assert_allclose(ours.decision_function(X_test), theirs.decision_function(X_test), atol=1e-3)
        assert ours.intercept_ == pytest.approx(theirs.intercept_[0], abs=1e-3)
        assert abs(len(ours.support_) - len(theirs.support_)) <= 2
    lin_ours, lin_theirs = SVC(C=1.0, kernel='linear', tol=1e-6).fit(X, y), SkSVC(C=1.0, kernel='linear', tol=1e-6).fit(X, y)
    np.testing.assert_allclose(lin_ours.decision_function(X_test), lin_theirs.decision_function(X_test), atol=1e-3)

def test_svc_kkt_conditions():
    rng = np.random.default_rng(7)
    X = rng.normal(size=(150, 2)); y = (np.linalg.norm(X, axis=1) > 1.1).astype(int)
    m = SVC(C=5.0, gamma=1.0, tol=1e-7).fit(X, y)
    s = np.where(y == 1, 1.0, -1.0)
    margin, a = s * m.decision_function(X), m.alpha_
    assert abs(a @ s) < 1e-9 and ((a >= 0) & (a <= 5.0)).all()
    assert np.allclose(margin[(a > 1e-8) & (a < 5 - 1e-8)], 1, atol=1e-5)
    assert (margin[a == 0] >= 1 - 1e-5).all() and (margin[a >= 5 - 1e-12] <= 1 + 1e-5).all()

def test_kernels():
    rng = np.random.default_rng(8)
    A, B = rng.normal(size=(6, 3)), rng.normal(size=(4, 3))
    from sklearn.metrics.pairwise import rbf_kernel as sk_rbf
    np.testing.assert_allclose(rbf_kernel(A, B, 0.7), sk_rbf(A, B, gamma=0.7), atol=1e-12)
    assert (sq_distances(A, A).diagonal() == 0).all()
    with pytest.raises(ValueError, match='equal columns'):
        sq_distances(A, B[:, :2])


# ---------------------------------------------------------------- k-means and PCA
def test_kmeans_inertia_as_sklearn():
    from sklearn.cluster import KMeans as SkKMeans
    rng = np.random.default_rng(9)
    centres = rng.normal(scale=6, size=(4, 3))
    X = np.concatenate([c + rng.normal(size=(80, 3)) for c in centres])
    ours, theirs = KMeans(4, rng=0).fit(X), SkKMeans(4, n_init=10, random_state=0).fit(X)
    assert ours.inertia_ == pytest.approx(theirs.inertia_, rel=1e-9)
    assert sorted(map(tuple, np.round(ours.cluster_centers_, 6))) == sorted(map(tuple, np.round(theirs.cluster_centers_, 6)))

def test_kmeans_plus_plus_picks_distinct_points():
    X = np.repeat(np.eye(3) * 10, 5, axis=0)
    C = kmeans_plus_plus(X, 3, rng=0)
    assert sorted(map(tuple, C)) == sorted(map(tuple, np.eye(3) * 10))

@pytest.mark.parametrize('method', ['full', 'covariance', 'randomized'])
def test_pca_as_sklearn(method):
    from sklearn.decomposition import PCA as SkPCA
    rng = np.random.default_rng(10)
    X = rng.normal(size=(400, 12)) @ rng.normal(size=(12, 12)) * np.linspace(3, 0.1, 12) + 5
    for whiten in (False, True):
        ours, theirs = PCA(4, whiten=whiten, method=method, rng=0).fit(X), SkPCA(4, whiten=whiten).fit(X)
        np.testing.assert_allclose(ours.explained_variance_, theirs.explained_variance_, rtol=1e-6)
        np.testing.assert_allclose(ours.explained_variance_ratio_, theirs.explained_variance_ratio_, rtol=1e-6)
        signs = np.sign((ours.components_ * theirs.components_).sum(1))
        np.testing.assert_allclose(ours.components_ * signs[:, None], theirs.components_, atol=1e-6)
        np.testing.assert_allclose(ours.transform(X) * signs, theirs.transform(X), atol=1e-5)
        np.testing.assert_allclose(ours.inverse_transform(ours.transform(X)), theirs.inverse_transform(theirs.transform(X)), atol=1e-5)

def test_randomized_svd_finds_the_leading_triplets():
    rng = np.random.default_rng(11)
    A = rng.normal(size=(300, 60)) @ np.diag(0.7 ** np.arange(60)) @ rng.normal(size=(60, 60))
    U, S, Vt = randomized_svd(A, 5, rng=0)
    U0, S0, Vt0 = np.linalg.svd(A, full_matrices=False)
    np.testing.assert_allclose(S, S0[:5], rtol=1e-8)
    np.testing.assert_allclose(np.abs((Vt * Vt0[:5]).sum(1)), 1, atol=1e-8)
    Vf, Uf = svd_flip(Vt, U)
    assert (Vf[np.arange(5), np.abs(Vf).argmax(1)] > 0).all()
    np.testing.assert_allclose(Uf * S @ Vf, U * S @ Vt, atol=1e-10)            # the product is unchanged

def test_pca_rejects_too_many_components():
    with pytest.raises(ValueError, match=r'n_components in \[1, 3\]'):
        PCA(4).fit(np.ones((10, 3)))
