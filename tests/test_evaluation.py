"""robustkit.evaluate, Report, gradient-masking checks and plots."""

import json
import os
import re

import keras
import numpy as np
import pytest
import tensorflow as tf

import robustkit as rk
from robustkit.evaluation import Report, masking, suites


# ------------------------------------------------------------------ helpers
@tf.custom_gradient
def _quantise(x):
    """17-level quantisation (the digits' own grid, so clean inputs are unchanged)
    with a zero gradient: a deliberately masked, non-differentiable layer."""
    return tf.round(x * 16.0) / 16.0, lambda dy: tf.zeros_like(dy)


class Quantise(keras.layers.Layer):
    def call(self, x):
        return _quantise(x)


class InputNoise(keras.layers.Layer):
    """Random noise at inference: outputs change from call to call."""

    def call(self, x):
        return tf.clip_by_value(x + tf.random.normal(tf.shape(x), stddev=0.1), 0.0, 1.0)


def _wrap(layer, model):
    inputs = keras.Input((8, 8, 1))
    return keras.Model(inputs, model(layer(inputs)))


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


class Replace:
    """A deterministic 'attack' that replaces the images of some classes by one image
    of class 9, so which examples it fools is known exactly."""

    def __init__(self, classes, image):
        self.classes, self.image, self.name = set(classes), image, f"replace{sorted(classes)}"

    def __call__(self, model, x, y):
        x = np.array(x)
        x[np.isin(y, list(self.classes))] = self.image
        return x


@pytest.fixture(scope="module")
def test_set(digits):
    return digits[2], digits[3]


@pytest.fixture(scope="module")
def nine(digits_model, test_set):
    """An image the model classifies as 9."""
    x, y = test_set
    pred = np.argmax(digits_model.predict(x, verbose=0), -1)
    return x[np.flatnonzero((y == 9) & (pred == 9))[0]]


# ----------------------------------------------------------- evaluate core
def test_worst_case_is_per_example_and_over_the_suite(digits_model, test_set, nine):
    x, y = test_set
    a, b = Replace(range(0, 5), nine), Replace(range(5, 9), nine)
    report = rk.evaluate(digits_model, (x, y), suite=[a, b], eps=0.1, checks=False)
    correct = np.argmax(digits_model.predict(x, verbose=0), -1) == y
    assert report["None"] == pytest.approx(correct.mean())
    assert report[a.name] == pytest.approx(np.mean(correct & (y >= 5)))
    assert report[b.name] == pytest.approx(np.mean(correct & ((y < 5) | (y == 9))))
    # robust under the suite only if it survives both: the class-9 examples
    assert report["worst_case"] == pytest.approx(np.mean(correct & (y == 9)))
    assert report.worst_case < min(report[a.name], report[b.name])
    rows = {r["attack"]: r for r in report.rows}
    assert rows[a.name]["examples"] == int(correct.sum())
    assert rows[a.name]["seconds"] >= 0
    with pytest.raises(KeyError):
        report["AA"]


def test_pgd_lowers_accuracy_and_tf_data_equals_numpy(digits_model, test_set):
    x, y = test_set
    fgsm = rk.attacks.FGSM(eps=0.1)  # deterministic
    r1 = rk.evaluate(digits_model, (x, y), suite=[fgsm], checks=False, n=200)
    ds = tf.data.Dataset.from_tensor_slices((x, y)).batch(64)
    r2 = rk.evaluate(digits_model, ds, suite={"FGSM": fgsm}, checks=False, n=200)
    assert r1.n == r2.n == 200
    assert r1["FGSM"] == r2["FGSM"]
    assert r1["FGSM"] < r1["None"] - 0.1
    assert r1.eps == pytest.approx(0.1)  # the attacks' common eps


def test_outputs_outside_the_ball_count_as_robust(digits_model, test_set, nine):
    x, y = test_set

    class Cheat(Replace):
        norm, eps = "linf", 0.1  # claims a ball it does not respect

    report = rk.evaluate(digits_model, (x, y), suite=[Cheat(range(9), nine)], checks=False)
    res = report.attacks[0]
    assert res.outside_ball > 0
    assert report[res.name] == report["None"]  # nothing counted as fooled


