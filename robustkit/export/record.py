"""The export record (``robustkit.json``): a typed, versioned description of a hardened model.

Writers build an :class:`ExportRecord`; readers use its attributes. ``to_json`` writes
``format_version`` 2; ``from_json`` reads versions 1 and 2. Changing what ``robustkit.json``
holds means changing this module (and bumping :data:`FORMAT_VERSION` with a migration).

Example:

>>> rec = ExportRecord(input_shape=[8, 8, 1], num_classes=10,
...                    data=DataRecord(name="digits"), threat=ThreatRecord("linf", 0.1))
>>> rec = rec.with_measurement(Measurement("PGD-40", clean_accuracy=0.98, robust_accuracy=0.85,
...                                        n_examples=359))
>>> again = ExportRecord.from_json(rec.to_json())
>>> again.data.name, again.threat.eps, again.robust_accuracy, again.format_version
('digits', 0.1, 0.85, 2)
"""

import dataclasses
import datetime
import json
import math
from dataclasses import dataclass, field

import numpy as np

FORMAT = "robustkit.savedmodel"
FORMAT_VERSION = 2
METADATA_FILE = "robustkit.json"
ENDPOINTS = ("serve", "serving_default")  # plus "serve_uint8" when asked for


def now():
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


def to_jsonable(value):
    """Plain JSON values for numpy scalars/arrays, tensors, tuples, sets and objects with
    ``get_config`` (as ``{"class_name", "config"}``)."""
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if hasattr(value, "numpy") and callable(value.numpy):
        return np.asarray(value).tolist()
    if hasattr(value, "get_config") and not isinstance(value, type):
        return {"class_name": type(value).__name__, "config": to_jsonable(value.get_config())}
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    raise ValueError(f"{type(value).__name__} is not JSON serializable")


def _fraction(value, name):
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"`{name}` must be a number in [0, 1]; got {value!r}.") from None
    if not (math.isfinite(v) and 0.0 <= v <= 1.0):
        raise ValueError(f"`{name}` must be a fraction in [0, 1]; got {value!r}.")
    return v


@dataclass(frozen=True)
class ThreatRecord:
    """The threat model the model was hardened (and is measured) against."""

    norm: str
    eps: float
    bounds: tuple = (0.0, 1.0)

    def __post_init__(self):
        if not isinstance(self.norm, str) or not self.norm:
            raise ValueError(f"`threat.norm` must be a norm name; got {self.norm!r}.")
        try:
            eps = float(self.eps)
        except (TypeError, ValueError):
            raise ValueError(f"`threat.eps` must be a number; got {self.eps!r}.") from None
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "bounds", tuple(float(b) for b in self.bounds))

    def to_dict(self):
        out = {"norm": self.norm, "eps": self.eps}
        if self.bounds != (0.0, 1.0):
            out["bounds"] = list(self.bounds)
        return out


@dataclass(frozen=True)
class DataRecord:
    """The data set: its name, where it came from, and the split sizes used."""

    name: str = None
    source: str = None
    train_examples: int = None
    val_examples: int = None
    test_examples: int = None


@dataclass(frozen=True)
class TrainingRecord:
    """How the model was trained: defense, its hyperparameters, the training attack."""

    defense: str = None
    hyperparameters: dict = field(default_factory=dict)
    attack: dict = None
    seconds: float = None


@dataclass(frozen=True)
class Measurement:
    """One measured robustness figure: what attack, on how many examples, when, by whom.

    ``robust_accuracy`` counts an example robust when it is classified correctly clean and
    the attack's output is still classified correctly or lies outside the attack's ball
    (``outside_ball`` counts those); see :func:`robustkit.evaluation.measure`.
    """

    attack: str
    clean_accuracy: float
    robust_accuracy: float
    n_examples: int
    date: str = field(default_factory=now)
    evaluator: str = "robustkit.evaluation.measure"
    outside_ball: int = 0
    split: str = "test"
    suite: str = None
    config: dict = None

    def __post_init__(self):
        object.__setattr__(self, "clean_accuracy", _fraction(self.clean_accuracy, "clean_accuracy"))
        object.__setattr__(
            self, "robust_accuracy", _fraction(self.robust_accuracy, "robust_accuracy")
        )
        if self.n_examples is not None:
            object.__setattr__(self, "n_examples", int(self.n_examples))


@dataclass(frozen=True)
class Check:
    """A gradient-masking check's verdict: ``flagged`` is ``True`` (suspicious), ``False``
    (passed) or ``None`` (skipped; ``detail`` says why); ``suite`` and ``date`` say which
    evaluation ran it."""

    name: str
    flagged: bool
    detail: str = ""
    suite: str = None
    date: str = None

    @property
    def verdict(self):
        """``"flagged"``, ``"passed"`` or ``"skipped"``."""
        return "skipped" if self.flagged is None else ("flagged" if self.flagged else "passed")


