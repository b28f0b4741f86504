"""The MINE attacks as the authors released them (IBM/UAE; FIDELITY §2, issue #12):
the one-permutation estimate, the release statistic ``mi_release`` and the presets."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from robustkit.mine import BatchedCritic, MinMax, PenaltyMINE, PerSampleMINE
from robustkit.mine.base import release_start_limit

LOG32 = float(np.log(32.0))


@pytest.fixture(autouse=True)
def _seeded():
    """The one-permutation draws are random ops: with op determinism on (tests/conftest.py)
    they need a global seed; every test starts from the same one."""
    keras.utils.set_random_seed(0)


# ------------------------------------------------ the estimate on a memorising critic
def _memorising_branches(k, gap, batch=2):
    """Branch outputs whose pair scores are ``gap * I`` (head = ReLU, then sum):
    ``h_i = gap e_i - gap / 2`` on both sides, so ``relu(h_i + h_j)`` is ``gap e_i`` for
    ``i = j`` and 0 otherwise."""
    h = gap * np.eye(k, dtype="float32") - gap / 2.0
    return tf.constant(np.broadcast_to(h, (batch, k, k)).copy())


def test_release_estimate_exceeds_log_k_on_a_memorising_critic_all_pairs_does_not():
    k, gap = 32, 12.0
    critic = BatchedCritic((3, 3), filters=2, hidden=4, out=k)
    params = {"k3": tf.ones([2, k])}
    h = _memorising_branches(k, gap)
    np.testing.assert_allclose(critic.pair_scores(params, h, h)[0], gap * np.eye(k), atol=1e-5)
    est = PerSampleMINE(marginal="release")
    # hand-computed: all pairs = gap - log((K e^gap + K^2 - K) / K^2); one permutation
    # with m fixed points = gap - log((m e^gap + K - m) / K)
    bounded_hand = gap - np.log((k * np.exp(gap) + k * k - k) / (k * k))
    per_m = gap - np.log((np.arange(k + 1) * np.exp(gap) + k - np.arange(k + 1)) / k)
    singles = []
    for _ in range(40):
        objective, bounded, single = (v.numpy() for v in est.online_values(critic, params, h, h))
        np.testing.assert_allclose(bounded, bounded_hand, rtol=1e-5)
        assert np.all(bounded <= LOG32)
        np.testing.assert_array_equal(objective, single)  # the release differentiates it
        # every value is the one of some number of fixed points
        assert np.all(np.min(np.abs(single[:, None] - per_m[None, :]), axis=1) < 1e-3)
        singles.append(single)
    singles = np.array(singles)
    # a derangement (probability ~1/e) puts no joint pair in the marginal: the value is
    # the gap itself; the release keeps the maximum, far above log K
    np.testing.assert_allclose(singles.max(axis=0), gap, atol=1e-4)
    assert singles.max() > 3 * LOG32
    # the draws differ between evaluations (one fresh permutation each)
    assert len(np.unique(np.round(singles[:, 0], 4))) > 1


@pytest.mark.slow
def test_trained_release_estimate_exceeds_log_k_bounded_estimate_stays_below(digits, digits_model):
    """A statistics network trained hard on (x, x) memorises its K = 32 pairs: the
    one-permutation estimate goes past log K on some examples, the all-pairs one never."""
    x = digits[2][:16]
    common = dict(steps=300, lr=1e-2, hidden=16, seed=0)
    release = PerSampleMINE(digits_model, marginal="release", **common).estimate(x, x)
    bounded = PerSampleMINE(digits_model, marginal="auto", **common).estimate(x, x)
    assert np.all(np.isfinite(release)) and np.all(np.isfinite(bounded))
    assert bounded.max() <= LOG32 + 1e-4
    assert release.max() > LOG32 + 0.5


def test_release_marginal_draws_a_fresh_permutation_per_evaluation(digits, digits_model):
    x = digits[2][:6]
    kw = dict(steps=3, hidden=4, lr=1e-2, seed=0)
    est = PerSampleMINE(digits_model, marginal="release", **kw)
    first, second = est.estimate(x, x), est.estimate(x, x)
    # same initial weights (seed=0), different permutations: different values
    assert np.abs(first - second).max() > 1e-3
    # the all-pairs estimate of the same network is a deterministic function of its inputs
    auto = PerSampleMINE(digits_model, marginal="auto", **kw)
    np.testing.assert_array_equal(auto.estimate(x, x), auto.estimate(x, x))
    # the same weights, evaluated twice: one fresh permutation each time
    feat = est.features(x.shape[1:])
    fa = feat(tf.constant(x))
    critic = est.critic(fa.shape[2:])
    params, _ = est.init_state(critic, fa.shape[0])
    one, two = est.dv(critic, params, fa, fa), est.dv(critic, params, fa, fa)
    assert np.abs(np.asarray(one) - np.asarray(two)).max() > 1e-4
    np.testing.assert_array_equal(auto.dv(critic, params, fa, fa), auto.dv(critic, params, fa, fa))
    # seeded calls repeat
    keras.utils.set_random_seed(3)
    again = est.estimate(x, x)
    keras.utils.set_random_seed(3)
    np.testing.assert_array_equal(est.estimate(x, x), again)


@pytest.mark.slow
def test_release_estimates_of_fresh_estimators_repeat_under_a_seed(digits, digits_model):
    x = digits[2][:6]
    runs = []
    for _ in range(2):
        keras.utils.set_random_seed(3)
        est = PerSampleMINE(digits_model, marginal="release", steps=3, hidden=4, lr=1e-2)
        runs.append((est.estimate(x, x), est.estimate(x, x)))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])
    assert np.abs(runs[0][0] - runs[0][1]).max() > 1e-3


# ------------------------------------------------------------ mi_release, hand-traced
def _traced_run(attack, model, x, y, pattern, maximize=True):
    """Runs ``attack`` eagerly with a criterion whose success per evaluation (and example)
    is ``pattern``; returns the outputs and the (bounded, single) values of every
    evaluation."""
    calls = []

    def criterion(x_clean, logits, labels, clean):
        ok = tf.constant(pattern[len(calls)])
        calls.append(1)
        # f depends on the logits (so the step has a gradient) and is 0 where ok
        f = tf.where(ok, 0.0, 1.0 + 0.01 * tf.nn.softplus(logits[:, 0]))
        return f, ok

    criterion.maximize_mi = maximize
    attack.criterion = criterion
    est = attack.estimator(model)
    seen = []
    original = est.online_values

    def recording(*args):
        values = original(*args)
        seen.append((values[1].numpy(), values[2].numpy()))
        return values

    est.online_values = recording
    tf.config.run_functions_eagerly(True)
    try:
        out = attack.run(model, x, y)
    finally:
        tf.config.run_functions_eagerly(False)
    assert len(calls) == len(pattern) == len(seen)
    bounded = np.array([b for b, _ in seen])
    single = np.array([s for _, s in seen])
    return out, bounded, single


# evaluations of MinMax(steps=3): iterates 0, 1, 2 and the last one (4); example 0
# succeeds at evaluations 0 and 2, example 1 never, example 2 at all of them
MINMAX_PATTERN = [[True, False, True], [False, False, True], [True, False, True]] + [
    [False, False, True]
]


def test_minmax_mi_release_is_the_max_over_successful_iterates_hand_traced(digits, digits_model):
    x, y = digits[2][:3], digits[3][:3]
    atk = MinMax(eps=0.3, steps=3, hidden=8, mine_lr=1e-2, marginal="release", jit_compile=False)
    out, bounded, single = _traced_run(atk, digits_model, x, y, MINMAX_PATTERN)
    ok = np.array(MINMAX_PATTERN)
    assert out["mi_release"].shape == (3,)
    np.testing.assert_allclose(out["mi_release"][0], max(single[0, 0], single[2, 0]), rtol=1e-6)
    assert np.isnan(out["mi_release"][1])  # no successful iterate: NaN
    np.testing.assert_allclose(out["mi_release"][2], single[:, 2].max(), rtol=1e-6)
    np.testing.assert_array_equal(out["success"], [True, False, True])
    # the kept point is the successful iterate with the largest MI (the attack's marginal,
    # here the same one-permutation value); ``mi`` is the bounded value at that iterate
    for e in (0, 2):
        best = np.flatnonzero(ok[:, e])[np.argmax(single[ok[:, e], e])]
        np.testing.assert_allclose(out["mi"][e], bounded[best, e], rtol=1e-6)
        assert bounded[best, e] <= LOG32 + 1e-5
    # unsuccessful: the smallest f is kept; its bounded MI is still reported
    assert np.isfinite(out["mi"][1])


def test_unsupervised_mi_release_is_the_min_above_min_mi_hand_traced(digits, digits_model):
    x, y = digits[2][:3], digits[3][:3]
    atk = MinMax(
        eps=0.3, steps=3, hidden=8, mine_lr=1e-2, marginal="release", min_mi=0.0, jit_compile=False
    )
    out, _, single = _traced_run(atk, digits_model, x, y, MINMAX_PATTERN, maximize=False)
    ok = np.array(MINMAX_PATTERN)
    for e in range(3):
        counted = single[ok[:, e] & (single[:, e] > 0.0), e]
        if len(counted):
            np.testing.assert_allclose(out["mi_release"][e], counted.min(), rtol=1e-6)
            assert out["success"][e]
        else:
            assert np.isnan(out["mi_release"][e]) and not out["success"][e]


def test_penalty_mi_release_runs_over_all_rounds_hand_traced(digits, digits_model):
    x, y = digits[2][:2], digits[3][:2]
    # 2 rounds of (2 iterates + the last one): 6 evaluations; example 0 succeeds only in
    # the second round, example 1 only at the first evaluation of the first round
    pattern = [[False, True], [False, False], [False, False]] + [
        [True, False],
        [False, False],
        [True, False],
    ]
    atk = PenaltyMINE(
        eps=0.3, steps=2, rounds=2, hidden=8, mine_lr=1e-2, marginal="release", jit_compile=False
    )
    out, _, single = _traced_run(atk, digits_model, x, y, pattern)
    np.testing.assert_allclose(out["mi_release"][0], max(single[3, 0], single[5, 0]), rtol=1e-6)
    np.testing.assert_allclose(out["mi_release"][1], single[0, 1], rtol=1e-6)
    np.testing.assert_array_equal(out["success"], [True, True])


# ------------------------------------------------------------------------ presets
def test_minmax_release_preset_has_the_released_settings():
    atk = MinMax.release()
    expected = dict(
        eps=1.0,
        steps=1000,
        alpha=0.01,
        beta=0.1,
        c0=1e-3,
        kappa=0.0,
        random_start="release",
        box="clip",
        dual="lagged",
        marginal="release",
        mine_lr=1.5e-5,
        filters=16,
        hidden=512,
        out=10,
        critic_steps=1,
        criterion="supervised",
        min_mi=None,
        mine_layer=None,  # the first convolution: K = its maps, post-ReLU
    )
    assert {key: getattr(atk, key) for key in expected} == expected
    # robustkit's own defaults are untouched by the preset
    plain = MinMax()
    assert (plain.eps, plain.steps, plain.marginal, plain.c0, plain.box) == (
        0.3,
        100,
        "auto",
        0.0,
        "project",
    )


def test_penalty_release_preset_has_the_released_settings():
    atk = PenaltyMINE.release()
    expected = dict(
        eps=1.0,
        steps=1000,
        rounds=9,
        alpha=0.01,
        c0=1e-3,
        kappa=0.0,
        random_start="release",
        box="clip",
        marginal="release",
        mine_lr=2e-5,
        filters=16,
        hidden=512,
        out=10,
        critic_steps=20,
        critic_moves_delta=True,
    )
    assert {key: getattr(atk, key) for key in expected} == expected
    assert PenaltyMINE().critic_moves_delta is False


def test_unsupervised_release_preset_has_the_released_settings():
    atk = MinMax.release(criterion="unsupervised")
    expected = dict(
        criterion="unsupervised",
        eps=1.0,
        steps=40,
        critic_steps=20,
        min_mi=0.0,
        mine_lr=1.5e-5,
        c0=1e-3,
        marginal="release",
        random_start="release",
        box="clip",
        dual="lagged",
    )
    assert {key: getattr(atk, key) for key in expected} == expected
    assert atk._maximize(atk.criterion_fn()) is False  # keeps the lowest MI


def test_release_overrides_go_on_top_and_are_validated():
    atk = MinMax.release(steps=7, hidden=8, seed=3)
    assert (atk.steps, atk.hidden, atk.seed, atk.eps, atk.mine_lr) == (7, 8, 3, 1.0, 1.5e-5)
    assert MinMax.release(criterion="unsupervised", steps=5).critic_steps == 20
    assert PenaltyMINE.release(rounds=2).rounds == 2
    with pytest.raises(ValueError, match="steps"):
        MinMax.release(steps=0)
    with pytest.raises(ValueError, match="dual"):
        MinMax.release(dual="late")
    with pytest.raises(ValueError, match="rounds"):
        MinMax.release(rounds=3)  # not an argument of MinMax
    with pytest.raises(ValueError, match="beta"):
        PenaltyMINE.release(beta=0.2)  # the penalty has no dual step
    with pytest.raises(ValueError, match="mine_lr"):
        PenaltyMINE.release(mine_lr=-1.0)
    with pytest.raises(ValueError, match="critic_moves_delta"):
        PenaltyMINE.release(criterion="unsupervised")  # joint steps would raise the MI
    assert PenaltyMINE(criterion="unsupervised").critic_moves_delta is False


def test_release_start_is_the_glorot_uniform_draw(digits):
    x = tf.constant(digits[2][:64])
    limit = release_start_limit((8, 8, 1))
    assert limit == pytest.approx((6.0 / (64 + 8)) ** 0.5)
    delta = MinMax.release(seed=0)._start(x).numpy()
    assert np.abs(delta).max() <= limit + 1e-6
    assert np.abs(delta).max() > 0.9 * limit and np.abs(delta).mean() > 0.3 * limit
    # box="clip": delta is not projected into the box (pixels at 0 keep negative delta)
    assert (delta[digits[2][:64] == 0.0] < 0).any()


@pytest.mark.slow
def test_release_presets_run_in_their_ball_and_fool_a_digits_model(digits, digits_model):
    """The presets (shortened) run as users meet them: eps 1.0 is no constraint on [0, 1]
    images; the model sees clip(x + delta); both attacks fool the clean digits model."""
    x, y = digits[2][:6], digits[3][:6]
    pred = np.argmax(digits_model.predict(x, verbose=0), axis=1)
    x, y = x[pred == y], y[pred == y]
    for atk in (
        MinMax.release(steps=30, hidden=8, mine_lr=1e-3, batch_size=8, seed=0),
        # c grows x10 per failed round from 1e-3: 5 rounds reach c = 10
        PenaltyMINE.release(
            steps=20, rounds=5, critic_steps=2, hidden=8, mine_lr=1e-3, batch_size=8, seed=0
        ),
    ):
        out = atk.run(digits_model, x, y)
        x_adv = out["x_adv"]
        assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
        adv_pred = np.argmax(digits_model.predict(x_adv, verbose=0), axis=1)
        np.testing.assert_array_equal(out["success"], adv_pred != y)
        assert out["success"].mean() >= 0.8, type(atk).__name__
        ok = out["success"]
        assert np.all(np.isfinite(out["mi_release"][ok]))
        assert np.all(out["mi"] <= LOG32 + 1e-4)
