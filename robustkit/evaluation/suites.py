"""The paper's attack suites, resolved by name from :mod:`robustkit.attacks` at call time.

The NAMID paper (Zhou et al., ICML 2022, Table 1 and Table 2; SPEC §4) evaluates

* **L-inf** (eps 8/255 on CIFAR-10): PGD-40 (step eps/4), AutoAttack (standard),
  FWA-40, TI-DIM;
* **L2** (eps 0.5): PGD-40, CW, DDN;
* **black-box**: the transfer versions of the L-inf attacks (PGD-40, AutoAttack,
  FWA-40) computed on a surrogate (the paper: an adversarially trained VGG-19).

Example:

>>> import robustkit as rk
>>> from robustkit.evaluation.suites import SUITES, attack_name
>>> SUITES["l2"]
('PGD-40', 'CW', 'DDN')
>>> attack_name(rk.attacks.PGD(eps=0.3, steps=40))
'PGD-40'

Attack classes are looked up when a suite is built, so a suite works as soon as
its classes exist; a missing class raises an ``ImportError`` that names it.
"""

import inspect

from robustkit._validation import check_choice, check_positive

#: column names of each suite, in the paper's order
SUITES = {
    "linf": ("PGD-40", "AA", "FWA-40", "TI-DIM"),
    "l2": ("PGD-40", "CW", "DDN"),
    "blackbox": ("PGD-40", "AA", "FWA-40"),
}
#: the threat model of each suite (black-box follows the paper: L-inf)
SUITE_NORMS = {"linf": "linf", "l2": "l2", "blackbox": "linf"}
#: robustkit.attacks class behind each column name
ATTACK_CLASSES = {
    "PGD-40": "PGD",
    "AA": "AutoAttack",
    "FWA-40": "FWA",
    "TI-DIM": "TIDIM",
    "CW": "CW",
    "DDN": "DDN",
}
#: minimal-norm attacks without a ``norm`` attribute, and their norm
MINIMAL_NORM_CLASSES = {"CW": "l2", "DDN": "l2"}
#: black-box attacks (used by the gradient-masking check "black-box not stronger")
BLACK_BOX_CLASSES = ("Transfer", "Square")


def attack_class(class_name):
    """Returns ``robustkit.attacks.<class_name>`` or raises a clear ``ImportError``."""
    from robustkit import attacks

    cls = getattr(attacks, class_name, None)
    if cls is None:
        raise ImportError(
            f"robustkit.attacks.{class_name} is not available in this installation; "
            "the suite needs it (pass a list of attack objects as `suite` instead)."
        )
    return cls


def _construct(cls, required, optional):
    """Instantiates ``cls`` with ``required`` kwargs and those ``optional`` ones it accepts."""
    try:
        params = inspect.signature(cls.__init__).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins
        params = {}
    takes_var_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
    kwargs = dict(required)
    for key, value in optional.items():
        if takes_var_kw or key in params:
            kwargs[key] = value
    return cls(**kwargs)


def _make(column, eps, norm, batch_size, seed):
    cls = attack_class(ATTACK_CLASSES[column])
    common = {"batch_size": batch_size, "seed": seed}
    if column == "PGD-40":
        return cls(eps=eps, steps=40, norm=norm, early_stop=True, **common)
    if column == "AA":
        return _construct(cls, {"eps": eps, "norm": norm}, {"version": "standard", **common})
    if column == "FWA-40":
        # FWA's radius is the paper's eps read as a Wasserstein radius; 40 iterations.
        return _construct(cls, {"eps": eps}, {"steps": 40, **common})
    if column == "TI-DIM":
        # 40 steps of 0.007 at eps 8/255 (the paper); the same step/eps ratio elsewhere.
        return _construct(
            cls, {"eps": eps}, {"steps": 40, "step_size": 0.007 * eps / (8 / 255), **common}
        )
    if column == "DDN":
        # The NAMID protocol: 20 iterations.
        return _construct(cls, {"eps": eps}, {"steps": 20, **common})
    # CW: minimal-norm L2 attack with the class defaults (the paper's); with
    # ``eps`` a perturbation larger than eps does not count as a success.
    return _construct(cls, {"eps": eps}, common)


