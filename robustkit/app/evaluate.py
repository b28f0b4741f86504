"""``evaluate_export``: reload a model and measure it again, on its own test data.

``PATH`` is a robustkit export (a SavedModel folder with ``robustkit.json``: data set, norm
and eps default to the recorded ones), or a plain SavedModel folder or ``.keras`` file when
``dataset``, ``norm`` and ``eps`` are given. ``attack`` is a spec from :data:`ATTACK_SPECS`
(AutoAttack and its components, CW, DDN, PGD-N, FGSM) or an attack object; a named suite
runs :func:`robustkit.evaluate` instead (:func:`evaluate_suite`). :func:`update_export`
appends what was measured to ``robustkit.json`` and rewrites ``MODEL_CARD.md``.

Example:

>>> from robustkit.app.evaluate import parse_eval_attack
>>> label, attack = parse_eval_attack("apgd-t", eps=8 / 255, norm="linf")
>>> label, attack.n_target_classes, attack.steps
('APGD-T', 9, 100)
>>> parse_eval_attack("cw", eps=0.5, norm="l2")[0]
'CW'
"""

import dataclasses
import os
from dataclasses import dataclass, field

from robustkit.app.config import ConfigError, check_dataset, parse_attack
from robustkit.export.record import METADATA_FILE, Check, ExportRecord, Measurement

#: ``--attack`` names besides ``pgdN`` and ``fgsm``: AutoAttack standard / rand, its four
#: components with AutoAttack's standard settings, and the L2 minimal-norm attacks of the
#: paper's L2 columns (held to eps: a larger perturbation does not count)
ATTACK_SPECS = ("aa", "aa-rand", "apgd-ce", "apgd-t", "fab-t", "square", "cw", "ddn")
#: attacks defined for L2 only
L2_ONLY = ("cw", "ddn")


def parse_eval_attack(spec, eps, norm, batch_size=500, seed=0, field="attack"):
    """``(column label, attack)`` for an ``--attack`` spec (see :data:`ATTACK_SPECS`).

    Bad specs, and norms an attack does not support, raise :class:`ConfigError` naming
    ``field``; ``pgdN``/``fgsm`` go to :func:`robustkit.app.config.parse_attack`.
    """
    from robustkit import attacks
    from robustkit.evaluation.suites import FACTORIES, attack_name

    text = str(spec).strip().lower()
    common = {"batch_size": batch_size, "seed": seed}
    if text in L2_ONLY and norm != "l2":
        raise ConfigError(field, f"{text} is an L2 attack; the threat model is {norm}")
    builders = {
        "aa": ("AA", lambda: FACTORIES["AA"](eps, norm, **common)),
        "aa-rand": ("AA-rand", lambda: attacks.AutoAttack(eps, norm, version="rand", **common)),
        "apgd-ce": ("APGD-CE", lambda: attacks.APGD(eps, norm, steps=100, loss="ce", **common)),
        "apgd-t": ("APGD-T", lambda: attacks.APGDT(eps, norm, steps=100, **common)),
        "fab-t": ("FAB-T", lambda: attacks.FAB(eps, norm, steps=100, targeted=True, **common)),
        "square": ("Square", lambda: attacks.Square(eps, norm, n_queries=5000, **common)),
        "cw": ("CW", lambda: FACTORIES["CW"](eps, norm, **common)),
        "ddn": ("DDN", lambda: FACTORIES["DDN"](eps, norm, **common)),
    }
    if text in builders:
        label, build = builders[text]
        try:
            return label, build()
        except ValueError as e:
            raise ConfigError("norm", f"{label}: {e}") from None
    try:
        attack = parse_attack(spec, eps, norm, field=field)
    except ConfigError:
        raise ConfigError(
            field, f"unknown attack {spec!r}; expected pgdN (e.g. pgd40), fgsm or one of "
            f"{', '.join(ATTACK_SPECS)}"
        ) from None  # fmt: skip
    return attack_name(attack), attack


