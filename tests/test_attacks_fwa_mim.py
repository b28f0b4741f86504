"""FWA (Wasserstein Frank–Wolfe), MIM and TI-DIM: threat models, strength,
cross-check of MIM with cleverhans 4.0, argument checks."""

import math

import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.attacks.fwa import FWA
from robustkit.attacks.mim import MIM
from robustkit.attacks.tidim import TIDIM, gaussian_kernel, scaled_kernel
from robustkit.attacks.transport import apply_plan, kernel_offsets, transport_cost

scipy_optimize = pytest.importorskip("scipy.optimize")


def _acc(model, x, y):
    return float(np.mean(np.argmax(model(x, training=False).numpy(), -1) == y))


def _local_w1(x, x_adv, kernel_size):
    """Exact minimal cost of a local transport plan from ``x`` to ``x_adv``
    (one channel, H x W), by linear programming; ``inf`` if none exists."""
    h, w = x.shape
    offsets = kernel_offsets(kernel_size)
    var_src, var_dst, var_cost = [], [], []
    for i in range(h):
        for j in range(w):
            for dy, dx in offsets:
                if 0 <= i + dy < h and 0 <= j + dx < w:
                    var_src.append(i * w + j)
                    var_dst.append((i + dy) * w + (j + dx))
                    var_cost.append(math.hypot(dy, dx))
    n = len(var_cost)
    a_eq = np.zeros((2 * h * w, n))
    a_eq[np.array(var_src), np.arange(n)] = 1.0
    a_eq[h * w + np.array(var_dst), np.arange(n)] = 1.0
    src = x.reshape(-1).astype(np.float64)
    dst = x_adv.reshape(-1).astype(np.float64)
    dst = dst * src.sum() / dst.sum()  # float32 round-off only
    res = scipy_optimize.linprog(
        var_cost, A_eq=a_eq, b_eq=np.concatenate([src, dst]), bounds=(0, None), method="highs"
    )
    return res.fun if res.status == 0 else math.inf


# ---------------------------------------------------------------------- FWA
#: one instance for both FWA model tests: the compiled loop is traced once
_FWA = FWA(eps=0.05, steps=10)


def test_fwa_oracle_matches_linear_program():
    """The entropic dual oracle solves max <Pi, G> over the local transport
    polytope (row sums = x, cost <= budget): feasible, and its objective is
    within a small gap of the exact LP optimum."""
    rng = np.random.default_rng(0)
    h = w = 5
    x = rng.uniform(0.1, 1.0, size=(1, h, w, 1)).astype("float32")
    g_img = rng.normal(size=(1, h, w, 1)).astype("float32")
    atk = FWA(eps=0.05, kernel_size=3, entropy=1e-4, dual_steps=30)
    offsets = atk.offsets
    pad = 1
    from robustkit.attacks.transport import shift as _shift

    g = tf.stack([_shift(tf.constant(g_img), dy, dx, pad) for dy, dx in offsets], -1)
    g = g / tf.reduce_max(tf.abs(g))
    valid = tf.stack([_shift(tf.ones([1, h, w, 1]), dy, dx, pad) for dy, dx in offsets], -1) > 0.5
    z = tf.where(tf.reshape(valid, [-1, 9]), tf.reshape(g, [-1, 9]) / atk.entropy, -math.inf)
    cost = tf.constant([math.hypot(dy, dx) for dy, dx in offsets], tf.float32)
    budget = tf.constant([0.05 * float(x.sum())])
    rows = atk._oracle(z, tf.reshape(x, [-1]), tf.zeros([h * w], tf.int32), cost, budget, 1)
    rows = rows.numpy()
    np.testing.assert_allclose(rows.sum(1), x.reshape(-1), rtol=1e-5)
    assert (rows >= 0).all()
    plan_cost = float((rows * cost.numpy()).sum())
    assert plan_cost <= float(budget[0]) * (1 + 1e-5)
    objective = float((rows * g.numpy().reshape(-1, 9)).sum())
    # exact LP: max <Pi, G>, Pi 1 = x, <Pi, C> <= budget, Pi >= 0 on valid entries
    gv = g.numpy().reshape(-1, 9)
    mask = valid.numpy().reshape(-1, 9)
    idx = np.argwhere(mask)
    c_lp = -gv[mask]
    a_eq = np.zeros((h * w, len(idx)))
    a_eq[idx[:, 0], np.arange(len(idx))] = 1.0
    a_ub = cost.numpy()[idx[:, 1]][None, :]
    res = scipy_optimize.linprog(
        c_lp,
        A_ub=a_ub,
        b_ub=[float(budget[0])],
        A_eq=a_eq,
        b_eq=x.reshape(-1).astype(np.float64),
        bounds=(0, None),
        method="highs",
    )
    assert res.status == 0
    assert objective >= -res.fun - 0.01 * abs(res.fun) - 1e-3
    assert objective <= -res.fun + 1e-4


