"""Plots: robust accuracy against eps, and a grid of adversarial examples.

matplotlib is an optional dependency (the ``test`` extra); it is imported only when
a plot is drawn, and only its object-oriented API is used (a ``Figure`` saved
through the Agg canvas), so the caller's pyplot backend is never changed.

Example:

>>> import robustkit as rk
>>> x, y = rk.data.load("digits", "test")
>>> curve = rk.evaluation.plot_robustness_curve(
...     model, (x, y), [0.0, 0.05, 0.1, 0.2], path="curve.png")   # doctest: +SKIP
>>> curve["accuracy"]                                             # doctest: +SKIP
[0.97, 0.81, 0.52, 0.07]
"""

import os

import numpy as np

from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_labels
from robustkit.attacks import FGSM, PGD
from robustkit.data import as_arrays
from robustkit.evaluation._measure import (
    predict_logits,
    resolve_model,
    robust_mask,
)
from robustkit.evaluation.radius import robust_at_radius
from robustkit.evaluation.suites import attack_name
from robustkit.models.adapter import as_logits_fn


def _figure(**kwargs):
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(
            "robustkit plots need matplotlib: `pip install matplotlib` "
            "(or `pip install robustkit[test]`)."
        ) from None
    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def _save(fig, path):
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    return path


def _sweep(attack, eps_values, norm, steps, seed):
    """``eps -> attack`` for a factory, or one PGD/FGSM whose radius is an input of a
    single compiled function (one trace for every eps; the step scales with eps)."""
    if callable(attack):
        return {eps: attack(eps) for eps in eps_values}, None
    top = max(eps_values)
    if attack == "fgsm":
        return None, FGSM(eps=top, norm=norm)
    return None, PGD(eps=top, steps=steps, norm=norm, seed=seed, early_stop=True)


def robustness_curve(
    model, data, eps_values, attack="pgd", norm="linf", steps=40, n=None, batch_size=500, seed=0
):
    """Accuracy under ``attack`` at each eps: ``{"eps": [...], "accuracy": [...]}``.

    ``attack`` is ``"pgd"`` (PGD-``steps``, step eps/4), ``"fgsm"``, or a function
    ``eps -> attack object``. eps 0 gives the clean accuracy.
    """
    norm = check_choice(norm, set(threat_lib.NORMS), "norm")
    steps = check_int(steps, "steps")
    try:
        eps_values = [float(e) for e in eps_values]
    except (TypeError, ValueError):
        raise ValueError(f"`eps_values` must be a list of numbers; got {eps_values!r}.") from None
    if not eps_values or any(not np.isfinite(e) or e < 0 for e in eps_values):
        raise ValueError(
            f"`eps_values` must be a non-empty list of numbers >= 0; got {eps_values}."
        )
    if not (isinstance(attack, str) or callable(attack)):
        raise ValueError(
            f"`attack` must be 'pgd', 'fgsm' or a function eps -> attack; got {attack!r}."
        )
    if isinstance(attack, str):
        attack = check_choice(attack, {"pgd", "fgsm"}, "attack")
    elif hasattr(attack, "perturb"):
        raise ValueError(
            "`attack` must be 'pgd', 'fgsm' or a function eps -> attack, not an "
            "attack object (its eps is fixed)."
        )
    model, _, name = resolve_model(model, "model")
    x, y = as_arrays(data, n)
    fn = as_logits_fn(model)
    correct = np.argmax(predict_logits(fn, x, batch_size), axis=-1) == y
    per_eps, shared = _sweep(attack, [e for e in eps_values if e > 0] or [1.0], norm, steps, seed)
    accs, label, cache = [], attack_name(shared) if shared is not None else None, {}
    for eps in eps_values:
        if eps == 0:
            accs.append(float(correct.mean()))
        elif shared is not None:
            accs.append(
                float(robust_at_radius(shared, model, x, y, correct, eps, batch_size, cache).mean())
            )
        else:
            label = label or attack_name(per_eps[eps])
            accs.append(
                float(robust_mask(per_eps[eps], model, fn, x, y, correct, batch_size)[0].mean())
            )
    return {
        "eps": eps_values,
        "accuracy": accs,
        "attack": label or str(attack),
        "norm": norm,
        "n": len(x),
        "name": name,
    }


