"""The application layer: the jobs the command line and the recipes run.

``train_and_export(TrainConfig(...))`` loads data, trains with the chosen defense, measures
the result with the one evaluator and exports it; ``evaluate_export(path, ...)`` reloads an
export and measures it again. ``robustkit train`` / ``robustkit evaluate`` and every script
in ``recipes/`` are thin layers over these.

Example:

>>> from robustkit.app import TrainConfig
>>> TrainConfig(dataset="digits", defense="trades", beta=3.0).resolve().objective
TRADES(beta=3.0)
"""

from robustkit.app.config import (
    DEFAULT_EPOCHS,
    MI_DEFENSES,
    MODELS,
    ConfigError,
    TrainConfig,
    TrainPlan,
    attack_label,
    parse_attack,
)
from robustkit.app.evaluate import Evaluation, evaluate_export, resolve_export
from robustkit.app.train import TrainResult, build_model, load_split, measure, train_and_export

__all__ = [
    "DEFAULT_EPOCHS",
    "MI_DEFENSES",
    "MODELS",
    "ConfigError",
    "Evaluation",
    "TrainConfig",
    "TrainPlan",
    "TrainResult",
    "attack_label",
    "build_model",
    "evaluate_export",
    "load_split",
    "measure",
    "parse_attack",
    "resolve_export",
    "train_and_export",
]
