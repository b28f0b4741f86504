"""Multi-worker training and sharded evaluation (issue #14), on a local cluster: two worker
processes on 127.0.0.1 (free ports chosen at run time), each with its own ``TF_CONFIG``, each
run bounded in time (``run_workers`` kills what is left). The cluster tests are marked slow;
``.ci/run`` runs them (``pytest -m slow tests/test_distributed.py``). The processes run
``tests/dist_worker.py``; one-process references run the same script without ``TF_CONFIG``."""

import json
import os
import subprocess
import sys

import keras
import numpy as np
import pytest

import robustkit as rk
from robustkit.distributed.local import run_workers

WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "dist_worker.py")
#: seconds a cluster run may take (2 workers import TensorFlow, connect and train for ~20 s)
CLUSTER_TIMEOUT = 600


def _result(stdout):
    line = next(row for row in stdout.splitlines() if row.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def _env():
    env = dict(os.environ)
    repo = os.path.dirname(os.path.dirname(WORKER))
    env["PYTHONPATH"] = repo + os.pathsep + env.get("PYTHONPATH", "")
    return env


def _one_process(*args):
    proc = subprocess.run([sys.executable, WORKER, *args], capture_output=True, text=True,
                          timeout=CLUSTER_TIMEOUT, env=_env())  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def _cluster(*args, extra_env=None, expect_ok=True):
    runs = run_workers([sys.executable, WORKER, *args], workers=2, timeout=CLUSTER_TIMEOUT,
                       env=_env(), extra_env=extra_env)  # fmt: skip
    if expect_ok:
        for i, run in enumerate(runs):
            assert run.returncode == 0, f"worker {i}: {run.returncode}\n{run.stderr[-3000:]}"
    return runs


# ------------------------------------------------------------- one process
def test_loop_matches_keras_fit_on_one_device():
    """The strategy-aware loop on the default strategy logs what ``model.fit`` logs."""
    x, y = rk.data.load("digits", "train")
    x, y = x[:256], y[:256]
    logs = []
    for use_fit in (True, False):
        keras.utils.set_random_seed(0)
        model = rk.RobustModel(
            rk.models.small_cnn((8, 8, 1)),
            attack=rk.attacks.PGD(eps=0.1, steps=3, random_start=False),
        )
        model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        if use_fit:
            hist = model.fit(x, y, batch_size=64, epochs=2, shuffle=False, verbose=0)
        else:
            hist = rk.distributed.fit(model, x, y, batch_size=64, epochs=2, shuffle=False)
        logs.append(hist.history)
    assert set(logs[0]) == set(logs[1])
    for key in logs[0]:
        np.testing.assert_allclose(logs[1][key], logs[0][key], rtol=1e-5, err_msg=key)
    assert logs[0]["loss"][1] < logs[0]["loss"][0]


def test_fit_refuses_bad_input_before_work(tmp_path):
    x, y = rk.data.load("digits", "train")
    model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(eps=0.1))
    with pytest.raises(ValueError, match="`model` must be compiled"):
        rk.distributed.fit(model, x, y)
    model.compile(optimizer="adam")
    mirrored = rk.distributed.get_strategy("mirrored")
    with pytest.raises(ValueError, match="strategy.scope"):
        rk.distributed.fit(model, x, y, strategy=mirrored)
    with pytest.raises(ValueError, match="`batch_size`"):
        rk.distributed.fit(model, x, y, batch_size=0)
    with pytest.raises(ValueError, match="BackupAndRestore"):
        rk.distributed.fit(model, x, y, callbacks=[keras.callbacks.BackupAndRestore(str(tmp_path))])
    with pytest.raises(ValueError, match="`x` must be an array"):
        rk.distributed.fit(model, rk.data.make_dataset(x, y, 32), None)
    with pytest.raises(ValueError, match="`strategy` must be one of"):
        rk.distributed.get_strategy("tpu-pod")
    with pytest.raises(ValueError, match="`TF_CONFIG`"):
        rk.distributed.read_tf_config({"TF_CONFIG": '{"cluster": {"worker": []}}'})
    assert not os.listdir(tmp_path)


