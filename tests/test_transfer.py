"""Black-box transfer: examples crafted on a surrogate, evaluated on the target."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk


def _acc(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=500), -1) == y))


@pytest.fixture(scope="module")
def surrogate(digits):
    """An independently trained, differently shaped undefended digits classifier."""
    x_tr, y_tr, _, _ = digits
    keras.utils.set_random_seed(1)
    model = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Flatten(),
            keras.layers.Dense(64, activation="relu"),
            keras.layers.Dense(10),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.Adam(3e-3),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    model.fit(x_tr, y_tr, batch_size=64, epochs=12, verbose=0)
    return model


@pytest.mark.parametrize("norm,eps", [("linf", 0.2), ("l2", 1.5)])
def test_transfer_lowers_target_accuracy_and_stays_in_ball(
    surrogate, digits_model, digits, norm, eps
):
    _, _, x, y = digits

    def target_without_gradients(t):  # the target is only ever queried for outputs
        return tf.numpy_function(
            lambda a: digits_model.predict_on_batch(a).astype("float32"), [t], tf.float32
        )

    atk = rk.attacks.Transfer(surrogate, rk.attacks.PGD(eps=eps, norm=norm, steps=10, seed=0))
    x_adv = atk(target_without_gradients, x, y)
    d = (x_adv - x).reshape(len(x), -1)
    n = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert np.all(n <= eps + 1e-5) and x_adv.min() >= 0 and x_adv.max() <= 1
    clean = _acc(digits_model, x, y)
    transferred = _acc(digits_model, x_adv, y)
    assert transferred < clean - 0.15
    # the examples are the surrogate's: the surrogate is fooled far more often
    assert _acc(surrogate, x_adv, y) < transferred
    # a white-box attack with the same budget is at least as strong as the transfer
    white = _acc(
        digits_model, rk.attacks.PGD(eps=eps, norm=norm, steps=10, seed=0)(digits_model, x, y), y
    )
    assert white <= transferred


def test_transfer_of_autoattack(surrogate, digits_model, digits):
    _, _, x, y = digits
    x, y = x[:150], y[:150]
    inner = rk.attacks.AutoAttack(
        eps=0.2, attacks=["apgd-ce", "apgd-t"], steps=10, n_target_classes=2, seed=0
    )
    x_adv = rk.attacks.Transfer(surrogate, inner)(digits_model, x, y)
    assert np.abs(x_adv - x).max() <= 0.2 + 1e-5
    assert _acc(digits_model, x_adv, y) < _acc(digits_model, x, y) - 0.15


def test_transfer_config_and_bad_arguments(surrogate):
    atk = rk.attacks.Transfer(surrogate, rk.attacks.PGD(eps=0.1, steps=3))
    config = atk.get_config()
    clone = rk.attacks.Transfer.from_config(config, surrogate=surrogate)
    assert clone.get_config() == config and clone.attack.steps == 3
    with pytest.raises(ValueError, match="`surrogate`"):
        rk.attacks.Transfer.from_config(config)
    with pytest.raises(ValueError, match="`attack`"):
        rk.attacks.Transfer(surrogate, "pgd")
    with pytest.raises(ValueError, match="`surrogate`"):
        rk.attacks.Transfer(None, rk.attacks.PGD(eps=0.1))
    five = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(5)])
    x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
    with pytest.raises(ValueError, match="`surrogate`"):
        rk.attacks.Transfer(five, rk.attacks.PGD(eps=0.1, steps=2))(surrogate, x, np.array([0, 1]))


def test_transfer_label_black_box_and_threat(surrogate, digits_model, digits):
    """Reports name it after the inner attack and count it as black-box; its norm, eps and
    box are the inner attack's (0-255 inputs pass with an inner ``bounds=(0, 255)``)."""
    atk = rk.attacks.Transfer(surrogate, rk.attacks.PGD(eps=0.1, steps=10))
    assert atk.label == "Transfer(PGD-10)" and atk.black_box
    assert (atk.norm, atk.eps, atk.bounds) == ("linf", 0.1, (0.0, 1.0))
    mim = rk.attacks.Transfer(surrogate, rk.attacks.MIM(eps=1.0, steps=5, norm="l2"))
    assert mim.label == "Transfer(MIM-5)" and (mim.norm, mim.eps) == ("l2", 1.0)
    assert rk.attacks.Transfer(surrogate, rk.attacks.FWA()).norm is None
    _, _, x, y = digits
    x, y = 255 * x[:64], y[:64]
    inner = rk.attacks.PGD(eps=0.2 * 255, steps=5, bounds=(0, 255), seed=0)
    big = rk.attacks.Transfer(lambda t: surrogate(t / 255.0, training=False), inner)
    x_adv = big(lambda t: digits_model(t / 255.0, training=False), x, y)
    assert big.bounds == (0.0, 255.0)
    assert x_adv.min() >= 0 and x_adv.max() <= 255
    assert np.abs(x_adv - x).max() <= 0.2 * 255 * (1 + 1e-6)
    assert _acc(surrogate, x_adv / 255, y) < 0.5
