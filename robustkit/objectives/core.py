"""Standard AT, TRADES and MART: per-example functions over :mod:`robustkit.losses`, each
wrapped in a small class that holds its hyperparameters and its inner attack.

Every ``*_loss`` function takes tensors and returns ``(total, parts)``: a scalar mean over the
batch (weighted by ``sample_weight``) and a dict of named scalar parts for logging. The
classes are :class:`~robustkit.objectives.base.LossObjective` wrappers of the per-example
versions (``*_per_example``).

Example:

>>> import numpy as np, robustkit as rk
>>> y = np.array([0, 1])
>>> clean = np.array([[2.0, 0.0], [0.0, 1.0]], "float32")
>>> adv = np.array([[1.0, 1.0], [1.0, 0.0]], "float32")
>>> total, parts = rk.objectives.TRADES(beta=6.0)(y, adv, clean)
>>> sorted(parts)
['kl', 'natural']
"""

import keras
import tensorflow as tf

from robustkit import losses
from robustkit._validation import check_non_negative
from robustkit.objectives.base import (
    InnerAttack,
    LossObjective,
    Objective,
    reduce_loss,
)


# ------------------------------------------------------------ per-example losses
def at_per_example(y, logits_adv, logits_clean=None):
    """Madry et al.: ``CE(h(x~), y)`` per example."""
    ce = losses.cross_entropy(logits_adv, y)
    return ce, {"ce": ce}


def trades_per_example(y, logits_adv, logits_clean, beta=6.0):
    """TRADES per example: ``CE(h(x), y) + beta * KL(p || p~)``."""
    natural = losses.cross_entropy(logits_clean, y)
    kl = losses.kl(logits_clean, logits_adv)
    return natural + beta * kl, {"natural": natural, "kl": kl}


def mart_per_example(y, logits_adv, logits_clean, beta=6.0):
    """MART per example: ``BCE + beta * KL(p || p~) * (1 - p_y(x))`` (see :func:`mart_loss`)."""
    _, wrong_p = losses.true_and_other(tf.nn.softmax(tf.cast(logits_adv, tf.float32)), y)
    bce = losses.cross_entropy(logits_adv, y) - tf.math.log(1.0001 - wrong_p)
    p_true, _ = losses.true_and_other(tf.nn.softmax(tf.cast(logits_clean, tf.float32)), y)
    kl = losses.kl(logits_clean, logits_adv) * (1.0 - p_true)
    return bce + beta * kl, {"bce": bce, "kl": kl}


# -------------------------------------------------------------- batch losses
def at_loss(y, logits_adv, sample_weight=None):
    """Standard adversarial training (Madry et al.): ``CE(h(x~), y)``.

    Example:

    >>> import numpy as np
    >>> total, parts = at_loss(np.array([0]), np.array([[0.0, 0.0]], "float32"))
    >>> round(float(total), 4)   # log 2
    0.6931
    """
    return reduce_loss(at_per_example(y, logits_adv), sample_weight)


def trades_loss(y, logits_adv, logits_clean, beta=6.0, sample_weight=None):
    """TRADES (Zhang et al., 2019): ``CE(h(x), y) + beta * mean KL(p || p~)``.

    Example:

    >>> import numpy as np
    >>> same = np.array([[1.0, 0.0]], "float32")
    >>> total, parts = trades_loss(np.array([0]), same, same)
    >>> round(float(parts["kl"]), 6)
    0.0
    """
    return reduce_loss(trades_per_example(y, logits_adv, logits_clean, beta), sample_weight)


def mart_loss(y, logits_adv, logits_clean, beta=6.0, sample_weight=None):
    """MART (Wang et al., 2020).

    ``BCE = CE(h(x~), y) + NLL(log(1.0001 - p~), y_hat)`` with ``y_hat`` the most
    probable wrong class under ``p~``; total ``= BCE + beta * mean[KL(p || p~) *
    (1 - p_y(x))]``.

    Example:

    >>> import numpy as np
    >>> logits = np.array([[3.0, 0.0, 0.0]], "float32")
    >>> total, parts = mart_loss(np.array([0]), logits, logits)
    >>> sorted(parts)
    ['bce', 'kl']
    """
    return reduce_loss(mart_per_example(y, logits_adv, logits_clean, beta), sample_weight)


# --------------------------------------------------------------------- classes
@keras.saving.register_keras_serializable(package="robustkit")
class AT(LossObjective):
    """Standard adversarial training: cross-entropy on the inner attack's examples.

    Example:

    >>> import robustkit as rk
    >>> rk.objectives.AT().inner
    InnerAttack(loss='ce', start=None)
    """

    name = "standard"
    parts = ("ce",)
    inner = InnerAttack(loss="ce")

    def __init__(self):
        super().__init__(at_per_example)


@keras.saving.register_keras_serializable(package="robustkit")
class TRADES(LossObjective):
    """TRADES: natural CE plus ``beta`` times KL to the adversarial prediction.

    The inner attack maximises the same KL from ``x + 0.001 N(0, 1)`` (the
    TRADES code). ``beta = 6`` on CIFAR-10; 1 to 10 is the useful range.

    Example:

    >>> import robustkit as rk
    >>> obj = rk.objectives.TRADES(beta=6.0)
    >>> obj.attack_loss, obj.attack_start
    ('kl', 'normal')
    """

    inner = InnerAttack(loss="kl", start="normal")
    needs_clean_logits = True
    name = "trades"
    parts = ("natural", "kl")

    def __init__(self, beta=6.0):
        super().__init__(trades_per_example, beta=check_non_negative(beta, "beta"))


@keras.saving.register_keras_serializable(package="robustkit")
class MART(LossObjective):
    """MART: boosted CE on misclassification-aware KL (inner attack: CE-PGD).

    The MART code starts the inner PGD from ``x + 0.001 N(0, 1)``. ``beta = 6``
    (WRN), 5 (ResNet-18).

    Example:

    >>> import robustkit as rk
    >>> rk.objectives.MART(beta=5.0).beta
    5.0
    """

    inner = InnerAttack(loss="ce", start="normal")
    needs_clean_logits = True
    name = "mart"
    parts = ("bce", "kl")

    def __init__(self, beta=6.0):
        super().__init__(mart_per_example, beta=check_non_negative(beta, "beta"))


__all__ = [
    "AT",
    "MART",
    "TRADES",
    "Objective",
    "at_loss",
    "at_per_example",
    "mart_loss",
    "mart_per_example",
    "trades_loss",
    "trades_per_example",
]
