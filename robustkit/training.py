"""RobustModel: adversarial training through ``model.fit``.

Example:

>>> import keras, robustkit as rk
>>> x, y = rk.data.load("digits", "train")
>>> model = rk.RobustModel(
...     rk.models.small_cnn((8, 8, 1)),
...     objective=rk.objectives.TRADES(beta=6.0),
...     attack=rk.attacks.PGD(eps=0.1, steps=5),
... )
>>> model.compile(optimizer="adam", metrics=["accuracy"])
>>> history = model.fit(x, y, epochs=1, batch_size=64, verbose=0,
...                     callbacks=[rk.callbacks.EpsilonWarmup(epochs=1)])
>>> sorted(history.history)
['accuracy', 'adv_accuracy', 'clean_accuracy', 'eps', 'kl', 'loss', 'natural']

One ``train_step`` composes the three parts: the inner attack (any attack with
``trainable = True``, run in inference mode through the training protocol of
:mod:`robustkit.attacks.base`, ``stop_gradient`` at the boundary, its radius read from
the ``keras.Variable`` ``model.eps`` so that callbacks can schedule it, its loss and
random start from the objective's ``inner``), the objective (a pure loss of logits and
labels) and the optimizer update. Only public Keras and TensorFlow API is used.

"Fast AT" (Wong, Rice & Kolter, ICLR 2020) is FGSM from a uniform random start with a
step of 1.25 eps: ``attack=rk.attacks.FGSM(eps, random_start=True, step_size=1.25 * eps)``.

The input contract (checked before any work): ``base_model`` returns logits, one per class
(a softmax head is refused with the fix ``rk.models.logits_of``, a single binary logit with
``rk.models.two_logits``), on channels-last images; the images lie in the training attack's
``bounds`` (default ``(0, 1)``; ``fit`` checks the first batch, so 0-255 data with a [0, 1]
attack is an error, not a silent no-op); labels are class ids or one-hot rows (argmax).
"""

import warnings

import keras
import numpy as np
import tensorflow as tf

from robustkit import objectives as objectives_lib
from robustkit.attacks.base import Attack
from robustkit.attacks.pgd import PGD
from robustkit.data.arrays import first_batch
from robustkit.models import contract
from robustkit.models.adapter import low_precision, unit_upstream


def _unpack(data):
    return keras.utils.unpack_x_y_sample_weight(data)


def _check_training_attack(attack):
    """``ValueError`` naming ``attack`` unless it implements the training protocol."""
    trainable = getattr(attack, "trainable", False)
    if trainable is not True or not callable(getattr(attack, "perturb", None)):
        name = type(attack).__name__
        raise ValueError(
            f"`attack` must implement the training protocol (`trainable = True`, see "
            f"robustkit.attacks.base), e.g. rk.attacks.PGD or FGSM; got "
            f"{name} (trainable={trainable!r})."
        )
    eps = getattr(attack, "eps", None)
    try:
        ok = float(eps) > 0
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(f"`attack` must have a radius `eps` > 0 for training; got {eps!r}.")


def _labels(y):
    """Class ids (int64, rank 1) from class ids, ``(N, 1)`` columns or one-hot rows."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and y.shape[-1] is not None and y.shape[-1] > 1:
        y = tf.argmax(y, axis=-1)
    return tf.cast(tf.reshape(y, [-1]), tf.int64)


#: Keras callbacks that read the ``logs`` RobustEvaluation writes (it must come first)
_LOG_READERS = ("TensorBoard", "CSVLogger", "EarlyStopping", "ModelCheckpoint")


def _scale_for_replicas(loss):
    """The per-replica loss whose summed gradients are the global batch's gradient."""
    replicas = tf.distribute.get_strategy().num_replicas_in_sync
    return loss if replicas == 1 else loss * (1.0 / replicas)


