"""PGD-40 L-inf speed: robustkit vs cleverhans 4.0 vs a hand-written loop, one run.

On a small MNIST CNN (``robustkit.models.small_cnn((28, 28, 1), width=16,
dense=64)``) and 1,000 real MNIST test images, for two models (undefended, and
PGD-trained with a hand-written PGD-AT loop with eps warm-up), it times:

  (a) cleverhans 4.0 ``projected_gradient_descent`` on all images in one call,
  (a') the same in batches of ``--small-batch`` (to show what the batch size costs),
  (b) a hand-written Python-unrolled PGD loop inside one ``tf.function``,
  (b') the same where each example leaves the batch once misclassified (the floor of
       early stop: no best-loss tracking, nothing else),
  (c) ``robustkit.attacks.PGD`` (best-point tracking, the default),
  (d) ``robustkit.attacks.PGD(early_stop=True)``.

Every method does the same attack (eps 0.3, step 0.01, 40 steps, uniform random
start) and is warmed up once (tracing), then the runs are interleaved round-robin
(``--repeats`` rounds) so machine noise hits all methods alike; the median is
reported with the ratio to (a) and the robust accuracy (mean over the timed runs).

Run:  python benchmarks/pgd_speed.py [--data-dir ../shared/data] [--repeats 3]
Writes benchmarks/results/pgd_speed.md.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import numpy as np
import tensorflow as tf

import robustkit as rk


def cleverhans_pgd(model, x, y, eps, step, steps, batch=None):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    def run(xb, yb):
        return projected_gradient_descent(
            model,
            xb,
            eps,
            step,
            steps,
            np.inf,
            clip_min=0.0,
            clip_max=1.0,
            y=yb,
            rand_init=True,
            sanity_checks=False,
        )

    if batch is None:
        return lambda: run(x, y)
    return lambda: tf.concat(
        [run(x[i : i + batch], y[i : i + batch]) for i in range(0, int(x.shape[0]), batch)], 0
    )


def ce_logits_and_grad(model, x, labels):
    """Logits at ``x`` and the gradient of the summed cross-entropy (``labels`` int32)."""
    with tf.GradientTape() as tape:
        tape.watch(x)
        logits = model(x, training=False)
        loss = tf.reduce_sum(
            tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
        )
    return logits, tape.gradient(loss, x)


def sign_step(x_adv, grad, x0, eps, step):
    """One L-inf ascent step, projected onto the eps-ball around ``x0`` and the box."""
    x_adv = x_adv + step * tf.sign(grad)
    return tf.clip_by_value(tf.clip_by_value(x_adv, x0 - eps, x0 + eps), 0.0, 1.0)


def handwritten_pgd(model, x, y, eps, step, steps):
    """The floor: plain PGD, Python-unrolled inside one tf.function, no bookkeeping."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, *x.shape[1:]]), tf.TensorSpec([None], tf.int64)]
    )
    def run(xb, yb):
        labels = tf.cast(yb, tf.int32)
        x_adv = tf.clip_by_value(xb + tf.random.uniform(tf.shape(xb), -eps, eps), 0.0, 1.0)
        for _ in range(steps):
            _, grad = ce_logits_and_grad(model, x_adv, labels)
            x_adv = sign_step(x_adv, grad, xb, eps, step)
        return x_adv

    return lambda: run(x, y)


def handwritten_pgd_es(model, x, y, eps, step, steps):
    """The early-stop floor: (b) where each example leaves the batch once misclassified.

    Python-unrolled inside one ``tf.function``; each step records the current point of
    every active example (a fooled one keeps the point that fooled it) and drops the fooled
    rows; a step is skipped once the batch is empty (oneDNN convolutions reject empty
    batches). No best-loss tracking for the unfooled, no restarts, no per-example radius.
    """

    @tf.function(
        input_signature=[tf.TensorSpec([None, *x.shape[1:]]), tf.TensorSpec([None], tf.int64)]
    )
    def run(xb, yb):
        x_adv = tf.clip_by_value(xb + tf.random.uniform(tf.shape(xb), -eps, eps), 0.0, 1.0)
        state = (x_adv, (tf.range(tf.shape(xb, out_type=tf.int64)[0]), x_adv, xb, yb))

        def one(out, active):
            idx, xa, x0, ya = active
            logits, grad = ce_logits_and_grad(model, xa, tf.cast(ya, tf.int32))
            xn = sign_step(xa, grad, x0, eps, step)
            keep = tf.equal(tf.argmax(logits, -1), ya)
            out = tf.tensor_scatter_nd_update(out, idx[:, None], xa)
            return out, tuple(tf.boolean_mask(t, keep) for t in (idx, xn, x0, ya))

        for _ in range(steps):
            state = tf.cond(tf.size(state[1][0]) > 0, lambda s=state: one(*s), lambda s=state: s)
        out, (idx, xa, _, _) = state
        return tf.tensor_scatter_nd_update(out, idx[:, None], xa)

    return lambda: run(x, y)