class Cheat(Replace):
    """Replaces classes 0-8 by a 9 but claims an L-inf ball of 0.1 it does not respect."""

    norm, eps, step_size = "linf", 0.1, 0.025


def test_outside_the_ball_counts_as_robust_by_every_path(digits_model, test_set, nine, tmp_path):
    """The one evaluator behind measure, evaluate, the callbacks and the CLI: outputs outside
    the attack's ball are not adversarial examples."""
    from robustkit import cli

    x, y = test_set
    cheat = Cheat(range(9), nine)
    correct = np.argmax(digits_model.predict(x, verbose=0), -1) == y
    clean, outside = float(correct.mean()), int((correct & (y < 9)).sum())
    # control: the same replacement without a ball claim fools every replaced example
    plain = rk.evaluation.measure(digits_model, (x, y), Replace(range(9), nine))
    assert plain.robust_accuracy == pytest.approx(np.mean(correct & (y == 9)))
    # 1. measure
    found = rk.evaluation.measure(digits_model, (x, y), cheat)
    assert found.clean_accuracy == pytest.approx(clean)
    assert found.robust_accuracy == pytest.approx(clean) and found.outside_ball == outside
    # 2. the report
    report = rk.evaluate(digits_model, (x, y), suite=[cheat], checks=False)
    assert report[cheat.name] == report["None"] and report.attacks[0].outside_ball == outside
    # 3. the callbacks' function
    assert rk.callbacks.clean_and_robust_accuracy(digits_model, x, y, cheat) == (
        pytest.approx(clean),
        pytest.approx(clean),
    )
    # 4. RobustEvaluation and BestRobustCheckpoint on a RobustModel
    wrapper = rk.RobustModel(digits_model, attack=rk.attacks.PGD(eps=0.1, steps=2))
    evaluation = rk.callbacks.RobustEvaluation((x, y), attack=cheat, max_examples=None)
    best = rk.callbacks.BestRobustCheckpoint(data=(x, y), attack=cheat, max_examples=None)
    for cb in (evaluation, best):
        cb.set_model(wrapper)
        cb.params = {"epochs": 1}
        cb.on_train_begin()
    logs = {}
    with pytest.warns(UserWarning, match="outside its eps-ball"):
        evaluation.on_epoch_end(0, logs)
    assert logs["val_robust_accuracy"] == logs["val_clean_accuracy"] == pytest.approx(clean)
    assert evaluation.last.outside_ball == outside
    logs = {}
    with pytest.warns(UserWarning, match="outside its eps-ball"):
        best.on_epoch_end(0, logs)
    assert logs["val_robust_score"] == pytest.approx(clean)
    # 5. `robustkit evaluate` on an export (the CLI's attack replaced by the cheat)
    path = str(tmp_path / "export")
    rk.export(
        digits_model,
        path,
        metadata={"dataset": "digits", "threat_model": {"norm": "linf", "eps": 0.1}},
    )
    monkeypatch = pytest.MonkeyPatch()
    from robustkit.app import evaluate as app_evaluate

    monkeypatch.setattr(app_evaluate, "parse_attack", lambda *args, **kwargs: cheat)
    try:
        import contextlib
        import io

        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            assert cli.main(["evaluate", path]) == 0
    finally:
        monkeypatch.undo()
    text = buf.getvalue()
    printed_clean = float(re.search(r"Clean accuracy: ([\d.]+) %", text).group(1))
    printed_robust = float(re.search(r"Robust accuracy under [^:]*: ([\d.]+) %", text).group(1))
    assert printed_robust == printed_clean == round(100 * clean, 1)
    assert f"({outside} attack outputs outside the eps-ball counted robust)" in text


