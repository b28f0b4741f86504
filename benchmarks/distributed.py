"""Multi-worker throughput on this machine, and the scaling to N GPUs on paper (issue #14).

Measured: examples per second of PGD-AT training (``rk.distributed.fit``) and of AutoAttack
evaluation (``rk.evaluation.measure(strategy=..., seed=...)``) with 1 worker (one process,
the default strategy) and with 2 local workers (two processes on 127.0.0.1, each with its own
``TF_CONFIG``, MultiWorkerMirroredStrategy). Each configuration runs in fresh processes.

Training: small_cnn((28, 28, 1), width=16, dense=64) on 4096 real MNIST images, global batch
128, PGD-10 L-inf eps 0.3 (step eps/4), Adam; the mean time of epochs 2 and 3 (the first
traces). Evaluation: that architecture trained clean for 2 epochs (cached weights), AutoAttack
L-inf eps 0.1 with a reduced budget (20 steps, 3 target classes, 500 Square queries) on 512
MNIST test images, batches of 128 (so 2 workers get 2 batches each); wall time of the whole
``measure`` call on the chief, tracing included (it retraces per batch: seed-keyed batches).

On paper: ResNet-18 (CIFAR-10) gradients all-reduced per step against the attack work per
example; see ``scaling_table``.

Usage: ``python benchmarks/distributed.py`` (writes benchmarks/results/distributed.md).
"""

import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

from _common import (  # noqa: E402
    CACHE,
    RESULTS,
    base_parser,
    machine_info,
    mnist,
)

WEIGHTS = os.path.join(CACHE, "distributed_mnist_clean.weights.h5")
TRAIN_N, TEST_N, BATCH, EVAL_BATCH = 4096, 512, 128, 128
EVAL_EPS = 0.1


def _model(rk):
    return rk.models.small_cnn((28, 28, 1), width=16, dense=64)


def worker(mode, data_dir, strategy_name):
    """One process of a configuration; prints ``RESULT {json}``."""
    import robustkit as rk

    strategy = rk.distributed.get_strategy(strategy_name)  # before any TF op
    import keras

    x_tr, y_tr, x_te, y_te = mnist(data_dir, TRAIN_N, TEST_N)
    out = {"workers": rk.distributed.num_workers(strategy)}
    if mode == "train":
        keras.utils.set_random_seed(0)
        with strategy.scope():
            model = rk.RobustModel(_model(rk), attack=rk.attacks.PGD(eps=0.3, steps=10))
            model.compile(optimizer=keras.optimizers.Adam(1e-3))
        times = []

        class Clock(keras.callbacks.Callback):
            def on_epoch_begin(self, epoch, logs=None):
                self.t = time.perf_counter()

            def on_epoch_end(self, epoch, logs=None):
                times.append(time.perf_counter() - self.t)

        rk.distributed.fit(model, x_tr, y_tr, batch_size=BATCH, epochs=3, callbacks=[Clock()])
        out.update(seconds=(times[1] + times[2]) / 2, examples=TRAIN_N)
    else:
        base = _model(rk)
        base.load_weights(WEIGHTS)
        attack = rk.attacks.AutoAttack(eps=EVAL_EPS, steps=20, n_target_classes=3, n_queries=500,
                                       seed=0)  # fmt: skip
        start = time.perf_counter()
        found = rk.evaluation.measure(base, (x_te, y_te), attack, batch_size=EVAL_BATCH,
                                      strategy=strategy, seed=0)  # fmt: skip
        out.update(seconds=time.perf_counter() - start, examples=TEST_N,
                   clean=found.clean_accuracy, robust=found.robust_accuracy)  # fmt: skip
    print("RESULT " + json.dumps(out), flush=True)


def _train_clean(data_dir):
    if os.path.isfile(WEIGHTS):
        return
    import keras

    import robustkit as rk

    x_tr, y_tr, _, _ = mnist(data_dir, 8192, TEST_N)
    keras.utils.set_random_seed(0)
    model = _model(rk)
    model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(True))
    model.fit(x_tr, y_tr, epochs=2, batch_size=128, verbose=0)
    os.makedirs(CACHE, exist_ok=True)
    model.save_weights(WEIGHTS)


def _run(mode, data_dir, workers):
    from robustkit.distributed.local import run_workers

    argv = [sys.executable, os.path.abspath(__file__), "--worker", mode, "--data-dir", data_dir]
    if workers == 1:
        proc = subprocess.run(argv + ["--strategy", "default"], capture_output=True, text=True,
                              timeout=3600)  # fmt: skip
        runs = [proc]
    else:
        runs = run_workers(argv + ["--strategy", "multiworker"], workers=workers, timeout=3600)
    for run in runs:
        if run.returncode != 0:
            sys.exit(f"{mode} with {workers} worker(s) failed:\n{run.stderr[-3000:]}")
    line = next(r for r in runs[0].stdout.splitlines() if r.startswith("RESULT "))
    return json.loads(line[len("RESULT ") :])


