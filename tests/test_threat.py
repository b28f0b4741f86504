"""Threat models: projection, random start and steepest-ascent step on hand-computed values."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from robustkit import threat


def _img(values):
    """A batch of one 2x2x1 image from four pixel values."""
    return np.asarray(values, "float32").reshape(1, 2, 2, 1)


# ------------------------------------------------------------------ projection
def test_linf_project_hand_computed():
    tm = threat.Linf(0.1)
    x = _img([0.5, 0.95, 0.05, 0.5])
    x_adv = _img([0.9, 1.2, -0.3, 0.52])
    # clip delta to +-0.1: [0.6, 1.05, -0.05, 0.52]; then the box [0, 1]
    np.testing.assert_allclose(tm.project(x_adv, x).numpy(), _img([0.6, 1.0, 0.0, 0.52]), atol=1e-6)


def test_l2_project_hand_computed():
    tm = threat.L2(0.25)
    x = _img([0.5, 0.5, 0.5, 0.9])
    # delta (0.3, 0.4, 0, 0) has norm 0.5 -> scaled by 0.5 to (0.15, 0.2, 0, 0)
    out = tm.project(x + _img([0.3, 0.4, 0.0, 0.0]), x).numpy()
    np.testing.assert_allclose(out, _img([0.65, 0.7, 0.5, 0.9]), atol=1e-6)
    # a point inside the ball is left alone
    inside = x + _img([0.1, -0.1, 0.0, 0.0])
    np.testing.assert_allclose(tm.project(inside, x).numpy(), inside, atol=1e-6)
    # the box is applied after the ball: (0, 0, 0, 0.2) stays (norm 0.2 <= 0.25), 1.1 -> 1
    out = tm.project(x + _img([0.0, 0.0, 0.0, 0.2]), x).numpy()
    np.testing.assert_allclose(out, _img([0.5, 0.5, 0.5, 1.0]), atol=1e-6)


@pytest.mark.parametrize("tm", [threat.Linf(0.05), threat.L2(0.3)], ids=["linf", "l2"])
def test_projection_lands_in_ball_and_box(tm):
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(64, 4, 4, 1)).astype("float32")
    far = x + rng.normal(scale=0.5, size=x.shape).astype("float32")
    out = tm.project(far, x)
    assert bool(tf.reduce_all(tm.contains(out, x)))
    assert tm.norm_of(out - x).numpy().max() <= tm.eps + 1e-6
    assert out.numpy().min() >= 0.0 and out.numpy().max() <= 1.0
    # the raw points were mostly outside: the check is not vacuous
    assert not bool(tf.reduce_all(tm.contains(far, x)))


def test_per_example_and_variable_eps():
    tm = threat.Linf(0.3)
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    out = tm.project(x + 0.4, x, eps=tf.constant([0.1, 0.2])).numpy()
    np.testing.assert_allclose(out[0], 0.6, atol=1e-6)
    np.testing.assert_allclose(out[1], 0.7, atol=1e-6)
    eps_var = keras.Variable(0.05)
    np.testing.assert_allclose(tm.project(x + 0.4, x, eps=eps_var).numpy(), 0.55, atol=1e-6)
    eps_var.assign(0.15)
    np.testing.assert_allclose(tm.project(x + 0.4, x, eps=eps_var).numpy(), 0.65, atol=1e-6)


# ------------------------------------------------------------------------ step
def test_linf_step_is_sign():
    tm = threat.Linf(0.3)
    x = _img([0.5] * 4)
    out = tm.step(x, tf.constant(_img([1.0, -2.0, 0.0, 3.0])), 0.1).numpy()
    np.testing.assert_allclose(out, _img([0.6, 0.4, 0.5, 0.6]), atol=1e-6)


def test_l2_step_is_normalised_gradient():
    tm = threat.L2(1.0)
    x = _img([0.5] * 4)
    out = tm.step(x, tf.constant(_img([3.0, 4.0, 0.0, 0.0])), 0.1).numpy()
    np.testing.assert_allclose(out, _img([0.56, 0.58, 0.5, 0.5]), atol=1e-6)
    # a zero gradient does not produce NaN
    assert np.all(np.isfinite(tm.step(x, tf.zeros_like(x), 0.1).numpy()))


def test_per_example_step_size():
    tm = threat.L2(1.0)
    x = np.full((2, 2, 2, 1), 0.5, "float32")
    g = np.zeros_like(x)
    g[:, 0, 0, 0] = 1.0
    out = tm.step(x, tf.constant(g), tf.constant([0.1, 0.2])).numpy()
    np.testing.assert_allclose(out[:, 0, 0, 0], [0.6, 0.7], atol=1e-6)


# ---------------------------------------------------------------- random start
def test_linf_uniform_start_fills_the_ball():
    tm = threat.Linf(0.1)
    x = np.full((200, 4, 4, 1), 0.5, "float32")
    delta = (tm.random_start(x, seed=1) - x).numpy()
    assert np.abs(delta).max() <= 0.1 + 1e-6
    assert np.abs(delta).max() > 0.099  # reaches the corners
    assert abs(delta.mean()) < 0.005
    assert delta.std() == pytest.approx(0.1 / np.sqrt(3), rel=0.05)  # uniform on [-eps, eps]


def test_l2_uniform_start_is_uniform_in_the_ball():
    # In dimension d the radius of a uniform point is eps * U^(1/d); for d = 4,
    # E[r] = eps * d / (d + 1) = 0.8 eps, and the points must be strictly inside too.
    tm = threat.L2(0.2)
    x = np.full((4000, 2, 2, 1), 0.5, "float32")
    r = tm.norm_of(tm.random_start(x, seed=3) - x).numpy()
    assert r.max() <= 0.2 + 1e-6
    assert r.mean() == pytest.approx(0.8 * 0.2, rel=0.03)
    assert np.mean(r < 0.1) == pytest.approx(0.5**4, abs=0.02)  # P(r < eps/2) = 2^-d


def test_l2_uniform_start_directions_are_isotropic():
    tm = threat.L2(0.2)
    x = np.full((4000, 2, 2, 1), 0.5, "float32")
    delta = (tm.random_start(x, seed=5) - x).numpy().reshape(4000, 4)
    np.testing.assert_allclose(delta.mean(axis=0), 0.0, atol=0.006)
    stds = delta.std(axis=0)
    assert stds.max() / stds.min() < 1.1


def test_normal_start_is_small_gaussian():
    tm = threat.Linf(0.3)
    x = np.full((100, 8, 8, 1), 0.5, "float32")
    delta = (tm.random_start(x, kind="normal", seed=2) - x).numpy()
    assert delta.std() == pytest.approx(0.001, rel=0.05)
    assert abs(delta.mean()) < 5e-5
    none = tm.random_start(x, kind="none").numpy()
    np.testing.assert_array_equal(none, x)


@pytest.mark.parametrize("tm", [threat.Linf(0.2), threat.L2(0.5)], ids=["linf", "l2"])
def test_start_respects_the_box(tm):
    x = np.zeros((50, 4, 4, 1), "float32")
    x[:25] = 1.0
    start = tm.random_start(x, seed=0).numpy()
    assert start.min() >= 0.0 and start.max() <= 1.0
    assert bool(tf.reduce_all(tm.contains(start, x)))


def test_unknown_start_kind():
    with pytest.raises(ValueError, match="random_start"):
        threat.Linf(0.1).random_start(np.zeros((1, 2, 2, 1), "float32"), kind="gauss")


# ------------------------------------------------------------- misc behaviour
def test_norm_of_and_contains():
    d = _img([0.3, -0.4, 0.0, 0.0])
    assert threat.Linf(1).norm_of(d).numpy()[0] == pytest.approx(0.4)
    assert threat.L2(1).norm_of(d).numpy()[0] == pytest.approx(0.5)
    x = _img([0.5] * 4)
    assert bool(threat.L2(0.5).contains(x + d, x)[0])
    assert not bool(threat.L2(0.49).contains(x + d, x)[0])
    assert not bool(threat.Linf(0.39).contains(x + d, x)[0])
    assert not bool(threat.Linf(1.0).contains(x + 0.6, x)[0])  # leaves the box


def test_get_and_serialisation():
    assert isinstance(threat.get("L2", 0.5), threat.L2)
    assert isinstance(threat.get("linf", 0.1), threat.Linf)
    tm = threat.L2(0.75)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(tm))
    assert isinstance(back, threat.L2) and back.eps == 0.75
    assert repr(threat.Linf(0.1)) == "Linf(eps=0.1)"


def test_l1_step_is_box_aware():
    """A coordinate already at the box's edge in its gradient's direction cannot move:
    the sparse L1 step skips it and puts its mass where it can act."""
    tm = threat.L1(1.0, sparsity=0.25)  # 1 of 4 coordinates per step
    x = np.array([1.0, 0.0, 0.5, 0.5], "float32").reshape(1, 4, 1, 1)
    g = np.array([5.0, -4.0, 1.0, -0.5], "float32").reshape(1, 4, 1, 1)
    moved = tm.step(x, g, 0.2).numpy().ravel()
    # the two largest gradients push out of the box: the step goes to coordinate 2
    np.testing.assert_allclose(moved, [1.0, 0.0, 0.7, 0.5], atol=1e-6)
    blind = tm.ascent_direction(g).numpy().ravel()  # without x: the largest |gradient|
    np.testing.assert_allclose(blind, [1.0, 0.0, 0.0, 0.0])


def test_pgd_l1_reaches_zero_accuracy_at_a_large_radius(digits_model, digits):
    """With the box-aware step PGD-L1 does not get stuck on saturated pixels: at a radius
    that covers a good part of the image mass the undefended model is (nearly) always fooled."""
    import robustkit as rk

    _, _, x, y = digits
    x, y = x[:200], y[:200]
    x_adv = rk.attacks.PGD(eps=16.0, norm="l1", steps=40, step_size=2.0)(digits_model, x, y)
    acc = float(np.mean(np.argmax(digits_model.predict(x_adv, verbose=0), -1) == y))
    assert acc <= 0.02
    assert np.abs(x_adv - x).reshape(200, -1).sum(1).max() <= 16.0 * (1 + 1e-4)