def test_measure_is_the_number_of_every_path(digits_model, test_set):
    x, y = test_set
    fgsm = rk.attacks.FGSM(eps=0.1)  # deterministic
    found = rk.evaluation.measure(digits_model, (x, y), fgsm, n=200)
    report = rk.evaluate(digits_model, (x, y), suite=[fgsm], checks=False, n=200)
    pair = rk.callbacks.clean_and_robust_accuracy(digits_model, x[:200], y[:200], fgsm)
    assert found.robust_accuracy == report["FGSM"] == pair[1] < found.clean_accuracy - 0.1
    assert found.clean_accuracy == report["None"] == pair[0]
    # robust means correct clean and still correct: computed by hand
    pred_clean = np.argmax(digits_model.predict(x[:200], verbose=0), -1)
    x_adv = fgsm(digits_model, x[:200], y[:200])
    pred_adv = np.argmax(digits_model.predict(x_adv, verbose=0), -1)
    expected = np.mean((pred_clean == y[:200]) & (pred_adv == y[:200]))
    assert found.robust_accuracy == pytest.approx(expected)
    with pytest.raises(ValueError, match="batch_size"):
        rk.evaluation.measure(digits_model, (x, y), fgsm, batch_size=0)
    with pytest.raises(ValueError, match="not an attack"):
        rk.evaluation.measure(digits_model, (x, y), {"x": 3})


def test_l1_attack_list_end_to_end(digits_model, test_set):
    """An L1 threat model through evaluate, the report, the checks and the curve."""
    x, y = test_set
    pgd = rk.attacks.PGD(eps=2.0, norm="l1", steps=20, seed=0)
    report = rk.evaluate(digits_model, (x, y), suite=[pgd], n=100, checks=["large_eps"])
    assert report.norm == "l1" and report.eps == pytest.approx(2.0)  # from the attack
    assert report["PGD-20"] < report["None"] - 0.1
    assert report.attacks[0].outside_ball == 0
    md = report.to_markdown()
    assert "L1 eps = 2" in md
    assert report.group_label() == "L1"
    large = {c.name: c for c in report.checks}["large eps reaches ~0 %"]
    assert large.values["eps"] == 64.0  # the L1 radius that covers the 8x8 box
    x_adv = pgd(digits_model, x[:50], y[:50])
    assert np.abs(x_adv - x[:50]).reshape(50, -1).sum(1).max() <= 2.0 + 1e-4
    curve = rk.evaluation.robustness_curve(digits_model, (x, y), [0.0, 1.0, 4.0], norm="l1", n=60)
    assert curve["accuracy"][2] < curve["accuracy"][0] and curve["norm"] == "l1"
    # a claimed L1 ball is checked with the L1 norm
    cheat = Cheat(range(9), x[0])
    cheat.norm, cheat.eps = "l1", 2.0
    found = rk.evaluation.measure(digits_model, (x, y), cheat, n=100)
    assert found.robust_accuracy == found.clean_accuracy and found.outside_ball > 0


def test_robust_model_and_callable_inputs(digits_model, test_set):
    x, y = test_set
    fgsm = rk.attacks.FGSM(eps=0.1)
    wrapper = rk.RobustModel(digits_model, rk.objectives.AT(), rk.attacks.PGD(eps=0.1, steps=2))
    r_keras = rk.evaluate(digits_model, (x, y), suite=[fgsm], checks=False, n=100)
    r_wrap = rk.evaluate(wrapper, (x, y), suite=[fgsm], checks=False, n=100)
    r_fn = rk.evaluate(
        lambda t: digits_model(t, training=False), (x, y), suite=[fgsm], checks=False, n=100
    )
    assert r_keras["FGSM"] == r_wrap["FGSM"] == r_fn["FGSM"]


def test_export_path_uses_its_metadata(digits_model, test_set, tmp_path):
    x, y = test_set
    path = str(tmp_path / "digits_export")
    rk.export(
        digits_model,
        path,
        metadata={"dataset": "digits", "threat_model": {"norm": "linf", "eps": 0.05}},
    )
    report = rk.evaluate(
        path, (x, y), suite=[rk.attacks.FGSM(eps=0.05)], checks=["gradients"], n=50
    )
    assert report.name == "digits_export" and report.dataset == "digits"
    assert report.eps == pytest.approx(0.05)
    assert report["None"] == pytest.approx(_accuracy(digits_model, x[:50], y[:50]))
    assert not report.flags  # the reloaded SavedModel has real input gradients


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"suite": "linf2"}, "suite"),
        ({"suite": []}, "suite"),
        ({"suite": "blackbox"}, "surrogate"),
        ({"eps": 0.0}, "eps"),
        ({"n": 0}, "`n`"),
        ({"batch_size": 2.5}, "batch_size"),
        ({"checks": ["gradient"]}, "checks"),
    ],
)
def test_bad_arguments(digits_model, test_set, kwargs, match):
    with pytest.raises(ValueError, match=match):
        rk.evaluate(digits_model, test_set, **kwargs)


