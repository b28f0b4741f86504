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
        (lambda: DDN(steps=0), "steps"),
        (lambda: DDN(init_epsilon=0), "init_epsilon"),
        (lambda: DDN(gamma=1.5), "gamma"),
        (lambda: DDN(max_step=-1.0), "max_step"),
        (lambda: DDN(min_step=2.0), "min_step"),
        (lambda: DDN(eps=-0.5), "eps"),
        (lambda: DDN(loop="for"), "loop"),
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
