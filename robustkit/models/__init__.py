"""Model architectures; every classifier outputs logits.

Example:

>>> import robustkit as rk
>>> rk.models.small_cnn((8, 8, 1)).output_shape
(None, 10)
"""

from robustkit.models.adapter import as_logits_fn
from robustkit.models.contract import check_layout, check_logits, check_model
from robustkit.models.resnet import preact_resnet18, resnet18
from robustkit.models.small import small_cnn
from robustkit.models.vgg import vgg19
from robustkit.models.wrappers import logits_of, two_logits, with_normalization
from robustkit.models.wrn import wide_resnet

__all__ = [
    "as_logits_fn",
    "check_layout",
    "check_logits",
    "check_model",
    "logits_of",
    "preact_resnet18",
    "resnet18",
    "small_cnn",
    "two_logits",
    "vgg19",
    "wide_resnet",
    "with_normalization",
]
from robustkit.models.autoencoders import (
    AdversarialAutoencoder,
    adversarial_autoencoder,
    conv_autoencoder,
    dense_autoencoder,
    sparse_autoencoder,
)

__all__ += [
    "AdversarialAutoencoder",
    "adversarial_autoencoder",
    "conv_autoencoder",
    "dense_autoencoder",
    "sparse_autoencoder",
]
