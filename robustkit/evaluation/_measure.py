"""The one evaluator: clean and robust accuracy of a model under attacks.

Every accuracy robustkit reports comes from :func:`measure`: the report of
:func:`robustkit.evaluate`, the ``val_robust_accuracy`` logged by
:class:`robustkit.callbacks.RobustEvaluation` (and read by ``BestRobustCheckpoint``), the
numbers ``robustkit train`` / ``robustkit evaluate`` print and write into ``robustkit.json``.

The rule (the AutoAttack convention, NAMID paper §5): each attack runs on the examples the
model classifies correctly; an example is robust under an attack when it is correct clean and
the attack's output is still classified correctly **or** lies outside the attack's own
eps-ball (not a valid adversarial example; counted in ``outside_ball``). The ball is the
attack's threat model (:mod:`robustkit.threat`): its ``threat``, or its ``norm`` and ``eps``;
a minimal-norm attack without ``eps`` is held to the report's radius when the norms match;
an attack without a norm (FWA's Wasserstein ball, a plain function) is not checked. Robust
under several attacks means robust under each (the per-example worst case).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype("float32")
>>> m = rk.evaluation.measure(model, (x, np.arange(20) % 10), rk.attacks.FGSM(eps=0.1))
>>> m.robust_accuracy <= m.clean_accuracy, m.n, m.outside_ball
(True, 20, 0)
"""

import dataclasses
import os
import time

import keras
import numpy as np
import tensorflow as tf

from robustkit import _log
from robustkit import threat as threat_lib
from robustkit._validation import check_int, check_labels
from robustkit.attacks import engine
from robustkit.data import as_arrays
from robustkit.distributed import get_strategy, sharding
from robustkit.evaluation.report import AttackResult
from robustkit.evaluation.suites import attack_name, is_black_box, threat_of, wrapped
from robustkit.export import load_exported
from robustkit.models.adapter import as_logits_fn


# ------------------------------------------------------------------- models
def resolve_model(model_or_path, argname="model_or_path"):
    """``(model, record, name)`` for an export path, a RobustModel (its ``base_model``), a
    Keras model or layer, or a callable returning logits; ``ValueError`` naming ``argname``.

    Example:

    >>> resolve_model("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: `model_or_path` ...
    """
    if isinstance(model_or_path, (str, os.PathLike)):
        path = os.fspath(model_or_path)
        if not os.path.isdir(path):
            raise ValueError(
                f"`{argname}` {path!r} is not a folder; expected a robustkit export "
                "(a SavedModel folder with robustkit.json) or a model."
            )
        try:
            model, record = load_exported(path)
        except ValueError as e:
            raise ValueError(f"`{argname}`: {e}") from None
        return model, record, os.path.basename(os.path.normpath(path))
    base = getattr(model_or_path, "base_model", None)
    if isinstance(model_or_path, keras.Model) and isinstance(base, keras.Model):
        return base, None, getattr(model_or_path, "name", None) or base.name
    if isinstance(model_or_path, keras.layers.Layer):
        return model_or_path, None, model_or_path.name
    if callable(model_or_path) or hasattr(model_or_path, "serve"):
        name = getattr(model_or_path, "name", None) or getattr(model_or_path, "__name__", None)
        return model_or_path, None, name if isinstance(name, str) else type(model_or_path).__name__
    raise ValueError(
        f"`{argname}` must be a Keras model, a RobustModel, a callable returning logits "
        f"or the path of a robustkit export; got {type(model_or_path).__name__}."
    )


def export_threat(record):
    """``(norm, eps, dataset)`` of an :class:`~robustkit.export.ExportRecord` (``None`` parts
    where it records nothing, or for ``record=None``: a model that is not an export).

    Example:

    >>> from robustkit.export import ExportRecord, ThreatRecord
    >>> export_threat(ExportRecord(input_shape=[8, 8, 1], threat=ThreatRecord("l2", 0.5)))
    ('l2', 0.5, None)
    """
    if record is None:
        return None, None, None
    threat = record.threat
    if threat is None:
        return None, None, record.dataset
    return threat.norm, threat.eps, record.dataset


