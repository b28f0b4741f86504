"""``train_and_export``: load data, adversarially train, measure, export — one call.

The command line (``robustkit train``) and the recipes are thin layers over this function.

Example (the main job, ~15 s on 2 CPU cores):

>>> import tempfile, os
>>> from robustkit.app import TrainConfig, train_and_export
>>> result = train_and_export(TrainConfig(epochs=1, out=os.path.join(tempfile.mkdtemp(), "m")),
...                           verbose=0)                              # doctest: +SKIP
>>> result.record.robust_accuracy <= result.record.clean_accuracy      # doctest: +SKIP
True
"""

import dataclasses
import os
import time
from dataclasses import dataclass

from robustkit import _log
from robustkit.app.config import (
    MI_DEFENSES,
    MODELS,
    ConfigError,
    TrainConfig,
    TrainPlan,
    attack_label,
    learning_rate,
    mi_settings,
)
from robustkit.export import build_record, export
from robustkit.export.record import DataRecord, ExportRecord, Measurement


@dataclass
class TrainResult:
    """What :func:`train_and_export` produced."""

    record: ExportRecord
    path: str
    model: object
    train_seconds: float
    eval_seconds: float
    stages_run: list = None
    stages_skipped: list = None


def build_model(name, input_shape, num_classes, width=None, depth=34, widen_factor=10):
    """The ``model`` architecture for ``input_shape``."""
    from robustkit import models

    kwargs = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    if width is not None:
        kwargs[MODELS[name]] = width
    if name == "wide_resnet":
        kwargs.update(depth=depth, width=widen_factor)
    return getattr(models, name)(**kwargs)


def load_split(dataset, split, data_dir=None, download=False, size=None, seed=0,
               with_info=False):  # fmt: skip
    """``(x, y)`` of one split (a stratified subset of ``size`` when given); a missing data
    set is a :class:`ConfigError` naming ``--data-dir`` or ``--dataset``. ``with_info``:
    ``(x, y, info)`` with the :class:`robustkit.data.DataInfo` (where the data came from)."""
    from robustkit import data

    try:
        x, y, info = data.load(dataset, split, data_dir=data_dir, download=download,
                               with_info=True)  # fmt: skip
    except FileNotFoundError as e:
        raise ConfigError("data_dir" if dataset in data.LOCAL else "dataset", str(e)) from None
    if size:
        x, y = data.subset(x, y, size, seed=seed)
    return (x, y, info) if with_info else (x, y)


@dataclass
class Splits:
    """The arrays a training job uses and where they came from."""

    x_train: object
    y_train: object
    x_test: object
    y_test: object
    x_val: object = None
    y_val: object = None
    source: str = None

    def record(self, name):
        """The export's :class:`DataRecord`."""
        return DataRecord(
            name=name,
            source=self.source,
            train_examples=int(len(self.x_train)),
            val_examples=None if self.x_val is None else int(len(self.x_val)),
            test_examples=int(len(self.x_test)),
        )


def load_splits(c):
    """The :class:`Splits` of a resolved config: subsets when asked, and ``val_size`` training
    examples held out (stratified, seeded) for checkpoint selection."""
    import numpy as np

    from robustkit import data

    x_tr, y_tr, info = load_split(c.dataset, "train", c.data_dir, c.download, c.train_size,
                                  c.seed, with_info=True)  # fmt: skip
    x_te, y_te = load_split(c.dataset, "test", c.data_dir, c.download, c.test_size, c.seed)
    splits = Splits(x_tr, y_tr, x_te, y_te, source=info.source)
    if c.val_size:
        if c.val_size >= len(x_tr):
            raise ConfigError("val_size", f"must be smaller than the {len(x_tr)} training examples")
        held = data.subset_indices(y_tr, c.val_size, seed=c.seed + 1)
        keep = np.ones(len(x_tr), bool)
        keep[held] = False
        splits.x_val, splits.y_val = x_tr[held], y_tr[held]
        splits.x_train, splits.y_train = x_tr[keep], y_tr[keep]
    return splits


def measure(model, x, y, attack, strategy=None, seed=None, split="test"):
    """A :class:`Measurement` of ``model`` on ``(x, y)`` under ``attack`` (the one evaluator;
    with ``strategy``: sharded over its workers, batches keyed on ``seed``)."""
    from robustkit.evaluation import measure as measure_fn

    if strategy is None:
        result = measure_fn(model, (x, y), attack)
    else:
        result = measure_fn(model, (x, y), attack, strategy=strategy, seed=seed)
    return Measurement(
        attack=attack_label(attack),
        clean_accuracy=result.clean_accuracy,
        robust_accuracy=result.robust_accuracy,
        n_examples=result.n,
        outside_ball=result.outside_ball,
        split=split,
        config=attack.get_config() if hasattr(attack, "get_config") else None,
    )


