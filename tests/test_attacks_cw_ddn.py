"""CW-L2 and DDN: minimal-norm behaviour, optional eps, strength, cross-checks
with foolbox 3.3.4 on the same model, argument checks."""

import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.attacks.cw import CW
from robustkit.attacks.ddn import DDN


def _pred(model, x):
    return np.argmax(model(x, training=False).numpy(), -1)


def _norms(x_adv, x):
    return np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)


def _successes(model, x, y, x_adv):
    """Examples clean-correct, misclassified at ``x_adv``, with a real point
    (foolbox returns an all-zero image where it found nothing)."""
    ok = _pred(model, x) == y
    found = np.abs(x_adv).reshape(len(x), -1).max(1) > 0
    return ok & (_pred(model, x_adv) != y) & found


def _check_minimal_norm_output(model, x, y, x_adv, eps=None):
    """Every output is in [0, 1] and either the clean input or misclassified
    (within eps when given)."""
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    n = _norms(x_adv, x)
    changed = n > 0
    assert (_pred(model, x_adv)[changed] != y[changed]).all()
    if eps is not None:
        assert n.max() <= eps * (1 + 1e-5)
    return n


@pytest.fixture(scope="module")
def foolbox():
    return pytest.importorskip("foolbox")


# ----------------------------------------------------------------------- CW
def test_cw_lowers_accuracy_and_eps_filters(digits_model, digits):
    """CW fools (almost) every example; with ``eps`` the examples whose best
    perturbation is larger come back clean and the rest are unchanged."""
    _, _, x_te, y_te = digits
    x, y = x_te[:48], y_te[:48]
    kw = dict(steps=30, lr=0.05, binary_search_steps=3, initial_const=1.0)
    x_adv = CW(**kw)(digits_model, x, y)
    n = _check_minimal_norm_output(digits_model, x, y, x_adv)
    assert np.mean(_pred(digits_model, x_adv) == y) <= 0.1
    eps = float(np.median(n[n > 0]))
    x_eps = CW(**kw, eps=eps)(digits_model, x, y)
    _check_minimal_norm_output(digits_model, x, y, x_eps, eps=eps)
    keep = n <= eps
    np.testing.assert_allclose(x_eps[keep], x_adv[keep], atol=1e-6)
    np.testing.assert_array_equal(x_eps[~keep], x[~keep])


def test_cw_confidence_gives_a_margin(digits_model, digits):
    _, _, x_te, y_te = digits
    x, y = x_te[:16], y_te[:16]
    kappa = 2.0
    x_adv = CW(steps=30, lr=0.05, binary_search_steps=3, initial_const=1.0, confidence=kappa)(
        digits_model, x, y
    )
    logits = digits_model(x_adv, training=False).numpy()
    true = logits[np.arange(len(y)), y]
    other = np.where(np.eye(10, dtype=bool)[y], -np.inf, logits).max(1)
    changed = _norms(x_adv, x) > 0
    assert changed.sum() >= len(x) // 2
    assert (other[changed] - true[changed] >= kappa - 1e-3).all()


def test_cw_matches_foolbox(mnist_model, mnist_small, foolbox):
    """Same model, same settings (30 Adam steps of 0.1, 3 search steps, c0 = 1):
    robustkit finds at least as many adversarial examples (-1) and a median L2
    within 5 % of foolbox 3.3.4's L2CarliniWagnerAttack."""
    _, _, x_te, y_te = mnist_small
    x, y = x_te[:16], y_te[:16]
    kw = dict(steps=30, binary_search_steps=3, initial_const=1.0)
    x_rk = CW(**kw, lr=0.1)(mnist_model, x, y)
    fmodel = foolbox.TensorFlowModel(mnist_model, bounds=(0, 1))
    x_fb = foolbox.attacks.L2CarliniWagnerAttack(**kw, stepsize=0.1)(
        fmodel, tf.constant(x), tf.constant(y), epsilons=None
    )[0].numpy()
    s_rk, s_fb = _successes(mnist_model, x, y, x_rk), _successes(mnist_model, x, y, x_fb)
    assert s_fb.sum() >= len(x) // 2
    assert s_rk.sum() >= s_fb.sum() - 1
    med_rk, med_fb = np.median(_norms(x_rk, x)[s_rk]), np.median(_norms(x_fb, x)[s_fb])
    assert med_rk <= 1.05 * med_fb, (med_rk, med_fb)


