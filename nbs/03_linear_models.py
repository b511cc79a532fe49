# %% [markdown]
# # Linear models
#
# > Linear regression by gradient descent and by the normal equations, polynomial features and ridge regression, logistic regression and softmax regression: the one-layer networks everything else is built from.
#
# ## Purpose
#
# A linear model computes $\hat y = Xw + b$ and, for classification, squashes
# it through a sigmoid or a softmax. It is a neural network with no hidden
# layer, and every idea of the later chapters already appears here: a loss,
# its gradient, a training loop over minibatches, capacity and overfitting,
# regularisation, and the difference between the loss we minimise and the
# accuracy we report. Because the models are small we can also solve some of
# them exactly and check that gradient descent gets the same answer.
#
# The chapter reproduces:
#
# * *Dive into Deep Learning* §3.2–3.3: linear regression on synthetic data
#   ($w=(2,-3.4)$, $b=4.2$), minibatch SGD with batch 10, learning rate 0.03, 3
#   epochs, and the normal equations;
# * Ketkar, *Deep Learning with Python*, ch. 2: polynomial fits of degree 1, 2
#   and 8 and a ridge sweep, with his (mis-named) error measure beside the real RMSE;
# * the logistic regression of *Build Your Own Deep Learning* §3.2 (its unit
#   tests, and its CIFAR-10 "animal or not" classifier) and of the
#   deeplearning.ai course on the planar "flower" data;
# * softmax regression on Fashion-MNIST as in *Dive into Deep Learning* §3.6.
#
# The few functions worth reusing are exported to `dl_from_scratch.linear`.

# %%
#| default_exp linear

# %%
#| export
from __future__ import annotations
import numpy as np
from dl_from_scratch.core import check_array
from dl_from_scratch.functional import sigmoid

# %%
#| hide
from fastcore.test import test_eq, test_close, test_fail

# %%
import time
import matplotlib.pyplot as plt
# %matplotlib inline
from dl_from_scratch.core import as_rng
from dl_from_scratch.data import synthetic_linear, BatchIterator, planar_flower, load
from dl_from_scratch.optim import SGD
from dl_from_scratch.losses import softmax_cross_entropy

# %% [markdown]
# ## Linear regression
#
# ### The model and its loss
#
# With $N$ examples as the rows of $X\in\mathbb R^{N\times d}$, the model predicts
# $\hat y=Xw+b\in\mathbb R^N$. Assuming $y=Xw+b+\varepsilon$ with Gaussian noise
# $\varepsilon\sim\mathcal N(0,\sigma^2)$, the negative log-likelihood is, up to
# constants, $\frac1{2\sigma^2}\sum_i(y_i-\hat y_i)^2$: maximum likelihood *is*
# least squares. We minimise the mean
# $$L(w,b)=\frac1{2N}\sum_{i=1}^N(\hat y_i-y_i)^2=\frac1{2N}\|Xw+b-y\|^2,$$
# (the $\tfrac12$ cancels the 2 of the derivative, as in D2L). Its gradient is
# $$\nabla_wL=\frac1N X^\top(\hat y-y),\qquad \frac{\partial L}{\partial b}=\frac1N\sum_i(\hat y_i-y_i).$$
# Minibatch SGD evaluates it on a random batch of $B$ rows and steps
# $w\leftarrow w-\eta\nabla_wL$; one pass over shuffled batches is an epoch.

# %%
def linreg_loss_grad(params, X, y):
    "Half mean squared error of y ≈ X w + b: X (N, d), y (N, 1), w (d, 1), b (1,). Returns (loss, grads)."
    r = X @ params['w'] + params['b'] - y                      # residuals (N, 1)
    return float((r ** 2).mean() / 2), {'w': X.T @ r / len(X), 'b': r.mean(0)}

# D2L's data: 1000 examples, w = (2, -3.4), b = 4.2, noise std 0.01
true_w, true_b = np.array([2.0, -3.4]), 4.2
X_lin, y_lin = synthetic_linear(1000, w=true_w, b=true_b, noise=0.01, rng=0)
print(X_lin.shape, y_lin.shape, X_lin.dtype)

# %% [markdown]
# D2L initialises $w\sim\mathcal N(0,0.01^2)$ and $b=0$ and trains for 3 epochs with
# batch size 10 and learning rate 0.03. We use the `SGD` optimizer of chapter 4
# on the parameter dict, which is exactly D2L's `sgd` updater.

# %%
rng = as_rng(1)
params = {'w': rng.normal(0, 0.01, (2, 1)).astype(np.float32), 'b': np.zeros(1, np.float32)}
opt = SGD(lr=0.03)
lin_hist = []
for epoch in range(3):
    for Xb, yb in BatchIterator(X_lin, y_lin, batch_size=10, shuffle=True, rng=rng):
        _, grads = linreg_loss_grad(params, Xb, yb)
        opt.step(params, grads)
    lin_hist.append(linreg_loss_grad(params, X_lin, y_lin)[0])
    print(f"epoch {epoch + 1}, loss {lin_hist[-1]:f}")
w_sgd, b_sgd = params['w'].ravel().astype(np.float64), float(params['b'][0])
print(f"error in estimating w: {true_w - w_sgd}")
print(f"error in estimating b: {true_b - b_sgd}")
assert np.abs(true_w - w_sgd).max() < 2e-3 and abs(true_b - b_sgd) < 2e-3

