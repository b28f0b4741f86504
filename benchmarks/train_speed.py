"""Adversarial-training overhead: ``rk.RobustModel.fit`` vs a hand-written loop.

For each defense (a *row*), one PGD-10 training epoch through
``rk.RobustModel(...).fit`` is timed side by side with a hand-written
``tf.function`` train step doing the same math: the same model and initial
weights, the same ``tf.data`` batches, the same inner attack (L-inf eps 0.3,
step eps/4, 10 Python-unrolled steps, the defense's loss and random start, in
inference mode), the same objective (``robustkit.objectives.*_loss`` pure
functions), Adam, and the same logged metrics (loss and its parts, clean and
adversarial accuracy on the batch). One warm-up epoch each (tracing), then the
epochs are interleaved round-robin; the ratio of medians is reported.

Adding a row: write ``def row_<name>(ctx) -> Row`` (see ``row_at``) and add it to
``ROWS``. ``ctx`` carries the data set, the model builder and the attack settings;
``hand_step(ctx, model, attack_loss, start, objective_fn, needs_clean)`` builds
the hand-written step for the common "attack, then one objective" shape.

Run:  python benchmarks/train_speed.py [--data-dir ../shared/data] [--rows at,trades,mart]
Writes benchmarks/results/train_speed.md.

MI defenses (issue #3: a NAMID / WMIM epoch costs <= 1.3x a PGD-AT epoch on the
same model and batch): ``--rows namid,wmim`` times ``RobustModel.fit`` with the
defense against ``RobustModel.fit`` with PGD-AT (same model, batches and attack)
and, as a third column, the frozen estimators alone (the MI term's forward and
backward on the epoch's batches with fixed logits: the floor the defense cannot
go below). Options for these rows: ``--model small_cnn|resnet18`` (ResNet-18
with ``--base-filters``, 64 = the paper's), ``--dataset mnist|cifar10`` (CIFAR-10:
the real test images, the only split in ../shared/data; eps 8/255 by default),
``--features`` (estimator width; 2048 = the paper's, the default; narrower
estimators are an option, not the paper's setting). They write
benchmarks/results/train_speed_mi.md (MNIST small CNN) or
train_speed_mi_<dataset>_<model>.md, e.g.::

    python benchmarks/train_speed.py --rows namid,wmim --n 512 --repeats 2
    python benchmarks/train_speed.py --rows namid,wmim --model resnet18 --dataset cifar10 \
        --n 256 --repeats 1
"""

import collections
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import keras
import numpy as np
import tensorflow as tf

import robustkit as rk
from robustkit.objectives import core as losses

#: one benchmark row: a label and two zero-argument callables that each run one epoch
#: (``extra``: an optional third callable timed alongside, used by the MI rows)
Row = collections.namedtuple(
    "Row", ["label", "robustkit", "handwritten", "extra"], defaults=(None,)
)


class Context:
    """What every row needs: data, model builder, attack settings."""

    def __init__(self, args):
        self.dataset_name = getattr(args, "dataset", "mnist")
        self.model_name = getattr(args, "model", "small_cnn")
        self.base_filters = getattr(args, "base_filters", 64)
        self.features = getattr(args, "features", 2048)
        if self.dataset_name == "cifar10":
            if not os.path.isdir(os.path.join(args.data_dir, "cifar10")):
                sys.exit(f"CIFAR-10 not found under {args.data_dir!r}: pass --data-dir.")
            # ../shared/data holds the 10,000 real CIFAR-10 test images only
            x_tr, y_tr = rk.data.subset(
                *rk.data.load("cifar10_test_files", "test", args.data_dir), args.n, seed=args.seed
            )
        else:
            x_tr, y_tr, _, _ = C.mnist(args.data_dir, args.n, 10, seed=args.seed)
        self.x, self.y = x_tr, y_tr
        self.batch_size = args.batch_size
        self.eps = args.eps
        self.steps = args.steps
        self.step_size = args.eps / 4
        self.seed = args.seed
        self.dataset = rk.data.make_dataset(
            x_tr, y_tr, args.batch_size, shuffle=True, seed=args.seed
        )

    def build(self):
        """A fresh model with fixed initial weights (same for both sides of a row):
        ``small_cnn(width=16, dense=64)`` (default) or ResNet-18 (``--model resnet18``)."""
        keras.utils.set_random_seed(self.seed)
        shape = self.x.shape[1:]
        if self.model_name == "resnet18":
            return rk.models.resnet18(shape, 10, base_filters=self.base_filters)
        return rk.models.small_cnn(shape, width=16, dense=64)

    def describe(self):
        """The model and data of an epoch, for the results file."""
        model = (
            f"`resnet18(base_filters={self.base_filters})`"
            if self.model_name == "resnet18"
            else f"`small_cnn({tuple(self.x.shape[1:])}, width=16, dense=64)`"
        )
        return f"{len(self.x)} real {self.dataset_name.upper()} images, {model}"

    def attack(self):
        return rk.attacks.PGD(eps=self.eps, step_size=self.step_size, steps=self.steps)


