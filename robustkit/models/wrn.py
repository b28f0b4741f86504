"""Wide residual networks (WRN-depth-width) for CIFAR-sized inputs; output logits.

Example:

>>> import robustkit as rk
>>> rk.models.wide_resnet(depth=10, width=1, input_shape=(8, 8, 1)).output_shape
(None, 10)
"""

import keras

from robustkit._validation import check_int
from robustkit.models._common import bn, check_common, conv, head, relu
from robustkit.models.resnet import _preact_block


def wide_resnet(
    depth=34, width=10, input_shape=(32, 32, 3), num_classes=10, base_filters=16, name=None
):
    """Wide ResNet (Zagoruyko & Komodakis, BMVC 2016); WRN-34-10 is the default.

    A 3x3 stem convolution (``base_filters`` = 16 filters), three groups of
    ``(depth - 4) / 6`` pre-activation basic blocks with ``16k``, ``32k`` and
    ``64k`` filters (``k`` = ``width``; stride 2 at the start of groups 2 and 3;
    1x1 projection shortcuts from the pre-activated input where the shape
    changes), a final BN-ReLU, global average pooling and a dense layer. This is
    the network of the TRADES and MART experiments (without dropout; their code's
    unused ``sub_block1`` is not built). WRN-34-10 has 46,157,274 trainable
    parameters ("46.2 M").

    Args:
        depth: total depth ``6n + 4`` (16, 22, 28, 34, 40, ...; 10 is the
            smallest, one block per group).
        width: widening factor ``k`` (10 for WRN-34-10; 1 for a narrow CPU model).
        input_shape: ``(H, W, C)``, default ``(32, 32, 3)``.
        num_classes: number of logits.
        base_filters: stem filters; the groups use ``base_filters * k * (1, 2, 4)``.
        name: model name (default ``"wrn_{depth}_{width}"``).

    Example:

    >>> m = wide_resnet(16, 2, base_filters=4)
    >>> m.name
    'wrn_16_2'
    """
    depth = check_int(depth, "depth", minimum=10)
    if (depth - 4) % 6:
        raise ValueError(f"`depth` must be 6n + 4 (10, 16, 22, 28, 34, ...); got {depth}.")
    width = check_int(width, "width", minimum=1)
    shape, num_classes, base_filters = check_common(input_shape, num_classes, base_filters)
    blocks = (depth - 4) // 6
    inputs = keras.Input(shape, name="images")
    h = conv(base_filters, 3, 1, name="stem_conv")(inputs)
    for group in range(3):
        filters = base_filters * width * 2**group
        for i in range(blocks):
            strides = 2 if (group > 0 and i == 0) else 1
            h = _preact_block(h, filters, strides, name=f"group{group + 1}_block{i + 1}")
    h = relu("final_relu")(bn("final_bn")(h))
    return keras.Model(inputs, head(h, num_classes), name=name or f"wrn_{depth}_{width}")
