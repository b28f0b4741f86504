"""NAMID stage 2 (estimator training), the WMIM / NAMID / NAMID_T / NAMID_M losses,
training through RobustModel.fit on digits, serialisation, MIMonitor and the
cached three-stage pipeline."""

import json
import logging
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.namid import (
    NAMID,
    NAMID_M,
    NAMID_T,
    WMIM,
    AdversarialMIEstimator,
    MIMonitor,
    NaturalMIEstimator,
    l_cos,
    run_pipeline,
    select_samples,
    selection_mask,
    train_namid_estimators,
    train_standard_estimator,
)
from robustkit.namid.stage2 import estimator_losses, training_set

EPS = 0.1
FEATURES = 32


def _robust_acc(model, x, y, steps=10):
    x_adv = rk.attacks.PGD(eps=EPS, steps=steps, seed=0)(model, x, y)
    return float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == y))


@pytest.fixture(scope="module")
def stage2(digits, digits_model):
    """Estimators trained with the paper's objective on the (undefended, so W is
    large) digits model, and a standard-MI estimator for WMIM."""
    x, y = digits[0][:600], digits[1][:600]
    attack = rk.attacks.PGD(eps=EPS, steps=5, seed=0)
    nat, adv, info = train_namid_estimators(
        digits_model,
        (x, y),
        attack,
        features=FEATURES,
        epochs=3,
        batch_size=128,
        milestones=(),
        objective="paper",
        seed=0,
    )
    std, _ = train_standard_estimator(
        digits_model,
        (x, y),
        attack,
        features=FEATURES,
        epochs=2,
        batch_size=128,
        milestones=(),
        seed=0,
    )
    return nat, adv, std, info


@pytest.fixture(scope="module")
def stage2_cosine(digits, digits_model):
    """Estimators trained with the released code's cosine objective. (With the
    paper's objective and alpha = 5, stage 3 on digits lost accuracy: see the
    NAMID section of README and benchmarks/results/table1_*.)"""
    x, y = digits[0][:600], digits[1][:600]
    nat, adv, _ = train_namid_estimators(
        digits_model,
        (x, y),
        rk.attacks.PGD(eps=EPS, steps=5, seed=0),
        features=FEATURES,
        epochs=3,
        batch_size=128,
        milestones=(),
        objective="cosine",
        seed=0,
    )
    return nat, adv


# ------------------------------------------------------------ sample sets
def test_select_samples_builds_c_w_r():
    y = np.array([0, 1, 2, 0])
    clean = np.eye(3)[[0, 1, 0, 0]]
    adv = np.eye(3)[[1, 1, 2, 0]]
    c, w, r = select_samples(y, clean, adv)
    assert c.tolist() == [True, True, False, True]
    assert w.tolist() == [True, False, False, False]
    assert r.tolist() == [False, True, False, True]
    assert not np.any(w & r) and np.array_equal(w | r, c)


# --------------------------------------------------------------- stage 2
def test_estimator_training_raises_the_gap_on_selected_samples(digits, digits_model, stage2):
    nat, adv, _, info = stage2
    assert info["used"] == "W" and info["counts"]["W"] >= 2
    assert info["counts"]["W"] + info["counts"]["R"] == info["counts"]["C"]
    x, y = digits[0][600:900], digits[1][600:900]  # held-out images of the training split
    x_adv = rk.attacks.PGD(eps=EPS, steps=5, seed=0)(digits_model, x, y)
    lc = digits_model.predict(x, verbose=0)
    la = digits_model.predict(x_adv, verbose=0)
    _, w, _ = select_samples(y, lc, la)
    args = (x[w], x_adv[w], lc[w], la[w])
    _, _, gap_n, gap_a = estimator_losses(nat, adv, *args, mode="paper", training=False)
    keras.utils.set_random_seed(1)  # the untrained baseline must not depend on test order
    fresh_n = NaturalMIEstimator((8, 8, 1), 10, features=FEATURES)
    fresh_a = AdversarialMIEstimator((8, 8, 1), 10, features=FEATURES)
    _, _, gap_n0, gap_a0 = estimator_losses(fresh_n, fresh_a, *args, mode="paper", training=False)
    # trained: natural MI higher on natural outputs, adversarial MI higher on adversarial ones
    assert float(gap_n) > float(gap_n0) + 0.5 and float(gap_n) > 0.5
    assert float(gap_a) > float(gap_a0) + 0.5 and float(gap_a) > 0.5
    # the training history records a growing gap
    hist = np.array(info["history"])
    assert hist[-1, 2] > hist[0, 2] and hist[-1, 3] > hist[0, 3]


