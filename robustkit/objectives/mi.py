"""MI-based defenses: WMIM and NAMID (Zhou et al., ICML 2022) with its TRADES / MART variants.

Example:

>>> import numpy as np, robustkit as rk
>>> est = rk.estimators.MIEstimator((8, 8, 1), 10, features=8, pattern="standard")
>>> obj = rk.objectives.WMIM(est, alpha=5.0)
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> logits = np.zeros((4, 10), "float32")
>>> total, parts = obj(np.array([0, 1, 2, 3]), logits, x=x, x_adv=x)
>>> sorted(parts)
['ce', 'mi']

NAMID loss (paper, Sec. 3):
``L = CE(h(x~), y) + alpha * L_mi`` with, over the selected samples,
``L_mi = L_cos(E_n(h(x~')), E_n(h(x'))) + L_cos(E_a(h(x~')), E_a(h(x'))) +
lam * mean(E_a(h(x~')) - E_n(h(x~')))``, ``L_cos(a, b) = |1 - cos(a, b)|`` the
cosine across the batch of per-sample MI estimates, ``alpha = 5``, ``lam = 0.1``.
The estimators are frozen (inference mode, not trained by the model's
optimizer) and read the pattern images through ``stop_gradient``: gradients
reach the model only through its logits. NAMID_T / NAMID_M replace the CE term by
the TRADES / MART loss. WMIM: ``CE(h(x~), y) - alpha * mean I(x~; h(x~))``.

Measured caveat (8x8 digits, PGD-AT target, L-inf eps 0.1, 4 epochs): with the
paper's stage-2 objective and ``alpha = 5`` the MI term dominated the CE term
(clean / PGD-10 accuracy 29 / 18 % vs 99 / 79 % for PGD-AT); ``alpha = 1`` gave
97-98 / 70-74 %, and estimators trained with the ``"cosine"`` objective gave
86-99 / 59-79 %. The culprit is the ``lam * (E_a - E_n)`` term: with stages 1-2
fixed (MNIST 28x28, eps 0.3, ``alpha = 0.2``) NAMID reached 44.8 / 6.4 % clean /
PGD-40 with ``lam = 0.1`` and 92.2 / 39.0 % with ``lam = 0`` (PGD-AT 92.6 / 38.0),
and a validation split picks ``lam = 0`` on MNIST and ``0.01`` on CIFAR-10
(``benchmarks/table1.py --alpha-grid ... --lam-grid ...``). The paper's defaults
are kept; choose ``alpha`` and ``lam`` on validation data, or use
``objective="cosine"`` in stage 2, if the CE term is swamped.

The estimators come from stage 2
(:func:`robustkit.estimators.train_namid_estimators`); the whole pipeline is
:func:`robustkit.namid_pipeline.run`.

Cost (``benchmarks/train_speed.py --rows namid,wmim``; results in
``benchmarks/results/train_speed_mi*.md``): per training step the defenses add
to PGD-AT only the frozen estimators' forward pass on the pattern images and
their backward pass to the logits (the local branches are cut from the gradient
tape), and for NAMID the clean forward in training mode with its backward (the
``L_cos`` terms differentiate ``h(x')`` too, as TRADES does). The attack and the
two model forwards are the training step's own. The estimators' cost does not
depend on the classifier: with the paper's 2048-wide estimators it is small
next to a ResNet-18 PGD-10 step on CIFAR-10 (NAMID 1.1-1.3x, WMIM ~1.0x a
PGD-AT epoch) but several times a small MNIST CNN's step (NAMID 6-13x, WMIM
4-7x); narrower estimators (``features=``) are an option, not the paper's
setting.
"""

import os

import keras
import tensorflow as tf

from robustkit._validation import check_choice, check_non_negative
from robustkit.estimators.namid import (
    MIEstimator,
    load_estimators,
    pack_estimator,
    unpack_estimator,
)
from robustkit.objectives.core import Objective, _ce, _mean, mart_loss, trades_loss

SELECT = ("wrong", "correct", "all")


def l_cos(a, b, mask=None):
    """``|1 - cos(a, b)|`` with the cosine taken across the batch (masked entries dropped).

    Example:

    >>> import numpy as np
    >>> round(float(l_cos(np.array([1., 2.]), np.array([2., 4.]))), 6)
    0.0
    >>> round(float(l_cos(np.array([1., 0.]), np.array([0., 1.]))), 6)
    1.0
    """
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    if mask is not None:
        m = tf.cast(mask, tf.float32)
        a, b = a * m, b * m
    num = tf.reduce_sum(a * b)
    den = tf.sqrt(tf.reduce_sum(a * a) * tf.reduce_sum(b * b) + 1e-12)
    return tf.abs(1.0 - num / den)


