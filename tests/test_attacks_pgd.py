"""PGD / FGSM: stay in the ball, lower accuracy, bookkeeping, tracing, model kinds,
and a cross-check against cleverhans 4.0."""

import os

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.attacks import FGSM, PGD


def _acc(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False), -1) == y))


def _wrong(model, x, y):
    return np.argmax(model(tf.convert_to_tensor(x), training=False), -1) != y


def _in_ball(x_adv, x, eps, norm):
    tm = rk.threat.get(norm, eps)
    return bool(tf.reduce_all(tm.contains(tf.convert_to_tensor(x_adv), tf.convert_to_tensor(x))))


@pytest.fixture(scope="module")
def test_set(digits):
    return digits[2], digits[3]


# -------------------------------------------------------- ball and accuracy
@pytest.mark.parametrize(
    "make, norm, eps, max_acc",
    [
        (lambda: PGD(eps=0.2, steps=7, seed=0), "linf", 0.2, 0.35),
        (lambda: PGD(eps=1.0, steps=10, norm="l2", seed=0), "l2", 1.0, 0.35),
        (lambda: FGSM(eps=0.2), "linf", 0.2, 0.75),
        (lambda: FGSM(eps=1.0, norm="l2"), "l2", 1.0, 0.75),
    ],
    ids=["pgd-linf", "pgd-l2", "fgsm-linf", "fgsm-l2"],
)
def test_attack_stays_in_ball_and_lowers_accuracy(digits_model, test_set, make, norm, eps, max_acc):
    x, y = test_set
    clean = _acc(digits_model, x, y)
    assert clean > 0.9
    x_adv = make()(digits_model, x, y)
    assert _in_ball(x_adv, x, eps, norm)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert _acc(digits_model, x_adv, y) < max_acc < clean


def test_fgsm_is_one_signed_gradient_step(digits_model, test_set):
    x, y = test_set[0][:64], test_set[1][:64]
    xt = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(xt)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=y.astype("int32"), logits=digits_model(xt, training=False)
            )
        )
    expected = np.clip(x + 0.05 * np.sign(tape.gradient(loss, xt).numpy()), 0.0, 1.0)
    got = FGSM(eps=0.05)(digits_model, x, y)
    # the best-point bookkeeping keeps the clean input where that has a higher loss;
    # everywhere else the result is exactly the FGSM step
    moved = np.any(got != x, axis=(1, 2, 3))
    assert moved.mean() > 0.9
    np.testing.assert_allclose(got[moved], expected[moved], atol=1e-6)


def test_pgd_lowers_mnist_accuracy(mnist_model, mnist_small):
    x, y = mnist_small[2][:200], mnist_small[3][:200]
    x_adv = PGD(eps=0.3, steps=10, seed=0)(mnist_model, x, y)
    assert _in_ball(x_adv, x, 0.3, "linf")
    assert _acc(mnist_model, x, y) > 0.85
    assert _acc(mnist_model, x_adv, y) < 0.1


def test_pgd_beats_fgsm_on_trained_model(digits_at_model, test_set):
    x, y = test_set
    pgd = _acc(digits_at_model, PGD(eps=0.15, steps=20, seed=0)(digits_at_model, x, y), y)
    fgsm = _acc(digits_at_model, FGSM(eps=0.15)(digits_at_model, x, y), y)
    assert pgd < fgsm
    assert pgd < _acc(digits_at_model, x, y)


# -------------------------------------------------------------- bookkeeping
def test_best_point_tracking_never_above_clean(digits_at_model, test_set):
    x, y = test_set
    clean_wrong = _wrong(digits_at_model, x, y)
    for es in (False, True):
        x_adv = PGD(eps=0.1, steps=5, early_stop=es, seed=1)(digits_at_model, x, y)
        adv_wrong = _wrong(digits_at_model, x_adv, y)
        # every example the model already gets wrong stays wrong (clean point is a candidate)
        assert np.all(adv_wrong[clean_wrong])
        assert adv_wrong.mean() >= clean_wrong.mean()


def test_early_stop_finds_the_same_examples(digits_at_model, test_set):
    # Without a random start both runs follow the same trajectory per example until
    # it is fooled, so early stopping must report the same fooled set.
    x, y = test_set
    kw = dict(eps=0.1, steps=10, random_start=False)
    full = _wrong(digits_at_model, PGD(**kw)(digits_at_model, x, y), y)
    x_es = PGD(early_stop=True, **kw)(digits_at_model, x, y)
    es = _wrong(digits_at_model, x_es, y)
    assert 0.1 < full.mean() < 0.9  # not a vacuous comparison
    assert np.sum(full != es) <= 2  # batch-size dependent float round-off only
    assert _in_ball(x_es, x, 0.1, "linf")


