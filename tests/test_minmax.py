"""MinMax and penalty MINE attacks (Hsu et al., AAAI 2022)."""

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.mine import (
    MinMax,
    PenaltyMINE,
    supervised_criterion,
    unsupervised_criterion,
)

SMALL = dict(hidden=8, filters=4, mine_lr=1e-4)


def _correct(model, x, y, n):
    pred = np.argmax(model.predict(x, verbose=0), axis=1)
    keep = np.flatnonzero(pred == y)[:n]
    return x[keep], y[keep]


def test_supervised_minmax_fools_the_model_inside_the_box(digits, digits_model):
    _, _, x, y = digits
    x, y = _correct(digits_model, x, y, 16)
    atk = MinMax(eps=0.3, steps=30, **SMALL)
    out = atk.run(digits_model, x, y)
    x_adv = out["x_adv"]
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-5
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    pred = np.argmax(digits_model.predict(x_adv, verbose=0), axis=1)
    assert np.mean(pred != y) >= 0.9
    # the success flag agrees with the model's prediction on the returned point
    np.testing.assert_array_equal(out["success"], pred != y)
    assert atk.trace_count == 1


def test_penalty_baseline_fools_the_model_inside_the_box(digits, digits_model):
    _, _, x, y = digits
    x, y = _correct(digits_model, x, y, 16)
    atk = PenaltyMINE(eps=0.3, steps=8, rounds=2, c0=10.0, **SMALL)
    x_adv = atk(digits_model, x, y)
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-5
    pred = np.argmax(digits_model.predict(x_adv, verbose=0), axis=1)
    assert np.mean(pred != y) >= 0.9


def test_unsupervised_minmax_keeps_the_reconstruction_loss(digits):
    x_tr, _, x, _ = digits
    keras.utils.set_random_seed(0)
    ae = rk.models.conv_autoencoder((8, 8, 1), filters=(8, 4), kernel=3)
    ae.fit(x_tr, x_tr, epochs=2, batch_size=64, verbose=0)
    x = x[:16]
    # the code's random start (paper: delta0 = 0, where the UAEs barely move in 20 steps)
    atk = MinMax(eps=0.3, steps=20, criterion="unsupervised", random_start=True, c0=1.0, **SMALL)
    out = atk.run(ae, x)
    x_adv = out["x_adv"]
    assert np.abs(x_adv - x).max() <= 0.3 + 1e-5
    err = lambda inp: np.sum(np.square(x - ae.predict(inp, verbose=0)), axis=(1, 2, 3))
    ok = out["success"]
    np.testing.assert_array_equal(ok, err(x_adv) <= err(x) + 1e-4)
    assert ok.mean() >= 0.25
    # f = 0 for every success: reconstruction of x from x_adv no worse than from x
    assert np.all(err(x_adv)[ok] <= err(x)[ok] + 1e-4)
    # and the UAEs are genuinely perturbed
    assert np.abs(x_adv - x)[ok].max() > 0.05


def test_engine_loop_modes_give_identical_results(digits, digits_model):
    """MinMax and PenaltyMINE run their iterations through the engine: a Python-unrolled
    loop and a chunked tf.while_loop (4 steps per iteration plus a remainder) must do
    exactly the same steps (same t, same dual and critic updates)."""
    _, _, x, y = digits
    x, y = _correct(digits_model, x, y, 6)
    for cls, kw in ((MinMax, {"steps": 6, "c0": 1.0}), (PenaltyMINE, {"steps": 5, "rounds": 2})):
        runs = [
            cls(eps=0.3, loop=loop, seed=0, **kw, **SMALL).run(digits_model, x, y)
            for loop in ("unrolled", "while")
        ]
        for key in ("x_adv", "mi", "success", "f"):
            np.testing.assert_allclose(runs[0][key], runs[1][key], rtol=1e-5, atol=1e-6)


def test_engine_loop_counts_t_from_one():
    """Algorithm 1's t runs 1..T (t = 1 skips the dual update): the attacks' loop on the
    engine hands the body t = 1, 2, ..., in order, in every loop mode (5 steps: one
    while-loop iteration of 4 plus a remainder)."""
    for loop in ("unrolled", "while", "auto"):
        atk = MinMax(steps=5, hidden=4, loop=loop)
        digits_of_t = atk._run(lambda t, s: s * 10.0 + t, tf.constant(0.0), atk.steps)
        assert float(digits_of_t) == 12345.0


