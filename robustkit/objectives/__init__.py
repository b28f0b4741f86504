"""Training objectives: thin wrappers over :mod:`robustkit.losses` that hold hyperparameters
and declare the inner attack they want.

Example:

>>> import robustkit as rk
>>> rk.objectives.get("trades", beta=6.0)
TRADES(beta=6.0)
>>> rk.objectives.TRADES().inner
InnerAttack(loss='kl', start='normal')

The NAMID paper's MI objectives (``"wmim"``, ``"namid"``, ``"namid_t"``, ``"namid_m"``) live in
:mod:`robustkit.namid`; ``get``, :data:`REGISTRY` and ``rk.objectives.NAMID`` etc. load them
from there on first use (the core never imports the paper packages).
"""

import importlib

from robustkit._validation import check_choice
from robustkit.objectives.base import InnerAttack, LossObjective, Objective, reduce_loss
from robustkit.objectives.core import (
    AT,
    MART,
    TRADES,
    at_loss,
    at_per_example,
    mart_loss,
    mart_per_example,
    trades_loss,
    trades_per_example,
)

#: the defences of the core, by name
CORE_REGISTRY = {"standard": AT, "at": AT, "trades": TRADES, "mart": MART}
#: the MI defences, by name, and the attribute each is reachable as (``rk.objectives.NAMID``)
MI_DEFENSES = {"wmim": "WMIM", "namid": "NAMID", "namid_t": "NAMID_T", "namid_m": "NAMID_M"}
#: where the MI defences are looked up: ``robustkit.namid`` (its ``DEFENSES`` dict)
_MI_PROVIDERS = ("robustkit.namid",)


def _mi_module():
    """The first importable MI provider, or ``None``. A provider that exists but fails to
    import raises (its error is not hidden)."""
    for module_name in _MI_PROVIDERS:
        try:
            return importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name is None or not module_name.startswith(e.name):
                raise
    return None


def _mi_defenses():
    module = _mi_module()
    if module is None:
        return {}
    defenses = getattr(module, "DEFENSES", None)
    if defenses is None:
        defenses = {key: getattr(module, attr) for key, attr in MI_DEFENSES.items()}
    return dict(defenses)


def _registry():
    """The registry, built (core names + the MI defences) on first use."""
    registry = globals().get("REGISTRY")
    if registry is None:
        registry = dict(CORE_REGISTRY)
        registry.update(_mi_defenses())
        globals()["REGISTRY"] = registry
    return registry


def __getattr__(name):
    # PEP 562: REGISTRY and the MI classes resolve on first access
    if name == "REGISTRY":
        return _registry()
    if name in MI_DEFENSES.values():
        key = next(k for k, v in MI_DEFENSES.items() if v == name)
        cls = _registry().get(key)
        if cls is None:
            raise AttributeError(
                f"robustkit.objectives.{name} lives in robustkit.namid, which is not "
                "available in this installation."
            )
        return cls
    raise AttributeError(f"module 'robustkit.objectives' has no attribute {name!r}")


def get(name, **kwargs):
    """Returns the objective registered under ``name`` (``standard``, ``trades``, ...).

    Example:

    >>> get("mart", beta=5.0)
    MART(beta=5.0)
    """
    if isinstance(name, Objective):
        return name
    registry = _registry()
    key = check_choice(name, set(registry), "defense")
    return registry[key](**kwargs)


__all__ = [
    "AT",
    "CORE_REGISTRY",
    "InnerAttack",
    "LossObjective",
    "MART",
    "MI_DEFENSES",
    "Objective",
    "REGISTRY",
    "TRADES",
    "at_loss",
    "at_per_example",
    "get",
    "mart_loss",
    "mart_per_example",
    "reduce_loss",
    "trades_loss",
    "trades_per_example",
]
