"""PGD-AT on MNIST, L-inf eps 0.3 (Madry et al., ICLR 2018), small CNN.

Run from the repository root (MNIST: the canonical IDX files in ../shared/data or
$ROBUSTKIT_DATA_DIR, else TFDS):

    python recipes/mnist_at_linf.py            # 60k images, PGD-40 training, 20 epochs
    python recipes/mnist_at_linf.py --smoke    # 2,000 images, 1 epoch: a smoke run

Exports to saved_models/mnist_at_linf (robustkit.json holds the PGD-40 figures).
"""

import _common

if __name__ == "__main__":
    args = _common.parse(__doc__.splitlines()[0])
    settings = {
        "dataset": "mnist",
        "data_dir": args.data_dir,
        "download": args.download,
        "model": "small_cnn",
        "defense": "standard",
        "norm": "linf",
        "eps": 0.3,
        "steps": 40,  # Madry et al.: PGD-40 with step 0.01 for training on MNIST
        "step_size": 0.01,
        "epochs": 20,
        "warmup_epochs": 5,  # PGD-AT at eps 0.3 does not start learning without a ramp
        "batch_size": 128,
        "optimizer": "adam",
        "lr": 1e-3,
    }
    if args.smoke:
        settings.update(epochs=1, warmup_epochs=1, steps=10, step_size=0.03,
                        train_size=2000, test_size=200)  # fmt: skip
    _common.train(settings, args, "mnist_at_linf")
