"""Data loaders: embedded digits, MNIST IDX and CIFAR-10 files, TFDS (mocked), errors."""

import gzip
import os
import struct
import tempfile
import time

import numpy as np
import pytest

import robustkit as rk


def test_digits_split_deterministic_and_normalised():
    x_tr, y_tr = rk.data.load("digits", "train")
    x_te, y_te = rk.data.load("digits", "test")
    assert x_tr.shape == (1438, 8, 8, 1) and x_te.shape == (359, 8, 8, 1)  # 80/20 of 1797
    assert x_tr.dtype == np.float32 and y_tr.dtype == np.int64
    for x in (x_tr, x_te):
        assert x.min() == 0.0 and x.max() == 1.0
    # deterministic: a second load gives the same arrays
    x_tr2, y_tr2 = rk.data.load("digits", "train")
    np.testing.assert_array_equal(x_tr, x_tr2)
    np.testing.assert_array_equal(y_tr, y_tr2)
    # disjoint and together the whole data set, every class in both splits
    from sklearn.datasets import load_digits

    full = load_digits().images.reshape(len(x_tr) + len(x_te), -1) / 16.0
    both = np.concatenate([x_tr, x_te]).reshape(len(full), -1)
    key = lambda a: sorted(map(bytes, (a * 16).round().astype(np.uint8)))
    assert key(both) == key(full)
    assert set(np.unique(y_tr)) == set(np.unique(y_te)) == set(range(10))


def test_mnist_idx_files(data_dir):
    x_tr, y_tr = rk.data.load("mnist", "train", data_dir)
    x_te, y_te = rk.data.load("mnist", "test", data_dir)
    assert x_tr.shape == (60000, 28, 28, 1) and x_te.shape == (10000, 28, 28, 1)
    assert x_tr.dtype == np.float32 and y_te.dtype == np.int64
    assert x_tr.min() == 0.0 and x_tr.max() == 1.0
    # the canonical label histograms of MNIST
    assert np.bincount(y_tr).tolist() == [
        5923,
        6742,
        5958,
        6131,
        5842,
        5421,
        5918,
        6265,
        5851,
        5949,
    ]
    assert np.bincount(y_te).tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    # the environment variable is used when no data_dir is given
    old = os.environ.get(rk.data.ENV_VAR)
    os.environ[rk.data.ENV_VAR] = data_dir
    try:
        x_env, y_env = rk.data.load("mnist", "test")
    finally:
        if old is None:
            del os.environ[rk.data.ENV_VAR]
        else:
            os.environ[rk.data.ENV_VAR] = old
    np.testing.assert_array_equal(y_env, y_te)


def test_idx_parser_on_hand_made_file(tmp_path):
    # A 3-image 2x3 IDX file written by hand: values and order survive.
    pixels = np.arange(18, dtype=np.uint8).reshape(3, 2, 3) * 10
    labels = np.array([7, 0, 9], np.uint8)
    folder = tmp_path / "mnist"
    folder.mkdir()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 3, 2, 3) + pixels.tobytes())
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 3) + labels.tobytes())
    x, y = rk.data.load("mnist", "test", str(tmp_path))
    np.testing.assert_allclose(x[..., 0], pixels / 255.0, rtol=1e-6)
    assert y.tolist() == [7, 0, 9]
    # a file with the wrong magic number is rejected
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2051, 3) + labels.tobytes())
    with pytest.raises(ValueError, match="magic"):
        rk.data.load("mnist", "test", str(tmp_path))


def test_cifar10_file_split(data_dir):
    x_tr, y_tr = rk.data.load("cifar10_test_files", "train", data_dir)
    x_te, y_te = rk.data.load("cifar10_test_files", "test", data_dir)
    assert x_tr.shape == (9000, 32, 32, 3) and x_te.shape == (1000, 32, 32, 3)
    assert x_tr.dtype == np.float32 and x_te.min() >= 0.0 and x_te.max() <= 1.0
    # 1,000 test images per class in total in the file
    assert (np.bincount(y_tr, minlength=10) + np.bincount(y_te, minlength=10)).tolist() == [
        1000
    ] * 10


def test_missing_local_files_name_the_layout(tmp_path):
    with pytest.raises(FileNotFoundError, match="shared/data/README.md"):
        rk.data.load("cifar10_test_files", "test", str(tmp_path))


def test_unknown_split_and_name():
    with pytest.raises(ValueError, match="`split`"):
        rk.data.load("digits", "validation")
    with pytest.raises(ValueError, match="`dataset`.*no_such_dataset"):
        rk.data.load("no_such_dataset", "train")
    with pytest.raises(ValueError, match="`dataset`"):
        rk.data.load("", "train")