# %% [markdown]
# ### The normal equations
#
# The loss is a convex quadratic, so its minimum is where the gradient
# vanishes. Absorb the bias by appending a column of ones,
# $\tilde X=[X\;\mathbf 1]$, $\beta=(w,b)$; then
# $\nabla_\beta\tfrac12\|\tilde X\beta-y\|^2=\tilde X^\top(\tilde X\beta-y)=0$ gives the
# **normal equations**
# $$\tilde X^\top\tilde X\,\beta=\tilde X^\top y .$$
# When $\tilde X$ has full column rank, $\tilde X^\top\tilde X$ is symmetric
# positive definite and the solution is unique. We solve the system rather
# than forming the inverse (Ketkar writes $(X^\top X)^{-1}X^\top y$ and calls
# `inv`): solving is cheaper and more accurate. Its weakness is that the
# condition number of $X^\top X$ is the *square* of that of $X$; for
# ill-conditioned problems `numpy.linalg.lstsq` (a QR or SVD of $X$ itself) is
# the safer tool, and the ridge term below is the cure for singular ones.
#
# **Ridge regression** adds $\lambda\|\beta\|^2$ to the loss
# $\|X\beta-y\|^2$, and the same derivation gives
# $$(X^\top X+\lambda I)\,\beta=X^\top y ,$$
# which is solvable for every $\lambda>0$ (the matrix is positive definite).
# Ketkar prints the closed form with $-\lambda I$; that sign is wrong (it can make
# the matrix singular or indefinite), and his code uses $+\lambda I$.

# %%
#| export
def add_intercept(X):
    "Append a column of ones to X (N, d) -> (N, d+1), so that the last coefficient is the bias."
    X = check_array(X, 'X', ndim=2, who='add_intercept')
    return np.concatenate([X, np.ones((len(X), 1), X.dtype)], axis=1)

def normal_equations(X, y, lam: float = 0.0, penalize_last: bool = True):
    """Least squares (ridge when `lam > 0`): solve (X^T X + lam*I) beta = X^T y in float64.

    X (N, d); y (N,) or (N, k). Returns beta (d,) or (d, k). With `penalize_last=False`
    the last coefficient (an intercept column from `add_intercept`) is not shrunk."""
    X = check_array(X, 'X', ndim=2, who='normal_equations').astype(np.float64)
    y = check_array(y, 'y', ndim=(1, 2), who='normal_equations').astype(np.float64)
    if len(y) != len(X):
        raise ValueError(f"normal_equations expected y with {len(X)} rows (as X {X.shape}), got shape {y.shape}")
    if lam < 0: raise ValueError(f"normal_equations expected lam >= 0, got {lam}")
    A = X.T @ X
    if lam:
        d = np.full(X.shape[1], float(lam))
        if not penalize_last: d[-1] = 0.0
        A = A + np.diag(d)
    try:
        return np.linalg.solve(A, X.T @ y)
    except np.linalg.LinAlgError:
        raise ValueError(f"normal_equations: X^T X + {lam}*I is singular (X has rank < {X.shape[1]}); "
                         "use lam > 0 or numpy.linalg.lstsq") from None

# %%
beta = normal_equations(add_intercept(X_lin), y_lin.ravel())
w_ne, b_ne = beta[:2], beta[2]
print(f"normal equations: w = {w_ne}, b = {b_ne:.6f}")
print(f"error in estimating w: {true_w - w_ne}, b: {true_b - b_ne:.2e}")
assert np.abs(true_w - w_ne).max() < 1e-3 and abs(true_b - b_ne) < 1e-3
# the exact minimiser is where SGD was heading
test_close(w_sgd, w_ne, eps=2e-3)
# noiseless data are fitted exactly; ridge shrinks; a rank-deficient X fails cleanly
Xt = np.random.default_rng(0).normal(size=(20, 3)); bt = np.array([1., -2., 0.5])
test_close(normal_equations(Xt, Xt @ bt), bt, eps=1e-10)
assert np.linalg.norm(normal_equations(Xt, Xt @ bt, lam=10.)) < np.linalg.norm(bt)
test_fail(lambda: normal_equations(np.ones((5, 2)), np.ones(5)), contains='singular')
test_fail(lambda: normal_equations(Xt, np.ones(7)), contains='20 rows')

# %% [markdown]
# Hand check of ridge on one feature: with $X=(1,2)^\top$, $y=(1,2)^\top$, $\lambda=1$,
# $(X^\top X+\lambda)\beta=X^\top y$ reads $(5+1)\beta=5$, so $\beta=5/6$.

# %%
test_close(normal_equations(np.array([[1.], [2.]]), np.array([1., 2.]), lam=1.0), [5 / 6], eps=1e-12)
test_close(normal_equations(add_intercept(np.array([[0.], [1.], [2.]])), np.array([1., 3., 5.]), lam=1.0,
                            penalize_last=False)[1], 3 - 2 * 2 / 3, eps=1e-12)   # intercept unshrunk: b = ȳ - w x̄

# %% [markdown]
# ## Polynomial regression, capacity and ridge (Ketkar, ch. 2)
#
# A linear model in features $\phi(x)=(1,x,x^2,\ldots,x^D)$ is a polynomial of
# degree $D$ in $x$, and still linear in its coefficients, so the normal
# equations fit it. Ketkar's data: `x = linspace(-1, 1, 100)`,
# $y=2+x+2x^2+\varepsilon$, $\varepsilon\sim\mathcal N(0,0.1^2)$; the first 80 points train and the
# last 20 test. The split is not shuffled, so the test set is the
# *extrapolation* region $x>0.6$, which punishes a wiggly high-degree fit
# hard.
#
# Ketkar calls his error measure RMSE but computes $\sqrt{\sum_i(y_i-\hat y_i)^2}$,
# with no mean; it grows with the number of points, so train (80 points) and
# test (20) are not comparable. We print it beside the true
# $\text{RMSE}=\sqrt{\frac1n\sum_i(y_i-\hat y_i)^2}$. His variable `degree` is
# the number of columns, so his "degree 8" model has 9 coefficients.

