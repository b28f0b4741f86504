"""Bad input to threat models and attacks: a ValueError naming the argument, before any work."""

import numpy as np
import pytest
import tensorflow as tf

from robustkit import threat
from robustkit.attacks import FGSM, PGD


class CountingModel:
    """A plain-function model (10 classes) that counts how often it is called."""

    def __init__(self):
        self.calls = 0
        self.w = tf.constant(np.random.default_rng(0).normal(size=(64, 10)).astype("float32"))

    def __call__(self, x):
        self.calls += 1
        return tf.reshape(x, [-1, 64]) @ self.w


@pytest.fixture
def good():
    rng = np.random.default_rng(0)
    return rng.uniform(size=(6, 8, 8, 1)).astype("float32"), np.arange(6) % 10


def _bad_x_call(x, y, match):
    model, atk = CountingModel(), PGD(eps=0.1, steps=2)
    with pytest.raises(ValueError, match=match):
        atk(model, x, y)
    assert model.calls == 0 and atk.trace_count == 0  # raised before any work


# ---------------------------------------------------------------- images
def test_rank_not_4(good):
    x, y = good
    _bad_x_call(x[..., 0], y, r"`x` must be a rank-4")
    _bad_x_call(x.reshape(6, 64), y, r"`x` must be a rank-4")


def test_non_float_dtype(good):
    x, y = good
    _bad_x_call((x * 255).astype("uint8"), y, r"`x` must be floating point")
    _bad_x_call(tf.constant((x * 255).astype("int32")), y, r"`x` must be floating point")


def test_values_outside_unit_interval(good):
    x, y = good
    _bad_x_call(x * 255.0, y, r"`x` must have values in \[0, 1\]")
    _bad_x_call(x - 0.5, y, r"`x` must have values in \[0, 1\]")


def test_nan_or_inf(good):
    x, y = good
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    _bad_x_call(bad, y, r"`x` contains NaN or Inf")
    bad[0, 0, 0, 0] = np.inf
    _bad_x_call(tf.constant(bad), y, r"`x` contains NaN or Inf")


# ---------------------------------------------------------------- labels
def test_labels_outside_class_range(good):
    x, _ = good
    for y in (np.array([0, 1, 2, 3, 4, 10]), np.array([0, 1, 2, 3, 4, -1])):
        atk = PGD(eps=0.1, steps=2)
        with pytest.raises(ValueError, match=r"`y` has .*label"):
            atk(CountingModel(), x, y)
        assert atk.trace_count == 0


def test_labels_not_integer_or_wrong_rank(good):
    x, y = good
    with pytest.raises(ValueError, match=r"`y` must hold integer class labels"):
        PGD(eps=0.1)(CountingModel(), x, y + 0.5)
    # one-hot labels get their own message with the fix (issue #13)
    with pytest.raises(ValueError, match=r"`y` must hold integer class ids, not one-hot rows"):
        PGD(eps=0.1)(CountingModel(), x, np.eye(10)[y])
    with pytest.raises(ValueError, match=r"`y` must be a rank-1 vector"):
        PGD(eps=0.1)(CountingModel(), x, y[:, None, None])


def test_length_mismatch(good):
    x, y = good
    model, atk = CountingModel(), PGD(eps=0.1, steps=2)
    with pytest.raises(ValueError, match=r"`y` has 5 labels but `x` has 6 examples"):
        atk(model, x, y[:5])
    assert model.calls == 0


# ------------------------------------------------------- attack arguments
@pytest.mark.parametrize("eps", [0, -0.1, float("nan"), float("inf"), "big"])
def test_eps_not_positive(eps):
    with pytest.raises(ValueError, match=r"`eps` must be"):
        PGD(eps=eps)
    with pytest.raises(ValueError, match=r"`eps` must be"):
        FGSM(eps=eps)
    with pytest.raises(ValueError, match=r"`eps` must be"):
        threat.Linf(eps)
    with pytest.raises(ValueError, match=r"`eps` must be"):
        threat.L2(eps)


def test_step_size_above_eps_under_linf():
    with pytest.raises(ValueError, match=r"`step_size` \(0.2\) must not exceed `eps` \(0.1\)"):
        PGD(eps=0.1, step_size=0.2)
    with pytest.raises(ValueError, match=r"`step_size` must be > 0"):
        PGD(eps=0.1, step_size=0.0)
    assert PGD(eps=0.5, step_size=1.0, norm="l2").step_size == 1.0  # fine under L2


@pytest.mark.parametrize("norm", ["l0", "inf", None, 2])
def test_unknown_norm(norm):
    with pytest.raises(ValueError, match=r"Unknown `norm`"):
        PGD(eps=0.1, norm=norm)
    with pytest.raises(ValueError, match=r"Unknown `norm`"):
        threat.get(norm, 0.1)


@pytest.mark.parametrize(
    "kwargs, name",
    [
        (dict(steps=0), "steps"),
        (dict(steps=2.5), "steps"),
        (dict(restarts=0), "restarts"),
        (dict(batch_size=0), "batch_size"),
        (dict(loss="mse"), "loss"),
        (dict(random_start="gaussian"), "random_start"),
        (dict(loop="scan"), "loop"),
        (dict(jit_compile="yes"), "jit_compile"),
    ],
)
def test_other_attack_arguments(kwargs, name):
    with pytest.raises(ValueError, match=rf"`{name}`"):
        PGD(eps=0.1, **kwargs)


def test_model_with_wrong_output(good):
    x, y = good
    with pytest.raises(ValueError, match=r"`model` must return logits of shape"):
        PGD(eps=0.1)(lambda t: tf.reduce_sum(t, axis=[1, 2, 3]), x, y)
    with pytest.raises(ValueError, match=r"`model` returned 2 outputs"):
        PGD(eps=0.1)(lambda t: (tf.reshape(t, [-1, 64]), tf.reshape(t, [-1, 64])), x, y)
    with pytest.raises(ValueError, match=r"`model` must be a Keras model or a callable"):
        PGD(eps=0.1)(42, x, y)