# ---------------------------------------------------------------------- DDN
def test_ddn_lowers_accuracy_and_eps_filters(digits_model, digits):
    _, _, x_te, y_te = digits
    x, y = x_te[:64], y_te[:64]
    x_adv = DDN(steps=30)(digits_model, x, y)
    n = _check_minimal_norm_output(digits_model, x, y, x_adv)
    assert np.mean(_pred(digits_model, x_adv) == y) <= 0.05
    # eps halfway between two neighbouring norms near the median, so that no example sits
    # on the eps boundary (float32 norms inside the attack vs float64 here)
    sorted_n = np.sort(n[n > 0])
    mid = len(sorted_n) // 2
    eps = float((sorted_n[mid - 1] + sorted_n[mid]) / 2)
    x_eps = DDN(steps=30, eps=eps)(digits_model, x, y)
    _check_minimal_norm_output(digits_model, x, y, x_eps, eps=eps)
    keep = n <= eps
    np.testing.assert_allclose(x_eps[keep], x_adv[keep], atol=1e-6)
    np.testing.assert_array_equal(x_eps[~keep], x[~keep])


def test_ddn_median_norm_vs_foolbox(mnist_model, mnist_small, foolbox):
    """On the same model and 64 MNIST images, 30 steps each: robustkit's median
    L2 over successful examples is within 10 % of foolbox 3.3.4's DDNAttack (or
    smaller), with at least as many successes (-1)."""
    _, _, x_te, y_te = mnist_small
    x, y = x_te[:64], y_te[:64]
    x_rk = DDN(steps=30)(mnist_model, x, y)
    fmodel = foolbox.TensorFlowModel(mnist_model, bounds=(0, 1))
    x_fb = foolbox.attacks.DDNAttack(steps=30)(
        fmodel, tf.constant(x), tf.constant(y), epsilons=None
    )[0].numpy()
    s_rk, s_fb = _successes(mnist_model, x, y, x_rk), _successes(mnist_model, x, y, x_fb)
    assert s_fb.sum() >= len(x) // 2
    assert s_rk.sum() >= s_fb.sum() - 1
    med_rk, med_fb = np.median(_norms(x_rk, x)[s_rk]), np.median(_norms(x_fb, x)[s_fb])
    assert med_rk <= 1.10 * med_fb, (med_rk, med_fb)


@pytest.mark.slow
def test_ddn_on_adversarially_trained_model_needs_larger_norms(
    digits_model, digits_at_model, digits
):
    """A PGD-trained model needs larger minimal perturbations than the undefended one."""
    _, _, x_te, y_te = digits
    x, y = x_te[:64], y_te[:64]
    atk = DDN(steps=30)
    n_plain = _norms(atk(digits_model, x, y), x)
    n_at = _norms(atk(digits_at_model, x, y), x)
    assert np.median(n_at[n_at > 0]) > 1.1 * np.median(n_plain[n_plain > 0])


# ------------------------------------------------------------- bounds, loops
def _on_0_255(model):
    return lambda t: model(t / 255.0, training=False)


def test_cw_uses_bounds(digits_model, digits):
    """CW is scale-equivariant once c scales with the squared distance: on 0-255 inputs,
    with ``bounds=(0, 255)`` (the tanh box maps onto it) and c0 = 255^2, it returns 255 times
    the points found on [0, 1] with c0 = 1 (Adam is invariant to the loss scale)."""
    _, _, x_te, y_te = digits
    x, y = x_te[:48], y_te[:48]
    kw = dict(steps=30, lr=0.05, binary_search_steps=3)
    a = CW(**kw, initial_const=1.0)(digits_model, x, y)
    b = CW(**kw, initial_const=255.0**2, bounds=(0, 255))(_on_0_255(digits_model), 255 * x, y)
    assert b.min() >= 0 and b.max() <= 255
    np.testing.assert_allclose(b / 255, a, atol=1e-4)
    assert np.mean(_norms(a, x) > 0) > 0.8  # the points moved