# %%
#| export
def polynomial_features(x, degree: int):
    "Powers x^0 .. x^degree of x (N,) as columns of an (N, degree+1) array (a Vandermonde matrix)."
    x = check_array(x, 'x', ndim=1, who='polynomial_features')
    if int(degree) != degree or degree < 0:
        raise ValueError(f"polynomial_features expected a degree >= 0, got {degree!r}")
    return x[:, None] ** np.arange(int(degree) + 1)

def rmse(y_pred, y) -> float:
    "Root mean squared error sqrt(mean((y_pred - y)^2)) over all elements of same-shape arrays."
    y_pred, y = np.asarray(y_pred, np.float64), np.asarray(y, np.float64)
    if y_pred.shape != y.shape: raise ValueError(f"rmse expected arrays of one shape, got {y_pred.shape} and {y.shape}")
    return float(np.sqrt(np.mean((y_pred - y) ** 2)))

def root_sse(y_pred, y) -> float:
    "sqrt(sum((y_pred - y)^2)): what Ketkar's code calls RMSE (no mean; grows with the number of points)."
    y_pred, y = np.asarray(y_pred, np.float64), np.asarray(y, np.float64)
    if y_pred.shape != y.shape: raise ValueError(f"root_sse expected arrays of one shape, got {y_pred.shape} and {y.shape}")
    return float(np.sqrt(np.sum((y_pred - y) ** 2)))

# %%
test_eq(polynomial_features(np.array([2.]), 2), np.array([[1., 2., 4.]]))     # Ketkar's example x = 2 -> [1, 2, 4]
test_eq(polynomial_features(np.array([1., -1.]), 3).shape, (2, 4))
test_fail(lambda: polynomial_features(np.ones((2, 2)), 2), contains='rank 1')
test_close(rmse([1., 3.], [0., 0.]), np.sqrt(5), eps=1e-12); test_close(root_sse([1., 3.], [0., 0.]), np.sqrt(10), eps=1e-12)

# %%
def ketkar_data(rng=0):
    "Ketkar's Listing 2-1: x (100,), noiseless signal, noisy y; first 80 train, last 20 test."
    x = np.linspace(-1, 1, 100)
    signal = 2 + x + 2 * x ** 2
    y = signal + as_rng(rng).normal(0, 0.1, x.shape)
    return x, signal, y

def poly_errors(degree, x, y, lam=0.0, n_train=80):
    "Fit on the first n_train points; return (beta, train sqrt-SSE, test sqrt-SSE, train RMSE, test RMSE)."
    P = polynomial_features(x, degree)
    beta = normal_equations(P[:n_train], y[:n_train], lam=lam)
    pred = P @ beta
    tr, te = slice(0, n_train), slice(n_train, None)
    return beta, root_sse(pred[tr], y[tr]), root_sse(pred[te], y[te]), rmse(pred[tr], y[tr]), rmse(pred[te], y[te])

x_k, signal_k, y_k = ketkar_data(rng=0)
ketkar_book = {1: (3.50756834691, 7.69514326946), 2: (0.91896252959, 0.446173435392), 8: (0.897346255079, 14.1908525449)}
poly_fits = {d: poly_errors(d, x_k, y_k) for d in (1, 2, 8)}
# Ketkar's numbers come from his own noise draw; the spread over 500 draws shows where his fall
draws = np.array([[poly_errors(d, *ketkar_data(rng=s)[::2])[1:] for d in (1, 2, 8)] for s in range(100, 600)])
print(f"{'degree':>6s} | {'book sqrt-SSE train / test':>28s} | {'ours sqrt-SSE train / test':>28s} | "
      f"{'ours RMSE train / test':>24s} | {'500 draws: median sqrt-SSE test [5%, 95%]':>42s}")
for i, d in enumerate((1, 2, 8)):
    _, a, b, c, e = poly_fits[d]; q = np.percentile(draws[:, i, 1], [5, 50, 95])
    print(f"{d:6d} | {ketkar_book[d][0]:13.4f} / {ketkar_book[d][1]:12.4f} | {a:13.4f} / {b:12.4f} | "
          f"{c:11.4f} / {e:10.4f} | {q[1]:20.3f} [{q[0]:.3f}, {q[2]:.3f}]")
assert poly_fits[2][2] < poly_fits[1][2] and poly_fits[2][2] < poly_fits[8][2]   # degree 2 generalises best
assert poly_fits[8][1] <= poly_fits[2][1] <= poly_fits[1][1]                      # more capacity, lower training error

# %% [markdown]
# The pattern is Ketkar's: degree 1 underfits (large error everywhere),
# degree 2 (the true model) has the lowest test error, degree 8 fits the
# training points slightly better than degree 2 and extrapolates badly. Our
# numbers come from our own noise draw; the last column shows the spread of
# the test error over 500 draws, and Ketkar's values sit inside it. In true
# RMSE the degree-2 model's errors are about 0.1 on both sets, the noise
# level, as they must be.

# %%
xx = np.linspace(-1, 1, 400)
fig, axes = plt.subplots(1, 4, figsize=(17, 3.6))
axes[0].plot(signal_k, label='without noise'); axes[0].plot(y_k, '.', ms=3, label='with noise')
axes[0].plot(y_k - signal_k, label='noise'); axes[0].axvline(79.5, color='k', ls=':', lw=1)
axes[0].set_title('Ketkar Figure 2-1: the toy data (index; test = last 20)'); axes[0].legend(fontsize=8)
for ax, d in zip(axes[1:], (1, 2, 8)):
    beta = poly_fits[d][0]
    ax.plot(x_k[:80], y_k[:80], 'b.', ms=3, label='train'); ax.plot(x_k[80:], y_k[80:], 'r.', ms=3, label='test')
    ax.plot(xx, polynomial_features(xx, d) @ beta, 'k-', lw=1.2, label=f'degree {d} fit')
    ax.set_ylim(0, 7); ax.set_title(f'degree {d}: test RMSE {poly_fits[d][4]:.3f}'); ax.legend(fontsize=8)
