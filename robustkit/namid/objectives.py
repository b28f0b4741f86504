"""MI-based defenses: WMIM and NAMID (Zhou et al., ICML 2022) with its TRADES / MART variants.

Example:

>>> import numpy as np, robustkit as rk
>>> est = rk.namid.MIEstimator((8, 8, 1), 10, features=8, pattern="standard")
>>> obj = rk.namid.WMIM(est, alpha=5.0)
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> logits = np.zeros((4, 10), "float32")
>>> total, parts = obj(np.array([0, 1, 2, 3]), logits, x=x, x_adv=x)
>>> sorted(parts)
['ce', 'mi']

NAMID loss (Zhou et al., "Improving adversarial robustness via mutual information
estimation", ICML 2022, Sec. 3): ``L = CE(h(x~), y) + alpha * L_mi`` with, over the
selected samples (W: clean-correct and adversarially wrong),
``L_mi = L_cos(E_n(h(x~')), E_n(h(x'))) + L_cos(E_a(h(x~')), E_a(h(x'))) +
lam * mean(E_a(h(x~')) - E_n(h(x~')))``, ``L_cos(a, b) = |1 - cos(a, b)|`` the
cosine across the batch of per-sample MI estimates, ``alpha = 5``. The defaults are the
released code's (``train_MIAT.py``): ``lam = 0``, i.e. ``CE(h(x~), y) + 5 (L_cos_n +
L_cos_a)``, ``L_mi = 0`` when W is empty; the ``lam`` term (the paper: 0.1) is paper-only.
The release trains stage 3 with PGD-40 (step 0.007 at eps 8/255, start ``x + 0.001 N(0,
1)``): :func:`robustkit.namid.release_attack`, the default of the pipeline.
The estimators (stage 2, :func:`robustkit.namid.train_namid_estimators`) are frozen
(inference mode, not trained by the model's optimizer) and read the pattern images
through ``stop_gradient``: gradients reach the model only through its logits.
NAMID_T / NAMID_M replace the CE term by the TRADES (Zhang et al., 2019) / MART (Wang
et al., 2020) loss. WMIM (the paper's baseline): ``CE(h(x~), y) - alpha * mean
I(x~; h(x~))``. The whole pipeline is :func:`robustkit.namid.run_pipeline`; measured
accuracies and costs are in README and ``benchmarks/results/``.
"""

import os

import keras

from robustkit import losses
from robustkit._validation import check_choice, check_non_negative
from robustkit.namid.estimator import MIEstimator
from robustkit.namid.io import load_estimators, pack_estimator, unpack_estimator
from robustkit.namid.mi_loss import SELECTIONS, namid_mi_loss, selection_mask, weighted_mean
from robustkit.objectives import Objective, mart_loss, trades_loss

SELECT = ("wrong", "correct", "all")


def _unpack(value):
    if isinstance(value, MIEstimator) or value is None:
        return value
    if isinstance(value, dict) and "weights" in value:
        return unpack_estimator(value)
    raise ValueError(f"Cannot read an estimator from {type(value).__name__}.")


def _check_path(path):
    if not os.path.isdir(path):
        raise ValueError(f"`estimators_path` {path!r} is not a directory.")


