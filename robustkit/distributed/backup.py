"""Worker-safe backup of a training run: the state after each finished epoch, for an exact
resume after a worker fails.

Example:

>>> import os, tempfile, keras, numpy as np
>>> from robustkit.distributed import Backup
>>> model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(1)])
>>> model.compile(optimizer="sgd")
>>> backup = Backup(os.path.join(tempfile.mkdtemp(), "backup"))
>>> backup.save(model, epoch=0, history={"loss": [1.5]})
>>> saved = [w.copy() for w in model.get_weights()]
>>> _ = model.layers[0].kernel.assign(np.zeros((2, 1)))
>>> backup.restore(model)
(1, {'loss': [1.5]})
>>> all(np.array_equal(a, b) for a, b in zip(model.get_weights(), saved))
True

The state is the model's weights (for a ``RobustModel``: the base model's and the training
radius ``eps``), the optimizer's variables (its step count, from which ``EpsilonWarmup``
reads its position; its moments) and the logs of the finished epochs. The multi-worker
checkpoint rule: every worker writes (the values are its own replica's, equal on all
workers), only the chief into ``directory``; the others into a temporary folder beside it
that they delete at once. Every worker reads the chief's backup when it starts, so on a real
cluster ``directory`` must be storage all hosts see (a shared file system, GCS). Files are
replaced atomically: a worker killed while the chief writes leaves the previous epoch's
backup intact.
"""

import json
import os
import shutil
import tempfile

import numpy as np

_STATE, _META = "state.npz", "state.json"


def _variables(model):
    optimizer = getattr(model, "optimizer", None)
    opt_vars = list(optimizer.variables) if optimizer is not None else []
    return list(model.weights), opt_vars


class Backup:
    """The backup of one training run in ``directory`` (see the module docstring).

    Args:
        directory: where the chief keeps the backup (created on the first save).
        chief: whether this worker is the chief (default True: a single process).
    """

    def __init__(self, directory, chief=True):
        if not directory or not isinstance(directory, (str, os.PathLike)):
            raise ValueError(f"`directory` must be a folder path; got {directory!r}.")
        self.directory = os.fspath(directory)
        self.chief = bool(chief)

    def exists(self):
        """Whether a finished epoch is backed up."""
        return os.path.isfile(os.path.join(self.directory, _META))

    def save(self, model, epoch, history):
        """Writes the state after finished epoch ``epoch`` (0-based) with the logs so far."""
        weights, opt_vars = _variables(model)
        arrays = {f"w{i}": np.asarray(v.numpy()) for i, v in enumerate(weights)}
        arrays.update({f"o{i}": np.asarray(v.numpy()) for i, v in enumerate(opt_vars)})
        meta = {
            "epoch": int(epoch),
            "history": {k: [float(v) for v in vals] for k, vals in history.items()},
            "weights": len(weights),
            "optimizer": len(opt_vars),
        }
        parent = os.path.dirname(os.path.abspath(self.directory))
        os.makedirs(parent, exist_ok=True)
        if self.chief:
            os.makedirs(self.directory, exist_ok=True)
            self._write(self.directory, arrays, meta)
        else:  # the multi-worker rule: write, to a temporary folder, then delete it
            scratch = tempfile.mkdtemp(prefix=".worker-", dir=parent)
            try:
                self._write(scratch, arrays, meta)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)

    @staticmethod
    def _write(folder, arrays, meta):
        tmp = os.path.join(folder, _STATE + ".tmp.npz")
        np.savez(tmp, **arrays)
        os.replace(tmp, os.path.join(folder, _STATE))
        tmp = os.path.join(folder, _META + ".tmp")
        with open(tmp, "w") as f:
            json.dump(meta, f)
        os.replace(tmp, os.path.join(folder, _META))  # last: marks the backup complete

    def restore(self, model):
        """Loads the backup into ``model`` (built, its optimizer built); returns ``(first
        epoch to run, history of the finished epochs)``, or ``(0, {})`` without a backup."""
        if not self.exists():
            return 0, {}
        with open(os.path.join(self.directory, _META)) as f:
            meta = json.load(f)
        weights, opt_vars = _variables(model)
        if (meta["weights"], meta["optimizer"]) != (len(weights), len(opt_vars)):
            raise ValueError(
                f"The backup in {self.directory!r} holds {meta['weights']} weights and "
                f"{meta['optimizer']} optimizer variables; the model has {len(weights)} and "
                f"{len(opt_vars)}: it belongs to another model (delete it to start afresh)."
            )
        with np.load(os.path.join(self.directory, _STATE)) as data:
            for i, v in enumerate(weights):
                v.assign(data[f"w{i}"])
            for i, v in enumerate(opt_vars):
                v.assign(data[f"o{i}"])
        return int(meta["epoch"]) + 1, {k: list(v) for k, v in meta["history"].items()}

    def delete(self):
        """Removes the backup (after a finished run; the chief only)."""
        if self.chief and os.path.isdir(self.directory):
            for name in (_STATE, _META):
                path = os.path.join(self.directory, name)
                if os.path.isfile(path):
                    os.remove(path)
            if not os.listdir(self.directory):
                os.rmdir(self.directory)
