"""The NAMID paper's Table 1 (Zhou et al., ICML 2022) at CPU scale, with the released code's
NAMID (issue #12): two runs that separate the MI terms from the stronger training attack.

Rows: Standard (PGD-AT), WMIM, NAMID, TRADES, NAMID_T, MART, NAMID_M. Runs:

* ``release``: the authors' attacks: the baselines (Standard, TRADES, MART, WMIM) train with
  PGD-10, the NAMID rows with PGD-40 (the released ``train_MIAT.py``);
* ``same``: every row trains with PGD-40, so a NAMID row differs from its baseline only
  by the MI term.

The NAMID rows are the same models in both runs. Every training attack is the released
``craft_adversarial_example_pgd`` (:func:`robustkit.namid.release_attack`: start
``x + 0.001 N(0, 1)``, L-inf step 0.007 at eps 8/255 and the same step / eps ratio at other
radii, L2 step ``2 eps / steps``). NAMID as released: stage 1 = the Standard row of the
release run (PGD-10); stage 2 = the released objective and per-location DV, examples from
L2 PGD-20 at the L2 radius (the released default), batch 400, Adam 1e-2 x0.1 at 40 % / 80 %
of the epochs, one estimator pair per seed shared by NAMID / NAMID_T / NAMID_M; stage 3 =
``CE + 5 (L_cos_n + L_cos_a)`` on W, lam 0. WMIM (no released code): its standard-MI
estimator trained on the stage-1 target with the PGD-10 examples, alpha 5.

Every row: the same initial weights per seed, ``--warmup`` clean-CE epochs, then
``--epochs`` adversarial epochs (Adam, eps ramped over the first half). Columns
(``--norm linf``): clean, PGD-40 (robustkit's: step eps/4, uniform start, the first
misclassified iterate kept) and AutoAttack with the NAMID paper's 40 iterations
(``--aa namid``); ``--norm l2`` (MNIST): clean, PGD-40, CW (the NAMID evaluation script's
4 x 10 budget) and DDN-20, success counted inside the eps ball. Mean +- std over seeds; the claims are
judged on the per-seed paired differences (same seed, same test images).

Resumable: trained models, estimators and results are cached under
``benchmarks/.cache/table1/<dataset>_<norm><tag>/``; the table is rewritten after every
row to ``benchmarks/results/table1_<dataset>_<norm><tag>.md``. ``--results FILE`` keeps the
per-row results in a file of your choice instead (e.g. under ``benchmarks/results/``, committed),
so that a table too long for one sitting (CIFAR-10: about two hours per seed here) is built one
seed at a time; the table states which seeds it holds.

Run:  python benchmarks/table1.py --dataset mnist [--norm l2] [--seeds 0,1,2] ...
"""

import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import keras
import numpy as np

import robustkit as rk
from robustkit.evaluation.suites import FACTORIES
from robustkit.namid import (
    NAMID,
    NAMID_M,
    NAMID_T,
    WMIM,
    load_estimators,
    release_attack,
    save_estimators,
    train_namid_estimators,
    train_standard_estimator,
)

ROWS = ["Standard", "WMIM", "NAMID", "TRADES", "NAMID_T", "MART", "NAMID_M"]
MI_ROWS = ("NAMID", "NAMID_T", "NAMID_M")
RUNS = {"release": {"base": 10, "mi": 40}, "same": {"base": 40, "mi": 40}}
PAIRS = [
    ("NAMID", "Standard", ">="),
    ("NAMID_T", "TRADES", ">="),
    ("NAMID_M", "MART", ">="),
    ("WMIM", "Standard", "<="),
]
# the paper's Table 1, CIFAR-10, ResNet-18 (SPEC section 4), for the layout only
PAPER = {
    "linf": {  # None / PGD-40 / AA
        "Standard": (83.39, 42.38, 39.01), "WMIM": (80.32, 40.76, 36.05),
        "NAMID": (83.41, 44.79, 39.26), "TRADES": (80.70, 46.29, 42.71),
        "NAMID_T": (80.67, 47.53, 43.39), "MART": (78.21, 50.23, 43.96),
        "NAMID_M": (78.38, 51.69, 44.42),
    },
    "l2": {  # None / PGD-40 / CW / DDN
        "Standard": (83.97, 61.69, 30.96, 29.34), "WMIM": (81.29, 58.36, 28.41, 27.13),
        "NAMID": (84.35, 62.38, 34.48, 32.41), "TRADES": (83.72, 63.17, 33.81, 32.06),
        "NAMID_T": (84.19, 64.75, 35.41, 34.27), "MART": (83.36, 65.38, 35.57, 34.69),
        "NAMID_M": (84.07, 66.03, 36.19, 35.76),
    },
}  # fmt: skip
METRICS = {"linf": ("clean", "pgd40", "aa"), "l2": ("clean", "pgd40", "cw", "ddn")}
NAMES = {"clean": "clean", "pgd40": "PGD-40", "aa": "AA-40", "cw": "CW", "ddn": "DDN"}


