"""Saving and loading NAMID's estimators: ``.keras`` files, or a JSON-safe packed dict.

Example:

>>> import tempfile
>>> from robustkit.namid import NaturalMIEstimator, load_estimators, save_estimators
>>> est = NaturalMIEstimator((8, 8, 1), 10, features=8)
>>> folder = tempfile.mkdtemp()
>>> save_estimators(folder, natural=est)
>>> (again,) = load_estimators(folder, names=("natural",))
>>> again.pattern, again.trainable
('natural', False)
"""

import base64
import io
import os

import keras
import numpy as np


def pack_estimator(estimator):
    """A JSON-safe dict holding an estimator's config and (base64 npz) weights."""
    buf = io.BytesIO()
    np.savez(buf, *estimator.get_weights())
    return {
        "config": keras.saving.serialize_keras_object(estimator),
        "weights": base64.b64encode(buf.getvalue()).decode("ascii"),
    }


def unpack_estimator(packed):
    """Inverse of :func:`pack_estimator`; returns a frozen estimator."""
    est = keras.saving.deserialize_keras_object(packed["config"])
    with np.load(io.BytesIO(base64.b64decode(packed["weights"]))) as f:
        est.set_weights([f[f"arr_{i}"] for i in range(len(f.files))])
    est.trainable = False
    return est


def save_estimators(path, **estimators):
    """Saves estimators as ``<path>/<name>.keras`` (e.g. ``natural=..., adversarial=...``)."""
    os.makedirs(path, exist_ok=True)
    for name, est in estimators.items():
        est.save(os.path.join(path, f"{name}.keras"))


def load_estimators(path, names=("natural", "adversarial")):
    """Loads estimators saved by :func:`save_estimators` (frozen), as a tuple."""
    out = []
    for name in names:
        file = os.path.join(path, f"{name}.keras")
        if not os.path.exists(file):
            raise FileNotFoundError(f"No estimator {name!r} at {file}.")
        est = keras.saving.load_model(file, compile=False)
        est.trainable = False
        out.append(est)
    return tuple(out)


__all__ = ["load_estimators", "pack_estimator", "save_estimators", "unpack_estimator"]