@dataclass(frozen=True)
class ExportRecord:
    """Everything ``robustkit.json`` says about an exported model."""

    input_shape: list
    num_classes: int = None
    input_dtype: str = "float32"
    data: DataRecord = field(default_factory=DataRecord)
    threat: ThreatRecord = None
    training: TrainingRecord = field(default_factory=TrainingRecord)
    measurements: tuple = ()
    checks: tuple = ()
    endpoints: tuple = ENDPOINTS
    versions: dict = field(default_factory=dict)
    date: str = field(default_factory=now)
    extra: dict = field(default_factory=dict)
    format: str = FORMAT
    format_version: int = FORMAT_VERSION

    def __post_init__(self):
        object.__setattr__(self, "input_shape", [int(d) for d in self.input_shape])
        object.__setattr__(self, "measurements", tuple(self.measurements))
        object.__setattr__(self, "checks", tuple(self.checks))
        object.__setattr__(self, "endpoints", tuple(self.endpoints))
        try:
            json.dumps(to_jsonable(self.extra))
            json.dumps(to_jsonable(self.training.hyperparameters))
        except (TypeError, ValueError) as e:
            raise ValueError(f"`metadata` must be JSON serializable: {e}.") from None

    # ------------------------------------------------------------ derived
    @property
    def dataset(self):
        """The data set's name."""
        return self.data.name

    @property
    def headline(self):
        """The measurement with the lowest robust accuracy (``None`` when there is none)."""
        if not self.measurements:
            return None
        return min(self.measurements, key=lambda m: m.robust_accuracy)

    @property
    def clean_accuracy(self):
        return None if self.headline is None else self.headline.clean_accuracy

    @property
    def robust_accuracy(self):
        return None if self.headline is None else self.headline.robust_accuracy

    @property
    def bounds(self):
        return (0.0, 1.0) if self.threat is None else self.threat.bounds

    def with_measurement(self, measurement):
        """A copy with ``measurement`` appended."""
        return dataclasses.replace(self, measurements=(*self.measurements, measurement))

    def replace(self, **changes):
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    # --------------------------------------------------------------- JSON
    def to_dict(self):
        return to_jsonable(
            {
                "format": self.format,
                "format_version": FORMAT_VERSION,
                "model": {
                    "input_shape": self.input_shape,
                    "input_dtype": self.input_dtype,
                    "bounds": list(self.bounds),
                    "num_classes": self.num_classes,
                    "endpoints": list(self.endpoints),
                },
                "data": dataclasses.asdict(self.data),
                "threat": None if self.threat is None else self.threat.to_dict(),
                "training": dataclasses.asdict(self.training),
                "measurements": [dataclasses.asdict(m) for m in self.measurements],
                "checks": [dataclasses.asdict(c) for c in self.checks],
                "versions": self.versions,
                "date": self.date,
                "extra": self.extra,
            }
        )

    def to_json(self, indent=2):
        return json.dumps(self.to_dict(), indent=indent, sort_keys=True) + "\n"

    @classmethod
    def from_dict(cls, d):
        """Reads a ``robustkit.json`` dictionary of format version 1 or 2."""
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise ValueError("not a robustkit export record (unknown format).")
        version = d.get("format_version", 1)
        if version == 1:
            return _from_v1(d)
        if version != 2:
            raise ValueError(
                f"robustkit.json format_version {version} is newer than this robustkit reads "
                f"({FORMAT_VERSION}); upgrade robustkit."
            )
        model = d.get("model") or {}
        threat = d.get("threat")
        bounds = model.get("bounds") or (0.0, 1.0)
        return cls(
            input_shape=model.get("input_shape") or [],
            num_classes=model.get("num_classes"),
            input_dtype=model.get("input_dtype", "float32"),
            data=DataRecord(**(d.get("data") or {})),
            threat=None if threat is None else ThreatRecord(**{"bounds": bounds, **threat}),
            training=TrainingRecord(**(d.get("training") or {})),
            measurements=[Measurement(**m) for m in d.get("measurements") or []],
            checks=[Check(**c) for c in d.get("checks") or []],
            endpoints=model.get("endpoints") or ENDPOINTS,
            versions=d.get("versions") or {},
            date=d.get("date"),
            extra=d.get("extra") or {},
        )

    @classmethod
    def from_json(cls, text):
        return cls.from_dict(json.loads(text))


