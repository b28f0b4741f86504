"""MINE-based adversarial examples and UAE data augmentation (Hsu et al., "Adversarial
examples can be effective data augmentation for unsupervised machine learning", AAAI 2022).

Example:

>>> import numpy as np, robustkit as rk
>>> model = rk.models.small_cnn((8, 8, 1), width=4)
>>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
>>> out = rk.mine.MinMax(eps=0.3, steps=2, hidden=8).run(model, x, np.array([0, 1]))
>>> sorted(out)
['f', 'mi', 'mi_release', 'success', 'x_adv']

Modules: :mod:`~robustkit.mine.features` (the samples: first-conv feature maps or random
projections), :mod:`~robustkit.mine.critic` (the batched statistics network and the
all-pairs DV bound), :mod:`~robustkit.mine.optim` (the batched Adam step),
:mod:`~robustkit.mine.per_sample` (:class:`PerSampleMINE`), :mod:`~robustkit.mine.criteria`,
:mod:`~robustkit.mine.base`, :mod:`~robustkit.mine.attacks` (MinMax) and
:mod:`~robustkit.mine.penalty` (the penalty baseline) on :mod:`robustkit.attacks.engine`,
:mod:`~robustkit.mine.release` (the released code's configurations),
:mod:`~robustkit.mine.uae` (UAE augmentation, the L2-UAE baseline). The core of
robustkit never imports this package; ``robustkit.attacks.MinMax`` and
``robustkit.estimators.PerSampleMINE`` resolve here on first use.
"""

from robustkit.mine import uae
from robustkit.mine.attacks import MinMax
from robustkit.mine.criteria import supervised_criterion, unsupervised_criterion
from robustkit.mine.critic import BatchedCritic, dv_all_pairs
from robustkit.mine.optim import adam
from robustkit.mine.penalty import PenaltyMINE
from robustkit.mine.per_sample import PerSampleMINE
from robustkit.mine.uae import L2UAE, augment, augmented_set, reconstruction_error, retrain

__all__ = [
    "L2UAE",
    "BatchedCritic",
    "MinMax",
    "PenaltyMINE",
    "PerSampleMINE",
    "adam",
    "augment",
    "augmented_set",
    "dv_all_pairs",
    "reconstruction_error",
    "retrain",
    "supervised_criterion",
    "uae",
    "unsupervised_criterion",
]