def predict_logits(fn, x, batch_size):
    """Logits of ``fn`` on numpy ``x``, in batches, as numpy."""
    out = [
        fn(tf.convert_to_tensor(x[s : s + batch_size])).numpy()
        for s in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), "float32")


# ------------------------------------------------------------- the eps-ball
def ball_of(attack, default_eps=None, default_norm=None):
    """The threat model an attack's outputs are checked against, or ``None`` (not checked).

    Example:

    >>> import robustkit as rk
    >>> ball_of(rk.attacks.PGD(eps=2.0, norm="l1"))
    L1(eps=2)
    """
    norm, eps = threat_of(attack)
    if norm not in threat_lib.NORMS:  # no Lp ball declared (FWA's Wasserstein ball, ...)
        return None
    if eps is None:  # a minimal-norm attack: held to the report's radius
        if default_eps is None or norm != default_norm:
            return None
        eps = default_eps
    declared = attack
    while getattr(declared, "norm", None) is None and wrapped(declared) is not None:
        declared = wrapped(declared)
    threat = getattr(declared, "threat", None)
    if isinstance(threat, threat_lib.ThreatModel) and threat.norm == norm:
        return threat if threat.eps == float(eps) else threat_lib.get(norm, eps, threat.bounds)
    return threat_lib.get(norm, eps)


# ----------------------------------------------------------------- measuring
def robust_mask(
    attack,
    model,
    fn,
    x,
    y,
    correct,
    batch_size=500,
    default_eps=None,
    default_norm=None,
    label=None,
    verbose=0,
    strategy=None,
    seed=None,
):
    """Per-example robustness under ``attack`` and its :class:`AttackResult`.

    The attack runs on the ``correct`` examples only, ``batch_size`` at a time (one
    progress-bar step per batch when ``verbose``). An output outside the attack's ball
    (:func:`ball_of`) counts as robust; how many there were is ``outside_ball``.
    ``strategy``/``seed``: see :mod:`robustkit.distributed.sharding`.
    """
    label = label or attack_name(attack)
    idx = np.flatnonzero(correct)
    robust = np.zeros(len(x), bool)
    ball = ball_of(attack, default_eps, default_norm)
    outside = 0
    bar = None
    if verbose:
        _log.info(f"{label}: {len(idx)} examples", verbose)
        bar = keras.utils.Progbar(len(idx), unit_name="example")
    start = time.perf_counter()
    batches = [idx[s : s + batch_size] for s in range(0, len(idx), batch_size)]
    for k in sharding.my_batches(strategy, len(batches)):
        b = batches[k]
        if seed is not None:
            sharding.reseed(attack, seed, k)
        x_adv = sharding.call_attack(attack, model, x[b], y[b], strategy)
        x_adv = x_adv.numpy() if tf.is_tensor(x_adv) else np.asarray(x_adv)
        if x_adv.shape != x[b].shape:
            raise ValueError(
                f"attack {label!r} returned shape {x_adv.shape} for inputs of shape {x[b].shape}."
            )
        ok = np.argmax(predict_logits(fn, x_adv, batch_size), axis=-1) == y[b]
        if ball is not None:
            out = ~ball.contains_np(x_adv, x[b])
            outside += int(out.sum())
            ok |= out
        robust[b] = ok
        if bar is not None:
            bar.add(len(b))
    seconds = time.perf_counter() - start
    robust, outside, seconds = sharding.merge(strategy, robust, outside, seconds)
    result = AttackResult(
        name=label,
        accuracy=float(robust.mean()),
        examples=int(len(idx)),
        seconds=round(seconds, 3),
        config=repr(attack),
        black_box=is_black_box(attack),
        outside_ball=outside,
    )
    return robust, result


