"""Attacks: every one is called as ``attack(model, x, y) -> x_adv``.

Example:

>>> import robustkit as rk
>>> atk = rk.attacks.PGD(eps=8 / 255, steps=40, norm="linf")
>>> atk.step_size == atk.eps / 4
True
"""

import importlib

from robustkit.attacks.apgd import APGD, APGDT
from robustkit.attacks.autoattack import AutoAttack
from robustkit.attacks.base import Attack, as_logits_fn, attack_loss
from robustkit.attacks.cw import CW
from robustkit.attacks.ddn import DDN
from robustkit.attacks.fab import FAB
from robustkit.attacks.fwa import FWA
from robustkit.attacks.mim import MIM
from robustkit.attacks.pgd import FGSM, PGD
from robustkit.attacks.square import Square
from robustkit.attacks.tidim import TIDIM
from robustkit.attacks.transfer import Transfer

__all__ = [
    "Attack",
    "as_logits_fn",
    "attack_loss",
    "FGSM",
    "PGD",
    "MIM",
    "TIDIM",
    "CW",
    "DDN",
    "FWA",
    "APGD",
    "APGDT",
    "FAB",
    "Square",
    "AutoAttack",
    "Transfer",
]

#: the MINE attacks live in robustkit.mine (Hsu et al. 2022); resolved on first use
_MINE = ("MinMax", "PenaltyMINE", "supervised_criterion", "unsupervised_criterion")


def __getattr__(name):
    if name in _MINE:
        return getattr(importlib.import_module("robustkit.mine"), name)
    raise AttributeError(f"module 'robustkit.attacks' has no attribute {name!r}")