def test_early_stop_robust_accuracy_not_higher(digits_at_model, test_set):
    x, y = test_set
    kw = dict(eps=0.1, steps=10, seed=3)
    acc = _acc(digits_at_model, PGD(**kw)(digits_at_model, x, y), y)
    acc_es = _acc(digits_at_model, PGD(early_stop=True, **kw)(digits_at_model, x, y), y)
    assert acc_es <= acc + 0.02


def test_early_stop_when_everything_is_fooled(digits_model, test_set):
    # eps 0.5 fools every example early: the compacted batch becomes empty
    x, y = test_set[0][:50], test_set[1][:50]
    x_adv = PGD(eps=0.5, step_size=0.25, steps=6, early_stop=True, restarts=2, seed=0)(
        digits_model, x, y
    )
    assert _acc(digits_model, x_adv, y) == 0.0
    assert _in_ball(x_adv, x, 0.5, "linf")


def test_restarts_never_increase_robust_accuracy(digits_at_model, test_set):
    x, y = test_set[0][:200], test_set[1][:200]
    accs = [
        _acc(digits_at_model, PGD(eps=0.1, steps=4, restarts=r, seed=7)(digits_at_model, x, y), y)
        for r in (1, 3)
    ]
    assert accs[1] <= accs[0]


def test_while_and_unrolled_loops_agree(digits_at_model, test_set):
    x, y = test_set[0][:100], test_set[1][:100]
    kw = dict(eps=0.1, steps=7, random_start=False)
    a = PGD(loop="unrolled", **kw)(digits_at_model, x, y)
    b = PGD(loop="while", **kw)(digits_at_model, x, y)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - x).max() > 0.09  # the attack moved


@pytest.mark.slow
def test_early_stop_while_and_unrolled_agree(digits_at_model, test_set):
    # the unrolled variant (a tf.cond per step; slow to trace) and the while loop
    # (which ends once every example is fooled) find the same points
    x, y = test_set[0][:100], test_set[1][:100]
    kw = dict(eps=0.1, steps=7, random_start=False, early_stop=True)
    a = PGD(loop="unrolled", **kw)(digits_at_model, x, y)
    b = PGD(loop="while", **kw)(digits_at_model, x, y)
    np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.parametrize("loss, start", [("margin", True), ("kl", "normal")])
def test_other_losses_lower_accuracy(digits_model, test_set, loss, start):
    x, y = test_set
    x_adv = PGD(eps=0.2, steps=7, loss=loss, random_start=start, seed=0)(digits_model, x, y)
    assert _in_ball(x_adv, x, 0.2, "linf")
    assert _acc(digits_model, x_adv, y) < 0.5 * _acc(digits_model, x, y)


def test_per_example_eps(digits_model, test_set):
    x, y = test_set[0][:4], test_set[1][:4]
    eps = tf.constant([0.02, 0.05, 0.1, 0.2])
    pgd = PGD(eps=0.3, steps=10, random_start=False)
    fn = rk.attacks.as_logits_fn(digits_model)
    for track in (True, False):
        x_adv = pgd.perturb(fn, tf.constant(x), tf.constant(y), eps=eps, track_best=track).numpy()
        dist = np.abs(x_adv - x).reshape(4, -1).max(axis=1)
        assert np.all(dist <= eps.numpy() + 1e-6)
        assert np.all(dist >= 0.9 * eps.numpy())  # each example used its own radius


def test_variable_eps_inside_tf_function(digits_model, test_set):
    # The RobustModel contract: eps is a keras.Variable read inside one traced step.
    x, y = tf.constant(test_set[0][:16]), tf.constant(test_set[1][:16])
    eps = keras.Variable(0.05, trainable=False)
    pgd = PGD(eps=0.3, steps=3)
    fn = rk.attacks.as_logits_fn(digits_model)
    traces = []

    @tf.function
    def step(xb, yb):
        traces.append(1)
        return pgd.perturb(fn, xb, yb, eps=eps, loss="ce", random_start="uniform", track_best=False)

    d1 = float(tf.reduce_max(tf.abs(step(x, y) - x)))
    eps.assign(0.2)
    d2 = float(tf.reduce_max(tf.abs(step(x, y) - x)))
    assert len(traces) == 1
    assert d1 <= 0.05 + 1e-6 and 0.15 < d2 <= 0.2 + 1e-6


