"""Auto-PGD (Croce & Hein, ICML 2020): APGD with the CE or DLR loss, and APGD-T.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.APGD(eps=0.1, steps=10)(model, x, y)
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML 2020 (Section 3).
"""

import math

import keras
import tensorflow as tf

from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks.base import Attack

_LOSSES = ("ce", "dlr")
_LOOPS = ("auto", "unrolled", "while")
#: above this many iterations, ``loop="auto"`` uses ``tf.while_loop``
MAX_UNROLLED_STEPS = 64
_TINY = 1e-12


# --------------------------------------------------------------------- helpers
def dlr_loss(logits, y, target=None):
    """Difference-of-logits-ratio loss (Croce & Hein 2020, eq. 4 and 5), shape (B,).

    Untargeted: ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``; targeted at ``t``:
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``, with ``z_pi1 >= z_pi2 >= ...``
    the sorted logits. Both are invariant to shifting and scaling the logits.

    Example:

    >>> import numpy as np
    >>> z = np.array([[4.0, 1.0, 0.0, -1.0]], "float32")
    >>> round(float(dlr_loss(z, np.array([0]))[0]), 4)   # -(4 - 1) / (4 - 0)
    -0.75
    """
    logits = tf.cast(logits, tf.float32)
    y = tf.cast(y, tf.int64)
    k = 4 if target is not None else 3
    top = tf.math.top_k(logits, k=k).values
    z_y = tf.gather(logits, y, batch_dims=1)
    if target is None:
        onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
        other = tf.reduce_max(
            tf.where(onehot > 0, tf.fill(tf.shape(logits), -1e30), logits), axis=-1
        )
        return -(z_y - other) / (top[:, 0] - top[:, 2] + _TINY)
    z_t = tf.gather(logits, tf.cast(target, tf.int64), batch_dims=1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def step_checkpoints(steps, p1=0.22, shrink=0.03, min_gap=0.06):
    """The iterations ``w_j = ceil(p_j * steps)`` where APGD may halve its step.

    ``p_0 = 0``, ``p_1 = 0.22``, ``p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``.

    Example:

    >>> step_checkpoints(100)
    [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    p = [0.0, p1]
    while True:
        nxt = p[-1] + max(p[-1] - p[-2] - shrink, min_gap)
        if nxt > 1.0:
            break
        p.append(nxt)
    ws = []
    for pj in p:
        w = int(math.ceil(pj * steps - 1e-9))
        if not ws or w > ws[-1]:
            ws.append(w)
    return ws


def active_indices(active):
    """Indices of the active examples; ``[0]`` when none (a harmless dummy).

    Attacks compute the model only on examples still being attacked; the dummy
    keeps every tensor shape non-empty (a gradient over an empty batch trips a
    TF kernel shape check) and its results are never used for a decision.
    """
    idx = tf.where(active)[:, 0]
    return tf.cond(tf.size(idx) > 0, lambda: idx, lambda: tf.zeros([1], tf.int64))


def scatter(full, idx, part):
    """``full`` with rows ``idx`` replaced by ``part``."""
    return tf.tensor_scatter_nd_update(full, idx[:, None], part)


def ranked_targets(logits, rank):
    """The class with the ``rank``-th largest logit (rank 1 = the top class)."""
    return tf.cast(tf.math.top_k(logits, k=rank).indices[:, rank - 1], tf.int64)


def while_or_unrolled(body, state, n, unrolled, cond=None):
    """Runs ``state = body(k, state)`` for ``k < n``: unrolled or as one tf.while_loop.

    ``cond(state)`` (optional, while-loop only) stops early when it is False.
    """
    if unrolled:
        for k in range(n):
            state = body(tf.constant(k), state)
        return state
    invariants = tf.nest.map_structure(
        lambda t: tf.TensorShape([None] + t.shape[1:].as_list()) if t.shape.rank else t.shape,
        state,
    )

    def keep_going(k, s):
        go = k < n
        if cond is not None:
            go = tf.logical_and(go, cond(s))
        return go

    _, state = tf.while_loop(
        keep_going,
        lambda k, s: (k + 1, body(k, s)),
        (tf.constant(0), state),
        shape_invariants=(tf.TensorShape([]), invariants),
    )
    return state


# ------------------------------------------------------------------------ APGD
@keras.saving.register_keras_serializable(package="robustkit")
class APGD(Attack):
    """Auto-PGD: PGD with momentum and an automatic step-size schedule.

    The step starts at ``2 * eps``; at the checkpoints ``w_j = ceil(p_j * steps)``
    (``p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)``) it is
    halved for an example when (1) the loss rose in fewer than ``rho = 0.75`` of
    the steps since the last checkpoint, or (2) the step was not halved at the
    last checkpoint and the best loss has not improved since; after halving the
    iterate restarts from the best point found. Updates use momentum ``alpha``:
    ``z = P(x_k + eta * s(grad))``, ``x_{k+1} = P(x_k + alpha (z - x_k) +
    (1 - alpha)(x_k - x_{k-1}))`` (plain step at k = 0).

    Args:
        eps: radius (0.3 MNIST / 8/255 CIFAR under L-inf; 2.0 / 0.5 under L2).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart (100 in AutoAttack).
        restarts: random restarts (1 in AutoAttack standard); examples already
            misclassified are not restarted.
        loss: ``"ce"`` (APGD-CE) or ``"dlr"`` (APGD-DLR, needs >= 3 classes).
        rho: the fraction in condition (1), 0.75.
        alpha: momentum, 0.75.
        eot_iter: gradients averaged per step (Expectation over Transformation,
            for randomised models; 1 = off, 20 in AutoAttack ``version="rand"``).
        loop: ``"while"`` (one ``tf.while_loop``, default: the graph and its
            tracing time do not grow with ``steps``), ``"unrolled"`` or ``"auto"``
            (unrolled up to 64 steps).

    An example stops being attacked once it is misclassified (its model
    evaluations are skipped). The result per example is the first misclassified
    point found, else the highest-loss point; the clean input counts as a
    candidate, so robust accuracy never exceeds clean accuracy.
    """

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
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat(norm, eps)
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
        self.loop = check_choice(loop, set(_LOOPS), "loop")
        self._checkpoints = step_checkpoints(self.steps)

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
        fooled = tf.not_equal(tf.argmax(logits, -1), y)
        best = (x, fooled)
        for restart in range(self.restarts):
            best = self.run(model_fn, x, y, None, best, restart)
        return tf.stop_gradient(best[0])

    def _loss_grad(self, model_fn, x, y, target):
        """Mean logits, per-example loss and input gradient over ``eot_iter`` draws."""
        logits_sum = loss_sum = grad_sum = 0.0
        for _ in range(self.eot_iter):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(x)
                logits = model_fn(x)
                if self.loss == "ce" and target is None:
                    per_example = tf.nn.sparse_softmax_cross_entropy_with_logits(
                        labels=tf.cast(y, tf.int32), logits=logits
                    )
                else:
                    per_example = dlr_loss(logits, y, target)
                total = tf.reduce_sum(per_example)
            logits_sum += logits
            loss_sum += per_example
            grad_sum += tape.gradient(total, x)
        n = float(self.eot_iter)
        return logits_sum / n, loss_sum / n, grad_sum / n

    def _unrolled(self):
        if self.loop == "auto":
            return self.steps <= MAX_UNROLLED_STEPS
        return self.loop == "unrolled"

    def run(self, model_fn, x, y, target, best, restart=0):
        """One APGD run from a random start; updates ``best = (x_adv, fooled)``.

        Only examples not yet fooled in ``best`` are attacked. ``target`` (or
        ``None``) selects the targeted DLR loss.
        """
        best_x, best_fooled = best
        batch = tf.shape(x)[0]
        shape4 = [-1] + [1] * (x.shape.rank - 1)
        seed = None if self.seed is None else self.seed + 1000 * restart
        if target is None:
            target_all = tf.zeros([batch], tf.int64)
        else:
            target_all = tf.cast(target, tf.int64)
        use_target = target is not None

        def evaluate(x_eval, active):
            idx = active_indices(active)
            logits, loss, grad = self._loss_grad(
                model_fn,
                tf.gather(x_eval, idx),
                tf.gather(y, idx),
                tf.gather(target_all, idx) if use_target else None,
            )
            fooled = tf.not_equal(tf.argmax(logits, -1), tf.gather(y, idx))
            return idx, loss, grad, fooled

        x0 = self.threat.project(self.threat.random_start(x, kind="uniform", seed=seed), x)
        active0 = tf.logical_not(best_fooled)
        idx, loss_a, grad_a, fooled_a = evaluate(x0, active0)
        zeros_b = tf.zeros([batch], tf.float32)
        loss0 = scatter(zeros_b, idx, loss_a)
        grad0 = scatter(tf.zeros_like(x), idx, grad_a)
        newly = tf.logical_and(scatter(tf.zeros([batch], tf.bool), idx, fooled_a), active0)
        best_x = tf.where(tf.reshape(newly, shape4), x0, best_x)
        best_fooled = tf.logical_or(best_fooled, newly)

        eta = tf.fill([batch], 2.0 * self.eps)
        checkpoints = self._checkpoints
        is_ckpt = [False] * (self.steps + 1)
        gap = [0] * (self.steps + 1)
        for prev, cur in zip(checkpoints[:-1], checkpoints[1:]):
            is_ckpt[cur] = True
            gap[cur] = cur - prev
        is_ckpt_t = tf.constant(is_ckpt)
        gap_t = tf.constant(gap, tf.float32)
        alpha, rho = self.alpha, self.rho

        state = (
            x0,
            x0,
            grad0,
            loss0,  # x_k, x_{k-1}, grad, loss at x_k
            x0,
            grad0,
            loss0,  # x_max, grad at x_max, loss_max
            eta,
            zeros_b,  # step size, count of increases
            loss0,
            tf.zeros([batch], tf.bool),  # loss_max at last ckpt, halved at last ckpt
            best_x,
            best_fooled,
        )

        def body(k, s):
            (
                x_k,
                x_prev,
                grad,
                loss_k,
                x_max,
                grad_max,
                loss_max,
                eta,
                count,
                loss_ckpt,
                halved_ckpt,
                bx,
                bf,
            ) = s
            active = tf.logical_not(bf)
            z = self.threat.project(self.threat.step(x_k, grad, eta), x)
            a = tf.where(k > 0, alpha, 1.0)
            x_new = self.threat.project(x_k + a * (z - x_k) + (1.0 - a) * (x_k - x_prev), x)
            x_new = tf.where(tf.reshape(active, shape4), x_new, x_k)
            idx, loss_a, grad_a, fooled_a = evaluate(x_new, active)
            loss_new = scatter(loss_k, idx, loss_a)
            grad_new = scatter(grad, idx, grad_a)
            newly = tf.logical_and(scatter(tf.zeros_like(bf), idx, fooled_a), active)
            bx = tf.where(tf.reshape(newly, shape4), x_new, bx)
            bf = tf.logical_or(bf, newly)
            count = count + tf.cast(tf.logical_and(loss_new > loss_k, active), tf.float32)
            better = tf.logical_and(loss_new > loss_max, active)
            better4 = tf.reshape(better, shape4)
            x_max = tf.where(better4, x_new, x_max)
            grad_max = tf.where(better4, grad_new, grad_max)
            loss_max = tf.where(better, loss_new, loss_max)
            x_prev, x_k, grad, loss_k = x_k, x_new, grad_new, loss_new

            # Checkpoint w_j = k + 1: halve the step where a condition holds.
            ckpt = tf.gather(is_ckpt_t, k + 1)
            cond1 = count < rho * tf.gather(gap_t, k + 1)
            cond2 = tf.logical_and(tf.logical_not(halved_ckpt), loss_max <= loss_ckpt)
            halve = tf.logical_and(ckpt, tf.logical_or(cond1, cond2))
            halve4 = tf.reshape(halve, shape4)
            eta = tf.where(halve, eta / 2.0, eta)
            x_k = tf.where(halve4, x_max, x_k)
            grad = tf.where(halve4, grad_max, grad)
            loss_k = tf.where(halve, loss_max, loss_k)
            count = tf.where(ckpt, tf.zeros_like(count), count)
            loss_ckpt = tf.where(ckpt, loss_max, loss_ckpt)
            halved_ckpt = tf.where(ckpt, halve, halved_ckpt)
            return (
                x_k,
                x_prev,
                grad,
                loss_k,
                x_max,
                grad_max,
                loss_max,
                eta,
                count,
                loss_ckpt,
                halved_ckpt,
                bx,
                bf,
            )

        state = while_or_unrolled(
            body,
            state,
            self.steps,
            self._unrolled(),
            cond=lambda s: tf.reduce_any(tf.logical_not(s[-1])),
        )
        x_max, bx, bf = state[4], state[-2], state[-1]
        # Examples never fooled end at their highest-loss point of this run.
        started = tf.reshape(tf.logical_not(bf), shape4)
        return tf.where(started, x_max, bx), bf


@keras.saving.register_keras_serializable(package="robustkit")
class APGDT(APGD):
    """Targeted APGD on the targeted DLR loss (APGD-T of AutoAttack).

    For each of the ``n_target_classes`` classes ranked 2nd, 3rd, ... by the clean
    logits, one APGD run (``restarts`` each) maximises
    ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)`` on the examples still
    correctly classified. Success means misclassification (any class).

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.APGDT(eps=0.3, n_target_classes=9)
    >>> atk.loss, atk.steps
    ('dlr', 100)

    Defaults follow AutoAttack ``version="standard"``: 9 target classes, 100
    steps, 1 restart each. Needs >= 4 classes (``n_target_classes`` is capped at
    ``classes - 1``).
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
            batch_size=batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )
        self.n_target_classes = check_int(n_target_classes, "n_target_classes")

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
        num_classes = logits.shape[-1]
        fooled = tf.not_equal(tf.argmax(logits, -1), y)
        best = (x, fooled)
        n_targets = self.n_target_classes
        if num_classes is not None:
            n_targets = min(n_targets, int(num_classes) - 1)
        for t in range(n_targets):
            target = ranked_targets(logits, t + 2)
            for restart in range(self.restarts):
                best = self._run_remaining(model_fn, x, y, target, best, 100 * t + restart)
        return tf.stop_gradient(best[0])

    def _run_remaining(self, model_fn, x, y, target, best, restart):
        """Runs APGD on the still-robust examples only (compacted batch)."""
        bx, bf = best
        idx = tf.where(tf.logical_not(bf))[:, 0]

        def attack():
            sub = (tf.gather(bx, idx), tf.zeros(tf.shape(idx), tf.bool))
            sx, sf = self.run(
                model_fn, tf.gather(x, idx), tf.gather(y, idx), tf.gather(target, idx), sub, restart
            )
            # Keep the earlier (higher-loss) point where this target failed.
            sx = tf.where(tf.reshape(sf, [-1] + [1] * (x.shape.rank - 1)), sx, tf.gather(bx, idx))
            return scatter(bx, idx, sx), scatter(bf, idx, sf)

        return tf.cond(tf.size(idx) > 0, attack, lambda: (bx, bf))