def test_stage2_training_set_choice():
    assert training_set({"C": 10, "W": 4, "R": 6}) == ("W", "paper")
    assert training_set({"C": 10, "W": 1, "R": 9}, "cosine") == ("C", "cosine")
    assert training_set({"C": 1, "W": 0, "R": 1}) == ("all", "dv")


@pytest.mark.slow
def test_stage2_falls_back_to_dv_without_correct_samples(digits):
    x, y = digits[0][:64], digits[1][:64]
    # a constant classifier that always predicts class 1
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(
                10,
                kernel_initializer="zeros",
                bias_initializer=keras.initializers.Constant([-1.0] + [1.0] * 9),
            ),
        ]
    )
    y = np.zeros_like(y)  # every label 0: no clean-correct sample
    _, _, info = train_namid_estimators(
        model, (x, y), rk.attacks.PGD(eps=EPS, steps=1), features=8, epochs=1, batch_size=32
    )
    assert info["counts"]["C"] == 0 and info["used"] == "all" and info["objective"] == "dv"


def test_stage2_reports_epochs_through_the_logger(digits, digits_model, caplog, capsys):
    """verbose=1 logs one line per epoch on the "robustkit" logger (no print); verbose=0
    is silent."""
    x, y = digits[0][:64], digits[1][:64]
    kwargs = dict(features=8, epochs=2, batch_size=32, milestones=())
    attack = rk.attacks.PGD(eps=EPS, steps=1, seed=0)
    with caplog.at_level(logging.INFO, logger="robustkit"):
        _, info = train_standard_estimator(digits_model, (x, y), attack, verbose=1, **kwargs)
        lines = [r.getMessage() for r in caplog.records if r.name == "robustkit"]
        assert [line.split(":")[0] for line in lines] == [
            "estimators epoch 1/2",
            "estimators epoch 2/2",
        ]
        # the logged figures are the history's (loss, mi) per epoch
        assert lines[1].split(": ")[1] == " ".join(f"{v:.4f}" for v in info["history"][1])
        caplog.clear()
        train_standard_estimator(digits_model, (x, y), attack, verbose=0, **kwargs)
        assert not [r for r in caplog.records if r.name == "robustkit"]
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"features": 0}, "features"),
        ({"objective": "kl"}, "objective"),
        ({"epochs": 0}, "epochs"),
        ({"data": (np.zeros((4, 8, 8, 1)) + 2, np.zeros(4, int))}, "range"),
    ],
)
def test_stage2_rejects_bad_arguments(digits_model, kwargs, match):
    args = {"data": (np.zeros((4, 8, 8, 1), "float32"), np.zeros(4, int))}
    args.update(kwargs)
    data = args.pop("data")
    with pytest.raises(ValueError, match=match):
        train_namid_estimators(digits_model, data, rk.attacks.PGD(eps=EPS, steps=1), **args)


