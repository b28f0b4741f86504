"""The attack base class: one calling convention, one compiled function per signature.

Every attack is called as ``attack(model, x, y) -> x_adv`` where ``model`` is any
callable that returns logits: a Keras model or layer (run with ``training=False``),
a ``keras.layers.TFSMLayer``, a reloaded SavedModel (its ``serve`` endpoint is
used) or a plain function. ``x`` and ``y`` may be numpy arrays or tensors; the
result has the type of ``x``. Large inputs are processed ``batch_size`` examples
at a time.

Subclasses implement :meth:`Attack.perturb`, a graph-safe function of tensors
that the base class wraps in one ``tf.function`` per (model, input signature) with
a batch dimension of ``None`` so that other batch sizes never retrace.
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_images, check_int, check_labels


def as_logits_fn(model):
    """Returns a function ``x -> logits`` (float32) for any supported model.

    Example:

    >>> import keras, numpy as np
    >>> m = keras.Sequential([keras.Input((2,)), keras.layers.Dense(3)])
    >>> as_logits_fn(m)(np.zeros((1, 2), "float32")).shape
    TensorShape([1, 3])
    """
    if isinstance(model, keras.layers.Layer):
        # keras.Model is a Layer; TFSMLayer too (it ignores ``training``).
        def fn(x):
            return _single_output(model(x, training=False))

    elif hasattr(model, "serve") and callable(model.serve):
        def fn(x):
            return _single_output(model.serve(x))

    elif hasattr(model, "signatures") and "serving_default" in getattr(
        model, "signatures", {}
    ):
        sig = model.signatures["serving_default"]

        def fn(x):
            return _single_output(sig(x))

    elif callable(model):
        def fn(x):
            return _single_output(model(x))

    else:
        raise ValueError(
            f"`model` must be a Keras model or a callable returning logits; got "
            f"{type(model).__name__}."
        )
    fn.__robustkit_model__ = model
    return fn


def _single_output(out):
    if isinstance(out, dict):
        if len(out) != 1:
            raise ValueError(
                f"`model` returned {len(out)} outputs ({sorted(out)}); an attack needs "
                "exactly one output of logits."
            )
        out = next(iter(out.values()))
    elif isinstance(out, (list, tuple)):
        if len(out) != 1:
            raise ValueError(
                f"`model` returned {len(out)} outputs; an attack needs exactly one "
                "output of logits."
            )
        out = out[0]
    return tf.cast(out, tf.float32)


def attack_loss(name, logits, y, clean_logits=None):
    """Per-example loss an attack ascends, shape (B,).

    ``"ce"``: cross-entropy; ``"margin"``: ``max_{j != y} z_j - z_y`` (the CW margin,
    positive once misclassified); ``"kl"``: ``KL(softmax(clean) || softmax(adv))``
    (TRADES' inner maximisation; needs ``clean_logits``).
    """
    y = tf.cast(y, tf.int32)
    if name == "ce":
        return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=y, logits=logits)
    if name == "margin":
        onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
        true = tf.reduce_sum(onehot * logits, axis=-1)
        other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
        return other - true
    if name == "kl":
        if clean_logits is None:
            raise ValueError("loss='kl' needs the clean logits.")
        p = tf.nn.softmax(clean_logits)
        return tf.reduce_sum(
            p * (tf.nn.log_softmax(clean_logits) - tf.nn.log_softmax(logits)), axis=-1
        )
    raise ValueError(f"Unknown attack `loss` {name!r}; expected 'ce', 'margin' or 'kl'.")


ATTACK_LOSSES = ("ce", "margin", "kl")


def resolve_jit(jit_compile):
    """``"auto"`` means XLA only where a GPU is present (XLA is ~4x slower on CPU)."""
    if jit_compile == "auto":
        return bool(tf.config.list_physical_devices("GPU"))
    if not isinstance(jit_compile, bool):
        raise ValueError(
            f"`jit_compile` must be True, False or 'auto'; got {jit_compile!r}."
        )
    return jit_compile


class Attack:
    """Base class of every attack: ``attack(model, x, y) -> x_adv``.

    Args:
        batch_size: examples per compiled call when the input is larger.
        jit_compile: ``True``, ``False`` or ``"auto"`` (XLA only on a GPU).
        seed: optional integer seed for the random start (op-level seed).

    Subclasses implement ``perturb(model_fn, x, y)`` with tensors, and
    ``get_config``.
    """

    #: whether the attack needs labels (``y=None`` uses the model's predictions)
    uses_labels = True

    def __init__(self, batch_size=500, jit_compile="auto", seed=None):
        self.batch_size = check_int(batch_size, "batch_size")
        if jit_compile not in ("auto", True, False):
            raise ValueError(
                f"`jit_compile` must be True, False or 'auto'; got {jit_compile!r}."
            )
        self.jit_compile = jit_compile
        self.seed = seed
        self._compiled = {}
        #: how many times a compiled function was traced (for tests)
        self.trace_count = 0

    # ------------------------------------------------------------------ public
    def __call__(self, model, x, y=None):
        """Returns adversarial examples for ``x`` (same type and shape)."""
        fn = as_logits_fn(model)
        return_numpy = not tf.is_tensor(x)
        x_np = check_images(np.asarray(x) if return_numpy else x, "x")
        x_t = tf.convert_to_tensor(x_np, tf.float32)
        n = int(x_t.shape[0])
        if y is not None:
            check_labels(y, n=n, name="y")  # shape and length, before the model runs
        if n == 0:
            return x
        probe = fn(x_t[:1])
        if probe.shape.rank != 2:
            raise ValueError(
                f"`model` must return logits of shape (batch, classes); got {probe.shape}."
            )
        num_classes = int(probe.shape[-1])
        if y is None:
            y_t = self._predict_labels(fn, x_t)
        else:
            y_t = tf.convert_to_tensor(
                check_labels(y, n=n, num_classes=num_classes, name="y")
            )
            y_t = tf.cast(y_t, tf.int64)
        self._check_call(x_t, y_t, num_classes)
        compiled = self._get_compiled(model, fn, x_t)
        outs = []
        for start in range(0, n, self.batch_size):
            outs.append(
                compiled(x_t[start : start + self.batch_size], y_t[start : start + self.batch_size])
            )
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

    def _get_compiled(self, model, fn, x):
        key = (id(model), tuple(x.shape[1:]))
        entry = self._compiled.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        signature = [
            tf.TensorSpec([None, *x.shape[1:]], tf.float32),
            tf.TensorSpec([None], tf.int64),
        ]

        def run(xb, yb):
            self.trace_count += 1  # Python side effect: runs once per trace
            return self.perturb(fn, xb, yb)

        compiled = tf.function(
            run, input_signature=signature, jit_compile=resolve_jit(self.jit_compile)
        )
        self._compiled[key] = (model, compiled)
        return compiled

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = {}
        return state


def loss_and_grad(model_fn, x, y, loss="ce", clean_logits=None):
    """Logits, per-example loss and its input gradient at ``x`` (one fwd + bwd)."""
    with tf.GradientTape(watch_accessed_variables=False) as tape:
        tape.watch(x)
        logits = model_fn(x)
        per_example = attack_loss(loss, logits, y, clean_logits)
        total = tf.reduce_sum(per_example)
    return logits, per_example, tape.gradient(total, x)
