"""The attack engine: one loop driver, one best-point tracker, the active-set helpers.

Every iterative attack in robustkit is written as a ``body(k, state) -> state`` function and a
:class:`Tracker` that keeps, per example, the best point seen so far; :func:`run_loop` runs the
body (Python-unrolled, or as one ``tf.while_loop`` that may stop early and unroll a few steps
per iteration), :func:`run_active` runs it on a shrinking set of examples (early stop by
compaction). Attack files hold the algorithm only.

Example: a 3-step sign-gradient ascent that keeps the highest-loss point.

>>> import numpy as np, tensorflow as tf
>>> from robustkit.attacks import engine
>>> x = tf.constant(np.linspace(-1, 1, 4, dtype="float32")[:, None])
>>> loss = lambda v: tf.reduce_sum(-tf.square(v - 0.25), axis=1)     # peak at 0.25
>>> tracker = engine.Tracker.fooled_then_loss()
>>> def body(k, state):
...     v, best = state
...     with tf.GradientTape() as tape:
...         tape.watch(v)
...         value = loss(v)
...     best = tracker.update(best, v, tf.zeros_like(value, tf.bool), value)
...     return v + 0.25 * tf.sign(tape.gradient(value, v)), best
>>> best = tracker.init(x, score=loss(x))
>>> v, best = engine.run_loop(body, (x, best), 3, unrolled=False)
>>> best = tracker.update(best, v, tf.zeros(4, tf.bool), loss(v))
>>> [round(float(b), 3) for b in tracker.result(best)[:, 0]]   # from -1, -1/3, 1/3, 1
[-0.25, 0.167, 0.333, 0.25]

Loop policy: ``loop="auto"`` unrolls attacks of at most :data:`UNROLL_LIMITS` steps (training
attacks run inside ``train_step``, where Keras does not autograph loops; short evaluation
attacks trace quickly) and uses ``tf.while_loop`` otherwise, :data:`WHILE_CHUNK` steps per
iteration (one step per iteration measured ~1.25x slower on a 2-core CPU). Early stop by
compaction has dynamic shapes, which XLA rejects: with ``jit_compile`` attacks use masks.
"""

from typing import NamedTuple

import tensorflow as tf

from robustkit._validation import check_choice

#: ``loop=`` values every iterative attack accepts
LOOPS = ("auto", "unrolled", "while")
#: ``loop="auto"``: attacks of at most this many steps are Python-unrolled, per use
UNROLL_LIMITS = {"train": 10, "eval": 1}
#: steps unrolled inside each ``tf.while_loop`` iteration
WHILE_CHUNK = 4


def sub_seed(seed, offset):
    """The op-level seed ``seed + offset`` of one random draw of a run seeded ``seed``;
    ``None`` stays ``None`` (unseeded). Each draw of a run takes its own offset."""
    return None if seed is None else seed + offset


#: op seeds of the successive copies of one draw are this far apart (offsets stay below)
_COPY_STRIDE = 1_000_003


def op_seed(owner, offset):
    """The op-level seed of the next copy of draw ``offset`` built for ``owner`` (an
    object with a ``seed``; ``None`` stays ``None``).

    Seeded random ops that share an op seed in one graph return the same values, and one
    graph holds several copies of an attack step (a Python-unrolled loop, the
    :data:`WHILE_CHUNK` steps of a loop iteration): every copy takes its own seed, so the
    steps draw anew while a new ``owner`` with the same seed, traced the same way, still
    repeats the run.

    >>> class Run:
    ...     seed = 7
    >>> run = Run()
    >>> op_seed(run, 1) != op_seed(run, 1), op_seed(Run(), 1) == sub_seed(7, 1)
    (True, True)
    """
    if owner.seed is None:
        return None
    copies = owner.__dict__.get("_op_seed_copies", 0)
    owner._op_seed_copies = copies + 1
    return sub_seed(owner.seed, offset + _COPY_STRIDE * copies)


def check_loop(loop):
    """``loop`` if it is one of :data:`LOOPS`, else a ``ValueError`` naming ``loop``."""
    return check_choice(loop, set(LOOPS), "loop")


