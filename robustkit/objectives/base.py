"""The objective protocol: what :class:`robustkit.RobustModel` needs from a training loss.

An objective is called as ``objective(y, logits_adv, logits_clean=None, x=None, x_adv=None,
sample_weight=None) -> (total, parts)``: a scalar loss and a dict of named scalar parts (each
logged as a metric). It declares the inner attack it wants in one field, :attr:`Objective.inner`
(an :class:`InnerAttack`: the loss the attack ascends and its random start), and whether it
uses the training-mode clean logits (``needs_clean_logits``).

Most objectives are a per-example function of logits plus hyperparameters:
:class:`LossObjective` wraps one (the Keras ``LossFunctionWrapper`` pattern): the function
returns per-example values, the wrapper averages them with ``sample_weight`` once, and the
config is the function's keyword arguments.

Example:

>>> import numpy as np
>>> from robustkit import losses
>>> def ce_plus_margin(y, logits_adv, logits_clean, weight=1.0):
...     ce, m = losses.cross_entropy(logits_adv, y), losses.margin(logits_adv, y)
...     return ce + weight * m, {"ce": ce, "margin": m}
>>> class CEMargin(LossObjective):
...     parts = ("ce", "margin")
...     inner = InnerAttack(loss="margin")
...     def __init__(self, weight=1.0):
...         super().__init__(ce_plus_margin, weight=weight)
>>> obj = CEMargin(weight=0.5)
>>> total, parts = obj(np.array([0]), np.array([[1.0, 1.0]], "float32"))
>>> round(float(total), 4), obj.attack_loss, obj.get_config()
(0.6931, 'margin', {'weight': 0.5})
"""

import dataclasses

import tensorflow as tf

from robustkit import losses

#: the random starts an objective may ask of its inner attack (``None``: the attack's own)
STARTS = (None, "uniform", "normal", "none")


@dataclasses.dataclass(frozen=True)
class InnerAttack:
    """What an objective asks of the inner (training) attack.

    Args:
        loss: the per-example loss the attack ascends, a name from
            :data:`robustkit.losses.ATTACK_LOSSES` (``"ce"``, ``"kl"``, ...).
        start: the random start, ``"uniform"``, ``"normal"`` (``x + 0.001 N(0, 1)``),
            ``"none"``, or ``None`` to keep the attack's own.

    Example:

    >>> InnerAttack(loss="kl", start="normal")
    InnerAttack(loss='kl', start='normal')
    """

    loss: str = "ce"
    start: object = None

    def __post_init__(self):
        losses.check_loss(self.loss)
        if self.start not in STARTS:
            raise ValueError(f"Unknown `start` {self.start!r}; expected one of {list(STARTS)}.")


def weighted_mean(values, sample_weight=None):
    """The mean of per-example ``values``, weighted by ``sample_weight`` when given.

    Example:

    >>> float(weighted_mean([1.0, 3.0], sample_weight=[1.0, 0.0]))
    1.0
    """
    values = tf.cast(tf.convert_to_tensor(values), tf.float32)
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_sum(values * w) / tf.maximum(tf.reduce_sum(w), 1e-12)


def reduce_loss(per_example, sample_weight=None):
    """``(total, parts)`` of per-example values -> their (weighted) batch means.

    Example:

    >>> total, parts = reduce_loss(([1.0, 3.0], {"a": [0.0, 2.0]}))
    >>> float(total), float(parts["a"])
    (2.0, 1.0)
    """
    total, parts = per_example
    means = {name: weighted_mean(value, sample_weight) for name, value in parts.items()}
    return weighted_mean(total, sample_weight), means


class Objective:
    """Base class of a training objective (see the module docstring).

    Attributes read by :class:`robustkit.RobustModel`:
        inner: an :class:`InnerAttack`, the inner attack's loss and random start.
        needs_clean_logits: whether ``__call__`` uses the clean logits ``h(x)``
            (computed in training mode, with gradient).
        parts: names of the parts ``__call__`` returns (each logged as a metric).
        name: the defence name recorded in exports.

    ``attack_loss`` and ``attack_start`` read (and set) ``inner.loss`` / ``inner.start``; a
    subclass that still declares them as class attributes gets its ``inner`` built from them.
    """

    inner = InnerAttack()
    needs_clean_logits = False
    name = "objective"
    #: names of the parts returned by ``__call__`` (logged as metrics)
    parts = ()

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        legacy = {k: cls.__dict__[k] for k in ("attack_loss", "attack_start") if k in cls.__dict__}
        if legacy and "inner" not in cls.__dict__:
            cls.inner = InnerAttack(
                loss=legacy.get("attack_loss", cls.inner.loss),
                start=legacy.get("attack_start", cls.inner.start),
            )
        for key in legacy:
            delattr(cls, key)

    @property
    def attack_loss(self):
        """The loss the inner attack ascends (``inner.loss``)."""
        return self.inner.loss

    @attack_loss.setter
    def attack_loss(self, value):
        self.inner = dataclasses.replace(self.inner, loss=value)

    @property
    def attack_start(self):
        """The inner attack's random start (``inner.start``; ``None``: the attack's own)."""
        return self.inner.start

    @attack_start.setter
    def attack_start(self, value):
        self.inner = dataclasses.replace(self.inner, start=value)

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


class LossObjective(Objective):
    """An objective made of a per-example function (the Keras ``LossFunctionWrapper`` pattern).

    Args:
        fn: ``fn(y, logits_adv, logits_clean, **kwargs) -> (total, parts)`` with per-example
            values, shape ``(B,)``, for ``total`` and every part.
        **kwargs: the hyperparameters passed to ``fn`` on every call; they are the config.

    ``__call__`` averages ``total`` and each part over the batch, weighted by
    ``sample_weight`` (:func:`reduce_loss`), so subclasses only name their function, parts,
    inner attack and argument checks.
    """

    def __init__(self, fn, **kwargs):
        self.fn = fn
        self._fn_kwargs = kwargs

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        return reduce_loss(self.fn(y, logits_adv, logits_clean, **self._fn_kwargs), sample_weight)

    def __getattr__(self, name):
        # hyperparameters read as attributes (``TRADES(beta=6.0).beta``)
        kwargs = self.__dict__.get("_fn_kwargs", {})
        if name in kwargs:
            return kwargs[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_config(self):
        return dict(self._fn_kwargs)


__all__ = ["STARTS", "InnerAttack", "LossObjective", "Objective", "reduce_loss", "weighted_mean"]
