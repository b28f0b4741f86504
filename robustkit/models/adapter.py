"""Adapters from "a model" to "a function returning float32 logits".

Attacks, evaluators and callbacks accept a Keras model or layer (run with
``training=False``), a ``keras.layers.TFSMLayer``, a reloaded SavedModel (its ``serve``
endpoint, else ``serving_default``) or any callable; :func:`as_logits_fn` turns each into
``x -> logits``.

Example:

>>> import keras, numpy as np
>>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
>>> as_logits_fn(m)(np.zeros((1, 2), "float32")).shape
TensorShape([1, 3])
"""

import keras
import tensorflow as tf


def single_output(out):
    """The one output of a model as float32; a clear ``ValueError`` when there are several."""
    if isinstance(out, dict):
        if len(out) != 1:
            raise ValueError(
                f"`model` returned {len(out)} outputs ({sorted(out)}); an attack needs "
                "exactly one output of logits."
            )
        out = next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise ValueError(
                f"`model` returned {len(out)} outputs; an attack needs exactly one output "
                "of logits."
            )
        out = out[0]
    return tf.cast(out, tf.float32)


@tf.custom_gradient
def unit_upstream(logits):
    """Identity on ``logits``; its gradient rescales each example's upstream gradient to a
    largest entry of 1.

    For a model computing in float16: the gradient of a confident example's loss w.r.t. its
    logits (``p - onehot``, ~1e-8) underflows to 0 once cast to float16, and the input
    gradient with it. Scaling example ``i``'s upstream by ``c_i > 0`` scales its input
    gradient by ``c_i`` (the backward pass is linear), so sign and normalised steps, which
    every gradient attack takes, are unchanged; loss values are untouched.

    Example:

    >>> import tensorflow as tf
    >>> z = tf.constant([[1.0, 2.0]])
    >>> with tf.GradientTape() as tape:
    ...     tape.watch(z)
    ...     loss = tf.reduce_sum(1e-9 * unit_upstream(z))
    >>> tape.gradient(loss, z).numpy().tolist()
    [[1.0, 1.0]]
    """

    def grad(upstream):
        scale = tf.reduce_max(tf.abs(upstream), axis=-1, keepdims=True)
        return upstream / tf.where(scale > 0, scale, tf.ones_like(scale))

    return tf.identity(logits), grad


def low_precision(model):
    """Whether ``model`` (a Keras layer) computes in float16 or bfloat16 (mixed precision)."""
    return getattr(model, "compute_dtype", None) in ("float16", "bfloat16")


def as_logits_fn(model):
    """Returns a function ``x -> logits`` (float32) for any supported model.

    The returned function carries the original object as ``fn.__robustkit_model__``. For a
    Keras model under a ``mixed_float16`` policy the logits pass through
    :func:`unit_upstream`, so input gradients do not underflow.
    """
    if isinstance(model, keras.layers.Layer) and low_precision(model):

        def fn(x):
            return unit_upstream(single_output(model(x, training=False)))

    elif isinstance(model, keras.layers.Layer):
        # keras.Model is a Layer; TFSMLayer too (it ignores ``training``).
        def fn(x):
            return single_output(model(x, training=False))

    elif hasattr(model, "serve") and callable(model.serve):

        def fn(x):
            return single_output(model.serve(x))

    elif hasattr(model, "signatures") and "serving_default" in getattr(model, "signatures", {}):
        sig = model.signatures["serving_default"]

        def fn(x):
            return single_output(sig(x))

    elif callable(model):

        def fn(x):
            return single_output(model(x))

    else:
        raise ValueError(
            f"`model` must be a Keras model or a callable returning logits; got "
            f"{type(model).__name__}."
        )
    fn.__robustkit_model__ = model
    return fn


def base_of(model):
    """A ``RobustModel``'s ``base_model``, else ``model`` itself."""
    base = getattr(model, "base_model", None)
    return base if isinstance(base, keras.Model) else model


__all__ = ["as_logits_fn", "base_of", "low_precision", "single_output", "unit_upstream"]