def unrolled(loop, steps, use="eval"):
    """Whether ``loop`` (a :data:`LOOPS` value) means a Python-unrolled loop of ``steps``."""
    if loop == "auto":
        return steps <= UNROLL_LIMITS[use]
    return loop == "unrolled"


def resolve_jit(jit_compile):
    """``"auto"`` means XLA only where a GPU is present (XLA is ~4x slower on CPU)."""
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    if not isinstance(jit_compile, bool):
        raise ValueError(f"`jit_compile` must be True, False or 'auto'; got {jit_compile!r}.")
    return jit_compile


# ------------------------------------------------------------------ loop driver
def _invariants(state):
    return tf.nest.map_structure(
        lambda t: tf.TensorShape([None] + t.shape[1:].as_list()) if t.shape.rank else t.shape,
        state,
    )


def run_loop(body, state, steps, *, unrolled=False, active=None, chunk=1, guard=False):
    """Runs ``state = body(k, state)`` for ``k = 0 .. steps - 1``; returns the final state.

    Args:
        body: ``(k, state) -> state`` with ``k`` a scalar int32 tensor; ``state`` is any
            nest of tensors (the batch axis first; its size may change between steps).
        steps: number of steps (a Python int).
        unrolled: a Python loop (the graph grows with ``steps``) instead of one
            ``tf.while_loop``.
        active: optional ``state -> scalar bool``: the while loop ends as soon as it is
            false (early exit once every example is done).
        chunk: steps unrolled per while-loop iteration (the remainder runs after the loop).
        guard: skip a step when ``active(state)`` is false (inside an unrolled loop or a
            chunk a step may otherwise meet an empty batch, which convolutions reject).
    """
    state = tf.nest.map_structure(tf.convert_to_tensor, state)
    if steps <= 0:
        return state

    def step(k, s):
        if guard and active is not None:
            return tf.cond(active(s), lambda: body(k, s), lambda: s)
        return body(k, s)

    if unrolled:
        for k in range(steps):
            state = step(tf.constant(k), state)
        return state
    chunk = max(1, min(int(chunk), steps))
    rounds, rest = divmod(steps, chunk)

    def cond(i, s):
        more = i < rounds
        return more if active is None else tf.logical_and(more, active(s))

    def loop_body(i, s):
        for j in range(chunk):
            k = i * chunk + j
            s = body(k, s) if j == 0 else step(k, s)
        return i + 1, s

    if rounds == 1 and active is None:
        _, state = loop_body(tf.constant(0), state)
    elif rounds:
        _, state = tf.while_loop(
            cond,
            loop_body,
            (tf.constant(0), state),
            shape_invariants=(tf.TensorShape([]), _invariants(state)),
        )
    for j in range(rest):
        state = step(tf.constant(rounds * chunk + j), state)
    return state


def run_restarts(attempt, best, restarts):
    """``best = attempt(r, best)`` for ``r = 0 .. restarts - 1`` (each restart sees the best
    so far, so it can skip examples already done)."""
    for r in range(restarts):
        best = attempt(r, best)
    return best


# ---------------------------------------------------------------- best points
class Best(NamedTuple):
    """The best point per example: ``x``, whether it succeeded (``ok``), its ordering key
    among successful points (``score``) and among failed ones (``fallback``)."""

    x: tf.Tensor
    ok: tf.Tensor
    score: tf.Tensor
    fallback: tf.Tensor


_ORDERS = ("max", "min")