# ----------------------------------------------------------- hand-written
def hand_pgd(model, x, y, eps, step_size, steps, attack_loss, start):
    """Plain unrolled L-inf PGD in inference mode (no robustkit code)."""
    labels = tf.cast(y, tf.int32)
    clean = tf.stop_gradient(model(x, training=False)) if attack_loss == "kl" else None
    if start == "normal":
        x_adv = x + 0.001 * tf.random.normal(tf.shape(x))
    else:
        x_adv = x + tf.random.uniform(tf.shape(x), -eps, eps)
    x_adv = tf.clip_by_value(x_adv, 0.0, 1.0)
    for _ in range(steps):
        with tf.GradientTape() as tape:
            tape.watch(x_adv)
            logits = model(x_adv, training=False)
            if attack_loss == "kl":
                log_p = tf.nn.log_softmax(clean)
                per = tf.reduce_sum(tf.exp(log_p) * (log_p - tf.nn.log_softmax(logits)), -1)
            else:
                per = tf.nn.sparse_softmax_cross_entropy_with_logits(labels=labels, logits=logits)
            loss = tf.reduce_sum(per)
        x_adv = x_adv + step_size * tf.sign(tape.gradient(loss, x_adv))
        x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, x - eps, x + eps), 0.0, 1.0)
    return tf.stop_gradient(x_adv)


def hand_step(ctx, model, attack_loss, start, objective_fn, needs_clean, part_names):
    """A hand-written train step: attack, objective, Adam update, the same metrics."""
    opt = keras.optimizers.Adam(1e-3)
    trackers = {n: keras.metrics.Mean(n) for n in ("loss", *part_names)}
    clean_acc = keras.metrics.SparseCategoricalAccuracy("clean_accuracy")
    adv_acc = keras.metrics.SparseCategoricalAccuracy("adv_accuracy")

    @tf.function
    def step(x, y):
        x_adv = hand_pgd(model, x, y, ctx.eps, ctx.step_size, ctx.steps, attack_loss, start)
        if not needs_clean:
            logits_clean = tf.stop_gradient(model(x, training=False))
        with tf.GradientTape() as tape:
            if needs_clean:
                logits_clean = model(x, training=True)
            logits_adv = model(x_adv, training=True)
            total, parts = objective_fn(y, logits_adv, logits_clean)
        grads = tape.gradient(total, model.trainable_variables)
        opt.apply(grads, model.trainable_variables)
        trackers["loss"].update_state(total)
        for n in part_names:
            trackers[n].update_state(parts[n])
        clean_acc.update_state(y, logits_clean)
        adv_acc.update_state(y, logits_adv)

    def epoch():
        for m in (*trackers.values(), clean_acc, adv_acc):
            m.reset_state()
        for xb, yb in ctx.dataset:
            step(xb, yb)
        return float(trackers["loss"].result())  # waits for the work

    return epoch


def robust_fit(ctx, objective):
    """One epoch of ``rk.RobustModel(...).fit`` on the same batches."""
    model = rk.RobustModel(ctx.build(), objective=objective, attack=ctx.attack())
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=None)

    def epoch():
        hist = model.fit(ctx.dataset, epochs=1, verbose=0)
        return hist.history["loss"][-1]

    return epoch


