"""Export a hardened classifier as a TensorFlow SavedModel with a metadata record.

The SavedModel has two endpoints, ``serve`` and ``serving_default``, both
``float32 NHWC images in [0, 1] -> float32 logits``, computed in inference mode
(BatchNorm frozen). The reloaded object is differentiable, so it can itself be
attacked (``rk.attacks.PGD(...)(loaded, x, y)`` uses its ``serve`` endpoint).
Beside it, ``robustkit.json`` records what the model is and how robust it
measured: data set, input shape, threat model, defence and hyperparameters,
clean and robust accuracy with the attack and number of examples behind them,
library versions and the date.

Example:

>>> import os, tempfile, numpy as np, robustkit as rk
>>> from robustkit.export import export, load_exported
>>> model = rk.models.small_cnn((8, 8, 1), width=4, dense=8)
>>> path = os.path.join(tempfile.mkdtemp(), "digits_cnn")
>>> _ = export(model, path, metadata={"dataset": "digits"})
>>> loaded, meta = load_exported(path)
>>> meta["input_shape"], meta["dataset"]
([8, 8, 1], 'digits')
>>> loaded.serve(np.zeros((2, 8, 8, 1), "float32")).shape
TensorShape([2, 10])
"""

import datetime
import json
import math
import os
import shutil
import tempfile

import keras
import numpy as np
import tensorflow as tf

METADATA_FILE = "robustkit.json"
FORMAT = "robustkit.savedmodel"
FORMAT_VERSION = 1
ENDPOINT = "serve"

#: keys every ``robustkit.json`` has (``None`` where the caller gave nothing)
STANDARD_KEYS = (
    "dataset",
    "input_shape",
    "num_classes",
    "threat_model",
    "defense",
    "hyperparameters",
    "training_attack",
    "clean_accuracy",
    "robust_accuracy",
    "attack",
    "n_examples",
)
#: keys written by ``export`` itself; a caller's values for them are ignored
_OWN_KEYS = (
    "format",
    "format_version",
    "robustkit_version",
    "tensorflow_version",
    "keras_version",
    "date",
    "input_shape",
    "input_dtype",
    "input_range",
    "endpoints",
    "num_classes",
)


def _to_json(value):
    """``json.dumps`` default: numpy scalars/arrays, objects with ``get_config``."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, (tf.Variable, tf.Tensor)) or (
        hasattr(value, "numpy") and callable(value.numpy)
    ):
        return np.asarray(value).tolist()
    if hasattr(value, "get_config"):
        return {"class_name": type(value).__name__, "config": value.get_config()}
    if isinstance(value, (set, tuple)):
        return list(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def _base_model(model):
    """The Keras model to export: a ``RobustModel``'s ``base_model`` or ``model``."""
    base = getattr(model, "base_model", None)
    if isinstance(base, keras.Model):
        return base
    if isinstance(model, keras.Model):
        return model
    raise ValueError(
        f"`model` must be a keras.Model or a robustkit.RobustModel; got {type(model).__name__}."
    )


def _input_shape(model):
    try:
        inputs = model.inputs
    except (AttributeError, ValueError):
        inputs = None
    if inputs is not None and len(inputs) != 1:
        raise ValueError(f"`model` must take one image input; it takes {len(inputs)}.")
    if not inputs:
        raise ValueError(
            "`model` has no defined input shape; build a functional model or call it once "
            "on a batch of images before exporting."
        )
    shape = tuple(inputs[0].shape)
    if len(shape) != 4 or any(d is None for d in shape[1:]):
        raise ValueError(
            f"`model` must take (batch, H, W, C) images with known H, W, C; got input shape {shape}."
        )
    return [int(d) for d in shape[1:]]


