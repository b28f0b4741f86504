"""``evaluate_export``: reload an export and measure it again, on its own test data.

Example:

>>> from robustkit.app import evaluate_export
>>> out = evaluate_export("saved_models/digits_at_linf", attack="pgd40")   # doctest: +SKIP
>>> out.measurement.robust_accuracy <= out.measurement.clean_accuracy      # doctest: +SKIP
True
"""

from dataclasses import dataclass

from robustkit.app.config import ConfigError, check_dataset, parse_attack
from robustkit.export.record import ExportRecord, Measurement


@dataclass
class Evaluation:
    """What :func:`evaluate_export` measured, and on what."""

    record: ExportRecord
    model: object
    x: object
    y: object
    dataset: str
    norm: str
    eps: float
    attack: object
    measurement: Measurement = None


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


def evaluate_export(path, attack="pgd40", dataset=None, data_dir=None, download=False, norm=None,
                    eps=None, n=None, seed=0, measure_now=True):  # fmt: skip
    """Reloads the export at ``path`` and measures it under ``attack`` on the test split.

    ``attack`` is a spec (``"pgd40"``, ``"fgsm"``) or an attack object; data set, norm and
    eps default to those in ``robustkit.json``. Returns an :class:`Evaluation` whose
    ``measurement`` comes from :func:`robustkit.evaluation.measure` (skip it with
    ``measure_now=False`` to run a suite on the loaded model and data instead).
    """
    from robustkit.app.train import load_split, measure
    from robustkit.export import load_exported

    record, dataset, norm, eps = resolve_export(path, dataset, norm, eps)
    attack_obj = (
        parse_attack(attack, eps, norm, field="attack") if isinstance(attack, str) else attack
    )
    x, y = load_split(dataset, "test", data_dir, download, n, seed)
    if list(x.shape[1:]) != list(record.input_shape):
        raise ConfigError(
            "dataset",
            f"{dataset} images are {list(x.shape[1:])} but the model takes {record.input_shape}",
        )
    loaded, _ = load_exported(path)
    out = Evaluation(record, loaded, x, y, dataset, norm, eps, attack_obj)
    if measure_now:
        out.measurement = measure(loaded, x, y, attack_obj)
    return out
