"""AutoAttack speed and strength: robustkit vs IBM ART 1.20 on a PGD-trained MNIST CNN.

Run by hand (not by the tests)::

    pip install "adversarial-robustness-toolbox==1.20.*" multiprocess   # benchmark only
    python benchmarks/attack_speed.py                 # 1,000 test images, ART on 100
    python benchmarks/attack_speed.py --art-n 1000    # the full ART run (slow)
    python benchmarks/attack_speed.py --art-n 0 --name attack_speed_robustkit_only

What it does:

1. trains (or loads from ``benchmarks/.cache/``) a small CNN with a hand-written
   PGD-AT loop (``_common.train_pgd_at``: L-inf eps 0.3, 10-step PGD, linear eps
   warm-up over half an epoch, 3 epochs on 20,000 real MNIST training images);
2. measures clean accuracy and robustkit PGD-40 accuracy (step eps/4) on
   ``--n`` real MNIST test images;
3. runs robustkit ``AutoAttack(eps=0.3, norm="linf", version="standard")``
   (APGD-CE, APGD-T x9, FAB-T x9, Square 5,000 queries) on the ``--n`` images;
4. runs ART's ``AutoAttack`` (its default attack set: APGD-CE and APGD-DLR with 5
   random restarts each, DeepFool, Square 5,000 queries x 5 restarts; untargeted;
   no FAB) on the first ``--art-n`` of them, and robustkit's on the same subset;
   ART's time is extrapolated linearly to ``--n`` images when ``--art-n < --n``.

The speed-up is the ratio of seconds per image on the same subset and the same
model, measured in one run (machines are noisy: compare ratios, not seconds).
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import numpy as np

rk = C.rk


def build():
    return rk.models.small_cnn((28, 28, 1), width=16, dense=64, name="mnist_pgdat_aa")


def run_art(model, x, y, eps, batch_size):
    """ART 1.20 AutoAttack with its default attacks; returns (x_adv, seconds)."""
    import keras
    from art.attacks.evasion import AutoAttack as ArtAutoAttack
    from art.estimators.classification import TensorFlowV2Classifier

    clf = TensorFlowV2Classifier(
        model=model,
        nb_classes=10,
        input_shape=(28, 28, 1),
        loss_object=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
        clip_values=(0.0, 1.0),
    )
    art_aa = ArtAutoAttack(
        estimator=clf, norm=np.inf, eps=eps, eps_step=eps / 4, batch_size=batch_size
    )
    t0 = time.perf_counter()
    x_adv = art_aa.generate(x=x, y=y)
    return x_adv, time.perf_counter() - t0


def main():
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="test images for robustkit")
    p.add_argument("--art-n", type=int, default=100, help="test images for ART (0 = skip)")
    p.add_argument("--eps", type=float, default=0.3)
    p.add_argument("--n-train", type=int, default=20000)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument(
        "--name", default="attack_speed", help="results file benchmarks/results/<name>.md"
    )
    args = p.parse_args()

    info = C.machine_info()
    print(info)
    x_tr, y_tr, x_te, y_te = C.mnist(args.data_dir, args.n_train, args.n, seed=args.seed)
    model = C.cached(
        f"attack_speed_pgdat_{args.n_train}_{args.epochs}",
        build,
        lambda m: C.train_pgd_at(
            m, x_tr, y_tr, eps=args.eps, epochs=args.epochs, warmup_epochs=0.5, seed=args.seed
        ),
        retrain=args.retrain,
    )
    clean = C.accuracy(model, x_te, y_te)
    print(f"clean accuracy on {args.n} MNIST test images: {100 * clean:.2f} %")

    pgd = rk.attacks.PGD(eps=args.eps, steps=40, batch_size=args.batch_size, seed=args.seed)
    t0 = time.perf_counter()
    pgd_acc = C.accuracy(model, pgd(model, x_te, y_te), y_te)
    t_pgd = time.perf_counter() - t0
    print(f"robustkit PGD-40: {100 * pgd_acc:.2f} % in {t_pgd:.1f} s")

    aa = rk.attacks.AutoAttack(
        eps=args.eps,
        norm="linf",
        version="standard",
        batch_size=args.batch_size,
        seed=args.seed,
        verbose=True,
    )
    assert aa.is_standard
    t0 = time.perf_counter()
    x_aa = aa(model, x_te, y_te)
    t_aa = time.perf_counter() - t0
    aa_acc = C.accuracy(model, x_aa, y_te)
    linf = float(np.abs(x_aa - x_te).max())
    print(
        f"robustkit AutoAttack standard: {100 * aa_acc:.2f} % in {t_aa:.1f} s "
        f"(max |delta| {linf:.4f})"
    )
    history = list(aa.history)

    rows = [
        ["robustkit PGD-40 (step eps/4)", args.n, f"{100 * pgd_acc:.2f}", f"{t_pgd:.1f}", ""],
        ["robustkit AutoAttack standard", args.n, f"{100 * aa_acc:.2f}", f"{t_aa:.1f}", ""],
    ]
    ratio_line = ""
    if args.art_n:
        m = min(args.art_n, args.n)
        xs, ys = x_te[:m], y_te[:m]
        aa_sub = rk.attacks.AutoAttack(
            eps=args.eps,
            norm="linf",
            version="standard",
            batch_size=args.batch_size,
            seed=args.seed,
        )
        aa_sub(model, xs[:2], ys[:2])  # trace outside the timed run, as ART has no tracing
        t0 = time.perf_counter()
        x_rk_sub = aa_sub(model, xs, ys)
        t_rk_sub = time.perf_counter() - t0
        rk_sub_acc = C.accuracy(model, x_rk_sub, ys)
        print(f"robustkit AutoAttack standard on {m}: {100 * rk_sub_acc:.2f} % in {t_rk_sub:.1f} s")
        x_art, t_art = run_art(model, xs, ys, args.eps, args.batch_size)
        art_acc = C.accuracy(model, x_art, ys)
        art_linf = float(np.abs(x_art - xs).max())
        print(
            f"ART 1.20 AutoAttack (default attacks) on {m}: {100 * art_acc:.2f} % in "
            f"{t_art:.1f} s (max |delta| {art_linf:.4f})"
        )
        extrapolated = t_art * args.n / m
        speedup_sub = t_art / t_rk_sub
        speedup_full = extrapolated / t_aa
        rows += [
            [
                "robustkit AutoAttack standard (subset)",
                m,
                f"{100 * rk_sub_acc:.2f}",
                f"{t_rk_sub:.1f}",
                "",
            ],
            [
                "ART 1.20 AutoAttack, default attacks (subset)",
                m,
                f"{100 * art_acc:.2f}",
                f"{t_art:.1f}",
                f"{speedup_sub:.1f}x slower",
            ],
        ]
        if m < args.n:
            rows.append(
                [
                    f"ART 1.20, extrapolated linearly to {args.n}",
                    args.n,
                    "n/a",
                    f"{extrapolated:.0f}",
                    f"{speedup_full:.1f}x slower",
                ]
            )
        ratio_line = (
            f"Speed-up of robustkit over ART on the same {m} images: "
            f"**{speedup_sub:.1f}x**; {args.n} robustkit images vs ART extrapolated "
            f"from {m}: **{speedup_full:.1f}x**."
        )
        print(ratio_line.replace("**", ""))

    hist_rows = [
        [h["attack"], h["attacked"], f"{100 * h['robust_accuracy']:.2f}", f"{h['seconds']:.1f}"]
        for h in history
    ]
    text = "\n".join(
        [
            "# AutoAttack speed: robustkit vs IBM ART 1.20",
            "",
            f"Command: `python benchmarks/attack_speed.py --n {args.n} --art-n {args.art_n}"
            + (f" --name {args.name}`" if args.name != "attack_speed" else "`"),
            "",
            f"Machine: {info}",
            "",
            f"Model: small CNN (16/32 filters, 64 dense units), PGD-AT on {args.n_train} real MNIST "
            f"training images, eps {args.eps}, {args.epochs} epochs, linear eps warm-up over half "
            f"an epoch (hand-written loop in `benchmarks/_common.py`). Clean accuracy on the "
            f"{args.n} test images: {100 * clean:.2f} %.",
            "",
            C.markdown_table(
                ["attack", "images", "robust acc. (%)", "seconds", "vs robustkit AA"], rows
            ),
            "",
            ratio_line,
            "",
            "robustkit AutoAttack standard, per attack (each runs only on the examples still robust):",
            "",
            C.markdown_table(
                ["attack", "examples attacked", "robust acc. after (%)", "seconds"], hist_rows
            ),
            "",
            "The attack sets differ: robustkit runs AutoAttack's standard version (APGD-CE 100 "
            "steps no restart, APGD-T 9 targets x 100 steps, FAB-T 9 targets x 100 steps, Square "
            "5,000 queries). ART 1.20's `AutoAttack` with `attacks=None` runs APGD-CE and APGD-DLR "
            "(100 steps, 5 random restarts each), DeepFool (100 steps) and Square (5,000 queries, "
            "5 restarts), untargeted, with no FAB; it was given the same batch size "
            f"({args.batch_size}) and step eps/4. ART's time covers only its `generate` call; "
            "robustkit's subset time excludes tracing (done on 2 images first), its full-run time "
            "includes it.",
            "",
        ]
    )
    path = C.write_result(args.name, text, enabled=not args.no_write)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
