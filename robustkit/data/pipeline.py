"""Training input pipelines: :func:`subset`, :func:`make_dataset` and its augmentation.

:func:`make_dataset` keys its randomness on the epoch: epoch ``e`` is shuffled (and augmented)
with the stateless seed ``(seed, e)``, so the order of epoch 5 is the same whether the run
went through epochs 0-4 in this process or was resumed there from a backup. The epoch is
``dataset.epoch_variable``: each new pass over the data reads it and counts it up, and
``RobustModel.fit`` sets it at every epoch's start
(:class:`robustkit.callbacks.DataEpoch`; add that callback yourself for a plain Keras model).
"""

import numpy as np
import tensorflow as tf

#: zero padding on each side before the random crop (the CIFAR convention)
PAD = 4


def subset(x, y, n, seed=0, stratified=True):
    """A deterministic subset of ``n`` examples (class-balanced when ``stratified``).

    Example:

    >>> import numpy as np
    >>> xs, ys = subset(np.zeros((100, 1, 1, 1), "float32"), np.arange(100) % 10, 20)
    >>> np.bincount(ys).tolist()
    [2, 2, 2, 2, 2, 2, 2, 2, 2, 2]
    """
    return _take(x, y, subset_indices(y, n, seed, stratified))


def subset_indices(y, n, seed=0, stratified=True):
    """The sorted indices :func:`subset` keeps (all of them when ``n >= len(y)``)."""
    y = np.asarray(y)
    if n >= len(y):
        return np.arange(len(y))
    rng = np.random.default_rng(seed)
    if not stratified:
        return np.sort(rng.choice(len(y), n, replace=False))
    classes = np.unique(y)
    take = []
    for i, c in enumerate(classes):
        members = np.flatnonzero(y == c)
        k = n // len(classes) + (1 if i < n % len(classes) else 0)
        take.append(rng.choice(members, min(k, len(members)), replace=False))
    return np.sort(np.concatenate(take))


def _take(x, y, idx):
    return (x, y) if len(idx) == len(x) else (x[idx], y[idx])


def crop_flip(image, seed):
    """Pad ``PAD`` zeros on each side, crop back at a random offset, flip left-right with
    probability 1/2; stateless (``seed``: two integers), one ``(H, W, C)`` image.

    Example:

    >>> import numpy as np, tensorflow as tf
    >>> img = tf.constant(np.arange(16, dtype="float32").reshape(4, 4, 1))
    >>> out = crop_flip(img, tf.constant([0, 1], tf.int64))
    >>> out.shape, float(tf.reduce_max(out)) <= 15.0
    (TensorShape([4, 4, 1]), True)
    """
    crop_seed, flip_seed = tf.unstack(tf.random.experimental.stateless_split(seed, 2))
    padded = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
    image = tf.image.stateless_random_crop(padded, tf.shape(image), seed=crop_seed)
    return tf.image.stateless_random_flip_left_right(image, seed=flip_seed)


def make_dataset(x, y, batch_size=128, shuffle=True, seed=0, repeat=False, drop_remainder=False,
                 augment=False):  # fmt: skip
    """A batched, prefetched ``tf.data.Dataset`` of ``(x, y)``, shuffled and augmented per epoch.

    Args:
        x, y: arrays with one example per row.
        batch_size: examples per batch.
        shuffle: a new order every epoch, ``(seed, epoch)``-keyed (a full permutation).
        seed: the integer seed.
        repeat: loop over epochs without end (give ``steps_per_epoch`` to ``fit``).
        drop_remainder: drop the last, smaller batch.
        augment: the standard augmentation of CIFAR training (pad 4 zeros, random crop
            back to the image size, random horizontal flip), ``(seed, epoch, example)``-keyed.

    Example:

    >>> import numpy as np
    >>> ds = make_dataset(np.zeros((10, 8, 8, 1), "float32"), np.zeros(10, "int64"), 4)
    >>> [int(b[0].shape[0]) for b in ds]
    [4, 4, 2]
    """
    if len(x) != len(y):
        raise ValueError(f"`x` has {len(x)} examples but `y` has {len(y)}; they must match.")
    n = len(x)
    if n == 0:
        raise ValueError("`x` holds no examples.")
    x_t, y_t = tf.convert_to_tensor(x), tf.convert_to_tensor(y)
    if augment and x_t.shape.rank != 4:
        raise ValueError(f"`augment` needs (N, H, W, C) images; got shape {tuple(x_t.shape)}.")
    epoch_var = tf.Variable(0, dtype=tf.int64, trainable=False, name="data_epoch")
    seed = int(seed)

    def one_epoch(_):
        epoch = epoch_var.assign_add(1) - 1
        key = tf.stack([tf.constant(seed, tf.int64), epoch])
        idx = tf.range(n, dtype=tf.int64)
        if shuffle:
            idx = tf.random.experimental.stateless_shuffle(idx, seed=key)
        ds = tf.data.Dataset.from_tensor_slices(idx)
        if not augment:
            ds = ds.batch(batch_size, drop_remainder=drop_remainder)
            return ds.map(lambda i: (tf.gather(x_t, i), tf.gather(y_t, i)))

        def example(i):
            image = crop_flip(tf.gather(x_t, i), tf.stack([key[0] * 1000003 + key[1], i]))
            return tf.cast(image, x_t.dtype), tf.gather(y_t, i)

        ds = ds.map(example, num_parallel_calls=tf.data.AUTOTUNE)
        return ds.batch(batch_size, drop_remainder=drop_remainder)

    passes = tf.data.Dataset.range(1) if not repeat else tf.data.Dataset.counter()
    ds = passes.flat_map(one_epoch)
    if repeat:
        ds = ds.apply(tf.data.experimental.assert_cardinality(tf.data.INFINITE_CARDINALITY))
    else:
        batches = n // batch_size if drop_remainder else -(-n // batch_size)
        ds = ds.apply(tf.data.experimental.assert_cardinality(batches))
    ds = ds.prefetch(tf.data.AUTOTUNE)
    ds.epoch_variable = epoch_var
    return ds


__all__ = ["PAD", "crop_flip", "make_dataset", "subset", "subset_indices"]
