"""Threat models: the norm ball an adversary may move in, and everything that depends on the norm.

A threat model is the only place in robustkit that knows a norm. It projects onto the eps-ball
intersected with the valid input box ``bounds`` (default ``(0, 1)``), draws random starts, takes
the steepest-ascent step for a gradient, measures per-example norms (TensorFlow and numpy), gives
the radius that covers the whole box (the gradient-masking check's "unbounded" eps), the label
used in reports and the default radius per data set. An attack (PGD, MIM, APGD, ...) composes a
threat model with its own objective and schedule, so PGD under L-inf, L2 and L1 is one algorithm
with three threat models.

Example:

>>> import numpy as np, robustkit as rk
>>> tm = rk.threat.Linf(eps=0.1)
>>> x = np.full((2, 4, 4, 1), 0.5, "float32")
>>> x_adv = tm.project(x + 0.3, x)            # back inside the ball
>>> float(np.abs(x_adv - x).max())
0.1...
>>> rk.threat.get("l1", 2.0).norm_np(np.ones((1, 2, 2, 1))).tolist()
[4.0]

``eps`` may be overridden per call with a Python number, a scalar tensor (e.g. a
``keras.Variable`` ramped by a warm-up callback), or a vector with one radius per example.

Adding a norm: subclass :class:`ThreatModel` (``norm``, ``label``, ``_project_delta``,
``_uniform_delta``, ``ascent_direction``, ``_flat_norm``, ``_flat_norm_np``,
``unbounded_eps``), register it in :data:`NORMS` and give its radii in :data:`DEFAULT_EPS`;
then let each attack that supports it list it in its ``supported_norms``.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_choice, check_positive

_TINY = 1e-12

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
        return delta * tf.minimum(1.0, eps / tf.maximum(n, _TINY))

    def _uniform_delta(self, x, eps, seed):
        # Uniform in the L2 ball: Gaussian direction, radius eps * U^(1/d).
        direction = tf.random.normal(tf.shape(x), dtype=x.dtype, seed=seed)
        n = tf.reshape(self._flat_norm(_flatten(direction)), [-1] + [1] * (x.shape.rank - 1))
        d = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
        u = tf.random.uniform([tf.shape(x)[0]] + [1] * (x.shape.rank - 1), dtype=x.dtype, seed=seed)
        return direction / tf.maximum(n, _TINY) * eps * tf.pow(u, 1.0 / d)

    def ascent_direction(self, grad):
        n = tf.reshape(self._flat_norm(_flatten(grad)), [-1] + [1] * (grad.shape.rank - 1))
        return grad / tf.maximum(n, _TINY)

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
    scale = tf.where(n1 > eps, eps / tf.maximum(n1, _TINY), tf.ones_like(n1))
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
        return t / tf.maximum(n, _TINY) * eps

    def ascent_direction(self, grad, sparsity=None):
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


#: norm name -> threat-model class
NORMS = {"linf": Linf, "l2": L2, "l1": L1}


def get(norm, eps, bounds=None):
    """Returns the threat model for ``norm`` ("linf", "l2" or "l1") with radius ``eps``.

    A :class:`ThreatModel` is returned as it is.

    Example:

    >>> get("l2", 0.5)
    L2(eps=0.5)
    """
    if isinstance(norm, ThreatModel):
        return norm
    key = check_choice(norm, set(NORMS), "norm")
    return NORMS[key](eps) if bounds is None else NORMS[key](eps, bounds=bounds)


def label(norm):
    """How reports write a norm: ``"L∞"``, ``"L2"``, ``"L1"``.

    Example:

    >>> label("linf")
    'L∞'
    """
    return NORMS[check_choice(norm, set(NORMS), "norm")].label


def norm_np(delta, norm):
    """Per-example ``norm`` of a numpy batch (float64), shape (B,)."""
    cls = NORMS[check_choice(norm, set(NORMS), "norm")]
    delta = np.asarray(delta, dtype=np.float64)
    return cls._flat_norm_np(delta.reshape(len(delta), -1))


def norm_of(delta, norm):
    """Per-example ``norm`` of a tensor batch, shape (B,)."""
    cls = NORMS[check_choice(norm, set(NORMS), "norm")]
    return cls._flat_norm(_flatten(_tensor(delta)))


def default_eps(norm, dataset=None, input_shape=None):
    """The customary radius of ``norm`` for a data set (SPEC section 1).

    MNIST is recognised by ``dataset`` or, failing that, by a 28x28x1 input; unknown data
    sets get the CIFAR-10 values.

    Example:

    >>> default_eps("linf", input_shape=(28, 28, 1)), default_eps("l2", dataset="cifar10")
    (0.3, 0.5)
    """
    norm = check_choice(norm, set(NORMS), "norm")
    key = (dataset or "").lower()
    if key not in DEFAULT_EPS and dataset is None and input_shape is not None:
        if tuple(input_shape) == (28, 28, 1):
            key = "mnist"
        elif tuple(input_shape) == (8, 8, 1):
            key = "digits"
    return DEFAULT_EPS.get(key, FALLBACK_EPS)[norm]


__all__ = [
    "DEFAULT_EPS",
    "L1",
    "L2",
    "NORMS",
    "Linf",
    "ThreatModel",
    "default_eps",
    "get",
    "label",
    "norm_np",
    "norm_of",
    "project_l1_box",
]
