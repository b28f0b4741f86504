"""RobustModel and the robust callbacks: training works, schedules reach the traced
step, metrics are right (also under MirroredStrategy), and models round-trip."""

import csv
import json
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.callbacks import clean_and_robust_accuracy


class PerturbationSize(rk.objectives.Objective):
    """Test objective: CE on x_adv, and logs the batch's max |x_adv - x|."""

    parts = ("linf",)

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        ce, _ = rk.objectives.at_loss(y, logits_adv)
        return ce, {"linf": tf.reduce_max(tf.abs(x_adv - x))}


def _robust_model(objective="standard", eps=0.1, steps=4, seed=0, random_start=True):
    keras.utils.set_random_seed(seed)
    model = rk.RobustModel(
        rk.models.small_cnn((8, 8, 1)),
        objective=objective,
        attack=rk.attacks.PGD(eps=eps, steps=steps, step_size=eps / 3, random_start=random_start),
    )
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    return model


@pytest.mark.parametrize("defense", ["standard", "trades", "mart"])
def test_each_defense_trains_and_beats_undefended_model(defense, digits, digits_model):
    x_tr, y_tr, x_te, y_te = digits
    model = _robust_model(defense)
    hist = model.fit(
        x_tr,
        y_tr,
        epochs=6,
        batch_size=64,
        verbose=0,
        callbacks=[rk.callbacks.EpsilonWarmup(epochs=2)],
    )
    parts = set(rk.objectives.get(defense).parts)
    assert {"loss", "clean_accuracy", "adv_accuracy", "accuracy"} | parts <= set(hist.history)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    attack = rk.attacks.PGD(eps=0.1, steps=20)
    clean, robust = clean_and_robust_accuracy(model, x_te[:300], y_te[:300], attack)
    _, robust_undefended = clean_and_robust_accuracy(digits_model, x_te[:300], y_te[:300], attack)
    assert clean > 0.85
    assert robust > robust_undefended + 0.1, (robust, robust_undefended)


def test_fast_at_fgsm_trains_and_beats_undefended_model(digits, digits_model):
    """Fast AT (Wong et al. 2020): FGSM from a uniform start with step 1.25 eps."""
    x_tr, y_tr, x_te, y_te = digits
    keras.utils.set_random_seed(0)
    attack = rk.attacks.FGSM(eps=0.1, random_start=True, step_size=0.125)
    model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=attack)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    hist = model.fit(
        x_tr,
        y_tr,
        epochs=8,
        batch_size=64,
        verbose=0,
        callbacks=[rk.callbacks.EpsilonWarmup(epochs=2)],
    )
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    assert model.get_config()["attack"]["class_name"] == "FGSM"
    pgd = rk.attacks.PGD(eps=0.1, steps=20)
    clean, robust = clean_and_robust_accuracy(model, x_te[:300], y_te[:300], pgd)
    _, robust_undefended = clean_and_robust_accuracy(digits_model, x_te[:300], y_te[:300], pgd)
    assert clean > 0.85
    assert robust > robust_undefended + 0.1, (robust, robust_undefended)


def test_inner_attack_gets_the_objectives_loss_and_start(digits):
    """The objective's ``inner`` reaches the attack through the training protocol:
    TRADES' inner attack ascends the KL from x + 0.001 N(0, 1) and returns its last iterate."""
    x_tr, y_tr, _, _ = digits
    seen = {}

    class Recorder(rk.attacks.FGSM):
        def perturb(self, model_fn, x, y, **kwargs):
            seen.update({k: v for k, v in kwargs.items() if k != "eps"})
            return super().perturb(model_fn, x, y, **kwargs)

    model = rk.RobustModel(
        rk.models.small_cnn((8, 8, 1)), objective="trades", attack=Recorder(eps=0.1)
    )
    model.compile(optimizer="adam")
    model.fit(x_tr[:64], y_tr[:64], epochs=1, batch_size=64, verbose=0)
    assert seen == {"loss": "kl", "random_start": "normal", "track_best": False}


