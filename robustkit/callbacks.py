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
defenses) lives in :mod:`robustkit.namid`; ``rk.callbacks.MIMonitor`` resolves it on first use.

Put :class:`RobustEvaluation` *before* Keras' own ``ModelCheckpoint``,
``EarlyStopping``, ``CSVLogger`` or ``TensorBoard`` in the list: it writes
``val_robust_accuracy`` and ``val_clean_accuracy`` into the epoch's ``logs``, which
those callbacks then read like any other metric. Use Keras' own
``BackupAndRestore``, ``ModelCheckpoint`` and learning-rate schedules.
"""

import importlib
import math

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_int, check_positive
from robustkit.attacks.base import as_logits_fn
from robustkit.attacks.pgd import PGD


def _base(model):
    return getattr(model, "base_model", model)


def _take(data, max_examples):
    """``(x, y)`` numpy arrays from a tuple or a ``tf.data`` dataset of batches."""
    if isinstance(data, tf.data.Dataset):
        xs, ys, n = [], [], 0
        for batch in data:
            xb, yb = batch[0], batch[1]
            xs.append(np.asarray(xb))
            ys.append(np.asarray(yb).reshape(-1))
            n += len(xs[-1])
            if max_examples and n >= max_examples:
                break
        x, y = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1]).reshape(-1)
    else:
        raise ValueError("`data` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches.")
    if len(x) != len(y):
        raise ValueError(f"`data` has {len(x)} images but {len(y)} labels; they must match.")
    if max_examples:
        x, y = x[:max_examples], y[:max_examples]
    return x.astype("float32"), y.astype("int64")


def clean_and_robust_accuracy(model, x, y, attack, batch_size=500):
    """Clean and robust accuracy of ``model`` on ``(x, y)`` under ``attack``.

    Robust accuracy counts an example only when it is classified correctly both
    clean and under attack.

    Example:

    >>> import keras, numpy as np, robustkit as rk
    >>> m = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
    ...                       keras.layers.Dense(10)])
    >>> x = np.zeros((4, 8, 8, 1), "float32"); y = np.zeros(4, "int64")
    >>> clean, robust = clean_and_robust_accuracy(m, x, y, rk.attacks.FGSM(0.1))
    >>> robust <= clean
    True
    """
    fn = as_logits_fn(_base(model))
    correct, robust = [], []
    x_adv = attack(_base(model), x, y)
    for s in range(0, len(x), batch_size):
        c = np.argmax(fn(tf.constant(x[s : s + batch_size])).numpy(), -1) == y[s : s + batch_size]
        a = (
            np.argmax(fn(tf.constant(x_adv[s : s + batch_size])).numpy(), -1)
            == y[s : s + batch_size]
        )
        correct.append(c)
        robust.append(c & a)
    return float(np.concatenate(correct).mean()), float(np.concatenate(robust).mean())


def _default_attack(model, steps):
    train_attack = getattr(model, "attack", None)
    if isinstance(train_attack, PGD):
        return PGD(eps=train_attack.eps, norm=train_attack.norm, steps=steps)
    raise ValueError("`attack` is required when the model is not a RobustModel with a PGD attack.")


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
        max_examples: evaluate on at most this many examples (default 1000).
        prefix: key prefix in ``logs`` (default ``"val_"``).
    """

    def __init__(self, data, attack=None, every=1, max_examples=1000, prefix="val_", verbose=0):
        super().__init__()
        self.x, self.y = _take(data, max_examples)
        self.attack = attack
        self.every = check_int(every, "every")
        self.prefix = prefix
        self.verbose = verbose
        self.history = []

    def on_train_begin(self, logs=None):
        if self.attack is None:
            self.attack = _default_attack(self.model, steps=20)

    def on_epoch_end(self, epoch, logs=None):
        last = self.params.get("epochs") if self.params else None
        if (epoch + 1) % self.every and (last is None or epoch + 1 != last):
            return
        clean, robust = clean_and_robust_accuracy(self.model, self.x, self.y, self.attack)
        if logs is not None:
            logs[self.prefix + "clean_accuracy"] = clean
            logs[self.prefix + "robust_accuracy"] = robust
        self.history.append((epoch, clean, robust))
        if self.verbose:
            print(
                f"\nEpoch {epoch + 1}: {self.prefix}clean_accuracy={clean:.4f} "
                f"{self.prefix}robust_accuracy={robust:.4f}"
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
        self._seen = 0
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

    def current(self):
        """The radius for the next batch."""
        frac = min(1.0, (self._seen + 1) / self._total)
        return self._target * (self.start + (1.0 - self.start) * frac)

    def on_train_batch_begin(self, batch, logs=None):
        if self._seen < self._total:
            self.model.eps.assign(self.current())
        elif self._seen == self._total:
            self.model.eps.assign(self._target)
        self._seen += 1

    def on_train_end(self, logs=None):
        self.model.eps.assign(self._target)


class BestRobustCheckpoint(keras.callbacks.Callback):
    """Keeps the weights with the best ``(clean + robust) / 2`` and restores them at the end.

    This is the NAMID paper's checkpoint selection. The score comes from
    ``logs`` written by a :class:`RobustEvaluation` placed before it in the
    callback list, or, when ``data`` is given, from its own evaluation.

    Example:

    >>> import robustkit as rk
    >>> best = rk.callbacks.BestRobustCheckpoint("saved_models/best.weights.h5")

    Args:
        filepath: optional ``.weights.h5`` path written whenever the score improves.
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

    def on_train_begin(self, logs=None):
        if self.evaluator is not None:
            self.evaluator.set_model(self.model)
            self.evaluator.params = self.params
            self.evaluator.on_train_begin(logs)

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
                _base(self.model).save_weights(self.filepath)
            if self.verbose:
                print(f"\nEpoch {epoch + 1}: best (clean + robust) / 2 = {score:.4f}")

    def on_train_end(self, logs=None):
        if self.restore and self._best_weights is not None:
            for var, value in zip(self.model.weights, self._best_weights):
                var.assign(value)


def __getattr__(name):
    if name == "MIMonitor":  # robustkit.namid's callback (the core never imports it)
        return importlib.import_module("robustkit.namid").MIMonitor
    raise AttributeError(f"module 'robustkit.callbacks' has no attribute {name!r}")