# ------------------------------------------------------- estimator fast path
def test_estimator_fast_path_equals_per_sample_dv_on_scores(digits):
    """call / mi_pair compute the DV from one matrix product and the joint term
    from mean local vectors: same figures as per_sample_dv on the full scores."""
    keras.utils.set_random_seed(3)
    est = NaturalMIEstimator((8, 8, 1), 10, features=16)
    x = digits[0][:12]
    x_adv = np.clip(x + 0.05, 0, 1).astype("float32")
    rng = np.random.default_rng(0)
    la, lc = (rng.normal(size=(12, 10)).astype("float32") * 3 for _ in range(2))
    ref_a = rk.namid.per_sample_dv(est.scores(x, la)).numpy()
    ref_c = rk.namid.per_sample_dv(est.scores(x, lc)).numpy()
    np.testing.assert_allclose(est((x, la)).numpy(), ref_a, rtol=1e-5, atol=1e-5)
    got_a, got_c = est.mi_pair(x, x_adv, la, lc)
    np.testing.assert_allclose(got_a.numpy(), ref_a, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(got_c.numpy(), ref_c, rtol=1e-5, atol=1e-5)


def test_frozen_estimator_records_no_backward_through_its_local_branch(digits):
    """Stage 3 needs gradients only to the logits: a frozen estimator's local
    branch is cut from the tape (its tf.Variables stay watchable, so without the
    cut a tape would differentiate through the 2048-wide local block); a
    trainable one (stage 2) still gets gradients there."""
    keras.utils.set_random_seed(0)
    est = AdversarialMIEstimator((8, 8, 1), 10, features=8)
    x = tf.constant(digits[0][:6])
    x_adv = tf.constant(np.clip(digits[0][:6] + 0.05, 0, 1))
    logits = tf.constant(np.random.default_rng(0).normal(size=(6, 10)).astype("float32"))
    local_vars = [est.l_res2.kernel, est.l_conv1.kernel]
    for trainable in (True, False):
        est.trainable = trainable
        with tf.GradientTape() as tape:
            tape.watch(logits)
            mi = tf.reduce_sum(est.mi(x, x_adv, logits))
        grads = tape.gradient(mi, local_vars + [logits])
        assert grads[-1] is not None and float(tf.reduce_max(tf.abs(grads[-1]))) > 0
        if trainable:
            assert all(g is not None for g in grads[:-1])
        else:
            assert all(g is None for g in grads[:-1])


# ------------------------------------------------------------------ losses
def test_l_cos_and_selection_mask():
    assert float(l_cos([1.0, 2.0], [2.0, 4.0])) < 1e-6
    assert abs(float(l_cos([1.0, 0.0], [-1.0, 0.0])) - 2.0) < 1e-6
    # masked entries are dropped: the remaining vectors are parallel
    assert float(l_cos([1.0, 5.0], [2.0, -7.0], mask=[1.0, 0.0])) < 1e-6
    y = np.array([0, 1, 2])
    clean = np.eye(3, dtype="float32")[[0, 1, 0]]
    adv = np.eye(3, dtype="float32")[[1, 1, 0]]
    assert selection_mask("wrong", y, clean, adv).numpy().tolist() == [1.0, 0.0, 0.0]
    assert selection_mask("correct", y, clean, adv).numpy().tolist() == [1.0, 1.0, 0.0]
    assert selection_mask("all", y, clean, adv, sample_weight=[1.0, 0.5, 2.0]).numpy().tolist() == [
        1.0,
        0.5,
        2.0,
    ]


def test_namid_loss_equals_its_formula(stage2, digits):
    nat, adv, _, _ = stage2
    rng = np.random.default_rng(0)
    x = digits[0][:16]
    x_adv = np.clip(x + rng.uniform(-EPS, EPS, x.shape), 0, 1).astype("float32")
    y = digits[1][:16]
    lc = rng.normal(size=(16, 10)).astype("float32")
    lc[np.arange(16), y] += 5.0  # clean-correct
    la = rng.normal(size=(16, 10)).astype("float32")
    obj = NAMID(nat, adv, alpha=5.0, lam=0.1, select="correct", mi_floor=None)
    total, parts = obj(y, la, lc, x=x, x_adv=x_adv)
    en_a, en_n = nat.mi(x, x_adv, la).numpy(), nat.mi(x, x_adv, lc).numpy()
    ea_a, ea_n = adv.mi(x, x_adv, la).numpy(), adv.mi(x, x_adv, lc).numpy()
    cos = lambda a, b: abs(1 - a @ b / np.sqrt((a @ a) * (b @ b)))
    l_mi = cos(en_a, en_n) + cos(ea_a, ea_n) + 0.1 * np.mean(ea_a - en_a)
    ce = np.mean(-tf.nn.log_softmax(la).numpy()[np.arange(16), y])
    assert abs(float(parts["l_mi"]) - l_mi) < 1e-3
    assert abs(float(total) - (ce + 5.0 * l_mi)) < 1e-3
    # the floor only changes the lam term
    floored = NAMID(nat, adv, lam=0.1, select="correct", mi_floor=0.0)(y, la, lc, x=x, x_adv=x_adv)
    floored = floored[1]
    expected = cos(en_a, en_n) + cos(ea_a, ea_n) + 0.1 * np.mean(np.maximum(ea_a, 0) - en_a)
    assert abs(float(floored["l_mi"]) - expected) < 1e-3


def test_namid_gradient_reaches_the_model_only_through_logits(stage2, digits):
    nat, adv, std, _ = stage2
    x = tf.constant(digits[0][:8])
    x_adv = tf.constant(np.clip(digits[0][:8] + 0.05, 0, 1))
    y = digits[1][:8]
    lc = tf.constant(np.eye(10, dtype="float32")[y] * 3)
    la = tf.constant(np.random.default_rng(0).normal(size=(8, 10)).astype("float32"))
    for obj in (NAMID(nat, adv, select="all"), WMIM(std)):
        with tf.GradientTape(persistent=True) as tape:
            tape.watch([x, x_adv, lc, la])
            total, _ = obj(y, la, lc, x=x, x_adv=x_adv)
        assert tape.gradient(total, x) is None and tape.gradient(total, x_adv) is None
        assert float(tf.reduce_max(tf.abs(tape.gradient(total, la)))) > 0
    # the estimators are frozen: none of their weights is trainable
    assert not nat.trainable_variables and not std.trainable_variables


def test_wmim_loss_equals_its_formula(stage2, digits):
    _, _, std, _ = stage2
    x = digits[0][:8]
    x_adv = np.clip(x + 0.05, 0, 1).astype("float32")
    y = digits[1][:8]
    la = np.random.default_rng(1).normal(size=(8, 10)).astype("float32")
    total, parts = WMIM(std, alpha=2.0)(y, la, x=x, x_adv=x_adv)
    mi = float(np.mean(std((x_adv, la))))
    ce = float(np.mean(-tf.nn.log_softmax(la).numpy()[np.arange(8), y]))
    assert abs(float(total) - (ce - 2.0 * mi)) < 1e-4


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: NAMID(), "natural_estimator"),
        (
            lambda: NAMID(
                AdversarialMIEstimator((8, 8, 1), 10, features=4),
                AdversarialMIEstimator((8, 8, 1), 10, features=4),
            ),
            "pattern",
        ),
        (
            lambda: NAMID(
                NaturalMIEstimator((8, 8, 1), 10, features=4),
                AdversarialMIEstimator((8, 8, 1), 10, features=4),
                alpha=-1,
            ),
            "alpha",
        ),
        (
            lambda: NAMID_T(
                NaturalMIEstimator((8, 8, 1), 10, features=4),
                AdversarialMIEstimator((8, 8, 1), 10, features=4),
                select="some",
            ),
            "select",
        ),
        (lambda: WMIM(NaturalMIEstimator((8, 8, 1), 10, features=4)), "standard"),
        (lambda: NAMID(estimators_path="/nonexistent/dir"), "estimators_path"),
    ],
)
def test_defenses_reject_bad_arguments(make, match):
    with pytest.raises(ValueError, match=match):
        make()


