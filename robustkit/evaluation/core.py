"""``robustkit.evaluate``: clean and robust accuracy under an attack suite, worst case
over the suite, and gradient-masking checks, as a :class:`Report`.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(20, 8, 8, 1)).astype("float32")
>>> y = np.arange(20) % 10
>>> report = rk.evaluate(model, (x, y), suite=[rk.attacks.PGD(eps=0.1, steps=5)],
...                      checks=False, verbose=0)
>>> report["PGD-5"] <= report["None"]
True

Protocol (NAMID paper, Zhou et al., ICML 2022, §5 and SPEC §4): each attack runs
on the examples the model classifies correctly; an example is robust under an
attack when its adversarial example is still classified correctly, and robust
under the suite (the "Worst case" column) only if it survives every attack.
"""

import os
import time

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_images, check_int, check_labels, check_positive
from robustkit.attacks.base import as_logits_fn
from robustkit.evaluation import suites as suites_lib
from robustkit.evaluation.report import AttackResult, Report

#: robustkit.json keys that hold the threat model (searched top level and one level down)
_META_KEYS = ("eps", "norm", "dataset")


# ------------------------------------------------------------------- models
def load_model(path):
    """Loads a robustkit export: ``(model, metadata)``.

    ``path`` must be a SavedModel folder written by ``robustkit.export`` (it holds
    ``saved_model.pb`` and ``robustkit.json``); anything else raises a
    ``ValueError`` naming ``model_or_path``.

    Example:

    >>> load_model("/nonexistent")  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ValueError: `model_or_path` ...
    """
    from robustkit.export import read_metadata

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(
            f"`model_or_path` {path!r} is not a folder; expected a robustkit export "
            "(a SavedModel folder with robustkit.json) or a model."
        )
    try:
        metadata = read_metadata(path)
    except ValueError as e:
        raise ValueError(f"`model_or_path`: {e}") from None
    return tf.saved_model.load(path), metadata


def resolve_model(model_or_path, argname="model_or_path"):
    """``(model, metadata, name)`` for a path, a RobustModel, a Keras model or a callable."""
    if isinstance(model_or_path, (str, os.PathLike)):
        model, meta = load_model(model_or_path)
        return model, meta, os.path.basename(os.path.normpath(os.fspath(model_or_path)))
    base = getattr(model_or_path, "base_model", None)
    if isinstance(model_or_path, keras.Model) and isinstance(base, keras.Model):
        return base, {}, getattr(model_or_path, "name", None) or base.name
    if isinstance(model_or_path, keras.layers.Layer):
        return model_or_path, {}, model_or_path.name
    if callable(model_or_path) or hasattr(model_or_path, "serve"):
        name = getattr(model_or_path, "name", None) or getattr(model_or_path, "__name__", None)
        return model_or_path, {}, name if isinstance(name, str) else type(model_or_path).__name__
    raise ValueError(
        f"`{argname}` must be a Keras model, a RobustModel, a callable returning logits "
        f"or the path of a robustkit export; got {type(model_or_path).__name__}."
    )


def metadata_value(metadata, key):
    """``metadata[key]``, else ``metadata["threat_model"][key]``, else the first
    ``metadata[...][key]`` one level down, else None."""
    if metadata.get(key) is not None:
        return metadata[key]
    threat = metadata.get("threat_model")
    if isinstance(threat, dict) and threat.get(key) is not None:
        return threat[key]
    for value in metadata.values():
        if isinstance(value, dict) and key in value:
            return value[key]
    return None


# --------------------------------------------------------------------- data
def collect_data(data, n=None, argname="data"):
    """``(x, y)`` numpy arrays from ``(x, y)`` or a ``tf.data`` dataset of batches
    (the first ``n`` examples when ``n`` is given); validated."""
    if isinstance(data, tf.data.Dataset):
        xs, ys, count = [], [], 0
        for element in data:
            if not isinstance(element, (tuple, list)) or len(element) < 2:
                raise ValueError(
                    f"`{argname}` must yield (x, y) batches; got {type(element).__name__}."
                )
            xb, yb = np.asarray(element[0]), np.asarray(element[1])
            if xb.ndim == 3:  # an unbatched dataset
                xb, yb = xb[None], yb[None]
            xs.append(xb)
            ys.append(yb)
            count += len(xb)
            if n is not None and count >= n:
                break
        if not xs:
            raise ValueError(f"`{argname}` is an empty dataset.")
        x, y = np.concatenate(xs), np.concatenate(ys)
    elif isinstance(data, (tuple, list)) and len(data) == 2:
        x, y = np.asarray(data[0]), np.asarray(data[1])
    else:
        raise ValueError(
            f"`{argname}` must be (x, y) arrays or a tf.data.Dataset of (x, y) batches; "
            f"got {type(data).__name__}."
        )
    if y.ndim == 2 and y.shape[1] > 1:
        raise ValueError(
            f"`{argname}` labels must be integer class ids, not one-hot (shape {y.shape})."
        )
    check_images(x, argname)
    check_labels(y, n=len(x), name=f"{argname} labels")
    if len(x) == 0:
        raise ValueError(f"`{argname}` holds no examples.")
    if n is not None:
        x, y = x[:n], y[:n]
    return x.astype("float32", copy=False), y.astype("int64", copy=False)


