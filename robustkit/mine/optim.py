"""The batched Adam step of per-sample MINE's statistics networks.

The networks of a batch are stored as weights with a leading example axis; one Adam state
over these stacked weights is exactly one independent Adam per example (Adam is element-wise
and example b's loss only touches example b's weights).

Example:

>>> import tensorflow as tf
>>> from robustkit.mine import adam
>>> params = {"w": tf.zeros([2, 3])}
>>> state = ({"w": tf.zeros([2, 3])}, {"w": tf.zeros([2, 3])}, tf.constant(0.0))
>>> params, state = adam(params, {"w": tf.ones([2, 3])}, state, lr=0.1)
>>> round(float(params["w"][0, 0]), 4), float(state[2])    # first step: lr * sign(g)
(0.1, 1.0)
"""

import tensorflow as tf


def adam(params, grads, state, lr, ascent=True, b1=0.9, b2=0.999, eps=1e-7):
    """One Adam step on a dict of tensors; ``state = (m, v, t)``; ascends by default."""
    m, v, t = state
    t = t + 1.0
    sign = 1.0 if ascent else -1.0
    new_p, new_m, new_v = {}, {}, {}
    corr = tf.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    for key, w in params.items():
        g = grads[key]
        new_m[key] = b1 * m[key] + (1.0 - b1) * g
        new_v[key] = b2 * v[key] + (1.0 - b2) * tf.square(g)
        new_p[key] = w + sign * lr * corr * new_m[key] / (tf.sqrt(new_v[key]) + eps)
    return new_p, (new_m, new_v, t)


def init_state(params):
    """Zero Adam state ``(m, v, t)`` for ``params``."""
    zeros = {k: tf.zeros_like(v) for k, v in params.items()}
    return zeros, dict(zeros), tf.constant(0.0)


__all__ = ["adam", "init_state"]
