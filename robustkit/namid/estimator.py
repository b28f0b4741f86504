"""The NAMID estimators of natural and adversarial MI (Zhou et al., ICML 2022).

Example:

>>> import numpy as np
>>> from robustkit.namid import NaturalMIEstimator
>>> est = NaturalMIEstimator(input_shape=(8, 8, 1), num_classes=10, features=32)
>>> x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
>>> logits = np.random.default_rng(1).normal(size=(6, 10)).astype("float32")
>>> tuple(est.mi(x, x, logits).shape)       # one DV estimate per sample
(6,)

"Improving adversarial robustness via mutual information estimation" splits the
MI between an adversarial example ``x~ = x + n`` and the output ``h(x~)`` into a
*natural MI* ``I(x; h(x~))`` and an *adversarial MI* ``I(n; h(x~))``. Both are
estimated by Deep-InfoMax-style networks (Hjelm et al., 2019) with the DV
objective, built as the released code builds them (``models/estimator.py``,
``models/discriminators.py`` of the authors' repository, PyTorch's defaults):

* local branch on the pattern image (``x`` for the natural estimator, ``n``
  for the adversarial one; gradient stopped): conv 4x4/2 (C->64) BN ReLU,
  conv 4x4/2 (64->128) BN ReLU, a 1x1 residual block to ``features`` channels,
  LayerNorm -> P = (H/4)(W/4) local vectors;
* global branch on the target's logits (a 1x1 map): 1x1 conv-BN-ReLU-1x1 conv
  with a linear shortcut to ``features``, LayerNorm;
* convolutions before a BatchNorm have no bias; BatchNorm momentum 0.9 (PyTorch's
  0.1) and epsilon 1e-5, LayerNorm epsilon 1e-5; weights drawn as PyTorch draws them
  (``U(+-1/sqrt(fan_in))``); both linear shortcuts start as the identity on their
  input channels (the rest ``U(-0.01, 0.01)``) when ``features`` is at least their
  input width, so the global branch starts by copying the logits;
* scores ``s[i, j, p] = <G(h(b_i)), L(a_j)_p>`` and a per-sample DV estimate over the
  batch, the negatives of sample i being the other samples' local vectors
  (:func:`per_sample_dv`: ``dv="release"``, the released per-location form, or
  ``dv="pooled"``).

``features`` is 2048 in the paper (default); tests and CPU runs use 64-256.
Stage 2 of NAMID (:func:`robustkit.namid.train_namid_estimators`) trains both
estimators on a frozen adversarially trained target.
"""

import math

import keras
import tensorflow as tf

from robustkit._validation import check_choice, check_int
from robustkit.estimators import bounds

PATTERNS = ("natural", "adversarial", "standard")
#: per-sample DV forms (see :func:`per_sample_dv`)
DV_FORMS = ("release", "pooled")
#: PyTorch's normalisation defaults (BatchNorm momentum 0.1 there is 0.9 here)
BN_MOMENTUM = 0.9
NORM_EPSILON = 1e-5


def _batch_negatives(scores, joint, dv):
    """DV per row ``g`` of ``scores`` (G, B, P) whose own sample is ``g mod B``; ``joint``
    (G,) is that row's mean joint score ``mean_p s[g, g mod B, p]``."""
    b = tf.shape(scores)[1]
    reps = tf.shape(scores)[0] // b
    own = tf.tile(tf.eye(b, dtype=tf.bool), [reps, 1])[:, :, None]
    own = tf.broadcast_to(own, tf.shape(scores))
    if dv == "release":
        # per location p, over the samples j; the own score is zeroed (not removed), so
        # each sum holds a spurious e^0, and the mean divides by N - 1
        lse = tf.reduce_logsumexp(tf.where(own, tf.zeros_like(scores), scores), axis=1)
        n_neg = tf.cast(tf.maximum(b - 1, 1), tf.float32)
        return joint - tf.reduce_mean(lse, axis=1) + tf.math.log(n_neg)
    flat = [tf.shape(scores)[0], -1]
    return bounds.dv(joint[:, None], tf.reshape(scores, flat), tf.reshape(own, flat))