# ------------------------------------------------------------------- rows
def row_at(ctx):
    """PGD-AT (Madry et al.): CE on CE-PGD examples from a uniform start."""
    return Row(
        "AT (PGD-10)",
        robust_fit(ctx, rk.objectives.AT()),
        hand_step(
            ctx,
            ctx.build(),
            "ce",
            "uniform",
            lambda y, a, c: losses.at_loss(y, a),
            needs_clean=False,
            part_names=("ce",),
        ),
    )


def row_trades(ctx):
    """TRADES (beta 6): KL-PGD from x + 0.001 N(0, 1)."""
    return Row(
        "TRADES (PGD-10, beta 6)",
        robust_fit(ctx, rk.objectives.TRADES(beta=6.0)),
        hand_step(
            ctx,
            ctx.build(),
            "kl",
            "normal",
            lambda y, a, c: losses.trades_loss(y, a, c, 6.0),
            needs_clean=True,
            part_names=("natural", "kl"),
        ),
    )


def row_mart(ctx):
    """MART (beta 6): CE-PGD from x + 0.001 N(0, 1)."""
    return Row(
        "MART (PGD-10, beta 6)",
        robust_fit(ctx, rk.objectives.MART(beta=6.0)),
        hand_step(
            ctx,
            ctx.build(),
            "ce",
            "normal",
            lambda y, a, c: losses.mart_loss(y, a, c, 6.0),
            needs_clean=True,
            part_names=("bce", "kl"),
        ),
    )


def estimators_only(ctx, objective):
    """One epoch of the MI term alone: the objective's forward and its backward to
    the logits on the epoch's images, with ``x_adv = clip(x + U(-eps, eps))`` and
    fixed random logits (no model, no attack). This is the estimators' cost, the
    floor of an MI-defense epoch above PGD-AT."""
    rng = np.random.default_rng(ctx.seed)
    batches = []
    for xb, yb in ctx.dataset:
        x_adv = np.clip(xb.numpy() + rng.uniform(-ctx.eps, ctx.eps, xb.shape), 0, 1).astype(
            "float32"
        )
        logits = rng.normal(size=(2, len(yb), 10)).astype("float32")
        batches.append((xb, tf.constant(x_adv), yb, tf.constant(logits[0]), tf.constant(logits[1])))

    @tf.function(autograph=False)  # plain tensor code; autograph once mis-converted the call
    def step(x, x_adv, y, la, lc):
        with tf.GradientTape() as tape:
            tape.watch([la, lc])
            total, _ = objective(y, la, lc, x=x, x_adv=x_adv)
        return tf.add_n([tf.reduce_sum(g) for g in tape.gradient(total, [la, lc]) if g is not None])

    def epoch():
        return float(sum(step(*b) for b in batches))

    return epoch


def _mi_row(ctx, name):
    """NAMID / WMIM (frozen estimators, ``--features`` wide: 2048 = the paper) vs
    PGD-AT, both through ``RobustModel.fit``: the second column is the PGD-AT
    epoch, not a hand-written loop, and the target is <= 1.3x (issue #3)."""
    from robustkit.namid import NAMID, WMIM, AdversarialMIEstimator, MIEstimator, NaturalMIEstimator

    shape, k, f = ctx.x.shape[1:], 10, ctx.features
    keras.utils.set_random_seed(ctx.seed)
    if name == "namid":
        # select="all": the MI term over the whole batch (the benchmark's fresh
        # model and random estimators would otherwise select an arbitrary subset;
        # the selection is a mask, so the cost does not depend on it)
        objective = NAMID(
            NaturalMIEstimator(shape, k, f), AdversarialMIEstimator(shape, k, f), select="all"
        )
    else:
        objective = WMIM(MIEstimator(shape, k, f, pattern="standard"))
    return Row(
        f"{name.upper()} (estimators {f} wide)",
        robust_fit(ctx, objective),
        robust_fit(ctx, rk.objectives.AT()),
        estimators_only(ctx, objective),
    )


def row_namid(ctx):
    """NAMID (alpha 5, lam 0.1, estimators 2048 wide) epoch / PGD-AT epoch."""
    return _mi_row(ctx, "namid")


