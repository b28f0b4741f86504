"""``seed=`` makes an attack's whole run reproducible: a new attack built with the same seed
returns the same points, and another seed other points (so the randomness is really used)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk

ATTACKS = {
    "pgd": lambda seed: rk.attacks.PGD(eps=0.1, steps=5, step_size=0.02, seed=seed),
    "square_linf": lambda seed: rk.attacks.Square(eps=0.1, n_queries=30, seed=seed),
    "square_l2": lambda seed: rk.attacks.Square(eps=0.5, norm="l2", n_queries=30, seed=seed),
    "tidim": lambda seed: rk.attacks.TIDIM(
        eps=0.1, steps=5, step_size=0.02, p=1.0, resize_rate=0.5, seed=seed
    ),
    "minmax": lambda seed: rk.attacks.MinMax(
        eps=0.3, steps=5, hidden=8, filters=4, random_start=True, seed=seed
    ),
}


@pytest.fixture
def no_global_seed():
    """No global seed during the test (every draw an attack does not seed itself differs
    between objects, and raises under op determinism); a fixed one again afterwards."""
    tf.random.set_seed(None)
    yield
    keras.utils.set_random_seed(0)


@pytest.mark.parametrize("name", sorted(ATTACKS))
def test_same_seed_repeats_the_run(name, digits_model, digits, no_global_seed):
    x, y = digits[2][:64], digits[3][:64]
    first = np.asarray(ATTACKS[name](3)(digits_model, x, y))
    again = np.asarray(ATTACKS[name](3)(digits_model, x, y))
    other = np.asarray(ATTACKS[name](4)(digits_model, x, y))
    np.testing.assert_array_equal(first, again)
    assert np.abs(first - other).max() > 1e-3
