"""MINE-based UAE data augmentation (Hsu et al., AAAI 2022): the dense autoencoder on MNIST.

Trains the autoencoder (SPEC §5), generates one unsupervised adversarial example per
training image (MinMax with per-sample MINE, L-inf eps 0.3), retrains on original + UAEs and
prints the test reconstruction error before and after (`robustkit uae`). Run from the
repository root:

    python recipes/mnist_uae_dense.py            # all 60,000 training images (a GPU job)
    python recipes/mnist_uae_dense.py --smoke    # 200 images, 1 epoch: minutes on a CPU

Saves the retrained autoencoder to <out>/uae_dense_mnist.keras.
"""

import _common

if __name__ == "__main__":
    _common.uae("dense")
