"""Robust training under any ``tf.distribute`` strategy, MultiWorkerMirroredStrategy included:
robustkit's own loop around ``RobustModel.train_step``.

Example (one process, the default strategy; on a cluster the same call runs on every host
with its own ``TF_CONFIG``, the model built in ``strategy.scope()``):

>>> import keras, robustkit as rk
>>> x, y = rk.data.load("digits", "train")
>>> strategy = rk.distributed.get_strategy("default")
>>> with strategy.scope():
...     model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)),
...                            attack=rk.attacks.PGD(eps=0.1, steps=2))
...     model.compile(optimizer="adam", metrics=["accuracy"])
>>> history = rk.distributed.fit(model, x[:256], y[:256], batch_size=64, epochs=1)
>>> sorted(history.history)
['accuracy', 'adv_accuracy', 'ce', 'clean_accuracy', 'eps', 'loss']

Why not ``model.fit``: Keras 3.15's ``fit`` fails under MultiWorkerMirroredStrategy ("Attempt
to convert a value (PerReplica...) to a Tensor", keras-team/keras#20585). ``fit`` stays the
single-machine path; when Keras fixes it, :func:`fit` can hand over to ``model.fit`` in the
one place marked below, and the tests stay.

Each step: the global batch (``batch_size`` examples, the same on every worker: the order is
drawn from ``seed + epoch``) is cut into one slice per replica; each replica runs
``RobustModel.train_step`` on its slice (inner attack, objective, metrics), with the loss
weighted by its share of the global batch (``tf.nn.compute_average_loss`` semantics); the
Keras optimizer's ``apply_gradients`` all-reduces the gradients. The logged values are the
metrics read across replicas (and workers) at the end of each epoch: the same as a
one-worker run on the same global batch, up to float rounding. A last batch with fewer
examples than replicas is dropped.

Callbacks: the Keras callback protocol (``on_train_begin``, ``on_epoch_begin/end``,
``on_train_batch_begin/end`` with empty batch logs, ``on_train_end``, ``stop_training``):
``EpsilonWarmup``, ``EpochSeed``, ``RobustEvaluation``, ``BestRobustCheckpoint``, Keras'
``ModelCheckpoint``, ``CSVLogger``, ``EarlyStopping``, learning-rate callbacks. On workers
other than the chief, checkpoint callbacks write into a temporary folder (deleted at the
end). Keras' ``BackupAndRestore`` relies on ``fit``'s internals: use ``backup_dir=``
(:class:`robustkit.distributed.Backup`), which also resumes the data order exactly.
"""

import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_int
from robustkit.distributed.backup import Backup
from robustkit.distributed.strategy import is_chief, local_replicas, worker_rank

#: callbacks whose ``filepath`` only the chief writes (others: a temporary folder)
_WRITERS = ("ModelCheckpoint", "BestRobustCheckpoint", "CSVLogger")


def _check(model, x, y, batch_size, epochs, callbacks, strategy):
    from robustkit.training import RobustModel

    if not isinstance(model, RobustModel):
        raise ValueError(f"`model` must be a rk.RobustModel; got {type(model).__name__}.")
    if getattr(model, "optimizer", None) is None:
        raise ValueError("`model` must be compiled (model.compile(optimizer=...)) first.")
    if model.distribute_strategy is not strategy:
        raise ValueError(
            "`model` must be built and compiled in `strategy.scope()` of the `strategy` "
            "given (its variables are the strategy's)."
        )
    if isinstance(x, tf.data.Dataset) or not hasattr(x, "__len__"):
        raise ValueError(
            "`x` must be an array of images (the loop cuts each global batch into replica "
            f"slices itself); got {type(x).__name__}."
        )
    batch_size = check_int(batch_size, "batch_size")
    epochs = check_int(epochs, "epochs")
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if isinstance(cb, keras.callbacks.BackupAndRestore):
            raise ValueError(
                "`callbacks`: keras.callbacks.BackupAndRestore relies on model.fit; pass "
                "`backup_dir=` to rk.distributed.fit instead."
            )
    x = np.asarray(x, dtype="float32")
    y = np.asarray(y)
    if y.ndim == 2 and y.shape[1] > 1:
        y = y.argmax(axis=-1)
    y = y.reshape(-1).astype("int64")
    if len(x) != len(y):
        raise ValueError(f"`x` and `y` differ in length: {len(x)} vs {len(y)}.")
    if len(x) < strategy.num_replicas_in_sync:
        raise ValueError(
            f"`x` holds {len(x)} examples, fewer than the {strategy.num_replicas_in_sync} replicas."
        )
    model.check_data(x, y, batch_size)
    return x, y, batch_size, epochs, callbacks


def _redirect_writers(callbacks, chief):
    """On a non-chief worker: checkpoint-writing callbacks write into a scratch folder."""
    if chief:
        return None
    scratch = None
    for cb in callbacks:
        path = getattr(cb, "filepath", None) or getattr(cb, "filename", None)
        if type(cb).__name__ in _WRITERS and path:
            scratch = scratch or tempfile.mkdtemp(prefix="robustkit-worker-")
            attr = "filepath" if getattr(cb, "filepath", None) else "filename"
            setattr(cb, attr, os.path.join(scratch, os.path.basename(str(path))))
    return scratch