def selection_mask(kind, y, logits_clean, logits_adv, sample_weight=None):
    """Per-example weights of the samples the MI term uses (no gradient).

    ``"wrong"``: clean-correct and adversarially wrong (the set W NAMID's
    estimators are trained on); ``"correct"``: clean-correct (C); ``"all"``.
    """
    y = tf.cast(tf.reshape(y, [-1]), tf.int64)
    ones = tf.ones_like(y, tf.float32)
    if kind == "all":
        mask = ones
    else:
        correct = tf.equal(tf.argmax(logits_clean, -1), y)
        if kind == "wrong":
            correct = tf.logical_and(correct, tf.not_equal(tf.argmax(logits_adv, -1), y))
        mask = tf.cast(correct, tf.float32)
    if sample_weight is not None:
        mask = mask * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    return tf.stop_gradient(mask)


def namid_mi_loss(
    natural, adversarial, x, x_adv, logits_clean, logits_adv, mask, lam=0.1, mi_floor=0.0
):
    """NAMID's ``L_mi`` and its parts (natural / adversarial MI of ``h(x~)``).

    ``mi_floor``: in the ``lam`` term the adversarial-MI estimates are clamped
    below at this value (default 0: MI is non-negative, and a frozen DV
    estimator can be driven to arbitrarily negative values by the model's
    logits, which then swamps the CE term); ``None`` uses the raw estimates
    (the paper's formula verbatim).

    Returns ``(l_mi, parts)`` with parts ``cos_n``, ``cos_a``, ``natural_mi``,
    ``adversarial_mi`` (raw means over the selected samples).
    """
    en_adv, en_nat = natural.mi_pair(x, x_adv, logits_adv, logits_clean, training=False)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=False)
    cos_n = l_cos(en_adv, en_nat, mask)
    cos_a = l_cos(ea_adv, ea_nat, mask)
    n_sel = tf.maximum(tf.reduce_sum(mask), 1e-12)
    natural_mi = tf.reduce_sum(en_adv * mask) / n_sel
    adversarial_mi = tf.reduce_sum(ea_adv * mask) / n_sel
    ea_term = ea_adv if mi_floor is None else tf.maximum(ea_adv, float(mi_floor))
    l_mi = cos_n + cos_a + lam * (tf.reduce_sum(ea_term * mask) / n_sel - natural_mi)
    return l_mi, {
        "cos_n": cos_n,
        "cos_a": cos_a,
        "natural_mi": natural_mi,
        "adversarial_mi": adversarial_mi,
    }


def _unpack(value):
    if isinstance(value, MIEstimator) or value is None:
        return value
    if isinstance(value, dict) and "weights" in value:
        return unpack_estimator(value)
    raise ValueError(f"Cannot read an estimator from {type(value).__name__}.")