def measurement_label(label, attack, norm=None, eps=None):
    """``"PGD-40 (linf, eps=0.1, step=0.025)"``: the column label with its threat model."""
    from robustkit.evaluation.suites import threat_of

    a_norm, a_eps = threat_of(attack)
    a_norm, a_eps = a_norm or norm, a_eps if a_eps is not None else eps
    parts = [a_norm or "Wasserstein"]
    if a_eps is not None:
        parts.append(f"eps={float(a_eps):.4g}")
    step = getattr(attack, "step_size", None)
    if isinstance(step, (int, float)):
        parts.append(f"step={step:.4g}")
    return f"{label} ({', '.join(parts)})"


@dataclass
class Evaluation:
    """What :func:`evaluate_export` measured, and on what.

    ``record`` is ``None`` for a plain SavedModel or ``.keras`` file (``kind`` says which);
    ``measurement`` is the last of ``measurements``.
    """

    record: ExportRecord
    model: object
    x: object
    y: object
    dataset: str
    norm: str
    eps: float
    attack: object
    measurement: Measurement = None
    kind: str = "export"
    label: str = None
    measurements: list = field(default_factory=list)
    checks: list = field(default_factory=list)
    report: object = None


def resolve_export(path, dataset=None, norm=None, eps=None):
    """Reads ``path``'s record and settles data set, norm and eps (``ConfigError`` naming
    ``PATH``, ``--dataset``, ``--norm`` or ``--eps``)."""
    from robustkit import threat as threat_lib
    from robustkit.export import read_record

    try:
        record = read_record(path)
    except ValueError as e:
        raise ConfigError("PATH", str(e).replace("`path` ", "")) from None
    dataset = dataset or record.dataset
    if dataset is None:
        raise ConfigError("dataset", "the export does not record its data set; pass --dataset")
    dataset = check_dataset(dataset)
    threat = record.threat
    norm = norm or (threat.norm if threat is not None else None)
    eps = eps or (threat.eps if threat is not None else None)
    if norm is None or eps is None:
        raise ConfigError(
            "eps", "the export does not record its threat model; pass --norm and --eps"
        )
    if norm not in threat_lib.NORMS:
        raise ConfigError("norm", f"unknown norm {norm!r}")
    return record, dataset, norm, float(eps)


def model_kind(path):
    """``"export"``, ``"savedmodel"`` (no ``robustkit.json``), ``"keras"`` or ``None``."""
    from robustkit.export.savedmodel import resolve_path

    path = os.fspath(path)
    if os.path.isfile(path) and path.endswith(".keras"):
        return "keras"
    if not os.path.isdir(path):
        return None
    if os.path.isfile(os.path.join(resolve_path(path), METADATA_FILE)):
        return "export"
    return "savedmodel" if os.path.isfile(os.path.join(path, "saved_model.pb")) else None


def resolve_target(path, dataset=None, norm=None, eps=None):
    """``(record or None, kind, dataset, norm, eps)`` for an export, or a plain SavedModel
    / ``.keras`` file given ``dataset``, ``norm`` and ``eps`` (else ``ConfigError`` naming
    ``PATH`` and the missing flags)."""
    from robustkit import threat as threat_lib

    kind = model_kind(path)
    if kind in (None, "export"):
        record, dataset, norm, eps = resolve_export(path, dataset, norm, eps)
        return record, "export", dataset, norm, eps
    missing = [f"--{k}" for k, v in (("norm", norm), ("eps", eps), ("dataset", dataset)) if not v]
    if missing:
        what = (
            "a .keras file" if kind == "keras" else "not a robustkit SavedModel (no robustkit.json)"
        )
        raise ConfigError(
            "PATH", f"{path} is {what}; to evaluate a plain SavedModel or .keras file pass "
            f"--norm, --eps and --dataset (missing: {', '.join(missing)})"
        )  # fmt: skip
    if norm not in threat_lib.NORMS:
        raise ConfigError("norm", f"unknown norm {norm!r}")
    return None, kind, check_dataset(dataset), norm, float(eps)


