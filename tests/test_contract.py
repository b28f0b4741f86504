"""The input contract: softmax-headed models are refused with the fix, or wrapped explicitly;
normalisation inside a model works on [0, 1] inputs."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk


def _tutorial(kind="dense", seed=0):
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((8, 8, 1))
    h = keras.layers.Flatten()(inputs)
    h = keras.layers.Dense(32, activation="relu")(h)
    if kind == "dense":
        out = keras.layers.Dense(10, activation="softmax")(h)
    elif kind == "softmax_layer":
        out = keras.layers.Softmax()(keras.layers.Dense(10)(h))
    else:
        out = keras.layers.Activation("softmax")(keras.layers.Dense(10)(h))
    return keras.Model(inputs, out)


@pytest.mark.parametrize("kind", ["dense", "softmax_layer", "activation"])
def test_softmax_models_are_detected_and_wrapped(kind, digits):
    model = _tutorial(kind)
    with pytest.raises(ValueError, match=r"`model` ends in a softmax.*logits_of\(model\)"):
        rk.models.check_logits(model)
    wrapped = rk.models.logits_of(model)
    assert rk.models.check_logits(wrapped) is wrapped
    x = digits[2][:16]
    probs = model(x).numpy()
    logits = wrapped(x).numpy()
    np.testing.assert_allclose(tf.nn.softmax(logits).numpy(), probs, atol=1e-6)
    assert not rk.models.contract.looks_like_probabilities(logits)


def test_logits_of_shares_weights_with_the_original(digits):
    model = _tutorial("dense")
    wrapped = rk.models.logits_of(model)
    assert {id(v) for v in wrapped.trainable_variables} == {
        id(v) for v in model.trainable_variables
    }
    x, y = digits[0][:256], digits[1][:256]
    wrapped.compile(
        optimizer=keras.optimizers.Adam(1e-2),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    before = model(x).numpy()
    wrapped.fit(x, y, epochs=1, batch_size=64, verbose=0)
    after_probs = model(x).numpy()
    assert not np.allclose(before, after_probs)  # training the wrapper trained the original
    np.testing.assert_allclose(tf.nn.softmax(wrapped(x)).numpy(), after_probs, atol=1e-6)


def test_probability_outputs_are_caught_on_a_probe_batch():
    probs = np.full((4, 10), 0.1, "float32")
    with pytest.raises(ValueError, match="outputs probabilities"):
        rk.models.check_logits(lambda x: x, probe=probs, argname="model")
    rk.models.check_logits(lambda x: x, probe=np.log(probs))  # logits pass


def test_logits_model_round_trips_through_keras_file(tmp_path, digits):
    wrapped = rk.models.logits_of(_tutorial("dense"))
    path = str(tmp_path / "m.keras")
    wrapped.save(path)
    again = keras.saving.load_model(path)
    x = digits[2][:8]
    np.testing.assert_allclose(again(x).numpy(), wrapped(x).numpy(), atol=1e-6)


def test_with_normalization_takes_unit_box_inputs(digits):
    x = digits[2][:32]
    mean, std = float(x.mean()), float(x.std())
    inner = rk.models.small_cnn((8, 8, 1), width=4, dense=8)
    model = rk.models.with_normalization(inner, mean=[mean], std=[std])
    np.testing.assert_allclose(model(x).numpy(), inner((x - mean) / std).numpy(), atol=1e-5)
    # attacks see [0, 1] inputs and differentiate through the normalisation
    x_adv = rk.attacks.PGD(eps=0.1, steps=3)(model, x, np.zeros(32, "int64"))
    assert np.abs(x_adv - x).max() <= 0.1 + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(ValueError, match="`std`"):
        rk.models.with_normalization(inner, mean=[0.5], std=[0.0])
    with pytest.raises(ValueError, match="one per channel"):
        rk.models.with_normalization(inner, mean=[0.5, 0.5], std=[0.2, 0.2])
