"""What the minimal-norm L2 attacks (CW, DDN) share: the L2 norm, the optional radius, the box.

A minimal-norm attack looks for the smallest perturbation that fools the model; it has no
radius of its own. With ``eps`` given, an example whose smallest perturbation found is larger
than ``eps`` counts as not fooled: :func:`select_within` returns its clean input, and the
evaluator checks the outputs against the L2 ball (``norm = "l2"``, ``eps``).

Example:

>>> import numpy as np, robustkit as rk
>>> tm = rk.threat.L2(0.5)
>>> x = np.zeros((2, 2, 2, 1), "float32")
>>> x_adv = x + np.array([0.1, 0.3], "float32")[:, None, None, None]   # L2 0.2 and 0.6
>>> [round(float(v), 2) for v in select_within(x, x_adv, tm).numpy()[:, 0, 0, 0]]
[0.1, 0.0]
"""

import tensorflow as tf

from robustkit import threat as threat_lib
from robustkit.attacks import engine
from robustkit.attacks.base import Attack

#: relative slack of :func:`select_within` (float32 norms of points found at the radius)
WITHIN_RTOL = 1e-6


def select_within(x, x_adv, threat):
    """``x_adv`` where it lies in ``threat``'s ball around ``x``, else ``x``.

    ``threat`` is a :class:`robustkit.threat.ThreatModel` or ``None`` (no radius: ``x_adv``
    as it is). The test is ``threat.norm_of(x_adv - x) <= eps * (1 + 1e-6)``.
    """
    if threat is None:
        return x_adv
    x, x_adv = tf.convert_to_tensor(x, tf.float32), tf.convert_to_tensor(x_adv, tf.float32)
    keep = threat.norm_of(x_adv - x) <= threat.eps * (1 + WITHIN_RTOL)
    return tf.where(tf.reshape(keep, engine.per_example_shape(x)), x_adv, x)


class MinimalNormL2(Attack):
    """Base of CW and DDN: ``norm = "l2"``, an optional ``eps`` and the box ``bounds``.

    ``threat`` is the L2 threat model of radius ``eps`` (``None`` without ``eps``); the box
    is kept in ``bounds`` either way. ``any_norm=True`` (not with ``eps``) declares that a
    success counts at any norm: the attack then has no ``norm``, so an evaluator holds its
    outputs to no radius (the NAMID release's counting: accuracy on the returned points).

    >>> from robustkit.evaluation.suites import threat_of
    >>> threat_of(MinimalNormL2()), threat_of(MinimalNormL2(any_norm=True))
    (('l2', None), (None, None))
    """

    norm = "l2"
    supported_norms = ("l2",)

    def __init__(self, eps=None, bounds=(0.0, 1.0), any_norm=False, **kwargs):
        super().__init__(**kwargs)
        self.any_norm = bool(any_norm)
        if self.any_norm and eps is not None:
            raise ValueError("`any_norm=True` counts success at any norm: it takes no `eps`.")
        if self.any_norm:  # no norm for an evaluator to hold the outputs to
            self.norm = None
        # an L2 threat model of any radius validates the box; the attack keeps only the box
        # when it has no radius
        self._box = threat_lib.L2(1.0, bounds=bounds).bounds
        self.threat = None if eps is None else self._make_threat("l2", eps, self._box)
        self.eps = None if self.threat is None else self.threat.eps

    @property
    def bounds(self):
        return self._box

    def get_config(self):
        config = super().get_config()
        config["eps"] = self.eps
        if self.any_norm:
            config["any_norm"] = True
        if self._box != (0.0, 1.0):
            config["bounds"] = list(self._box)
        return config

    def _finish(self, x, x_adv):
        """The result: ``x_adv`` within the radius (else ``x``), gradient stopped."""
        return tf.stop_gradient(select_within(x, x_adv, self.threat))


__all__ = ["MinimalNormL2", "select_within"]
