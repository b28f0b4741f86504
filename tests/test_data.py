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


# ------------------------------------------------------------ standard splits and sources
def test_cifar10_never_means_the_local_test_files(data_dir, tmp_path, monkeypatch):
    pytest.importorskip("tensorflow_datasets")
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))  # no keras.datasets cache either
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path))
    with pytest.raises(FileNotFoundError) as info:
        rk.data.load("cifar10", "train", data_dir)
    message = str(info.value)
    assert "standard split" in message and "download=True" in message
    assert "cifar10_test_files" in message  # names the local file's own name
    # the local file, under its own name, says what it is
    x, y, source = rk.data.load("cifar10_test_files", "test", data_dir, with_info=True)
    assert len(x) == 1000 and source.examples == 1000
    assert "test images decoded from JPEG" in source.source and "not the standard" in source.source


def test_mnist_idx_files_are_the_canonical_standard_split(data_dir, tmp_path):
    _, _, info = rk.data.load("mnist", "test", data_dir, with_info=True)
    assert info.examples == 10000
    assert "canonical bytes of the standard 60,000/10,000 split (md5 checked)" in info.source
    # a hand-made IDX file is read, but not called canonical
    folder = tmp_path / "mnist"
    folder.mkdir()
    with gzip.open(folder / "t10k-images-idx3-ubyte.gz", "wb") as f:
        f.write(struct.pack(">IIII", 2051, 2, 1, 1) + bytes([0, 255]))
    with gzip.open(folder / "t10k-labels-idx1-ubyte.gz", "wb") as f:
        f.write(struct.pack(">II", 2049, 2) + bytes([3, 4]))
    _, y, info = rk.data.load("mnist", "test", str(tmp_path), with_info=True)
    assert y.tolist() == [3, 4] and "not the canonical MNIST bytes" in info.source


def test_tfds_split_streams_without_materialising():
    tfds = pytest.importorskip("tensorflow_datasets")
    import tensorflow as tf

    with tfds.testing.mock_data(num_examples=20):
        ds, info = rk.data.load("svhn_cropped", "test", download=True, as_dataset=True,
                                with_info=True)  # fmt: skip
        assert isinstance(ds, tf.data.Dataset) and "TensorFlow Datasets svhn_cropped" in info.source
        assert ds.element_spec[0].shape == (32, 32, 3) and ds.element_spec[0].dtype == tf.float32
        images = [x.numpy() for x, _ in ds]
        x_arr, y_arr = rk.data.load("svhn_cropped", "test", download=True)
    assert len(images) == 20 and all(im.min() >= 0.0 and im.max() <= 1.0 for im in images)
    np.testing.assert_array_equal(np.stack(images), x_arr)  # same data as the arrays
    assert y_arr.dtype == np.int64


# ------------------------------------------------------------------- image folders
def _write_digit_folder(root, per_class=4, ext="png"):
    """Real digits written as 16x16 RGB image files, one sub-folder per class."""
    import keras

    x, y = rk.data.load("digits", "test")
    written = {}
    for c in range(3):
        os.makedirs(os.path.join(root, f"digit_{c}"), exist_ok=True)
        for k, i in enumerate(np.flatnonzero(y == c)[:per_class]):
            img = np.repeat(np.kron(x[i], np.ones((2, 2, 1))), 3, axis=-1) * 255.0
            path = os.path.join(root, f"digit_{c}", f"{k}.{ext}")
            keras.utils.save_img(path, img, scale=False)
            written[path] = (img / 255.0, c)
    return written


def test_from_directory_reads_real_images_scaled_to_unit_box(tmp_path):
    written = _write_digit_folder(str(tmp_path))
    ds = rk.data.from_directory(str(tmp_path), image_size=(16, 16), batch_size=5, shuffle=False)
    assert ds.class_names == ["digit_0", "digit_1", "digit_2"]
    xs, ys = rk.data.as_arrays(ds)
    assert xs.shape == (12, 16, 16, 3) and ys.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    expected = np.stack([written[p][0] for p in sorted(written)])
    np.testing.assert_allclose(xs, expected, atol=1.5 / 255)  # PNG is lossless
    train, val = rk.data.from_directory(str(tmp_path), (16, 16), batch_size=4,
                                        validation_split=0.25, subset="both")  # fmt: skip
    assert len(rk.data.as_arrays(train)[0]) + len(rk.data.as_arrays(val)[0]) == 12
    with pytest.raises(FileNotFoundError, match="`path`"):
        rk.data.from_directory(str(tmp_path / "nope"), (16, 16))
    with pytest.raises(ValueError, match="`image_size`"):
        rk.data.from_directory(str(tmp_path), 16)