@dataclasses.dataclass
class Measurement:
    """What :func:`measure` found: per-example masks and one :class:`AttackResult` per attack.

    ``correct``: classified correctly clean; ``robust``: robust under every attack (the
    worst case); ``masks``: per attack; ``clean_seconds``: the clean pass's time.
    """

    correct: np.ndarray
    robust: np.ndarray
    masks: dict
    results: list
    clean_seconds: float = 0.0

    @property
    def n(self):
        """The number of examples."""
        return int(len(self.correct))

    @property
    def clean_accuracy(self):
        return float(self.correct.mean()) if self.n else 0.0

    @property
    def robust_accuracy(self):
        """Accuracy under the attacks (per-example worst case over them)."""
        return float(self.robust.mean()) if self.n else 0.0

    @property
    def outside_ball(self):
        """Attack outputs outside their ball (counted robust), summed over the attacks."""
        return sum(r.outside_ball for r in self.results)


def _named(attacks):
    if isinstance(attacks, dict):
        items = list(attacks.items())
    else:
        items = [(attack_name(attacks), attacks)]
    for name, attack in items:
        if not callable(attack):
            raise ValueError(f"`attack` {name!r} is not an attack (not callable).")
    return dict(items)


def _bounds_of(attacks):
    """The input box the data must lie in: the first attack's ``bounds`` (default [0, 1])."""
    for attack in attacks.values():
        bounds = getattr(attack, "bounds", None)
        if bounds is not None:
            return tuple(float(b) for b in bounds)
    return (0.0, 1.0)


def _stream(data, n, batch_size, bounds):
    """Validated ``(x, y)`` numpy batches of a ``tf.data`` dataset, read one at a time."""
    spec = data.element_spec
    x_spec = spec[0] if isinstance(spec, (tuple, list)) else spec
    if getattr(x_spec, "shape", None) is not None and x_spec.shape.rank == 3:
        data = data.batch(batch_size)  # single examples
    seen = 0
    for element in data:
        if not isinstance(element, (tuple, list)) or len(element) < 2:
            raise ValueError(f"`data` must yield (x, y) batches; got {type(element).__name__}.")
        xb, yb = as_arrays((element[0], element[1]), bounds=bounds)
        if n is not None:
            xb, yb = xb[: n - seen], yb[: n - seen]
        yield xb, yb
        seen += len(xb)
        if n is not None and seen >= n:
            return


def _measure_stream(model, fn, data, attacks, n, batch_size, eps, norm, verbose, strategy, seed):
    """:func:`measure` over a ``tf.data`` dataset, batch by batch (never the whole split)."""
    correct, masks, parts = [], {k: [] for k in attacks}, {k: [] for k in attacks}
    clean_seconds = 0.0
    bar = keras.utils.Progbar(None, unit_name="example") if verbose else None
    for xb, yb in _stream(data, n, batch_size, _bounds_of(attacks)):
        start = time.perf_counter()
        logits = predict_logits(fn, xb, batch_size)
        if logits.ndim != 2:
            raise ValueError(f"`model` must return logits (batch, classes); got {logits.shape}.")
        check_labels(yb, n=len(xb), num_classes=int(logits.shape[-1]), name="data labels")
        ok = sharding.chief_mask(strategy, np.argmax(logits, axis=-1) == yb)
        clean_seconds += time.perf_counter() - start
        chunk_seed = engine.sub_seed(seed, 7919 * len(correct))
        correct.append(ok)
        for label, atk in attacks.items():
            mask, result = robust_mask(atk, model, fn, xb, yb, ok, batch_size, eps, norm, label,
                                       strategy=strategy, seed=chunk_seed)  # fmt: skip
            masks[label].append(mask)
            parts[label].append(result)
        if bar is not None:
            bar.add(len(xb))
    if not correct:
        raise ValueError("`data` is an empty dataset.")
    correct = np.concatenate(correct)
    _log.info(f"clean: {100 * correct.mean():.2f} % of {len(correct)}", verbose)
    worst, results = correct.copy(), []
    for label in attacks:
        mask, chunks = np.concatenate(masks[label]), parts[label]
        result = dataclasses.replace(
            chunks[0],
            accuracy=float(mask.mean()),
            examples=sum(r.examples for r in chunks),
            seconds=round(sum(r.seconds for r in chunks), 3),
            outside_ball=sum(r.outside_ball for r in chunks),
        )
        _log.info(f"{label}: {100 * result.accuracy:.2f} % ({result.seconds:.1f} s)", verbose)
        worst &= mask
        masks[label] = mask
        results.append(result)
    return Measurement(correct, worst, masks, results, round(clean_seconds, 3))