plt.tight_layout(); plt.show()

# %% [markdown]
# ### The ridge sweep
#
# Ketkar's Listing 2-2 fits 80 columns ($x^0\ldots x^{79}$) to the 80 training
# points, which without a penalty would interpolate them (the "rote learning"
# of his thought experiment) and is numerically singular in any case, and
# sweeps $\lambda$ over `linspace(0.01, 0.99, 100)`. He plots the train and test
# error against $\lambda$ and gives no numbers. We repeat his sweep, and add a
# log-spaced sweep for the degree-8 model, where the penalty's effect is
# clearer: too small a $\lambda$ leaves the wild extrapolation, too large a
# one flattens the fit into underfitting, and in between (here around
# $\lambda\approx0.3$) the test RMSE falls from 4.80 to 0.150. That is still
# half as much again as the noise level $\sigma = 0.1$, which the degree-2
# model reaches (0.1016 above): ridge shrinks every coefficient, the true
# $x^2$ term's included, and that bias shows most on the test points, the last
# 20 of the range, beyond the training points.

# %%
lams_k = np.linspace(0.01, 0.99, 100)
sweep80 = np.array([poly_errors(79, x_k, y_k, lam=l)[1:] for l in lams_k])
lams_8 = np.logspace(-8, 2, 61)
sweep8 = np.array([poly_errors(8, x_k, y_k, lam=l)[1:] for l in lams_8])
fig, axes = plt.subplots(1, 3, figsize=(16, 3.8))
axes[0].plot(lams_k, sweep80[:, 0], label='train'); axes[0].plot(lams_k, sweep80[:, 1], label='test')
axes[0].set_title("Ketkar's sweep: 80 columns, his sqrt-SSE"); axes[0].set_xlabel('λ')
axes[1].plot(lams_k, sweep80[:, 2], label='train'); axes[1].plot(lams_k, sweep80[:, 3], label='test')
axes[1].set_title('the same sweep in true RMSE'); axes[1].set_xlabel('λ')
axes[2].semilogx(lams_8, sweep8[:, 2], label='train'); axes[2].semilogx(lams_8, sweep8[:, 3], label='test')
axes[2].axhline(0.1, color='k', ls=':', lw=1, label='noise std 0.1'); axes[2].set_yscale('log')
axes[2].set_title('degree 8, λ from 1e-8 to 100 (true RMSE)'); axes[2].set_xlabel('λ')
for ax in axes: ax.legend(fontsize=8)
plt.tight_layout(); plt.show()
i80, i8 = sweep80[:, 3].argmin(), sweep8[:, 3].argmin()
print(f"80 columns: test RMSE {sweep80[0, 3]:.4f} at λ=0.01, {sweep80[-1, 3]:.4f} at λ=0.99, best {sweep80[i80, 3]:.4f} at λ={lams_k[i80]:.2f}")
print(f"degree 8:   test RMSE {poly_fits[8][4]:.4f} at λ=0, best {sweep8[i8, 3]:.4f} at λ={lams_8[i8]:.2g}, "
      f"{sweep8[-1, 3]:.4f} at λ=100")
assert sweep8[i8, 3] < poly_fits[8][4]     # some ridge beats no ridge for degree 8

# %% [markdown]
# ## Logistic regression
#
# ### Derivation
#
# For a binary label $y\in\{0,1\}$ the model outputs a probability
# $a=\sigma(z)$, $z=x^\top w+b$, $\sigma(z)=1/(1+e^{-z})$. The likelihood of one example is
# $a^y(1-a)^{1-y}$, so the negative log-likelihood is the **binary
# cross-entropy** $\mathcal L=-y\log a-(1-y)\log(1-a)$, and the cost is its mean
# over the $m$ examples. With $\sigma'(z)=\sigma(z)(1-\sigma(z))$ the chain rule
# collapses beautifully:
# $$\frac{\partial\mathcal L}{\partial a}=-\frac ya+\frac{1-y}{1-a},\qquad
#   \frac{\partial\mathcal L}{\partial z}=\frac{\partial\mathcal L}{\partial a}\,a(1-a)=a-y .$$
# Vectorised over the batch, with the examples as **rows** of $X\in\mathbb R^{m\times d}$
# (the book's convention; the sources put them in columns and write
# $dw=\frac1mX(A-Y)^\top$, the same thing transposed):
# $$A=\sigma(Xw+b),\qquad dw=\frac1m X^\top(A-Y),\qquad db=\frac1m\sum_i(A_i-Y_i).$$
# Unlike the squared error, this cost is convex in $(w,b)$ (its Hessian is
# $\frac1mX^\top\operatorname{diag}(a(1-a))X\succeq0$), so gradient descent from zero
# finds the global minimum if there is one.
#
# We compute the cost from the logits $z$ rather than from $a$:
# $-y\log\sigma(z)-(1-y)\log(1-\sigma(z))=\max(z,0)-yz+\log(1+e^{-|z|})$, which is
# finite for every $z$, while $\log(1-a)$ is $-\infty$ as soon as $a$ rounds to 1.

# %%
#| export
def logistic_propagate(w, b, X, y):
    """Cost and gradients of logistic regression, vectorised.

    w (d,), b scalar, X (m, d) examples as rows, y (m,) in {0, 1}.
    Returns (cost, dw (d,), db) with cost = mean binary cross-entropy of sigmoid(X w + b),
    dw = X^T (A - y)/m and db = mean(A - y)."""
    X = check_array(X, 'X', ndim=2, who='logistic_propagate')
    w = check_array(w, 'w', shape=(X.shape[1],), who='logistic_propagate')
    y = check_array(y, 'y', shape=(len(X),), kind='fiub', who='logistic_propagate')
    return _logistic_propagate(w, b, X, y)

