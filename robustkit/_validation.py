"""Input checks shared by every public entry point.

Each check raises ``ValueError`` naming the offending argument *before* any work
starts. Checks run eagerly on concrete values (numpy arrays or eager tensors);
symbolic tensors inside a traced function are passed through untouched.
"""

import math

import numpy as np
import tensorflow as tf


def _concrete(value):
    """Returns a numpy view of ``value`` or ``None`` when it is symbolic."""
    if isinstance(value, np.ndarray):
        return value
    if isinstance(value, tf.Tensor):
        if not tf.executing_eagerly():
            return None
        try:
            return value.numpy()
        except (AttributeError, TypeError):
            return None
    if isinstance(value, tf.Variable):
        return value.numpy()
    return np.asarray(value)


def check_images(x, name="x", rank=4, bounds=(0.0, 1.0)):
    """Checks a batch of images: rank, float dtype, finite, values in ``bounds``."""
    arr = _concrete(x)
    shape = tuple(x.shape) if arr is None else arr.shape
    if len(shape) != rank:
        raise ValueError(
            f"`{name}` must be a rank-{rank} batch of images (N, H, W, C); "
            f"got shape {tuple(shape)}."
        )
    dtype = x.dtype if arr is None else arr.dtype
    dtype = tf.as_dtype(dtype)
    if not dtype.is_floating:
        raise ValueError(
            f"`{name}` must be floating point in [{bounds[0]:g}, {bounds[1]:g}]; got dtype "
            f"{dtype.name}. Convert with `x.astype('float32') / 255.0`."
        )
    if arr is None:
        return x
    if arr.size and not np.all(np.isfinite(arr)):
        raise ValueError(f"`{name}` contains NaN or Inf values.")
    lo, hi = bounds
    if arr.size and (arr.min() < lo or arr.max() > hi):
        hint = (
            " Images in 0-255 must be divided by 255 (or pass bounds=(0, 255))."
            if (lo, hi) == (0.0, 1.0) and arr.max() > 1.0
            else ""
        )
        raise ValueError(
            f"`{name}` must have values in [{lo:g}, {hi:g}]; got range "
            f"[{float(arr.min()):.4g}, {float(arr.max()):.4g}].{hint}"
        )
    return x


def check_labels(y, n=None, num_classes=None, name="y"):
    """Checks integer class labels: rank 1, length ``n``, values in range."""
    arr = _concrete(y)
    shape = tuple(y.shape) if arr is None else arr.shape
    if len(shape) != 1:
        raise ValueError(
            f"`{name}` must be a rank-1 vector of integer class labels; got shape {tuple(shape)}."
        )
    if n is not None and shape[0] is not None and n is not None and shape[0] != n:
        raise ValueError(
            f"`{name}` has {shape[0]} labels but `x` has {n} examples; they must match."
        )
    if arr is None:
        return y
    if arr.size and not np.issubdtype(arr.dtype, np.integer) and not np.all(np.mod(arr, 1) == 0):
        raise ValueError(f"`{name}` must hold integer class labels; got {arr.dtype}.")
    if arr.size and arr.min() < 0:
        raise ValueError(f"`{name}` has a negative label ({int(arr.min())}).")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise ValueError(
            f"`{name}` has label {int(arr.max())}, outside [0, {num_classes}) for a "
            f"model with {num_classes} classes."
        )
    return y


def check_positive(value, name):
    """Checks a strictly positive finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v <= 0:
        raise ValueError(f"`{name}` must be > 0; got {value!r}.")
    return v


def check_non_negative(value, name):
    """Checks a non-negative finite number."""
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number; got {value!r}.") from None
    if not math.isfinite(v) or v < 0:
        raise ValueError(f"`{name}` must be >= 0; got {value!r}.")
    return v


def check_int(value, name, minimum=1):
    """Checks an integer >= ``minimum``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ValueError(f"`{name}` must be an integer; got {value!r}.")
    if value < minimum:
        raise ValueError(f"`{name}` must be >= {minimum}; got {value}.")
    return int(value)


def check_choice(value, choices, name):
    """Checks that ``value`` is one of ``choices`` (case-insensitive strings)."""
    key = value.lower() if isinstance(value, str) else value
    if key not in choices:
        raise ValueError(f"Unknown `{name}` {value!r}; expected one of {sorted(choices)}.")
    return key
