"""Beyond one machine: robust training and sharded evaluation on ``tf.distribute``.

Example:

>>> import robustkit as rk
>>> strategy = rk.distributed.get_strategy("default")
>>> rk.distributed.is_chief(strategy)
True

- :func:`get_strategy`: a strategy from a name (``"default"``, ``"mirrored"``,
  ``"multiworker"``: MultiWorkerMirroredStrategy over the cluster in ``TF_CONFIG``).
- :func:`fit`: robustkit's strategy-aware training loop around ``RobustModel.train_step``
  (Keras 3.15's ``fit`` fails under MultiWorkerMirroredStrategy); :class:`Backup`: the
  worker-safe backup it resumes from.
- ``strategy=`` of the attacks, :func:`robustkit.evaluation.measure` and
  :func:`robustkit.evaluate`: each replica attacks its slice of a batch; over several
  workers the attacked batches are shared out and the per-example results merged
  (:mod:`robustkit.distributed.sharding`).
"""

from robustkit.distributed.backup import Backup
from robustkit.distributed.loop import fit
from robustkit.distributed.strategy import (
    STRATEGIES,
    all_reduce_sum,
    get_strategy,
    is_chief,
    local_replicas,
    num_workers,
    read_tf_config,
    run_on_replicas,
    tf_config,
    worker_rank,
)

__all__ = [
    "STRATEGIES",
    "Backup",
    "all_reduce_sum",
    "fit",
    "get_strategy",
    "is_chief",
    "local_replicas",
    "num_workers",
    "read_tf_config",
    "run_on_replicas",
    "tf_config",
    "worker_rank",
]
