"""NAMID (Zhou et al., "Improving adversarial robustness via mutual information
estimation", ICML 2022): MI estimators, stage-2 training, the defenses and the pipeline.

Example:

>>> import robustkit as rk
>>> nat = rk.namid.NaturalMIEstimator((8, 8, 1), 10, features=8)
>>> adv = rk.namid.AdversarialMIEstimator((8, 8, 1), 10, features=8)
>>> rk.namid.DEFENSES["namid"](nat, adv, alpha=1.0).alpha
1.0

Modules: :mod:`~robustkit.namid.estimator` (the estimator networks),
:mod:`~robustkit.namid.io` (save / load / pack), :mod:`~robustkit.namid.stage2_losses`
(sample sets C, W, R and the stage-2 losses), :mod:`~robustkit.namid.stage2` (estimator
training), :mod:`~robustkit.namid.mi_loss` and
:mod:`~robustkit.namid.objectives` (the stage-3 defenses NAMID, NAMID_T, NAMID_M, WMIM),
:mod:`~robustkit.namid.pipeline` (the three stages as one call),
:mod:`~robustkit.namid.monitor` (a Keras callback logging natural / adversarial MI).
The core of robustkit never imports this package; ``robustkit.objectives.REGISTRY`` and
``robustkit.callbacks.MIMonitor`` resolve these names on first use.
"""

from robustkit.namid.estimator import (
    AdversarialMIEstimator,
    MIEstimator,
    NaturalMIEstimator,
    per_sample_dv,
)
from robustkit.namid.io import load_estimators, pack_estimator, save_estimators, unpack_estimator
from robustkit.namid.mi_loss import l_cos, namid_mi_loss, predicted_class, selection_mask
from robustkit.namid.monitor import MIMonitor
from robustkit.namid.objectives import DEFENSES, NAMID, NAMID_M, NAMID_T, WMIM
from robustkit.namid.pipeline import release_attack
from robustkit.namid.pipeline import run as run_pipeline
from robustkit.namid.stage2 import train_namid_estimators, train_standard_estimator
from robustkit.namid.stage2_losses import only_max_losses, release_losses, select_samples

__all__ = [
    "DEFENSES",
    "NAMID",
    "NAMID_M",
    "NAMID_T",
    "WMIM",
    "AdversarialMIEstimator",
    "MIEstimator",
    "MIMonitor",
    "NaturalMIEstimator",
    "l_cos",
    "load_estimators",
    "namid_mi_loss",
    "only_max_losses",
    "pack_estimator",
    "per_sample_dv",
    "predicted_class",
    "release_attack",
    "release_losses",
    "run_pipeline",
    "save_estimators",
    "select_samples",
    "selection_mask",
    "train_namid_estimators",
    "train_standard_estimator",
    "unpack_estimator",
]
