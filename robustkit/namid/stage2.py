"""Stage 2 of NAMID: the sample sets C, W, R, the estimators' losses and their training.

Example:

>>> import numpy as np
>>> from robustkit.namid import select_samples
>>> y = np.array([0, 0, 1])
>>> clean = np.array([[1., 0], [1, 0], [1, 0]]); adv = np.array([[0., 1], [1, 0], [1, 0]])
>>> [m.tolist() for m in select_samples(y, clean, adv)]
[[True, True, False], [True, False, False], [False, True, False]]

The natural and adversarial estimators (:mod:`robustkit.namid.estimator`) are trained on a
frozen adversarially trained target: the natural one to score natural outputs above
adversarial ones, the adversarial one the reverse (Zhou et al., ICML 2022, Sec. 3).
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit import _log
from robustkit._validation import (
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_positive,
)
from robustkit.models.adapter import as_logits_fn
from robustkit.namid.estimator import AdversarialMIEstimator, MIEstimator, NaturalMIEstimator

#: stage-2 objectives (see :func:`estimator_losses`)
OBJECTIVES = ("paper", "cosine", "dv")


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
    adversarially wrong, ``R`` = C and adversarially right (see the module example)."""
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

    Example:

    >>> import numpy as np
    >>> nat = NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    >>> z = np.random.default_rng(1).normal(size=(4, 10)).astype("float32")
    >>> loss_n, loss_a, gap_n, gap_a = estimator_losses(nat, adv, x, x, z, z, "paper", False)
    >>> float(gap_n), float(loss_n)       # same logits on both sides: no gap
    (0.0, -0.0)
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


def _check_training(features, epochs, batch_size, learning_rate):
    return (
        check_int(features, "features"),
        check_int(epochs, "epochs"),
        check_int(batch_size, "batch_size", minimum=2),
        check_positive(learning_rate, "learning_rate"),
    )


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
        _log.info(
            f"estimators epoch {epoch + 1}/{epochs}: " + " ".join(f"{v:.4f}" for v in history[-1]),
            verbose,
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
        verbose: 1 logs the epoch losses (``robustkit._log``).

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
    >>> nat, adv, info = rk.namid.train_namid_estimators(
    ...     target, (x[:64], y[:64]), rk.attacks.PGD(eps=0.1, steps=2),
    ...     features=16, epochs=1, batch_size=32)
    >>> sorted(info["counts"])
    ['C', 'R', 'W']
    """
    x, y = _check_data(data)
    features, epochs, batch_size, learning_rate = _check_training(
        features, epochs, batch_size, learning_rate
    )
    objective = check_choice(objective, set(OBJECTIVES), "objective")
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
    >>> est, info = rk.namid.train_standard_estimator(
    ...     rk.models.small_cnn((8, 8, 1)), (x[:32], y[:32]),
    ...     rk.attacks.PGD(eps=0.1, steps=1), features=8, epochs=1, batch_size=16)
    >>> est.pattern
    'standard'
    """
    x, y = _check_data(data)
    features, epochs, batch_size, learning_rate = _check_training(
        features, epochs, batch_size, learning_rate
    )
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


__all__ = [
    "OBJECTIVES",
    "estimator_losses",
    "select_samples",
    "train_namid_estimators",
    "train_standard_estimator",
    "training_set",
]
