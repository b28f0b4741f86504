"""Variational bounds on mutual information, as pure functions of critic scores.

A critic ``T(x, z)`` is evaluated on *joint* pairs (x_i, z_i) drawn together and on
*marginal* pairs (x_i, z_j) with z shuffled. Every function reduces over the last
axis, so leading axes batch independent estimates (e.g. one per example in
per-sample MINE). All values are in nats.

Example:

>>> import numpy as np
>>> from robustkit.estimators import bounds
>>> joint = np.array([1.0, 1.0], "float32"); marginal = np.array([0.0, 0.0], "float32")
>>> round(float(bounds.dv(joint, marginal)), 4)        # 1 - log(1)
1.0
>>> round(float(bounds.nwj(joint, marginal)), 4)       # 1 - exp(-1)
0.6321

References: Donsker–Varadhan / MINE (Belghazi et al., 2018); NWJ (Nguyen,
Wainwright & Jordan, 2010; f-MINE); JSD (Hjelm et al., 2019, Deep InfoMax);
InfoNCE (van den Oord et al., 2018). Known limitation: every bound here
underestimates large MI (DV/NWJ have high variance, InfoNCE is capped at
log(batch size)), see McAllester & Stratos (2020).
"""

import math

import tensorflow as tf

#: how far an excluded marginal score is pushed down (see :func:`dv`)
_EXCLUDED = 1e9


def _f32(t):
    return tf.cast(tf.convert_to_tensor(t), tf.float32)


def _log_mean_exp(t, axis=-1):
    n = tf.cast(tf.shape(t)[axis], t.dtype)
    return tf.reduce_logsumexp(t, axis=axis) - tf.math.log(n)


def dv(joint, marginal, exclude=None):
    """Donsker–Varadhan: ``E_joint[T] - log E_marg[exp T]``, both means over the last axis.

    ``exclude`` (optional, boolean, the shape of ``marginal``) leaves entries out of the
    marginal term: the mean of ``exp T`` is over the others (at least one is counted). It
    serves every score layout robustkit uses, with the DV arithmetic written once:

    * plain: ``dv(joint, marginal)``;
    * all pairs of a per-example (K, K) score matrix (per-sample MINE): the diagonal is the
      joint, every pair (diagonal included) the marginal, i.e. the exact expectation over
      uniformly random shuffles: ``dv(diag(t), flatten(t))``;
    * batch negatives (NAMID's estimators, scores ``s[i, j, p]``): sample ``i``'s joint is
      ``mean_p s[i, i, p]`` and its marginal the pairs ``j != i``:
      ``dv(joint_i[:, None], flatten(s), exclude=flatten(j == i))``.

    Example (plain, then the three layouts on hand-computed scores):

    >>> import numpy as np
    >>> round(float(dv([1.0, 1.0], [0.0, 0.0])), 4)                # 1 - log 1
    1.0
    >>> t = np.array([[[2.0, 0.0], [0.0, 2.0]]], "float32")        # one example, K = 2
    >>> # all pairs: 2 - log((2 e^2 + 2) / 4)
    >>> round(float(dv(np.diagonal(t, axis1=1, axis2=2), t.reshape(1, 4))[0]), 4)
    0.5662
    >>> # batch negatives (the pairs j == i excluded): 2 - log(mean(e^0, e^0)) = 2
    >>> own = [[True, False, False, True]]
    >>> round(float(dv([[2.0]], [[2.0, 0.0, 0.0, 2.0]], exclude=own)[0]), 4)
    2.0
    """
    joint, marginal = _f32(joint), _f32(marginal)
    if exclude is None:
        return tf.reduce_mean(joint, axis=-1) - _log_mean_exp(marginal)
    exclude = tf.cast(tf.convert_to_tensor(exclude), tf.bool)
    exclude = tf.broadcast_to(exclude, tf.shape(marginal))
    kept = tf.reduce_sum(tf.cast(tf.logical_not(exclude), tf.float32), axis=-1)
    # an excluded entry is pushed down by 1e9 (exp underflows to 0), not to -inf: with
    # every entry excluded the result stays finite
    shifted = tf.where(exclude, marginal - _EXCLUDED, marginal)
    log_mean = tf.reduce_logsumexp(shifted, axis=-1) - tf.math.log(tf.maximum(kept, 1.0))
    return tf.reduce_mean(joint, axis=-1) - log_mean


