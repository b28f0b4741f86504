"""Per-sample MINE (Hsu et al., AAAI 2022): batched, one statistics network per example."""

import numpy as np
import pytest
import tensorflow as tf

from robustkit.estimators import PerSampleMINE
from robustkit.estimators.per_sample import _Critic


@pytest.mark.slow
@pytest.mark.xfail(
    strict=False,
    reason="known open bug (issue #5): with the first-conv-layer samples the estimate for "
    "x_adv = x is not reliably above x_adv = noise (maps of x and of noise share their "
    "filter's statistics); passes or fails with the trained model's seed",
)
def test_mi_of_image_with_itself_exceeds_mi_with_noise(digits, digits_model):
    _, _, x, _ = digits
    x = x[:24]
    noise = np.random.default_rng(0).uniform(size=x.shape).astype("float32")
    tf.random.set_seed(0)
    mine = PerSampleMINE(digits_model, steps=100, hidden=16, lr=3e-3)
    same = mine.estimate(x, x)
    other = mine.estimate(x, noise)
    assert same.shape == (24,) and np.all(np.isfinite(same))
    assert same.mean() > other.mean() + 0.2
    assert np.mean(same > other) >= 0.6


def test_projection_mode_orders_similarity():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(6, 8, 8, 1)).astype("float32")
    noise = rng.uniform(size=x.shape).astype("float32")
    tf.random.set_seed(0)
    mine = PerSampleMINE(None, mode="projection", projections=64, dim=16, steps=100,
                         hidden=16, lr=3e-3)
    assert mine.resolved_mode() == "projection"
    assert mine.estimate(x, x).mean() > mine.estimate(x, noise).mean() + 0.3


def test_each_example_has_its_own_statistics_network():
    """Changing example 0's weights must not change example 1's scores."""
    critic = _Critic((5, 5), filters=4, hidden=6, out=3)
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
    [({"steps": 0}, "steps"), ({"lr": -1.0}, "lr"), ({"mode": "dense"}, "mode"),
     ({"hidden": 0}, "hidden")],
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
