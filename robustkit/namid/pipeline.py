"""The three-stage NAMID / WMIM pipeline as one call, with stage caching.

Example:

>>> import tempfile, robustkit as rk
>>> x, y = rk.data.load("digits", "train")
>>> out = rk.namid.run_pipeline(
...     "namid", lambda: rk.models.small_cnn((8, 8, 1)), (x[:256], y[:256]),
...     attack=rk.attacks.PGD(eps=0.1, steps=2), out_dir=tempfile.mkdtemp(),
...     stage1_epochs=1, estimator_epochs=1, epochs=1, warmup_epochs=1,
...     estimator_kwargs={"features": 16, "batch_size": 64}, verbose=0)
>>> out["ran"]
['target', 'estimators', 'model']

Stages (Zhou et al., ICML 2022):

1. ``target``: a standard adversarially trained model (PGD-AT through
   :class:`robustkit.RobustModel` with ``attack``; the release: PGD-10), or the
   checkpoint given as ``target``.
2. ``estimators``: the natural and adversarial MI estimators trained on the
   frozen target (:func:`robustkit.namid.train_namid_estimators`, the released
   objective by default) with ``estimator_attack``; for WMIM the standard-MI
   estimator (:func:`robustkit.namid.train_standard_estimator`).
3. ``model``: a fresh model, ``warmup_epochs`` of clean CE (2 in the paper), then
   the defense (:class:`robustkit.namid.NAMID`, ``NAMID_T``, ``NAMID_M`` or
   ``WMIM``; the released loss by default) with the estimators frozen, trained with
   ``stage3_attack`` (default: the release's PGD-40, :func:`release_attack`).

Every stage writes its output under ``out_dir`` (``target.keras``,
``estimators/``, ``model.keras`` and ``robust_model.keras``) and a rerun with the
same settings loads it instead of recomputing; ``settings.json`` records the
settings, and a rerun with different ones raises instead of mixing stages.
"""

import json
import os

import keras
import numpy as np

from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks.pgd import PGD
from robustkit.namid.io import load_estimators, save_estimators
from robustkit.namid.objectives import DEFENSES
from robustkit.namid.stage2 import train_namid_estimators, train_standard_estimator
from robustkit.objectives import AT
from robustkit.training import RobustModel

#: the released code's L-inf step (``train_MIAT.py``: 0.007 at eps 8/255)
RELEASE_LINF_STEP = 0.007
RELEASE_LINF_EPS = 8 / 255


def release_attack(eps, steps=40, norm="linf"):
    """The released code's training PGD (``craft_adversarial_example_pgd``): start
    ``x + 0.001 N(0, 1)``; L-inf sign steps of 0.007 at eps 8/255 (the same step / eps ratio
    at other radii); L2 normalised-gradient steps of ``2 eps / steps``. The release trains
    stage 1 with PGD-10, stage 2 with L2 PGD-20 (eps 0.5 on CIFAR-10) and stage 3 with
    PGD-40.

    Example:

    >>> atk = release_attack(8 / 255)
    >>> atk.steps, round(atk.step_size, 4), atk.random_start
    (40, 0.007, 'normal')
    >>> release_attack(0.5, steps=20, norm="l2").step_size
    0.05
    """
    eps = check_positive(eps, "eps")
    steps = check_int(steps, "steps")
    if norm == "l2":
        step = 2 * eps / steps
    else:
        step = min(RELEASE_LINF_STEP * eps / RELEASE_LINF_EPS, eps)
    return PGD(eps=eps, steps=steps, step_size=step, norm=norm, random_start="normal")


def _check_attack(attack, name):
    if not isinstance(attack, PGD):
        raise ValueError(f"`{name}` must be a robustkit.attacks.PGD; got {type(attack).__name__}.")
    return attack


def _fresh(model_fn):
    if isinstance(model_fn, keras.Model):
        model = keras.models.clone_model(model_fn)
        return model
    if callable(model_fn):
        model = model_fn()
        if not isinstance(model, keras.Model):
            raise ValueError("`model_fn` must return a keras.Model (logits out).")
        return model
    raise ValueError(f"`model_fn` must be a callable returning a keras.Model; got {model_fn!r}.")


def _optimizer(optimizer):
    if callable(optimizer) and not isinstance(optimizer, keras.optimizers.Optimizer):
        return optimizer()
    if isinstance(optimizer, str):
        return keras.optimizers.get(optimizer)
    raise ValueError(
        "`optimizer` must be a name ('adam') or a callable returning a fresh optimizer "
        "(each stage needs its own)."
    )