def _logistic_propagate(w, b, X, y):
    "`logistic_propagate` without the input checks (which cost a pass over X), for the training loop."
    z = X @ w + b
    yf = y.astype(z.dtype, copy=False)
    cost = float(np.mean(np.maximum(z, 0) - yf * z + np.log1p(np.exp(-np.abs(z)))))
    dz = sigmoid(z) - yf                                   # dL/dz = a - y
    return cost, X.T @ dz / len(X), float(dz.mean())

def logistic_predict(w, b, X, threshold: float = 0.5):
    "Class predictions (m,) int64: 1 where sigmoid(X w + b) > threshold. X (m, d), w (d,)."
    X = check_array(X, 'X', ndim=2, who='logistic_predict')
    return (sigmoid(X @ w + b) > threshold).astype(np.int64)

def fit_logistic_regression(X, y, lr: float = 0.005, iterations: int = 2000, w=None, b: float = 0.0,
                            callback=None):
    """Full-batch gradient descent on logistic regression from (w, b) (zeros by default).

    X (m, d), y (m,). Returns (w, b, costs) with costs[i] the cost *before* update i.
    `callback(i, w, b, cost)` is called after every update."""
    X = check_array(X, 'X', ndim=2, who='fit_logistic_regression')
    y = check_array(y, 'y', shape=(len(X),), kind='fiub', who='fit_logistic_regression')
    w = np.zeros(X.shape[1], X.dtype) if w is None else np.array(w, dtype=X.dtype)
    check_array(w, 'w', shape=(X.shape[1],), who='fit_logistic_regression')
    b, costs = float(b), np.empty(iterations)
    for i in range(iterations):
        costs[i], dw, db = _logistic_propagate(w, b, X, y)   # inputs checked once, above
        w -= lr * dw
        b -= lr * db
        if callback is not None: callback(i, w, b, costs[i])
    return w, b, costs

# %% [markdown]
# ### The source's unit tests
#
# *Build Your Own Deep Learning* §3.2 tests its functions on tiny inputs; we
# run the same inputs (transposed to rows). `propagate` with $w=(1,2)$,
# $b=2$, $X=\begin{pmatrix}1&2&-1\\3&4&-3.2\end{pmatrix}^\top$, $Y=(1,0,1)$
# reports $2\,\text{cost}+dw_1+dw_2+2\,db=14.999530$. Its gradient-descent
# test runs 100 iterations at learning rate 0.009 and reports the final
# parameters, the gradients at the final parameters, and the sum of the
# recorded costs, 304.243381. Its loop records the cost when `i % 100` is
# *non-zero* (an inverted condition), i.e. 99 of the 100 costs; we keep all
# of them and sum the same 99 to compare.

# %%
Xs = np.array([[1., 2., -1.], [3., 4., -3.2]]).T; ys = np.array([1, 0, 1]); ws = np.array([1., 2.])
c0, dw0, db0 = logistic_propagate(ws, 2.0, Xs, ys)
src_logit = {'propagate sum': 14.999530, 'cost': 5.801545, 'dw': (0.998456, 2.395072), 'db': 0.001456,
             'mean w': 0.156463, 'b': 1.925359, 'mean dw': 1.036073, 'final db': 0.219464, 'sum costs': 304.243381}
print(f"propagate: cost {c0:.6f} (5.801545), dw {dw0.round(6)} ((0.998456, 2.395072)), db {db0:.6f} (0.001456), "
      f"sum {2 * c0 + dw0.sum() + 2 * db0:.6f} (14.999530)")
w100, b100, costs100 = fit_logistic_regression(Xs, ys, lr=0.009, iterations=100, w=ws, b=2.0)
_, dw100, db100 = logistic_propagate(w100, b100, Xs, ys)
print(f"100 GD steps: mean w {w100.mean():.8f} (0.156463), b {b100:.8f} (1.925359), mean dw {dw100.mean():.8f} "
      f"(1.036073), db {db100:.8f} (0.219464), sum of costs 1..99 {costs100[1:].sum():.8f} (304.243381)")
test_close(2 * c0 + dw0.sum() + 2 * db0, 14.999530, eps=1e-6)
test_close((w100.mean(), b100, dw100.mean(), db100, costs100[1:].sum()),
           (0.156463, 1.925359, 1.036073, 0.219464, 304.243381), eps=1e-6)
test_eq(logistic_predict(np.array([0.1124579, 0.23106775]), -0.3, np.array([[1., -1.1, -3.2], [1.2, 2., 0.1]]).T),
        np.array([1, 1, 0]))
# the analytic gradient against central differences (float64, chapter 01's check_grad)
from dl_from_scratch.gradcheck import check_grad
rng_ = np.random.default_rng(0); Xg = rng_.normal(size=(7, 4)); yg = rng_.integers(0, 2, 7); wg = rng_.normal(size=4)
assert check_grad(lambda w: logistic_propagate(w, 0.3, Xg, yg)[0], lambda w: logistic_propagate(w, 0.3, Xg, yg)[1], wg) < 1e-8
# the stable cost stays finite where log(1 - sigmoid) would not
assert np.isfinite(logistic_propagate(np.array([1e4]), 0.0, np.array([[1.]]), np.array([0]))[0])
test_fail(lambda: logistic_propagate(np.ones(3), 0., Xg, yg), contains='shape (4,), got (3,)')

