"""Black-box transfer: craft adversarial examples on a surrogate, use them on a target.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> def mlp():
...     return keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                              keras.layers.Dense(10)])
>>> surrogate, target = mlp(), mlp()
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> atk = rk.attacks.Transfer(surrogate, rk.attacks.PGD(eps=0.1, steps=5))
>>> x_adv = atk(target, x, np.array([0, 1, 2, 3]))   # gradients of `surrogate` only
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True

The NAMID paper's black-box setting (Zhou et al., ICML 2022, Table 2) transfers
PGD-40 / AutoAttack / FWA-40 examples from a VGG-19 surrogate trained with PGD-AT.
"""

import keras
import tensorflow as tf

from robustkit.attacks.base import Attack, as_logits_fn


@keras.saving.register_keras_serializable(package="robustkit")
class Transfer(Attack):
    """Runs ``attack`` on ``surrogate`` and returns its examples for the target.

    ``Transfer(surrogate, attack)(target, x, y)`` never queries the target's
    gradients; ``y=None`` uses the *target's* predictions as labels. The examples
    stay in ``attack``'s threat model. Any robustkit attack works (PGD,
    AutoAttack, Square, ...); its per-example bookkeeping (best point,
    early stop) refers to the surrogate.

    Args:
        surrogate: a Keras model or callable returning logits, with the same
            input shape and number of classes as the target.
        attack: a :class:`robustkit.attacks.Attack` instance.
        batch_size: examples per compiled call (default: the attack's).

    ``get_config`` stores the attack only: the surrogate's weights cannot live in
    a config, so ``Transfer.from_config(config, surrogate=model)`` needs it again.

    Reports name it ``"Transfer(<inner label>)"`` and count it as black-box
    (``black_box = True``); ``norm``, ``eps`` and ``bounds`` are the inner attack's,
    so the evaluator checks the outputs against the inner attack's ball.
    """

    black_box = True

    def __init__(self, surrogate, attack, batch_size=None, jit_compile="auto", seed=None):
        if not isinstance(attack, Attack):
            raise ValueError(
                "`attack` must be a robustkit.attacks.Attack instance; got "
                f"{type(attack).__name__}."
            )
        if surrogate is None or not callable(surrogate):
            raise ValueError(
                f"`surrogate` must be a Keras model or a callable returning logits; got "
                f"{type(surrogate).__name__}."
            )
        super().__init__(
            batch_size=attack.batch_size if batch_size is None else batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )
        self.surrogate = surrogate
        self.attack = attack
        self._surrogate_fn = as_logits_fn(surrogate)
        self.uses_labels = attack.uses_labels

    @property
    def label(self):
        return f"Transfer({self.attack.label})"

    @property
    def norm(self):
        return getattr(self.attack, "norm", None)

    @property
    def eps(self):
        return getattr(self.attack, "eps", None)

    @property
    def bounds(self):
        return self.attack.bounds

    def get_config(self):
        config = super().get_config()
        config["attack"] = keras.saving.serialize_keras_object(self.attack)
        return config

    @classmethod
    def from_config(cls, config, surrogate=None):
        if surrogate is None:
            raise ValueError(
                "`surrogate` is required: Transfer.from_config(config, surrogate=model) "
                "(a config cannot hold the surrogate's weights)."
            )
        config = dict(config)
        attack = keras.saving.deserialize_keras_object(config.pop("attack"))
        return cls(surrogate, attack, **config)

    def _check_call(self, x, y, num_classes):
        out = self._surrogate_fn(x[:1])
        if out.shape.rank != 2 or int(out.shape[-1]) != num_classes:
            raise ValueError(
                f"`surrogate` must return logits with the target's {num_classes} classes; "
                f"got shape {tuple(out.shape)}."
            )
        self.attack._check_call(x, y, num_classes)

    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe: ``attack.perturb`` on the surrogate (``model_fn`` is unused)."""
        del model_fn
        return self.attack.perturb(self._surrogate_fn, x, y)