def parse():
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    p.add_argument("--norm", choices=["linf", "l2"], default="linf")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--runs", default="release,same")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument(
        "--same-rows", default=",".join(ROWS), help="rows of the `same` run (default: all)"
    )
    p.add_argument("--n-train", type=int, default=None, help="MNIST 4000, CIFAR-10 9000")
    p.add_argument("--n-test", type=int, default=None, help="MNIST 500, CIFAR-10 1000")
    p.add_argument("--robust-examples", type=int, default=200, help="for AA-40 / CW / DDN")
    p.add_argument("--aa", choices=["namid", "standard"], default="namid")
    p.add_argument("--epochs", type=int, default=None, help="adversarial epochs: 5 / 3")
    p.add_argument("--warmup", type=int, default=2, help="clean-CE epochs first (the release)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--estimator-epochs", type=int, default=10)
    p.add_argument("--features", type=int, default=256, help="estimator width (paper 2048)")
    p.add_argument("--base-filters", type=int, default=8, help="CIFAR ResNet-18 width")
    p.add_argument("--tag", default="")
    p.add_argument(
        "--reevaluate",
        action="store_true",
        help="measure the robust columns again (AA-40, or CW / DDN) for --seeds' finished rows "
        "from their cached models (nothing trained; a row without a cached model is an error); "
        "the previous values stay in the row under '<column>_before'",
    )
    p.add_argument(
        "--results",
        default=None,
        help="the per-row results file (default: in the cache). Point it at a file under "
        "benchmarks/results/ to build a table one seed per session (finished rows are skipped; "
        "the NAMID rows of a seed need its Standard row's model, so finish a seed in one go)",
    )
    return p.parse_args()


def setting(args):
    """Data, radii and the model builder of ``--dataset``."""
    if args.dataset == "mnist":
        n_train, n_test, epochs = args.n_train or 4000, args.n_test or 500, args.epochs or 5
        x_tr, y_tr, x_te, y_te = C.mnist(args.data_dir, n_train, n_test, seed=0)
        model_fn = lambda: rk.models.small_cnn((28, 28, 1), width=16, dense=64)
        model = "`small_cnn((28, 28, 1), width=16, dense=64)`"
    else:
        n_train, n_test, epochs = args.n_train or 9000, args.n_test or 1000, args.epochs or 3
        full = rk.data.load("cifar10_test_files", "train", args.data_dir)
        x_tr, y_tr = rk.data.subset(*full, n_train, seed=0)
        x_te, y_te = rk.data.subset(
            *rk.data.load("cifar10_test_files", "test", args.data_dir), n_test, seed=0
        )
        model_fn = lambda: rk.models.resnet18((32, 32, 3), base_filters=args.base_filters)
        model = f"`resnet18(base_filters={args.base_filters})`"
    eps = rk.threat.default_eps(args.norm, args.dataset)
    l2_eps = rk.threat.default_eps("l2", args.dataset)
    return dict(x_tr=x_tr, y_tr=y_tr, x_te=x_te, y_te=y_te, eps=eps, l2_eps=l2_eps,
                model_fn=model_fn, model=model, epochs=epochs)  # fmt: skip


def train_row(objective, s, attack, args, seed):
    """Warm-up (clean CE), then ``RobustModel.fit`` with ``attack``; every row from the same
    initial weights per seed."""
    keras.utils.set_random_seed(seed)
    base = s["model_fn"]()
    loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    base.compile(optimizer=keras.optimizers.Adam(args.lr), loss=loss)
    base.fit(s["x_tr"], s["y_tr"], batch_size=args.batch_size, epochs=args.warmup, verbose=0)
    model = rk.RobustModel(base, objective=objective, attack=attack)
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    ramp = [rk.callbacks.EpsilonWarmup(epochs=max(s["epochs"] / 2, 0.5))]
    hist = model.fit(s["x_tr"], s["y_tr"], batch_size=args.batch_size, epochs=s["epochs"],
                     verbose=0, callbacks=ramp)  # fmt: skip
    return base, {k: float(v[-1]) for k, v in hist.history.items()}