def test_fwa_output_is_a_valid_local_transport(digits_model, digits):
    """On images in [0, 0.5] (so the [0, 1] box rarely binds), the output keeps
    every example's mass and an exact LP finds a local (kernel 4) transport
    plan from x to x_adv of cost <= eps * mass."""
    _, _, x_te, y_te = digits
    x, y = 0.5 * x_te[:24], y_te[:24]
    eps = _FWA.eps
    x_adv = _FWA(digits_model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    free = x_adv.reshape(len(x), -1).max(1) < 1 - 1e-6  # box inactive
    assert free.sum() >= len(x) // 2
    moved = np.abs(x_adv - x).reshape(len(x), -1).sum(1) > 1e-3
    assert moved[free].sum() >= free.sum() // 2  # the attack actually moved mass
    for i in np.flatnonzero(free)[:8]:
        mass = float(x[i].sum())
        assert abs(float(x_adv[i].sum()) - mass) <= 1e-4 * mass
        w1 = _local_w1(x[i, ..., 0], x_adv[i, ..., 0], kernel_size=4)
        assert w1 <= eps * mass * (1 + 1e-3) + 1e-4, (i, w1, eps * mass)


def test_fwa_lowers_accuracy(digits_model, digits):
    _, _, x_te, y_te = digits
    x, y = x_te[:96], y_te[:96]
    clean = _acc(digits_model, x, y)
    x_adv = _FWA(digits_model, x, y)
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(digits_model, x_adv, y) <= clean - 0.2


def test_fwa_plan_helpers():
    """apply_plan moves mass by the offsets; transport_cost weighs by distance."""
    offsets = kernel_offsets(3)
    plan = np.zeros((1, 3, 3, 1, 9), "float32")
    plan[0, 1, 1, 0, offsets.index((0, 1))] = 0.4  # centre -> right
    plan[0, 1, 1, 0, offsets.index((0, 0))] = 0.6  # stays
    plan[0, 0, 0, 0, offsets.index((1, 1))] = 1.0  # corner -> centre (diagonal)
    img = apply_plan(tf.constant(plan), offsets).numpy()[0, ..., 0]
    expected = np.zeros((3, 3))
    expected[1, 2], expected[1, 1] = 0.4, 1.6
    np.testing.assert_allclose(img, expected, atol=1e-6)
    np.testing.assert_allclose(
        transport_cost(tf.constant(plan), offsets).numpy(), [0.4 + math.sqrt(2)], rtol=1e-6
    )


def test_fwa_uses_bounds(digits_model, digits):
    """The mass of a pixel is its height above ``lo``. Scaled inputs (bounds (0, 2)): the
    oracle is linear in the mass and the gradient is L-inf normalised, so the points are
    exactly twice those on [0, 1]. Shifted inputs (bounds (-1, 1)): every output keeps its
    mass ``sum(x_adv + 1) = sum(x + 1)`` where the box is inactive, and matches the [0, 1]
    run up to the round-off of the shift (the entropic oracle amplifies it on a few)."""
    _, _, x_te, y_te = digits
    x, y = 0.5 * x_te[:24], y_te[:24]
    a = _FWA(digits_model, x, y)
    scaled = FWA(eps=0.05, steps=10, bounds=(0, 2))(
        lambda t: digits_model(t / 2.0, training=False), 2 * x, y
    )
    np.testing.assert_allclose(scaled / 2, a, atol=1e-6)
    shifted = FWA(eps=0.05, steps=10, bounds=(-1, 1))(
        lambda t: digits_model((t + 1.0) / 2.0, training=False), 2 * x - 1, y
    )
    assert shifted.min() >= -1 and shifted.max() <= 1
    free = shifted.reshape(len(x), -1).max(1) < 1 - 1e-6
    assert free.sum() >= len(x) // 2
    mass = (2 * x + 0.0).reshape(len(x), -1).sum(1)  # 2 x = (2 x - 1) - lo
    np.testing.assert_allclose(
        (shifted + 1).reshape(len(x), -1).sum(1)[free], mass[free], rtol=1e-4
    )
    err = np.abs((shifted + 1) / 2 - a).reshape(len(x), -1).max(1)
    assert np.median(err) <= 1e-4 and np.abs(a - x).max() > 0.05


def test_fwa_threat_label_and_config():
    """The Wasserstein ball is not an Lp ball: ``norm`` is None (the evaluator skips its
    Lp check), no Lp norm is supported; bounds round-trip through the config."""
    atk = FWA(steps=12, bounds=(0, 255))
    assert atk.norm is None and FWA.supported_norms == ()
    assert atk.label == "FWA-12" and FWA().label == "FWA-40"
    assert atk.bounds == (0.0, 255.0) and atk.get_config()["bounds"] == [0.0, 255.0]
    assert FWA.from_config(atk.get_config()).get_config() == atk.get_config()
    assert "bounds" not in FWA().get_config()


def test_fwa_while_and_unrolled_loops_agree(digits_model, digits):
    _, _, x_te, y_te = digits
    x, y = x_te[:16], y_te[:16]
    a = FWA(eps=0.05, steps=2, loop="unrolled")(digits_model, x, y)
    b = FWA(eps=0.05, steps=2, loop="while")(digits_model, x, y)
    np.testing.assert_allclose(a, b, atol=1e-6)
    assert np.abs(a - x).max() > 0.05


# ---------------------------------------------------------------------- MIM
@pytest.mark.parametrize("norm, eps", [("linf", 0.1), ("l2", 1.0)])
def test_mim_stays_in_ball_and_lowers_accuracy(digits_model, digits, norm, eps):
    _, _, x_te, y_te = digits
    x, y = x_te[:128], y_te[:128]
    x_adv = MIM(eps=eps, steps=10, norm=norm)(digits_model, x, y)
    d = (x_adv - x).reshape(len(x), -1)
    size = np.abs(d).max(1) if norm == "linf" else np.linalg.norm(d, axis=1)
    assert size.max() <= eps * (1 + 1e-5) + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(digits_model, x_adv, y) <= _acc(digits_model, x, y) - 0.2


def test_mim_matches_cleverhans(digits_model, digits):
    """Same model, eps 0.1 L-inf, 10 steps of 0.01, decay 1: robustkit's
    accuracy is at most cleverhans 4.0's + 2 points (cleverhans normalises the
    gradient by its mean absolute value, a constant multiple of the L1 norm)."""
    mim_mod = pytest.importorskip("cleverhans.tf2.attacks.momentum_iterative_method")
    _, _, x_te, y_te = digits
    x, y = x_te[:200], y_te[:200]
    x_rk = MIM(eps=0.1, steps=10, step_size=0.01)(digits_model, x, y)
    x_ch = mim_mod.momentum_iterative_method(
        lambda t: digits_model(t, training=False),
        tf.constant(x),
        eps=0.1,
        eps_iter=0.01,
        nb_iter=10,
        norm=np.inf,
        clip_min=0.0,
        clip_max=1.0,
        y=tf.constant(y),
        decay_factor=1.0,
        sanity_checks=False,
    ).numpy()
    acc_rk, acc_ch = _acc(digits_model, x_rk, y), _acc(digits_model, x_ch, y)
    assert acc_ch < _acc(digits_model, x, y) - 0.2  # cleverhans itself attacks
    assert acc_rk <= acc_ch + 0.02, (acc_rk, acc_ch)


# -------------------------------------------------------------------- TI-DIM
def test_tidim_stays_in_ball_and_lowers_accuracy(mnist_model, mnist_small):
    _, _, x_te, y_te = mnist_small
    x, y = x_te[:64], y_te[:64]
    eps = 0.15
    x_adv = TIDIM(eps=eps, steps=10, step_size=0.03, seed=0)(mnist_model, x, y)
    assert np.abs(x_adv - x).max() <= eps + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert _acc(mnist_model, x_adv, y) <= _acc(mnist_model, x, y) - 0.2


def test_tidim_kernel_and_diverse_inputs():
    assert scaled_kernel(15, 3.0, 32, 32) == (15, 3.0)
    assert scaled_kernel(15, 3.0, 28, 28) == (13, pytest.approx(2.6))
    assert scaled_kernel(15, 3.0, 8, 8) == (3, pytest.approx(0.6))
    k = gaussian_kernel(5, 1.0)
    assert k.sum() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(k, k.T)
    np.testing.assert_allclose(k, k[::-1, ::-1])
    assert k[2, 2] == k.max()
    x = tf.random.uniform([6, 28, 28, 1], seed=1)
    np.testing.assert_array_equal(TIDIM(p=0.0)._diverse(x).numpy(), x.numpy())
    out = TIDIM(p=1.0, resize_rate=0.5)._diverse(x).numpy()
    assert out.shape == (6, 28, 28, 1)
    assert not np.allclose(out, x.numpy())
    # smoothing a point gradient spreads it with the scaled kernel's weights
    g = np.zeros((1, 28, 28, 1), "float32")
    g[0, 14, 14, 0] = 1.0
    sm = TIDIM()._smooth(tf.constant(g)).numpy()[0, ..., 0]
    np.testing.assert_allclose(sm[8:21, 8:21], gaussian_kernel(13, 2.6), atol=1e-6)


# -------------------------------------------------------------- arguments
@pytest.mark.parametrize(
    "make, name",
    [
        (lambda: FWA(eps=0), "eps"),
        (lambda: FWA(kernel_size=1), "kernel_size"),
        (lambda: FWA(steps=0), "steps"),
        (lambda: FWA(dual_steps=0), "dual_steps"),
        (lambda: FWA(entropy=-1.0), "entropy"),
        (lambda: FWA(step_size=1.5), "step_size"),
        (lambda: FWA(loop="for"), "loop"),
        (lambda: FWA(bounds=(0,)), "bounds"),
        (lambda: MIM(eps=-0.1), "eps"),
        (lambda: MIM(norm="l1"), "norm"),
        (lambda: MIM(steps=2.5), "steps"),
        (lambda: MIM(decay=-1.0), "decay"),
        (lambda: MIM(step_size=0), "step_size"),
        (lambda: MIM(loop="for"), "loop"),
        (lambda: TIDIM(p=1.5), "p"),
        (lambda: TIDIM(kernel_size=4), "kernel_size"),
        (lambda: TIDIM(sigma=0), "sigma"),
        (lambda: TIDIM(resize_rate=1.5), "resize_rate"),
    ],
)
def test_bad_arguments(make, name):
    with pytest.raises(ValueError, match=f"`{name}`"):
        make()


def test_fwa_rejects_kernel_larger_than_image():
    x = np.zeros((2, 3, 3, 1), "float32")
    with pytest.raises(ValueError, match="`kernel_size`"):
        FWA(kernel_size=4)(lambda t: tf.zeros([tf.shape(t)[0], 10]), x, np.array([0, 1]))


@pytest.mark.parametrize("cls", [FWA, MIM, TIDIM])
def test_config_round_trip(cls):
    atk = cls(eps=0.2, steps=3)
    again = cls.from_config(atk.get_config())
    assert again.get_config() == atk.get_config()
    assert getattr(rk.attacks, cls.__name__) is cls
