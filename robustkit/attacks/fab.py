"""FAB: the fast adaptive boundary attack (Croce & Hein, ICML 2020), minimal norm.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> x_adv = rk.attacks.FAB(eps=0.1, steps=10, n_target_classes=2)(model, x, np.array([0, 1, 2, 3]))
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True

Reference: F. Croce and M. Hein, "Minimally distorted adversarial examples with a
fast adaptive boundary attack", ICML 2020; the targeted version (FAB-T) is the one
used by AutoAttack (Croce & Hein, ICML 2020, "Reliable evaluation ...").
"""

import math

import keras
import tensorflow as tf

from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks.apgd import active_indices, ranked_targets, scatter, while_or_unrolled
from robustkit.attacks.base import Attack

_TINY = 1e-12
_NORMS = ("linf", "l2")


def _flat(t):
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _bisect(ok_fn, lo, hi, steps):
    """Row-wise bisection (one tf.while_loop): ``ok_fn(hi)`` holds, ``ok_fn(lo)`` not."""

    def body(i, lo, hi):
        mid = 0.5 * (lo + hi)
        ok = ok_fn(mid)
        return i + 1, tf.where(ok, lo, mid), tf.where(ok, mid, hi)

    _, lo, hi = tf.while_loop(lambda i, lo, hi: i < steps, body, (tf.constant(0), lo, hi))
    return lo, hi


def project_hyperplane_box(norm, w, r, lo, hi, bisect_steps=30):
    """Minimal-norm ``delta`` with ``<w, delta> = r`` and ``lo <= delta <= hi``.

    Row-wise for flat ``(B, D)`` tensors (``lo <= 0 <= hi``). The solution has
    the form ``clip(t * sign(w), lo, hi)`` (L-inf) or ``clip(t * w, lo, hi)``
    (L2) for a scalar ``t >= 0`` per row, where ``<w, delta(t)>`` is
    non-decreasing in ``t``; ``t`` is found by bisection (geometric for L2).
    Where the box makes ``r`` unreachable, the point of largest ``<w, delta>``
    is returned.

    Example:

    >>> import numpy as np
    >>> w = np.array([[1.0, 1.0]], "float32")
    >>> d = project_hyperplane_box("l2", w, np.array([1.0], "float32"),
    ...                            -np.ones((1, 2), "float32"), np.ones((1, 2), "float32"))
    >>> np.round(d.numpy(), 4).tolist()
    [[0.5, 0.5]]
    """
    w = tf.convert_to_tensor(w, tf.float32)
    r = tf.convert_to_tensor(r, tf.float32)
    lo = tf.convert_to_tensor(lo, tf.float32)
    hi = tf.convert_to_tensor(hi, tf.float32)
    sgn = tf.where(r < 0, -1.0, 1.0)[:, None]
    w = w * sgn
    target = tf.abs(r)[:, None]
    if norm == "linf":
        direction = tf.sign(w)

        def at(t):
            return tf.clip_by_value(t * direction, lo, hi)

        t_lo = tf.zeros_like(target)
        t_hi = tf.ones_like(target)  # the box has side 1: every coordinate saturated
        t_lo, t_hi = _bisect(
            lambda t: tf.reduce_sum(w * at(t), axis=1, keepdims=True) >= target,
            t_lo,
            t_hi,
            bisect_steps,
        )
        delta = at(t_hi)
    else:

        def at(t):
            return tf.clip_by_value(t * w, lo, hi)

        w_sq = tf.reduce_sum(tf.square(w), axis=1, keepdims=True)
        t_lo = tf.maximum(target / tf.maximum(w_sq, _TINY), _TINY)  # h(t_lo) <= target
        reach = tf.where(w > 0, hi, -lo) / tf.maximum(tf.abs(w), _TINY)
        reach = tf.where(tf.abs(w) > _TINY, reach, tf.zeros_like(reach))
        t_full = tf.reduce_max(reach, axis=1, keepdims=True)  # all coordinates saturated
        t_hi = tf.minimum(tf.maximum(t_full, t_lo), t_lo * 1e10)
        log_lo, log_hi = _bisect(
            lambda t: tf.reduce_sum(w * at(tf.exp(t)), axis=1, keepdims=True) >= target,
            tf.math.log(t_lo),
            tf.math.log(t_hi),
            bisect_steps,
        )
        delta = at(tf.exp(log_hi))
    return tf.where(target > 0, delta, tf.zeros_like(delta))


