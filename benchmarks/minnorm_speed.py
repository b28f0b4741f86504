"""Minimal-norm L2 attacks: robustkit CW and DDN vs foolbox 3.3.4, same model.

On an undefended small MNIST CNN (``robustkit.models.small_cnn((28, 28, 1),
width=16, dense=64)``, trained 2 epochs on ``--train-n`` real MNIST images) and
``--n`` real MNIST test images, it runs

  * DDN, 100 steps (init epsilon 1, gamma 0.05, cosine step 1 -> 0.01):
    ``robustkit.attacks.DDN`` and ``foolbox.attacks.DDNAttack``;
  * CW-L2 (9 binary-search steps, c0 = 1e-3, Adam lr 0.01, ``--cw-steps``
    steps per search step, abort early, kappa 0):
    ``robustkit.attacks.CW`` and ``foolbox.attacks.L2CarliniWagnerAttack``,

both in batches of ``--batch-size``, and reports per attack: seconds (robustkit:
first call including tracing, and a second call; foolbox: one call after a
small warm-up), the time ratio, the success rate over clean-correct examples,
and the median / mean L2 norm over successful examples. foolbox returns an
all-zero image where it found nothing; such outputs count as failures.

Run:  python benchmarks/minnorm_speed.py [--n 1000] [--cw-steps 100] [--cw-lr 0.01] [--cw-n N]
Writes benchmarks/results/minnorm_speed.md.
"""

import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import numpy as np
import tensorflow as tf

import robustkit as rk


def in_batches(fn, x, y, batch):
    outs = [np.asarray(fn(x[i : i + batch], y[i : i + batch])) for i in range(0, len(x), batch)]
    return np.concatenate(outs)


def stats(model, x, y, x_adv):
    """Success rate over clean-correct examples and L2 norms of the successes."""
    pred = lambda t: np.concatenate(
        [np.argmax(model(t[i : i + 500], training=False), -1) for i in range(0, len(t), 500)]
    )
    ok = pred(x) == y
    real = np.abs(x_adv).reshape(len(x), -1).max(1) > 0
    success = ok & (pred(x_adv) != y) & real
    norms = np.linalg.norm((x_adv - x).reshape(len(x), -1), axis=1)[success]
    return success.sum() / max(ok.sum(), 1), norms


def main():
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="MNIST test images")
    p.add_argument("--train-n", type=int, default=10000, help="MNIST training images")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--ddn-steps", type=int, default=100)
    p.add_argument("--cw-steps", type=int, default=100)
    p.add_argument("--cw-lr", type=float, default=0.01, help="Adam step of both CWs")
    p.add_argument(
        "--cw-n",
        type=int,
        default=None,
        help="images for CW (default: all --n; CW is ~10x slower than DDN)",
    )
    args = p.parse_args()

    import foolbox as fb

    lines = []

    def log(msg=""):
        print(msg, flush=True)
        lines.append(msg)

    x_tr, y_tr, x_te, y_te = C.mnist(args.data_dir, args.train_n, args.n, seed=args.seed)
    model = C.cached(
        f"minnorm_clean_w16_n{args.train_n}",
        lambda: rk.models.small_cnn((28, 28, 1), width=16, dense=64),
        lambda m: C.train_clean(m, x_tr, y_tr, epochs=2, seed=args.seed),
        retrain=args.retrain,
        log=print,
    )
    clean = C.accuracy(model, x_te, y_te)
    fmodel = fb.TensorFlowModel(model, bounds=(0, 1))
    bs = args.batch_size

    def foolbox_run(attack):
        def run(xb, yb):
            return attack(fmodel, tf.constant(xb), tf.constant(yb), epsilons=None)[0].numpy()

        return run

    setups = [
        (
            "DDN",
            f"{args.ddn_steps} steps",
            rk.attacks.DDN(steps=args.ddn_steps, batch_size=bs),
            fb.attacks.DDNAttack(steps=args.ddn_steps),
        ),
        (
            "CW-L2",
            f"9 x {args.cw_steps} steps, lr {args.cw_lr:g}, c0 1e-3",
            rk.attacks.CW(
                steps=args.cw_steps,
                lr=args.cw_lr,
                initial_const=1e-3,
                binary_search_steps=9,
                batch_size=bs,
            ),
            fb.attacks.L2CarliniWagnerAttack(
                binary_search_steps=9, steps=args.cw_steps, stepsize=args.cw_lr, initial_const=1e-3
            ),
        ),
    ]
    rows = []
    x_all, y_all = x_te, y_te
    for name, setting, rk_attack, fb_attack in setups:
        n = args.cw_n if (name == "CW-L2" and args.cw_n) else args.n
        x_te, y_te = x_all[:n], y_all[:n]
        setting = f"{setting}, {n} images"
        print(f"{name}: robustkit ...", flush=True)
        t0 = time.perf_counter()
        x_rk = rk_attack(model, x_te, y_te)
        t_rk_first = time.perf_counter() - t0
        t0 = time.perf_counter()
        x_rk = rk_attack(model, x_te, y_te)
        t_rk = time.perf_counter() - t0
        print(f"{name}: foolbox ...", flush=True)
        fb_fn = foolbox_run(fb_attack)
        fb_fn(x_te[:8], y_te[:8])  # warm-up
        t0 = time.perf_counter()
        x_fb = in_batches(fb_fn, x_te, y_te, bs)
        t_fb = time.perf_counter() - t0
        s_rk, n_rk = stats(model, x_te, y_te, x_rk)
        s_fb, n_fb = stats(model, x_te, y_te, x_fb)
        for lib, t_first, t, s, n in (
            ("robustkit", t_rk_first, t_rk, s_rk, n_rk),
            ("foolbox 3.3.4", None, t_fb, s_fb, n_fb),
        ):
            rows.append(
                [
                    name,
                    setting,
                    lib,
                    f"{t_first:.1f}" if t_first is not None else "-",
                    f"{t:.1f}",
                    f"{t_fb / t:.2f}x",
                    f"{100 * s:.1f} %",
                    f"{np.median(n):.4f}",
                    f"{np.mean(n):.4f}",
                ]
            )
        print(
            f"{name}: rk {t_rk:.1f}s median {np.median(n_rk):.4f} | fb {t_fb:.1f}s median "
            f"{np.median(n_fb):.4f}",
            flush=True,
        )

    log("# Minimal-norm L2 attacks: robustkit vs foolbox 3.3.4")
    log()
    log("Command: `python benchmarks/minnorm_speed.py " + " ".join(sys.argv[1:]) + "`")
    log()
    log(f"Machine: {C.machine_info()}")
    log()
    log(
        f"Model: undefended small CNN (width 16, dense 64), {args.train_n} MNIST training images, "
        f"2 epochs; clean accuracy {100 * clean:.1f} % on the first {args.n} real MNIST test images "
        f"(batches of {bs})."
    )
    log()
    log(
        C.markdown_table(
            [
                "attack",
                "setting",
                "library",
                "first call s (incl. tracing)",
                "s",
                "speed-up vs foolbox",
                "success",
                "median L2",
                "mean L2",
            ],
            rows,
        )
    )
    log()
    log(
        "Success = clean-correct and misclassified after the attack (over clean-correct "
        "examples); norms over successful examples. foolbox's outputs where it found nothing "
        "(all-zero images) count as failures. 'speed-up' = foolbox seconds / robustkit "
        "seconds (second call)."
    )
    path = C.write_result("minnorm_speed", "\n".join(lines) + "\n", enabled=not args.no_write)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