def _optimizer(c, steps_per_epoch):
    import keras

    lr = learning_rate(c, steps_per_epoch)
    if c.optimizer == "adam":
        return keras.optimizers.Adam(lr, weight_decay=c.weight_decay)
    return keras.optimizers.SGD(lr, momentum=0.9, weight_decay=c.weight_decay)


def _hyperparameters(c, objective, x_tr, train_attack=None):
    hp = {
        **(objective.get_config() if objective is not None else {}),
        "epochs": c.epochs,
        "warmup_epochs": c.warmup_epochs,
        "batch_size": c.batch_size,
        "optimizer": c.optimizer,
        "learning_rate": c.lr,
        "lr_schedule": c.lr_schedule,
        "weight_decay": c.weight_decay,
        "train_step_size": c.step_size,
        "train_steps": c.steps,
        "seed": c.seed,
        "train_examples": int(len(x_tr)),
        "model": c.model,
        "augment": c.augment,
        "val_size": c.val_size,
        "mixed_precision": c.mixed_precision,
        "deterministic": c.deterministic,
    }
    if c.defense in MI_DEFENSES:
        hp.update(estimator_epochs=c.estimator_epochs, estimator_features=c.estimator_features)
        hp.update(mi_settings(c, train_attack)["record"])
    return hp


def _selection_attack(attack):
    """``attack`` without random start: the held-out score that picks the checkpoint is
    then a function of the weights only (identical in a resumed run)."""
    config = attack.get_config()
    if "random_start" in config:
        config["random_start"] = False
    return type(attack).from_config(config)


def _backup_paths(c):
    if not c.backup_dir:
        return None, None
    return os.path.join(c.backup_dir, "state"), os.path.join(c.backup_dir, "best.weights.h5")


def _callbacks(c, splits, plan, extra):
    """The training callbacks of a resolved config, in the order they must run."""
    import keras

    import robustkit as rk

    state, best_path = _backup_paths(c)
    out = []
    if state:
        out += [keras.callbacks.BackupAndRestore(state), rk.callbacks.EpochSeed(c.seed)]
    if c.warmup_epochs:
        out.append(rk.callbacks.EpsilonWarmup(epochs=c.warmup_epochs))
    best = None
    if splits.x_val is not None:
        attack = _selection_attack(plan.eval_attack)
        out.append(rk.callbacks.RobustEvaluation((splits.x_val, splits.y_val), attack, 1, None))
        best = rk.callbacks.BestRobustCheckpoint(best_path)
        out.append(best)
    return out + list(extra or []), best


