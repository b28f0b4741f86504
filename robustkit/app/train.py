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


def data_source(name, data_dir):
    """Where ``name``'s examples come from, in words (recorded in ``robustkit.json``)."""
    from robustkit import data

    if name == "digits":
        return "scikit-learn load_digits (embedded)"
    if name in data.LOCAL:
        return f"local files in {data.data_dir_from(data_dir)}"
    return "TensorFlow Datasets"


def load_split(dataset, split, data_dir=None, download=False, size=None, seed=0):
    """``(x, y)`` of one split (a stratified subset of ``size`` when given); a missing data
    set is a :class:`ConfigError` naming ``--data-dir`` or ``--dataset``."""
    from robustkit import data

    try:
        x, y = data.load(dataset, split, data_dir=data_dir, download=download)
    except FileNotFoundError as e:
        raise ConfigError("data_dir" if dataset in data.LOCAL else "dataset", str(e)) from None
    if size:
        x, y = data.subset(x, y, size, seed=seed)
    return x, y


def load_splits(c):
    """``(x_train, y_train, x_test, y_test)`` for a resolved config (subsets when asked)."""
    return (
        *load_split(c.dataset, "train", c.data_dir, c.download, c.train_size, c.seed),
        *load_split(c.dataset, "test", c.data_dir, c.download, c.test_size, c.seed),
    )


def measure(model, x, y, attack, split="test"):
    """A :class:`Measurement` of ``model`` on ``(x, y)`` under ``attack`` (the one evaluator)."""
    from robustkit.evaluation import measure as measure_fn

    result = measure_fn(model, (x, y), attack)
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
    }
    if c.defense in MI_DEFENSES:
        hp.update(estimator_epochs=c.estimator_epochs, estimator_features=c.estimator_features)
        hp.update(mi_settings(c, train_attack)["record"])
    return hp


def _fit_plain(plan, base, train_attack, x_tr, y_tr, verbose):
    import robustkit as rk

    c = plan.config
    model = rk.RobustModel(base, objective=plan.objective, attack=train_attack)
    model.compile(optimizer=_optimizer(c, -(-len(x_tr) // c.batch_size)))
    callbacks = [rk.callbacks.EpsilonWarmup(epochs=c.warmup_epochs)] if c.warmup_epochs else []
    model.fit(x_tr, y_tr, batch_size=c.batch_size, epochs=c.epochs, callbacks=callbacks,
              verbose=verbose)  # fmt: skip
    return model, None


def _fit_pipeline(plan, train_attack, x_tr, y_tr, num_classes, verbose):
    import robustkit as rk
    from robustkit.namid import run_pipeline

    c = plan.config
    stages = c.stages_dir or (plan.out.rstrip("/\\") + "_stages")
    per_epoch = -(-len(x_tr) // c.batch_size)
    _log.info(f"NAMID pipeline stages cached in {stages}", verbose)

    def model_fn():
        return build_model(c.model, x_tr.shape[1:], num_classes, c.width, c.depth, c.widen_factor)

    def callbacks():
        return [rk.callbacks.EpsilonWarmup(epochs=c.warmup_epochs)] if c.warmup_epochs else []

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
    return out["model"], out


def train_and_export(config, verbose=1):
    """Trains, measures and exports as ``config`` (a :class:`TrainConfig` or a resolved
    :class:`TrainPlan`) says; returns a :class:`TrainResult`.

    Every setting is checked before any work (:class:`~robustkit.app.config.ConfigError`
    naming it). The clean and robust accuracy written into ``robustkit.json`` come from
    :func:`robustkit.evaluation.measure`, the evaluator every report uses.
    """
    import keras

    import robustkit as rk

    plan = config.resolve() if isinstance(config, TrainConfig) else config
    if not isinstance(plan, TrainPlan):
        raise ValueError(f"`config` must be a TrainConfig; got {type(config).__name__}.")
    c = plan.config
    x_tr, y_tr, x_te, y_te = load_splits(c)
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    keras.utils.set_random_seed(c.seed)
    train_attack = rk.attacks.PGD(eps=c.eps, steps=c.steps, step_size=c.step_size, norm=c.norm)
    start = time.perf_counter()
    if c.defense in MI_DEFENSES:
        model, pipeline = _fit_pipeline(plan, train_attack, x_tr, y_tr, num_classes, verbose)
    else:
        base = build_model(c.model, x_tr.shape[1:], num_classes, c.width, c.depth, c.widen_factor)
        _log.info(
            f"robustkit train: {c.dataset} ({len(x_tr)} train / {len(x_te)} test), {c.model} "
            f"({base.count_params():,} parameters), defense {c.defense} ({plan.objective!r}), "
            f"{c.norm} eps {c.eps:.4g}, PGD-{c.steps} (step {train_attack.step_size:.4g}), "
            f"{c.epochs} epochs (eps warm-up {c.warmup_epochs}), batch {c.batch_size}, "
            f"seed {c.seed}",
            verbose,
        )
        model, pipeline = _fit_plain(plan, base, train_attack, x_tr, y_tr, verbose)
    train_seconds = time.perf_counter() - start

    start = time.perf_counter()
    measurement = measure(model.base_model, x_te, y_te, plan.eval_attack)
    eval_seconds = time.perf_counter() - start
    record = build_record(model).replace(
        data=DataRecord(
            name=c.dataset,
            source=data_source(c.dataset, c.data_dir),
            train_examples=int(len(x_tr)),
            test_examples=int(len(x_te)),
        ),
        measurements=(measurement,),
    )
    record = record.replace(
        training=dataclasses.replace(
            record.training,
            defense=c.defense,
            hyperparameters=_hyperparameters(c, plan.objective, x_tr, train_attack),
            seconds=round(train_seconds, 1),
        ),
        extra={} if pipeline is None else {"pipeline_stages_run": pipeline["ran"]},
    )
    record = export(model, plan.out, record=record, overwrite=True)
    return TrainResult(
        record=record,
        path=os.path.abspath(plan.out),
        model=model,
        train_seconds=train_seconds,
        eval_seconds=eval_seconds,
        stages_run=None if pipeline is None else pipeline["ran"],
        stages_skipped=None if pipeline is None else pipeline["skipped"],
    )
