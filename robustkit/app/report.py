"""``table_markdown(paths)``: several exports assembled into the NAMID paper's Table 1 layout.

Rows are defenses (the paper's order: Standard, WMIM, NAMID, TRADES, NAMID_T, MART, NAMID_M,
then any other), columns are attacks grouped by threat model (L∞, L2, then black-box), one
table per data set. Each cell is a measurement from an export's ``robustkit.json``: the
paper trains one model per threat model, so a row takes its L∞ columns from the L∞ export
and its L2 columns from the L2 export. Where one export holds several measurements of the
same attack, the one on the most examples (then the newest) is used. The layout itself is
:meth:`robustkit.evaluation.Report.table`'s.

Example:

>>> from robustkit.export.record import ExportRecord, Measurement, ThreatRecord, TrainingRecord
>>> rec = ExportRecord(input_shape=[32, 32, 3], threat=ThreatRecord("linf", 8 / 255),
...                    training=TrainingRecord(defense="trades"))
>>> rec = rec.with_measurement(Measurement("PGD-40 (linf, eps=0.03137)", 0.807, 0.4629, 10000))
>>> print(table_markdown([("m", rec)]).splitlines()[2])
| TRADES | 80.70 | 46.29 |
"""

import os

from robustkit.app.config import ConfigError

#: the paper's row order and names
DEFENSES = {
    "standard": "Standard",
    "at": "Standard",
    "wmim": "WMIM",
    "namid": "NAMID",
    "trades": "TRADES",
    "namid_t": "NAMID_T",
    "mart": "MART",
    "namid_m": "NAMID_M",
}
#: the paper's column order (others follow in order of appearance)
COLUMNS = ("PGD-40", "AA", "FWA-40", "TI-DIM", "CW", "DDN")
GROUPS = ("linf", "l2", "l1")


def column_of(measurement):
    """The column name: the measurement's label without its threat-model suffix."""
    name = measurement.attack.split(" (")[0].strip()
    if name.startswith("Transfer(") and name.endswith(")"):
        name = name[len("Transfer(") : -1]
    return name


def group_of(measurement, record):
    """``(norm, black_box)`` of a measurement: from its config, else its label, else the
    suite's or the export's threat model."""
    from robustkit.evaluation.suites import SUITE_NORMS

    config = measurement.config or {}
    norm = config.get("norm")
    if norm is None:
        inside = measurement.attack.split(" (", 1)[1] if " (" in measurement.attack else ""
        first = inside.split(",")[0].strip().rstrip(")")
        norm = first if first in GROUPS else None
    if norm is None:
        norm = SUITE_NORMS.get(measurement.suite) or (record.threat and record.threat.norm)
    black_box = bool(
        config.get("black_box")
        or measurement.suite == "blackbox"
        or "transfer" in measurement.attack.lower()
    )
    return norm or "?", black_box


def _better(a, b):
    """Whether measurement ``a`` should replace ``b`` in a cell (more examples, then newer)."""
    return ((a.n_examples or 0), a.date or "") > ((b.n_examples or 0), b.date or "")


def _cells(record):
    """``{(norm, black_box): {column: measurement}}`` of one export."""
    groups = {}
    for m in record.measurements:
        cells = groups.setdefault(group_of(m, record), {})
        col = column_of(m)
        if col not in cells or _better(m, cells[col]):
            cells[col] = m
    return groups


def _rows(items):
    """``{dataset: [(row name, {group: (cells, path, record)})]}`` in the paper's order."""
    tables = {}
    for path, record in items:
        dataset = record.dataset or "unknown data"
        rows = tables.setdefault(dataset, [])
        defense = record.training.defense or "?"
        name = DEFENSES.get(defense, defense)
        for group, cells in _cells(record).items() or [(("?", False), {})]:
            row = next((r for r in rows if r[0] == name and group not in r[1]), None)
            if row is None:
                row = (name if not any(r[0] == name for r in rows) else f"{name} ({path})", {})
                rows.append(row)
            row[1][group] = (cells, path, record)
    order = {v: i for i, v in enumerate(dict.fromkeys(DEFENSES.values()))}
    for rows in tables.values():
        rows.sort(key=lambda r: order.get(r[0].split(" (")[0], len(order)))
    return tables


def _group_order(group):
    norm, black_box = group
    return (black_box, GROUPS.index(norm) if norm in GROUPS else len(GROUPS), norm)


def _reports(rows, groups, columns):
    """One list of :class:`~robustkit.evaluation.Report` per row (``nan`` where empty)."""
    from robustkit.evaluation.report import AttackResult, Check, Report

    nan = float("nan")
    out = []
    for name, by_group in rows:
        row, flagged = [], False
        for group in groups:
            cells, _, record = by_group.get(group, ({}, None, None))
            ms = list(cells.values())
            clean = max(ms, key=lambda m: m.n_examples or 0).clean_accuracy if ms else nan
            attacks = [
                AttackResult(c, cells[c].robust_accuracy if c in cells else nan)
                for c in columns[group]
            ]
            checks = []
            if record is not None and not flagged:
                checks = [Check(c.name, True, c.detail) for c in record.checks if c.flagged]
                flagged = bool(checks)
            n = max([m.n_examples or 0 for m in ms] or [0])
            row.append(Report(name, n, clean, attacks, norm=group[0], black_box=group[1],
                              checks=checks))  # fmt: skip
        out.append(row)
    return out


def table_markdown(items, digits=2):
    """The Table-1 Markdown of ``items``, a list of ``(path, ExportRecord)``; one table per
    data set, then where each row's numbers come from (export, examples, dates)."""
    from robustkit.evaluation.report import Report

    if not items:
        raise ValueError("`items` is empty: give at least one export.")
    parts = []
    for dataset, rows in _rows(items).items():
        groups = sorted({g for _, by in rows for g in by}, key=_group_order)
        columns = {}
        for group in groups:
            seen = dict.fromkeys(c for _, by in rows for c in by.get(group, ({},))[0])
            known = [c for c in COLUMNS if c in seen]
            columns[group] = known + [c for c in seen if c not in known]
        names = [name for name, _ in rows]
        parts.append(Report.table(_reports(rows, groups, columns), names=names, title=dataset,
                                  worst_case=False, digits=digits))  # fmt: skip
        parts.append("")
        parts.append("Sources (per cell: examples n, date):")
        for name, by_group in rows:
            for group in groups:
                if group not in by_group:
                    continue
                cells, path, _ = by_group[group]
                what = "; ".join(
                    f"{c} n={m.n_examples} {(m.date or '')[:10]}" for c, m in cells.items()
                )
                label = ("black-box " if group[1] else "") + group[0]
                parts.append(f"- {name}, {label}: {path} ({what or 'no measurements'})")
        parts.append("")
    return "\n".join(parts).rstrip() + "\n"


def read_exports(paths):
    """``[(path, ExportRecord)]`` for export folders; ``ConfigError`` naming ``PATH``."""
    from robustkit.export import read_record

    if not paths:
        raise ConfigError("PATH", "give at least one export folder")
    items = []
    for path in paths:
        try:
            items.append((os.path.normpath(path), read_record(path)))
        except ValueError as e:
            raise ConfigError("PATH", str(e).replace("`path` ", "")) from None
    if not any(record.measurements for _, record in items):
        raise ConfigError("PATH", "none of the exports holds a measurement")
    return items


__all__ = ["COLUMNS", "DEFENSES", "column_of", "group_of", "read_exports", "table_markdown"]
