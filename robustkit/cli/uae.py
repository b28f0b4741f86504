"""``robustkit uae``: train an autoencoder, augment it with MINE-UAEs, retrain.

Example (shell)::

    $ robustkit uae --autoencoder conv --dataset mnist --n-train 1000

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["uae", "--autoencoder", "dense"])
>>> args.autoencoder, args.dataset
('dense', 'mnist')
"""

import os

from robustkit.cli import UsageError, positive_float, positive_int

AUTOENCODERS = ("conv", "dense", "sparse", "adversarial")


def add_parser(subparsers):
    p = subparsers.add_parser(
        "uae",
        help="UAE data augmentation for an autoencoder (Hsu et al., AAAI 2022)",
        description=(
            "Train an autoencoder, generate one unsupervised adversarial example (MinMax "
            "with per-sample MINE) per training image, retrain on original + UAEs and print "
            "the test reconstruction error before and after."
        ),
    )
    p.add_argument("--autoencoder", default="conv", choices=AUTOENCODERS, help="architecture")
    p.add_argument("--dataset", default="mnist", help="data set (default mnist)")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10/")
    p.add_argument("--download", action="store_true", help="let TFDS download the data set")
    p.add_argument("--n-train", type=positive_int, default=2000, help="training images (subset)")
    p.add_argument("--n-test", type=positive_int, default=1000, help="test images (subset)")
    p.add_argument("--epochs", type=positive_int, default=10, help="autoencoder epochs")
    p.add_argument(
        "--retrain-epochs", type=positive_int, default=5, help="epochs on original + UAEs"
    )
    p.add_argument("--eps", type=positive_float, default=0.3, help="L-inf radius of the UAEs")
    p.add_argument("--steps", type=positive_int, default=20, help="MinMax iterations per image")
    p.add_argument("--hidden", type=positive_int, default=32, help="statistics network width")
    p.add_argument("--out", default=None, help="where to save the retrained .keras model")
    p.add_argument("--seed", type=int, default=0, help="random seed")
    p.set_defaults(run=run)
    return p


def run(args):
    from robustkit.app import load_split
    from robustkit.app.config import check_dataset

    args.dataset = check_dataset(args.dataset)
    out = args.out or os.path.join("saved_models", f"uae_{args.autoencoder}_{args.dataset}.keras")
    if not out.endswith(".keras"):
        raise UsageError("out", "must end with .keras")
    x_tr, _ = load_split(
        args.dataset, "train", args.data_dir, args.download, args.n_train, args.seed
    )
    x_te, _ = load_split(args.dataset, "test", args.data_dir, args.download, args.n_test, args.seed)
    if args.autoencoder == "conv" and (x_tr.shape[1] % 4 or x_tr.shape[2] % 4):
        raise UsageError(
            "autoencoder", f"conv needs sides divisible by 4; images are {x_tr.shape[1:]}"
        )
    import keras

    from robustkit.mine import MinMax, augment, reconstruction_error, retrain
    from robustkit.models.autoencoders import AUTOENCODERS as BUILDERS

    keras.utils.set_random_seed(args.seed)
    ae = BUILDERS[args.autoencoder](x_tr.shape[1:])
    print(f"Training a {args.autoencoder} autoencoder on {len(x_tr)} {args.dataset} images "
          f"({args.epochs} epochs)")  # fmt: skip
    ae.fit(x_tr, x_tr, epochs=args.epochs, batch_size=100, shuffle=True, verbose=0)
    before = reconstruction_error(ae, x_te)
    print(f"Test reconstruction error: {before:.5f}")
    atk = MinMax(eps=args.eps, steps=args.steps, criterion="unsupervised", random_start=True,
                 c0=1e-3, filters=4, hidden=args.hidden, mine_lr=1e-4, batch_size=100,
                 seed=args.seed)  # fmt: skip
    print(f"Generating {len(x_tr)} MINE-UAEs ({args.steps} MinMax iterations each)")
    x_uae = augment(ae, x_tr, attack=atk, verbose=1)
    retrain(ae, x_tr, x_uae, epochs=args.retrain_epochs, batch_size=100)
    after = reconstruction_error(ae, x_te)
    change = 100.0 * (after - before) / before
    print(f"Test reconstruction error after retraining on original + UAEs: {after:.5f} "
          f"({change:+.1f} %)")  # fmt: skip
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    ae.save(out)
    print(f"Saved: {out}")
    return 0
