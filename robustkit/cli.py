"""The ``robustkit`` command line: ``robustkit train`` and ``robustkit evaluate``.

Example (shell)::

    $ robustkit train                     # digits, small CNN, PGD-AT L-inf eps 0.1
    $ robustkit evaluate saved_models/digits_at_linf --attack pgd40

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["train", "--epochs", "2"])
>>> args.command, args.dataset, args.defense, args.epochs
('train', 'digits', 'standard', 2)

Layout, for adding a subcommand: write ``add_<name>_parser(subparsers)`` (builds
its ``argparse`` parser and calls ``set_defaults(run=run_<name>)``) and
``run_<name>(args) -> exit code``, and list the builder in :data:`SUBCOMMANDS`.
A ``run_*`` function raises :class:`UsageError` (or ``ValueError`` while it
checks its arguments) for bad input: ``main`` prints ``robustkit <cmd>: error:
...`` and exits with code 2, like ``argparse`` itself.
"""

import argparse
import os
import re
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: ``--model`` names and the builders' keyword for the width argument
MODELS = {
    "small_cnn": "width",
    "resnet18": "base_filters",
    "preact_resnet18": "base_filters",
    "vgg19": "base_filters",
    "wide_resnet": "base_filters",
}
NORMS = ("linf", "l2")
#: default radius per (dataset, norm) when ``--eps`` is not given (SPEC section 1;
#: digits: the 8x8 embedded set, where 0.1 L-inf is the tested default)
DEFAULT_EPS = {
    ("digits", "linf"): 0.1,
    ("digits", "l2"): 0.5,
    ("mnist", "linf"): 0.3,
    ("mnist", "l2"): 2.0,
    ("cifar10", "linf"): 8 / 255,
    ("cifar10", "l2"): 0.5,
}
#: default epochs per dataset (others: 10)
DEFAULT_EPOCHS = {"digits": 15, "mnist": 10, "cifar10": 30}
DEFAULT_OUT_DIR = "saved_models"


class UsageError(ValueError):
    """Bad command-line input: reported with exit code 2 before any work."""

    def __init__(self, argument, message):
        self.argument = argument
        super().__init__(f"argument {argument}: {message}")


