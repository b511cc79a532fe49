# %% [markdown]
# # Generative adversarial networks
#
# > GAN losses (non-saturating, minimax, least-squares, Wasserstein), one training step shared by the plain, conditional and InfoGAN models, CycleGAN, and the Fréchet distance that scores samples.
#
# ## Purpose
#
# A generative adversarial network (GAN, Goodfellow et al. 2014) learns to
# draw samples from a distribution without ever writing down a density. A
# *generator* $G$ maps noise $z$ to a sample $G(z)$; a *discriminator* $D$
# is trained to tell real samples from generated ones; the generator is
# trained to fool it. This chapter
#
# 1. derives the game: its value function, the optimal discriminator
#    $p_r/(p_r+p_g)$, why the game then minimises the Jensen–Shannon
#    divergence ($2\,\mathrm{JS} - 2\log 2$), why practice uses the
#    *non-saturating* generator loss, the least-squares loss (LSGAN), and the
#    Wasserstein distance through the Kantorovich–Rubinstein duality (WGAN);
# 2. builds one training step, a `Model` subclass whose `train_step` makes one
#    discriminator step and one generator step through a frozen
#    discriminator (chapter 05c), used unchanged by every variant: the losses
#    are objects, gradient-checked in float64;
# 3. measures samples: FID needs a pretrained Inception net, which we do not
#    have, so we train chapter 08's LeNet-5 on MNIST and report, for every
#    GAN, that classifier's confidence on the samples, how many of the ten
#    digits appear, and a Fréchet distance in its feature space;
# 4. trains the sources' models on MNIST (source 002's vanilla GAN, a small
#    DCGAN, LSGAN, WGAN, the conditional GAN and InfoGAN), checks source 002's
#    first DCGAN losses on CIFAR-10, and shows CycleGAN's cycle-consistency
#    loss on MNIST ↔ colour-inverted MNIST.
#
# Every run here is small: two CPU cores train all the models of this
# chapter in about half an hour, so the nets are the sources' smallest (or
# smaller) and the epochs few; each run prints its epochs and its time.

# %%
#| default_exp gan

# %%
#| export
from __future__ import annotations
import math
import numpy as np
from dl_from_scratch.core import as_rng, check_array, get_array_module, get_dtype
from dl_from_scratch.model import Model, Input, Callback
from dl_from_scratch.optim import get_optimizer

# %%
#| hide
import os
os.environ.setdefault('OPENBLAS_THREAD_TIMEOUT', '4')   # before NumPy: OpenBLAS's idle threads must not spin (00_core)

# %%
import time
import matplotlib.pyplot as plt
from fastcore.test import test_eq, test_close, test_fail
from dl_from_scratch.core import precision, set_num_threads
from dl_from_scratch.gradcheck import check_grad
from dl_from_scratch.layers import Dense, Activation, BatchNorm, Flatten
from dl_from_scratch.conv import Conv2D, Conv2DTranspose, MaxPool2D
from dl_from_scratch.merge import Concatenate, Reshape
from dl_from_scratch.optim import Adam, RMSprop
from dl_from_scratch.losses import SparseCategoricalCrossentropy
set_num_threads(2)

# %% [markdown]
# ## 1. Derivation
#
# **The game.** Real samples $x$ come from $p_r$. The generator turns noise
# $z \sim p_z$ (uniform or normal) into $G(z)$, whose distribution we call
# $p_g$; the discriminator outputs $D(x) \in (0, 1)$, its belief that $x$
# is real. $D$ is a logistic classifier of real (label 1) against fake
# (label 0), so it maximises the log-likelihood
#
# $$V(D, G) = \mathbb E_{x\sim p_r}[\log D(x)] + \mathbb E_{z\sim p_z}[\log(1 - D(G(z)))],$$
#
# and the generator wants the opposite: $\min_G \max_D V(D, G)$.
#
# **The optimal discriminator.** For a fixed $G$, write both expectations
# over $x$: $V = \int p_r(x)\log D(x) + p_g(x)\log(1 - D(x))\,dx$. The
# integrand can be maximised at every $x$ separately; for $a, b > 0$,
# $y \mapsto a\log y + b\log(1-y)$ has derivative $a/y - b/(1-y)$, zero at
# $y = a/(a+b)$, and is concave, so
#
# $$D^*(x) = \frac{p_r(x)}{p_r(x) + p_g(x)} .$$
#
# It equals ½ everywhere when $p_g = p_r$, and only then: that is the
# equilibrium, not a property of $D^*$ in general (source 002 writes
# "$D^*(x) = \tfrac12$" as if it were).
#
# **The divergence.** Put $D^*$ back and let $m = (p_r + p_g)/2$:
#
# $$V(D^*, G) = \mathbb E_{p_r}\Big[\log\frac{p_r}{p_r+p_g}\Big] + \mathbb E_{p_g}\Big[\log\frac{p_g}{p_r+p_g}\Big]
#   = \mathbb E_{p_r}\Big[\log\frac{p_r}{m}\Big] + \mathbb E_{p_g}\Big[\log\frac{p_g}{m}\Big] - 2\log 2
#   = 2\,\mathrm{JS}(p_r\,\|\,p_g) - 2\log 2,$$
#
# with $\mathrm{KL}(p\|q) = \mathbb E_p[\log p/q]$ and
# $\mathrm{JS}(p\|q) = \tfrac12\mathrm{KL}(p\|m) + \tfrac12\mathrm{KL}(q\|m)$.
# Since $\mathrm{JS} \ge 0$ with equality iff $p_g = p_r$, the generator's
# best answer to the best discriminator is the data distribution, where
# $V = -2\log 2$. The *loss* the discriminator minimises is $-V$, so a
# discriminator that cannot tell (every output ½) has loss
# $2\log 2 \approx 1.386$ and a generator at the same point $\log 2 \approx 0.693$:
# the numbers to expect at the start of training.
#
# **The non-saturating generator loss.** Early in training $G$'s samples
# are poor, $D(G(z)) \approx 0$, and $\log(1 - D(G(z)))$ is flat there: with
# $D = \sigma(s)$ for a logit $s$,
# $\partial_s \log(1-\sigma(s)) = -\sigma(s) \to 0$. Goodfellow et al.
# therefore let $G$ *maximise* $\log D(G(z))$ instead, whose derivative
# $\partial_s \log\sigma(s) = 1 - \sigma(s) \to 1$ is largest exactly when
# $G$ is losing. The fixed point is the same ($D^*$ still gives
# $p_g = p_r$), only the gradients differ. Both losses are binary
# cross-entropies on the logit:
#
# $$L^D = \mathrm{BCE}(s_{\text{real}}, 1) + \mathrm{BCE}(s_{\text{fake}}, 0), \qquad
#   L^G = \mathrm{BCE}(s_{\text{fake}}, 1)\quad\text{(non-saturating)}, \qquad
#   \mathrm{BCE}(s, 1) = \log(1 + e^{-s}),\ \mathrm{BCE}(s, 0) = \log(1 + e^{s}),$$
#
# each a mean over the batch, and $\partial_s \mathrm{BCE}(s, y) = \sigma(s) - y$.
#
# **Least squares (LSGAN, Mao et al. 2017).** A sample on the real side of
# the sigmoid's boundary gets almost no gradient from the cross-entropy
# even when it is far from the data. Replace it by squares on the raw
# output, with targets $a$ (fake), $b$ (real) and $c$ (what $G$ wants $D$
# to believe):
#
# $$L^D = \tfrac12\mathbb E_{p_r}[(D(x) - b)^2] + \tfrac12\mathbb E_z[(D(G(z)) - a)^2],\qquad
#   L^G = \tfrac12\mathbb E_z[(D(G(z)) - c)^2],$$
#
# with $a = 0$, $b = c = 1$ as in source 002. The penalty keeps growing with
# the distance from the target, so it never saturates.
#
# **The Wasserstein distance (WGAN, Arjovsky et al. 2017).** When $p_r$ and
# $p_g$ live on disjoint low-dimensional sets, as images and early samples
# do, $\mathrm{JS}(p_r\|p_g) = \log 2$ whatever the distance between the
# sets, and its gradient is zero. The earth mover's distance does not
# have that flaw:
#
# $$W(p_r, p_g) = \inf_{\gamma\in\Pi(p_r, p_g)} \mathbb E_{(x, y)\sim\gamma}\,\|x - y\|,$$
#
# the least mean distance over all couplings $\gamma$ (joint
# distributions with marginals $p_r$ and $p_g$): for two point masses at 0
# and $\theta$, $W = |\theta|$ while JS jumps from 0 to $\log 2$. The
# infimum over couplings cannot be computed for images; the
# Kantorovich–Rubinstein duality turns it into a supremum over functions,
#
# $$W(p_r, p_g) = \sup_{\|f\|_L \le 1} \mathbb E_{x\sim p_r}[f(x)] - \mathbb E_{x\sim p_g}[f(x)],$$
#
# where $\|f\|_L \le 1$ means $|f(x) - f(y)| \le \|x - y\|$ (1-Lipschitz;
# with $K$-Lipschitz functions the supremum is $K\cdot W$). A network
# $f_w$, the *critic*, stands in for $f$: it outputs an unbounded score,
# not a probability, and minimises
#
# $$L^D = -\mathbb E_{p_r}[f_w(x)] + \mathbb E_z[f_w(G(z))],\qquad L^G = -\mathbb E_z[f_w(G(z))],$$
#
# so $-L^D$ estimates $K\cdot W$. WGAN keeps $f_w$ Lipschitz by clipping
# every *weight* to $[-0.01, 0.01]$ after each update (source 002's text
# says "clip the gradients"; its code, rightly, clips the weights): a net
# with bounded weights has a bounded Lipschitz constant. The critic is
# trained several steps ($n_{\text{critic}} = 5$) per generator step, so
# that it stays near the supremum.
#
# ## 2. The losses
#
# Every variant's discriminator loss is a sum of a term on the real batch
# and a term on the generated batch, and the generator's loss is a term on
# the generated batch. So a GAN loss is an object with three methods, each
# taking $D$'s raw outputs $s$ (logits, or scores) and returning the mean
# value and its gradient $\partial L/\partial s$:
#
# | loss | `real(s)` | `fake(s)` | `generator(s)` |
# |---|---|---|---|
# | `'bce'` | $\log(1+e^{-s})$; $\sigma(s) - 1$ | $\log(1+e^{s})$; $\sigma(s)$ | $\log(1+e^{-s})$; $\sigma(s) - 1$ |
# | `'minimax'` | as `'bce'` | as `'bce'` | $-\log(1+e^{s}) = \log(1-\sigma(s))$; $-\sigma(s)$ |
# | `'lsgan'` | $\tfrac12(s-b)^2$; $s - b$ | $\tfrac12(s-a)^2$; $s - a$ | $\tfrac12(s-c)^2$; $s - c$ |
# | `'wgan'` | $-s$; $-1$ | $s$; $1$ | $-s$; $-1$ |
#
# (each divided by the batch size). $\log(1+e^{s})$ is computed as
# `logaddexp(0, s)`, finite for every $s$.

