"""The input contract the way a user meets it: a tutorial softmax model, 0-255 images and a
keras.applications backbone, one-hot labels, a single-logit binary model, channels-first."""

import os
import warnings

import keras
import numpy as np
import pytest

import robustkit as rk
from robustkit.callbacks import clean_and_robust_accuracy


def _tutorial(seed=0):
    """The classifier of most Keras tutorials: it ends in a softmax."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(32, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10, activation="softmax"),
        ]
    )


def test_softmax_model_is_refused_everywhere_then_hardened_with_logits_of(
    digits, digits_model, tmp_path
):
    x_tr, y_tr, x_te, y_te = digits
    model = _tutorial()
    fix = r"rk\.models\.logits_of"
    with pytest.raises(ValueError, match=rf"`base_model` ends in a softmax.*{fix}"):
        rk.RobustModel(model, attack=rk.attacks.PGD(eps=0.1, steps=3))
    with pytest.raises(ValueError, match=rf"`model` ends in a softmax.*{fix}"):
        rk.attacks.PGD(eps=0.1, steps=3)(model, x_te[:4], y_te[:4])
    path = tmp_path / "export"
    with pytest.raises(ValueError, match=rf"`model` ends in a softmax.*{fix}"):
        rk.export(model, str(path))
    assert not path.exists() and os.listdir(tmp_path) == []  # nothing half-written
    # a model that applies the softmax inside call() is caught on the probe batch
    hidden = keras.Sequential([model, keras.layers.Lambda(lambda p: p * 1.0)])
    with pytest.raises(ValueError, match="outputs probabilities"):
        rk.attacks.FGSM(eps=0.1)(hidden, x_te[:4], y_te[:4])

    # the one-line fix: the same network returning logits trains through fit
    robust = rk.RobustModel(rk.models.logits_of(model), attack=rk.attacks.PGD(eps=0.1, steps=5))
    robust.compile(optimizer=keras.optimizers.Adam(2e-3))
    robust.fit(x_tr, y_tr, epochs=8, batch_size=64, verbose=0,
               callbacks=[rk.callbacks.EpsilonWarmup(epochs=2)])  # fmt: skip
    pgd = rk.attacks.PGD(eps=0.1, steps=20)
    clean, hardened = clean_and_robust_accuracy(robust, x_te, y_te, pgd)
    _, undefended = clean_and_robust_accuracy(digits_model, x_te, y_te, pgd)
    assert clean > 0.8
    assert hardened > undefended + 0.15, (hardened, undefended)
    # the original softmax model shares the weights: it got hardened too
    probs = model.predict(x_te, verbose=0)
    assert np.mean(np.argmax(probs, -1) == y_te) == pytest.approx(clean, abs=1e-6)


def test_fit_refuses_0_255_images_for_a_unit_box_attack(digits):
    x_tr, y_tr, _, _ = digits
    model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(0.1, steps=2))
    model.compile(optimizer="adam")
    raw = np.round(x_tr * 255.0)
    message = r"values in \[0, 255\].*divide them by 255.*bounds=\(0, 255\)"
    with pytest.raises(ValueError, match=message):
        model.fit(raw, y_tr, epochs=1, verbose=0)
    with pytest.raises(ValueError, match=message):
        model.fit(rk.data.make_dataset(raw, y_tr, 64), epochs=1, verbose=0)
    assert int(model.optimizer.iterations.numpy()) == 0  # refused before any step
    with pytest.raises(ValueError, match=r"bounds=\(-1, 1\)"):
        model.fit(x_tr * 2 - 1, y_tr, epochs=1, verbose=0)


class BoxProbe(rk.objectives.Objective):
    """AT's loss; logs how far the training attack went and whether it left its ball or box."""

    parts = ("linf", "outside_ball", "below_0", "above_255")

    def __call__(self, y, logits_adv, logits_clean=None, x=None, x_adv=None, sample_weight=None):
        import tensorflow as tf

        ce, _ = rk.objectives.at_loss(y, logits_adv)
        dist = tf.abs(x_adv - x)
        return ce, {
            "linf": tf.reduce_max(dist),
            "outside_ball": tf.reduce_sum(tf.nn.relu(dist - 8.0 - 1e-3)),
            "below_0": tf.reduce_sum(tf.nn.relu(-x_adv)),
            "above_255": tf.reduce_sum(tf.nn.relu(x_adv - 255.0)),
        }


