"""Shared fixtures: real data (embedded digits, ../shared/data MNIST/CIFAR-10) and
small trained models, built once per test session."""

import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import tensorflow as tf

import robustkit as rk

# Reproducible runs: the session fixtures train small models, and several tests compare
# against them with margins; float-op nondeterminism made different tests flip between runs.
tf.config.experimental.enable_op_determinism()

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))


def shared_data_dir():
    """``$ROBUSTKIT_DATA_DIR`` or ``../shared/data``, or ``None`` when neither exists."""
    for cand in (os.environ.get("ROBUSTKIT_DATA_DIR"), SHARED_DATA):
        if cand and os.path.isdir(os.path.join(cand, "mnist")):
            return cand
    return None


@pytest.fixture(scope="session")
def data_dir():
    path = shared_data_dir()
    if path is None:
        pytest.skip(
            "real MNIST/CIFAR-10 files not found: set ROBUSTKIT_DATA_DIR or place "
            "shared/data beside the repository (see shared/data/README.md)"
        )
    return path


@pytest.fixture(scope="session")
def digits():
    """Embedded digits: (x_train, y_train, x_test, y_test), 8x8x1 in [0, 1]."""
    x_tr, y_tr = rk.data.load("digits", "train")
    x_te, y_te = rk.data.load("digits", "test")
    return x_tr, y_tr, x_te, y_te


def _train_clean(build, x, y, epochs, seed=0):
    # seed before building: the initial weights must not depend on which tests ran first
    keras.utils.set_random_seed(seed)
    model = build()
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        metrics=["accuracy"],
    )
    model.fit(x, y, batch_size=64, epochs=epochs, verbose=0)
    return model


def _train_pgd_at(build, x, y, eps, epochs, warmup_epochs=1, seed=0):
    """A plain hand-written PGD-AT loop (independent of RobustModel)."""
    keras.utils.set_random_seed(seed)
    model = build()
    opt = keras.optimizers.Adam(1e-3)
    attack = rk.attacks.PGD(eps=eps, steps=7, step_size=eps / 3)
    fn = rk.attacks.as_logits_fn(model)
    eps_var = tf.Variable(eps, dtype=tf.float32)

    @tf.function
    def step(xb, yb):
        x_adv = attack.perturb(fn, xb, yb, eps=eps_var, track_best=False)
        with tf.GradientTape() as tape:
            logits = model(x_adv, training=True)
            loss = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(
                    labels=tf.cast(yb, tf.int32), logits=logits
                )
            )
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    n_batches = int(np.ceil(len(x) / 64))
    total = epochs * n_batches
    rng = np.random.default_rng(seed)
    k = 0
    for _ in range(epochs):
        order = rng.permutation(len(x))
        for b in range(n_batches):
            idx = order[b * 64 : (b + 1) * 64]
            eps_var.assign(eps * min(1.0, (k + 1) / (warmup_epochs * n_batches)))
            step(tf.constant(x[idx]), tf.constant(y[idx]))
            k += 1
    assert k == total
    return model


@pytest.fixture(scope="session")
def digits_model(digits):
    """Undefended small CNN on digits (~97 % clean)."""
    x_tr, y_tr, _, _ = digits
    return _train_clean(lambda: rk.models.small_cnn((8, 8, 1)), x_tr, y_tr, epochs=15)


@pytest.fixture(scope="session")
def digits_at_model(digits):
    """PGD-AT small CNN on digits at L-inf eps 0.1 (hand-written loop)."""
    x_tr, y_tr, _, _ = digits
    return _train_pgd_at(
        lambda: rk.models.small_cnn((8, 8, 1)), x_tr, y_tr, eps=0.1, epochs=15, warmup_epochs=3
    )


@pytest.fixture(scope="session")
def mnist_small(data_dir):
    """Real MNIST subset: 4,000 train and 500 test images (class balanced)."""
    x_tr, y_tr = rk.data.subset(*rk.data.load("mnist", "train", data_dir), 4000, seed=0)
    x_te, y_te = rk.data.subset(*rk.data.load("mnist", "test", data_dir), 500, seed=0)
    return x_tr, y_tr, x_te, y_te


@pytest.fixture(scope="session")
def mnist_model(mnist_small):
    """Undefended small CNN on the MNIST subset (~95 % clean)."""
    x_tr, y_tr, _, _ = mnist_small
    return _train_clean(
        lambda: rk.models.small_cnn((28, 28, 1), width=16, dense=64), x_tr, y_tr, epochs=3
    )