# %%
#| export
def _scores(s, who: str):
    "Check D's outputs: a non-empty finite float array `(N, ...)`."
    s = check_array(s, 'D output', kind='f', who=who)
    if s.size == 0: raise ValueError(f"{who} expected a non-empty batch of D outputs, got shape {tuple(s.shape)}")
    return s

def _sigmoid(s, xp):
    "σ(s) without overflow for large |s|."
    e = xp.exp(-xp.abs(s))
    return xp.where(s >= 0, 1 / (1 + e), e / (1 + e))

class GANLoss:
    """A GAN's losses on the discriminator's raw outputs `s` `(N, ...)` (logits or critic scores): `real(s)` and
    `fake(s)` are D's terms on a real and on a generated batch, `generator(s)` is G's term on a generated batch.
    Each returns `(mean value, dL/ds)` with `dL/ds` shaped like `s`."""
    name = 'gan'
    def real(self, s): raise NotImplementedError
    def fake(self, s): raise NotImplementedError
    def generator(self, s): raise NotImplementedError
    def __repr__(self): return f"{type(self).__name__}({', '.join(f'{k}={v!r}' for k, v in vars(self).items())})"

class BCEGANLoss(GANLoss):
    """Goodfellow et al.'s losses on logits: D minimises BCE(s_real, 1) + BCE(s_fake, 0); G minimises
    BCE(s_fake, 1) (`non_saturating=True`, the usual choice) or the minimax game's log(1 - σ(s_fake))."""
    name = 'bce'
    def __init__(self, non_saturating: bool = True): self.non_saturating = bool(non_saturating)
    def real(self, s):
        s = _scores(s, 'BCEGANLoss.real'); xp = get_array_module(s)
        return float(xp.logaddexp(0, -s).mean()), (_sigmoid(s, xp) - 1) / s.size
    def fake(self, s):
        s = _scores(s, 'BCEGANLoss.fake'); xp = get_array_module(s)
        return float(xp.logaddexp(0, s).mean()), _sigmoid(s, xp) / s.size
    def generator(self, s):
        if self.non_saturating: return self.real(s)
        v, d = self.fake(s)
        return -v, -d

class LSGANLoss(GANLoss):
    """Least squares on D's raw output: D minimises ½(s_real − b)² + ½(s_fake − a)², G minimises ½(s_fake − c)²
    (means over the batch); Mao et al.'s a, b, c, by default 0, 1, 1."""
    name = 'lsgan'
    def __init__(self, a: float = 0.0, b: float = 1.0, c: float = 1.0): self.a, self.b, self.c = float(a), float(b), float(c)
    def _half_square(self, s, t, who):
        s = _scores(s, who); e = s - t
        return float(0.5 * (e * e).mean()), e / s.size
    def real(self, s): return self._half_square(s, self.b, 'LSGANLoss.real')
    def fake(self, s): return self._half_square(s, self.a, 'LSGANLoss.fake')
    def generator(self, s): return self._half_square(s, self.c, 'LSGANLoss.generator')

class WassersteinLoss(GANLoss):
    "WGAN's critic loss −mean(s_real) + mean(s_fake) (its negative estimates K·W(p_r, p_g)); G minimises −mean(s_fake)."
    name = 'wgan'
    def real(self, s):
        s = _scores(s, 'WassersteinLoss.real'); xp = get_array_module(s)
        return -float(s.mean()), xp.full_like(s, -1.0 / s.size)
    def fake(self, s):
        s = _scores(s, 'WassersteinLoss.fake'); xp = get_array_module(s)
        return float(s.mean()), xp.full_like(s, 1.0 / s.size)
    def generator(self, s): return self.real(s)

