"""What every recipe shares: the papers' settings, the data, the flags.

A Table-1 recipe is one call, ``_common.table1("cifar10", "trades", "linf")``: a
:class:`robustkit.app.TrainConfig` with the NAMID paper's settings (SPEC §1-2, §4;
FIDELITY §1.8), run by :func:`robustkit.app.train_and_export`. Every recipe takes

* ``--smoke``: a tiny subset, one epoch, a narrow network: minutes on a CPU. It checks the
  recipe end to end, not the paper's numbers. Offline (no standard copy of the data set) it
  falls back to the local files and says so.
* ``--out DIR``: the export folder (default ``saved_models/<recipe>``, or
  ``saved_models/smoke/<recipe>`` with ``--smoke``).
* ``--data-dir DIR`` (default ``$ROBUSTKIT_DATA_DIR``, else ``../shared/data``),
  ``--download`` (let TFDS fetch the standard data), ``--quiet``.

XLA is on where a GPU is present (robustkit's ``jit_compile="auto"``), and so is mixed
precision (``mixed_float16``); on a CPU both stay off.
"""

import argparse
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

#: the Table-1 training settings (ResNet-18, SGD 0.1 / momentum 0.9 / weight decay 2e-4,
#: 100 epochs, lr x0.1 at 75 and x0.01 at 90, batch 128, PGD-10 with step eps/4, no eps
#: warm-up, best (clean + PGD-40)/2 checkpoint on a held-out split, crop + flip augmentation)
TABLE1 = {
    "model": "resnet18",
    "optimizer": "sgd",
    "lr": 0.1,
    "weight_decay": 2e-4,
    "epochs": 100,
    "lr_schedule": "piecewise:75,90",
    "batch_size": 128,
    "steps": 10,
    "warmup_epochs": 0,
    "eval_attack": "pgd40",
    "augment": True,
    "val_size": 1000,
    "estimator_epochs": 25,  # NAMID stage 2 (SPEC §4)
    "estimator_features": 2048,
}
#: per-defense changes: TRADES beta 6; MART (ResNet-18) beta 5 with lr 0.01 and weight decay
#: 3.5e-3 (SPEC §2); NAMID_T / NAMID_M take their base loss's beta (the paper reports none)
DEFENSE_SETTINGS = {
    "trades": {"beta": 6.0},
    "mart": {"beta": 5.0, "lr": 0.01, "weight_decay": 3.5e-3},
    "namid_t": {"beta": 6.0},
    "namid_m": {"beta": 5.0},
}
#: the radii of Table 1 (SPEC §1)
EPS = {"linf": 8 / 255, "l2": 0.5}
#: what ``--smoke`` changes
SMOKE = {
    "width": 8,
    "epochs": 1,
    "lr_schedule": "constant",
    "train_size": 256,
    "test_size": 100,
    "val_size": 64,
    "estimator_epochs": 1,
    "estimator_features": 64,
}
#: the offline stand-in of each standard data set: the local files' name (``rk.data.LOCAL``)
LOCAL_NAMES = {"cifar10": ("cifar10_test_files", "cifar10")}
TINY_IMAGENET_FOLDER = "tiny-imagenet-200"


def say(text):
    print(f"[recipe] {text}", flush=True)


def fail(text):
    """Stops the recipe before any work: the message and exit code 2."""
    print(f"[recipe] error: {text}", file=sys.stderr, flush=True)
    raise SystemExit(2)


def default_data_dir():
    """``$ROBUSTKIT_DATA_DIR``, else ``../shared/data`` beside the repository, else None."""
    env = os.environ.get("ROBUSTKIT_DATA_DIR")
    if env:
        return env
    shared = os.path.normpath(os.path.join(REPO, "..", "shared", "data"))
    return shared if os.path.isdir(shared) else None


data_dir = default_data_dir  # the name recipes used before