# ------------------------------------------------------------------ arg types
def positive_float(text):
    """``argparse`` type: a finite number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number > 0; got {text!r}") from None
    if not (value > 0 and value < float("inf")):
        raise argparse.ArgumentTypeError(f"must be > 0; got {text!r}")
    return value


def _int_at_least(minimum):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            value = None
        if value is None or value < minimum:
            raise argparse.ArgumentTypeError(f"must be an integer >= {minimum}; got {text!r}")
        return value

    return parse


def positive_int(text):
    """``argparse`` type: an integer >= 1."""
    return _int_at_least(1)(text)


def non_negative_int(text):
    """``argparse`` type: an integer >= 0."""
    return _int_at_least(0)(text)


def parse_attack(spec, eps, norm, argument="--attack"):
    """``"pgd40"`` / ``"pgd-20"`` / ``"fgsm"`` -> a robustkit attack (step eps/4).

    Example:

    >>> parse_attack("pgd40", 0.1, "linf").steps
    40
    """
    from robustkit import attacks

    text = spec.strip().lower()
    match = re.fullmatch(r"pgd-?(\d+)", text)
    if match and int(match.group(1)) >= 1:
        # One-shot evaluation: tf.while_loop traces in ~1 s where the unrolled
        # early-stop loop of PGD-40 takes minutes to trace on a busy 2-core CPU.
        return attacks.PGD(
            eps=eps, steps=int(match.group(1)), norm=norm, early_stop=True, loop="while"
        )
    if text == "fgsm":
        return attacks.FGSM(eps=eps, norm=norm)
    raise UsageError(argument, f"unknown attack {spec!r}; expected pgdN (e.g. pgd40) or fgsm")


def attack_label(attack):
    """A short human-readable name, e.g. ``"PGD-40 (linf, eps=0.1, step=0.025)"``."""
    name = type(attack).__name__
    if name == "PGD":
        name = f"PGD-{attack.steps}"
    return f"{name} ({attack.norm}, eps={attack.eps:.4g}, step={attack.step_size:.4g})"


# -------------------------------------------------------------- shared checks
def check_dataset(name):
    """Accepts the local names and TFDS names; ``UsageError`` otherwise."""
    from robustkit import data

    if not isinstance(name, str) or not name:
        raise UsageError("--dataset", "must be a non-empty name")
    key = name.lower()
    if key in data.LOCAL:
        return key
    try:
        import tensorflow_datasets as tfds

        known = set(tfds.list_builders())
    except Exception:  # pragma: no cover - tfds is a core dependency
        known = set()
    if key not in known:
        raise UsageError(
            "--dataset",
            f"unknown dataset {name!r}; use one of {list(data.LOCAL)} or a TensorFlow "
            "Datasets name (e.g. svhn_cropped)",
        )
    return key


def load_split(dataset, split, data_dir, download, size, seed):
    """Loads a split (optionally a stratified subset); data problems -> UsageError."""
    from robustkit import data

    try:
        x, y = data.load(dataset, split, data_dir=data_dir, download=download)
    except FileNotFoundError as e:
        raise UsageError("--data-dir" if dataset in data.LOCAL else "--dataset", str(e)) from None
    if size:
        x, y = data.subset(x, y, size, seed=seed)
    return x, y


def evaluate_accuracy(model, x, y, attack):
    """Clean and robust accuracy from the one evaluator, :func:`robustkit.evaluation.measure`
    (robust: correct clean, and under ``attack`` still correct or outside its eps-ball)."""
    from robustkit.evaluation import measure

    return measure(model, (x, y), attack)


def _outside_note(found):
    """`` (N outputs outside the eps-ball counted robust)`` when there were any."""
    n = found.outside_ball
    return f" ({n} attack outputs outside the eps-ball counted robust)" if n else ""


def _percent(value):
    return f"{100 * value:.1f} %"


# ---------------------------------------------------------------------- train
def add_train_parser(subparsers):
    """``robustkit train``: adversarial training, PGD-40 evaluation, export."""
    from robustkit import objectives

    p = subparsers.add_parser(
        "train",
        help="adversarially train a model and export it (default: digits, PGD-AT)",
        description=(
            "Adversarially train a classifier, evaluate it under PGD-40 on the test split "
            "and export it as a SavedModel with robustkit.json. With no arguments: the "
            "embedded digits, a small CNN, PGD-AT (PGD-10) at L-inf eps 0.1 with an eps "
            "warm-up, seeded; exported to saved_models/digits_at_linf."
        ),
    )
    p.add_argument(
        "--dataset",
        default="digits",
        help="digits (embedded, default), mnist, cifar10 (files in --data-dir) or a TFDS name",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="folder with mnist/ and cifar10/ (default $ROBUSTKIT_DATA_DIR)",
    )
    p.add_argument(
        "--download",
        action="store_true",
        help="let TFDS download a data set that is not prepared (needs internet)",
    )
    p.add_argument("--model", default="small_cnn", choices=sorted(MODELS))
    p.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="filters of the first layer/stage (small_cnn 32, resnet18/"
        "preact_resnet18/vgg19 64, wide_resnet 16); smaller is faster",
    )
    p.add_argument("--depth", type=positive_int, default=34, help="wide_resnet depth (6n+4)")
    p.add_argument("--widen-factor", type=positive_int, default=10, help="wide_resnet k")
    p.add_argument(
        "--defense",
        default="standard",
        choices=sorted(objectives.REGISTRY),
        help="training objective (robustkit.objectives.REGISTRY)",
    )
    p.add_argument(
        "--beta",
        type=positive_float,
        default=None,
        help="TRADES/MART beta (default: the objective's, 6.0)",
    )
    p.add_argument("--norm", default="linf", choices=NORMS)
    p.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="radius (default: digits 0.1, mnist 0.3, cifar10 8/255 for linf; "
        "digits 0.5, mnist 2.0, cifar10 0.5 for l2)",
    )
    p.add_argument("--steps", type=positive_int, default=10, help="training PGD steps")
    p.add_argument("--eval-attack", default="pgd40", help="evaluation attack (pgdN or fgsm)")
    p.add_argument(
        "--epochs",
        type=positive_int,
        default=None,
        help="training epochs (default: digits 15, mnist 10, cifar10 30)",
    )
    p.add_argument(
        "--warmup-epochs",
        type=non_negative_int,
        default=None,
        help="linear eps warm-up epochs (default: epochs // 5, at least 1)",
    )
    p.add_argument("--batch-size", type=positive_int, default=64)
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"))
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default adam 1e-3, sgd 0.01 with momentum 0.9)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--train-size",
        type=positive_int,
        default=None,
        help="train on a stratified subset of this many examples",
    )
    p.add_argument(
        "--test-size",
        type=positive_int,
        default=None,
        help="evaluate on a stratified subset of this many examples",
    )
    p.add_argument(
        "--out",
        default=None,
        help="export folder (default saved_models/<dataset>[_<model>]_<defense>_<norm>)",
    )
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    # NAMID / WMIM (robustkit.namid.run_pipeline): stage 1 AT target, stage 2 estimators, stage 3
    p.add_argument(
        "--estimator-epochs",
        type=positive_int,
        default=25,
        help="namid/wmim: stage-2 estimator epochs (paper 25)",
    )
    p.add_argument(
        "--estimator-features",
        type=positive_int,
        default=2048,
        help="namid/wmim: estimator feature width (paper 2048; smaller is faster)",
    )
    p.add_argument(
        "--stages-dir",
        default=None,
        help="namid/wmim: cache of the pipeline stages (default <out>_stages); "
        "a rerun skips finished stages",
    )
    p.set_defaults(run=run_train)
    return p


def default_out(dataset, model, defense, norm):
    """``saved_models/digits_at_linf`` for the default run."""
    tag = "at" if defense in ("standard", "at") else defense
    parts = [dataset] + ([] if model == "small_cnn" else [model]) + [tag, norm]
    return os.path.join(DEFAULT_OUT_DIR, "_".join(parts))


def check_train_args(args):
    """All argument checks of ``train``; raises UsageError before any work."""
    from robustkit import objectives
    from robustkit.export import read_metadata

    args.dataset = check_dataset(args.dataset)
    if args.defense not in objectives.REGISTRY:  # registry may change after parsing
        raise UsageError("--defense", f"unknown defense {args.defense!r}")
    if args.eps is None:
        args.eps = DEFAULT_EPS.get(
            (args.dataset, args.norm), 8 / 255 if args.norm == "linf" else 0.5
        )
    if args.norm == "linf" and args.eps >= 1:
        raise UsageError("--eps", f"must be < 1 under linf for images in [0, 1]; got {args.eps}")
    if args.model == "wide_resnet" and (args.depth - 4) % 6:
        raise UsageError("--depth", f"wide_resnet depth must be 6n + 4; got {args.depth}")
    if args.epochs is None:
        args.epochs = DEFAULT_EPOCHS.get(args.dataset, 10)
    if args.warmup_epochs is None:
        args.warmup_epochs = max(1, args.epochs // 5)
    if args.warmup_epochs > args.epochs:
        raise UsageError("--warmup-epochs", f"must be <= --epochs ({args.epochs})")
    if args.lr is None:
        args.lr = 1e-3 if args.optimizer == "adam" else 0.01
    args.eval_attack_obj = parse_attack(args.eval_attack, args.eps, args.norm, "--eval-attack")
    kwargs = {} if args.beta is None else {"beta": args.beta}
    if args.defense in MI_DEFENSES:  # built by robustkit.namid.run_pipeline after stages 1-2
        if args.defense == "wmim" and args.beta is not None:
            raise UsageError("--beta", "the 'wmim' defense takes no beta")
        args.objective = None
    else:
        try:
            args.objective = objectives.get(args.defense, **kwargs)
        except TypeError:
            raise UsageError("--beta", f"the {args.defense!r} defense takes no beta") from None
        except ValueError as e:  # e.g. a defence that needs trained MI estimators first
            raise UsageError(
                "--defense",
                f"{args.defense!r} cannot be built from command-line options alone: {e}",
            ) from None
    if args.out is None:
        args.out = default_out(args.dataset, args.model, args.defense, args.norm)
    if os.path.exists(args.out):
        try:
            read_metadata(args.out)  # replace only a previous robustkit export
        except ValueError:
            raise UsageError(
                "--out", f"{args.out} exists and is not a robustkit SavedModel; not replacing it"
            ) from None
    return args


def build_model(name, input_shape, num_classes, width=None, depth=34, widen_factor=10):
    """The ``--model`` architecture for ``input_shape``."""
    from robustkit import models

    kwargs = {"input_shape": tuple(input_shape), "num_classes": num_classes}
    if width is not None:
        kwargs[MODELS[name]] = width
    if name == "wide_resnet":
        kwargs.update(depth=depth, width=widen_factor)
    return getattr(models, name)(**kwargs)


MI_DEFENSES = ("namid", "namid_t", "namid_m", "wmim")


def _run_mi_pipeline(args, x_tr, y_tr, x_te, y_te, num_classes, train_attack):
    """``--defense namid|namid_t|namid_m|wmim``: robustkit.namid.run_pipeline, then export."""
    import keras

    import robustkit as rk
    from robustkit.namid import run_pipeline

    def model_fn():
        return build_model(
            args.model, x_tr.shape[1:], num_classes, args.width, args.depth, args.widen_factor
        )

    def optimizer():
        if args.optimizer == "adam":
            return keras.optimizers.Adam(args.lr)
        return keras.optimizers.SGD(args.lr, momentum=0.9)

    def callbacks():
        return [rk.callbacks.EpsilonWarmup(epochs=args.warmup_epochs)] if args.warmup_epochs else []

    stages = args.stages_dir or (args.out.rstrip("/\\") + "_stages")
    print(
        f"robustkit train: {args.dataset} ({len(x_tr)} train / {len(x_te)} test), {args.model}, "
        f"defense {args.defense} via the three-stage pipeline (stages cached in {stages}), "
        f"{args.norm} eps {args.eps:.4g}, PGD-{args.steps}, {args.epochs} epochs per stage, "
        f"estimators {args.estimator_features} wide / {args.estimator_epochs} epochs, "
        f"seed {args.seed}",
        flush=True,
    )
    start = time.perf_counter()
    out = run_pipeline(
        args.defense,
        model_fn,
        (x_tr, y_tr),
        train_attack,
        stages,
        stage1_epochs=args.epochs,
        estimator_epochs=args.estimator_epochs,
        epochs=args.epochs,
        warmup_epochs=2,
        batch_size=args.batch_size,
        optimizer=optimizer,
        estimator_kwargs={"features": args.estimator_features},
        objective_kwargs={} if args.beta is None else {"beta": args.beta},
        callbacks=callbacks,
        seed=args.seed,
        verbose=0 if args.quiet else 1,
    )
    train_seconds = time.perf_counter() - start
    model = out["model"]
    args.objective = model.objective
    attack = args.eval_attack_obj
    found = evaluate_accuracy(model.base_model, x_te, y_te, attack)
    clean, robust = found.clean_accuracy, found.robust_accuracy
    metadata = {
        "dataset": args.dataset,
        "model": args.model,
        "threat_model": {"norm": args.norm, "eps": args.eps},
        "defense": args.defense,
        "hyperparameters": {
            **args.objective.get_config(),
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "estimator_epochs": args.estimator_epochs,
            "estimator_features": args.estimator_features,
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
            "learning_rate": args.lr,
            "train_steps": args.steps,
            "seed": args.seed,
            "train_examples": int(len(x_tr)),
        },
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "attack": attack_label(attack),
        "n_examples": int(len(x_te)),
        "outside_ball": found.outside_ball,
        "train_seconds": round(train_seconds, 1),
        "pipeline_stages_run": out["ran"],
    }
    rk.export(model, args.out, metadata=metadata, overwrite=True)
    print(
        f"Stages run: {out['ran'] or 'none (all cached)'}; skipped: {out['skipped']}\n"
        f"Clean accuracy: {_percent(clean)}; robust accuracy under {attack_label(attack)}: "
        f"{_percent(robust)} ({len(x_te)} test examples){_outside_note(found)}\n"
        f"Exported to {os.path.abspath(args.out)}",
        flush=True,
    )
    return 0


def run_train(args):
    check_train_args(args)
    import keras

    import robustkit as rk

    x_tr, y_tr = load_split(
        args.dataset, "train", args.data_dir, args.download, args.train_size, args.seed
    )
    x_te, y_te = load_split(
        args.dataset, "test", args.data_dir, args.download, args.test_size, args.seed
    )
    num_classes = int(max(y_tr.max(), y_te.max())) + 1
    keras.utils.set_random_seed(args.seed)
    base = build_model(
        args.model, x_tr.shape[1:], num_classes, args.width, args.depth, args.widen_factor
    )
    train_attack = rk.attacks.PGD(eps=args.eps, steps=args.steps, norm=args.norm)
    if args.defense in MI_DEFENSES:
        return _run_mi_pipeline(args, x_tr, y_tr, x_te, y_te, num_classes, train_attack)
    model = rk.RobustModel(base, objective=args.objective, attack=train_attack)
    if args.optimizer == "adam":
        optimizer = keras.optimizers.Adam(args.lr)
    else:
        optimizer = keras.optimizers.SGD(args.lr, momentum=0.9)
    model.compile(optimizer=optimizer)

    print(
        f"robustkit train: {args.dataset} ({len(x_tr)} train / {len(x_te)} test), "
        f"{args.model} ({base.count_params():,} parameters), defense {args.defense} "
        f"({args.objective!r}), {args.norm} eps {args.eps:.4g}, PGD-{args.steps} "
        f"(step {train_attack.step_size:.4g}), {args.epochs} epochs "
        f"(eps warm-up {args.warmup_epochs}), batch {args.batch_size}, seed {args.seed}",
        flush=True,
    )
    callbacks = []
    if args.warmup_epochs:
        callbacks.append(rk.callbacks.EpsilonWarmup(epochs=args.warmup_epochs))
    start = time.perf_counter()
    model.fit(
        x_tr,
        y_tr,
        batch_size=args.batch_size,
        epochs=args.epochs,
        callbacks=callbacks,
        verbose=0 if args.quiet else 1,
    )
    train_seconds = time.perf_counter() - start

    attack = args.eval_attack_obj
    start = time.perf_counter()
    found = evaluate_accuracy(base, x_te, y_te, attack)
    clean, robust = found.clean_accuracy, found.robust_accuracy
    eval_seconds = time.perf_counter() - start
    metadata = {
        "dataset": args.dataset,
        "model": args.model,
        "threat_model": {"norm": args.norm, "eps": args.eps},
        "defense": args.defense,
        "hyperparameters": {
            **args.objective.get_config(),
            "epochs": args.epochs,
            "warmup_epochs": args.warmup_epochs,
            "batch_size": args.batch_size,
            "optimizer": args.optimizer,
            "learning_rate": args.lr,
            "train_steps": args.steps,
            "seed": args.seed,
            "train_examples": int(len(x_tr)),
        },
        "clean_accuracy": clean,
        "robust_accuracy": robust,
        "attack": attack_label(attack),
        "n_examples": int(len(x_te)),
        "outside_ball": found.outside_ball,
        "train_seconds": round(train_seconds, 1),
    }
    rk.export(model, args.out, metadata=metadata, overwrite=True)
    print(
        f"Clean accuracy: {_percent(clean)}; robust accuracy under {attack_label(attack)}: "
        f"{_percent(robust)} ({len(x_te)} test examples){_outside_note(found)}\n"
        f"Training took {train_seconds:.0f} s, evaluation {eval_seconds:.0f} s.\n"
        f"Exported to {os.path.abspath(args.out)}",
        flush=True,
    )
    return 0


# ------------------------------------------------------------------- evaluate
def add_evaluate_parser(subparsers):
    """``robustkit evaluate PATH``: clean and robust accuracy of an export."""
    p = subparsers.add_parser(
        "evaluate",
        help="reload an export and print its clean and robust accuracy",
        description=(
            "Reload a robustkit SavedModel and measure clean and robust accuracy on a test "
            "split. Data set, norm and eps default to those in its robustkit.json."
        ),
    )
    p.add_argument("path", metavar="PATH", help="a folder written by robustkit.export / train")
    p.add_argument("--dataset", default=None, help="default: the export's data set")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--download", action="store_true")
    p.add_argument("--attack", default="pgd40", help="pgdN (e.g. pgd40, step eps/4) or fgsm")
    p.add_argument("--norm", default=None, choices=NORMS, help="default: the export's")
    p.add_argument("--eps", type=positive_float, default=None, help="default: the export's")
    p.add_argument(
        "--n",
        type=positive_int,
        default=None,
        help="evaluate on a stratified subset of N test examples",
    )
    p.add_argument("--seed", type=int, default=0)
    from robustkit.evaluation import cli as evaluation_cli  # --suite/--surrogate/--report/--plot

    evaluation_cli.add_suite_arguments(p)
    p.set_defaults(run=run_evaluate)
    return p


def read_export_metadata(args):
    """Reads ``args.path``'s robustkit.json and resolves ``args.dataset`` from it.

    Exits as a usage error naming PATH or --dataset; returns the metadata.
    """
    from robustkit.export import read_metadata

    try:
        meta = read_metadata(args.path)
    except ValueError as e:
        raise UsageError("PATH", str(e).replace("`path` ", "")) from None
    dataset = args.dataset or meta.get("dataset")
    if dataset is None:
        raise UsageError("--dataset", "the export does not record its data set; pass --dataset")
    args.dataset = check_dataset(dataset)
    return meta


def check_evaluate_args(args):
    """Argument checks of ``evaluate``; returns the export's metadata."""
    meta = read_export_metadata(args)
    threat = meta.get("threat_model") or {}
    args.norm = args.norm or threat.get("norm")
    args.eps = args.eps or threat.get("eps")
    if args.norm is None or args.eps is None:
        raise UsageError(
            "--eps", "the export does not record its threat model; pass --norm and --eps"
        )
    if args.norm not in NORMS:
        raise UsageError("--norm", f"unknown norm {args.norm!r}")
    args.attack_obj = parse_attack(args.attack, float(args.eps), args.norm)
    return meta


