"""``robustkit uae`` and ``robustkit attack minmax``: the MINE subcommands of the CLI.

Registered in :data:`robustkit.cli.SUBCOMMANDS`.

Example (shell)::

    $ robustkit uae --autoencoder conv --dataset mnist --n-train 1000
    $ robustkit attack minmax saved_models/mnist_cnn --n 8 --out minmax.png

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["uae", "--autoencoder", "dense"])
>>> args.autoencoder, args.dataset
('dense', 'mnist')
"""

import os

AUTOENCODERS = ("conv", "dense", "sparse", "adversarial")


# ------------------------------------------------------------------------ uae
def add_uae_parser(subparsers):
    """``robustkit uae``: train an autoencoder, augment with MINE-UAEs, retrain."""
    from robustkit.cli import positive_float, positive_int

    p = subparsers.add_parser(
        "uae",
        help="UAE data augmentation for an autoencoder (Hsu et al., AAAI 2022)",
        description=(
            "Train an autoencoder, generate one unsupervised adversarial example (MinMax "
            "with per-sample MINE) per training image, retrain on original + UAEs and print "
            "the test reconstruction error before and after."
        ),
    )
    p.add_argument("--autoencoder", default="conv", choices=AUTOENCODERS)
    p.add_argument("--dataset", default="mnist")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--n-train", type=positive_int, default=2000, help="training images (subset)")
    p.add_argument("--n-test", type=positive_int, default=1000)
    p.add_argument("--epochs", type=positive_int, default=10)
    p.add_argument("--retrain-epochs", type=positive_int, default=5)
    p.add_argument("--eps", type=positive_float, default=0.3)
    p.add_argument("--steps", type=positive_int, default=20, help="MinMax iterations per image")
    p.add_argument("--hidden", type=positive_int, default=32, help="statistics network width")
    p.add_argument("--out", default=None, help="where to save the retrained .keras model")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_uae)
    return p


def run_uae(args):
    from robustkit.cli import UsageError, check_dataset, load_split

    args.dataset = check_dataset(args.dataset)
    out = args.out or os.path.join("saved_models", f"uae_{args.autoencoder}_{args.dataset}.keras")
    if not out.endswith(".keras"):
        raise UsageError("--out", "must end with .keras")
    x_tr, _ = load_split(
        args.dataset, "train", args.data_dir, args.download, args.n_train, args.seed
    )
    x_te, _ = load_split(args.dataset, "test", args.data_dir, args.download, args.n_test, args.seed)
    if args.autoencoder == "conv" and (x_tr.shape[1] % 4 or x_tr.shape[2] % 4):
        raise UsageError(
            "--autoencoder", f"conv needs sides divisible by 4; images are {x_tr.shape[1:]}"
        )
    import keras

    import robustkit as rk
    from robustkit.mine import uae
    from robustkit.models.autoencoders import AUTOENCODERS as BUILDERS

    keras.utils.set_random_seed(args.seed)
    ae = BUILDERS[args.autoencoder](x_tr.shape[1:])
    print(
        f"Training a {args.autoencoder} autoencoder on {len(x_tr)} {args.dataset} images "
        f"({args.epochs} epochs)"
    )
    ae.fit(x_tr, x_tr, epochs=args.epochs, batch_size=100, shuffle=True, verbose=0)
    before = uae.reconstruction_error(ae, x_te)
    print(f"Test reconstruction error: {before:.5f}")
    atk = rk.attacks.MinMax(
        eps=args.eps,
        steps=args.steps,
        criterion="unsupervised",
        random_start=True,
        c0=1e-3,
        filters=4,
        hidden=args.hidden,
        mine_lr=1e-4,
        batch_size=100,
        seed=args.seed,
    )
    print(f"Generating {len(x_tr)} MINE-UAEs ({args.steps} MinMax iterations each)")
    x_uae = uae.augment(ae, x_tr, attack=atk, verbose=1)
    uae.retrain(ae, x_tr, x_uae, epochs=args.retrain_epochs, batch_size=100)
    after = uae.reconstruction_error(ae, x_te)
    change = 100.0 * (after - before) / before
    print(
        f"Test reconstruction error after retraining on original + UAEs: {after:.5f} ({change:+.1f} %)"
    )
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    ae.save(out)
    print(f"Saved: {out}")
    return 0


