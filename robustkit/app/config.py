"""The configuration of a training job, checked in full before any work starts.

Example:

>>> from robustkit.app import TrainConfig
>>> plan = TrainConfig().resolve()          # the main job: digits, small CNN, PGD-AT
>>> plan.config.eps, plan.config.epochs, plan.out
(0.1, 15, 'saved_models/digits_at_linf')
>>> TrainConfig(eps=0).resolve()
Traceback (most recent call last):
...
robustkit.app.config.ConfigError: argument --eps: must be > 0; got 0
"""

import dataclasses
import os
import re
from dataclasses import dataclass, field

from robustkit import threat as threat_lib

#: ``model`` names and the builders' keyword for the width argument
MODELS = {
    "small_cnn": "width",
    "resnet18": "base_filters",
    "preact_resnet18": "base_filters",
    "vgg19": "base_filters",
    "wide_resnet": "base_filters",
}
#: default epochs per data set (others: 10)
DEFAULT_EPOCHS = {"digits": 15, "mnist": 10, "cifar10": 30, "cifar10_test_files": 30}
DEFAULT_OUT_DIR = "saved_models"
#: the defenses trained by the three-stage NAMID pipeline (``robustkit.namid``)
MI_DEFENSES = ("namid", "namid_t", "namid_m", "wmim")
#: what the NAMID pipeline runs (:func:`mi_settings`): the authors' released code, or the
#: paper's formulas (robustkit's behaviour before the release was followed)
MI_VARIANTS = ("release", "paper")
OPTIMIZERS = ("adam", "sgd")


class ConfigError(ValueError):
    """A bad setting; ``field`` names it (the CLI reports it as ``--field-name``)."""

    def __init__(self, field, message):
        self.field = field
        self.message = message
        super().__init__(f"argument {flag(field)}: {message}")


def flag(field):
    """The command-line spelling of a config field: ``eval_attack`` -> ``--eval-attack``."""
    return field if field.isupper() else "--" + field.replace("_", "-")


def parse_attack(spec, eps, norm, field="eval_attack"):
    """``"pgd40"`` / ``"pgd-20"`` / ``"fgsm"`` -> a robustkit attack (step eps/4).

    Example:

    >>> parse_attack("pgd40", 0.1, "linf").steps
    40
    """
    from robustkit import attacks

    text = str(spec).strip().lower()
    match = re.fullmatch(r"pgd-?(\d+)", text)
    if match and int(match.group(1)) >= 1:
        # One-shot evaluation: tf.while_loop traces in ~1 s where the unrolled
        # early-stop loop of PGD-40 takes minutes to trace on a busy 2-core CPU.
        return attacks.PGD(
            eps=eps, steps=int(match.group(1)), norm=norm, early_stop=True, loop="while"
        )
    if text == "fgsm":
        return attacks.FGSM(eps=eps, norm=norm)
    raise ConfigError(field, f"unknown attack {spec!r}; expected pgdN (e.g. pgd40) or fgsm")


def attack_label(attack):
    """A short human-readable name, e.g. ``"PGD-40 (linf, eps=0.1, step=0.025)"``."""
    from robustkit.evaluation.suites import attack_name

    step = getattr(attack, "step_size", None)
    step = "" if step is None else f", step={step:.4g}"
    eps = getattr(attack, "eps", None)
    eps = "" if eps is None else f", eps={eps:.4g}"
    return f"{attack_name(attack)} ({getattr(attack, 'norm', None)}{eps}{step})"


def check_schedule(spec):
    """``"constant"``, ``"cosine"``, ``"piecewise"`` (x0.1 at 75 % and x0.01 at 90 % of the
    epochs, the TRADES/MART/NAMID schedule) or ``"piecewise:75,90"`` (explicit epochs).

    Example:

    >>> check_schedule("piecewise:75,90")
    'piecewise:75,90'
    """
    text = str(spec).strip().lower()
    if text in ("constant", "cosine", "piecewise"):
        return text
    match = re.fullmatch(r"piecewise:(\d+(?:,\d+)*)", text)
    if match:
        epochs = [int(e) for e in match.group(1).split(",")]
        if epochs == sorted(set(epochs)) and epochs[0] >= 1:
            return text
    raise ConfigError(
        "lr_schedule",
        f"unknown schedule {spec!r}; expected constant, cosine, piecewise or piecewise:E1,E2,...",
    )


