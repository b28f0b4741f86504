"""MINE-based adversarial examples: the MinMax attack and the penalty baseline.

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022. An adversarial example is the point
of the L-inf box that is *most similar* to ``x`` -- similarity measured by the
per-sample mutual information ``I(x, x + delta)`` (:class:`PerSampleMINE`) --
among those that satisfy an attack criterion ``f(x + delta) <= 0``:

``max_delta I(x, x + delta)  s.t.  f(x + delta) <= 0,  |delta|_inf <= eps,  x + delta in [0, 1]``

For unsupervised models the MI sign flips: the UAE keeps the autoencoder's
reconstruction loss (``f = 0``) while being *dissimilar* to ``x``.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = rk.models.small_cnn((8, 8, 1), width=4)
>>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
>>> atk = rk.attacks.MinMax(eps=0.3, steps=3, hidden=8)
>>> x_adv = atk(model, x, np.array([0, 1]))
>>> bool(np.abs(x_adv - x).max() <= 0.3 + 1e-6)
True
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import (
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_non_negative,
    check_positive,
)
from robustkit.attacks.base import Attack, as_logits_fn, resolve_jit
from robustkit.estimators.per_sample import PerSampleMINE, _adam

_LOOPS = ("auto", "unrolled", "while")
MAX_UNROLLED_STEPS = 4


# ------------------------------------------------------------------------ criteria
def supervised_criterion(kappa=0.0, targeted=False):
    """CW margin criterion on logits; ``f <= 0`` (strictly: margin < 0) is success.

    Untargeted: ``f = max(0, Z_y - max_{j != y} Z_j + kappa)``; targeted (``y`` is
    the target): ``f = max(0, max_{j != t} Z_j - Z_t + kappa)``.

    >>> import numpy as np
    >>> f, ok = supervised_criterion()(None, np.array([[2.0, 1.0]], "float32"), np.array([0]), None)
    >>> float(f[0]), bool(ok[0])
    (1.0, False)
    """
    kappa = float(kappa)

    def criterion(x, logits, y, clean):
        logits = tf.cast(logits, tf.float32)
        onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1], dtype=tf.float32)
        real = tf.reduce_sum(onehot * logits, axis=-1)
        other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
        raw = (other - real if targeted else real - other) + kappa
        return tf.maximum(0.0, raw), raw < 0.0

    criterion.maximize_mi = True
    return criterion


def unsupervised_criterion():
    """Autoencoder reconstruction criterion ``max(0, |x - AE(x+d)|^2 - |x - AE(x)|^2)``
    (squared L2 summed over pixels); ``f = 0`` is success.

    >>> import numpy as np
    >>> x = np.zeros((1, 2, 2, 1), "float32")
    >>> f, ok = unsupervised_criterion()(x, x + 0.5, None, x + 0.1)
    >>> round(float(f[0]), 4), bool(ok[0])
    (0.96, False)
    """

    def criterion(x, recon_adv, y, recon_clean):
        x = tf.cast(x, tf.float32)
        axes = list(range(1, x.shape.rank))
        adv = tf.reduce_sum(tf.square(x - tf.cast(recon_adv, tf.float32)), axis=axes)
        clean = tf.reduce_sum(tf.square(x - tf.cast(recon_clean, tf.float32)), axis=axes)
        raw = adv - clean
        return tf.maximum(0.0, raw), raw <= 0.0

    criterion.maximize_mi = False
    return criterion


CRITERIA = ("supervised", "unsupervised")


# ----------------------------------------------------------------------- base class
class _MINEAttack(Attack):
    """Shared machinery: criterion, per-sample MINE, batched run with MI output."""

    def __init__(
        self,
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
        projections=500,
        dim=128,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.projections = check_int(projections, "projections", minimum=2)
        self.dim = check_int(dim, "dim")
        self.eps = check_positive(eps, "eps")
        self.steps = check_int(steps, "steps")
        self.alpha = check_positive(alpha, "alpha")
        self.kappa = check_non_negative(kappa, "kappa")
        if callable(criterion):
            self.criterion = criterion
        else:
            self.criterion = check_choice(criterion, set(CRITERIA), "criterion")
        self.targeted = bool(targeted)
        if self.targeted and self.criterion == "unsupervised":
            raise ValueError("`targeted` needs criterion='supervised'.")
        self.random_start = bool(random_start)
        self.mine_lr = check_positive(mine_lr, "mine_lr")
        self.mine_layer = mine_layer
        self.mine_mode = check_choice(mine_mode, {"auto", "conv", "projection"}, "mine_mode")
        self.filters = check_int(filters, "filters")
        self.hidden = check_int(hidden, "hidden")
        self.out = check_int(out, "out")
        if maximize_mi is not None and not isinstance(maximize_mi, bool):
            raise ValueError(f"`maximize_mi` must be None, True or False; got {maximize_mi!r}.")
        self.maximize_mi = maximize_mi
        self.loop = check_choice(loop, set(_LOOPS), "loop")
        self._estimators = {}
        self._full = {}

    @property
    def uses_labels(self):
        return self.criterion != "unsupervised"

    def criterion_fn(self):
        if callable(self.criterion):
            return self.criterion
        if self.criterion == "supervised":
            return supervised_criterion(self.kappa, self.targeted)
        return unsupervised_criterion()

    def _maximize(self, crit):
        if self.maximize_mi is not None:
            return self.maximize_mi
        return bool(getattr(crit, "maximize_mi", True))

    def estimator(self, model):
        """The :class:`PerSampleMINE` (features + statistics network) for ``model``."""
        key = id(model)
        entry = self._estimators.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        keras_model = model if isinstance(model, keras.layers.Layer) else None
        est = PerSampleMINE(
            keras_model,
            layer=self.mine_layer,
            mode=self.mine_mode,
            steps=1,
            lr=self.mine_lr,
            filters=self.filters,
            hidden=self.hidden,
            out=self.out,
            projections=self.projections,
            dim=self.dim,
            seed=0 if self.seed is None else self.seed,
        )
        self._estimators[key] = (model, est)
        return est

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            steps=self.steps,
            alpha=self.alpha,
            kappa=self.kappa,
            criterion=self.criterion if isinstance(self.criterion, str) else None,
            targeted=self.targeted,
            random_start=self.random_start,
            mine_lr=self.mine_lr,
            mine_layer=self.mine_layer if isinstance(self.mine_layer, (str, type(None))) else None,
            mine_mode=self.mine_mode,
            filters=self.filters,
            hidden=self.hidden,
            out=self.out,
            maximize_mi=self.maximize_mi,
            loop=self.loop,
            projections=self.projections,
            dim=self.dim,
        )
        if config["criterion"] is None:
            config["criterion"] = "supervised"
        return config

    def __getstate__(self):
        state = super().__getstate__()
        state["_estimators"] = {}
        state["_full"] = {}
        return state

    # ------------------------------------------------------------------ public
    def __call__(self, model, x, y=None):
        """Adversarial examples for ``x`` (same type and shape as ``x``)."""
        out = self.run(model, x, y)
        return out["x_adv"] if not tf.is_tensor(x) else tf.convert_to_tensor(out["x_adv"])

    def run(self, model, x, y=None):
        """Runs the attack and returns a dict of numpy arrays.

        ``x_adv``; ``mi`` (the online MINE value of the kept example, nats);
        ``success`` (the kept example satisfies the criterion); ``f`` (its
        criterion value). For ``criterion="unsupervised"`` ``model`` is the
        autoencoder and ``y`` is ignored.
        """
        fn = as_logits_fn(model)
        x_np = check_images(
            np.asarray(x, dtype=np.float32) if not tf.is_tensor(x) else x.numpy(), "x"
        )
        n = int(x_np.shape[0])
        x_t = tf.convert_to_tensor(x_np, tf.float32)
        if n == 0:
            empty = np.zeros([0], np.float32)
            return {"x_adv": x_np, "mi": empty, "success": empty.astype(bool), "f": empty}
        probe = fn(x_t[:1])
        if self.uses_labels:
            if probe.shape.rank != 2:
                raise ValueError(
                    f"`model` must return logits of shape (batch, classes); got {probe.shape}."
                )
            if y is None:
                if self.targeted:
                    raise ValueError("`y` (the target classes) is required when targeted=True.")
                y_t = self._predict_labels(fn, x_t)
            else:
                y_t = tf.cast(
                    tf.convert_to_tensor(
                        check_labels(
                            np.asarray(y) if not tf.is_tensor(y) else y,
                            n=n,
                            num_classes=int(probe.shape[-1]),
                            name="y",
                        )
                    ),
                    tf.int64,
                )
        else:
            if tuple(probe.shape[1:]) != tuple(x_t.shape[1:]):
                raise ValueError(
                    "criterion='unsupervised' needs an autoencoder whose output has the "
                    f"input's shape {tuple(x_t.shape[1:])}; got {tuple(probe.shape[1:])}."
                )
            y_t = tf.zeros([n], tf.int64)
        compiled = self._get_full(model, fn, x_t)
        parts = [
            compiled(x_t[s : s + self.batch_size], y_t[s : s + self.batch_size])
            for s in range(0, n, self.batch_size)
        ]
        out = {}
        for i, name in enumerate(("x_adv", "mi", "success", "f")):
            out[name] = np.concatenate([p[i].numpy() for p in parts])
        return out

    def perturb(self, model_fn, x, y):
        """Graph-safe core: ``x_adv`` for tensors ``x``, ``y``."""
        return self._search(model_fn, x, y)[0]

    # ---------------------------------------------------------------- helpers
    def _get_full(self, model, fn, x):
        key = (id(model), tuple(x.shape[1:]))
        entry = self._full.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        signature = [
            tf.TensorSpec([None, *x.shape[1:]], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ]

        def run(xb, yb):
            self.trace_count += 1
            return self._search(fn, xb, yb)

        compiled = tf.function(
            run, input_signature=signature, jit_compile=resolve_jit(self.jit_compile)
        )
        self._full[key] = (model, compiled)
        return compiled

    def _unrolled(self, steps):
        if self.loop == "auto":
            return steps * getattr(self, "rounds", 1) <= MAX_UNROLLED_STEPS
        return self.loop == "unrolled"

    def _loop(self, body, state, steps):
        """Runs ``body(t, state)`` for t = 1..steps (unrolled or tf.while_loop)."""
        if self._unrolled(steps):
            for t in range(1, steps + 1):
                state = body(tf.constant(float(t)), state)
            return state
        _, state = tf.while_loop(
            lambda t, s: t <= float(steps),
            lambda t, s: (t + 1.0, body(t, s)),
            (tf.constant(1.0), state),
        )
        return state

    def _setup(self, model_fn, x):
        """Feature function, statistics network and clean features/outputs."""
        model = getattr(model_fn, "__robustkit_model__", model_fn)
        est = self.estimator(model)
        feat = est.features(x.shape[1:])
        fa = tf.stop_gradient(feat(x))
        critic = est.critic(fa.shape[2:])
        clean = tf.stop_gradient(model_fn(x))
        return est, feat, fa, critic, clean

    def _start(self, x):
        if self.random_start:
            delta = tf.random.uniform(tf.shape(x), -self.eps, self.eps, seed=self.seed)
        else:
            delta = tf.zeros_like(x)
        return tf.clip_by_value(x + delta, 0.0, 1.0) - x

    def _evaluate(self, model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta):
        """f, success, MI and the gradients of f and I w.r.t. delta and of I w.r.t. theta."""
        x_adv = x + delta
        with tf.GradientTape(watch_accessed_variables=False) as tape_f:
            tape_f.watch(x_adv)
            f, ok = crit(x, model_fn(x_adv), y, clean)
            f_sum = tf.reduce_sum(f)
        with tf.GradientTape(watch_accessed_variables=False) as tape_i:
            tape_i.watch([x_adv, params])
            mi = est.dv(critic, params, fa, feat(x_adv))
            mi_sum = tf.reduce_sum(mi)
        grad_f = tape_f.gradient(f_sum, x_adv)
        grad_i, grad_p = tape_i.gradient(mi_sum, [x_adv, params])
        return f, ok, mi, grad_f, grad_i, grad_p

    def _project(self, x, delta):
        delta = tf.clip_by_value(delta, -self.eps, self.eps)
        return tf.clip_by_value(x + delta, 0.0, 1.0) - x

    @staticmethod
    def _better(ok, mi, f, best_ok, best_mi, best_f, maximize):
        mi_better = mi > best_mi if maximize else mi < best_mi
        return tf.logical_or(
            tf.logical_and(ok, tf.logical_or(tf.logical_not(best_ok), mi_better)),
            tf.logical_and(tf.logical_not(ok), tf.logical_and(tf.logical_not(best_ok), f < best_f)),
        )

    def _track(self, best, x_cur, ok, mi, f, maximize):
        bx, bmi, bok, bf = best
        better = self._better(ok, mi, f, bok, bmi, bf, maximize)
        mask = tf.reshape(better, [-1] + [1] * (x_cur.shape.rank - 1))
        return (
            tf.where(mask, x_cur, bx),
            tf.where(better, mi, bmi),
            tf.logical_or(bok, tf.logical_and(better, ok)),
            tf.where(better, f, bf),
        )

    @staticmethod
    def _init_best(x, maximize):
        b = tf.shape(x)[0]
        worst = -np.inf if maximize else np.inf
        return (
            x,
            tf.fill([b], tf.constant(worst, tf.float32)),
            tf.zeros([b], tf.bool),
            tf.fill([b], tf.constant(np.inf, tf.float32)),
        )


# -------------------------------------------------------------------------- MinMax
@keras.saving.register_keras_serializable(package="robustkit")
class MinMax(_MINEAttack):
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
    MI). If no iterate succeeds the one with the smallest ``f`` is returned.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.MinMax(eps=0.3, steps=100, criterion="unsupervised")
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
            (see :class:`robustkit.estimators.PerSampleMINE`; paper widths
            16 / 512 / 10); ``projections``, ``dim``: the projection fallback
            (500 x 128) used where the model has no convolution (e.g. a reloaded
            SavedModel or a dense autoencoder). Memory per example is about ``3 * 2 * (H-1)(W-1) *
            filters * hidden`` floats (~120 MB for 26x26 maps and hidden 512).
        maximize_mi: override the MI direction (default: from the criterion).
        loop: ``"auto"`` (unrolled up to 4 steps in total, else ``tf.while_loop``),
            ``"unrolled"`` or ``"while"``.
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

        state = self._loop(body, self._initial_state(parts, x), self.steps)
        return self._finish(parts, x, y, state)

    def _initial_state(self, parts, x):
        """``(delta, c, params, opt, best)`` before the first iteration."""
        _, crit, est, _, _, critic, _ = parts
        params, opt = est.init_state(critic, tf.shape(x)[0])
        c = tf.fill([tf.shape(x)[0]], tf.constant(self.c0, tf.float32))
        return self._start(x), c, params, opt, self._init_best(x, self._maximize(crit))

    def _step(self, parts, x, y, t, state):
        """One iteration ``t`` (a float tensor, from 1) of Algorithm 1 on the whole batch."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        maximize = self._maximize(crit)
        sign = 1.0 if maximize else -1.0
        delta, c, params, opt, best = state
        f, ok, mi, g_f, g_i, g_p = self._evaluate(
            model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
        )
        best = self._track(best, x + delta, ok, mi, f, maximize)
        # dual ascent with f at the current iterate (Algorithm 1's update after
        # the previous primal step); the first primal step uses c0.
        gamma = tf.pow(tf.maximum(t - 1.0, 1.0), -0.25)
        c_new = tf.maximum(0.0, (1.0 - self.beta * gamma) * c + self.beta * f)
        c = tf.where(t > 1.0, c_new, c)
        shape = [-1] + [1] * (x.shape.rank - 1)
        delta = delta - self.alpha * (tf.reshape(c, shape) * g_f - sign * g_i)
        delta = self._project(x, delta)
        params, opt = _adam(params, g_p, opt, self.mine_lr)
        return delta, c, params, opt, best

    def _finish(self, parts, x, y, state):
        """Scores the last iterate and returns the kept ``(x_adv, mi, success, f)``."""
        model_fn, crit, est, feat, fa, critic, clean = parts
        delta, _, params, _, best = state
        f, ok, mi, _, _, _ = self._evaluate(
            model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
        )
        bx, bmi, bok, bf = self._track(best, x + delta, ok, mi, f, self._maximize(crit))
        return tf.stop_gradient(bx), bmi, bok, bf