@keras.saving.register_keras_serializable(package="robustkit")
class FAB(Attack):
    """Fast adaptive boundary attack: the smallest L-inf / L2 perturbation it finds.

    Each step linearises the decision boundary between the true class ``c`` and
    a class ``s`` at the iterate ``x_k`` (``g = f_s - f_c``, ``w = grad g``),
    projects both ``x_k`` and the original ``x`` onto that hyperplane within the
    box [0, 1] (minimal-norm projections ``d_k``, ``d_0``), and moves to a biased
    combination ``(1 - a)(x_k + eta d_k) + a (x + eta d_0)`` with
    ``a = min(|d_k| / (|d_k| + |d_0|), alpha_max)``. Once the iterate is
    adversarial it is stored if smaller than the best so far and pulled back
    towards ``x``: ``x_k <- (1 - beta) x + beta x_k``.

    ``targeted=True`` (FAB-T, AutoAttack's version, default) fixes ``s`` to each
    of the ``n_target_classes`` classes ranked 2nd, 3rd, ... by the clean logits
    in turn (one gradient per step). ``targeted=False`` (the FAB paper's
    version) picks ``s`` at each step as the class with the closest linearised
    boundary (the full Jacobian per step: ~K times costlier).

    Args:
        eps: optional radius. With it, examples whose smallest perturbation
            exceeds eps count as not fooled (the clean input is returned) and
            are the only ones attacked further; random restarts draw within
            ``min(eps, best) / 2``. Without it, the smallest perturbation found
            is returned for every example (the clean input where none).
        norm: ``"linf"`` or ``"l2"``.
        steps: iterations per restart and target (100 in AutoAttack).
        restarts: 1 in AutoAttack standard (the first restart starts at ``x``).
        n_target_classes: targets for FAB-T (9 in AutoAttack).
        alpha_max, eta, beta: 0.1, 1.05, 0.9 (the paper's values).
        bisect_steps: bisection steps of the projection (30).
    """

    def __init__(
        self,
        eps=None,
        norm="linf",
        steps=100,
        restarts=1,
        targeted=True,
        n_target_classes=9,
        alpha_max=0.1,
        eta=1.05,
        beta=0.9,
        bisect_steps=30,
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.norm = check_choice(norm, set(_NORMS), "norm")
        self.eps = None if eps is None else check_positive(eps, "eps")
        self.threat = threat_lib.get(self.norm, 1.0 if self.eps is None else self.eps)
        self.steps = check_int(steps, "steps")
        self.restarts = check_int(restarts, "restarts")
        self.targeted = bool(targeted)
        self.n_target_classes = check_int(n_target_classes, "n_target_classes")
        self.alpha_max = check_positive(alpha_max, "alpha_max")
        if self.alpha_max >= 1:
            raise ValueError(f"`alpha_max` must be in (0, 1); got {alpha_max!r}.")
        self.eta = check_positive(eta, "eta")
        self.beta = check_positive(beta, "beta")
        if self.beta >= 1:
            raise ValueError(f"`beta` must be in (0, 1); got {beta!r}.")
        self.bisect_steps = check_int(bisect_steps, "bisect_steps")

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            norm=self.norm,
            steps=self.steps,
            restarts=self.restarts,
            targeted=self.targeted,
            n_target_classes=self.n_target_classes,
            alpha_max=self.alpha_max,
            eta=self.eta,
            beta=self.beta,
            bisect_steps=self.bisect_steps,
        )
        return config

    # ----------------------------------------------------------------- core
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe FAB: returns ``x_adv`` for tensors ``x``, ``y``."""
        y = tf.cast(y, tf.int64)
        logits = model_fn(x)
        fooled = tf.not_equal(tf.argmax(logits, -1), y)
        batch = tf.shape(x)[0]
        best = (x, tf.where(fooled, 0.0, tf.fill([batch], math.inf)))
        if self.targeted:
            n_targets = self.n_target_classes
            if logits.shape[-1] is not None:
                n_targets = min(n_targets, int(logits.shape[-1]) - 1)
            for t in range(n_targets):
                target = ranked_targets(logits, t + 2)
                for restart in range(self.restarts):
                    best = self._run_remaining(model_fn, x, y, target, best, restart)
        else:
            for restart in range(self.restarts):
                best = self._run_remaining(model_fn, x, y, None, best, restart)
        bx, bn = best
        ok = self._success(bn)
        return tf.stop_gradient(tf.where(tf.reshape(ok, [-1, 1, 1, 1]), bx, x))

    def _success(self, best_norm):
        if self.eps is None:
            return tf.math.is_finite(best_norm)
        return best_norm <= self.eps * (1 + 1e-6)

    def _run_remaining(self, model_fn, x, y, target, best, restart):
        """With ``eps``, attacks only the examples not yet within it."""
        if self.eps is None:
            return self.run(model_fn, x, y, target, best, restart)
        bx, bn = best
        idx = tf.where(tf.logical_not(self._success(bn)))[:, 0]

        def attack():
            sx, sn = self.run(
                model_fn,
                tf.gather(x, idx),
                tf.gather(y, idx),
                None if target is None else tf.gather(target, idx),
                (tf.gather(bx, idx), tf.gather(bn, idx)),
                restart,
            )
            return scatter(bx, idx, sx), scatter(bn, idx, sn)

        return tf.cond(tf.size(idx) > 0, attack, lambda: (bx, bn))

    def _linearise(self, model_fn, xk, y, target):
        """``g = f_s - f_c`` and ``w = grad g`` at ``xk`` (flat), for the chosen ``s``."""
        if target is not None:
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(xk)
                logits = model_fn(xk)
                g = tf.gather(logits, target, batch_dims=1) - tf.gather(logits, y, batch_dims=1)
                total = tf.reduce_sum(g)
            return g, _flat(tape.gradient(total, xk))
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(xk)
            logits = model_fn(xk)
        jac = tape.batch_jacobian(logits, xk)  # (B, K, ...)
        k = tf.shape(logits)[1]
        jac = tf.reshape(jac, [tf.shape(xk)[0], k, -1])
        g_all = logits - tf.gather(logits, y, batch_dims=1)[:, None]
        w_all = jac - tf.gather(jac, y, batch_dims=1)[:, None, :]
        dual = tf.reduce_sum(tf.abs(w_all), -1) if self.norm == "linf" else tf.norm(w_all, axis=-1)
        dist = tf.abs(g_all) / (dual + _TINY)
        dist = tf.where(tf.one_hot(y, k) > 0, math.inf, dist)
        s = tf.argmin(dist, axis=1)
        return tf.gather(g_all, s, batch_dims=1), tf.gather(w_all, s, batch_dims=1)

    def _norm(self, flat):
        if self.norm == "linf":
            return tf.reduce_max(tf.abs(flat), axis=1)
        return tf.norm(flat, axis=1)

    def run(self, model_fn, x, y, target, best, restart=0):
        """One FAB run from ``x`` (restart 0) or a random nearby point."""
        best_x, best_n = best
        shape = tf.shape(x)
        shape4 = [-1] + [1] * (x.shape.rank - 1)
        x_flat = _flat(x)
        if restart == 0:
            x0 = x
        else:
            radius = tf.where(tf.math.is_finite(best_n), best_n, 0.0)
            if self.eps is not None:
                radius = tf.where(tf.math.is_finite(best_n), tf.minimum(best_n, self.eps), self.eps)
            seed = None if self.seed is None else self.seed + restart
            x0 = self.threat.random_start(x, eps=0.5 * radius + _TINY, seed=seed)
        use_target = target is not None
        target_all = tf.zeros_like(y) if target is None else tf.cast(target, tf.int64)

        def body(k, state):
            xk, bx, bn = state
            active = (
                tf.logical_not(self._success(bn))
                if self.eps is not None
                else tf.ones_like(bn, tf.bool)
            )
            idx = active_indices(active)
            xa = tf.gather(xk, idx)
            ya = tf.gather(y, idx)
            xo = tf.gather(x_flat, idx)
            g, w = self._linearise(
                model_fn, xa, ya, tf.gather(target_all, idx) if use_target else None
            )
            xa_flat = _flat(xa)
            d_k = project_hyperplane_box(
                self.norm, w, -g, -xa_flat, 1.0 - xa_flat, self.bisect_steps
            )
            r_o = -(g + tf.reduce_sum(w * (xo - xa_flat), axis=1))
            d_o = project_hyperplane_box(self.norm, w, r_o, -xo, 1.0 - xo, self.bisect_steps)
            n_k, n_o = self._norm(d_k), self._norm(d_o)
            a = tf.minimum(n_k / (n_k + n_o + _TINY), self.alpha_max)[:, None]
            x_new = (1.0 - a) * (xa_flat + self.eta * d_k) + a * (xo + self.eta * d_o)
            x_new = tf.clip_by_value(x_new, 0.0, 1.0)
            logits = model_fn(tf.reshape(x_new, tf.concat([tf.shape(idx), shape[1:]], 0)))
            adv = tf.not_equal(tf.argmax(logits, -1), ya)
            dist = self._norm(x_new - xo)
            improve = tf.logical_and(adv, dist < tf.gather(bn, idx))
            x_new_img = tf.reshape(x_new, tf.shape(xa))
            bx = scatter(
                bx, idx, tf.where(tf.reshape(improve, shape4), x_new_img, tf.gather(bx, idx))
            )
            bn = scatter(bn, idx, tf.where(improve, dist, tf.gather(bn, idx)))
            back = (1.0 - self.beta) * xo + self.beta * x_new
            x_next = tf.where(adv[:, None], back, x_new)
            xk = scatter(xk, idx, tf.reshape(x_next, tf.shape(xa)))
            return xk, bx, bn

        cond = None
        if self.eps is not None:
            cond = lambda s: tf.reduce_any(tf.logical_not(self._success(s[2])))
        _, bx, bn = while_or_unrolled(
            body, (x0, best_x, best_n), self.steps, unrolled=False, cond=cond
        )
        return bx, bn
