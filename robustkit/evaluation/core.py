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
attack when its adversarial example is still classified correctly (or lies outside
the attack's eps-ball), and robust under the suite (the "Worst case" column) only if
it survives every attack. The numbers come from :func:`robustkit.evaluation.measure`,
the one evaluator.
"""

import tensorflow as tf

from robustkit import _log
from robustkit import threat as threat_lib
from robustkit._validation import check_int, check_labels, check_positive
from robustkit.data import as_arrays
from robustkit.distributed import get_strategy
from robustkit.evaluation import masking
from robustkit.evaluation import suites as suites_lib
from robustkit.evaluation._measure import export_threat, measure, resolve_model
from robustkit.evaluation.report import Report
from robustkit.models.adapter import as_logits_fn

#: robustkit.json keys that hold the threat model (searched top level and one level down)


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


def _suite_norm(suite, record):
    if isinstance(suite, str):
        return suites_lib.SUITE_NORMS.get(suite.lower())
    attacks = suite.values() if isinstance(suite, dict) else suite
    norms = {suites_lib.threat_of(a)[0] for a in attacks}
    norms.discard(None)
    if len(norms) == 1:
        return norms.pop()
    meta_norm = export_threat(record)[0]
    return meta_norm if meta_norm in threat_lib.NORMS else "linf"


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
    strategy=None,
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
            common ``eps`` of the given attacks, else the customary value for the data
            (:func:`robustkit.threat.default_eps`: MNIST 0.3 L-inf / 2.0 L2; digits 0.1 /
            0.5; otherwise 8/255 / 0.5).
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
        strategy: a ``tf.distribute`` strategy or its name: the attacks run sharded
            (:func:`robustkit.evaluation.measure` with ``strategy`` and ``seed``): every
            local replica attacks a slice of each batch; under MultiWorkerMirroredStrategy
            every worker calls ``evaluate`` alike, attacks its share of the batches and
            gets the merged report, whose per-example outcomes equal a one-process
            ``measure(..., seed=seed)``. The gradient-masking checks run on every worker.

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
    strategy = None if strategy is None else get_strategy(strategy)
    check_examples = check_int(check_examples, "check_examples")
    if checks is not False and checks is not None:
        checks = masking.select_checks(checks)
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
    model, record, default_name = resolve_model(model_or_path)
    if surrogate is not None:
        surrogate = resolve_model(surrogate, "surrogate")[0]
    # a tf.data dataset is measured as a stream; only the masking checks' head is held
    streaming = isinstance(data, tf.data.Dataset)
    head = min(n or check_examples, check_examples) if checks else 1
    x, y = as_arrays(data, head if streaming else n)
    fn = as_logits_fn(model)
    probe = fn(tf.convert_to_tensor(x[:1]))
    if probe.shape.rank != 2:
        raise ValueError(f"`model_or_path` must return logits (batch, classes); got {probe.shape}.")
    check_labels(y, n=len(x), num_classes=int(probe.shape[-1]), name="data labels")

    meta_norm, meta_eps, meta_dataset = export_threat(record)
    dataset = dataset or meta_dataset
    norm = _suite_norm(suite, record)
    if eps is None:
        if meta_eps is not None and (meta_norm is None or str(meta_norm).lower() == norm):
            eps = check_positive(meta_eps, "eps (from robustkit.json)")
        else:
            eps = _suite_eps(suite, norm) or threat_lib.default_eps(norm, dataset, x.shape[1:])
    attacks = _named_attacks(suite, eps, surrogate, batch_size, seed)

    # ---- clean accuracy, then every attack on the clean-correct examples (one evaluator)
    found = measure(
        model, data if streaming else (x, y), attacks, n=n if streaming else None,
        batch_size=batch_size, eps=eps, norm=norm, verbose=verbose, strategy=strategy,
        seed=None if strategy is None else seed,
    )  # fmt: skip
    report_checks = None
    if checks:
        # Black-box results are compared with white-box PGD-40 only in the same
        # threat model (a transferred FWA example lives in a Wasserstein ball).
        black_box, other = {}, []
        for result, attack in zip(found.results, attacks.values()):
            if not (result.black_box or suite == "blackbox"):
                continue
            a_norm, a_eps = suites_lib.threat_of(attack)
            same = (
                a_norm == norm
                and a_eps is not None
                and abs(float(a_eps) - eps) <= 1e-6 * max(1.0, eps)
            )
            if same:
                black_box[result.name] = found.masks[result.name]
            else:
                other.append(result.name)
        report_checks = masking.run_checks(
            model,
            fn,
            x,
            y,
            found.correct,
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
        flags = [c.name for c in report_checks if c.flagged]
        _log.info("gradient-masking flags: " + (", ".join(flags) if flags else "none"), verbose)
    return Report(
        name=name or default_name,
        n=found.n,
        clean_accuracy=found.clean_accuracy,
        attacks=found.results,
        worst_case=found.robust_accuracy,
        checks=report_checks,
        norm=norm,
        eps=eps,
        suite=suite if isinstance(suite, str) else "custom",
        dataset=dataset,
        black_box=suite == "blackbox",
        metadata={
            "clean_seconds": found.clean_seconds,
            "export": {}
            if record is None
            else {"eps": meta_eps, "norm": meta_norm, "dataset": meta_dataset},
        },
    )