def test_fit_on_tf_data_and_validation(digits):
    x_tr, y_tr, x_te, y_te = digits
    model = _robust_model(steps=2)
    ds = rk.data.make_dataset(x_tr[:512], y_tr[:512], batch_size=64)
    val = rk.data.make_dataset(x_te[:128], y_te[:128], batch_size=64, shuffle=False)
    hist = model.fit(ds, validation_data=val, epochs=1, verbose=0)
    assert "val_clean_accuracy" in hist.history and "val_loss" in hist.history
    # validation without a test attack reports only what it measured
    assert "val_adv_accuracy" not in hist.history
    res = model.evaluate(x_te[:128], y_te[:128], verbose=0, return_dict=True)
    pred = np.argmax(model.base_model.predict(x_te[:128], verbose=0), -1)
    assert res["clean_accuracy"] == pytest.approx(float((pred == y_te[:128]).mean()), abs=1e-6)


def test_test_attack_reports_adversarial_accuracy(digits, digits_model):
    _, _, x_te, y_te = digits
    model = rk.RobustModel(
        digits_model,
        attack=rk.attacks.PGD(eps=0.1, steps=3),
        test_attack=rk.attacks.PGD(eps=0.1, steps=10, random_start=False),
    )
    model.compile(optimizer="adam")
    res = model.evaluate(x_te, y_te, verbose=0, return_dict=True, batch_size=len(x_te))
    x_adv = rk.attacks.PGD(eps=0.1, steps=10, random_start=False)(digits_model, x_te, y_te)
    expected = float((np.argmax(digits_model.predict(x_adv, verbose=0), -1) == y_te).mean())
    assert res["adv_accuracy"] == pytest.approx(expected, abs=1e-6)
    assert res["adv_accuracy"] < res["clean_accuracy"]


def test_epsilon_warmup_reaches_the_traced_step(digits):
    """The ramp must change the radius used inside the compiled train step."""
    x_tr, y_tr, _, _ = digits
    n_batches = 8
    x, y = x_tr[: 64 * n_batches], y_tr[: 64 * n_batches]
    model = _robust_model(PerturbationSize(), eps=0.2, steps=3)
    seen = []
    recorder = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(float(model.eps.numpy()))
    )
    warm = rk.callbacks.EpsilonWarmup(steps=2 * n_batches)
    hist = model.fit(
        x, y, epochs=1, batch_size=64, shuffle=False, verbose=0, callbacks=[warm, recorder]
    )
    ramp = [0.2 * (k + 1) / (2 * n_batches) for k in range(n_batches)]
    np.testing.assert_allclose(seen, ramp, rtol=1e-5)
    # the logged perturbation size follows the ramp (its epoch mean), not the full eps
    assert hist.history["linf"][0] == pytest.approx(np.mean(ramp), rel=0.05)
    assert hist.history["eps"][0] == pytest.approx(np.mean(ramp), rel=1e-5)  # logged eps
    # the radius is restored to the attack's eps at the end of fit
    assert float(model.eps.numpy()) == pytest.approx(0.2)


def test_robust_evaluation_feeds_keras_callbacks(digits, tmp_path):
    x_tr, y_tr, x_te, y_te = digits
    model = _robust_model(steps=2)
    csv_path = tmp_path / "log.csv"
    ckpt = tmp_path / "best.keras"
    cbs = [
        rk.callbacks.RobustEvaluation((x_te, y_te), max_examples=100),
        keras.callbacks.CSVLogger(str(csv_path)),
        keras.callbacks.ModelCheckpoint(
            str(ckpt), monitor="val_robust_accuracy", mode="max", save_best_only=True
        ),
    ]
    model.fit(x_tr[:256], y_tr[:256], epochs=2, batch_size=64, verbose=0, callbacks=cbs)
    with open(csv_path) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 2 and "val_robust_accuracy" in rows[0]
    logged = float(rows[-1]["val_robust_accuracy"])
    clean, robust = clean_and_robust_accuracy(
        model, x_te[:100], y_te[:100], rk.attacks.PGD(eps=0.1, steps=20)
    )
    assert 0.0 <= logged <= float(rows[-1]["val_clean_accuracy"])
    assert abs(logged - robust) < 0.1  # same attack up to its random start
    assert ckpt.exists()