def predict_logits(fn, x, batch_size):
    """Logits of ``fn`` on numpy ``x``, in batches, as numpy."""
    out = [
        fn(tf.convert_to_tensor(x[s : s + batch_size])).numpy()
        for s in range(0, len(x), batch_size)
    ]
    return np.concatenate(out) if out else np.zeros((0, 0), "float32")


def _norms(delta, norm):
    flat = delta.reshape(len(delta), -1)
    return (
        np.abs(flat).max(axis=1)
        if norm == "linf"
        else np.sqrt((flat.astype("float64") ** 2).sum(axis=1))
    )


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
):
    """Per-example robustness under ``attack`` and its :class:`AttackResult`.

    The attack runs on the ``correct`` examples only, ``batch_size`` at a time (one
    progress-bar step per batch when ``verbose``). An output outside the attack's
    own eps-ball (norm and eps read from the attack; for a minimal-norm attack
    without eps, the report's) is not a valid adversarial example and counts as
    robust; how many there were is recorded in ``outside_ball``.
    """
    label = label or suites_lib.attack_name(attack)
    idx = np.flatnonzero(correct)
    robust = np.zeros(len(x), bool)
    norm, eps = suites_lib.threat_of(attack)
    if norm is not None and eps is None and norm == default_norm:
        eps = default_eps
    outside = 0
    bar = None
    if verbose:
        print(f"{label}: {len(idx)} examples")
        bar = keras.utils.Progbar(len(idx), unit_name="example")
    start = time.perf_counter()
    for s in range(0, len(idx), batch_size):
        b = idx[s : s + batch_size]
        x_adv = attack(model, x[b], y[b])
        x_adv = x_adv.numpy() if tf.is_tensor(x_adv) else np.asarray(x_adv)
        if x_adv.shape != x[b].shape:
            raise ValueError(
                f"attack {label!r} returned shape {x_adv.shape} for inputs of shape {x[b].shape}."
            )
        ok = np.argmax(predict_logits(fn, x_adv, batch_size), axis=-1) == y[b]
        if norm is not None and eps is not None:
            out = _norms(x_adv - x[b], norm) > float(eps) * (1 + 1e-4) + 1e-6
            outside += int(out.sum())
            ok |= out
        robust[b] = ok
        if bar is not None:
            bar.add(len(b))
    seconds = time.perf_counter() - start
    result = AttackResult(
        name=label,
        accuracy=float(robust.mean()),
        examples=int(len(idx)),
        seconds=round(seconds, 3),
        config=repr(attack),
        black_box=suites_lib.is_black_box(attack),
        outside_ball=outside,
    )
    return robust, result


def robust_at_radius(attack, model, x, y, correct, eps, batch_size=500, cache=None):
    """Per-example robustness under ``attack.perturb`` run at radius ``eps``.

    The radius is an input of one compiled function (kept in ``cache``, a dict),
    so sweeping eps with one PGD/FGSM object traces once; the step size scales
    with eps. Only the ``correct`` examples are attacked.
    """
    fn = as_logits_fn(model)
    cache = {} if cache is None else cache
    compiled = cache.get("fn")
    if compiled is None:
        compiled = cache["fn"] = tf.function(
            lambda xb, yb, e: attack.perturb(fn, xb, yb, eps=e),
            input_signature=[
                tf.TensorSpec([None, *x.shape[1:]], tf.float32),
                tf.TensorSpec([None], tf.int64),
                tf.TensorSpec([], tf.float32),
            ],
        )
    idx = np.flatnonzero(correct)
    robust = np.zeros(len(x), bool)
    for s in range(0, len(idx), batch_size):
        b = idx[s : s + batch_size]
        x_adv = compiled(tf.constant(x[b]), tf.constant(y[b]), tf.constant(eps, tf.float32)).numpy()
        robust[b] = np.argmax(predict_logits(fn, x_adv, batch_size), axis=-1) == y[b]
    return robust


