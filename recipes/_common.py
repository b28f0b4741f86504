"""What every recipe shares: the data folder and the command-line flags.

A recipe is a :class:`robustkit.app.TrainConfig` with a paper's settings, run by
:func:`robustkit.app.train_and_export`; ``--quick`` shrinks it to a smoke run.
"""

import argparse
import os

HERE = os.path.dirname(os.path.abspath(__file__))


def data_dir():
    """``$ROBUSTKIT_DATA_DIR``, else ``../shared/data`` beside the repository, else None."""
    env = os.environ.get("ROBUSTKIT_DATA_DIR")
    if env:
        return env
    shared = os.path.normpath(os.path.join(HERE, "..", "..", "shared", "data"))
    return shared if os.path.isdir(shared) else None


def parse(description):
    """``--quick`` (a smoke run) and ``--out DIR``."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--quick", action="store_true", help="a small subset and few epochs")
    p.add_argument("--out", default=None, help="export folder")
    return p.parse_args()


def report(result):
    """One line: the headline measurement and where the export went."""
    m = result.record.headline
    print(
        f"clean {m.clean_accuracy:.2%}, {m.attack} robust {m.robust_accuracy:.2%} on "
        f"{m.n_examples} test images -> {result.path}"
    )
