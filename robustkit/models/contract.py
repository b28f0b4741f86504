"""The input contract: robustkit needs a model that returns logits, on inputs in known bounds.

Most Keras tutorials end a classifier in ``Dense(n, activation="softmax")``. Attacks and
training objectives need logits: cross-entropy applied to probabilities trains nothing useful
and gradients through a saturated softmax vanish (cleverhans #350). :func:`check_logits`
refuses such a model with the one-line fix; :func:`logits_of` is that fix (the same network,
sharing its weights, returning the logits the softmax was applied to).
:func:`with_normalization` prepends a ``Normalization`` layer, so a model trained on
standardised inputs takes images in [0, 1] (and attacks differentiate through it).

Example:

>>> import keras, numpy as np, robustkit as rk
>>> tutorial = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                              keras.layers.Dense(10, activation="softmax")])
>>> rk.models.check_logits(tutorial)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: `model` ends in a softmax (layer ...): robustkit needs logits. Wrap it: ...
>>> model = rk.models.logits_of(tutorial)
>>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
>>> np.allclose(keras.ops.softmax(model(x)), tutorial(x), atol=1e-6)
True
"""

import keras
import numpy as np

_SOFTMAX_NAMES = ("softmax",)


def _is_softmax_activation(fn):
    return fn is keras.activations.softmax or getattr(fn, "__name__", None) in _SOFTMAX_NAMES


def softmax_layer(model):
    """The layer that applies a final softmax in ``model``, or ``None``.

    Recognises a last ``Dense``/``Conv`` layer with ``activation="softmax"``, a trailing
    ``keras.layers.Softmax`` or ``Activation("softmax")``, in a Sequential or functional model
    (nested models are searched through their last layer).
    """
    layers = getattr(model, "layers", None)
    if not layers:
        return None
    last = layers[-1]
    if isinstance(last, keras.Model):
        return softmax_layer(last)
    if isinstance(last, keras.layers.Softmax):
        return last
    if _is_softmax_activation(getattr(last, "activation", None)):
        return last
    return None


def looks_like_probabilities(outputs, tol=1e-3):
    """Whether a probe batch of outputs is non-negative with rows summing to 1."""
    out = np.asarray(outputs, dtype=np.float64)
    if out.ndim != 2 or out.shape[1] < 2 or out.size == 0:
        return False
    return bool(np.all(out >= -tol) and np.allclose(out.sum(axis=1), 1.0, atol=tol))


def check_logits(model, probe=None, argname="model"):
    """``ValueError`` naming ``argname`` if ``model`` outputs probabilities, not logits.

    The check reads the last layer (softmax activation, ``Softmax``/``Activation`` layer)
    and, when ``probe`` outputs (the model's outputs on a probe batch) are given, whether
    they are non-negative and sum to 1. Returns ``model`` when it passes.
    """
    layer = softmax_layer(model)
    if layer is not None:
        raise ValueError(
            f"`{argname}` ends in a softmax (layer {layer.name!r}): robustkit needs logits. "
            f"Wrap it: rk.models.logits_of({argname})."
        )
    if probe is not None and looks_like_probabilities(probe):
        raise ValueError(
            f"`{argname}` outputs probabilities (non-negative, rows sum to 1), not logits: "
            f"return the logits, or wrap a Keras model with rk.models.logits_of({argname})."
        )
    return model


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


__all__ = [
    "PreActivation",
    "check_logits",
    "logits_of",
    "looks_like_probabilities",
    "softmax_layer",
    "with_normalization",
]
