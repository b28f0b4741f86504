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


class _Recorder:
    """A model whose every call appends its input batch to ``seen`` (a ``tf.py_function``
    inside the attack's graph), so a test can read what the attack proposed, step by step.
    Its logits favour class 0 by a wide margin: nothing is ever fooled and every step runs."""

    def __init__(self):
        self.seen = []

    def _record(self, x):
        self.seen.append(x.numpy().copy())
        return tf.zeros([], tf.float32)

    def __call__(self, x):
        with tf.control_dependencies([tf.py_function(self._record, [x], tf.float32)]):
            tied = 1e-3 * tf.reduce_mean(x, axis=[1, 2, 3])[:, None]  # a gradient, not None
            return tf.constant([[100.0, 0.0, 0.0]]) + tied


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 0.5)])
def test_seeded_square_draws_a_new_window_every_step(norm, eps):
    # One graph holds several copies of a step (WHILE_CHUNK per loop iteration); a seeded
    # op repeated in a graph returns the same values in every copy, so each copy must get
    # its own seed or the copies propose the same square (a quarter of the queries wasted).
    x = tf.fill([4, 24, 24, 3], 0.5)
    y = tf.zeros([4], tf.int64)
    model = _Recorder()
    rk.attacks.Square(eps=eps, norm=norm, n_queries=13, p_init=0.05, seed=5)(model, x, y)
    # the batch's calls: the clean points, the start, then one proposal per query
    props = [seen for seen in model.seen if seen.shape[0] == 4][2:]
    assert len(props) == 12
    for i in range(len(props) - 1):
        assert np.abs(props[i + 1] - props[i]).max() > 1e-6, f"proposal {i + 1} repeats {i}"


def test_seeded_tidim_draws_a_new_diverse_input_every_step():
    # p = 1: every step's model input is a resized copy padded with 0; on a constant
    # image its zero border shows the draw (size, top, left) of that step.
    x = tf.fill([2, 28, 28, 1], 0.5)
    y = tf.zeros([2], tf.int64)
    model = _Recorder()
    attack = rk.attacks.TIDIM(eps=0.01, steps=8, step_size=0.001, p=1.0, resize_rate=0.5, seed=5)
    attack(model, x, y)
    draws = set()
    for seen in model.seen:
        inside = np.abs(seen[0, :, :, 0]) > 0.1
        rows, cols = np.nonzero(inside.any(axis=1))[0], np.nonzero(inside.any(axis=0))[0]
        draws.add((rows[0], rows[-1], cols[0], cols[-1]))
    assert len(draws) >= 4, draws


def test_seeded_per_sample_mine_draws_a_new_permutation_per_evaluation():
    from robustkit.mine import BatchedCritic, PerSampleMINE

    critic = BatchedCritic((3, 3), filters=2, hidden=4, out=3)
    params = critic.init(4, seed=0)
    h = critic.branch(params, "a", tf.random.stateless_uniform([4, 12, 3, 3], [0, 1]))
    est = PerSampleMINE(marginal="release", seed=5)

    @tf.function
    def twice():  # the third value: the single-permutation estimate
        first = est.online_values(critic, params, h, h)[2]
        return first, est.online_values(critic, params, h, h)[2]

    first, second = twice()
    assert np.abs(first.numpy() - second.numpy()).max() > 1e-6
