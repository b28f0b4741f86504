"""Per-sample MINE: the mutual information between one image and its perturbation.

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022. A single image gives no sample of a
distribution, so the K feature maps of the model's first convolution layer are
used as K paired samples: ``(conv(x)_k, conv(x + delta)_k)`` are joint pairs,
``(conv(x)_k, conv(x + delta)_perm(k))`` marginal pairs. A statistics network
``T`` is trained from scratch for every example to maximise the
Donsker-Varadhan bound; its value is the per-example MI (nats).

Example:

>>> import numpy as np, robustkit as rk
>>> model = rk.models.small_cnn((8, 8, 1), width=4)
>>> x = np.random.default_rng(0).uniform(size=(3, 8, 8, 1)).astype("float32")
>>> from robustkit.estimators import PerSampleMINE
>>> mine = PerSampleMINE(model, steps=5, hidden=8, lr=1e-3)
>>> mine.estimate(x, x).shape
(3,)

Batching: robustkit estimates a whole batch at once. Every example has its own
statistics network, stored as weights with a leading example axis and applied
with batched matmuls / ``einsum``; one Adam state over these stacked weights is
exactly one independent Adam per example (Adam is element-wise and example b's
loss only touches example b's weights). The official implementation handles one
example at a time.
"""

import math

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_choice, check_images, check_int, check_positive
from robustkit.estimators import bounds

#: above this many steps the training loop is a ``tf.while_loop``
MAX_UNROLLED_STEPS = 8
_MODES = ("auto", "conv", "projection")


# --------------------------------------------------------------------------- features
def _find_first_conv(model):
    for layer in getattr(model, "layers", []):
        if isinstance(layer, (keras.layers.Conv2D,)):
            return layer
        if isinstance(layer, keras.Model):  # nested model: search inside
            inner = _find_first_conv(layer)
            if inner is not None:
                return inner
    return None


def _conv_feature_fn(model, layer):
    """Returns ``x -> (B, K, H, W)`` feature maps of ``layer`` (a name or a layer)."""
    if isinstance(layer, str):
        try:
            layer = model.get_layer(layer)
        except (ValueError, AttributeError):
            raise ValueError(f"`layer` {layer!r} is not a layer of the model.") from None
    try:
        sub = keras.Model(model.inputs, layer.output)
    except Exception:  # Sequential / subclassed model without symbolic inputs
        sub = None
        if model.layers and model.layers[0] is not layer:
            raise ValueError(
                f"`layer` {layer.name!r}: cannot build a feature model from "
                f"{type(model).__name__}; pass a functional model or a callable."
            ) from None

    def fn(x):
        out = sub(x, training=False) if sub is not None else layer(x)
        out = tf.cast(out, tf.float32)
        if out.shape.rank != 4:
            raise ValueError(
                f"`layer` must output (B, H, W, K) feature maps; got rank {out.shape.rank}."
            )
        return tf.transpose(out, [0, 3, 1, 2])

    return fn


def _projection_feature_fn(input_shape, projections, dim, seed):
    """``x -> (B, projections, dim)``: random Gaussian projections, each standardised."""
    d = int(np.prod(input_shape))
    rng = np.random.default_rng(seed)
    # float32 directly: 500 x 784 x 128 is 200 MB in float32
    matrix = rng.standard_normal((d, projections * dim), dtype=np.float32) / math.sqrt(dim)
    matrix = tf.constant(matrix)

    def fn(x):
        flat = tf.reshape(tf.cast(x, tf.float32), [-1, d])
        z = tf.reshape(tf.matmul(flat, matrix), [-1, projections, dim])
        mean, var = tf.nn.moments(z, axes=[-1], keepdims=True)
        return (z - mean) / tf.sqrt(var + 1e-8)

    return fn


# ------------------------------------------------------------- statistics network
def _glorot(shape, fan_in, fan_out):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    return tf.random.uniform(shape, -limit, limit)


