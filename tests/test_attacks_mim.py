"""MIM and TI-DIM on the engine: the training protocol (last iterate, against a hand-written
MIM), early stop (compaction and XLA masks), restarts with a random start, loop modes,
bounds, labels and config."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.attacks.mim import MIM
from robustkit.attacks.tidim import TIDIM


def _wrong(model, x, y):
    return np.argmax(model(tf.convert_to_tensor(x), training=False).numpy(), -1) != y


def _size(x_adv, x, norm):
    d = np.asarray(x_adv, np.float64).reshape(len(x), -1) - np.asarray(x, np.float64).reshape(
        len(x), -1
    )
    return np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)


def _reference_mim(model, x, y, eps, step, steps, decay):
    """MIM-L2 written out from the paper with numpy: g <- decay g + grad / ||grad||_1,
    x <- Proj_{L2 ball, [0, 1]}(x + step g / ||g||_2); returns the last iterate."""
    x_adv, g = x.copy(), np.zeros_like(x)
    flat = (len(x), -1)
    for _ in range(steps):
        t = tf.constant(x_adv)
        with tf.GradientTape() as tape:
            tape.watch(t)
            logits = model(t, training=False)
            loss = tf.reduce_sum(
                keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)
            )
        grad = tape.gradient(loss, t).numpy()
        g = decay * g + grad / np.abs(grad).reshape(flat).sum(1)[:, None, None, None]
        x_new = x_adv + step * g / np.linalg.norm(g.reshape(flat), axis=1)[:, None, None, None]
        delta = x_new - x
        n = np.linalg.norm(delta.reshape(flat), axis=1)[:, None, None, None]
        x_adv = np.clip(x + delta * np.minimum(1.0, eps / n), 0.0, 1.0).astype("float32")
    return x_adv


# ------------------------------------------------------------ training protocol
def test_perturb_without_tracking_matches_a_hand_written_mim(digits_model, digits):
    """``perturb(..., track_best=False)`` inside a tf.function, with the radius in a
    keras.Variable (as RobustModel's warm-up passes it): the last iterate of a hand-written
    MIM, inside the variable's ball (not the constructor's)."""
    _, _, x_te, y_te = digits
    x, y = x_te[:32], y_te[:32]
    atk = MIM(eps=2.0, steps=5, norm="l2")  # step eps / 5: 0.1 at radius 0.5
    assert atk.trainable
    radius = keras.Variable(0.5, dtype="float32", trainable=False)
    fn = rk.attacks.as_logits_fn(digits_model)
    run = tf.function(
        lambda xb, yb: atk.perturb(
            fn, xb, yb, eps=radius, loss="ce", random_start="none", track_best=False
        )
    )
    out = run(tf.constant(x), tf.constant(y)).numpy()
    ref = _reference_mim(digits_model, x, y, eps=0.5, step=0.1, steps=5, decay=1.0)
    np.testing.assert_allclose(out, ref, atol=1e-5)
    assert _size(out, x, "l2").max() <= 0.5 * (1 + 1e-5)
    assert _size(out, x, "l2").min() > 0.4  # five steps of 0.1 reach the sphere


def test_perturb_without_tracking_is_the_last_iterate_not_the_best():
    """A model whose loss peaks on the way: logits ``[0, sin(10 m)]`` (m the mean pixel),
    label 0, so the loss is ``softplus(sin(10 m))``. From m = 0.65, L2 steps of 0.4 over 16
    pixels move every pixel by 0.1 (the gradient is uniform), and the momentum keeps the
    direction: 10 m = 6.5, 7.5, 8.5, 9.5. The last iterate is m = 0.95; the best one (fooled,
    sin > 0, highest loss) is m = 0.75 (sin 7.5 = 0.94 > sin 8.5 = 0.80; sin 9.5 < 0)."""

    def model(t):
        m = tf.reduce_mean(tf.reshape(t, [tf.shape(t)[0], -1]), axis=1, keepdims=True)
        return tf.concat([tf.zeros_like(m), tf.sin(10.0 * m)], axis=1)

    x = tf.fill([2, 4, 4, 1], 0.65)
    y = tf.zeros([2], tf.int64)
    atk = MIM(eps=10.0, steps=3, step_size=0.4, norm="l2")
    last = atk.perturb(model, x, y, track_best=False).numpy()
    best = atk.perturb(model, x, y).numpy()
    np.testing.assert_allclose(last, 0.95, atol=1e-5)
    np.testing.assert_allclose(best, 0.75, atol=1e-5)


@pytest.mark.parametrize("cls", [MIM, TIDIM])
def test_perturb_training_overrides_stay_in_ball(cls, digits_model, digits):
    """The training overrides (TRADES' KL from a normal start) run and stay in the ball
    of the radius passed, inside [0, 1]."""
    _, _, x_te, y_te = digits
    x, y = tf.constant(x_te[:32]), tf.constant(y_te[:32])
    atk = cls(eps=0.3, steps=4, step_size=0.05)
    fn = rk.attacks.as_logits_fn(digits_model)
    out = atk.perturb(
        fn, x, y, eps=tf.constant(0.1), loss="kl", random_start="normal", track_best=False
    ).numpy()
    assert _size(out, x.numpy(), "linf").max() <= 0.1 + 1e-6
    assert out.min() >= 0 and out.max() <= 1
    assert np.abs(out - x.numpy()).max() > 0.05  # it moved (a KL start at x has no gradient)
    with pytest.raises(ValueError, match="`loss`"):
        atk.perturb(fn, x, y, loss="hinge", track_best=False)


# ------------------------------------------------------------------- early stop
def _counting(model):
    """The model, and a counter of the examples it has been run on."""
    seen = tf.Variable(0, dtype=tf.int64)

    def fn(t):
        seen.assign_add(tf.cast(tf.shape(t)[0], tf.int64))
        return model(t, training=False)

    return fn, seen


def test_early_stop_compacts_and_finds_the_same_examples(digits_model, digits):
    """Without a random start a trajectory does not depend on the others, so early stop
    fools the same examples, returns the same points for the others, and runs the model
    only until each example is fooled: an example first fooled at iterate k < 10 costs
    k + 1 passes, any other 11 (10 gradient passes and the final evaluation)."""
    _, _, x_te, y_te = digits
    x, y = x_te[:128], y_te[:128]
    steps, eps = 10, 0.07
    full_fn, full_seen = _counting(digits_model)
    es_fn, es_seen = _counting(digits_model)
    full = MIM(eps=eps, steps=steps)(full_fn, x, y)
    early = MIM(eps=eps, steps=steps, early_stop=True)(es_fn, x, y)
    w_full, w_early = _wrong(digits_model, full, y), _wrong(digits_model, early, y)
    assert 0.1 < w_full.mean() < 0.9  # not a vacuous comparison
    assert np.sum(w_early != w_full) <= 2  # batch-size dependent float round-off only
    same = ~w_full & ~w_early
    np.testing.assert_allclose(early[same], full[same], atol=1e-6)
    assert _size(early, x, "linf").max() <= eps + 1e-6
    # the iterates of the run, from shorter runs with the same step (eps / steps)
    fn = rk.attacks.as_logits_fn(digits_model)
    iterates = [x] + [
        MIM(eps=eps, steps=k, step_size=eps / steps)
        .perturb(fn, tf.constant(x), tf.constant(y), track_best=False)
        .numpy()
        for k in range(1, steps + 1)
    ]
    fooled = np.stack([_wrong(digits_model, it, y) for it in iterates[:steps]])  # (10, n)
    passes = np.where(fooled.any(0), fooled.argmax(0) + 1, steps + 1)
    # __call__ first probes one example for the class count
    assert int(full_seen.numpy()) == 1 + (steps + 1) * len(x)
    assert abs(int(es_seen.numpy()) - (1 + passes.sum())) <= 2 * (steps + 1)
    assert passes.sum() < 0.95 * (steps + 1) * len(x)  # early stop saves work here


def test_early_stop_with_xla_masks(digits_model, digits):
    """Under XLA early stop freezes fooled examples by masks: the same examples as the
    XLA run without early stop, and the same points for the others."""
    _, _, x_te, y_te = digits
    x, y = x_te[:64], y_te[:64]
    kw = dict(eps=0.07, steps=5, jit_compile=True)
    full = MIM(**kw)(digits_model, x, y)
    early = MIM(early_stop=True, **kw)(digits_model, x, y)
    w_full = _wrong(digits_model, full, y)
    assert 0.05 < w_full.mean() < 0.9
    np.testing.assert_array_equal(_wrong(digits_model, early, y), w_full)
    np.testing.assert_allclose(early[~w_full], full[~w_full], atol=1e-6)


def test_early_stop_when_everything_is_fooled(digits_model, digits):
    """eps 0.5 fools every example within a few steps: the compacted batch empties and
    the remaining restarts have nothing to do."""
    _, _, x_te, y_te = digits
    x, y = x_te[:50], y_te[:50]
    x_adv = MIM(eps=0.5, steps=8, early_stop=True, restarts=2, random_start=True, seed=0)(
        digits_model, x, y
    )
    assert _wrong(digits_model, x_adv, y).all()
    assert _size(x_adv, x, "linf").max() <= 0.5 + 1e-6


# ---------------------------------------------------- restarts and random start
def test_restarts_with_random_start(digits_model, digits):
    """Restart 0 is the same seeded run in both, so 3 restarts fool a superset; the
    clean input is a candidate (examples wrong at x stay wrong); the start is random."""
    _, _, x_te, y_te = digits
    x, y = x_te[:200], y_te[:200]
    kw = dict(eps=0.05, steps=4, random_start=True, seed=7)
    one = MIM(restarts=1, **kw)(digits_model, x, y)
    three = MIM(restarts=3, **kw)(digits_model, x, y)
    w_one, w_three = _wrong(digits_model, one, y), _wrong(digits_model, three, y)
    assert np.all(w_three[w_one])
    assert np.all(w_three[_wrong(digits_model, x, y)])
    assert _size(three, x, "linf").max() <= 0.05 + 1e-6
    plain = MIM(eps=0.05, steps=4)(digits_model, x, y)
    assert np.abs(plain - one).max() > 1e-3


def test_while_and_unrolled_loops_agree(digits_model, digits):
    _, _, x_te, y_te = digits
    x, y = x_te[:64], y_te[:64]
    a = MIM(eps=0.1, steps=6, loop="unrolled")(digits_model, x, y)
    b = MIM(eps=0.1, steps=6, loop="while")(digits_model, x, y)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.abs(a - x).max() > 0.09


# ------------------------------------------------------------ bounds and names
@pytest.mark.parametrize(
    "make",
    [
        lambda **kw: MIM(steps=10, norm="l2", **kw),
        lambda eps, **kw: TIDIM(eps=eps, steps=10, step_size=eps / 5, norm="l2", p=0.0, **kw),
    ],
)
def test_bounds_are_used(make, digits_model, digits):
    """On inputs mapped to [-1, 1] with the model composed with the inverse map, an
    attack with ``bounds=(-1, 1)`` and twice the radius returns the mapped points."""
    _, _, x_te, y_te = digits
    x, y = x_te[:48], y_te[:48]
    a = make(eps=0.5)(digits_model, x, y)
    b = make(eps=1.0, bounds=(-1.0, 1.0))(
        lambda t: digits_model((t + 1.0) / 2.0, training=False), 2 * x - 1, y
    )
    assert b.min() >= -1 and b.max() <= 1
    np.testing.assert_allclose((b + 1) / 2, a, atol=1e-5)
    assert np.abs(a - x).max() > 0.1


def test_labels_norms_and_config():
    assert MIM(steps=7).label == "MIM-7" and TIDIM().label == "TI-DIM"
    assert MIM.supported_norms == ("linf", "l2") and MIM.trainable and not MIM.black_box
    atk = TIDIM(
        eps=0.2, steps=3, random_start="normal", restarts=2, early_stop=True, bounds=(0, 255)
    )
    config = atk.get_config()
    assert config["bounds"] == [0.0, 255.0] and config["random_start"] == "normal"
    again = TIDIM.from_config(config)
    assert again.get_config() == config and again.bounds == (0.0, 255.0)
    assert "bounds" not in MIM().get_config()


@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: MIM(restarts=0), "restarts"),
        (lambda: MIM(random_start="gauss"), "random_start"),
        (lambda: MIM(loss="hinge"), "loss"),
        (lambda: MIM(bounds=(1, 0)), "bounds"),
        (lambda: TIDIM(norm="l1"), "norm"),
    ],
)
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()
