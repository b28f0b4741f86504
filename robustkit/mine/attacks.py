"""MINE-based adversarial examples: the MinMax attack (the penalty baseline, re-exported
here, is in :mod:`robustkit.mine.penalty`).

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022; the problem both solve is stated in
:mod:`robustkit.mine.base`.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = rk.models.small_cnn((8, 8, 1), width=4)
>>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
>>> atk = rk.mine.MinMax(eps=0.3, steps=3, hidden=8)
>>> x_adv = atk(model, x, np.array([0, 1]))
>>> bool(np.abs(x_adv - x).max() <= 0.3 + 1e-6)
True
"""

import keras
import tensorflow as tf

from robustkit._validation import check_choice, check_int, check_non_negative, check_positive
from robustkit.attacks import engine
from robustkit.mine import release
from robustkit.mine.base import MINEAttack
from robustkit.mine.optim import adam
from robustkit.mine.penalty import PenaltyMINE


# -------------------------------------------------------------------------- MinMax
@keras.saving.register_keras_serializable(package="robustkit")
class MinMax(MINEAttack):
    """MinMax attack with per-sample MINE (Hsu et al., AAAI 2022, Algorithm 1).

    Primal descent on delta, dual ascent on the penalty ``c``, one statistics
    network update per step, all examples of a batch at once in one
    ``tf.function`` (each with its own statistics network)::

        delta <- delta - alpha * (c * grad f(x + delta) - s * grad I(x, x + delta))
        delta <- clip(delta, -eps, eps);  x + delta <- clip(x + delta, 0, 1)
        theta <- Adam ascent step on the DV bound (lr ``mine_lr``)
        c <- max(0, (1 - beta * t^(-1/4)) * c + beta * f(x + delta))

    with ``s = +1`` (supervised: keep the successful delta with the *largest* MI)
    or ``s = -1`` (unsupervised: keep the ``f = 0`` example with the *lowest*
    MI). If no iterate succeeds the one with the smallest ``f`` is returned. The clip
    is :meth:`robustkit.threat.Linf.project`.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.mine.MinMax(eps=0.3, steps=100, criterion="unsupervised")
    >>> atk.c0, atk.alpha, atk.beta
    (0.0, 0.01, 0.1)

    Args:
        eps: L-inf radius (default 0.3, MNIST).
        steps: iterations T (default 100; the paper's code runs up to 10,000 one
            example at a time).
        alpha: step size of the plain gradient step on delta (0.01).
        beta: dual step size (0.1).
        c0: initial penalty. The paper's Algorithm 1 starts at 0 (default); the
            released code at 1e-3 (pass ``c0=1e-3``).
        kappa: CW confidence margin (0).
        criterion: ``"supervised"`` (CW margin on logits), ``"unsupervised"``
            (autoencoder reconstruction; ``model`` is the autoencoder) or a
            function ``(x, output_adv, y, output_clean) -> (f, success)``.
        targeted: supervised only; ``y`` are then target classes.
        random_start: the paper starts at delta = 0 (default ``False``); the code
            draws U(-eps, eps) (``True``).
        mine_lr: Adam learning rate of the statistics network; the paper's 1.5e-5
            is the default. With ~100 steps a larger rate (1e-4) trains it more.
        mine_layer, mine_mode, filters, hidden, out: per-sample MINE settings
            (see :class:`robustkit.mine.PerSampleMINE`; paper widths
            16 / 512 / 10); ``projections``, ``dim``: the projection fallback
            (500 x 128) used where the model has no convolution (e.g. a reloaded
            SavedModel or a dense autoencoder). Memory per example is about ``3 * 2 * (H-1)(W-1) *
            filters * hidden`` floats (~120 MB for 26x26 maps and hidden 512).
        maximize_mi: override the MI direction (default: from the criterion).
        critic_steps: statistics-network updates per iteration (default 1; the
            released unsupervised attack uses 20); the first uses the gradient at the
            iterate, the others run at the new iterate.
        dual: ``"current"`` (default: the step at iteration t uses ``c`` already updated
            with ``f`` of the current iterate) or ``"lagged"`` (the release: the step uses
            ``c_t``, then ``c_{t+1} = max(0, (1 - beta t^(-1/4)) c_t + beta f(x + delta_t))``).
        marginal: the MI the attack optimises and ranks by: ``"auto"`` (all-pairs,
            bounded by log K) or ``"release"`` (one fresh permutation per evaluation,
            as the released code; see :class:`robustkit.mine.PerSampleMINE`).
        box: ``"project"`` (default: ``x + delta`` is projected into [0, 1]) or
            ``"clip"`` (the release: only ``|delta| <= eps`` is enforced and the model
            sees ``clip(x + delta, 0, 1)``; pixels outside the box get no gradient).
        min_mi: an iterate counts as a success only if its MI exceeds this (the
            released unsupervised attack keeps ``f = 0`` and MI > 0: ``min_mi=0``).
        loop: ``"auto"`` (the engine's policy,
            :data:`robustkit.attacks.engine.UNROLL_LIMITS`: a ``tf.while_loop`` unless
            there is a single step), ``"unrolled"`` or ``"while"``.
        batch_size: examples attacked together (default 32).

    ``attack(model, x, y)`` returns ``x_adv``; :meth:`run` also returns the MI
    (robustkit's bounded estimate and the release's statistic), the success flag and
    the criterion value per example. :meth:`release` builds the released
    configuration (:mod:`robustkit.mine.release`).
    """

    def __init__(
        self,
        eps=0.3,
        steps=100,
        alpha=0.01,
        beta=0.1,
        c0=0.0,
        kappa=0.0,
        criterion="supervised",
        targeted=False,
        random_start=False,
        mine_lr=1.5e-5,
        mine_layer=None,
        mine_mode="auto",
        filters=16,
        hidden=512,
        out=10,
        maximize_mi=None,
        loop="auto",
        batch_size=32,
        jit_compile="auto",
        seed=None,
        projections=500,
        dim=128,
        critic_steps=1,
        dual="current",
        marginal="auto",
        box="project",
        min_mi=None,
    ):
        super().__init__(
            eps,
            steps,
            alpha,
            kappa,
            criterion,
            targeted,
            random_start,
            mine_lr,
            mine_layer,
            mine_mode,
            filters,
            hidden,
            out,
            maximize_mi,
            loop,
            batch_size,
            jit_compile,
            seed,
            projections,
            dim,
            marginal=marginal,
            box=box,
            min_mi=min_mi,
        )
        self.beta = check_positive(beta, "beta")
        self.c0 = check_non_negative(c0, "c0")
        self.critic_steps = check_int(critic_steps, "critic_steps")
        self.dual = check_choice(dual, {"current", "lagged"}, "dual")

    @classmethod
    def release(cls, **overrides):
        """The released code's MinMax (:data:`robustkit.mine.release.MINMAX`; with
        ``criterion="unsupervised"`` the released unsupervised attack,
        :data:`~robustkit.mine.release.UNSUPERVISED`), with ``overrides`` on top.

        >>> atk = MinMax.release()
        >>> atk.eps, atk.steps, atk.mine_lr, atk.hidden, atk.marginal, atk.dual
        (1.0, 1000, 1.5e-05, 512, 'release', 'lagged')
        """
        return cls(**release.settings("minmax", overrides, cls))

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta, c0=self.c0, critic_steps=self.critic_steps, dual=self.dual)
        return config

    def _search(self, model_fn, x, y):
        parts = (model_fn, self.criterion_fn(), *self._setup(model_fn, x))

        def body(t, state):
            return self._step(parts, x, y, t, state)

        state = self._run(body, self._initial_state(parts, x), self.steps)
        return self._finish(parts, x, y, state)

    def _initial_state(self, parts, x):
        """``(delta, c, params, opt, kept)`` before the first iteration."""
        _, crit, est, _, _, critic, _ = parts
        params, opt = est.init_state(critic, tf.shape(x)[0])
        c = tf.fill([tf.shape(x)[0]], tf.constant(self.c0, tf.float32))
        return self._start(x), c, params, opt, self._keep_init(x, self._maximize(crit))

    def _step(self, parts, x, y, t, state):
        """One iteration ``t`` (a float tensor, from 1) of Algorithm 1 on the whole batch."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        maximize = self._maximize(crit)
        sign = 1.0 if maximize else -1.0
        delta, c, params, opt, kept = state
        ev = self._evaluate(model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta)
        kept = self._keep(kept, ev, maximize)
        if self.dual == "lagged":
            # the release: this step uses c_t; c_{t+1} takes f at this iterate
            c_step = c
            gamma = tf.pow(t, -0.25)
            c = tf.maximum(0.0, (1.0 - self.beta * gamma) * c + self.beta * ev.f)
        else:
            # dual ascent with f at the current iterate (Algorithm 1's update after
            # the previous primal step); the first primal step uses c0.
            gamma = tf.pow(tf.maximum(t - 1.0, 1.0), -0.25)
            c_new = tf.maximum(0.0, (1.0 - self.beta * gamma) * c + self.beta * ev.f)
            c = c_step = tf.where(t > 1.0, c_new, c)
        shape = engine.per_example_shape(x)
        delta = delta - self.alpha * (tf.reshape(c_step, shape) * ev.grad_f - sign * ev.grad_i)
        delta = self._project(x, delta)
        params, opt = adam(params, ev.grad_p, opt, self.mine_lr)
        if self.critic_steps > 1:
            fb = feat(self._image(x, delta))

            def train(s):
                return est.train_step(critic, *s, fa, fb, lr=self.mine_lr)[:2]

            params, opt = self._repeat(train, (params, opt), self.critic_steps - 1)
        return delta, c, params, opt, kept

    def _finish(self, parts, x, y, state):
        """Scores the last iterate and returns the kept outputs (see :data:`OUTPUTS`)."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        delta, _, params, _, kept = state
        ev = self._evaluate(model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta)
        return self._outputs(self._keep(kept, ev, self._maximize(crit)))


__all__ = ["MinMax", "PenaltyMINE"]  # PenaltyMINE: re-exported from .penalty