# ------------------------------------------------------------ types/tracing
def test_numpy_in_numpy_out_tensor_in_tensor_out(digits_model, test_set):
    x, y = test_set[0][:8], test_set[1][:8]
    pgd = PGD(eps=0.1, steps=2)
    out = pgd(digits_model, x, y)
    assert isinstance(out, np.ndarray) and out.shape == x.shape and out.dtype == np.float32
    out_t = pgd(digits_model, tf.constant(x), tf.constant(y))
    assert tf.is_tensor(out_t) and out_t.shape == x.shape
    # y=None attacks the model's own predictions
    assert pgd(digits_model, x).shape == x.shape


def test_one_trace_per_input_signature(digits_model, test_set):
    x, y = test_set
    pgd = PGD(eps=0.1, steps=2, batch_size=64)
    for n in (64, 30, 150, 64, 7):  # includes chunking (150 = 64 + 64 + 22)
        assert pgd(digits_model, x[:n], y[:n]).shape[0] == n
    assert pgd.trace_count == 1
    pgd(digits_model, tf.constant(x[:20]), tf.constant(y[:20]))  # tensors: same signature
    assert pgd.trace_count == 1

    # a model taking any spatial size: a new input shape traces exactly once more
    w = tf.constant(np.random.default_rng(0).normal(size=(1, 10)).astype("float32"))

    def pooled(inp):
        return tf.reduce_mean(inp, axis=[1, 2]) @ w

    big = np.random.default_rng(1).uniform(size=(10, 16, 16, 1)).astype("float32")
    pgd(pooled, x[:10], y[:10])
    pgd(pooled, big, y[:10])
    pgd(pooled, big[:5], y[:5])
    assert pgd.trace_count == 3  # one per (model, input shape)


def test_plain_python_function(digits_model, test_set):
    x, y = test_set

    def logits(inp):
        return digits_model(inp, training=False)

    x_adv = PGD(eps=0.2, steps=10, seed=0)(logits, x, y)
    assert _acc(digits_model, x_adv, y) < 0.35


def test_saved_model_and_tfsmlayer(digits_model, test_set, tmp_path):
    x, y = test_set[0][:100], test_set[1][:100]
    path = os.path.join(tmp_path, "export")
    digits_model.export(path, verbose=False)
    layer = keras.layers.TFSMLayer(path, call_endpoint="serve")
    reloaded = tf.saved_model.load(path)
    np.testing.assert_allclose(layer(x), digits_model(x), atol=1e-5)
    clean = _acc(digits_model, x, y)
    for model in (layer, reloaded):
        x_adv = PGD(eps=0.2, steps=5, seed=0)(model, x, y)
        assert _in_ball(x_adv, x, 0.2, "linf")
        assert _acc(digits_model, x_adv, y) < clean - 0.4


# ----------------------------------------------------------- cross-check
def test_pgd40_at_least_as_strong_as_cleverhans(digits_at_model, test_set):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    x, y = test_set
    eps, step, steps = 0.15, 0.0375, 40
    tf.random.set_seed(0)
    ch = projected_gradient_descent(
        digits_at_model,
        tf.constant(x),
        eps,
        step,
        steps,
        np.inf,
        clip_min=0.0,
        clip_max=1.0,
        y=tf.constant(y),
        rand_init=True,
        sanity_checks=False,
    )
    ours = PGD(eps=eps, step_size=step, steps=steps, seed=0)(digits_at_model, x, y)
    acc_ch, acc_rk = _acc(digits_at_model, ch.numpy(), y), _acc(digits_at_model, ours, y)
    assert acc_ch < _acc(digits_at_model, x, y) - 0.1  # the comparison is not vacuous
    assert acc_rk <= acc_ch + 0.01, (acc_rk, acc_ch)


def test_get_config_round_trip():
    pgd = PGD(eps=0.2, steps=7, norm="l2", loss="margin", restarts=2, early_stop=True, seed=3)
    back = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(pgd))
    assert isinstance(back, PGD) and back.get_config() == pgd.get_config()
    fgsm = FGSM(eps=0.1)
    back = FGSM.from_config(fgsm.get_config())
    assert back.steps == 1 and back.step_size == 0.1