def test_tfds_path_with_mock_data():
    tfds = pytest.importorskip("tensorflow_datasets")
    with tfds.testing.mock_data(num_examples=12):
        x, y = rk.data.load("svhn_cropped", "train", download=True)
    assert x.shape == (12, 32, 32, 3) and x.dtype == np.float32
    assert x.min() >= 0.0 and x.max() <= 1.0 and x.max() > 0.5  # divided by 255
    assert y.dtype == np.int64 and y.min() >= 0 and y.max() < 10
    with tfds.testing.mock_data(num_examples=5):
        x, y = rk.data.load("fashion_mnist", "test", download=True)
    assert x.shape == (5, 28, 28, 1)  # grey images stay NHWC


def test_offline_tfds_fails_fast_with_local_hint():
    pytest.importorskip("tensorflow_datasets")
    start = time.perf_counter()
    with pytest.raises(FileNotFoundError) as info:
        rk.data.load("svhn_cropped", "test", data_dir=tempfile.mkdtemp())
    assert time.perf_counter() - start < 30  # no download attempt (it retries for minutes)
    message = str(info.value)
    assert "download=True" in message and "ROBUSTKIT_DATA_DIR" in message and "digits" in message


def test_subset_and_make_dataset():
    x, y = rk.data.load("digits", "test")
    xs, ys = rk.data.subset(x, y, 100, seed=3)
    assert len(xs) == 100 and np.bincount(ys).tolist() == [10] * 10
    xs2, _ = rk.data.subset(x, y, 100, seed=3)
    np.testing.assert_array_equal(xs, xs2)
    ds = rk.data.make_dataset(x, y, batch_size=64, seed=0)
    batches = list(ds)
    assert [int(b[0].shape[0]) for b in batches] == [64] * 5 + [39]
    seen = np.sort(np.concatenate([b[1].numpy() for b in batches]))
    np.testing.assert_array_equal(seen, np.sort(y))  # shuffled, nothing lost
    with pytest.raises(ValueError, match="`x`"):
        rk.data.make_dataset(x, y[:-1])


def test_as_arrays_from_arrays_and_datasets():
    import tensorflow as tf

    x, y = rk.data.load("digits", "test")
    xs, ys = rk.data.as_arrays((x, y))
    assert xs.dtype == np.float32 and ys.dtype == np.int64 and len(xs) == 359
    # (N, 1) labels (keras.datasets' CIFAR-10 layout) are flattened
    _, y_col = rk.data.as_arrays((x, y[:, None].astype("uint8")))
    np.testing.assert_array_equal(y_col, y)
    # batched and unbatched datasets give the same arrays; n stops reading early
    batched = tf.data.Dataset.from_tensor_slices((x, y)).batch(50)
    single = tf.data.Dataset.from_tensor_slices((x, y))
    for ds in (batched, single):
        xd, yd = rk.data.as_arrays(ds, n=120)
        np.testing.assert_array_equal(xd, x[:120])
        np.testing.assert_array_equal(yd, y[:120])
    xd, _ = rk.data.as_arrays(batched)
    assert len(xd) == 359


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda x, y: (x, np.eye(10)[y]), "`val` labels must be integer class ids, not one-hot"),
        (lambda x, y: (x * 255, y), r"`val` must have values in \[0, 1\]"),
        (lambda x, y: (x, y[:-1]), "`val labels` has 358 labels"),
        (lambda x, y: x, "`val` must be \\(x, y\\) arrays or a tf.data.Dataset"),
        (lambda x, y: (x[:0], y[:0]), "`val` holds no examples"),
        (lambda x, y: (x, -y - 1), "negative label"),
    ],
)
def test_as_arrays_refuses_bad_data_naming_the_argument(make, match):
    x, y = rk.data.load("digits", "test")
    with pytest.raises(ValueError, match=match):
        rk.data.as_arrays(make(x, y), argname="val")


def test_as_arrays_refuses_empty_and_malformed_datasets():
    import tensorflow as tf

    x, y = rk.data.load("digits", "test")
    empty = tf.data.Dataset.from_tensor_slices((x[:0], y[:0])).batch(8)
    with pytest.raises(ValueError, match="`data` is an empty dataset"):
        rk.data.as_arrays(empty)
    images_only = tf.data.Dataset.from_tensor_slices(x).batch(8)
    with pytest.raises(ValueError, match=r"`data` must yield \(x, y\) batches"):
        rk.data.as_arrays(images_only)
    with pytest.raises(ValueError, match="`n`"):
        rk.data.as_arrays((x, y), n=0)