@keras.saving.register_keras_serializable(package="robustkit")
class RobustModel(keras.Model):
    """Wraps a Keras classifier (logits out) with an adversarial training objective.

    Args:
        base_model: the Keras model to harden; it must output logits.
        objective: an :class:`robustkit.objectives.Objective` or a registered name
            (``"standard"``, ``"trades"``, ``"mart"``, ...). Default: standard AT.
        attack: the inner attack: any attack with ``trainable = True`` (e.g. PGD,
            FGSM; see the training protocol in :mod:`robustkit.attacks.base`). Its
            loss and random start are set by the objective's ``inner``
            (:class:`robustkit.objectives.InnerAttack`). Default: PGD-10, L-inf eps
            8/255, step eps/4.
        test_attack: optional attack run in ``test_step`` (``validation_data`` and
            ``evaluate``) to log ``adv_accuracy`` there too; ``None`` (default)
            evaluates clean data only. For robust validation once per epoch, the
            :class:`robustkit.callbacks.RobustEvaluation` callback is cheaper.

    Logged metrics: ``loss`` (the objective's total), the objective's named parts,
    ``clean_accuracy`` and ``adv_accuracy`` on the training batch, ``eps`` (the training
    radius, averaged over the epoch's batches: it shows the warm-up), and the metrics
    passed to ``compile`` (updated with the clean logits). ``model.eps`` is the
    current training radius (a ``keras.Variable``; see
    :class:`robustkit.callbacks.EpsilonWarmup`); ``model.bounds`` the input box, the
    training attack's.

    The clean logits of AT are computed in inference mode (for ``clean_accuracy``);
    TRADES and MART use their training-mode clean logits.
    """

    def __init__(self, base_model, objective=None, attack=None, test_attack=None, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(base_model, keras.Model):
            raise ValueError(
                f"`base_model` must be a keras.Model returning logits; got "
                f"{type(base_model).__name__}."
            )
        objective = "standard" if objective is None else objective
        if not isinstance(objective, (str, objectives_lib.Objective)):
            raise ValueError(
                f"`objective` must be an Objective or a defense name; got {objective!r}."
            )
        self.objective = objectives_lib.get(objective)
        attack = PGD(eps=8 / 255, steps=10) if attack is None else attack
        _check_training_attack(attack)
        if test_attack is not None and not isinstance(test_attack, Attack):
            raise ValueError(f"`test_attack` must be a robustkit Attack; got {test_attack!r}.")
        contract.check_model(base_model, "base_model", probe=True, bounds=attack.bounds)
        self.base_model = base_model
        self.attack = attack
        self.test_attack = test_attack
        self.eps = keras.Variable(attack.eps, dtype="float32", trainable=False, name="eps")
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.eps_tracker = keras.metrics.Mean(name="eps")
        self.clean_accuracy = keras.metrics.SparseCategoricalAccuracy(name="clean_accuracy")
        self.adv_accuracy = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")
        self.part_trackers = {
            name: keras.metrics.Mean(name=name) for name in getattr(self.objective, "parts", ())
        }
        if base_model.built:
            self.built = True

    # ------------------------------------------------------------------ Keras
    def call(self, inputs, training=False):
        return self.base_model(inputs, training=training)

    def build(self, input_shape=None):
        if not self.base_model.built and input_shape is not None:
            self.base_model.build(input_shape)
        self.built = True

    @property
    def bounds(self):
        """The valid input box ``(lo, hi)``: the training attack's (eps is in its units)."""
        return tuple(float(b) for b in self.attack.bounds)

    def _own_metrics(self):
        return [
            self.loss_tracker,
            *self.part_trackers.values(),
            self.clean_accuracy,
            self.adv_accuracy,
            self.eps_tracker,
        ]

    def _compiled_metrics(self):
        """The metrics passed to ``compile`` (Keras' own loss tracker is unused here)."""
        own = self._own_metrics()
        return [m for m in super().metrics if m not in own and m.name != "loss"]

    @property
    def metrics(self):
        return self._own_metrics() + self._compiled_metrics()

    def compile(self, optimizer="adam", metrics=None, **kwargs):
        if kwargs.get("loss") is not None:
            raise ValueError(
                "`loss` is set by the RobustModel's objective; do not pass `loss` to compile."
            )
        kwargs.pop("loss", None)
        super().compile(optimizer=optimizer, metrics=metrics, **kwargs)

    def compile_from_config(self, config):
        config = keras.saving.deserialize_keras_object(config)
        config.pop("loss", None)
        self.compile(**config)
        if self.built:
            self.optimizer.build(self.trainable_variables)

    # ------------------------------------------------------------------ fit
    def fit(self, x=None, y=None, batch_size=None, epochs=1, verbose="auto", callbacks=None,
            **kwargs):  # fmt: skip
        """``keras.Model.fit``, after checking the first batch against the input contract
        (range within :attr:`bounds`, labels, logits on real images) and the callback order.

        A dataset from :func:`robustkit.data.make_dataset` is told the epoch at each epoch's
        start (:class:`robustkit.callbacks.DataEpoch`), so its order and augmentation depend
        on the epoch only, also after a ``BackupAndRestore`` resume.
        """
        self.check_data(x, y, batch_size)
        callbacks = self._with_data_epoch(x, list(callbacks or []))
        if isinstance(x, tf.data.Dataset):
            kwargs.setdefault("shuffle", False)  # Keras warns about shuffle=True for datasets
        return super().fit(x, y, batch_size=batch_size, epochs=epochs, verbose=verbose,
                           callbacks=callbacks, **kwargs)  # fmt: skip

    def check_data(self, x, y=None, batch_size=None):
        """Checks the first batch of ``x`` (arrays, ``tf.data``, ``PyDataset``) as ``fit``
        does: values within :attr:`bounds`, class ids or one-hot labels that fit the
        model's classes, logits (not probabilities) out; ``ValueError`` naming the fix."""
        xb, yb = first_batch(x, y, batch_size)
        if xb is None:
            return
        contract.check_range(xb, self.bounds)
        probe = self.base_model(tf.cast(xb[:8], tf.float32), training=False)
        probe = np.asarray(keras.ops.convert_to_numpy(probe), dtype=np.float64)
        contract.check_outputs(probe.shape, "base_model")
        contract.check_logits(self.base_model, probe=probe, argname="base_model")
        if yb is not None:
            contract.check_class_labels(yb, int(probe.shape[-1]))

    def _with_data_epoch(self, x, callbacks):
        from robustkit.callbacks import BestRobustCheckpoint, DataEpoch, RobustEvaluation

        names = [type(cb).__name__ for cb in callbacks]
        first_eval = next(
            (i for i, cb in enumerate(callbacks) if isinstance(cb, RobustEvaluation)), None
        )
        if first_eval is not None:
            early = [
                names[i]
                for i, cb in enumerate(callbacks[:first_eval])
                if names[i] in _LOG_READERS
                or (isinstance(cb, BestRobustCheckpoint) and cb.evaluator is None)
            ]
            if early:
                warnings.warn(
                    f"{', '.join(early)} come(s) before RobustEvaluation in `callbacks`: "
                    "they read the epoch's logs before RobustEvaluation writes "
                    "val_robust_accuracy. Put RobustEvaluation first.",
                    stacklevel=3,
                )
        if getattr(x, "epoch_variable", None) is not None and not any(
            isinstance(cb, DataEpoch) for cb in callbacks
        ):
            callbacks.insert(0, DataEpoch(x))
        return callbacks

    def _inference_fn(self, x):
        logits = tf.cast(self.base_model(x, training=False), tf.float32)
        return unit_upstream(logits) if low_precision(self.base_model) else logits

    def _adversarial(self, x, y, attack):
        inner = self.objective.inner
        return attack.perturb(
            self._inference_fn,
            x,
            y,
            eps=self.eps,
            loss=inner.loss,
            random_start=inner.start,
            track_best=False,
        )

    def _update_metrics(self, y, total, parts, logits_clean, logits_adv, sample_weight, batch):
        self.loss_tracker.update_state(total, sample_weight=batch)
        for name, tracker in self.part_trackers.items():
            if name in parts:
                tracker.update_state(parts[name], sample_weight=batch)
        if logits_adv is not None:
            self.adv_accuracy.update_state(y, logits_adv, sample_weight=sample_weight)
        self.clean_accuracy.update_state(y, logits_clean, sample_weight=sample_weight)
        for metric in self._compiled_metrics():
            metric.update_state(y, logits_clean, sample_weight=sample_weight)
        return self.get_metrics_result()

    def train_step(self, data, global_batch_size=None):
        """One step on a batch (on one replica under a ``tf.distribute`` strategy).

        ``global_batch_size``: the examples of this step over all replicas (the custom
        multi-worker loop of :mod:`robustkit.distributed` passes it): the loss is then
        weighted by this replica's share, as ``tf.nn.compute_average_loss`` does, so that
        unequal slices still give the global batch's mean gradient. ``None`` (``fit``):
        divided by the replica count.
        """
        x, y, sample_weight = _unpack(data)
        y = _labels(y)
        x = tf.cast(x, tf.float32)
        x_adv = tf.stop_gradient(self._adversarial(x, y, self.attack))
        needs_clean = self.objective.needs_clean_logits
        if not needs_clean:
            logits_clean = tf.stop_gradient(self._inference_fn(x))
        with tf.GradientTape() as tape:
            if needs_clean:
                logits_clean = tf.cast(self.base_model(x, training=True), tf.float32)
            logits_adv = tf.cast(self.base_model(x_adv, training=True), tf.float32)
            total, parts = self.objective(
                y,
                logits_adv,
                logits_clean if needs_clean else None,
                x=x,
                x_adv=x_adv,
                sample_weight=sample_weight,
            )
            reg = self.base_model.losses
            loss = total + tf.add_n(reg) if reg else total
            if global_batch_size is None:
                share = _scale_for_replicas(loss)
            else:
                local = tf.cast(tf.shape(x)[0], loss.dtype)
                share = loss * local / tf.cast(global_batch_size, loss.dtype)
            scaled = self.optimizer.scale_loss(share)
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        batch = tf.shape(x)[0]
        self.eps_tracker.update_state(self.eps, sample_weight=batch)
        return self._update_metrics(y, total, parts, logits_clean, logits_adv, sample_weight, batch)

    def test_step(self, data):
        x, y, sample_weight = _unpack(data)
        y = _labels(y)
        x = tf.cast(x, tf.float32)
        logits_clean = self._inference_fn(x)
        batch = tf.shape(x)[0]
        if self.test_attack is None:
            # Clean evaluation: report only what was measured (loss = clean CE).
            total = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits_clean)
            )
            results = self._update_metrics(y, total, {}, logits_clean, None, sample_weight, batch)
            skip = {"adv_accuracy", "eps", *self.part_trackers}
            return {k: v for k, v in results.items() if k not in skip}
        x_adv = tf.stop_gradient(self.test_attack.perturb(self._inference_fn, x, y))
        logits_adv = self._inference_fn(x_adv)
        total, parts = self.objective(
            y,
            logits_adv,
            logits_clean if self.objective.needs_clean_logits else None,
            x=x,
            x_adv=x_adv,
            sample_weight=sample_weight,
        )
        results = self._update_metrics(
            y, total, parts, logits_clean, logits_adv, sample_weight, batch
        )
        return {k: v for k, v in results.items() if k != "eps"}

    # ---------------------------------------------------------- serialisation
    def get_config(self):
        ser = keras.saving.serialize_keras_object
        return {
            "base_model": ser(self.base_model),
            "objective": ser(self.objective),
            "attack": ser(self.attack),
            "test_attack": None if self.test_attack is None else ser(self.test_attack),
            "name": self.name,
        }

    @classmethod
    def from_config(cls, config, custom_objects=None):
        de = keras.saving.deserialize_keras_object
        config = dict(config)
        for key in ("base_model", "objective", "attack", "test_attack"):
            if config.get(key) is not None:
                config[key] = de(config[key], custom_objects=custom_objects)
        return cls(**config)
