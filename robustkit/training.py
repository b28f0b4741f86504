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
['accuracy', 'adv_accuracy', 'clean_accuracy', 'kl', 'loss', 'natural']

One ``train_step`` composes the three parts: the inner attack (any attack with
``trainable = True``, run in inference mode through the training protocol of
:mod:`robustkit.attacks.base`, ``stop_gradient`` at the boundary, its radius read from
the ``keras.Variable`` ``model.eps`` so that callbacks can schedule it, its loss and
random start from the objective's ``inner``), the objective (a pure loss of logits and
labels) and the optimizer update. Only public Keras and TensorFlow API is used.

"Fast AT" (Wong, Rice & Kolter, ICLR 2020) is FGSM from a uniform random start with a
step of 1.25 eps: ``attack=rk.attacks.FGSM(eps, random_start=True, step_size=1.25 * eps)``.
"""

import keras
import tensorflow as tf

from robustkit import objectives as objectives_lib
from robustkit.attacks.base import Attack
from robustkit.attacks.pgd import PGD


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
    ``clean_accuracy`` and ``adv_accuracy`` on the training batch, and the metrics
    passed to ``compile`` (updated with the clean logits). ``model.eps`` is the
    current training radius (a ``keras.Variable``; see
    :class:`robustkit.callbacks.EpsilonWarmup`).

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
        self.base_model = base_model
        self.attack = attack
        self.test_attack = test_attack
        self.eps = keras.Variable(attack.eps, dtype="float32", trainable=False, name="eps")
        self.loss_tracker = keras.metrics.Mean(name="loss")
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

    def _own_metrics(self):
        return [
            self.loss_tracker,
            *self.part_trackers.values(),
            self.clean_accuracy,
            self.adv_accuracy,
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

    def _inference_fn(self, x):
        return tf.cast(self.base_model(x, training=False), tf.float32)

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

    def train_step(self, data):
        x, y, sample_weight = _unpack(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
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
            scaled = self.optimizer.scale_loss(_scale_for_replicas(loss))
        variables = self.trainable_variables
        grads = tape.gradient(scaled, variables)
        self.optimizer.apply_gradients(zip(grads, variables))
        batch = tf.shape(x)[0]
        return self._update_metrics(y, total, parts, logits_clean, logits_adv, sample_weight, batch)

    def test_step(self, data):
        x, y, sample_weight = _unpack(data)
        y = tf.cast(tf.reshape(y, [-1]), tf.int64)
        x = tf.cast(x, tf.float32)
        logits_clean = self._inference_fn(x)
        batch = tf.shape(x)[0]
        if self.test_attack is None:
            # Clean evaluation: report only what was measured (loss = clean CE).
            total = tf.reduce_mean(
                tf.nn.sparse_softmax_cross_entropy_with_logits(tf.cast(y, tf.int32), logits_clean)
            )
            results = self._update_metrics(y, total, {}, logits_clean, None, sample_weight, batch)
            skip = {"adv_accuracy", *self.part_trackers}
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
        return self._update_metrics(y, total, parts, logits_clean, logits_adv, sample_weight, batch)

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
