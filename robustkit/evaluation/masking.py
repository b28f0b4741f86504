"""Gradient-masking checks: signs that a robust accuracy is an artefact of broken
gradients rather than real robustness. They flag; they never change a number.

Following Athalye, Carlini & Wagner (ICML 2018, "Obfuscated gradients give a false
sense of security", §3.1) and Carlini et al. (2019, "On evaluating adversarial
robustness"), five checks run on the first ``n`` (default 100) examples:

1. ``more steps not weaker``: accuracy under FGSM >= PGD-10 >= PGD-40 (same eps),
   up to ``max(2 %, 2 examples)``;
2. ``large eps reaches ~0 %``: PGD-40 with an unbounded radius (one whose ball covers
   the image box: :meth:`robustkit.threat.ThreatModel.unbounded_eps`, e.g. L-inf 1.0,
   L2 the box's diagonal) leaves <= 5 % accuracy;
3. ``black-box not stronger``: black-box attacks (transfer from a surrogate,
   Square, the ``"blackbox"`` suite) leave no lower accuracy than white-box PGD-40;
4. ``input gradients non-zero and finite``: the margin loss has a non-zero, finite
   input gradient on >= 99 % of the examples (none NaN);
5. ``deterministic outputs``: the same input twice gives the same logits; a
   randomised model should be attacked with EOT (:class:`EOT`).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype("float32")
>>> checks = rk.evaluation.check_gradient_masking(model, (x, np.arange(20) % 10), eps=0.1)
>>> [c.name for c in checks][:2]
['more steps not weaker', 'large eps reaches ~0 %']
"""

import math

import numpy as np
import tensorflow as tf

from robustkit import losses
from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks import FGSM, PGD, engine
from robustkit.data import as_arrays
from robustkit.evaluation._measure import (
    export_threat,
    predict_logits,
    resolve_model,
    robust_mask,
)
from robustkit.evaluation.radius import robust_at_radius
from robustkit.evaluation.report import Check
from robustkit.models.adapter import as_logits_fn

#: accuracy allowed under an unbounded attack before check 2 fires
LARGE_EPS_MAX_ACCURACY = 0.05
#: fraction of examples allowed an all-zero input gradient before check 4 fires
ZERO_GRAD_MAX_FRACTION = 0.01
#: relative logit difference between two identical calls that counts as stochastic
STOCHASTIC_TOL = 1e-4


class EOT:
    """Expectation over transformation (Athalye et al., 2018): a model wrapper whose
    logits are the mean over ``samples`` forward passes, so attacks on a randomised
    model follow the expected gradient.

    Example:

    >>> import numpy as np
    >>> eot = EOT(lambda x: x[:, :2] + np.float32(1.0), samples=4)
    >>> eot(np.zeros((1, 3), "float32")).numpy().tolist()
    [[1.0, 1.0]]
    """

    def __init__(self, model, samples=10):
        self.model = model
        self.samples = check_int(samples, "samples")
        self._fn = as_logits_fn(model)
        self.name = f"EOT({getattr(model, 'name', type(model).__name__)}, {self.samples})"

    def __call__(self, x):
        return tf.add_n([self._fn(x) for _ in range(self.samples)]) / float(self.samples)


def _accuracy(attack, model, fn, x, y, correct, batch_size):
    return float(robust_mask(attack, model, fn, x, y, correct, batch_size)[0].mean())


def _tol(m):
    return max(0.02, 2.0 / m)


def _pgd(eps, steps, norm, seed):
    # tf.while_loop: the trace does not grow with the step count; early stop: a
    # fooled example costs nothing more (the accuracy is the same).
    return PGD(eps=eps, steps=steps, norm=norm, seed=seed, loop="while", early_stop=True)


def steps_check(accuracies, m):
    """Check 1 on measured accuracies ``{"FGSM": a1, "PGD-10": a2, "PGD-40": a3}``
    (ordered by strength): fires when a stronger attack leaves more than
    ``max(2 %, 2/m)`` more accuracy than a weaker one.

    Example:

    >>> steps_check({"FGSM": 0.3, "PGD-10": 0.2, "PGD-40": 0.5}, m=100).flagged
    True
    """
    names, values = list(accuracies), list(accuracies.values())
    tol = _tol(m)
    worse = [
        (names[i], names[j])
        for i in range(len(values))
        for j in range(i + 1, len(values))
        if values[j] > values[i] + tol
    ]
    seq = " ≥ ".join(f"{k} {100 * v:.1f} %" for k, v in accuracies.items())
    if worse:
        msg = (
            f"stronger attacks are weaker: {seq} ("
            + "; ".join(f"{b} > {a}" for a, b in worse)
            + "): gradients are unreliable (noisy or shattered)."
        )
    else:
        msg = f"accuracy does not rise with more steps: {seq}."
    return Check(
        "more steps not weaker", bool(worse), msg, {"accuracy": dict(accuracies), "tolerance": tol}
    )