def load_model(path, kind):
    """The model at ``path``: a reloaded SavedModel, or the Keras model of a ``.keras``
    file (a ``RobustModel``'s ``base_model``); refuses a model that ends in a softmax."""
    import keras
    import tensorflow as tf

    from robustkit.export import load_exported
    from robustkit.models.adapter import base_of
    from robustkit.models.contract import check_logits

    if kind == "export":
        return load_exported(path)[0]
    if kind == "savedmodel":
        return tf.saved_model.load(path)
    try:
        model = base_of(keras.models.load_model(path, compile=False))
        check_logits(model, argname="model")
    except ValueError as e:
        raise ConfigError("PATH", f"{path}: {e}") from None
    return model


def _threat_for(spec, dataset, norm, eps, explicit_norm, explicit_eps, shape):
    """The attack's (norm, eps): an L2-only attack on an L-inf model uses ``--eps`` or the
    data set's customary L2 radius."""
    from robustkit import threat as threat_lib

    if not isinstance(spec, str) or spec.strip().lower() not in L2_ONLY or norm == "l2":
        return norm, eps
    if explicit_norm:
        raise ConfigError("attack", f"{spec} is an L2 attack; pass --norm l2 or leave --norm out")
    return "l2", float(explicit_eps) if explicit_eps else threat_lib.default_eps(
        "l2", dataset, shape
    )


def measure_one(model, x, y, label, attack, norm, eps, batch_size=500, verbose=0, split="test"):
    """A :class:`~robustkit.export.Measurement` of ``model`` under one attack (the one
    evaluator, :func:`robustkit.evaluation.measure`, with progress bars when ``verbose``)."""
    from robustkit.evaluation import measure
    from robustkit.evaluation.suites import threat_of

    found = measure(model, (x, y), {label: attack}, batch_size=batch_size, eps=eps, norm=norm,
                    verbose=verbose)  # fmt: skip
    a_norm, a_eps = threat_of(attack)
    config = attack.get_config() if hasattr(attack, "get_config") else {}
    return Measurement(
        attack=measurement_label(label, attack, norm, eps),
        clean_accuracy=found.clean_accuracy,
        robust_accuracy=found.robust_accuracy,
        n_examples=found.n,
        outside_ball=found.outside_ball,
        split=split,
        config={**config, "norm": a_norm or norm, "eps": a_eps if a_eps is not None else eps},
    )


def evaluate_export(path, attack="pgd40", dataset=None, data_dir=None, download=False, norm=None,
                    eps=None, n=None, seed=0, measure_now=True, batch_size=500,
                    verbose=0):  # fmt: skip
    """Reloads the model at ``path`` and measures it under ``attack`` on the test split.

    ``attack`` is a spec (``"pgd40"``, ``"fgsm"``, ``"aa"``, ``"cw"``, ... see
    :data:`ATTACK_SPECS`) or an attack object; data set, norm and eps default to those in
    ``robustkit.json`` (a plain model needs all three). An L2-only attack (CW, DDN) on an
    L-inf export runs at ``eps`` or the data set's L2 radius. Returns an :class:`Evaluation`
    whose ``measurement`` comes from :func:`robustkit.evaluation.measure` (skip it with
    ``measure_now=False`` to run a suite on the loaded model and data instead).
    """
    from robustkit.app.train import load_split

    record, kind, dataset, t_norm, t_eps = resolve_target(path, dataset, norm, eps)
    shape = record.input_shape if record is not None else None
    a_norm, a_eps = _threat_for(attack, dataset, t_norm, t_eps, norm, eps, shape)
    if isinstance(attack, str):
        label, attack_obj = parse_eval_attack(attack, a_eps, a_norm, batch_size, seed)
    else:
        from robustkit.evaluation.suites import attack_name

        label, attack_obj = attack_name(attack), attack
    x, y = load_split(dataset, "test", data_dir, download, n, seed)
    if record is not None and list(x.shape[1:]) != list(record.input_shape):
        raise ConfigError(
            "dataset",
            f"{dataset} images are {list(x.shape[1:])} but the model takes {record.input_shape}",
        )
    model = load_model(path, kind)
    if kind == "keras" and list(model.input_shape[1:]) != list(x.shape[1:]):
        raise ConfigError(
            "dataset", f"{dataset} images are {list(x.shape[1:])} but the model takes "
            f"{list(model.input_shape[1:])}"
        )  # fmt: skip
    out = Evaluation(record, model, x, y, dataset, a_norm, a_eps, attack_obj, kind=kind,
                     label=label)  # fmt: skip
    if measure_now:
        out.measurement = measure_one(model, x, y, label, attack_obj, a_norm, a_eps,
                                      batch_size, verbose)  # fmt: skip
        out.measurements = [out.measurement]
    return out


