"""Writing and reading the export: a TensorFlow SavedModel plus ``robustkit.json``.

The SavedModel has two endpoints, ``serve`` and ``serving_default``, both
``float32 NHWC images -> float32 logits``, computed in inference mode (BatchNorm frozen).
The reloaded object is differentiable, so it can itself be attacked
(``rk.attacks.PGD(...)(loaded, x, y)`` uses its ``serve`` endpoint). Beside it,
``robustkit.json`` holds the :class:`~robustkit.export.ExportRecord`.

Example:

>>> import os, tempfile, numpy as np, robustkit as rk
>>> model = rk.models.small_cnn((8, 8, 1), width=4, dense=8)
>>> path = os.path.join(tempfile.mkdtemp(), "digits_cnn")
>>> _ = rk.export(model, path, metadata={"dataset": "digits"})
>>> loaded, record = rk.load(path)
>>> record.input_shape, record.dataset
([8, 8, 1], 'digits')
>>> loaded.serve(np.zeros((2, 8, 8, 1), "float32")).shape
TensorShape([2, 10])
"""

import json
import os
import shutil
import tempfile

import keras
import tensorflow as tf

from robustkit.export.card import CARD_FILE, card_markdown
from robustkit.export.record import (
    ENDPOINTS,
    METADATA_FILE,
    DataRecord,
    ExportRecord,
    ThreatRecord,
    TrainingRecord,
    from_metadata,
    to_jsonable,
)
from robustkit.models.contract import check_model, check_outputs


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
            f"`model` must take (batch, H, W, C) images with known H, W, C; got {shape}."
        )
    return [int(d) for d in shape[1:]]


def _training_of(model):
    """Defense, hyperparameters, training attack and threat model read off a ``RobustModel``."""
    objective = getattr(model, "objective", None)
    attack = getattr(model, "attack", None)
    training, threat = TrainingRecord(), None
    if objective is not None and hasattr(objective, "get_config"):
        training = TrainingRecord(
            defense=getattr(objective, "name", type(objective).__name__),
            hyperparameters=to_jsonable(objective.get_config()),
        )
    if attack is not None and hasattr(attack, "get_config"):
        config = to_jsonable(attack.get_config())
        # RobustModel runs the attack with the objective's loss and random start
        loss = getattr(objective, "attack_loss", None)
        start = getattr(objective, "attack_start", None)
        if loss:
            config["loss"] = loss
        if start:
            config["random_start"] = start
        training = TrainingRecord(
            defense=training.defense,
            hyperparameters=training.hyperparameters,
            attack={"class_name": type(attack).__name__, "config": config},
        )
        norm, eps = getattr(attack, "norm", None), getattr(attack, "eps", None)
        if norm is not None and eps is not None:
            threat = ThreatRecord(norm, float(eps), tuple(getattr(attack, "bounds", (0.0, 1.0))))
    return training, threat


def build_record(model, metadata=None, record=None):
    """The :class:`ExportRecord` for ``model`` (a ``RobustModel`` or a Keras classifier).

    What a ``RobustModel`` says about itself (defense, hyperparameters, training attack,
    threat model) is read off it; ``record`` (an :class:`ExportRecord`) or the flat
    ``metadata`` dict (see :func:`robustkit.export.record.from_metadata`) override it;
    input shape, class count, versions and date are always filled here.

    Example:

    >>> import robustkit as rk
    >>> rec = build_record(rk.models.small_cnn((8, 8, 1)), {"dataset": "digits"})
    >>> rec.input_shape, rec.num_classes, rec.clean_accuracy is None
    ([8, 8, 1], 10, True)
    """
    import robustkit

    base = _base_model(model)
    input_shape = _input_shape(base)
    out_shape = tuple(base.outputs[0].shape) if getattr(base, "outputs", None) else None
    if out_shape is not None:
        check_outputs(out_shape, "model")
    training, threat = _training_of(model)
    # the input contract: logits (no softmax, no single logit), channels-last layers
    check_model(base, probe=True, bounds=(0.0, 1.0) if threat is None else threat.bounds)
    if record is None:
        record = ExportRecord(
            input_shape=input_shape, data=DataRecord(), training=training, threat=threat
        )
    elif not isinstance(record, ExportRecord):
        raise ValueError(f"`record` must be an ExportRecord; got {type(record).__name__}.")
    record = from_metadata(metadata, record)
    return record.replace(
        input_shape=input_shape,
        num_classes=None if out_shape is None else int(out_shape[-1]),
        endpoints=ENDPOINTS,
        versions={
            "robustkit": robustkit.__version__,
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
        },
    )


