"""Objectives against hand-computed values and independent numpy formulas."""

import math

import numpy as np
import pytest

import robustkit as rk
from robustkit.objectives import at_loss, mart_loss, trades_loss


def _softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_trades(y, adv, clean, beta):
    p, q = _softmax(clean), _softmax(adv)
    ce = -np.log(p[np.arange(len(y)), y])
    kl = (p * (np.log(p) - np.log(q))).sum(-1)
    return ce.mean() + beta * kl.mean()


def _np_mart(y, adv, clean, beta):
    p, q = _softmax(clean), _softmax(adv)
    n = np.arange(len(y))
    ce = -np.log(q[n, y])
    q_wrong = q.copy()
    q_wrong[n, y] = -1
    y_hat = q_wrong.argmax(-1)
    bce = ce - np.log(1.0001 - q[n, y_hat])
    kl = (p * (np.log(p) - np.log(q))).sum(-1) * (1 - p[n, y])
    return bce.mean() + beta * kl.mean()


def test_at_loss_is_cross_entropy_on_adversarial_logits():
    total, parts = at_loss(np.array([0]), np.array([[0.0, 0.0]], "float32"))
    assert float(total) == pytest.approx(math.log(2), abs=1e-6)
    assert float(parts["ce"]) == pytest.approx(math.log(2), abs=1e-6)


def test_trades_hand_computed():
    # clean [2, 0] -> p = (0.880797, 0.119203); adv [1, 1] -> q = (0.5, 0.5)
    y = np.array([0])
    clean = np.array([[2.0, 0.0]], "float32")
    adv = np.array([[1.0, 1.0]], "float32")
    total, parts = trades_loss(y, adv, clean, beta=6.0)
    natural = math.log(1 + math.exp(-2))  # 0.126928
    kl = 0.880797 * math.log(0.880797 / 0.5) + 0.119203 * math.log(0.119203 / 0.5)  # 0.327817
    assert float(parts["natural"]) == pytest.approx(natural, abs=1e-5)
    assert float(parts["kl"]) == pytest.approx(kl, abs=1e-5)
    assert float(total) == pytest.approx(natural + 6 * kl, abs=1e-4)
    assert float(total) == pytest.approx(2.09383, abs=1e-4)


def test_mart_hand_computed():
    y = np.array([0])
    adv = np.array([[1.0, 2.0, 0.0]], "float32")
    clean = np.array([[2.0, 0.0, 0.0]], "float32")
    total, parts = mart_loss(y, adv, clean, beta=6.0)
    # p~ = (0.244728, 0.665241, 0.090031): CE = 1.407606; wrong class 1 -> -log(1.0001 - 0.665241)
    assert float(parts["bce"]) == pytest.approx(1.407606 + 1.094044, abs=1e-4)
    # KL(p || p~) = 0.741999, times (1 - p_y) = 0.213014
    assert float(parts["kl"]) == pytest.approx(0.741999 * 0.213014, abs=1e-4)
    assert float(total) == pytest.approx(3.449987, abs=1e-3)


@pytest.mark.parametrize("fn,ref", [(trades_loss, _np_trades), (mart_loss, _np_mart)])
def test_random_batches_match_numpy_formulas(fn, ref):
    rng = np.random.default_rng(0)
    for beta in (0.0, 1.0, 6.0):
        clean = rng.normal(size=(16, 10)).astype("float32") * 3
        adv = rng.normal(size=(16, 10)).astype("float32") * 3
        y = rng.integers(0, 10, 16)
        total, _ = fn(y, adv, clean, beta=beta)
        assert float(total) == pytest.approx(ref(y, adv, clean, beta), rel=1e-4, abs=1e-5)


def test_sample_weight_weights_examples():
    y = np.array([0, 0])
    adv = np.array([[0.0, 0.0], [5.0, 0.0]], "float32")
    total, _ = at_loss(y, adv, sample_weight=np.array([1.0, 0.0], "float32"))
    assert float(total) == pytest.approx(math.log(2), abs=1e-6)


def test_objective_classes_and_inner_attack_settings():
    assert (rk.objectives.AT().attack_loss, rk.objectives.AT().attack_start) == ("ce", None)
    trades = rk.objectives.TRADES(beta=3.0)
    assert (trades.attack_loss, trades.attack_start, trades.needs_clean_logits) == (
        "kl",
        "normal",
        True,
    )
    mart = rk.objectives.MART(beta=5.0)
    assert (mart.attack_loss, mart.attack_start) == ("ce", "normal")
    assert rk.objectives.get("trades", beta=2.0).beta == 2.0
    assert type(rk.objectives.TRADES.from_config(trades.get_config())) is rk.objectives.TRADES
    total, parts = mart(
        np.array([1]), np.array([[0.0, 1.0]], "float32"), np.array([[0.0, 1.0]], "float32")
    )
    assert set(parts) == set(mart.parts)


def test_bad_objective_arguments():
    with pytest.raises(ValueError, match="defense"):
        rk.objectives.get("nonsense")
    with pytest.raises(ValueError, match="beta"):
        rk.objectives.TRADES(beta=-1.0)
    with pytest.raises(ValueError, match="beta"):
        rk.objectives.MART(beta=float("nan"))
