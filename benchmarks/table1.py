"""The NAMID paper's Table 1 (Zhou et al., ICML 2022) at CPU scale, L-inf white-box.

Rows: Standard (PGD-AT), WMIM, NAMID, TRADES, NAMID_T, MART, NAMID_M. Columns:
clean accuracy, PGD-40 (step eps/4) and AutoAttack (APGD-CE + APGD-T by
default, a reduced, *non-standard* AutoAttack: see ``--aa``) robust accuracy on
held-out test images, mean +- std over seeds.

Settings: ``mnist`` (real MNIST, ``small_cnn`` width 16, eps 0.3) and
``cifar10`` (the 10,000 real CIFAR-10 test images split 9,000 train / 1,000
test by ``rk.data``, a small ResNet-18 with ``--base-filters`` filters, eps
8/255). Every row trains the same model from the same initial weights (per
seed) for the same epochs: ``--warmup`` clean-CE epochs (NAMID's 2 warm-up
epochs, given to every row so that only the loss differs), then ``--epochs``
adversarial epochs (PGD-``--steps``, step eps/4, radius ramped over the first
half by ``EpsilonWarmup``). NAMID's stage 1 target is the Standard row's model
of the same seed; its stage 2 estimators are trained once per seed on the
training images and shared by NAMID / NAMID_T / NAMID_M (WMIM has its own
standard-MI estimator). Hyper-parameters are fixed in advance (TRADES beta 6,
MART beta 5, NAMID alpha 5, lam 0.1, WMIM alpha 5): nothing is tuned, and the
test images are used only for the final figures.

Results of finished runs are cached in ``benchmarks/.cache/table1_<dataset>.json``
(a rerun resumes; ``--retrain`` starts over); the table is rewritten after every
run to ``benchmarks/results/table1_<dataset>.md``.

Run:  python benchmarks/table1.py --dataset mnist [--seeds 0,1,2] [--n-train 2000] ...
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
from robustkit.namid import (
    NAMID,
    NAMID_M,
    NAMID_T,
    WMIM,
    train_namid_estimators,
    train_standard_estimator,
)

ROWS = ["Standard", "WMIM", "NAMID", "TRADES", "NAMID_T", "MART", "NAMID_M"]
PAPER = {  # CIFAR-10, ResNet-18, L-inf: None / PGD-40 / AA (the paper's Table 1)
    "Standard": (83.39, 42.38, 39.01),
    "WMIM": (80.32, 40.76, 36.05),
    "NAMID": (83.41, 44.79, 39.26),
    "TRADES": (80.70, 46.29, 42.71),
    "NAMID_T": (80.67, 47.53, 43.39),
    "MART": (78.21, 50.23, 43.96),
    "NAMID_M": (78.38, 51.69, 44.42),
}
PAIRS = [
    ("NAMID", "Standard", ">="),
    ("NAMID_T", "TRADES", ">="),
    ("NAMID_M", "MART", ">="),
    ("WMIM", "Standard", "<="),
]


def parse():
    p = C.base_parser(__doc__.split("\n")[0])
    p.add_argument("--dataset", choices=["mnist", "cifar10"], default="mnist")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--n-train", type=int, default=2000, help="training images (class balanced)")
    p.add_argument("--n-test", type=int, default=500, help="test images for clean / PGD-40")
    p.add_argument(
        "--aa-examples", type=int, default=200, help="test images for AutoAttack (0: skip)"
    )
    p.add_argument(
        "--aa",
        default="apgd-ce,apgd-t",
        help="AutoAttack components ('standard' for the full standard version)",
    )
    p.add_argument("--aa-steps", type=int, default=25)
    p.add_argument("--aa-targets", type=int, default=3)
    p.add_argument("--epochs", type=int, default=5, help="adversarial epochs per row")
    p.add_argument("--warmup", type=int, default=2, help="clean-CE epochs before (every row)")
    p.add_argument("--steps", type=int, default=7, help="PGD steps of the training attack")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--lr", type=float, default=1e-3, help="Adam learning rate")
    p.add_argument("--estimator-epochs", type=int, default=5)
    p.add_argument("--features", type=int, default=256, help="estimator width (paper: 2048)")
    p.add_argument("--base-filters", type=int, default=16, help="CIFAR ResNet-18 width")
    p.add_argument("--rows", default=",".join(ROWS))
    p.add_argument("--alpha", type=float, default=5.0, help="NAMID / WMIM alpha (paper: 5)")
    p.add_argument("--lam", type=float, default=0.1, help="NAMID lambda (paper: 0.1)")
    p.add_argument("--estimator-objective", default="paper", choices=["paper", "cosine"])
    p.add_argument(
        "--select",
        default="wrong",
        choices=["wrong", "correct", "all"],
        help="samples of NAMID's MI term",
    )
    p.add_argument("--tag", default="", help="suffix of the result / cache file names")
    p.add_argument(
        "--alpha-grid",
        default="",
        help="comma-separated alphas: choose the MI rows' alpha on a validation split "
        "(10 %% of the training images, never the test images) by NAMID's "
        "(clean + PGD-20)/2 for the first seed; overrides --alpha",
    )
    p.add_argument(
        "--lam-grid",
        default="",
        help="comma-separated lambdas, searched jointly with --alpha-grid (every "
        "pair) on the same validation split; overrides --lam",
    )
    p.add_argument(
        "--eps", type=float, default=None, help="L-inf radius (default: 0.3 MNIST, 8/255 CIFAR-10)"
    )
    return p.parse_args()


def load(args):
    if args.dataset == "mnist":
        x_tr, y_tr, x_te, y_te = C.mnist(args.data_dir, args.n_train, args.n_test, seed=0)
        return (
            x_tr,
            y_tr,
            x_te,
            y_te,
            0.3,
            lambda: rk.models.small_cnn((28, 28, 1), width=16, dense=64),
        )
    x_tr, y_tr = rk.data.subset(
        *rk.data.load("cifar10_test_files", "train", args.data_dir), args.n_train, seed=0
    )
    x_te, y_te = rk.data.subset(
        *rk.data.load("cifar10_test_files", "test", args.data_dir), args.n_test, seed=0
    )
    return (
        x_tr,
        y_tr,
        x_te,
        y_te,
        8 / 255,
        lambda: rk.models.resnet18((32, 32, 3), base_filters=args.base_filters),
    )


def train_row(objective, model_fn, x, y, eps, args, seed):
    keras.utils.set_random_seed(seed)
    base = model_fn()
    if args.warmup:
        base.compile(
            optimizer=keras.optimizers.Adam(args.lr),
            loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        )
        base.fit(x, y, batch_size=args.batch_size, epochs=args.warmup, verbose=0)
    model = rk.RobustModel(
        base, objective=objective, attack=rk.attacks.PGD(eps=eps, steps=args.steps)
    )
    model.compile(optimizer=keras.optimizers.Adam(args.lr))
    hist = model.fit(
        x,
        y,
        batch_size=args.batch_size,
        epochs=args.epochs,
        verbose=0,
        callbacks=[rk.callbacks.EpsilonWarmup(epochs=max(args.epochs / 2, 0.5))],
    )
    return base, {k: float(v[-1]) for k, v in hist.history.items()}


def evaluate(model, x, y, eps, args, seed):
    acc = lambda xs, ys: float(
        np.mean(np.argmax(model.predict(xs, verbose=0, batch_size=500), -1) == ys)
    )
    out = {"clean": acc(x, y)}
    x_pgd = rk.attacks.PGD(eps=eps, steps=40, seed=seed)(model, x, y)
    out["pgd40"] = acc(x_pgd, y)
    if args.aa_examples:
        n = min(args.aa_examples, len(x))
        if args.aa == "standard":
            aa = rk.attacks.AutoAttack(eps=eps, seed=seed)
        else:
            aa = rk.attacks.AutoAttack(
                eps=eps,
                attacks=args.aa.split(","),
                steps=args.aa_steps,
                n_target_classes=args.aa_targets,
                seed=seed,
            )
        out["aa"] = acc(aa(model, x[:n], y[:n]), y[:n])
        out["aa_n"] = n
    return out


def estimator_kwargs(args, seed):
    return dict(
        features=args.features,
        epochs=args.estimator_epochs,
        batch_size=400,
        learning_rate=1e-2,
        milestones=(int(0.4 * args.estimator_epochs), int(0.8 * args.estimator_epochs)),
        seed=seed,
    )


def select_alpha(args, model_fn, x_tr, y_tr, eps, attack):
    """Chooses NAMID's alpha from ``--alpha-grid`` (and lambda from ``--lam-grid``,
    every pair) on a validation split of the training images (the last 10 % of a
    fixed permutation; the test images are not touched): stage 1 and 2 on the
    other 90 %, one NAMID model per setting, score (clean + PGD-20 accuracy) / 2
    on the validation images, first seed only."""
    seed = int(args.seeds.split(",")[0])
    order = np.random.default_rng(1234).permutation(len(x_tr))
    n_val = max(len(x_tr) // 10, 1)
    val, fit = order[:n_val], order[n_val:]
    xf, yf, xv, yv = x_tr[fit], y_tr[fit], x_tr[val], y_tr[val]
    target, _ = train_row(rk.objectives.AT(), model_fn, xf, yf, eps, args, seed)
    nat, adv, _ = train_namid_estimators(
        target, (xf, yf), attack, objective=args.estimator_objective, **estimator_kwargs(args, seed)
    )
    scores, settings = {}, {}
    lams = [float(v) for v in args.lam_grid.split(",")] if args.lam_grid else [args.lam]
    for alpha in [float(a) for a in args.alpha_grid.split(",")]:
        for lam in lams:
            key = f"{alpha:g}" if not args.lam_grid else f"{alpha:g}/{lam:g}"
            settings[key] = (alpha, lam)
            model, _ = train_row(
                NAMID(nat, adv, alpha=alpha, lam=lam, select=args.select),
                model_fn,
                xf,
                yf,
                eps,
                args,
                seed,
            )
            clean = float(np.mean(np.argmax(model.predict(xv, verbose=0), -1) == yv))
            x_adv = rk.attacks.PGD(eps=eps, steps=20, seed=seed)(model, xv, yv)
            robust = float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == yv))
            scores[key] = [round(clean, 4), round(robust, 4)]
            print(
                f"  alpha {alpha:g} lam {lam:g}: validation clean {100 * clean:.1f}  "
                f"PGD-20 {100 * robust:.1f}",
                flush=True,
            )
    best = max(scores, key=lambda a: sum(scores[a]))
    return {
        "alpha": settings[best][0],
        "lam": settings[best][1],
        "scores": scores,
        "n_val": int(n_val),
        "seed": seed,
    }


def fmt(values):
    if not values:
        return "–"
    a = 100 * np.asarray(values)
    return f"{a.mean():.2f} ± {a.std():.2f}" if len(a) > 1 else f"{a.mean():.2f}"


def alpha_note(args):
    sel = getattr(args, "alpha_selection", None)
    if not sel:
        return []
    name = "alpha / lam" if args.lam_grid else "alpha"
    scores = "; ".join(
        f"{name} {a}: clean {100 * c:.1f} / PGD-20 {100 * r:.1f} %"
        for a, (c, r) in sel["scores"].items()
    )
    chosen = f"alpha = {sel['alpha']:g}" + (f", lam = {sel['lam']:g}" if args.lam_grid else "")
    return [
        f"MI rows' {name} chosen on a validation split ({sel['n_val']} of the training images, "
        f"seed {sel['seed']}; stage 1-3 on the rest) by NAMID's (clean + PGD-20)/2: "
        f"**{chosen}** ({scores}). The test images were not used.",
        "",
    ]


def write_table(args, results, elapsed):
    seeds = sorted({r["seed"] for r in results.values() if "row" in r})
    rows = [r for r in args.rows.split(",")]
    has_aa = any("aa" in r for r in results.values())
    head = ["defense", "clean", "PGD-40"] + (
        ["AA (reduced)" if args.aa != "standard" else "AA"] if has_aa else []
    )
    head += ["runs", "paper CIFAR-10 clean / PGD-40 / AA"]
    table, means = [], {}
    for row in rows:
        runs = [results[k] for k in results if results[k].get("row") == row]
        cols = [fmt([r["clean"] for r in runs]), fmt([r["pgd40"] for r in runs])]
        if has_aa:
            cols.append(fmt([r["aa"] for r in runs if "aa" in r]))
        means[row] = {
            m: float(np.mean([r[m] for r in runs])) if runs else None for m in ("clean", "pgd40")
        }
        if has_aa:
            aas = [r["aa"] for r in runs if "aa" in r]
            means[row]["aa"] = float(np.mean(aas)) if aas else None
        table.append([row] + cols + [str(len(runs)), " / ".join(f"{v:.2f}" for v in PAPER[row])])
    verdicts = []
    for a, b, op in PAIRS:
        for metric in ("pgd40", "aa", "clean"):
            va, vb = means.get(a, {}).get(metric), means.get(b, {}).get(metric)
            if va is None or vb is None:
                continue
            holds = va >= vb if op == ">=" else va <= vb
            verdicts.append(
                f"- {a} {op} {b} on {metric}: {100 * va:.2f} vs {100 * vb:.2f} -> "
                f"**{'holds' if holds else 'does not hold'}**"
            )
    eps = "0.3" if args.dataset == "mnist" else "8/255"
    if args.eps is not None:
        eps = f"{args.eps:g} (NOT the paper's {eps}: reduced for this CPU-scale run)"
    model = (
        "`small_cnn((28, 28, 1), width=16, dense=64)`"
        if args.dataset == "mnist"
        else f"`resnet18(base_filters={args.base_filters})`"
    )
    aa_desc = (
        "standard AutoAttack"
        if args.aa == "standard"
        else f"reduced AutoAttack ({args.aa}, {args.aa_steps} steps, {args.aa_targets} target classes; "
        "not the standard version)"
    )
    lines = [
        f"# Table 1 at CPU scale: {args.dataset} (`benchmarks/table1.py`)",
        "",
        f"Command: `python benchmarks/table1.py {' '.join(sys.argv[1:])}`",
        "",
        f"Machine: {C.machine_info()}; shared with other jobs during the run. "
        f"Wall time so far: {elapsed / 60:.1f} min.",
        "",
        f"Setting: L-inf eps {eps}; {args.n_train} training images (class balanced), "
        f"{args.n_test} test images for clean and PGD-40 (step eps/4), "
        f"{args.aa_examples} of them for the {aa_desc}. Model {model}, Adam {args.lr}, batch "
        f"{args.batch_size}; per row {args.warmup} clean warm-up epochs + {args.epochs} adversarial "
        f"epochs (PGD-{args.steps}, step eps/4, eps ramped over the first half). NAMID stage 2: "
        f"estimators of width {args.features} (paper: 2048), {args.estimator_epochs} epochs, Adam "
        f"1e-2 (x0.1 at 40 % and 80 %), batch 400, {args.estimator_objective} objective. Seeds: "
        f"{', '.join(map(str, seeds))} (mean ± std over seeds, accuracy in %). "
        + (
            f"Only the MI rows' {'alpha and lam were' if args.lam_grid else 'alpha was'} chosen, on a validation split (below); the other "
            if getattr(args, "alpha_selection", None)
            else "Nothing was tuned on these data; "
        )
        + f"hyper-parameters fixed in advance (TRADES beta 6, MART beta 5, NAMID alpha "
        f"{args.alpha:g} / lam {args.lam:g} / MI term on the {args.select!r} samples, WMIM alpha {args.alpha:g}).",
        "",
        *alpha_note(args),
        C.markdown_table(head, table),
        "",
        "The last column is the paper's CIFAR-10 ResNet-18 row (100+ epochs, full data) for "
        "the layout only; the figures here are not comparable to it.",
        "",
        "## Does the paper's ordering hold at this scale?",
        "",
        *verdicts,
        "",
    ]
    path = C.write_result(
        f"table1_{args.dataset}{args.tag}", "\n".join(lines) + "\n", not args.no_write
    )
    return path


def main():
    args = parse()
    print(C.machine_info(), flush=True)
    x_tr, y_tr, x_te, y_te, eps, model_fn = load(args)
    if args.eps is not None:
        eps = args.eps
    rows = args.rows.split(",")
    unknown = set(rows) - set(ROWS)
    if unknown:
        sys.exit(f"unknown rows {sorted(unknown)}; choose from {ROWS}")
    os.makedirs(C.CACHE, exist_ok=True)
    cache = os.path.join(C.CACHE, f"table1_{args.dataset}{args.tag}.json")
    results = {}
    if os.path.exists(cache) and not args.retrain:
        with open(cache) as f:
            results = json.load(f)
    t0 = time.time()
    attack = rk.attacks.PGD(eps=eps, steps=args.steps)
    if args.alpha_grid:
        key = f"alpha_selection/{args.alpha_grid}" + (
            f"/lam/{args.lam_grid}" if args.lam_grid else ""
        )
        if key not in results:
            results[key] = select_alpha(args, model_fn, x_tr, y_tr, eps, attack)
            with open(cache, "w") as f:
                json.dump(results, f, indent=1)
        args.alpha = results[key]["alpha"]
        args.lam = results[key].get("lam", args.lam)
        args.alpha_selection = results[key]
        print(
            f"alpha for the MI rows: {args.alpha:g}, lam {args.lam:g} (validation scores "
            f"{results[key]['scores']})",
            flush=True,
        )
    for seed in [int(s) for s in args.seeds.split(",")]:
        target, estimators = None, {}

        def need(row):
            return f"{row}/{seed}" not in results and row in rows

        for row in rows:
            if not need(row):
                continue
            t = time.time()
            if row in ("NAMID", "NAMID_T", "NAMID_M", "WMIM") and target is None:
                # stage 1: the Standard row's model of this seed (retrained if not kept)
                target, _ = train_row(rk.objectives.AT(), model_fn, x_tr, y_tr, eps, args, seed)
            est_kw = estimator_kwargs(args, seed)
            if row in ("NAMID", "NAMID_T", "NAMID_M") and "namid" not in estimators:
                nat, adv, info = train_namid_estimators(
                    target, (x_tr, y_tr), attack, objective=args.estimator_objective, **est_kw
                )
                estimators["namid"] = (nat, adv)
                print(
                    f"  stage 2 (seed {seed}): {info['counts']} used {info['used']}, last epoch "
                    f"gaps {np.round(info['history'][-1][2:], 3).tolist()}",
                    flush=True,
                )
            if row == "WMIM" and "wmim" not in estimators:
                estimators["wmim"] = train_standard_estimator(
                    target, (x_tr, y_tr), attack, **est_kw
                )[0]
            objective = {
                "Standard": lambda: rk.objectives.AT(),
                "TRADES": lambda: rk.objectives.TRADES(beta=6.0),
                "MART": lambda: rk.objectives.MART(beta=5.0),
                "WMIM": lambda: WMIM(estimators["wmim"], alpha=args.alpha),
                "NAMID": lambda: NAMID(
                    *estimators["namid"], alpha=args.alpha, lam=args.lam, select=args.select
                ),
                "NAMID_T": lambda: NAMID_T(
                    *estimators["namid"],
                    beta=6.0,
                    alpha=args.alpha,
                    lam=args.lam,
                    select=args.select,
                ),
                "NAMID_M": lambda: NAMID_M(
                    *estimators["namid"],
                    beta=5.0,
                    alpha=args.alpha,
                    lam=args.lam,
                    select=args.select,
                ),
            }[row]()
            model, logs = train_row(objective, model_fn, x_tr, y_tr, eps, args, seed)
            if row == "Standard":
                target = model
            res = evaluate(model, x_te, y_te, eps, args, seed)
            res.update(row=row, seed=seed, seconds=time.time() - t, train_logs=logs)
            results[f"{row}/{seed}"] = res
            with open(cache, "w") as f:
                json.dump(results, f, indent=1)
            print(
                f"{row:9s} seed {seed}: clean {100 * res['clean']:.1f}  PGD-40 {100 * res['pgd40']:.1f}"
                + (f"  AA {100 * res['aa']:.1f}" if "aa" in res else "")
                + f"  ({res['seconds']:.0f} s)",
                flush=True,
            )
            path = write_table(args, results, time.time() - t0)
    path = write_table(args, results, time.time() - t0)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")
        with open(path) as f:
            print(f.read())


if __name__ == "__main__":
    main()
