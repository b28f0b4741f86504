"""robustkit: adversarial robustness for Keras 3.

Example:

>>> import robustkit as rk
>>> atk = rk.attacks.PGD(eps=0.3, steps=40)
>>> atk.threat
Linf(eps=0.3)

The core (``threat``, ``losses``, ``attacks``, ``objectives``, ``training``, ``callbacks``,
``export``, ``evaluation``, ``data``, ``models``, ``estimators``) is imported here; the two
paper workflows, :mod:`robustkit.namid` (NAMID, Zhou et al. 2022) and :mod:`robustkit.mine`
(MINE-based attacks and UAEs, Hsu et al. 2022), load on first use (``rk.namid``, ``rk.mine``).
"""

import importlib

__version__ = "0.2.0.dev0"

from robustkit import (  # noqa: E402
    attacks,
    callbacks,
    data,
    estimators,
    evaluation,
    losses,
    models,
    objectives,
    threat,
)
from robustkit.evaluation import evaluate  # noqa: E402
from robustkit.export import export  # noqa: E402
from robustkit.export import load_exported as load  # noqa: E402
from robustkit.training import RobustModel  # noqa: E402

#: subpackages loaded on first attribute access
_LAZY = {"namid": "robustkit.namid", "mine": "robustkit.mine"}


def __getattr__(name):
    if name in _LAZY:
        return importlib.import_module(_LAZY[name])
    raise AttributeError(f"module 'robustkit' has no attribute {name!r}")


__all__ = [
    "RobustModel",
    "__version__",
    "attacks",
    "callbacks",
    "data",
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