def test_robust_evaluation_verbose_shows_a_progress_bar(digits, digits_model, capsys, caplog):
    import logging

    _, _, x_te, y_te = digits
    model = rk.RobustModel(digits_model, attack=rk.attacks.PGD(eps=0.1, steps=2))
    cb = rk.callbacks.RobustEvaluation((x_te, y_te), max_examples=120, verbose=1)
    cb.set_model(model)
    cb.params = {"epochs": 1}
    cb.on_train_begin()  # default attack: PGD-20 in the training attack's threat model
    assert (cb.attack.steps, cb.attack.eps, cb.attack.norm) == (20, 0.1, "linf")
    logs = {}
    with caplog.at_level(logging.INFO, logger="robustkit"):
        cb.on_epoch_end(0, logs)
    attacked = int(cb.last.correct.sum())  # the attack runs on the clean-correct examples
    assert f"{attacked}/{attacked}" in capsys.readouterr().out  # keras.utils.Progbar
    assert f"val_robust_accuracy={logs['val_robust_accuracy']:.4f}" in caplog.text
    quiet = rk.callbacks.RobustEvaluation((x_te, y_te), attack=cb.attack, max_examples=120)
    quiet.set_model(model)
    quiet.on_epoch_end(0, {})
    assert capsys.readouterr().out == ""


