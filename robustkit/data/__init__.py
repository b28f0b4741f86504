"""Data: named data sets (the standard splits, local files under their own names), image
folders, training pipelines with augmentation, and validated arrays.

Every loader returns float32 NHWC images in [0, 1] and int64 labels; :func:`load` says where
they came from (``with_info=True``: a :class:`DataInfo`), :func:`as_arrays` turns what a
caller passes as data (arrays or a ``tf.data.Dataset``) into validated arrays.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "train")      # embedded, no download
>>> x.shape[1:], x.dtype.name, float(x.max()) <= 1.0
((8, 8, 1), 'float32', True)

Names (:func:`load`): ``"digits"`` (embedded); ``"mnist"``, ``"cifar10"``, ``"svhn_cropped"``
and every TFDS name mean the standard splits (a prepared TFDS copy, else a
``keras.datasets`` cache; ``download=True`` fetches them, which needs the internet);
``"mnist"`` also reads ``mnist/*-idx?-ubyte.gz`` in ``data_dir`` / ``$ROBUSTKIT_DATA_DIR``
(the canonical bytes of the standard split); ``"cifar10_test_files"`` is the local
``cifar10/cifar10_test_jpeg_q75.npz`` (the CIFAR-10 *test* images decoded from JPEG, split
9,000/1,000: not the standard split); ``"tiny_imagenet"`` a Tiny-ImageNet folder.
:func:`from_directory` reads any folder of class sub-folders, :func:`tiny_imagenet` the
Tiny-ImageNet layout, both streaming. :func:`make_dataset` builds the training pipeline
(``augment=True``: pad-4 random crop and flip), keyed on the epoch so that a resumed run sees
the same data as an uninterrupted one.
"""

from robustkit.data.arrays import as_arrays, first_batch
from robustkit.data.folders import from_directory, tiny_imagenet
from robustkit.data.pipeline import crop_flip, make_dataset, subset, subset_indices
from robustkit.data.sources import (
    CIFAR_TRAIN_SIZE,
    ENV_VAR,
    LOCAL,
    SPLITS,
    DataInfo,
    data_dir_from,
    load,
)

__all__ = [
    "CIFAR_TRAIN_SIZE",
    "ENV_VAR",
    "LOCAL",
    "SPLITS",
    "DataInfo",
    "as_arrays",
    "crop_flip",
    "data_dir_from",
    "first_batch",
    "from_directory",
    "load",
    "make_dataset",
    "subset",
    "subset_indices",
    "tiny_imagenet",
]
