"""Threat models: the norm ball an adversary may move in.

A threat model knows its geometry and nothing about attacks: how to project onto
the eps-ball intersected with the valid image box [0, 1], how to draw a random
start, and which direction is the steepest ascent for a given gradient. An attack
(PGD, MIM, APGD, ...) composes one of these with its own objective and schedule,
so PGD under L-inf and under L2 is one algorithm with two threat models.

Example:

>>> import numpy as np, robustkit as rk
>>> tm = rk.threat.Linf(eps=0.1)
>>> x = np.full((2, 4, 4, 1), 0.5, "float32")
>>> x_adv = tm.project(x + 0.3, x)            # back inside the ball
>>> float(np.abs(x_adv - x).max())
0.1...

``eps`` may be overridden per call with a Python number, a scalar tensor (e.g. a
``keras.Variable`` ramped by a warm-up callback), or a vector with one radius per
example.
"""

import keras
import tensorflow as tf

from robustkit._validation import check_choice, check_positive

_TINY = 1e-12


def _per_example(value, x):
    """Broadcasts a scalar or per-example vector to ``x``'s rank."""
    value = tf.cast(tf.convert_to_tensor(value), x.dtype)
    if value.shape.rank == 1:
        return tf.reshape(value, [-1] + [1] * (x.shape.rank - 1))
    return value


def _tensor(t):
    """Numpy or tensor in, tensor out (the public methods accept both)."""
    return t if isinstance(t, (tf.Tensor, tf.Variable)) else tf.convert_to_tensor(t)


def _flat_norm(t, order):
    """Per-example norm of a batch tensor, shape (B,)."""
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    if order == "l2":
        return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))
    if order == "l1":
        return tf.reduce_sum(tf.abs(flat), axis=1)
    return tf.reduce_max(tf.abs(flat), axis=1)


class ThreatModel:
    """Base class: an eps-ball of one norm, intersected with the box [0, 1].

    Subclasses implement ``_project_delta``, ``_uniform_delta`` and
    ``ascent_direction``; everything else is shared.
    """

    norm = None

    def __init__(self, eps):
        self.eps = check_positive(eps, "eps")

    # ----------------------------------------------------------------- geometry
    def _eps(self, eps, x):
        return _per_example(self.eps if eps is None else eps, x)

    def project(self, x_adv, x, eps=None):
        """Projects ``x_adv`` onto the eps-ball around ``x`` and into [0, 1]."""
        x_adv, x = _tensor(x_adv), _tensor(x)
        delta = self._project_delta(x_adv - x, self._eps(eps, x))
        return tf.clip_by_value(x + delta, 0.0, 1.0)

    def random_start(self, x, eps=None, kind="uniform", seed=None):
        """Returns a random starting point inside the ball.

        ``kind="uniform"``: uniform in the eps-ball (Madry et al.);
        ``kind="normal"``: ``x + 0.001 * N(0, 1)`` as in the TRADES/MART/NAMID code;
        ``kind="none"``: ``x`` itself.
        """
        x = _tensor(x)
        if kind == "none":
            return tf.identity(x)
        if kind == "normal":
            noise = 0.001 * tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
            return tf.clip_by_value(x + noise, 0.0, 1.0)
        if kind == "uniform":
            delta = self._uniform_delta(x, self._eps(eps, x), seed)
            return tf.clip_by_value(x + delta, 0.0, 1.0)
        raise ValueError(
            f"Unknown `random_start` {kind!r}; expected 'uniform', 'normal' or 'none'."
        )

    def step(self, x_adv, grad, step_size):
        """One steepest-ascent step of size ``step_size`` (not projected)."""
        x_adv, grad = _tensor(x_adv), _tensor(grad)
        return x_adv + _per_example(step_size, x_adv) * self.ascent_direction(grad)

    def norm_of(self, delta):
        """Per-example norm of ``delta`` in this threat model's norm, shape (B,)."""
        delta = _tensor(delta)
        return _flat_norm(delta, self.norm)

    def contains(self, x_adv, x, eps=None, tol=1e-5):
        """Boolean per example: ``x_adv`` lies in the ball and in [0, 1]."""
        x_adv, x = _tensor(x_adv), _tensor(x)
        eps_t = tf.reshape(self._eps(eps, x), [-1]) if eps is not None else self.eps
        inside = self.norm_of(x_adv - x) <= eps_t + tol
        flat = tf.reshape(x_adv, [tf.shape(x_adv)[0], -1])
        in_box = tf.logical_and(
            tf.reduce_min(flat, axis=1) >= -tol, tf.reduce_max(flat, axis=1) <= 1 + tol
        )
        return tf.logical_and(inside, in_box)

    # ------------------------------------------------------------ serialisation
    def get_config(self):
        return {"eps": self.eps}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        return f"{type(self).__name__}(eps={self.eps:g})"


@keras.saving.register_keras_serializable(package="robustkit")
class Linf(ThreatModel):
    """L-infinity ball: ``max |x_adv - x| <= eps``.

    Example:

    >>> tm = Linf(8 / 255)
    >>> tm.norm
    'linf'
    """

    norm = "linf"

    def _project_delta(self, delta, eps):
        return tf.clip_by_value(delta, -eps, eps)

    def _uniform_delta(self, x, eps, seed):
        return tf.random.uniform(tf.shape(x), -1.0, 1.0, dtype=x.dtype, seed=seed) * eps

    def ascent_direction(self, grad):
        return tf.sign(grad)


@keras.saving.register_keras_serializable(package="robustkit")
class L2(ThreatModel):
    """L2 ball: ``||x_adv - x||_2 <= eps`` per example.

    Example:

    >>> tm = L2(0.5)
    >>> tm.norm
    'l2'
    """

    norm = "l2"

    def _project_delta(self, delta, eps):
        n = tf.reshape(_flat_norm(delta, "l2"), [-1] + [1] * (delta.shape.rank - 1))
        factor = tf.minimum(1.0, eps / tf.maximum(n, _TINY))
        return delta * factor

    def _uniform_delta(self, x, eps, seed):
        # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
        direction = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
        n = tf.reshape(_flat_norm(direction, "l2"), [-1] + [1] * (x.shape.rank - 1))
        d = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        u = tf.random.uniform(
            [tf.shape(x)[0]] + [1] * (x.shape.rank - 1), dtype=x.dtype, seed=seed
        )
        return direction / tf.maximum(n, _TINY) * eps * tf.pow(u, 1.0 / d)

    def ascent_direction(self, grad):
        n = tf.reshape(_flat_norm(grad, "l2"), [-1] + [1] * (grad.shape.rank - 1))
        return grad / tf.maximum(n, _TINY)


_NORMS = {"linf": Linf, "l2": L2}


def get(norm, eps):
    """Returns the threat model for ``norm`` ("linf" or "l2") with radius ``eps``.

    Example:

    >>> get("l2", 0.5)
    L2(eps=0.5)
    """
    if isinstance(norm, ThreatModel):
        return norm
    key = check_choice(norm, set(_NORMS), "norm")
    return _NORMS[key](eps)
