"""Mutual-information estimation: bounds (pure functions of critic scores), critics and
:func:`estimate_mi`.

Example:

>>> from robustkit.estimators import bounds
>>> round(bounds.gaussian_mi(0.3, 20), 3)
0.943

The paper workflows' estimators live in :mod:`robustkit.namid` (NAMID's estimator networks
and their training) and :mod:`robustkit.mine` (per-sample MINE); their names stay reachable
here and resolve on first use (``rk.estimators.PerSampleMINE is rk.mine.PerSampleMINE``).
"""

import importlib

from robustkit.estimators import bounds
from robustkit.estimators.critics import ConcatCritic, SeparableCritic
from robustkit.estimators.estimate import estimate_mi

#: names kept here for code written against robustkit 0.1 -> the package that holds them
_MOVED = {
    "PerSampleMINE": "robustkit.mine",
    "MIEstimator": "robustkit.namid",
    "NaturalMIEstimator": "robustkit.namid",
    "AdversarialMIEstimator": "robustkit.namid",
    "train_namid_estimators": "robustkit.namid",
    "train_standard_estimator": "robustkit.namid",
    "save_estimators": "robustkit.namid",
    "load_estimators": "robustkit.namid",
    "select_samples": "robustkit.namid",
    "per_sample_dv": "robustkit.namid",
    "MIMonitor": "robustkit.namid",
}


def __getattr__(name):
    if name in _MOVED:
        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module 'robustkit.estimators' has no attribute {name!r}")


__all__ = ["ConcatCritic", "SeparableCritic", "bounds", "estimate_mi"]