def test_tiny_imagenet_reader_train_and_val_layouts(tmp_path):
    import keras

    root = tmp_path / "tiny-imagenet-200"
    x, y = rk.data.load("digits", "train")
    wnids = ["n01443537", "n01629819"]  # written in this order; classes are sorted wnids
    lines, expected_val = [], []
    for c, wnid in enumerate(wnids):
        folder = root / "train" / wnid / "images"
        folder.mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("ignored\n")
        for k, i in enumerate(np.flatnonzero(y == c)[:3]):
            img = np.repeat(np.kron(x[i], np.ones((8, 8, 1))), 3, axis=-1) * 255.0
            keras.utils.save_img(str(folder / f"{wnid}_{k}.JPEG"), img, scale=False)
    (root / "val" / "images").mkdir(parents=True)
    for k, c in enumerate([1, 0, 1]):  # val/ is flat: the classes are in the annotations
        i = np.flatnonzero(y == c)[5 + k]
        img = np.repeat(np.kron(x[i], np.ones((8, 8, 1))), 3, axis=-1) * 255.0
        keras.utils.save_img(str(root / "val" / "images" / f"val_{k}.JPEG"), img, scale=False)
        lines.append(f"val_{k}.JPEG\t{wnids[c]}\t0\t0\t63\t63")
        expected_val.append(c)
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")

    train = rk.data.tiny_imagenet(str(tmp_path), "train", batch_size=4)
    assert train.class_names == wnids
    xs, ys = rk.data.as_arrays(train)
    assert xs.shape == (6, 64, 64, 3) and sorted(ys.tolist()) == [0, 0, 0, 1, 1, 1]
    xv, yv, info = rk.data.load("tiny_imagenet", "test", str(tmp_path), with_info=True)
    assert yv.tolist() == expected_val and info.examples == 3 and "val/" in info.source
    # the JPEG holds the digit it was written from (up to JPEG error)
    i = np.flatnonzero(y == 1)[5]
    ref = np.repeat(np.kron(x[i], np.ones((8, 8, 1))), 3, axis=-1)
    assert np.abs(xv[0] - ref).mean() < 0.05
    with pytest.raises(FileNotFoundError, match="Tiny-ImageNet"):
        rk.data.tiny_imagenet(str(tmp_path / "missing"))


# -------------------------------------------------------------- training pipelines
def test_make_dataset_order_and_augmentation_depend_on_the_epoch_only():
    x = np.random.default_rng(0).uniform(size=(40, 8, 8, 1)).astype("float32")
    y = np.arange(40) % 10

    def epoch_data(ds, epoch=None):
        if epoch is not None:
            ds.epoch_variable.assign(epoch)
        batches = list(ds)  # one pass = one epoch
        return np.concatenate([b[0] for b in batches]), np.concatenate([b[1] for b in batches])

    a = rk.data.make_dataset(x, y, 16, seed=3, augment=True)
    first = [epoch_data(a) for _ in range(3)]  # epochs 0, 1, 2 in one "process"
    b = rk.data.make_dataset(x, y, 16, seed=3, augment=True)  # a resumed process at epoch 2
    resumed = epoch_data(b, epoch=2)
    np.testing.assert_array_equal(resumed[0], first[2][0])
    np.testing.assert_array_equal(resumed[1], first[2][1])
    assert not np.array_equal(first[0][1], first[1][1])  # a new order every epoch
    for _, ys in first:
        assert sorted(ys.tolist()) == sorted(y.tolist())  # nothing lost or repeated
    xa, ya = next(iter(rk.data.make_dataset(x, y, 40, shuffle=False, augment=True)))
    assert ya.numpy().tolist() == y.tolist() and not np.allclose(xa.numpy(), x)  # augmented
    assert (xa.numpy() == 0).mean() > (x == 0).mean()  # zero padding came in


def test_crop_flip_is_pad_4_crop_and_flip():
    import tensorflow as tf

    img = np.arange(8 * 8, dtype="float32").reshape(8, 8, 1) + 1.0  # no zeros inside
    seen_shift, seen_flip = set(), False
    for s in range(40):
        out = rk.data.crop_flip(tf.constant(img), tf.constant([0, s], tf.int64)).numpy()
        assert out.shape == img.shape
        flipped = out[:, ::-1]
        for cand, flip in ((out, False), (flipped, True)):
            # the visible part of the image is a shifted copy (shift <= 4), zeros elsewhere
            for dy in range(-4, 5):
                for dx in range(-4, 5):
                    pad = np.pad(img, ((4, 4), (4, 4), (0, 0)))
                    if np.array_equal(cand, pad[4 + dy : 12 + dy, 4 + dx : 12 + dx]):
                        seen_shift.add((dy, dx))
                        seen_flip |= flip
    assert len(seen_shift) > 10 and seen_flip
