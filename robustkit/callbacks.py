"""Callbacks for robust training: robust validation, epsilon warm-up, best-robust weights.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "train")
>>> x_val, y_val = rk.data.load("digits", "test")
>>> model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)),
...                        attack=rk.attacks.PGD(eps=0.1, steps=5))
>>> model.compile(optimizer="adam")
>>> history = model.fit(x, y, epochs=2, batch_size=64, verbose=0, callbacks=[
...     rk.callbacks.EpsilonWarmup(epochs=1),
...     rk.callbacks.RobustEvaluation((x_val, y_val), max_examples=200),
...     rk.callbacks.BestRobustCheckpoint(),
... ])
>>> "val_robust_accuracy" in history.history
True

``MIMonitor`` (natural and adversarial MI on held-out data, for the NAMID
defenses) lives in :mod:`robustkit.namid`; ``rk.callbacks.MIMonitor`` loads it from
there on first use.

The accuracies come from :func:`robustkit.evaluation.measure`, the one evaluator:
an example is robust when it is correct clean and the attack's output is still
classified correctly or lies outside the attack's eps-ball.

Put :class:`RobustEvaluation` *before* Keras' own ``ModelCheckpoint``,
``EarlyStopping``, ``CSVLogger`` or ``TensorBoard`` in the list: it writes
``val_robust_accuracy`` and ``val_clean_accuracy`` into the epoch's ``logs``, which
those callbacks then read like any other metric (``RobustModel.fit`` warns when they come
first). Use Keras' own ``BackupAndRestore``, ``ModelCheckpoint`` and learning-rate schedules.

Resuming exactly: ``BackupAndRestore`` restores the weights, the optimizer (its step count,
from which :class:`EpsilonWarmup` reads its position) and ``model.eps``;
:class:`BestRobustCheckpoint` with a ``filepath`` persists its best score; a
:func:`robustkit.data.make_dataset` pipeline is keyed on the epoch (:class:`DataEpoch`) and
:class:`EpochSeed` keys the inner attack's random start on it.
"""

import importlib
import json
import math
import os
import warnings

import keras
import numpy as np

from robustkit import _log
from robustkit._validation import check_int, check_positive
from robustkit.attacks.pgd import PGD
from robustkit.data import as_arrays
from robustkit.evaluation._measure import measure
from robustkit.models.adapter import base_of


def __getattr__(name):
    # PEP 562: the NAMID paper's MI monitor lives in robustkit.namid (loaded on first use)
    if name == "MIMonitor":
        try:
            return importlib.import_module("robustkit.namid").MIMonitor
        except ModuleNotFoundError as e:
            if e.name != "robustkit.namid":
                raise
            raise AttributeError(
                "robustkit.callbacks.MIMonitor lives in robustkit.namid, which is not "
                "available in this installation."
            ) from None
    raise AttributeError(f"module 'robustkit.callbacks' has no attribute {name!r}")


def clean_and_robust_accuracy(model, x, y, attack, batch_size=500):
    """Clean and robust accuracy of ``model`` on ``(x, y)`` under ``attack``: a thin alias
    of :func:`robustkit.evaluation.measure` (the one evaluator).

    Example:

    >>> import keras, numpy as np, robustkit as rk
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(10)])
    >>> x = np.zeros((4, 8, 8, 1), "float32"); y = np.zeros(4, "int64")
    >>> clean, robust = clean_and_robust_accuracy(m, x, y, rk.attacks.FGSM(0.1))
    >>> robust <= clean
    True
    """
    found = measure(model, (x, y), attack, batch_size=batch_size)
    return found.clean_accuracy, found.robust_accuracy


def _default_attack(model, steps):
    """PGD-``steps`` in the training attack's threat model (norm, eps and box)."""
    threat = getattr(getattr(model, "attack", None), "threat", None)
    if threat is not None and threat.norm in PGD.supported_norms:
        return PGD(eps=threat.eps, norm=threat.norm, bounds=threat.bounds, steps=steps)
    raise ValueError(
        "`attack` is required when the model is not a RobustModel whose training attack "
        "has a threat model."
    )


