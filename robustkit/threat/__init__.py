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

Adding a norm: subclass :class:`ThreatModel` in :mod:`robustkit.threat.norms` (``norm``,
``label``, ``_project_delta``, ``_uniform_delta``, ``ascent_direction``, ``_flat_norm``,
``_flat_norm_np``, ``unbounded_eps``), register it in :data:`NORMS` and give its radii in
:data:`DEFAULT_EPS` (``robustkit/threat/base.py``); then let each attack that supports it list
it in its ``supported_norms``.
"""

import numpy as np

from robustkit._validation import check_choice
from robustkit.threat.base import DEFAULT_EPS, FALLBACK_EPS, ThreatModel, _flatten, _tensor
from robustkit.threat.norms import L1, L2, Linf, project_l1_box

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