# %% [markdown]
# ### The planar "flower" data
#
# The deeplearning.ai course (week 3) shows that a linear classifier cannot
# separate the two interleaved petals of its "flower" data set: its
# `LogisticRegressionCV` gets **47%**, worse than always answering one class.
# We train our logistic regression by gradient descent on the same 400
# points (generated as the course does, with seed 1).

# %%
X_fl, y_fl = planar_flower(400, rng=1)
X_fl = X_fl.astype(np.float64)
w_fl, b_fl, costs_fl = fit_logistic_regression(X_fl, y_fl, lr=0.1, iterations=5000)
acc_fl = (logistic_predict(w_fl, b_fl, X_fl) == y_fl).mean() * 100
beta_fl = np.linalg.lstsq(add_intercept(X_fl), y_fl - 0.5, rcond=None)[0]   # a second linear rule for comparison
print(f"logistic regression on the flower: training accuracy {acc_fl:.1f}% (course: 47%), final cost {costs_fl[-1]:.4f}")

from dl_from_scratch.viz import plot_decision_boundary          # the package's plot (chapter 05b)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
plot_decision_boundary(lambda g: logistic_predict(w_fl, b_fl, g), X_fl, y_fl, ax=axes[0], margin=1.0, s=8,
                       title=f'logistic regression: {acc_fl:.1f}% on the flower')
axes[1].plot(costs_fl); axes[1].set_xlabel('iteration'); axes[1].set_ylabel('cost'); axes[1].set_title('training cost')
plt.tight_layout(); plt.show()
assert 40 <= acc_fl <= 55

# %% [markdown]
# The best a straight line can do here is about half right: the boundary cuts
# through the middle and each side holds petals of both colours. A hidden
# layer of 4 tanh units reaches about 90% on the same data (chapter 5).

# %% [markdown]
# ### CIFAR-10: animal or not
#
# *Build Your Own Deep Learning* §3.2 turns CIFAR-10 into a binary problem:
# label 1 for classes 2–6 (bird, cat, deer, dog, frog), 0 for the rest. Its
# prose says "animals 2–7", but its code is `y in range(2, 7)` and its tests
# confirm that **horse (7) is labelled 0**; we keep its labelling, so this
# is "bird, cat, deer, dog or frog" rather than "animal" and the classes are
# balanced 50/50. The images are flattened to 3072 features and divided by 255
# (the source calls this "centering and standardising"; it only scales).
# Zero initialisation, learning rate 0.005, 2000 full-batch gradient-descent
# iterations over all 50,000 training images. It reports **76.466% train**
# and **76.72% test**, with accuracy computed as $100-100\cdot\text{mean}|\hat Y-Y|$.
#
# Full-batch gradient descent from zero does not depend on the order of the
# examples, so the numbers are reproducible from TFDS's copy of CIFAR-10
# even though its example order differs from Keras's. We run in float32 (the
# source ran float64), which halves the memory traffic of the two
# $50000\times3072$ matrix–vector products per iteration.

# %%
#| export
def animal_labels(y):
    "CIFAR-10 labels `(N,)` -> int64 `(N,)`: 1 for classes 2-6 (bird, cat, deer, dog, frog), else 0. Source 000's `range(2, 7)`: horse (7) is 0."
    return ((y >= 2) & (y < 7)).astype(np.int64)

# %%
#| cifar10
xc_tr, yc_tr = load('cifar10', 'train'); xc_te, yc_te = load('cifar10', 'test')
Xc_tr = xc_tr.reshape(len(xc_tr), -1).astype(np.float32) / np.float32(255)
Xc_te = xc_te.reshape(len(xc_te), -1).astype(np.float32) / np.float32(255)
Yc_tr, Yc_te = animal_labels(yc_tr), animal_labels(yc_te)
print(Xc_tr.shape, Xc_te.shape, Xc_tr.dtype, f"positives: train {Yc_tr.mean():.3f}, test {Yc_te.mean():.3f}")
test_eq(Yc_tr.mean(), 0.5)

def cifar_accuracy(w, b, X, Y): return 100 - np.mean(np.abs(logistic_predict(w, b, X) - Y)) * 100

# a quick run (a subset, 100 iterations) to exercise the code path; the full run is below
w_q, b_q, c_q = fit_logistic_regression(Xc_tr[:5000], Yc_tr[:5000], lr=0.005, iterations=100)
print(f"quick run, 5000 images, 100 iterations: cost {c_q[0]:.4f} -> {c_q[-1]:.4f}, "
      f"train {cifar_accuracy(w_q, b_q, Xc_tr[:5000], Yc_tr[:5000]):.2f}%")
assert c_q[-1] < c_q[0] and w_q.dtype == np.float32

# %%
#| slow
#| cifar10
curve = []
def record(i, w, b, cost):
    if (i + 1) % 100 == 0:
        curve.append((i + 1, cost, cifar_accuracy(w, b, Xc_tr, Yc_tr), cifar_accuracy(w, b, Xc_te, Yc_te)))

t0 = time.perf_counter()
w_c, b_c, costs_c = fit_logistic_regression(Xc_tr, Yc_tr, lr=0.005, iterations=2000, callback=record)
cifar_time = time.perf_counter() - t0
_, dw_c, db_c = logistic_propagate(w_c, b_c, Xc_tr, Yc_tr)
acc_tr_c, acc_te_c = cifar_accuracy(w_c, b_c, Xc_tr, Yc_tr), cifar_accuracy(w_c, b_c, Xc_te, Yc_te)
print(f"2000 full-batch iterations in {cifar_time:.0f} s ({cifar_time / 2000 * 1e3:.0f} ms per iteration, float32, "
      f"including the accuracy checks every 100 iterations)")
