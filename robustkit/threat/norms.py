"""The norms: L-infinity, L2 and L1 balls (with the exact L1-ball-and-box projection).

Example:

>>> from robustkit.threat import L2
>>> L2(0.5).label
'L2'
"""

import math

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_positive
from robustkit.threat.base import TINY, ThreatModel, _flatten, _per_example, _tensor


@keras.saving.register_keras_serializable(package="robustkit")
class Linf(ThreatModel):
    """L-infinity ball: ``max |x_adv - x| <= eps``.

    Example:

    >>> tm = Linf(8 / 255)
    >>> tm.norm, tm.label
    ('linf', 'L∞')
    """

    norm = "linf"
    label = "L∞"

    def _project_delta(self, delta, x, eps):
        return tf.clip_by_value(delta, -eps, eps)

    def _uniform_delta(self, x, eps, seed):
        return tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed) * eps

    def ascent_direction(self, grad):
        return tf.sign(grad)

    @staticmethod
    def _flat_norm(flat):
        return tf.reduce_max(tf.abs(flat), axis=1)

    @staticmethod
    def _flat_norm_np(flat):
        return np.abs(flat).max(axis=1) if flat.shape[1] else np.zeros(len(flat))

    def unbounded_eps(self, input_shape):
        return float(self.bounds[1] - self.bounds[0])


@keras.saving.register_keras_serializable(package="robustkit")
class L2(ThreatModel):
    """L2 ball: ``||x_adv - x||_2 <= eps`` per example.

    Example:

    >>> tm = L2(0.5)
    >>> tm.norm, tm.label
    ('l2', 'L2')
    """

    norm = "l2"
    label = "L2"

    def _project_delta(self, delta, x, eps):
        n = tf.reshape(self._flat_norm(_flatten(delta)), [-1] + [1] * (delta.shape.rank - 1))
        return delta * tf.minimum(1.0, eps / tf.maximum(n, TINY))

    def _uniform_delta(self, x, eps, seed):
        # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
        direction = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
        n = tf.reshape(self._flat_norm(_flatten(direction)), [-1] + [1] * (x.shape.rank - 1))
        d = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        u = tf.random.uniform([tf.shape(x)[0]] + [1] * (x.shape.rank - 1), dtype=x.dtype, seed=seed)
        return direction / tf.maximum(n, TINY) * eps * tf.pow(u, 1.0 / d)

    def ascent_direction(self, grad):
        n = tf.reshape(self._flat_norm(_flatten(grad)), [-1] + [1] * (grad.shape.rank - 1))
        return grad / tf.maximum(n, TINY)

    @staticmethod
    def _flat_norm(flat):
        return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))

    @staticmethod
    def _flat_norm_np(flat):
        return np.sqrt((flat**2).sum(axis=1))

    def unbounded_eps(self, input_shape):
        return float(self.bounds[1] - self.bounds[0]) * math.sqrt(math.prod(input_shape))


def project_l1_box(delta, x, eps, lo=0.0, hi=1.0):
    """Euclidean projection of ``delta`` onto ``{d : ||d||_1 <= eps, lo <= x + d <= hi}``.

    Row-wise on flat ``(B, D)`` tensors with ``lo <= x <= hi``; ``eps`` is a scalar or (B,).
    The solution is ``d_i = sign(delta_i) * clip(|delta_i| - lam, 0, u_i)`` with ``u_i`` the
    room to the box in the direction of ``delta_i`` and the smallest ``lam >= 0`` that meets
    the budget. ``g(lam) = sum_i clip(|delta_i| - lam, 0, u_i)`` is piecewise linear and
    non-increasing with breakpoints at ``|delta_i|`` and ``|delta_i| - u_i``: the breakpoints
    are sorted, the segment where ``g`` crosses ``eps`` is found by counting, and ``lam`` is
    solved exactly on it (Duchi et al. 2008 extended to the box, as APGD-L1 does).

    Example:

    >>> import numpy as np
    >>> d = project_l1_box(np.array([[0.6, -0.3, 0.1]], "float32"),
    ...                    np.full((1, 3), 0.8, "float32"), 0.5)
    >>> [round(float(v), 4) for v in d[0]]       # the box caps the first at 1 - 0.8; lam = 0.05
    [0.2, -0.25, 0.05]
    """
    delta = tf.convert_to_tensor(delta, tf.float32)
    x = tf.convert_to_tensor(x, tf.float32)
    a = tf.abs(delta)
    room = tf.where(delta >= 0, hi - x, x - lo)
    u = tf.clip_by_value(room, 0.0, a)  # a coordinate never moves past |delta_i| nor the box
    eps = tf.cast(tf.convert_to_tensor(eps), tf.float32)
    eps = tf.broadcast_to(tf.reshape(eps, [-1]), [tf.shape(delta)[0]])
    total = tf.reduce_sum(u, axis=1)  # g(0)
    # g(t) = sum_i clip(a_i - t, 0, u_i): coordinate i drops with slope -1 on [a_i - u_i, a_i].
    points = tf.concat([a - u, a], axis=1)
    marks = tf.concat([tf.ones_like(a), -tf.ones_like(a)], axis=1)
    order = tf.argsort(points, axis=1, stable=True)
    p = tf.gather(points, order, batch_dims=1)  # breakpoints, ascending (all >= 0)
    dropping = tf.cumsum(tf.gather(marks, order, batch_dims=1), axis=1)  # just after p_j
    fall = tf.cumsum(dropping[:, :-1] * (p[:, 1:] - p[:, :-1]), axis=1)
    g = total[:, None] - tf.concat([tf.zeros_like(p[:, :1]), fall], axis=1)  # g(p_j)
    # g is non-increasing: the last breakpoint with g >= eps starts the segment holding lam.
    j = tf.maximum(tf.reduce_sum(tf.cast(g >= eps[:, None], tf.int32), axis=1) - 1, 0)
    p_j = tf.gather(p, j, batch_dims=1)
    g_j = tf.gather(g, j, batch_dims=1)
    slope = tf.maximum(tf.gather(dropping, j, batch_dims=1), 1.0)
    lam = tf.where(total > eps, p_j + (g_j - eps) / slope, tf.zeros_like(p_j))
    out = tf.sign(delta) * tf.clip_by_value(a - lam[:, None], 0.0, u)
    # float safety: never exceed the budget
    n1 = tf.reduce_sum(tf.abs(out), axis=1)
    scale = tf.where(n1 > eps, eps / tf.maximum(n1, TINY), tf.ones_like(n1))
    return out * scale[:, None]