def get_gan_loss(loss) -> GANLoss:
    "A `GANLoss` from one, or from a name: 'bce' (non-saturating), 'minimax', 'lsgan', 'wgan'."
    if isinstance(loss, GANLoss): return loss
    makers = {'bce': BCEGANLoss, 'minimax': lambda: BCEGANLoss(non_saturating=False), 'lsgan': LSGANLoss,
              'wgan': WassersteinLoss}
    if loss not in makers: raise ValueError(f"get_gan_loss expected a GANLoss or one of {sorted(makers)}, got {loss!r}")
    return makers[loss]()

# %% [markdown]
# Each of the twelve gradients is checked in float64 against central
# differences, at logits wide enough ($\pm 8$) to reach both tails of the
# sigmoid. At $s = 0$, a discriminator that cannot tell, the BCE terms are
# $\log 2$ each: $L^D = 2\log 2$ and $L^G = \log 2$, as derived.

# %%
rg = np.random.default_rng(0)
s = rg.uniform(-8, 8, (7, 1))
for name in ['bce', 'minimax', 'lsgan', 'wgan']:
    L = get_gan_loss(name)
    for part in ('real', 'fake', 'generator'):
        f = getattr(L, part)
        err = check_grad(lambda v: f(v)[0], lambda v: f(v)[1], s)
        assert err < 1e-8, (name, part, err)
print('all twelve loss gradients agree with central differences to < 1e-8')
z0 = np.zeros((5, 1))
L = get_gan_loss('bce')
test_close(L.real(z0)[0] + L.fake(z0)[0], 2 * math.log(2)); test_close(L.generator(z0)[0], math.log(2))
test_close(get_gan_loss('minimax').generator(np.full((3, 1), -30.0))[1], -np.full((3, 1), 9.4e-14) / 3, eps=1e-14)  # saturates
test_close(L.generator(np.full((3, 1), -30.0))[1], -np.ones((3, 1)) / 3)                                 # does not
test_eq(L.real(np.array([[1000.0], [-1000.0]]))[0], 500.0)                                               # no overflow
test_fail(lambda: L.real(np.array([[np.nan]])), contains='finite')
test_fail(lambda: L.real(np.zeros((0, 1))), contains='non-empty')
test_fail(lambda: get_gan_loss('hinge'), contains="'bce'")

# %% [markdown]
# ## 3. One training step for every GAN
#
# The step is chapter 05c's, made general. With $m$ real samples:
#
# 1. **Discriminator step.** Draw $m$ generator inputs, make $m$ fakes; run
#    $D$ on the real batch, take `loss.real`'s gradient back through $D$;
#    run $D$ on the fakes, take `loss.fake`'s gradient back; add the two
#    parameter gradients and update $D$ with its own optimizer. The real and
#    the fake batch go through $D$ separately, so a batch-normalised $D$
#    normalises each with its own statistics, as DCGAN does. With weight
#    clipping, clip $D$'s weights after the update. With
#    $n_{\text{critic}} > 1$ (`d_steps`), the batch `fit` hands over holds
#    $n_{\text{critic}}$ minibatches of $m$, and the discriminator steps once
#    on each.
# 2. **Generator step.** The model itself is the graph $D(G(z))$. Freeze
#    $D$ (`trainable = False`), draw $m$ fresh generator inputs, run the
#    graph, take `loss.generator`'s gradient back through $D$ into $G$, and
#    update with $G$'s optimizer: `apply_gradients` skips the frozen $D$.
#
# Variants change only *what goes in and comes out*: the generator's input
# (noise; noise and a label; noise and a code), the discriminator's input
# (an image; an image and a label), and the loss terms on $D$'s outputs
# (InfoGAN adds one). Those are three small methods, `generator_input`,
# `discriminator_input` and `d_terms` / `g_terms`, which subclasses override;
# `train_step` itself is written once.

# %%
#| export
def discriminator_update(D: Model, passes: list, optimizer, clip_value: float | None = None):
    """One update of `D` from several batches: `passes` is a list of `(input, terms)`, where `terms(out)` gives
    `(value, logs, dL/dout)` for D's output on that input. Each batch goes through D by itself (a batch-normalised
    D normalises each with its own statistics); the parameter gradients are summed, `optimizer` steps once, and
    with `clip_value` every weight of D is clipped to [−c, c] (WGAN). Returns `(sum of values, merged logs)`."""
    total, logs, acc = 0.0, {}, None
    for inp, terms in passes:
        v, part, dy = terms(D(inp, training=True))
        D.backward(dy, need_dx=False)
        acc = {k: g.copy() for k, g in D.grads.items()} if acc is None else {k: acc[k] + g for k, g in D.grads.items()}
        total += v
        logs.update(part)
    D.grads = acc
    D.apply_gradients(optimizer)
    if clip_value is not None:
        for p in D.params.values(): get_array_module(p).clip(p, -clip_value, clip_value, out=p)
    return total, logs

# %%
from dl_from_scratch.optim import SGD
xi = Input((3,)); Dlin = Model(xi, Dense(1, rng=0)(xi), name='Dlin')
a, b = np.random.default_rng(0).standard_normal((2, 4, 3)).astype(np.float32)
key = [k for k in Dlin.params if k.endswith('/W')][0]; W0 = Dlin.params[key].copy()
bce = get_gan_loss('bce')
def terms(part, tag): return lambda out: (part(out)[0], tag, part(out)[1])
total, logs = discriminator_update(Dlin, [(a, terms(bce.real, {'r': 1})), (b, terms(bce.fake, {'f': 2}))],
                                   SGD(1.0), clip_value=0.05)
s_a, s_b = a @ W0, b @ W0                                    # the bias starts at 0
dW = a.T @ bce.real(s_a)[1] + b.T @ bce.fake(s_b)[1]         # the summed gradient, by hand
test_close(Dlin.params[key], np.clip(W0 - dW, -0.05, 0.05), eps=1e-6)
test_close(total, bce.real(s_a)[0] + bce.fake(s_b)[0], eps=1e-6); test_eq(logs, {'r': 1, 'f': 2})

