"""``TrainConfig.strategy`` / ``robustkit train --strategy``: the training and export of a
run under a ``tf.distribute`` strategy (:mod:`robustkit.distributed`); the settings are
checked by ``TrainConfig.resolve`` (:func:`strategy_problem`).

Example:

>>> from robustkit.app import TrainConfig
>>> TrainConfig(strategy="mirrored", augment=True).resolve()  # doctest: +IGNORE_EXCEPTION_DETAIL
Traceback (most recent call last):
ConfigError: augment: not supported with --strategy mirrored yet ...

``multiworker`` reads ``TF_CONFIG`` (the TensorFlow convention): run the same command on
every host, each with its own ``TF_CONFIG``. Only the chief exports and keeps the backup;
the other workers export into a temporary folder that they delete (the multi-worker saving
rule), and print one line.
"""

import os
import shutil
import tempfile


def strategy_problem(c, pipeline):
    """``(setting, message)`` when ``c.strategy`` (of a :class:`TrainConfig`) is unknown, its
    ``TF_CONFIG`` missing or malformed, or another setting is not supported under it
    (``pipeline``: the defense trains through the NAMID pipeline); else ``None``."""
    from robustkit.distributed import STRATEGIES, read_tf_config

    if c.strategy not in STRATEGIES:
        return "strategy", f"unknown strategy {c.strategy!r}; expected one of {list(STRATEGIES)}"
    if c.strategy == "default":
        return None
    if c.strategy == "multiworker":
        try:
            read_tf_config()
        except ValueError as e:
            return "strategy", str(e)
    if pipeline:
        return "strategy", f"the {c.defense!r} pipeline trains on one machine (model.fit) only"
    for name in ("augment", "mixed_precision"):
        if getattr(c, name):
            return name, (
                f"not supported with --strategy {c.strategy} yet (the distributed loop trains "
                "on arrays in float32)"
            )
    return None


def fit(model, splits, c, callbacks, verbose, strategy):
    """Trains ``model`` (built in the strategy's scope) with robustkit's distributed loop;
    ``keras.callbacks.BackupAndRestore`` is replaced by the loop's worker-safe backup in the
    same folder."""
    import keras

    from robustkit import distributed

    callbacks = [cb for cb in callbacks if not isinstance(cb, keras.callbacks.BackupAndRestore)]
    backup = None if not c.backup_dir else os.path.join(c.backup_dir, "state")
    distributed.fit(
        model, splits.x_train, splits.y_train, batch_size=c.batch_size, epochs=c.epochs,
        callbacks=callbacks, seed=c.seed, backup_dir=backup, verbose=verbose, strategy=strategy,
    )  # fmt: skip


def export_as_worker(strategy, export_fn, out):
    """``export_fn(path)`` into ``out`` on the chief; on other workers into a temporary folder,
    deleted afterwards. Returns the chief's record, or ``None`` on other workers."""
    from robustkit.distributed import is_chief

    if is_chief(strategy):
        return export_fn(out)
    scratch = tempfile.mkdtemp(prefix="robustkit-worker-export-")
    try:
        export_fn(os.path.join(scratch, os.path.basename(os.path.normpath(out))))
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    return None
