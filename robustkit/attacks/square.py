"""Square Attack (Andriushchenko et al., ECCV 2020): score-based black-box search.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> x_adv = rk.attacks.Square(eps=0.1, n_queries=50)(model, x, np.array([0, 1, 2, 3]))
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True

Reference: M. Andriushchenko, F. Croce, N. Flammarion, M. Hein, "Square Attack: a
query-efficient black-box adversarial attack via random search", ECCV 2020.
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit import losses
from robustkit._validation import check_int, check_positive
from robustkit.attacks import engine
from robustkit.attacks.base import Attack

#: iterations (on a 10,000-query scale) after which the square fraction p halves
P_SCHEDULE = (10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000)
_TINY = 1e-12


def margin(logits, y):
    """``z_y - max_{j != y} z_j``: the Square Attack loss (minimised; <= 0 = fooled).

    The negated CW margin of :func:`robustkit.losses.margin`.

    Example:

    >>> import numpy as np
    >>> float(margin(np.array([[3.0, 1.0]], "float32"), np.array([0]))[0])
    2.0
    """
    return -losses.margin(logits, y)


def _pseudo_gaussian_table(size):
    """``T[D, d] = sum_{k=0}^{d} 1 / (D + 1 - k)^2``: ring values of the paper's
    pseudo-Gaussian square (``d`` rings in from the border, ``D`` the centre ring)."""
    t = np.zeros((size + 1, size + 1), "float32")
    for big_d in range(size + 1):
        acc = 0.0
        for d in range(big_d + 1):
            acc += 1.0 / (big_d + 1 - d) ** 2
            t[big_d, d] = acc
    return tf.constant(t)


@keras.saving.register_keras_serializable(package="robustkit")
class Square(Attack):
    """Square Attack: random search over square-shaped updates, using only logits.

    It never asks for a gradient (the model may be a non-differentiable function,
    e.g. numpy behind ``tf.numpy_function``). Each iteration proposes a change
    inside one random square window of side ``s = round(sqrt(p * H * W))`` and
    keeps it when the margin loss ``z_y - max_{j != y} z_j`` decreases. ``p``
    starts at ``p_init`` and halves after iterations 10, 50, 200, 500, 1000, 2000,
    4000, 6000, 8000 (rescaled to ``n_queries`` / 10,000 when
    ``rescale_schedule``; AutoAttack runs it without rescaling, as the reference does).

    * L-inf: starts from vertical stripes (each column and channel ``+-eps``);
      a proposal sets the window, per channel, to one random value ``+-eps``.
    * L2: starts from a grid of pseudo-Gaussian squares (side ``H // 5``) with
      random signs scaled to norm ``eps``; a proposal moves the perturbation mass
      of a second window into the first and adds a random "meta pseudo-Gaussian"
      (two halves of opposite sign), keeping the total norm ``<= eps``.

    Args:
        eps: radius; norm: ``"linf"`` or ``"l2"`` (L1 is not supported).
        n_queries: model evaluations per example and restart (5000 in AutoAttack
            standard); a fooled example stops querying (it leaves the batch).
        p_init: initial fraction of pixels changed (0.8 in AutoAttack; the
            paper's L-inf ImageNet setting is 0.05).
        restarts: independent restarts for examples still robust.
        rescale_schedule: rescale the p schedule to ``n_queries``.
        bounds: the valid input box (default ``(0, 1)``).
        seed: seeds the start and every proposal's window and values, so a new
            ``Square`` with the same seed repeats the run (one object's later calls
            continue the random sequence, as Keras' seeded layers do).

    Robust accuracy never exceeds clean accuracy (the clean input is a
    candidate). Image side must be >= 2.
    """

    black_box = True

    def __init__(
        self,
        eps=8 / 255,
        norm="linf",
        n_queries=5000,
        p_init=0.8,
        restarts=1,
        rescale_schedule=True,
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat(norm, eps, bounds)
        self.eps = self.threat.eps
        self.norm = self.threat.norm
        self.n_queries = check_int(n_queries, "n_queries")
        self.p_init = check_positive(p_init, "p_init")
        if self.p_init > 1:
            raise ValueError(f"`p_init` must be in (0, 1]; got {p_init!r}.")
        self.restarts = check_int(restarts, "restarts")
        self.rescale_schedule = bool(rescale_schedule)
        self._tracker = engine.Tracker.fooled_then_loss()
        self._init_delta = {"linf": self._init_linf, "l2": self._init_l2}[self.norm]
        self._propose = {"linf": self._propose_linf, "l2": self._propose_l2}[self.norm]

    @property
    def label(self):
        return "Square"

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            norm=self.norm,
            n_queries=self.n_queries,
            p_init=self.p_init,
            restarts=self.restarts,
            rescale_schedule=self.rescale_schedule,
        )
        if self.threat.bounds != (0.0, 1.0):
            config["bounds"] = list(self.threat.bounds)
        return config

    def _check_call(self, x, y, num_classes):
        if min(int(x.shape[1]), int(x.shape[2])) < 2:
            raise ValueError(
                f"`x` images must be at least 2x2 for Square; got {tuple(x.shape[1:])}."
            )

    # ----------------------------------------------------------------- core
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe Square Attack: returns ``x_adv`` for tensors ``x``, ``y``."""
        y = tf.cast(y, tf.int64)

        def model_fn_ng(t):  # logits of a known rank, even from a numpy_function model
            out = tf.stop_gradient(model_fn(tf.stop_gradient(t)))
            return tf.reshape(out, [tf.shape(t)[0], -1])

        m0 = margin(model_fn_ng(x), y)
        # the tracker maximises: score = fallback = -margin; success = margin <= 0
        best = self._tracker.init(x, m0 <= 0, -m0)
        best = engine.run_restarts(
            lambda r, b: self.attempt(model_fn_ng, x, y, b, r), best, self.restarts
        )
        return tf.stop_gradient(best.x)

    def _p(self, it):
        """Fraction of pixels for iteration ``it`` (tensor)."""
        it = tf.cast(it, tf.float32)
        if self.rescale_schedule:
            it = tf.floor(it / float(self.n_queries) * 10000.0)
        halvings = tf.add_n([tf.cast(it > float(t), tf.float32) for t in P_SCHEDULE])
        return self.p_init * tf.pow(0.5, halvings)

    def _side(self, it, h, w):
        s = tf.round(tf.sqrt(self._p(it) * float(h * w)))
        return tf.cast(tf.clip_by_value(s, 1.0, float(min(h, w) - 1)), tf.int32)

    @staticmethod
    def _window(batch, h, w, s, seed=None):
        """Random square windows: boolean (B, H, W, 1) and local coordinates."""
        corner = tf.random.uniform([2, batch], seed=seed)
        vh = tf.cast(tf.floor(corner[0] * tf.cast(h - s + 1, tf.float32)), tf.int32)
        vw = tf.cast(tf.floor(corner[1] * tf.cast(w - s + 1, tf.float32)), tf.int32)
        lr = tf.range(h)[None, :] - vh[:, None]  # (B, H)
        lc = tf.range(w)[None, :] - vw[:, None]  # (B, W)
        rows = tf.logical_and(lr >= 0, lr < s)
        cols = tf.logical_and(lc >= 0, lc < s)
        inside = tf.logical_and(rows[:, :, None, None], cols[:, None, :, None])  # (B, H, W, 1)
        return inside, lr[:, :, None], lc[:, None, :]

    def _meta_gaussian(self, table, lr, lc, s, transpose):
        """Meta pseudo-Gaussian on a window of side ``s`` at local coords, unnormalised.

        The square is split in two halves (left/right, or top/bottom where
        ``transpose``) holding a pseudo-Gaussian of opposite signs.
        """
        tr = tf.reshape(transpose, [-1, 1, 1])
        r = tf.where(tr, lc, lr)
        c = tf.where(tr, lr, lc)
        s1 = (s + 1) // 2
        first = c < s1
        cc = tf.where(first, c, c - s1)
        width = tf.where(first, s1, s - s1)
        ring = tf.minimum(tf.minimum(r, s - 1 - r), tf.minimum(cc, width - 1 - cc))
        ring = tf.maximum(ring, 0)
        top = tf.maximum((tf.minimum(s, width) - 1) // 2, 0)
        ring = tf.minimum(ring, top)
        size = int(table.shape[0])
        vals = tf.gather(tf.reshape(table, [-1]), top * size + ring)
        return tf.where(first, vals, -vals)

    # ---------------------------------------------------------- per norm
    def _init_linf(self, x, seed, table):
        batch, w, c = tf.shape(x)[0], int(x.shape[2]), int(x.shape[3])
        signs = tf.sign(tf.random.uniform([batch, 1, w, c], -1.0, 1.0, seed=seed))
        signs = tf.where(signs == 0, tf.ones_like(signs), signs)
        return tf.broadcast_to(self.eps * signs, tf.shape(x))

    def _init_l2(self, x, seed, table):
        batch = tf.shape(x)[0]
        h, w, c = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        s0 = max(h // 5, 1)
        rr = tf.range(h)[:, None] % s0 + tf.zeros([1, w], tf.int32)
        cc = tf.range(w)[None, :] % s0 + tf.zeros([h, 1], tf.int32)
        tile = (tf.range(h)[:, None] // s0) * (w // s0 + 1) + tf.range(w)[None, :] // s0
        n_tiles = (h // s0 + 1) * (w // s0 + 1)
        pattern = self._meta_gaussian(
            table, rr[None], cc[None], tf.constant(s0), tf.zeros([1], tf.bool)
        )[0]
        tile_signs = tf.sign(tf.random.uniform([batch, n_tiles, c], -1.0, 1.0, seed=seed))
        tile_signs = tf.where(tile_signs == 0, tf.ones_like(tile_signs), tile_signs)
        per_pixel = tf.gather(tile_signs, tf.reshape(tile, [-1]), axis=1)
        delta = tf.reshape(per_pixel, [batch, h, w, c]) * pattern[None, :, :, None]
        return delta / (self.threat.norm_of(delta)[:, None, None, None] + _TINY) * self.eps

    def _propose_linf(self, x, delta, inside, lr, lc, s, table, offset=0):
        """A candidate point: the window set, per channel, to one random ``+-eps`` (inside
        the ball by construction, so only the box clip is needed)."""
        batch, c, eps = tf.shape(x)[0], int(x.shape[3]), self.eps
        prop = eps * tf.sign(
            tf.random.uniform([batch, 1, 1, c], -1.0, 1.0, seed=engine.op_seed(self, offset + 2))
        )
        prop = tf.where(prop == 0, eps * tf.ones_like(prop), prop)
        cand = self.threat.clip(x + tf.where(inside, prop, delta))
        changed = tf.reduce_any(
            tf.logical_and(inside, tf.abs(cand - (x + delta)) > 1e-7), axis=[1, 2], keepdims=True
        )
        prop = tf.where(changed, prop, -prop)  # same values as now: flip the sign
        return self.threat.clip(x + tf.where(inside, prop, delta))

    def _propose_l2(self, x, delta, inside, lr, lc, s, table, offset=0):
        """A candidate point: a second window's mass moved into the first, plus a
        random meta pseudo-Gaussian, projected into the L2 ball and the box."""
        batch, h, w, c = tf.shape(x)[0], int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
        eps = self.eps
        inside2, _, _ = self._window(batch, h, w, s, seed=engine.op_seed(self, offset + 2))
        union = tf.logical_or(inside, inside2)
        sq = tf.square(delta)
        norm_union = tf.sqrt(tf.reduce_sum(tf.where(union, sq, 0.0), axis=[1, 2]))  # (B, C)
        total = tf.reduce_sum(sq, axis=[1, 2, 3])
        slack = tf.maximum(eps * eps - total, 0.0) / float(c)
        target = tf.sqrt(tf.square(norm_union) + slack[:, None])
        old = tf.where(inside, delta, 0.0)
        old = old / (tf.sqrt(tf.reduce_sum(tf.square(old), axis=[1, 2], keepdims=True)) + _TINY)
        transpose = tf.random.uniform([batch], seed=engine.op_seed(self, offset + 3)) < 0.5
        pattern = self._meta_gaussian(table, lr, lc, s, transpose)[..., None]
        pattern = tf.where(inside, pattern, 0.0)
        pattern = pattern / (
            tf.sqrt(tf.reduce_sum(tf.square(pattern), axis=[1, 2], keepdims=True)) + _TINY
        )
        sign = tf.sign(
            tf.random.uniform([batch, 1, 1, c], -1.0, 1.0, seed=engine.op_seed(self, offset + 4))
        )
        new = old + sign * pattern
        new = new / (tf.sqrt(tf.reduce_sum(tf.square(new), axis=[1, 2], keepdims=True)) + _TINY)
        new = new * target[:, None, None, :]
        return self.threat.project(x + tf.where(inside, new, tf.where(union, 0.0, delta)), x)

    # -------------------------------------------------------------- one run
    def attempt(self, model_fn, x, y, best, restart=0):
        """One Square Attack run on the examples ``best`` has not fooled yet."""
        idx = tf.where(tf.logical_not(best.ok))[:, 0]
        return tf.cond(
            tf.size(idx) > 0, lambda: self._run(model_fn, x, y, best, idx, restart), lambda: best
        )

    def _run(self, model_fn, x, y, best, idx, restart):
        tracker = self._tracker
        h, w = int(x.shape[1]), int(x.shape[2])
        offset = 1000 * restart  # this run's draws: op seeds from seed + offset on
        table = _pseudo_gaussian_table(max(h, w))
        x0, y_a = engine.gather((x, y), idx)
        x_init = self.threat.project(
            x0 + self._init_delta(x0, engine.op_seed(self, offset), table), x0
        )
        m = margin(model_fn(x_init), y_a)
        fooled = m <= 0
        best = tracker.update_rows(best, idx, x_init, fooled, -m, tf.where(fooled, -m, -np.inf))
        active = engine.compact((idx, x0, y_a, x_init, m), tf.logical_not(fooled))

        def step(k, act, best):
            idx, x0, y_a, cur, cur_m = act
            s = self._side(k + 1, h, w)
            inside, lr, lc = self._window(
                tf.shape(idx)[0], h, w, s, seed=engine.op_seed(self, offset + 1)
            )
            cand = self._propose(x0, cur - x0, inside, lr, lc, s, table, offset=offset)
            m = margin(model_fn(cand), y_a)
            accept = m < cur_m
            cur = tf.where(tf.reshape(accept, [-1, 1, 1, 1]), cand, cur)
            cur_m = tf.where(accept, m, cur_m)
            fooled = cur_m <= 0
            no = tf.fill(tf.shape(m), -np.inf)
            # the examples fooled now leave the batch: write them back (only then)
            best = tf.cond(
                tf.reduce_any(fooled),
                lambda: tracker.update_rows(
                    best, idx, cur, fooled, -cur_m, tf.where(fooled, -cur_m, no)
                ),
                lambda: best,
            )
            return (idx, x0, y_a, cur, cur_m), tf.logical_not(fooled), best

        (idx, _, _, cur, cur_m), best = engine.run_active(
            step, active, best, self.n_queries - 1, unrolled=False, chunk=engine.WHILE_CHUNK
        )
        # still robust: keep this run's point where it lowered the margin below the best
        return tf.cond(
            tf.size(idx) > 0,
            lambda: tracker.update_rows(best, idx, cur, tf.zeros_like(cur_m, tf.bool), -cur_m),
            lambda: best,
        )
