"""ResNet-18 and PreAct-ResNet-18 for CIFAR-sized inputs; both output logits.

The CIFAR stem is a single 3x3 convolution with stride 1 and no max-pooling
(He et al., 2016, Sec. 4.2, as used by the TRADES, MART and NAMID experiments),
followed by four stages of two basic blocks with 64, 128, 256 and 512 filters
(stride 2 at the start of stages 2-4), global average pooling and a dense layer.

Example:

>>> import robustkit as rk
>>> model = rk.models.resnet18((32, 32, 3), num_classes=10, base_filters=8)
>>> model.output_shape
(None, 10)
"""

import keras

from robustkit.models._common import bn, check_common, conv, head, relu

#: basic blocks per stage for an 18-layer network
RESNET18_BLOCKS = (2, 2, 2, 2)


def _basic_block(h, filters, strides, name):
    """Post-activation basic block: conv-BN-ReLU-conv-BN + shortcut, ReLU."""
    shortcut = h
    out = conv(filters, 3, strides, name=f"{name}_conv1")(h)
    out = bn(f"{name}_bn1")(out)
    out = relu(f"{name}_relu1")(out)
    out = conv(filters, 3, 1, name=f"{name}_conv2")(out)
    out = bn(f"{name}_bn2")(out)
    if strides != 1 or h.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_short_conv")(h)
        shortcut = bn(f"{name}_short_bn")(shortcut)
    out = keras.layers.Add(name=f"{name}_add")([out, shortcut])
    return relu(f"{name}_out")(out)


def _preact_block(h, filters, strides, name):
    """Pre-activation basic block (He et al., 2016b): BN-ReLU-conv-BN-ReLU-conv + shortcut.

    The projection shortcut (when the shape changes) takes the pre-activated input.
    """
    pre = relu(f"{name}_relu1")(bn(f"{name}_bn1")(h))
    shortcut = h
    if strides != 1 or h.shape[-1] != filters:
        shortcut = conv(filters, 1, strides, name=f"{name}_short_conv")(pre)
    out = conv(filters, 3, strides, name=f"{name}_conv1")(pre)
    out = relu(f"{name}_relu2")(bn(f"{name}_bn2")(out))
    out = conv(filters, 3, 1, name=f"{name}_conv2")(out)
    return keras.layers.Add(name=f"{name}_add")([out, shortcut])


def _stages(h, base_filters, block, blocks=RESNET18_BLOCKS):
    for stage, count in enumerate(blocks):
        filters = base_filters * 2**stage
        for i in range(count):
            strides = 2 if (stage > 0 and i == 0) else 1
            h = block(h, filters, strides, name=f"stage{stage + 1}_block{i + 1}")
    return h


def resnet18(input_shape=(32, 32, 3), num_classes=10, base_filters=64, name="resnet18"):
    """ResNet-18 (He et al., CVPR 2016) with the CIFAR stem; returns logits.

    Args:
        input_shape: ``(H, W, C)``; default CIFAR-10's ``(32, 32, 3)``. Any size
            works (global average pooling), e.g. ``(28, 28, 1)`` for MNIST.
        num_classes: number of logits.
        base_filters: filters of the first stage (default 64; stages use 1x, 2x,
            4x, 8x). Use e.g. 8 or 16 for CPU tests; the full model at 64 has
            11,173,962 trainable parameters (the usual "11.17 M").
        name: model name.

    BatchNorm uses PyTorch's momentum/epsilon (0.9 / 1e-5 in Keras terms) as in
    the reference recipes; convolutions have no bias.

    Example:

    >>> m = resnet18(base_filters=64)
    >>> sum(int(w.numpy().size) for w in m.trainable_weights)
    11173962
    """
    shape, num_classes, base_filters = check_common(input_shape, num_classes, base_filters)
    inputs = keras.Input(shape, name="images")
    h = conv(base_filters, 3, 1, name="stem_conv")(inputs)
    h = relu("stem_relu")(bn("stem_bn")(h))
    h = _stages(h, base_filters, _basic_block)
    return keras.Model(inputs, head(h, num_classes), name=name)


def preact_resnet18(
    input_shape=(32, 32, 3), num_classes=10, base_filters=64, name="preact_resnet18"
):
    """Pre-activation ResNet-18 (He et al., ECCV 2016) with the CIFAR stem; returns logits.

    The stem is a bare 3x3 convolution (each block pre-activates its input);
    the network ends with BN-ReLU before pooling, as in the paper and in Rice
    et al. (2020)'s robust-overfitting code. (The widely copied kuangliu
    ``PreActResNet18`` omits that final BN-ReLU; that variant has 11,171,146
    parameters, this one 11,172,170.)

    Args:
        input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
        num_classes: number of logits.
        base_filters: first-stage filters (default 64).
        name: model name.

    Example:

    >>> m = preact_resnet18((8, 8, 1), base_filters=4)
    >>> m.output_shape
    (None, 10)
    """
    shape, num_classes, base_filters = check_common(input_shape, num_classes, base_filters)
    inputs = keras.Input(shape, name="images")
    h = conv(base_filters, 3, 1, name="stem_conv")(inputs)
    h = _stages(h, base_filters, _preact_block)
    h = relu("final_relu")(bn("final_bn")(h))
    return keras.Model(inputs, head(h, num_classes), name=name)
