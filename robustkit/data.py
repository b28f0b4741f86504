"""Datasets: the embedded default, MNIST / CIFAR-10 from local files, and TFDS.

Every loader returns ``(x, y)`` numpy arrays: float32 NHWC images in [0, 1] and
int64 labels; :func:`as_arrays` turns what a caller passes as data (arrays or a
``tf.data.Dataset``) into the same, validated.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "train")      # embedded, no download
>>> x.shape[1:], x.dtype.name, float(x.max()) <= 1.0
((8, 8, 1), 'float32', True)

MNIST and CIFAR-10 are read from ``data_dir`` or the ``ROBUSTKIT_DATA_DIR``
environment variable, laid out as ``mnist/*-idx?-ubyte.gz`` (the canonical IDX
files) and ``cifar10/cifar10_test_jpeg_q75.npz`` (``x`` uint8 NHWC, ``y``); any
other name goes to TensorFlow Datasets (``download=True`` fetches it the first
time, which needs the internet).
"""

import gzip
import os
import struct

import numpy as np
import tensorflow as tf

from robustkit._validation import check_choice, check_images, check_int, check_labels

#: names served without TFDS
LOCAL = ("digits", "mnist", "cifar10")
SPLITS = ("train", "test")
ENV_VAR = "ROBUSTKIT_DATA_DIR"

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
_CIFAR_FILE = os.path.join("cifar10", "cifar10_test_jpeg_q75.npz")
#: the local CIFAR-10 file is the 10,000-image test set: 9,000 train / 1,000 test
CIFAR_TRAIN_SIZE = 9000


def data_dir_from(data_dir=None):
    """Returns ``data_dir``, else ``$ROBUSTKIT_DATA_DIR``, else ``None``."""
    return data_dir or os.environ.get(ENV_VAR) or None


def _read_idx(path, magic):
    with gzip.open(path, "rb") as f:
        raw = f.read()
    got = struct.unpack(">I", raw[:4])[0]
    if got != magic:
        raise ValueError(f"{path} is not an IDX file with magic {magic} (got {got}).")
    ndim = magic & 0xFF
    dims = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


def _digits(split):
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = (bunch.images / 16.0).astype("float32")[..., None]
    y = bunch.target.astype("int64")
    order = np.random.default_rng(0).permutation(len(x))  # deterministic 80/20 split
    cut = int(round(0.8 * len(x)))
    idx = order[:cut] if split == "train" else order[cut:]
    return x[idx], y[idx]


def _mnist(split, root):
    img_name, lbl_name = _MNIST_FILES[split]
    folder = os.path.join(root, "mnist")
    paths = [os.path.join(folder, n) for n in (img_name, lbl_name)]
    missing = [p for p in paths if not os.path.exists(p)]
    if missing:
        raise FileNotFoundError(f"MNIST files not found: {missing}.")
    x = _read_idx(paths[0], 2051).astype("float32")[..., None] / 255.0
    y = _read_idx(paths[1], 2049).astype("int64")
    return x, y


def _cifar10(split, root):
    path = os.path.join(root, _CIFAR_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}.")
    with np.load(path) as f:
        x, y = f["x"], f["y"]
    sl = slice(0, CIFAR_TRAIN_SIZE) if split == "train" else slice(CIFAR_TRAIN_SIZE, None)
    return x[sl].astype("float32") / 255.0, y[sl].astype("int64")


def _offline_hint(name):
    return (
        f"Offline, use a local data set instead of TFDS {name!r}: `mnist` or `cifar10` from "
        f"files in `data_dir` or ${ENV_VAR} (see shared/data/README.md for the layout), or "
        "the embedded `digits`."
    )


def _tfds(name, split, data_dir, download=False):
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - tfds is a core dependency
        raise ValueError(f"Unknown `dataset` {name!r} and tensorflow_datasets is missing.") from e
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as e:  # tfds raises DatasetNotFoundError and friends
        raise ValueError(
            f"Unknown `dataset` {name!r}: not one of {list(LOCAL)} and not a TFDS name "
            f"({(str(e).splitlines() or [type(e).__name__])[0]})."
        ) from e
    # Offline, TFDS' downloader retries for minutes before failing: look first.
    if not download and not builder.is_prepared():
        raise FileNotFoundError(
            f"TFDS dataset {name!r} is not prepared in {builder.data_dir}. Pass "
            "download=True (`--download` on the command line) to download it, which needs "
            "the internet. " + _offline_hint(name)
        )
    try:
        if download:
            builder.download_and_prepare()
        ds = builder.as_dataset(split=split, as_supervised=True)
        xs, ys = [], []
        for xb, yb in tfds.as_numpy(ds.batch(4096)):
            xs.append(np.asarray(xb))
            ys.append(np.asarray(yb).reshape(-1))
    except Exception as e:
        raise RuntimeError(
            f"Could not load TFDS dataset {name!r} (split {split!r}): {e}\n"
            "TFDS downloads data sets the first time, which needs the internet. "
            + _offline_hint(name)
        ) from e
    if not xs:
        raise RuntimeError(f"TFDS dataset {name!r} split {split!r} is empty.")
    x, y = np.concatenate(xs), np.concatenate(ys)
    if x.ndim == 3:
        x = x[..., None]
    return x.astype("float32") / 255.0, y.astype("int64")