def default_eps(norm, input_shape=None, dataset=None):
    """The paper's radius: L-inf 0.3 / L2 2.0 on MNIST, 8/255 / 0.5 otherwise (CIFAR).

    MNIST is recognised by ``dataset`` or, failing that, by a 28x28x1 input.

    Example:

    >>> default_eps("linf", (28, 28, 1)), default_eps("l2", dataset="cifar10")
    (0.3, 0.5)
    """
    mnist = (dataset or "").lower() in ("mnist", "fashion_mnist") or (
        dataset is None and input_shape is not None and tuple(input_shape) == (28, 28, 1)
    )
    if norm == "l2":
        return 2.0 if mnist else 0.5
    return 0.3 if mnist else 8 / 255


def build_suite(suite, eps, surrogate=None, batch_size=500, seed=None):
    """Returns ``{column name: attack}`` for a named suite.

    Args:
        suite: ``"linf"``, ``"l2"`` or ``"blackbox"``.
        eps: radius of the threat model (the suite's norm).
        surrogate: the surrogate model (needed for ``"blackbox"``); every attack
            is wrapped as ``robustkit.attacks.Transfer(surrogate, attack)``.
        batch_size, seed: passed to every attack that accepts them.

    Example:

    >>> import robustkit as rk
    >>> suite = build_suite("linf", eps=0.1)  # doctest: +SKIP
    >>> list(suite)  # doctest: +SKIP
    ['PGD-40', 'AA', 'FWA-40', 'TI-DIM']
    """
    suite = check_choice(suite, set(SUITES), "suite")
    eps = check_positive(eps, "eps")
    norm = SUITE_NORMS[suite]
    if suite == "blackbox" and surrogate is None:
        raise ValueError("`surrogate` is required for suite='blackbox' (a model or export path).")
    attacks = {col: _make(col, eps, norm, batch_size, seed) for col in SUITES[suite]}
    if suite == "blackbox":
        transfer = attack_class("Transfer")
        if not callable(surrogate):  # a reloaded SavedModel: use its `serve` endpoint
            from robustkit.attacks.base import as_logits_fn

            surrogate = as_logits_fn(surrogate)
        attacks = {col: transfer(surrogate, atk) for col, atk in attacks.items()}
    return attacks


def attack_name(attack):
    """A column name for an attack object: its ``name`` attribute, ``PGD-<steps>``,
    ``Transfer(<inner>)`` or the class name.

    Example:

    >>> import robustkit as rk
    >>> attack_name(rk.attacks.FGSM(eps=0.1))
    'FGSM'
    """
    name = getattr(attack, "name", None)
    if isinstance(name, str) and name:
        return name
    cls = type(attack).__name__
    if cls == "Transfer" and hasattr(attack, "attack"):
        return f"Transfer({attack_name(attack.attack)})"
    if cls in ("PGD", "FWA", "MIM", "TIDIM") and hasattr(attack, "steps"):
        label = {"TIDIM": "TI-DIM"}.get(cls, cls)
        return f"{label}-{attack.steps}" if cls != "TIDIM" else label
    if cls == "AutoAttack":
        return "AA"
    if cls == "function":
        return getattr(attack, "__name__", "attack")
    return cls


def is_black_box(attack):
    """Whether an attack only queries the target (transfer or score-based)."""
    return type(attack).__name__ in BLACK_BOX_CLASSES or bool(getattr(attack, "black_box", False))


def threat_of(attack):
    """``(norm, eps)`` an attack's output must satisfy, or ``(None, None)`` when unknown
    (e.g. FWA's Wasserstein ball, a plain function). Looks inside ``Transfer``."""
    inner = attack
    for _ in range(3):
        norm = getattr(inner, "norm", None)
        if norm is None:
            norm = MINIMAL_NORM_CLASSES.get(type(inner).__name__)
        if isinstance(norm, str) and norm.lower() in ("linf", "l2"):
            return norm.lower(), getattr(inner, "eps", None)
        inner = getattr(inner, "attack", None)
        if inner is None:
            break
    return None, None