class RobustEvaluation(keras.callbacks.Callback):
    """Logs ``val_clean_accuracy`` and ``val_robust_accuracy`` at the end of epochs.

    Example:

    >>> import robustkit as rk
    >>> x_val, y_val = rk.data.load("digits", "test")
    >>> cb = rk.callbacks.RobustEvaluation((x_val, y_val), every=2, max_examples=500)

    Args:
        data: held-out ``(x, y)`` arrays or a ``tf.data.Dataset`` of batches.
        attack: the attack; default PGD-20 at the training attack's eps and norm.
        every: evaluate every ``every`` epochs (and always at the last epoch).
        max_examples: evaluate on at most this many examples (default 1000; ``None``: all).
        prefix: key prefix in ``logs`` (default ``"val_"``).
        verbose: 1 shows a progress bar over the attacked examples and logs the result.

    ``history`` holds ``(epoch, clean, robust)`` per evaluation, ``last`` the latest
    :class:`robustkit.evaluation.Measurement`. Attack outputs outside the attack's eps-ball
    count as robust and raise a warning.
    """

    def __init__(self, data, attack=None, every=1, max_examples=1000, prefix="val_", verbose=0):
        super().__init__()
        if max_examples is not None:
            max_examples = check_int(max_examples, "max_examples")
        self.x, self.y = as_arrays(data, max_examples)
        self.attack = attack
        self.every = check_int(every, "every")
        self.prefix = prefix
        self.verbose = verbose
        self.history = []
        self.last = None

    def on_train_begin(self, logs=None):
        if self.attack is None:
            self.attack = _default_attack(self.model, steps=20)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        found = measure(self.model, (self.x, self.y), self.attack, verbose=self.verbose)
        clean, robust = found.clean_accuracy, found.robust_accuracy
        if logs is not None:
            logs[self.prefix + "clean_accuracy"] = clean
            logs[self.prefix + "robust_accuracy"] = robust
        self.history.append((epoch, clean, robust))
        self.last = found
        if found.outside_ball:
            warnings.warn(
                f"RobustEvaluation: {found.outside_ball} outputs of the attack lie outside "
                "its eps-ball; they are not adversarial examples and count as robust.",
                stacklevel=2,
            )
        _log.info(
            f"Epoch {epoch + 1}: {self.prefix}clean_accuracy={clean:.4f} "
            f"{self.prefix}robust_accuracy={robust:.4f}",
            self.verbose,
        )


class EpsilonWarmup(keras.callbacks.Callback):
    """Ramps the training radius ``model.eps`` linearly from ``start`` to the attack's eps.

    PGD-AT from scratch on MNIST at eps 0.3 does not start learning without it.

    Example:

    >>> import robustkit as rk
    >>> warm = rk.callbacks.EpsilonWarmup(epochs=0.5)    # half an epoch
    >>> warm_steps = rk.callbacks.EpsilonWarmup(steps=200)

    Args:
        epochs: warm-up length in epochs (may be fractional), or
        steps: warm-up length in optimizer steps (batches).
        start: fraction of eps at the first batch (default 0: the first batch uses
            ``eps / warm-up steps``).

    The position on the ramp is the optimizer's step count (``optimizer.iterations``), which
    ``keras.callbacks.BackupAndRestore`` restores: a resumed run continues the ramp where the
    backup left it. A second ``fit`` on a trained model therefore starts past the warm-up.
    """

    def __init__(self, epochs=None, steps=None, start=0.0):
        super().__init__()
        if (epochs is None) == (steps is None):
            raise ValueError("Give exactly one of `epochs` or `steps` to EpsilonWarmup.")
        self.epochs = None if epochs is None else check_positive(epochs, "epochs")
        self.steps = None if steps is None else check_int(steps, "steps")
        if not 0.0 <= start <= 1.0:
            raise ValueError(f"`start` must be in [0, 1]; got {start!r}.")
        self.start = float(start)
        self._total = None
        self._target = None

    def on_train_begin(self, logs=None):
        eps_var = getattr(self.model, "eps", None)
        if not isinstance(eps_var, keras.Variable):
            raise ValueError("EpsilonWarmup needs a RobustModel (a model with an `eps` Variable).")
        self._target = float(self.model.attack.eps)
        if self.steps is not None:
            self._total = self.steps
        else:
            per_epoch = (self.params or {}).get("steps")
            if not per_epoch:
                raise ValueError(
                    "EpsilonWarmup(epochs=...) needs to know the steps per epoch; give "
                    "`steps_per_epoch` to fit() or use EpsilonWarmup(steps=...)."
                )
            self._total = max(1, int(math.ceil(self.epochs * per_epoch)))

    def current(self, step=None):
        """The radius for optimizer step ``step`` (default: the next one)."""
        step = int(self.model.optimizer.iterations.numpy()) if step is None else int(step)
        frac = min(1.0, (step + 1) / self._total)
        return self._target * (self.start + (1.0 - self.start) * frac)

    def on_train_batch_begin(self, batch, logs=None):
        step = int(self.model.optimizer.iterations.numpy())
        if step <= self._total:
            self.model.eps.assign(self.current(step))

    def on_train_end(self, logs=None):
        self.model.eps.assign(self._target)


class DataEpoch(keras.callbacks.Callback):
    """Tells a :func:`robustkit.data.make_dataset` pipeline the epoch at each epoch's start,
    so its order and augmentation depend on the epoch number only (also after a resume).

    ``RobustModel.fit`` adds it when given such a dataset; add it yourself for a plain
    Keras model.

    Example:

    >>> import numpy as np, robustkit as rk
    >>> ds = rk.data.make_dataset(np.zeros((8, 2), "float32"), np.zeros(8, "int64"), 4)
    >>> cb = rk.callbacks.DataEpoch(ds)
    >>> cb.on_epoch_begin(3); int(ds.epoch_variable.numpy())
    3
    """

    def __init__(self, dataset):
        super().__init__()
        self.variable = getattr(dataset, "epoch_variable", None)
        if self.variable is None:
            raise ValueError("`dataset` must come from robustkit.data.make_dataset.")

    def on_epoch_begin(self, epoch, logs=None):
        self.variable.assign(epoch)


