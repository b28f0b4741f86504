"""``MODEL_CARD.md``: the export record as a page a person reads before deploying the model.

Written beside ``robustkit.json`` by every export and rewritten when a measurement is added
(``robustkit evaluate PATH --update``). It says what the model is, its data and splits, the
threat model, the defense and its settings, each measured attack with its sample size and
date, the gradient-masking verdicts, and the caveats that limit what the numbers mean.

Example:

>>> from robustkit.export.record import ExportRecord, Measurement, ThreatRecord, DataRecord
>>> rec = ExportRecord(input_shape=[8, 8, 1], num_classes=10, threat=ThreatRecord("linf", 0.1),
...                    data=DataRecord(name="digits", test_examples=359))
>>> rec = rec.with_measurement(Measurement("PGD-40", 0.989, 0.855, 359, date="2026-12-02"))
>>> text = card_markdown(rec, name="digits_at_linf")
>>> "| PGD-40 | 359 | 98.9 % | 85.5 % ± 3.6 |" in text
True
"""

import math

CARD_FILE = "MODEL_CARD.md"
_LABELS = {"linf": "L∞", "l2": "L2", "l1": "L1"}
#: measurement names of AutoAttack's published settings (reduced budgets are labelled
#: e.g. "AA-40 (non-standard)" and do not count as the standard check)
STANDARD_AA_NAMES = frozenset({"AA", "AA-rand", "AutoAttack"})


def _is_standard_aa(name):
    """Whether a measurement name (an attack label, maybe followed by `` (linf, eps=...)``)
    is AutoAttack's published setting."""
    return name.split(" ")[0] in STANDARD_AA_NAMES and "non-standard" not in name


def _pct(value):
    return "–" if value is None else f"{100 * value:.1f} %"


def _interval(p, n):
    """Half-width (percentage points) of the 95 % normal interval of a proportion."""
    if not n or p is None:
        return None
    return 100 * 1.96 * math.sqrt(max(p * (1 - p), 0.0) / n)


def _fmt_eps(eps):
    for num in (1, 2, 4, 8, 16):
        if abs(eps * 255 - num) < 1e-6:
            return f"{num}/255"
    return f"{eps:g}"


