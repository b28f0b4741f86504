"""Per-sample MINE (Hsu et al., AAAI 2022): batched, one statistics network per example."""

import numpy as np
import pytest
import tensorflow as tf

from robustkit.mine import BatchedCritic, PerSampleMINE, dv_all_pairs


def test_mi_of_image_with_itself_exceeds_mi_with_noise(digits, digits_model):
    _, _, x, _ = digits
    x = x[:24]
    noise = np.random.default_rng(0).uniform(size=x.shape).astype("float32")
    mine = PerSampleMINE(digits_model, steps=100, hidden=16, lr=3e-3)
    same = mine.estimate(x, x)
    other = mine.estimate(x, noise)
    assert same.shape == (24,) and np.all(np.isfinite(same)) and np.all(np.isfinite(other))
    # all-pairs marginal: the DV value never exceeds log K (K = 32 maps of conv1)
    assert same.max() <= np.log(32) + 1e-4 and other.max() <= np.log(32) + 1e-4
    assert same.mean() > other.mean() + 0.1
    assert np.mean(same > other) >= 0.6
    # seeded initialisation: the estimate is a deterministic function of its inputs
    np.testing.assert_allclose(mine.estimate(x[:4], x[:4]), same[:4], rtol=1e-4, atol=1e-4)


def test_all_pairs_dv_on_hand_computed_scores():
    # example 0: T = [[2, 0], [0, 2]] -> 2 - log((2 e^2 + 2) / 4)
    # example 1: constant scores -> 0 (no dependence visible)
    t = np.array([[[2.0, 0.0], [0.0, 2.0]], [[1.0, 1.0], [1.0, 1.0]]], "float32")
    np.testing.assert_allclose(
        dv_all_pairs(t), [2.0 - np.log((2 * np.exp(2.0) + 2) / 4), 0.0], rtol=1e-6, atol=1e-6
    )


def test_critic_pair_scores_match_a_per_example_loop():
    """The batched all-pairs scores equal the statistics network applied pair by pair,
    example by example, with plain numpy (conv 2x2 -> dense -> dense per branch, sum,
    ReLU, dense 1)."""
    critic = BatchedCritic((4, 3), filters=2, hidden=5, out=3)
    params = critic.init(2, seed=3)
    rng = np.random.default_rng(0)
    a = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    b = rng.uniform(size=(2, 4, 4, 3)).astype("float32")
    got = critic.pair_scores(params, critic.branch(params, "a", a), critic.branch(params, "b", b))
    p = {k: v.numpy() for k, v in params.items()}

    def branch(e, br, m):
        conv = np.zeros((3, 2, 2))
        for i in range(3):
            for j in range(2):
                patch = np.array([m[i, j], m[i, j + 1], m[i + 1, j], m[i + 1, j + 1]])
                conv[i, j] = patch @ p[br + "_ck"][e] + p[br + "_cb"][e]
        # k1 is stored filter-major: k1[e][f, position, :]
        h = np.einsum("pf,fpo->o", conv.reshape(-1, 2), p[br + "_k1"][e]) + p[br + "_b1"][e]
        return h @ p[br + "_k2"][e] + p[br + "_b2"][e]

    for e in range(2):
        for i in range(4):
            for j in range(4):
                h = np.maximum(branch(e, "a", a[e, i]) + branch(e, "b", b[e, j]), 0.0)
                np.testing.assert_allclose(got[e, i, j], h @ p["k3"][e], rtol=1e-4, atol=1e-5)


def test_projection_mode_orders_similarity():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 8, 8, 1)).astype("float32")
    noise = rng.uniform(size=x.shape).astype("float32")
    tf.random.set_seed(0)
    mine = PerSampleMINE(
        None, mode="projection", projections=64, dim=16, steps=100, hidden=16, lr=3e-3
    )
    assert mine.resolved_mode() == "projection"
    assert mine.estimate(x, x).mean() > mine.estimate(x, noise).mean() + 0.3


def test_each_example_has_its_own_statistics_network():
    """Changing example 0's weights must not change example 1's scores."""
    critic = BatchedCritic((5, 5), filters=4, hidden=6, out=3)
    params = critic.init(2)
    a = tf.random.uniform([2, 7, 5, 5])
    b = tf.random.uniform([2, 7, 5, 5])
    perm = tf.constant([[1, 2, 3, 4, 5, 6, 0]] * 2)
    joint, marg = critic.scores(params, a, b, [perm])
    changed = dict(params)
    changed["a_k1"] = tf.concat([params["a_k1"][:1] + 1.0, params["a_k1"][1:]], axis=0)
    joint2, marg2 = critic.scores(changed, a, b, [perm])
    np.testing.assert_allclose(joint2[1], joint[1], rtol=1e-6)
    np.testing.assert_allclose(marg2[1], marg[1], rtol=1e-6)
    assert not np.allclose(joint2[0], joint[0])


def test_conv_mode_uses_first_convolution(digits_model):
    mine = PerSampleMINE(digits_model, steps=1, hidden=4)
    assert mine.resolved_mode() == "conv"
    feats = mine.features((8, 8, 1))(tf.zeros([2, 8, 8, 1]))
    # small_cnn's conv1: 32 maps of 6x6 -> 32 samples per example
    assert tuple(feats.shape) == (2, 32, 6, 6)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"steps": 0}, "steps"),
        ({"lr": -1.0}, "lr"),
        ({"mode": "dense"}, "mode"),
        ({"hidden": 0}, "hidden"),
        ({"marginal": "permute"}, "marginal"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        PerSampleMINE(None, **{"mode": "projection", **kwargs})


def test_bad_inputs():
    mine = PerSampleMINE(None, mode="projection", steps=1, hidden=4, projections=4, dim=4)
    x = np.zeros((2, 4, 4, 1), "float32")
    with pytest.raises(ValueError, match="x_adv"):
        mine.estimate(x, np.zeros((3, 4, 4, 1), "float32"))
    with pytest.raises(ValueError, match="x"):
        mine.estimate(x * 0 + 2.0, x)
    with pytest.raises(ValueError, match="model"):
        PerSampleMINE(None, mode="conv")


def test_fused_branch_equals_layer_by_layer_branch_and_gradients():
    """The fused conv->dense matrix gives the same outputs and parameter gradients as
    the statistics network applied layer by layer."""
    critic = BatchedCritic((6, 5), filters=3, hidden=7, out=4)
    params = critic.init(3, seed=1)
    params = {k: v + 0.1 if k.endswith(("_cb", "_b1")) else v for k, v in params.items()}
    s = tf.random.stateless_uniform([3, 4, 6, 5], [0, 1])
    outs, grads = [], []
    for fn in (critic.branch, critic.branch_direct):
        with tf.GradientTape() as tape:
            tape.watch([params, s])
            h = fn(params, "a", s)
            loss = tf.reduce_sum(tf.sin(h))
        outs.append(h.numpy())
        grads.append(tape.gradient(loss, [params, s]))
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-4, atol=1e-5)
    for key in ("a_ck", "a_cb", "a_k1", "a_b1", "a_k2"):
        np.testing.assert_allclose(grads[0][0][key], grads[1][0][key], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(grads[0][1], grads[1][1], rtol=1e-4, atol=1e-5)