def load(name, split="train", data_dir=None, download=False):
    """Loads ``(x, y)``: float32 NHWC images in [0, 1] and int64 labels.

    Args:
        name: ``"digits"`` (scikit-learn's 8x8 digits, embedded, deterministic 80/20
            split), ``"mnist"`` or ``"cifar10"`` (files under ``data_dir``; falls
            back to TFDS when no files are found), or any TFDS name
            (``"svhn_cropped"``, ...).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``mnist/`` and ``cifar10/``; default
            ``$ROBUSTKIT_DATA_DIR``. For TFDS names it is TFDS' ``data_dir``.
        download: for TFDS names, download and prepare the data set when it is
            not prepared yet (needs the internet). Default ``False``: an
            unprepared TFDS data set raises ``FileNotFoundError`` at once with a
            message pointing at the local files (TFDS' downloader would retry for
            minutes offline).

    Example:

    >>> x, y = load("digits", "test")
    >>> len(x), int(y.max())
    (359, 9)
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`dataset` must be a non-empty string; got {name!r}.")
    split = check_choice(split, set(SPLITS), "split")
    name = name.lower()
    if name == "digits":
        return _digits(split)
    root = data_dir_from(data_dir)
    if name in ("mnist", "cifar10") and root is not None:
        try:
            return _mnist(split, root) if name == "mnist" else _cifar10(split, root)
        except FileNotFoundError as e:
            raise FileNotFoundError(
                f"{e} Expected the layout of shared/data/README.md under `data_dir` ({root})."
            ) from e
    return _tfds(name, split, data_dir if name not in LOCAL else None, download=download)


def subset(x, y, n, seed=0, stratified=True):
    """A deterministic subset of ``n`` examples (class-balanced when ``stratified``).

    Example:

    >>> import numpy as np
    >>> xs, ys = subset(np.zeros((100, 1, 1, 1), "float32"), np.arange(100) % 10, 20)
    >>> np.bincount(ys).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    if n >= len(x):
        return x, y
    rng = np.random.default_rng(seed)
    if not stratified:
        idx = np.sort(rng.choice(len(x), n, replace=False))
        return x[idx], y[idx]
    classes = np.unique(y)
    per = [np.flatnonzero(y == c) for c in classes]
    take = []
    for i, members in enumerate(per):
        k = n // len(classes) + (1 if i < n % len(classes) else 0)
        take.append(rng.choice(members, min(k, len(members)), replace=False))
    idx = np.sort(np.concatenate(take))
    return x[idx], y[idx]


def make_dataset(x, y, batch_size=128, shuffle=True, seed=0, repeat=False, drop_remainder=False):
    """A shuffled, batched, prefetched ``tf.data.Dataset`` of ``(x, y)``.

    Example:

    >>> import numpy as np
    >>> ds = make_dataset(np.zeros((10, 8, 8, 1), "float32"), np.zeros(10, "int64"), 4)
    >>> [int(b[0].shape[0]) for b in ds]
    [4, 4, 2]
    """
    if len(x) != len(y):
        raise ValueError(f"`x` has {len(x)} examples but `y` has {len(y)}; they must match.")
    ds = tf.data.Dataset.from_tensor_slices((x, y))
    if shuffle:
        ds = ds.shuffle(min(len(x), 60000), seed=seed, reshuffle_each_iteration=True)
    if repeat:
        ds = ds.repeat()
    return ds.batch(batch_size, drop_remainder=drop_remainder).prefetch(tf.data.AUTOTUNE)


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


def as_arrays(data, n=None, argname="data"):
    """Validated ``(x, y)`` numpy arrays from ``(x, y)`` or a ``tf.data`` dataset.

    The images must be a float batch ``(N, H, W, C)`` in [0, 1]; the labels integer class
    ids, shape ``(N,)`` (``(N, 1)`` is flattened; one-hot labels are refused). A dataset
    may yield batches or single examples; only the first ``n`` examples are read when
    ``n`` is given. Bad input raises a ``ValueError`` naming ``argname``.

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
    check_images(x, argname)
    check_labels(y, n=len(x), name=f"{argname} labels")
    if len(x) == 0:
        raise ValueError(f"`{argname}` holds no examples.")
    if n is not None:
        x, y = x[:n], y[:n]
    return x.astype("float32", copy=False), y.astype("int64", copy=False)
