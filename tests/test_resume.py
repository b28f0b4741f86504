"""Training that resumes exactly: a run killed mid-epoch (SIGKILL, at a known batch) and resumed
from ``backup_dir`` ends with the same weights as an uninterrupted run and repeats no finished
epoch; ``EpsilonWarmup`` and ``BestRobustCheckpoint`` survive the resume."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import robustkit as rk

_RUN = textwrap.dedent(
    """
    import json, os, signal, sys
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    import keras
    from robustkit.app import TrainConfig, train_and_export

    out, backup, kill_at, log = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

    class Journal(keras.callbacks.Callback):
        # writes each epoch begun and each batch finished; dies at global batch `kill_at`
        def on_epoch_begin(self, epoch, logs=None):
            with open(log, "a") as f:
                f.write(json.dumps({"epoch": epoch}) + "\\n")

        def on_train_batch_end(self, batch, logs=None):
            step = int(self.model.optimizer.iterations.numpy())
            with open(log, "a") as f:
                f.write(json.dumps({"step": step, "eps": float(self.model.eps.numpy())}) + "\\n")
            if step == kill_at:
                os.kill(os.getpid(), signal.SIGKILL)  # a pre-emption: no clean-up at all

    config = TrainConfig(
        dataset="digits", train_size=640, test_size=200, val_size=128, epochs=3,
        warmup_epochs=2, batch_size=64, steps=3, augment=True, deterministic=True,
        seed=5, out=out, backup_dir=backup,
    )
    result = train_and_export(config, verbose=0, callbacks=[Journal()])
    print("RESULT" + json.dumps(result.record.training.hyperparameters))
    """
)


def _run(tmp_path, name, kill_at=-1, backup="backup"):
    script = tmp_path / "run.py"
    script.write_text(_RUN)
    log = tmp_path / f"{name}.jsonl"
    proc = subprocess.run(
        [sys.executable, str(script), str(tmp_path / name), str(tmp_path / backup),
         str(kill_at), str(log)],
        capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    events = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return proc, events


def test_killed_mid_epoch_and_resumed_equals_uninterrupted(tmp_path):
    steps_per_epoch = 8  # 512 training examples / 64
    proc, full = _run(tmp_path, "full", backup="backup_full")
    assert proc.returncode == 0, proc.stderr[-3000:]
    hp_full = json.loads(proc.stdout.split("RESULT")[1])
    assert not (tmp_path / "backup_full").exists()  # cleaned up after a finished run

    kill_at = steps_per_epoch + 5  # batch 5 of epoch 1 (zero-based): epoch 0 is finished
    proc, killed = _run(tmp_path, "resumed", kill_at=kill_at)
    assert proc.returncode == -9, proc.stderr[-3000:]
    assert killed[-1] == {"step": kill_at, "eps": pytest.approx(killed[-1]["eps"])}
    assert (tmp_path / "backup" / "state").is_dir()
    assert (tmp_path / "backup" / "best.weights.h5").is_file()  # epoch 0 was the best so far
    os.remove(tmp_path / "resumed.jsonl")
    proc, resumed = _run(tmp_path, "resumed")
    assert proc.returncode == 0, proc.stderr[-3000:]
    hp_resumed = json.loads(proc.stdout.split("RESULT")[1])

    # no finished epoch is repeated: the second process starts at the interrupted epoch 1
    assert [e["epoch"] for e in resumed if "epoch" in e] == [1, 2]
    steps = [e["step"] for e in resumed if "step" in e]
    assert steps == list(range(steps_per_epoch + 1, 3 * steps_per_epoch + 1))
    # the warm-up continues from the restored optimizer step (it would restart at 0)
    eps_full = {e["step"]: e["eps"] for e in full if "step" in e}
    for e in resumed:
        if "step" in e:
            assert e["eps"] == pytest.approx(eps_full[e["step"]], rel=1e-6)
    assert eps_full[steps_per_epoch + 1] < 0.1  # still ramping when the run was resumed

    # the same checkpoint is selected and the same weights exported
    assert hp_resumed["selected_epoch"] == hp_full["selected_epoch"]
    assert hp_resumed["selection_score"] == pytest.approx(hp_full["selection_score"], abs=1e-6)
    a, rec_a = rk.load(str(tmp_path / "full"))
    b, rec_b = rk.load(str(tmp_path / "resumed"))
    x, _ = rk.data.load("digits", "test")
    np.testing.assert_allclose(b.serve(x).numpy(), a.serve(x).numpy(), atol=1e-4)
    for va, vb in zip(sorted(a.variables, key=lambda v: v.name),
                      sorted(b.variables, key=lambda v: v.name)):  # fmt: skip
        np.testing.assert_allclose(vb.numpy(), va.numpy(), atol=1e-5, err_msg=va.name)
    assert rec_b.robust_accuracy == rec_a.robust_accuracy
    assert rec_b.data.val_examples == 128 and rec_b.data.train_examples == 512
    assert not (tmp_path / "backup").exists()


def test_best_checkpoint_score_survives_a_resume(digits, tmp_path):
    x_tr, y_tr, _, _ = digits
    scores = {0: (0.5, 0.1), 1: (0.9, 0.7), 2: (0.8, 0.2), 3: (0.6, 0.2)}  # best: epoch 1

    class FakeEval(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            logs["val_clean_accuracy"], logs["val_robust_accuracy"] = scores[epoch]

    def model():
        keras.utils.set_random_seed(0)
        m = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(0.1, steps=1))
        m.compile(optimizer="adam")
        return m

    path = str(tmp_path / "best.weights.h5")
    first = model()
    first.fit(x_tr[:128], y_tr[:128], epochs=3, batch_size=64, verbose=0,
              callbacks=[FakeEval(), rk.callbacks.BestRobustCheckpoint(path)])  # fmt: skip
    at_best = first.base_model.predict(x_tr[:16], verbose=0)
    with open(tmp_path / "best.best.json") as f:
        assert json.load(f) == {"score": pytest.approx(0.8), "epoch": 1}
    # a new process resumes at epoch 3: epoch 3 (0.4) must not replace epoch 1 (0.8)
    second = model()
    best = rk.callbacks.BestRobustCheckpoint(path)
    second.fit(x_tr[:128], y_tr[:128], epochs=4, initial_epoch=3, batch_size=64, verbose=0,
               callbacks=[FakeEval(), best])  # fmt: skip
    assert best.best_epoch == 1 and best.best_score == pytest.approx(0.8)
    np.testing.assert_allclose(second.base_model.predict(x_tr[:16], verbose=0), at_best, atol=1e-6)
    # a fresh run (epoch 0) ignores the old score and overwrites it
    fresh = rk.callbacks.BestRobustCheckpoint(path)
    model().fit(x_tr[:64], y_tr[:64], epochs=1, batch_size=64, verbose=0,
                callbacks=[FakeEval(), fresh])  # fmt: skip
    assert fresh.best_epoch == 0 and fresh.best_score == pytest.approx(0.3)


def test_epsilon_warmup_position_is_the_optimizer_step(digits):
    x_tr, y_tr, _, _ = digits
    keras.utils.set_random_seed(0)
    model = rk.RobustModel(rk.models.small_cnn((8, 8, 1)), attack=rk.attacks.PGD(0.2, steps=1))
    model.compile(optimizer="adam")
    model.optimizer.build(model.trainable_variables)
    model.optimizer.iterations.assign(6)  # as BackupAndRestore leaves it after 6 steps
    seen = []
    rec = keras.callbacks.LambdaCallback(
        on_train_batch_end=lambda b, logs: seen.append(float(model.eps.numpy()))
    )
    hist = model.fit(x_tr[:256], y_tr[:256], epochs=1, batch_size=64, verbose=0,
                     callbacks=[rk.callbacks.EpsilonWarmup(steps=10), rec])  # fmt: skip
    ramp = [0.2 * min(1.0, (k + 1) / 10) for k in range(6, 10)]
    np.testing.assert_allclose(seen, ramp, rtol=1e-6)
    assert hist.history["eps"][0] == pytest.approx(np.mean(ramp), rel=1e-5)  # logged metric
