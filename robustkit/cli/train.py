"""``robustkit train``: adversarial training, evaluation, export (``app.train_and_export``).

Example:

>>> from robustkit.cli import build_parser
>>> from robustkit.cli.train import check_train_args
>>> plan = check_train_args(build_parser().parse_args(["train", "--defense", "trades"]))
>>> plan.objective, plan.out
(TRADES(beta=6.0), 'saved_models/digits_trades_linf')
>>> args = build_parser().parse_args(["train", "--augment", "--val-size", "200"])
>>> args.augment, args.val_size, args.mixed_precision, args.backup_dir, args.deterministic
(True, 200, False, None, False)
"""

import os

from robustkit.app.config import MI_VARIANTS, MODELS, TrainConfig, attack_label
from robustkit.cli import (
    non_negative_int,
    outside_note,
    percent,
    positive_float,
    positive_int,
)


def add_parser(subparsers):
    """``robustkit train``: adversarial training, PGD-40 evaluation, export."""
    from robustkit import objectives
    from robustkit import threat as threat_lib

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
    p.add_argument("--model", default="small_cnn", choices=sorted(MODELS), help="architecture")
    p.add_argument(
        "--width",
        type=positive_int,
        default=None,
        help="filters of the first layer/stage (small_cnn 32, resnet18/preact_resnet18/vgg19 "
        "64, wide_resnet 16); smaller is faster",
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
        "--beta", type=positive_float, default=None, help="TRADES/MART beta (default: 6.0)"
    )
    p.add_argument("--norm", default="linf", choices=sorted(threat_lib.NORMS), help="threat model")
    p.add_argument(
        "--eps",
        type=positive_float,
        default=None,
        help="radius (default: the data set's, robustkit.threat.DEFAULT_EPS: digits 0.1, "
        "mnist 0.3, cifar10 8/255 for linf)",
    )
    p.add_argument("--steps", type=positive_int, default=10, help="training PGD steps")
    p.add_argument(
        "--step-size", type=positive_float, default=None, help="training PGD step (default eps/4)"
    )
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
    p.add_argument("--batch-size", type=positive_int, default=64, help="training batch")
    p.add_argument("--optimizer", default="adam", choices=("adam", "sgd"), help="optimizer")
    p.add_argument(
        "--lr",
        type=positive_float,
        default=None,
        help="learning rate (default adam 1e-3, sgd 0.01 with momentum 0.9)",
    )
    p.add_argument(
        "--lr-schedule",
        default="constant",
        help="constant (default), cosine, piecewise (x0.1 at 75 %% and x0.01 at 90 %% of the "
        "epochs) or piecewise:E1,E2 (explicit epochs)",
    )
    p.add_argument(
        "--weight-decay", type=positive_float, default=None, help="decoupled weight decay"
    )
    p.add_argument(
        "--augment", action="store_true", help="standard augmentation: pad 4, random crop, flip"
    )
    p.add_argument(
        "--val-size",
        type=positive_int,
        default=None,
        help="hold out N training examples and keep the checkpoint with the best "
        "(clean + robust) / 2 on them (the NAMID paper's selection)",
    )
    p.add_argument(
        "--mixed-precision", action="store_true", help="train under the mixed_float16 policy"
    )
    p.add_argument(
        "--backup-dir",
        default=None,
        help="back up training state here each epoch; rerunning the same command resumes",
    )
    p.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic TensorFlow ops (tf.config.experimental.enable_op_determinism)",
    )
    p.add_argument(
        "--strategy",
        default="default",
        choices=("default", "mirrored", "multiworker"),
        help="tf.distribute strategy: mirrored (local GPUs) or multiworker (reads TF_CONFIG; "
        "run the same command on every host; only the chief exports)",
    )
    p.add_argument("--seed", type=int, default=0, help="random seed of data order and weights")
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
    p.add_argument("--quiet", action="store_true", help="no progress output")
    # NAMID / WMIM (robustkit.namid): stage 1 AT target, stage 2 estimators, stage 3
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
        help="namid/wmim: cache of the pipeline stages (default <out>_stages); a rerun "
        "skips finished stages",
    )
    p.add_argument(
        "--mi-variant",
        default="release",
        choices=MI_VARIANTS,
        help="namid/wmim: 'release' (default): the authors' released code (stage-2 objective "
        "and DV, L2 PGD-20 stage-2 examples, lam 0, PGD-40 in stage 3); 'paper': the "
        "paper's formulas (difference objective, lam 0.1, the --steps attack throughout)",
    )
    p.set_defaults(run=run)
    return p


def training_options(args):
    """The training options of issue #13 (augmentation, held-out selection, precision,
    resume, determinism) as TrainConfig keywords."""
    names = ("augment", "val_size", "mixed_precision", "backup_dir", "deterministic")
    return {name: getattr(args, name) for name in names}


def config_from_args(args):
    """The :class:`~robustkit.app.TrainConfig` the options describe."""
    return TrainConfig(
        **training_options(args),
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        model=args.model,
        width=args.width,
        depth=args.depth,
        widen_factor=args.widen_factor,
        defense=args.defense,
        beta=args.beta,
        norm=args.norm,
        eps=args.eps,
        steps=args.steps,
        step_size=args.step_size,
        eval_attack=args.eval_attack,
        epochs=args.epochs,
        warmup_epochs=args.warmup_epochs,
        batch_size=args.batch_size,
        optimizer=args.optimizer,
        lr=args.lr,
        lr_schedule=args.lr_schedule,
        weight_decay=args.weight_decay,
        seed=args.seed,
        train_size=args.train_size,
        test_size=args.test_size,
        out=args.out,
        estimator_epochs=args.estimator_epochs,
        estimator_features=args.estimator_features,
        stages_dir=args.stages_dir,
        mi_variant=args.mi_variant,
        strategy=args.strategy,
    )


def check_train_args(args):
    """Every check of ``train``, before any work; returns the resolved plan."""
    return config_from_args(args).resolve()


def run(args):
    from robustkit.app import train_and_export

    plan = check_train_args(args)
    result = train_and_export(plan, verbose=0 if args.quiet else 1)
    if result.path is None:  # a worker other than the chief of a multi-worker run
        print("Worker done; the chief exported the model.", flush=True)
        return 0
    m = result.record.measurements[-1]
    lines = []
    if result.stages_run is not None:
        ran = result.stages_run or "none (all cached)"
        lines.append(f"Stages run: {ran}; skipped: {result.stages_skipped}")
    lines += [
        f"Clean accuracy: {percent(m.clean_accuracy)}; robust accuracy under "
        f"{attack_label(plan.eval_attack)}: {percent(m.robust_accuracy)} "
        f"({m.n_examples} test examples){outside_note(m)}",
        f"Training took {result.train_seconds:.0f} s, evaluation {result.eval_seconds:.0f} s.",
        f"Exported to {os.path.abspath(plan.out)}",
    ]
    print("\n".join(lines), flush=True)
    return 0