class _Critic:
    """A batch of statistics networks, one per example, as pure functions.

    conv mode, per branch: conv ``filters``@2x2 -> flatten -> dense ``hidden`` ->
    dense ``out`` (no activations); branches summed, ReLU, dense 1 (no bias), as in
    the paper's code. projection mode: the conv is left out.
    """

    def __init__(self, sample_shape, filters, hidden, out):
        self.sample_shape = tuple(int(s) for s in sample_shape)
        self.conv = len(self.sample_shape) == 2
        self.filters, self.hidden, self.out = filters, hidden, out
        if self.conv:
            h, w = self.sample_shape
            if h < 2 or w < 2:
                raise ValueError(f"feature maps must be at least 2x2; got {self.sample_shape}.")
            self.flat = (h - 1) * (w - 1) * filters
        else:
            self.flat = self.sample_shape[0]

    def init(self, batch):
        """Fresh parameters (glorot-uniform kernels, zero biases) for ``batch`` examples."""
        p = {}
        for br in ("a", "b"):
            if self.conv:
                p[br + "_ck"] = _glorot([batch, 4, self.filters], 4, 4 * self.filters)
                p[br + "_cb"] = tf.zeros([batch, self.filters])
            p[br + "_k1"] = _glorot([batch, self.flat, self.hidden], self.flat, self.hidden)
            p[br + "_b1"] = tf.zeros([batch, self.hidden])
            p[br + "_k2"] = _glorot([batch, self.hidden, self.out], self.hidden, self.out)
            p[br + "_b2"] = tf.zeros([batch, self.out])
        p["k3"] = _glorot([batch, self.out], self.out, 1)
        return p

    def branch(self, p, br, s):
        """``s``: (B, K, H, W) maps or (B, K, D) vectors -> (B, K, out)."""
        if self.conv:
            patches = tf.stack(
                [s[:, :, :-1, :-1], s[:, :, :-1, 1:], s[:, :, 1:, :-1], s[:, :, 1:, 1:]], axis=-1
            )
            h = tf.einsum("bkhwi,bif->bkhwf", patches, p[br + "_ck"])
            h = h + p[br + "_cb"][:, None, None, None, :]
            h = tf.reshape(h, [tf.shape(s)[0], tf.shape(s)[1], self.flat])
        else:
            h = s
        h = tf.matmul(h, p[br + "_k1"]) + p[br + "_b1"][:, None, :]
        return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]

    def head(self, p, h):
        return tf.einsum("bko,bo->bk", tf.nn.relu(h), p["k3"])

    def scores(self, p, a, b, perms):
        """Joint (B, K) and marginal (B, K * len(perms)) scores."""
        ha, hb = self.branch(p, "a", a), self.branch(p, "b", b)
        joint = self.head(p, ha + hb)
        marg = [self.head(p, ha + tf.gather(hb, perm, batch_dims=1)) for perm in perms]
        return joint, tf.concat(marg, axis=-1)


def _random_perm(batch, k):
    return tf.argsort(tf.random.uniform([batch, k]), axis=-1)


def _adam(params, grads, state, lr, ascent=True, b1=0.9, b2=0.999, eps=1e-7):
    """One Adam step on a dict of tensors; ``state = (m, v, t)``."""
    m, v, t = state
    t = t + 1.0
    sign = 1.0 if ascent else -1.0
    new_p, new_m, new_v = {}, {}, {}
    corr = tf.sqrt(1.0 - b2**t) / (1.0 - b1**t)
    for key, w in params.items():
        g = grads[key]
        new_m[key] = b1 * m[key] + (1.0 - b1) * g
        new_v[key] = b2 * v[key] + (1.0 - b2) * tf.square(g)
        new_p[key] = w + sign * lr * corr * new_m[key] / (tf.sqrt(new_v[key]) + eps)
    return new_p, (new_m, new_v, t)


