"""Small CNNs for MNIST-sized and digits-sized inputs (CPU friendly).

Example:

>>> import robustkit as rk
>>> model = rk.models.small_cnn((28, 28, 1), num_classes=10)
>>> model.output_shape
(None, 10)
"""

import keras

from robustkit._validation import check_int


def small_cnn(input_shape=(28, 28, 1), num_classes=10, width=32, dense=128, name="small_cnn"):
    """A two-conv-layer CNN that outputs logits.

    Two 3x3 convolutions (``width`` and ``2 * width`` filters; the second with
    stride 2 on inputs larger than 16 px), a dense layer of ``dense`` units and
    a logits layer. On the 8x8 digits it has ~0.1 M parameters; on MNIST ~1 M.
    The first layer is a convolution, which per-sample MINE relies on.

    Example:

    >>> m = small_cnn((8, 8, 1))
    >>> [layer.__class__.__name__ for layer in m.layers[:2]]
    ['InputLayer', 'Conv2D']
    """
    if len(tuple(input_shape)) != 3:
        raise ValueError(f"`input_shape` must be (H, W, C); got {input_shape!r}.")
    num_classes = check_int(num_classes, "num_classes", minimum=2)
    big = input_shape[0] > 16
    inputs = keras.Input(tuple(input_shape))
    h = keras.layers.Conv2D(width, 3, activation="relu", name="conv1")(inputs)
    h = keras.layers.Conv2D(2 * width, 3, strides=2 if big else 1, activation="relu", name="conv2")(
        h
    )
    if big:
        h = keras.layers.MaxPooling2D(2)(h)
    h = keras.layers.Flatten()(h)
    h = keras.layers.Dense(dense, activation="relu", name="fc1")(h)
    outputs = keras.layers.Dense(num_classes, name="logits")(h)
    return keras.Model(inputs, outputs, name=name)