def test_criteria_on_hand_computed_values():
    logits = tf.constant([[3.0, 1.0, 2.0], [0.0, 4.0, 1.0]])
    f, ok = supervised_criterion()(None, logits, tf.constant([0, 0]), None)
    np.testing.assert_allclose(f, [1.0, 0.0])
    np.testing.assert_array_equal(ok, [False, True])
    f, ok = supervised_criterion(kappa=0.5, targeted=True)(None, logits, tf.constant([2, 1]), None)
    np.testing.assert_allclose(f, [1.5, 0.0])  # max other 3 - 2 + .5 ; 1 - 4 + .5 < 0
    x = tf.zeros([2, 1, 2, 1])
    clean = tf.fill([2, 1, 2, 1], 0.1)  # error 0.02
    adv = tf.constant([[[[0.3], [0.0]]], [[[0.05], [0.05]]]])  # 0.09 ; 0.005
    f, ok = unsupervised_criterion()(x, adv, None, clean)
    np.testing.assert_allclose(f, [0.07, 0.0], atol=1e-6)
    np.testing.assert_array_equal(ok, [False, True])


def test_tracking_keeps_largest_or_lowest_mi():
    x = tf.zeros([3, 1, 1, 1])
    for maximize, expect in [(True, [2.0, 5.0, 1.0]), (False, [1.0, 5.0, 1.0])]:
        tracker = MinMax(hidden=4).tracker(maximize)  # the engine's Tracker.by_score
        best = tracker.init(x)
        f0 = tf.constant([0.0, 0.0, 0.2])
        best = tracker.update(
            best,
            x + 1,
            tf.constant([True, True, False]),
            tf.constant([1.0, 5.0, 1.0]),
            f0,
        )
        best = tracker.update(
            best,
            x + 2,
            tf.constant([True, False, False]),
            tf.constant([2.0, 9.0, 1.0]),
            tf.constant([0.0, 0.3, 0.1]),
        )
        np.testing.assert_allclose(best.score, expect)
        np.testing.assert_array_equal(best.ok, [True, True, False])
        # a failed iterate never replaces a success; among failures the lower f wins
        assert float(best.x[1, 0, 0, 0]) == 1.0 and float(best.x[2, 0, 0, 0]) == 2.0


@pytest.mark.parametrize(
    "kwargs, name",
    [
        ({"eps": 0}, "eps"),
        ({"steps": 0}, "steps"),
        ({"alpha": -1}, "alpha"),
        ({"beta": 0}, "beta"),
        ({"c0": -1}, "c0"),
        ({"criterion": "ssim"}, "criterion"),
        ({"criterion": "unsupervised", "targeted": True}, "targeted"),
        ({"mine_lr": 0}, "mine_lr"),
    ],
)
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        MinMax(**kwargs)


def test_bad_inputs(digits_model):
    atk = MinMax(steps=1, hidden=4)
    x = np.zeros((2, 8, 8, 1), "float32")
    with pytest.raises(ValueError, match="y"):
        atk(digits_model, x, np.array([0, 11]))
    with pytest.raises(ValueError, match="x"):
        atk(digits_model, x + 3.0, np.array([0, 1]))
    with pytest.raises(ValueError, match="autoencoder"):
        MinMax(steps=1, hidden=4, criterion="unsupervised")(digits_model, x)
    with pytest.raises(ValueError, match="rounds"):
        PenaltyMINE(rounds=0)


def test_config_round_trip():
    atk = MinMax(eps=0.2, steps=7, c0=1e-3, criterion="unsupervised", hidden=32)
    clone = MinMax.from_config(atk.get_config())
    assert clone.get_config() == atk.get_config()
    pen = PenaltyMINE(rounds=4, critic_steps=2)
    assert PenaltyMINE.from_config(pen.get_config()).get_config() == pen.get_config()


def test_cli_parses_the_mine_subcommands():
    from robustkit.cli import build_parser

    args = build_parser().parse_args(
        ["attack", "minmax", "some/export", "--n", "4", "--steps", "5"]
    )
    assert (args.name, args.path, args.n, args.steps) == ("minmax", "some/export", 4, 5)
    args = build_parser().parse_args(["uae", "--autoencoder", "conv", "--dataset", "mnist"])
    assert (args.autoencoder, args.dataset) == ("conv", "mnist")


@pytest.mark.slow
def test_cli_attack_minmax_on_an_export(digits_model, tmp_path):
    from robustkit.cli import main
    from robustkit.export import export

    path = str(tmp_path / "digits_cnn")
    export(digits_model, path, metadata={"dataset": "digits"})
    png = str(tmp_path / "grid.png")
    code = main(
        [
            "attack",
            "minmax",
            path,
            "--n",
            "4",
            "--steps",
            "30",
            "--eps",
            "0.3",
            "--projections",
            "20",
            "--out",
            png,
        ]
    )
    assert code == 0
    with open(png, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    assert main(["attack", "minmax", str(tmp_path / "missing")]) == 2