def test_backup_is_written_by_the_chief_only(tmp_path):
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    worker = rk.distributed.Backup(tmp_path / "backup", chief=False)
    worker.save(model, 0, {"loss": [1.0]})
    assert not worker.exists() and os.listdir(tmp_path) == []  # scratch folder deleted
    chief = rk.distributed.Backup(tmp_path / "backup", chief=True)
    model.optimizer.iterations.assign(7)
    chief.save(model, 4, {"loss": [3.0, 2.0]})
    model.optimizer.iterations.assign(0)
    assert chief.restore(model) == (5, {"loss": [3.0, 2.0]})
    assert int(model.optimizer.iterations.numpy()) == 7
    other = keras.Sequential([keras.Input((3,)), keras.layers.Dense(5), keras.layers.Dense(2)])
    other.compile(optimizer="adam")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(ValueError, match="belongs to another model"):
        chief.restore(other)


@pytest.mark.slow  # a subprocess that trains and attacks: minutes on a shared machine
def test_attacks_measure_and_fit_split_over_mirrored_replicas():
    """Two logical CPU devices (a subprocess: devices are fixed at TensorFlow's start-up):
    a deterministic PGD split over the replicas returns what one call returns (float
    tolerance 1e-5), inside its ball, lowering accuracy; ``measure`` gives the same
    per-example outcomes; AutoAttack runs split and stays in its ball; the loop under
    MirroredStrategy logs what it logs on one device (1e-4)."""
    out = _result(_one_process("mirrored-checks", "none"))
    assert out["pgd_max_diff"] < 1e-5
    assert out["pgd_linf"] <= 0.1 + 1e-6 and out["aa_linf"] <= 0.1 + 1e-6
    assert out["pgd_acc"] < out["clean"] - 0.1 and out["aa_acc"] <= out["pgd_acc"] + 0.02
    assert out["measure_equal"]
    one, two = out["fit"]["default"], out["fit"]["mirrored"]
    assert set(one) == set(two)
    for key in one:
        np.testing.assert_allclose(two[key], one[key], atol=1e-4, err_msg=key)


# ----------------------------------------------------------- local cluster
# Marked slow (minutes: each cluster run starts two TensorFlow processes); .ci/run runs them.
@pytest.mark.slow
def test_two_workers_log_what_one_worker_logs(tmp_path):
    """Same global batch (64 = 2 x 32): loss, accuracies and the RobustEvaluation callback's
    val_clean/val_robust_accuracy equal the one-worker run; BestRobustCheckpoint is written by
    the chief only (worker 1's copy goes to a scratch folder, deleted).

    Tolerance: standard AT (no random start) 1e-4 absolute (float summation order only);
    TRADES 0.02 (its inner attack starts from x + 0.001 N(0, 1), drawn per replica)."""
    defenses = ["standard", "trades"]
    (tmp_path / "one").mkdir()
    (tmp_path / "two").mkdir()
    one = _result(_one_process("train", "none", str(tmp_path / "one"), *defenses))
    runs = _cluster("train", "multiworker", str(tmp_path / "two"), *defenses)
    assert sorted(os.listdir(tmp_path / "two")) == ["best.best.json", "best.weights.h5"]
    assert "val_robust_accuracy" in one["standard"]
    for run in runs:
        two = _result(run.stdout)
        for defense in defenses:
            assert set(two[defense]) == set(one[defense])
            atol = 1e-4 if defense == "standard" else 0.02
            for key in one[defense]:
                np.testing.assert_allclose(two[defense][key], one[defense][key], atol=atol,
                                           err_msg=f"{defense} {key}")  # fmt: skip
        assert one["standard"]["loss"][0] > 1.0  # the global mean, not divided by replicas
        assert two["standard"]["loss"][1] < two["standard"]["loss"][0]


@pytest.mark.slow
def test_killed_worker_resumes_from_the_backup(tmp_path):
    """Worker 1 is killed (SIGKILL) at batch 3 of epoch 1; the chief's collective fails; both
    restart with the same backup folder: they run epochs 1 and 2 only, and the history
    equals an uninterrupted two-worker run (exact resume: weights, Adam moments, the warm-up
    position and the data order; tolerance 1e-5), and the one-worker run up to float
    rounding (loss 1 %, accuracies 4/512: Adam amplifies summation-order differences)."""
    one = _result(_one_process("resume", "none", str(tmp_path / "one")))
    whole = _result(_cluster("resume", "multiworker", str(tmp_path / "whole"))[0].stdout)
    backup = str(tmp_path / "backup")
    crashed = _cluster("resume", "multiworker", backup, extra_env=[{}, {"CRASH": "1"}],
                       expect_ok=False)  # fmt: skip
    assert crashed[1].returncode == -9  # killed mid-epoch
    assert crashed[0].returncode != 0  # the chief saw its peer die
    assert "EPOCH 1" in crashed[1].stdout and "RESULT" not in crashed[0].stdout
    with open(os.path.join(backup, "state.json")) as f:
        assert json.load(f)["epoch"] == 0  # epoch 0 finished and backed up
    resumed = _cluster("resume", "multiworker", backup)
    for run in resumed:
        assert "EPOCH 0" not in run.stdout and "EPOCH 1" in run.stdout
        out = _result(run.stdout)
        assert out["epochs"] == [0, 1, 2]
        for key, values in whole["history"].items():
            np.testing.assert_allclose(out["history"][key], values, atol=1e-5, err_msg=key)
            tol = {"rtol": 0.01} if key in ("loss", "ce", "eps") else {"atol": 4 / 512}
            np.testing.assert_allclose(out["history"][key], one["history"][key], **tol)
    assert not os.path.exists(backup)  # deleted after the finished run


