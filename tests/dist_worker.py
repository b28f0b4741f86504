"""One process of the local-cluster tests (tests/test_distributed.py): run as
``python dist_worker.py MODE STRATEGY OUT [ARGS...]`` with ``TF_CONFIG`` set by
:func:`robustkit.distributed.local.run_workers` (or without it, as the one-process
reference). Prints one ``RESULT {json}`` line.

Modes:
- ``train FOLDER DEFENSE...``: PGD training of a small CNN on 512 digits, 2 epochs, global
  batch 64; the logged history per defense (standard: with RobustEvaluation and a
  BestRobustCheckpoint writing into FOLDER).
- ``resume BACKUP``: 3 epochs (Adam, eps warm-up over the first epoch) with a backup;
  with ``CRASH=1`` in the environment, worker 1 kills itself at batch 3 of epoch 1.
- ``eval WEIGHTS``: AutoAttack (reduced budget) on 256 test digits, sharded; the per-example
  masks and the report of ``rk.evaluate``.
- ``mirrored-checks``: one process, two logical CPU devices: attacks and ``measure`` split
  over the replicas against one-device calls; ``rk.distributed.fit`` under
  MirroredStrategy against the default strategy.
"""

import json
import os
import signal
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: set by start(): the strategy of this process (None: the one-process reference)
strategy = None


def start(mode, strategy_name):
    """Devices first, then the strategy: MultiWorkerMirroredStrategy before any TF op."""
    global strategy
    os.environ["CUDA_VISIBLE_DEVICES"] = ""
    if mode == "mirrored-checks":
        import tensorflow as tf

        cpu = tf.config.list_physical_devices("CPU")[0]
        tf.config.set_logical_device_configuration(
            cpu, [tf.config.LogicalDeviceConfiguration()] * 2
        )
    import robustkit as rk

    strategy = None if strategy_name == "none" else rk.distributed.get_strategy(strategy_name)


def robust_model(defense, optimizer, start=False):
    import keras

    import robustkit as rk

    keras.utils.set_random_seed(0)
    with (strategy or rk.distributed.get_strategy("default")).scope():
        model = rk.RobustModel(
            rk.models.small_cnn((8, 8, 1)),
            objective=defense,
            attack=rk.attacks.PGD(eps=0.1, steps=3, random_start=start),
        )
        model.compile(optimizer=optimizer(), metrics=["accuracy"])
    return model


def floats(history):
    return {k: [float(v) for v in vals] for k, vals in history.items()}


def crash_callback():
    """Kills this worker (SIGKILL: no clean-up) at batch 3 of epoch 1 when CRASH=1."""
    import keras

    class Crash(keras.callbacks.Callback):
        epoch = 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch
            print(f"EPOCH {epoch}", flush=True)

        def on_train_batch_begin(self, batch, logs=None):
            if os.environ.get("CRASH") == "1" and (self.epoch, batch) == (1, 3):
                os.kill(os.getpid(), signal.SIGKILL)

    return Crash()


