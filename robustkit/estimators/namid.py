"""The NAMID estimators of natural and adversarial MI (Zhou et al., ICML 2022).

Example:

>>> import numpy as np
>>> from robustkit.estimators import NaturalMIEstimator
>>> est = NaturalMIEstimator(input_shape=(8, 8, 1), num_classes=10, features=32)
>>> x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
>>> logits = np.random.default_rng(1).normal(size=(6, 10)).astype("float32")
>>> tuple(est.mi(x, x, logits).shape)       # one DV estimate per sample
(6,)

"Improving adversarial robustness via mutual information estimation" splits the
MI between an adversarial example ``x~ = x + n`` and the output ``h(x~)`` into a
*natural MI* ``I(x; h(x~))`` and an *adversarial MI* ``I(n; h(x~))``. Both are
estimated by Deep-InfoMax-style networks (Hjelm et al., 2019) with the DV
objective:

* local branch on the pattern image (``x`` for the natural estimator, ``n``
  for the adversarial one; gradient stopped): conv 4x4/2 (C->64) BN ReLU,
  conv 4x4/2 (64->128) BN ReLU, a 1x1 residual block to ``features`` channels,
  LayerNorm -> P = (H/4)(W/4) local vectors;
* global branch on the target's logits (a 1x1 map): 1x1 conv-BN-ReLU-1x1 conv
  with a linear shortcut to ``features``, LayerNorm;
* scores ``s[i, j, p] = <G(h(b_i)), L(a_j)_p>``; per-sample DV over the batch,
  the negatives of sample i being the other samples' local vectors:
  ``I_i = mean_p s[i, i, p] - log mean_{j != i, p} exp s[i, j, p]``.

``features`` is 2048 in the paper (default); tests and CPU runs use 64-256.
Stage 2 of NAMID (:func:`train_namid_estimators`) trains both estimators on a
frozen adversarially trained target.
"""

import base64
import io
import math

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import (
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_positive,
)
from robustkit.attacks.base import as_logits_fn

PATTERNS = ("natural", "adversarial", "standard")


def per_sample_dv(scores):
    """Per-sample DV estimates from a score tensor ``scores[i, j, p]`` (B, B, P).

    ``I_i = mean_p s[i, i, p] - log mean_{j != i, p} exp s[i, j, p]`` (nats).

    Example:

    >>> import numpy as np
    >>> s = np.zeros((3, 3, 2), "float32"); s[0, 0] = 1.0
    >>> [round(float(v), 4) for v in per_sample_dv(s)]
    [1.0, 0.0, 0.0]
    """
    scores = tf.cast(tf.convert_to_tensor(scores), tf.float32)
    b = tf.shape(scores)[0]
    p = tf.shape(scores)[2]
    eye = tf.eye(b, dtype=tf.float32)[:, :, None]
    joint = tf.reduce_sum(scores * eye, axis=[1, 2]) / tf.cast(p, tf.float32)
    masked = scores - eye * 1e9  # drop j == i from the marginal
    n_marg = tf.cast(tf.maximum(b - 1, 1) * p, tf.float32)
    marginal = tf.reduce_logsumexp(masked, axis=[1, 2]) - tf.math.log(n_marg)
    return joint - marginal


def _dv_from_features(glob, local):
    """Per-sample DV estimates from global vectors ``glob`` (G, d) and local
    vectors ``local`` (B, P, d), G a multiple k*B of B (row ``g`` pairs with
    sample ``g mod B``): :func:`per_sample_dv` of ``s[g, j, p] = <glob_g,
    local_jp>`` computed as one (G, d) x (d, B*P) matrix product; the joint
    term as ``<glob_g, mean_p local_gp>`` (no (G, B, P) diagonal mask)."""
    b = tf.shape(local)[0]
    p = tf.shape(local)[1]
    d = tf.shape(local)[2]
    reps = tf.shape(glob)[0] // b
    scores = tf.matmul(glob, tf.reshape(local, [b * p, d]), transpose_b=True)
    scores = tf.reshape(scores, [reps * b, b, p])
    joint = tf.reduce_sum(glob * tf.tile(tf.reduce_mean(local, 1), [reps, 1]), -1)
    eye = tf.tile(tf.eye(b, dtype=scores.dtype), [reps, 1])[:, :, None]
    n_marg = tf.cast(tf.maximum(b - 1, 1) * p, tf.float32)
    marginal = tf.reduce_logsumexp(scores - eye * 1e9, axis=[1, 2]) - tf.math.log(n_marg)
    return joint - marginal


