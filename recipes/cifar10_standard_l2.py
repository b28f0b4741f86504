"""NAMID paper, Table 1: CIFAR-10, Standard, L2 eps 0.5.

PGD-AT (Madry et al. 2018); ResNet-18, SGD 0.1 / momentum 0.9, 100 epochs, lr x0.1 at 75 and
90, batch 128, PGD-10 training, best (clean + PGD-40)/2 checkpoint on a held-out split
(settings in recipes/_common.py). Run from the repository root:

    python recipes/cifar10_standard_l2.py            # the paper's setting (GPU)
    python recipes/cifar10_standard_l2.py --smoke    # minutes on a CPU
"""

import _common

if __name__ == "__main__":
    _common.table1("cifar10", "standard", "l2")
