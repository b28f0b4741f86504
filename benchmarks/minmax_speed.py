"""Batched MinMax vs the same algorithm one example at a time (examples per second).

robustkit's MinMax attacks a whole batch in one compiled loop, every example
with its own statistics network (weights with an example axis). The official
implementation of Hsu et al. (AAAI 2022) handles one example per run. Here the
*same* robustkit attack object (same compiled function, no retracing) is called
once on a batch of N examples and then example by example (batch of 1) on a few
examples; the ratio of examples per second is reported, for the reduced
statistics network used in benchmarks/minmax_table.py and for the paper's.

Run by hand::

    python benchmarks/minmax_speed.py
    python benchmarks/minmax_speed.py --n 64 --single 4 --steps 50

Writes ``benchmarks/results/minmax_speed.md``.
"""

import argparse
import os
import sys
import time

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from minmax_table import correct_test_images, rk, train_cnn  # noqa: E402


def measure(model, x, y, n_single, **kwargs):
    atk = rk.attacks.MinMax(eps=0.3, batch_size=len(x), seed=0, **kwargs)
    atk.run(model, x[:2], y[:2])  # compile once (batch dimension is None: no retrace later)
    t = time.perf_counter()
    atk.run(model, x, y)
    batched = time.perf_counter() - t
    t = time.perf_counter()
    for i in range(n_single):
        atk.run(model, x[i : i + 1], y[i : i + 1])
    single = time.perf_counter() - t
    assert atk.trace_count == 1, atk.trace_count
    return len(x) / batched, n_single / single


def critic_params(model, filters, hidden):
    """Statistics-network parameters per example (both branches and the head)."""
    est = rk.estimators.PerSampleMINE(model, steps=1, filters=filters, hidden=hidden)
    maps = est.features(model.input_shape[1:])(np.zeros([1, *model.input_shape[1:]], "float32"))
    critic = est.critic(maps.shape[2:])
    return sum(int(np.prod(v.shape[1:])) for v in critic.init(1).values())


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=64, help="examples in the batched call")
    ap.add_argument("--single", type=int, default=4, help="examples attacked one at a time")
    ap.add_argument("--steps", type=int, default=50)
    ap.add_argument("--paper-n", type=int, default=8, help="batch for the paper-size network")
    ap.add_argument("--out", default=os.path.join(HERE, "results", "minmax_speed.md"))
    args = ap.parse_args()
    model = train_cnn("mnist", 4000, 3)
    x, y, _ = correct_test_images(model, "mnist", args.n)
    configs = [
        ("reduced (conv 4@2x2, dense 32)", dict(filters=4, hidden=32), len(x)),
        ("paper (conv 16@2x2, dense 512)", dict(filters=16, hidden=512), args.paper_n),
    ]
    rows = []
    for name, kw, n in configs:
        b, s = measure(model, x[:n], y[:n], min(args.single, n), steps=args.steps, mine_lr=1e-4, **kw)
        params = critic_params(model, **kw)
        rows.append((name, n, b, s, b / s, params))
        print(f"{name}: batched {b:.2f} ex/s (batch {n}), one at a time {s:.2f} ex/s, "
              f"ratio {b / s:.1f}x; per example and step: batched {1e3 / (b * args.steps):.2f} ms, "
              f"one at a time {1e3 / (s * args.steps):.2f} ms; {params / 1e6:.2f} M critic "
              "parameters per example", flush=True)
    lines = [
        "# Batched MinMax vs one example at a time",
        "",
        "Command: `python benchmarks/minmax_speed.py " + " ".join(sys.argv[1:]) + "`",
        "",
        f"MNIST, small CNN (16 first-layer maps of 26x26), MinMax {args.steps} iterations, "
        "same compiled function for both (batch dimension None, one trace). "
        "Machine: 2 CPU cores shared with other jobs (noisy; the ratio is measured in one run).",
        "",
        "| Statistics network | critic params / example | batch | batched (ex/s) | "
        "one at a time (ex/s) | ms per example-step (batched / single) | speed-up |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, n, b, s, r, params in rows:
        lines.append(f"| {name} | {params / 1e6:.2f} M | {n} | {b:.2f} | {s:.2f} | "
                     f"{1e3 / (b * args.steps):.2f} / {1e3 / (s * args.steps):.2f} | {r:.1f}x |")
    lines += [
        "",
        "Reading (computed from the rows above): with per-example time per step "
        "`w` (batched, large batch) and fixed per-step cost `o` (op dispatch, loop, "
        "classifier call), one-at-a-time costs `o + w` and an infinitely large batch `w`, so "
        "the speed-up can never exceed `(o + w) / w` (batched ms per example-step = w + o / batch).",
        "",
    ]
    for name, n, b, s, r, params in rows:
        wb, ws = 1e3 / (b * args.steps), 1e3 / (s * args.steps)
        w = max((wb - ws / n) / (1.0 - 1.0 / n), 1e-9) if n > 1 else wb  # batched = w + o / n
        lines.append(
            f"- {name}: {params / 1e6:.2f} M critic parameters per example; batched "
            f"{wb:.2f} ms vs single {ws:.2f} ms per example-step -> per-example work w ~{w:.2f} ms, "
            f"fixed cost o ~{max(ws - w, 0):.2f} ms, so no batch size can give more than "
            f"~{ws / w:.1f}x. 20x would need w <= {ws / 20:.3f} ms per example-step, "
            f"while a perfectly fused Adam alone must move 7 x {params / 1e6:.2f} M floats "
            f"({7 * 4 * params / 1e6:.1f} MB) per example-step."
        )
    lines.append("")
    with open(args.out, "w") as f:
        f.write("\n".join(lines))
    print("wrote", args.out)


if __name__ == "__main__":
    main()