# --------------------------------------------------------------------- PenaltyMINE
@keras.saving.register_keras_serializable(package="robustkit")
class PenaltyMINE(_MINEAttack):
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
    >>> atk = rk.attacks.PenaltyMINE(eps=0.3, steps=50)
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
        sign = 1.0 if maximize else -1.0
        est, feat, fa, critic, clean = self._setup(model_fn, x)
        b = tf.shape(x)[0]
        shape = [-1] + [1] * (x.shape.rank - 1)
        best = self._init_best(x, maximize)
        c = tf.fill([b], tf.constant(self.c0, tf.float32))
        lower = tf.zeros([b])
        upper = tf.fill([b], tf.constant(1e10, tf.float32))

        for _ in range(self.rounds):
            params, opt = est.init_state(critic, b)
            delta = self._start(x)
            round_ok = tf.zeros([b], tf.bool)

            def body(t, state):
                delta, params, opt, best, round_ok = state
                f, ok, mi, g_f, g_i, g_p = self._evaluate(
                    model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
                )
                best = self._track(best, x + delta, ok, mi, f, maximize)
                round_ok = tf.logical_or(round_ok, ok)
                delta = self._project(
                    x, delta - self.alpha * (tf.reshape(c, shape) * g_f - sign * g_i)
                )
                params, opt = _adam(params, g_p, opt, self.mine_lr)
                for _ in range(self.critic_steps - 1):
                    params, opt, _ = est.train_step(
                        critic, params, opt, fa, feat(x + delta), lr=self.mine_lr
                    )
                return delta, params, opt, best, round_ok

            delta, params, opt, best, round_ok = self._loop(
                body, (delta, params, opt, best, round_ok), self.steps
            )
            f, ok, mi, _, _, _ = self._evaluate(
                model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta
            )
            best = self._track(best, x + delta, ok, mi, f, maximize)
            round_ok = tf.logical_or(round_ok, ok)
            # CW binary search on c
            upper = tf.where(round_ok, tf.minimum(upper, c), upper)
            lower = tf.where(round_ok, lower, tf.maximum(lower, c))
            known = upper < 1e9
            c = tf.where(known, (lower + upper) / 2.0, c * 10.0)
        bx, bmi, bok, bf = best
        return tf.stop_gradient(bx), bmi, bok, bf
