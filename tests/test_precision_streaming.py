"""Mixed precision (the attack's input gradient does not underflow under mixed_float16),
streaming evaluation of a tf.data split, and the training options of the application layer."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.app import ConfigError, TrainConfig


@pytest.fixture
def float16_copy(digits_model):
    """The trained digits CNN rebuilt under the mixed_float16 policy, same weights."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = rk.models.small_cnn((8, 8, 1))
    finally:
        keras.mixed_precision.set_global_policy("float32")
    model.set_weights(digits_model.get_weights())
    assert model.compute_dtype == "float16"
    return model


def test_float16_attack_gradients_do_not_underflow(digits, digits_model, float16_copy):
    _, _, x_te, y_te = digits
    fn16 = rk.attacks.as_logits_fn(float16_copy)
    x, y = tf.constant(x_te), tf.constant(y_te)
    logits, loss, grad = rk.attacks.base.loss_and_grad(fn16, x, y)
    # confident examples: p(true) ~ 1 - 1e-8, whose CE gradient underflows in float16
    confident = np.flatnonzero(loss.numpy() < 1e-6)
    assert len(confident) > 10
    per_example = np.abs(grad.numpy()).reshape(len(x_te), -1).max(axis=1)
    assert (per_example[confident] > 0).all()
    # without the rescaling the same model loses those gradients (the bug being guarded)
    raw = lambda z: tf.cast(float16_copy(z, training=False), tf.float32)
    _, _, raw_grad = rk.attacks.base.loss_and_grad(raw, x, y)
    assert (np.abs(raw_grad.numpy()).reshape(len(x_te), -1).max(axis=1)[confident] == 0).any()
    # the direction is the float32 model's: the sign steps agree almost everywhere
    _, _, grad32 = rk.attacks.base.loss_and_grad(rk.attacks.as_logits_fn(digits_model), x, y)
    agree = np.sign(grad.numpy()) == np.sign(grad32.numpy())
    assert agree.mean() > 0.9
    # and PGD on the float16 model is as strong as on the float32 one
    pgd = rk.attacks.PGD(eps=0.2, steps=20, random_start=False)
    acc16 = np.mean(
        np.argmax(digits_model.predict(pgd(float16_copy, x_te, y_te), verbose=0), -1) == y_te
    )
    acc32 = np.mean(
        np.argmax(digits_model.predict(pgd(digits_model, x_te, y_te), verbose=0), -1) == y_te
    )
    assert acc16 <= acc32 + 0.03, (acc16, acc32)


def test_mixed_precision_training_through_the_app(tmp_path):
    out = str(tmp_path / "mp")
    result = rk.app.train_and_export(
        TrainConfig(epochs=2, train_size=512, test_size=100, mixed_precision=True, out=out),
        verbose=0,
    )
    assert keras.mixed_precision.global_policy().name == "float32"  # restored afterwards
    assert result.model.base_model.compute_dtype == "float16"
    assert isinstance(result.model.optimizer, keras.optimizers.LossScaleOptimizer)
    assert result.record.training.hyperparameters["mixed_precision"] is True
    loaded, record = rk.load(out)
    x, _ = rk.data.load("digits", "test")
    np.testing.assert_allclose(
        loaded.serve(x[:16]).numpy(),
        result.model.base_model(x[:16]).numpy().astype("float32"),
        atol=1e-2,
    )


def test_measure_streams_a_dataset_batch_by_batch(digits_model, digits):
    _, _, x_te, y_te = digits
    produced = []

    def gen():  # 40 batches; the images are made as the stream is read
        for k in range(40):
            idx = np.arange(k * 16, k * 16 + 16) % len(x_te)
            produced.append(k)
            yield x_te[idx], y_te[idx]

    spec = (
        tf.TensorSpec([None, 8, 8, 1], tf.float32),
        tf.TensorSpec([None], tf.int64),
    )
    ds = tf.data.Dataset.from_generator(gen, output_signature=spec)
    ahead = []

    def model(x):  # records how far the stream had been read when the model ran
        ahead.append(len(produced))
        return digits_model(x, training=False)

    fgsm = rk.attacks.FGSM(eps=0.1)
    found = rk.evaluation.measure(model, ds, fgsm, batch_size=16)
    assert found.n == 640 and len(produced) == 40
    # each batch was predicted and attacked before the stream was read much further
    first_seen = [a for a in ahead if a >= 1]
    assert max(first_seen[:3]) <= 3, first_seen[:10]
    # the same numbers as the arrays
    idx = np.arange(640) % len(x_te)
    arrays = rk.evaluation.measure(digits_model, (x_te[idx], y_te[idx]), fgsm, batch_size=16)
    assert found.clean_accuracy == arrays.clean_accuracy
    assert found.robust_accuracy == arrays.robust_accuracy
    assert found.results[0].examples == arrays.results[0].examples
    # rk.evaluate streams too, and n stops reading
    produced.clear()
    report = rk.evaluate(digits_model, ds, suite=[fgsm], checks=False, n=100, batch_size=16)
    assert report.n == 100 and len(produced) <= 9


def test_training_options_are_checked_before_any_work(tmp_path):
    for kwargs, field in [
        ({"val_size": 0}, "val_size"),
        ({"val_size": 600, "train_size": 500}, "val_size"),
        ({"augment": "yes"}, "augment"),
        ({"mixed_precision": 1}, "mixed_precision"),
        ({"deterministic": None}, "deterministic"),
        ({"backup_dir": str(tmp_path / "file")}, "backup_dir"),
        ({"defense": "namid", "augment": True}, "augment"),
    ]:
        (tmp_path / "file").write_text("x")
        with pytest.raises(ConfigError) as info:
            TrainConfig(out=str(tmp_path / "out"), **kwargs).resolve()
        assert info.value.field == field, (kwargs, info.value)
    assert not os.path.exists(tmp_path / "out")
    plan = TrainConfig(augment=True, val_size=100, backup_dir=str(tmp_path / "b")).resolve()
    assert plan.config.val_size == 100 and plan.config.augment is True


def test_deterministic_turns_on_op_determinism(tmp_path):
    import subprocess
    import sys

    script = tmp_path / "det.py"
    script.write_text(
        "import os\nos.environ['TF_CPP_MIN_LOG_LEVEL'] = '2'\n"
        "import tensorflow as tf\nfrom robustkit.app import TrainConfig, train_and_export\n"
        "from tensorflow.python.framework import config\n"
        "before = config.is_op_determinism_enabled()\n"
        f"train_and_export(TrainConfig(epochs=1, train_size=128, test_size=50, "
        f"deterministic=True, out={str(tmp_path / 'm')!r}), verbose=0)\n"
        "print('DET', before, config.is_op_determinism_enabled())\n"
    )
    proc = subprocess.run(
        [sys.executable, str(script)], capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "DET False True" in proc.stdout
