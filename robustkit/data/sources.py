"""Where a named data set comes from: :func:`load` and its readers.

``"digits"`` is embedded (scikit-learn's 8x8 digits). ``"mnist"``, ``"cifar10"``,
``"svhn_cropped"``, ... are the standard splits: a prepared TensorFlow Datasets copy, else a
``keras.datasets`` cache (MNIST, Fashion-MNIST, CIFAR-10/100), else the download when
``download=True``. ``"mnist"`` also reads the IDX files in the data dir (``mnist/*.gz``): they
are the canonical bytes of the standard 60,000/10,000 split (their md5 is checked and said in
the source). The local CIFAR-10 file is the *test set* decoded from JPEG and has a name of its
own, ``"cifar10_test_files"`` (9,000 train / 1,000 test of those test images); ``"cifar10"``
never means it. ``"tiny_imagenet"`` reads a Tiny-ImageNet folder (:mod:`robustkit.data.folders`).
"""

import dataclasses
import gzip
import hashlib
import os
import struct

import numpy as np
import tensorflow as tf

from robustkit._validation import check_choice

#: names served without TFDS (``"mnist"`` from its IDX files when the data dir has them)
LOCAL = ("digits", "mnist", "cifar10_test_files", "tiny_imagenet")
SPLITS = ("train", "test")
ENV_VAR = "ROBUSTKIT_DATA_DIR"