def row_wmim(ctx):
    """WMIM (estimator 2048 wide) epoch / PGD-AT epoch."""
    return _mi_row(ctx, "wmim")


ROWS = {"at": row_at, "trades": row_trades, "mart": row_mart}
#: not in the default run (their second column is PGD-AT fit); select with --rows namid,wmim
EXTRA_ROWS = {"namid": row_namid, "wmim": row_wmim}


# ------------------------------------------------------------------- main
def measure(row, repeats):
    """Warm-up epoch each, then ``repeats`` interleaved epochs; returns the times."""
    keys = ["robustkit", "handwritten"] + (["extra"] if row.extra is not None else [])
    for key in keys:
        getattr(row, key)()
    times = {key: [] for key in keys}
    cpu = {key: [] for key in keys}
    for _ in range(repeats):
        for key in keys:
            t0, c0 = time.perf_counter(), time.process_time()
            getattr(row, key)()
            times[key].append(time.perf_counter() - t0)
            cpu[key].append(time.process_time() - c0)
    return times, cpu


def main():
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--n", type=int, default=2048, help="MNIST train images per epoch")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--eps", type=float, default=None, help="default 0.3 (MNIST), 8/255 (CIFAR-10)")
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument(
        "--model",
        choices=("small_cnn", "resnet18"),
        default="small_cnn",
        help="MI rows: the classifier (default small_cnn)",
    )
    p.add_argument("--base-filters", type=int, default=64, help="ResNet-18 first-stage filters")
    p.add_argument(
        "--dataset",
        choices=("mnist", "cifar10"),
        default="mnist",
        help="MI rows: the images (cifar10: the real test split)",
    )
    p.add_argument(
        "--features",
        type=int,
        default=2048,
        help="MI rows: estimator width (2048 = the paper's; narrower is an option only)",
    )
    args = p.parse_args()
    if args.eps is None:
        args.eps = 8 / 255 if args.dataset == "cifar10" else 0.3
    names = args.rows.split(",")
    mi_mode = any(n in EXTRA_ROWS for n in names)
    if mi_mode and not all(n in EXTRA_ROWS for n in names):
        p.error("run the MI rows (namid, wmim) on their own: they write train_speed_mi*.md")
    if not mi_mode and (args.model, args.dataset, args.features) != ("small_cnn", "mnist", 2048):
        p.error("--model, --dataset and --features apply to the MI rows (namid, wmim) only")
    print(C.machine_info())
    ctx = Context(args)
    if mi_mode:
        return main_mi(args, ctx, names)
    table = []
    for name in names:
        row = {**ROWS, **EXTRA_ROWS}[name](ctx)
        times, cpu = measure(row, args.repeats)
        rk_t, hand_t = float(np.median(times["robustkit"])), float(np.median(times["handwritten"]))
        rk_c, hand_c = float(np.median(cpu["robustkit"])), float(np.median(cpu["handwritten"]))
        ratio, cpu_ratio = rk_t / hand_t, rk_c / hand_c
        print(
            f"{row.label:28s} RobustModel.fit {rk_t:6.2f} s  hand-written {hand_t:6.2f} s  "
            f"ratio {ratio:.3f}x  CPU-time ratio {cpu_ratio:.3f}x  (wall runs: "
            f"{[round(t, 2) for t in times['robustkit']]} / "
            f"{[round(t, 2) for t in times['handwritten']]})",
            flush=True,
        )
        table.append(
            [
                row.label,
                f"{rk_t:.2f}",
                f"{hand_t:.2f}",
                f"{ratio:.3f}x",
                f"{rk_c:.2f} / {hand_c:.2f} = {cpu_ratio:.3f}x",
                " / ".join(f"{t:.2f}" for t in times["robustkit"]),
                " / ".join(f"{t:.2f}" for t in times["handwritten"]),
            ]
        )
    report = [
        "# Training overhead (`benchmarks/train_speed.py`)",
        "",
        f"Command: `python benchmarks/train_speed.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {C.machine_info()}. The machine was shared with other jobs during the run;",
        "epochs are interleaved round-robin so noise hits both sides alike.",
        "",
        f"One epoch = {args.n} real MNIST training images, batch {args.batch_size}, "
        f"`small_cnn((28, 28, 1), width=16, dense=64)`, Adam 1e-3, PGD-{args.steps} L-inf "
        f"eps {args.eps} step eps/4; median of {args.repeats} epochs after one warm-up epoch.",
        "",
        C.markdown_table(
            [
                "defense",
                "RobustModel.fit s",
                "hand-written s",
                "ratio (target <= 1.05x)",
                "CPU time fit / hand (s)",
                "fit runs (s)",
                "hand-written runs (s)",
            ],
            table,
        ),
        "",
        "Wall-clock medians are the headline; CPU time (all threads of the process) is "
        "given because it is less sensitive to other jobs on a shared machine.",
        "",
    ]
    path = C.write_result("train_speed", "\n".join(report) + "\n", not args.no_write)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


