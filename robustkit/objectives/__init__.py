"""Training objectives (losses as pure functions, hyperparameters in small classes).

Example:

>>> import robustkit as rk
>>> rk.objectives.get("trades", beta=6.0)
TRADES(beta=6.0)
"""

import importlib

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


def _mi_defenses():
    """The MI defences, from robustkit.namid (loaded on first use: the core never imports it)."""
    return importlib.import_module("robustkit.namid").DEFENSES


class _Registry(dict):
    """A dict that adds the MI defences (``robustkit.namid.DEFENSES``) on first read."""

    _complete = False

    def _complete_once(self):
        if not self._complete:
            for key, cls in _mi_defenses().items():
                self.setdefault(key, cls)
            self._complete = True

    def __getitem__(self, key):
        self._complete_once()
        return super().__getitem__(key)

    def __contains__(self, key):
        self._complete_once()
        return super().__contains__(key)

    def __iter__(self):
        self._complete_once()
        return super().__iter__()

    def __len__(self):
        self._complete_once()
        return super().__len__()

    def get(self, key, default=None):
        self._complete_once()
        return super().get(key, default)

    def keys(self):
        self._complete_once()
        return super().keys()

    def items(self):
        self._complete_once()
        return super().items()

    def values(self):
        self._complete_once()
        return super().values()


#: defence names accepted by ``get`` and the CLI's ``--defense``
REGISTRY = _Registry({"standard": AT, "at": AT, "trades": TRADES, "mart": MART})


def __getattr__(name):
    """``NAMID``, ``NAMID_T``, ``NAMID_M``, ``WMIM``: the classes in robustkit.namid."""
    by_class = {cls.__name__: cls for cls in _mi_defenses().values()}
    if name in by_class:
        return by_class[name]
    raise AttributeError(f"module 'robustkit.objectives' has no attribute {name!r}")


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
    "Objective",
    "at_loss",
    "mart_loss",
    "trades_loss",
    "get",
    "REGISTRY",
]