def test_best_robust_checkpoint_restores_best_weights(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    model = _robust_model(steps=1)
    scores = [(0.5, 0.1), (0.9, 0.7), (0.8, 0.2)]  # best (clean + robust) / 2 at epoch 1
    snapshots = []

    class FakeEval(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_clean_accuracy"], logs["val_robust_accuracy"] = scores[epoch]
            snapshots.append([w.numpy() for w in model.weights])

    path = tmp_path / "best.weights.h5"
    best = rk.callbacks.BestRobustCheckpoint(str(path))
    model.fit(
        x_tr[:128], y_tr[:128], epochs=3, batch_size=64, verbose=0, callbacks=[FakeEval(), best]
    )
    assert best.best_epoch == 1 and best.best_score == pytest.approx(0.8)
    for w, ref in zip(model.weights, snapshots[1]):
        np.testing.assert_array_equal(w.numpy(), ref)
    assert not all(np.array_equal(a, b) for a, b in zip(snapshots[1], snapshots[2]))
    fresh = rk.models.small_cnn((8, 8, 1))
    fresh.load_weights(str(path))
    np.testing.assert_allclose(
        fresh.predict(x_tr[:8], verbose=0), model.predict(x_tr[:8], verbose=0), atol=1e-6
    )


def test_keras_file_round_trip(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    model = _robust_model(rk.objectives.TRADES(beta=3.0), steps=2)
    model.fit(x_tr[:128], y_tr[:128], epochs=1, batch_size=64, verbose=0)
    model.eps.assign(0.05)
    path = tmp_path / "robust.keras"
    model.save(str(path))
    loaded = keras.saving.load_model(str(path))
    assert isinstance(loaded, rk.RobustModel)
    assert isinstance(loaded.objective, rk.objectives.TRADES) and loaded.objective.beta == 3.0
    assert loaded.attack.get_config() == model.attack.get_config()
    assert float(loaded.eps.numpy()) == pytest.approx(0.05)
    np.testing.assert_array_equal(
        loaded.predict(x_tr[:32], verbose=0), model.predict(x_tr[:32], verbose=0)
    )
    assert int(loaded.optimizer.iterations.numpy()) == int(model.optimizer.iterations.numpy())
    loaded.fit(x_tr[:64], y_tr[:64], epochs=1, batch_size=64, verbose=0)  # still trains


def test_bad_arguments():
    base = rk.models.small_cnn((8, 8, 1))
    with pytest.raises(ValueError, match="base_model"):
        rk.RobustModel(lambda x: x)
    with pytest.raises(ValueError, match="defense"):
        rk.RobustModel(base, objective="nonsense")
    with pytest.raises(ValueError, match="attack"):
        rk.RobustModel(base, attack="pgd")
    model = rk.RobustModel(base)
    with pytest.raises(ValueError, match="loss"):
        model.compile(optimizer="adam", loss="mse")
    with pytest.raises(ValueError, match="epochs"):
        rk.callbacks.EpsilonWarmup()
    with pytest.raises(ValueError, match="epochs"):
        rk.callbacks.EpsilonWarmup(epochs=-1)
    with pytest.raises(ValueError, match="filepath"):
        rk.callbacks.BestRobustCheckpoint("weights.bin")


def test_non_trainable_attacks_are_refused():
    base = rk.models.small_cnn((8, 8, 1))
    # attacks without the training protocol are refused, naming `attack`
    for attack in (rk.attacks.AutoAttack(eps=0.1), rk.attacks.Transfer(base, rk.attacks.FGSM())):
        assert not attack.trainable
        with pytest.raises(ValueError, match="`attack` must implement the training protocol"):
            rk.RobustModel(base, attack=attack)

    class NoRadius(rk.attacks.PGD):
        eps = None

        def __init__(self):
            pass

    with pytest.raises(ValueError, match="`attack` must have a radius"):
        rk.RobustModel(base, attack=NoRadius())


def test_training_uses_public_keras_only():
    import inspect

    from robustkit import training

    source = inspect.getsource(training)
    assert "keras.src" not in source and "_compile_metrics" not in source


_MIRRORED_SCRIPT = textwrap.dedent(
    """
    import json, os, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import tensorflow as tf
    cpu = tf.config.list_physical_devices("CPU")[0]
    tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
    import keras, robustkit as rk
    x, y = rk.data.load("digits", "train")
    x, y = x[:512], y[:512]
    out = {}
    for defense in sys.argv[1:]:
        for name, strategy in [("one", tf.distribute.OneDeviceStrategy("/cpu:0")),
                               ("mirrored", tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"]))]:
            keras.utils.set_random_seed(0)
            with strategy.scope():
                model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), objective=defense,
                                       attack=rk.attacks.PGD(eps=0.1, steps=3, random_start=False))
                model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
            hist = model.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0)
            out[defense + "/" + name] = {
                k: [float(v) for v in vals] for k, vals in hist.history.items()
            }
    print("RESULT" + json.dumps(out))
    """
)


def test_mirrored_strategy_logs_match_single_device(tmp_path):
    """Two logical CPU devices: logged loss and accuracies equal a one-device run."""
    script = tmp_path / "mirrored.py"
    script.write_text(_MIRRORED_SCRIPT)
    defenses = ["standard", "mart"]
    proc = subprocess.run(
        [sys.executable, str(script), *defenses], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(row for row in proc.stdout.splitlines() if row.startswith("RESULT"))
    res = json.loads(line[len("RESULT") :])
    for defense in defenses:
        one, mirrored = res[defense + "/one"], res[defense + "/mirrored"]
        assert set(one) == set(mirrored)
        for key in one:
            # MART's inner attack starts from x + 0.001 N(0, 1), drawn per device
            np.testing.assert_allclose(
                mirrored[key], one[key], atol=0.02, err_msg=f"{defense} {key}"
            )
        assert one["loss"][0] > 1.0  # not divided by the replica count
        assert mirrored["clean_accuracy"][-1] > 0.1
