"""The attack criteria of the MINE attacks: ``f(x + delta) <= 0`` means success.

Both are written on :mod:`robustkit.losses`: the CW margin (``true_and_other``) for
classifiers, the reconstruction error (``reconstruction``) for autoencoders. A criterion is
``(x, output_adv, y, output_clean) -> (f, success)``; its ``maximize_mi`` attribute says
whether the attack keeps the successful point with the largest MI (supervised) or the
smallest (unsupervised UAEs).

Example:

>>> import numpy as np
>>> from robustkit.mine import supervised_criterion
>>> f, ok = supervised_criterion()(None, np.array([[2.0, 1.0]], "float32"), np.array([0]), None)
>>> float(f[0]), bool(ok[0])
(1.0, False)
"""

import tensorflow as tf

from robustkit import losses

CRITERIA = ("supervised", "unsupervised")


def supervised_criterion(kappa=0.0, targeted=False):
    """CW margin criterion on logits; ``f <= 0`` (strictly: margin < 0) is success.

    Untargeted: ``f = max(0, Z_y - max_{j != y} Z_j + kappa)``; targeted (``y`` is
    the target): ``f = max(0, max_{j != t} Z_j - Z_t + kappa)``.

    >>> import numpy as np
    >>> z = np.array([[1.0, 3.0, 0.0]], "float32")
    >>> f, ok = supervised_criterion(kappa=0.5, targeted=True)(None, z, np.array([1]), None)
    >>> float(f[0]), bool(ok[0])          # 1 - 3 + 0.5 < 0
    (0.0, True)
    """
    kappa = float(kappa)

    def criterion(x, logits, y, clean):
        true, other = losses.true_and_other(logits, y)
        raw = (other - true if targeted else true - other) + kappa
        return tf.maximum(0.0, raw), raw < 0.0

    criterion.maximize_mi = True
    return criterion


def unsupervised_criterion():
    """Autoencoder reconstruction criterion ``max(0, |x - AE(x+d)|^2 - |x - AE(x)|^2)``
    (squared L2 summed over pixels); ``f = 0`` is success.

    >>> import numpy as np
    >>> x = np.zeros((1, 2, 2, 1), "float32")
    >>> f, ok = unsupervised_criterion()(x, x + 0.5, None, x + 0.1)
    >>> round(float(f[0]), 4), bool(ok[0])
    (0.96, False)
    """

    def criterion(x, recon_adv, y, recon_clean):
        raw = losses.reconstruction(x, recon_adv) - losses.reconstruction(x, recon_clean)
        return tf.maximum(0.0, raw), raw <= 0.0

    criterion.maximize_mi = False
    return criterion


__all__ = ["CRITERIA", "supervised_criterion", "unsupervised_criterion"]
