"""The recipes: one per Table-1 cell with the paper's settings, a smoke run end to end, and
Tiny-ImageNet failing fast where it is not on the machine."""

import os
import re
import subprocess
import sys

import pytest

import robustkit as rk

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RECIPES = os.path.join(REPO, "recipes")
DEFENSES = ("standard", "wmim", "namid", "trades", "namid_t", "mart", "namid_m")

sys.path.insert(0, RECIPES)
import _common  # noqa: E402


def run_recipe(name, *argv, cwd):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONPATH": REPO}
    return subprocess.run(
        [sys.executable, os.path.join(RECIPES, f"{name}.py"), *map(str, argv)],
        capture_output=True, text=True, env=env, cwd=cwd, timeout=1500,
    )  # fmt: skip


def test_one_recipe_per_table1_cell_and_the_others():
    for dataset in ("cifar10", "tiny_imagenet"):
        for defense in DEFENSES:
            for norm in ("linf", "l2"):
                path = os.path.join(RECIPES, f"{dataset}_{defense}_{norm}.py")
                with open(path, encoding="utf-8") as f:
                    text = f.read()
                call = re.findall(r"_common\.table1\(([^)]*)\)", text)
                assert call == [f'"{dataset}", "{defense}", "{norm}"'], path
    for name in ("cifar10_blackbox", "mnist_minmax", "mnist_at_linf") + tuple(
        f"mnist_uae_{k}" for k in ("dense", "sparse", "conv", "adversarial")
    ):
        assert os.path.isfile(os.path.join(RECIPES, f"{name}.py")), name


def test_table1_settings_are_the_papers():
    s = _common.table1_settings("cifar10", "trades", "linf")
    assert (s["model"], s["optimizer"], s["lr"], s["weight_decay"]) == (
        "resnet18",
        "sgd",
        0.1,
        2e-4,
    )
    assert (s["epochs"], s["lr_schedule"], s["batch_size"], s["steps"]) == (
        100, "piecewise:75,90", 128, 10)  # fmt: skip
    assert s["eps"] == pytest.approx(8 / 255) and s["beta"] == 6.0 and s["warmup_epochs"] == 0
    assert s["eval_attack"] == "pgd40" and s["augment"] is True and s["val_size"] >= 500
    mart = _common.table1_settings("tiny_imagenet", "mart", "l2")
    assert (mart["lr"], mart["weight_decay"], mart["beta"], mart["eps"]) == (0.01, 3.5e-3, 5.0, 0.5)
    namid = _common.table1_settings("cifar10", "namid", "l2")
    assert (namid["estimator_epochs"], namid["estimator_features"]) == (25, 2048)
    assert namid["lr"] == 0.1 and "beta" not in namid
    smoke = _common.table1_settings("cifar10", "namid", "linf", smoke=True)
    assert smoke["epochs"] == 1 and smoke["train_size"] <= 500 and smoke["width"] <= 16
    # every full-run setting is a TrainConfig field
    from robustkit.app import TrainConfig

    assert set(s) | set(smoke) <= set(TrainConfig.__dataclass_fields__)


def test_tiny_imagenet_fails_fast_naming_the_folder(tmp_path):
    out = tmp_path / "out"
    run = run_recipe("tiny_imagenet_standard_linf", "--smoke", "--data-dir", tmp_path,
                     "--out", out, cwd=tmp_path)  # fmt: skip
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"{tmp_path / 'tiny-imagenet-200'}" in run.stderr and "Tiny-ImageNet" in run.stderr
    assert not out.exists() and "Traceback" not in run.stderr


def test_full_run_without_the_standard_data_stops_before_work(tmp_path, data_dir):
    if _common.standard_available("cifar10"):
        pytest.skip("the standard CIFAR-10 release is on this machine")
    run = run_recipe("cifar10_standard_linf", "--out", tmp_path / "full", cwd=tmp_path)
    assert run.returncode == 2 and "--download" in run.stderr and "--smoke" in run.stderr
    assert not (tmp_path / "full").exists()


def test_smoke_recipe_end_to_end(tmp_path, data_dir):
    """``python recipes/cifar10_trades_l2.py --smoke --out DIR``: trains, measures, exports."""
    out = tmp_path / "trades_l2"
    run = run_recipe("cifar10_trades_l2", "--smoke", "--out", out, "--quiet", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    if not _common.standard_available("cifar10"):
        assert "offline" in run.stdout and "not comparable" in run.stdout  # says so
    loaded, record = rk.load(str(out))
    assert record.training.defense == "trades" and record.training.hyperparameters["beta"] == 6.0
    assert (record.threat.norm, record.threat.eps) == ("l2", 0.5)
    hp = record.training.hyperparameters
    assert (hp["model"], hp["optimizer"], hp["learning_rate"], hp["weight_decay"]) == (
        "resnet18", "sgd", 0.1, 2e-4)  # fmt: skip
    assert hp["epochs"] == 1 and hp["train_examples"] <= 256
    m = record.headline
    assert m.attack.startswith("PGD-40 (l2, eps=0.5") and m.n_examples == 100
    assert 0.0 <= m.robust_accuracy <= m.clean_accuracy
    assert f"-> {out}" in run.stdout
    assert "smoke run: the figures above check that the recipe runs; they are not results" in (
        run.stdout
    )
    x, _ = rk.data.load(record.dataset, "test", data_dir=data_dir)
    assert loaded.serve(x[:2]).shape == (2, 10)
    assert os.path.isfile(out / "MODEL_CARD.md")