def _fit_plain(plan, base, train_attack, splits, verbose, extra, strategy):
    import robustkit as rk

    c = plan.config
    with strategy.scope():
        model = rk.RobustModel(base, objective=plan.objective, attack=train_attack)
        model.compile(optimizer=_optimizer(c, -(-len(splits.x_train) // c.batch_size)))
    if c.strategy != "default":
        from robustkit.app import strategy as strategy_lib

        callbacks, best = _callbacks(c, splits, plan, extra)
        strategy_lib.fit(model, splits, c, callbacks, verbose, strategy)
        return model, None, best
    data = rk.data.make_dataset(
        splits.x_train, splits.y_train, c.batch_size, seed=c.seed, augment=c.augment
    )
    callbacks, best = _callbacks(c, splits, plan, extra)
    model.fit(data, epochs=c.epochs, callbacks=callbacks, verbose=verbose)
    return model, None, best


def _fit_pipeline(plan, train_attack, splits, num_classes, verbose, extra):
    from robustkit.namid import run_pipeline

    c = plan.config
    x_tr, y_tr = splits.x_train, splits.y_train
    stages = c.stages_dir or (plan.out.rstrip("/\\") + "_stages")
    per_epoch = -(-len(x_tr) // c.batch_size)
    _log.info(f"NAMID pipeline stages cached in {stages}", verbose)
    picked = []

    def model_fn():
        return build_model(c.model, x_tr.shape[1:], num_classes, c.width, c.depth, c.widen_factor)

    def callbacks():  # stage 1 and stage 3: warm-up and, with val_size, best-checkpoint
        out, best = _callbacks(c, splits, plan, extra)
        picked.append(best)
        return out

    mi = mi_settings(c, train_attack)
    _log.info(f"NAMID pipeline ({c.mi_variant} variant): {mi['record']}", verbose)
    out = run_pipeline(
        c.defense, model_fn, (x_tr, y_tr), train_attack, stages,
        stage1_epochs=c.epochs, estimator_epochs=c.estimator_epochs, epochs=c.epochs,
        warmup_epochs=2, batch_size=c.batch_size, optimizer=lambda: _optimizer(c, per_epoch),
        estimator_attack=mi["estimator_attack"], stage3_attack=mi["stage3_attack"],
        estimator_kwargs=mi["estimator_kwargs"], objective_kwargs=mi["objective_kwargs"],
        callbacks=callbacks, seed=c.seed, verbose=verbose,
    )  # fmt: skip
    plan.objective = out["model"].objective
    return out["model"], out, picked[-1] if picked else None


def _cleanup_backup(c):
    """After a finished run: remove the best-checkpoint files (BackupAndRestore removes its
    own state) and ``backup_dir`` itself when nothing else is in it."""
    _, best_path = _backup_paths(c)
    if best_path is None:
        return
    for path in (best_path, best_path[: -len(".weights.h5")] + ".best.json"):
        if os.path.isfile(path):
            os.remove(path)
    if os.path.isdir(c.backup_dir) and not os.listdir(c.backup_dir):
        os.rmdir(c.backup_dir)


def train_and_export(config, verbose=1, callbacks=None):
    """Trains, measures and exports as ``config`` (a :class:`TrainConfig` or a resolved
    :class:`TrainPlan`) says; returns a :class:`TrainResult`.

    Every setting is checked before any work (:class:`~robustkit.app.config.ConfigError`
    naming it). The clean and robust accuracy written into ``robustkit.json`` come from
    :func:`robustkit.evaluation.measure`, the evaluator every report uses; the record says
    where the data came from and the train / val / test sizes used. ``callbacks``: extra
    Keras callbacks for the training ``fit`` (after robustkit's own).
    """
    import keras
    import tensorflow as tf

    import robustkit as rk

    plan = config.resolve() if isinstance(config, TrainConfig) else config
    if not isinstance(plan, TrainPlan):
        raise ValueError(f"`config` must be a TrainConfig; got {type(config).__name__}.")
    c = plan.config
    # first: MultiWorkerMirroredStrategy must exist before TensorFlow runs an op
    strategy = rk.distributed.get_strategy(c.strategy)
    splits = load_splits(c)
    x_tr, x_te = splits.x_train, splits.x_test
    num_classes = int(max(splits.y_train.max(), splits.y_test.max())) + 1
    if c.deterministic:
        tf.config.experimental.enable_op_determinism()
    keras.utils.set_random_seed(c.seed)
    policy = keras.mixed_precision.global_policy()
    if c.mixed_precision:
        keras.mixed_precision.set_global_policy("mixed_float16")
    train_attack = rk.attacks.PGD(eps=c.eps, steps=c.steps, step_size=c.step_size, norm=c.norm)
    start = time.perf_counter()
    try:
        if c.defense in MI_DEFENSES:
            model, pipeline, best = _fit_pipeline(
                plan, train_attack, splits, num_classes, verbose, callbacks
            )
        else:
            with strategy.scope():
                base = build_model(
                    c.model, x_tr.shape[1:], num_classes, c.width, c.depth, c.widen_factor
                )
            val = "" if splits.x_val is None else f" / {len(splits.x_val)} val"
            _log.info(
                f"robustkit train: {c.dataset} ({len(x_tr)} train{val} / {len(x_te)} test; "
                f"{splits.source}), {c.model} ({base.count_params():,} parameters), defense "
                f"{c.defense} ({plan.objective!r}), {c.norm} eps {c.eps:.4g}, PGD-{c.steps} "
                f"(step {train_attack.step_size:.4g}), {c.epochs} epochs (eps warm-up "
                f"{c.warmup_epochs}), batch {c.batch_size}, seed {c.seed}",
                verbose,
            )
            model, pipeline, best = _fit_plain(
                plan, base, train_attack, splits, verbose, callbacks, strategy
            )
    finally:
        keras.mixed_precision.set_global_policy(policy)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    sharded = None if c.strategy == "default" else strategy
    measurement = measure(model.base_model, x_te, splits.y_test, plan.eval_attack, sharded, c.seed)
    eval_seconds = time.perf_counter() - start
    record = build_record(model).replace(data=splits.record(c.dataset), measurements=(measurement,))
    hp = _hyperparameters(c, plan.objective, x_tr, train_attack)
    if best is not None and best.best_epoch is not None:
        hp.update(selected_epoch=best.best_epoch + 1, selection_score=round(best.best_score, 4))
    record = record.replace(
        training=dataclasses.replace(
            record.training,
            defense=c.defense,
            hyperparameters=hp,
            seconds=round(train_seconds, 1),
        ),
        extra={} if pipeline is None else {"pipeline_stages_run": pipeline["ran"]},
    )
    from robustkit.app.strategy import export_as_worker

    chief = rk.distributed.is_chief(strategy)
    record = (
        export_as_worker(
            strategy, lambda path: export(model, path, record=record, overwrite=True), plan.out
        )
        or record
    )
    if chief:
        _cleanup_backup(c)
    return TrainResult(
        record=record,
        path=os.path.abspath(plan.out) if chief else None,
        model=model,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        stages_run=None if pipeline is None else pipeline["ran"],
        stages_skipped=None if pipeline is None else pipeline["skipped"],
    )
