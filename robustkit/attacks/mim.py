"""Momentum iterative FGSM (MIM, Dong et al. 2018); TI-DIM builds on it (:mod:`.tidim`).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.MIM(eps=0.1, steps=5)(model, x, y)
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True
"""

import keras
import tensorflow as tf

from robustkit import losses
from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_non_negative, check_positive
from robustkit.attacks import engine
from robustkit.attacks.base import Attack, loss_and_grad
from robustkit.attacks.pgd import check_start

__all__ = ["MIM"]


@keras.saving.register_keras_serializable(package="robustkit")
class MIM(Attack):
    """Momentum iterative fast gradient sign method.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.MIM(eps=0.3, steps=10)
    >>> round(atk.step_size, 6), atk.decay, atk.label
    (0.03, 1.0, 'MIM-10')

    ``g_{t+1} = decay * g_t + grad / ||grad||_1``, then a steepest-ascent step of
    the threat model along ``g_{t+1}`` (``sign`` under L-inf, ``g / ||g||_2``
    under L2) and a projection onto the eps-ball and the box ``bounds``.
    Reference: Y. Dong, F. Liao, T. Pang, H. Su, J. Zhu, X. Hu, J. Li, "Boosting
    Adversarial Attacks with Momentum", CVPR 2018 (https://arxiv.org/abs/1710.06081).

    Args:
        eps: radius (default 8/255).
        steps: iterations (default 10, the paper's).
        step_size: step per iteration; ``None`` means ``eps / steps`` (the paper's).
        decay: momentum decay ``mu`` (default 1.0, the paper's).
        norm: ``"linf"`` (default) or ``"l2"``.
        loop: ``"unrolled"``, ``"while"`` or ``"auto"`` (default): the engine's policy
            (:data:`robustkit.attacks.engine.UNROLL_LIMITS`: unrolled for training attacks
            of up to 10 steps, a ``tf.while_loop`` for evaluation attacks of more than one).
        random_start: ``False``/``"none"`` (default: from ``x``, the paper's),
            ``True``/``"uniform"`` (uniform in the ball) or ``"normal"``
            (``x + 0.001 N(0, 1)``).
        restarts: independent runs; the best point per example is kept (with
            ``random_start="none"`` MIM repeats the same run, TI-DIM draws new diverse
            inputs).
        early_stop: stop working on examples once they are misclassified (for
            evaluation; the batch is compacted, and the loop ends once all are
            fooled; with ``jit_compile`` a fooled example is frozen by a mask instead).
        loss: the loss to ascend, ``"ce"`` (default), ``"margin"``, ``"kl"`` or ``"dlr"``
            (see :mod:`robustkit.losses`).
        bounds: the valid input box (default ``(0, 1)``); ``eps`` is in its units.
        keep: what evaluation calls return: ``"best"`` (default, see below) or ``"last"``,
            the last iterate of a single run (what the NAMID evaluation's TI-DIM returns;
            ``restarts`` and ``early_stop`` do not apply).
        batch_size, jit_compile, seed: see :class:`~robustkit.attacks.Attack`.

    The L1 normalisation of the gradient is per example (cleverhans 4.0 does the
    same). Evaluation calls return, per example, the most adversarial iterate
    over all steps and restarts (``engine.Tracker.fooled_then_loss``): a
    misclassified one if any (highest loss among those), else the highest-loss
    one; the clean input is a candidate.

    MIM implements the training protocol (``trainable``): ``perturb(fn, x, y, eps=...,
    loss=..., random_start=..., track_best=False)`` returns the last iterate.
    """

    supported_norms = ("linf", "l2")
    trainable = True

    def __init__(
        self,
        eps=8 / 255,
        steps=10,
        step_size=None,
        decay=1.0,
        norm="linf",
        loop="auto",
        random_start=False,
        restarts=1,
        early_stop=False,
        loss="ce",
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
        keep="best",
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.keep = check_choice(keep, {"best", "last"}, "keep")
        self.threat = self._make_threat(norm, eps, bounds)
        self.eps = self.threat.eps
        self.norm = self.threat.norm
        self.steps = check_int(steps, "steps")
        self.step_size = (
            self.eps / self.steps if step_size is None else check_positive(step_size, "step_size")
        )
        self.decay = check_non_negative(decay, "decay")
        self.loop = engine.check_loop(loop)
        self.random_start = check_start(random_start)
        self.restarts = check_int(restarts, "restarts")
        self.early_stop = bool(early_stop)
        self.loss = losses.check_loss(loss)
        #: steps per while-loop iteration (unrolled inside it) for evaluation attacks
        self.chunk = engine.WHILE_CHUNK

    @property
    def label(self):
        return f"MIM-{self.steps}"

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            decay=self.decay,
            norm=self.norm,
            loop=self.loop,
            random_start=self.random_start,
            restarts=self.restarts,
            early_stop=self.early_stop,
            loss=self.loss,
        )
        if self.keep != "best":
            config["keep"] = self.keep
        if self.threat.bounds != (0.0, 1.0):
            config["bounds"] = list(self.threat.bounds)
        return config

    # ------------------------------------------------------------ hooks
    def _gradient(self, model_fn, x_adv, y, loss, clean_logits):
        """Logits at ``x_adv``, per-example loss and the gradient to accumulate."""
        return loss_and_grad(model_fn, x_adv, y, loss, clean_logits)

    def _needs_separate_eval(self):
        """Whether success is judged by another forward pass at the iterate itself."""
        return False

    # ------------------------------------------------------------- core
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y, eps=None, loss=None, random_start=None, track_best=True):
        """Graph-safe MIM.

        ``eps`` overrides the radius (scalar tensor such as a warm-up ``keras.Variable``,
        or one radius per example); the step size scales with it. ``loss`` and
        ``random_start`` override the constructor's. With ``track_best=False``
        (training) the last iterate of a single run is returned and nothing else is
        computed.
        """
        eps = self.eps if eps is None else eps
        loss = self.loss if loss is None else losses.check_loss(loss)
        start = self.random_start if random_start is None else check_start(random_start)
        y = tf.cast(y, tf.int64)
        clean = tf.stop_gradient(model_fn(x)) if loss == "kl" else None
        args = (model_fn, x, y, eps, loss, start, clean)
        if not track_best or self.keep == "last":
            x_adv = self._plain(*args)
        elif self.early_stop and not self._xla():
            x_adv = self._compacting(*args)
        else:
            x_adv = self._tracking(*args)
        return tf.stop_gradient(x_adv)

    # ---------------------------------------------------------------- helpers
    def _start(self, x, eps, start, restart):
        seed = engine.sub_seed(self.seed, restart)
        return self.threat.random_start(x, eps, kind=start, seed=seed)

    def _advance(self, x_adv, x, g, grad, eps):
        """Momentum update and one projected step: returns ``(x_next, g_next)``."""
        l1 = threat_lib.norm_of(grad, "l1")
        g = self.decay * g + grad / tf.maximum(tf.reshape(l1, engine.per_example_shape(x)), 1e-12)
        step = tf.convert_to_tensor(eps, tf.float32) * (self.step_size / self.eps)
        return self.threat.project(self.threat.step(x_adv, g, step), x, eps), g

    def _evaluate(self, model_fn, x, y, loss, clean, logits=None):
        """Fooled flags and loss at ``x`` (``logits``: already computed at ``x``)."""
        logits = model_fn(x) if logits is None else logits
        return tf.not_equal(tf.argmax(logits, -1), y), losses.attack_loss(loss, logits, y, clean)

    def _judge(self, model_fn, x_adv, y, loss, clean, logits, value):
        """Fooled flags and loss of the iterate, from its gradient pass where it can be."""
        if self._needs_separate_eval():
            return self._evaluate(model_fn, x_adv, y, loss, clean)
        return tf.not_equal(tf.argmax(logits, -1), y), value

    def _init_best(self, tracker, model_fn, x, y, loss, start, clean):
        """The clean input as the first candidate (from ``x``, step 0 evaluates it anyway)."""
        if start == "none":
            return tracker.init(x)
        return tracker.init(x, *self._evaluate(model_fn, x, y, loss, clean, logits=clean))

    def _plain(self, model_fn, x, y, eps, loss, start, clean):
        def body(k, state):
            x_adv, g = state
            _, _, grad = self._gradient(model_fn, x_adv, y, loss, clean)
            return self._advance(x_adv, x, g, grad, eps)

        x0 = self._start(x, eps, start, 0)
        unrolled = engine.unrolled(self.loop, self.steps, "train")
        x_adv, _ = engine.run_loop(body, (x0, tf.zeros_like(x)), self.steps, unrolled=unrolled)
        return x_adv

    def _tracking(self, model_fn, x, y, eps, loss, start, clean):
        """Full-batch loop keeping the most adversarial point per example."""
        # With XLA, early stop uses masks: a fooled example's iterate and best are frozen.
        freeze = self.early_stop
        tracker = engine.Tracker.fooled_then_loss(freeze=freeze)
        shape = engine.per_example_shape(x)
        unrolled = engine.unrolled(self.loop, self.steps, "eval")

        def attempt(restart, best):
            def body(k, state):
                x_adv, g, best = state
                logits, value, grad = self._gradient(model_fn, x_adv, y, loss, clean)
                fooled, value = self._judge(model_fn, x_adv, y, loss, clean, logits, value)
                best = tracker.update(best, x_adv, fooled, value)
                x_next, g = self._advance(x_adv, x, g, grad, eps)
                if freeze:
                    x_next = tf.where(tf.reshape(best.ok, shape), x_adv, x_next)
                return x_next, g, best

            x0 = self._start(x, eps, start, restart)
            x_adv, _, best = engine.run_loop(
                body, (x0, tf.zeros_like(x), best), self.steps, unrolled=unrolled, chunk=self.chunk
            )
            return tracker.update(best, x_adv, *self._evaluate(model_fn, x_adv, y, loss, clean))

        best = self._init_best(tracker, model_fn, x, y, loss, start, clean)
        return engine.run_restarts(attempt, best, self.restarts).x

    def _compacting(self, model_fn, x, y, eps, loss, start, clean):
        """Early stop: examples leave the batch as soon as they are misclassified."""
        tracker = engine.Tracker.fooled_then_loss()
        batch = tf.shape(x)[0]
        # The radius, clean logits and momentum travel with the active examples;
        # a (B, 0) placeholder stands in for the clean logits when not needed.
        eps_all = tf.broadcast_to(tf.cast(eps, tf.float32), [batch])
        use_clean = clean is not None
        clean_all = clean if use_clean else tf.zeros([batch, 0])
        unrolled = self.loop == "unrolled"  # "auto": a while loop that ends when all are fooled

        def step(k, active, best):
            idx, x_a, g_a, x0, y_a, eps_a, clean_a = active
            clean_a = clean_a if use_clean else None
            logits, value, grad = self._gradient(model_fn, x_a, y_a, loss, clean_a)
            fooled, value = self._judge(model_fn, x_a, y_a, loss, clean_a, logits, value)
            best = tracker.update_rows(best, idx, x_a, fooled, value)
            x_next, g_a = self._advance(x_a, x0, g_a, grad, eps_a)
            active = (idx, x_next, g_a, x0, y_a, eps_a, active[6])
            return active, tf.logical_not(fooled), best

        def attempt(restart, best):
            idx = tf.where(tf.logical_not(best.ok))[:, 0]
            x0, y_a, eps_a, clean_a = engine.gather((x, y, eps_all, clean_all), idx)
            x_a = self._start(x0, eps_a, start, restart)
            active = (idx, x_a, tf.zeros_like(x_a), x0, y_a, eps_a, clean_a)
            active, best = engine.run_active(
                step, active, best, self.steps, unrolled=unrolled, chunk=self.chunk
            )
            idx, x_a, _, _, y_a, _, clean_a = active

            def final():
                fooled, value = self._evaluate(
                    model_fn, x_a, y_a, loss, clean_a if use_clean else None
                )
                return tracker.update_rows(best, idx, x_a, fooled, value)

            # the model must not see an empty batch (oneDNN convolutions reject it)
            return tf.cond(tf.size(idx) > 0, final, lambda: best)

        best = self._init_best(tracker, model_fn, x, y, loss, start, clean)
        return engine.run_restarts(attempt, best, self.restarts).x
