"""Mutual-information estimators: bounds (pure functions), critics and estimator networks.

Example:

>>> from robustkit.estimators import bounds
>>> round(bounds.gaussian_mi(0.3, 20), 3)
0.943
"""

from robustkit.estimators import bounds
from robustkit.estimators.critics import ConcatCritic, SeparableCritic
from robustkit.estimators.estimate import estimate_mi
from robustkit.estimators.monitor import MIMonitor
from robustkit.estimators.namid import (
    AdversarialMIEstimator,
    MIEstimator,
    NaturalMIEstimator,
    load_estimators,
    per_sample_dv,
    save_estimators,
    select_samples,
    train_namid_estimators,
    train_standard_estimator,
)
from robustkit.estimators.per_sample import PerSampleMINE

__all__ = ["bounds", "PerSampleMINE"]
__all__ += [
    "ConcatCritic",
    "SeparableCritic",
    "estimate_mi",
    "MIEstimator",
    "NaturalMIEstimator",
    "AdversarialMIEstimator",
    "per_sample_dv",
    "select_samples",
    "train_namid_estimators",
    "train_standard_estimator",
    "save_estimators",
    "load_estimators",
    "MIMonitor",
]