def per_sample_dv(scores, dv="release"):
    """Per-sample DV estimates from a score tensor ``scores[i, j, p]`` (B, B, P), in nats.

    ``dv="release"`` (default; the released ``donsker_varadhan_loss``, negated): per
    location p, the other samples' scores at that location are the marginal, and the own
    score is *zeroed* rather than removed, so each sum carries a spurious ``e^0``:
    ``I_i = mean_p [ s[i, i, p] - log((sum_{j != i} exp s[i, j, p] + 1) / (B - 1)) ]``.
    ``dv="pooled"``: one marginal over every other sample and location,
    ``I_i = mean_p s[i, i, p] - log mean_{j != i, p} exp s[i, j, p]``
    (:func:`robustkit.estimators.bounds.dv`). By Jensen the pooled value is lower when
    the per-location marginals differ.

    Example (sample 0's joint scores are 1, everything else 0):

    >>> import numpy as np
    >>> s = np.zeros((3, 3, 2), "float32"); s[0, 0] = 1.0
    >>> [round(float(v), 4) for v in per_sample_dv(s, dv="pooled")]
    [1.0, 0.0, 0.0]
    >>> [round(float(v), 4) for v in per_sample_dv(s)]     # 1 - log(3/2), -log(3/2), ...
    [0.5945, -0.4055, -0.4055]
    """
    dv = check_choice(dv, set(DV_FORMS), "dv")
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    b = tf.shape(scores)[0]
    p = tf.shape(scores)[2]
    eye = tf.eye(b, dtype=tf.float32)[:, :, None]
    joint = tf.reduce_sum(scores * eye, axis=[1, 2]) / tf.cast(p, tf.float32)
    return _batch_negatives(scores, joint, dv)


def dv_from_features(glob, local, dv="release"):
    """Per-sample DV estimates from global vectors ``glob`` (G, d) and local vectors
    ``local`` (B, P, d), G a multiple k*B of B (row ``g`` pairs with sample ``g mod B``):
    :func:`per_sample_dv` of ``s[g, j, p] = <glob_g, local_jp>`` computed as one
    (G, d) x (d, B*P) matrix product, the joint term as ``<glob_g, mean_p local_gp>``.

    Example:

    >>> import numpy as np
    >>> glob = np.eye(2, dtype="float32"); local = np.eye(2, dtype="float32")[:, None, :]
    >>> [round(float(v), 4) for v in dv_from_features(glob, local, dv="pooled")]  # 1 - log e^0
    [1.0, 1.0]
    >>> [round(float(v), 4) for v in dv_from_features(glob, local)]   # 1 - log((e^0 + 1) / 1)
    [0.3069, 0.3069]
    """
    dv = check_choice(dv, set(DV_FORMS), "dv")
    glob = tf.cast(tf.convert_to_tensor(glob), tf.float32)
    local = tf.cast(tf.convert_to_tensor(local), tf.float32)
    b = tf.shape(local)[0]
    p = tf.shape(local)[1]
    d = tf.shape(local)[2]
    reps = tf.shape(glob)[0] // b
    scores = tf.matmul(glob, tf.reshape(local, [b * p, d]), transpose_b=True)
    scores = tf.reshape(scores, [reps * b, b, p])
    joint = tf.reduce_sum(glob * tf.tile(tf.reduce_mean(local, 1), [reps, 1]), -1)
    return _batch_negatives(scores, joint, dv)


def pattern_of(kind, x, x_adv):
    """The pattern image an estimator reads: ``x``, ``x_adv - x`` or ``x_adv``."""
    if kind == "natural":
        return x
    if kind == "adversarial":
        return x_adv - x
    return x_adv


class _IdentityShortcut(keras.initializers.Initializer):
    """The released shortcut initialisation: ``U(-0.01, 0.01)`` with ones on the diagonal
    of the (input channels, output channels) matrix (``n_out >= n_in``)."""

    def __call__(self, shape, dtype=None):
        w = keras.initializers.RandomUniform(-0.01, 0.01)(shape, dtype=dtype)
        eye = tf.reshape(tf.eye(shape[-2], shape[-1], dtype=w.dtype), shape)
        return tf.where(eye > 0, tf.ones_like(w), w)