class _NAMIDBase(Objective):
    """Shared machinery of NAMID, NAMID_T and NAMID_M."""

    needs_clean_logits = True

    def __init__(
        self,
        natural_estimator=None,
        adversarial_estimator=None,
        alpha=5.0,
        lam=0.0,
        select="wrong",
        estimators_path=None,
        mi_floor=0.0,
        selection="argmax",
    ):
        if estimators_path is not None:
            if natural_estimator is not None or adversarial_estimator is not None:
                raise ValueError("Pass either the estimators or `estimators_path`, not both.")
            _check_path(estimators_path)
            natural_estimator, adversarial_estimator = load_estimators(estimators_path)
        natural_estimator = _unpack(natural_estimator)
        adversarial_estimator = _unpack(adversarial_estimator)
        for est, name, kind in (
            (natural_estimator, "natural_estimator", "natural"),
            (adversarial_estimator, "adversarial_estimator", "adversarial"),
        ):
            if not isinstance(est, MIEstimator):
                raise ValueError(
                    f"`{name}` must be a trained robustkit.namid.MIEstimator (stage 2: "
                    f"rk.namid.train_namid_estimators); got {type(est).__name__}."
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
        self.selection = check_choice(selection, set(SELECTIONS), "selection")

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        raise NotImplementedError

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        if logits_clean is None or x is None or x_adv is None:
            raise ValueError(f"{type(self).__name__} needs `logits_clean`, `x` and `x_adv`.")
        base, parts = self.base_loss(y, logits_adv, logits_clean, sample_weight)
        mask = selection_mask(
            self.select, y, logits_clean, logits_adv, sample_weight, self.selection
        )
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
            "selection": self.selection,
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
            (:func:`robustkit.namid.train_namid_estimators`).
        alpha: weight of ``L_mi`` (5, the paper and the release).
        lam: weight of ``E_a(h(x~')) - E_n(h(x~'))`` inside ``L_mi``: paper-only (the
            paper: 0.1; default 0, the released code, where the term is commented out).
        select: which samples ``L_mi`` uses: ``"wrong"`` (clean-correct and
            adversarially wrong, as in stage 2; default), ``"correct"`` or ``"all"``.
        estimators_path: instead of the estimators, a folder written by
            :func:`robustkit.namid.save_estimators`; the config then stores
            the path, otherwise it embeds the estimators' weights (base64).
        mi_floor: clamp of the adversarial-MI estimates in the ``lam`` term
            (default 0, since MI >= 0; ``None``: the paper's formula verbatim).
        selection: how the predicted classes of the selection are read: ``"argmax"``
            (default) or the released ``"softmax_batch_axis"``
            (:func:`robustkit.namid.predicted_class`).
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
    >>> nat = rk.namid.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.namid.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.namid.NAMID(nat, adv).parts[:2]
    ('ce', 'l_mi')
    """
    )

    name = "namid"
    parts = ("ce",) + _MI_PARTS

    def base_loss(self, y, logits_adv, logits_clean, sample_weight):
        ce = weighted_mean(losses.cross_entropy(logits_adv, y), sample_weight)
        return ce, {"ce": ce}


class _BetaNAMID(_NAMIDBase):
    """NAMID with a TRADES / MART base loss: adds that loss's ``beta``."""

    def __init__(
        self,
        natural_estimator=None,
        adversarial_estimator=None,
        beta=6.0,
        alpha=5.0,
        lam=0.0,
        select="wrong",
        estimators_path=None,
        mi_floor=0.0,
        selection="argmax",
    ):
        super().__init__(
            natural_estimator, adversarial_estimator, alpha, lam, select, estimators_path,
            mi_floor, selection,
        )  # fmt: skip
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
    >>> nat = rk.namid.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.namid.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.namid.NAMID_T(nat, adv, beta=6.0).attack_loss
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
    >>> nat = rk.namid.NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = rk.namid.AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> rk.namid.NAMID_M(nat, adv, beta=5.0).beta
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
    ``x~`` (:class:`robustkit.namid.MIEstimator` with ``pattern="standard"``),
    trained in stage 2 by plain DV maximisation on the AT target
    (:func:`robustkit.namid.train_standard_estimator`) and frozen here, so
    gradients reach the model only through its logits.

    Args:
        estimator: the frozen standard-MI estimator.
        alpha: weight of the MI term (default 5, NAMID's alpha; the paper does
            not report WMIM's).
        estimators_path: instead of ``estimator``, a folder holding
            ``standard.keras`` (see :func:`robustkit.namid.save_estimators`).

    Example:

    >>> import robustkit as rk
    >>> est = rk.namid.MIEstimator((8, 8, 1), 10, features=8, pattern="standard")
    >>> rk.namid.WMIM(est).alpha
    5.0
    """

    name = "wmim"
    parts = ("ce", "mi")

    def __init__(self, estimator=None, alpha=5.0, estimators_path=None):
        if estimators_path is not None:
            if estimator is not None:
                raise ValueError("Pass either `estimator` or `estimators_path`, not both.")
            _check_path(estimators_path)
            (estimator,) = load_estimators(estimators_path, names=("standard",))
        estimator = _unpack(estimator)
        if not isinstance(estimator, MIEstimator) or estimator.pattern != "standard":
            raise ValueError(
                "`estimator` must be a robustkit.namid.MIEstimator with "
                "pattern='standard' (rk.namid.train_standard_estimator); got "
                f"{estimator!r}."
            )
        estimator.trainable = False
        self.estimator = estimator
        self.alpha = check_non_negative(alpha, "alpha")
        self.estimators_path = estimators_path

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        if x is None or x_adv is None:
            raise ValueError("WMIM needs `x` and `x_adv`.")
        ce = weighted_mean(losses.cross_entropy(logits_adv, y), sample_weight)
        mi = weighted_mean(self.estimator.mi(x, x_adv, logits_adv, training=False), sample_weight)
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


#: defence name -> objective class (merged into ``robustkit.objectives.REGISTRY``)
DEFENSES = {"wmim": WMIM, "namid": NAMID, "namid_t": NAMID_T, "namid_m": NAMID_M}

__all__ = ["DEFENSES", "NAMID", "NAMID_M", "NAMID_T", "SELECT", "WMIM"]
