"""FWA as the NAMID evaluation released it: projected gradient on the transport plan.

MIAT's ``utils_attack/FWA.py`` (``LinfFWA``, used by ``test_comparison.py`` with
``eps=8/255, kernel_size=4, lr=0.007, nb_iter=40, dual_max_iter=15, grad_tol=1e-4,
int_tol=1e-4``) is, despite its name, Wu et al.'s *projected gradient* attack
(``projected_gradient.py`` of fast-wasserstein-adversarial), not Frank-Wolfe (FIDELITY §4).
Each of its iterations

1. takes the gradient of the summed cross-entropy at ``clip(x', 0, 1)`` with respect to the
   plan ``Pi`` (``x'`` = the plan's column sums; no gradient where ``x'`` leaves the box),
2. divides it by its L-inf norm per example and adds ``lr`` times it to ``Pi``,
3. projects ``Pi`` back (Euclidean) onto ``{Pi >= 0, Pi 1 = x, <Pi, C> <= eps * sum(x)}``
   through the one-dimensional dual: for a multiplier ``lam >= 0`` each row is the
   projection of ``G_i - lam C_i`` onto the simplex of mass ``x_i``
   (:func:`simplex_projection`), and ``lam`` is found by bisection on
   ``[0, 2 ||G||_inf + ||x||_inf]`` (:func:`dual_projection`); the upper end of the final
   bracket is used, so the cost stays within the budget.

The last iterate is returned, unclipped (the release evaluates the unclipped image).
Transport windows use the release's offsets ``-(k // 2) .. k - 1 - k // 2`` (k = 4: -2..+1;
the C++ cost builder asserts odd k, MIAT passes 4, and with assertions compiled out these
are the offsets it builds) and out-of-image targets cost ``1e6`` (``inf=1000000``).

Example (the hand-computable projection of one row: mass 1 on offsets of cost 0 and 1,
budget 0.3; the exact answer is ``[0.7, 0.3]``):

>>> import numpy as np
>>> p, lam = dual_projection(
...     np.array([[0.5, 0.7]], "float32"), np.array([1.0], "float32"),
...     np.array([[0.0, 1.0]], "float32"), np.array([0], "int32"),
...     np.array([0.3], "float32"), batch=1, right=np.array([3.0], "float32"),
...     max_iter=40, grad_tol=None, int_tol=None)
>>> np.round(p.numpy(), 4).tolist(), round(float(lam[0]), 3)
([[0.7, 0.3]], 0.6)
"""

import math

import tensorflow as tf

from robustkit import losses
from robustkit import threat as threat_lib
from robustkit.attacks import engine
from robustkit.attacks.transport import apply_plan, shift

#: the release's cost of a transport to a pixel outside the image (``LinfFWA.inf``)
INF_COST = 1e6


