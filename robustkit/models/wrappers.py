"""Wrappers that make a Keras model meet the input contract (:mod:`robustkit.models.contract`).

:func:`logits_of` drops a final softmax, :func:`two_logits` turns a single binary logit into
one logit per class, :func:`with_normalization` puts a ``Normalization`` layer in front so the
model takes images in [0, 1]. Each shares the original model's weights.

Example:

>>> import keras, robustkit as rk
>>> tutorial = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3, activation="softmax")])
>>> rk.models.check_logits(logits_of(tutorial)).output_shape
(None, 3)
"""

import keras
import numpy as np

from robustkit.models.contract import softmax_layer


@keras.saving.register_keras_serializable(package="robustkit")
class PreActivation(keras.layers.Layer):
    """The pre-activation output of a ``Dense`` layer, with that layer's own weights.

    Shares ``dense``'s kernel and bias (training one trains the other); used by
    :func:`logits_of` to drop a final softmax without copying weights.
    """

    def __init__(self, dense, **kwargs):
        super().__init__(**kwargs)
        if isinstance(dense, dict):
            dense = keras.saving.deserialize_keras_object(dense)
        if not isinstance(dense, keras.layers.Dense):
            raise ValueError(f"`dense` must be a keras.layers.Dense; got {type(dense).__name__}.")
        self.dense = dense

    def build(self, input_shape):
        if not self.dense.built:
            self.dense.build(input_shape)
        self.built = True

    def call(self, x):
        out = keras.ops.matmul(x, self.dense.kernel)
        if self.dense.use_bias:
            out = out + self.dense.bias
        return out

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], self.dense.units)

    def get_config(self):
        config = super().get_config()
        config["dense"] = keras.saving.serialize_keras_object(self.dense)
        return config


def logits_of(model):
    """The same network as ``model`` (sharing its weights) returning the logits that its
    final softmax was applied to.

    Works for Sequential and functional models ending in ``Dense(..., activation="softmax")``,
    ``keras.layers.Softmax()`` or ``Activation("softmax")``. A model without a final softmax
    is returned unchanged.
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    layer = softmax_layer(model)
    if layer is None:
        return model
    try:
        inputs = model.inputs
        features = layer.input
    except (AttributeError, ValueError):
        inputs = None
    if not inputs:
        raise ValueError(
            "`model` has no symbolic inputs (a subclassed model?): call it on a batch first, "
            "or build it with keras.Input and return logits from call()."
        )
    if isinstance(layer, keras.layers.Softmax) or not isinstance(layer, keras.layers.Dense):
        if not isinstance(layer, (keras.layers.Softmax, keras.layers.Activation)):
            raise ValueError(
                f"`model`'s final softmax sits inside layer {layer.name!r} "
                f"({type(layer).__name__}); return logits from it or end the model in "
                "Dense(n) followed by keras.layers.Softmax()."
            )
        logits = features
    else:
        logits = PreActivation(layer, name=f"{layer.name}_logits")(features)
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, logits, name=f"{model.name}_logits")


@keras.saving.register_keras_serializable(package="robustkit")
class TwoLogits(keras.layers.Layer):
    """``z -> [0, z]``: one logit per class for a binary classifier's single logit ``z``."""

    def call(self, z):
        z = keras.ops.cast(z, "float32")
        return keras.ops.concatenate([keras.ops.zeros_like(z), z], axis=-1)

    def compute_output_shape(self, input_shape):
        return (*input_shape[:-1], 2)


def two_logits(model):
    """A binary classifier with one output ``z`` (a logit, or ``sigmoid(z)``) as a two-class
    model returning ``[0, z]``: its softmax is ``[1 - sigmoid(z), sigmoid(z)]``, so class 1
    is the positive class. Shares ``model``'s weights; a final sigmoid is dropped.

    Example:

    >>> import keras, numpy as np
    >>> binary = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    >>> x = np.ones((3, 4), "float32")
    >>> p = keras.ops.softmax(two_logits(binary)(x))[:, 1]
    >>> np.allclose(p, binary(x)[:, 0], atol=1e-6)
    True
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    try:
        inputs, outputs = model.inputs, model.outputs
    except (AttributeError, ValueError):
        inputs = outputs = None
    if not inputs or not outputs or len(outputs) != 1:
        raise ValueError(
            "`model` has no symbolic inputs and one output (a subclassed model?): build it "
            "with keras.Input, or return two logits [0, z] from call()."
        )
    if tuple(outputs[0].shape)[-1] != 1:
        raise ValueError(f"`model` must have one output unit; got {tuple(outputs[0].shape)}.")
    last = model.layers[-1]
    z = outputs[0]
    if getattr(last, "activation", None) is keras.activations.sigmoid or (
        getattr(getattr(last, "activation", None), "__name__", None) == "sigmoid"
    ):
        if isinstance(last, keras.layers.Dense):
            z = PreActivation(last, name=f"{last.name}_logit")(last.input)
        elif isinstance(last, keras.layers.Activation):
            z = last.input
        else:
            raise ValueError(
                f"`model`'s final sigmoid sits inside layer {last.name!r}; return the logit."
            )
    inputs = inputs[0] if len(inputs) == 1 else inputs
    return keras.Model(inputs, TwoLogits(name="two_logits")(z), name=f"{model.name}_two_logits")


def with_normalization(model, mean, std, input_shape=None):
    """``model`` behind a ``keras.layers.Normalization(mean, std**2)``: it then takes raw
    images in [0, 1] (per-channel ``mean``/``std``), and attacks see the [0, 1] box.

    Example:

    >>> import keras, robustkit as rk
    >>> inner = rk.models.small_cnn((8, 8, 1), width=4, dense=8)
    >>> m = rk.models.with_normalization(inner, mean=[0.5], std=[0.25])
    >>> m.input_shape, m.output_shape
    ((None, 8, 8, 1), (None, 10))
    """
    if not isinstance(model, keras.Model):
        raise ValueError(f"`model` must be a keras.Model; got {type(model).__name__}.")
    shape = input_shape or tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise ValueError("`input_shape` is needed: the model's input shape is not fully known.")
    mean = np.asarray(mean, dtype="float32").reshape(-1)
    std = np.asarray(std, dtype="float32").reshape(-1)
    if mean.shape != std.shape or mean.size not in (1, shape[-1]):
        raise ValueError(
            f"`mean` and `std` must have one value or one per channel ({shape[-1]}); got "
            f"{mean.size} and {std.size}."
        )
    if np.any(std <= 0):
        raise ValueError(f"`std` must be > 0; got {std.tolist()}.")
    inputs = keras.Input(shape)
    norm = keras.layers.Normalization(mean=mean, variance=std**2, name="normalization")
    return keras.Model(inputs, model(norm(inputs)), name=f"{model.name}_normalized")


__all__ = ["PreActivation", "TwoLogits", "logits_of", "two_logits", "with_normalization"]
