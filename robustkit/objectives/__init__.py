"""Training objectives (losses as pure functions, hyperparameters in small classes).

Example:

>>> import robustkit as rk
>>> rk.objectives.get("trades", beta=6.0)
TRADES(beta=6.0)
"""

from robustkit._validation import check_choice
from robustkit.objectives.core import (
    AT,
    MART,
    TRADES,
    Objective,
    at_loss,
    mart_loss,
    trades_loss,
)
from robustkit.objectives.mi import NAMID, NAMID_M, NAMID_T, WMIM

#: defence names accepted by ``get`` and the CLI's ``--defense``
REGISTRY = {"standard": AT, "at": AT, "trades": TRADES, "mart": MART}
REGISTRY.update({"wmim": WMIM, "namid": NAMID, "namid_t": NAMID_T, "namid_m": NAMID_M})


def get(name, **kwargs):
    """Returns the objective registered under ``name`` (``standard``, ``trades``, ...)."""
    if isinstance(name, Objective):
        return name
    key = check_choice(name, set(REGISTRY), "defense")
    return REGISTRY[key](**kwargs)


__all__ = [
    "AT",
    "MART",
    "TRADES",
    "WMIM",
    "NAMID",
    "NAMID_T",
    "NAMID_M",
    "Objective",
    "at_loss",
    "mart_loss",
    "trades_loss",
    "get",
    "REGISTRY",
]