def measure(model, data, attack, n=None, batch_size=500, eps=None, norm=None, verbose=0,
            strategy=None, seed=None):  # fmt: skip
    """Clean and robust accuracy of ``model`` on ``data`` under ``attack``: a :class:`Measurement`.

    Args:
        model: a Keras model, a ``RobustModel`` (its ``base_model`` is attacked), a callable
            returning logits, or the path of a robustkit export.
        data: ``(x, y)`` arrays or a ``tf.data.Dataset`` of ``(x, y)`` batches or single
            examples (see :func:`robustkit.data.as_arrays`). A dataset is read batch by batch:
            each batch is predicted and attacked before the next is read, so a split larger
            than memory can be measured (the per-example results are kept, the images not).
            The images must lie in the attacks' ``bounds`` (default [0, 1]).
        attack: an attack called as ``attack(model, x, y)``, or a dict ``{name: attack}``
            (robust then means robust under every one).
        n: use the first ``n`` examples only.
        batch_size: examples per attack call and per prediction.
        eps, norm: the radius a minimal-norm attack without ``eps`` is held to (its
            outputs beyond it are not adversarial examples).
        verbose: 1 logs a line and shows a progress bar per attack.
        strategy, seed: a ``tf.distribute`` strategy (or its name): each local replica
            attacks a slice of a batch; the workers (every one calls ``measure`` alike)
            share the batches out and all get the merged result. ``seed``: each batch's
            randomness keyed on ``(seed, batch)``, so the masks equal a one-process run with
            the same ``seed`` (:mod:`robustkit.distributed.sharding`).
    """
    batch_size = check_int(batch_size, "batch_size")
    strategy = None if strategy is None else get_strategy(strategy)
    if seed is not None:
        seed = check_int(seed, "seed", minimum=0)
    if n is not None:
        n = check_int(n, "n")
    attacks = _named(attack)
    model, _, _ = resolve_model(model, "model")
    fn = as_logits_fn(model)
    if isinstance(data, tf.data.Dataset):
        return _measure_stream(
            model, fn, data, attacks, n, batch_size, eps, norm, verbose, strategy, seed
        )
    x, y = as_arrays(data, n, bounds=_bounds_of(attacks))
    start = time.perf_counter()
    logits = predict_logits(fn, x, batch_size)
    if logits.ndim != 2:
        raise ValueError(f"`model` must return logits (batch, classes); got {logits.shape}.")
    check_labels(y, n=len(x), num_classes=int(logits.shape[-1]), name="data labels")
    correct = sharding.chief_mask(strategy, np.argmax(logits, axis=-1) == y)
    clean_seconds = time.perf_counter() - start
    _log.info(f"clean: {100 * correct.mean():.2f} % of {len(x)}", verbose)
    worst, masks, results = correct.copy(), {}, []
    for label, atk in attacks.items():
        mask, result = robust_mask(
            atk, model, fn, x, y, correct, batch_size, eps, norm, label, verbose, strategy, seed
        )
        outside = f", {result.outside_ball} outside the ball" if result.outside_ball else ""
        _log.info(
            f"{label}: {100 * result.accuracy:.2f} % ({result.seconds:.1f} s{outside})", verbose
        )
        worst &= mask
        masks[label] = mask
        results.append(result)
    return Measurement(correct, worst, masks, results, round(clean_seconds, 3))


__all__ = [
    "Measurement",
    "ball_of",
    "measure",
    "export_threat",
    "predict_logits",
    "resolve_model",
    "robust_mask",
]
