"""The samples per-sample MINE compares: first-convolution feature maps, or random projections.

A single image gives no sample of a distribution, so the K feature maps of the model's first
convolution layer are used as K paired samples (Hsu et al., AAAI 2022); where the model has
no convolution, ``projections`` random Gaussian projections of the flattened image (the
paper's code).

Example:

>>> import numpy as np
>>> from robustkit.mine.features import projection_features
>>> fn = projection_features((4, 4, 1), projections=3, dim=5, seed=0)
>>> tuple(fn(np.zeros((2, 4, 4, 1), "float32") + 0.5).shape)
(2, 3, 5)
"""

import math

import keras
import numpy as np
import tensorflow as tf


def find_first_conv(model):
    """The first ``Conv2D`` of ``model`` (searching nested models), or ``None``."""
    for layer in getattr(model, "layers", []):
        if isinstance(layer, (keras.layers.Conv2D,)):
            return layer
        if isinstance(layer, keras.Model):  # nested model: search inside
            inner = find_first_conv(layer)
            if inner is not None:
                return inner
    return None


def conv_features(model, layer):
    """Returns ``x -> (B, K, H, W)`` feature maps of ``layer`` (a name or a layer)."""
    if isinstance(layer, str):
        try:
            layer = model.get_layer(layer)
        except (ValueError, AttributeError):
            raise ValueError(f"`layer` {layer!r} is not a layer of the model.") from None
    try:
        sub = keras.Model(model.inputs, layer.output)
    except Exception:  # Sequential / subclassed model without symbolic inputs
        sub = None
        if model.layers and model.layers[0] is not layer:
            raise ValueError(
                f"`layer` {layer.name!r}: cannot build a feature model from "
                f"{type(model).__name__}; pass a functional model or a callable."
            ) from None

    def fn(x):
        out = sub(x, training=False) if sub is not None else layer(x)
        out = tf.cast(out, tf.float32)
        if out.shape.rank != 4:
            raise ValueError(
                f"`layer` must output (B, H, W, K) feature maps; got rank {out.shape.rank}."
            )
        return tf.transpose(out, [0, 3, 1, 2])

    return fn


def callable_features(user):
    """``x -> (B, K, H, W)`` from a user function returning ``(B, H, W, K)`` maps."""

    def fn(x):
        return tf.transpose(tf.cast(user(x), tf.float32), [0, 3, 1, 2])

    return fn


def projection_features(input_shape, projections, dim, seed):
    """``x -> (B, projections, dim)``: random Gaussian projections, each standardised."""
    d = int(np.prod(input_shape))
    rng = np.random.default_rng(seed)
    # float32 directly: 500 x 784 x 128 is 200 MB in float32
    matrix = rng.standard_normal((d, projections * dim), dtype=np.float32) / math.sqrt(dim)
    matrix = tf.constant(matrix)

    def fn(x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, d])
        z = tf.reshape(tf.matmul(flat, matrix), [-1, projections, dim])
        mean, var = tf.nn.moments(z, axes=[-1], keepdims=True)
        return (z - mean) / tf.sqrt(var + 1e-8)

    return fn


__all__ = ["callable_features", "conv_features", "find_first_conv", "projection_features"]
