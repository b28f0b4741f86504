"""Robustness at a given radius with one compiled function (eps sweeps: curves, checks).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> from robustkit.evaluation.radius import robust_at_radius
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(6, 8, 8, 1)).astype("float32")
>>> y = np.argmax(model.predict(x, verbose=0), -1)
>>> at_zero = robust_at_radius(rk.attacks.PGD(eps=0.1, steps=3), model, x, y,
...                            np.ones(6, bool), 0.0)
>>> bool(at_zero.all())   # at radius 0 nothing moves: every prediction stands
True
"""

import numpy as np
import tensorflow as tf

from robustkit.evaluation._measure import predict_logits
from robustkit.models.adapter import as_logits_fn


def robust_at_radius(attack, model, x, y, correct, eps, batch_size=500, cache=None):
    """Per-example robustness under ``attack.perturb`` run at radius ``eps``.

    The radius is an input of one compiled function (kept in ``cache``, a dict),
    so sweeping eps with one PGD/FGSM object traces once; the step size scales
    with eps. Only the ``correct`` examples are attacked; the outputs lie in the
    ball of radius ``eps`` by construction (the attack projects onto it).
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


__all__ = ["robust_at_radius"]
