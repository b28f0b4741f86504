"""Critics ``T(x, z)`` for variational MI bounds, as Keras layers.

Every critic maps a batch of paired samples ``x`` (B, dx) and ``z`` (B, dz) to
the full score matrix ``scores[i, j] = T(x_i, z_j)`` (B, B): the diagonal holds
the joint pairs, the off-diagonal entries the marginal pairs, ready for
:func:`robustkit.estimators.bounds.split_scores` or ``bounds.infonce``.

Example:

>>> import numpy as np
>>> from robustkit.estimators.critics import SeparableCritic
>>> critic = SeparableCritic(hidden=32, embed=8)
>>> x = np.zeros((5, 3), "float32"); z = np.zeros((5, 2), "float32")
>>> tuple(critic(x, z).shape)
(5, 5)

Two designs (Poole et al., 2019, "On variational bounds of mutual information"):

* :class:`SeparableCritic` ``T(x, z) = f(x) . g(z)``: one MLP pass per sample,
  so all B^2 scores cost a single matrix product (default of ``estimate_mi``).
* :class:`ConcatCritic` ``T(x, z) = MLP([x, z])`` (MINE's statistics network):
  more expressive, but the MLP runs on all B^2 pairs.
"""

import keras
import tensorflow as tf

from robustkit._validation import check_int


def _mlp(hidden, layers, out, name, activation="relu"):
    blocks = [
        keras.layers.Dense(hidden, activation=activation, name=f"{name}_dense{i}")
        for i in range(layers)
    ]
    blocks.append(keras.layers.Dense(out, name=f"{name}_out"))
    return blocks


def _run(blocks, t):
    for layer in blocks:
        t = layer(t)
    return t


@keras.saving.register_keras_serializable(package="robustkit")
class SeparableCritic(keras.layers.Layer):
    """``T(x, z) = f(x) . g(z)`` with two ReLU MLPs.

    Args:
        hidden: width of the hidden layers (default 256).
        layers: hidden layers per branch (default 2).
        embed: dimension of ``f(x)`` and ``g(z)`` (default 32).

    Example:

    >>> import numpy as np
    >>> c = SeparableCritic(hidden=16, layers=1, embed=4)
    >>> s = c(np.ones((3, 2), "float32"), np.ones((3, 2), "float32"))
    >>> bool(np.allclose(s, np.asarray(s)[0, 0]))    # identical pairs, identical scores
    True
    """

    def __init__(self, hidden=256, layers=2, embed=32, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden = check_int(hidden, "hidden")
        self.num_layers = check_int(layers, "layers", minimum=0)
        self.embed = check_int(embed, "embed")
        self.activation = activation
        self.f = _mlp(self.hidden, self.num_layers, self.embed, "f", activation)
        self.g = _mlp(self.hidden, self.num_layers, self.embed, "g", activation)

    def call(self, x, z):
        fx = _run(self.f, tf.cast(x, tf.float32))
        gz = _run(self.g, tf.cast(z, tf.float32))
        return tf.matmul(fx, gz, transpose_b=True)

    def get_config(self):
        config = super().get_config()
        config.update(
            hidden=self.hidden, layers=self.num_layers, embed=self.embed, activation=self.activation
        )
        return config


@keras.saving.register_keras_serializable(package="robustkit")
class ConcatCritic(keras.layers.Layer):
    """``T(x, z) = MLP([x, z])``, evaluated on all B^2 pairs (MINE's critic).

    Args:
        hidden: width of the hidden layers (default 256).
        layers: hidden layers (default 2).

    Example:

    >>> import numpy as np
    >>> c = ConcatCritic(hidden=8, layers=1)
    >>> tuple(c(np.zeros((4, 3), "float32"), np.zeros((4, 1), "float32")).shape)
    (4, 4)
    """

    def __init__(self, hidden=256, layers=2, activation="relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden = check_int(hidden, "hidden")
        self.num_layers = check_int(layers, "layers", minimum=0)
        self.activation = activation
        self.mlp = _mlp(self.hidden, self.num_layers, 1, "t", activation)

    def call(self, x, z):
        x = tf.cast(x, tf.float32)
        z = tf.cast(z, tf.float32)
        n = tf.shape(x)[0]
        # pairs[i, j] = [x_i, z_j]
        xx = tf.repeat(x[:, None, :], n, axis=1)
        zz = tf.repeat(z[None, :, :], n, axis=0)
        pairs = tf.concat([xx, zz], axis=-1)
        flat = tf.reshape(pairs, [n * n, x.shape[-1] + z.shape[-1]])
        return tf.reshape(_run(self.mlp, flat), [n, n])

    def get_config(self):
        config = super().get_config()
        config.update(hidden=self.hidden, layers=self.num_layers, activation=self.activation)
        return config


CRITICS = {"separable": SeparableCritic, "concat": ConcatCritic}