def _torch_init(fan_in):
    """PyTorch's default ``(kernel, bias)`` initialisers of a layer with ``fan_in`` inputs:
    both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    limit = 1.0 / math.sqrt(fan_in)
    return keras.initializers.RandomUniform(-limit, limit), keras.initializers.RandomUniform(
        -limit, limit
    )


def _conv(filters, kernel, n_in, name, strides=1, bias=False, identity=False):
    """A Conv2D (``padding="same"``: PyTorch's ``padding=1`` for 4x4/2 on even sizes)."""
    k_init, b_init = _torch_init(kernel * kernel * n_in)
    if identity and filters >= n_in:
        k_init = _IdentityShortcut()
    return keras.layers.Conv2D(
        filters,
        kernel,
        strides=strides,
        padding="same",
        use_bias=bias,
        kernel_initializer=k_init,
        bias_initializer=b_init,
        name=name,
    )


def _dense(units, n_in, name, bias=False, identity=False):
    """A Dense layer (a 1x1 convolution on a 1x1 map), initialised as PyTorch's Conv2d."""
    k_init, b_init = _torch_init(n_in)
    if identity and units >= n_in:
        k_init = _IdentityShortcut()
    return keras.layers.Dense(
        units, use_bias=bias, kernel_initializer=k_init, bias_initializer=b_init, name=name
    )


def _bn(name):
    return keras.layers.BatchNormalization(momentum=BN_MOMENTUM, epsilon=NORM_EPSILON, name=name)


def _ln(name):
    return keras.layers.LayerNormalization(epsilon=NORM_EPSILON, name=name)


@keras.saving.register_keras_serializable(package="robustkit")
class MIEstimator(keras.Model):
    """Deep-InfoMax-style estimator of ``I(pattern; h(x))`` (NAMID's architecture).

    Args:
        input_shape: image shape ``(H, W, C)`` (MNIST 28x28x1, CIFAR 32x32x3, ...).
        num_classes: width of the target's logits.
        features: width of the local and global feature vectors (2048 in the
            paper; default 2048).
        pattern: which image the local branch reads: ``"natural"`` (``x``),
            ``"adversarial"`` (``n = x~ - x``) or ``"standard"`` (``x~``, the
            standard MI used by WMIM).
        dv: the per-sample DV form, ``"release"`` (default, the released code's
            per-location form) or ``"pooled"``; see :func:`per_sample_dv`. Stage 2
            and stage 3 read it from the estimator, so both use the same form.

    ``call((pattern_image, logits), training)`` returns the per-sample DV
    estimates (B,). :meth:`mi` builds the pattern from ``(x, x_adv)``.

    Example:

    >>> est = MIEstimator((8, 8, 1), 10, features=16, pattern="standard")
    >>> est.num_local
    4
    """

    def __init__(
        self, input_shape, num_classes=10, features=2048, pattern="natural", dv="release", **kwargs
    ):
        super().__init__(**kwargs)
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"`input_shape` must be (H, W, C); got {input_shape!r}.")
        self.image_shape = shape
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        self.features = check_int(features, "features")
        self.pattern = check_choice(pattern, set(PATTERNS), "pattern")
        self.dv = check_choice(dv, set(DV_FORMS), "dv")
        d, c, k = self.features, shape[-1], self.num_classes
        self.l_conv1 = _conv(64, 4, c, "local_conv1", strides=2)
        self.l_bn1 = _bn("local_bn1")
        self.l_conv2 = _conv(128, 4, 64, "local_conv2", strides=2)
        self.l_bn2 = _bn("local_bn2")
        self.l_res1 = _conv(d, 1, 128, "local_res1")
        self.l_res_bn = _bn("local_res_bn")
        self.l_res2 = _conv(d, 1, d, "local_res2", bias=True)
        self.l_short = _conv(d, 1, 128, "local_shortcut", identity=True)
        self.l_norm = _ln("local_norm")
        # The logits as a 1x1 map: 1x1 convolutions are dense layers.
        self.g_fc1 = _dense(d, k, "global_conv1")
        self.g_bn = _bn("global_bn")
        self.g_fc2 = _dense(d, d, "global_conv2", bias=True)
        self.g_short = _dense(d, k, "global_shortcut", identity=True)
        self.g_norm = _ln("global_norm")
        h, w = shape[0], shape[1]
        self.num_local = math.ceil(math.ceil(h / 2) / 2) * math.ceil(math.ceil(w / 2) / 2)
        # Create the weights now so that a reloaded estimator is ready to use.
        self.call((tf.zeros((2, *shape)), tf.zeros((2, self.num_classes))))

    # ----------------------------------------------------------- branches
    def local_features(self, pattern, training=False):
        """(B, P, features) LayerNorm-ed local vectors of the pattern image.

        The pattern is read through ``stop_gradient``. When the estimator is
        frozen (``trainable=False``, as in stage 3) the output is stopped too,
        so no gradient tape records a backward pass through the local branch
        (its variables stay watchable ``tf.Variable``s otherwise).
        """
        t = tf.stop_gradient(tf.cast(pattern, tf.float32))
        t = tf.nn.relu(self.l_bn1(self.l_conv1(t), training=training))
        t = tf.nn.relu(self.l_bn2(self.l_conv2(t), training=training))
        r = self.l_res2(tf.nn.relu(self.l_res_bn(self.l_res1(t), training=training)))
        t = self.l_norm(r + self.l_short(t))
        t = tf.reshape(t, [tf.shape(t)[0], -1, self.features])
        return t if self.trainable else tf.stop_gradient(t)

    def global_features(self, logits, training=False):
        """(B, features) LayerNorm-ed global vector of the logits."""
        t = tf.cast(logits, tf.float32)
        r = self.g_fc2(tf.nn.relu(self.g_bn(self.g_fc1(t), training=training)))
        return self.g_norm(r + self.g_short(t))

    def scores(self, pattern, logits, training=False):
        """``s[i, j, p] = <G(logits_i), L(pattern_j)_p>`` (B, B, P)."""
        local = self.local_features(pattern, training)
        glob = self.global_features(logits, training)
        return tf.einsum("id,jpd->ijp", glob, local)

    def call(self, inputs, training=False):
        pattern, logits = inputs
        local = self.local_features(pattern, training)
        return dv_from_features(self.global_features(logits, training), local, self.dv)

    def mi(self, x, x_adv, logits, training=False):
        """Per-sample estimate of I(pattern(x, x_adv); logits) in nats, (B,)."""
        x = tf.cast(x, tf.float32)
        x_adv = tf.cast(x_adv, tf.float32)
        return self((pattern_of(self.pattern, x, x_adv), logits), training=training)

    def mi_pair(self, x, x_adv, logits_a, logits_b, training=False):
        """``(mi(x, x_adv, logits_a), mi(x, x_adv, logits_b))`` with the local
        branch run once (the pattern is the same)."""
        pattern = pattern_of(self.pattern, tf.cast(x, tf.float32), tf.cast(x_adv, tf.float32))
        local = self.local_features(pattern, training)
        # Global branch per side (BatchNorm statistics stay per side in training
        # mode), then one score matrix product for both sides.
        glob = tf.concat(
            [self.global_features(logits_a, training), self.global_features(logits_b, training)], 0
        )
        mi = dv_from_features(glob, local, self.dv)
        return tuple(tf.split(mi, 2))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=list(self.image_shape),
            num_classes=self.num_classes,
            features=self.features,
            pattern=self.pattern,
            dv=self.dv,
        )
        return config

    @classmethod
    def from_config(cls, config):
        if "dv" not in config:
            raise ValueError(
                "This MI estimator was saved by an older robustkit (Keras normalisation "
                "defaults, convolution biases before BatchNorm): its weights do not fit the "
                "released layout; train stage 2 again (rk.namid.train_namid_estimators)."
            )
        return cls(**config)