def test_keras_applications_backbone_hardened_in_0_255(data_dir, tmp_path):
    x, y = rk.data.load("cifar10_test_files", "test", data_dir)
    x, y = rk.data.subset(x, y, 96, seed=0)
    x255 = np.round(x * 255.0).astype("float32")
    keras.utils.set_random_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # input size outside the ImageNet range
        backbone = keras.applications.MobileNetV3Small(
            weights=None, include_top=True, classes=10, input_shape=(32, 32, 3)
        )
    # it takes 0-255 inputs (Rescaling inside) and ends in a softmax
    assert any(isinstance(layer, keras.layers.Rescaling) for layer in backbone.layers)
    with pytest.raises(ValueError, match="ends in a softmax"):
        rk.RobustModel(backbone, attack=rk.attacks.PGD(eps=8.0, bounds=(0, 255)))
    attack = rk.attacks.PGD(eps=8.0, step_size=2.0, steps=3, bounds=(0, 255))
    model = rk.RobustModel(rk.models.logits_of(backbone), objective=BoxProbe(), attack=attack)
    assert model.bounds == (0.0, 255.0)
    model.compile(optimizer=keras.optimizers.Adam(1e-3))
    hist = model.fit(x255, y, epochs=1, batch_size=32, verbose=0).history
    assert np.isfinite(hist["loss"][0]) and hist["eps"][0] == pytest.approx(8.0)
    # the training attack moved by whole steps, inside its ball and inside [0, 255]
    assert hist["linf"][0] > 1.9 and hist["outside_ball"][0] == 0.0
    assert hist["below_0"][0] == 0.0 and hist["above_255"][0] == 0.0
    x_adv = rk.attacks.PGD(eps=8.0, steps=5, bounds=(0, 255))(model, x255[:16], y[:16])
    assert x_adv.min() >= 0.0 and x_adv.max() <= 255.0
    assert np.abs(x_adv - x255[:16]).max() <= 8.0 + 1e-3
    with pytest.warns(UserWarning, match=r"bounds are \(0, 255\)"):  # [0, 1] images, 0-255 box
        model.fit(x[:32], y[:32], epochs=1, batch_size=32, verbose=0)
    path = str(tmp_path / "mobilenet")
    record = rk.export(model, path, serve_uint8=True)
    assert record.threat.bounds == (0.0, 255.0) and record.threat.eps == 8.0
    loaded, again = rk.load(path)
    assert again.bounds == (0.0, 255.0)
    np.testing.assert_allclose(
        loaded.serve(x255[:8]).numpy(), model.base_model(x255[:8]).numpy(), atol=1e-4
    )
    uint8 = loaded.signatures["serve_uint8"](images=x255[:8].astype("uint8"))["logits"]
    np.testing.assert_allclose(uint8.numpy(), loaded.serve(x255[:8]).numpy(), atol=1e-4)


def test_model_with_normalization_inside_trains_on_unit_box_images(digits):
    x_tr, y_tr, x_te, y_te = digits
    keras.utils.set_random_seed(0)
    inner = rk.models.small_cnn((8, 8, 1))
    model = rk.models.with_normalization(inner, mean=[float(x_tr.mean())], std=[float(x_tr.std())])
    robust = rk.RobustModel(model, attack=rk.attacks.PGD(eps=0.1, steps=3))
    robust.compile(optimizer="adam")
    hist = robust.fit(x_tr, y_tr, epochs=3, batch_size=64, verbose=0)
    assert hist.history["loss"][-1] < hist.history["loss"][0]
    clean, robust_acc = clean_and_robust_accuracy(robust, x_te, y_te, rk.attacks.PGD(0.1, steps=10))
    assert clean > 0.7 and 0.0 < robust_acc <= clean


