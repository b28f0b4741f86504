"""The penalty-based MINE attack: the baseline MinMax is compared with (Hsu et al., AAAI 2022).

Example:

>>> import robustkit as rk
>>> atk = rk.mine.PenaltyMINE(eps=0.3, steps=20, rounds=3)
>>> atk.rounds, atk.critic_steps, atk.critic_moves_delta
(3, 1, False)
"""

import keras
import tensorflow as tf

from robustkit._validation import check_int, check_positive
from robustkit.attacks import engine
from robustkit.mine import release
from robustkit.mine.base import MINEAttack
from robustkit.mine.optim import adam
from robustkit.mine.optim import init_state as adam_state


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
        critic_moves_delta: the released code's critic steps are Adam steps on the
            statistics network *and* on delta (an extra MI ascent of delta, same
            learning rate, one Adam state per round); default False (they move only
            the network).
        marginal, box, min_mi: as :class:`MinMax`.
        others: as :class:`MinMax`.

    :meth:`release` builds the released configuration (:mod:`robustkit.mine.release`).
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
        critic_moves_delta=False,
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
        self.rounds = check_int(rounds, "rounds")
        self.c0 = check_positive(c0, "c0")
        self.critic_steps = check_int(critic_steps, "critic_steps")
        self.critic_moves_delta = bool(critic_moves_delta)
        if self.critic_moves_delta and self.criterion == "unsupervised":
            # the joint steps ascend the MI on delta: the supervised direction only
            raise ValueError(
                "`critic_moves_delta` needs criterion='supervised' (the released penalty "
                "baseline is supervised; its joint steps raise the MI on delta)."
            )

    @classmethod
    def release(cls, **overrides):
        """The released penalty baseline (:data:`robustkit.mine.release.PENALTY`) with
        ``overrides`` on top.

        >>> atk = PenaltyMINE.release()
        >>> atk.steps, atk.rounds, atk.critic_steps, atk.critic_moves_delta, atk.mine_lr
        (1000, 9, 20, True, 2e-05)
        """
        return cls(**release.settings("penalty", overrides, cls))

    def get_config(self):
        config = super().get_config()
        config.update(
            rounds=self.rounds,
            c0=self.c0,
            critic_steps=self.critic_steps,
            critic_moves_delta=self.critic_moves_delta,
        )
        return config

    def _search(self, model_fn, x, y):
        crit = self.criterion_fn()
        maximize = self._maximize(crit)
        sign = 1.0 if maximize else -1.0
        est, feat, fa, critic, clean = self._setup(model_fn, x)
        b = tf.shape(x)[0]
        shape = engine.per_example_shape(x)

        def evaluate(params, delta):
            return self._evaluate(model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta)

        def joint_step(params, opt, delta):
            """One Adam ascent step of the MI on the network and on delta (the release)."""
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch([params, delta])
                total = tf.reduce_sum(est.dv(critic, params, fa, feat(self._image(x, delta))))
            grads, g_delta = tape.gradient(total, [params, delta])
            new, opt = adam(
                {**params, "delta": delta}, {**grads, "delta": g_delta}, opt, self.mine_lr
            )
            delta = self._project(x, new.pop("delta"))
            return new, opt, delta

        def critic_updates(params, opt, grad_p, delta):
            if self.critic_moves_delta:
                return self._repeat(
                    lambda s: joint_step(*s), (params, opt, delta), self.critic_steps
                )
            params, opt = adam(params, grad_p, opt, self.mine_lr)
            if self.critic_steps > 1:
                fb = feat(self._image(x, delta))

                def train(s):
                    return est.train_step(critic, *s, fa, fb, lr=self.mine_lr)[:2]

                params, opt = self._repeat(train, (params, opt), self.critic_steps - 1)
            return params, opt, delta

        def attempt(_, search):
            """One round at fixed ``c`` from a fresh start and a fresh statistics network."""
            kept, c, lower, upper = search
            params, opt = est.init_state(critic, b)
            delta = self._start(x)
            if self.critic_moves_delta:  # one Adam state for the network and delta
                opt = adam_state({**params, "delta": delta})

            def body(t, state):
                delta, params, opt, kept, round_ok = state
                ev = evaluate(params, delta)
                kept = self._keep(kept, ev, maximize)
                round_ok = tf.logical_or(round_ok, ev.ok)
                delta = delta - self.alpha * (tf.reshape(c, shape) * ev.grad_f - sign * ev.grad_i)
                delta = self._project(x, delta)
                params, opt, delta = critic_updates(params, opt, ev.grad_p, delta)
                return delta, params, opt, kept, round_ok

            state = (delta, params, opt, kept, tf.zeros([b], tf.bool))
            delta, params, _, kept, round_ok = self._run(body, state, self.steps)
            ev = evaluate(params, delta)
            kept = self._keep(kept, ev, maximize)
            round_ok = tf.logical_or(round_ok, ev.ok)
            # CW binary search on c
            upper = tf.where(round_ok, tf.minimum(upper, c), upper)
            lower = tf.where(round_ok, lower, tf.maximum(lower, c))
            known = upper < 1e9
            c = tf.where(known, (lower + upper) / 2.0, c * 10.0)
            return kept, c, lower, upper

        search = (
            self._keep_init(x, maximize),
            tf.fill([b], tf.constant(self.c0, tf.float32)),
            tf.zeros([b]),
            tf.fill([b], tf.constant(1e10, tf.float32)),
        )
        # the rounds: a tf.while_loop too unless the steps are unrolled (one traced round)
        unrolled = engine.unrolled(self.loop, self.steps * self.rounds, "eval")
        kept, _, _, _ = engine.run_loop(attempt, search, self.rounds, unrolled=unrolled)
        return self._outputs(kept)


__all__ = ["PenaltyMINE"]