def plot_robustness_curve(
    model,
    data,
    eps_values,
    attack="pgd",
    norm="linf",
    path="robustness_curve.png",
    steps=40,
    n=None,
    batch_size=500,
    seed=0,
    title=None,
):
    """Draws accuracy (%) against eps and saves a PNG at ``path``.

    Args:
        model: a model (Keras, RobustModel, callable, export path) or a dict
            ``{label: model}`` to draw one curve per model on the same axes.
        data: ``(x, y)`` or a ``tf.data`` dataset of batches.
        eps_values: radii to evaluate (0 is the clean accuracy).
        attack: ``"pgd"`` (PGD-40, step eps/4), ``"fgsm"`` or a function ``eps -> attack``.
        norm: ``"linf"``, ``"l2"`` or ``"l1"``.
        path: output PNG.

    Returns:
        ``{label: {"eps": [...], "accuracy": [...], ...}}``, the plotted values.
    """
    models = model if isinstance(model, dict) else {None: model}
    curves = {}
    for label, m in models.items():
        curve = robustness_curve(m, data, eps_values, attack, norm, steps, n, batch_size, seed)
        curves[label if label is not None else curve["name"]] = curve
    fig = _figure(figsize=(5.5, 4))
    ax = fig.add_subplot(1, 1, 1)
    for label, curve in curves.items():
        ax.plot(curve["eps"], [100 * a for a in curve["accuracy"]], marker="o", label=str(label))
    first = next(iter(curves.values()))
    ax.set_xlabel(f"eps ({threat_lib.label(norm)})")
    ax.set_ylabel("accuracy (%)")
    ax.set_ylim(-2, 102)
    ax.grid(True, alpha=0.3)
    ax.set_title(title or f"Accuracy under {first['attack']} ({first['n']} examples)")
    ax.legend(loc="upper right")
    _save(fig, path)
    return curves


def plot_examples(
    model, x, y, attack, path="adversarial_examples.png", n=8, class_names=None, batch_size=500
):
    """A grid of ``n`` examples: clean image, perturbation (rescaled so that 0 is
    mid-grey and the largest absolute change is black/white), adversarial image,
    with the true and predicted labels (a wrong prediction in red).

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.PGD(eps=0.1, steps=20)
    >>> rk.evaluation.plot_examples(model, x[:8], y[:8], atk, "grid.png")  # doctest: +SKIP

    Returns:
        ``{"x_adv": array, "clean_pred": array, "adv_pred": array, "path": path}``.
    """
    n = check_int(n, "n")
    model, _, _ = resolve_model(model, "model")
    x, y = as_arrays((x, y), n, argname="x")
    fn = as_logits_fn(model)
    check_labels(y, n=len(x), num_classes=int(fn(x[:1]).shape[-1]), name="y")
    if not callable(attack):
        raise ValueError(
            f"`attack` must be an attack object called as attack(model, x, y); got {attack!r}."
        )
    x_adv = attack(model, x, y)
    x_adv = np.asarray(x_adv.numpy() if hasattr(x_adv, "numpy") else x_adv)
    clean_pred = np.argmax(predict_logits(fn, x, batch_size), axis=-1)
    adv_pred = np.argmax(predict_logits(fn, x_adv, batch_size), axis=-1)

    def label(k):
        return str(class_names[k]) if class_names is not None else str(int(k))

    delta = x_adv - x
    scale = float(np.abs(delta).max()) or 1.0
    cols = len(x)
    fig = _figure(figsize=(1.6 * cols + 0.6, 5.4))
    gray = x.shape[-1] == 1
    rows = (
        ("clean", x),
        (f"perturbation (±{scale:.3g})", 0.5 + delta / (2 * scale)),
        ("adversarial", x_adv),
    )
    for r, (row_name, images) in enumerate(rows):
        for c in range(cols):
            ax = fig.add_subplot(3, cols, r * cols + c + 1)
            img = np.clip(images[c], 0, 1)
            ax.imshow(
                img[..., 0] if gray else img,
                cmap="gray" if gray else None,
                vmin=0,
                vmax=1,
                interpolation="nearest",
            )
            ax.set_xticks([])
            ax.set_yticks([])
            if c == 0:
                ax.set_ylabel(row_name, fontsize=8)
            if r == 0:
                ok = clean_pred[c] == y[c]
                ax.set_title(
                    f"y={label(y[c])} pred={label(clean_pred[c])}",
                    fontsize=7,
                    color="black" if ok else "red",
                )
            elif r == 2:
                ok = adv_pred[c] == y[c]
                ax.set_title(
                    f"pred={label(adv_pred[c])}", fontsize=7, color="black" if ok else "red"
                )
    fig.suptitle(f"{attack_name(attack)}: clean / perturbation / adversarial", fontsize=9)
    _save(fig, path)
    return {"x_adv": x_adv, "clean_pred": clean_pred, "adv_pred": adv_pred, "path": path}
