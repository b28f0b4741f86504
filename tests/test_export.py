"""SavedModel export: endpoints, identical logits, gradients, attackable, metadata,
atomic writes, bad input."""

import importlib
import json
import os

import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk

export_module = importlib.import_module("robustkit.export.savedmodel")


def _tiny():
    return rk.models.small_cnn((8, 8, 1), width=4, dense=8, name="tiny")


@pytest.fixture(scope="module")
def exported(digits_model, digits, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("export") / "digits_cnn")
    _, _, x_te, y_te = digits
    meta = {
        "dataset": "digits",
        "threat_model": {"norm": "linf", "eps": 0.1},
        "defense": "none",
        "hyperparameters": {"epochs": 15},
        "clean_accuracy": 0.97,
        "robust_accuracy": np.float64(0.1),  # numpy scalars are fine
        "attack": "PGD-40 linf eps=0.1 step=0.025",
        "n_examples": len(x_te),
    }
    record = rk.export(digits_model, path, metadata=meta)
    return path, record


def test_reload_gives_identical_logits_and_gradients(exported, digits_model, digits):
    path, _ = exported
    loaded, meta = rk.load(path)
    x = digits[2][:64]
    expected = digits_model(x, training=False).numpy()
    np.testing.assert_array_equal(loaded.serve(x).numpy(), expected)
    default = loaded.signatures["serving_default"](tf.constant(x))
    np.testing.assert_array_equal(next(iter(default.values())).numpy(), expected)
    # differentiable after reload: non-zero input gradients through `serve`
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=digits[3][:64], logits=loaded.serve(xt)
            )
        )
    grad = tape.gradient(loss, xt).numpy()
    assert np.all(np.isfinite(grad)) and np.abs(grad).sum(axis=(1, 2, 3)).min() > 0
    # and equal to the Keras model's input gradient
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss_k = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=digits[3][:64], logits=digits_model(xt, training=False)
            )
        )
    np.testing.assert_allclose(grad, tape.gradient(loss_k, xt).numpy(), rtol=1e-4, atol=1e-6)


def test_pgd_attacks_the_reloaded_model(exported, digits_model, digits):
    path, _ = exported
    loaded, _ = rk.load(path)
    _, _, x_te, y_te = digits
    x, y = x_te[:200], y_te[:200]
    attack = rk.attacks.PGD(eps=0.1, steps=5, random_start=False, loop="while")
    x_adv = attack(loaded, x, y)
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    clean = np.mean(np.argmax(loaded.serve(x).numpy(), -1) == y)
    robust_loaded = np.mean(np.argmax(loaded.serve(x_adv).numpy(), -1) == y)
    robust_keras = np.mean(np.argmax(digits_model(attack(digits_model, x, y)).numpy(), -1) == y)
    assert clean > 0.9 and robust_loaded < clean - 0.3  # the undefended model breaks
    assert abs(robust_loaded - robust_keras) <= 0.03  # same attack strength as on Keras


def test_metadata_record(exported):
    path, record = exported
    with open(os.path.join(path, "robustkit.json")) as f:
        raw = json.load(f)
    assert raw == json.loads(record.to_json()) and raw["format_version"] == 2
    meta = export_module.read_record(path)
    assert meta == record
    assert meta.dataset == "digits" and meta.input_shape == [8, 8, 1]
    assert meta.num_classes == 10
    assert (meta.threat.norm, meta.threat.eps) == ("linf", 0.1)
    assert meta.clean_accuracy == 0.97 and meta.robust_accuracy == 0.1
    assert meta.headline.attack.startswith("PGD-40") and meta.headline.n_examples == 359
    assert meta.versions["robustkit"] == rk.__version__
    assert meta.versions["tensorflow"] == tf.__version__
    assert meta.date[:4].isdigit() and "T" in meta.date
    assert meta.endpoints == ("serve", "serving_default")
    # nothing but the export in the parent folder (the temporary folder was renamed)
    assert os.listdir(os.path.dirname(path)) == ["digits_cnn"]


