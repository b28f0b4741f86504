"""Stage 2 of NAMID: training the MI estimators on a frozen target.

Example:

>>> from robustkit.namid.stage2 import OBJECTIVES
>>> OBJECTIVES[:3]
('release', 'only_max', 'paper')

The natural and adversarial estimators (:mod:`robustkit.namid.estimator`) are trained on a
frozen adversarially trained target (Zhou et al., ICML 2022, Sec. 3); their losses and the
sample sets C, W, R are in :mod:`robustkit.namid.stage2_losses`.
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
from robustkit.namid.estimator import (
    DV_FORMS,
    AdversarialMIEstimator,
    MIEstimator,
    NaturalMIEstimator,
)
from robustkit.namid.mi_loss import SELECTIONS, predicted_class
from robustkit.namid.stage2_losses import (
    BATCH_OBJECTIVES,
    OBJECTIVES,
    estimator_losses,
    select_samples,
    training_set,
)


def _predict(fn, x, batch_size):
    return np.concatenate(
        [fn(tf.constant(x[s : s + batch_size])).numpy() for s in range(0, len(x), batch_size)]
    )


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


def _batches(n, batch, drop_last):
    """``(start, stop)`` of one epoch's batches: the full ones, then the rest unless
    ``drop_last`` or it holds fewer than 2 samples (the DV needs a negative)."""
    ranges = [(lo, lo + batch) for lo in range(0, n - batch + 1, batch)]
    rest = n - len(ranges) * batch
    if not drop_last and rest >= 2:
        ranges.append((n - rest, n))
    return ranges


def _fit_estimators(
    ests, loss_fn, n, batch_of, epochs, batch_size, learning_rate, milestones, seed, verbose,
    drop_last=True, adam_epsilon=1e-7,
):  # fmt: skip
    """Shared Adam loop of stage 2 over ``n`` samples: ``batch_of(idx)`` returns the arrays
    of one batch and ``loss_fn(*arrays) -> (losses..., logs...)``, one loss per estimator."""
    batch = min(batch_size, n)
    ranges = _batches(n, batch, drop_last)
    lr = _schedule(learning_rate, milestones, len(ranges))
    opts = [keras.optimizers.Adam(lr, epsilon=adam_epsilon) for _ in ests]
    for opt, est in zip(opts, ests):
        opt.build(est.trainable_variables)

    @tf.function(reduce_retracing=True)
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
        for lo, hi in ranges:
            out = step(*[tf.constant(a) for a in batch_of(order[lo:hi])])
            vals = np.array([float(v) for v in out])
            sums = vals if sums is None else sums + vals
        history.append(sums / len(ranges))
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
    objective="release",
    dv="release",
    selection="argmax",
    seed=0,
    verbose=0,
):
    """Stage 2 of NAMID: trains the natural and adversarial estimators on a frozen target.

    Args:
        target: the (adversarially trained) classifier returning logits; frozen
            (attacked and evaluated in inference mode only).
        data: ``(x, y)`` numpy arrays (training images in [0, 1], labels).
        attack: the attack that makes ``x~`` (e.g. ``rk.attacks.PGD(eps, steps=10)``; the
            released default is L2 PGD-20 at eps 0.5 on CIFAR-10).
        features: estimator feature width (2048 in the paper).
        epochs, batch_size, learning_rate, milestones: Adam at 1e-2, x0.1 at
            epochs 10 and 20, 25 epochs, batch 400 (the released defaults).
        objective: ``"release"`` (default), ``"only_max"``, ``"paper"``, ``"cosine"`` or
            ``"dv"`` (:mod:`robustkit.namid.stage2_losses`). ``"release"`` and
            ``"only_max"`` train as the released code does: shuffled full batches (the
            last, smaller one included), a fresh ``attack`` on every batch, the sets C, W,
            R as masks of the batch, Adam with PyTorch's epsilon 1e-8. The others attack
            the data once and train on the set W only (C, or all samples with ``"dv"``,
            when W is too small).
        dv: the estimators' per-sample DV form, ``"release"`` (default) or ``"pooled"``
            (:func:`robustkit.namid.per_sample_dv`); stage 3 uses the same.
        selection: how predicted classes are read for C, W, R: ``"argmax"`` (default) or
            the released ``"softmax_batch_axis"`` (:func:`robustkit.namid.predicted_class`).
        seed: seed of the initialisation and the batch order.
        verbose: 1 logs the epoch losses (``robustkit._log``).

    Returns:
        ``(natural, adversarial, info)``: the two frozen estimators and a dict
        with ``counts`` (C, W, R: over the data; for the batch objectives summed over the
        last epoch's batches), ``used`` (the set trained on, ``"batch masks"`` for the
        batch objectives), ``objective``, ``dv``, ``selection`` and ``history`` (per
        epoch: loss_n, loss_a, gap_n, gap_a; the gaps over W).

    Example:

    >>> import robustkit as rk
    >>> x, y = rk.data.load("digits", "train")
    >>> target = rk.models.small_cnn((8, 8, 1))
    >>> nat, adv, info = rk.namid.train_namid_estimators(
    ...     target, (x[:64], y[:64]), rk.attacks.PGD(eps=0.1, steps=2),
    ...     features=16, epochs=1, batch_size=32)
    >>> sorted(info["counts"]), info["used"]
    (['C', 'R', 'W'], 'batch masks')
    """
    x, y = _check_data(data)
    features, epochs, batch_size, learning_rate = _check_training(
        features, epochs, batch_size, learning_rate
    )
    objective = check_choice(objective, set(OBJECTIVES), "objective")
    dv = check_choice(dv, set(DV_FORMS), "dv")
    selection = check_choice(selection, set(SELECTIONS), "selection")
    fn = as_logits_fn(target)
    logits_clean = _predict(fn, x, 500).astype("float32")
    batched = objective in BATCH_OBJECTIVES
    if not batched:  # one attack of the data, then the set W (C, all) only
        x_adv = np.asarray(attack(target, x, y), dtype="float32")
        logits_adv = _predict(fn, x_adv, 500).astype("float32")
        c, w, r = select_samples(y, logits_clean, logits_adv, selection)
        counts = {"C": int(c.sum()), "W": int(w.sum()), "R": int(r.sum())}
        used, objective = training_set(counts, objective)
        mask = {"W": w, "C": c, "all": np.ones(len(x), bool)}[used]
        arrays = [a[mask] for a in (x, x_adv, logits_clean, logits_adv)]
    keras.utils.set_random_seed(seed)
    shape, k = x.shape[1:], logits_clean.shape[-1]
    natural = NaturalMIEstimator(shape, k, features, dv=dv)
    adversarial = AdversarialMIEstimator(shape, k, features, dv=dv)

    def loss_fn(xb, xab, lcb, lab, *masks):
        return estimator_losses(
            natural, adversarial, xb, xab, lcb, lab, objective, True, masks or None
        )

    if batched:
        per_batch = []  # (C, W, R) counts of every batch

        def batch_of(idx):  # a fresh attack and fresh masks for every batch
            xb, yb, lcb = x[idx], y[idx], logits_clean[idx]
            xab = np.asarray(attack(target, xb, yb), dtype="float32")
            lab = _predict(fn, xab, 500).astype("float32")
            c, w, r = select_samples(yb, lcb, lab, selection)
            adv_wrong = predicted_class(lab, selection).numpy() != yb
            per_batch.append([int(m.sum()) for m in (c, w, r)])
            return [xb, xab, lcb, lab, *(m.astype("float32") for m in (c, w, r, adv_wrong))]

        n, drop_last = len(x), False
    else:
        n, drop_last = len(arrays[0]), True

        def batch_of(idx):
            return [a[idx] for a in arrays]

    history = _fit_estimators(
        [natural, adversarial], loss_fn, n, batch_of, epochs, batch_size, learning_rate,
        milestones, seed, verbose, drop_last=drop_last, adam_epsilon=1e-8 if batched else 1e-7,
    )  # fmt: skip
    if batched:
        last = np.sum(per_batch[-len(_batches(n, min(batch_size, n), False)) :], axis=0)
        counts, used = dict(zip("CWR", (int(v) for v in last))), "batch masks"
    natural.trainable = False
    adversarial.trainable = False
    info = {"counts": counts, "used": used, "objective": objective, "dv": dv}
    info.update(selection=selection, history=history.tolist())
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
    dv="release",
    seed=0,
    verbose=0,
):
    """Trains the estimator of the standard MI ``I(x~; h(x~))`` (for WMIM) on a
    frozen target by plain DV maximisation; same defaults as
    :func:`train_namid_estimators` (no released code exists for WMIM: one attack of the
    data, drop-last batches). Returns ``(estimator, info)``.

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
    dv = check_choice(dv, set(DV_FORMS), "dv")
    fn = as_logits_fn(target)
    x_adv = np.asarray(attack(target, x, y), dtype="float32")
    logits_adv = _predict(fn, x_adv, 500).astype("float32")
    keras.utils.set_random_seed(seed)
    est = MIEstimator(x.shape[1:], logits_adv.shape[-1], features, pattern="standard", dv=dv)
    arrays = (x, x_adv, logits_adv)

    def loss_fn(xb, xab, lab):
        mi = tf.reduce_mean(est.mi(xb, xab, lab, training=True))
        return -mi, mi

    history = _fit_estimators(
        [est], loss_fn, len(x), lambda idx: [a[idx] for a in arrays], epochs, batch_size,
        learning_rate, milestones, seed, verbose,
    )  # fmt: skip
    est.trainable = False
    return est, {"history": history.tolist()}


__all__ = [
    "BATCH_OBJECTIVES",
    "OBJECTIVES",
    "estimator_losses",
    "select_samples",
    "train_namid_estimators",
    "train_standard_estimator",
    "training_set",
]
