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


def _update(w, g, m, v, step, b1, b2, eps):
    """One element-wise Adam update of a tensor: ``(w + step * m' / (sqrt(v') + eps), m', v')``."""
    m = b1 * m + (1.0 - b1) * g
    v = b2 * v + (1.0 - b2) * tf.square(g)
    return w + step * m / (tf.sqrt(v) + eps), m, v


#: the update compiled with XLA: one fused pass over the weights instead of ~8 kernels (the
#: full statistics network holds ~10 M weights per example; measured on 8 MNIST examples,
#: 2 CPU cores: 0.05 s per example and step fused against 0.16 s, ``benchmarks/minmax_table.py``)
_fused_update = tf.function(_update, jit_compile=True, reduce_retracing=True)


def adam(params, grads, state, lr, ascent=True, b1=0.9, b2=0.999, eps=1e-7):
    """One Adam step on a dict of tensors; ``state = (m, v, t)``; ascends by default."""
    m, v, t = state
    t = t + 1.0
    sign = 1.0 if ascent else -1.0
    new_p, new_m, new_v = {}, {}, {}
    corr = tf.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    step = sign * lr * corr
    b1, b2, eps = (tf.constant(c, tf.float32) for c in (b1, b2, eps))
    for key, w in params.items():
        new_p[key], new_m[key], new_v[key] = _fused_update(
            w, grads[key], m[key], v[key], step, b1, b2, eps
        )
    return new_p, (new_m, new_v, t)


def init_state(params):
    """Zero Adam state ``(m, v, t)`` for ``params``."""
    zeros = {k: tf.zeros_like(v) for k, v in params.items()}
    return zeros, dict(zeros), tf.constant(0.0)


__all__ = ["adam", "init_state"]
