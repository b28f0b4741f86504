"""NAMID's MI term ``L_mi`` (Zhou et al., ICML 2022, Sec. 3) and its pieces.

``L_mi = L_cos(E_n(h(x~')), E_n(h(x'))) + L_cos(E_a(h(x~')), E_a(h(x'))) +
lam * mean(E_a(h(x~')) - E_n(h(x~')))`` over the selected samples, ``L_cos(a, b) =
|1 - cos(a, b)|`` the cosine across the batch of per-sample MI estimates. The released
code trains with ``lam = 0`` (the term is commented out in ``train_MIAT.py``) and sets
``L_mi = 0`` when no sample is selected; the ``lam`` term is the paper's only.

Example:

>>> import numpy as np
>>> from robustkit.namid import l_cos
>>> round(float(l_cos(np.array([1.0, 0.0]), np.array([1.0, 1.0]))), 4)   # 1 - 1/sqrt(2)
0.2929
"""

import tensorflow as tf


def weighted_mean(values, sample_weight=None):
    """Mean over the batch, weighted by ``sample_weight`` when given."""
    if sample_weight is None:
        return tf.reduce_mean(values)
    w = tf.cast(tf.reshape(sample_weight, [-1]), values.dtype)
    return tf.reduce_sum(values * w) / tf.maximum(tf.reduce_sum(w), 1e-12)


def cosine(a, b, mask=None):
    """The cosine of ``a`` and ``b`` across the batch (masked entries dropped; 0 when a
    vector is zero), as ``torch.cosine_similarity(a * mask, b * mask, dim=0)``.

    Example:

    >>> round(float(cosine([1.0, 1.0, 5.0], [1.0, 0.0, -3.0], mask=[1, 1, 0])), 4)
    0.7071
    """
    a = tf.cast(a, tf.float32)
    b = tf.cast(b, tf.float32)
    if mask is not None:
        m = tf.cast(mask, tf.float32)
        a, b = a * m, b * m
    num = tf.reduce_sum(a * b)
    return num / tf.sqrt(tf.reduce_sum(a * a) * tf.reduce_sum(b * b) + 1e-12)


def l_cos(a, b, mask=None):
    """``|1 - cos(a, b)|`` with the cosine taken across the batch (masked entries dropped).

    Example:

    >>> import numpy as np
    >>> round(float(l_cos(np.array([1., 2.]), np.array([2., 4.]))), 6)
    0.0
    >>> round(float(l_cos(np.array([1., 0.]), np.array([0., 1.]))), 6)
    1.0
    """
    return tf.abs(1.0 - cosine(a, b, mask))


#: how a sample's predicted class is read off the logits (see :func:`predicted_class`)
SELECTIONS = ("argmax", "softmax_batch_axis")


def predicted_class(logits, selection="argmax"):
    """The predicted classes ``(B,)`` by which NAMID selects its samples.

    ``"argmax"`` (default): the argmax of the logits. ``"softmax_batch_axis"``: the
    released code's ``F.softmax(model(x), dim=0).max(1)``: the softmax runs over the
    *batch*, so the class is ``argmax_k z_ik - logsumexp_j z_jk`` (a per-class batch
    prior is subtracted; with one sample every class ties and class 0 wins).

    Example:

    >>> import numpy as np
    >>> z = np.array([[2.0, 1.0], [5.0, 1.0]], "float32")
    >>> predicted_class(z).numpy().tolist()
    [0, 0]
    >>> predicted_class(z, "softmax_batch_axis").numpy().tolist()   # 2 - lse(2, 5) < 1 - lse(1, 1)
    [1, 0]
    """
    logits = tf.cast(logits, tf.float32)
    if selection == "softmax_batch_axis":
        logits = logits - tf.reduce_logsumexp(logits, axis=0, keepdims=True)
    elif selection != "argmax":
        raise ValueError(f"Unknown `selection` {selection!r}; expected one of {list(SELECTIONS)}.")
    return tf.argmax(logits, -1)


def selection_mask(kind, y, logits_clean, logits_adv, sample_weight=None, selection="argmax"):
    """Per-example weights of the samples the MI term uses (no gradient).

    ``"wrong"``: clean-correct and adversarially wrong (the set W NAMID's
    estimators are trained on); ``"correct"``: clean-correct (C); ``"all"``.
    ``selection``: how the predicted classes are read (:func:`predicted_class`).

    Example:

    >>> import numpy as np
    >>> eye = np.eye(2, dtype="float32")
    >>> selection_mask("wrong", np.array([0, 1]), eye, eye[[1, 1]]).numpy().tolist()
    [1.0, 0.0]
    """
    y = tf.cast(tf.reshape(y, [-1]), tf.int64)
    ones = tf.ones_like(y, tf.float32)
    if kind == "all":
        mask = ones
    else:
        correct = tf.equal(predicted_class(logits_clean, selection), y)
        if kind == "wrong":
            adv_wrong = tf.not_equal(predicted_class(logits_adv, selection), y)
            correct = tf.logical_and(correct, adv_wrong)
        mask = tf.cast(correct, tf.float32)
    if sample_weight is not None:
        mask = mask * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    return tf.stop_gradient(mask)


def namid_mi_loss(
    natural, adversarial, x, x_adv, logits_clean, logits_adv, mask, lam=0.0, mi_floor=0.0
):
    """NAMID's ``L_mi`` and its parts (natural / adversarial MI of ``h(x~)``).

    ``lam``: weight of the paper's ``E_a(h(x~')) - E_n(h(x~'))`` term (0, as the released
    code trains; the paper: 0.1). ``L_mi`` is 0 when the mask selects nothing (the release).
    ``mi_floor``: in the ``lam`` term the adversarial-MI estimates are clamped
    below at this value (default 0: MI is non-negative, and a frozen DV
    estimator can be driven to arbitrarily negative values by the model's
    logits, which then swamps the CE term); ``None`` uses the raw estimates
    (the paper's formula verbatim).

    Returns ``(l_mi, parts)`` with parts ``cos_n``, ``cos_a``, ``natural_mi``,
    ``adversarial_mi`` (raw means over the selected samples).
    """
    en_adv, en_nat = natural.mi_pair(x, x_adv, logits_adv, logits_clean, training=False)
    ea_adv, ea_nat = adversarial.mi_pair(x, x_adv, logits_adv, logits_clean, training=False)
    cos_n = l_cos(en_adv, en_nat, mask)
    cos_a = l_cos(ea_adv, ea_nat, mask)
    n_sel = tf.maximum(tf.reduce_sum(mask), 1e-12)
    natural_mi = tf.reduce_sum(en_adv * mask) / n_sel
    adversarial_mi = tf.reduce_sum(ea_adv * mask) / n_sel
    ea_term = ea_adv if mi_floor is None else tf.maximum(ea_adv, float(mi_floor))
    l_mi = cos_n + cos_a + lam * (tf.reduce_sum(ea_term * mask) / n_sel - natural_mi)
    l_mi = tf.where(tf.reduce_sum(mask) > 0, l_mi, 0.0)
    return l_mi, {
        "cos_n": cos_n,
        "cos_a": cos_a,
        "natural_mi": natural_mi,
        "adversarial_mi": adversarial_mi,
    }


__all__ = [
    "SELECTIONS",
    "cosine",
    "l_cos",
    "namid_mi_loss",
    "predicted_class",
    "selection_mask",
    "weighted_mean",
]