def _from_robust_model(model):
    """Defence, hyperparameters and threat model read off a ``RobustModel``."""
    info = {}
    objective = getattr(model, "objective", None)
    attack = getattr(model, "attack", None)
    if objective is not None and hasattr(objective, "get_config"):
        info["defense"] = getattr(objective, "name", type(objective).__name__)
        info["hyperparameters"] = objective.get_config()
    if attack is not None and hasattr(attack, "get_config"):
        config = dict(attack.get_config())
        # RobustModel runs the attack with the objective's loss and random start
        if objective is not None and getattr(objective, "attack_loss", None):
            config["loss"] = objective.attack_loss
        if objective is not None and getattr(objective, "attack_start", None):
            config["random_start"] = objective.attack_start
        info["training_attack"] = {"class_name": type(attack).__name__, "config": config}
        if "eps" in config and "norm" in config:
            info["threat_model"] = {"norm": config["norm"], "eps": float(config["eps"])}
    return info


def _check_metadata(metadata):
    if metadata is None:
        return {}
    if not isinstance(metadata, dict):
        raise ValueError(f"`metadata` must be a dict; got {type(metadata).__name__}.")
    for key in ("clean_accuracy", "robust_accuracy"):
        value = metadata.get(key)
        if value is None:
            continue
        try:
            v = float(value)
        except (TypeError, ValueError):
            raise ValueError(
                f"`metadata['{key}']` must be a number in [0, 1]; got {value!r}."
            ) from None
        if not (math.isfinite(v) and 0.0 <= v <= 1.0):
            raise ValueError(f"`metadata['{key}']` must be a fraction in [0, 1]; got {value!r}.")
    threat = metadata.get("threat_model")
    if threat is not None and (not isinstance(threat, dict) or not {"norm", "eps"} <= set(threat)):
        raise ValueError(
            f"`metadata['threat_model']` must be a dict with 'norm' and 'eps'; got {threat!r}."
        )
    try:
        json.dumps(metadata, default=_to_json)
    except (TypeError, ValueError) as e:
        raise ValueError(f"`metadata` must be JSON serializable: {e}.") from None
    return dict(metadata)


def build_metadata(model, metadata=None):
    """The ``robustkit.json`` record for ``model`` (a ``RobustModel`` or Keras model).

    Values the caller passes in ``metadata`` override those read off a
    ``RobustModel``; versions, date and input shape are always filled here.

    Example:

    >>> import robustkit as rk
    >>> meta = build_metadata(rk.models.small_cnn((8, 8, 1)), {"dataset": "digits"})
    >>> meta["input_shape"], meta["num_classes"], meta["clean_accuracy"] is None
    ([8, 8, 1], 10, True)
    """
    import robustkit

    metadata = _check_metadata(metadata)
    base = _base_model(model)
    input_shape = _input_shape(base)
    out_shape = tuple(base.outputs[0].shape) if getattr(base, "outputs", None) else None
    if out_shape is not None and len(out_shape) != 2:
        raise ValueError(f"`model` must output logits of shape (batch, classes); got {out_shape}.")
    record = {key: None for key in STANDARD_KEYS}
    record.update(_from_robust_model(model))
    record.update({k: v for k, v in metadata.items() if k not in _OWN_KEYS})
    record.update(
        format=FORMAT,
        format_version=FORMAT_VERSION,
        input_shape=input_shape,
        input_dtype="float32",
        input_range=[0.0, 1.0],
        num_classes=None if out_shape is None else int(out_shape[-1]),
        endpoints=[ENDPOINT, "serving_default"],
        robustkit_version=robustkit.__version__,
        tensorflow_version=tf.__version__,
        keras_version=keras.__version__,
        date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
    )
    return record


def _write_savedmodel(base, folder, input_shape):
    """Writes the SavedModel (``serve`` + ``serving_default``) into ``folder``."""
    archive = keras.export.ExportArchive()
    archive.track(base)

    def serve(images):
        return tf.cast(base(images, training=False), tf.float32)

    archive.add_endpoint(
        name=ENDPOINT,
        fn=serve,
        input_signature=[tf.TensorSpec([None, *input_shape], tf.float32, name="images")],
    )
    archive.write_out(folder, verbose=False)