def test_one_hot_labels_train_like_class_ids(digits):
    x_tr, y_tr, x_te, y_te = digits
    x, y = x_tr[:256], y_tr[:256]
    weights = {}
    for name, labels in (("ids", y), ("one_hot", np.eye(10, dtype="float32")[y])):
        keras.utils.set_random_seed(0)
        model = rk.RobustModel(
            rk.models.small_cnn((8, 8, 1)),
            attack=rk.attacks.PGD(eps=0.1, steps=2, random_start=False),
        )
        model.compile(optimizer="adam", metrics=["accuracy"])
        model.fit(x, labels, epochs=1, batch_size=64, shuffle=False, verbose=0)
        onehot_test = np.eye(10)[y_te] if name == "one_hot" else y_te
        weights[name] = (
            [w.numpy() for w in model.base_model.weights],
            model.evaluate(x_te, onehot_test, verbose=0, return_dict=True),
        )
    for a, b in zip(weights["ids"][0], weights["one_hot"][0]):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert weights["ids"][1]["clean_accuracy"] == pytest.approx(
        weights["one_hot"][1]["clean_accuracy"]
    )
    soft = np.full((256, 10), 0.1, "float32")
    with pytest.raises(ValueError, match="soft labels"):
        model.fit(x, soft, epochs=1, verbose=0)
    with pytest.raises(ValueError, match="one-hot rows of width 5"):
        model.fit(x, np.eye(5)[y % 5], epochs=1, verbose=0)
    with pytest.raises(ValueError, match=r"`y` must hold integer class ids, not one-hot.*argmax"):
        rk.attacks.FGSM(0.1)(model.base_model, x_te[:4], np.eye(10)[y_te[:4]])


def test_single_logit_binary_model_is_refused_with_the_fix(digits, tmp_path):
    _, _, x_te, y_te = digits
    keras.utils.set_random_seed(0)
    binary = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(1, activation="sigmoid"),
        ]
    )
    y2 = (y_te[:16] > 4).astype("int64")
    fix = r"single logit.*rk\.models\.two_logits"
    with pytest.raises(ValueError, match=fix):
        rk.RobustModel(binary)
    with pytest.raises(ValueError, match=fix):
        rk.attacks.FGSM(0.1)(binary, x_te[:16], y2)
    with pytest.raises(ValueError, match=fix):
        rk.export(binary, str(tmp_path / "b"))
    two = rk.models.two_logits(binary)
    p1 = keras.ops.softmax(two(x_te[:16]))[:, 1]
    np.testing.assert_allclose(np.asarray(p1), binary(x_te[:16]).numpy()[:, 0], atol=1e-6)
    x_adv = rk.attacks.FGSM(0.1)(two, x_te[:16], y2)
    assert np.abs(x_adv - x_te[:16]).max() == pytest.approx(0.1, abs=1e-6)


def test_channels_first_is_refused_with_the_fix(digits, tmp_path):
    _, _, x_te, y_te = digits
    small = rk.models.small_cnn((8, 8, 1))
    fix = r"channels_last.*transpose"
    old = keras.config.image_data_format()
    keras.config.set_image_data_format("channels_first")
    try:
        with pytest.raises(ValueError, match=fix):
            rk.RobustModel(small)
        with pytest.raises(ValueError, match=fix):
            rk.attacks.FGSM(0.1)(small, x_te[:4], y_te[:4])
        with pytest.raises(ValueError, match=fix):
            rk.export(small, str(tmp_path / "cf"))
    finally:
        keras.config.set_image_data_format(old)
    nchw = keras.Sequential(
        [
            keras.Input((1, 8, 8)),
            keras.layers.Conv2D(4, 3, data_format="channels_first"),
            keras.layers.Flatten(),
            keras.layers.Dense(10),
        ]
    )
    with pytest.raises(ValueError, match=r"channels-first layer.*" + fix):
        rk.RobustModel(nchw)


def test_callbacks_that_read_robust_logs_first_get_a_warning(digits, tmp_path):
    x_tr, y_tr, x_te, y_te = digits
    model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(0.1, steps=1))
    model.compile(optimizer="adam")
    cbs = [
        keras.callbacks.CSVLogger(str(tmp_path / "log.csv")),
        rk.callbacks.RobustEvaluation((x_te, y_te), max_examples=50),
    ]
    with pytest.warns(UserWarning, match="CSVLogger come.* before RobustEvaluation"):
        model.fit(x_tr[:64], y_tr[:64], epochs=1, verbose=0, callbacks=cbs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.fit(x_tr[:64], y_tr[:64], epochs=1, verbose=0, callbacks=cbs[::-1])