def run_evaluate(args):
    meta = check_evaluate_args(args)
    from robustkit.evaluation import cli as evaluation_cli
    from robustkit.export import load_exported

    if evaluation_cli.wants_report(args):
        try:
            evaluation_cli.check_suite_args(args)
        except evaluation_cli.SuiteArgumentError as e:
            raise UsageError(e.argument, e.message) from None

    x, y = load_split(args.dataset, "test", args.data_dir, args.download, args.n, args.seed)
    if list(x.shape[1:]) != list(meta["input_shape"]):
        raise UsageError(
            "--dataset",
            f"{args.dataset} images are {list(x.shape[1:])} but the model takes "
            f"{meta['input_shape']}",
        )
    loaded, _ = load_exported(args.path)
    if evaluation_cli.wants_report(args):  # suite, report, plot: robustkit.evaluate
        return evaluation_cli.run_suite(args, meta, loaded, x, y, args.attack_obj, DEFAULT_EPS)
    found = evaluate_accuracy(loaded, x, y, args.attack_obj)
    print(
        f"Model: {os.path.abspath(args.path)} ({meta.get('defense')}, "
        f"trained on {meta.get('dataset')})"
    )
    print(f"Data: {args.dataset} test, {len(x)} examples")
    print(f"Clean accuracy: {_percent(found.clean_accuracy)}")
    print(
        f"Robust accuracy under {attack_label(args.attack_obj)}: "
        f"{_percent(found.robust_accuracy)}{_outside_note(found)}"
    )
    return 0


