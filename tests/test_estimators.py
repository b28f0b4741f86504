"""MI bounds on hand-computed scores, critics, estimate_mi on Gaussians with known MI,
and the NAMID estimator networks (per-sample DV, gradients, serialisation)."""

import math

import keras
import numpy as np
import pytest
import tensorflow as tf

from robustkit.estimators import ConcatCritic, SeparableCritic, bounds, estimate_mi
from robustkit.namid import (
    AdversarialMIEstimator,
    MIEstimator,
    NaturalMIEstimator,
    load_estimators,
    pack_estimator,
    per_sample_dv,
    save_estimators,
    unpack_estimator,
)
from robustkit.namid.estimator import dv_from_features


def _close(a, b, tol=1e-5):
    return abs(float(a) - float(b)) < tol


# ------------------------------------------------------------------ bounds
JOINT = np.array([2.0, 0.0, 1.0], "float32")
MARG = np.array([0.0, 1.0, -1.0, 2.0], "float32")


def test_dv_on_hand_computed_scores():
    expected = 1.0 - math.log((1 + math.e + math.exp(-1) + math.exp(2)) / 4)
    assert _close(bounds.dv(JOINT, MARG), expected)


def test_nwj_on_hand_computed_scores():
    expected = 1.0 - math.exp(-1) * (1 + math.e + math.exp(-1) + math.exp(2)) / 4
    assert _close(bounds.nwj(JOINT, MARG), expected)


def test_jsd_on_hand_computed_scores():
    sp = lambda t: math.log1p(math.exp(t))
    expected = np.mean([-sp(-t) for t in JOINT]) - np.mean([sp(t) for t in MARG])
    assert _close(bounds.jsd(JOINT, MARG), expected)


def test_infonce_on_hand_computed_scores():
    s = np.array([[1.0, 0.0], [2.0, 3.0]], "float32")
    row0 = 1.0 - math.log(math.e + 1.0)
    row1 = 3.0 - math.log(math.exp(2) + math.exp(3))
    assert _close(bounds.infonce(s), math.log(2) + (row0 + row1) / 2)


def test_infonce_never_exceeds_log_batch():
    rng = np.random.default_rng(0)
    for b in (2, 8, 64):
        for scale in (1.0, 10.0, 1000.0):
            s = (rng.normal(size=(b, b)) * scale).astype("float32")
            s[np.arange(b), np.arange(b)] += scale * 5  # a critic that "knows" the pairs
            assert float(bounds.infonce(s)) <= math.log(b) + 1e-5
    # a perfect critic reaches the cap
    assert _close(bounds.infonce(np.eye(16, dtype="float32") * 1e3), math.log(16), 1e-4)


def test_mine_estimate_surrogate_and_moving_average():
    est, sur, ma = bounds.mine(JOINT, MARG, moving_average=np.float32(2.0), decay=0.5)
    mean_exp = (1 + math.e + math.exp(-1) + math.exp(2)) / 4
    assert _close(est, bounds.dv(JOINT, MARG))
    assert _close(ma, 0.5 * 2.0 + 0.5 * mean_exp, 1e-4)
    assert _close(sur, 1.0 - mean_exp / (0.5 * 2.0 + 0.5 * mean_exp), 1e-5)


def test_split_scores_diagonal_and_off_diagonal():
    s = np.arange(9, dtype="float32").reshape(3, 3)
    joint, marg = bounds.split_scores(s)
    assert joint.numpy().tolist() == [0.0, 4.0, 8.0]
    assert sorted(marg.numpy().tolist()) == [1.0, 2.0, 3.0, 5.0, 6.0, 7.0]


def test_per_sample_dv_on_hand_computed_scores():
    s = np.zeros((2, 2, 2), "float32")
    s[0, 0] = [1.0, 3.0]  # joint of sample 0: mean 2
    s[0, 1] = [0.0, math.log(3.0)]  # marginal of sample 0: log mean(1, 3) = log 2
    s[1, 1] = [0.0, 0.0]
    s[1, 0] = [1.0, 1.0]
    got = per_sample_dv(s, dv="pooled").numpy()
    assert _close(got[0], 2.0 - math.log(2.0))
    assert _close(got[1], 0.0 - 1.0)


