"""APGD's step-size schedule: checkpoints and the rules applied at them (L-inf/L2 and L1).

Example:

>>> from robustkit.attacks.apgd_schedule import step_checkpoints
>>> step_checkpoints(40)
[0, 8, 15, 21, 26, 30, 33, 35, 37, 39]
"""

import tensorflow as tf


def step_checkpoints(steps):
    """The iterations after which APGD (L-inf, L2) may halve its step: ``[0, w_1, w_2, ...]``.

    The reference's integer rule: the first window is ``max(int(0.22 n), 1)`` steps, each
    next one ``max(int(0.03 n), 1)`` shorter, never below ``max(int(0.06 n), 1)``.

    Example:

    >>> step_checkpoints(100)
    [0, 22, 41, 57, 70, 80, 87, 93, 99]
    """
    window = max(int(0.22 * steps), 1)
    shrink, least = max(int(0.03 * steps), 1), max(int(0.06 * steps), 1)
    out = [0]
    while out[-1] + window <= steps:
        out.append(out[-1] + window)
        window = max(window - shrink, least)
    return out


def l1_checkpoints(steps):
    """APGD-L1's checkpoints: every ``max(int(0.04 n), 1)`` steps.

    Example:

    >>> l1_checkpoints(100)[:4], len(l1_checkpoints(100))
    ([0, 4, 8, 12], 26)
    """
    every = max(int(0.04 * steps), 1)
    return list(range(0, steps + 1, every))


def l1_sparsity_update(eta, sp_old, sp_now, n_coords, eps):
    """APGD-L1's checkpoint rule, per example: ``(eta, sparsity, restore)``.

    The new sparsity (fraction of coordinates a step moves) is ``L0(x_best - x) / n / 1.5``;
    where the L0 norm of the best point fell by more than 5 % since the last checkpoint
    (``sp_now / sp_old < 0.95``) the step is reset to ``eps`` and the iterate restored to
    the best point (``restore``), elsewhere the step is divided by 1.5; it stays within
    ``[eps / 10, eps]``.

    Example:

    >>> eta, frac, restore = l1_sparsity_update(
    ...     tf.constant([1.0, 1.0]), tf.constant([100.0, 100.0]), tf.constant([90.0, 96.0]),
    ...     300, 3.0)
    >>> [round(float(v), 3) for v in eta], [round(float(v), 3) for v in frac]
    ([3.0, 0.667], [0.2, 0.213])
    >>> restore.numpy().tolist()
    [True, False]
    """
    restore = sp_now / tf.maximum(sp_old, 1.0) < 0.95
    eta = tf.where(restore, tf.fill(tf.shape(eta), float(eps)), eta / 1.5)
    eta = tf.clip_by_value(eta, eps / 10.0, float(eps))
    return eta, sp_now / float(n_coords) / 1.5, restore


def halving(count, window, halved_before, best_loss, best_loss_before, rho=0.75):
    """APGD's step-halving rule (L-inf, L2) at a checkpoint ending a ``window``-step window.

    Per example: condition (1) the loss rose in at most ``rho * window`` of the window's
    steps (``count``), or condition (2) the step was not halved at the previous checkpoint
    and the best loss has not improved since (APGD starts with ``halved_before`` set, so
    condition 2 is off at the first checkpoint, as in the reference).

    Example:

    >>> halving(tf.constant([12.0, 13.0]), 16.0, tf.constant([True, True]),
    ...         tf.constant([1.0, 1.0]), tf.constant([1.0, 1.0])).numpy().tolist()
    [True, False]
    """
    cond1 = count <= rho * window
    cond2 = tf.logical_and(tf.logical_not(halved_before), best_loss <= best_loss_before)
    return tf.logical_or(cond1, cond2)


__all__ = ["halving", "l1_checkpoints", "l1_sparsity_update", "step_checkpoints"]
