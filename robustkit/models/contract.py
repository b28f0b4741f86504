"""The input contract: robustkit needs a model that returns logits, on inputs in known bounds.

Most Keras tutorials end a classifier in ``Dense(n, activation="softmax")``. Attacks and
training objectives need logits: cross-entropy applied to probabilities trains nothing useful
and gradients through a saturated softmax vanish (cleverhans #350). :func:`check_logits`
refuses such a model with the one-line fix; ``rk.models.logits_of`` is that fix (the same
network, sharing its weights, returning the logits the softmax was applied to).
:func:`check_model` is the whole contract (also a single binary logit, channels-first
layers) and :func:`check_range` the input box. The wrappers that fix a model live in
:mod:`robustkit.models.wrappers`; ``rk.models.with_normalization`` puts a ``Normalization``
layer in front, so a model trained on standardised inputs takes images in [0, 1] (and
attacks differentiate through it).

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

import warnings

import keras
import numpy as np

from robustkit._validation import check_labels

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


def channels_first_layer(model):
    """The first layer of ``model`` (searched through nested models) that works on
    channels-first data, or ``None``."""
    for layer in getattr(model, "_flatten_layers", lambda **_: [])(include_self=False):
        if getattr(layer, "data_format", None) == "channels_first":
            return layer
    return None


def check_layout(model=None, argname="model"):
    """``ValueError`` unless images are channels-last (NHWC), robustkit's only layout.

    Refuses ``keras.config.image_data_format() == "channels_first"`` and a Keras ``model``
    with a layer built for channels-first data, naming the fix.

    Example:

    >>> import keras
    >>> check_layout(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(2, 3)]))
    """
    fix = (
        "robustkit attacks, trains and exports NHWC (channels_last) images: call "
        "keras.config.set_image_data_format('channels_last'), build the model again, and "
        "transpose NCHW data with x.transpose(0, 2, 3, 1)."
    )
    if keras.config.image_data_format() == "channels_first":
        raise ValueError(f"keras.config.image_data_format() is 'channels_first'. {fix}")
    layer = None if model is None else channels_first_layer(model)
    if layer is not None:
        raise ValueError(
            f"`{argname}` has a channels-first layer ({layer.name!r}, data_format="
            f"'channels_first'). {fix}"
        )


def _single_logit_error(argname):
    return ValueError(
        f"`{argname}` returns a single logit (a binary classifier with one output): robustkit "
        f"needs one logit per class. Wrap it: rk.models.two_logits({argname}) returns "
        "[0, z], whose softmax is [1 - sigmoid(z), sigmoid(z)]."
    )


def check_outputs(shape, argname="model"):
    """``ValueError`` unless ``shape`` (of the model's output) is ``(batch, classes >= 2)``."""
    shape = tuple(shape)
    if len(shape) != 2:
        raise ValueError(f"`{argname}` must return logits of shape (batch, classes); got {shape}.")
    if shape[-1] == 1:
        raise _single_logit_error(argname)


def _probe_batch(model, bounds, n=2):
    try:
        shape = tuple(model.inputs[0].shape[1:]) if len(model.inputs) == 1 else None
    except (AttributeError, ValueError, TypeError):
        shape = None
    if not shape or any(d is None for d in shape):
        return None
    lo, hi = (float(b) for b in bounds)
    rng = np.random.default_rng(0)
    return rng.uniform(lo, hi, size=(n, *shape)).astype("float32")


def check_model(model, argname="model", probe=None, bounds=(0.0, 1.0)):
    """The whole input contract for a Keras classifier; returns ``model`` or raises a
    ``ValueError`` naming ``argname`` and the fix.

    Refused: a final softmax (:func:`logits_of` is the fix), outputs that are
    probabilities on a probe batch, a single-logit binary output (:func:`two_logits`),
    channels-first layers or ``image_data_format``. ``probe`` is a batch of inputs to
    run the model on (``True``: a few uniform images in ``bounds`` when the input shape
    is known; ``None``: no probe).

    Example:

    >>> import keras
    >>> binary = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)])
    >>> check_model(binary)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `model` returns a single logit ... rk.models.two_logits(model) ...
    """
    check_layout(model, argname)
    check_logits(model, argname=argname)
    try:
        out_shape = tuple(model.outputs[0].shape) if len(model.outputs) == 1 else None
    except (AttributeError, ValueError, TypeError):
        out_shape = None
    if out_shape is not None:
        check_outputs(out_shape, argname)
    if probe is True:
        probe = _probe_batch(model, bounds)
    if probe is not None:
        out = model(probe, training=False)
        if isinstance(out, (list, tuple)) and len(out) == 1:
            out = out[0]
        out = np.asarray(keras.ops.convert_to_numpy(out), dtype=np.float64)
        check_outputs(out.shape, argname)
        check_logits(model, probe=out, argname=argname)
    return model


def _range_hint(lo, hi, mn, mx):
    if mx > 1.5 and hi <= 1.0:
        return (
            " Images in 0-255: divide them by 255 (x / 255.0); or, for a model that takes "
            "0-255 inputs (keras.applications backbones rescale inside), give the attack "
            "bounds=(0, 255) and eps in the same units, e.g. rk.attacks.PGD(eps=8.0, "
            "step_size=2.0, bounds=(0, 255))."
        )
    if mn < 0 <= lo:
        return (
            f" For inputs in [{mn:.3g}, {mx:.3g}] (e.g. [-1, 1]), give the attack those "
            "bounds, e.g. rk.attacks.PGD(eps=16 / 255, bounds=(-1, 1))."
        )
    return ""


def check_range(xb, bounds, argname="x"):
    """``ValueError`` unless the batch ``xb`` lies in ``bounds``, naming the 0-255 and
    [-1, 1] cases and their fixes; a warning when [0, 1] images meet a 0-255 box.

    Example:

    >>> import numpy as np
    >>> check_range(np.full((2, 4, 4, 3), 255.0), (0.0, 1.0))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    ValueError: `x`: the first batch has values in [255, 255], ... divide them by 255 ...
    """
    arr = np.asarray(xb)
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"`{argname}` must hold numeric images; got dtype {arr.dtype}.")
    if arr.ndim < 2 or arr.size == 0:
        return
    if arr.dtype.kind == "f" and not np.all(np.isfinite(arr)):
        raise ValueError(f"`{argname}`: the first batch contains NaN or Inf values.")
    lo, hi = bounds
    mn, mx = float(arr.min()), float(arr.max())
    tol = 1e-6 * (hi - lo)
    if mn < lo - tol or mx > hi + tol:
        raise ValueError(
            f"`{argname}`: the first batch has values in [{mn:.4g}, {mx:.4g}], outside the "
            f"training attack's bounds ({lo:g}, {hi:g}); the attack would clip the images "
            f"into that box and the model would learn nothing.{_range_hint(lo, hi, mn, mx)}"
        )
    if hi - lo > 2.5 and mx - mn <= 1.0 + tol:
        warnings.warn(
            f"`{argname}`: the first batch lies in [{mn:.3g}, {mx:.3g}] but the attack's "
            f"bounds are ({lo:g}, {hi:g}) with eps in those units; are the images scaled "
            "to [0, 1]?",
            stacklevel=3,
        )


def check_class_labels(yb, num_classes, argname="y"):
    """``ValueError`` unless ``yb`` holds class ids below ``num_classes`` or one-hot rows of
    width ``num_classes`` (soft labels are refused)."""
    arr = np.asarray(yb)
    if arr.ndim == 2 and arr.shape[1] > 1:
        if arr.shape[1] != num_classes:
            raise ValueError(
                f"`{argname}`: one-hot rows of width {arr.shape[1]} for a model with "
                f"{num_classes} classes."
            )
        if not (np.all((arr == 0) | (arr == 1)) and np.all(arr.sum(axis=1) == 1)):
            raise ValueError(
                f"`{argname}` holds soft labels (rows that are not one-hot); RobustModel "
                "trains on class ids or one-hot rows: pass y.argmax(axis=-1)."
            )
        return
    check_labels(arr.reshape(-1), num_classes=num_classes, name=argname)


__all__ = [
    "check_class_labels",
    "check_layout",
    "check_logits",
    "check_model",
    "check_outputs",
    "check_range",
    "looks_like_probabilities",
    "softmax_layer",
]