def test_bad_data_and_paths(digits_model, test_set, tmp_path):
    x, y = test_set
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        rk.evaluate(digits_model, (x * 255, y), suite=[rk.attacks.FGSM(eps=0.1)])
    with pytest.raises(ValueError, match="label"):
        rk.evaluate(digits_model, (x, y + 10), suite=[rk.attacks.FGSM(eps=0.1)])
    with pytest.raises(ValueError, match="data"):
        rk.evaluate(digits_model, x, suite=[rk.attacks.FGSM(eps=0.1)])
    with pytest.raises(ValueError, match="model_or_path"):
        rk.evaluate(str(tmp_path), (x, y))  # a folder, not a robustkit SavedModel
    with pytest.raises(ValueError, match="model_or_path"):
        rk.evaluate(42, (x, y))


# ------------------------------------------------------------------ reports
def _report(name, norm, cols, accs, clean=0.9, checks=None):
    attacks = [
        rk.evaluation.AttackResult(c, a, examples=90, seconds=1.25) for c, a in zip(cols, accs)
    ]
    return Report(
        name,
        100,
        clean,
        attacks,
        worst_case=min(accs),
        norm=norm,
        eps=8 / 255 if norm == "linf" else 0.5,
        suite=norm,
        checks=checks,
    )


def test_report_markdown_table_and_json_round_trip(tmp_path):
    flag = rk.evaluation.Check("deterministic outputs", True, "differs")
    linf = _report(
        "NAMID",
        "linf",
        ["PGD-40", "AA", "FWA-40", "TI-DIM"],
        [0.4479, 0.3926, 0.1567, 0.5823],
        clean=0.8341,
        checks=[flag],
    )
    l2 = _report(
        "NAMID", "l2", ["PGD-40", "CW", "DDN"], [0.6238, 0.3448, 0.3241], clean=0.8435, checks=[]
    )
    std = [
        _report(
            "Standard",
            "linf",
            ["PGD-40", "AA", "FWA-40", "TI-DIM"],
            [0.4238, 0.3901, 0.1544, 0.5563],
            clean=0.8339,
        ),
        _report("Standard", "l2", ["PGD-40", "CW", "DDN"], [0.6169, 0.3096, 0.2934], clean=0.8397),
    ]
    table = Report.table([std, [linf, l2]], title="CIFAR-10", worst_case=False).splitlines()
    assert table[0] == (
        "| CIFAR-10 | L∞ None | PGD-40 | AA | FWA-40 | TI-DIM | L2 None | PGD-40 | CW | DDN |"
    )
    assert (
        table[2]
        == "| Standard | 83.39 | 42.38 | 39.01 | 15.44 | 55.63 | 83.97 | 61.69 | 30.96 | 29.34 |"
    )
    assert table[3].startswith("| NAMID † | 83.41 | 44.79 |")
    assert "deterministic outputs" in table[-1]
    with pytest.raises(ValueError, match="columns"):
        Report.table([linf, l2])  # different suites in one column group
    md = linf.to_markdown()
    assert "| Defense | None | PGD-40 | AA | FWA-40 | TI-DIM | Worst case |" in md
    assert "[FLAG] deterministic outputs" in md and "8/255" in md
    back = Report.from_json(linf.to_json())
    assert back.to_json() == linf.to_json() and back["TI-DIM"] == 0.5823
    assert back.flags[0].name == "deterministic outputs"
    linf.save(str(tmp_path / "r.json"))
    linf.save(str(tmp_path / "r.md"))
    assert json.loads((tmp_path / "r.json").read_text())["attacks"][1]["name"] == "AA"
    assert (tmp_path / "r.md").read_text().startswith("| Defense |")


# ------------------------------------------------------- gradient masking
def test_check_rules_on_measured_numbers():
    ok = masking.steps_check({"FGSM": 0.5, "PGD-10": 0.3, "PGD-40": 0.29}, m=100)
    bad = masking.steps_check({"FGSM": 0.3, "PGD-10": 0.35, "PGD-40": 0.5}, m=100)
    assert not ok.flagged and bad.flagged and "PGD-40 > FGSM" in bad.message
    assert masking.black_box_check(0.5, {"Transfer": 0.4}, m=100).flagged
    assert not masking.black_box_check(0.5, {"Transfer": 0.49}, m=100).flagged
    assert masking.black_box_check(0.5, {}, m=100).flagged is None  # skipped


