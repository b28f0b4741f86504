"""PGD-AT on MNIST, L-inf eps 0.3 (Madry et al., ICLR 2018), small CNN.

Run from the repository root (MNIST files from ../shared/data or $ROBUSTKIT_DATA_DIR):

    python recipes/mnist_at_linf.py            # full: 60k images, 20 epochs (hours on CPU)
    python recipes/mnist_at_linf.py --quick    # 4k images, 3 epochs: a smoke run

Exports to saved_models/mnist_at_linf (robustkit.json holds the PGD-40 figures).
"""

import os
import sys

import keras

import robustkit as rk

QUICK = "--quick" in sys.argv
DATA_DIR = os.environ.get("ROBUSTKIT_DATA_DIR") or os.path.join(
    os.path.dirname(__file__), "..", "..", "shared", "data"
)
EPS, EPOCHS, WARMUP, BATCH = 0.3, (3 if QUICK else 20), (1 if QUICK else 5), 128

x_tr, y_tr = rk.data.load("mnist", "train", DATA_DIR)
x_te, y_te = rk.data.load("mnist", "test", DATA_DIR)
if QUICK:
    x_tr, y_tr = rk.data.subset(x_tr, y_tr, 4000)
    x_te, y_te = rk.data.subset(x_te, y_te, 500)

keras.utils.set_random_seed(0)
base = rk.models.small_cnn((28, 28, 1))
# Madry et al.: PGD-40 with step 0.01 for training on MNIST
model = rk.RobustModel(
    base, objective="standard", attack=rk.attacks.PGD(eps=EPS, steps=40, step_size=0.01)
)
model.compile(optimizer=keras.optimizers.Adam(1e-3))
model.fit(
    x_tr,
    y_tr,
    batch_size=BATCH,
    epochs=EPOCHS,
    callbacks=[rk.callbacks.EpsilonWarmup(epochs=WARMUP)],
)

attack = rk.attacks.PGD(eps=EPS, steps=40, early_stop=True, loop="while")
clean, robust = rk.callbacks.clean_and_robust_accuracy(base, x_te, y_te, attack)
rk.export(
    model,
    "saved_models/mnist_at_linf",
    overwrite=True,
    metadata={
        "dataset": "mnist",
        "defense": "standard",
        "hyperparameters": {
            "epochs": EPOCHS,
            "warmup_epochs": WARMUP,
            "batch_size": BATCH,
            "optimizer": "adam",
            "learning_rate": 1e-3,
            "train_steps": 40,
        },
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "attack": f"PGD-40 (linf, eps={EPS}, step={attack.step_size})",
        "n_examples": len(x_te),
    },
)
print(
    f"clean {clean:.2%}, PGD-40 robust {robust:.2%} on {len(x_te)} test images "
    "-> saved_models/mnist_at_linf"
)
