"""Image folders: :func:`from_directory` (one sub-folder per class) and :func:`tiny_imagenet`.

Both return ``tf.data`` datasets of float32 NHWC images in [0, 1] and int64 labels, read
from the files as they are iterated (nothing is held in memory), with the class names as
``dataset.class_names``.

Example:

>>> import os, tempfile, numpy as np, keras, robustkit as rk
>>> root = tempfile.mkdtemp()
>>> for label in ("cat", "dog"):
...     os.makedirs(os.path.join(root, label))
...     keras.utils.save_img(os.path.join(root, label, "0.png"), np.zeros((8, 8, 3)))
>>> ds = rk.data.from_directory(root, image_size=(8, 8), batch_size=2, shuffle=False)
>>> ds.class_names, [b[1].numpy().tolist() for b in ds]
(['cat', 'dog'], [[0, 1]])
"""

import os

import numpy as np
import tensorflow as tf

_IMAGE_EXTENSIONS = (".jpeg", ".jpg", ".png", ".bmp", ".gif")


def _check_size(image_size):
    try:
        h, w = (int(d) for d in image_size)
    except (TypeError, ValueError):
        raise ValueError(f"`image_size` must be (height, width); got {image_size!r}.") from None
    if h < 1 or w < 1:
        raise ValueError(f"`image_size` must be positive; got {image_size!r}.")
    return h, w


def _scaled(ds, class_names):
    def scale(x, y):
        return tf.cast(x, tf.float32) / 255.0, tf.cast(y, tf.int64)

    out = ds.map(scale, num_parallel_calls=tf.data.AUTOTUNE)
    out.class_names = list(class_names)
    return out


def from_directory(path, image_size, batch_size=32, shuffle=True, seed=0, validation_split=None,
                   subset=None, color_mode="rgb", class_names=None):  # fmt: skip
    """Images in ``path/<class>/...`` (any depth) as a ``tf.data`` dataset of ``(x, y)``:
    ``keras.utils.image_dataset_from_directory`` with the images scaled into [0, 1].

    Args:
        path: the folder with one sub-folder per class (classes sorted by name, or as
            ``class_names`` gives them).
        image_size: ``(height, width)`` the images are resized to.
        batch_size: examples per batch (``None``: single examples).
        shuffle, seed: shuffle the files (seeded, so a ``validation_split`` is stable).
        validation_split, subset: hold out a fraction; ``subset`` is ``"training"``,
            ``"validation"`` or ``"both"`` (a pair of datasets).
        color_mode: ``"rgb"``, ``"grayscale"`` or ``"rgba"``.
    """
    import keras

    if not isinstance(path, (str, os.PathLike)) or not os.path.isdir(path):
        raise FileNotFoundError(f"`path` {path!r} is not a folder of class sub-folders.")
    size = _check_size(image_size)
    try:
        ds = keras.utils.image_dataset_from_directory(
            os.fspath(path), labels="inferred", label_mode="int", class_names=class_names,
            color_mode=color_mode, batch_size=batch_size, image_size=size, shuffle=shuffle,
            seed=seed, validation_split=validation_split, subset=subset, verbose=False,
        )  # fmt: skip
    except ValueError as e:
        raise ValueError(f"`path` {os.fspath(path)!r}: {e}") from None
    if isinstance(ds, (list, tuple)):
        return [_scaled(d, d.class_names) for d in ds]
    return _scaled(ds, ds.class_names)


def _tiny_root(path):
    """The ``tiny-imagenet-200`` folder: ``path`` itself or its child of that name."""
    if path is None:
        raise FileNotFoundError("Tiny-ImageNet: give its folder (`data_dir`).")
    for cand in (path, os.path.join(path, "tiny-imagenet-200")):
        if os.path.isdir(os.path.join(cand, "train")):
            return cand
    raise FileNotFoundError(
        f"Tiny-ImageNet not found in {path}: expected tiny-imagenet-200/train/<wnid>/images/"
        "*.JPEG and tiny-imagenet-200/val/{val_annotations.txt, images/}."
    )


