"""Shared checks and layer factories for the CIFAR-style architectures."""

import keras

from robustkit._validation import check_int

#: PyTorch's BatchNorm defaults (momentum 0.1 there is 0.9 here), as in the reference
#: training recipes (TRADES, MART, NAMID)
BN_MOMENTUM = 0.9
BN_EPSILON = 1e-5


def check_common(input_shape, num_classes, base_filters):
    """Validates the arguments every architecture takes; returns them normalised."""
    try:
        shape = tuple(int(d) for d in input_shape)
    except (TypeError, ValueError):
        raise ValueError(f"`input_shape` must be (H, W, C); got {input_shape!r}.") from None
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(
            f"`input_shape` must be (H, W, C) with positive sizes; got {input_shape!r}."
        )
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    base_filters = check_int(base_filters, "base_filters", minimum=1)
    return shape, num_classes, base_filters


def conv(filters, kernel, strides=1, name=None, use_bias=False):
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=use_bias,
        kernel_initializer="he_normal",
        name=name,
    )


def bn(name=None):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=BN_EPSILON, name=name)


def relu(name=None):
    return keras.layers.ReLU(name=name)


def head(h, num_classes, name="logits"):
    """Global average pooling and a dense logits layer (no softmax)."""
    h = keras.layers.GlobalAveragePooling2D(name="pool")(h)
    return keras.layers.Dense(num_classes, name=name)(h)
