"""The threat-model base class: an eps-ball of one norm intersected with the input box.

Example:

>>> from robustkit.threat import Linf
>>> Linf(0.1, bounds=(0, 255)).bounds
(0.0, 255.0)
"""

import math

import numpy as np
import tensorflow as tf

from robustkit._validation import check_positive

TINY = 1e-12

#: default radius per (data set, norm): SPEC section 1 (MNIST 0.3 / 2.0, CIFAR-10 8/255 / 0.5),
#: Croce & Hein 2021 for L1 (CIFAR-10 12, MNIST 10); ``digits`` is the embedded 8x8 set
DEFAULT_EPS = {
    "digits": {"linf": 0.1, "l2": 0.5, "l1": 2.0},
    "mnist": {"linf": 0.3, "l2": 2.0, "l1": 10.0},
    "fashion_mnist": {"linf": 0.1, "l2": 1.5, "l1": 10.0},
    "cifar10": {"linf": 8 / 255, "l2": 0.5, "l1": 12.0},
    "cifar100": {"linf": 8 / 255, "l2": 0.5, "l1": 12.0},
    "svhn_cropped": {"linf": 8 / 255, "l2": 0.5, "l1": 12.0},
    "tiny_imagenet": {"linf": 8 / 255, "l2": 0.5, "l1": 12.0},
}
#: the radius used for data sets not in :data:`DEFAULT_EPS` (the CIFAR-10 values)
FALLBACK_EPS = DEFAULT_EPS["cifar10"]


def _per_example(value, x):
    """Broadcasts a scalar or per-example vector to ``x``'s rank."""
    value = tf.cast(tf.convert_to_tensor(value), x.dtype)
    if value.shape.rank == 1:
        return tf.reshape(value, [-1] + [1] * (x.shape.rank - 1))
    return value


def _tensor(t):
    """Numpy or tensor in, float tensor out (the public methods accept both)."""
    if isinstance(t, (tf.Tensor, tf.Variable)):
        return t
    return tf.convert_to_tensor(t, tf.float32)


def _flatten(t):
    return tf.reshape(t, [tf.shape(t)[0], -1])


def _check_bounds(bounds):
    try:
        lo, hi = (float(b) for b in bounds)
    except (TypeError, ValueError):
        raise ValueError(f"`bounds` must be a pair (lo, hi) of numbers; got {bounds!r}.") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"`bounds` must be finite with lo < hi; got {bounds!r}.")
    return lo, hi


class ThreatModel:
    """Base class: an eps-ball of one norm, intersected with the box ``bounds``.

    Args:
        eps: radius, in the units of the inputs.
        bounds: ``(lo, hi)`` of valid inputs (default ``(0, 1)``).

    Subclasses implement the norm-specific pieces; everything else is shared.
    """

    #: the norm's name ("linf", "l2", "l1")
    norm = None
    #: how reports write it
    label = None

    def __init__(self, eps, bounds=(0.0, 1.0)):
        self.eps = check_positive(eps, "eps")
        self.bounds = _check_bounds(bounds)

    # ----------------------------------------------------------------- geometry
    def _eps(self, eps, x):
        return _per_example(self.eps if eps is None else eps, x)

    def clip(self, x):
        """``x`` clipped into the box ``bounds``."""
        lo, hi = self.bounds
        return tf.clip_by_value(_tensor(x), lo, hi)

    def project(self, x_adv, x, eps=None):
        """Projects ``x_adv`` onto the eps-ball around ``x`` and into the box."""
        x_adv, x = _tensor(x_adv), _tensor(x)
        delta = self._project_delta(x_adv - x, x, self._eps(eps, x))
        return self.clip(x + delta)

    def random_start(self, x, eps=None, kind="uniform", seed=None):
        """Returns a random starting point inside the ball (and the box).

        ``kind="uniform"``: uniform in the eps-ball (Madry et al.; for L1 a random point
        of the ball as APGD-L1 draws it); ``kind="normal"``: ``x + 0.001 * N(0, 1)`` as in
        the TRADES/MART/NAMID code; ``kind="none"``: ``x`` itself.
        """
        x = _tensor(x)
        if kind == "none":
            return tf.identity(x)
        if kind == "normal":
            noise = 0.001 * tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
            return self.project(x + noise, x, eps)
        if kind == "uniform":
            delta = self._uniform_delta(x, self._eps(eps, x), seed)
            return self.project(x + delta, x, eps)
        raise ValueError(
            f"Unknown `random_start` {kind!r}; expected 'uniform', 'normal' or 'none'."
        )

    def step(self, x_adv, grad, step_size, **kwargs):
        """One steepest-ascent step of size ``step_size`` (not projected)."""
        x_adv, grad = _tensor(x_adv), _tensor(grad)
        direction = self.ascent_direction(grad, **kwargs)
        return x_adv + _per_example(step_size, x_adv) * direction

    def norm_of(self, delta):
        """Per-example norm of ``delta`` (a tensor), shape (B,)."""
        return self._flat_norm(_flatten(_tensor(delta)))

    def norm_np(self, delta):
        """Per-example norm of ``delta`` (numpy, float64), shape (B,)."""
        delta = np.asarray(delta, dtype=np.float64)
        return self._flat_norm_np(delta.reshape(len(delta), -1))

    def contains(self, x_adv, x, eps=None, tol=1e-5):
        """Boolean per example: ``x_adv`` lies in the ball and in the box."""
        x_adv, x = _tensor(x_adv), _tensor(x)
        eps_t = tf.reshape(self._eps(eps, x), [-1]) if eps is not None else self.eps
        inside = self.norm_of(x_adv - x) <= eps_t * (1 + 1e-4) + tol
        flat = _flatten(x_adv)
        lo, hi = self.bounds
        in_box = tf.logical_and(
            tf.reduce_min(flat, axis=1) >= lo - tol, tf.reduce_max(flat, axis=1) <= hi + tol
        )
        return tf.logical_and(inside, in_box)

    def contains_np(self, x_adv, x, eps=None, tol=1e-6):
        """Numpy version of :meth:`contains` (the evaluator's eps-ball check)."""
        x_adv = np.asarray(x_adv)
        eps = self.eps if eps is None else float(eps)
        inside = self.norm_np(x_adv - np.asarray(x)) <= eps * (1 + 1e-4) + tol
        flat = x_adv.reshape(len(x_adv), -1)
        lo, hi = self.bounds
        if flat.shape[1] == 0:
            return inside
        in_box = (flat.min(axis=1) >= lo - 1e-5) & (flat.max(axis=1) <= hi + 1e-5)
        return inside & in_box

    def unbounded_eps(self, input_shape):
        """A radius whose ball covers the whole box (for the "unbounded eps" masking check)."""
        raise NotImplementedError

    # ------------------------------------------------------------ serialisation
    def get_config(self):
        config = {"eps": self.eps}
        if self.bounds != (0.0, 1.0):
            config["bounds"] = list(self.bounds)
        return config

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        extra = "" if self.bounds == (0.0, 1.0) else f", bounds={self.bounds}"
        return f"{type(self).__name__}(eps={self.eps:g}{extra})"