# ----------------------------------------------------------------- evaluate
def _named_attacks(suite, eps, surrogate, batch_size, seed):
    if isinstance(suite, str):
        return suites_lib.build_suite(
            suite, eps, surrogate=surrogate, batch_size=batch_size, seed=seed
        )
    if isinstance(suite, dict):
        items = list(suite.items())
    else:
        try:
            items = [(suites_lib.attack_name(a), a) for a in suite]
        except TypeError:
            raise ValueError(
                f"`suite` must be 'linf', 'l2', 'blackbox', a list of attacks or a "
                f"dict of name -> attack; got {type(suite).__name__}."
            ) from None
    if not items:
        raise ValueError("`suite` is empty.")
    named, seen = {}, {}
    for name, atk in items:
        if not callable(atk):
            raise ValueError(f"`suite` entry {name!r} is not an attack (not callable).")
        if name in named:  # two attacks with the same label: PGD-40, PGD-40 (2)
            seen[name] = seen.get(name, 1) + 1
            name = f"{name} ({seen[name]})"
        named[name] = atk
    return named


def _suite_norm(suite, metadata):
    if isinstance(suite, str):
        return suites_lib.SUITE_NORMS.get(suite.lower())
    attacks = suite.values() if isinstance(suite, dict) else suite
    norms = {suites_lib.threat_of(a)[0] for a in attacks}
    norms.discard(None)
    if len(norms) == 1:
        return norms.pop()
    meta_norm = metadata_value(metadata, "norm")
    return meta_norm if meta_norm in ("linf", "l2") else "linf"


def _suite_eps(suite, norm):
    if isinstance(suite, str):
        return None
    attacks = suite.values() if isinstance(suite, dict) else suite
    eps = {float(e) for n, e in map(suites_lib.threat_of, attacks) if n == norm and e is not None}
    return eps.pop() if len(eps) == 1 else None