def _check_steps(model, fn, x, y, correct, norm, eps, batch_size, seed, pgd40):
    accs = {
        "FGSM" if norm == "linf" else "FGM": _accuracy(
            FGSM(eps=eps, norm=norm), model, fn, x, y, correct, batch_size
        ),
        "PGD-10": _accuracy(_pgd(eps, 10, norm, seed), model, fn, x, y, correct, batch_size),
        "PGD-40": pgd40(eps),
    }
    return steps_check(accs, len(x)), accs


def _check_large_eps(x, threat, pgd40):
    big = threat.unbounded_eps(x.shape[1:])
    acc = pgd40(big)
    flagged = acc > LARGE_EPS_MAX_ACCURACY
    msg = f"PGD-40 at eps {big:g} (the whole image box) leaves {100 * acc:.1f} % accuracy" + (
        f" (> {100 * LARGE_EPS_MAX_ACCURACY:.0f} %): the attack cannot find even "
        "unbounded adversarial examples, so gradients are masked."
        if flagged
        else "."
    )
    return Check("large eps reaches ~0 %", flagged, msg, {"eps": big, "accuracy": acc})


def black_box_check(white, black, m):
    """Check 3 on measured accuracies: white-box PGD-40 ``white`` and black-box
    ``{name: accuracy}``; fires when a black-box attack is stronger by more than
    ``max(2 %, 2/m)``.

    Example:

    >>> black_box_check(0.6, {"transfer PGD-40": 0.3}, m=100).flagged
    True
    """
    if not black:
        return Check(
            "black-box not stronger",
            None,
            "skipped: no black-box attack in the suite and no `surrogate` given.",
        )
    tol = _tol(m)
    stronger = {k: v for k, v in black.items() if v < white - tol}
    listing = ", ".join(f"{k} {100 * v:.1f} %" for k, v in black.items())
    if stronger:
        msg = (
            f"black-box attacks beat white-box PGD-40 ({100 * white:.1f} %): {listing}; "
            "the white-box gradients are misleading (gradient masking)."
        )
    else:
        msg = f"white-box PGD-40 {100 * white:.1f} % ≤ black-box {listing}."
    return Check(
        "black-box not stronger",
        bool(stronger),
        msg,
        {"white_box": white, "black_box": black, "tolerance": tol},
    )