def test_robust_model_exports_base_model_and_records_training():
    model = rk.RobustModel(
        _tiny(), objective=rk.objectives.TRADES(beta=3.0), attack=rk.attacks.PGD(eps=0.2, steps=7)
    )
    meta = export_module.build_record(model, {"dataset": "digits"})
    assert meta.training.defense == "trades" and meta.training.hyperparameters == {"beta": 3.0}
    assert (meta.threat.norm, meta.threat.eps) == ("linf", 0.2)
    assert meta.training.attack["config"]["steps"] == 7
    assert meta.training.attack["config"]["loss"] == "kl"  # what training really ran
    # caller's values win over the ones read off the model
    meta = export_module.build_record(model, {"defense": "custom"})
    assert meta.training.defense == "custom"


def test_failed_export_leaves_nothing(tmp_path, monkeypatch):
    path = str(tmp_path / "broken")

    def boom(record, folder):
        assert os.path.isfile(os.path.join(folder, "saved_model.pb"))  # midway: model written
        raise OSError("disk full")

    monkeypatch.setattr(export_module, "_write_metadata", boom)
    with pytest.raises(OSError, match="disk full"):
        rk.export(_tiny(), path)
    assert os.listdir(tmp_path) == []


def test_overwrite(tmp_path, monkeypatch):
    path = str(tmp_path / "m")
    first = _tiny()
    rk.export(first, path, metadata={"dataset": "first"})
    with pytest.raises(ValueError, match="`path`.*already exists"):
        rk.export(_tiny(), path)
    # a failed overwrite keeps the previous export intact
    monkeypatch.setattr(export_module, "_write_metadata", lambda r, f: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        rk.export(_tiny(), path, overwrite=True)
    monkeypatch.undo()
    loaded, meta = rk.load(path)
    x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
    assert meta.dataset == "first"
    np.testing.assert_array_equal(loaded.serve(x).numpy(), first(x).numpy())
    second = _tiny()
    rk.export(second, path, metadata={"dataset": "second"}, overwrite=True)
    loaded, meta = rk.load(path)
    assert meta.dataset == "second"
    np.testing.assert_array_equal(loaded.serve(x).numpy(), second(x).numpy())
    assert sorted(os.listdir(tmp_path)) == ["m"]


def test_not_a_robustkit_savedmodel(tmp_path):
    with pytest.raises(ValueError, match="is not a robustkit SavedModel"):
        rk.load(str(tmp_path / "missing"))
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "saved_model.pb").write_bytes(b"")  # a SavedModel without robustkit.json
    with pytest.raises(ValueError, match="is not a robustkit SavedModel"):
        rk.load(str(plain))


def test_bad_metadata_and_model(tmp_path):
    path = str(tmp_path / "m")
    with pytest.raises(ValueError, match="clean_accuracy"):
        rk.export(_tiny(), path, metadata={"clean_accuracy": 97.0})  # a percentage
    with pytest.raises(ValueError, match="`metadata`"):
        rk.export(_tiny(), path, metadata={"dataset": object()})
    with pytest.raises(ValueError, match="threat_model"):
        rk.export(_tiny(), path, metadata={"threat_model": {"eps": 0.1}})
    with pytest.raises(ValueError, match="`model`"):
        rk.export(lambda x: x, path)
    assert not os.path.exists(path)


def test_version_1_records_are_read(tmp_path):
    """A robustkit 0.1 robustkit.json (format_version 1) reads into the typed record."""
    from robustkit.export import ExportRecord

    v1 = {
        "format": "robustkit.savedmodel",
        "format_version": 1,
        "dataset": "digits",
        "input_shape": [8, 8, 1],
        "input_dtype": "float32",
        "input_range": [0.0, 1.0],
        "num_classes": 10,
        "threat_model": {"norm": "linf", "eps": 0.1},
        "defense": "standard",
        "hyperparameters": {"epochs": 15},
        "training_attack": {"class_name": "PGD", "config": {"steps": 10}},
        "clean_accuracy": 0.989,
        "robust_accuracy": 0.855,
        "attack": "PGD-40 (linf, eps=0.1, step=0.025)",
        "n_examples": 359,
        "endpoints": ["serve", "serving_default"],
        "robustkit_version": "0.1.0",
        "tensorflow_version": "2.21.0",
        "keras_version": "3.15.1",
        "date": "2026-12-01T10:00:00+00:00",
        "model": "small_cnn",
        "train_seconds": 8.0,
    }
    rec = ExportRecord.from_dict(v1)
    assert rec.dataset == "digits" and rec.input_shape == [8, 8, 1] and rec.num_classes == 10
    assert (rec.threat.norm, rec.threat.eps) == ("linf", 0.1)
    assert rec.training.defense == "standard" and rec.training.seconds == 8.0
    assert rec.training.attack == {"class_name": "PGD", "config": {"steps": 10}}
    assert rec.clean_accuracy == 0.989 and rec.robust_accuracy == 0.855
    assert rec.headline.n_examples == 359 and "no eps-ball check" in rec.headline.evaluator
    assert rec.versions == {"robustkit": "0.1.0", "tensorflow": "2.21.0", "keras": "3.15.1"}
    assert rec.extra == {"model": "small_cnn"}
    again = ExportRecord.from_json(rec.to_json())  # written back as version 2
    assert again == rec and json.loads(rec.to_json())["format_version"] == 2
    with pytest.raises(ValueError, match="format_version 3"):
        ExportRecord.from_dict({**v1, "format_version": 3})