@pytest.fixture(scope="module")
def digits_weights(tmp_path_factory):
    x, y = rk.data.load("digits", "train")
    keras.utils.set_random_seed(0)
    model = rk.models.small_cnn((8, 8, 1))
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x, y, epochs=8, batch_size=64, verbose=0)
    path = str(tmp_path_factory.mktemp("dist") / "digits.weights.h5")
    model.save_weights(path)
    return path


@pytest.mark.slow
def test_sharded_autoattack_equals_one_process(digits_weights):
    """AutoAttack (reduced budget: 20 steps, 3 target classes, 300 Square queries) on 256
    test digits, batches of 96 shared out over two workers: the merged per-example outcomes
    equal a one-process ``measure(..., seed=0)``, on both workers; ``rk.evaluate`` with the
    strategy reports what the one-process sharded path reports."""
    one = _result(_one_process("eval", "none", digits_weights))
    assert np.mean(one["correct"]) > 0.5 and 0 < np.mean(one["robust"]) < np.mean(one["correct"])
    runs = _cluster("eval", "multiworker", digits_weights)
    outs = [_result(run.stdout) for run in runs]
    assert [o["chief"] for o in outs] == [True, False]
    for out in outs:
        assert out["correct"] == one["correct"]
        assert out["robust"] == one["robust"]
        assert out["outside_ball"] == one["outside_ball"]
        assert out["report"] == one["report"]


def test_train_strategy_settings_are_checked_before_work(tmp_path, monkeypatch):
    from robustkit.app import ConfigError, TrainConfig

    out = str(tmp_path / "m")
    monkeypatch.delenv("TF_CONFIG", raising=False)
    with pytest.raises(ConfigError, match="TF_CONFIG") as e:
        TrainConfig(strategy="multiworker", out=out).resolve()
    assert e.value.field == "strategy"
    with pytest.raises(ConfigError) as e:
        TrainConfig(strategy="mirrored", augment=True, out=out).resolve()
    assert e.value.field == "augment"
    with pytest.raises(ConfigError) as e:
        TrainConfig(strategy="ring", out=out).resolve()
    assert e.value.field == "strategy"
    assert not os.listdir(tmp_path)


@pytest.mark.slow
def test_cli_train_multiworker_chief_exports(tmp_path):
    """``robustkit train --strategy multiworker`` on two workers: the chief exports (the
    export reloads with the recorded accuracy), the other worker leaves nothing behind."""
    out = str(tmp_path / "digits_mw")
    argv = [sys.executable, "-m", "robustkit.cli", "train", "--strategy", "multiworker",
            "--epochs", "1", "--train-size", "256", "--test-size", "96", "--steps", "3",
            "--backup-dir", str(tmp_path / "backup"), "--out", out, "--quiet"]  # fmt: skip
    runs = run_workers(argv, workers=2, timeout=CLUSTER_TIMEOUT, env=_env())
    for i, run in enumerate(runs):
        assert run.returncode == 0, f"worker {i}\n{run.stderr[-3000:]}"
    assert "Exported to" in runs[0].stdout and "the chief exported" in runs[1].stdout
    assert sorted(os.listdir(tmp_path)) == ["digits_mw"]  # backup deleted, no worker copies
    model, record = rk.load(out)
    x, y = rk.data.load("digits", "test")
    m = record.measurements[-1]
    assert m.n_examples == 96 and 0 <= m.robust_accuracy <= m.clean_accuracy
    logits = model.serve(x[:8]).numpy()
    assert logits.shape == (8, 10)
