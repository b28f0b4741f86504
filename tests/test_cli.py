"""The ``robustkit`` command line: train -> export -> evaluate, and bad input (exit 2)."""

import io
import os
import re
from contextlib import redirect_stdout

import numpy as np
import pytest

import robustkit as rk
from robustkit import cli
from robustkit.app import config as app_config
from robustkit.cli.train import check_train_args


def run_cli(argv, capsys):
    """Runs ``robustkit argv`` in-process: (exit code, stdout, stderr)."""
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse errors
        code = e.code
    out, err = capsys.readouterr()
    return code, out, err


def _accuracies(text):
    clean = float(re.search(r"Clean accuracy: ([\d.]+) %", text).group(1))
    robust = float(re.search(r"[Rr]obust accuracy under PGD-40[^:]*: ([\d.]+) %", text).group(1))
    return clean, robust


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``robustkit train --epochs 1 --out DIR`` on the embedded digits."""
    out = str(tmp_path_factory.mktemp("cli") / "digits_model")
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = cli.main(["train", "--epochs", "1", "--out", out, "--quiet"])
    return code, buf.getvalue(), out


def test_train_end_to_end_writes_loadable_export(trained):
    code, text, out = trained
    assert code == 0
    assert f"Exported to {os.path.abspath(out)}" in text
    clean, robust = _accuracies(text)
    assert 30.0 < clean <= 100.0 and 0.0 <= robust <= clean  # one epoch learns something
    loaded, meta = rk.load(out)
    assert meta.dataset == "digits" and meta.training.defense == "standard"
    assert (meta.threat.norm, meta.threat.eps) == ("linf", 0.1)
    assert meta.headline.n_examples == 359 and meta.headline.attack.startswith("PGD-40")
    hp = meta.training.hyperparameters
    assert hp["epochs"] == 1 and hp["train_steps"] == 10
    assert round(100 * meta.clean_accuracy, 1) == clean
    assert round(100 * meta.robust_accuracy, 1) == robust
    assert meta.data.train_examples == 1438 and meta.data.test_examples == 359
    assert "load_digits" in meta.data.source
    x, y = rk.data.load("digits", "test")
    assert loaded.serve(x[:3]).shape == (3, 10)


def test_evaluate_prints_accuracies(trained, capsys):
    _, text, out = trained
    code, printed, _ = run_cli(["evaluate", out], capsys)
    assert code == 0
    clean, robust = _accuracies(printed)
    train_clean, train_robust = _accuracies(text)
    assert clean == train_clean  # same model, same data: identical clean accuracy
    assert abs(robust - train_robust) <= 3.0  # PGD-40 with a fresh random start
    code, printed, _ = run_cli(["evaluate", out, "--n", "50", "--attack", "fgsm"], capsys)
    assert code == 0 and "50 examples" in printed and "FGSM" in printed


def test_out_never_replaces_a_foreign_folder(capsys, tmp_path):
    # an existing non-robustkit folder is never replaced: exit 2 before training
    other = tmp_path / "precious"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    code, out, err = run_cli(["train", "--out", str(other)], capsys)
    assert code == 2 and "--out" in err and "not a robustkit SavedModel" in err
    assert (other / "notes.txt").read_text() == "keep me" and out == ""


@pytest.mark.parametrize(
    "argv,argument",
    [
        (["train", "--dataset", "no_such_data"], "--dataset"),
        (["train", "--defense", "no_such_defense"], "--defense"),
        (["train", "--norm", "l3"], "--norm"),
        (["train", "--eps", "0"], "--eps"),
        (["train", "--eps", "-0.1"], "--eps"),
        (["train", "--model", "resnet1000"], "--model"),
        (["train", "--model", "wide_resnet", "--depth", "33"], "--depth"),
        (["train", "--eval-attack", "cw"], "--eval-attack"),
        (["train", "--defense", "standard", "--beta", "3"], "--beta"),
        (["evaluate", "/no/such/export", "--attack", "pgd0"], "PATH"),
        (["evaluate", "/no/such/export"], "PATH"),
        (["evaluate", "/no/such/export", "--eps", "0"], "--eps"),
    ],
)
def test_bad_input_exits_2_naming_the_argument(argv, argument, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(argv, capsys)
    assert code == 2
    assert f"argument {argument}" in err
    assert "Exported" not in out and not os.path.exists(tmp_path / "saved_models")


def test_python_dash_m_exits_2_on_a_subcommand_usage_error(tmp_path):
    """``python -m robustkit.cli``: a usage error raised inside a subcommand module
    (which imports ``robustkit.cli``) is still reported as exit 2, not a traceback."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "robustkit.cli", "attack", "minmax", str(tmp_path / "none")],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        timeout=300,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "argument PATH" in proc.stderr and "Traceback" not in proc.stderr


