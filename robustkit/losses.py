"""Per-example losses shared by attacks and training objectives.

Every function takes tensors (or arrays) and returns one value per example, shape ``(B,)``,
in float32. Attacks ascend them; objectives average them. This is the only place in robustkit
that writes cross-entropy, the KL divergence between predictions, the CW margin, DLR and the
reconstruction error.

Example:

>>> import numpy as np
>>> from robustkit import losses
>>> z = np.array([[2.0, 0.0, -1.0]], "float32")
>>> round(float(losses.margin(z, np.array([0]))[0]), 4)      # max_{j != y} z_j - z_y
-2.0
>>> round(float(losses.cross_entropy(np.zeros((1, 2), "float32"), np.array([1]))[0]), 4)
0.6931
"""

import tensorflow as tf

from robustkit._validation import check_choice

_TINY = 1e-12


def _f32(t):
    return tf.cast(tf.convert_to_tensor(t), tf.float32)


def cross_entropy(logits, y):
    """``-log softmax(z)_y`` per example.

    Example:

    >>> import numpy as np
    >>> round(float(cross_entropy(np.array([[0.0, 0.0]], "float32"), np.array([0]))[0]), 4)
    0.6931
    """
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=_f32(logits)
    )


def true_and_other(logits, y):
    """``(z_y, max_{j != y} z_j)`` per example."""
    logits = _f32(logits)
    onehot = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1]) > 0
    true = tf.reduce_max(tf.where(onehot, logits, -float("inf")), axis=-1)
    other = tf.reduce_max(tf.where(onehot, -float("inf"), logits), axis=-1)
    return true, other


def margin(logits, y):
    """The CW margin ``max_{j != y} z_j - z_y``: positive once ``y`` is not the top class.

    Example:

    >>> import numpy as np
    >>> float(margin(np.array([[1.0, 3.0]], "float32"), np.array([0]))[0])
    2.0
    """
    true, other = true_and_other(logits, y)
    return other - true


def kl(clean_logits, logits):
    """``KL(softmax(clean) || softmax(logits))`` per example (TRADES' divergence).

    Example:

    >>> import numpy as np
    >>> z = np.array([[1.0, -1.0]], "float32")
    >>> float(kl(z, z)[0])
    0.0
    """
    log_p = tf.nn.log_softmax(_f32(clean_logits))
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(_f32(logits))), axis=-1)


def dlr(logits, y):
    """Difference-of-logits-ratio loss (Croce & Hein 2020, eq. 4), untargeted.

    ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` with ``z_pi1 >= z_pi2 >= ...`` the sorted
    logits; invariant to shifting and scaling the logits. Needs >= 3 classes.

    Example:

    >>> import numpy as np
    >>> z = np.array([[4.0, 1.0, 0.0, -1.0]], "float32")
    >>> round(float(dlr(z, np.array([0]))[0]), 4)   # -(4 - 1) / (4 - 0)
    -0.75
    """
    logits = _f32(logits)
    top = tf.math.top_k(logits, k=3).values
    true, other = true_and_other(logits, y)
    return -(true - other) / (top[:, 0] - top[:, 2] + _TINY)


def dlr_targeted(logits, y, target):
    """Targeted DLR (Croce & Hein 2020, eq. 5): ``-(z_y - z_t) / (z_pi1 - (z_pi3 + z_pi4) / 2)``.

    Needs >= 4 classes.

    Example:

    >>> import numpy as np
    >>> z = np.array([[4.0, 1.0, 0.0, -1.0]], "float32")
    >>> round(float(dlr_targeted(z, np.array([0]), np.array([1]))[0]), 4)  # -3 / 4.5
    -0.6667
    """
    logits = _f32(logits)
    top = tf.math.top_k(logits, k=4).values
    z_y = tf.gather(logits, tf.cast(y, tf.int64), batch_dims=1)
    z_t = tf.gather(logits, tf.cast(target, tf.int64), batch_dims=1)
    return -(z_y - z_t) / (top[:, 0] - 0.5 * (top[:, 2] + top[:, 3]) + _TINY)


def reconstruction(x, recon):
    """Squared L2 reconstruction error per example (summed over pixels).

    Example:

    >>> import numpy as np
    >>> x = np.zeros((1, 2, 2, 1), "float32")
    >>> float(reconstruction(x, x + 0.5)[0])
    1.0
    """
    x, recon = _f32(x), _f32(recon)
    axes = list(range(1, x.shape.rank))
    return tf.reduce_sum(tf.square(x - recon), axis=axes)


#: the losses an attack can ascend by name (``loss=`` of PGD and the training protocol)
ATTACK_LOSSES = ("ce", "margin", "kl", "dlr")


def attack_loss(name, logits, y, clean_logits=None):
    """Per-example loss ``name`` an attack ascends: ``"ce"``, ``"margin"``, ``"kl"``
    (needs ``clean_logits``) or ``"dlr"``.

    Example:

    >>> import numpy as np
    >>> float(attack_loss("margin", np.array([[1.0, 3.0]], "float32"), np.array([0]))[0])
    2.0
    """
    if name == "ce":
        return cross_entropy(logits, y)
    if name == "margin":
        return margin(logits, y)
    if name == "kl":
        if clean_logits is None:
            raise ValueError("loss='kl' needs the clean logits.")
        return kl(clean_logits, logits)
    if name == "dlr":
        return dlr(logits, y)
    check_choice(name, set(ATTACK_LOSSES), "loss")
    raise AssertionError  # pragma: no cover


def check_loss(name):
    """``name`` if it is one of :data:`ATTACK_LOSSES`, else a ``ValueError`` naming ``loss``."""
    return check_choice(name, set(ATTACK_LOSSES), "loss")


__all__ = [
    "ATTACK_LOSSES",
    "attack_loss",
    "check_loss",
    "cross_entropy",
    "dlr",
    "dlr_targeted",
    "kl",
    "margin",
    "reconstruction",
    "true_and_other",
]
