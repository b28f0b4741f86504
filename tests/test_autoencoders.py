"""Autoencoders and UAE data augmentation (Hsu et al., AAAI 2022)."""

import os

import keras
import numpy as np
import pytest

import robustkit as rk
from robustkit.mine import uae
from robustkit.models.autoencoders import SparsityRegularizer

FACTORIES = {
    "dense": lambda: rk.models.dense_autoencoder((8, 8, 1), code=16),
    "sparse": lambda: rk.models.sparse_autoencoder((8, 8, 1), code=16),
    "conv": lambda: rk.models.conv_autoencoder((8, 8, 1), filters=(8, 4), kernel=3),
    "adversarial": lambda: rk.models.adversarial_autoencoder((8, 8, 1), hidden=16, disc_hidden=8),
}


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_autoencoder_trains_and_round_trips(kind, digits, tmp_path):
    x_tr, _, x_te, _ = digits
    keras.utils.set_random_seed(0)
    ae = FACTORIES[kind]()
    before = uae.reconstruction_error(ae, x_te)
    ae.fit(x_tr, x_tr, epochs=2, batch_size=64, verbose=0)
    after = uae.reconstruction_error(ae, x_te)
    assert after < before
    path = os.path.join(tmp_path, f"{kind}.keras")
    ae.save(path)
    loaded = keras.models.load_model(path)
    np.testing.assert_array_equal(
        ae.predict(x_te[:8], verbose=0), loaded.predict(x_te[:8], verbose=0)
    )
    loaded.fit(x_tr[:64], x_tr[:64], epochs=1, verbose=0)  # reloaded model still trains


def test_sparsity_regularizer_matches_formula():
    a = np.array([[0.2, 0.5], [0.4, 0.1]], "float32")  # batch means 0.3, 0.3
    rho = 0.1
    kl = rho * np.log(rho / 0.3) + (1 - rho) * np.log((1 - rho) / 0.7)
    expected = 1e-2 * np.abs(a).sum() + 3.0 * 2 * kl
    got = float(SparsityRegularizer(l1=1e-2, rho=rho, weight=3.0)(a))
    assert got == pytest.approx(expected, rel=1e-5)


def test_augment_and_retrain_double_the_training_set(digits):
    x_tr, _, _, _ = digits
    x = x_tr[:32]
    ae = rk.models.dense_autoencoder((8, 8, 1), code=16)
    ae.fit(x_tr, x_tr, epochs=2, verbose=0)
    atk = rk.attacks.MinMax(
        criterion="unsupervised",
        steps=3,
        hidden=8,
        mine_lr=1e-4,
        mine_mode="projection",
        random_start=True,
    )
    x_uae = uae.augment(ae, x, attack=atk, batch_size=16, verbose=0)
    assert x_uae.shape == x.shape and np.abs(x_uae - x).max() <= 0.3 + 1e-5
    inputs, targets = uae.augmented_set(x, x_uae)
    assert len(inputs) == len(targets) == 2 * len(x)
    np.testing.assert_array_equal(inputs[32:], x_uae)
    _, den_targets = uae.augmented_set(x, x_uae, target="original")
    np.testing.assert_array_equal(den_targets[32:], x)
    hist = uae.retrain(ae, x, x_uae, epochs=1, batch_size=16)
    assert len(hist.history["loss"]) == 1
    with pytest.raises(ValueError, match="attack"):
        uae.augment(ae, x, attack=rk.attacks.MinMax(hidden=4))
    with pytest.raises(ValueError, match="x_uae"):
        uae.augmented_set(x, x_uae[:3])


def test_l2_uae_keeps_reconstruction_and_l2_ball(digits):
    x_tr, _, _, _ = digits
    keras.utils.set_random_seed(0)
    ae = rk.models.dense_autoencoder((8, 8, 1), code=16)
    ae.fit(x_tr, x_tr, epochs=2, verbose=0)
    x = x_tr[:32]
    x_adv = uae.L2UAE(eps=1.0, sigma=0.01, steps=30, c0=10.0)(ae, x)
    norms = np.sqrt(np.sum(np.square(x_adv - x), axis=(1, 2, 3)))
    assert norms.max() <= 1.0 + 1e-4
    err = lambda inp: np.sum(np.square(x - ae.predict(inp, verbose=0)), axis=(1, 2, 3))
    ok = err(x_adv) <= err(x) + 1e-5
    assert ok.mean() >= 0.2 and norms[ok].max() > 0.05
    with pytest.raises(ValueError, match="eps"):
        uae.L2UAE(eps=-1)