#: the version-1 keys and where they went
_V1_KEYS = (
    "format", "format_version", "dataset", "input_shape", "input_dtype", "input_range",
    "num_classes", "endpoints", "threat_model", "defense", "hyperparameters",
    "training_attack", "clean_accuracy", "robust_accuracy", "attack", "n_examples",
    "robustkit_version", "tensorflow_version", "keras_version", "date",
)  # fmt: skip


def _from_v1(d):
    threat = d.get("threat_model")
    measurements = []
    if d.get("clean_accuracy") is not None and d.get("robust_accuracy") is not None:
        measurements.append(
            Measurement(
                attack=d.get("attack") or "unknown",
                clean_accuracy=d["clean_accuracy"],
                robust_accuracy=d["robust_accuracy"],
                n_examples=d.get("n_examples"),
                date=d.get("date"),
                evaluator="robustkit 0.1 (no eps-ball check)",
            )
        )
    versions = {
        k: d[f"{k}_version"] for k in ("robustkit", "tensorflow", "keras") if d.get(f"{k}_version")
    }
    return ExportRecord(
        input_shape=d.get("input_shape") or [],
        num_classes=d.get("num_classes"),
        input_dtype=d.get("input_dtype", "float32"),
        data=DataRecord(name=d.get("dataset")),
        threat=None if not threat else ThreatRecord(threat["norm"], threat["eps"]),
        training=TrainingRecord(
            defense=d.get("defense"),
            hyperparameters=d.get("hyperparameters") or {},
            attack=d.get("training_attack"),
            seconds=d.get("train_seconds"),
        ),
        measurements=measurements,
        endpoints=d.get("endpoints") or ENDPOINTS,
        versions=versions,
        date=d.get("date"),
        extra={k: v for k, v in d.items() if k not in _V1_KEYS and k != "train_seconds"},
    )


def from_metadata(metadata, base):
    """``base`` (an :class:`ExportRecord`) updated from a flat ``metadata`` dict.

    The convenience keys are ``dataset``, ``threat_model`` (``{"norm", "eps"}``), ``defense``,
    ``hyperparameters``, ``clean_accuracy``/``robust_accuracy`` (fractions) with ``attack``
    and ``n_examples``; any other JSON-serialisable key is kept in ``extra``.
    """
    if metadata is None:
        return base
    if not isinstance(metadata, dict):
        raise ValueError(f"`metadata` must be a dict; got {type(metadata).__name__}.")
    md = dict(metadata)
    try:
        json.dumps(to_jsonable(md))
    except (TypeError, ValueError) as e:
        raise ValueError(f"`metadata` must be JSON serializable: {e}.") from None
    changes = {}
    if "dataset" in md:
        changes["data"] = dataclasses.replace(base.data, name=md.pop("dataset"))
    if "threat_model" in md:
        threat = md.pop("threat_model")
        if threat is not None and (
            not isinstance(threat, dict) or not {"norm", "eps"} <= set(threat)
        ):
            raise ValueError(
                f"`metadata['threat_model']` must be a dict with 'norm' and 'eps'; got {threat!r}."
            )
        changes["threat"] = None if threat is None else ThreatRecord(**threat)
    training = {}
    for key, name in (("defense", "defense"), ("hyperparameters", "hyperparameters"),
                      ("training_attack", "attack"), ("train_seconds", "seconds")):  # fmt: skip
        if key in md:
            training[name] = md.pop(key)
    if training:
        changes["training"] = dataclasses.replace(base.training, **training)
    clean, robust = md.pop("clean_accuracy", None), md.pop("robust_accuracy", None)
    attack, n = md.pop("attack", None), md.pop("n_examples", None)
    if clean is not None or robust is not None:
        for key, value in (("clean_accuracy", clean), ("robust_accuracy", robust)):
            if value is None:
                raise ValueError(f"`metadata['{key}']` is required with the other accuracy.")
            try:
                _fraction(value, f"metadata['{key}']")
            except ValueError as e:
                raise ValueError(str(e).replace("`metadata['", "`metadata['")) from None
        changes["measurements"] = (
            *base.measurements,
            Measurement(str(attack or "unknown"), clean, robust, n),
        )
    if md:
        changes["extra"] = {**base.extra, **to_jsonable(md)}
    return dataclasses.replace(base, **changes)


__all__ = [
    "ENDPOINTS",
    "FORMAT",
    "FORMAT_VERSION",
    "METADATA_FILE",
    "Check",
    "DataRecord",
    "ExportRecord",
    "Measurement",
    "ThreatRecord",
    "TrainingRecord",
    "from_metadata",
    "to_jsonable",
]
