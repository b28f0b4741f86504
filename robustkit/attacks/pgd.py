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

from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks.base import ATTACK_LOSSES, Attack, attack_loss, loss_and_grad

_STARTS = {True: "uniform", False: "none", "uniform": "uniform", "normal": "normal", "none": "none"}
_LOOPS = ("auto", "unrolled", "while")
#: ``loop="auto"``: training attacks (``track_best=False``) up to this many steps
#: are Python-unrolled; longer ones use ``tf.while_loop``
MAX_UNROLLED_STEPS = 10
#: ``loop="auto"``: evaluation attacks (best-point tracking) up to this many steps
#: are unrolled (FGSM); longer ones and ``early_stop=True`` use ``tf.while_loop``
MAX_UNROLLED_TRACKING = 1
#: ``loop="while"``/``"auto"`` evaluation attacks (with or without early stop)
#: unroll this many steps per while-loop iteration (one step per iteration
#: measured ~1.25x slower on a 2-core CPU; 8 traces twice as long for no gain)
WHILE_CHUNK = 4


@keras.saving.register_keras_serializable(package="robustkit")
class PGD(Attack):
    """Projected gradient descent under an L-inf or L2 threat model.

    Args:
        eps: radius of the threat model (8/255 CIFAR L-inf, 0.3 MNIST L-inf,
            0.5 CIFAR L2, 2.0 MNIST L2).
        step_size: step per iteration; ``None`` means ``eps / 4`` (the NAMID paper).
            Must be <= eps under L-inf.
        steps: gradient steps per restart.
        norm: ``"linf"`` or ``"l2"``.
        random_start: ``True``/``"uniform"`` (uniform in the ball), ``"normal"``
            (``x + 0.001 N(0, 1)``, the TRADES/MART code), ``False``/``"none"``.
        restarts: independent random restarts; the best point per example is kept.
        loss: ``"ce"``, ``"margin"`` (CW margin) or ``"kl"`` (TRADES' KL to the
            clean prediction).
        early_stop: stop working on examples once they are misclassified (for
            evaluation; the batch is compacted so fooled examples cost nothing,
            and the loop ends once all are fooled). On 1,000 MNIST test images
            this makes PGD-40 ~5x faster on an undefended CNN and ~0.8x
            cleverhans' time on a PGD-trained one (``benchmarks/pgd_speed.py``).
        loop: ``"unrolled"`` (a Python loop inside one ``tf.function``),
            ``"while"`` (``tf.while_loop``: the graph does not grow with ``steps``)
            or ``"auto"`` (default): unrolled for training attacks
            (``track_best=False``) of up to 10 steps and for FGSM, a while loop
            otherwise. On a 2-core CPU both run a step equally fast on MNIST-size
            CNNs (measured, ``benchmarks/pgd_speed.py``), but an unrolled PGD-40
            with best-point tracking takes ~20x longer to trace, and with
            ``early_stop`` ~15x (its while loop also ends once all are fooled).

    Evaluation calls (``attack(model, x, y)``) return, per example, the most
    adversarial point seen over all steps and restarts: a misclassified one if
    any (the highest loss among those), else the highest-loss one. The clean
    input counts as a candidate, so robust accuracy never exceeds clean accuracy.
    """

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
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = threat_lib.get(norm, eps)
        self.eps = self.threat.eps
        self.norm = self.threat.norm
        self.steps = check_int(steps, "steps")
        self.step_size = (
            self.eps / 4 if step_size is None else check_positive(step_size, "step_size")
        )
        if self.norm == "linf" and self.step_size > self.eps * (1 + 1e-6):
            raise ValueError(
                f"`step_size` ({step_size}) must not exceed `eps` ({eps}) under L-inf."
            )
        if random_start not in _STARTS:
            raise ValueError(
                f"Unknown `random_start` {random_start!r}; expected True, False, "
                "'uniform', 'normal' or 'none'."
            )
        self.random_start = _STARTS[random_start]
        self.restarts = check_int(restarts, "restarts")
        self.loss = check_choice(loss, set(ATTACK_LOSSES), "loss")
        self.early_stop = bool(early_stop)
        self.loop = check_choice(loop, set(_LOOPS), "loop")
        #: steps per while-loop iteration (unrolled inside it) for evaluation attacks
        self.chunk = WHILE_CHUNK

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
        loss = self.loss if loss is None else loss
        if random_start is not None and random_start not in _STARTS:
            raise ValueError(
                f"Unknown `random_start` {random_start!r}; expected True, False, "
                "'uniform', 'normal' or 'none'."
            )
        start = self.random_start if random_start is None else _STARTS[random_start]
        ratio = self.step_size / self.eps
        y = tf.cast(y, tf.int64)
        clean_logits = tf.stop_gradient(model_fn(x)) if loss == "kl" else None
        if not track_best:
            return tf.stop_gradient(self._plain(model_fn, x, y, eps, ratio, loss, start, clean_logits))
        if self.early_stop and not self._xla():
            return tf.stop_gradient(
                self._compacting(model_fn, x, y, eps, ratio, loss, start, clean_logits)
            )
        return tf.stop_gradient(self._tracking(model_fn, x, y, eps, ratio, loss, start, clean_logits))

    # ---------------------------------------------------------------- helpers
    def _xla(self):
        from robustkit.attacks.base import resolve_jit

        return resolve_jit(self.jit_compile)

    def _unrolled(self, limit):
        """``loop="auto"``: Python-unrolled up to ``limit`` steps, else ``tf.while_loop``."""
        if self.loop == "auto":
            return self.steps <= limit
        return self.loop == "unrolled"

    def _loop(self, body, state, unrolled, active=None, chunk=1):
        """Runs ``body`` ``steps`` times: unrolled, or as one ``tf.while_loop``.

        ``active(state)`` (optional) is a scalar boolean; the while loop stops as
        soon as it is false (early stop once every example is fooled). With
        ``chunk > 1`` each while iteration runs ``chunk`` unrolled steps (the
        remainder is unrolled after the loop): the graph stays small and the
        loop's per-iteration overhead is paid ``steps / chunk`` times.
        """
        if unrolled:
            for _ in range(self.steps):
                state = body(state)
            return state
        chunk = max(1, min(chunk, self.steps))
        if chunk > 1:
            rounds, rest = divmod(self.steps, chunk)

            def chunk_body(s):
                for _ in range(chunk):
                    s = body(s)
                return s

            state = self._while(chunk_body, state, rounds, active)
            for _ in range(rest):
                state = body(state)
            return state
        return self._while(body, state, self.steps, active)

    def _while(self, body, state, iterations, active):
        if iterations == 1 and active is None:
            return body(state)
        invariants = tf.nest.map_structure(
            lambda t: tf.TensorShape([None] + t.shape[1:].as_list()) if t.shape.rank else t.shape,
            state,
        )

        def cond(i, s):
            more = i < iterations
            return more if active is None else tf.logical_and(more, active(s))

        _, state = tf.while_loop(
            cond,
            lambda i, s: (i + 1, body(s)),
            (tf.constant(0), state),
            shape_invariants=(tf.TensorShape([]), invariants),
        )
        return state

    def _start(self, x, eps, start, restart):
        seed = None if self.seed is None else self.seed + restart
        x_adv = self.threat.random_start(x, eps, kind=start, seed=seed)
        return self.threat.project(x_adv, x, eps)

    def _ascend(self, x_adv, x, grad, eps, ratio):
        step = tf.convert_to_tensor(eps, tf.float32) * ratio
        return self.threat.project(self.threat.step(x_adv, grad, step), x, eps)

    def _plain(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        def body(x_adv):
            _, _, grad = loss_and_grad(model_fn, x_adv, y, loss, clean_logits)
            return self._ascend(x_adv, x, grad, eps, ratio)

        return self._loop(body, self._start(x, eps, start, 0), self._unrolled(MAX_UNROLLED_STEPS))

    @staticmethod
    def _better(fooled, loss, best_fooled, best_loss):
        return tf.logical_or(
            tf.logical_and(fooled, tf.logical_not(best_fooled)),
            tf.logical_and(tf.equal(fooled, best_fooled), loss > best_loss),
        )

    def _evaluate(self, model_fn, x, y, loss, clean_logits, logits=None):
        """Fooled flags and loss at ``x`` (``logits``: already computed at ``x``)."""
        logits = model_fn(x) if logits is None else logits
        return tf.not_equal(tf.argmax(logits, -1), y), attack_loss(loss, logits, y, clean_logits)

    def _tracking(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        """Full-batch loop keeping the most adversarial point per example."""
        fooled0, loss0 = self._evaluate(model_fn, x, y, loss, clean_logits, logits=clean_logits)
        best = (x, fooled0, loss0)
        mask_shape = [-1] + [1] * (x.shape.rank - 1)
        freeze = self.early_stop  # only reached with XLA: masks instead of compaction

        def merge(best, x_cur, fooled, cur_loss):
            bx, bf, bl = best
            better = self._better(fooled, cur_loss, bf, bl)
            if freeze:
                better = tf.logical_and(better, tf.logical_not(bf))
            return (
                tf.where(tf.reshape(better, mask_shape), x_cur, bx),
                tf.where(better, fooled, bf),
                tf.where(better, cur_loss, bl),
            )

        for restart in range(self.restarts):

            def body(state):
                x_adv, best = state
                logits, cur_loss, grad = loss_and_grad(model_fn, x_adv, y, loss, clean_logits)
                fooled = tf.not_equal(tf.argmax(logits, -1), y)
                best = merge(best, x_adv, fooled, cur_loss)
                x_next = self._ascend(x_adv, x, grad, eps, ratio)
                if freeze:
                    x_next = tf.where(tf.reshape(best[1], mask_shape), x_adv, x_next)
                return x_next, best

            x_adv, best = self._loop(
                body,
                (self._start(x, eps, start, restart), best),
                self._unrolled(MAX_UNROLLED_TRACKING),
                chunk=self.chunk,
            )
            best = merge(best, x_adv, *self._evaluate(model_fn, x_adv, y, loss, clean_logits))
        return best[0]

    def _compacting(self, model_fn, x, y, eps, ratio, loss, start, clean_logits):
        """Early stop: examples leave the batch as soon as they are misclassified."""
        fooled0, loss0 = self._evaluate(model_fn, x, y, loss, clean_logits, logits=clean_logits)
        best = (x, fooled0, loss0)
        batch = tf.shape(x)[0]
        # Per-example radius and clean logits travel with the active examples;
        # a (B, 0) placeholder stands in for the clean logits when not needed.
        eps_all = tf.broadcast_to(tf.cast(eps, tf.float32), [batch])
        clean_all = clean_logits if clean_logits is not None else tf.zeros([batch, 0])
        use_clean = clean_logits is not None

        def scatter(best, idx, x_cur, fooled, cur_loss):
            bx, bf, bl = best
            better = self._better(fooled, cur_loss, tf.gather(bf, idx), tf.gather(bl, idx))
            sel = tf.boolean_mask(idx, better)[:, None]
            return (
                tf.tensor_scatter_nd_update(bx, sel, tf.boolean_mask(x_cur, better)),
                tf.tensor_scatter_nd_update(bf, sel, tf.boolean_mask(fooled, better)),
                tf.tensor_scatter_nd_update(bl, sel, tf.boolean_mask(cur_loss, better)),
            )

        def step(state):
            x_a, active, best = state
            x0, y_a, idx, eps_a, clean_a = active
            logits, cur_loss, grad = loss_and_grad(
                model_fn, x_a, y_a, loss, clean_a if use_clean else None
            )
            fooled = tf.not_equal(tf.argmax(logits, -1), y_a)
            best = scatter(best, idx, x_a, fooled, cur_loss)
            keep = tf.logical_not(fooled)
            x_next = self._ascend(x_a, x0, grad, eps_a, ratio)
            return (
                tf.boolean_mask(x_next, keep),
                tuple(tf.boolean_mask(t, keep) for t in active),
                best,
            )

        def has_active(state):
            return tf.size(state[1][2]) > 0

        unrolled = self.loop == "unrolled"  # "auto": a while loop that ends when all are fooled
        # Inside an unrolled loop or a chunk of the while loop a step may meet an
        # empty batch: it is then skipped (oneDNN convolutions reject empty batches).
        guarded = unrolled or self.chunk > 1

        def body(state):
            if not guarded:
                return step(state)
            return tf.cond(has_active(state), lambda: step(state), lambda: state)

        for restart in range(self.restarts):
            idx = tf.where(tf.logical_not(best[1]))[:, 0]
            active = tuple(tf.gather(t, idx) for t in (x, y, tf.range(batch, dtype=tf.int64), eps_all, clean_all))
            x_a = self._start(active[0], active[3], start, restart)
            x_a, active, best = self._loop(
                body, (x_a, active, best), unrolled, has_active, chunk=self.chunk
            )

            def final(x_a=x_a, active=active, best=best):
                fooled, cur_loss = self._evaluate(
                    model_fn, x_a, active[1], loss, active[4] if use_clean else None
                )
                return scatter(best, active[2], x_a, fooled, cur_loss)

            # the model must not see an empty batch (oneDNN convolutions reject it)
            best = tf.cond(tf.size(active[2]) > 0, final, lambda best=best: best)
        return best[0]


@keras.saving.register_keras_serializable(package="robustkit")
class FGSM(PGD):
    """Fast gradient sign method: one step of size ``eps`` (L-inf) or ``eps`` along
    the normalised gradient (L2), from ``x`` itself by default.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.FGSM(eps=0.3)
    >>> atk.steps, atk.step_size
    (1, 0.3)
    """

    def __init__(self, eps=8 / 255, norm="linf", loss="ce", random_start=False,
                 batch_size=500, jit_compile="auto", seed=None):
        super().__init__(eps=eps, step_size=eps, steps=1, norm=norm,
                         random_start=random_start, loss=loss, batch_size=batch_size,
                         jit_compile=jit_compile, seed=seed)

    def get_config(self):
        config = super().get_config()
        for key in ("step_size", "steps", "restarts", "early_stop", "loop"):
            config.pop(key)
        return config