# %%
#| export
class GAN(Model):
    """A GAN trained by `fit(x)`: the model is the graph D(G(z)); each `train_step` makes `d_steps` discriminator
    steps and one generator step through a frozen D (see the chapter's section 3).

    `generator`: a model `(N, latent_dim)` -> samples `(N, *sample_shape)`; `discriminator`: samples -> `(N, 1)`
    raw outputs (logits or critic scores). `loss`: a `GANLoss` or its name. `noise`: 'normal' (N(0, 1)) or
    'uniform' (U(−1, 1)). `clip_value`: clip D's weights to [−c, c] after every D update (WGAN). `fit(x)` takes
    batches of `d_steps * m` real samples `(N, *sample_shape)`."""
    def __init__(self, generator: Model, discriminator: Model, latent_dim: int, loss='bce', noise: str = 'normal',
                 d_steps: int = 1, clip_value: float | None = None, rng=None, name: str = 'gan'):
        if int(latent_dim) < 1: raise ValueError(f"GAN expected latent_dim >= 1, got {latent_dim}")
        if noise not in ('normal', 'uniform'): raise ValueError(f"GAN expected noise 'normal' or 'uniform', got {noise!r}")
        if int(d_steps) < 1: raise ValueError(f"GAN expected d_steps >= 1, got {d_steps}")
        if clip_value is not None and not clip_value > 0: raise ValueError(f"GAN expected clip_value > 0 or None, got {clip_value}")
        self.G, self.D, self.latent_dim, self.noise = generator, discriminator, int(latent_dim), noise
        self.loss, self.d_steps, self.clip_value, self.rng = get_gan_loss(loss), int(d_steps), clip_value, as_rng(rng)
        super().__init__(*self._graph(), name=name)
        self.loss = get_gan_loss(loss)          # Model.__init__ resets `loss` (the compiled loss of a plain model)
        self.d_opt = self.g_opt = None

    def _graph(self):
        "The symbolic inputs and output of the combined model D(G(...))."
        z = Input((self.latent_dim,), name='z')
        return z, self.D(self.G(z))

    def compile(self, d_optimizer='adam', g_optimizer='adam'):
        "One optimizer for D, one for G (names or `Optimizer`s; two separate objects, each with its own state)."
        self.d_opt, self.g_opt = get_optimizer(d_optimizer), get_optimizer(g_optimizer)
        if self.d_opt is self.g_opt: raise ValueError("GAN.compile expected two optimizer objects, got the same one twice")
        return self

    # --- what goes in and comes out; subclasses override these ---------------------------------
    def sample_noise(self, n: int, rng=None):
        "`(n, latent_dim)` noise from the prior, in the current float dtype."
        rng = self.rng if rng is None else as_rng(rng)
        z = rng.standard_normal((n, self.latent_dim)) if self.noise == 'normal' else rng.uniform(-1, 1, (n, self.latent_dim))
        return z.astype(get_dtype())

    def generator_input(self, n: int, y=None, rng=None):
        "What G reads for `n` samples (here: noise; `y`, the batch's labels, unused)."
        return self.sample_noise(n, rng)

    def discriminator_input(self, x, y=None):
        "What D reads for samples `x` (here: `x`)."
        return x

    def d_terms(self, out, real: bool, g_in=None):
        """D's loss terms on its output `out` for a real batch or a generated one (made from `g_in`):
        `(value, logs, dL/dout)`."""
        v, d = (self.loss.real if real else self.loss.fake)(out)
        return v, {'d_real' if real else 'd_fake': v}, d

    def g_terms(self, out, g_in):
        "G's loss on D's output for the generated batch made from `g_in`: `(value, logs, dL/dout)`."
        v, d = self.loss.generator(out)
        return v, {}, d

    # --- the step, written once -----------------------------------------------------------------
    def _d_step(self, x, y) -> dict:
        g_in = self.generator_input(len(x), y)
        x_fake = self.G(g_in, training=True)
        d_loss, logs = discriminator_update(
            self.D, [(self.discriminator_input(x, y), lambda out: self.d_terms(out, True)),
                     (self.discriminator_input(x_fake, y), lambda out: self.d_terms(out, False, g_in))],
            self.d_opt, self.clip_value)
        return {'d_loss': d_loss, **logs}

    def _g_step(self, n: int, y) -> dict:
        self.D.trainable = False
        try:
            g_in = self.generator_input(n, y)
            g_loss, logs, dy = self.g_terms(self(g_in, training=True), g_in)
            self.backward(dy, need_dx=False)
            self.apply_gradients(self.g_opt)
        finally:
            self.D.trainable = True
        return {'g_loss': g_loss, **logs}

    def train_step(self, batch) -> dict:
        """`batch = (x, y)`: `d_steps * m` real samples (and labels or `None`). Returns the logs: `d_loss` (its
        terms `d_real`, `d_fake`) of the last D step and `g_loss`."""
        if self.d_opt is None: raise ValueError("GAN.train_step needs a compiled GAN: call gan.compile(d_optimizer, g_optimizer)")
        x, y = batch
        k = self.d_steps
        m = len(x) // k
        if m == 0: raise ValueError(f"GAN.train_step expected a batch of at least d_steps = {k} samples, got {len(x)}")
        for i in range(k):
            logs = self._d_step(x[i * m:(i + 1) * m], None if y is None else y[i * m:(i + 1) * m])
        logs.update(self._g_step(m, None if y is None else y[:m]))
        return logs

    def generate(self, n: int, y=None, rng=None, batch_size: int = 256):
        "`n` samples from G in inference mode (`y`: labels or codes where the variant reads them)."
        return self.G.predict(self.generator_input(n, y, rng), batch_size=batch_size)

# %% [markdown]
# **Tests.** On a one-dimensional problem (real data $\mathcal N(3, 0.5^2)$,
# as in chapter 05c) the step must move the generated mean to 3 with every
# loss. And it must keep to its contract: the discriminator step leaves $G$
# untouched, the generator step leaves $D$ untouched, clipping bounds every
# weight of $D$, and $n_{\text{critic}} = 5$ makes five $D$ updates per
# generator update.

# %%
def toy_nets(d_activation=None, rng=0):
    zi = Input((4,)); G = Model(zi, Dense(1, rng=rng + 1)(Dense(16, 'tanh', rng=rng)(zi)), name='G')
    xi = Input((1,)); D = Model(xi, Dense(1, d_activation, rng=rng + 3)(Dense(16, 'tanh', rng=rng + 2)(xi)), name='D')
    return G, D

real = np.random.default_rng(1).normal(3.0, 0.5, (2048, 1)).astype(np.float32)
print(f"{'loss':8} {'mean of G(z) before -> after 30 epochs':>40} {'std':>12}")
for loss, opts, kw in [('bce', (Adam(2e-3, beta_1=0.5), Adam(2e-3, beta_1=0.5)), {}),
                       ('lsgan', (Adam(2e-3, beta_1=0.5), Adam(2e-3, beta_1=0.5)), {}),
                       ('wgan', (RMSprop(5e-3), RMSprop(5e-3)), dict(d_steps=5, clip_value=0.1))]:
    G, D = toy_nets()
    gan = GAN(G, D, latent_dim=4, loss=loss, rng=0, **kw).compile(*opts)
    before = gan.generate(2000, rng=5)
    gan.fit(real, epochs=30, batch_size=64 * gan.d_steps, rng=0, verbose=0)
    after = gan.generate(2000, rng=5)
    print(f"{loss:8} {before.mean():19.2f} -> {after.mean():.2f} {after.std():12.2f}")
    assert abs(after.mean() - 3.0) < 0.35, (loss, after.mean())

# %%
G, D = toy_nets()
gan = GAN(G, D, latent_dim=4, rng=0).compile(Adam(1e-2), Adam(1e-2))
xb = real[:32]
g0, d0 = [w.copy() for w in G.get_weights()], [w.copy() for w in D.get_weights()]
gan._d_step(xb, None)
assert all((a == b).all() for a, b in zip(g0, G.get_weights()))          # D step: G untouched
assert not all((a == b).all() for a, b in zip(d0, D.get_weights()))
d1 = [w.copy() for w in D.get_weights()]
gan._g_step(32, None)
assert all((a == b).all() for a, b in zip(d1, D.get_weights()))          # G step: D untouched (frozen)
assert not all((a == b).all() for a, b in zip(g0, G.get_weights()))
assert D.trainable                                                      # and unfrozen afterwards

