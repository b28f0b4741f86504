"""Doctest set-up for ``pytest --doctest-modules robustkit``: the examples that train models
run only with ``-m slow``; every other example runs in the default suite."""

import os

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

#: doctests (by their pytest node name) that train a model: marked slow
SLOW_DOCTESTS = (
    "robustkit.training",
    "robustkit.callbacks",
    "robustkit.distributed.loop",
    "robustkit.namid.pipeline",
    "robustkit.namid.stage2.train_namid_estimators",
)


def pytest_collection_modifyitems(config, items):
    slow = pytest.mark.slow
    for item in items:
        if type(item).__name__ == "DoctestItem" and item.name.startswith(SLOW_DOCTESTS):
            item.add_marker(slow)