def _write_metadata(record, folder):
    with open(os.path.join(folder, METADATA_FILE), "w") as f:
        json.dump(record, f, indent=2, sort_keys=True, default=_to_json)
        f.write("\n")


def export(model, path, metadata=None, overwrite=False):
    """Exports ``model`` to ``path`` as a SavedModel plus ``path/robustkit.json``.

    Args:
        model: a ``robustkit.RobustModel`` (its ``base_model`` is exported and
            its objective and training attack are recorded) or any Keras model
            taking one ``(batch, H, W, C)`` input and returning logits.
        path: destination folder (created; its parent too).
        metadata: optional dict merged into ``robustkit.json``; the standard
            keys are ``dataset``, ``threat_model`` (``{"norm", "eps"}``),
            ``defense``, ``hyperparameters``, ``clean_accuracy`` and
            ``robust_accuracy`` (fractions in [0, 1]), ``attack`` and
            ``n_examples`` (what measured them). Any other JSON-serialisable
            keys are kept.
        overwrite: replace an existing ``path`` (default ``False``: a
            ``ValueError``).

    Returns:
        The metadata record that was written (a dict).

    The export is written to a temporary folder beside ``path`` and renamed into
    place, so a failed export leaves nothing at ``path`` (and, with
    ``overwrite=True``, the previous export intact).

    Example:

    >>> import os, tempfile, robustkit as rk
    >>> path = os.path.join(tempfile.mkdtemp(), "m")
    >>> meta = rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), path,
    ...                  metadata={"threat_model": {"norm": "linf", "eps": 0.1}})
    >>> sorted(f for f in os.listdir(path) if not f.endswith(".pb"))
    ['assets', 'robustkit.json', 'variables']
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`path` must be a folder path; got {path!r}.")
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path} already exists; pass overwrite=True to replace it.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`path` {path} exists and is not a folder.")
    record = build_metadata(model, metadata)
    base = _base_model(model)

    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    old = None
    try:
        _write_savedmodel(base, tmp, record["input_shape"])
        _write_metadata(record, tmp)
        if os.path.exists(path):
            old = tempfile.mkdtemp(prefix=f".{name}.old-", dir=parent)
            os.rmdir(old)
            os.rename(path, old)
        os.rename(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None and not os.path.exists(path):
            os.rename(old, path)
            old = None
        raise
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    return record


def read_metadata(path):
    """Reads ``path/robustkit.json``; ``ValueError`` if ``path`` is not a robustkit export."""
    path = os.fspath(path)
    meta_path = os.path.join(path, METADATA_FILE)
    if not os.path.isdir(path) or not os.path.isfile(meta_path):
        raise ValueError(
            f"`path` {path} is not a robustkit SavedModel (no {METADATA_FILE}); "
            "create one with robustkit.export(model, path) or `robustkit train`."
        )
    if not os.path.isfile(os.path.join(path, "saved_model.pb")):
        raise ValueError(f"`path` {path} is not a robustkit SavedModel (no saved_model.pb).")
    try:
        with open(meta_path) as f:
            meta = json.load(f)
    except json.JSONDecodeError as e:
        raise ValueError(f"`path` {path} has a corrupt {METADATA_FILE}: {e}.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise ValueError(f"`path` {path} is not a robustkit SavedModel (unknown format).")
    return meta


def load_exported(path):
    """Reloads an export: ``(saved_model_object, metadata_dict)``.

    The object's ``serve`` endpoint maps images to logits and is
    differentiable; pass the object itself to any robustkit attack.

    Example:

    >>> import os, tempfile, numpy as np, robustkit as rk
    >>> path = os.path.join(tempfile.mkdtemp(), "m")
    >>> _ = rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), path)
    >>> loaded, meta = rk.load(path)
    >>> meta["num_classes"]
    10
    """
    meta = read_metadata(path)
    loaded = tf.saved_model.load(os.fspath(path))
    return loaded, meta


__all__ = ["export", "load_exported", "read_metadata", "build_metadata", "METADATA_FILE"]
