"""``robustkit evaluate PATH``: clean and robust accuracy of a model, or a suite report.

Example (shell)::

    $ robustkit evaluate saved_models/digits_at_linf --attack aa --n 500
    $ robustkit evaluate saved_models/digits_at_linf --suite aa --update   # RobustBench protocol
    $ robustkit evaluate saved_models/digits_at_linf --suite linf --report r.md --plot curve.png
    $ robustkit evaluate model.keras --dataset mnist --norm linf --eps 0.3 --json

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["evaluate", "m", "--attack", "apgd-t", "--json"])
>>> args.attack, args.json, args.update
('apgd-t', True, False)

Without ``--suite``/``--report``/``--plot`` the model is measured under ``--attack`` by
:func:`robustkit.app.evaluate_export`; with them, :func:`robustkit.evaluate` runs (one
progress bar per attack, the paper's table layout, the gradient-masking checks).
``--update`` appends what was measured (and a suite's check verdicts) to the export's
``robustkit.json`` and ``MODEL_CARD.md``; ``--json`` prints it as JSON on stdout (progress
then goes to stderr).
"""

import contextlib
import dataclasses
import json
import os
import sys

from robustkit.cli import UsageError, outside_note, percent, positive_float, positive_int


def add_parser(subparsers):
    """``robustkit evaluate PATH``: clean and robust accuracy of a model."""
    from robustkit import threat as threat_lib
    from robustkit.app.evaluate import ATTACK_SPECS
    from robustkit.evaluation.suites import SUITES

    p = subparsers.add_parser(
        "evaluate",
        help="reload a model and print its clean and robust accuracy",
        description=(
            "Reload a robustkit export (or a plain SavedModel / .keras file with --dataset, "
            "--norm and --eps) and measure clean and robust accuracy on a test split. Data "
            "set, norm and eps default to those in its robustkit.json."
        ),
    )
    p.add_argument(
        "path",
        metavar="PATH",
        help="a robustkit export folder, or a plain SavedModel folder / .keras file",
    )
    p.add_argument("--dataset", default=None, help="default: the export's data set")
    p.add_argument("--data-dir", default=None, help="folder with mnist/ and cifar10/")
    p.add_argument("--download", action="store_true", help="let TFDS download the data set")
    p.add_argument(
        "--attack",
        default="pgd40",
        help=f"pgdN (e.g. pgd40, step eps/4), fgsm, {', '.join(ATTACK_SPECS)} "
        "(AutoAttack standard / rand and its components; CW and DDN at the L2 eps); "
        "default pgd40",
    )
    p.add_argument(
        "--norm", default=None, choices=sorted(threat_lib.NORMS), help="default: the export's"
    )
    p.add_argument("--eps", type=positive_float, default=None, help="default: the export's")
    p.add_argument(
        "--n", type=positive_int, default=None, help="evaluate on a stratified subset of N examples"
    )
    p.add_argument(
        "--batch-size", type=positive_int, default=500, help="examples per attack call (500)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed of the subset and the attacks")
    p.add_argument(
        "--suite",
        default=None,
        choices=sorted(SUITES),
        help="evaluate under a named attack suite: linf, l2, blackbox (the paper's) or aa "
        "(AutoAttack standard only, the RobustBench protocol)",
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
    p.add_argument(
        "--update",
        action="store_true",
        help="append the measurement (and a suite's masking-check verdicts) to the export's "
        "robustkit.json and MODEL_CARD.md",
    )
    p.add_argument("--json", action="store_true", help="print the measurement as JSON on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
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
    data set's default for the suite's norm. ``--suite aa`` runs in the model's norm."""
    from robustkit import threat as threat_lib
    from robustkit.evaluation.suites import SUITE_NORMS

    norm = SUITE_NORMS[args.suite] if args.suite and args.suite != "aa" else ev.norm
    if norm == ev.norm or args.eps is not None:
        return norm, ev.eps if args.eps is None else float(args.eps)
    return norm, threat_lib.default_eps(norm, ev.dataset, ev.x.shape[1:])


def run_report(args, ev, verbose):
    """``robustkit evaluate`` with ``--suite``/``--report``/``--plot``."""
    from robustkit.app.evaluate import evaluate_suite
    from robustkit.evaluation import plot_robustness_curve

    norm, eps = suite_threat(args, ev)
    name = os.path.basename(os.path.normpath(args.path))
    evaluate_suite(ev, args.suite or {ev.label: ev.attack}, eps=eps, norm=norm,
                   surrogate=args.surrogate, checks=not args.no_checks, seed=args.seed,
                   name=name, batch_size=args.batch_size, verbose=verbose)  # fmt: skip
    lines = ["", ev.report.to_markdown()]
    if args.report:
        ev.report.save(args.report)
        lines.append(f"\nReport written to {os.path.abspath(args.report)}")
    if args.plot:
        eps_values = [0.0] + [eps * f for f in (0.25, 0.5, 0.75, 1.0, 1.5, 2.0)]
        curves = plot_robustness_curve(
            {name: ev.model}, (ev.x, ev.y), eps_values, norm=norm, path=args.plot, seed=args.seed
        )
        points = ", ".join(
            f"{e:.3g}: {100 * a:.1f} %" for e, a in zip(eps_values, curves[name]["accuracy"])
        )
        lines.append(f"Robustness curve (eps: accuracy) {points}")
        lines.append(f"Plot written to {os.path.abspath(args.plot)}")
    return lines


def summary_lines(args, ev):
    """What a single-attack run prints."""
    m = ev.measurement
    if ev.record is not None:
        defense, trained_on = ev.record.training.defense, ev.record.dataset
        what = f"({defense}, trained on {trained_on})"
    else:
        what = f"(a plain {'.keras file' if ev.kind == 'keras' else 'SavedModel'})"
    return [
        f"Model: {os.path.abspath(args.path)} {what}",
        f"Data: {ev.dataset} test, {len(ev.x)} examples",
        f"Clean accuracy: {percent(m.clean_accuracy)}",
        f"Robust accuracy under {m.attack}: {percent(m.robust_accuracy)}{outside_note(m)}",
    ]


def as_json(args, ev, updated):
    """The machine-readable result (``--json``)."""
    return {
        "path": os.path.abspath(args.path),
        "kind": ev.kind,
        "dataset": ev.dataset,
        "n_examples": int(len(ev.x)),
        "norm": ev.norm,
        "eps": ev.eps,
        "measurements": [dataclasses.asdict(m) for m in ev.measurements],
        "checks": [dataclasses.asdict(c) for c in ev.checks],
        "updated": updated,
    }


def run(args):
    from robustkit.app import evaluate_export
    from robustkit.app.evaluate import resolve_target, update_export
    from robustkit.export.record import to_jsonable

    _, kind, *_ = resolve_target(args.path, args.dataset, args.norm, args.eps)  # PATH etc. first
    if args.update and kind != "export":
        raise UsageError("update", f"{args.path} is not a robustkit export: nothing to update")
    if wants_report(args):
        check_report_args(args)
    verbose = 0 if args.quiet else 1
    # --json: stdout carries the JSON only; progress bars and messages go to stderr
    out = contextlib.redirect_stdout(sys.stderr) if args.json else contextlib.nullcontext()
    with out:
        ev = evaluate_export(args.path, attack=args.attack, dataset=args.dataset,
                             data_dir=args.data_dir, download=args.download, norm=args.norm,
                             eps=args.eps, n=args.n, seed=args.seed,
                             measure_now=not wants_report(args), batch_size=args.batch_size,
                             verbose=verbose)  # fmt: skip
        lines = run_report(args, ev, verbose) if wants_report(args) else summary_lines(args, ev)
        if args.update:
            update_export(args.path, ev.measurements, ev.checks)
            lines.append(
                f"Appended {len(ev.measurements)} measurement(s)"
                + (f" and {len(ev.checks)} check verdict(s)" if ev.checks else "")
                + f" to {os.path.join(os.path.abspath(args.path), 'robustkit.json')} and "
                "MODEL_CARD.md"
            )
        if not args.json:
            print("\n".join(lines), flush=True)
    if args.json:
        print(json.dumps(to_jsonable(as_json(args, ev, args.update)), indent=2), flush=True)
    return 0