cifar_rows = [('train accuracy %', 76.466, acc_tr_c), ('test accuracy %', 76.72, acc_te_c),
              ('b', 0.065301, b_c), ('mean(w)', -6.4368831e-05, float(w_c.mean())),
              ('mean(final dw)', 3.0001236e-06, float(dw_c.mean())), ('final db', -0.00583625184, db_c),
              ('sum of recorded costs (i % 100 != 0)', 1042.453483,
               float(costs_c[np.arange(2000) % 100 != 0].sum())),
              ('mean prediction, train', 0.5091, float(logistic_predict(w_c, b_c, Xc_tr).mean())),
              ('mean prediction, test', 0.5072, float(logistic_predict(w_c, b_c, Xc_te).mean()))]
print(f"{'':38s} {'source (float64)':>18s} {'ours (float32)':>18s}")
for name, s, o in cifar_rows: print(f"{name:38s} {s:18.10g} {o:18.10g}")
curve = np.array(curve)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8))
axes[0].plot(costs_c); axes[0].set_xlabel('iteration'); axes[0].set_title('cost (the source plots none)')
axes[1].plot(curve[:, 0], curve[:, 2], label='train'); axes[1].plot(curve[:, 0], curve[:, 3], label='test')
axes[1].axhline(76.466, color='C0', ls=':', lw=1, label='source train 76.466');
axes[1].axhline(76.72, color='C1', ls=':', lw=1, label='source test 76.72')
axes[1].set_xlabel('iteration'); axes[1].set_ylabel('accuracy %'); axes[1].legend(fontsize=8)
plt.tight_layout(); plt.show()
assert abs(acc_tr_c - 76.466) < 0.5 and abs(acc_te_c - 76.72) < 0.5

# %% [markdown]
# Both accuracies land on the source's to every printed digit, and so do the
# learned bias, the mean weight, the final bias gradient and the (faultily
# recorded) sum of costs to six or more digits: the problem is convex and the
# algorithm deterministic, so any faithful implementation must agree, whatever
# the order of the examples. The mean of the final weight gradient agrees to
# three digits only: it is a mean of 3072 numbers of both signs, about
# $10^{-3}$ each, that cancel to $3\cdot10^{-6}$, so float32 rounding in the two
# matrix–vector products shows. The train and test accuracies are equal: a
# linear model on raw pixels has far too little capacity to overfit 50,000
# images (high bias, as the source says). Chapter 5 trains a deep network on
# the same task.

# %% [markdown]
# ## Softmax regression on Fashion-MNIST
#
# For $q$ classes the model computes $q$ scores $o=xW+b$, $W\in\mathbb R^{d\times q}$, and
# turns them into probabilities with the **softmax**
# $\hat y_j=e^{o_j}/\sum_ke^{o_k}$ (positive, summing to one, and differentiable).
# The cross-entropy with a one-hot label $y$ is
# $$\ell(y,\hat y)=-\sum_jy_j\log\hat y_j=\log\sum_ke^{o_k}-\sum_jy_jo_j,\qquad
#   \frac{\partial\ell}{\partial o_j}=\operatorname{softmax}(o)_j-y_j ,$$
# the same "prediction minus target" as logistic regression (which is the
# case $q=2$ with one score fixed at 0). D2L computes the softmax without
# subtracting the maximum score, which overflows for scores above about 88 in
# float32; `losses.softmax_cross_entropy` fuses the two stably and returns the
# gradient with respect to the scores.
#
# D2L §3.6: Fashion-MNIST (60,000 training and 10,000 test images of 28×28
# clothes in 10 classes), pixels scaled to [0, 1], $W\sim\mathcal N(0,0.01^2)$,
# $b=0$, minibatch SGD with batch 256 and learning rate 0.1 for 10 epochs. D2L's
# notes report no accuracy; the book's target is at least 83% on the test set.

# %%
#| fashion_mnist
xf_tr, yf_tr = load('fashion_mnist', 'train'); xf_te, yf_te = load('fashion_mnist', 'test')
Xf_tr = xf_tr.reshape(len(xf_tr), -1).astype(np.float32) / np.float32(255)
Xf_te = xf_te.reshape(len(xf_te), -1).astype(np.float32) / np.float32(255)
fashion_labels = ['t-shirt', 'trouser', 'pullover', 'dress', 'coat', 'sandal', 'shirt', 'sneaker', 'bag', 'ankle boot']
fig, axes = plt.subplots(2, 9, figsize=(13.5, 3.4))
for ax, img, lab in zip(axes.ravel(), xf_tr[:18], yf_tr[:18]):
    ax.imshow(img[..., 0], cmap='gray'); ax.set_title(fashion_labels[lab], fontsize=9); ax.axis('off')
plt.tight_layout(); plt.show()

# %%
#| fashion_mnist
def softmax_regression_accuracy(params, X, y, batch=5000):
    "Fraction of rows of X (N, 784) whose argmax score equals y (N,)."
    return float(np.mean(np.concatenate([(X[i:i + batch] @ params['W'] + params['b']).argmax(1)
                                         for i in range(0, len(X), batch)]) == y))

rng = as_rng(0)
sm = {'W': rng.normal(0, 0.01, (784, 10)).astype(np.float32), 'b': np.zeros(10, np.float32)}
opt, sm_hist = SGD(lr=0.1), []
t0 = time.perf_counter()
for epoch in range(10):
    loss_sum = correct = seen = 0
    for Xb, yb in BatchIterator(Xf_tr, yf_tr, batch_size=256, shuffle=True, rng=rng):
        logits = Xb @ sm['W'] + sm['b']
        loss, dlogits = softmax_cross_entropy(logits, yb)       # mean loss, d(mean loss)/d logits
        opt.step(sm, {'W': Xb.T @ dlogits, 'b': dlogits.sum(0)})
        loss_sum += loss * len(yb); correct += int((logits.argmax(1) == yb).sum()); seen += len(yb)
    sm_hist.append((loss_sum / seen, correct / seen, softmax_regression_accuracy(sm, Xf_te, yf_te)))
    print(f"epoch {epoch + 1:2d}: train loss {sm_hist[-1][0]:.4f}, train acc {sm_hist[-1][1]:.4f}, "
          f"test acc {sm_hist[-1][2]:.4f}")