def evaluate(model, s, args, seed):
    x, y, eps, norm = s["x_te"], s["y_te"], s["eps"], args.norm
    acc = lambda xs, ys: float(np.mean(np.argmax(model.predict(xs, verbose=0), -1) == ys))
    out = {"clean": acc(x, y)}
    out["pgd40"] = rk.evaluation.measure(model, (x, y), FACTORIES["PGD-40"](eps, norm, seed=seed))
    out["pgd40"] = out["pgd40"].robust_accuracy
    out.update(robust_columns(model, s, args, seed))
    return out


def robust_columns(model, s, args, seed):
    """AA-40 (linf) or CW and DDN (l2) on the first ``--robust-examples`` test images."""
    x, y, eps, norm = s["x_te"], s["y_te"], s["eps"], args.norm
    out = {}
    n = min(args.robust_examples, len(x))
    if norm == "linf":
        steps = None if args.aa == "standard" else 40
        attacks = {"aa": rk.attacks.AutoAttack(eps=eps, steps=steps, seed=seed)}
    else:  # CW with the NAMID evaluation script's budget (4 x 10, c0 1, kappa 1); DDN-20
        attacks = {
            "cw": rk.attacks.CW(steps=10, binary_search_steps=4, initial_const=1.0,
                                confidence=1.0, eps=eps, seed=seed),
            "ddn": FACTORIES["DDN"](eps, norm, seed=seed),
        }  # fmt: skip
    for col, attack in attacks.items():
        out[col] = rk.evaluation.measure(model, (x[:n], y[:n]), attack).robust_accuracy
    out["robust_n"] = n
    return out


class Stages:
    """Cached models and estimators of one setting (``--retrain`` ignores the cache)."""

    def __init__(self, folder, s, args):
        self.folder, self.s, self.args = folder, s, args
        os.makedirs(folder, exist_ok=True)

    def attack(self, steps):
        return release_attack(self.s["eps"], steps, self.args.norm)

    def path(self, key):
        """Where the model of row ``key`` (``row|steps|seed``) is cached."""
        return os.path.join(self.folder, f"{key.replace('|', '_')}.weights.h5")

    def model(self, key, build):
        path = self.path(key)
        if os.path.exists(path) and not self.args.retrain:
            model = self.s["model_fn"]()
            model.load_weights(path)
            return model, None
        model, logs = build()
        model.save_weights(path)
        return model, logs

    def target(self, seed):  # stage 1: the release run's Standard row
        return self.model(f"Standard|10|{seed}", lambda: train_row(
            rk.objectives.AT(), self.s, self.attack(10), self.args, seed))[0]  # fmt: skip

    def estimators(self, kind, seed):
        folder = os.path.join(self.folder, f"estimators_{kind}_{seed}")
        names = ("natural", "adversarial") if kind == "namid" else ("standard",)
        info_path = os.path.join(folder, "info.json")
        if os.path.exists(info_path) and not self.args.retrain:
            with open(info_path) as f:
                return load_estimators(folder, names), json.load(f)
        a, s, target = self.args, self.s, self.target(seed)
        e = a.estimator_epochs
        kw = dict(features=a.features, epochs=e, batch_size=400, learning_rate=1e-2,
                  milestones=(int(0.4 * e), int(0.8 * e)), seed=seed)  # fmt: skip
        data = (s["x_tr"], s["y_tr"])
        t = time.time()
        if kind == "namid":
            stage2 = release_attack(s["l2_eps"], 20, "l2")
            nat, adv, info = train_namid_estimators(target, data, stage2, **kw)
            ests = (nat, adv)
        else:
            est, info = train_standard_estimator(target, data, self.attack(10), **kw)
            ests = (est,)
        info["seconds"] = round(time.time() - t, 1)
        save_estimators(folder, **dict(zip(names, ests)))
        with open(info_path, "w") as f:
            json.dump(info, f)
        return ests, info


def objective_of(row, stages, seed):
    if row == "Standard":
        return rk.objectives.AT()
    if row == "TRADES":
        return rk.objectives.TRADES(beta=6.0)
    if row == "MART":
        return rk.objectives.MART(beta=5.0)
    if row == "WMIM":
        return WMIM(stages.estimators("wmim", seed)[0][0], alpha=5.0)
    nat, adv = stages.estimators("namid", seed)[0]
    cls, extra = {"NAMID": (NAMID, {}), "NAMID_T": (NAMID_T, {"beta": 6.0}),
                  "NAMID_M": (NAMID_M, {"beta": 5.0})}[row]  # fmt: skip
    return cls(nat, adv, **extra)  # the released stage 3: alpha 5, lam 0, W