def test_ddn_uses_bounds(digits_model, digits):
    """DDN is scale-equivariant once its norms scale: on 0-255 inputs with
    ``bounds=(0, 255)``, eps_0 and the step sizes times 255, it returns 255 times the
    points found on [0, 1]."""
    _, _, x_te, y_te = digits
    x, y = x_te[:48], y_te[:48]
    a = DDN(steps=30)(digits_model, x, y)
    big = dict(init_epsilon=255.0, max_step=255.0, min_step=2.55, bounds=(0, 255))
    b = DDN(steps=30, **big)(_on_0_255(digits_model), 255 * x, y)
    assert b.min() >= 0 and b.max() <= 255
    np.testing.assert_allclose(b / 255, a, atol=1e-4)
    assert np.mean(_norms(a, x) > 0) > 0.8


@pytest.mark.parametrize(
    "make",
    [
        lambda loop: CW(steps=6, lr=0.05, binary_search_steps=2, initial_const=10.0, loop=loop),
        lambda loop: DDN(steps=6, loop=loop),
    ],
)
def test_while_and_unrolled_loops_agree(make, digits_model, digits):
    """The engine's unrolled loop (with CW's abort check as a guard per step) and its
    while loop give the same points."""
    _, _, x_te, y_te = digits
    x, y = x_te[:32], y_te[:32]
    a = make("unrolled")(digits_model, x, y)
    b = make("while")(digits_model, x, y)
    np.testing.assert_allclose(a, b, atol=1e-5)
    assert np.mean(_norms(a, x) > 0) > 0.1  # some were fooled (CW aborts after a few steps)


@pytest.mark.parametrize("cls", [CW, DDN])
def test_l2_threat_model_label_and_config(cls):
    """Minimal-norm L2 attacks: ``norm`` "l2", an L2 threat model when ``eps`` is given
    (the evaluator checks the outputs against it), none otherwise; bounds in the config."""
    atk = cls(eps=1.5, bounds=(0, 255))
    assert atk.norm == "l2" and cls.supported_norms == ("l2",)
    assert atk.threat.norm == "l2" and atk.threat.eps == atk.eps == 1.5
    assert atk.bounds == atk.threat.bounds == (0.0, 255.0)
    assert atk.label == cls.__name__ and not atk.black_box and not atk.trainable
    config = atk.get_config()
    assert config["bounds"] == [0.0, 255.0]
    assert cls.from_config(config).get_config() == config
    plain = cls()
    assert plain.eps is None and plain.threat is None and plain.bounds == (0.0, 1.0)
    assert "bounds" not in plain.get_config()


# ---------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: CW(steps=0), "steps"),
        (lambda: CW(lr=0), "lr"),
        (lambda: CW(initial_const=-1.0), "initial_const"),
        (lambda: CW(binary_search_steps=0), "binary_search_steps"),
        (lambda: CW(confidence=-1.0), "confidence"),
        (lambda: CW(eps=0), "eps"),
        (lambda: CW(loop="for"), "loop"),
        (lambda: CW(bounds=(1, 1)), "bounds"),
        (lambda: DDN(steps=0), "steps"),
        (lambda: DDN(init_epsilon=0), "init_epsilon"),
        (lambda: DDN(gamma=1.5), "gamma"),
        (lambda: DDN(max_step=-1.0), "max_step"),
        (lambda: DDN(min_step=2.0), "min_step"),
        (lambda: DDN(eps=-0.5), "eps"),
        (lambda: DDN(loop="for"), "loop"),
        (lambda: DDN(bounds=(0, float("inf"))), "bounds"),
    ],
)
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


@pytest.mark.parametrize("cls", [CW, DDN])
def test_config_round_trip(cls):
    atk = cls(steps=7, eps=1.5)
    again = cls.from_config(atk.get_config())
    assert again.get_config() == atk.get_config()
    assert getattr(rk.attacks, cls.__name__) is cls