def evaluate_suite(ev, suite, eps, norm, surrogate=None, checks=True, seed=0, name=None,
                   batch_size=500, verbose=0):  # fmt: skip
    """Runs :func:`robustkit.evaluate` on ``ev``'s model and data under ``suite`` and fills
    ``ev.report``, ``ev.measurements`` (one per attack) and ``ev.checks``."""
    from robustkit.evaluation import evaluate
    from robustkit.evaluation.suites import FACTORIES, SUITES

    run_suite = suite
    if suite == "aa" and norm != "linf":  # the AA suite in the export's own threat model
        run_suite = {"AA": FACTORIES["AA"](eps, norm, batch_size=batch_size, seed=seed)}
    report = evaluate(ev.model, (ev.x, ev.y), suite=run_suite, eps=eps, surrogate=surrogate,
                      checks=checks, seed=seed, name=name, dataset=ev.dataset,
                      batch_size=batch_size, verbose=verbose)  # fmt: skip
    if isinstance(suite, str) and suite in SUITES:
        report.suite = suite
    ev.report = report
    ev.measurements = measurements_of(report)
    ev.checks = checks_of(report)
    ev.measurement = ev.measurements[-1] if ev.measurements else None
    return ev


def measurements_of(report):
    """One :class:`~robustkit.export.Measurement` per attack of a suite report."""
    out = []
    for a in report.attacks:
        black_box = " transfer" if a.black_box else ""
        if a.name.startswith("FWA"):
            threat = f"Wasserstein, eps={report.eps:.4g}"
        else:
            threat = f"{report.norm}, eps={report.eps:.4g}"
        out.append(
            Measurement(
                attack=f"{a.name} ({threat}{black_box})",
                clean_accuracy=report.clean_accuracy,
                robust_accuracy=a.accuracy,
                n_examples=report.n,
                date=report.created,
                outside_ball=a.outside_ball,
                suite=report.suite,
                config={
                    "norm": None if a.name.startswith("FWA") else report.norm,
                    "eps": report.eps,
                    "black_box": bool(a.black_box or report.black_box),
                    "attack": a.config,
                },
            )
        )
    return out


def checks_of(report):
    """The report's gradient-masking checks as :class:`~robustkit.export.Check` records."""
    return [
        Check(
            name=c.name,
            flagged=c.flagged,
            detail=c.message,
            suite=report.suite,
            date=report.created,
        )  # fmt: skip
        for c in report.checks or []
    ]


def update_export(path, measurements, checks=()):
    """Appends ``measurements`` to the export's ``robustkit.json`` and replaces the checks
    of the same suite by ``checks`` (both rewrite ``MODEL_CARD.md``); returns the record."""
    from robustkit.export import read_record, write_record

    record = read_record(path)
    suites = {c.suite for c in checks}
    kept = tuple(c for c in record.checks if not suites or c.suite not in suites)
    record = dataclasses.replace(
        record,
        measurements=(*record.measurements, *measurements),
        checks=(*kept, *checks),
    )
    write_record(path, record)
    return record


__all__ = [
    "ATTACK_SPECS",
    "Evaluation",
    "L2_ONLY",
    "checks_of",
    "evaluate_export",
    "evaluate_suite",
    "load_model",
    "measure_one",
    "measurement_label",
    "measurements_of",
    "model_kind",
    "parse_eval_attack",
    "resolve_export",
    "resolve_target",
    "update_export",
]
