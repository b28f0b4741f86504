"""The paper's attack suites, as a table of factories, and what the evaluator reads off an attack.

The NAMID paper (Zhou et al., ICML 2022, Table 1 and Table 2; SPEC §4) evaluates

* **L-inf** (eps 8/255 on CIFAR-10): PGD-40 (step eps/4), AutoAttack (standard),
  FWA-40, TI-DIM;
* **L2** (eps 0.5): PGD-40, CW, DDN;
* **black-box**: the transfer versions of the L-inf attacks (PGD-40, AutoAttack,
  FWA-40) computed on a surrogate (the paper: an adversarially trained VGG-19).

Each column is a factory ``(eps, norm, **common) -> attack`` in :data:`FACTORIES`
(``common``: ``batch_size`` and ``seed``); a suite is a list of columns in :data:`SUITES`.
Adding an attack to a suite is one entry in each. Any other threat model (an L1 suite,
say) is a list of attack objects passed to :func:`robustkit.evaluate`. Column names of
attack objects, the black-box flag and the ball an attack's outputs must lie in are read
off the attacks themselves (``label``, ``black_box``, ``norm``/``eps``: see
:func:`attack_name`, :func:`is_black_box`, :func:`threat_of`).

Example:

>>> import robustkit as rk
>>> from robustkit.evaluation.suites import SUITES, FACTORIES, attack_name
>>> SUITES["l2"]
('PGD-40', 'CW', 'DDN')
>>> FACTORIES["PGD-40"](0.3, "linf").steps
40
>>> attack_name(rk.attacks.PGD(eps=0.3, steps=40))
'PGD-40'
"""

from robustkit._validation import check_choice, check_positive
from robustkit.attacks import CW, DDN, FWA, PGD, TIDIM, AutoAttack, Transfer
from robustkit.models.adapter import as_logits_fn

#: column name -> factory ``(eps, norm, **common) -> attack``
FACTORIES = {
    "PGD-40": lambda eps, norm, **common: PGD(eps, steps=40, norm=norm, early_stop=True, **common),
    "AA": lambda eps, norm, **common: AutoAttack(eps, norm=norm, version="standard", **common),
    # FWA's radius is the paper's eps read as a Wasserstein radius; 40 iterations.
    "FWA-40": lambda eps, norm, **common: FWA(eps, steps=40, **common),
    # 40 steps of 0.007 at eps 8/255 (the paper); the same step/eps ratio elsewhere.
    "TI-DIM": lambda eps, norm, **common: TIDIM(
        eps, steps=40, step_size=0.007 * eps / (8 / 255), **common
    ),
    # CW: minimal-norm L2 attack with the class defaults (the paper's); with ``eps`` a
    # perturbation larger than eps does not count as a success.
    "CW": lambda eps, norm, **common: CW(eps=eps, **common),
    # DDN: the NAMID protocol's 20 iterations.
    "DDN": lambda eps, norm, **common: DDN(eps=eps, steps=20, **common),
}
#: column names of each suite, in the paper's order
SUITES = {
    "linf": ("PGD-40", "AA", "FWA-40", "TI-DIM"),
    "l2": ("PGD-40", "CW", "DDN"),
    "blackbox": ("PGD-40", "AA", "FWA-40"),
    "aa": ("AA",),  # AutoAttack standard alone: the RobustBench protocol
}
#: the threat model of each suite (black-box follows the paper: L-inf)
SUITE_NORMS = {"linf": "linf", "l2": "l2", "blackbox": "linf", "aa": "linf"}


def build_suite(suite, eps, surrogate=None, batch_size=500, seed=None):
    """Returns ``{column name: attack}`` for a named suite.

    Args:
        suite: ``"linf"``, ``"l2"`` or ``"blackbox"``.
        eps: radius of the threat model (the suite's norm).
        surrogate: the surrogate model (needed for ``"blackbox"``); every attack
            is wrapped as ``robustkit.attacks.Transfer(surrogate, attack)``.
        batch_size, seed: passed to every attack.

    Example:

    >>> list(build_suite("l2", eps=0.5))
    ['PGD-40', 'CW', 'DDN']
    """
    suite = check_choice(suite, set(SUITES), "suite")
    eps = check_positive(eps, "eps")
    norm = SUITE_NORMS[suite]
    if suite == "blackbox" and surrogate is None:
        raise ValueError("`surrogate` is required for suite='blackbox' (a model or export path).")
    common = {"batch_size": batch_size, "seed": seed}
    attacks = {col: FACTORIES[col](eps, norm, **common) for col in SUITES[suite]}
    if suite == "blackbox":
        if not callable(surrogate):  # a reloaded SavedModel: use its `serve` endpoint
            surrogate = as_logits_fn(surrogate)
        attacks = {col: Transfer(surrogate, atk) for col, atk in attacks.items()}
    return attacks


# ------------------------------------------------------ what an attack declares
def wrapped(attack):
    """The attack an attack wraps (``Transfer(surrogate, attack)``), or ``None``."""
    inner = getattr(attack, "attack", None)
    return inner if inner is not None and callable(inner) else None


def attack_name(attack):
    """A column name for an attack: its ``label`` (see :class:`robustkit.attacks.Attack`), else
    its ``name``, else the function's or the class's name. A wrapper whose label is only its
    class name is written ``Wrapper(<inner label>)``.

    Example:

    >>> import robustkit as rk
    >>> attack_name(rk.attacks.FGSM(eps=0.1))
    'FGSM'
    >>> attack_name(lambda model, x, y: x)
    '<lambda>'
    """
    cls = type(attack).__name__
    for key in ("label", "name", "__name__"):
        value = getattr(attack, key, None)
        if isinstance(value, str) and value:
            break
    else:
        value = cls
    inner = wrapped(attack)
    if value == cls and inner is not None:
        return f"{cls}({attack_name(inner)})"
    return value


def is_black_box(attack):
    """Whether an attack only queries the target's outputs: it declares ``black_box``, or it
    computes its examples on a ``surrogate`` (a transfer attack).

    Example:

    >>> import robustkit as rk
    >>> transfer = rk.attacks.Transfer(abs, rk.attacks.FGSM())
    >>> is_black_box(rk.attacks.PGD(eps=0.1)), is_black_box(transfer)
    (False, True)
    """
    return (
        bool(getattr(attack, "black_box", False)) or getattr(attack, "surrogate", None) is not None
    )


def threat_of(attack):
    """``(norm, eps)`` an attack's outputs must satisfy, from its ``norm`` and ``eps``
    attributes (looking inside wrappers such as ``Transfer``); ``(None, None)`` when the
    attack declares no norm (FWA's Wasserstein ball, a plain function). ``eps`` is
    ``None`` for a minimal-norm attack without a bound (CW, DDN, FAB).

    Example:

    >>> import robustkit as rk
    >>> threat_of(rk.attacks.PGD(eps=0.5, norm="l2"))
    ('l2', 0.5)
    """
    inner = attack
    for _ in range(4):
        norm = getattr(inner, "norm", None)
        if isinstance(norm, str):
            return norm.lower(), getattr(inner, "eps", None)
        inner = wrapped(inner)
        if inner is None:
            break
    return None, None


__all__ = [
    "FACTORIES",
    "SUITES",
    "SUITE_NORMS",
    "attack_name",
    "build_suite",
    "is_black_box",
    "threat_of",
    "wrapped",
]