def scaling_table(params=11_183_562, fwd_gflops=1.11, steps=10, batch=128, tflops=50.0):
    """ResNet-18 on CIFAR-10 at N GPUs: bytes all-reduced per step vs attack work per example.

    Ring all-reduce of float32 gradients: each GPU sends (and receives) 2 (N - 1) / N x 4 x
    params bytes per step, whatever the batch (``params``: rk.models.resnet18((32, 32, 3))).
    PGD-``steps`` AT costs (steps + 1) forward +
    backward passes per example (~3x the forward 0.56 GMAC = 1.11 GFLOP each; standard
    training: 1). Compute time
    assumes ``tflops`` effective per GPU and a per-GPU batch of ``batch``; no overlap of
    communication with compute (a pessimistic bound). Returns markdown rows.
    """
    grad_mb = 4 * params / 1e6
    per_example_gflop = (steps + 1) * 3 * fwd_gflops
    at_ms = batch * per_example_gflop / (tflops * 1e3) * 1e3
    std_ms = at_ms / (steps + 1)
    links = {"NVLink 100 GB/s": 100e3, "InfiniBand 100 Gb/s": 12.5e3, "Ethernet 10 Gb/s": 1.25e3}
    rows = []
    for n in (2, 4, 8, 16):
        sent = 2 * (n - 1) / n * grad_mb
        cells = []
        for rate in links.values():
            comm = sent / rate * 1e3
            cells.append(
                f"{comm:.1f} ms: AT {at_ms / (at_ms + comm):.2f} / std {std_ms / (std_ms + comm):.2f}"
            )
        rows.append(f"| {n} | {sent:.1f} | " + " | ".join(cells) + " |")
    header = "| GPUs | MB sent per GPU per step | " + " | ".join(links) + " |"
    return grad_mb, per_example_gflop, at_ms, std_ms, header, rows


def main():
    p = base_parser(__doc__.splitlines()[0])
    p.add_argument("--worker", choices=("train", "eval"), help=argparse_hidden())
    p.add_argument("--strategy", default="default", help=argparse_hidden())
    p.set_defaults(repeats=2)
    args = p.parse_args()
    if args.worker:
        worker(args.worker, args.data_dir, args.strategy)
        return
    _train_clean(args.data_dir)
    rows, loads = [], [os.getloadavg()[0]]
    for mode in ("train", "eval"):
        runs = {1: [], 2: []}
        for _ in range(args.repeats):  # interleaved: 1, 2, 1, 2, ...
            for workers in (1, 2):
                res = _run(mode, args.data_dir, workers)
                runs[workers].append(res)
                print(f"{mode} {workers} worker(s): {res['seconds']:.1f} s", flush=True)
        for workers in (1, 2):
            times = sorted(r["seconds"] for r in runs[workers])
            seconds = times[(len(times) - 1) // 2]  # the median (lower for even counts)
            res = runs[workers][0]
            rows.append((mode, workers, seconds, res["examples"] / seconds, res, times))
        loads.append(os.getloadavg()[0])
    grad_mb, gflop, at_ms, std_ms, header, scaling = scaling_table()
    lines = [
        "# Multi-worker throughput (`benchmarks/distributed.py`)",
        "",
        "Command: `python benchmarks/distributed.py`",
        "",
        "Machine: " + machine_info(),
        "",
        f"1-min load average during the runs: {', '.join(f'{v:.1f}' for v in loads)} (other "
        f"jobs shared the 2 cores). Median of {args.repeats} interleaved runs per row.",
        "",
        "| job | workers | seconds (median) | examples/s | speed-up | runs (s) |",
        "|---|---|---|---|---|---|",
    ]
    base = {}
    for mode, workers, seconds, rate, res, times in rows:
        base.setdefault(mode, rate)
        label = ("PGD-AT training (PGD-10, 4096 MNIST images, one epoch)" if mode == "train"
                 else "AutoAttack evaluation (reduced budget, 512 MNIST images)")  # fmt: skip
        extra = (
            "" if mode == "train" else f" (clean {res['clean']:.3f}, robust {res['robust']:.3f})"
        )
        lines.append(f"| {label}{extra} | {workers} | {seconds:.1f} | {rate:.1f} | "
                     f"{rate / base[mode]:.2f}x | {' / '.join(f'{t:.1f}' for t in times)} |")  # fmt: skip
    lines += [
        "",
        "Two workers on one 2-core machine share the same two cores: little gain is expected "
        "(each process already uses both cores for its ops); what is measured is the cost of "
        "the split (gradient all-reduce over gRPC every step, per-batch retracing in the "
        "sharded evaluation).",
        "",
        f"## Scaling to N GPUs, on paper (ResNet-18 on CIFAR-10: {grad_mb:.1f} MB of float32 "
        f"gradients all-reduced per step; PGD-10 AT = {gflop:.1f} GFLOP per example)",
        "",
        f"Compute per step at a per-GPU batch of 128 and 50 TFLOP/s effective: {at_ms:.0f} ms "
        f"for PGD-10 AT, {std_ms:.1f} ms for standard training. Each cell: the ring "
        "all-reduce time, then the fraction of a step spent computing (1.00 = linear "
        "scaling) for AT / standard training, without overlapping communication and compute "
        "(a pessimistic bound; TensorFlow overlaps part of it).",
        "",
        header,
        "|---|---|---|---|---|",
        *scaling,
        "",
        "The attack multiplies the work per example by its steps + 1 (11 forward+backward "
        "passes for PGD-10) while the bytes all-reduced per step stay one gradient's: the "
        "communication share of adversarial training is ~11x smaller than standard "
        "training's. Within a host (NVLink) and over InfiniBand PGD-AT scales nearly "
        "linearly; over 10 Gb/s Ethernet the all-reduce is comparable to the compute of a "
        "step (use larger per-GPU batches or faster links). Sharded evaluation communicates "
        "only the per-example outcomes, once (4 bytes per example per attack): it scales "
        "with the workers until a worker's share is a few batches (each batch retraces the "
        "attack, seconds).",
    ]
    if not args.no_write:
        os.makedirs(RESULTS, exist_ok=True)
        with open(os.path.join(RESULTS, "distributed.md"), "w") as f:
            f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


def argparse_hidden():
    import argparse

    return argparse.SUPPRESS


if __name__ == "__main__":
    main()
