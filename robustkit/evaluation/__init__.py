"""Evaluation: the one evaluator (clean and robust accuracy, the eps-ball check), attack
suites, reports in the NAMID paper's table layout, plots and gradient-masking checks.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "test")
>>> report = rk.evaluate(model, (x, y), suite="linf", eps=0.1)   # doctest: +SKIP
>>> print(rk.evaluation.Report.table([report]))                  # doctest: +SKIP
>>> m = rk.evaluation.measure(model, (x, y), rk.attacks.PGD(eps=0.1, steps=40))  # doctest: +SKIP
>>> m.clean_accuracy, m.robust_accuracy, m.outside_ball                          # doctest: +SKIP
"""

from robustkit.evaluation._measure import Measurement, measure, robust_mask
from robustkit.evaluation.core import evaluate
from robustkit.evaluation.masking import EOT, check_gradient_masking
from robustkit.evaluation.plots import plot_examples, plot_robustness_curve, robustness_curve
from robustkit.evaluation.report import AttackResult, Check, Report
from robustkit.evaluation.suites import FACTORIES, SUITES, attack_name, build_suite

__all__ = [
    "AttackResult",
    "Check",
    "EOT",
    "FACTORIES",
    "Measurement",
    "Report",
    "SUITES",
    "attack_name",
    "build_suite",
    "check_gradient_masking",
    "evaluate",
    "measure",
    "plot_examples",
    "plot_robustness_curve",
    "robust_mask",
    "robustness_curve",
]
