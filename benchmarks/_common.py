"""Shared helpers for the benchmarks: data, cached model training, timing, output.

Trained weights are cached under ``benchmarks/.cache/`` (git-ignored) so a second
run of a benchmark only measures; delete the folder (or pass ``--retrain``) to
train again. Everything here is independent of ``robustkit.RobustModel``: the
PGD-AT trainer is a hand-written loop, so the models the benchmarks attack do
not depend on the code being benchmarked.
"""

import argparse
import os
import platform
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)
CACHE = os.path.join(HERE, ".cache")
RESULTS = os.path.join(HERE, "results")
DEFAULT_DATA_DIR = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))

sys.path.insert(0, REPO)
import robustkit as rk  # noqa: E402


# ------------------------------------------------------------------ arguments
def base_parser(description):
    """An ``argparse`` parser with the options every benchmark shares."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        "--data-dir",
        default=DEFAULT_DATA_DIR,
        help="folder holding mnist/ (default: ../shared/data)",
    )
    p.add_argument("--repeats", type=int, default=3, help="timed runs per method (median)")
    p.add_argument("--retrain", action="store_true", help="ignore cached weights")
    p.add_argument("--no-write", action="store_true", help="do not write benchmarks/results/")
    p.add_argument("--seed", type=int, default=0)
    return p


# ----------------------------------------------------------------------- data
def mnist(data_dir, n_train, n_test, seed=0):
    """Class-balanced real MNIST subsets: ``(x_train, y_train, x_test, y_test)``."""
    if not os.path.isdir(os.path.join(data_dir, "mnist")):
        sys.exit(
            f"MNIST not found under {data_dir!r}: pass --data-dir (see shared/data/README.md)."
        )
    x_tr, y_tr = rk.data.subset(*rk.data.load("mnist", "train", data_dir), n_train, seed=seed)
    x_te, y_te = rk.data.subset(*rk.data.load("mnist", "test", data_dir), n_test, seed=seed)
    return x_tr, y_tr, x_te, y_te


# -------------------------------------------------------------------- models
def _ce(y, logits):
    return tf.reduce_mean(
        tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)
    )


def train_clean(model, x, y, epochs=2, batch_size=64, seed=0):
    """Plain cross-entropy training with Adam(1e-3)."""
    keras.utils.set_random_seed(seed)
    model.compile(
        optimizer=keras.optimizers.Adam(1e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x, y, batch_size=batch_size, epochs=epochs, verbose=0)
    return model


def train_pgd_at(
    model,
    x,
    y,
    eps=0.3,
    epochs=3,
    steps=10,
    step_frac=0.25,
    batch_size=64,
    warmup_epochs=0.5,
    seed=0,
    log=print,
):
    """Hand-written PGD-AT (Madry et al.) with a linear eps warm-up.

    The inner attack is a plain Python-unrolled L-inf PGD (uniform start, step
    ``step_frac * eps``) written here, independent of robustkit. From scratch at
    MNIST eps 0.3 PGD-AT does not learn without the warm-up.
    """
    keras.utils.set_random_seed(seed)
    opt = keras.optimizers.Adam(1e-3)
    eps_var = tf.Variable(0.0, dtype=tf.float32, trainable=False)

    @tf.function
    def step(xb, yb):
        e = eps_var
        x_adv = tf.clip_by_value(xb + tf.random.uniform(tf.shape(xb), -e, e), 0.0, 1.0)
        for _ in range(steps):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = _ce(yb, model(x_adv, training=False))
            g = tape.gradient(loss, x_adv)
            x_adv = x_adv + step_frac * e * tf.sign(g)
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - e, xb + e), 0.0, 1.0)
        x_adv = tf.stop_gradient(x_adv)
        with tf.GradientTape() as tape:
            loss = _ce(yb, model(x_adv, training=True))
        grads = tape.gradient(loss, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        return loss

    n_batches = int(np.ceil(len(x) / batch_size))
    warm = max(1, int(warmup_epochs * n_batches))
    rng = np.random.default_rng(seed)
    k = 0
    for epoch in range(epochs):
        order = rng.permutation(len(x))
        losses = []
        for b in range(n_batches):
            idx = order[b * batch_size : (b + 1) * batch_size]
            eps_var.assign(eps * min(1.0, (k + 1) / warm))
            losses.append(float(step(tf.constant(x[idx]), tf.constant(y[idx]))))
            k += 1
        log(f"  PGD-AT epoch {epoch + 1}/{epochs}: adversarial loss {np.mean(losses):.3f}")
    return model


def cached(name, build, train, retrain=False, log=print):
    """Builds a model and loads ``.cache/<name>.weights.h5``, else trains and saves it."""
    os.makedirs(CACHE, exist_ok=True)
    path = os.path.join(CACHE, f"{name}.weights.h5")
    model = build()
    if os.path.exists(path) and not retrain:
        model.load_weights(path)
        log(f"loaded cached weights {os.path.relpath(path, REPO)}")
        return model
    t0 = time.perf_counter()
    train(model)
    model.save_weights(path)
    log(f"trained {name} in {time.perf_counter() - t0:.0f} s -> {os.path.relpath(path, REPO)}")
    return model


def accuracy(model, x, y, batch_size=500):
    """Top-1 accuracy (inference mode) of ``model`` on numpy or tensor inputs."""
    x = tf.convert_to_tensor(x)
    preds = [
        np.argmax(model(x[i : i + batch_size], training=False), -1)
        for i in range(0, int(x.shape[0]), batch_size)
    ]
    return float(np.mean(np.concatenate(preds) == np.asarray(y)))


# ---------------------------------------------------------------------- timing
def time_median(fn, repeats=3, warmup=1):
    """Calls ``fn`` ``warmup`` times (tracing), then returns (median seconds, times, last output)."""
    out = None
    for _ in range(warmup):
        out = fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        if hasattr(out, "numpy"):
            out = out.numpy()  # make sure the work is done
        times.append(time.perf_counter() - t0)
    return statistics.median(times), times, out


def machine_info():
    """One line describing the machine and library versions."""
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"1-min load average {load:.2f}; TensorFlow {tf.__version__}, Keras {keras.__version__}, "
        f"robustkit {rk.__version__}, Python {platform.python_version()}"
    )


def write_result(name, text, enabled=True):
    """Writes ``benchmarks/results/<name>.md`` and returns its path."""
    if not enabled:
        return None
    os.makedirs(RESULTS, exist_ok=True)
    path = os.path.join(RESULTS, f"{name}.md")
    with open(path, "w") as f:
        f.write(text)
    return path


def markdown_table(header, rows):
    """A GitHub Markdown table from a header list and row lists."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)