def release_offsets(kernel_size):
    """The transport offsets ``(dy, dx)`` the release builds for a ``k x k`` window.

    >>> release_offsets(4)[0], release_offsets(4)[-1], len(release_offsets(3))
    ((-2, -2), (1, 1), 9)
    """
    lo = -(kernel_size // 2)
    span = range(lo, lo + kernel_size)
    return [(dy, dx) for dy in span for dx in span]


def simplex_projection(v, mass):
    """Euclidean projection of each row of ``v`` (N, K) onto ``{p >= 0, sum p = mass}``.

    >>> import numpy as np
    >>> simplex_projection(np.array([[0.5, 0.7], [2.0, 0.0]], "float32"),
    ...                    np.array([1.0, 1.0], "float32")).numpy().round(4).tolist()
    [[0.4, 0.6], [1.0, 0.0]]
    """
    v = tf.convert_to_tensor(v, tf.float32)
    mass = tf.convert_to_tensor(mass, tf.float32)
    k = tf.shape(v)[-1]
    u = tf.sort(v, axis=-1, direction="DESCENDING")
    css = tf.cumsum(u, axis=-1) - mass[:, None]
    ind = tf.cast(tf.range(1, k + 1), tf.float32)
    rho = tf.argmax(tf.cast(ind * u - css > 0, tf.float32) * ind, axis=-1)
    theta = tf.gather(css, rho, batch_dims=1) / (1.0 + tf.cast(rho, tf.float32))
    return tf.maximum(v - theta[:, None], 0.0)


def dual_projection(
    g, mass, cost, seg, budget, batch, right, max_iter=15, grad_tol=1e-4, int_tol=1e-4
):
    """Projects the plan rows ``g`` (N, K) onto the transport polytope; returns ``(p, lam)``.

    Rows belong to examples ``seg`` (N,); each row ``i`` carries ``mass[i]`` and its
    entries cost ``cost[i]`` (N, K); example ``b`` may spend ``budget[b]``. The multiplier
    ``lam`` (B,) is bisected on ``[0, right]`` as the release does: at most ``max_iter``
    steps, stopping early when every ``|cost - budget| < grad_tol`` or when every bracket
    is narrower than ``int_tol`` (``None`` disables a test); ``p`` is the projection at the
    upper end of the bracket.
    """
    g, mass, cost, budget, right = (
        tf.convert_to_tensor(t, tf.float32) for t in (g, mass, cost, budget, right)
    )
    seg = tf.convert_to_tensor(seg, tf.int32)

    def recover(lam):
        return simplex_projection(g - tf.gather(lam, seg)[:, None] * cost, mass)

    def excess(lam):
        per_row = tf.reduce_sum(recover(lam) * cost, axis=-1)
        return tf.math.unsorted_segment_sum(per_row, seg, batch) - budget

    a, b = tf.zeros_like(right), right
    done = tf.constant(False)
    for _ in range(max_iter):
        mid = (a + b) / 2.0
        grad = excess(mid)
        a = tf.where(tf.logical_and(~done, grad > 0.0), mid, a)
        b = tf.where(tf.logical_and(~done, grad <= 0.0), mid, b)
        stop = tf.constant(False)
        if grad_tol is not None:
            stop = tf.logical_or(stop, tf.reduce_all(tf.abs(grad) < grad_tol))
        if int_tol is not None:
            stop = tf.logical_or(stop, tf.reduce_max(b - a) < int_tol)
        done = tf.logical_or(done, stop)
    return recover(b), b


def perturb(attack, model_fn, x, y):
    """``FWA(method="release")``: the released projected-gradient attack (last iterate)."""
    y = tf.cast(y, tf.int64)
    lo, hi = attack.bounds
    offsets = release_offsets(attack.kernel_size)
    n_off = len(offsets)
    pad = max(max(abs(dy), abs(dx)) for dy, dx in offsets)
    h, w, c = int(x.shape[1]), int(x.shape[2]), int(x.shape[3])
    batch = tf.shape(x)[0]
    ones = tf.ones([1, h, w, 1])
    valid = tf.stack([shift(ones, dy, dx, pad) for dy, dx in offsets], axis=-1) > 0.5
    valid = tf.broadcast_to(valid, [batch, h, w, c, n_off])
    mass = x - lo
    budget = attack.eps * tf.reduce_sum(mass, axis=[1, 2, 3])
    x_inf = tf.reduce_max(tf.reshape(mass, [batch, -1]), axis=1)
    m_flat = tf.reshape(mass, [-1])
    rows = tf.where(m_flat > 0)[:, 0]
    xr = tf.gather(m_flat, rows)
    seg = tf.cast(rows // (h * w * c), tf.int32)
    valid_r = tf.gather(tf.reshape(valid, [-1, n_off]), rows)
    dist = tf.constant([math.hypot(dy, dx) for dy, dx in offsets], tf.float32)
    cost = tf.where(valid_r, dist, INF_COST)
    dense_shape = tf.cast(tf.stack([tf.size(m_flat), n_off]), tf.int64)
    plan = xr[:, None] * tf.one_hot(offsets.index((0, 0)), n_off)  # identity plan

    def image(p):
        dense = tf.reshape(tf.scatter_nd(rows[:, None], p, dense_shape), [batch, h, w, c, n_off])
        return lo + apply_plan(dense, offsets)

    def body(k, p):
        raw = image(p)
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(raw)
            logits = model_fn(tf.clip_by_value(raw, lo, hi))
            total = tf.reduce_sum(losses.cross_entropy(logits, y))
        grad = tape.gradient(total, raw)  # zero where raw left the box (the clamp)
        g_max = threat_lib.norm_of(grad, "linf")
        grad = grad / tf.reshape(g_max + 1e-35, engine.per_example_shape(x))
        g = tf.stack([shift(grad, dy, dx, pad) for dy, dx in offsets], axis=-1)
        g = tf.where(valid_r, tf.gather(tf.reshape(g, [-1, n_off]), rows), 0.0)
        step = p + attack.lr * g
        g_inf = tf.math.unsorted_segment_max(tf.reduce_max(tf.abs(step), -1), seg, batch)
        right = 2.0 * tf.maximum(g_inf, attack.lr) + x_inf
        p, _ = dual_projection(
            step,
            xr,
            cost,
            seg,
            budget,
            batch,
            right,
            attack.dual_steps,
            attack.grad_tol,
            attack.int_tol,
        )
        return p

    plan = engine.run_loop(
        body, plan, attack.steps, unrolled=engine.unrolled(attack.loop, attack.steps), chunk=1
    )
    x_adv = image(plan)
    return x_adv if not attack.clip_output else tf.clip_by_value(x_adv, lo, hi)


__all__ = ["INF_COST", "dual_projection", "perturb", "release_offsets", "simplex_projection"]
