"""Attacks: every one is called as ``attack(model, x, y) -> x_adv``.

Example:

>>> import robustkit as rk
>>> atk = rk.attacks.PGD(eps=8 / 255, steps=40, norm="linf")
>>> atk.step_size == atk.eps / 4
True
"""

from robustkit.attacks.base import Attack, as_logits_fn, attack_loss
from robustkit.attacks.pgd import FGSM, PGD

__all__ = ["Attack", "FGSM", "PGD", "as_logits_fn", "attack_loss"]