# --------------------------------------------------------------------- attack
def add_attack_parser(subparsers):
    """``robustkit attack minmax PATH``: MinMax on an exported classifier + a PNG grid."""
    from robustkit.cli import positive_float, positive_int

    p = subparsers.add_parser(
        "attack",
        help="run an attack on an exported classifier and save example images",
        description=(
            "Reload a robustkit SavedModel (a folder with robustkit.json), attack test "
            "images with the supervised MinMax attack (per-sample MINE; the reloaded model "
            "has no layers, so MINE uses random projections) and write a PNG grid of "
            "original and adversarial images."
        ),
    )
    p.add_argument("name", choices=("minmax",), help="the attack")
    p.add_argument("path", metavar="PATH", help="a folder written by robustkit.export / train")
    p.add_argument("--dataset", default=None, help="default: the export's data set")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--n", type=positive_int, default=8, help="test images to attack")
    p.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="L-inf radius (default: the export's L-inf eps, else 0.3)",
    )
    p.add_argument("--steps", type=positive_int, default=100)
    p.add_argument("--projections", type=positive_int, default=100)
    p.add_argument("--out", default="minmax_examples.png", help="PNG file for the grid")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(run=run_attack)
    return p


def run_attack(args):
    from robustkit.cli import UsageError, load_split, read_export_metadata
    from robustkit.export import load_exported

    meta = read_export_metadata(args)
    threat = meta.get("threat_model") or {}
    eps = args.eps or (threat.get("eps") if threat.get("norm") == "linf" else None) or 0.3
    if not args.out.lower().endswith(".png"):
        raise UsageError("--out", "must be a .png file")
    x, y = load_split(args.dataset, "test", args.data_dir, args.download, None, args.seed)
    if list(x.shape[1:]) != list(meta["input_shape"]):
        raise UsageError(
            "--dataset",
            f"{args.dataset} images are {list(x.shape[1:])} but the model "
            f"takes {meta['input_shape']}",
        )
    import numpy as np

    import robustkit as rk

    loaded, _ = load_exported(args.path)
    pick = np.random.default_rng(args.seed).choice(
        len(x), size=min(4 * args.n, len(x)), replace=False
    )
    x, y = x[pick], y[pick]
    pred = np.argmax(loaded.serve(x).numpy(), axis=1)
    keep = np.flatnonzero(pred == y)[: args.n]
    if len(keep) == 0:
        raise UsageError("PATH", "the model classifies none of the sampled test images correctly")
    x, y = x[keep], y[keep]
    atk = rk.attacks.MinMax(
        eps=float(eps),
        steps=args.steps,
        mine_lr=1e-4,
        hidden=32,
        projections=args.projections,
        batch_size=len(x),
        seed=args.seed,
    )
    out = atk.run(loaded, x, y)
    x_adv = out["x_adv"]
    adv_pred = np.argmax(loaded.serve(x_adv).numpy(), axis=1)
    print(f"Model: {os.path.abspath(args.path)}")
    print(
        f"MinMax (L-inf eps={float(eps):.4g}, {args.steps} iterations) on {len(x)} correctly "
        f"classified {args.dataset} test images"
    )
    print(
        f"Attack success rate: {100 * np.mean(adv_pred != y):.1f} %; "
        f"max |delta| {float(np.abs(x_adv - x).max()):.4f}; mean online MI of successes "
        f"{float(np.mean(out['mi'][out['success']])) if out['success'].any() else float('nan'):.3f} nats"
    )
    save_grid(x, x_adv, y, adv_pred, args.out)
    print(f"Saved: {args.out}")
    return 0


def save_grid(x, x_adv, y, adv_pred, path):
    """Two rows: originals (true label) and adversarial examples (prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        for row, (img, title) in enumerate(
            ((x[i], f"label {y[i]}"), (x_adv[i], f"pred {adv_pred[i]}"))
        ):
            ax = axes[row][i]
            img = np.squeeze(img)
            ax.imshow(img, cmap="gray" if img.ndim == 2 else None, vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
    axes[0][0].set_ylabel("original")
    fig.suptitle("MinMax adversarial examples (top: original, bottom: adversarial)", fontsize=9)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
