"""The paper's attack suites, as a table of factories, and what the evaluator reads off an attack.

The NAMID paper (Zhou et al., ICML 2022, Table 1 and Table 2; SPEC §4) evaluates

* **L-inf** (eps 8/255 on CIFAR-10): PGD-40 (step eps/4), AutoAttack (standard),
  FWA-40, TI-DIM;
* **L2** (eps 0.5): PGD-40, CW, DDN;
* **black-box**: the transfer versions of the L-inf attacks (PGD-40, AutoAttack,
  FWA-40) computed on a surrogate (the paper: an adversarially trained VGG-19).

Each column is a factory ``(eps, norm, **common) -> attack`` in :data:`FACTORIES`
(``common``: ``batch_size`` and ``seed``); a suite is a list of columns in :data:`SUITES`.
Adding an attack to a suite is one entry in each. These are robustkit's (stronger)
versions and stay the defaults.

``"namid_linf"`` and ``"namid_l2"`` are what the paper's evaluation script ran
(MIAT's ``test_comparison.py``; FIDELITY §3.7, §4), built from :data:`NAMID_FACTORIES`:
PGD-40 with step 0.007 from ``x + 0.001 N(0, 1)``, last iterate; AutoAttack with 40
APGD/FAB iterations (*not* the standard AutoAttack: the column says so); FWA as released
(projected gradient on the transport plan, ``FWA(method="release")``); ``TIDIM.release()``;
``CW.release()`` (4 x 10 steps, c0 1, kappa 1); ``DDN.release()`` (20 steps, 16-level
quantisation). Step sizes given at eps 8/255 scale with eps. With ``release_counting=True``
(:func:`build_suite`) the outputs are also counted as the release counts them: FWA's
unclipped image, CW/DDN successes at any norm. Any other threat model (an L1 suite,
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
from robustkit.attacks.base import Attack
from robustkit.models.adapter import as_logits_fn

#: the NAMID release's L-inf radius, at which its step sizes (0.007) are given
_PAPER_EPS = 8 / 255


class LastIterate(Attack):
    """Evaluates an attack's last iterate: ``attack.perturb(fn, x, y, track_best=False)``
    (the training protocol of PGD and MIM: one run from the attack's start, no best-point
    tracking), as the NAMID release evaluates its PGD-40.

    Example:

    >>> import robustkit as rk
    >>> atk = LastIterate(rk.attacks.PGD(eps=0.1, steps=40, random_start="normal"))
    >>> atk.label, threat_of(atk)
    ('PGD-40', ('linf', 0.1))
    """

    def __init__(self, attack):
        if not getattr(attack, "trainable", False):
            raise ValueError(
                f"`attack` must implement the training protocol (PGD, MIM); got "
                f"{type(attack).__name__}."
            )
        super().__init__(attack.batch_size, attack.jit_compile, attack.seed)
        self.attack = attack
        self.threat, self.norm, self.eps = attack.threat, attack.norm, attack.eps

    @property
    def label(self):
        return self.attack.label

    def get_config(self):
        return {"attack": self.attack}

    def perturb(self, model_fn, x, y):
        return self.attack.perturb(model_fn, x, y, track_best=False)


def _namid_pgd(eps, norm, **common):
    step = 0.007 * eps / _PAPER_EPS if norm == "linf" else 2.0 * eps / 40
    pgd = PGD(eps, step_size=step, steps=40, norm=norm, random_start="normal", **common)
    return LastIterate(pgd)


#: the NAMID release's attacks (suites ``namid_linf`` and ``namid_l2``), column -> factory
#: ``(eps, norm, release_counting=False, **common) -> attack``
NAMID_FACTORIES = {
    "PGD-40": lambda eps, norm, release_counting=False, **common: _namid_pgd(eps, norm, **common),
    "AA-40 (non-standard)": lambda eps, norm, release_counting=False, **common: AutoAttack(
        eps, norm=norm, version="standard", steps=40, **common
    ),
    "FWA-40": lambda eps, norm, release_counting=False, **common: FWA(
        eps, steps=40, method="release", clip_output=not release_counting, **common
    ),
    "TI-DIM": lambda eps, norm, release_counting=False, **common: TIDIM.release(
        eps, step_size=0.007 * eps / _PAPER_EPS, **common
    ),
    "CW": lambda eps, norm, release_counting=False, **common: CW.release(
        eps=None if release_counting else eps, any_norm=release_counting, **common
    ),
    "DDN": lambda eps, norm, release_counting=False, **common: DDN.release(
        eps=None if release_counting else eps, any_norm=release_counting, **common
    ),
}

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
    "namid_linf": ("PGD-40", "AA-40 (non-standard)", "FWA-40", "TI-DIM"),
    "namid_l2": ("PGD-40", "CW", "DDN"),
}
#: the threat model of each suite (black-box follows the paper: L-inf)
SUITE_NORMS = {
    "linf": "linf",
    "l2": "l2",
    "blackbox": "linf",
    "aa": "linf",
    "namid_linf": "linf",
    "namid_l2": "l2",
}
#: the suites built from :data:`NAMID_FACTORIES` (the NAMID release's evaluation)
RELEASE_SUITES = ("namid_linf", "namid_l2")


def build_suite(suite, eps, surrogate=None, batch_size=500, seed=None, release_counting=False):
    """Returns ``{column name: attack}`` for a named suite.

    Args:
        suite: ``"linf"``, ``"l2"``, ``"blackbox"`` (robustkit's versions), or
            ``"namid_linf"``, ``"namid_l2"`` (the NAMID release's, see the module text).
        eps: radius of the threat model (the suite's norm).
        surrogate: the surrogate model (needed for ``"blackbox"``); every attack
            is wrapped as ``robustkit.attacks.Transfer(surrogate, attack)``.
        batch_size, seed: passed to every attack.
        release_counting: namid suites only: FWA returns its unclipped last iterate and
            CW/DDN successes count at any norm, as the release counts them (default
            False: robustkit's rules, outputs in the box and within ``eps``).

    Example:

    >>> list(build_suite("l2", eps=0.5))
    ['PGD-40', 'CW', 'DDN']
    >>> cw = build_suite("namid_l2", eps=0.5)["CW"]
    >>> cw.steps, cw.binary_search_steps, cw.eps
    (10, 4, 0.5)
    """
    suite = check_choice(suite, set(SUITES), "suite")
    eps = check_positive(eps, "eps")
    norm = SUITE_NORMS[suite]
    if suite == "blackbox" and surrogate is None:
        raise ValueError("`surrogate` is required for suite='blackbox' (a model or export path).")
    if release_counting and suite not in RELEASE_SUITES:
        raise ValueError(
            f"`release_counting` applies to the suites {list(RELEASE_SUITES)}; got {suite!r}."
        )
    common = {"batch_size": batch_size, "seed": seed}
    if suite in RELEASE_SUITES:
        common["release_counting"] = bool(release_counting)
        attacks = {col: NAMID_FACTORIES[col](eps, norm, **common) for col in SUITES[suite]}
    else:
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
    "NAMID_FACTORIES",
    "RELEASE_SUITES",
    "SUITES",
    "SUITE_NORMS",
    "LastIterate",
    "attack_name",
    "build_suite",
    "is_black_box",
    "threat_of",
    "wrapped",
]