def parse(description, argv=None):
    """The flags every recipe takes (``--smoke``, ``--out``, ``--data-dir``, ...)."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--smoke", action="store_true", help="tiny subset, 1 epoch: minutes on CPU")
    p.add_argument("--out", default=None, help="export folder")
    p.add_argument("--data-dir", default=None, help="local data folder (mnist/, cifar10/, ...)")
    p.add_argument("--download", action="store_true", help="let TFDS download standard data")
    p.add_argument("--quiet", action="store_true", help="no progress output")
    args = p.parse_args(argv)
    args.data_dir = args.data_dir or default_data_dir()
    return args


def gpu_present():
    import tensorflow as tf

    return bool(tf.config.list_physical_devices("GPU"))


def standard_available(name):
    """Whether the standard release of ``name`` is on this machine (a prepared TFDS copy
    or the ``keras.datasets`` cache)."""
    try:
        import tensorflow_datasets as tfds

        if tfds.builder(name).is_prepared():
            return True
    except Exception:
        pass
    cache = {"cifar10": "cifar-10-batches-py", "mnist": "mnist.npz"}.get(name)
    return bool(cache) and os.path.exists(os.path.expanduser(f"~/.keras/datasets/{cache}"))


def choose_data(name, args):
    """``(dataset, data_dir)`` for a recipe: the standard release when present (or with
    ``--download``); offline, with ``--smoke``, the local files (saying so); else a stop."""
    import robustkit as rk

    if name == "tiny_imagenet":
        return tiny_imagenet(args)
    if name not in LOCAL_NAMES:  # e.g. mnist: the local IDX files are the standard bytes
        return name, args.data_dir
    if args.download or standard_available(name):
        return name, None
    local = next((n for n in LOCAL_NAMES[name] if n in rk.data.LOCAL), None)
    if not args.smoke:
        fail(
            f"the standard {name} release is not on this machine (no prepared TFDS copy, no "
            "keras.datasets cache); rerun with --download (needs the internet), or --smoke "
            "to check the recipe on the local files"
        )
    if local is None or args.data_dir is None:
        fail(f"offline and no local {name} files: set --data-dir or $ROBUSTKIT_DATA_DIR")
    say(
        f"offline: the standard {name} release is not here; the smoke run uses the local "
        f"files in {args.data_dir} ('{local}': the CIFAR-10 *test* images, JPEG-decoded, "
        "split 9,000 / 1,000). Its figures are not comparable with the paper's."
    )
    return local, args.data_dir


def tiny_imagenet(args):
    """Tiny-ImageNet from ``<data dir>/tiny-imagenet-200`` (the extracted release), or a stop
    naming the folder it expected."""
    folder = os.path.join(args.data_dir or "$ROBUSTKIT_DATA_DIR", TINY_IMAGENET_FOLDER)
    if not os.path.isdir(os.path.join(folder, "train")):
        fail(
            f"Tiny-ImageNet is not on this machine: expected the extracted release at "
            f"{folder} (train/<wnid>/images/*.JPEG, val/images with val_annotations.txt); "
            "pass --data-dir DIR holding tiny-imagenet-200/. No stand-in is made from other "
            "data."
        )
    return "tiny_imagenet", args.data_dir


def table1_settings(dataset, defense, norm, smoke=False):
    """The TrainConfig settings of one Table-1 cell (without data and output)."""
    settings = {**TABLE1, **DEFENSE_SETTINGS.get(defense, {})}
    settings.update(defense=defense, norm=norm, eps=EPS[norm])
    if smoke:
        settings.update(SMOKE)
    elif gpu_present():
        settings["mixed_precision"] = True
    return settings


def out_dir(args, stem):
    return args.out or os.path.join("saved_models", "smoke" if args.smoke else "", stem)


def train(settings, args, stem, out=None):
    """Checks the settings, trains, measures, exports to ``out`` (default: the recipe's
    folder); prints the result line."""
    from robustkit.app import ConfigError, TrainConfig, train_and_export

    out = out or out_dir(args, stem)
    if not args.smoke:
        settings.setdefault("backup_dir", out.rstrip("/\\") + "_backup")  # resume on rerun
    config = TrainConfig(**settings, out=out)
    try:
        plan = config.resolve()
    except ConfigError as e:
        fail(str(e))
    result = train_and_export(plan, verbose=0 if args.quiet else 1)
    report(result)
    smoke_caveat(args, "run without --smoke for the recipe's setting")
    return result


def smoke_caveat(args, setting):
    """After a ``--smoke`` run: its figures check the pipeline, they are not results."""
    if args.smoke:
        say(
            "smoke run: the figures above check that the recipe runs; they are not results "
            f"({setting})"
        )


def table1(dataset, defense, norm, argv=None):
    """Runs one Table-1 cell: ``dataset`` in cifar10 / tiny_imagenet, one of the seven
    defenses, ``norm`` linf or l2."""
    args = parse(f"NAMID paper Table 1: {dataset}, {defense}, {norm}", argv)
    name, folder = choose_data(dataset, args)
    settings = table1_settings(dataset, defense, norm, args.smoke)
    settings.update(dataset=name, data_dir=folder, download=args.download)
    return train(settings, args, f"{dataset}_{defense}_{norm}")


def report(result):
    """One line: the headline measurement and where the export went."""
    m = result.record.headline
    print(
        f"clean {m.clean_accuracy:.2%}, {m.attack} robust {m.robust_accuracy:.2%} on "
        f"{m.n_examples} test images -> {result.path}",
        flush=True,
    )


def cli(argv):
    """Runs ``robustkit ARGV`` in this process; a non-zero exit code stops the recipe."""
    from robustkit.cli import main

    say("robustkit " + " ".join(str(a) for a in argv))
    code = main([str(a) for a in argv])
    if code:
        raise SystemExit(code)


def uae(kind, argv=None):
    """MINE-UAE augmentation of the ``kind`` autoencoder on MNIST (``robustkit uae``)."""
    args = parse(f"MINE-UAE augmentation, {kind} autoencoder, MNIST", argv)
    out = out_dir(args, f"mnist_uae_{kind}")
    # the paper's protocol: every training image; autoencoders trained 20 epochs (SPEC §5);
    # retraining length and MinMax iterations are not reported: 20 epochs, 100 iterations
    sizes = (200, 200, 1, 1, 5) if args.smoke else (60000, 10000, 20, 20, 100)
    n_train, n_test, epochs, retrain, steps = sizes
    cli(["uae", "--autoencoder", kind, "--dataset", "mnist", "--n-train", n_train,
         "--n-test", n_test, "--epochs", epochs, "--retrain-epochs", retrain, "--steps", steps,
         "--out", os.path.join(out, f"uae_{kind}_mnist.keras"),
         *(["--data-dir", args.data_dir] if args.data_dir else []),
         *(["--download"] if args.download else [])])  # fmt: skip
    smoke_caveat(args, "run without --smoke for the paper's protocol")


def minmax(argv=None):
    """Trains an undefended MNIST CNN, exports it and runs ``robustkit attack minmax``."""
    import keras

    import robustkit as rk
    from robustkit.app import ConfigError, load_split

    args = parse("MinMax attack on an undefended MNIST CNN", argv)
    out = out_dir(args, "mnist_minmax")
    try:
        x, y = load_split("mnist", "train", args.data_dir, args.download,
                          2000 if args.smoke else None)  # fmt: skip
    except ConfigError as e:
        fail(str(e))
    keras.utils.set_random_seed(0)
    model = rk.models.small_cnn((28, 28, 1))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"],
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    say(f"training the undefended classifier on {len(x)} MNIST images")
    model.fit(x, y, batch_size=128, epochs=1 if args.smoke else 10, verbose=0 if args.quiet else 2)
    path = os.path.join(out, "classifier")
    rk.export(model, path, metadata={"dataset": "mnist", "defense": "none"}, overwrite=True)
    n, steps = (4, 20) if args.smoke else (100, 1000)
    cli(["attack", "minmax", path, "--n", n, "--steps", steps, "--eps", 1.0, "--out",
         os.path.join(out, "minmax.png"),
         *(["--data-dir", args.data_dir] if args.data_dir else [])])  # fmt: skip
    smoke_caveat(args, "the released setting is 100 images, 1000 iterations")