def learning_rate(c, steps_per_epoch):
    """The learning rate of a resolved config: a number or a Keras schedule."""
    import keras

    if c.lr_schedule == "constant":
        return c.lr
    total = c.epochs * steps_per_epoch
    if c.lr_schedule == "cosine":
        return keras.optimizers.schedules.CosineDecay(c.lr, decay_steps=max(total, 1))
    if c.lr_schedule == "piecewise":
        epochs = [max(1, round(0.75 * c.epochs)), max(1, round(0.9 * c.epochs))]
    else:
        epochs = [int(e) for e in c.lr_schedule.split(":")[1].split(",")]
    bounds = [e * steps_per_epoch for e in epochs]
    values = [c.lr * 0.1**i for i in range(len(bounds) + 1)]
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def check_dataset(name):
    """A known data-set name (the local ones or a TFDS name), lower-cased."""
    from robustkit import data

    if not isinstance(name, str) or not name:
        raise ConfigError("dataset", "must be a non-empty name")
    key = name.lower()
    if key in data.LOCAL:
        return key
    try:
        import tensorflow_datasets as tfds

        known = set(tfds.list_builders())
    except Exception:  # pragma: no cover - tfds is a core dependency
        known = set()
    if key not in known:
        raise ConfigError(
            "dataset",
            f"unknown dataset {name!r}; use one of {list(data.LOCAL)} or a TensorFlow "
            "Datasets name (e.g. svhn_cropped)",
        )
    return key


def default_out(dataset, model, defense, norm):
    """``saved_models/digits_at_linf`` for the default run."""
    tag = "at" if defense in ("standard", "at") else defense
    parts = [dataset] + ([] if model == "small_cnn" else [model]) + [tag, norm]
    return os.path.join(DEFAULT_OUT_DIR, "_".join(parts))


def check_out(path):
    """``path`` may be written: it does not exist or holds a robustkit export."""
    from robustkit.export import read_record

    if os.path.exists(path):
        try:
            read_record(path)  # replace only a previous robustkit export
        except ValueError:
            raise ConfigError(
                "out", f"{path} exists and is not a robustkit SavedModel; not replacing it"
            ) from None
    return path