class Counting(Adam):
    calls = 0
    def step(self, params, grads): Counting.calls += 1; return super().step(params, grads)
G, D = toy_nets()
wgan = GAN(G, D, latent_dim=4, loss='wgan', d_steps=5, clip_value=0.01, rng=0).compile(Counting(1e-2), Adam(1e-3))
logs = wgan.train_step((real[:5 * 16], None))
test_eq(Counting.calls, 5)
assert max(float(np.abs(p).max()) for p in D.params.values()) <= 0.01
test_eq(sorted(logs), ['d_fake', 'd_loss', 'd_real', 'g_loss'])
test_fail(lambda: wgan.train_step((real[:3], None)), contains='at least d_steps = 5')
test_fail(lambda: GAN(G, D, latent_dim=4, noise='cauchy'), contains="'normal' or 'uniform'")
test_fail(lambda: GAN(*toy_nets(), latent_dim=4).train_step((real[:4], None)), contains='compile')
opt = Adam(1e-3); test_fail(lambda: GAN(*toy_nets(), latent_dim=4).compile(opt, opt), contains='two optimizer objects')

# %% [markdown]
# To watch training, a callback draws samples from one fixed set of
# generator inputs before the first epoch and after every epoch.

# %%
#| export
class SampleGrid(Callback):
    "Samples of `model.G` (inference mode) from the fixed generator input `g_in`, before training and after each epoch."
    def __init__(self, g_in): self.g_in, self.images = g_in, []
    def on_train_begin(self, logs=None):
        if not self.images: self.images.append(self.model.G.predict(self.g_in))
    def on_epoch_end(self, epoch, logs=None): self.images.append(self.model.G.predict(self.g_in))

# %%
G, D = toy_nets()
grid = SampleGrid(GAN(G, D, latent_dim=4).generator_input(5, rng=0))
gan = GAN(G, D, latent_dim=4, rng=0).compile(Adam(1e-2), Adam(1e-2))
gan.fit(real[:256], epochs=3, batch_size=64, callbacks=[grid], verbose=0)
test_eq(len(grid.images), 4); test_eq(grid.images[0].shape, (5, 1))
assert not np.allclose(grid.images[0], grid.images[-1])

# %% [markdown]
# ## 4. Variants: labels, codes, and two domains
#
# **Conditional GAN** (Mirza & Osindero 2014). Both players read the label
# $y$, one-hot: $G(z, y)$ and $D(x, y)$, so $D$ judges whether $x$ is a
# real *instance of $y$*, and $G$ learns $p(x\mid y)$:
#
# $$L^D = -\mathbb E_{x, y\sim p_r}[\log D(x\mid y)] - \mathbb E_{z, y}[\log(1 - D(G(z\mid y)\mid y))],\qquad
#   L^G = -\mathbb E_{z, y}[\log D(G(z\mid y)\mid y)].$$
#
# Only the inputs change, so `ConditionalGAN` overrides the graph and the
# two input methods. Source 002's code has three errors that we do not
# copy: its discriminator returns a *sigmoid* that it then hands to
# `sigmoid_cross_entropy_with_logits` (a second sigmoid: $D$'s outputs are
# squeezed into $(0.5, 0.73)$ and its gradients shrink); it runs the
# discriminator's loss and optimizer under the name `generator_loss` and
# the reverse; and it feeds images in $[0, 1]$ to a discriminator that
# compares them with a tanh generator's $[-1, 1]$. Here $D$ returns a
# logit, the losses are `loss.real` / `loss.fake` / `loss.generator` by
# construction, and the images are scaled to $[-1, 1]$.
#
# **InfoGAN** (Chen et al. 2016). $G$ reads noise $z$ and a code $c$, here
# one of 10 categories with the uniform prior. Nothing in the plain game
# makes $G$ use $c$; InfoGAN adds the mutual information $I(c; G(z, c))$ to
# be maximised. With $x = G(z, c)$,
#
# $$I(c; x) = H(c) - H(c\mid x) = H(c) + \mathbb E_{x}\,\mathbb E_{c\sim p(c\mid x)}[\log p(c\mid x)]
#   = H(c) + \mathbb E_x\,\mathbb E_{c\sim p(c\mid x)}[\log q(c\mid x)] + \mathbb E_x\,\mathrm{KL}(p(\cdot\mid x)\,\|\,q(\cdot\mid x)),$$
#
# for any distribution $q(c\mid x)$; the KL term is $\ge 0$, so
# $I \ge L_I = H(c) + \mathbb E_{c\sim p(c),\,x\sim G(z, c)}[\log q(c\mid x)]$
# (the inner expectation over $p(c\mid x)$ becomes one over the joint,
# which we sample: draw $c$, make $x$). $q$ is a head $Q$ on the
# discriminator's trunk, a softmax over the 10 codes, so $\log q(c\mid x)$
# is minus the cross-entropy of $Q$'s logits with the code that made $x$.
# $H(c) = \ln 10 \approx 2.303$ for the uniform prior is a constant, the
# bound's ceiling. Both players subtract $\lambda L_I$ ($\lambda = 1$):
# $D$'s step trains $Q$ on generated samples, $G$'s step pushes $G$ to make
# samples whose code $Q$ can read. The gradient of $-\lambda L_I$ with
# respect to $Q$'s logits $u$ is $\lambda(\mathrm{softmax}(u) - \text{onehot}(c))/m$.
# (Source 002 writes the entropy as $-\sum p(c)\log p(c)$ but computes it
# as $-\sum c\log p(c)$ from the sampled one-hot $c$: the same constant
# $\ln 10$ here, by luck of the uniform prior.)
#
# **CycleGAN** (Zhu et al. 2017) learns two maps between unpaired domains,
# $G: X\to Y$ and $F: Y\to X$, each with an adversary ($D_Y$ judges $G(x)$
# against real $y$, $D_X$ judges $F(y)$ against real $x$). Adversarial
# losses alone let $G$ send each $x$ to *any* realistic $y$, a random
# permutation of the domain; the cycle-consistency loss asks that going
# there and back return the start,
#
# $$L_{\text{cyc}} = \mathbb E_x\|F(G(x)) - x\|_1 + \mathbb E_y\|G(F(y)) - y\|_1,\qquad
#   L_{G,F} = L^G + L^F + \lambda L_{\text{cyc}},\quad \lambda = 10 .$$
#
# (Source 002 prints the total as "$L^{D_x} + L^{D_y} + \lambda L^{\text{cyc}}(L^G + L^F)$",
# a garble of this sum, writes the backward cycle as $F(G(y))$, and its code
# switches silently to Wasserstein losses with no Lipschitz constraint; we
# use the paper's least-squares losses.) The model is the graph with inputs
# $x, y$ and outputs $D_Y(G(x))$, $D_X(F(y))$, $F(G(x))$, $G(F(y))$ and the
# two translations; $G$ and $F$ are each called twice, which chapter 05c's
# shared-layer backward sums. One step updates $G$ and $F$ together with the
# discriminators frozen, then each discriminator on its real batch and on
# the translations just made. The mean absolute error's gradient is
# $\operatorname{sign}(F(G(x)) - x)/\text{size}$.

