"""VGG-19 with BatchNorm for CIFAR-sized inputs; outputs logits.

Example:

>>> import robustkit as rk
>>> rk.models.vgg19((32, 32, 3), base_filters=8).output_shape
(None, 10)
"""

import keras

from robustkit.models._common import bn, check_common, conv, head, relu

#: filters per conv (multiples of ``base_filters`` / 64) and "M" for 2x2 max-pooling
VGG19_LAYERS = (
    64,
    64,
    "M",
    128,
    128,
    "M",
    256,
    256,
    256,
    256,
    "M",
    512,
    512,
    512,
    512,
    "M",
    512,
    512,
    512,
    512,
    "M",
)


def vgg19(input_shape=(32, 32, 3), num_classes=10, base_filters=64, name="vgg19"):
    """VGG-19 (Simonyan & Zisserman, ICLR 2015) with BatchNorm, CIFAR variant.

    Sixteen 3x3 conv-BN-ReLU layers in five groups separated by 2x2 max-pooling,
    then global average pooling (1x1 for 32x32 inputs, so equal to flattening)
    and one dense logits layer, as in the CIFAR VGG used by the adversarial
    training literature (the NAMID paper's black-box surrogate). Convolutions
    keep their bias, as in that reference, so the full model (``base_filters=64``)
    has 20,040,522 trainable parameters ("20.0 M"). Pooling uses ``"same"``
    padding, so inputs smaller than 32 px (MNIST, digits) also work.

    Args:
        input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
        num_classes: number of logits.
        base_filters: filters of the first group (default 64; later groups use
            2x, 4x, 8x, 8x).
        name: model name.

    Example:

    >>> vgg19((28, 28, 1), base_filters=4).output_shape
    (None, 10)
    """
    shape, num_classes, base_filters = check_common(input_shape, num_classes, base_filters)
    inputs = keras.Input(shape, name="images")
    h = inputs
    conv_i = pool_i = 0
    for spec in VGG19_LAYERS:
        if spec == "M":
            pool_i += 1
            h = keras.layers.MaxPooling2D(2, padding="same", name=f"pool{pool_i}")(h)
            continue
        conv_i += 1
        filters = spec * base_filters // 64
        h = conv(filters, 3, 1, name=f"conv{conv_i}", use_bias=True)(h)
        h = relu(f"relu{conv_i}")(bn(f"bn{conv_i}")(h))
    return keras.Model(inputs, head(h, num_classes), name=name)