# ----------------------------------------------------------------------- main
#: subcommand name -> parser builder (each builder sets ``run``)
SUBCOMMANDS = {
    "train": add_train_parser,
    "evaluate": add_evaluate_parser,
}

# MINE-based subcommands (issue #5): ``robustkit uae`` and ``robustkit attack minmax``
from robustkit._cli_mine import add_attack_parser, add_uae_parser  # noqa: E402

SUBCOMMANDS.update(uae=add_uae_parser, attack=add_attack_parser)


def build_parser():
    """The ``robustkit`` parser with every registered subcommand."""
    import robustkit

    parser = argparse.ArgumentParser(
        prog="robustkit",
        description=(
            "Adversarial robustness for Keras 3: train, evaluate and export hardened models."
        ),
    )
    parser.add_argument("--version", action="version", version=f"robustkit {robustkit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for builder in SUBCOMMANDS.values():
        sub = builder(subparsers)
        sub.set_defaults(parser=sub)
    return parser


def main(argv=None):
    """Entry point of the ``robustkit`` console script; returns the exit code."""
    parser = build_parser()
    args = parser.parse_args(argv)  # argparse itself exits 2 on bad syntax/choices
    try:
        return int(args.run(args) or 0)
    except UsageError as e:
        args.parser.print_usage(sys.stderr)
        print(f"{args.parser.prog}: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":  # pragma: no cover
    # ``python -m robustkit.cli``: run the imported module's ``main`` so that the
    # subcommands (which import ``robustkit.cli``) and this entry point share one
    # ``UsageError`` class.
    from robustkit.cli import main as _main

    sys.exit(_main())
