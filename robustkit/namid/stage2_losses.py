"""The losses of NAMID's stage 2 (estimator training) and the sample sets C, W, R.

Example:

>>> import numpy as np
>>> from robustkit.namid import select_samples
>>> y = np.array([0, 0, 1])
>>> clean = np.array([[1., 0], [1, 0], [1, 0]]); adv = np.array([[0., 1], [1, 0], [1, 0]])
>>> [m.tolist() for m in select_samples(y, clean, adv)]
[[True, True, False], [True, False, False], [False, True, False]]

Objectives (``objective=`` of :func:`robustkit.namid.train_namid_estimators`):

* ``"release"`` (default): the losses of the released ``train_MI_estimator.py``
  (:func:`release_losses`), on full batches with the sets as masks;
* ``"only_max"``: the released ``train_MI_estimator_only_max.py``, plain DV
  maximisation on the own side (:func:`only_max_losses`), on full batches;
* ``"paper"``: the paper's difference (Sec. 3), on the set W only;
* ``"cosine"``: an earlier reading of the released code (own-side DV plus a signed
  cosine on W), kept for comparison; ``"release"`` is what the code computes;
* ``"dv"``: plain own-side DV on all samples (the fallback of ``"paper"`` and
  ``"cosine"`` when fewer than 2 samples are clean-correct).
"""

import numpy as np
import tensorflow as tf

from robustkit.namid.mi_loss import cosine, predicted_class

#: stage-2 objectives (see the module docstring)
OBJECTIVES = ("release", "only_max", "paper", "cosine", "dv")
#: the objectives trained on full batches with per-batch masks and adversarial examples
BATCH_OBJECTIVES = ("release", "only_max")


def select_samples(y, logits_clean, logits_adv, selection="argmax"):
    """NAMID's sample sets as boolean masks: ``C`` (clean-correct), ``W`` = C and
    adversarially wrong, ``R`` = C and adversarially right (see the module example).
    ``selection``: how the predicted classes are read
    (:func:`robustkit.namid.mi_loss.predicted_class`)."""
    y = np.asarray(y).reshape(-1)
    c = predicted_class(np.asarray(logits_clean, "float32"), selection).numpy() == y
    adv_right = predicted_class(np.asarray(logits_adv, "float32"), selection).numpy() == y
    return c, c & ~adv_right, c & adv_right


def training_set(counts, objective="paper"):
    """Which set the ``"paper"`` / ``"cosine"`` objectives train on, and with which objective.

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


def _masked_sum(values, mask):
    return tf.reduce_sum(values * mask)


def _count(mask):
    return tf.reduce_sum(mask)


def _per(total, count):
    """``total / count``, 0 when ``count`` is 0 (no NaN in either branch's gradient)."""
    return tf.where(count > 0, total / tf.maximum(count, 1.0), 0.0)


def _gaps(en_nat, en_adv, ea_adv, ea_nat, mask):
    """Mean ``E_n(h(x)) - E_n(h(x~))`` and ``E_a(h(x~)) - E_a(h(x))`` over ``mask``."""
    n = _count(mask)
    return _per(_masked_sum(en_nat - en_adv, mask), n), _per(_masked_sum(ea_adv - ea_nat, mask), n)


def release_losses(natural, adversarial, x, x_adv, logits_clean, logits_adv, masks, training=True):
    """The released stage-2 losses (``train_MI_estimator.py``, ``MI_loss_nat`` /
    ``MI_loss_adv``) on one full batch.

    With ``l = -MI`` the per-sample losses (natural estimator ``ln``, adversarial ``la``),
    ``masks = (C, W, R, _)`` float masks of the batch and ``|cos(a, b)|`` the cosine across
    the batch of the masked vectors:

    * natural: ``[5 |cos(ln(h(x)), ln(h(x~)))|_W + sum_W ln(h(x)) / |C|]
      + 0.5 [5 |1 - cos(ln(h(x)), ln(h(x~)))|_R + sum_R ln(h(x)) / |C|]``;
    * adversarial: ``[5 |cos(la(h(x~)), la(h(x)))|_W + mean_W la(h(x~))]
      + 0.5 [8 |1 - cos(la(h(x)), la(h(x~)))|_R - 0.1 mean_R la(h(x~))]``;

    a bracket whose set is empty is 0; when C is empty both losses are the plain DV
    losses over the batch, ``mean ln(h(x))`` and ``mean la(h(x~))``. The masked-out
    samples still serve as DV negatives and in BatchNorm's batch statistics.

    Returns ``(loss_natural, loss_adversarial, gap_natural, gap_adversarial)``, the gaps
    being the mean ``E_n(h(x)) - E_n(h(x~))`` and ``E_a(h(x~)) - E_a(h(x))`` over W.
    """
    c, w, r = (tf.cast(m, tf.float32) for m in masks[:3])
    en_nat, en_adv = natural.mi_pair(x, x_adv, logits_clean, logits_adv, training=training)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=training)
    ln_nat, ln_adv, la_adv, la_nat = -en_nat, -en_adv, -ea_adv, -ea_nat
    n_c, n_w, n_r = _count(c), _count(w), _count(r)
    on_w, on_r = tf.cast(n_w > 0, tf.float32), tf.cast(n_r > 0, tf.float32)

    nat_w = 5.0 * tf.abs(cosine(ln_nat, ln_adv, w)) + _per(_masked_sum(ln_nat, w), n_c)
    nat_r = 5.0 * tf.abs(1.0 - cosine(ln_nat, ln_adv, r)) + _per(_masked_sum(ln_nat, r), n_c)
    loss_n = on_w * nat_w + 0.5 * on_r * nat_r

    adv_w = 5.0 * tf.abs(cosine(la_adv, la_nat, w)) + _per(_masked_sum(la_adv, w), n_w)
    adv_r = 8.0 * tf.abs(1.0 - cosine(la_nat, la_adv, r)) - 0.1 * _per(_masked_sum(la_adv, r), n_r)
    loss_a = on_w * adv_w + 0.5 * on_r * adv_r

    loss_n = tf.where(n_c > 0, loss_n, tf.reduce_mean(ln_nat))
    loss_a = tf.where(n_c > 0, loss_a, tf.reduce_mean(la_adv))
    return (loss_n, loss_a, *_gaps(en_nat, en_adv, ea_adv, ea_nat, w))