class Tracker:
    """Keeps, per example, the best candidate under an ordering.

    A candidate that succeeded (``ok``) beats any failed one; among successful candidates
    the better ``score`` wins (``success="max"`` or ``"min"``); among failed candidates the
    better ``fallback`` (``failure="max"``, ``"min"``, or ``None``: a failed candidate never
    replaces the initial point). With ``freeze=True`` the first success is kept.

    The three orderings robustkit's attacks use have constructors:
    :meth:`fooled_then_loss` (PGD, MIM, APGD, Square), :meth:`min_norm` (CW, DDN, FAB) and
    :meth:`by_score` (MinMax: largest / smallest MI among successes, else smallest criterion).

    Example:

    >>> import tensorflow as tf
    >>> t = Tracker.min_norm()
    >>> best = t.init(tf.zeros([2, 1]))
    >>> best = t.update(best, tf.ones([2, 1]), tf.constant([True, False]), tf.constant([3.0, 1.0]))
    >>> best.ok.numpy().tolist(), best.score.numpy().tolist()
    ([True, False], [3.0, inf])
    """

    def __init__(self, success="max", failure="max", freeze=False):
        self.success = check_choice(success, set(_ORDERS), "success")
        self.failure = None if failure is None else check_choice(failure, set(_ORDERS), "failure")
        self.freeze = bool(freeze)

    @classmethod
    def fooled_then_loss(cls, freeze=False):
        """Misclassified first, then the highest loss (``score = fallback = loss``)."""
        return cls("max", "max", freeze)

    @classmethod
    def min_norm(cls):
        """The successful point with the smallest norm (``score = norm``)."""
        return cls("min", None)

    @classmethod
    def by_score(cls, maximize=True):
        """The successful point with the largest (or smallest) score, else the failed point
        with the smallest ``fallback`` (e.g. MinMax: MI among successes, else criterion)."""
        return cls("max" if maximize else "min", "min")

    @staticmethod
    def _worst(order, like):
        value = -float("inf") if order == "max" else float("inf")
        return tf.fill(tf.shape(like), tf.constant(value, like.dtype))

    def init(self, x, ok=None, score=None, fallback=None):
        """The initial best: ``x`` with its flags and keys (worst keys by default)."""
        batch = tf.shape(x)[0]
        ok = tf.zeros([batch], tf.bool) if ok is None else tf.convert_to_tensor(ok)
        template = tf.zeros([batch], tf.float32)
        score = self._worst(self.success, template) if score is None else score
        if fallback is None:
            fallback = (
                score
                if self.failure == self.success
                else self._worst(self.failure or "max", template)
            )
        return Best(
            tf.convert_to_tensor(x), ok, tf.cast(score, tf.float32), tf.cast(fallback, tf.float32)
        )

    def better(self, best_ok, best_score, best_fallback, ok, score, fallback):
        """Per example: does the candidate beat the current best?"""
        beats = score > best_score if self.success == "max" else score < best_score
        win = tf.logical_and(ok, tf.logical_or(tf.logical_not(best_ok), beats))
        if self.failure is not None:
            fb = fallback > best_fallback if self.failure == "max" else fallback < best_fallback
            lose_better = tf.logical_and(
                tf.logical_not(ok), tf.logical_and(tf.logical_not(best_ok), fb)
            )
            win = tf.logical_or(win, lose_better)
        if self.freeze:
            win = tf.logical_and(win, tf.logical_not(best_ok))
        return win

    def update(self, best, x, ok, score, fallback=None):
        """``best`` with the candidates ``x`` (same batch) merged in."""
        fallback = score if fallback is None else fallback
        score, fallback = tf.cast(score, tf.float32), tf.cast(fallback, tf.float32)
        win = self.better(best.ok, best.score, best.fallback, ok, score, fallback)
        mask = tf.reshape(win, [-1] + [1] * (x.shape.rank - 1))
        return Best(
            tf.where(mask, x, best.x),
            tf.logical_or(best.ok, tf.logical_and(win, ok)),
            tf.where(win, score, best.score),
            tf.where(win, fallback, best.fallback),
        )

    def update_rows(self, best, idx, x, ok, score, fallback=None):
        """``best`` with candidates for the rows ``idx`` of the full batch merged in."""
        fallback = score if fallback is None else fallback
        score, fallback = tf.cast(score, tf.float32), tf.cast(fallback, tf.float32)
        win = self.better(
            tf.gather(best.ok, idx),
            tf.gather(best.score, idx),
            tf.gather(best.fallback, idx),
            ok,
            score,
            fallback,
        )
        sel = tf.boolean_mask(idx, win)[:, None]
        return Best(
            tf.tensor_scatter_nd_update(best.x, sel, tf.boolean_mask(x, win)),
            tf.tensor_scatter_nd_update(best.ok, sel, tf.boolean_mask(ok, win)),
            tf.tensor_scatter_nd_update(best.score, sel, tf.boolean_mask(score, win)),
            tf.tensor_scatter_nd_update(best.fallback, sel, tf.boolean_mask(fallback, win)),
        )

    @staticmethod
    def result(best):
        """The best points, gradient stopped."""
        return tf.stop_gradient(best.x)