def _tiny_files(root, split):
    """``(paths, labels, wnids)`` of a Tiny-ImageNet split (``"val"``: the labelled one)."""
    train = os.path.join(root, "train")
    wnids = sorted(d for d in os.listdir(train) if os.path.isdir(os.path.join(train, d)))
    index = {w: i for i, w in enumerate(wnids)}
    paths, labels = [], []
    if split == "train":
        for wnid in wnids:
            folder = os.path.join(train, wnid, "images")
            folder = folder if os.path.isdir(folder) else os.path.join(train, wnid)
            for f in sorted(os.listdir(folder)):
                if f.lower().endswith(_IMAGE_EXTENSIONS):
                    paths.append(os.path.join(folder, f))
                    labels.append(index[wnid])
    else:
        notes = os.path.join(root, "val", "val_annotations.txt")
        if not os.path.isfile(notes):
            raise FileNotFoundError(f"Tiny-ImageNet: {notes} not found.")
        with open(notes) as f:
            for line in f:
                parts = line.split()
                if len(parts) < 2:
                    continue
                if parts[1] not in index:
                    raise ValueError(f"{notes}: class {parts[1]!r} has no train/ folder.")
                paths.append(os.path.join(root, "val", "images", parts[0]))
                labels.append(index[parts[1]])
    if not paths:
        raise FileNotFoundError(f"Tiny-ImageNet: no {split} images under {root}.")
    return paths, np.asarray(labels, "int64"), wnids


def tiny_imagenet(path, split="train", image_size=(64, 64), batch_size=None, shuffle=False,
                  seed=0):  # fmt: skip
    """Tiny-ImageNet as a ``tf.data`` dataset of ``(x, y)`` read from its folder.

    ``train`` reads ``train/<wnid>/images/*.JPEG``; ``val`` (also ``"test"``: Tiny-ImageNet's
    ``test/`` has no labels, so ``val/`` is its test split) reads ``val/images/*`` with the
    classes in ``val/val_annotations.txt`` (not a per-class layout). Classes are the sorted
    wnids of ``train/``; grey JPEGs become RGB.

    Args:
        path: the ``tiny-imagenet-200`` folder or its parent.
        split: ``"train"``, ``"val"`` or ``"test"``.
        image_size: ``(height, width)``; 64x64 is the native size.
        batch_size: examples per batch (``None``: single examples).
        shuffle, seed: shuffle the file order (seeded).
    """
    if split not in ("train", "val", "test"):
        raise ValueError(f"Unknown `split` {split!r}; expected 'train', 'val' or 'test'.")
    size = _check_size(image_size)
    paths, labels, wnids = _tiny_files(_tiny_root(path), "train" if split == "train" else "val")
    ds = tf.data.Dataset.from_tensor_slices((paths, labels))
    if shuffle:
        ds = ds.shuffle(len(paths), seed=seed, reshuffle_each_iteration=True)

    def read(p, y):
        image = tf.io.decode_image(tf.io.read_file(p), channels=3, expand_animations=False)
        image = tf.image.resize(tf.cast(image, tf.float32), size)
        return tf.ensure_shape(image, [*size, 3]) / 255.0, y

    ds = ds.map(read, num_parallel_calls=tf.data.AUTOTUNE)
    if batch_size is not None:
        ds = ds.batch(batch_size)
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.class_names = wnids
    return ds


def tiny_imagenet_source(path, split):
    """``(dataset, source, examples)`` for ``rk.data.load("tiny_imagenet", ...)``."""
    root = _tiny_root(path)
    paths, _, wnids = _tiny_files(root, "train" if split == "train" else "val")
    folder = "train/" if split == "train" else "val/ (its labelled split)"
    source = f"Tiny-ImageNet folder {root}, {folder}: {len(paths):,} images, {len(wnids)} classes"
    return tiny_imagenet(root, split), source, len(paths)


def tiny_imagenet_arrays(path, split):
    """``(x, y, source)`` of a Tiny-ImageNet split as arrays (100,000 train images are
    4.9 GB as float32: prefer :func:`tiny_imagenet` for the full set)."""
    ds, source, _ = tiny_imagenet_source(path, split)
    xs, ys = [], []
    for xb, yb in ds.batch(1024):
        xs.append(xb.numpy())
        ys.append(yb.numpy())
    return np.concatenate(xs), np.concatenate(ys), source


__all__ = ["from_directory", "tiny_imagenet"]