# %%
#| export
def _one_hot(y, n: int, who: str):
    "Integer labels `(N,)` in [0, n) -> one-hot `(N, n)` in the current float dtype."
    y = np.asarray(y)
    if y.ndim != 1 or y.size and (y.min() < 0 or y.max() >= n or not np.issubdtype(y.dtype, np.integer)):
        raise ValueError(f"{who} expected integer labels of shape (N,) in [0, {n}), got shape {y.shape}, dtype {y.dtype}"
                         + (f", values in [{y.min()}, {y.max()}]" if y.size else ''))
    out = np.zeros((len(y), n), dtype=get_dtype())
    out[np.arange(len(y)), y] = 1
    return out

class ConditionalGAN(GAN):
    """A GAN whose G reads `[z, one-hot y]` and whose D reads `[x, one-hot y]` (Mirza & Osindero). `fit(x, y)` with
    integer labels `y` `(N,)` in [0, n_classes); the generated half of each step uses the batch's labels."""
    def __init__(self, generator, discriminator, latent_dim: int, n_classes: int = 10, name: str = 'cgan', **kwargs):
        self.n_classes = int(n_classes)
        super().__init__(generator, discriminator, latent_dim, name=name, **kwargs)

    def _graph(self):
        z, c = Input((self.latent_dim,), name='z'), Input((self.n_classes,), name='label')
        return [z, c], self.D([self.G([z, c]), c])

    def _labels(self, n, y, rng):
        "`y` checked, or `n` labels drawn uniformly when `y` is None."
        if y is None: return (self.rng if rng is None else as_rng(rng)).integers(0, self.n_classes, n)
        if len(y) != n: raise ValueError(f"{type(self).__name__} expected {n} labels, got {len(y)}")
        return y

    def generator_input(self, n, y=None, rng=None):
        return [self.sample_noise(n, rng), _one_hot(self._labels(n, y, rng), self.n_classes, type(self).__name__)]

    def discriminator_input(self, x, y=None):
        if y is None: raise ValueError("ConditionalGAN expected labels: fit(x, y) with y of shape (N,)")
        return [x, _one_hot(y, self.n_classes, type(self).__name__)]

class InfoGAN(ConditionalGAN):
    """InfoGAN with one categorical code: G reads `[one-hot c | z]` `(N, n_codes + latent_dim)`; D outputs
    `[logit (N, 1), Q's logits over the codes (N, n_codes)]`. Both players subtract `lam` times the bound
    L_I = H(c) + E log q(c | G(z, c)), H(c) = ln n_codes (uniform prior); D's step trains Q on the generated batch.
    `fit(x)`: the codes are drawn, the data's labels are never read. Logs 'mi' (L_I, in nats)."""
    def __init__(self, generator, discriminator, latent_dim: int, n_codes: int = 10, lam: float = 1.0,
                 noise: str = 'uniform', name: str = 'infogan', **kwargs):
        self.lam = float(lam)
        super().__init__(generator, discriminator, latent_dim, n_classes=n_codes, noise=noise, name=name, **kwargs)

    def _graph(self):
        g = Input((self.n_classes + self.latent_dim,), name='code_and_z')
        return g, self.D(self.G(g))

    def generator_input(self, n, y=None, rng=None):
        "`[one-hot c | z]`: the codes `y` `(n,)` if given (to choose them), else drawn uniformly; z from the prior."
        c = _one_hot(self._labels(n, y, rng), self.n_classes, 'InfoGAN')
        return np.concatenate([c, self.sample_noise(n, rng)], axis=1)

    def discriminator_input(self, x, y=None): return x

    def _info(self, q, g_in):
        "L_I on Q's logits `q` for the codes in `g_in`, and d(−lam L_I)/dq."
        c = g_in[:, :self.n_classes]
        log_q = q - q.max(1, keepdims=True)
        log_q = log_q - np.log(np.exp(log_q).sum(1, keepdims=True))
        mi = math.log(self.n_classes) + float((c * log_q).sum(1).mean())
        return mi, self.lam * (np.exp(log_q) - c) / len(q)

    def d_terms(self, out, real, g_in=None):
        s, q = out
        v, logs, d = super().d_terms(s, real, g_in)
        if real: return v, logs, [d, None]                # Q is trained on generated samples only
        mi, dq = self._info(q, g_in)
        return v - self.lam * mi, {**logs, 'mi': mi}, [d, dq]

    def g_terms(self, out, g_in):
        s, q = out
        v, _, d = super().g_terms(s, g_in)
        mi, dq = self._info(q, g_in)
        return v - self.lam * mi, {}, [d, dq]

# %% [markdown]
# Tests: the conditional GAN's inputs are one-hot and checked; InfoGAN's
# information gradient is checked in float64 against central differences
# of $-\lambda L_I$; and on a small problem with two Gaussian clusters
# ($\pm 3$), InfoGAN with a 2-way code must learn to put each code on its
# own cluster, while its bound $L_I$ rises to its ceiling $H(c) = \ln 2$.

# %%
def toy_info_nets(n_codes=2, rng=0):
    gi = Input((n_codes + 2,)); G = Model(gi, Dense(1, rng=rng + 1)(Dense(16, 'tanh', rng=rng)(gi)), name='G')
    xi = Input((1,)); h = Dense(16, 'tanh', rng=rng + 2)(xi)
    return G, Model(xi, [Dense(1, rng=rng + 3)(h), Dense(n_codes, rng=rng + 4)(h)], name='D')

info = InfoGAN(*toy_info_nets(), latent_dim=2, n_codes=2, lam=1.0, rng=0)
with precision(np.float64):
    g_in = info.generator_input(6, rng=1).astype(np.float64)
    q = np.random.default_rng(2).standard_normal((6, 2))
    err = check_grad(lambda v: -info.lam * info._info(v, g_in)[0], lambda v: info._info(v, g_in)[1], q)
print(f'gradient of -lam L_I: relative error {err:.1e}'); assert err < 1e-8
test_eq(info.generator_input(3, y=np.array([1, 0, 1]))[:, :2], np.array([[0, 1], [1, 0], [0, 1]]))
test_fail(lambda: info.generator_input(2, y=np.array([0, 2])), contains='in [0, 2)')
test_fail(lambda: info.generator_input(2, y=np.array([0.5, 1.0])), contains='integer labels')

two = np.r_[np.random.default_rng(3).normal(-3, 0.3, (1024, 1)), np.random.default_rng(4).normal(3, 0.3, (1024, 1))]
info.compile(Adam(3e-3, beta_1=0.5), Adam(3e-3, beta_1=0.5))
h = info.fit(two.astype(np.float32), epochs=40, batch_size=64, rng=0, verbose=0)
means = [float(info.generate(500, y=np.full(500, k), rng=k).mean()) for k in range(2)]
print(f"L_I: first epoch {h.history['mi'][0]:.3f} -> last {h.history['mi'][-1]:.3f} nats (ceiling ln 2 = {math.log(2):.3f}); "
      f"mean sample per code: {means[0]:.2f}, {means[1]:.2f}")
assert h.history['mi'][-1] > 0.6 and min(abs(m) for m in means) > 2 and means[0] * means[1] < 0

def toy_cond_nets(rng=0):
    z, c = Input((4,)), Input((10,)); G = Model([z, c], Dense(1, rng=rng)(Concatenate()([z, c])), name='G')
    x, c = Input((1,)), Input((10,)); D = Model([x, c], Dense(1, rng=rng + 1)(Concatenate()([x, c])), name='D')
    return G, D