@keras.saving.register_keras_serializable(package="robustkit")
class NaturalMIEstimator(MIEstimator):
    """Estimator of the natural MI ``I(x; h(.))`` (local branch on ``x``).

    Example:

    >>> NaturalMIEstimator((28, 28, 1), 10, features=64).num_local    # 7 x 7
    49
    """

    def __init__(self, input_shape, num_classes=10, features=2048, **kwargs):
        kwargs.pop("pattern", None)
        super().__init__(input_shape, num_classes, features, pattern="natural", **kwargs)


@keras.saving.register_keras_serializable(package="robustkit")
class AdversarialMIEstimator(MIEstimator):
    """Estimator of the adversarial MI ``I(n; h(.))``, ``n = x~ - x`` fed raw.

    Example:

    >>> AdversarialMIEstimator((32, 32, 3), 10, features=64).num_local  # 8 x 8
    64
    """

    def __init__(self, input_shape, num_classes=10, features=2048, **kwargs):
        kwargs.pop("pattern", None)
        super().__init__(input_shape, num_classes, features, pattern="adversarial", **kwargs)


__all__ = [
    "BN_MOMENTUM",
    "DV_FORMS",
    "NORM_EPSILON",
    "PATTERNS",
    "AdversarialMIEstimator",
    "MIEstimator",
    "NaturalMIEstimator",
    "dv_from_features",
    "pattern_of",
    "per_sample_dv",
]
