"""MINE-based UAE data augmentation (Hsu et al., AAAI 2022): the conv autoencoder on MNIST.

Trains the autoencoder (SPEC §5), generates one unsupervised adversarial example per
training image (MinMax with per-sample MINE, L-inf eps 0.3), retrains on original + UAEs and
prints the test reconstruction error before and after (`robustkit uae`). Run from the
repository root:

    python recipes/mnist_uae_conv.py            # all 60,000 training images (a GPU job)
    python recipes/mnist_uae_conv.py --smoke    # 200 images, 1 epoch: minutes on a CPU

Saves the retrained autoencoder to <out>/uae_conv_mnist.keras.
"""

import _common

if __name__ == "__main__":
    _common.uae("conv")
