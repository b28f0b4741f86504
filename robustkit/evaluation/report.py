"""The evaluation report: one model under one attack suite, in the paper's table layout.

Example:

>>> from robustkit.evaluation import Report, AttackResult
>>> r = Report(name="Standard", n=100, clean_accuracy=0.83, norm="linf", eps=8 / 255,
...            attacks=[AttackResult("PGD-40", 0.42, examples=83, seconds=1.5)],
...            worst_case=0.42)
>>> r["PGD-40"], r["None"]
(0.42, 0.83)
>>> print(r.to_markdown(details=False))
| Defense | None | PGD-40 | Worst case |
|---|---|---|---|
| Standard | 83.00 | 42.00 | 42.00 |
<BLANKLINE>
Gradient-masking checks: not run.

Accuracies are fractions in [0, 1]; Markdown shows percentages with two
decimals, as in the NAMID paper's Tables 1 and 2 (Zhou et al., ICML 2022).
"""

import dataclasses
import datetime
import json
import math
import os

from robustkit import threat as threat_lib


def _norm_label(norm):
    """``"L∞"``, ``"L2"``, ``"L1"`` (:func:`robustkit.threat.label`); other values as given."""
    return threat_lib.label(norm) if norm in threat_lib.NORMS else (norm or "")


@dataclasses.dataclass
class AttackResult:
    """Accuracy of the model under one attack.

    ``accuracy`` counts an example robust when it is classified correctly both
    clean and under the attack (the AutoAttack convention). ``examples`` is how
    many examples the attack ran on (the clean-correct ones), ``seconds`` its
    wall-clock time (including the first trace), ``outside_ball`` how many of its
    outputs left the attack's own eps-ball and were therefore counted robust.
    """

    name: str
    accuracy: float
    examples: int = 0
    seconds: float = 0.0
    config: str = ""
    black_box: bool = False
    outside_ball: int = 0


@dataclasses.dataclass
class Check:
    """One gradient-masking check: ``flagged`` is True (suspicious), False (passed)
    or None (skipped, ``message`` says why)."""

    name: str
    flagged: object
    message: str
    values: dict = dataclasses.field(default_factory=dict)

    @property
    def status(self):
        return "skipped" if self.flagged is None else ("FLAG" if self.flagged else "ok")