def test_checks_do_not_fire_on_an_ordinary_model(digits_at_model, digits_model, test_set):
    checks = rk.evaluation.check_gradient_masking(
        digits_at_model, test_set, eps=0.1, n=100, surrogate=digits_model
    )
    assert [c.name for c in checks] == [
        "more steps not weaker",
        "large eps reaches ~0 %",
        "black-box not stronger",
        "input gradients non-zero and finite",
        "deterministic outputs",
    ]
    assert [c.flagged for c in checks] == [False] * 5, [c.message for c in checks]


def test_checks_fire_on_a_quantised_zero_gradient_model(digits_model, test_set):
    masked = _wrap(Quantise(), digits_model)
    x, y = test_set
    assert _accuracy(masked, x, y) == _accuracy(digits_model, x, y)  # clean inputs unchanged
    transfer = rk.attacks.Transfer(digits_model, rk.attacks.FGSM(eps=0.1))
    report = rk.evaluate(
        masked,
        (x, y),
        suite=[rk.attacks.FGSM(eps=0.1), transfer],
        checks=["large_eps", "black_box", "gradients"],
    )
    fired = {c.name for c in report.flags}
    assert fired == {
        "large eps reaches ~0 %",
        "black-box not stronger",
        "input gradients non-zero and finite",
    }
    # the white-box number looks perfectly robust: exactly what the flags warn about
    assert report["FGSM"] == report["None"]
    assert report["Transfer(FGSM)"] < report["FGSM"] - 0.2
    assert report.attacks[1].black_box and not report.attacks[0].black_box
    assert "gradient-masking" in report.to_markdown().lower()


def test_black_box_of_another_threat_model_is_not_compared(digits_model, test_set):
    x, y = test_set
    far = rk.attacks.Transfer(digits_model, rk.attacks.FGSM(eps=0.3))  # 3x the report's eps
    report = rk.evaluate(
        digits_model,
        (x, y),
        suite=[rk.attacks.FGSM(eps=0.1), far],
        eps=0.1,
        checks=["black_box"],
        n=100,
    )
    assert report["Transfer(FGSM)"] < report["FGSM"]  # stronger, but in a larger ball
    check = report.checks[0]
    assert check.flagged is None and "Transfer(FGSM)" in check.message


def test_stochastic_model_is_flagged_and_eot_averages(digits_model, test_set):
    x, y = test_set
    noisy = _wrap(InputNoise(), digits_model)
    checks = rk.evaluation.check_gradient_masking(
        noisy, (x, y), eps=0.1, n=64, checks=["stochastic"]
    )
    assert checks[0].flagged and "EOT" in checks[0].message
    calm = rk.evaluation.check_gradient_masking(
        digits_model, (x, y), eps=0.1, n=64, checks=["stochastic"]
    )
    assert not calm[0].flagged
    eot = rk.evaluation.EOT(noisy, samples=16)
    spread_one = np.std([noisy(x[:32]).numpy() for _ in range(4)], axis=0).mean()
    spread_eot = np.std([eot(x[:32]).numpy() for _ in range(4)], axis=0).mean()
    assert spread_eot < spread_one / 2  # ~1/4 for 16 samples


# ------------------------------------------------------------------ suites
def test_suites_resolve_attack_classes_by_name(digits_model):
    try:
        built = {
            s: suites.build_suite(s, eps=0.1, surrogate=digits_model)
            for s in ("linf", "l2", "blackbox")
        }
    except ImportError as e:
        pytest.skip(f"a suite attack class has not landed yet: {e}")
    assert list(built["linf"]) == ["PGD-40", "AA", "FWA-40", "TI-DIM"]
    assert list(built["l2"]) == ["PGD-40", "CW", "DDN"]
    for suite in built.values():
        for attack in suite.values():
            assert getattr(attack, "attack", attack).eps == pytest.approx(0.1)
    assert built["linf"]["PGD-40"].steps == 40 and built["l2"]["PGD-40"].norm == "l2"
    assert list(built["blackbox"]) == ["PGD-40", "AA", "FWA-40"]
    for name, attack in built["blackbox"].items():
        assert suites.is_black_box(attack) and type(attack.attack) is type(built["linf"][name])
    assert suites.threat_of(built["blackbox"]["AA"]) == ("linf", pytest.approx(0.1))


