"""PGD-AT on MNIST, L-inf eps 0.3 (Madry et al., ICLR 2018), small CNN.

Run from the repository root (MNIST files from ../shared/data or $ROBUSTKIT_DATA_DIR):

    python recipes/mnist_at_linf.py            # full: 60k images, 20 epochs (hours on CPU)
    python recipes/mnist_at_linf.py --quick    # 4k images, 3 epochs: a smoke run

Exports to saved_models/mnist_at_linf (robustkit.json holds the PGD-40 figures).
"""

import _common

from robustkit.app import TrainConfig, train_and_export

args = _common.parse(__doc__.splitlines()[0])
config = TrainConfig(
    dataset="mnist",
    data_dir=_common.data_dir(),
    model="small_cnn",
    defense="standard",
    norm="linf",
    eps=0.3,
    steps=40,  # Madry et al.: PGD-40 with step 0.01 for training on MNIST
    step_size=0.01,
    epochs=3 if args.quick else 20,
    warmup_epochs=1 if args.quick else 5,
    batch_size=128,
    optimizer="adam",
    lr=1e-3,
    train_size=4000 if args.quick else None,
    test_size=500 if args.quick else None,
    out=args.out or "saved_models/mnist_at_linf",
)
_common.report(train_and_export(config))
