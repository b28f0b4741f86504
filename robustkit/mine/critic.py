"""The batched statistics network of per-sample MINE and its all-pairs DV bound.

Every example has its own statistics network ``T``; :class:`BatchedCritic` stores the
networks of a batch as weights with a leading example axis and applies them with batched
matmuls / ``einsum``, as pure functions of a parameter dict.

Example:

>>> import tensorflow as tf
>>> from robustkit.mine import BatchedCritic
>>> critic = BatchedCritic((4, 4), filters=2, hidden=5, out=3)      # 4x4 feature maps
>>> params = critic.init(batch=2, seed=0)
>>> a = tf.zeros([2, 6, 4, 4])                                        # K = 6 maps each
>>> ha, hb = critic.branch(params, "a", a), critic.branch(params, "b", a)
>>> tuple(critic.pair_scores(params, ha, hb).shape)
(2, 6, 6)
"""

import math

import tensorflow as tf

from robustkit.estimators import bounds


def _glorot(shape, fan_in, fan_out, seed=None):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    if seed is None:
        return tf.random.uniform(shape, -limit, limit)
    return tf.random.stateless_uniform(shape, seed, -limit, limit)


class BatchedCritic:
    """A batch of statistics networks, one per example, as pure functions.

    conv mode (samples are (H, W) maps), per branch: conv ``filters``@2x2 -> flatten ->
    dense ``hidden`` -> dense ``out`` (no activations); branches summed, ReLU, dense 1 (no
    bias), as in the paper's code. projection mode (samples are vectors): the conv is left
    out.
    """

    def __init__(self, sample_shape, filters, hidden, out):
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.conv = len(self.sample_shape) == 2
        self.filters, self.hidden, self.out = filters, hidden, out
        if self.conv:
            h, w = self.sample_shape
            if h < 2 or w < 2:
                raise ValueError(f"feature maps must be at least 2x2; got {self.sample_shape}.")
            self.flat = (h - 1) * (w - 1) * filters
            self.positions = (h - 1) * (w - 1)
        else:
            self.flat = self.sample_shape[0]

    def init(self, batch, seed=None):
        """Fresh parameters (glorot-uniform kernels, zero biases) for ``batch`` examples.

        With ``seed`` (an int) the draw is stateless: example ``i`` of every call
        gets the same initial network, so an estimate is a deterministic function
        of its inputs (common random numbers when two estimates are compared).
        """
        p = {}
        keys = iter(range(1, 100))

        def glorot(shape, fan_in, fan_out):
            sub = None if seed is None else tf.constant([int(seed), next(keys)], tf.int32)
            return _glorot(shape, fan_in, fan_out, sub)

        for br in ("a", "b"):
            if self.conv:
                p[br + "_ck"] = glorot([batch, 4, self.filters], 4, 4 * self.filters)
                p[br + "_cb"] = tf.zeros([batch, self.filters])
            if self.conv:  # stored filter-major: (filters, positions, hidden)
                shape = [batch, self.filters, self.flat // self.filters, self.hidden]
            else:
                shape = [batch, self.flat, self.hidden]
            p[br + "_k1"] = glorot(shape, self.flat, self.hidden)
            p[br + "_b1"] = tf.zeros([batch, self.hidden])
            p[br + "_k2"] = glorot([batch, self.hidden, self.out], self.hidden, self.out)
            p[br + "_b2"] = tf.zeros([batch, self.out])
        p["k3"] = glorot([batch, self.out], self.out, 1)
        return p

    def branch(self, p, br, s):
        """``s``: (B, K, H, W) maps or (B, K, D) vectors -> (B, K, out).

        conv mode: conv 2x2 -> flatten -> dense is linear, so the conv kernel is
        folded into the dense kernel once per step (``4 x (H-1)(W-1) x hidden``
        per example) and the K samples' 2x2 patches are multiplied with it: same
        function and same parameter gradients as :meth:`branch_direct`, but the
        K x (H-1)(W-1) x filters conv output is never formed (``filters / 4``
        times fewer multiply-adds in the big product; 4x for the paper's 16).
        """
        if not self.conv:
            h = tf.matmul(s, p[br + "_k1"]) + p[br + "_b1"][:, None, :]
            return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]
        b, k = tf.shape(s)[0], tf.shape(s)[1]
        k1 = tf.reshape(p[br + "_k1"], [b, self.filters, -1])  # (B, F, P * hidden)
        # w[:, i] = sum_f ck[i, f] k1[f]: the dense kernel seen through patch offset i
        w = tf.reshape(tf.matmul(p[br + "_ck"], k1), [b, 4 * self.positions, self.hidden])
        const = tf.reshape(tf.matmul(p[br + "_cb"][:, None, :], k1), [b, -1, self.hidden])
        const = tf.reduce_sum(const, axis=1) + p[br + "_b1"]
        shifted = tf.stack(
            [s[:, :, :-1, :-1], s[:, :, :-1, 1:], s[:, :, 1:, :-1], s[:, :, 1:, 1:]], axis=2
        )  # (B, K, 4, H-1, W-1): the 2x2 patches, offset-major
        h = tf.matmul(tf.reshape(shifted, [b, k, 4 * self.positions]), w) + const[:, None, :]
        return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]

    def branch_direct(self, p, br, s):
        """The statistics network's branch layer by layer (reference for :meth:`branch`)."""
        if not self.conv:
            return self.branch(p, br, s)
        patches = tf.stack(
            [s[:, :, :-1, :-1], s[:, :, :-1, 1:], s[:, :, 1:, :-1], s[:, :, 1:, 1:]], axis=-1
        )
        h = tf.einsum("bkhwi,bif->bkhwf", patches, p[br + "_ck"])
        h = h + p[br + "_cb"][:, None, None, None, :]
        h = tf.reshape(h, [tf.shape(s)[0], tf.shape(s)[1], -1, self.filters])
        h = tf.einsum("bkpf,bfpo->bko", h, p[br + "_k1"]) + p[br + "_b1"][:, None, :]
        return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]

    def head(self, p, h):
        return tf.einsum("bko,bo->bk", tf.nn.relu(h), p["k3"])

    def scores(self, p, a, b, perms):
        """Joint (B, K) and marginal (B, K * len(perms)) scores."""
        ha, hb = self.branch(p, "a", a), self.branch(p, "b", b)
        return self.scores_from_branches(p, ha, hb, perms)

    def scores_from_branches(self, p, ha, hb, perms):
        joint = self.head(p, ha + hb)
        marg = [self.head(p, ha + tf.gather(hb, perm, batch_dims=1)) for perm in perms]
        return joint, tf.concat(marg, axis=-1)

    def pair_scores(self, p, ha, hb):
        """``T[b, i, j] = T(a_i, b_j)`` for every pair (B, K, K) from branch outputs.

        ``T`` is ``head(branch_a(a) + branch_b(b))``: every pair costs one add and
        the head, no further branch pass.
        """
        h = tf.nn.relu(ha[:, :, None, :] + hb[:, None, :, :])
        return tf.einsum("bijo,bo->bij", h, p["k3"])


def dv_all_pairs(t):
    """DV bound from all-pairs scores ``t`` (B, K, K): joint = diagonal, marginal =
    all K^2 pairs, i.e. the exact expectation over uniformly random shuffles of the
    ``x_adv`` samples (``P(perm(k) = j) = 1/K`` for every j, including k); see
    :func:`robustkit.estimators.bounds.dv`.

    >>> import numpy as np
    >>> t = np.array([[[2.0, 0.0], [0.0, 2.0]]], "float32")
    >>> round(float(dv_all_pairs(t)[0]), 4)  # 2 - log((2 e^2 + 2) / 4)
    0.5662
    """
    t = tf.convert_to_tensor(t, tf.float32)
    joint = tf.linalg.diag_part(t)
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return bounds.dv(joint, flat)


def random_perm(batch, k, seed=None):
    """One uniformly random permutation of ``range(k)`` per example, (batch, k); ``seed``:
    op-level seed (a seeded op repeats its sequence of draws in a new graph)."""
    return tf.argsort(tf.random.uniform([batch, k], seed=seed), axis=-1)


__all__ = ["BatchedCritic", "dv_all_pairs", "random_perm"]