@pytest.mark.slow
@pytest.mark.parametrize("suite", ["linf", "l2", "blackbox"])
def test_paper_suite_on_digits(digits_at_model, digits_model, test_set, suite):
    try:
        suites.build_suite(suite, eps=0.1, surrogate=digits_model)
    except ImportError as e:
        pytest.skip(f"a suite attack class has not landed yet: {e}")
    eps = 1.0 if suite == "l2" else 0.1
    report = rk.evaluate(
        digits_at_model, test_set, suite=suite, eps=eps, n=100, surrogate=digits_model
    )
    assert [a.name for a in report.attacks] == list(suites.SUITES[suite])
    assert report.worst_case <= min(a.accuracy for a in report.attacks) <= report["None"]
    assert all(a.outside_ball == 0 for a in report.attacks if a.name != "FWA-40")
    assert not report.flags, report.to_markdown()


# ------------------------------------------------------------------- plots
def test_plots_render(digits_model, test_set, tmp_path):
    pytest.importorskip("matplotlib")
    x, y = test_set
    curve_path = str(tmp_path / "curve.png")
    curves = rk.evaluation.plot_robustness_curve(
        {"undefended": digits_model},
        (x, y),
        [0.0, 0.05, 0.1, 0.3],
        attack="fgsm",
        path=curve_path,
        n=150,
    )
    acc = curves["undefended"]["accuracy"]
    assert acc[0] == pytest.approx(_accuracy(digits_model, x[:150], y[:150]))
    assert acc[-1] < acc[0] - 0.3
    grid_path = str(tmp_path / "grid.png")
    out = rk.evaluation.plot_examples(
        digits_model, x[:6], y[:6], rk.attacks.FGSM(eps=0.2), grid_path
    )
    assert np.abs(out["x_adv"] - x[:6]).max() <= 0.2 + 1e-6
    from matplotlib.image import imread

    for path in (curve_path, grid_path):
        img = imread(path)
        assert img.shape[0] > 200 and img.shape[1] > 300
        assert img[..., :3].std() > 0.05  # not a blank canvas
    assert os.path.getsize(grid_path) > 5000


# --------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def exported(digits_model, tmp_path_factory):
    path = str(tmp_path_factory.mktemp("cli") / "digits_cnn")
    rk.export(
        digits_model,
        path,
        metadata={"dataset": "digits", "threat_model": {"norm": "linf", "eps": 0.1}},
    )
    return path


def test_cli_evaluate_writes_report_and_plot(exported, tmp_path, capsys):
    pytest.importorskip("matplotlib")
    from robustkit import cli

    report, plot = tmp_path / "out" / "report.md", tmp_path / "curve.png"
    code = cli.main(
        [
            "evaluate",
            exported,
            "--attack",
            "fgsm",
            "--n",
            "60",
            "--no-checks",
            "--report",
            str(report),
            "--plot",
            str(plot),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    md = report.read_text()
    assert md.startswith("| Defense | None | FGSM | Worst case |")
    row = md.splitlines()[2].split(" | ")
    assert row[0] == "| digits_cnn" and float(row[2]) < float(row[1])  # FGSM lowers accuracy
    assert "Setting: digits, 60 examples, L∞ eps = 0.1" in md
    assert "Robustness curve" in out and plot.stat().st_size > 5000


def test_cli_evaluate_suite_options_are_checked(exported, capsys):
    from robustkit import cli

    assert cli.main(["evaluate", exported, "--suite", "blackbox"]) == 2
    assert "--surrogate" in capsys.readouterr().err
    assert (
        cli.main(["evaluate", exported, "--suite", "l2", "--surrogate", exported + "_missing"]) == 2
    )
    assert "--surrogate" in capsys.readouterr().err
    assert cli.main(["evaluate", exported, "--attack", "fgsm", "--plot", "curve.jpg"]) == 2
    assert "--plot" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(["evaluate", exported, "--suite", "l1"])
