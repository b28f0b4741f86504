"""Auto-PGD (Croce & Hein, ICML 2020): APGD with the CE or DLR loss, and APGD-T; L1 as APGD-L1.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.APGD(eps=0.1, steps=10)(model, x, y)
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True
>>> x_l1 = rk.attacks.APGD(eps=2.0, norm="l1", steps=10)(model, x, y)
>>> bool(np.abs(x_l1 - x).reshape(4, -1).sum(1).max() <= 2.0 + 1e-4)
True

References: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness with an
ensemble of diverse parameter-free attacks", ICML 2020 (Section 3); "Mind the box: l1-APGD
for sparse adversarial attacks on image classifiers", ICML 2021 (APGD-L1).
"""

import keras
import tensorflow as tf

from robustkit import losses
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks import engine
from robustkit.attacks.apgd_schedule import (
    halving,
    l1_checkpoints,
    l1_sparsity_update,
    step_checkpoints,
)
from robustkit.attacks.base import Attack

_LOSSES = ("ce", "dlr")


@keras.saving.register_keras_serializable(package="robustkit")
class APGD(Attack):
    """Auto-PGD: PGD with momentum and an automatic step-size schedule.

    L-inf and L2: the step starts at ``2 * eps``; at the checkpoints of
    :func:`step_checkpoints` it is halved for an example when (1) the loss rose in at most
    ``rho = 0.75`` of the steps since the last checkpoint, or (2) the step was not halved at
    the last checkpoint and the best loss has not improved since (off at the first
    checkpoint); after halving the iterate restarts from the best point found. Updates use
    momentum ``alpha``: ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k)
    + (1 - alpha)(x_k - x_{k-1}))`` (plain step at k = 0).

    L1 (APGD-L1, "Mind the box"): the step starts at ``eps``, moves the coordinates with the
    largest gradients (the sparse step of :class:`robustkit.threat.L1`, 20 % of them at
    first), has no momentum and projects onto the L1 ball intersected with the box; every
    :func:`l1_checkpoints` step, :func:`l1_sparsity_update` adapts the sparsity and the step.

    Args:
        eps: radius (0.3 MNIST / 8/255 CIFAR under L-inf; 2.0 / 0.5 under L2; 10 / 12 L1).
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        steps: iterations per restart (100 in AutoAttack).
        restarts: random restarts; examples already misclassified are not restarted.
        loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR, needs >= 3 classes).
        rho: the fraction in condition (1), 0.75.
        alpha: momentum, 0.75.
        eot_iter: gradients averaged per step (Expectation over Transformation,
            for randomised models; 1 = off, 20 in AutoAttack ``version="rand"``).
        early_stop: an example leaves the batch once it is misclassified (its model
            evaluations are skipped; default). ``False`` attacks every example for all
            steps and keeps its highest-loss misclassified point.
        loop: ``"while"`` (one ``tf.while_loop``, default: the graph does not grow with
            ``steps``), ``"unrolled"`` or ``"auto"`` (the engine's policy).
        bounds: the valid input box (default ``(0, 1)``).

    The result per example is a misclassified point if one was found (the first, with
    ``early_stop``), else the highest-loss point; the clean input counts as a candidate, so
    robust accuracy never exceeds clean accuracy.
    """

    supported_norms = ("linf", "l2", "l1")
    targeted = False

    def __init__(
        self,
        eps=8 / 255,
        norm="linf",
        steps=100,
        restarts=1,
        loss="ce",
        rho=0.75,
        alpha=0.75,
        eot_iter=1,
        loop="while",
        early_stop=True,
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
        self.restarts = check_int(restarts, "restarts")
        self.loss = check_choice(loss, set(_LOSSES), "loss")
        self.rho = check_positive(rho, "rho")
        if self.rho > 1:
            raise ValueError(f"`rho` must be in (0, 1]; got {rho!r}.")
        self.alpha = check_positive(alpha, "alpha")
        if self.alpha > 1:
            raise ValueError(f"`alpha` must be in (0, 1]; got {alpha!r}.")
        self.eot_iter = check_int(eot_iter, "eot_iter")
        self.loop = engine.check_loop(loop)
        self.early_stop = bool(early_stop)
        self._tracker = engine.Tracker.fooled_then_loss()

    @property
    def label(self):
        return "APGD-CE" if self.loss == "ce" else "APGD-DLR"

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            restarts=self.restarts,
            loss=self.loss,
            rho=self.rho,
            alpha=self.alpha,
            eot_iter=self.eot_iter,
            loop=self.loop,
        )
        if not self.early_stop:
            config["early_stop"] = False
        if self.threat.bounds != (0.0, 1.0):
            config["bounds"] = list(self.threat.bounds)
        return config

    def _check_call(self, x, y, num_classes):
        need = 4 if self.targeted else (3 if self.loss == "dlr" else 2)
        if num_classes < need:
            raise ValueError(
                f"`model` has {num_classes} classes; {type(self).__name__} with loss "
                f"{self.loss!r} needs at least {need}."
            )

    # ------------------------------------------------------------------ core
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe APGD: returns ``x_adv`` for tensors ``x``, ``y``."""
        y = tf.cast(y, tf.int64)
        logits = model_fn(x)
        best = self._tracker.init(x, self._fooled(logits, y), self._loss(logits, y, None))
        best = engine.run_restarts(
            lambda r, b: self.attempt(model_fn, x, y, None, b, r), best, self.restarts
        )
        return tf.stop_gradient(best.x)

    @staticmethod
    def _fooled(logits, y):
        return tf.not_equal(tf.argmax(logits, -1), y)

    def _loss(self, logits, y, target):
        if target is not None:
            return losses.dlr_targeted(logits, y, target)
        return losses.cross_entropy(logits, y) if self.loss == "ce" else losses.dlr(logits, y)

    def _loss_grad(self, model_fn, x, y, target):
        """Mean logits, per-example loss and input gradient over ``eot_iter`` draws."""
        logits_sum = loss_sum = grad_sum = 0.0
        for _ in range(self.eot_iter):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                logits = model_fn(x)
                per_example = self._loss(logits, y, target)
                total = tf.reduce_sum(per_example)
            logits_sum += logits
            loss_sum += per_example
            grad_sum += tape.gradient(total, x)
        if self.eot_iter == 1:
            return logits_sum, loss_sum, grad_sum
        n = float(self.eot_iter)
        return logits_sum / n, loss_sum / n, grad_sum / n

    def _schedule(self):
        """(is-checkpoint flag per iteration count, window length ending there)."""
        marks = l1_checkpoints(self.steps) if self.norm == "l1" else step_checkpoints(self.steps)
        is_ckpt, gap = [False] * (self.steps + 1), [0.0] * (self.steps + 1)
        for prev, cur in zip(marks[:-1], marks[1:]):
            is_ckpt[cur], gap[cur] = True, float(cur - prev)
        return tf.constant(is_ckpt), tf.constant(gap)

    def attempt(self, model_fn, x, y, target, best, restart=0):
        """One APGD run (random start) on the examples not yet fooled in ``best``.

        ``best`` is the full batch's :class:`robustkit.attacks.engine.Best`; ``target``
        (or ``None``) selects the targeted DLR loss.
        """
        idx = tf.where(tf.logical_not(best.ok))[:, 0]
        return tf.cond(
            tf.size(idx) > 0,
            lambda: self._run(model_fn, x, y, target, best, idx, restart),
            lambda: best,
        )

    def _run(self, model_fn, x, y, target, best, idx, restart):
        tracker, threat, l1 = self._tracker, self.threat, self.norm == "l1"
        use_target = target is not None
        target = tf.zeros_like(y) if target is None else tf.cast(target, tf.int64)
        tgt = (lambda t: t) if use_target else (lambda t: None)
        seed = engine.sub_seed(self.seed, 1000 * restart)
        # drawn for the whole batch: an example's start does not depend on which others
        # are still being attacked
        start = threat.random_start(x, kind="uniform", seed=seed)
        x0, y_a, t_a, start = engine.gather((x, y, target, start), idx)
        logits, loss, grad = self._loss_grad(model_fn, start, y_a, tgt(t_a))
        fooled = self._fooled(logits, y_a)
        best = self._commit(best, idx, start, fooled, loss)
        shape = engine.per_example_shape(x)
        n_coords = int(tf.TensorShape(x.shape[1:]).num_elements())
        batch = tf.shape(idx)[0]
        eta = tf.fill([batch], (1.0 if l1 else 2.0) * self.eps)
        state = dict(
            x0=x0, y=y_a, t=t_a, x=start, x_prev=start, grad=grad, loss=tf.zeros([batch]),
            x_max=start, grad_max=grad, loss_max=loss, eta=eta,
            count=tf.zeros([batch]), loss_ckpt=loss, halved=tf.ones([batch], tf.bool),
        )  # fmt: skip
        # "loss" is the previous iterate's loss, against which condition 1 counts rises; the
        # reference compares the first step's loss with 0 (its loss history starts zeroed)
        if l1:
            state.update(sparsity=tf.fill([batch], 0.2), sp_old=tf.fill([batch], float(n_coords)))
        is_ckpt, gap = self._schedule()
        keep0 = tf.logical_not(fooled) if self.early_stop else tf.ones_like(fooled)
        active = engine.compact((idx, state), keep0)
        alpha, rho, eps = self.alpha, self.rho, self.eps

        def step(k, act, best):
            idx, s = act
            if l1:  # APGD-L1: sparse step, no momentum
                x_new = threat.project(
                    threat.step(s["x"], s["grad"], s["eta"], sparsity=s["sparsity"]), s["x0"]
                )
            else:
                z = threat.project(threat.step(s["x"], s["grad"], s["eta"]), s["x0"])
                a = tf.where(k > 0, alpha, 1.0)
                x_new = threat.project(
                    s["x"] + a * (z - s["x"]) + (1.0 - a) * (s["x"] - s["x_prev"]), s["x0"]
                )
            logits, loss, grad = self._loss_grad(model_fn, x_new, s["y"], tgt(s["t"]))
            fooled = self._fooled(logits, s["y"])
            best = self._commit(best, idx, x_new, fooled, loss)
            s = dict(s)
            s["count"] = s["count"] + tf.cast(loss > s["loss"], tf.float32)
            better = loss > s["loss_max"]
            better_x = tf.reshape(better, shape)
            s["x_max"] = tf.where(better_x, x_new, s["x_max"])
            s["grad_max"] = tf.where(better_x, grad, s["grad_max"])
            s["loss_max"] = tf.where(better, loss, s["loss_max"])
            s["x_prev"], s["x"], s["grad"], s["loss"] = s["x"], x_new, grad, loss
            ckpt = tf.gather(is_ckpt, k + 1)
            if l1:
                sp_now = tf.reduce_sum(
                    tf.cast(
                        tf.not_equal(tf.reshape(s["x_max"] - s["x0"], [tf.shape(idx)[0], -1]), 0.0),
                        tf.float32,
                    ),
                    axis=1,
                )
                eta, frac, restore = l1_sparsity_update(
                    s["eta"], s["sp_old"], sp_now, n_coords, eps
                )
                s["eta"] = tf.where(ckpt, eta, s["eta"])
                s["sparsity"] = tf.where(ckpt, frac, s["sparsity"])
                s["sp_old"] = tf.where(ckpt, sp_now, s["sp_old"])
                reset = tf.logical_and(ckpt, restore)
            else:
                window = tf.gather(gap, k + 1)
                halve = halving(s["count"], window, s["halved"], s["loss_max"], s["loss_ckpt"], rho)
                reset = tf.logical_and(ckpt, halve)
                s["eta"] = tf.where(reset, s["eta"] / 2.0, s["eta"])
                s["count"] = tf.where(ckpt, tf.zeros_like(s["count"]), s["count"])
                s["loss_ckpt"] = tf.where(ckpt, s["loss_max"], s["loss_ckpt"])
                s["halved"] = tf.where(ckpt, reset, s["halved"])
            reset_x = tf.reshape(reset, shape)
            s["x"] = tf.where(reset_x, s["x_max"], s["x"])
            s["grad"] = tf.where(reset_x, s["grad_max"], s["grad"])
            keep = tf.logical_not(fooled) if self.early_stop else tf.ones_like(fooled)
            return (idx, s), keep, best

        (idx, s), best = engine.run_active(
            step,
            active,
            best,
            self.steps,
            unrolled=engine.unrolled(self.loop, self.steps),
            chunk=1,  # one model copy in the graph: tracing stays short,
        )
        # examples still robust offer their highest-loss point of this run
        return tf.cond(
            tf.size(idx) > 0,
            lambda: tracker.update_rows(
                best, idx, s["x_max"], tf.zeros_like(s["y"], tf.bool), s["loss_max"]
            ),
            lambda: best,
        )

    def _commit(self, best, idx, x_new, fooled, loss):
        """Writes the misclassified candidates (only those) into the full-batch ``best``."""
        no = tf.fill(tf.shape(loss), -float("inf"))
        return self._tracker.update_rows(best, idx, x_new, fooled, loss, tf.where(fooled, loss, no))


@keras.saving.register_keras_serializable(package="robustkit")
class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss (APGD-T of AutoAttack).

    For each of the ``n_target_classes`` classes ranked 2nd, 3rd, ... by the clean
    logits, one APGD run (``restarts`` each) maximises
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` on the examples still
    correctly classified. Success means misclassification (any class). The runs are one
    ``tf.while_loop`` over the targets around one APGD loop (one copy of the model in the
    graph, whatever the number of targets).

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.APGDT(eps=0.3, n_target_classes=9)
    >>> atk.loss, atk.steps, atk.label
    ('dlr', 100, 'APGD-T')

    Defaults follow AutoAttack ``version="standard"``: 9 target classes, 100
    steps, 1 restart each. Needs >= 4 classes (``n_target_classes`` is capped at
    ``classes - 1``). L1 works as for :class:`APGD`.
    """

    targeted = True

    def __init__(
        self,
        eps=8 / 255,
        norm="linf",
        steps=100,
        restarts=1,
        n_target_classes=9,
        rho=0.75,
        alpha=0.75,
        eot_iter=1,
        loop="while",
        early_stop=True,
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(
            eps=eps,
            norm=norm,
            steps=steps,
            restarts=restarts,
            loss="dlr",
            rho=rho,
            alpha=alpha,
            eot_iter=eot_iter,
            loop=loop,
            early_stop=early_stop,
            bounds=bounds,
            batch_size=batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )
        self.n_target_classes = check_int(n_target_classes, "n_target_classes")

    @property
    def label(self):
        return "APGD-T"

    def get_config(self):
        config = super().get_config()
        config.pop("loss")
        config["n_target_classes"] = self.n_target_classes
        return config

    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe APGD-T over the ranked target classes."""
        y = tf.cast(y, tf.int64)
        logits = model_fn(x)
        n_targets = self.n_target_classes
        if logits.shape[-1] is not None:
            n_targets = min(n_targets, int(logits.shape[-1]) - 1)
        best = self._tracker.init(x, self._fooled(logits, y), self._loss(logits, y, None))

        def body(i, best):
            # one random-start op in the loop: with a seed it draws a new, reproducible
            # start at every execution, so every target and restart gets its own
            target = engine.ranked_targets(logits, i // self.restarts + 2)
            return self.attempt(model_fn, x, y, target, best)

        best = engine.run_loop(body, best, n_targets * self.restarts, unrolled=False)
        return tf.stop_gradient(best.x)