def test_dv_with_excluded_marginal_entries_on_hand_computed_scores():
    # row 0: joint mean 2; marginal {0, log 3} kept, the two 5s excluded -> log mean(1, 3)
    # row 1: every marginal entry excluded -> finite (no -inf), the excluded ones pushed
    #        down by 1e9 and counted as one
    joint = np.array([[1.0, 3.0], [0.0, 0.0]], "float32")
    marginal = np.array([[5.0, 0.0, math.log(3.0), 5.0], [1.0, 1.0, 1.0, 1.0]], "float32")
    exclude = np.array([[True, False, False, True], [True] * 4])
    got = bounds.dv(joint, marginal, exclude=exclude).numpy()
    assert _close(got[0], 2.0 - math.log(2.0))
    assert np.isfinite(got[1]) and got[1] > 1e8
    # without exclusion it is the plain bound
    assert _close(
        bounds.dv(joint, marginal, exclude=np.zeros((2, 4), bool))[0], bounds.dv(joint, marginal)[0]
    )


def test_dv_from_features_on_hand_computed_vectors():
    """Two samples, one local vector each, two rows of global vectors per sample (the
    mi_pair layout): row g pairs with sample g mod 2, the other sample is its negative."""
    local = np.array([[[1.0, 0.0]], [[0.0, 2.0]]], "float32")  # (B=2, P=1, d=2)
    glob = np.array([[1.0, 1.0], [0.5, 0.0], [2.0, 0.0], [0.0, 1.0]], "float32")  # G = 4
    # s[g, j] = <glob_g, local_j>: joint s[g, g mod 2], marginal s[g, 1 - g mod 2]
    s = glob @ local[:, 0].T
    expected = [s[g, g % 2] - s[g, 1 - g % 2] for g in range(4)]
    got = dv_from_features(glob, local, dv="pooled").numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-6)


def test_moved_names_resolve_to_the_new_homes():
    """rk.attacks / rk.estimators / rk.objectives / rk.callbacks keep the names that moved
    to robustkit.mine and robustkit.namid, as the same objects."""
    import robustkit as rk

    for name in ("MinMax", "PenaltyMINE", "supervised_criterion", "unsupervised_criterion"):
        assert getattr(rk.attacks, name) is getattr(rk.mine, name)
    assert rk.estimators.PerSampleMINE is rk.mine.PerSampleMINE
    for name in (
        "MIEstimator",
        "NaturalMIEstimator",
        "AdversarialMIEstimator",
        "train_namid_estimators",
        "train_standard_estimator",
        "save_estimators",
        "load_estimators",
        "per_sample_dv",
        "select_samples",
        "MIMonitor",
    ):
        assert getattr(rk.estimators, name) is getattr(rk.namid, name)
    for key, cls in rk.namid.DEFENSES.items():
        assert rk.objectives.REGISTRY[key] is cls and getattr(rk.objectives, cls.__name__) is cls
    assert rk.callbacks.MIMonitor is rk.namid.MIMonitor
    with pytest.raises(AttributeError):
        rk.attacks.NoSuchAttack  # noqa: B018


# ----------------------------------------------------------------- critics
@pytest.mark.parametrize("cls", [SeparableCritic, ConcatCritic])
def test_critic_scores_every_pair_and_round_trips(cls):
    critic = cls(hidden=8)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(5, 3)).astype("float32")
    z = rng.normal(size=(5, 2)).astype("float32")
    s = critic(x, z).numpy()
    assert s.shape == (5, 5)
    # scores[i, j] = T(x_i, z_j): re-scoring one pair gives the same entry
    assert np.allclose(critic(x[1:2], z[3:4]).numpy()[0, 0], s[1, 3], atol=1e-5)
    clone = cls.from_config(critic.get_config())
    clone(x, z)
    clone.set_weights(critic.get_weights())
    assert np.allclose(clone(x, z), s)


# -------------------------------------------------------------- estimate_mi
def _gaussian(rho, n=20000, d=20, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    z = rho * x + math.sqrt(1 - rho**2) * rng.normal(size=(n, d))
    return x.astype("float32"), z.astype("float32")


def test_estimate_mi_recovers_gaussian_mi_rho_03():
    truth = bounds.gaussian_mi(0.3, 20)  # 0.943 nats
    mi = estimate_mi(*_gaussian(0.3))
    assert abs(mi - truth) < 0.1 * truth, (mi, truth)


@pytest.mark.slow
def test_estimate_mi_recovers_gaussian_mi_rho_05():
    truth = bounds.gaussian_mi(0.5, 20)  # 2.877 nats
    mi = estimate_mi(*_gaussian(0.5))
    assert abs(mi - truth) < 0.1 * truth, (mi, truth)


def test_estimate_mi_independent_is_near_zero_and_infonce_capped():
    rng = np.random.default_rng(3)
    x = rng.normal(size=(3000, 5)).astype("float32")
    z = rng.normal(size=(3000, 5)).astype("float32")
    assert abs(estimate_mi(x, z, steps=150, batch_size=128, bound="dv")) < 0.1
    # identical x and z: infinite MI, InfoNCE stays below log(batch)
    nce = estimate_mi(x, x, steps=150, batch_size=32, bound="infonce")
    assert nce <= math.log(32) + 1e-4 and nce > 0.5 * math.log(32)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"z": np.zeros((9, 2))}, "paired"),
        ({"bound": "kl"}, "bound"),
        ({"x": np.full((10, 2), np.nan)}, "NaN"),
        ({"steps": 0}, "steps"),
        ({"x": np.zeros((3, 2)), "z": np.zeros((3, 2))}, "too few"),
        ({"critic": "bilinear"}, "critic"),
    ],
)
def test_estimate_mi_rejects_bad_input(kwargs, match):
    args = {"x": np.zeros((10, 2), "float32"), "z": np.zeros((10, 2), "float32")}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        estimate_mi(**args)


