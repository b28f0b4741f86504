"""Projected gradient descent (Madry et al., 2018) and FGSM (Goodfellow et al., 2015).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.PGD(eps=0.1, steps=5)(model, x, y)
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True
"""

import keras
import tensorflow as tf

from robustkit import losses
from robustkit._validation import check_int, check_positive
from robustkit.attacks import engine
from robustkit.attacks.base import Attack, loss_and_grad

_STARTS = {True: "uniform", False: "none", "uniform": "uniform", "normal": "normal", "none": "none"}


def check_start(random_start):
    """The canonical start name for ``random_start`` (``True``/``False``/a name)."""
    if random_start not in _STARTS:
        raise ValueError(
            f"Unknown `random_start` {random_start!r}; expected True, False, "
            "'uniform', 'normal' or 'none'."
        )
    return _STARTS[random_start]


@keras.saving.register_keras_serializable(package="robustkit")
class PGD(Attack):
    """Projected gradient descent under an L-inf, L2 or L1 threat model.

    Args:
        eps: radius of the threat model (8/255 CIFAR L-inf, 0.3 MNIST L-inf,
            0.5 CIFAR L2, 2.0 MNIST L2, 12 CIFAR L1).
        step_size: step per iteration; ``None`` means ``eps / 4`` (the NAMID paper).
            Must be <= eps under L-inf.
        steps: gradient steps per restart.
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (the L1 step is sparse, see
            :class:`robustkit.threat.L1`).
        random_start: ``True``/``"uniform"`` (uniform in the ball), ``"normal"``
            (``x + 0.001 N(0, 1)``, the TRADES/MART code), ``False``/``"none"``.
        restarts: independent random restarts; the best point per example is kept.
        loss: ``"ce"``, ``"margin"`` (CW margin), ``"kl"`` (TRADES' KL to the
            clean prediction) or ``"dlr"`` (see :mod:`robustkit.losses`).
        early_stop: stop working on examples once they are misclassified (for
            evaluation; the batch is compacted so fooled examples cost nothing,
            and the loop ends once all are fooled). On 1,000 MNIST test images
            this makes PGD-40 ~5x faster on an undefended CNN
            (``benchmarks/pgd_speed.py``).
        loop: ``"unrolled"`` (a Python loop inside one ``tf.function``),
            ``"while"`` (``tf.while_loop``: the graph does not grow with ``steps``)
            or ``"auto"`` (default): the engine's policy
            (:data:`robustkit.attacks.engine.UNROLL_LIMITS`: unrolled for training
            attacks of up to 10 steps and for FGSM, a while loop otherwise).
        bounds: the valid input box (default ``(0, 1)``); ``eps`` is in its units.

    Evaluation calls (``attack(model, x, y)``) return, per example, the most
    adversarial point seen over all steps and restarts: a misclassified one if
    any (the highest loss among those), else the highest-loss one. The clean
    input counts as a candidate, so robust accuracy never exceeds clean accuracy.

    PGD implements the training protocol (``trainable``): ``perturb(fn, x, y, eps=...,
    loss=..., random_start=..., track_best=False)`` returns the last iterate.
    """

    supported_norms = ("linf", "l2", "l1")
    trainable = True

    def __init__(
        self,
        eps=8 / 255,
        step_size=None,
        steps=10,
        norm="linf",
        random_start=True,
        restarts=1,
        loss="ce",
        early_stop=False,
        loop="auto",
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat(norm, eps, bounds)
        self.eps = self.threat.eps
        self.norm = self.threat.norm
        self.steps = check_int(steps, "steps")
        self.step_size = (
            self.eps / 4 if step_size is None else check_positive(step_size, "step_size")
        )
        self._check_step(step_size)
        self.random_start = check_start(random_start)
        self.restarts = check_int(restarts, "restarts")
        self.loss = losses.check_loss(loss)
        self.early_stop = bool(early_stop)
        self.loop = engine.check_loop(loop)
        #: steps per while-loop iteration (unrolled inside it) for evaluation attacks
        self.chunk = engine.WHILE_CHUNK

    def _check_step(self, step_size):
        if self.norm == "linf" and self.step_size > self.eps * (1 + 1e-6):
            raise ValueError(
                f"`step_size` ({step_size}) must not exceed `eps` ({self.eps}) under L-inf."
            )

    @property
    def label(self):
        return f"PGD-{self.steps}"

    # ------------------------------------------------------------- interface
    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            step_size=self.step_size,
            steps=self.steps,
            norm=self.norm,
            random_start=self.random_start,
            restarts=self.restarts,
            loss=self.loss,
            early_stop=self.early_stop,
            loop=self.loop,
        )
        if self.threat.bounds != (0.0, 1.0):
            config["bounds"] = list(self.threat.bounds)
        return config

    # Plain graph code (Python loops are unrolled on purpose, tensor loops are explicit
    # tf.while_loop / tf.cond): autograph has nothing to convert, and skipping it means
    # tracing never re-reads this file's source.
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y, eps=None, loss=None, random_start=None, track_best=True):
        """Graph-safe PGD.

        ``eps`` overrides the radius (scalar tensor such as a warm-up
        ``keras.Variable``, or one radius per example); the step size scales with
        it. ``loss`` and ``random_start`` override the constructor's. With
        ``track_best=False`` (training) the final iterate of a single run is
        returned and nothing else is computed.
        """
        eps = self.eps if eps is None else eps
        loss = self.loss if loss is None else losses.check_loss(loss)
        start = self.random_start if random_start is None else check_start(random_start)
        ratio = self.step_size / self.eps
        y = tf.cast(y, tf.int64)
        clean_logits = tf.stop_gradient(model_fn(x)) if loss == "kl" else None
        if not track_best:
            x_adv = self._plain(model_fn, x, y, eps, ratio, loss, start, clean_logits)
        elif self.early_stop and not self._xla():
            x_adv = self._compacting(model_fn, x, y, eps, ratio, loss, start, clean_logits)
        else:
            x_adv = self._tracking(model_fn, x, y, eps, ratio, loss, start, clean_logits)
        return tf.stop_gradient(x_adv)

    # ---------------------------------------------------------------- helpers
    def _start(self, x, eps, start, restart):
        seed = engine.sub_seed(self.seed, restart)
        return self.threat.random_start(x, eps, kind=start, seed=seed)

    def _ascend(self, x_adv, x, grad, eps, ratio):
        step = tf.convert_to_tensor(eps, tf.float32) * ratio
        return self.threat.project(self.threat.step(x_adv, grad, step), x, eps)

    def _evaluate(self, model_fn, x, y, loss, clean_logits, logits=None):
        """Fooled flags and loss at ``x`` (``logits``: already computed at ``x``)."""
        logits = model_fn(x) if logits is None else logits
        return tf.not_equal(tf.argmax(logits, -1), y), losses.attack_loss(
            loss, logits, y, clean_logits
        )

    def _plain(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        def body(k, x_adv):
            _, _, grad = loss_and_grad(model_fn, x_adv, y, loss, clean_logits)
            return self._ascend(x_adv, x, grad, eps, ratio)

        unrolled = engine.unrolled(self.loop, self.steps, "train")
        return engine.run_loop(body, self._start(x, eps, start, 0), self.steps, unrolled=unrolled)

    def _tracking(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        """Full-batch loop keeping the most adversarial point per example."""
        # With XLA, early stop uses masks: a fooled example's iterate and best are frozen.
        freeze = self.early_stop
        tracker = engine.Tracker.fooled_then_loss(freeze=freeze)
        fooled0, loss0 = self._evaluate(model_fn, x, y, loss, clean_logits, logits=clean_logits)
        shape = engine.per_example_shape(x)
        unrolled = engine.unrolled(self.loop, self.steps, "eval")

        def attempt(restart, best):
            def body(k, state):
                x_adv, best = state
                logits, cur_loss, grad = loss_and_grad(model_fn, x_adv, y, loss, clean_logits)
                best = tracker.update(best, x_adv, tf.not_equal(tf.argmax(logits, -1), y), cur_loss)
                x_next = self._ascend(x_adv, x, grad, eps, ratio)
                if freeze:
                    x_next = tf.where(tf.reshape(best.ok, shape), x_adv, x_next)
                return x_next, best

            x_adv, best = engine.run_loop(
                body,
                (self._start(x, eps, start, restart), best),
                self.steps,
                unrolled=unrolled,
                chunk=self.chunk,
            )
            return tracker.update(
                best, x_adv, *self._evaluate(model_fn, x_adv, y, loss, clean_logits)
            )

        best = engine.run_restarts(attempt, tracker.init(x, fooled0, loss0), self.restarts)
        return best.x

    def _compacting(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        """Early stop: examples leave the batch as soon as they are misclassified."""
        tracker = engine.Tracker.fooled_then_loss()
        fooled0, loss0 = self._evaluate(model_fn, x, y, loss, clean_logits, logits=clean_logits)
        batch = tf.shape(x)[0]
        # Per-example radius and clean logits travel with the active examples;
        # a (B, 0) placeholder stands in for the clean logits when not needed.
        eps_all = tf.broadcast_to(tf.cast(eps, tf.float32), [batch])
        use_clean = clean_logits is not None
        clean_all = clean_logits if use_clean else tf.zeros([batch, 0])
        unrolled = self.loop == "unrolled"  # "auto": a while loop that ends when all are fooled

        def step(k, active, best):
            idx, x_a, x0, y_a, eps_a, clean_a = active
            logits, cur_loss, grad = loss_and_grad(
                model_fn, x_a, y_a, loss, clean_a if use_clean else None
            )
            fooled = tf.not_equal(tf.argmax(logits, -1), y_a)
            best = tracker.update_rows(best, idx, x_a, fooled, cur_loss)
            x_next = self._ascend(x_a, x0, grad, eps_a, ratio)
            return (idx, x_next, x0, y_a, eps_a, clean_a), tf.logical_not(fooled), best

        def attempt(restart, best):
            idx = tf.where(tf.logical_not(best.ok))[:, 0]
            x0, y_a, eps_a, clean_a = engine.gather((x, y, eps_all, clean_all), idx)
            x_a = self._start(x0, eps_a, start, restart)
            active, best = engine.run_active(
                step,
                (idx, x_a, x0, y_a, eps_a, clean_a),
                best,
                self.steps,
                unrolled=unrolled,
                chunk=self.chunk,
            )
            idx, x_a, _, y_a, _, clean_a = active

            def final():
                fooled, cur_loss = self._evaluate(
                    model_fn, x_a, y_a, loss, clean_a if use_clean else None
                )
                return tracker.update_rows(best, idx, x_a, fooled, cur_loss)

            # the model must not see an empty batch (oneDNN convolutions reject it)
            return tf.cond(tf.size(idx) > 0, final, lambda: best)

        best = engine.run_restarts(attempt, tracker.init(x, fooled0, loss0), self.restarts)
        return best.x


@keras.saving.register_keras_serializable(package="robustkit")
class FGSM(PGD):
    """Fast gradient sign method: one step of size ``eps`` (L-inf) or ``eps`` along
    the normalised gradient (L2), from ``x`` itself by default.

    "Fast adversarial training" (Wong, Rice & Kolter, ICLR 2020) is FGSM from a uniform
    random start with a step of 1.25 eps (the projection keeps the result in the ball):
    ``FGSM(eps, random_start=True, step_size=1.25 * eps)``.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.FGSM(eps=0.3)
    >>> atk.steps, atk.step_size
    (1, 0.3)
    >>> fast = rk.attacks.FGSM(eps=8 / 255, random_start=True, step_size=1.25 * 8 / 255)
    >>> round(fast.step_size / fast.eps, 2), fast.random_start
    (1.25, 'uniform')
    """

    def __init__(
        self,
        eps=8 / 255,
        norm="linf",
        loss="ce",
        random_start=False,
        step_size=None,
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(
            eps=eps,
            step_size=eps if step_size is None else step_size,
            steps=1,
            norm=norm,
            random_start=random_start,
            loss=loss,
            bounds=bounds,
            batch_size=batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )

    def _check_step(self, step_size):
        """FGSM may step past eps (fast AT's 1.25 eps): the projection keeps it in the ball."""

    @property
    def label(self):
        return "FGSM"

    def get_config(self):
        config = super().get_config()
        for key in ("steps", "restarts", "early_stop", "loop"):
            config.pop(key)
        if config["step_size"] == self.eps:
            config.pop("step_size")
        return config