# ------------------------------------------------------------ active-set helpers
def active_indices(mask):
    """Indices (int64) where ``mask`` holds, or ``[0]`` when none does.

    The dummy keeps every tensor shape non-empty (a gradient over an empty batch trips a
    TF kernel shape check; oneDNN convolutions reject empty batches); callers must not use
    its results for a decision (merge with ``tf.logical_and(..., mask)``).
    """
    idx = tf.where(mask)[:, 0]
    return tf.cond(tf.size(idx) > 0, lambda: idx, lambda: tf.zeros([1], tf.int64))


def scatter(full, idx, part):
    """``full`` with rows ``idx`` replaced by ``part``."""
    return tf.tensor_scatter_nd_update(full, tf.reshape(tf.cast(idx, tf.int64), [-1, 1]), part)


def gather(structure, idx):
    """Rows ``idx`` of every tensor in ``structure``."""
    return tf.nest.map_structure(lambda t: tf.gather(t, idx), structure)


def compact(structure, keep):
    """The rows where ``keep`` holds, of every tensor in ``structure``."""
    return tf.nest.map_structure(lambda t: tf.boolean_mask(t, keep), structure)


def run_active(step, active, best, steps, *, unrolled=False, chunk=WHILE_CHUNK):
    """Early stop by compaction: iterate on a shrinking set of examples.

    Args:
        step: ``(k, active, best) -> (active, keep, best)``: one iteration on the active
            examples; rows where ``keep`` is false leave the set.
        active: a tuple of per-example tensors; ``active[0]`` holds the examples' positions
            in the full batch (int64), as :meth:`Tracker.update_rows` needs them.
        best: the full-batch :class:`Best`.
        steps: the most iterations.
        unrolled, chunk: as :func:`run_loop`.

    The loop ends after ``steps`` iterations or once the set is empty; a step never sees
    an empty set. Returns ``(active, best)``.
    """

    def body(k, s):
        act, b = s
        act, keep, b = step(k, act, b)
        # copying every state tensor costs a pass over memory: only when a row leaves
        act = tf.cond(tf.reduce_all(keep), lambda: act, lambda: compact(act, keep))
        return act, b

    def has_active(s):
        return tf.size(s[0][0]) > 0

    return run_loop(
        body,
        (tuple(active), best),
        steps,
        unrolled=unrolled,
        active=has_active,
        chunk=chunk,
        guard=True,
    )


def ranked_targets(logits, rank):
    """Per example, the class with the ``rank``-th largest logit (rank 1 = the top class).

    ``rank`` may be a Python int or a scalar int tensor (e.g. a loop counter).

    Example:

    >>> import numpy as np
    >>> ranked_targets(np.array([[0.1, 3.0, 2.0]], "float32"), 2).numpy().tolist()
    [2]
    """
    top = tf.math.top_k(tf.convert_to_tensor(logits), k=rank).indices
    return tf.cast(tf.gather(top, rank - 1, axis=1), tf.int64)


def per_example_shape(x):
    """``[-1, 1, 1, ...]``: reshapes a (B,) vector to broadcast against ``x``."""
    return [-1] + [1] * (x.shape.rank - 1)


__all__ = [
    "LOOPS",
    "UNROLL_LIMITS",
    "WHILE_CHUNK",
    "Best",
    "Tracker",
    "active_indices",
    "check_loop",
    "compact",
    "gather",
    "per_example_shape",
    "ranked_targets",
    "resolve_jit",
    "run_active",
    "run_loop",
    "run_restarts",
    "scatter",
    "unrolled",
]
