"""The ``robustkit`` command line: ``train``, ``evaluate``, ``report``, ``attack``, ``uae``.

Example (shell)::

    $ robustkit train                     # digits, small CNN, PGD-AT L-inf eps 0.1
    $ robustkit evaluate saved_models/digits_at_linf --attack aa --update
    $ robustkit report saved_models/*_linf saved_models/*_l2 --out table1.md

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["train", "--epochs", "2"])
>>> args.command, args.dataset, args.defense, args.epochs
('train', 'digits', 'standard', 2)

Layout, for adding a subcommand: a module ``robustkit/cli/<name>.py`` with
``add_parser(subparsers)`` (builds its ``argparse`` parser and calls
``set_defaults(run=run)``) and ``run(args) -> exit code``, listed in :data:`SUBCOMMANDS`.
The work itself belongs in :mod:`robustkit.app`; a subcommand only turns options into a
call and prints the result. Bad input raises :class:`UsageError` (the application layer's
:class:`~robustkit.app.ConfigError`): ``main`` prints ``robustkit <cmd>: error: argument
--flag: ...`` and exits with code 2, like ``argparse`` itself, before any work.
"""

import argparse
import importlib
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from robustkit.app.config import ConfigError

#: the one usage-error class: ``UsageError("eps", "must be > 0")`` reports ``argument --eps``
UsageError = ConfigError

#: subcommand name -> module under robustkit.cli
SUBCOMMANDS = {
    "train": "robustkit.cli.train",
    "evaluate": "robustkit.cli.evaluate",
    "attack": "robustkit.cli.attack",
    "uae": "robustkit.cli.uae",
    "report": "robustkit.cli.report",
}


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


def percent(value):
    """``0.855`` -> ``"85.5 %"``."""
    return f"{100 * value:.1f} %"


def outside_note(measurement):
    """``" (N attack outputs outside the eps-ball counted robust)"`` when there were any."""
    n = measurement.outside_ball
    return f" ({n} attack outputs outside the eps-ball counted robust)" if n else ""


# ----------------------------------------------------------------------- main
def build_parser():
    """The ``robustkit`` parser with every registered subcommand."""
    import robustkit

    parser = argparse.ArgumentParser(
        prog="robustkit",
        description="Adversarial robustness for Keras 3: train, evaluate, export hardened models.",
    )
    parser.add_argument("--version", action="version", version=f"robustkit {robustkit.__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in SUBCOMMANDS.values():
        sub = importlib.import_module(module).add_parser(subparsers)
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


__all__ = [
    "SUBCOMMANDS",
    "UsageError",
    "build_parser",
    "main",
    "non_negative_int",
    "outside_note",
    "percent",
    "positive_float",
    "positive_int",
]