def evaluate(
    model_or_path,
    data,
    suite="linf",
    eps=None,
    n=None,
    surrogate=None,
    batch_size=500,
    checks=True,
    check_examples=100,
    seed=0,
    name=None,
    dataset=None,
    verbose=0,
):
    """Evaluates a model under an attack suite and returns a :class:`Report`.

    Example:

    >>> import robustkit as rk
    >>> x, y = rk.data.load("digits", "test")
    >>> report = rk.evaluate(model, (x, y), suite="linf", eps=0.1)  # doctest: +SKIP
    >>> print(report.to_markdown())                                 # doctest: +SKIP

    Args:
        model_or_path: a Keras model, a ``RobustModel`` (its ``base_model`` is
            attacked), any callable returning logits, or the path of a robustkit
            export (SavedModel folder with ``robustkit.json``, whose ``eps``,
            ``norm`` and ``dataset`` become the defaults).
        data: ``(x, y)`` arrays (float images in [0, 1], integer labels) or a
            ``tf.data.Dataset`` of ``(x, y)`` batches.
        suite: ``"linf"`` (PGD-40, AutoAttack, FWA-40, TI-DIM), ``"l2"`` (PGD-40,
            CW, DDN), ``"blackbox"`` (transfer PGD-40, AutoAttack, FWA-40 from
            ``surrogate``) as in the NAMID paper (Zhou et al., ICML 2022), or a list
            of attack objects (called ``attack(model, x, y)``), or a dict
            ``{column name: attack}``.
        eps: radius. Default: the export's ``eps`` (when its norm matches), else a
            common ``eps`` of the given attacks, else the paper's value for the data
            (MNIST 0.3 L-inf / 2.0 L2; otherwise 8/255 / 0.5).
        n: evaluate the first ``n`` examples only (default: all).
        surrogate: model or export path for ``"blackbox"``; with another suite it
            adds a transfer attack to the black-box-vs-white-box masking check.
        batch_size: examples per attack call (and per progress-bar step).
        checks: run the gradient-masking checks on the first ``check_examples``
            examples (default 100): ``True`` (all five), ``False``, or a list of
            keys from ``robustkit.evaluation.masking.CHECKS`` (``"steps"``,
            ``"large_eps"``, ``"black_box"``, ``"gradients"``, ``"stochastic"``).
        seed: seed of the attacks built from a suite name and of the checks.
        name: row label in tables (default: export folder or model name).
        dataset: dataset name shown in the report (default: from the export).
        verbose: 0 silent, 1 one progress bar per attack and a summary.

    Returns:
        A :class:`Report`: clean accuracy, accuracy, examples and seconds per
        attack, the per-example worst case over the suite, gradient-masking checks.
    """
    # ---- argument checks, before any work
    if eps is not None:
        eps = check_positive(eps, "eps")
    if n is not None:
        n = check_int(n, "n")
    batch_size = check_int(batch_size, "batch_size")
    check_examples = check_int(check_examples, "check_examples")
    if checks is not False and checks is not None:
        from robustkit.evaluation.masking import select_checks

        checks = select_checks(checks)
    if isinstance(suite, str):
        suite = suite.lower()
        if suite not in suites_lib.SUITES:
            raise ValueError(
                f"Unknown `suite` {suite!r}; expected one of {sorted(suites_lib.SUITES)} "
                "or a list of attacks."
            )
        if suite == "blackbox" and surrogate is None:
            raise ValueError(
                "`surrogate` is required for suite='blackbox' (a model or export path)."
            )
    elif suite is None or (not isinstance(suite, dict) and not hasattr(suite, "__iter__")):
        raise ValueError(
            f"`suite` must be 'linf', 'l2', 'blackbox', a list of attacks or a dict of "
            f"name -> attack; got {suite!r}."
        )
    elif not isinstance(suite, dict):
        suite = list(suite)  # a generator is read twice below
    model, metadata, default_name = resolve_model(model_or_path)
    if surrogate is not None:
        surrogate = resolve_model(surrogate, "surrogate")[0]
    x, y = collect_data(data, n)
    fn = as_logits_fn(model)
    probe = fn(tf.convert_to_tensor(x[:1]))
    if probe.shape.rank != 2:
        raise ValueError(f"`model_or_path` must return logits (batch, classes); got {probe.shape}.")
    check_labels(y, n=len(x), num_classes=int(probe.shape[-1]), name="data labels")

    dataset = dataset or metadata_value(metadata, "dataset")
    norm = _suite_norm(suite, metadata)
    if eps is None:
        meta_eps, meta_norm = metadata_value(metadata, "eps"), metadata_value(metadata, "norm")
        if meta_eps is not None and (meta_norm is None or str(meta_norm).lower() == norm):
            eps = check_positive(meta_eps, "eps (from robustkit.json)")
        else:
            eps = _suite_eps(suite, norm) or suites_lib.default_eps(norm, x.shape[1:], dataset)
    attacks = _named_attacks(suite, eps, surrogate, batch_size, seed)

    # ---- clean accuracy, then every attack on the clean-correct examples
    start = time.perf_counter()
    correct = np.argmax(predict_logits(fn, x, batch_size), axis=-1) == y
    clean_seconds = time.perf_counter() - start
    if verbose:
        print(f"clean: {100 * correct.mean():.2f} % of {len(x)}")
    worst = correct.copy()
    results, masks = [], {}
    for label, attack in attacks.items():
        mask, result = robust_mask(
            attack, model, fn, x, y, correct, batch_size, eps, norm, label=label, verbose=verbose
        )
        if verbose:
            print(f"{label}: {100 * result.accuracy:.2f} % ({result.seconds:.1f} s)")
        worst &= mask
        masks[label] = mask
        results.append(result)

    report_checks = None
    if checks:
        from robustkit.evaluation.masking import run_checks

        # Black-box results are compared with white-box PGD-40 only in the same
        # threat model (a transferred FWA example lives in a Wasserstein ball).
        black_box, other = {}, []
        for result, attack in zip(results, attacks.values()):
            if not (result.black_box or suite == "blackbox"):
                continue
            a_norm, a_eps = suites_lib.threat_of(attack)
            same = (
                a_norm == norm
                and a_eps is not None
                and abs(float(a_eps) - eps) <= 1e-6 * max(1.0, eps)
            )
            if same:
                black_box[result.name] = masks[result.name]
            else:
                other.append(result.name)
        report_checks = run_checks(
            model,
            fn,
            x,
            y,
            correct,
            norm=norm,
            eps=eps,
            surrogate=surrogate,
            black_box_masks=black_box,
            n=check_examples,
            batch_size=batch_size,
            seed=seed,
            checks=checks,
            black_box_other=other,
        )
        if verbose:
            flags = [c.name for c in report_checks if c.flagged]
            print("gradient-masking flags: " + (", ".join(flags) if flags else "none"))
    return Report(
        name=name or default_name,
        n=len(x),
        clean_accuracy=float(correct.mean()),
        attacks=results,
        worst_case=float(worst.mean()),
        checks=report_checks,
        norm=norm,
        eps=eps,
        suite=suite if isinstance(suite, str) else "custom",
        dataset=dataset,
        black_box=suite == "blackbox",
        metadata={
            "clean_seconds": round(clean_seconds, 3),
            "export": {k: metadata_value(metadata, k) for k in _META_KEYS} if metadata else {},
        },
    )