def test_headline_is_the_lowest_robust_accuracy():
    from robustkit.export import ExportRecord, Measurement

    rec = ExportRecord(input_shape=[8, 8, 1])
    assert rec.headline is None and rec.robust_accuracy is None
    rec = rec.with_measurement(Measurement("PGD-40", 0.98, 0.85, 359))
    rec = rec.with_measurement(Measurement("AA", 0.98, 0.80, 359))
    rec = rec.with_measurement(Measurement("FGSM", 0.98, 0.90, 359))
    assert rec.headline.attack == "AA" and rec.robust_accuracy == 0.80
    with pytest.raises(ValueError, match="robust_accuracy"):
        Measurement("PGD-40", 0.98, 85.0, 359)  # a percentage, not a fraction


def test_serving_layout_logits_name_uint8_and_saved_model_cli(tmp_path, digits_model, digits):
    """``export(..., version=N, serve_uint8=True)``: the TF Serving layout, an output named
    ``logits``, a 0-255 endpoint, and ``saved_model_cli show``/``run`` work on it."""
    import subprocess
    import sys

    base = str(tmp_path / "served")
    rec1 = rk.export(
        digits_model, base, version=1, serve_uint8=True, metadata={"dataset": "digits"}
    )
    rk.export(digits_model, base, version=2, metadata={"dataset": "digits"})
    assert sorted(os.listdir(base)) == ["1", "2"]
    assert "serve_uint8" in rec1.endpoints
    loaded, rec = rk.load(base)  # the highest version
    assert rec.endpoints == ("serve", "serving_default")
    loaded1 = tf.saved_model.load(os.path.join(base, "1"))
    x = digits[2][:4]
    expected = digits_model(x).numpy()
    out = loaded1.signatures["serving_default"](images=tf.constant(x))
    assert list(out) == ["logits"]
    np.testing.assert_allclose(out["logits"].numpy(), expected, atol=1e-5)
    x8 = np.round(x * 255).astype("uint8")
    out8 = loaded1.signatures["serve_uint8"](images=tf.constant(x8))["logits"].numpy()
    np.testing.assert_allclose(out8, digits_model(x8.astype("float32") / 255).numpy(), atol=1e-4)
    with pytest.raises(ValueError, match="`version`"):
        rk.export(digits_model, base, version=0)

    cli = [sys.executable, "-m", "tensorflow.python.tools.saved_model_cli"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    show = subprocess.run(
        [*cli, "show", "--dir", os.path.join(base, "1"), "--all"],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert show.returncode == 0, show.stderr[-2000:]
    assert "serving_default" in show.stdout and "outputs['logits']" in show.stdout
    assert "serve_uint8" in show.stdout and "DT_UINT8" in show.stdout
    np.save(tmp_path / "x.npy", x[:2])
    run = subprocess.run(
        [*cli, "run", "--dir", os.path.join(base, "1"), "--tag_set", "serve",
         "--signature_def", "serving_default", "--inputs", f"images={tmp_path / 'x.npy'}",
         "--outdir", str(tmp_path / "out")],
        capture_output=True, text=True, env=env, timeout=300,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr[-2000:]
    np.testing.assert_allclose(np.load(tmp_path / "out" / "logits.npy"), expected[:2], atol=1e-5)


def test_model_card_is_written_and_updated(tmp_path, digits_model):
    from robustkit.export import Measurement, read_record, write_record

    path = str(tmp_path / "carded")
    rk.export(
        digits_model,
        path,
        metadata={
            "dataset": "digits",
            "threat_model": {"norm": "linf", "eps": 0.1},
            "defense": "standard",
            "clean_accuracy": 0.97,
            "robust_accuracy": 0.8,
            "attack": "PGD-40",
            "n_examples": 359,
        },
    )
    with open(os.path.join(path, "MODEL_CARD.md")) as f:
        card = f.read()
    assert card.startswith("# Model card: carded")
    assert "L∞ ball of radius 0.1" in card and "| PGD-40 | 359 | 97.0 % | 80.0 % ± 4.1 |" in card
    assert "AutoAttack, the field's standard check, has not been run" in card
    assert "Gradient-masking checks" in card and "Not run" in card
    # a reduced AutoAttack is not the standard check: the caveat stays and names it
    write_record(
        path,
        read_record(path).with_measurement(Measurement("AA-40 (non-standard)", 0.97, 0.8, 359)),
    )
    with open(os.path.join(path, "MODEL_CARD.md")) as f:
        card = f.read()
    assert "has not been run (only with a reduced budget: AA-40 (non-standard))" in card
    write_record(
        path, read_record(path).with_measurement(Measurement("AA (non-standard)", 0.97, 0.8, 359))
    )
    with open(os.path.join(path, "MODEL_CARD.md")) as f:
        assert "reduced budget: AA (non-standard), AA-40 (non-standard))" in f.read()
    rec = read_record(path).with_measurement(Measurement("AA", 0.97, 0.75, 359))
    write_record(path, rec)
    with open(os.path.join(path, "MODEL_CARD.md")) as f:
        card = f.read()
    assert "| AA | 359 | 97.0 % | 75.0 % ± 4.5 |" in card
    assert "**75.0 %** robust accuracy under AA" in card
    assert "has not been run" not in card
    assert read_record(path).robust_accuracy == 0.75


def test_card_lists_check_verdicts_and_their_caveat(tmp_path, digits_model):
    from robustkit.export import Check, Measurement, read_record, write_record

    path = str(tmp_path / "checked")
    rk.export(digits_model, path, metadata={"threat_model": {"norm": "linf", "eps": 0.1}})
    checks = (
        Check("more steps not weaker", False, "FGSM 50 % >= PGD-40 40 %", "linf", "2026-03-01"),
        Check("large eps reaches ~0 %", True, "PGD-40 at eps 1 leaves 30 %", "linf", "2026-03-01"),
        Check("black-box not stronger", None, "skipped: no surrogate", "linf", "2026-03-01"),
    )
    rec = read_record(path).with_measurement(
        Measurement("AA (linf, eps=0.1)", 0.9, 0.6, 1000, date="2026-03-01", suite="linf")
    )
    write_record(path, rec.replace(checks=checks))
    again = read_record(path)
    assert again.checks == checks  # suite, date and a skipped verdict survive the JSON
    assert [c.verdict for c in again.checks] == ["passed", "flagged", "skipped"]
    with open(os.path.join(path, "MODEL_CARD.md")) as f:
        card = f.read()
    assert "- more steps not weaker: passed (suite linf, 2026-03-01) — FGSM 50 %" in card
    assert "- large eps reaches ~0 %: **flagged** (suite linf, 2026-03-01)" in card
    assert "- black-box not stronger: skipped (suite linf, 2026-03-01)" in card
    assert "| AA (linf, eps=0.1) (suite linf) | 1000 | 90.0 % | 60.0 % ± 3.0 |" in card
    assert "Gradient-masking check(s) fired (large eps reaches ~0 %)" in card
    # a record written before checks had a suite and date still reads
    with open(os.path.join(path, "robustkit.json")) as f:
        raw = json.load(f)
    raw["checks"] = [{"name": "deterministic outputs", "flagged": False, "detail": ""}]
    with open(os.path.join(path, "robustkit.json"), "w") as f:
        json.dump(raw, f)
    assert read_record(path).checks[0].suite is None