class EpochSeed(keras.callbacks.Callback):
    """Draws each epoch's training randomness (the inner attack's random start) from the
    seed ``seed + epoch``, so a run resumed from a backup repeats it exactly.

    TensorFlow's random ops keep their position inside the compiled train function; a
    resumed process would start their sequences again. At each epoch's start this callback
    sets TensorFlow's global seed and rebuilds the train function (one retrace per epoch,
    seconds on a CPU), so epoch ``e`` draws the same numbers in both runs. The global seed
    is process-wide: later random ops in the same process follow it too.

    Example:

    >>> import robustkit as rk
    >>> cb = rk.callbacks.EpochSeed(seed=0)
    """

    def __init__(self, seed=0):
        super().__init__()
        self.seed = check_int(seed, "seed", minimum=0)

    def on_epoch_begin(self, epoch, logs=None):
        import tensorflow as tf

        tf.random.set_seed(self.seed * 100003 + epoch)
        self.model.make_train_function(force=True)


class BestRobustCheckpoint(keras.callbacks.Callback):
    """Keeps the weights with the best ``(clean + robust) / 2`` and restores them at the end.

    This is the NAMID paper's checkpoint selection. The score comes from
    ``logs`` written by a :class:`RobustEvaluation` placed before it in the
    callback list, or, when ``data`` is given, from its own evaluation.

    Example:

    >>> import robustkit as rk
    >>> best = rk.callbacks.BestRobustCheckpoint("saved_models/best.weights.h5")

    Args:
        filepath: optional ``.weights.h5`` path written whenever the score improves,
            with the score beside it (``<name>.best.json``): a run resumed from a backup
            (it starts at an epoch > 0) reads it back, so it keeps the best of the epochs
            before the interruption and restores it at the end.
        data, attack, max_examples: evaluate on this held-out data instead of
            reading ``logs``.
        prefix: prefix of the ``logs`` keys to read (default ``"val_"``).
        restore: restore the best weights at the end of training (default True).
    """

    def __init__(
        self,
        filepath=None,
        data=None,
        attack=None,
        max_examples=1000,
        prefix="val_",
        restore=True,
        verbose=0,
    ):
        super().__init__()
        if filepath is not None and not str(filepath).endswith(".weights.h5"):
            raise ValueError(f"`filepath` must end in '.weights.h5'; got {filepath!r}.")
        self.filepath = filepath
        self.evaluator = (
            None if data is None else RobustEvaluation(data, attack, 1, max_examples, prefix)
        )
        self.prefix = prefix
        self.restore = restore
        self.verbose = verbose
        self.best_score = -np.inf
        self.best_epoch = None
        self._best_weights = None
        self._first_epoch = None

    @property
    def score_path(self):
        """Where the best score is persisted (``None`` without ``filepath``)."""
        if self.filepath is None:
            return None
        return str(self.filepath)[: -len(".weights.h5")] + ".best.json"

    def on_train_begin(self, logs=None):
        self._first_epoch = None
        if self.evaluator is not None:
            self.evaluator.set_model(self.model)
            self.evaluator.params = self.params
            self.evaluator.on_train_begin(logs)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is not None:
            return
        self._first_epoch = epoch
        path = self.score_path
        if epoch > 0 and path and os.path.isfile(path) and os.path.isfile(self.filepath):
            with open(path) as f:
                saved = json.load(f)
            if saved.get("epoch", epoch) < epoch and saved["score"] > self.best_score:
                self.best_score, self.best_epoch = float(saved["score"]), int(saved["epoch"])
                self._best_weights = None  # on disk only
                _log.info(
                    f"Resumed: best (clean + robust) / 2 = {self.best_score:.4f} at epoch "
                    f"{self.best_epoch + 1}",
                    self.verbose,
                )

    def on_epoch_end(self, epoch, logs=None):
        logs = {} if logs is None else logs
        if self.evaluator is not None:
            self.evaluator.on_epoch_end(epoch, logs)
        clean = logs.get(self.prefix + "clean_accuracy")
        robust = logs.get(self.prefix + "robust_accuracy")
        if clean is None or robust is None:
            return
        score = (float(clean) + float(robust)) / 2
        logs[self.prefix + "robust_score"] = score
        if score > self.best_score:
            self.best_score, self.best_epoch = score, epoch
            self._best_weights = [w.numpy() for w in self.model.weights]
            if self.filepath:
                base_of(self.model).save_weights(self.filepath)
                with open(self.score_path, "w") as f:
                    json.dump({"score": score, "epoch": epoch}, f)
            _log.info(f"Epoch {epoch + 1}: best (clean + robust) / 2 = {score:.4f}", self.verbose)

    def on_train_end(self, logs=None):
        if not self.restore or self.best_epoch is None:
            return
        if self._best_weights is not None:
            for var, value in zip(self.model.weights, self._best_weights):
                var.assign(value)
        elif self.filepath and os.path.isfile(self.filepath):
            base_of(self.model).load_weights(self.filepath)