def pattern_of(kind, x, x_adv):
    """The pattern image an estimator reads: ``x``, ``x_adv - x`` or ``x_adv``."""
    if kind == "natural":
        return x
    if kind == "adversarial":
        return x_adv - x
    return x_adv


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

    ``call((pattern_image, logits), training)`` returns the per-sample DV
    estimates (B,). :meth:`mi` builds the pattern from ``(x, x_adv)``.

    Example:

    >>> est = MIEstimator((8, 8, 1), 10, features=16, pattern="standard")
    >>> est.num_local
    4
    """

    def __init__(self, input_shape, num_classes=10, features=2048, pattern="natural", **kwargs):
        super().__init__(**kwargs)
        shape = tuple(int(s) for s in input_shape)
        if len(shape) != 3 or min(shape) < 1:
            raise ValueError(f"`input_shape` must be (H, W, C); got {input_shape!r}.")
        self.image_shape = shape
        self.num_classes = check_int(num_classes, "num_classes", minimum=2)
        self.features = check_int(features, "features")
        self.pattern = check_choice(pattern, set(PATTERNS), "pattern")
        d = self.features
        conv = keras.layers.Conv2D
        self.l_conv1 = conv(64, 4, strides=2, padding="same", name="local_conv1")
        self.l_bn1 = keras.layers.BatchNormalization(name="local_bn1")
        self.l_conv2 = conv(128, 4, strides=2, padding="same", name="local_conv2")
        self.l_bn2 = keras.layers.BatchNormalization(name="local_bn2")
        self.l_res1 = conv(d, 1, name="local_res1")
        self.l_res_bn = keras.layers.BatchNormalization(name="local_res_bn")
        self.l_res2 = conv(d, 1, name="local_res2")
        self.l_short = conv(d, 1, name="local_shortcut")
        self.l_norm = keras.layers.LayerNormalization(name="local_norm")
        # The logits as a 1x1 map: 1x1 convolutions are dense layers.
        self.g_fc1 = keras.layers.Dense(d, name="global_conv1")
        self.g_bn = keras.layers.BatchNormalization(name="global_bn")
        self.g_fc2 = keras.layers.Dense(d, name="global_conv2")
        self.g_short = keras.layers.Dense(d, name="global_shortcut")
        self.g_norm = keras.layers.LayerNormalization(name="global_norm")
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
        return _dv_from_features(self.global_features(logits, training), local)

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
        mi = _dv_from_features(glob, local)
        return tuple(tf.split(mi, 2))

    def get_config(self):
        config = super().get_config()
        config.update(
            input_shape=list(self.image_shape),
            num_classes=self.num_classes,
            features=self.features,
            pattern=self.pattern,
        )
        return config

    @classmethod
    def from_config(cls, config):
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


# ------------------------------------------------------------ (de)serialisation
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
    import os

    os.makedirs(path, exist_ok=True)
    for name, est in estimators.items():
        est.save(os.path.join(path, f"{name}.keras"))


def load_estimators(path, names=("natural", "adversarial")):
    """Loads estimators saved by :func:`save_estimators` (frozen), as a tuple."""
    import os

    out = []
    for name in names:
        file = os.path.join(path, f"{name}.keras")
        if not os.path.exists(file):
            raise FileNotFoundError(f"No estimator {name!r} at {file}.")
        est = keras.saving.load_model(file, compile=False)
        est.trainable = False
        out.append(est)
    return tuple(out)


# ------------------------------------------------------------------ stage 2
def _cosine(a, b):
    """Cosine similarity of two vectors (across the batch)."""
    num = tf.reduce_sum(a * b)
    den = tf.sqrt(tf.reduce_sum(a * a) * tf.reduce_sum(b * b)) + 1e-8
    return num / den


def _predict(fn, x, batch_size):
    return np.concatenate(
        [fn(tf.constant(x[s : s + batch_size])).numpy() for s in range(0, len(x), batch_size)]
    )


def select_samples(y, logits_clean, logits_adv):
    """NAMID's sample sets as boolean masks: ``C`` (clean-correct), ``W`` = C and
    adversarially wrong, ``R`` = C and adversarially right.

    Example:

    >>> import numpy as np
    >>> y = np.array([0, 0, 1])
    >>> clean = np.array([[1., 0], [1, 0], [1, 0]]); adv = np.array([[0., 1], [1, 0], [1, 0]])
    >>> [m.tolist() for m in select_samples(y, clean, adv)]
    [[True, True, False], [True, False, False], [False, True, False]]
    """
    y = np.asarray(y).reshape(-1)
    c = np.argmax(logits_clean, -1) == y
    adv_right = np.argmax(logits_adv, -1) == y
    return c, c & ~adv_right, c & adv_right


def training_set(counts, objective="paper"):
    """Which set stage 2 trains on, and with which objective.

    ``W`` when it has at least 2 samples, else ``C``; with fewer than 2
    clean-correct samples, all samples with plain DV maximisation.

    Example:

    >>> training_set({"C": 0, "W": 0, "R": 0})
    ('all', 'dv')
    >>> training_set({"C": 50, "W": 1, "R": 49})
    ('C', 'paper')
    """
    if counts["W"] >= 2:
        return "W", objective
    if counts["C"] >= 2:
        return "C", objective
    return "all", "dv"


def estimator_losses(natural, adversarial, x, x_adv, logits_clean, logits_adv, mode, training=True):
    """Stage-2 losses (to minimise) of the natural and adversarial estimators.

    ``mode="paper"``: the natural estimator maximises ``E_n(h(x')) - E_n(h(x~'))``
    and the adversarial one ``E_a(h(x~')) - E_a(h(x'))`` (Zhou et al., 2022, Sec. 3).
    ``mode="cosine"``: our reading of the released code: each estimator
    maximises its DV estimate on its own side (natural outputs for ``E_n``,
    adversarial outputs for ``E_a``) and minimises the cosine similarity, across
    the batch, between its per-sample estimates on natural and adversarial
    outputs. ``mode="dv"``: plain DV maximisation on the own side only (used when
    no clean-correct sample exists).

    Returns ``(loss_natural, loss_adversarial, gap_natural, gap_adversarial)``,
    the gaps being ``mean E_n(h(x')) - E_n(h(x~'))`` and ``mean E_a(h(x~')) - E_a(h(x'))``.
    """
    en_nat, en_adv = natural.mi_pair(x, x_adv, logits_clean, logits_adv, training=training)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=training)
    gap_n = tf.reduce_mean(en_nat - en_adv)
    gap_a = tf.reduce_mean(ea_adv - ea_nat)
    if mode == "paper":
        return -gap_n, -gap_a, gap_n, gap_a
    if mode == "cosine":
        return (
            -tf.reduce_mean(en_nat) + _cosine(en_nat, en_adv),
            -tf.reduce_mean(ea_adv) + _cosine(ea_adv, ea_nat),
            gap_n,
            gap_a,
        )
    return -tf.reduce_mean(en_nat), -tf.reduce_mean(ea_adv), gap_n, gap_a


def _check_data(data):
    if not isinstance(data, (tuple, list)) or len(data) != 2:
        raise ValueError("`data` must be a pair (x, y) of numpy arrays.")
    x, y = data
    x = np.asarray(check_images(np.asarray(x, dtype="float32"), "x"), dtype="float32")
    y = np.asarray(check_labels(np.asarray(y), n=len(x), name="y")).astype("int64")
    if len(x) < 2:
        raise ValueError(f"`data` needs at least 2 examples; got {len(x)}.")
    return x, y


def _schedule(learning_rate, milestones, steps_per_epoch):
    bounds = [int(m) * steps_per_epoch for m in milestones]
    values = [learning_rate * (0.1**k) for k in range(len(bounds) + 1)]
    if not bounds:
        return learning_rate
    return keras.optimizers.schedules.PiecewiseConstantDecay(bounds, values)


def _fit_estimators(
    ests, loss_fn, arrays, epochs, batch_size, learning_rate, milestones, seed, verbose
):
    """Shared Adam loop of stage 2: ``loss_fn(*batch) -> (losses..., logs...)``."""
    n = len(arrays[0])
    batch = min(batch_size, n)
    steps_per_epoch = max(1, n // batch)
    opts = [
        keras.optimizers.Adam(_schedule(learning_rate, milestones, steps_per_epoch)) for _ in ests
    ]
    for opt, est in zip(opts, ests):
        opt.build(est.trainable_variables)

    @tf.function
    def step(*batch_arrays):
        with tf.GradientTape(persistent=True) as tape:
            out = loss_fn(*batch_arrays)
        for k, (opt, est) in enumerate(zip(opts, ests)):
            grads = tape.gradient(out[k], est.trainable_variables)
            opt.apply(grads, est.trainable_variables)
        del tape
        return out

    rng = np.random.default_rng(seed)
    history = []
    for epoch in range(epochs):
        order = rng.permutation(n)
        sums = None
        for b in range(steps_per_epoch):
            idx = order[b * batch : (b + 1) * batch]
            out = step(*[tf.constant(a[idx]) for a in arrays])
            vals = np.array([float(v) for v in out])
            sums = vals if sums is None else sums + vals
        history.append(sums / steps_per_epoch)
        if verbose:
            print(
                f"estimators epoch {epoch + 1}/{epochs}: "
                + " ".join(f"{v:.4f}" for v in history[-1])
            )
    return np.array(history)


def train_namid_estimators(
    target,
    data,
    attack,
    features=2048,
    epochs=25,
    batch_size=400,
    learning_rate=1e-2,
    milestones=(10, 20),
    objective="paper",
    seed=0,
    verbose=0,
):
    """Stage 2 of NAMID: trains the natural and adversarial estimators on a frozen target.

    Args:
        target: the (adversarially trained) classifier returning logits; frozen
            (attacked and evaluated in inference mode only).
        data: ``(x, y)`` numpy arrays (training images in [0, 1], labels).
        attack: the attack that makes ``x~`` (e.g. ``rk.attacks.PGD(eps, steps=10)``).
        features: estimator feature width (2048 in the paper).
        epochs, batch_size, learning_rate, milestones: Adam at 1e-2, x0.1 at
            epochs 10 and 20, 25 epochs, batch 400 (the paper's defaults).
        objective: ``"paper"`` (default), ``"cosine"`` (the released code's
            variant as we read it) or ``"dv"``; see :func:`estimator_losses`.
        seed: seed of the initialisation and the batch order.

    The samples: ``C`` = clean-correct, ``W`` = C and adversarially wrong,
    ``R`` = C and adversarially right (counts in the returned info). The
    estimators train on ``W`` (natural samples the target gets right whose
    adversarial samples fool it: the pairs where natural and adversarial
    dependence differ); when ``W`` has fewer than 2 samples they train on ``C``,
    and when ``C`` has fewer than 2, on all samples with plain DV maximisation.

    Returns:
        ``(natural, adversarial, info)``: the two frozen estimators and a dict
        with ``counts`` (C, W, R), ``used`` (the set trained on), ``objective``
        and ``history`` (per epoch: loss_n, loss_a, gap_n, gap_a).

    Example:

    >>> import robustkit as rk
    >>> x, y = rk.data.load("digits", "train")
    >>> target = rk.models.small_cnn((8, 8, 1))
    >>> nat, adv, info = rk.estimators.train_namid_estimators(
    ...     target, (x[:64], y[:64]), rk.attacks.PGD(eps=0.1, steps=2),
    ...     features=16, epochs=1, batch_size=32)
    >>> sorted(info["counts"])
    ['C', 'R', 'W']
    """
    x, y = _check_data(data)
    features = check_int(features, "features")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    learning_rate = check_positive(learning_rate, "learning_rate")
    objective = check_choice(objective, {"paper", "cosine", "dv"}, "objective")
    fn = as_logits_fn(target)
    logits_clean = _predict(fn, x, 500)
    x_adv = np.asarray(attack(target, x, y), dtype="float32")
    logits_adv = _predict(fn, x_adv, 500)
    c, w, r = select_samples(y, logits_clean, logits_adv)
    counts = {"C": int(c.sum()), "W": int(w.sum()), "R": int(r.sum())}
    used, objective = training_set(counts, objective)
    mask = {"W": w, "C": c, "all": np.ones(len(x), bool)}[used]
    keras.utils.set_random_seed(seed)
    shape, k = x.shape[1:], logits_clean.shape[-1]
    natural = NaturalMIEstimator(shape, k, features)
    adversarial = AdversarialMIEstimator(shape, k, features)

    def loss_fn(xb, xab, lcb, lab):
        return estimator_losses(natural, adversarial, xb, xab, lcb, lab, objective, training=True)

    arrays = [
        a[mask] for a in (x, x_adv, logits_clean.astype("float32"), logits_adv.astype("float32"))
    ]
    history = _fit_estimators(
        [natural, adversarial],
        loss_fn,
        arrays,
        epochs,
        batch_size,
        learning_rate,
        milestones,
        seed,
        verbose,
    )
    natural.trainable = False
    adversarial.trainable = False
    info = {"counts": counts, "used": used, "objective": objective, "history": history.tolist()}
    return natural, adversarial, info


def train_standard_estimator(
    target,
    data,
    attack,
    features=2048,
    epochs=25,
    batch_size=400,
    learning_rate=1e-2,
    milestones=(10, 20),
    seed=0,
    verbose=0,
):
    """Trains the estimator of the standard MI ``I(x~; h(x~))`` (for WMIM) on a
    frozen target by plain DV maximisation; same defaults as
    :func:`train_namid_estimators`. Returns ``(estimator, info)``.

    Example:

    >>> import robustkit as rk
    >>> x, y = rk.data.load("digits", "train")
    >>> est, info = rk.estimators.train_standard_estimator(
    ...     rk.models.small_cnn((8, 8, 1)), (x[:32], y[:32]),
    ...     rk.attacks.PGD(eps=0.1, steps=1), features=8, epochs=1, batch_size=16)
    >>> est.pattern
    'standard'
    """
    x, y = _check_data(data)
    features = check_int(features, "features")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size", minimum=2)
    learning_rate = check_positive(learning_rate, "learning_rate")
    fn = as_logits_fn(target)
    x_adv = np.asarray(attack(target, x, y), dtype="float32")
    logits_adv = _predict(fn, x_adv, 500).astype("float32")
    keras.utils.set_random_seed(seed)
    est = MIEstimator(x.shape[1:], logits_adv.shape[-1], features, pattern="standard")

    def loss_fn(xb, xab, lab):
        mi = tf.reduce_mean(est.mi(xb, xab, lab, training=True))
        return -mi, mi

    history = _fit_estimators(
        [est],
        loss_fn,
        [x, x_adv, logits_adv],
        epochs,
        batch_size,
        learning_rate,
        milestones,
        seed,
        verbose,
    )
    est.trainable = False
    return est, {"history": history.tolist()}