cg = ConditionalGAN(*toy_cond_nets(), latent_dim=4).compile(Adam(1e-3), Adam(1e-3))
z_in, c_in = cg.generator_input(3, y=np.array([2, 0, 9]))
test_eq(c_in.argmax(1), [2, 0, 9]); test_eq(c_in.sum(1), [1, 1, 1]); test_eq(z_in.shape, (3, 4))
logs = cg.train_step((real[:8], np.arange(8)))
assert set(logs) == {'d_loss', 'd_real', 'd_fake', 'g_loss'}
test_fail(lambda: cg.discriminator_input(np.zeros((2, 1))), contains='labels')
test_fail(lambda: cg.generator_input(3, y=np.array([0, 1])), contains='expected 3 labels')

# %%
#| export
class CycleGAN(Model):
    """Unpaired translation between domains X and Y (Zhu et al.): generators `G: X -> Y`, `F: Y -> X` and
    discriminators `D_x`, `D_y` (raw outputs `(N, 1)`). The model's inputs are `[x, y]`; its outputs
    `[D_y(G(x)), D_x(F(y)), F(G(x)), G(F(y)), G(x), F(y)]`. `fit(x, y)`: batches of x and of y, unpaired.
    G and F minimise `loss.generator` on both adversaries + `lam` (mean|F(G(x)) − x| + mean|G(F(y)) − y|)."""
    def __init__(self, G: Model, F: Model, D_x: Model, D_y: Model, lam: float = 10.0, loss='lsgan', name='cyclegan'):
        self.G, self.F, self.D_x, self.D_y, self.lam = G, F, D_x, D_y, float(lam)
        x, y = Input(G.input_shape, name='x'), Input(F.input_shape, name='y')
        fake_y, fake_x = G(x), F(y)
        super().__init__([x, y], [D_y(fake_y), D_x(fake_x), F(fake_y), G(fake_x), fake_y, fake_x], name=name)
        self.loss, self.opts = get_gan_loss(loss), None

    def compile(self, g_optimizer='adam', dx_optimizer='adam', dy_optimizer='adam'):
        "One optimizer for G and F together, one for each discriminator (three separate objects)."
        self.opts = [get_optimizer(o) for o in (g_optimizer, dx_optimizer, dy_optimizer)]
        if len({id(o) for o in self.opts}) < 3: raise ValueError("CycleGAN.compile expected three optimizer objects")
        return self

    @staticmethod
    def _l1(a, b):
        "mean|a − b| and its gradient with respect to `a`."
        e = a - b
        return float(np.abs(e).mean()), np.sign(e) / e.size

    def train_step(self, batch) -> dict:
        "`batch = (x, y)`: one update of G and F (discriminators frozen), then one of each discriminator."
        if self.opts is None: raise ValueError("CycleGAN.train_step needs compile(g_optimizer, dx_optimizer, dy_optimizer)")
        x, y = batch
        if y is None: raise ValueError("CycleGAN expected fit(x, y) with samples of both domains")
        g_opt, dx_opt, dy_opt = self.opts
        self.D_x.trainable = self.D_y.trainable = False
        try:
            s_y, s_x, rec_x, rec_y, fake_y, fake_x = self([x, y], training=True)
            l_g, d_sy = self.loss.generator(s_y)
            l_f, d_sx = self.loss.generator(s_x)
            c_x, d_rx = self._l1(rec_x, x)
            c_y, d_ry = self._l1(rec_y, y)
            self.backward([d_sy, d_sx, self.lam * d_rx, self.lam * d_ry, None, None], need_dx=False)
            self.apply_gradients(g_opt)
        finally:
            self.D_x.trainable = self.D_y.trainable = True
        terms = lambda part, key: (lambda out: (lambda v, d: (v, {key: v}, d))(*part(out)))
        dx_loss, _ = discriminator_update(self.D_x, [(x, terms(self.loss.real, 'x')), (fake_x, terms(self.loss.fake, 'x'))], dx_opt)
        dy_loss, _ = discriminator_update(self.D_y, [(y, terms(self.loss.real, 'y')), (fake_y, terms(self.loss.fake, 'y'))], dy_opt)
        cyc = c_x + c_y
        return {'loss': l_g + l_f + self.lam * cyc, 'g_loss': l_g, 'f_loss': l_f, 'cycle': cyc,
                'dx_loss': dx_loss, 'dy_loss': dy_loss}

# %% [markdown]
# Test on two one-dimensional domains, $X = \mathcal N(0, 1)$ and
# $Y = \mathcal N(2, 1)$ (so $G$ should learn $x + 2$ up to the adversary's
# slack; $\lambda = 1$ here, as the cycle term is easy to satisfy with a
# near-identity map on one dimension and would slow the adversary): the
# cycle error must fall, and $G$ must move $X$'s mean to $Y$'s.
# The cycle loss's own gradient is checked through the whole graph (both
# generators, each called twice) in float64.

# %%
def lin(name, rng): i = Input((1,)); return Model(i, Dense(1, rng=rng)(Dense(8, 'tanh', rng=rng + 10)(i)), name=name)
with precision(np.float64):
    cyc = CycleGAN(lin('G', 0), lin('F', 1), lin('Dx', 2), lin('Dy', 3))
    xa, yb = np.random.default_rng(0).standard_normal((2, 5, 1))
    def cycle_value(_=None):
        outs = cyc([xa, yb]); return cyc._l1(outs[2], xa)[0] + cyc._l1(outs[3], yb)[0]
    def check_param(key):
        p = cyc.params[key]
        def f(v):
            old = p.copy(); p[...] = v; out = cycle_value(); p[...] = old; return out
        def g(v):
            outs = cyc([xa, yb], training=True)
            cyc.backward([np.zeros_like(outs[0]), np.zeros_like(outs[1]), cyc._l1(outs[2], xa)[1],
                          cyc._l1(outs[3], yb)[1], None, None])
            return cyc.grads[key]
        return check_grad(f, g, p.copy())
    errs = {k: check_param(k) for k in cyc.params if k.startswith(('G/', 'F/'))}
print('cycle-loss gradient through G and F (max relative error):', f'{max(errs.values()):.1e}')
assert max(errs.values()) < 1e-6

xs = np.random.default_rng(1).standard_normal((1024, 1)).astype(np.float32)
ys = (2 + np.random.default_rng(2).standard_normal((1024, 1))).astype(np.float32)
cyc = CycleGAN(lin('G', 0), lin('F', 1), lin('Dx', 2), lin('Dy', 3), lam=1.0).compile(Adam(1e-2, beta_1=0.5), Adam(1e-2, beta_1=0.5), Adam(1e-2, beta_1=0.5))
h = cyc.fit(xs, ys, epochs=20, batch_size=64, rng=0, verbose=0)
print(f"cycle loss {h.history['cycle'][0]:.3f} -> {h.history['cycle'][-1]:.3f}; mean of G(x) {cyc.G.predict(xs).mean():.2f} (Y: 2)")
assert h.history['cycle'][-1] < 0.5 * h.history['cycle'][0] and abs(cyc.G.predict(xs).mean() - 2) < 0.3
test_fail(lambda: cyc.train_step((xs[:4], None)), contains='both domains')

