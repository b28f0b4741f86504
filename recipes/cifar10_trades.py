"""TRADES (Zhang et al., ICML 2019) on CIFAR-10, ResNet-18, L-inf eps 8/255, beta 6.

Run from the repository root (the local CIFAR-10 file, 9,000 train / 1,000 test, from
../shared/data or $ROBUSTKIT_DATA_DIR):

    python recipes/cifar10_trades.py           # SPEC defaults: SGD 0.1, 100 epochs (GPU job)
    python recipes/cifar10_trades.py --quick   # narrow ResNet-18, 1,000 images, 1 epoch

Exports to saved_models/cifar10_resnet18_trades_linf.
"""

import _common

from robustkit.app import TrainConfig, train_and_export

args = _common.parse(__doc__.splitlines()[0])
# SPEC section 2: SGD momentum 0.9, lr 0.1, weight decay 2e-4, lr x0.1 at 75 and x0.01 at 90,
# batch 128, PGD-10 with step eps/4 (the paper)
config = TrainConfig(
    dataset="cifar10",
    data_dir=_common.data_dir(),
    model="resnet18",
    width=16 if args.quick else None,
    defense="trades",
    beta=6.0,
    norm="linf",
    eps=8 / 255,
    steps=10,
    epochs=1 if args.quick else 100,
    warmup_epochs=0,  # TRADES trains at the full radius from the start
    batch_size=128,
    optimizer="sgd",
    lr=0.1,
    lr_schedule="piecewise:75,90" if not args.quick else "constant",
    weight_decay=2e-4,
    train_size=1000 if args.quick else None,
    test_size=200 if args.quick else None,
    out=args.out or "saved_models/cifar10_resnet18_trades_linf",
)
_common.report(train_and_export(config))
