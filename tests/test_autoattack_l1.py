"""L1 in the AutoAttack family (APGD-L1, PGD-L1), norm checks, labels and ``bounds``."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk


def _acc(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0, batch_size=500), -1) == y))


def _in_l1_ball_and_box(x_adv, x, eps, lo=0.0, hi=1.0):
    l1 = np.abs(np.asarray(x_adv, "float64") - x).reshape(len(x), -1).sum(1)
    return bool(np.all(l1 <= eps * (1 + 1e-4) + 1e-4) and x_adv.min() >= lo and x_adv.max() <= hi)


@pytest.fixture(scope="module")
def digits_test(digits):
    _, _, x_te, y_te = digits
    return x_te[:150], y_te[:150]


def test_pgd_and_apgd_l1_lower_accuracy_on_digits(digits_model, digits_test):
    x, y = digits_test
    eps = 2.0  # rk.threat.DEFAULT_EPS["digits"]["l1"]
    clean = _acc(digits_model, x, y)
    pgd = rk.attacks.PGD(eps=eps, norm="l1", steps=20, step_size=eps / 2, seed=0)
    apgd = rk.attacks.APGD(eps=eps, norm="l1", steps=20, seed=0)
    accs = {}
    for name, atk in (("pgd", pgd), ("apgd", apgd)):
        x_adv = atk(digits_model, x, y)
        assert _in_l1_ball_and_box(x_adv, x, eps), name
        accs[name] = _acc(digits_model, x_adv, y)
        assert accs[name] < clean - 0.2, (name, accs[name], clean)
    # APGD-L1 (adaptive sparsity and step) is at least as strong as PGD-L1 here
    assert accs["apgd"] <= accs["pgd"] + 0.02


def test_apgd_l1_on_mnist(mnist_model, mnist_small):
    _, _, x, y = mnist_small
    x, y = x[:100], y[:100]
    eps = 10.0  # Croce & Hein (2021), MNIST
    clean = _acc(mnist_model, x, y)
    x_adv = rk.attacks.APGD(eps=eps, norm="l1", steps=20, seed=0)(mnist_model, x, y)
    assert _in_l1_ball_and_box(x_adv, x, eps)
    assert _acc(mnist_model, x_adv, y) < clean - 0.3
    # the L1 attack is sparse: it moves far fewer pixels than an L-inf attack would
    moved = (np.abs(x_adv - x).reshape(len(x), -1) > 1e-6).sum(1)
    assert np.median(moved) < 0.5 * 784


def test_apgdt_l1_and_autoattack_l1(digits_model, digits_test):
    x, y = digits_test[0][:80], digits_test[1][:80]
    eps = 2.0
    clean = _acc(digits_model, x, y)
    x_t = rk.attacks.APGDT(eps=eps, norm="l1", steps=10, n_target_classes=2, seed=0)(
        digits_model, x, y
    )
    assert _in_l1_ball_and_box(x_t, x, eps)
    assert _acc(digits_model, x_t, y) < clean - 0.2
    aa = rk.attacks.AutoAttack(
        eps=eps, norm="l1", attacks=["apgd-ce", "apgd-t"], steps=10, n_target_classes=2, seed=0
    )
    x_aa = aa(digits_model, x, y)
    assert _in_l1_ball_and_box(x_aa, x, eps)
    assert _acc(digits_model, x_aa, y) < clean - 0.2
    assert not aa.is_standard
    assert [h["attack"] for h in aa.history] == ["clean", "apgd-ce", "apgd-t"]


@pytest.mark.parametrize(
    "make",
    [
        lambda: rk.attacks.Square(eps=2.0, norm="l1"),
        lambda: rk.attacks.FAB(eps=2.0, norm="l1"),
        lambda: rk.attacks.AutoAttack(eps=2.0, norm="l1"),  # default attacks include FAB, Square
        lambda: rk.attacks.AutoAttack(eps=2.0, norm="l1", attacks=["apgd-ce", "square"]),
        lambda: rk.attacks.APGD(eps=2.0, norm="l0"),
    ],
)
def test_unsupported_norms_raise_naming_norm(make):
    with pytest.raises(ValueError, match="`norm`"):
        make()


def test_labels_and_black_box():
    assert rk.attacks.APGD().label == "APGD-CE"
    assert rk.attacks.APGD(loss="dlr").label == "APGD-DLR"
    assert rk.attacks.APGDT().label == "APGD-T"
    assert rk.attacks.FAB().label == "FAB-T"
    assert rk.attacks.FAB(targeted=False).label == "FAB"
    assert rk.attacks.Square().label == "Square" and rk.attacks.Square.black_box
    assert not rk.attacks.APGD.black_box and not rk.attacks.FAB.black_box
    assert rk.attacks.AutoAttack().label == "AA"
    assert rk.attacks.AutoAttack(version="rand").label == "AA-rand"
    # a reduced budget never carries the standard's name
    assert rk.attacks.AutoAttack(steps=40).label == "AA-40 (non-standard)"
    assert rk.attacks.AutoAttack(n_queries=100).label == "AA (non-standard)"
    assert rk.attacks.AutoAttack(attacks=["apgd-ce"]).label == "AA (non-standard)"
    l1 = rk.attacks.AutoAttack(eps=12.0, norm="l1", attacks=["apgd-ce", "apgd-t"])
    assert l1.label == "AA (non-standard)"
    assert rk.attacks.APGD.supported_norms == ("linf", "l2", "l1")
    assert "l1" not in rk.attacks.Square.supported_norms + rk.attacks.FAB.supported_norms


def test_autoattack_runs_square_unrescaled():
    aa = rk.attacks.AutoAttack(eps=0.3)
    assert aa.components["square"].rescale_schedule is False
    # alone, Square keeps its own default (rescaled to n_queries)
    assert rk.attacks.Square(eps=0.3).rescale_schedule is True
    # p halves after iteration 10 of 5,000, not after 5 as the rescaled schedule does
    square = aa.components["square"]
    p = [float(square._p(it)) for it in (5, 6, 10, 11)]
    assert p == pytest.approx([0.8, 0.8, 0.8, 0.4])


@pytest.mark.parametrize(
    "make",
    [
        lambda b: rk.attacks.APGD(eps=25.0, steps=5, bounds=b, seed=0),
        lambda b: rk.attacks.APGD(eps=500.0, norm="l1", steps=5, bounds=b, seed=0),
        lambda b: rk.attacks.APGDT(eps=25.0, steps=5, n_target_classes=1, bounds=b, seed=0),
        lambda b: rk.attacks.FAB(eps=25.0, steps=5, n_target_classes=1, bounds=b, seed=0),
        lambda b: rk.attacks.Square(eps=50.0, n_queries=50, bounds=b, seed=0),
        lambda b: rk.attacks.AutoAttack(
            eps=25.0, steps=5, n_target_classes=1, n_queries=20, bounds=b, seed=0
        ),
    ],
)
def test_bounds_0_255(digits_model, digits_test, make):
    """Inputs in [0, 255] with eps in the same units: the output stays in that box and
    ball, and the attack still works (the model divides by 255 itself)."""
    x, y = digits_test[0][:40] * 255.0, digits_test[1][:40]
    inputs = keras.Input((8, 8, 1))
    model = keras.Model(inputs, digits_model(keras.layers.Rescaling(1 / 255.0)(inputs)))
    atk = make((0.0, 255.0))
    assert atk.bounds == (0.0, 255.0)
    x_adv = np.asarray(atk(model, x, y))
    assert x_adv.min() >= 0.0 and x_adv.max() <= 255.0
    assert np.all(atk.threat.contains_np(x_adv, x) | np.all(x_adv == x, axis=(1, 2, 3)))
    assert x_adv.max() > 1.5  # not clipped to the unit box
    assert _acc(model, x_adv, y) < _acc(model, x, y)
    config = atk.get_config()
    assert config["bounds"] == [0.0, 255.0]
    assert type(atk).from_config(config).bounds == (0.0, 255.0)


@pytest.mark.parametrize("cls", [rk.attacks.APGDT, rk.attacks.FAB])
def test_targeted_attacks_trace_the_model_once_whatever_the_targets(cls):
    """One loop over the targets: the graph holds the same number of model copies for
    2 or 5 targets (the old APGD-T traced one APGD loop and model per target)."""
    model = keras.Sequential(
        [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(6)]
    )
    fn = rk.attacks.as_logits_fn(model)
    spec = (tf.TensorSpec([None, 8, 8, 1]), tf.TensorSpec([None], tf.int64))
    counts = []
    for targets in (2, 5):
        calls = []

        def counted(t, calls=calls):
            calls.append(1)  # runs once per trace of a model call
            return fn(t)

        atk = cls(eps=0.1, steps=3, n_target_classes=targets, seed=0)
        tf.function(lambda x, y, atk=atk, f=counted: atk.perturb(f, x, y)).get_concrete_function(
            *spec
        )
        counts.append(len(calls))
    assert counts[0] == counts[1] <= 4


def test_apgd_without_early_stop(digits_model, digits_test):
    x, y = digits_test[0][:100], digits_test[1][:100]
    atk = rk.attacks.APGD(eps=0.1, steps=10, early_stop=False, seed=0)
    x_adv = atk(digits_model, x, y)
    d = np.abs(x_adv - x).reshape(len(x), -1).max(1)
    assert np.all(d <= 0.1 + 1e-6) and x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(digits_model, x_adv, y) < _acc(digits_model, x, y) - 0.3
    clone = rk.attacks.APGD.from_config(atk.get_config())
    assert clone.early_stop is False and clone.get_config() == atk.get_config()