def run(
    defense,
    model_fn,
    data,
    attack,
    out_dir,
    target=None,
    stage1_epochs=10,
    estimator_epochs=25,
    epochs=10,
    warmup_epochs=2,
    batch_size=128,
    optimizer="adam",
    estimator_attack=None,
    stage3_attack=None,
    estimator_kwargs=None,
    objective_kwargs=None,
    validation_data=None,
    callbacks=None,
    seed=0,
    verbose=1,
):
    """Runs (or resumes) the NAMID / WMIM pipeline; returns a dict of results.

    Args:
        defense: ``"namid"``, ``"namid_t"``, ``"namid_m"`` or ``"wmim"``.
        model_fn: a callable returning a fresh Keras classifier (logits out), or
            a model to clone (fresh weights); used for stages 1 and 3.
        data: ``(x, y)`` training arrays (images in [0, 1]).
        attack: the training attack of stage 1 (:class:`robustkit.attacks.PGD`; the
            release: PGD-10, :func:`release_attack` with ``steps=10``).
        out_dir: folder of the cached stage outputs.
        target: optional stage-1 checkpoint (a ``.keras`` path or a model)
            instead of training one.
        stage1_epochs, estimator_epochs, epochs: epochs of stages 1, 2 and 3
            (stage 3 after ``warmup_epochs`` of clean CE; 2 in the paper).
        batch_size: batch of stages 1 and 3.
        optimizer: name or callable returning a fresh optimizer, per stage.
        estimator_attack: the attack making stage 2's adversarial examples (default:
            ``attack``; the release: L2 PGD-20, ``release_attack(0.5, 20, "l2")`` on
            CIFAR-10).
        stage3_attack: the training attack of stage 3 (default: the release's PGD-40,
            ``release_attack(attack.eps, 40, attack.norm)``; pass ``attack`` to train
            stage 3 as stage 1).
        estimator_kwargs: extra arguments of the stage-2 trainer (``features``,
            ``batch_size``, ``learning_rate``, ``objective``, ...).
        objective_kwargs: extra arguments of the defense (``alpha``, ``lam``,
            ``beta``, ...).
        validation_data: passed to stage 3's ``fit``.
        callbacks: a list passed to stage 3's ``fit``, or a callable returning a
            fresh list, then called for stage 1 and for stage 3 (e.g.
            ``lambda: [rk.callbacks.EpsilonWarmup(epochs=2)]``).
        seed: seed of every stage.

    Returns:
        ``{"model": RobustModel, "target": model, "estimators": tuple,
        "estimator_info": dict, "history": dict | None, "ran": [...],
        "skipped": [...], "paths": {...}}``.
    """
    defense = check_choice(defense, set(DEFENSES), "defense")
    _check_attack(attack, "attack")
    estimator_attack = _check_attack(
        attack if estimator_attack is None else estimator_attack, "estimator_attack"
    )
    if stage3_attack is None:
        stage3_attack = release_attack(attack.eps, 40, attack.norm)
    _check_attack(stage3_attack, "stage3_attack")
    if not isinstance(out_dir, (str, os.PathLike)) or not str(out_dir):
        raise ValueError(f"`out_dir` must be a folder path; got {out_dir!r}.")
    for value, name in (
        (stage1_epochs, "stage1_epochs"),
        (estimator_epochs, "estimator_epochs"),
        (epochs, "epochs"),
    ):
        check_int(value, name)
    check_int(warmup_epochs, "warmup_epochs", minimum=0)
    check_int(batch_size, "batch_size")
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be a pair (x, y) of arrays.")
    x, y = np.asarray(data[0], "float32"), np.asarray(data[1]).astype("int64")
    estimator_kwargs = dict(estimator_kwargs or {})
    objective_kwargs = dict(objective_kwargs or {})
    if not callable(model_fn):
        raise ValueError(
            f"`model_fn` must be a callable returning a keras.Model; got {model_fn!r}."
        )

    out_dir = str(out_dir)
    os.makedirs(out_dir, exist_ok=True)
    paths = {
        "target": os.path.join(out_dir, "target.keras"),
        "estimators": os.path.join(out_dir, "estimators"),
        "model": os.path.join(out_dir, "model.keras"),
        "robust_model": os.path.join(out_dir, "robust_model.keras"),
        "settings": os.path.join(out_dir, "settings.json"),
    }
    settings = {
        "defense": defense,
        "n_train": int(len(x)),
        "attack": attack.get_config(),
        "estimator_attack": estimator_attack.get_config(),
        "stage3_attack": stage3_attack.get_config(),
        "target": target if isinstance(target, str) else (None if target is None else "model"),
        "stage1_epochs": stage1_epochs,
        "estimator_epochs": estimator_epochs,
        "estimator_kwargs": estimator_kwargs,
        "epochs": epochs,
        "warmup_epochs": warmup_epochs,
        "batch_size": batch_size,
        "objective_kwargs": objective_kwargs,
        "seed": seed,
    }
    settings = json.loads(json.dumps(settings, default=str))
    if os.path.exists(paths["settings"]):
        with open(paths["settings"]) as f:
            old = json.load(f)
        if old != settings:
            changed = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
            raise ValueError(
                f"`out_dir` {out_dir!r} holds a pipeline run with other settings "
                f"(differing: {changed}); use a fresh `out_dir`."
            )
    else:
        with open(paths["settings"], "w") as f:
            json.dump(settings, f, indent=1)

    ran, skipped = [], []
    # ---------------------------------------------------------------- stage 1
    if target is not None:
        target_model = (
            keras.saving.load_model(target, compile=False) if isinstance(target, str) else target
        )
        skipped.append("target")
    elif os.path.exists(paths["target"]):
        target_model = keras.saving.load_model(paths["target"], compile=False)
        skipped.append("target")
    else:
        keras.utils.set_random_seed(seed)
        target_model = _fresh(model_fn)
        rm = RobustModel(target_model, objective=AT(), attack=attack)
        rm.compile(optimizer=_optimizer(optimizer))
        rm.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=stage1_epochs,
            verbose=verbose,
            callbacks=callbacks() if callable(callbacks) else None,
        )
        target_model.save(paths["target"])
        ran.append("target")

    # ---------------------------------------------------------------- stage 2
    names = ("standard",) if defense == "wmim" else ("natural", "adversarial")
    info_path = os.path.join(paths["estimators"], "info.json")
    if all(
        os.path.exists(os.path.join(paths["estimators"], f"{n}.keras")) for n in names
    ) and os.path.exists(info_path):
        estimators = load_estimators(paths["estimators"], names)
        with open(info_path) as f:
            est_info = json.load(f)
        skipped.append("estimators")
    else:
        kwargs = dict(estimator_kwargs, epochs=estimator_epochs, seed=seed, verbose=verbose)
        if defense == "wmim":
            est, est_info = train_standard_estimator(
                target_model, (x, y), estimator_attack, **kwargs
            )
            estimators = (est,)
        else:
            nat, adv, est_info = train_namid_estimators(
                target_model, (x, y), estimator_attack, **kwargs
            )
            estimators = (nat, adv)
        save_estimators(paths["estimators"], **dict(zip(names, estimators)))
        with open(info_path, "w") as f:
            json.dump(est_info, f)
        ran.append("estimators")

    # ---------------------------------------------------------------- stage 3
    objective = DEFENSES[defense](estimators_path=paths["estimators"], **objective_kwargs)
    history = None
    if os.path.exists(paths["model"]) and os.path.exists(paths["robust_model"]):
        base = keras.saving.load_model(paths["model"], compile=False)
        model = RobustModel(base, objective=objective, attack=stage3_attack)
        skipped.append("model")
    else:
        keras.utils.set_random_seed(seed + 1)
        base = _fresh(model_fn)
        if warmup_epochs:
            base.compile(
                optimizer=_optimizer(optimizer),
                loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
            )
            base.fit(x, y, batch_size=batch_size, epochs=warmup_epochs, verbose=verbose)
        model = RobustModel(base, objective=objective, attack=stage3_attack)
        model.compile(optimizer=_optimizer(optimizer), metrics=None)
        history = model.fit(
            x,
            y,
            batch_size=batch_size,
            epochs=epochs,
            verbose=verbose,
            validation_data=validation_data,
            callbacks=callbacks() if callable(callbacks) else callbacks,
        ).history
        base.save(paths["model"])
        model.save(paths["robust_model"])
        ran.append("model")
    return {
        "model": model,
        "target": target_model,
        "estimators": estimators,
        "estimator_info": est_info,
        "history": history,
        "ran": ran,
        "skipped": skipped,
        "paths": paths,
    }


__all__ = ["RELEASE_LINF_EPS", "RELEASE_LINF_STEP", "release_attack", "run"]