_MNIST_FILES = {
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
#: md5 of the canonical MNIST files (as torchvision checks them)
_MNIST_MD5 = {
    "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
    "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
    "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
    "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
}
_CIFAR_FILE = os.path.join("cifar10", "cifar10_test_jpeg_q75.npz")
#: the local CIFAR-10 file is the 10,000-image test set: 9,000 train / 1,000 test
CIFAR_TRAIN_SIZE = 9000
#: ``keras.datasets`` caches (file or folder name prefixes under ``~/.keras/datasets``)
_KERAS_CACHE = {
    "mnist": "mnist.npz",
    "fashion_mnist": "fashion-mnist",
    "cifar10": "cifar-10-batches-py",
    "cifar100": "cifar-100-python",
}


@dataclasses.dataclass(frozen=True)
class DataInfo:
    """Where one split came from: ``source`` in words, ``examples`` in the split.

    ``robustkit.app.train_and_export`` writes ``name`` and ``source`` into the export's
    ``DataRecord`` with the sizes of the splits it used.
    """

    name: str
    split: str
    source: str
    examples: int = None


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
    source = "scikit-learn load_digits (embedded; deterministic 80/20 split of 1,797)"
    return x[idx], y[idx], source


def _mnist_paths(split, root):
    folder = os.path.join(root, "mnist")
    return [os.path.join(folder, n) for n in _MNIST_FILES[split]]


def _md5(path):
    digest = hashlib.md5()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _mnist(split, root):
    paths = _mnist_paths(split, root)
    x = _read_idx(paths[0], 2051).astype("float32")[..., None] / 255.0
    y = _read_idx(paths[1], 2049).astype("int64")
    canonical = all(_md5(p) == _MNIST_MD5[os.path.basename(p)] for p in paths)
    folder = os.path.dirname(paths[0])
    source = (
        f"MNIST IDX files in {folder}: the canonical bytes of the standard 60,000/10,000 "
        "split (md5 checked)"
        if canonical
        else f"MNIST-format IDX files in {folder} (not the canonical MNIST bytes: md5 differs)"
    )
    return x, y, source


def _cifar10_test_files(split, root):
    path = os.path.join(root, _CIFAR_FILE)
    if not os.path.exists(path):
        raise FileNotFoundError(f"CIFAR-10 file not found: {path}.")
    with np.load(path) as f:
        x, y = f["x"], f["y"]
    sl = slice(0, CIFAR_TRAIN_SIZE) if split == "train" else slice(CIFAR_TRAIN_SIZE, None)
    source = (
        f"{path}: the 10,000 CIFAR-10 test images decoded from JPEG (quality 75), split "
        f"{CIFAR_TRAIN_SIZE:,} train / {len(x) - CIFAR_TRAIN_SIZE:,} test; not the standard "
        "split, not comparable with published numbers"
    )
    return x[sl].astype("float32") / 255.0, y[sl].astype("int64"), source


def _offline_hint(name):
    return (
        f"Offline, use a local data set instead of {name!r}: `mnist` from its IDX files, "
        f"`cifar10_test_files` (the CIFAR-10 test images) or `tiny_imagenet` from a folder in "
        f"`data_dir` or ${ENV_VAR} (see shared/data/README.md for the layout), or the "
        "embedded `digits`."
    )


def _keras_cache(name):
    prefix = _KERAS_CACHE.get(name)
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    folder = os.path.join(home, "datasets")
    if prefix is None or not os.path.isdir(folder):
        return None
    return folder if any(f.startswith(prefix) for f in os.listdir(folder)) else None


def _from_keras(name, split, folder):
    import keras

    (x_tr, y_tr), (x_te, y_te) = getattr(keras.datasets, name).load_data()
    x, y = (x_tr, y_tr) if split == "train" else (x_te, y_te)
    x = x[..., None] if x.ndim == 3 else x
    source = (
        f"keras.datasets.{name} (cached in {folder}): the standard split, "
        f"{len(x_tr):,} train / {len(x_te):,} test"
    )
    return x.astype("float32") / 255.0, y.reshape(-1).astype("int64"), source


def _tfds_builder(name, data_dir, download):
    """A prepared TFDS builder for ``name`` (``data_dir``, then TFDS' default folder), an
    unprepared one when ``download``, else ``None``; ``ValueError`` for an unknown name."""
    try:
        import tensorflow_datasets as tfds
    except ImportError as e:  # pragma: no cover - tfds is a core dependency
        raise ValueError(f"Unknown `dataset` {name!r} and tensorflow_datasets is missing.") from e
    builders = []
    for folder in dict.fromkeys([data_dir, None]):
        try:
            builders.append(tfds.builder(name, data_dir=folder))
        except Exception as e:  # tfds raises DatasetNotFoundError and friends
            raise ValueError(
                f"Unknown `dataset` {name!r}: not one of {list(LOCAL)} and not a TFDS name "
                f"({(str(e).splitlines() or [type(e).__name__])[0]})."
            ) from e
    for builder in builders:
        if builder.is_prepared():
            return builder
    return builders[0] if download else None


def _tfds_source(name, builder):
    try:
        sizes = {k: v.num_examples for k, v in builder.info.splits.items()}
        sizes = ", ".join(f"{k} {v:,}" for k, v in sorted(sizes.items()))
    except Exception:  # mocked or partial metadata
        sizes = "split sizes unknown"
    return f"TensorFlow Datasets {name} {builder.version} in {builder.data_dir} ({sizes})"


def _tfds_dataset(builder, name, split):
    try:
        ds = builder.as_dataset(split=split, as_supervised=True, shuffle_files=False)
    except Exception as e:
        raise RuntimeError(
            f"Could not load TFDS dataset {name!r} (split {split!r}): {e}\n" + _offline_hint(name)
        ) from e

    def to_float(x, y):
        x = tf.cast(x, tf.float32) / 255.0
        x = x[..., None] if x.shape.rank == 2 else x
        return x, tf.cast(tf.reshape(y, []), tf.int64)

    return ds.map(to_float, num_parallel_calls=tf.data.AUTOTUNE)


def _standard(name, split, data_dir, download, as_dataset):
    """A standard split: TFDS, else ``keras.datasets``' cache, else a clear error."""
    builder = _tfds_builder(name, data_dir, download)
    if builder is not None:
        if download and not builder.is_prepared():
            try:
                builder.download_and_prepare()
            except Exception as e:
                raise RuntimeError(
                    f"Could not download TFDS dataset {name!r}: {e}\nTFDS downloads data "
                    "sets the first time, which needs the internet. " + _offline_hint(name)
                ) from e
        source = _tfds_source(name, builder)
        ds = _tfds_dataset(builder, name, split)
        if as_dataset:
            return ds, None, source
        xs, ys = [], []
        for xb, yb in ds.batch(4096):
            xs.append(xb.numpy())
            ys.append(yb.numpy())
        if not xs:
            raise RuntimeError(f"TFDS dataset {name!r} split {split!r} is empty.")
        return np.concatenate(xs), np.concatenate(ys), source
    cache = _keras_cache(name)
    if cache is not None:
        return _from_keras(name, split, cache)
    local = ""
    if name == "cifar10":
        local = (
            " The local file cifar10/cifar10_test_jpeg_q75.npz holds the CIFAR-10 *test* "
            "images decoded from JPEG: load it as 'cifar10_test_files' (not the standard "
            "split)."
        )
    raise FileNotFoundError(
        f"{name!r} (the standard split) is not available offline: no prepared TensorFlow "
        f"Datasets copy (in `data_dir` or TFDS' default folder) and no keras.datasets cache. "
        "Pass download=True (`--download` on the command line) to download it, which needs "
        f"the internet.{local} " + _offline_hint(name)
    )


def _local(name, split, root):
    if root is None:
        raise FileNotFoundError(
            f"{name!r} is read from files: give `data_dir` or set ${ENV_VAR} (see "
            "shared/data/README.md for the layout)."
        )
    try:
        if name == "cifar10_test_files":
            return _cifar10_test_files(split, root)
        from robustkit.data.folders import tiny_imagenet_arrays

        return tiny_imagenet_arrays(root, split)
    except FileNotFoundError as e:
        raise FileNotFoundError(
            f"{e} Expected the layout of shared/data/README.md under `data_dir` ({root})."
        ) from e


def load(name, split="train", data_dir=None, download=False, as_dataset=False, with_info=False):
    """Loads ``(x, y)``: float32 NHWC images in [0, 1] and int64 labels.

    Args:
        name: ``"digits"`` (scikit-learn's 8x8 digits, embedded, deterministic 80/20
            split); ``"mnist"`` (its IDX files under ``data_dir`` when present: the
            canonical bytes of the standard split, else as below); ``"cifar10"``,
            ``"svhn_cropped"`` or any TFDS name: the standard split, from a prepared TFDS
            copy, else a ``keras.datasets`` cache (MNIST, Fashion-MNIST, CIFAR-10/100);
            ``"cifar10_test_files"``: the local JPEG-decoded CIFAR-10 *test* images split
            9,000/1,000; ``"tiny_imagenet"``: a Tiny-ImageNet folder under ``data_dir``
            (``test`` is its labelled ``val/`` split).
        split: ``"train"`` or ``"test"``.
        data_dir: folder holding ``mnist/``, ``cifar10/``, ``tiny-imagenet-200/``; default
            ``$ROBUSTKIT_DATA_DIR``. TFDS names look for a prepared copy here first, then in
            TFDS' default folder.
        download: download and prepare a TFDS data set that is not prepared yet (needs the
            internet). Default ``False``: a data set that is not on this machine raises
            ``FileNotFoundError`` at once, naming the fixes (TFDS' downloader would retry
            for minutes offline).
        as_dataset: return an unbatched ``tf.data.Dataset`` of ``(image, label)`` instead
            of arrays; TFDS data sets then stream from their files (nothing materialised).
        with_info: also return a :class:`DataInfo` (where the data came from, how many
            examples): ``(x, y, info)`` or ``(dataset, info)``.

    Example:

    >>> x, y, info = load("digits", "test", with_info=True)
    >>> len(x), int(y.max()), info.examples
    (359, 9, 359)
    >>> info.source
    'scikit-learn load_digits (embedded; deterministic 80/20 split of 1,797)'
    """
    if not isinstance(name, str) or not name:
        raise ValueError(f"`dataset` must be a non-empty string; got {name!r}.")
    split = check_choice(split, set(SPLITS), "split")
    name = name.lower()
    root = data_dir_from(data_dir)
    if name == "digits":
        x, y, source = _digits(split)
    elif name in ("cifar10_test_files", "tiny_imagenet"):
        if name == "tiny_imagenet" and as_dataset:
            from robustkit.data.folders import tiny_imagenet_source

            ds, source, count = tiny_imagenet_source(root, split)
            return (ds, DataInfo(name, split, source, count)) if with_info else ds
        x, y, source = _local(name, split, root)
    elif (
        name == "mnist" and root is not None and all(map(os.path.exists, _mnist_paths(split, root)))
    ):
        x, y, source = _mnist(split, root)
    else:
        x, y, source = _standard(name, split, data_dir, download, as_dataset)
        if as_dataset and y is None:
            return (x, DataInfo(name, split, source)) if with_info else x
    info = DataInfo(name, split, source, int(len(x)))
    out = tf.data.Dataset.from_tensor_slices((x, y)) if as_dataset else (x, y)
    if with_info:
        return (out, info) if as_dataset else (x, y, info)
    return out


__all__ = ["CIFAR_TRAIN_SIZE", "ENV_VAR", "LOCAL", "SPLITS", "DataInfo", "data_dir_from", "load"]