# %% [markdown]
# ## 5. Measuring samples
#
# The Fréchet Inception distance (FID, Heusel et al. 2017) compares real
# and generated images through the activations of a pretrained Inception
# net: fit a Gaussian to each set of feature vectors and take the Fréchet
# (2-Wasserstein) distance between the two Gaussians,
#
# $$d^2\big(\mathcal N(\mu_1, \Sigma_1), \mathcal N(\mu_2, \Sigma_2)\big)
#   = \|\mu_1 - \mu_2\|^2 + \operatorname{tr}\Big(\Sigma_1 + \Sigma_2 - 2\big(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2}\big)^{1/2}\Big).$$
#
# (FID's usual formula writes $(\Sigma_1\Sigma_2)^{1/2}$; the two traces
# agree, since $\Sigma_1\Sigma_2 = \Sigma_1^{1/2}(\Sigma_1^{1/2}\Sigma_2\Sigma_1^{1/2})\Sigma_1^{-1/2}$
# is similar to a symmetric positive semi-definite matrix, so their
# eigenvalues, and those of the square roots, are the same. The symmetric
# form needs only square roots of symmetric matrices.) The square root of a
# symmetric positive semi-definite $A = V\Lambda V^\top$ is
# $V\Lambda^{1/2}V^\top$; round-off can make the smallest eigenvalues
# slightly negative, and we set those to zero.
#
# We have no Inception net; we have MNIST. So the features are those of a
# LeNet-5 (chapter 08) trained here from scratch, its 84-unit last hidden
# layer, and we call the result a *Fréchet LeNet distance* (FLD): the same
# construction, not comparable with published FIDs. Beside it, the same
# classifier gives two more scores on 1,000 samples: its mean confidence
# (the largest softmax probability, high when samples look like *some*
# digit) and the class coverage (how many of the ten digits receive at
# least 1 % of the samples, i.e. 10; fewer is mode collapse).

# %%
#| export
def sqrtm_psd(A):
    "Square root of a symmetric positive semi-definite matrix `(D, D)` by eigendecomposition (negative round-off -> 0)."
    A = check_array(A, 'A', ndim=2, kind='f', who='sqrtm_psd')
    if A.shape[0] != A.shape[1]: raise ValueError(f"sqrtm_psd expected a square matrix, got shape {tuple(A.shape)}")
    if not np.allclose(A, A.T, rtol=1e-6, atol=1e-8 * max(1.0, float(np.abs(A).max()))):
        raise ValueError("sqrtm_psd expected a symmetric matrix")
    lam, V = np.linalg.eigh((A + A.T) / 2)
    return (V * np.sqrt(np.clip(lam, 0, None))) @ V.T

def gaussian_stats(features):
    "Mean `(D,)` and covariance `(D, D)` of feature vectors `(N, D)`, N >= 2, in float64."
    f = check_array(features, 'features', ndim=2, who='gaussian_stats').astype(np.float64)
    if len(f) < 2: raise ValueError(f"gaussian_stats expected at least 2 feature vectors, got {len(f)}")
    return f.mean(0), np.cov(f, rowvar=False)

def frechet_distance(stats1, stats2) -> float:
    "Fréchet distance² between Gaussians `(mu, Sigma)`: ‖μ1 − μ2‖² + tr(Σ1 + Σ2 − 2 (Σ1^½ Σ2 Σ1^½)^½)."
    (m1, S1), (m2, S2) = stats1, stats2
    if np.shape(m1) != np.shape(m2) or np.shape(S1) != np.shape(S2):
        raise ValueError(f"frechet_distance expected statistics of one dimension, got {np.shape(m1)} and {np.shape(m2)}")
    r1 = sqrtm_psd(S1)
    cross = np.trace(sqrtm_psd(r1 @ S2 @ r1))
    return float(((m1 - m2) ** 2).sum() + np.trace(S1) + np.trace(S2) - 2 * cross)

def sample_scores(probs, features, real_stats, min_share: float = 0.01) -> dict:
    """Scores of generated samples from a classifier: `probs` `(N, C)` its softmax outputs, `features` `(N, D)` its
    feature vectors, `real_stats` `(mu, Sigma)` of real data's features. Returns 'confidence' (mean max
    probability), 'coverage' (classes that get at least `min_share` of the argmaxes), 'counts' and 'fd'."""
    probs = check_array(probs, 'probs', ndim=2, who='sample_scores')
    counts = np.bincount(probs.argmax(1), minlength=probs.shape[1])
    return {'confidence': float(probs.max(1).mean()), 'coverage': int((counts >= min_share * len(probs)).sum()),
            'counts': counts, 'fd': frechet_distance(gaussian_stats(features), real_stats)}

# %% [markdown]
# Tests on known cases: the square root of a diagonal matrix, of
# $\begin{pmatrix}2&1\\1&2\end{pmatrix}$ (eigenvalues 1 and 3), and of a
# random covariance (squared back); the distance between a Gaussian and
# itself (0), between one-dimensional Gaussians ($(\mu_1-\mu_2)^2 + (\sigma_1-\sigma_2)^2$),
# between Gaussians with commuting covariances ($\sum_i(\sqrt{a_i} - \sqrt{b_i})^2$
# on the diagonal); and the usual form, from the eigenvalues of the
# non-symmetric $\Sigma_1\Sigma_2$.

# %%
test_close(sqrtm_psd(np.diag([4.0, 9.0, 0.0])), np.diag([2.0, 3.0, 0.0]))
r = sqrtm_psd(np.array([[2.0, 1.0], [1.0, 2.0]]))
test_close(r, np.array([[1 + math.sqrt(3), math.sqrt(3) - 1], [math.sqrt(3) - 1, 1 + math.sqrt(3)]]) / 2, eps=1e-12)
A = np.random.default_rng(0).standard_normal((6, 6)); S = A @ A.T
test_close(sqrtm_psd(S) @ sqrtm_psd(S), S, eps=1e-10)
mu, Sg = np.arange(3.0), S[:3, :3]
test_close(frechet_distance((mu, Sg), (mu, Sg)), 0.0, eps=1e-9)
test_close(frechet_distance((np.array([1.0]), np.array([[4.0]])), (np.array([3.0]), np.array([[1.0]]))), 4 + 1)
a, b = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 0.25])
test_close(frechet_distance((np.zeros(3), np.diag(a)), (np.ones(3), np.diag(b))), 3 + ((np.sqrt(a) - np.sqrt(b)) ** 2).sum())
B = np.random.default_rng(1).standard_normal((6, 6)); S2 = B @ B.T
eig = np.linalg.eigvals(S @ S2).real                     # the non-symmetric form: tr (S1 S2)^1/2 = sum of sqrt(eigenvalues)
test_close(frechet_distance((np.zeros(6), S), (np.zeros(6), S2)), np.trace(S + S2) - 2 * np.sqrt(eig).sum(), eps=1e-8)
test_fail(lambda: sqrtm_psd(np.array([[1.0, 2.0], [0.0, 1.0]])), contains='symmetric')
test_fail(lambda: sqrtm_psd(np.ones((2, 3))), contains='square')
sc = sample_scores(np.eye(10)[[0, 0, 1, 2]] * 0.9 + 0.01, np.random.default_rng(0).standard_normal((4, 2)),
                   (np.zeros(2), np.eye(2)), min_share=0.25)
test_eq(sc['coverage'], 3); test_close(sc['confidence'], 0.91); test_eq(sc['counts'][:3], [2, 1, 1])