class Report:
    """Results of :func:`robustkit.evaluate` for one model and one suite.

    Attributes:
        name: row label (model name or export folder name).
        n: number of evaluated examples.
        clean_accuracy: accuracy on the clean inputs ("None" column).
        attacks: list of :class:`AttackResult`, in suite order.
        worst_case: per-example worst case over the suite: an example counts only
            if it survives every attack.
        checks: list of :class:`Check` (gradient-masking checks); ``None`` when not run.
        norm, eps, suite, dataset, black_box, metadata: the setting.

    Access: ``report["PGD-40"]`` (accuracy), ``report["None"]`` / ``report["clean"]``,
    ``report["worst_case"]``; ``report.rows`` lists one dict per column.
    """

    def __init__(
        self,
        name,
        n,
        clean_accuracy,
        attacks=(),
        worst_case=None,
        checks=None,
        norm=None,
        eps=None,
        suite=None,
        dataset=None,
        black_box=False,
        metadata=None,
        created=None,
    ):
        self.name = name
        self.n = int(n)
        self.clean_accuracy = float(clean_accuracy)
        self.attacks = list(attacks)
        self.worst_case = self.clean_accuracy if worst_case is None else float(worst_case)
        self.checks = None if checks is None else list(checks)
        self.norm = norm
        self.eps = eps
        self.suite = suite
        self.dataset = dataset
        self.black_box = bool(black_box)
        self.metadata = dict(metadata or {})
        self.created = created or datetime.datetime.now(datetime.timezone.utc).isoformat(
            timespec="seconds"
        )

    # -------------------------------------------------------------- access
    @property
    def flags(self):
        """The checks that fired (possible gradient masking)."""
        return [c for c in (self.checks or []) if c.flagged]

    @property
    def rows(self):
        """One dict per column: ``attack``, ``accuracy``, ``examples``, ``seconds``."""
        rows = [
            {
                "attack": "None",
                "accuracy": self.clean_accuracy,
                "examples": self.n,
                "seconds": self.metadata.get("clean_seconds", 0.0),
            }
        ]
        for a in self.attacks:
            rows.append(
                {
                    "attack": a.name,
                    "accuracy": a.accuracy,
                    "examples": a.examples,
                    "seconds": a.seconds,
                }
            )
        rows.append(
            {
                "attack": "Worst case",
                "accuracy": self.worst_case,
                "examples": self.n,
                "seconds": sum(a.seconds for a in self.attacks),
            }
        )
        return rows

    def keys(self):
        return ["None"] + [a.name for a in self.attacks] + ["worst_case"]

    def __getitem__(self, key):
        if key in ("None", "none", "clean"):
            return self.clean_accuracy
        if key in ("worst_case", "Worst case"):
            return self.worst_case
        for a in self.attacks:
            if a.name == key:
                return a.accuracy
        raise KeyError(f"{key!r} is not a column of this report; columns: {self.keys()}")

    def __contains__(self, key):
        try:
            self[key]
        except KeyError:
            return False
        return True

    def as_dict(self):
        return {
            "name": self.name,
            "n": self.n,
            "clean_accuracy": self.clean_accuracy,
            "attacks": [dataclasses.asdict(a) for a in self.attacks],
            "worst_case": self.worst_case,
            "checks": None if self.checks is None else [dataclasses.asdict(c) for c in self.checks],
            "norm": self.norm,
            "eps": self.eps,
            "suite": self.suite,
            "dataset": self.dataset,
            "black_box": self.black_box,
            "metadata": self.metadata,
            "created": self.created,
        }

    # ------------------------------------------------------- serialisation
    def to_json(self, indent=2):
        """JSON text; :meth:`from_json` reads it back."""
        return json.dumps(self.as_dict(), indent=indent, default=_json_default)

    @classmethod
    def from_json(cls, text):
        d = json.loads(text)
        attacks = [AttackResult(**a) for a in d.pop("attacks")]
        checks = d.pop("checks")
        checks = None if checks is None else [Check(**c) for c in checks]
        return cls(attacks=attacks, checks=checks, **d)

    def save(self, path):
        """Writes ``path``: JSON when it ends in ``.json``, else Markdown."""
        text = self.to_json() if str(path).lower().endswith(".json") else self.to_markdown() + "\n"
        folder = os.path.dirname(os.path.abspath(path))
        os.makedirs(folder, exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        return path

    # ------------------------------------------------------------ markdown
    def group_label(self):
        """``"L∞"``, ``"L2"`` or ``"Black-box L∞"``: the heading of this report's columns."""
        label = _norm_label(self.norm)
        return f"Black-box {label}".strip() if self.black_box else label

    def to_markdown(self, title="Defense", details=True, worst_case=True, digits=2):
        """The paper's layout (one row, columns None / attacks / worst case), then,
        with ``details``, the setting, examples and seconds per attack and the
        gradient-masking checks (always listed; flags are never hidden)."""
        lines = [Report.table([self], title=title, worst_case=worst_case, digits=digits)]
        if details:
            lines += [
                "",
                self._setting_line(),
                "",
                "| Attack | Accuracy (%) | Examples attacked | Seconds | Outside ball |",
                "|---|---|---|---|---|",
            ]
            for a in self.attacks:
                lines.append(
                    f"| {a.name} | {_pct(a.accuracy, digits)} | {a.examples} | "
                    f"{a.seconds:.1f} | {a.outside_ball} |"
                )
        lines += ["", self._checks_markdown()]
        return "\n".join(lines)

    def _setting_line(self):
        eps = "?" if self.eps is None else _fmt_eps(self.eps)
        parts = [f"{self.n} examples", f"{self.group_label() or 'custom'} eps = {eps}"]
        if self.dataset:
            parts.insert(0, self.dataset)
        if self.suite:
            parts.append(f"suite `{self.suite}`")
        return "Setting: " + ", ".join(parts) + "."

    def _checks_markdown(self):
        if self.checks is None:
            return "Gradient-masking checks: not run."
        head = (
            f"**Gradient-masking checks: {len(self.flags)} flag(s) — treat the robust "
            "accuracies above with suspicion.**"
            if self.flags
            else "Gradient-masking checks: none fired."
        )
        return "\n".join([head] + [f"- [{c.status}] {c.name}: {c.message}" for c in self.checks])

    @staticmethod
    def table(reports, names=None, title="Defense", worst_case=True, digits=2, flags=True):
        """One Markdown table over several models, as in the paper's Tables 1 and 2.

        Args:
            reports: a list with one entry per row (model). An entry is a
                :class:`Report` or a list of reports of the same model under
                different suites (e.g. ``[linf_report, l2_report]`` gives the
                paper's Table 1 row: L∞ columns, then L2 columns).
            names: row labels (default: each report's ``name``).
            title: header of the first column (e.g. the dataset name).
            worst_case: add each group's per-example worst case column.
            flags: mark a row whose report has gradient-masking flags with ``†``
                and explain it under the table.

        Example:

        >>> from robustkit.evaluation import Report, AttackResult
        >>> a = Report("A", 10, 0.9, [AttackResult("PGD-40", 0.5)], 0.5, norm="linf")
        >>> b = Report("A", 10, 0.8, [AttackResult("CW", 0.4)], 0.4, norm="l2")
        >>> print(Report.table([[a, b]], worst_case=False))
        | Defense | L∞ None | PGD-40 | L2 None | CW |
        |---|---|---|---|---|
        | A | 90.00 | 50.00 | 80.00 | 40.00 |
        """
        if isinstance(reports, Report):
            reports = [reports]
        rows = [[r] if isinstance(r, Report) else list(r) for r in reports]
        if not rows or any(not row or not all(isinstance(r, Report) for r in row) for row in rows):
            raise ValueError("`reports` must be a non-empty list of Reports (or lists of Reports).")
        if names is None:
            names = [row[0].name for row in rows]
        if len(names) != len(rows):
            raise ValueError(f"`names` has {len(names)} entries for {len(rows)} rows.")
        # Column groups from the first row; other rows must match them.
        groups = [[a.name for a in r.attacks] for r in rows[0]]
        for row, name in zip(rows, names):
            if [[a.name for a in r.attacks] for r in row] != groups:
                raise ValueError(
                    f"Row {name!r} has columns {[[a.name for a in r.attacks] for r in row]}; "
                    f"expected {groups} (same suites in the same order for every row)."
                )
        multi = len(groups) > 1
        header = [title]
        for r, cols in zip(rows[0], groups):
            label = r.group_label()
            header.append(f"{label} None".strip() if multi else "None")
            header += cols
            if worst_case:
                header.append("Worst case")
        lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        flagged = []
        for row, name in zip(rows, names):
            cells = [str(name)]
            if flags and any(r.flags for r in row):
                cells[0] += " †"
                flagged.append((name, [c.name for r in row for c in r.flags]))
            for r in row:
                cells.append(_pct(r.clean_accuracy, digits))
                cells += [_pct(a.accuracy, digits) for a in r.attacks]
                if worst_case:
                    cells.append(_pct(r.worst_case, digits))
            lines.append("| " + " | ".join(cells) + " |")
        if flagged:
            lines.append("")
            for name, names_ in flagged:
                lines.append(f"† {name}: gradient-masking check(s) fired: {', '.join(names_)}.")
        return "\n".join(lines)

    def __repr__(self):
        cols = ", ".join(f"{row['attack']}={100 * row['accuracy']:.2f}%" for row in self.rows)
        return f"Report({self.name!r}, n={self.n}, {cols}, flags={len(self.flags)})"


def _pct(value, digits):
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    return f"{100.0 * value:.{digits}f}"


def _fmt_eps(eps):
    for denom in (255,):
        k = eps * denom
        if abs(k - round(k)) < 1e-6 and 0 < round(k) <= 32:
            return f"{int(round(k))}/{denom}"
    return f"{eps:g}"


def _json_default(value):
    try:
        import numpy as np

        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, np.ndarray):
            return value.tolist()
    except ImportError:  # pragma: no cover
        pass
    return str(value)