def nwj(joint, marginal):
    """NWJ / f-MINE: ``E_joint[T] - e^{-1} E_marg[exp T]``."""
    joint, marginal = _f32(joint), _f32(marginal)
    return tf.reduce_mean(joint, axis=-1) - tf.exp(_log_mean_exp(marginal) - 1.0)


def jsd(joint, marginal):
    """Deep InfoMax JSD surrogate: ``E_joint[-softplus(-T)] - E_marg[softplus(T)]``.

    Not a bound on MI: a well-behaved objective whose maximiser also maximises MI.
    """
    joint, marginal = _f32(joint), _f32(marginal)
    return tf.reduce_mean(-tf.nn.softplus(-joint), axis=-1) - tf.reduce_mean(
        tf.nn.softplus(marginal), axis=-1
    )


def infonce(scores):
    """InfoNCE from a score matrix ``scores[..., i, j] = T(x_i, z_j)``.

    ``log B + mean_i [T_ii - logsumexp_j T_ij]``; never exceeds ``log B``.

    Example:

    >>> import numpy as np
    >>> s = np.eye(4, dtype="float32") * 100.0      # a perfect critic
    >>> round(float(infonce(s)), 4) == round(float(np.log(4)), 4)
    True
    """
    scores = _f32(scores)
    n = tf.shape(scores)[-1]
    diag = tf.linalg.diag_part(scores)
    return tf.math.log(tf.cast(n, tf.float32)) + tf.reduce_mean(
        diag - tf.reduce_logsumexp(scores, axis=-1), axis=-1
    )


def mine(joint, marginal, moving_average, decay=0.99):
    """MINE: DV with the moving-average correction of the gradient bias.

    Returns ``(estimate, surrogate, new_moving_average)``. ``estimate`` is the DV
    value; *maximise* ``surrogate``, whose gradient is
    ``E_joint[dT] - E_marg[e^T dT] / ma`` with ``ma`` the exponential moving
    average (``decay``) of ``E_marg[e^T]``, which removes the bias of the
    mini-batch gradient of ``log E_marg[e^T]``. ``moving_average`` is a tensor of
    the batch's leading shape (initialise it with ``None`` for the first step).

    Example:

    >>> import numpy as np
    >>> est, sur, ma = mine(np.ones(3, "float32"), np.zeros(3, "float32"), None)
    >>> round(float(est), 4), round(float(ma), 4)
    (1.0, 1.0)
    """
    joint, marginal = _f32(joint), _f32(marginal)
    mean_exp = tf.exp(_log_mean_exp(marginal))
    if moving_average is None:
        new_ma = tf.stop_gradient(mean_exp)
    else:
        new_ma = decay * _f32(moving_average) + (1.0 - decay) * tf.stop_gradient(mean_exp)
    estimate = tf.reduce_mean(joint, axis=-1) - tf.math.log(mean_exp)
    surrogate = tf.reduce_mean(joint, axis=-1) - mean_exp / tf.stop_gradient(new_ma)
    return estimate, surrogate, new_ma


def split_scores(scores):
    """Splits a square score matrix into joint (diagonal) and marginal (off-diagonal).

    Returns ``(joint[..., B], marginal[..., B*(B-1)])``: each sample's own pair and
    every pair with another sample's z, the usual way to get marginal samples
    from one batch without re-evaluating the critic.
    """
    scores = _f32(scores)
    n = tf.shape(scores)[-1]
    joint = tf.linalg.diag_part(scores)
    off = tf.logical_not(tf.eye(n, dtype=tf.bool))
    lead = tf.shape(scores)[:-2]
    marginal = tf.reshape(
        tf.boolean_mask(scores, tf.broadcast_to(off, tf.shape(scores))),
        tf.concat([lead, [n * (n - 1)]], axis=0),
    )
    return joint, marginal


def gaussian_mi(rho, dim):
    """Ground truth for jointly Gaussian X, Z with per-dimension correlation ``rho``:
    ``-(dim / 2) * log(1 - rho^2)`` nats.

    >>> round(gaussian_mi(0.5, 20), 3)
    2.877
    """
    return -0.5 * dim * math.log(1.0 - rho * rho)


BOUNDS = {"dv": dv, "nwj": nwj, "jsd": jsd}
