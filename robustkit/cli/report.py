"""``robustkit report PATH... --out table.md``: several exports as the paper's Table 1.

Example (shell)::

    $ robustkit report saved_models/cifar10_*_linf saved_models/cifar10_*_l2 --out table1.md

Example (Python):

>>> from robustkit.cli import build_parser
>>> args = build_parser().parse_args(["report", "a", "b", "--out", "t.md"])
>>> args.paths, args.out
(['a', 'b'], 't.md')

Rows are defenses, columns the attacks measured per threat model (L∞, L2, black-box), from
each export's ``robustkit.json`` (:mod:`robustkit.app.report`); Markdown to ``--out`` or
stdout.
"""

import os

from robustkit.cli import UsageError, positive_int


def add_parser(subparsers):
    p = subparsers.add_parser(
        "report",
        help="assemble several exports into the paper's Table 1 (Markdown)",
        description=(
            "Read the measurements of several robustkit exports and write one Markdown table "
            "per data set: rows = defenses, columns = attacks per threat model (the NAMID "
            "paper's Table 1 layout). Add measurements with `robustkit evaluate PATH --suite "
            "linf --update`."
        ),
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="robustkit export folders")
    p.add_argument("--out", default=None, metavar="FILE", help="Markdown file (default: stdout)")
    p.add_argument("--digits", type=positive_int, default=2, help="decimals of the percentages")
    p.set_defaults(run=run)
    return p


def run(args):
    from robustkit.app.report import read_exports, table_markdown

    if args.out:
        folder = os.path.dirname(os.path.abspath(args.out))
        if os.path.exists(folder) and not os.path.isdir(folder):
            raise UsageError("out", f"{folder} is not a folder")
        if os.path.isdir(args.out):
            raise UsageError("out", f"{args.out} is a folder; give a file name")
    text = table_markdown(read_exports(args.paths), digits=args.digits)
    if args.out:
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text)
        print(f"Table written to {os.path.abspath(args.out)}")
    else:
        print(text, end="")
    return 0
