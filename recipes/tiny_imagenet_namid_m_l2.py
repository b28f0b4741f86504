"""NAMID paper, Table 1: Tiny-ImageNet, NAMID_M, L2 eps 0.5.

NAMID on the MART loss, beta 5; ResNet-18, SGD 0.1 / momentum 0.9, 100 epochs, lr x0.1 at 75
and 90, batch 128, PGD-10 training, best (clean + PGD-40)/2 checkpoint on a held-out split
(settings in recipes/_common.py). Run from the repository root:

    python recipes/tiny_imagenet_namid_m_l2.py            # the paper's setting (GPU)
    python recipes/tiny_imagenet_namid_m_l2.py --smoke    # minutes on a CPU

The three NAMID stages (standard-AT target, estimators, fresh target with the MI
loss) are cached in <out>_stages; a rerun skips finished stages.

Needs the extracted Tiny-ImageNet release in <data dir>/tiny-imagenet-200; without it
the recipe stops at once naming the folder it expected.
"""

import _common

if __name__ == "__main__":
    _common.table1("tiny_imagenet", "namid_m", "l2")