def _write_savedmodel(base, folder, input_shape, bounds=(0.0, 1.0), uint8=False):
    """Writes the SavedModel into ``folder``.

    Endpoints: ``serve`` (float32 images -> logits tensor; differentiable, for Python),
    ``serving_default`` (the same, output named ``logits``: what TF Serving and
    ``saved_model_cli`` show) and, with ``uint8``, ``serve_uint8`` (uint8 images 0-255,
    scaled into ``bounds``, output ``logits``).
    """
    archive = keras.export.ExportArchive()
    archive.track(base)
    lo, hi = (float(b) for b in bounds)

    def logits(images):
        return tf.cast(base(images, training=False), tf.float32)

    float_spec = [tf.TensorSpec([None, *input_shape], tf.float32, name="images")]
    archive.add_endpoint(name="serve", fn=logits, input_signature=float_spec)
    archive.add_endpoint(
        name="serving_default",
        fn=lambda images: {"logits": logits(images)},
        input_signature=float_spec,
    )
    if uint8:
        archive.add_endpoint(
            name="serve_uint8",
            fn=lambda images: {
                "logits": logits(lo + (hi - lo) * tf.cast(images, tf.float32) / 255.0)
            },
            input_signature=[tf.TensorSpec([None, *input_shape], tf.uint8, name="images")],
        )
    archive.write_out(folder, verbose=False)


def _write_metadata(record, folder):
    with open(os.path.join(folder, METADATA_FILE), "w") as f:
        f.write(record.to_json())
    with open(os.path.join(folder, CARD_FILE), "w") as f:
        f.write(card_markdown(record, name=_card_name(folder)))


def _card_name(folder):
    """The export's name for its card: the folder (or, for a version folder, its parent)."""
    folder = os.path.abspath(folder)
    name = os.path.basename(folder)
    if name.startswith(".") and ".tmp-" in name:  # the temporary folder of an atomic write
        name = name[1:].split(".tmp-")[0]
    if name.isdigit():
        name = f"{os.path.basename(os.path.dirname(folder))} (version {name})"
    return name


def _replace_atomically(path, write):
    """Runs ``write(tmp_folder)`` and renames the folder to ``path`` (nothing half-written)."""
    parent, name = os.path.split(path)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=parent)
    old = None
    try:
        write(tmp)
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


