"""TRADES (Zhang et al., ICML 2019) on CIFAR-10, ResNet-18, L-inf eps 8/255, beta 6.

Run from the repository root (the local CIFAR-10 file, 9,000 train / 1,000 test, from
../shared/data or $ROBUSTKIT_DATA_DIR):

    python recipes/cifar10_trades.py           # SPEC defaults: SGD 0.1, 100 epochs (GPU job)
    python recipes/cifar10_trades.py --quick   # narrow ResNet-18, 1,000 images, 1 epoch

Exports to saved_models/cifar10_resnet18_trades_linf.
"""

import os
import sys

import keras

import robustkit as rk

QUICK = "--quick" in sys.argv
DATA_DIR = os.environ.get("ROBUSTKIT_DATA_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data"
)
EPS, BETA, BATCH = 8 / 255, 6.0, 128
EPOCHS = 1 if QUICK else 100
OUT = "saved_models/cifar10_resnet18_trades_linf"

x_tr, y_tr = rk.data.load("cifar10", "train", DATA_DIR)
x_te, y_te = rk.data.load("cifar10", "test", DATA_DIR)
if QUICK:
    x_tr, y_tr = rk.data.subset(x_tr, y_tr, 1000)
    x_te, y_te = rk.data.subset(x_te, y_te, 200)

keras.utils.set_random_seed(0)
base = rk.models.resnet18((32, 32, 3), base_filters=16 if QUICK else 64)
steps_per_epoch = -(-len(x_tr) // BATCH)
# SPEC section 2: SGD momentum 0.9, lr 0.1, weight decay 2e-4, lr x0.1 at 75 and x0.01 at 90
lr = keras.optimizers.schedules.PiecewiseConstantDecay(
    [75 * steps_per_epoch, 90 * steps_per_epoch], [0.1, 0.01, 0.001]
)
model = rk.RobustModel(
    base, objective=rk.objectives.TRADES(beta=BETA), attack=rk.attacks.PGD(eps=EPS, steps=10)
)  # step eps/4 (paper)
model.compile(optimizer=keras.optimizers.SGD(lr, momentum=0.9, weight_decay=2e-4))
model.fit(rk.data.make_dataset(x_tr, y_tr, BATCH), epochs=EPOCHS)

attack = rk.attacks.PGD(eps=EPS, steps=40, early_stop=True, loop="while")
clean, robust = rk.callbacks.clean_and_robust_accuracy(base, x_te, y_te, attack)
rk.export(
    model,
    OUT,
    overwrite=True,
    metadata={
        "dataset": "cifar10",
        "hyperparameters": {
            "beta": BETA,
            "epochs": EPOCHS,
            "batch_size": BATCH,
            "optimizer": "sgd",
            "learning_rate": "0.1 (x0.1 at 75, x0.01 at 90)",
            "weight_decay": 2e-4,
        },
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "attack": f"PGD-40 (linf, eps={EPS:.4g}, step={attack.step_size:.4g})",
        "n_examples": len(x_te),
    },
)
print(f"clean {clean:.2%}, PGD-40 robust {robust:.2%} on {len(x_te)} test images -> {OUT}")