def main(mode):
    import keras

    import robustkit as rk

    x, y = rk.data.load("digits", "train")
    x, y = x[:512], y[:512]
    out = {}
    if mode == "train":
        folder = sys.argv[3]
        xv, yv = rk.data.load("digits", "test")
        for defense in sys.argv[4:]:
            model = robust_model(defense, lambda: keras.optimizers.SGD(0.05))
            callbacks = []
            if defense == "standard":  # robust validation and the best checkpoint
                val = rk.attacks.PGD(eps=0.1, steps=5, random_start=False)
                callbacks = [
                    rk.callbacks.RobustEvaluation((xv, yv), val, max_examples=100),
                    rk.callbacks.BestRobustCheckpoint(os.path.join(folder, "best.weights.h5")),
                ]
            hist = rk.distributed.fit(model, x, y, batch_size=64, epochs=2, shuffle=True,
                                      callbacks=callbacks, strategy=strategy)  # fmt: skip
            out[defense] = floats(hist.history)
    elif mode == "resume":
        model = robust_model("standard", lambda: keras.optimizers.Adam(0.01))
        hist = rk.distributed.fit(
            model, x, y, batch_size=64, epochs=3, backup_dir=sys.argv[3],
            callbacks=[crash_callback(), rk.callbacks.EpsilonWarmup(epochs=1)],
        )  # fmt: skip
        out = {"history": floats(hist.history), "epochs": hist.epoch}
    elif mode == "eval":
        base = rk.models.small_cnn((8, 8, 1))
        base.load_weights(sys.argv[3])
        xt, yt = rk.data.load("digits", "test")
        xt, yt = xt[:256], yt[:256]
        # reduced AutoAttack budget (steps 20, 3 target classes, 300 Square queries)
        attack = rk.attacks.AutoAttack(eps=0.1, steps=20, n_target_classes=3, n_queries=300,
                                       seed=0)  # fmt: skip
        found = rk.evaluation.measure(base, (xt, yt), attack, batch_size=96,
                                      strategy=strategy, seed=0)  # fmt: skip
        out["correct"] = found.correct.astype(int).tolist()
        out["robust"] = found.robust.astype(int).tolist()
        out["outside_ball"] = found.outside_ball
        # rk.evaluate: sharded over the workers; the reference: the one-process "default"
        report = rk.evaluate(
            base,
            (xt, yt),
            suite=[rk.attacks.PGD(eps=0.1, steps=10)],
            checks=False,
            batch_size=96,
            strategy=strategy or "default",
        )
        out["report"] = {"n": report.n, "worst": report.worst_case,
                         "clean": report.clean_accuracy}  # fmt: skip
        out["chief"] = strategy is None or rk.distributed.is_chief(strategy)
    elif mode == "mirrored-checks":
        out = mirrored_checks(x, y)
    print("RESULT " + json.dumps(out), flush=True)


def mirrored_checks(x, y):
    import keras
    import tensorflow as tf

    import robustkit as rk

    mirrored = tf.distribute.MirroredStrategy(["/cpu:0", "/cpu:1"])
    keras.utils.set_random_seed(0)
    base = rk.models.small_cnn((8, 8, 1))
    base.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    base.fit(x, y, epochs=5, batch_size=64, verbose=0)
    xt, yt = rk.data.load("digits", "test")
    xt, yt = xt[:150], yt[:150]
    pgd = rk.attacks.PGD(eps=0.1, steps=5, random_start=False)
    one = pgd(base, xt, yt)
    traces = pgd.trace_count
    split = pgd(base, xt, yt, strategy=mirrored)
    out = {
        "pgd_max_diff": float(abs(one - split).max()),
        "pgd_linf": float(abs(split - xt).max()),
        "pgd_traces_added": pgd.trace_count - traces,
        "clean": float((base.predict(xt, verbose=0).argmax(-1) == yt).mean()),
        "pgd_acc": float((base.predict(split, verbose=0).argmax(-1) == yt).mean()),
    }
    m_one = rk.evaluation.measure(base, (xt, yt), pgd, batch_size=64)
    m_split = rk.evaluation.measure(base, (xt, yt), pgd, batch_size=64, strategy=mirrored)
    out["measure_equal"] = bool((m_one.robust == m_split.robust).all())
    aa = rk.attacks.AutoAttack(eps=0.1, steps=10, n_target_classes=2, n_queries=100, seed=0)
    x_aa = aa(base, xt, yt, strategy=mirrored)
    out["aa_linf"] = float(abs(x_aa - xt).max())
    out["aa_acc"] = float((base.predict(x_aa, verbose=0).argmax(-1) == yt).mean())
    logs = {}
    for name, strategy in (("default", tf.distribute.get_strategy()), ("mirrored", mirrored)):
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = rk.RobustModel(
                rk.models.small_cnn((8, 8, 1)),
                attack=rk.attacks.PGD(eps=0.1, steps=3, random_start=False),
            )
            model.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"])
        hist = rk.distributed.fit(model, x[:320], y[:320], batch_size=64, epochs=2)
        logs[name] = floats(hist.history)
    out["fit"] = logs
    return out


if __name__ == "__main__":
    start(sys.argv[1], sys.argv[2])
    main(sys.argv[1])