def export(model, path, metadata=None, overwrite=False, record=None, version=None,
           serve_uint8=False):  # fmt: skip
    """Exports ``model`` to ``path`` as a SavedModel plus ``path/robustkit.json``.

    Args:
        model: a ``robustkit.RobustModel`` (its ``base_model`` is exported and its
            objective and training attack are recorded) or any Keras model taking one
            ``(batch, H, W, C)`` input and returning logits.
        path: destination folder (created; its parent too).
        metadata: optional flat dict: ``dataset``, ``threat_model`` (``{"norm", "eps"}``),
            ``defense``, ``hyperparameters``, ``clean_accuracy`` and ``robust_accuracy``
            (fractions in [0, 1]) with ``attack`` and ``n_examples`` (what measured them);
            other JSON-serialisable keys are kept under ``extra``.
        overwrite: replace an existing ``path`` (default ``False``: a ``ValueError``).
        record: optional :class:`ExportRecord` to start from (the application layer
            builds one); ``metadata`` is applied on top.
        version: write ``path/<version>/`` (an integer >= 1), the layout TF Serving
            expects (``--model_base_path=path``); ``rk.load(path)`` then reads the highest.
        serve_uint8: add a ``serve_uint8`` endpoint taking uint8 images 0-255.

    Returns:
        The :class:`ExportRecord` that was written.

    The export is written to a temporary folder beside ``path`` and renamed into place,
    so a failed export leaves nothing at ``path`` (and, with ``overwrite=True``, the
    previous export intact).

    Example:

    >>> import os, tempfile, robustkit as rk
    >>> path = os.path.join(tempfile.mkdtemp(), "m")
    >>> rec = rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), path,
    ...                 metadata={"threat_model": {"norm": "linf", "eps": 0.1}})
    >>> sorted(f for f in os.listdir(path) if not f.endswith(".pb"))
    ['MODEL_CARD.md', 'assets', 'robustkit.json', 'variables']
    """
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"`path` must be a folder path; got {path!r}.")
    path = os.path.abspath(os.fspath(path))
    if version is not None:
        if isinstance(version, bool) or not isinstance(version, int) or version < 1:
            raise ValueError(f"`version` must be an integer >= 1; got {version!r}.")
        if os.path.isfile(os.path.join(path, METADATA_FILE)):
            raise ValueError(f"`path` {path} holds an unversioned export; export elsewhere.")
        path = os.path.join(path, str(version))
    if os.path.exists(path) and not overwrite:
        raise ValueError(f"`path` {path} already exists; pass overwrite=True to replace it.")
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"`path` {path} exists and is not a folder.")
    record = build_record(model, metadata, record)
    if serve_uint8:
        record = record.replace(endpoints=(*ENDPOINTS, "serve_uint8"))
    base = _base_model(model)

    def write(folder):
        _write_savedmodel(base, folder, record.input_shape, record.bounds, uint8=serve_uint8)
        _write_metadata(record, folder)

    _replace_atomically(path, write)
    return record


def resolve_path(path):
    """``path``, or its highest numbered version folder when ``path`` holds versions."""
    path = os.fspath(path)
    if os.path.isdir(path) and not os.path.isfile(os.path.join(path, METADATA_FILE)):
        versions = [
            int(v)
            for v in os.listdir(path)
            if v.isdigit() and os.path.isfile(os.path.join(path, v, METADATA_FILE))
        ]
        if versions:
            return os.path.join(path, str(max(versions)))
    return path


def read_record(path):
    """Reads ``path/robustkit.json`` (or that of ``path``'s highest version folder);
    ``ValueError`` if ``path`` is not a robustkit export."""
    path = resolve_path(path)
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
            return ExportRecord.from_dict(json.load(f))
    except json.JSONDecodeError as e:
        raise ValueError(f"`path` {path} has a corrupt {METADATA_FILE}: {e}.") from None
    except (TypeError, ValueError) as e:
        raise ValueError(f"`path` {path} is not a robustkit SavedModel ({e})") from None


def write_record(path, record):
    """Replaces ``path/robustkit.json`` by ``record`` (atomically: write, then rename)."""
    if not isinstance(record, ExportRecord):
        raise ValueError(f"`record` must be an ExportRecord; got {type(record).__name__}.")
    read_record(path)  # it must already be an export
    path = resolve_path(path)
    for name, text in (
        (METADATA_FILE, record.to_json()),
        (CARD_FILE, card_markdown(record, name=_card_name(path))),
    ):
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", dir=path)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(text)
            os.replace(tmp, os.path.join(path, name))
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise


def load_exported(path):
    """Reloads an export: ``(saved_model_object, record)``.

    The object's ``serve`` endpoint maps images to logits and is differentiable; pass the
    object itself to any robustkit attack.

    Example:

    >>> import os, tempfile, numpy as np, robustkit as rk
    >>> path = os.path.join(tempfile.mkdtemp(), "m")
    >>> _ = rk.export(rk.models.small_cnn((8, 8, 1), width=4, dense=8), path)
    >>> loaded, record = rk.load(path)
    >>> record.num_classes
    10
    """
    record = read_record(path)
    return tf.saved_model.load(resolve_path(path)), record