@keras.saving.register_keras_serializable(package="robustkit")
class L1(ThreatModel):
    """L1 ball: ``||x_adv - x||_1 <= eps`` per example, intersected with the box.

    The projection is the exact Euclidean projection onto the L1 ball intersected with the
    box (:func:`project_l1_box`). The steepest-ascent step is sparse, as in APGD-L1
    (Croce & Hein, "Mind the box", ICML 2021): ``sign(grad)`` on the coordinates whose
    ``|grad|`` is among the top ``sparsity`` fraction (at least one), scaled to unit L1 norm.

    Args:
        eps: radius (CIFAR-10: 12; MNIST: 10).
        sparsity: default fraction of coordinates a step moves (0.01; APGD-L1 passes its
            own adaptive per-example fraction).
        bounds: the input box.

    Example:

    >>> import numpy as np
    >>> tm = L1(2.0)
    >>> g = np.array([[[[0.1]], [[-3.0]], [[0.5]], [[0.2]]]], "float32")   # (1, 4, 1, 1)
    >>> tm.ascent_direction(g).numpy().ravel().tolist()
    [0.0, -1.0, 0.0, 0.0]
    """

    norm = "l1"
    label = "L1"

    def __init__(self, eps, sparsity=0.01, bounds=(0.0, 1.0)):
        super().__init__(eps, bounds)
        sparsity = check_positive(sparsity, "sparsity")
        if sparsity > 1:
            raise ValueError(f"`sparsity` must be in (0, 1]; got {sparsity!r}.")
        self.sparsity = sparsity

    def _project_delta(self, delta, x, eps):
        flat_eps = tf.reshape(eps, [-1]) if eps.shape.rank else eps
        lo, hi = self.bounds
        out = project_l1_box(_flatten(delta), _flatten(x), flat_eps, lo, hi)
        return tf.reshape(out, tf.shape(delta))

    def _uniform_delta(self, x, eps, seed):
        # APGD-L1's start: a Gaussian draw projected onto the ball (the projection is applied
        # by the caller), scaled so that it reaches the sphere.
        t = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
        n = tf.reshape(self._flat_norm(_flatten(t)), [-1] + [1] * (x.shape.rank - 1))
        return t / tf.maximum(n, TINY) * eps

    def step(self, x_adv, grad, step_size, sparsity=None):
        """The sparse step from ``x_adv``: coordinates already at the box's edge in the
        direction of their gradient cannot move and are not counted (box-aware, as in
        APGD-L1), so the step's mass goes where it can act."""
        x_adv, grad = _tensor(x_adv), _tensor(grad)
        direction = self.ascent_direction(grad, sparsity, x=x_adv)
        return x_adv + _per_example(step_size, x_adv) * direction

    def ascent_direction(self, grad, sparsity=None, x=None):
        if x is not None:  # box-aware: saturated coordinates cannot move that way
            lo, hi = self.bounds
            blocked = tf.logical_or(
                tf.logical_and(x >= hi - 1e-7, grad > 0), tf.logical_and(x <= lo + 1e-7, grad < 0)
            )
            grad = tf.where(blocked, tf.zeros_like(grad), grad)
        flat = _flatten(grad)
        d = tf.shape(flat)[1]
        frac = self.sparsity if sparsity is None else sparsity
        frac = tf.reshape(tf.cast(tf.convert_to_tensor(frac), tf.float32), [-1, 1])
        k = tf.clip_by_value(
            tf.cast(tf.math.ceil(frac * tf.cast(d, tf.float32)), tf.int32), 1, d
        )  # (B or 1, 1)
        mag = tf.abs(flat)
        sorted_mag = tf.sort(mag, axis=1, direction="DESCENDING")
        kth = tf.gather(sorted_mag, tf.broadcast_to(k - 1, [tf.shape(flat)[0], 1]), batch_dims=1)
        chosen = tf.logical_and(mag >= kth, mag > 0)
        direction = tf.where(chosen, tf.sign(flat), 0.0)
        n = tf.reduce_sum(tf.abs(direction), axis=1, keepdims=True)
        return tf.reshape(direction / tf.maximum(n, 1.0), tf.shape(grad))

    @staticmethod
    def _flat_norm(flat):
        return tf.reduce_sum(tf.abs(flat), axis=1)

    @staticmethod
    def _flat_norm_np(flat):
        return np.abs(flat).sum(axis=1)

    def unbounded_eps(self, input_shape):
        return float(self.bounds[1] - self.bounds[0]) * math.prod(input_shape)

    def get_config(self):
        config = super().get_config()
        if self.sparsity != 0.01:
            config["sparsity"] = self.sparsity
        return config