# ---------------------------------------------------------------------- report
def fmt(values):
    a = 100 * np.asarray(values)
    if not len(a):
        return "–"
    return f"{a.mean():.1f} ± {a.std(ddof=1):.1f}" if len(a) > 1 else f"{a.mean():.1f}"


def verdict(diffs, op):
    """Paired per-seed differences (in points) -> ``mean ± SE`` and a verdict: holds /
    contradicted when the mean is more than 2 standard errors on one side, else
    inconclusive."""
    d = 100 * np.asarray(diffs)
    if len(d) < 2:
        return f"{d.mean():+.1f} (1 seed)", "one seed"
    se = d.std(ddof=1) / np.sqrt(len(d))
    sign = 1 if op == ">=" else -1
    if sign * d.mean() > 2 * se:
        v = "holds"
    elif sign * d.mean() < -2 * se:
        v = "contradicted"
    else:
        v = "inconclusive"
    return f"{d.mean():+.1f} ± {se:.1f}", v


def write_table(args, s, results, elapsed):
    metrics = METRICS[args.norm]
    rows = args.rows.split(",")
    lines = [
        f"# Table 1 at CPU scale, released NAMID: {args.dataset}, {args.norm} "
        "(`benchmarks/table1.py`)", "",
        f"Command: `python benchmarks/table1.py {' '.join(sys.argv[1:])}`; seeds in this "
        f"table: {sorted({int(k.split('|')[2]) for k in results if k.count('|') == 2})}", "",
        f"Machine: {C.machine_info()}; shared with other jobs. Wall time of this "
        f"invocation: {elapsed / 60:.0f} min.", "",
        f"Setting: {args.norm} eps {s['eps']:.4g}; {len(s['x_tr'])} training images (class "
        f"balanced), {len(s['x_te'])} test images for clean and PGD-40, the first "
        f"{args.robust_examples} of them for "
        + ("AA-40 (APGD-CE, APGD-T, FAB-T with 40 iterations as the NAMID paper's evaluation "
           "script, Square 5000)" if args.norm == "linf" else
           "CW (4 x 10 steps, c0 1, kappa 1: the NAMID evaluation script's budget) and "
           "robustkit's DDN-20, both counted inside the eps ball")
        + f". Model {s['model']}, Adam {args.lr}, batch {args.batch_size}, {args.warmup} "
        f"clean warm-up epochs + {s['epochs']} adversarial epochs per row. Stage 2: "
        f"width {args.features} (paper 2048), {args.estimator_epochs} epochs (release 25). "
        "Accuracy in %, mean ± std over seeds.", "",
    ]  # fmt: skip
    for run in args.runs.split(","):
        steps = RUNS[run]
        head = ["defense", "train attack"] + [NAMES[m] for m in metrics]
        head += ["seeds", "paper CIFAR-10"]
        table = []
        for row in rows:
            k = steps["mi" if row in MI_ROWS else "base"]
            runs = [r for key, r in results.items() if key.startswith(f"{row}|{k}|")]
            table.append([row, f"PGD-{k}"] + [fmt([r[m] for r in runs]) for m in metrics]
                         + [str(len(runs)), " / ".join(f"{v:.2f}" for v in PAPER[args.norm][row])])  # fmt: skip
        title = {"release": "the release's attacks (baselines PGD-10, NAMID rows PGD-40)",
                 "same": "the same attack for every row (PGD-40)"}[run]  # fmt: skip
        lines += [f"## Run `{run}`: {title}", "", C.markdown_table(head, table), ""]
        lines += ["Paired differences (points; mean ± standard error over seeds):", ""]
        for a, b, op in PAIRS:
            ka, kb = steps["mi" if a in MI_ROWS else "base"], steps["base"]
            seeds = sorted(
                int(key.split("|")[2]) for key in results
                if key.startswith(f"{a}|{ka}|") and f"{b}|{kb}|{key.split('|')[2]}" in results
            )  # fmt: skip
            if not seeds:
                continue
            parts = []
            for m in metrics:
                diffs = [
                    results[f"{a}|{ka}|{sd}"][m] - results[f"{b}|{kb}|{sd}"][m] for sd in seeds
                ]
                est, v = verdict(diffs, op)
                parts.append(f"{NAMES[m]} {est} → **{v}**")
            lines.append(f"- {a} {op} {b} (seeds {seeds}): " + "; ".join(parts))
        lines.append("")
    stage2 = {k.split("|")[1]: v for k, v in results.items() if k.startswith("stage2|")}
    if stage2:
        lines += ["Stage 2 (per seed): counts C / W / R in the last epoch, last-epoch losses "
                  "and W gaps (loss_n, loss_a, gap_n, gap_a), seconds:", ""]  # fmt: skip
        for seed, info in sorted(stage2.items()):
            c = info["counts"]
            h = ", ".join(f"{v:.3f}" for v in info["history"][-1])
            lines.append(f"- seed {seed}: {c['C']} / {c['W']} / {c['R']}; ({h}); "
                         f"{info.get('seconds', '?')} s")  # fmt: skip
        lines.append("")
    name = f"table1_{args.dataset}_{args.norm}{args.tag}"
    return C.write_result(name, "\n".join(lines) + "\n", not args.no_write)