def active_fraction(model, x, y, eps, step, steps, seed=0):
    """Plain PGD (same start and steps), recording when each example is first
    misclassified: returns (fraction ever fooled, mean fraction of the batch
    still unfooled over the steps) -- the work early stopping can skip."""
    tf.random.set_seed(seed)
    labels = tf.cast(y, tf.int32)
    x_adv = tf.clip_by_value(x + tf.random.uniform(tf.shape(x), -eps, eps), 0.0, 1.0)
    first = np.full(int(x.shape[0]), -1)
    for t in range(steps):
        logits, grad = ce_logits_and_grad(model, x_adv, labels)
        fooled = np.argmax(logits, -1) != np.asarray(y)
        first[(first < 0) & fooled] = t
        x_adv = sign_step(x_adv, grad, x, eps, step)
    alive = [np.mean((first < 0) | (first > t)) for t in range(steps)]
    return float(np.mean(first >= 0)), float(np.mean(alive))


def batch_profile(model, x, y, sizes=(1000, 250, 100, 30, 10)):
    """CPU time per example of one PGD step (fwd + bwd) at several batch sizes."""

    @tf.function(
        input_signature=[tf.TensorSpec([None, *x.shape[1:]]), tf.TensorSpec([None], tf.int32)]
    )
    def one(xb, yb):
        return xb + 0.01 * tf.sign(ce_logits_and_grad(model, xb, yb)[1])

    out = {}
    for b in sizes:
        xb, yb = x[:b], tf.cast(y[:b], tf.int32)
        one(xb, yb)
        reps = min(200, max(5, 3000 // b))
        c0 = time.process_time()
        for _ in range(reps):
            one(xb, yb)
        out[b] = (time.process_time() - c0) / reps / b
    return out


def main():
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=1000, help="MNIST test images to attack")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--step", type=float, default=0.01)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument(
        "--batch-size",
        type=int,
        default=1000,
        help="robustkit batch_size (default: all images at once, like (a))",
    )
    p.add_argument("--small-batch", type=int, default=250, help="batch of (a')")
    p.add_argument("--train-n", type=int, default=10000, help="MNIST train images")
    p.add_argument("--models", default="undefended,pgd_at")
    p.add_argument("--result-name", default="pgd_speed", help="writes benchmarks/results/<name>.md")
    p.add_argument(
        "--methods",
        default="cleverhans,cleverhans_batched,handwritten,handwritten_es,robustkit,robustkit_es",
    )
    args = p.parse_args()

    print(C.machine_info())
    x_tr, y_tr, x_te, y_te = C.mnist(args.data_dir, args.train_n, args.n, seed=args.seed)
    build = lambda: rk.models.small_cnn((28, 28, 1), width=16, dense=64)
    trainers = {
        "undefended": lambda m: C.train_clean(m, x_tr, y_tr, epochs=2, seed=args.seed),
        "pgd_at": lambda m: C.train_pgd_at(
            m, x_tr, y_tr, eps=args.eps, epochs=3, steps=10, warmup_epochs=0.5, seed=args.seed
        ),
    }
    x = tf.constant(x_te)
    y = tf.constant(y_te)
    report = [
        "# PGD speed (`benchmarks/pgd_speed.py`)",
        "",
        f"Command: `python benchmarks/pgd_speed.py {' '.join(sys.argv[1:])}`".replace("  ", " "),
        "",
        f"Machine: {C.machine_info()}. The machine was shared with other jobs during the run;",
        "runs are interleaved round-robin so noise hits every method alike. CPU time (all",
        "threads of the process) is given too: it is less sensitive to other jobs.",
        "",
        f"Model: `small_cnn((28, 28, 1), width=16, dense=64)`; {args.n} real MNIST test images; "
        f"PGD-{args.steps} L-inf eps {args.eps}, step {args.step}, uniform random start; "
        f"robustkit `batch_size={args.batch_size}`; median of {args.repeats} timed runs after one "
        "warm-up (trace) run.",
        "",
    ]
    for name in args.models.split(","):
        C.keras.utils.set_random_seed(args.seed)
        model = C.cached(
            f"pgd_speed_{name}_w16_n{args.train_n}", build, trainers[name], retrain=args.retrain
        )
        clean = C.accuracy(model, x, y_te)
        kw = dict(
            eps=args.eps,
            step_size=args.step,
            steps=args.steps,
            batch_size=args.batch_size,
            seed=args.seed,
        )
        pgd = rk.attacks.PGD(**kw)
        pgd_es = rk.attacks.PGD(early_stop=True, **kw)
        methods = {
            "cleverhans": (
                "(a) cleverhans 4.0 PGD, one call",
                cleverhans_pgd(model, x, y, args.eps, args.step, args.steps),
            ),
            "cleverhans_batched": (
                f"(a') cleverhans 4.0 PGD, batches of {args.small_batch}",
                cleverhans_pgd(
                    model, x, y, args.eps, args.step, args.steps, batch=args.small_batch
                ),
            ),
            "handwritten": (
                "(b) hand-written unrolled tf.function",
                handwritten_pgd(model, x, y, args.eps, args.step, args.steps),
            ),
            "handwritten_es": (
                "(b') (b) with early stop by compaction",
                handwritten_pgd_es(model, x, y, args.eps, args.step, args.steps),
            ),
            "robustkit": ("(c) robustkit PGD", lambda: pgd(model, x, y)),
            "robustkit_es": ("(d) robustkit PGD early_stop=True", lambda: pgd_es(model, x, y)),
        }
        methods = {k: v for k, v in methods.items() if k in args.methods.split(",")}
        print(f"\n== {name}: clean accuracy {clean:.3f}")
        outs, times, cpu = {}, {k: [] for k in methods}, {k: [] for k in methods}
        robs = {k: [] for k in methods}
        for key, (_, fn) in methods.items():  # warm-up: trace
            t0 = time.perf_counter()
            outs[key] = np.asarray(fn())
            print(f"  warm-up {key}: {time.perf_counter() - t0:.1f} s", flush=True)
        for r in range(args.repeats):
            for key, (_, fn) in methods.items():
                t0, c0 = time.perf_counter(), time.process_time()
                outs[key] = np.asarray(fn())
                times[key].append(time.perf_counter() - t0)
                cpu[key].append(time.process_time() - c0)
                robs[key].append(C.accuracy(model, outs[key], y_te))
            print(
                f"  round {r + 1}: " + ", ".join(f"{k} {t[-1]:.2f}s" for k, t in times.items()),
                flush=True,
            )
        base = float(np.median(times["cleverhans"])) if "cleverhans" in times else None
        base_cpu = float(np.median(cpu["cleverhans"])) if "cleverhans" in cpu else None
        rows = []
        for key, (label, _) in methods.items():
            med = float(np.median(times[key]))
            med_cpu = float(np.median(cpu[key]))
            cpu_ratio = f"{med_cpu / base_cpu:.2f}x" if base_cpu else "-"
            x_adv = outs[key]
            dist = float(np.abs(x_adv - x_te).max())
            assert dist <= args.eps + 1e-5 and x_adv.min() >= 0 and x_adv.max() <= 1, key
            rob = float(np.mean(robs[key]))  # cleverhans' random start is unseeded: mean of runs
            ratio = f"{med / base:.2f}x" if base else "-"
            rows.append(
                [
                    label,
                    f"{med:.2f}",
                    " / ".join(f"{t:.2f}" for t in times[key]),
                    ratio,
                    f"{med_cpu:.2f} ({cpu_ratio})",
                    f"{100 * rob:.1f} %",
                ]
            )
            print(
                f"  {label:45s} {med:7.2f} s  {ratio:>6s} of cleverhans  CPU {med_cpu:6.2f} s "
                f"{cpu_ratio:>6s}  robust acc {100 * rob:5.1f} %"
            )
        ever, alive = active_fraction(model, x, y, args.eps, args.step, args.steps, args.seed)
        note = (
            f"Plain PGD from the same kind of start: {100 * ever:.1f} % of the examples are "
            f"misclassified at some step; the unfooled part of the batch averages "
            f"{100 * alive:.1f} % over the {args.steps} steps (the work early stop keeps)."
        )
        print("  " + note)
        report += [
            f"## {name} model (clean accuracy {100 * clean:.1f} %)",
            "",
            C.markdown_table(
                [
                    "method",
                    "median s",
                    "runs (s)",
                    "time / cleverhans",
                    "CPU s (/ cleverhans)",
                    "robust accuracy",
                ],
                rows,
            ),
            "",
            note,
            "",
        ]
    prof = batch_profile(model, x, y)
    base_b = prof[max(prof)]
    line = ", ".join(f"batch {b}: {1e6 * t:.0f} us ({t / base_b:.2f}x)" for b, t in prof.items())
    print(f"\nCPU time per example of one PGD step: {line}")
    report += [f"CPU time per example of one PGD step (fwd + bwd) by batch size: {line}.", ""]
    path = C.write_result(args.result_name, "\n".join(report) + "\n", not args.no_write)
    if path:
        print(f"\nwrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