def test_registry_names():
    for name, cls in (("wmim", WMIM), ("namid", NAMID), ("namid_t", NAMID_T), ("namid_m", NAMID_M)):
        assert rk.objectives.REGISTRY[name] is cls


# ------------------------------------------------ training through model.fit
@pytest.mark.parametrize(
    "name",
    [
        "namid",
        pytest.param("namid_t", marks=pytest.mark.slow),
        pytest.param("namid_m", marks=pytest.mark.slow),
        pytest.param("wmim", marks=pytest.mark.slow),
    ],
)
def test_defense_trains_and_beats_undefended_model(
    name, stage2, stage2_cosine, digits, digits_model, tmp_path
):
    _, _, std, _ = stage2
    nat, adv = stage2_cosine
    x, y, x_te, y_te = digits
    obj = {
        # alpha = 1: at the paper's alpha = 5 the MI term dominates the CE term on
        # this tiny CPU setting (see README's NAMID section and benchmarks/results/table1_*)
        "namid": lambda: NAMID(nat, adv, alpha=1.0),
        "namid_t": lambda: NAMID_T(nat, adv, beta=6.0, alpha=1.0),
        "namid_m": lambda: NAMID_M(nat, adv, beta=5.0, alpha=1.0),
        "wmim": lambda: WMIM(std, alpha=1.0),
    }[name]()
    keras.utils.set_random_seed(0)
    base = rk.models.small_cnn((8, 8, 1))
    base.compile(
        optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    base.fit(x, y, batch_size=64, epochs=1, verbose=0)  # the clean warm-up
    model = rk.RobustModel(base, objective=obj, attack=rk.attacks.PGD(eps=EPS, steps=3))
    model.compile(optimizer=keras.optimizers.Adam(2e-3))
    hist = model.fit(x, y, batch_size=64, epochs=6, verbose=0).history
    assert all(np.isfinite(v[-1]) for v in hist.values())
    assert set(obj.parts) <= set(hist)
    undefended = _robust_acc(digits_model, x_te, y_te)
    defended = _robust_acc(model.base_model, x_te, y_te)
    print("robust accuracy defended / undefended:", defended, undefended)
    assert defended > undefended + 0.05, (defended, undefended)
    # serialisation round trip: identical outputs and loss
    path = str(tmp_path / f"{name}.keras")
    model.save(path)
    again = keras.saving.load_model(path)
    assert type(again.objective) is type(obj)
    assert np.array_equal(again.predict(x_te[:32], verbose=0), model.predict(x_te[:32], verbose=0))
    lc, la = base(x_te[:32]), base(np.clip(x_te[:32] + 0.05, 0, 1))
    kw = {"x": x_te[:32], "x_adv": np.clip(x_te[:32] + 0.05, 0, 1)}
    assert float(again.objective(y_te[:32], la, lc, **kw)[0]) == float(
        obj(y_te[:32], la, lc, **kw)[0]
    )


# ----------------------------------------------------------------- monitor
def test_mi_monitor_logs_natural_and_adversarial_mi(stage2, digits):
    nat, adv, _, _ = stage2
    x, y, x_te, y_te = digits
    model = rk.RobustModel(
        rk.models.small_cnn((8, 8, 1)),
        objective=NAMID(nat, adv),
        attack=rk.attacks.PGD(eps=EPS, steps=2),
    )
    model.compile(optimizer="adam")
    # no random start: the check below recomputes the same figures
    monitor = MIMonitor(
        (x_te, y_te), attack=rk.attacks.PGD(eps=EPS, steps=2, random_start=False), max_examples=200
    )
    hist = model.fit(
        x[:256], y[:256], batch_size=64, epochs=1, verbose=0, callbacks=[monitor]
    ).history
    n, a = hist["val_natural_mi"][0], hist["val_adversarial_mi"][0]
    assert np.isfinite(n) and np.isfinite(a)
    assert (n, a) == pytest.approx(monitor.compute(model), abs=1e-4)
    with pytest.raises(ValueError, match="data"):
        MIMonitor(x_te)


# ---------------------------------------------------------------- pipeline
def test_pipeline_runs_end_to_end_and_caches_stages(digits, tmp_path):
    x, y = digits[0][:256], digits[1][:256]
    kwargs = dict(
        attack=rk.attacks.PGD(eps=EPS, steps=2),
        out_dir=str(tmp_path),
        stage1_epochs=1,
        estimator_epochs=1,
        epochs=1,
        warmup_epochs=1,
        batch_size=64,
        estimator_kwargs={"features": 8, "batch_size": 64},
        verbose=0,
    )
    model_fn = lambda: rk.models.small_cnn((8, 8, 1), width=8, dense=16)
    first = run_pipeline("namid", model_fn, (x, y), **kwargs)
    assert first["ran"] == ["target", "estimators", "model"]
    assert isinstance(first["model"].objective, NAMID)
    for key in ("target", "model", "robust_model"):
        assert os.path.exists(first["paths"][key])
    with open(os.path.join(first["paths"]["estimators"], "info.json")) as f:
        assert set(json.load(f)["counts"]) == {"C", "W", "R"}
    second = run_pipeline("namid", model_fn, (x, y), **kwargs)
    assert second["ran"] == [] and second["skipped"] == ["target", "estimators", "model"]
    assert np.array_equal(
        second["model"].predict(x[:16], verbose=0), first["model"].predict(x[:16], verbose=0)
    )
    # other settings in the same folder are refused
    with pytest.raises(ValueError, match="other settings"):
        run_pipeline("namid", model_fn, (x, y), **dict(kwargs, epochs=2))
    with pytest.raises(ValueError, match="defense"):
        run_pipeline("trades", model_fn, (x, y), **kwargs)
