"""Evaluation: attack suites, reports in the NAMID paper's table layout, plots and
gradient-masking checks.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "test")
>>> report = rk.evaluate(model, (x, y), suite="linf", eps=0.1)   # doctest: +SKIP
>>> print(rk.evaluation.Report.table([report]))                  # doctest: +SKIP
"""

from robustkit.evaluation.core import collect_data, evaluate, load_model, robust_mask
from robustkit.evaluation.masking import EOT, check_gradient_masking
from robustkit.evaluation.plots import plot_examples, plot_robustness_curve, robustness_curve
from robustkit.evaluation.report import AttackResult, Check, Report
from robustkit.evaluation.suites import SUITES, attack_name, build_suite, default_eps

__all__ = [
    "AttackResult",
    "Check",
    "EOT",
    "Report",
    "SUITES",
    "attack_name",
    "build_suite",
    "check_gradient_masking",
    "collect_data",
    "default_eps",
    "evaluate",
    "load_model",
    "plot_examples",
    "plot_robustness_curve",
    "robust_mask",
    "robustness_curve",
]
