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


def test_inner_attack_is_one_declared_field():
    assert rk.objectives.AT().inner == rk.objectives.InnerAttack("ce", None)
    assert rk.objectives.TRADES().inner == rk.objectives.InnerAttack("kl", "normal")
    assert rk.objectives.MART().inner == rk.objectives.InnerAttack("ce", "normal")
    with pytest.raises(ValueError, match="loss"):
        rk.objectives.InnerAttack(loss="hinge")
    with pytest.raises(ValueError, match="start"):
        rk.objectives.InnerAttack(start="gaussian")

    class Legacy(rk.objectives.Objective):  # the robustkit 0.1 way of declaring it
        attack_loss = "kl"
        attack_start = "normal"

    assert Legacy().inner == rk.objectives.InnerAttack("kl", "normal")
    obj = rk.objectives.AT()
    obj.attack_loss = "margin"  # the compatibility attributes write through to `inner`
    assert obj.inner.loss == "margin" and rk.objectives.AT().inner.loss == "ce"


def test_loss_objective_reduces_once_with_sample_weight():
    """A LossObjective is its per-example function averaged with sample_weight."""
    y = np.array([0, 1, 1])
    clean = np.array([[2.0, 0.0], [0.0, 1.0], [3.0, -1.0]], "float32")
    adv = np.array([[1.0, 1.0], [1.0, 0.0], [0.0, 2.0]], "float32")
    w = np.array([1.0, 0.0, 3.0], "float32")
    for obj in (rk.objectives.TRADES(beta=2.0), rk.objectives.MART(beta=2.0)):
        total, parts = obj(y, adv, clean, sample_weight=w)
        # the same numbers as the first and third example repeated 1 and 3 times
        rep_y, rep_adv, rep_clean = y[[0, 2, 2, 2]], adv[[0, 2, 2, 2]], clean[[0, 2, 2, 2]]
        ref_total, ref_parts = obj(rep_y, rep_adv, rep_clean)
        assert float(total) == pytest.approx(float(ref_total), rel=1e-5)
        for name in obj.parts:
            assert float(parts[name]) == pytest.approx(float(ref_parts[name]), rel=1e-5)
    # the class and the function agree; the function's kwargs are the config
    trades = rk.objectives.TRADES(beta=2.0)
    assert float(trades(y, adv, clean)[0]) == pytest.approx(
        float(trades_loss(y, adv, clean, beta=2.0)[0]), rel=1e-6
    )
    assert trades.get_config() == {"beta": 2.0} and trades.beta == 2.0


def test_objectives_round_trip_through_keras_serialisation():
    import keras

    for obj in (rk.objectives.AT(), rk.objectives.TRADES(beta=3.0), rk.objectives.MART(5.0)):
        again = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(obj))
        assert type(again) is type(obj) and again.get_config() == obj.get_config()


def test_objectives_hold_no_copy_of_ce_kl_or_margin():
    import inspect

    from robustkit.objectives import base, core

    for module in (base, core):
        source = inspect.getsource(module)
        for op in ("softmax_cross_entropy", "log_softmax", "reduce_logsumexp"):
            assert op not in source, (module.__name__, op)


def _fake_namid(monkeypatch):
    """A stand-in for robustkit.namid: its DEFENSES dict and MIMonitor."""
    import sys
    import types

    class FakeNAMID(rk.objectives.AT):
        name = "namid"

    fake = types.ModuleType("robustkit.namid")
    fake.DEFENSES = {"namid": FakeNAMID, "wmim": FakeNAMID}
    fake.NAMID = FakeNAMID
    fake.MIMonitor = type("MIMonitor", (), {})
    monkeypatch.setitem(sys.modules, "robustkit.namid", fake)
    monkeypatch.delitem(vars(rk.objectives), "REGISTRY", raising=False)
    return fake


def test_mi_names_resolve_lazily_from_robustkit_namid(monkeypatch):
    from robustkit import cli

    fake = _fake_namid(monkeypatch)
    assert rk.objectives.REGISTRY["namid"] is fake.DEFENSES["namid"]
    assert rk.objectives.REGISTRY["trades"] is rk.objectives.TRADES
    assert isinstance(rk.objectives.get("namid"), fake.NAMID)
    assert rk.objectives.NAMID is fake.DEFENSES["namid"]
    assert rk.callbacks.MIMonitor is fake.MIMonitor
    args = cli.build_parser().parse_args(["train", "--defense", "wmim"])
    assert args.defense == "wmim"
    with pytest.raises(AttributeError):
        rk.objectives.NoSuchObjective  # noqa: B018


def test_mi_names_from_the_real_robustkit_namid():
    namid = pytest.importorskip("robustkit.namid", reason="robustkit.namid has not landed yet")
    for key, cls in namid.DEFENSES.items():
        assert rk.objectives.REGISTRY[key] is cls
    assert rk.objectives.NAMID is namid.NAMID and rk.objectives.WMIM is namid.WMIM
    assert rk.objectives.NAMID_T is namid.NAMID_T and rk.objectives.NAMID_M is namid.NAMID_M
    assert rk.callbacks.MIMonitor is namid.MIMonitor