def reevaluate(args, s, stages, results, cache):
    """``--reevaluate``: the robust columns of ``--seeds``' finished rows, again."""
    seeds, rows = set(args.seeds.split(",")), set(args.rows.split(","))
    keys = [k for k in results if k.count("|") == 2 and k.split("|")[2] in seeds]
    keys = [k for k in keys if k.split("|")[0] in rows]
    if not keys:
        sys.exit(f"--reevaluate: no finished row of --rows {args.rows} for --seeds {args.seeds}")
    paths = {k: stages.path(k) for k in keys}
    missing = [k for k, path in paths.items() if not os.path.exists(path)]
    if missing:
        sys.exit(f"--reevaluate: no cached model for {missing} in {stages.folder}")
    for key in keys:
        t = time.time()
        model = s["model_fn"]()
        model.load_weights(paths[key])
        new = robust_columns(model, s, args, int(key.split("|")[2]))
        row = results[key]
        for col, value in new.items():
            if col != "robust_n":
                row.setdefault(f"{col}_before", row[col])
            row[col] = value
        with open(cache, "w") as f:
            json.dump(results, f, indent=1)
        print(f"{key:18s} " + "  ".join(
            f"{c} {100 * row[f'{c}_before']:.1f} -> {100 * v:.1f}"
            for c, v in new.items() if c != "robust_n") + f"  ({time.time() - t:.0f} s)",
            flush=True)  # fmt: skip


def main():
    args = parse()
    print(C.machine_info(), flush=True)
    s = setting(args)
    rows, runs, same_rows = args.rows.split(","), args.runs.split(","), args.same_rows.split(",")
    if set(rows) - set(ROWS) or set(runs) - set(RUNS):
        sys.exit(f"rows must be in {ROWS}, runs in {list(RUNS)}")
    folder = os.path.join(C.CACHE, "table1", f"{args.dataset}_{args.norm}{args.tag}")
    stages = Stages(folder, s, args)
    cache = args.results or os.path.join(folder, "results.json")
    results = {}
    if os.path.exists(cache) and not args.retrain:
        with open(cache) as f:
            results = json.load(f)
    t0 = time.time()
    if args.reevaluate:
        return reevaluate(args, s, stages, results, cache)
    for seed in [int(v) for v in args.seeds.split(",")]:
        todo = []  # (row, steps): the release run's baselines first (Standard = the target)
        for run in runs:
            for row in rows if run == "release" else [r for r in rows if r in same_rows]:
                k = RUNS[run]["mi" if row in MI_ROWS else "base"]
                if (row, k) not in todo:
                    todo.append((row, k))
        for row, k in sorted(todo, key=lambda rk_: (rk_[1], ROWS.index(rk_[0]))):
            key = f"{row}|{k}|{seed}"
            if key in results:
                continue
            t = time.time()
            objective = objective_of(row, stages, seed)
            if row in MI_ROWS:
                results[f"stage2|{seed}"] = stages.estimators("namid", seed)[1]
            model, logs = stages.model(key, lambda: train_row(
                objective, s, stages.attack(k), args, seed))  # fmt: skip
            res = evaluate(model, s, args, seed)
            res.update(seconds=round(time.time() - t), train_logs=logs)
            results[key] = res
            with open(cache, "w") as f:
                json.dump(results, f, indent=1)
            print(f"{key:18s} " + "  ".join(f"{m} {100 * res[m]:.1f}" for m in METRICS[args.norm])
                  + f"  ({res['seconds']} s)", flush=True)  # fmt: skip
            write_table(args, s, results, time.time() - t0)
    path = write_table(args, s, results, time.time() - t0)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
