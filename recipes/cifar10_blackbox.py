"""NAMID paper, Table 2: black-box robustness on CIFAR-10 (L-inf eps 8/255).

Transfer attacks (PGD-40, AutoAttack, FWA-40) computed on a surrogate, a VGG-19 trained with
PGD-AT in the Table-1 setting, against the Standard, WMIM and NAMID L-inf models of Table 1.
Run the three Table-1 recipes first (or pass --targets), then from the repository root:

    python recipes/cifar10_blackbox.py            # surrogate (a GPU job), then the suite
    python recipes/cifar10_blackbox.py --smoke    # tiny surrogate and target, 50 images

Each target's robustkit.json and MODEL_CARD.md get the black-box measurements
(`robustkit evaluate TARGET --suite blackbox --surrogate VGG --update`); the table is
written to <out>/table2.md (`robustkit report`).
"""

import os
import sys

import _common

TARGETS = ("standard", "wmim", "namid")

if __name__ == "__main__":
    argv = sys.argv[1:]
    targets = []
    if "--targets" in argv:  # --targets PATH... (until the next flag)
        i = argv.index("--targets")
        rest = argv[i + 1 :]
        stop = next((k for k, a in enumerate(rest) if a.startswith("--")), len(rest))
        targets, argv = rest[:stop], argv[:i] + rest[stop:]
    args = _common.parse(__doc__.splitlines()[0], argv)
    out = _common.out_dir(args, "cifar10_blackbox")
    name, folder = _common.choose_data("cifar10", args)
    common = {"dataset": name, "data_dir": folder, "download": args.download}

    surrogate = os.path.join(out, "surrogate_vgg19_at_linf")
    settings = {**_common.table1_settings("cifar10", "standard", "linf", args.smoke), **common}
    settings["model"] = "vgg19"
    _common.train(settings, args, "cifar10_vgg19_at_linf", out=surrogate)

    if args.smoke and not targets:  # a tiny Standard target of its own
        target = os.path.join(out, "target_standard_linf")
        settings = {**_common.table1_settings("cifar10", "standard", "linf", True), **common}
        _common.train(settings, args, "target", out=target)
        targets = [target]
    if not targets:
        targets = [os.path.join("saved_models", f"cifar10_{d}_linf") for d in TARGETS]
    missing = [t for t in targets if not os.path.isdir(t)]
    if missing:
        _common.fail(f"no target export at {', '.join(missing)}: run its Table-1 recipe first")
    for target in targets:
        extra = ["--n", "50", "--no-checks"] if args.smoke else []
        _common.cli(["evaluate", target, "--suite", "blackbox", "--surrogate", surrogate,
                     "--update", *extra, *(["--quiet"] if args.quiet else []),
                     *(["--data-dir", folder] if folder else []), "--dataset", name])  # fmt: skip
    _common.cli(["report", *targets, "--out", os.path.join(out, "table2.md")])
    _common.smoke_caveat(args, "run without --smoke for the paper's setting")