# ----------------------------------------------------------------------- estimator
@keras.saving.register_keras_serializable(package="robustkit")
class PerSampleMINE:
    """Per-example mutual information ``I(x, x_adv)`` (nats), batched.

    Hsu et al. (AAAI 2022), per-sample MINE. For each example, the first
    convolution layer's K feature maps of ``x`` and ``x_adv`` are K paired
    samples (MNIST small CNN: K = 32 maps of 26x26); marginal samples shuffle the
    ``x_adv`` maps. Where the model has no convolution (or ``mode="projection"``),
    the samples are ``projections`` (500) random Gaussian projections of the
    flattened image to ``dim`` (128) dimensions, each standardised (the paper's
    code). A fresh statistics network is trained per example with Adam on the
    Donsker-Varadhan bound (:func:`robustkit.estimators.bounds.dv`).

    Example:

    >>> import numpy as np, robustkit as rk
    >>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
    >>> from robustkit.estimators import PerSampleMINE
    >>> mine = PerSampleMINE(None, mode="projection", projections=16,
    ...                       dim=8, steps=3, hidden=8, lr=1e-3)
    >>> mine.estimate(x, x).shape
    (2,)

    Args:
        model: the Keras model whose first convolution gives the samples (may be
            ``None`` with ``mode="projection"``).
        layer: a layer name or layer (default: the first ``Conv2D``), or a callable
            ``x -> (B, H, W, K)`` feature maps.
        mode: ``"auto"`` (conv if the model has a convolution, else projection),
            ``"conv"`` or ``"projection"``.
        steps: Adam steps per estimate (default 500).
        lr: Adam learning rate. The paper uses 1.5e-5 (default) over thousands of
            attack iterations; with a few hundred steps a larger rate (1e-4 to
            1e-3) gets a tighter estimate.
        filters, hidden, out: statistics network widths, paper 16 / 512 / 10. The
            first dense layer holds ``(H-1)(W-1) * filters * hidden`` weights per
            branch and example (5.1 M for 26x26 maps): memory and time scale with
            ``hidden``; smaller values are much faster.
        shuffles: marginal permutations used for the final estimate (averaged
            into one DV estimate; training uses one fresh permutation per step).
        projections, dim, seed: the projection fallback (500, 128, seed 0).
        batch_size: examples per compiled call.
    """

    def __init__(self, model=None, layer=None, mode="auto", steps=500, lr=1.5e-5,
                 filters=16, hidden=512, out=10, shuffles=8, projections=500, dim=128,
                 seed=0, batch_size=64):
        self.mode = check_choice(mode, set(_MODES), "mode")
        self.steps = check_int(steps, "steps")
        self.lr = check_positive(lr, "lr")
        self.filters = check_int(filters, "filters")
        self.hidden = check_int(hidden, "hidden")
        self.out = check_int(out, "out")
        self.shuffles = check_int(shuffles, "shuffles")
        self.projections = check_int(projections, "projections", minimum=2)
        self.dim = check_int(dim, "dim")
        self.seed = int(seed)
        self.batch_size = check_int(batch_size, "batch_size")
        self.layer = layer
        self.model = model
        if model is None and self.mode == "conv" and not callable(layer):
            raise ValueError("`model` is required with mode='conv' (or pass `layer` as a callable).")
        self._features = None
        self._feature_input_shape = None
        self._compiled = {}

    # ---------------------------------------------------------------- features
    def resolved_mode(self):
        """``"conv"`` or ``"projection"`` after resolving ``"auto"``."""
        if self.mode != "auto":
            return self.mode
        if callable(self.layer) and not isinstance(self.layer, keras.layers.Layer):
            return "conv"
        if self.layer is not None:
            return "conv"
        if self.model is not None and _find_first_conv(self.model) is not None:
            return "conv"
        return "projection"

    def features(self, input_shape):
        """The feature function ``x -> samples`` for images of ``input_shape``."""
        input_shape = tuple(int(s) for s in input_shape)
        if self._features is not None and self._feature_input_shape == input_shape:
            return self._features
        mode = self.resolved_mode()
        if mode == "projection":
            fn = _projection_feature_fn(input_shape, self.projections, self.dim, self.seed)
        elif callable(self.layer) and not isinstance(self.layer, keras.layers.Layer):
            user = self.layer

            def fn(x):
                return tf.transpose(tf.cast(user(x), tf.float32), [0, 3, 1, 2])
        else:
            layer = self.layer
            if layer is None:
                layer = _find_first_conv(self.model) if self.model is not None else None
                if layer is None:
                    raise ValueError(
                        "`mode` is 'conv' but the model has no Conv2D layer; use "
                        "mode='projection'."
                    )
            fn = _conv_feature_fn(self.model, layer)
        self._features, self._feature_input_shape = fn, input_shape
        return fn

    def critic(self, sample_shape):
        return _Critic(sample_shape, self.filters, self.hidden, self.out)

    # ------------------------------------------------------ graph-level pieces
    def init_state(self, critic, batch):
        """Fresh per-example parameters and Adam state."""
        params = critic.init(batch)
        zeros = {k: tf.zeros_like(v) for k, v in params.items()}
        return params, (zeros, dict(zeros), tf.constant(0.0))

    def train_step(self, critic, params, opt, fa, fb, lr=None):
        """One Adam ascent step of the DV bound; returns (params, opt, dv (B,))."""
        k = tf.shape(fa)[1]
        perm = _random_perm(tf.shape(fa)[0], k)
        with tf.GradientTape() as tape:
            tape.watch(params)
            joint, marg = critic.scores(params, fa, fb, [perm])
            mi = bounds.dv(joint, marg)
            total = tf.reduce_sum(mi)
        grads = tape.gradient(total, params)
        params, opt = _adam(params, grads, opt, self.lr if lr is None else lr)
        return params, opt, mi

    def final_estimate(self, critic, params, fa, fb):
        b, k = tf.shape(fa)[0], tf.shape(fa)[1]
        perms = [_random_perm(b, k) for _ in range(self.shuffles)]
        joint, marg = critic.scores(params, fa, fb, perms)
        return bounds.dv(joint, marg)

    def _estimate_graph(self, x, x_adv):
        feat = self.features(x.shape[1:])
        fa, fb = tf.stop_gradient(feat(x)), tf.stop_gradient(feat(x_adv))
        critic = self.critic(fa.shape[2:])
        params, opt = self.init_state(critic, tf.shape(fa)[0])

        def body(params, opt):
            params, opt, _ = self.train_step(critic, params, opt, fa, fb)
            return params, opt

        if self.steps <= MAX_UNROLLED_STEPS:
            for _ in range(self.steps):
                params, opt = body(params, opt)
        else:
            _, params, opt = tf.while_loop(
                lambda i, p, o: i < self.steps,
                lambda i, p, o: (i + 1, *body(p, o)),
                (tf.constant(0), params, opt),
            )
        return self.final_estimate(critic, params, fa, fb)

    # ------------------------------------------------------------------ public
    def estimate(self, x, x_adv):
        """Per-example MI estimate (numpy, nats) between ``x`` and ``x_adv``."""
        x = check_images(np.asarray(x, dtype=np.float32) if not tf.is_tensor(x) else x, "x")
        x_adv = check_images(
            np.asarray(x_adv, dtype=np.float32) if not tf.is_tensor(x_adv) else x_adv, "x_adv"
        )
        if tuple(x.shape) != tuple(x_adv.shape):
            raise ValueError(
                f"`x_adv` must have the shape of `x` {tuple(x.shape)}; got {tuple(x_adv.shape)}."
            )
        x = tf.convert_to_tensor(x, tf.float32)
        x_adv = tf.convert_to_tensor(x_adv, tf.float32)
        key = tuple(x.shape[1:])
        fn = self._compiled.get(key)
        if fn is None:
            spec = tf.TensorSpec([None, *key], tf.float32)
            fn = tf.function(self._estimate_graph, input_signature=[spec, spec])
            self._compiled[key] = fn
        outs = [
            fn(x[s : s + self.batch_size], x_adv[s : s + self.batch_size]).numpy()
            for s in range(0, int(x.shape[0]), self.batch_size)
        ]
        return np.concatenate(outs) if outs else np.zeros([0], np.float32)

    def get_config(self):
        layer = self.layer if isinstance(self.layer, str) or self.layer is None else getattr(
            self.layer, "name", None
        )
        return dict(layer=layer, mode=self.mode, steps=self.steps, lr=self.lr,
                    filters=self.filters, hidden=self.hidden, out=self.out,
                    shuffles=self.shuffles, projections=self.projections, dim=self.dim,
                    seed=self.seed, batch_size=self.batch_size)

    @classmethod
    def from_config(cls, config, model=None):
        return cls(model=model, **config)

    def __repr__(self):
        return "PerSampleMINE(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = {}
        state["_features"] = None
        return state