def _check_gradients(fn, x, y, batch_size):
    zero = nan = 0
    norms = []
    for s in range(0, len(x), batch_size):
        xb = tf.convert_to_tensor(x[s : s + batch_size])
        with tf.GradientTape() as tape:
            tape.watch(xb)
            loss = tf.reduce_sum(losses.margin(fn(xb), y[s : s + batch_size]))
        g = tape.gradient(loss, xb, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        flat = tf.reshape(g, [tf.shape(g)[0], -1]).numpy()
        bad = ~np.isfinite(flat).all(axis=1)
        nan += int(bad.sum())
        zero += int((np.abs(np.where(np.isfinite(flat), flat, 0.0)).max(axis=1) == 0)[~bad].sum())
        norms.append(np.linalg.norm(np.where(np.isfinite(flat), flat, 0.0), axis=1))
    m = len(x)
    flagged = nan > 0 or zero > ZERO_GRAD_MAX_FRACTION * m
    median = float(np.median(np.concatenate(norms)))
    msg = (
        f"margin-loss input gradient is all zero on {zero}/{m} and NaN/Inf on {nan}/{m} "
        f"examples (median L2 norm {median:.3g})"
    )
    msg += (
        ": a non-differentiable or saturating component hides the gradient; "
        "use BPDA or a black-box attack."
        if flagged
        else "."
    )
    return Check(
        "input gradients non-zero and finite",
        flagged,
        msg,
        {"zero": zero, "nan": nan, "examples": m, "median_norm": median},
    )


def _check_stochastic(fn, x, batch_size):
    a, b = predict_logits(fn, x, batch_size), predict_logits(fn, x, batch_size)
    diff = float(np.max(np.abs(a - b))) if a.size else 0.0
    scale = max(1.0, float(np.max(np.abs(a))) if a.size else 1.0)
    flagged = not math.isfinite(diff) or diff > STOCHASTIC_TOL * scale
    msg = f"two identical calls differ by max |Δlogit| = {diff:.3g}" + (
        ": the model is randomised; attack it with expectation over transformation, "
        "e.g. `rk.evaluate(rk.evaluation.EOT(model, samples=20), data)`."
        if flagged
        else "."
    )
    return Check("deterministic outputs", flagged, msg, {"max_abs_diff": diff})


#: the checks, by key, in report order
CHECKS = ("steps", "large_eps", "black_box", "gradients", "stochastic")


def select_checks(checks):
    """``True`` / ``"all"`` -> every check; a list of keys from :data:`CHECKS` -> those."""
    if checks is True or checks == "all":
        return CHECKS
    if isinstance(checks, str):
        checks = [checks]
    try:
        keys = [str(c).lower() for c in checks]
    except TypeError:
        raise ValueError(
            f"`checks` must be True, False or a list of {list(CHECKS)}; got {checks!r}."
        ) from None
    unknown = [k for k in keys if k not in CHECKS]
    if unknown or not keys:
        raise ValueError(
            f"Unknown `checks` {unknown or checks!r}; expected a list of {list(CHECKS)}."
        )
    return tuple(k for k in CHECKS if k in keys)


def run_checks(
    model,
    fn,
    x,
    y,
    correct,
    norm,
    eps,
    surrogate=None,
    black_box_masks=None,
    n=100,
    batch_size=500,
    seed=0,
    checks=CHECKS,
    black_box_other=(),
):
    """Runs the selected checks on the first ``n`` examples (see the module docstring).

    ``black_box_masks`` maps a black-box attack's name to its per-example robust
    mask over all of ``x`` (from the suite, same threat model as ``norm``/``eps``);
    ``black_box_other`` names black-box attacks of another threat model (not
    compared); ``surrogate`` adds a transfer PGD-40.
    """
    m = min(int(n), len(x))
    xs, ys, cs = x[:m], y[:m], correct[:m]
    # One PGD-40 (a single trace) serves the suite radius and the unbounded one.
    attack40, cache = _pgd(eps, 40, norm, engine.sub_seed(seed, 1)), {}

    def pgd40(radius):
        return float(
            robust_at_radius(attack40, model, xs, ys, cs, radius, batch_size, cache).mean()
        )

    out, white = [], None
    if "steps" in checks:
        steps, accs = _check_steps(model, fn, xs, ys, cs, norm, eps, batch_size, seed, pgd40)
        out.append(steps)
        white = accs["PGD-40"]
    if "large_eps" in checks:
        out.append(_check_large_eps(xs, attack40.threat, pgd40))
    if "black_box" in checks:
        black = {k: float(v[:m].mean()) for k, v in (black_box_masks or {}).items()}
        if surrogate is not None and not black_box_masks:
            x_adv = np.asarray(_pgd(eps, 40, norm, seed)(surrogate, xs, ys))
            pred = np.argmax(predict_logits(fn, x_adv, batch_size), axis=-1)
            black["transfer PGD-40"] = float((cs & (pred == ys)).mean())
        if black and white is None:
            white = pgd40(eps)
        check = black_box_check(white, black, m)
        if black_box_other:
            check.message += f" Not compared (another threat model): {', '.join(black_box_other)}."
            check.values["other_threat_model"] = list(black_box_other)
        out.append(check)
    if "gradients" in checks:
        out.append(_check_gradients(fn, xs, ys, batch_size))
    if "stochastic" in checks:
        out.append(_check_stochastic(fn, xs, batch_size))
    return out


def check_gradient_masking(
    model, data, norm="linf", eps=None, n=100, surrogate=None, batch_size=500, seed=0, checks=True
):
    """The five gradient-masking checks on their own, as a list of :class:`Check`.

    Args:
        model: Keras model, RobustModel, callable returning logits or export path.
        data: ``(x, y)`` or a ``tf.data`` dataset of batches.
        norm, eps: the threat model (``"linf"``, ``"l2"`` or ``"l1"``; ``eps`` default:
            :func:`robustkit.threat.default_eps` for the data).
        n: examples to check (the first ``n``).
        surrogate: optional model for the transfer (black-box) check.
        checks: ``True`` (all) or a list of keys from :data:`CHECKS`.
    """
    norm = check_choice(norm, set(threat_lib.NORMS), "norm")
    selected = select_checks(checks)
    if eps is not None:
        eps = check_positive(eps, "eps")
    n = check_int(n, "n")
    model, record, _ = resolve_model(model, "model")
    if surrogate is not None:
        surrogate = resolve_model(surrogate, "surrogate")[0]
    x, y = as_arrays(data, n)
    fn = as_logits_fn(model)
    if eps is None:
        eps = threat_lib.default_eps(norm, export_threat(record)[2], x.shape[1:])
    correct = np.argmax(predict_logits(fn, x, batch_size), axis=-1) == y
    return run_checks(
        model,
        fn,
        x,
        y,
        correct,
        norm,
        eps,
        surrogate=surrogate,
        n=n,
        batch_size=batch_size,
        seed=seed,
        checks=selected,
    )