@dataclass
class TrainConfig:
    """Everything ``robustkit train`` (and the recipes) can set; defaults = the main job.

    ``None`` means "the data set's / defense's default", filled by :meth:`resolve`.

    Reaching published settings: ``augment`` (pad-4 random crop + flip, per epoch),
    ``val_size`` (hold out that many training examples, stratified; keep the epoch with the
    best ``(clean + robust) / 2`` on them under ``eval_attack`` without random start, the
    NAMID paper's rule), ``mixed_precision`` (the ``mixed_float16`` policy), ``backup_dir``
    (back up every epoch there and resume an interrupted run from it, exactly: same data
    order, warm-up position, random starts and best checkpoint as an uninterrupted run),
    ``deterministic`` (``tf.config.experimental.enable_op_determinism()``, process-wide),
    ``strategy`` (``"default"``, ``"mirrored"``, ``"multiworker"`` reading ``TF_CONFIG``:
    :mod:`robustkit.app.strategy`).
    """

    dataset: str = "digits"
    data_dir: str = None
    download: bool = False
    model: str = "small_cnn"
    width: int = None
    depth: int = 34
    widen_factor: int = 10
    defense: str = "standard"
    beta: float = None
    norm: str = "linf"
    eps: float = None
    steps: int = 10
    step_size: float = None
    eval_attack: str = "pgd40"
    epochs: int = None
    warmup_epochs: int = None
    batch_size: int = 64
    optimizer: str = "adam"
    lr: float = None
    lr_schedule: str = "constant"
    weight_decay: float = None
    seed: int = 0
    train_size: int = None
    test_size: int = None
    out: str = None
    estimator_epochs: int = 25
    estimator_features: int = 2048
    stages_dir: str = None
    augment: bool = False
    val_size: int = None
    mixed_precision: bool = False
    backup_dir: str = None
    deterministic: bool = False
    mi_variant: str = "release"
    strategy: str = "default"
    extra: dict = field(default_factory=dict)

    def resolve(self):
        """Checks every setting and fills the defaults; returns a :class:`TrainPlan`.

        Raises :class:`ConfigError` naming the setting, before any work (no data is
        loaded, nothing is written).
        """
        from robustkit import objectives

        c = dataclasses.replace(self)
        _positive(c, "eps", allow_none=True)
        for name in ("steps", "batch_size", "estimator_epochs", "estimator_features", "depth",
                     "widen_factor"):  # fmt: skip
            _count(c, name)
        for name in ("width", "epochs", "train_size", "test_size", "val_size"):
            _count(c, name, allow_none=True)
        for name in ("augment", "mixed_precision", "deterministic", "download"):
            if not isinstance(getattr(c, name), bool):
                raise ConfigError(name, f"must be True or False; got {getattr(c, name)!r}")
        if c.val_size is not None and c.train_size is not None and c.val_size >= c.train_size:
            raise ConfigError("val_size", f"must be smaller than --train-size ({c.train_size})")
        if c.backup_dir is not None:
            if not isinstance(c.backup_dir, (str, os.PathLike)) or not os.fspath(c.backup_dir):
                raise ConfigError("backup_dir", f"must be a folder path; got {c.backup_dir!r}")
            if os.path.exists(c.backup_dir) and not os.path.isdir(c.backup_dir):
                raise ConfigError("backup_dir", f"{c.backup_dir} exists and is not a folder")
        _positive(c, "lr", allow_none=True)
        _positive(c, "step_size", allow_none=True)
        _positive(c, "weight_decay", allow_none=True)
        c.lr_schedule = check_schedule(c.lr_schedule)
        _positive(c, "beta", allow_none=True)
        if c.warmup_epochs is not None:
            _count(c, "warmup_epochs", minimum=0)
        c.dataset = check_dataset(c.dataset)
        if c.model not in MODELS:
            raise ConfigError(
                "model", f"unknown model {c.model!r}; expected one of {sorted(MODELS)}"
            )
        if c.norm not in threat_lib.NORMS:
            raise ConfigError(
                "norm", f"unknown norm {c.norm!r}; expected one of {sorted(threat_lib.NORMS)}"
            )
        if c.optimizer not in OPTIMIZERS:
            raise ConfigError("optimizer", f"unknown optimizer {c.optimizer!r}")
        if c.defense not in objectives.REGISTRY:
            raise ConfigError("defense", f"unknown defense {c.defense!r}")
        if c.mi_variant not in MI_VARIANTS:
            raise ConfigError(
                "mi_variant",
                f"unknown variant {c.mi_variant!r}; expected one of {list(MI_VARIANTS)}",
            )
        if c.eps is None:
            c.eps = threat_lib.default_eps(c.norm, c.dataset)
        if c.norm == "linf" and c.eps >= 1:
            raise ConfigError("eps", f"must be < 1 under linf for images in [0, 1]; got {c.eps}")
        if c.model == "wide_resnet" and (c.depth - 4) % 6:
            raise ConfigError("depth", f"wide_resnet depth must be 6n + 4; got {c.depth}")
        if c.epochs is None:
            c.epochs = DEFAULT_EPOCHS.get(c.dataset, 10)
        if c.warmup_epochs is None:
            c.warmup_epochs = max(1, c.epochs // 5)
        if c.warmup_epochs > c.epochs:
            raise ConfigError("warmup_epochs", f"must be <= --epochs ({c.epochs})")
        if c.lr is None:
            c.lr = 1e-3 if c.optimizer == "adam" else 0.01
        if c.step_size is not None and c.norm == "linf" and c.step_size > c.eps * (1 + 1e-6):
            raise ConfigError("step_size", f"must not exceed --eps ({c.eps}) under linf")
        eval_attack = parse_attack(c.eval_attack, c.eps, c.norm)
        objective = None
        kwargs = {} if c.beta is None else {"beta": c.beta}
        if c.defense in MI_DEFENSES:  # built by the NAMID pipeline after stages 1-2
            if c.defense == "wmim" and c.beta is not None:
                raise ConfigError("beta", "the 'wmim' defense takes no beta")
            for name in ("augment", "backup_dir"):
                if getattr(c, name):
                    raise ConfigError(
                        name,
                        f"not supported by the {c.defense!r} pipeline yet (it trains on "
                        "arrays and resumes stage by stage from --stages-dir)",
                    )
        else:
            try:
                objective = objectives.get(c.defense, **kwargs)
            except TypeError:
                raise ConfigError("beta", f"the {c.defense!r} defense takes no beta") from None
            except ValueError as e:
                raise ConfigError(
                    "defense", f"{c.defense!r} cannot be built from these settings alone: {e}"
                ) from None
        from robustkit.app.strategy import strategy_problem

        problem = strategy_problem(c, c.defense in MI_DEFENSES)
        if problem:
            raise ConfigError(*problem)
        out = c.out if c.out is not None else default_out(c.dataset, c.model, c.defense, c.norm)
        check_out(out)
        return TrainPlan(config=c, objective=objective, eval_attack=eval_attack, out=out)


def mi_settings(c, train_attack):
    """What the NAMID pipeline runs for a resolved config of an MI defense, as a dict:
    ``estimator_attack`` and ``stage3_attack`` (the attacks of stages 2 and 3; stage 1
    trains with ``train_attack``), ``estimator_kwargs``, ``objective_kwargs`` and
    ``record`` (the choices as written into ``robustkit.json``).

    ``mi_variant="release"``: the released code's stage 2 (its objective and per-location
    DV, examples from L2 PGD-20 at the L2 radius: ``--eps`` under ``--norm l2``, else the
    data set's) and stage 3 (``lam = 0``, PGD-40 from ``x + 0.001 N(0, 1)``, step 0.007 at
    eps 8/255). ``"paper"``: the paper's stage-2 difference objective, pooled DV,
    ``lam = 0.1`` and the stage-1 attack in every stage.

    Example:

    >>> plan = TrainConfig(defense="namid").resolve()
    >>> mi_settings(plan.config, None)["record"]["stage3_attack"]
    'PGD-40 (linf, eps=0.1, step=0.02231)'
    """
    from robustkit.namid import release_attack

    release = c.mi_variant == "release"
    estimator_kwargs = {"features": c.estimator_features, "dv": "release" if release else "pooled"}
    objective_kwargs = {} if c.beta is None else {"beta": c.beta}
    if c.defense != "wmim":
        estimator_kwargs["objective"] = "release" if release else "paper"
        objective_kwargs["lam"] = 0.0 if release else 0.1
    estimator_attack = stage3_attack = train_attack
    if release:
        l2_eps = c.eps if c.norm == "l2" else threat_lib.default_eps("l2", c.dataset)
        estimator_attack = release_attack(l2_eps, 20, "l2")
        stage3_attack = release_attack(c.eps, 40, c.norm)
    record = {
        "mi_variant": c.mi_variant,
        "estimator_objective": estimator_kwargs.get("objective", "dv"),
        "estimator_dv": estimator_kwargs["dv"],
        "estimator_attack": attack_label(estimator_attack),
        "stage3_attack": attack_label(stage3_attack),
    }
    return {
        "estimator_attack": estimator_attack,
        "stage3_attack": stage3_attack,
        "estimator_kwargs": estimator_kwargs,
        "objective_kwargs": objective_kwargs,
        "record": record,
    }


@dataclass
class TrainPlan:
    """A resolved :class:`TrainConfig`: the filled settings and the objects they name."""

    config: TrainConfig
    objective: object
    eval_attack: object
    out: str


def _positive(c, name, allow_none=False):
    value = getattr(c, name)
    if value is None and allow_none:
        return
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(name, f"must be a number > 0; got {value!r}") from None
    if not (v > 0 and v < float("inf")):
        raise ConfigError(name, f"must be > 0; got {value!r}")
    setattr(c, name, v)


def _count(c, name, minimum=1, allow_none=False):
    value = getattr(c, name)
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(name, f"must be an integer >= {minimum}; got {value!r}")


__all__ = [
    "DEFAULT_EPOCHS",
    "MI_DEFENSES",
    "MI_VARIANTS",
    "MODELS",
    "ConfigError",
    "TrainConfig",
    "TrainPlan",
    "attack_label",
    "check_dataset",
    "check_schedule",
    "learning_rate",
    "check_out",
    "default_out",
    "flag",
    "mi_settings",
    "parse_attack",
]