sm_time = time.perf_counter() - t0
print(f"10 epochs in {sm_time:.1f} s")
sm_hist = np.array(sm_hist)
fig, ax = plt.subplots(figsize=(6, 3.6))
ep = np.arange(1, 11)
ax.plot(ep, sm_hist[:, 0], label='train loss'); ax.plot(ep, sm_hist[:, 1], 'm--', label='train acc')
ax.plot(ep, sm_hist[:, 2], 'g-.', label='test acc'); ax.set_xlabel('epoch'); ax.set_ylim(0.3, 0.9)
ax.legend(); ax.grid(alpha=0.3); ax.set_title('softmax regression on Fashion-MNIST (D2L Figure 3.6 style)')
plt.tight_layout(); plt.show()
assert sm_hist[-1, 2] >= 0.83

# %%
#| fashion_mnist
# predictions on the first test images, as D2L's predict_ch3
pred = (Xf_te[:9] @ sm['W'] + sm['b']).argmax(1)
fig, axes = plt.subplots(1, 9, figsize=(13.5, 2.2))
for ax, img, t, p in zip(axes, xf_te[:9], yf_te[:9], pred):
    ax.imshow(img[..., 0], cmap='gray'); ax.set_title(f"{fashion_labels[t]}\n{fashion_labels[p]}", fontsize=8,
                                                     color='k' if t == p else 'r'); ax.axis('off')
plt.tight_layout(); plt.show()

# %% [markdown]
# ## Source numbers beside ours
#
# Printed from the runs above. Where the source used its own random draw, the
# numbers can only agree in kind, and the table says so.

# %%
#| cifar10
#| fashion_mnist
rows = [
    ('D2L linear regression, |w − w_true| max (SGD, 3 epochs)', 'none (≈1e-3 expected)', f"{np.abs(true_w - w_sgd).max():.1e}"),
    ('D2L linear regression, |b − b_true| (SGD, 3 epochs)', 'none', f"{abs(true_b - b_sgd):.1e}"),
    ('normal equations, |w − w_true| max / |b − b_true|', 'none', f"{np.abs(true_w - w_ne).max():.1e} / {abs(true_b - b_ne):.1e}"),
]
for d in (1, 2, 8):
    _, a, b, c, e = poly_fits[d]
    rows.append((f"Ketkar degree {d}, sqrt-SSE train / test (own noise draw)",
                 f"{ketkar_book[d][0]:.4f} / {ketkar_book[d][1]:.4f}", f"{a:.4f} / {b:.4f}"))
    rows.append((f"Ketkar degree {d}, true RMSE train / test", 'not reported', f"{c:.4f} / {e:.4f}"))
rows += [
    ('propagate test 2cost + dw1 + dw2 + 2db', '14.999530', f"{2 * c0 + dw0.sum() + 2 * db0:.6f}"),
    ('GD test: mean w, b', '0.156463, 1.925359', f"{w100.mean():.8f}, {b100:.8f}"),
    ('GD test: mean dw, db', '1.036073, 0.219464', f"{dw100.mean():.8f}, {db100:.8f}"),
    ('GD test: sum of the 99 recorded costs', '304.243381', f"{costs100[1:].sum():.8f}"),
    ('planar flower, logistic regression accuracy', '47%', f"{acc_fl:.1f}%"),
]
if 'acc_tr_c' in globals():
    rows += [(f"CIFAR animal vs not: {n}", f"{s:.10g}", f"{o:.10g}") for n, s, o in cifar_rows]
else:
    rows += [('CIFAR animal vs not', 'train 76.466%, test 76.72%', 'slow cell not run')]
rows += [('Fashion-MNIST softmax regression, test accuracy (10 epochs)', 'none (target ≥ 83%)', f"{100 * sm_hist[-1, 2]:.2f}%")]
w0 = max(len(r[0]) for r in rows)
print(f"{'what':{w0}s}  {'source':>32s}  {'ours':>28s}")
for r in rows: print(f"{r[0]:{w0}s}  {r[1]:>32s}  {r[2]:>28s}")

# %% [markdown]
# ## References
#
# * Source 003: study notes on A. Zhang, Z. C. Lipton, M. Li, A. J. Smola, *Dive into Deep Learning*, §3.2–3.6 (linear regression, Fashion-MNIST, softmax regression), and on the deeplearning.ai course *Neural Networks and Deep Learning*, weeks 2–3 (logistic regression, the planar data).
# * Source 004: N. Ketkar, *Deep Learning with Python*, Apress 2017, ch. 2 (Listings 2-1 and 2-2: polynomial fits and ridge).
# * Source 000: lascauje, *Build Your Own Deep Learning* (2020), §3.2 (logistic regression on CIFAR-10, its unit tests).
# * A. E. Hoerl, R. W. Kennard, "Ridge regression: biased estimation for nonorthogonal problems", *Technometrics* 12, 1970.
# * G. H. Golub, C. F. Van Loan, *Matrix Computations*, 4th ed., 2013, ch. 5 (normal equations vs QR for least squares).
# * H. Xiao, K. Rasul, R. Vollgraf, "Fashion-MNIST: a novel image dataset for benchmarking machine learning algorithms", arXiv:1708.07747, 2017.
# * A. Krizhevsky, *Learning multiple layers of features from tiny images*, 2009 (CIFAR-10).
