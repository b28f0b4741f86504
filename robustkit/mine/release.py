"""The MINE attacks as the authors' released code runs them (IBM/UAE; FIDELITY §2).

robustkit's defaults are its bounded, reduced-budget settings; these presets reproduce
the configuration behind the slides' MNIST / CIFAR-10 table (``Supervised/test_attack.py``
and the README: ``batch_size=1, max_iterations=1000, confidence=0, epsilon=1.0,
mine_batch='conv'``) and the released unsupervised attack (``Unsupversied/test_attack.py``:
``max_iterations=40, epsilon=1.0``). Build them with
:meth:`robustkit.mine.MinMax.release` and :meth:`robustkit.mine.PenaltyMINE.release`.

Example:

>>> import robustkit as rk
>>> rk.mine.MinMax.release(steps=10).steps                 # overrides go on top
10
>>> atk = rk.mine.MinMax.release(criterion="unsupervised")  # the released UAE attack
>>> atk.steps, atk.critic_steps, atk.min_mi
(40, 20, 0.0)

What each setting reproduces (file:line in the release):

* ``eps=1.0``: no effective L-inf constraint on [0, 1] images (``test_attack.py``);
  ``box="clip"``: the perturbation is clipped to ``[-eps, eps]`` and the image to
  [0, 1] (``newimg = clip(modifier + timg)``), so pixels pushed outside the box get no
  gradient.
* ``random_start="release"``: ``delta_0`` from TF1's default glorot-uniform initialiser of
  ``tf.get_variable('modifier', (1, H, W, C))`` (U(-0.086, 0.086) on MNIST; the uniform
  ``U(-eps, eps)`` variable beside it is never used).
* ``alpha=0.01`` (GradientDescentOptimizer), ``c0=1e-3`` (``INITIAL_CONST``), ``beta=0.1``
  and the dual update ``dual="lagged"``: ``CONST`` is updated with the loss of the iterate
  the step started from and used from the next step on.
* the full statistics network (conv 16@2x2 -> 512 -> 10 per branch), its Adam rate
  1.5e-5 (MinMax) / 2e-5 (penalty), re-initialised per example (and per round);
  ``marginal="release"``: one fresh ``tf.random_shuffle`` of the samples per evaluation.
* the samples: the K post-ReLU maps of the first convolution (``model.layers[1]``; K = 32
  for the released MNIST CNN, 64 for CIFAR-10). robustkit's first ``Conv2D`` applies its
  ReLU inside the layer; for a model with a separate activation layer pass
  ``mine_layer=<its name>``.
* the penalty baseline: 9 binary-search rounds of 1,000 iterations, each followed by 20
  Adam steps that move the network *and* delta (``var_list=m_var+[self.modifier]``).
* the unsupervised attack: 40 iterations, 20 network steps per iteration (network only),
  the kept example has ``f = 0`` and MI > 0 with the lowest MI (``min_mi=0``).

Not reproduced: the release runs one example at a time (robustkit batches, each example
with its own network and Adam state, which is the same computation); it pairs the success
of iterate t with the MI measured after the step to t + 1 (robustkit pairs each iterate
with its own MI) and takes the network's Adam step after the delta step (robustkit uses
the gradient at the iterate, one evaluation per iteration). The released penalty
baseline records the MI after the 20 joint steps of an iteration (``l2s``, with the
success of the iterate before them); robustkit records it at the iterate, i.e. after the
previous iteration's 20 steps. ``batch_size=8`` only bounds
memory (the full network holds ~10 M weights per example on MNIST).
"""

import inspect

#: the released supervised MinMax (``Supervised/supervised_attack.py``)
MINMAX = dict(
    eps=1.0,
    steps=1000,
    alpha=0.01,
    beta=0.1,
    c0=1e-3,
    kappa=0.0,
    random_start="release",
    box="clip",
    dual="lagged",
    marginal="release",
    mine_lr=1.5e-5,
    filters=16,
    hidden=512,
    out=10,
    critic_steps=1,
    batch_size=8,
)
#: the released unsupervised MinMax (``Unsupversied/unsupervised_attack.py``)
UNSUPERVISED = dict(MINMAX, criterion="unsupervised", steps=40, critic_steps=20, min_mi=0.0)
#: the released penalty baseline (``Supervised/MINE_binary_search.py``)
PENALTY = dict(
    eps=1.0,
    steps=1000,
    rounds=9,
    alpha=0.01,
    c0=1e-3,
    kappa=0.0,
    random_start="release",
    box="clip",
    marginal="release",
    mine_lr=2e-5,
    filters=16,
    hidden=512,
    out=10,
    critic_steps=20,
    critic_moves_delta=True,
    batch_size=8,
)


def settings(attack, overrides, cls=None):
    """The keyword arguments of a preset (``"minmax"`` or ``"penalty"``) with
    ``overrides`` on top; MinMax with ``criterion="unsupervised"`` starts from
    :data:`UNSUPERVISED`. With ``cls``, an override that is not an argument of
    ``cls`` is a ``ValueError`` naming it (before anything is built).

    >>> settings("penalty", {"rounds": 2})["rounds"], settings("minmax", {})["steps"]
    (2, 1000)
    """
    if cls is not None:
        known = inspect.signature(cls.__init__).parameters
        unknown = sorted(set(overrides) - set(known) - {"self"})
        if unknown:
            raise ValueError(
                f"Unknown override(s) {unknown} for {cls.__name__}.release(); expected "
                f"arguments of {cls.__name__}."
            )
    if attack == "penalty":
        base = PENALTY
    elif overrides.get("criterion") == "unsupervised":
        base = UNSUPERVISED
    else:
        base = MINMAX
    return {**base, **overrides}


__all__ = ["MINMAX", "PENALTY", "UNSUPERVISED", "settings"]
