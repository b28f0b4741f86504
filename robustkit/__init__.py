"""robustkit: adversarial robustness for Keras 3.

Example:

>>> import robustkit as rk
>>> atk = rk.attacks.PGD(eps=0.3, steps=40)
>>> atk.threat
Linf(eps=0.3)

The core (``threat``, ``losses``, ``attacks``, ``objectives``, ``training``, ``callbacks``,
``export``, ``evaluation``, ``data``, ``models``, ``estimators``) never imports the two paper
workflows, :mod:`robustkit.namid` (NAMID, Zhou et al. 2022) and :mod:`robustkit.mine`
(MINE-based attacks and UAEs, Hsu et al. 2022); this package imports them last, so that their
Keras-serialisable classes (a saved NAMID ``RobustModel``, a MinMax config) load after a plain
``import robustkit``. The names they moved from stay reachable (``rk.attacks.MinMax``,
``rk.objectives.NAMID``, ``rk.estimators.PerSampleMINE``, ``rk.callbacks.MIMonitor``).
"""

__version__ = "0.2.0.dev0"

from robustkit import (
    attacks,
    callbacks,
    data,
    distributed,
    estimators,
    evaluation,
    losses,
    models,
    objectives,
    threat,
)
from robustkit.evaluation import evaluate
from robustkit.export import export
from robustkit.export import load_exported as load
from robustkit.training import RobustModel

# the paper workflows, after the core they build on
from robustkit import mine, namid  # isort: skip


__all__ = [
    "RobustModel",
    "__version__",
    "attacks",
    "callbacks",
    "data",
    "distributed",
    "estimators",
    "evaluate",
    "evaluation",
    "export",
    "load",
    "losses",
    "mine",
    "models",
    "namid",
    "objectives",
    "threat",
]
