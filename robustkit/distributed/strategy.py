"""Strategy resolution (a name and ``TF_CONFIG``), the worker's place in the cluster, and the
two collective helpers the distributed paths share.

Example:

>>> import robustkit as rk
>>> strategy = rk.distributed.get_strategy("default")
>>> rk.distributed.worker_rank(strategy), rk.distributed.num_workers(strategy)
(0, 1)
>>> rk.distributed.is_chief(strategy)
True
>>> import json
>>> json.loads(rk.distributed.tf_config(["127.0.0.1:2222", "127.0.0.1:2223"], 1))["task"]
{'type': 'worker', 'index': 1}

``MultiWorkerMirroredStrategy`` must be created before TensorFlow runs its first op in the
process (collective ops are configured at start-up): resolve the strategy first.
"""

import json
import os

import numpy as np
import tensorflow as tf

#: the names ``get_strategy`` (and ``robustkit train --strategy``) accept
STRATEGIES = ("default", "mirrored", "multiworker")


def tf_config(workers, index):
    """The ``TF_CONFIG`` value (a JSON string) of worker ``index`` of the ``workers``
    (``"host:port"`` strings); worker 0 is the chief."""
    workers = [str(w) for w in workers]
    if not workers or not 0 <= int(index) < len(workers):
        raise ValueError(f"`index` must be in [0, {len(workers)}); got {index!r}.")
    return json.dumps(
        {"cluster": {"worker": workers}, "task": {"type": "worker", "index": int(index)}}
    )


def read_tf_config(environ=None):
    """The parsed ``TF_CONFIG`` of ``environ`` (default ``os.environ``); ``ValueError`` naming
    ``TF_CONFIG`` when it is missing or does not place this task in its cluster."""
    raw = (os.environ if environ is None else environ).get("TF_CONFIG")
    if not raw:
        raise ValueError(
            "`TF_CONFIG` is not set: the multiworker strategy needs it on every host, e.g. "
            '{"cluster": {"worker": ["host1:2222", "host2:2222"]}, '
            '"task": {"type": "worker", "index": 0}}.'
        )
    try:
        config = json.loads(raw)
        cluster, task = config["cluster"], config["task"]
        tasks = cluster[task["type"]]
        ok = isinstance(tasks, list) and 0 <= int(task["index"]) < len(tasks)
    except (ValueError, KeyError, TypeError):
        ok = False
    if not ok:
        raise ValueError(
            f"`TF_CONFIG` must hold a 'cluster' of host:port lists and a 'task' (type, index) "
            f"in it; got {raw!r}."
        )
    return config


def get_strategy(name=None):
    """The ``tf.distribute`` strategy called ``name``: ``"default"`` (or ``None``: the
    current one, one device), ``"mirrored"`` (every local GPU, else the CPU) or
    ``"multiworker"`` (``MultiWorkerMirroredStrategy`` over the cluster in ``TF_CONFIG``).
    A strategy object is returned as it is."""
    if isinstance(name, tf.distribute.Strategy):
        return name
    key = "default" if name is None else str(name).lower()
    if key not in STRATEGIES:
        raise ValueError(f"`strategy` must be one of {list(STRATEGIES)}; got {name!r}.")
    if key == "default":
        return tf.distribute.get_strategy()
    if key == "mirrored":
        return tf.distribute.MirroredStrategy()
    read_tf_config()
    return tf.distribute.MultiWorkerMirroredStrategy()


def _cluster(strategy):
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is None:
        return None, None, {}
    spec = resolver.cluster_spec().as_dict()
    return resolver.task_type, resolver.task_id, spec


def num_workers(strategy):
    """Hosts (processes) in ``strategy``'s cluster (1 outside multi-worker training)."""
    _, _, spec = _cluster(strategy)
    return max(1, len(spec.get("chief", [])) + len(spec.get("worker", [])))


def worker_rank(strategy):
    """This worker's index in ``[0, num_workers)``; the chief is 0."""
    task_type, task_id, spec = _cluster(strategy)
    if task_type in (None, "chief") or not spec:
        return 0
    return int(task_id) + len(spec.get("chief", []))


def is_chief(strategy):
    """Whether this worker exports and writes checkpoints (the TF convention: the ``chief``
    task, else worker 0)."""
    return worker_rank(strategy) == 0


def local_replicas(strategy):
    """The replicas (devices) of this worker (every worker has as many)."""
    return max(1, strategy.num_replicas_in_sync // num_workers(strategy))


def all_reduce_sum(strategy, array):
    """The sum over the workers of a numpy ``array`` (every worker calls it with the same
    shape and dtype; int32 or float32); each worker gets the sum."""
    array = np.asarray(array)
    if num_workers(strategy) == 1:
        return array
    local = local_replicas(strategy)
    value = tf.constant(array)
    zeros = tf.zeros_like(value)
    dist = strategy.experimental_distribute_values_from_function(
        lambda ctx: value if ctx.replica_id_in_sync_group % local == 0 else zeros
    )
    return strategy.reduce(tf.distribute.ReduceOp.SUM, dist, axis=None).numpy()


def run_on_replicas(strategy, fn, x, y):
    """``fn(x, y)`` with each local replica of ``strategy`` running the same ``fn`` on its
    slice of the batch; the slices' outputs concatenated in order (one replica, or fewer
    examples than replicas: one call)."""
    replicas = 1 if strategy is None else local_replicas(strategy)
    n = int(x.shape[0])
    if replicas == 1 or n < replicas:
        return fn(x, y)
    bounds = np.linspace(0, n, replicas + 1).astype(int)
    xs = [x[bounds[i] : bounds[i + 1]] for i in range(replicas)]
    ys = [y[bounds[i] : bounds[i + 1]] for i in range(replicas)]
    dx, dy = (
        strategy.experimental_distribute_values_from_function(
            lambda ctx, parts=parts: parts[ctx.replica_id_in_sync_group % replicas]
        )
        for parts in (xs, ys)
    )
    # a plain function: strategy.run would hand a tf.function the PerReplica values whole
    out = strategy.run(lambda xb, yb: fn(xb, yb), args=(dx, dy))
    return tf.concat([tf.identity(t) for t in strategy.experimental_local_results(out)], 0)