class _NAMIDBase(Objective):
    """Shared machinery of NAMID, NAMID_T and NAMID_M."""

    needs_clean_logits = True

    def __init__(
        self,
        natural_estimator=None,
        adversarial_estimator=None,
        alpha=5.0,
        lam=0.1,
        select="wrong",
        estimators_path=None,
        mi_floor=0.0,
    ):
        if estimators_path is not None:
            if natural_estimator is not None or adversarial_estimator is not None:
                raise ValueError("Pass either the estimators or `estimators_path`, not both.")
            if not os.path.isdir(estimators_path):
                raise ValueError(f"`estimators_path` {estimators_path!r} is not a directory.")
            natural_estimator, adversarial_estimator = load_estimators(estimators_path)
        natural_estimator = _unpack(natural_estimator)
        adversarial_estimator = _unpack(adversarial_estimator)
        for est, name, kind in (
            (natural_estimator, "natural_estimator", "natural"),
            (adversarial_estimator, "adversarial_estimator", "adversarial"),
        ):
            if not isinstance(est, MIEstimator):
                raise ValueError(
                    f"`{name}` must be a trained robustkit.estimators.MIEstimator (stage 2: "
                    "rk.estimators.train_namid_estimators); got "
                    f"{type(est).__name__}."
                )
            if est.pattern != kind:
                raise ValueError(f"`{name}` reads the {est.pattern!r} pattern; expected {kind!r}.")
            est.trainable = False
        self.natural_estimator = natural_estimator
        self.adversarial_estimator = adversarial_estimator
        self.alpha = check_non_negative(alpha, "alpha")
        self.lam = check_non_negative(lam, "lam")
        self.select = check_choice(select, set(SELECT), "select")
        self.estimators_path = estimators_path
        self.mi_floor = None if mi_floor is None else float(mi_floor)

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        raise NotImplementedError

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        if logits_clean is None or x is None or x_adv is None:
            raise ValueError(f"{type(self).__name__} needs `logits_clean`, `x` and `x_adv`.")
        base, parts = self.base_loss(y, logits_adv, logits_clean, sample_weight)
        mask = selection_mask(self.select, y, logits_clean, logits_adv, sample_weight)
        l_mi, mi_parts = namid_mi_loss(
            self.natural_estimator,
            self.adversarial_estimator,
            x,
            x_adv,
            logits_clean,
            logits_adv,
            mask,
            self.lam,
            self.mi_floor,
        )
        parts = dict(parts)
        parts["l_mi"] = l_mi
        parts.update(mi_parts)
        return base + self.alpha * l_mi, parts

    def get_config(self):
        config = {
            "alpha": self.alpha,
            "lam": self.lam,
            "select": self.select,
            "mi_floor": self.mi_floor,
        }
        if self.estimators_path:
            config["estimators_path"] = self.estimators_path
        else:
            config["natural_estimator"] = pack_estimator(self.natural_estimator)
            config["adversarial_estimator"] = pack_estimator(self.adversarial_estimator)
        return config

    def __repr__(self):
        return (
            f"{type(self).__name__}(alpha={self.alpha!r}, lam={self.lam!r}, "
            f"select={self.select!r}, features={self.natural_estimator.features})"
        )


_MI_PARTS = ("l_mi", "cos_n", "cos_a", "natural_mi", "adversarial_mi")
_ARGS_DOC = """
    Args:
        natural_estimator, adversarial_estimator: the frozen stage-2 estimators
            (:func:`robustkit.estimators.train_namid_estimators`).
        alpha: weight of ``L_mi`` (5, the paper).
        lam: weight of ``E_a(h(x~')) - E_n(h(x~'))`` inside ``L_mi`` (0.1).
        select: which samples ``L_mi`` uses: ``"wrong"`` (clean-correct and
            adversarially wrong, as in stage 2; default), ``"correct"`` or ``"all"``.
        estimators_path: instead of the estimators, a folder written by
            :func:`robustkit.estimators.save_estimators`; the config then stores
            the path, otherwise it embeds the estimators' weights (base64).
        mi_floor: clamp of the adversarial-MI estimates in the ``lam`` term
            (default 0, since MI >= 0; ``None``: the paper's formula verbatim).
            Without it the model learns to drive the frozen estimator's output
            to large negative values and the CE term is swamped (observed on
            digits: clean accuracy ~20 %).
"""


@keras.saving.register_keras_serializable(package="robustkit")
class NAMID(_NAMIDBase):
    (
        """NAMID: ``CE(h(x~), y) + alpha * L_mi`` (Zhou et al., ICML 2022); inner attack CE-PGD.
    """
        + _ARGS_DOC
        + """
    Example:

    >>> import robustkit as rk
    >>> nat = rk.estimators.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.estimators.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.objectives.NAMID(nat, adv).parts[:2]
    ('ce', 'l_mi')
    """
    )

    name = "namid"
    parts = ("ce",) + _MI_PARTS

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        ce = _mean(_ce(y, logits_adv), sample_weight)
        return ce, {"ce": ce}


class _BetaNAMID(_NAMIDBase):
    """NAMID with a TRADES / MART base loss: adds that loss's ``beta``."""

    def __init__(
        self,
        natural_estimator=None,
        adversarial_estimator=None,
        beta=6.0,
        alpha=5.0,
        lam=0.1,
        select="wrong",
        estimators_path=None,
        mi_floor=0.0,
    ):
        super().__init__(
            natural_estimator, adversarial_estimator, alpha, lam, select, estimators_path, mi_floor
        )
        self.beta = check_non_negative(beta, "beta")

    def get_config(self):
        config = super().get_config()
        config["beta"] = self.beta
        return config