def _batches(n, batch_size, replicas, epoch, seed, shuffle):
    """Per step: the global batch's example indices cut into ``replicas`` slices."""
    order = np.random.default_rng(seed + epoch).permutation(n) if shuffle else np.arange(n)
    out = []
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        if len(idx) < replicas:
            break
        out.append(np.array_split(idx, replicas))
    return out


def _build(model, x, y):
    """Creates the optimizer's and the compiled metrics' variables in the strategy's scope."""
    with model.distribute_strategy.scope():
        if not model.optimizer.built:
            model.optimizer.build(model.trainable_variables)
        logits = model.base_model(x[:2], training=False)
        for metric in model._compiled_metrics():
            if not metric.built:
                metric.build(y[:2], logits)


def _train_function(model, strategy):
    def replica_step(xb, yb, global_batch):
        model.train_step((xb, yb), global_batch_size=global_batch)

    @tf.function(reduce_retracing=True)
    def train(dx, dy, global_batch):
        strategy.run(replica_step, args=(dx, dy, global_batch))

    return train


def fit(model, x, y, batch_size=32, epochs=1, callbacks=None, shuffle=True, seed=0,
        backup_dir=None, verbose=0, strategy=None):  # fmt: skip
    """Trains a ``RobustModel`` built in a strategy's scope; returns the ``History``.

    Args:
        model: a compiled :class:`robustkit.RobustModel` created in ``strategy.scope()``
            (its strategy is the one used: default, Mirrored, MultiWorkerMirrored).
        x, y: the training images and labels (class ids or one-hot rows), the same arrays
            on every worker.
        batch_size: the global batch (over all replicas of all workers).
        epochs: epochs to train (a resumed run trains the remaining ones).
        callbacks: Keras callbacks (see the module docstring).
        shuffle: draw each epoch's order from ``seed + epoch`` (the same on every worker).
        seed: the data order's seed.
        backup_dir: folder of a :class:`Backup`: the state after each finished epoch; a run
            started again with it resumes after the last finished epoch; deleted at the end.
        verbose: 1: a progress bar on the chief.
        strategy: optional: the strategy ``model`` must have been built under (a
            ``ValueError`` otherwise: a model built outside the scope would train on each
            worker alone).
    """
    if strategy is None:
        strategy = model.distribute_strategy if isinstance(model, keras.Model) else None
    x, y, batch_size, epochs, callbacks = _check(
        model, x, y, batch_size, epochs, callbacks, strategy
    )
    # When keras-team/keras#20585 is fixed, this is where ``model.fit`` takes over.
    rank, replicas = worker_rank(strategy), strategy.num_replicas_in_sync
    local = local_replicas(strategy)
    chief = is_chief(strategy)
    first_slice = rank * local
    backup = None if backup_dir is None else Backup(backup_dir, chief=chief)
    callbacks = model._with_data_epoch(x, callbacks)
    scratch = _redirect_writers(callbacks, chief)
    _build(model, x, y)
    start_epoch, past = (0, {}) if backup is None else backup.restore(model)
    steps = len(_batches(len(x), batch_size, replicas, 0, seed, False))
    history = keras.callbacks.History()
    cbs = keras.callbacks.CallbackList(
        callbacks + [history], add_progbar=bool(verbose) and chief, model=model,
        verbose=verbose if chief else 0, epochs=epochs, steps=steps,
    )  # fmt: skip
    reseed = any(type(cb).__name__ == "EpochSeed" for cb in callbacks)
    train = _train_function(model, strategy)
    model.stop_training = False
    cbs.on_train_begin()
    history.history = {k: list(v) for k, v in past.items()}
    history.epoch = list(range(start_epoch))
    logs = {}
    try:
        for epoch in range(start_epoch, epochs):
            for metric in model.metrics:
                metric.reset_state()
            cbs.on_epoch_begin(epoch)
            if reseed:  # EpochSeed set this epoch's global seed: trace the step again
                train = _train_function(model, strategy)
            for step, parts in enumerate(_batches(len(x), batch_size, replicas, epoch, seed,
                                                  shuffle)):  # fmt: skip
                cbs.on_train_batch_begin(step)
                mine = parts[first_slice : first_slice + local]
                dx, dy = (
                    strategy.experimental_distribute_values_from_function(
                        lambda ctx, arr=arr: arr[mine[ctx.replica_id_in_sync_group % local]]
                    )
                    for arr in (x, y)
                )
                global_batch = tf.constant(float(sum(len(p) for p in parts)))
                train(dx, dy, global_batch)
                cbs.on_train_batch_end(step, {})
            with strategy.scope():
                logs = {k: float(v) for k, v in model.get_metrics_result().items()}
            cbs.on_epoch_end(epoch, logs)
            if backup is not None:
                backup.save(model, epoch, history.history)
            if model.stop_training:
                break
        cbs.on_train_end(logs)
    finally:
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
    if backup is not None:
        backup.delete()
    return history
