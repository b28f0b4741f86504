"""The MinMax attack (Hsu et al., AAAI 2022) on an undefended MNIST CNN.

Trains the classifier (a small CNN whose first layer gives per-sample MINE its 32 feature
maps), exports it, and runs `robustkit attack minmax` with the released code's setting
(SPEC §5, FIDELITY §2: eps 1.0, 1000 iterations). Run from the repository root:

    python recipes/mnist_minmax.py            # 100 test images, 1000 iterations
    python recipes/mnist_minmax.py --smoke    # 4 images, 20 iterations: minutes on a CPU

Writes <out>/classifier (the export) and <out>/minmax.png (originals and adversarials).
"""

import _common

if __name__ == "__main__":
    _common.minmax()