def only_max_losses(natural, adversarial, x, x_adv, logits_clean, logits_adv, masks, training=True):
    """The released ``train_MI_estimator_only_max.py`` losses on one full batch: the natural
    estimator maximises its DV on ``h(x)`` over C, the adversarial one on ``h(x~)`` over the
    adversarially wrong samples A (not intersected with C); each falls back to the whole
    batch when its set is empty. ``masks = (C, W, R, A)``. Returns the losses and the gaps
    over W as :func:`release_losses`.
    """
    c, w, _, a = (tf.cast(m, tf.float32) for m in masks)
    en_nat, en_adv = natural.mi_pair(x, x_adv, logits_clean, logits_adv, training=training)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=training)
    loss_n = tf.where(
        _count(c) > 0, _per(_masked_sum(-en_nat, c), _count(c)), -tf.reduce_mean(en_nat)
    )
    loss_a = tf.where(
        _count(a) > 0, _per(_masked_sum(-ea_adv, a), _count(a)), -tf.reduce_mean(ea_adv)
    )
    return (loss_n, loss_a, *_gaps(en_nat, en_adv, ea_adv, ea_nat, w))


def estimator_losses(
    natural, adversarial, x, x_adv, logits_clean, logits_adv, mode, training=True, masks=None
):
    """Stage-2 losses (to minimise) of the natural and adversarial estimators.

    ``mode="release"`` / ``"only_max"``: :func:`release_losses` / :func:`only_max_losses`
    on a full batch with ``masks = (C, W, R, A)`` (A: adversarially wrong).
    ``mode="paper"``: the natural estimator maximises ``E_n(h(x')) - E_n(h(x~'))``
    and the adversarial one ``E_a(h(x~')) - E_a(h(x'))`` (Zhou et al., 2022, Sec. 3).
    ``mode="cosine"``: each estimator maximises its DV estimate on its own side (natural
    outputs for ``E_n``, adversarial outputs for ``E_a``) and minimises the signed cosine,
    across the batch, between its per-sample estimates on natural and adversarial
    outputs. ``mode="dv"``: plain DV maximisation on the own side only.

    Returns ``(loss_natural, loss_adversarial, gap_natural, gap_adversarial)``, the gaps
    being ``mean E_n(h(x')) - E_n(h(x~'))`` and ``mean E_a(h(x~')) - E_a(h(x'))`` (over
    W for the batch objectives).

    Example:

    >>> import numpy as np
    >>> from robustkit.namid import AdversarialMIEstimator, NaturalMIEstimator
    >>> nat = NaturalMIEstimator((8, 8, 1), 10, features=8)
    >>> adv = AdversarialMIEstimator((8, 8, 1), 10, features=8)
    >>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    >>> z = np.random.default_rng(1).normal(size=(4, 10)).astype("float32")
    >>> loss_n, loss_a, gap_n, gap_a = estimator_losses(nat, adv, x, x, z, z, "paper", False)
    >>> float(gap_n), float(loss_n)       # same logits on both sides: no gap
    (0.0, -0.0)
    """
    if mode in BATCH_OBJECTIVES:
        if masks is None:
            raise ValueError(f"mode {mode!r} needs `masks` = (C, W, R, A) of the batch.")
        fn = release_losses if mode == "release" else only_max_losses
        return fn(natural, adversarial, x, x_adv, logits_clean, logits_adv, masks, training)
    en_nat, en_adv = natural.mi_pair(x, x_adv, logits_clean, logits_adv, training=training)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=training)
    gap_n = tf.reduce_mean(en_nat - en_adv)
    gap_a = tf.reduce_mean(ea_adv - ea_nat)
    if mode == "paper":
        return -gap_n, -gap_a, gap_n, gap_a
    if mode == "cosine":
        return (
            -tf.reduce_mean(en_nat) + cosine(en_nat, en_adv),
            -tf.reduce_mean(ea_adv) + cosine(ea_adv, ea_nat),
            gap_n,
            gap_a,
        )
    return -tf.reduce_mean(en_nat), -tf.reduce_mean(ea_adv), gap_n, gap_a


__all__ = [
    "BATCH_OBJECTIVES",
    "OBJECTIVES",
    "estimator_losses",
    "only_max_losses",
    "release_losses",
    "select_samples",
    "training_set",
]
