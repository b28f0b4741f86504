"""Data as validated arrays: :func:`as_arrays` (what every evaluator reads) and
:func:`first_batch` (what ``RobustModel.fit`` checks)."""

import numpy as np
import tensorflow as tf

from robustkit._validation import check_images, check_int, check_labels


def _dataset_arrays(data, n, argname):
    xs, ys, count = [], [], 0
    for element in data:
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise ValueError(
                f"`{argname}` must yield (x, y) batches; got {type(element).__name__}."
            )
        xb, yb = np.asarray(element[0]), np.asarray(element[1])
        if xb.ndim == 3:  # an unbatched dataset of (H, W, C) images
            xb, yb = xb[None], yb.reshape(1, -1) if yb.ndim else yb[None]
        xs.append(xb)
        ys.append(yb)
        count += len(xb)
        if n is not None and count >= n:
            break
    if not xs:
        raise ValueError(f"`{argname}` is an empty dataset.")
    return np.concatenate(xs), np.concatenate(ys)


def as_arrays(data, n=None, argname="data", bounds=(0.0, 1.0)):
    """Validated ``(x, y)`` numpy arrays from ``(x, y)`` or a ``tf.data`` dataset.

    The images must be a float batch ``(N, H, W, C)`` in ``bounds`` (default [0, 1];
    ``None``: not checked); the labels integer class ids, shape ``(N,)`` (``(N, 1)`` is
    flattened; one-hot labels are refused). A dataset may yield batches or single
    examples; only the first ``n`` examples are read when ``n`` is given. Bad input raises
    a ``ValueError`` naming ``argname``.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> x, y = np.zeros((5, 2, 2, 1), "float32"), np.arange(5)
    >>> ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(2)
    >>> xs, ys = as_arrays(ds, n=3)
    >>> xs.shape, ys.tolist(), ys.dtype.name
    ((3, 2, 2, 1), [0, 1, 2], 'int64')
    >>> as_arrays((x, np.eye(5)[y]))  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: `data` labels must be integer class ids, not one-hot ...
    """
    if n is not None:
        n = check_int(n, "n")
    if isinstance(data, tf.data.Dataset):
        x, y = _dataset_arrays(data, n, argname)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise ValueError(
            f"`{argname}` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches; "
            f"got {type(data).__name__}."
        )
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"`{argname}` labels must be integer class ids, not one-hot (shape {y.shape}); "
            "convert them with `y.argmax(axis=-1)`."
        )
    if y.ndim == 2:
        y = y.reshape(-1)
    if bounds is None:
        check_images(x, argname, bounds=(-np.inf, np.inf))
    else:
        check_images(x, argname, bounds=tuple(float(b) for b in bounds))
    check_labels(y, n=len(x), name=f"{argname} labels")
    if len(x) == 0:
        raise ValueError(f"`{argname}` holds no examples.")
    if n is not None:
        x, y = x[:n], y[:n]
    return x.astype("float32", copy=False), y.astype("int64", copy=False)


def first_batch(x, y=None, batch_size=None):
    """The first ``(x, y)`` batch of what ``keras.Model.fit`` accepts (arrays, a ``tf.data``
    dataset, a ``keras.utils.PyDataset``), or ``(None, None)`` for a Python generator
    (peeking would lose its batch). ``y`` is ``None`` when there are no labels.

    Example:

    >>> import numpy as np
    >>> xb, yb = first_batch(np.zeros((100, 2)), np.arange(100), batch_size=8)
    >>> xb.shape, yb.tolist()[-1]
    ((8, 2), 7)
    """
    import keras

    if isinstance(x, tf.data.Dataset):
        for element in x.take(1):
            if isinstance(element, (tuple, list)):
                xb, yb, _ = keras.utils.unpack_x_y_sample_weight(tuple(element))
                return xb, yb
            return element, None
        return None, None
    if isinstance(x, keras.utils.PyDataset):
        element = x[0]
        if isinstance(element, (tuple, list)):
            return element[0], (element[1] if len(element) > 1 else None)
        return element, None
    if isinstance(x, (np.ndarray, tf.Tensor)):
        b = batch_size or 32
        return x[:b], None if y is None else y[:b]
    return None, None


__all__ = ["as_arrays", "first_batch"]