def main_mi(args, ctx, names):
    """The MI rows: defense epoch / PGD-AT epoch, and the estimators alone."""
    table = []
    for name in names:
        row = EXTRA_ROWS[name](ctx)
        times, cpu = measure(row, args.repeats)
        med = {k: float(np.median(v)) for k, v in times.items()}
        cmed = {k: float(np.median(v)) for k, v in cpu.items()}
        ratio = med["robustkit"] / med["handwritten"]
        cpu_ratio = cmed["robustkit"] / cmed["handwritten"]
        est = med["extra"] / med["handwritten"]
        print(
            f"{row.label:28s} defense fit {med['robustkit']:7.2f} s  PGD-AT fit {med['handwritten']:7.2f} s"
            f"  ratio {ratio:.2f}x  CPU-time ratio {cpu_ratio:.2f}x  estimators alone "
            f"{med['extra']:7.2f} s = {est:.2f}x PGD-AT  (wall runs: "
            + " / ".join(str([round(t, 2) for t in times[k]]) for k in times)
            + ")",
            flush=True,
        )
        table.append(
            [
                row.label,
                f"{med['robustkit']:.2f}",
                f"{med['handwritten']:.2f}",
                f"**{ratio:.2f}x**",
                f"{cmed['robustkit']:.2f} / {cmed['handwritten']:.2f} = {cpu_ratio:.2f}x",
                f"{med['extra']:.2f} ({est:.2f}x)",
                " / ".join(" ".join(f"{t:.2f}" for t in times[k]) for k in times),
            ]
        )
    suffix = (
        ""
        if (args.dataset, args.model) == ("mnist", "small_cnn")
        else f"_{args.dataset}_{args.model}"
    )
    if args.features != 2048:
        suffix += f"_f{args.features}"
    report = [
        "# MI-defense training cost (`benchmarks/train_speed.py`, NAMID / WMIM rows)",
        "",
        f"Command: `python benchmarks/train_speed.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {C.machine_info()}. The machine was shared with other jobs during the run;",
        "epochs are interleaved round-robin so noise hits all columns alike.",
        "",
        f"One epoch = {ctx.describe()}, batch {args.batch_size}, Adam 1e-3, PGD-{args.steps} "
        f"L-inf eps {args.eps:.4g} step eps/4, through `rk.RobustModel.fit`; median of "
        f"{args.repeats} epoch(s) after one warm-up epoch. Estimators {args.features} wide "
        f"({'the paper' if args.features == 2048 else 'narrower than the paper, an option'}), "
        "random weights, frozen (the cost does not depend on their values). NAMID: alpha 5, "
        "lam 0.1, the MI term over the whole batch (a mask; the cost does not depend on the "
        "selection). Issue #3's target: ratio <= 1.3x.",
        "",
        C.markdown_table(
            [
                "defense",
                "defense fit s",
                "PGD-AT fit s",
                "ratio",
                "CPU time defense / AT (s)",
                "estimators alone s (x PGD-AT)",
                "runs (s): defense / AT / estimators",
            ],
            table,
        ),
        "",
        "*Estimators alone*: the MI term's forward and backward (to the logits) on the same "
        "images with fixed logits, no model and no attack: what the frozen estimators cost per "
        "epoch whatever the classifier.",
        "",
    ]
    path = C.write_result("train_speed_mi" + suffix, "\n".join(report) + "\n", not args.no_write)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
