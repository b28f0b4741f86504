"""robustkit: adversarial robustness for Keras 3.

Example:

>>> import robustkit as rk
>>> atk = rk.attacks.PGD(eps=0.3, steps=40)
"""

__version__ = "0.1.0"

from robustkit import (  # noqa: E402
    attacks,
    callbacks,
    data,
    estimators,
    evaluation,
    models,
    objectives,
    threat,
    uae,
)
from robustkit.evaluation import evaluate  # noqa: E402
from robustkit.export import export, load_exported as load  # noqa: E402
from robustkit.training import RobustModel  # noqa: E402

__all__ = [
    "RobustModel", "export", "load", "evaluate",
    "attacks", "callbacks", "data", "estimators", "evaluation", "models", "objectives",
    "threat", "uae", "__version__",
]
