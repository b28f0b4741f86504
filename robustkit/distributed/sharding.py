"""Sharded evaluation: the attacked batches shared out over the workers, the per-example
results merged, and each batch's randomness keyed on ``(seed, batch)``.

Example:

>>> import robustkit as rk
>>> from robustkit.distributed import sharding
>>> strategy = rk.distributed.get_strategy("default")
>>> sharding.my_batches(strategy, 5)      # one worker: every batch
[0, 1, 2, 3, 4]

:func:`robustkit.evaluation.measure` with ``strategy=`` (or ``seed=``) uses these helpers:
every worker reads the same examples and takes the chief's clean predictions; attack by
attack, the clean-correct examples are cut into batches of ``batch_size`` in order and
worker ``r`` of ``W`` attacks batches ``r, r + W, ...`` (its local replicas each attack a
slice of the batch, :func:`robustkit.distributed.run_on_replicas`); the per-example
outcomes are summed over the workers (an all-reduce of the strategy), so every worker,
the chief included, holds the whole report.

Why the outcomes equal a one-process run: with ``seed``, each batch ``k`` starts from the
global seed ``seed * 1000003 + k`` and freshly traced attack functions
(:func:`reseed`), so its random draws (random starts, Square's proposals) depend on the
batch only, not on which worker runs it or what ran before. The price: one retrace of the
attack per batch (seconds; small against AutoAttack on a batch). The global seed is
process-wide: later random ops in the process follow it.
"""

import inspect

import numpy as np
import tensorflow as tf

from robustkit.distributed.strategy import (
    all_reduce_sum,
    local_replicas,
    num_workers,
    worker_rank,
)


def my_batches(strategy, n_batches):
    """The batch indices this worker attacks: ``rank, rank + W, ...`` (all without a
    strategy)."""
    if strategy is None:
        return list(range(n_batches))
    return list(range(worker_rank(strategy), n_batches, num_workers(strategy)))


def _clear_compiled(obj, seen):
    if id(obj) in seen or not hasattr(obj, "__dict__"):
        return
    seen.add(id(obj))
    state = obj.__dict__
    if isinstance(state.get("_compiled"), dict):
        state["_compiled"] = {}
    for value in list(state.values()):
        items = value.values() if isinstance(value, dict) else value
        if isinstance(value, (dict, list, tuple)):
            for item in items:
                if callable(getattr(item, "perturb", None)):
                    _clear_compiled(item, seen)
        elif callable(getattr(value, "perturb", None)):
            _clear_compiled(value, seen)


def reseed(attack, seed, batch):
    """Batch ``batch``'s randomness: the global seed ``seed * 1000003 + batch`` and the
    attack's (and its sub-attacks') compiled functions dropped, so they trace afresh."""
    tf.random.set_seed(int(seed) * 1000003 + int(batch))
    _clear_compiled(attack, set())


def call_attack(attack, model, x, y, strategy):
    """``attack(model, x, y)``, split over the local replicas of ``strategy`` when it has
    several and the attack takes ``strategy=``."""
    if strategy is not None and local_replicas(strategy) > 1:
        params = inspect.signature(attack.__call__).parameters
        if "strategy" in params:
            return attack(model, x, y, strategy=strategy)
    return attack(model, x, y)


def merge(strategy, correct_or_robust, outside, seconds):
    """Sums the workers' per-example masks (each filled on its own batches) and outside-ball
    counts; ``seconds``: the slowest worker's."""
    workers = 1 if strategy is None else num_workers(strategy)
    if workers == 1:
        return correct_or_robust, outside, seconds
    rank = worker_rank(strategy)
    merged = all_reduce_sum(strategy, correct_or_robust.astype("int32")) > 0
    counts = np.zeros(1 + workers, "float32")
    counts[0], counts[1 + rank] = outside, seconds
    counts = all_reduce_sum(strategy, counts)
    return merged, int(round(float(counts[0]))), float(counts[1:].max())


def chief_mask(strategy, mask):
    """The chief's boolean ``mask`` on every worker (clean predictions may differ in the
    last bit between hosts; the chief's decide which examples are attacked)."""
    if strategy is None or num_workers(strategy) == 1:
        return mask
    mine = mask.astype("int32") if worker_rank(strategy) == 0 else np.zeros(len(mask), "int32")
    return all_reduce_sum(strategy, mine) > 0
