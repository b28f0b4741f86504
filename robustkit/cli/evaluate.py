"""``robustkit evaluate PATH``: clean and robust accuracy of an export, or a full suite report.

Example (shell)::

    $ robustkit evaluate saved_models/digits_at_linf --attack pgd40
    $ robustkit evaluate saved_models/digits_at_linf --suite linf --report r.md --plot curve.png
    $ robustkit evaluate saved_models/cifar10_namid --suite blackbox --surrogate saved_models/vgg

Example (Python):

>>> from robustkit.cli import build_parser
>>> build_parser().parse_args(["evaluate", "m", "--suite", "l2", "--report", "r.md"]).suite
'l2'

Without ``--suite``/``--report``/``--plot`` the export is measured under ``--attack`` by
:func:`robustkit.app.evaluate_export`; with them, :func:`robustkit.evaluate` runs (one
progress bar per attack, the paper's table layout, the gradient-masking checks).
"""

import os

from robustkit.app.config import attack_label
from robustkit.cli import UsageError, outside_note, percent, positive_float, positive_int


def add_parser(subparsers):
    """``robustkit evaluate PATH``: clean and robust accuracy of an export."""
    from robustkit import threat as threat_lib
    from robustkit.evaluation.suites import SUITES

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
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10/")
    p.add_argument("--download", action="store_true", help="let TFDS download the data set")
    p.add_argument("--attack", default="pgd40", help="pgdN (e.g. pgd40, step eps/4) or fgsm")
    p.add_argument(
        "--norm", default=None, choices=sorted(threat_lib.NORMS), help="default: the export's"
    )
    p.add_argument("--eps", type=positive_float, default=None, help="default: the export's")
    p.add_argument(
        "--n", type=positive_int, default=None, help="evaluate on a stratified subset of N examples"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the attacks")
    p.add_argument(
        "--suite",
        default=None,
        choices=sorted(SUITES),
        help="evaluate under a named attack suite (robustkit.evaluation.suites.SUITES)",
    )
    p.add_argument(
        "--surrogate",
        default=None,
        metavar="PATH",
        help="surrogate export for --suite blackbox (and the transfer check)",
    )
    p.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="write the report: Markdown, or JSON when FILE ends in .json",
    )
    p.add_argument(
        "--plot", default=None, metavar="PNG", help="write an accuracy-vs-eps curve (0 to 2x eps)"
    )
    p.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    p.set_defaults(run=run)
    return p


def wants_report(args):
    """Whether the suite path (``robustkit.evaluate``) handles this call."""
    return any(getattr(args, k, None) for k in ("suite", "surrogate", "report", "plot"))


def check_report_args(args):
    """Checks of the suite/report/plot options, before any work."""
    from robustkit.export import read_record

    if args.suite == "blackbox" and not args.surrogate:
        raise UsageError("surrogate", "required with --suite blackbox")
    if args.surrogate:
        try:
            read_record(args.surrogate)
        except ValueError as e:
            raise UsageError("surrogate", str(e).replace("`path` ", "")) from None
    for option in ("report", "plot"):
        path = getattr(args, option)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise UsageError(option, f"{folder} is not a folder")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise UsageError("plot", f"{args.plot!r} must end in .png")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise UsageError("plot", "needs matplotlib (`pip install matplotlib`)") from None


def suite_threat(args, ev):
    """``(norm, eps)`` of the suite: ``--eps`` or the export's when the norms match, else the
    data set's default for the suite's norm."""
    from robustkit import threat as threat_lib
    from robustkit.evaluation.suites import SUITE_NORMS

    norm = SUITE_NORMS[args.suite] if args.suite else ev.norm
    if norm == ev.norm or args.eps is not None:
        return norm, ev.eps if args.eps is None else float(args.eps)
    return norm, threat_lib.default_eps(norm, ev.dataset, ev.record.input_shape)


def run_report(args, ev):
    """``robustkit evaluate`` with ``--suite``/``--report``/``--plot``."""
    from robustkit.evaluation import evaluate, plot_robustness_curve

    norm, eps = suite_threat(args, ev)
    name = os.path.basename(os.path.normpath(args.path))
    report = evaluate(
        ev.model,
        (ev.x, ev.y),
        suite=args.suite or [ev.attack],
        eps=eps,
        surrogate=args.surrogate,
        checks=not args.no_checks,
        seed=args.seed,
        name=name,
        dataset=ev.dataset,
        verbose=1,
    )
    print()
    print(report.to_markdown())
    if args.report:
        report.save(args.report)
        print(f"\nReport written to {os.path.abspath(args.report)}")
    if args.plot:
        eps_values = [0.0] + [eps * f for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)]
        curves = plot_robustness_curve(
            {name: ev.model}, (ev.x, ev.y), eps_values, norm=norm, path=args.plot, seed=args.seed
        )
        points = ", ".join(
            f"{e:.3g}: {100 * a:.1f} %" for e, a in zip(eps_values, curves[name]["accuracy"])
        )
        print(f"Robustness curve (eps: accuracy) {points}")
        print(f"Plot written to {os.path.abspath(args.plot)}")
    return 0


def run(args):
    from robustkit.app import evaluate_export, resolve_export

    resolve_export(args.path, args.dataset, args.norm, args.eps)  # PATH/dataset/eps first
    if wants_report(args):
        check_report_args(args)
    ev = evaluate_export(
        args.path,
        attack=args.attack,
        dataset=args.dataset,
        data_dir=args.data_dir,
        download=args.download,
        norm=args.norm,
        eps=args.eps,
        n=args.n,
        seed=args.seed,
        measure_now=not wants_report(args),
    )
    if wants_report(args):
        return run_report(args, ev)
    m = ev.measurement
    defense, trained_on = ev.record.training.defense, ev.record.dataset
    print(f"Model: {os.path.abspath(args.path)} ({defense}, trained on {trained_on})")
    print(f"Data: {ev.dataset} test, {len(ev.x)} examples")
    print(f"Clean accuracy: {percent(m.clean_accuracy)}")
    print(
        f"Robust accuracy under {attack_label(ev.attack)}: {percent(m.robust_accuracy)}"
        f"{outside_note(m)}"
    )
    return 0
