"""MINE-based adversarial examples: the MinMax attack and the penalty baseline.

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

from robustkit._validation import check_int, check_non_negative, check_positive
from robustkit.attacks import engine
from robustkit.mine.base import MINEAttack
from robustkit.mine.optim import adam


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
        loop: ``"auto"`` (the engine's policy,
            :data:`robustkit.attacks.engine.UNROLL_LIMITS`: a ``tf.while_loop`` unless
            there is a single step), ``"unrolled"`` or ``"while"``.
        batch_size: examples attacked together (default 32).

    ``attack(model, x, y)`` returns ``x_adv``; :meth:`run` also returns the MI,
    the success flag and the criterion value per example.
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
        )
        self.beta = check_positive(beta, "beta")
        self.c0 = check_non_negative(c0, "c0")

    def get_config(self):
        config = super().get_config()
        config.update(beta=self.beta, c0=self.c0)
        return config

    def _search(self, model_fn, x, y):
        parts = (model_fn, self.criterion_fn(), *self._setup(model_fn, x))

        def body(t, state):
            return self._step(parts, x, y, t, state)

        state = self._run(body, self._initial_state(parts, x), self.steps)
        return self._finish(parts, x, y, state)

    def _initial_state(self, parts, x):
        """``(delta, c, params, opt, best)`` before the first iteration."""
        _, crit, est, _, _, critic, _ = parts
        params, opt = est.init_state(critic, tf.shape(x)[0])
        c = tf.fill([tf.shape(x)[0]], tf.constant(self.c0, tf.float32))
        best = self.tracker(self._maximize(crit)).init(x)
        return self._start(x), c, params, opt, best

    def _step(self, parts, x, y, t, state):
        """One iteration ``t`` (a float tensor, from 1) of Algorithm 1 on the whole batch."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        maximize = self._maximize(crit)
        sign = 1.0 if maximize else -1.0
        delta, c, params, opt, best = state
        f, ok, mi, g_f, g_i, g_p = self._evaluate(
            model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
        )
        best = self.tracker(maximize).update(best, x + delta, ok, mi, f)
        # dual ascent with f at the current iterate (Algorithm 1's update after
        # the previous primal step); the first primal step uses c0.
        gamma = tf.pow(tf.maximum(t - 1.0, 1.0), -0.25)
        c_new = tf.maximum(0.0, (1.0 - self.beta * gamma) * c + self.beta * f)
        c = tf.where(t > 1.0, c_new, c)
        shape = engine.per_example_shape(x)
        delta = delta - self.alpha * (tf.reshape(c, shape) * g_f - sign * g_i)
        delta = self._project(x, delta)
        params, opt = adam(params, g_p, opt, self.mine_lr)
        return delta, c, params, opt, best

    def _finish(self, parts, x, y, state):
        """Scores the last iterate and returns the kept ``(x_adv, mi, success, f)``."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        delta, _, params, _, best = state
        f, ok, mi, _, _, _ = self._evaluate(
            model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
        )
        tracker = self.tracker(self._maximize(crit))
        best = tracker.update(best, x + delta, ok, mi, f)
        return tracker.result(best), best.score, best.ok, best.fallback


# --------------------------------------------------------------------- PenaltyMINE
@keras.saving.register_keras_serializable(package="robustkit")
class PenaltyMINE(MINEAttack):
    """Penalty-based MINE attack with a CW-style binary search over ``c``.

    The baseline of Hsu et al. (AAAI 2022): for a fixed ``c`` per round, plain
    gradient descent on ``c * f(x + delta) - s * I(x, x + delta)`` (s = +1
    supervised, -1 unsupervised) with a fresh statistics network and a fresh
    start; after each round ``c`` is halved towards the last success or
    multiplied by 10 (bisected once an upper bound is known), as in Carlini &
    Wagner. The best successful example over all rounds is kept (largest MI,
    or lowest for unsupervised).

    Example:

    >>> import robustkit as rk
    >>> atk = rk.mine.PenaltyMINE(eps=0.3, steps=50)
    >>> atk.rounds, atk.c0
    (9, 0.001)

    Args:
        eps: L-inf radius (0.3).
        steps: gradient steps per round (default 50).
        rounds: binary-search rounds (9).
        alpha: step size (0.01).
        c0: initial ``c`` (1e-3, the code's value).
        critic_steps: statistics-network updates per attack step (default 1, as
            MinMax; the released code uses 20).
        others: as :class:`MinMax`.
    """

    def __init__(
        self,
        eps=0.3,
        steps=50,
        rounds=9,
        alpha=0.01,
        c0=1e-3,
        kappa=0.0,
        criterion="supervised",
        targeted=False,
        random_start=False,
        critic_steps=1,
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
        )
        self.rounds = check_int(rounds, "rounds")
        self.c0 = check_positive(c0, "c0")
        self.critic_steps = check_int(critic_steps, "critic_steps")

    def get_config(self):
        config = super().get_config()
        config.update(rounds=self.rounds, c0=self.c0, critic_steps=self.critic_steps)
        return config

    def _search(self, model_fn, x, y):
        crit = self.criterion_fn()
        maximize = self._maximize(crit)
        tracker = self.tracker(maximize)
        sign = 1.0 if maximize else -1.0
        est, feat, fa, critic, clean = self._setup(model_fn, x)
        b = tf.shape(x)[0]
        shape = engine.per_example_shape(x)

        def evaluate(params, delta):
            return self._evaluate(model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta)

        def attempt(_, search):
            """One round at fixed ``c`` from a fresh start and a fresh statistics network."""
            best, c, lower, upper = search
            params, opt = est.init_state(critic, b)

            def body(t, state):
                delta, params, opt, best, round_ok = state
                f, ok, mi, g_f, g_i, g_p = evaluate(params, delta)
                best = tracker.update(best, x + delta, ok, mi, f)
                round_ok = tf.logical_or(round_ok, ok)
                delta = self._project(
                    x, delta - self.alpha * (tf.reshape(c, shape) * g_f - sign * g_i)
                )
                params, opt = adam(params, g_p, opt, self.mine_lr)
                for _ in range(self.critic_steps - 1):
                    params, opt, _ = est.train_step(
                        critic, params, opt, fa, feat(x + delta), lr=self.mine_lr
                    )
                return delta, params, opt, best, round_ok

            state = (self._start(x), params, opt, best, tf.zeros([b], tf.bool))
            delta, params, _, best, round_ok = self._run(body, state, self.steps)
            f, ok, mi, _, _, _ = evaluate(params, delta)
            best = tracker.update(best, x + delta, ok, mi, f)
            round_ok = tf.logical_or(round_ok, ok)
            # CW binary search on c
            upper = tf.where(round_ok, tf.minimum(upper, c), upper)
            lower = tf.where(round_ok, lower, tf.maximum(lower, c))
            known = upper < 1e9
            c = tf.where(known, (lower + upper) / 2.0, c * 10.0)
            return best, c, lower, upper

        search = (
            tracker.init(x),
            tf.fill([b], tf.constant(self.c0, tf.float32)),
            tf.zeros([b]),
            tf.fill([b], tf.constant(1e10, tf.float32)),
        )
        best, _, _, _ = engine.run_restarts(attempt, search, self.rounds)
        return tracker.result(best), best.score, best.ok, best.fallback


__all__ = ["MinMax", "PenaltyMINE"]