def test_evaluate_rejects_a_plain_savedmodel(tmp_path, capsys):
    plain = tmp_path / "plain"
    plain.mkdir()
    (plain / "saved_model.pb").write_bytes(b"")
    code, _, err = run_cli(["evaluate", str(plain)], capsys)
    assert code == 2 and "argument PATH" in err and "is not a robustkit SavedModel" in err
    # the refusal names the flags that make a plain SavedModel evaluable
    assert "--norm, --eps and --dataset" in err


def test_defense_choices_come_from_the_registry(monkeypatch):
    monkeypatch.setitem(rk.objectives.REGISTRY, "my_defense", rk.objectives.AT)
    args = cli.build_parser().parse_args(["train", "--defense", "my_defense"])
    assert args.defense == "my_defense"
    plan = check_train_args(args)
    assert isinstance(plan.objective, rk.objectives.AT)
    assert plan.out == os.path.join("saved_models", "digits_my_defense_linf")


def test_defaults_of_the_main_job():
    plan = check_train_args(cli.build_parser().parse_args(["train"]))
    c = plan.config
    assert (c.dataset, c.model, c.defense, c.norm) == ("digits", "small_cnn", "standard", "linf")
    assert c.eps == 0.1 and c.steps == 10 and c.warmup_epochs >= 1 and c.seed == 0
    assert plan.out == os.path.join("saved_models", "digits_at_linf")
    assert plan.eval_attack.steps == 40 and plan.eval_attack.step_size == pytest.approx(0.025)


def test_python_dash_m_robustkit(tmp_path):
    """``python -m robustkit`` is the ``robustkit`` command."""
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "robustkit", "train", "--eps", "0"],
        capture_output=True,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
        cwd=tmp_path,
        timeout=300,
    )
    assert proc.returncode == 2 and "argument --eps" in proc.stderr


def test_app_config_errors_name_the_setting():
    """The application layer checks settings before any work, naming the CLI flag."""
    from robustkit.app import ConfigError, TrainConfig

    for kwargs, flag in [
        ({"eps": 0}, "--eps"),
        ({"epochs": 0}, "--epochs"),
        ({"warmup_epochs": 5, "epochs": 2}, "--warmup-epochs"),
        ({"norm": "l0"}, "--norm"),
        ({"eval_attack": "cw"}, "--eval-attack"),
        ({"defense": "wmim", "beta": 2.0}, "--beta"),
        ({"model": "nope"}, "--model"),
    ]:
        with pytest.raises(ConfigError, match=f"argument {flag}"):
            TrainConfig(**kwargs).resolve()


def test_console_script_entry_point():
    # pyproject.toml declares `robustkit = "robustkit.cli:main"`; main returns the
    # exit code that the console-script wrapper passes to sys.exit.
    from importlib.metadata import entry_points

    scripts = {ep.name: ep.value for ep in entry_points(group="console_scripts")}
    assert scripts.get("robustkit") == "robustkit.cli:main"


class _SwapClasses:
    """An 'attack' that claims an L-inf ball of 0.1 but returns an image of another class,
    far outside the ball: not an adversarial example, so it must count as robust."""

    norm, eps, step_size, label = "linf", 0.1, 0.025, "Swap"

    def __init__(self):
        x, y = rk.data.load("digits", "train")
        self.images = x[[int(np.flatnonzero(y == c)[0]) for c in range(10)]]

    def __call__(self, model, x, y):
        return self.images[(np.asarray(y) + 1) % 10]


def test_train_counts_outputs_outside_the_ball_as_robust(tmp_path, monkeypatch):
    """`robustkit train` prints and records the one evaluator's numbers."""
    swap = _SwapClasses()
    monkeypatch.setattr(app_config, "parse_attack", lambda *args, **kwargs: swap)
    out = str(tmp_path / "swap")
    buf = io.StringIO()
    with redirect_stdout(buf):
        argv = ["train", "--epochs", "1", "--train-size", "400", "--test-size", "100"]
        code = cli.main([*argv, "--steps", "2", "--out", out, "--quiet"])
    assert code == 0
    _, meta = rk.load(out)
    assert meta.robust_accuracy == meta.clean_accuracy > 0.3
    assert 0 < meta.headline.outside_ball <= 100
    assert f"({meta.headline.outside_ball} attack outputs outside the eps-ball" in buf.getvalue()
