"""The attack base class: one calling convention, one compiled function per signature.

Every attack is called as ``attack(model, x, y) -> x_adv`` where ``model`` is any
callable that returns logits: a Keras model or layer (run with ``training=False``),
a ``keras.layers.TFSMLayer``, a reloaded SavedModel (its ``serve`` endpoint is
used) or a plain function. ``x`` and ``y`` may be numpy arrays or tensors; the
result has the type of ``x``. Large inputs are processed ``batch_size`` examples
at a time.

Subclasses implement :meth:`Attack.perturb`, a graph-safe function of tensors
that the base class wraps in one ``tf.function`` per (model, input signature) with
a batch dimension of ``None`` so that other batch sizes never retrace. Iterative
attacks write their loop with :mod:`robustkit.attacks.engine`.

The training protocol. An attack with ``trainable = True`` can be the inner attack of
:class:`robustkit.RobustModel`; its ``perturb`` then also takes keyword arguments
``perturb(model_fn, x, y, eps=..., loss=..., random_start=..., track_best=False)``: the radius
(a scalar tensor such as the warm-up ``keras.Variable``), the loss to ascend (a name from
:data:`robustkit.losses.ATTACK_LOSSES`, chosen by the objective), the random start
(``"uniform"``, ``"normal"`` or ``"none"``, or ``None`` for the attack's own) and
``track_best=False`` (return the last iterate; nothing else is computed). It must be graph-safe
and run the model through ``model_fn`` only (which runs it in inference mode).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential(
...     [keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> x_adv = rk.attacks.FGSM(eps=0.1)(model, x, np.array([0, 1, 2, 3]))
>>> x_adv.shape, rk.attacks.PGD.supported_norms
((4, 8, 8, 1), ('linf', 'l2', 'l1'))
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit import losses
from robustkit import threat as threat_lib
from robustkit._validation import check_images, check_int, check_labels
from robustkit.attacks.engine import resolve_jit
from robustkit.distributed.strategy import get_strategy, run_on_replicas
from robustkit.models import contract
from robustkit.models.adapter import as_logits_fn


class Attack:
    """Base class of every attack: ``attack(model, x, y) -> x_adv``.

    Args:
        batch_size: examples per compiled call when the input is larger.
        jit_compile: ``True``, ``False`` or ``"auto"`` (XLA only on a GPU).
        seed: optional integer seed for the random start (op-level seed).

    Subclasses implement ``perturb(model_fn, x, y)`` with tensors, and ``get_config``;
    attacks with a threat model build it with :meth:`_make_threat`, which enforces
    ``supported_norms``.
    """

    #: whether the attack needs labels (``y=None`` uses the model's predictions)
    uses_labels = True
    #: the norms the attack supports (others raise ``ValueError`` naming ``norm``)
    supported_norms = ("linf", "l2")
    #: whether ``perturb`` implements the training protocol (see the module docstring)
    trainable = False
    #: whether the attack only queries the model's outputs (transfer or score-based)
    black_box = False

    def __init__(self, batch_size=500, jit_compile="auto", seed=None):
        self.batch_size = check_int(batch_size, "batch_size")
        if jit_compile not in ("auto", True, False):
            raise ValueError(f"`jit_compile` must be True, False or 'auto'; got {jit_compile!r}.")
        self.jit_compile = jit_compile
        self.seed = seed
        self._compiled = {}
        #: how many times a compiled function was traced (for tests)
        self.trace_count = 0

    # ------------------------------------------------------------- threat model
    def _make_threat(self, norm, eps, bounds=None):
        """The threat model for ``norm``/``eps``; ``ValueError`` if the norm is not supported."""
        threat = threat_lib.get(norm, eps, bounds)
        if threat.norm not in self.supported_norms:
            raise ValueError(
                f"{type(self).__name__} does not support `norm` {threat.norm!r}; it supports "
                f"{list(self.supported_norms)}."
            )
        return threat

    @property
    def bounds(self):
        """The valid input box ``(lo, hi)`` (the threat model's, default ``(0, 1)``)."""
        threat = getattr(self, "threat", None)
        return threat.bounds if threat is not None else (0.0, 1.0)

    @property
    def label(self):
        """The column name of this attack in reports (e.g. ``"PGD-40"``)."""
        return type(self).__name__

    # ------------------------------------------------------------------ public
    def __call__(self, model, x, y=None, verbose=0, strategy=None):
        """Returns adversarial examples for ``x`` (same type and shape).

        ``verbose=1`` shows a progress bar over the batches. ``strategy``: a
        ``tf.distribute`` strategy (or its name, :func:`robustkit.distributed.get_strategy`):
        each of its local replicas attacks a slice of every batch with the same compiled
        function (traced once per device; with a random start, the slices draw other
        numbers than one call would).
        """
        strategy = None if strategy is None else get_strategy(strategy)
        fn = as_logits_fn(model)
        keras_model = model if isinstance(model, keras.Model) else None
        contract.check_layout(keras_model)
        if keras_model is not None:
            contract.check_logits(keras_model)
        return_numpy = not tf.is_tensor(x)
        x_np = check_images(np.asarray(x) if return_numpy else x, "x", bounds=self.bounds)
        x_t = tf.convert_to_tensor(x_np, tf.float32)
        n = int(x_t.shape[0])
        if y is not None:
            if len(np.shape(y)) == 2 and np.shape(y)[1] > 1:
                raise ValueError(
                    f"`y` must hold integer class ids, not one-hot rows (shape {np.shape(y)}); "
                    "pass y.argmax(axis=-1)."
                )
            check_labels(y, n=n, name="y")  # shape and length, before the model runs
        if n == 0:
            return x
        probe = fn(x_t[:1])
        contract.check_outputs(probe.shape, "model")
        contract.check_logits(model, probe=probe.numpy())
        num_classes = int(probe.shape[-1])
        if y is None:
            y_t = self._predict_labels(fn, x_t)
        else:
            y_t = tf.convert_to_tensor(check_labels(y, n=n, num_classes=num_classes, name="y"))
            y_t = tf.cast(y_t, tf.int64)
        self._check_call(x_t, y_t, num_classes)
        compiled = self._get_compiled(model, fn, x_t)
        bar = keras.utils.Progbar(n, unit_name="example") if verbose else None
        outs = []
        for start in range(0, n, self.batch_size):
            xb, yb = x_t[start : start + self.batch_size], y_t[start : start + self.batch_size]
            outs.append(run_on_replicas(strategy, compiled, xb, yb))
            if bar is not None:
                bar.add(int(xb.shape[0]))
        out = tf.concat(outs, axis=0) if len(outs) > 1 else outs[0]
        return out.numpy() if return_numpy else out

    def perturb(self, model_fn, x, y):
        """Graph-safe core: returns ``x_adv`` for tensors ``x``, ``y``."""
        raise NotImplementedError

    def get_config(self):
        return {"batch_size": self.batch_size, "jit_compile": self.jit_compile, "seed": self.seed}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"

    # ---------------------------------------------------------------- helpers
    def _check_call(self, x, y, num_classes):
        """Hook for subclass checks that need the model's class count."""

    def _predict_labels(self, fn, x):
        preds = [
            tf.argmax(fn(x[s : s + self.batch_size]), axis=-1)
            for s in range(0, int(x.shape[0]), self.batch_size)
        ]
        return tf.cast(tf.concat(preds, axis=0), tf.int64)

    def _xla(self):
        return resolve_jit(self.jit_compile)

    def _compile(self, model, fn, x, function, cache, extra_specs=()):
        """One ``tf.function`` of ``function(xb, yb, *extra)`` per (model, input shape)."""
        key = (id(model), tuple(x.shape[1:]), function.__name__)
        entry = cache.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        signature = [
            tf.TensorSpec([None, *x.shape[1:]], tf.float32),
            tf.TensorSpec([None], tf.int64),
            *extra_specs,
        ]

        def run(xb, yb, *extra):
            self.trace_count += 1  # Python side effect: runs once per trace
            return function(fn, xb, yb, *extra)

        compiled = tf.function(run, input_signature=signature, jit_compile=self._xla())
        cache[key] = (model, compiled)
        return compiled

    def _get_compiled(self, model, fn, x):
        return self._compile(model, fn, x, self.perturb, self._compiled)

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = {}
        return state


def loss_and_grad(model_fn, x, y, loss="ce", clean_logits=None):
    """Logits, per-example loss and its input gradient at ``x`` (one fwd + bwd)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model_fn(x)
        per_example = losses.attack_loss(loss, logits, y, clean_logits)
        total = tf.reduce_sum(per_example)
    return logits, per_example, tape.gradient(total, x)


#: kept for code written against robustkit 0.1 (the functions live in robustkit.losses)
ATTACK_LOSSES = losses.ATTACK_LOSSES
attack_loss = losses.attack_loss

__all__ = ["ATTACK_LOSSES", "Attack", "as_logits_fn", "attack_loss", "loss_and_grad", "resolve_jit"]
