"""``robustkit attack minmax PATH``: the MinMax attack on an exported classifier, as a PNG grid.

Example (shell)::

    $ robustkit attack minmax saved_models/mnist_cnn --n 8 --out minmax.png

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["attack", "minmax", "m", "--n", "4"])
>>> args.name, args.n
('minmax', 4)
"""

import os

from robustkit.cli import UsageError, positive_float, positive_int


def add_parser(subparsers):
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
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10/")
    p.add_argument("--download", action="store_true", help="let TFDS download the data set")
    p.add_argument("--n", type=positive_int, default=8, help="test images to attack")
    p.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="L-inf radius (default: the export's L-inf eps, else 0.3)",
    )
    p.add_argument("--steps", type=positive_int, default=100, help="MinMax iterations")
    p.add_argument("--projections", type=positive_int, default=100, help="MINE random projections")
    p.add_argument("--out", default="minmax_examples.png", help="PNG file for the grid")
    p.add_argument("--seed", type=int, default=0, help="seed of the image choice and the attack")
    p.set_defaults(run=run)
    return p


def run(args):
    import numpy as np

    from robustkit.app import load_split
    from robustkit.app.evaluate import resolve_export
    from robustkit.export import load_exported
    from robustkit.mine import MinMax

    record, args.dataset, norm, eps = _resolve(args, resolve_export)
    if not args.out.lower().endswith(".png"):
        raise UsageError("out", "must be a .png file")
    try:
        import matplotlib  # noqa: F401  (checked before the attack runs)
    except ImportError:
        raise UsageError(
            "out", "writing the grid needs matplotlib (`pip install matplotlib`)"
        ) from None
    x, y = load_split(args.dataset, "test", args.data_dir, args.download, None, args.seed)
    if list(x.shape[1:]) != list(record.input_shape):
        raise UsageError(
            "dataset",
            f"{args.dataset} images are {list(x.shape[1:])} but the model takes "
            f"{record.input_shape}",
        )
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
    atk = MinMax(eps=float(eps), steps=args.steps, mine_lr=1e-4, hidden=32,
                 projections=args.projections, batch_size=len(x), seed=args.seed)  # fmt: skip
    out = atk.run(loaded, x, y)
    x_adv = out["x_adv"]
    adv_pred = np.argmax(loaded.serve(x_adv).numpy(), axis=1)
    mi = float(np.mean(out["mi"][out["success"]])) if out["success"].any() else float("nan")
    print(f"Model: {os.path.abspath(args.path)}")
    print(
        f"MinMax (L-inf eps={float(eps):.4g}, {args.steps} iterations) on {len(x)} correctly "
        f"classified {args.dataset} test images"
    )
    print(
        f"Attack success rate: {100 * np.mean(adv_pred != y):.1f} %; max |delta| "
        f"{float(np.abs(x_adv - x).max()):.4f}; mean online MI of successes {mi:.3f} nats"
    )
    save_grid(x, x_adv, y, adv_pred, args.out)
    print(f"Saved: {args.out}")
    return 0


def _resolve(args, resolve_export):
    """Record, data set and the L-inf radius: ``--eps``, else the export's L-inf eps, else 0.3."""
    from robustkit.app import ConfigError

    try:
        record, dataset, norm, eps = resolve_export(
            args.path, args.dataset, "linf", args.eps or 0.3
        )
    except ConfigError:
        raise
    threat = record.threat
    if args.eps is None:
        eps = threat.eps if threat is not None and threat.norm == "linf" else 0.3
    return record, dataset, norm, eps


def save_grid(x, x_adv, y, adv_pred, path):
    """Two rows: originals (true label) and adversarial examples (prediction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n = len(x)
    fig, axes = plt.subplots(2, n, figsize=(1.6 * n, 3.4), squeeze=False)
    for i in range(n):
        rows = ((x[i], f"label {y[i]}"), (x_adv[i], f"pred {adv_pred[i]}"))
        for row, (img, title) in enumerate(rows):
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
