"""``MIMonitor``: logs the natural and adversarial MI of the model on held-out data.

Example:

>>> import robustkit as rk
>>> from robustkit.namid import MIMonitor, NaturalMIEstimator, AdversarialMIEstimator
>>> x, y = rk.data.load("digits", "train")
>>> nat = NaturalMIEstimator((8, 8, 1), 10, features=16)
>>> adv = AdversarialMIEstimator((8, 8, 1), 10, features=16)
>>> model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(eps=0.1, steps=2))
>>> model.compile(optimizer="adam")
>>> mon = MIMonitor((x[:100], y[:100]), nat, adv, attack=rk.attacks.PGD(eps=0.1, steps=2))
>>> h = model.fit(x[:128], y[:128], epochs=1, verbose=0, callbacks=[mon])
>>> sorted(k for k in h.history if k.startswith("val_"))
['val_adversarial_mi', 'val_natural_mi']

At the end of every epoch the callback attacks the held-out images with the
current model, then writes the mean per-sample estimates (nats) of the natural
MI ``I(x; h(x~))`` and the adversarial MI ``I(x~ - x; h(x~))`` into the epoch's
logs as ``val_natural_mi`` and ``val_adversarial_mi`` (NAMID aims to raise the
first and lower the second; Zhou et al., ICML 2022).
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_images, check_int, check_labels
from robustkit.models.adapter import as_logits_fn
from robustkit.namid.estimator import MIEstimator


class MIMonitor(keras.callbacks.Callback):
    """Logs ``val_natural_mi`` and ``val_adversarial_mi`` each epoch.

    Args:
        data: held-out ``(x, y)`` arrays.
        natural_estimator, adversarial_estimator: frozen estimators; ``None``
            takes them from the model's objective (NAMID / NAMID_T / NAMID_M).
        attack: the attack making ``x~``; ``None`` uses the model's training
            attack at its full radius.
        max_examples: at most this many held-out examples (default 1000).
        batch_size: examples per estimator call; the DV negatives are the other
            examples of the batch (default 256).
    """

    def __init__(
        self,
        data,
        natural_estimator=None,
        adversarial_estimator=None,
        attack=None,
        max_examples=1000,
        batch_size=256,
    ):
        super().__init__()
        if not isinstance(data, (tuple, list)) or len(data) != 2:
            raise ValueError("`data` must be a pair (x, y) of held-out arrays.")
        max_examples = check_int(max_examples, "max_examples", minimum=2)
        x = np.asarray(data[0], "float32")[:max_examples]
        y = np.asarray(data[1]).reshape(-1)[:max_examples]
        check_images(x, "x")
        check_labels(y, n=len(x), name="y")
        if len(x) < 2:
            raise ValueError("`data` needs at least 2 examples (the DV negatives).")
        for est, name in (
            (natural_estimator, "natural_estimator"),
            (adversarial_estimator, "adversarial_estimator"),
        ):
            if est is not None and not isinstance(est, MIEstimator):
                raise ValueError(f"`{name}` must be a robustkit MIEstimator or None.")
        self.x, self.y = x, y.astype("int64")
        self.natural_estimator = natural_estimator
        self.adversarial_estimator = adversarial_estimator
        self.attack = attack
        self.batch_size = check_int(batch_size, "batch_size", minimum=2)

    def _estimators(self):
        nat, adv = self.natural_estimator, self.adversarial_estimator
        objective = getattr(self.model, "objective", None)
        nat = nat or getattr(objective, "natural_estimator", None)
        adv = adv or getattr(objective, "adversarial_estimator", None)
        if nat is None or adv is None:
            raise ValueError(
                "MIMonitor needs the estimators: pass them, or train with a NAMID objective."
            )
        return nat, adv

    def compute(self, model):
        """``(natural_mi, adversarial_mi)`` of ``model`` on the held-out data."""
        nat, adv = self._estimators()
        base = getattr(model, "base_model", model)
        attack = self.attack
        if attack is None:
            attack = getattr(model, "attack", None)
            if attack is None:
                raise ValueError("MIMonitor needs an `attack` (the model has none).")
        x_adv = np.asarray(attack(base, self.x, self.y), "float32")
        fn = as_logits_fn(base)
        n_sum = a_sum = 0.0
        count = 0
        for s in range(0, len(self.x), self.batch_size):
            xb, xab = self.x[s : s + self.batch_size], x_adv[s : s + self.batch_size]
            if len(xb) < 2:
                break
            logits = fn(tf.constant(xab))
            n_sum += float(tf.reduce_sum(nat.mi(xb, xab, logits, training=False)))
            a_sum += float(tf.reduce_sum(adv.mi(xb, xab, logits, training=False)))
            count += len(xb)
        return n_sum / count, a_sum / count

    def on_epoch_end(self, epoch, logs=None):
        natural, adversarial = self.compute(self.model)
        if logs is not None:
            logs["val_natural_mi"] = natural
            logs["val_adversarial_mi"] = adversarial


__all__ = ["MIMonitor"]
