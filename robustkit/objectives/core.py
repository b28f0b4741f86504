"""Training objectives: pure loss functions plus small classes holding hyperparameters.

Every loss function takes tensors and returns ``(total, parts)``: a scalar mean
over the batch and a dict of named scalar parts for logging. The classes add
what the training step needs to know: which loss the inner attack maximises and
from which random start, and whether the clean logits are needed.

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

from robustkit._validation import check_non_negative


def _ce(y, logits):
    return tf.nn.sparse_softmax_cross_entropy_with_logits(
        labels=tf.cast(y, tf.int32), logits=tf.cast(logits, tf.float32)
    )


def _kl_rows(logits_p, logits_q):
    """Per-example ``KL(softmax(p) || softmax(q))``."""
    logits_p = tf.cast(logits_p, tf.float32)
    logits_q = tf.cast(logits_q, tf.float32)
    log_p = tf.nn.log_softmax(logits_p)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(logits_q)), axis=-1)


def _mean(values, sample_weight=None):
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_sum(values * w) / tf.maximum(tf.reduce_sum(w), 1e-12)


def at_loss(y, logits_adv, sample_weight=None):
    """Standard adversarial training (Madry et al.): ``CE(h(x~), y)``.

    Example:

    >>> import numpy as np
    >>> total, parts = at_loss(np.array([0]), np.array([[0.0, 0.0]], "float32"))
    >>> round(float(total), 4)   # log 2
    0.6931
    """
    ce = _mean(_ce(y, logits_adv), sample_weight)
    return ce, {"ce": ce}


def trades_loss(y, logits_adv, logits_clean, beta=6.0, sample_weight=None):
    """TRADES (Zhang et al., 2019): ``CE(h(x), y) + beta * mean KL(p || p~)``.

    Example:

    >>> import numpy as np
    >>> same = np.array([[1.0, 0.0]], "float32")
    >>> total, parts = trades_loss(np.array([0]), same, same)
    >>> round(float(parts["kl"]), 6)
    0.0
    """
    natural = _mean(_ce(y, logits_clean), sample_weight)
    kl = _mean(_kl_rows(logits_clean, logits_adv), sample_weight)
    return natural + beta * kl, {"natural": natural, "kl": kl}


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
    y = tf.cast(y, tf.int32)
    logits_adv = tf.cast(logits_adv, tf.float32)
    logits_clean = tf.cast(logits_clean, tf.float32)
    p_adv = tf.nn.softmax(logits_adv)
    num_classes = tf.shape(logits_adv)[-1]
    onehot = tf.one_hot(y, num_classes)
    # most probable wrong class under p~
    wrong = tf.argmax(p_adv - onehot * 2.0, axis=-1, output_type=tf.int32)
    wrong_p = tf.reduce_sum(tf.one_hot(wrong, num_classes) * p_adv, axis=-1)
    bce_rows = _ce(y, logits_adv) - tf.math.log(1.0001 - wrong_p)
    p_true = tf.reduce_sum(onehot * tf.nn.softmax(logits_clean), axis=-1)
    kl_rows = _kl_rows(logits_clean, logits_adv) * (1.0 - p_true)
    bce = _mean(bce_rows, sample_weight)
    kl = _mean(kl_rows, sample_weight)
    return bce + beta * kl, {"bce": bce, "kl": kl}


class Objective:
    """Base class of a training objective.

    Attributes read by :class:`robustkit.RobustModel`:
        parts: names of the parts ``__call__`` returns (each logged as a metric).
        attack_loss: the loss the inner attack maximises (``"ce"`` or ``"kl"``).
        attack_start: the inner attack's random start (``"uniform"``, ``"normal"``,
            ``"none"``), or ``None`` to keep the attack's own.
        needs_clean_logits: whether ``__call__`` uses ``h(x)``.

    ``__call__(y, logits_adv, logits_clean=None, x=None, x_adv=None,
    sample_weight=None) -> (total, parts)``.
    """

    attack_loss = "ce"
    attack_start = None
    needs_clean_logits = False
    name = "objective"
    #: names of the parts returned by ``__call__`` (logged as metrics)
    parts = ()

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        raise NotImplementedError

    def get_config(self):
        return {}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


@keras.saving.register_keras_serializable(package="robustkit")
class AT(Objective):
    """Standard adversarial training: cross-entropy on PGD examples (CE-PGD inside).

    Example:

    >>> import robustkit as rk
    >>> rk.objectives.AT().attack_loss
    'ce'
    """

    name = "standard"
    parts = ("ce",)

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        return at_loss(y, logits_adv, sample_weight)


@keras.saving.register_keras_serializable(package="robustkit")
class TRADES(Objective):
    """TRADES: natural CE plus ``beta`` times KL to the adversarial prediction.

    The inner attack maximises the same KL from ``x + 0.001 N(0, 1)`` (the
    TRADES code). ``beta = 6`` on CIFAR-10; 1 to 10 is the useful range.

    Example:

    >>> import robustkit as rk
    >>> obj = rk.objectives.TRADES(beta=6.0)
    >>> obj.attack_loss, obj.attack_start
    ('kl', 'normal')
    """

    attack_loss = "kl"
    attack_start = "normal"
    needs_clean_logits = True
    name = "trades"
    parts = ("natural", "kl")

    def __init__(self, beta=6.0):
        self.beta = check_non_negative(beta, "beta")

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        return trades_loss(y, logits_adv, logits_clean, self.beta, sample_weight)

    def get_config(self):
        return {"beta": self.beta}


@keras.saving.register_keras_serializable(package="robustkit")
class MART(Objective):
    """MART: boosted CE on misclassification-aware KL (inner attack: CE-PGD).

    The MART code starts the inner PGD from ``x + 0.001 N(0, 1)``. ``beta = 6``
    (WRN), 5 (ResNet-18).

    Example:

    >>> import robustkit as rk
    >>> rk.objectives.MART(beta=5.0).beta
    5.0
    """

    attack_loss = "ce"
    attack_start = "normal"
    needs_clean_logits = True
    name = "mart"
    parts = ("bce", "kl")

    def __init__(self, beta=6.0):
        self.beta = check_non_negative(beta, "beta")

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        return mart_loss(y, logits_adv, logits_clean, self.beta, sample_weight)

    def get_config(self):
        return {"beta": self.beta}