# ------------------------------------------------------- NAMID estimators
def test_estimator_shapes_from_the_data():
    assert NaturalMIEstimator((28, 28, 1), 10, features=16).num_local == 49
    assert AdversarialMIEstimator((32, 32, 3), 10, features=16).num_local == 64
    est = NaturalMIEstimator((8, 8, 1), 10, features=16)
    x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
    assert est.local_features(x).shape == (6, 4, 16)
    assert est.scores(x, np.zeros((6, 10), "float32")).shape == (6, 6, 4)


def test_estimator_gradient_reaches_logits_only():
    est = AdversarialMIEstimator((8, 8, 1), 10, features=16)
    rng = np.random.default_rng(0)
    x = tf.constant(rng.uniform(size=(4, 8, 8, 1)).astype("float32"))
    x_adv = tf.constant(np.clip(x.numpy() + 0.05, 0, 1))
    logits = tf.constant(rng.normal(size=(4, 10)).astype("float32"))
    with tf.GradientTape(persistent=True) as tape:
        tape.watch([x, x_adv, logits])
        mi = tf.reduce_sum(est.mi(x, x_adv, logits))
    assert tape.gradient(mi, x) is None and tape.gradient(mi, x_adv) is None
    g = tape.gradient(mi, logits)
    assert g is not None and float(tf.reduce_max(tf.abs(g))) > 0


def test_estimator_pattern_is_x_or_noise():
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 8, 8, 1)).astype("float32")
    x_adv = np.clip(x + rng.uniform(-0.1, 0.1, x.shape), 0, 1).astype("float32")
    logits = rng.normal(size=(4, 10)).astype("float32")
    nat = NaturalMIEstimator((8, 8, 1), 10, features=8)
    adv = AdversarialMIEstimator((8, 8, 1), 10, features=8)
    assert np.allclose(nat.mi(x, x_adv, logits), nat((x, logits)))
    assert np.allclose(adv.mi(x, x_adv, logits), adv((x_adv - x, logits)))


def test_estimator_save_load_and_pack_round_trip(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(5, 8, 8, 1)).astype("float32")
    logits = rng.normal(size=(5, 10)).astype("float32")
    nat = NaturalMIEstimator((8, 8, 1), 10, features=8)
    adv = AdversarialMIEstimator((8, 8, 1), 10, features=8)
    nat.set_weights(
        [w + rng.normal(size=w.shape).astype("float32") * 0.1 for w in nat.get_weights()]
    )
    save_estimators(str(tmp_path), natural=nat, adversarial=adv)
    nat2, adv2 = load_estimators(str(tmp_path))
    assert isinstance(nat2, NaturalMIEstimator) and isinstance(adv2, AdversarialMIEstimator)
    assert np.array_equal(nat2.mi(x, x, logits), nat.mi(x, x, logits))
    nat3 = unpack_estimator(pack_estimator(nat))
    assert np.array_equal(nat3.mi(x, x, logits), nat.mi(x, x, logits))


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"input_shape": (8, 8)}, "input_shape"),
        ({"features": 0}, "features"),
        ({"pattern": "noise"}, "pattern"),
        ({"num_classes": 1}, "num_classes"),
    ],
)
def test_estimator_rejects_bad_arguments(kwargs, match):
    args = {"input_shape": (8, 8, 1), "num_classes": 10, "features": 8}
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        MIEstimator(**args)


def test_estimator_config_round_trip():
    est = MIEstimator((8, 8, 1), 10, features=8, pattern="standard")
    clone = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(est))
    assert clone.pattern == "standard" and clone.features == 8 and clone.num_local == 4
