"""The evaluation options of ``robustkit evaluate``: ``--suite``, ``--surrogate``,
``--report``, ``--plot``, ``--no-checks`` (hooked into :mod:`robustkit.cli`).

Example (shell)::

    $ robustkit evaluate saved_models/digits_at_linf --suite linf --report report.md \\
          --plot curve.png
    $ robustkit evaluate saved_models/cifar10_namid --suite blackbox \\
          --surrogate saved_models/cifar10_vgg19_at

Example (Python):

>>> import argparse
>>> p = argparse.ArgumentParser()
>>> _ = add_suite_arguments(p)
>>> p.parse_args(["--suite", "l2", "--report", "r.md"]).suite
'l2'

With ``--suite`` the export is evaluated with :func:`robustkit.evaluate` (one
progress bar per attack, the paper's table layout, the gradient-masking checks);
without it, ``--report``/``--plot`` use the single ``--attack``.
"""

import os

from robustkit import threat as threat_lib
from robustkit.evaluation.suites import SUITE_NORMS, SUITES


class SuiteArgumentError(ValueError):
    """A bad suite/report/plot option: ``argument`` names it (``--surrogate``)."""

    def __init__(self, argument, message):
        self.argument, self.message = argument, message
        super().__init__(f"argument {argument}: {message}")


def add_suite_arguments(parser):
    """Adds the suite, report and plot options to the ``evaluate`` parser."""
    parser.add_argument(
        "--suite",
        default=None,
        choices=sorted(SUITES),
        help="evaluate under the paper's attack suite (L-inf: PGD-40, AA, FWA-40, "
        "TI-DIM; L2: PGD-40, CW, DDN; blackbox: transfer from --surrogate)",
    )
    parser.add_argument(
        "--surrogate",
        default=None,
        metavar="PATH",
        help="surrogate export for --suite blackbox (and the transfer check)",
    )
    parser.add_argument(
        "--report",
        default=None,
        metavar="FILE",
        help="write the report: Markdown, or JSON when FILE ends in .json",
    )
    parser.add_argument(
        "--plot",
        default=None,
        metavar="PNG",
        help="write an accuracy-vs-eps curve (PGD-40, 0 to 2x eps)",
    )
    parser.add_argument("--no-checks", action="store_true", help="skip the gradient-masking checks")
    return parser


def wants_report(args):
    """Whether ``run_suite`` should handle this ``evaluate`` call."""
    return any(getattr(args, k, None) for k in ("suite", "surrogate", "report", "plot"))


def check_suite_args(args):
    """Argument checks, before any work (:class:`SuiteArgumentError` naming the option)."""
    if args.suite == "blackbox" and not args.surrogate:
        raise SuiteArgumentError("--surrogate", "required with --suite blackbox")
    if args.surrogate:
        from robustkit.export import read_metadata

        try:
            read_metadata(args.surrogate)
        except ValueError as e:
            raise SuiteArgumentError("--surrogate", str(e).replace("`path` ", "")) from None
    for option in ("report", "plot"):
        path = getattr(args, option)
        if path:
            folder = os.path.dirname(os.path.abspath(path))
            if os.path.exists(folder) and not os.path.isdir(folder):
                raise SuiteArgumentError(f"--{option}", f"{folder} is not a folder")
    if args.plot and not args.plot.lower().endswith(".png"):
        raise SuiteArgumentError("--plot", f"{args.plot!r} must end in .png")
    if args.plot:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            raise SuiteArgumentError(
                "--plot", "needs matplotlib (`pip install matplotlib`)"
            ) from None


def suite_eps(args, meta, default_eps_table):
    """eps for the suite: ``--eps`` or the export's when the norms match, else the
    data set's default for the suite's norm."""
    norm = SUITE_NORMS[args.suite] if args.suite else args.norm
    threat = meta.get("threat_model") or {}
    explicit = args.eps is not None and args.eps != threat.get("eps")
    if norm == args.norm or explicit:
        return norm, float(args.eps)
    eps = default_eps_table.get((args.dataset, norm))
    if eps is None:
        eps = threat_lib.default_eps(norm, args.dataset, meta.get("input_shape"))
    return norm, float(eps)


def run_suite(args, meta, model, x, y, attack=None, default_eps_table=None):
    """Runs the evaluation for ``robustkit evaluate`` and prints the report; returns 0."""
    from robustkit.evaluation.core import evaluate
    from robustkit.evaluation.plots import plot_robustness_curve

    norm, eps = suite_eps(args, meta, default_eps_table or {})
    suite = args.suite or [attack]
    name = os.path.basename(os.path.normpath(args.path))
    report = evaluate(
        model,
        (x, y),
        suite=suite,
        eps=eps,
        surrogate=args.surrogate,
        checks=not args.no_checks,
        seed=args.seed,
        name=name,
        dataset=args.dataset,
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
            {name: model}, (x, y), eps_values, norm=norm, path=args.plot, seed=args.seed
        )
        points = ", ".join(
            f"{e:.3g}: {100 * a:.1f} %" for e, a in zip(eps_values, curves[name]["accuracy"])
        )
        print(f"Robustness curve (eps: accuracy) {points}")
        print(f"Plot written to {os.path.abspath(args.plot)}")
    return 0