def card_markdown(record, name=None):
    """The model card of ``record`` (an :class:`~robustkit.export.ExportRecord`), Markdown."""
    t, d, tr = record.threat, record.data, record.training
    hp = dict(tr.hyperparameters or {})
    arch = hp.get("model") or record.extra.get("model") or "a Keras classifier"
    lo, hi = record.bounds
    lines = [f"# Model card: {name or d.name or 'robustkit export'}", ""]
    versions = record.versions or {}
    head = f"robustkit {versions.get('robustkit', '?')} export, {record.date}."
    if t is not None:
        head += (
            f" A {arch} hardened with **{tr.defense or 'no defense recorded'}** against "
            f"{_LABELS.get(t.norm, t.norm)} perturbations of radius {_fmt_eps(t.eps)}."
        )
    lines += [head, ""]

    lines += ["## Model", ""]
    lines.append(
        f"- Input: float32 images of shape {tuple(record.input_shape)} with values in "
        f"[{lo:g}, {hi:g}]; output: logits over {record.num_classes} classes."
    )
    lines.append(f"- Endpoints: {', '.join(record.endpoints)} (TensorFlow SavedModel).")
    lines.append("")

    lines += ["## Data", ""]
    sizes = [
        f"{label} {n:,}"
        for label, n in (
            ("train", d.train_examples),
            ("validation", d.val_examples),
            ("test", d.test_examples),
        )  # fmt: skip
        if n is not None
    ]
    lines.append(f"- Data set: {d.name or 'not recorded'}" + (f" ({d.source})" if d.source else ""))
    lines.append(f"- Splits: {', '.join(sizes) if sizes else 'not recorded'}.")
    lines.append("")

    lines += ["## Threat model", ""]
    if t is None:
        lines.append("- Not recorded.")
    else:
        lines.append(
            f"- {_LABELS.get(t.norm, t.norm)} ball of radius {_fmt_eps(t.eps)} around each "
            f"input, intersected with [{lo:g}, {hi:g}]."
        )
    lines.append("")

    lines += ["## Training", ""]
    lines.append(f"- Defense: {tr.defense or 'not recorded'}.")
    if hp:
        settings = ", ".join(f"{k} {v}" for k, v in sorted(hp.items()) if v is not None)
        lines.append(f"- Settings: {settings}.")
    if tr.attack:
        cfg = tr.attack.get("config", {})
        keys = ("steps", "step_size", "eps", "norm", "loss", "random_start")
        shown = ", ".join(f"{k} {cfg[k]}" for k in keys if k in cfg)
        lines.append(f"- Training attack: {tr.attack.get('class_name')} ({shown}).")
    if tr.seconds is not None:
        lines.append(f"- Training time: {tr.seconds:.0f} s.")
    lines.append("")

    lines += ["## Robustness measurements", ""]
    if not record.measurements:
        lines.append("None recorded: run `robustkit evaluate PATH --update`.")
    else:
        lines.append(
            "| attack | n | clean | robust (95 % interval, pts) | outside ball | split | date |"
        )
        lines.append("|---|---|---|---|---|---|---|")
        for m in record.measurements:
            half = _interval(m.robust_accuracy, m.n_examples)
            robust = _pct(m.robust_accuracy) + ("" if half is None else f" ± {half:.1f}")
            suite = f" (suite {m.suite})" if m.suite else ""
            lines.append(
                f"| {m.attack}{suite} | {m.n_examples} | {_pct(m.clean_accuracy)} | {robust} | "
                f"{m.outside_ball} | {m.split} | {(m.date or '')[:10]} |"
            )
        h = record.headline
        lines += ["", f"Headline: **{_pct(h.robust_accuracy)}** robust accuracy under {h.attack} "
                      "(the lowest measured)."]  # fmt: skip
    lines.append("")

    lines += ["## Gradient-masking checks", ""]
    if not record.checks:
        lines.append(
            "Not run. `robustkit evaluate PATH --suite linf --update` (or `l2`) runs them."
        )
    else:
        for c in record.checks:
            verdict = "**flagged**" if c.flagged else c.verdict
            when = ", ".join(p for p in (c.suite and f"suite {c.suite}", (c.date or "")[:10]) if p)
            lines.append(
                f"- {c.name}: {verdict}"
                + (f" ({when})" if when else "")
                + (f" — {c.detail}" if c.detail else "")
            )
    lines.append("")

    lines += ["## Use", ""]
    lines.append(
        "- Python: `saved, record = robustkit.load(PATH)`; `saved.serve(images)` returns logits "
        "and is differentiable (attack it again with any robustkit attack)."
    )
    lines.append(
        "- Measure again: `robustkit evaluate PATH --attack aa --update` (or `--suite "
        f"{'l2' if t is not None and t.norm == 'l2' else 'linf'} --update`) appends the "
        "result here and to robustkit.json."
    )
    lines.append("")

    lines += ["## Caveats", ""]
    lines.append(
        "- A robust accuracy is an upper bound: a stronger attack can only lower it. It holds "
        "for the threat model above and nothing else (larger radii, other norms, corruptions, "
        "rotations are not covered)."
    )
    names = {m.attack for m in record.measurements}
    if record.measurements and not any(_is_standard_aa(n) for n in names):
        reduced = sorted(n for n in names if n.startswith("AA"))
        lines.append(
            "- AutoAttack, the field's standard check, has not been run"
            + (f" (only with a reduced budget: {', '.join(reduced)})" if reduced else "")
            + " (`robustkit evaluate PATH --suite aa --update`)."
        )
    if any("no eps-ball check" in (m.evaluator or "") for m in record.measurements):
        lines.append(
            "- Some figures were measured by robustkit 0.1, whose evaluator did not check that "
            "adversarial examples lie inside the ball."
        )
    if d.source and ("jpeg" in d.source.lower() or "local" in d.source.lower()):
        lines.append(
            f"- The data ({d.source}) is not the standard release: figures are not comparable "
            "with published ones."
        )
    flagged = [c.name for c in record.checks if c.flagged]
    if flagged:
        lines.append(
            f"- Gradient-masking check(s) fired ({', '.join(flagged)}): the robust accuracies "
            "above may overstate the model's robustness."
        )
    elif record.measurements and not record.checks:
        lines.append("- No gradient-masking checks were run on this model.")
    small = [m for m in record.measurements if m.n_examples is not None and m.n_examples < 1000]
    if small:
        lines.append("- Some measurements use fewer than 1,000 examples; their intervals are wide.")
    lines.append("")
    return "\n".join(lines)


__all__ = ["CARD_FILE", "card_markdown"]