@keras.saving.register_keras_serializable(package="robustkit")
class NAMID_T(_BetaNAMID):
    (
        """NAMID_T: the TRADES loss plus ``alpha * L_mi``; inner attack: TRADES' KL-PGD
    from ``x + 0.001 N(0, 1)``.

    Args:
        beta: TRADES' weight (6; the paper does not report NAMID_T's).
    """
        + _ARGS_DOC
        + """
    Example:

    >>> import robustkit as rk
    >>> nat = rk.estimators.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.estimators.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.objectives.NAMID_T(nat, adv, beta=6.0).attack_loss
    'kl'
    """
    )

    name = "namid_t"
    attack_loss = "kl"
    attack_start = "normal"
    parts = ("natural", "kl") + _MI_PARTS

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        return trades_loss(y, logits_adv, logits_clean, self.beta, sample_weight)


@keras.saving.register_keras_serializable(package="robustkit")
class NAMID_M(_BetaNAMID):
    (
        """NAMID_M: the MART loss plus ``alpha * L_mi``; inner attack CE-PGD from
    ``x + 0.001 N(0, 1)``.

    Args:
        beta: MART's weight (6 WRN, 5 ResNet-18; default 6).
    """
        + _ARGS_DOC
        + """
    Example:

    >>> import robustkit as rk
    >>> nat = rk.estimators.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.estimators.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.objectives.NAMID_M(nat, adv, beta=5.0).beta
    5.0
    """
    )

    name = "namid_m"
    attack_start = "normal"
    parts = ("bce", "kl") + _MI_PARTS

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        return mart_loss(y, logits_adv, logits_clean, self.beta, sample_weight)


@keras.saving.register_keras_serializable(package="robustkit")
class WMIM(Objective):
    """WMIM (the NAMID paper's baseline): AT plus maximising the standard MI,
    ``CE(h(x~), y) - alpha * mean I(x~; h(x~))``.

    The standard-MI estimator has NAMID's architecture with the local branch on
    ``x~`` (:class:`robustkit.estimators.MIEstimator` with ``pattern="standard"``),
    trained in stage 2 by plain DV maximisation on the AT target
    (:func:`robustkit.estimators.train_standard_estimator`) and frozen here, so
    gradients reach the model only through its logits.

    Args:
        estimator: the frozen standard-MI estimator.
        alpha: weight of the MI term (default 5, NAMID's alpha; the paper does
            not report WMIM's).
        estimators_path: instead of ``estimator``, a folder holding
            ``standard.keras`` (see :func:`robustkit.estimators.save_estimators`).

    Example:

    >>> import robustkit as rk
    >>> est = rk.estimators.MIEstimator((8, 8, 1), 10, features=8, pattern="standard")
    >>> rk.objectives.WMIM(est).alpha
    5.0
    """

    name = "wmim"
    parts = ("ce", "mi")

    def __init__(self, estimator=None, alpha=5.0, estimators_path=None):
        if estimators_path is not None:
            if estimator is not None:
                raise ValueError("Pass either `estimator` or `estimators_path`, not both.")
            if not os.path.isdir(estimators_path):
                raise ValueError(f"`estimators_path` {estimators_path!r} is not a directory.")
            (estimator,) = load_estimators(estimators_path, names=("standard",))
        estimator = _unpack(estimator)
        if not isinstance(estimator, MIEstimator) or estimator.pattern != "standard":
            raise ValueError(
                "`estimator` must be a robustkit.estimators.MIEstimator with "
                "pattern='standard' (rk.estimators.train_standard_estimator); got "
                f"{estimator!r}."
            )
        estimator.trainable = False
        self.estimator = estimator
        self.alpha = check_non_negative(alpha, "alpha")
        self.estimators_path = estimators_path

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        if x is None or x_adv is None:
            raise ValueError("WMIM needs `x` and `x_adv`.")
        ce = _mean(_ce(y, logits_adv), sample_weight)
        mi = _mean(self.estimator.mi(x, x_adv, logits_adv, training=False), sample_weight)
        return ce - self.alpha * mi, {"ce": ce, "mi": mi}

    def get_config(self):
        config = {"alpha": self.alpha}
        if self.estimators_path:
            config["estimators_path"] = self.estimators_path
        else:
            config["estimator"] = pack_estimator(self.estimator)
        return config

    def __repr__(self):
        return f"WMIM(alpha={self.alpha!r}, features={self.estimator.features})"
