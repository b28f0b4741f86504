"""Per-sample MINE: the mutual information between one image and its perturbation.

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022. A single image gives no sample of a
distribution, so the K feature maps of the model's first convolution layer are
used as K paired samples: ``(conv(x)_k, conv(x + delta)_k)`` are joint pairs,
``(conv(x)_k, conv(x + delta)_perm(k))`` marginal pairs. A statistics network
``T`` is trained from scratch for every example to maximise the
Donsker-Varadhan bound; its value is the per-example MI (nats).

Marginal term: by default (K <= 64 samples) robustkit scores all K^2 pairs
``T(conv(x)_i, conv(x + delta)_j)``, the exact expectation over uniformly random
shuffles that the paper samples with one permutation (``marginal="shuffle"``
gives the sampled version). With it the estimate is bounded by ``log K`` and has
no permutation noise; it costs one add per pair because ``T`` sums its two
branch outputs before the ReLU.

Limitation (measured, see tests/test_mine.py): the estimate is computed on the
same K pairs the network is trained on, and a statistics network with far more
weights than K can learn to tell *any* K joint pairs from the shuffled ones --
identical maps, maps of an unrelated image or of noise (maps of noise made by
filter k share filter k's offset and scale with conv(x)_k). All estimates rise
towards ``log K`` with training; ``x_adv = x`` is reliably above noise on average
(by 0.15-0.3 nats for a 32-map CNN after 100 steps at lr 3e-3, same > noise for
70-90 % of the examples) but per example the ordering is not guaranteed.

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
_MARGINALS = ("auto", "all_pairs", "shuffle")
#: ``marginal="auto"`` scores all K^2 pairs up to this many samples per example
MAX_ALL_PAIRS = 64


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
def _glorot(shape, fan_in, fan_out, seed=None):
    limit = math.sqrt(6.0 / (fan_in + fan_out))
    if seed is None:
        return tf.random.uniform(shape, -limit, limit)
    return tf.random.stateless_uniform(shape, seed, -limit, limit)


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
            self.positions = (h - 1) * (w - 1)
        else:
            self.flat = self.sample_shape[0]

    def init(self, batch, seed=None):
        """Fresh parameters (glorot-uniform kernels, zero biases) for ``batch`` examples.

        With ``seed`` (an int) the draw is stateless: example ``i`` of every call
        gets the same initial network, so an estimate is a deterministic function
        of its inputs (common random numbers when two estimates are compared).
        """
        p = {}
        keys = iter(range(1, 100))

        def glorot(shape, fan_in, fan_out):
            sub = None if seed is None else tf.constant([int(seed), next(keys)], tf.int32)
            return _glorot(shape, fan_in, fan_out, sub)

        for br in ("a", "b"):
            if self.conv:
                p[br + "_ck"] = glorot([batch, 4, self.filters], 4, 4 * self.filters)
                p[br + "_cb"] = tf.zeros([batch, self.filters])
            if self.conv:  # stored filter-major: (filters, positions, hidden)
                shape = [batch, self.filters, self.flat // self.filters, self.hidden]
            else:
                shape = [batch, self.flat, self.hidden]
            p[br + "_k1"] = glorot(shape, self.flat, self.hidden)
            p[br + "_b1"] = tf.zeros([batch, self.hidden])
            p[br + "_k2"] = glorot([batch, self.hidden, self.out], self.hidden, self.out)
            p[br + "_b2"] = tf.zeros([batch, self.out])
        p["k3"] = glorot([batch, self.out], self.out, 1)
        return p

    def branch(self, p, br, s):
        """``s``: (B, K, H, W) maps or (B, K, D) vectors -> (B, K, out).

        conv mode: conv 2x2 -> flatten -> dense is linear, so the conv kernel is
        folded into the dense kernel once per step (``4 x (H-1)(W-1) x hidden``
        per example) and the K samples' 2x2 patches are multiplied with it: same
        function and same parameter gradients as :meth:`branch_direct`, but the
        K x (H-1)(W-1) x filters conv output is never formed (``filters / 4``
        times fewer multiply-adds in the big product; 4x for the paper's 16).
        """
        if not self.conv:
            h = tf.matmul(s, p[br + "_k1"]) + p[br + "_b1"][:, None, :]
            return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]
        hh, ww = self.sample_shape
        b, k = tf.shape(s)[0], tf.shape(s)[1]
        k1 = tf.reshape(p[br + "_k1"], [b, self.filters, -1])  # (B, F, P * hidden)
        # w[:, i] = sum_f ck[i, f] k1[f]: the dense kernel seen through patch offset i
        w = tf.reshape(tf.matmul(p[br + "_ck"], k1), [b, 4 * self.positions, self.hidden])
        const = tf.reshape(tf.matmul(p[br + "_cb"][:, None, :], k1), [b, -1, self.hidden])
        const = tf.reduce_sum(const, axis=1) + p[br + "_b1"]
        shifted = tf.stack(
            [s[:, :, :-1, :-1], s[:, :, :-1, 1:], s[:, :, 1:, :-1], s[:, :, 1:, 1:]], axis=2
        )  # (B, K, 4, H-1, W-1): the 2x2 patches, offset-major
        h = tf.matmul(tf.reshape(shifted, [b, k, 4 * self.positions]), w) + const[:, None, :]
        return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]

    def branch_direct(self, p, br, s):
        """The statistics network's branch layer by layer (reference for :meth:`branch`)."""
        if not self.conv:
            return self.branch(p, br, s)
        patches = tf.stack(
            [s[:, :, :-1, :-1], s[:, :, :-1, 1:], s[:, :, 1:, :-1], s[:, :, 1:, 1:]], axis=-1
        )
        h = tf.einsum("bkhwi,bif->bkhwf", patches, p[br + "_ck"])
        h = h + p[br + "_cb"][:, None, None, None, :]
        h = tf.reshape(h, [tf.shape(s)[0], tf.shape(s)[1], -1, self.filters])
        h = tf.einsum("bkpf,bfpo->bko", h, p[br + "_k1"]) + p[br + "_b1"][:, None, :]
        return tf.matmul(h, p[br + "_k2"]) + p[br + "_b2"][:, None, :]

    def head(self, p, h):
        return tf.einsum("bko,bo->bk", tf.nn.relu(h), p["k3"])

    def scores(self, p, a, b, perms):
        """Joint (B, K) and marginal (B, K * len(perms)) scores."""
        ha, hb = self.branch(p, "a", a), self.branch(p, "b", b)
        return self.scores_from_branches(p, ha, hb, perms)

    def scores_from_branches(self, p, ha, hb, perms):
        joint = self.head(p, ha + hb)
        marg = [self.head(p, ha + tf.gather(hb, perm, batch_dims=1)) for perm in perms]
        return joint, tf.concat(marg, axis=-1)

    def pair_scores(self, p, ha, hb):
        """``T[b, i, j] = T(a_i, b_j)`` for every pair (B, K, K) from branch outputs.

        ``T`` is ``head(branch_a(a) + branch_b(b))``: every pair costs one add and
        the head, no further branch pass.
        """
        h = tf.nn.relu(ha[:, :, None, :] + hb[:, None, :, :])
        return tf.einsum("bijo,bo->bij", h, p["k3"])


def dv_all_pairs(t):
    """DV bound from all-pairs scores ``t`` (B, K, K): joint = diagonal, marginal =
    all K^2 pairs, i.e. the exact expectation over uniformly random shuffles of the
    ``x_adv`` samples (``P(perm(k) = j) = 1/K`` for every j, including k).

    >>> import numpy as np
    >>> t = np.array([[[2.0, 0.0], [0.0, 2.0]]], "float32")
    >>> round(float(dv_all_pairs(t)[0]), 4)  # 2 - log((2 e^2 + 2) / 4)
    0.5662
    """
    t = tf.convert_to_tensor(t, tf.float32)
    joint = tf.linalg.diag_part(t)
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return bounds.dv(joint, flat)


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
        shuffles: with ``marginal="shuffle"``, permutations used for the final
            estimate (training uses one fresh permutation per step).
        marginal: ``"auto"`` (all K^2 pairs when K <= 64, else shuffles),
            ``"all_pairs"`` or ``"shuffle"`` (the paper's sampled permutation).
        projections, dim: the projection fallback (500, 128).
        seed: seeds the projections and the statistics networks' initial weights
            (stateless: example i of every call starts from the same network, so
            an estimate is a deterministic function of its inputs; ``None``
            draws fresh weights every call). Default 0.
        batch_size: examples per compiled call.
    """

    def __init__(
        self,
        model=None,
        layer=None,
        mode="auto",
        steps=500,
        lr=1.5e-5,
        filters=16,
        hidden=512,
        out=10,
        shuffles=8,
        projections=500,
        dim=128,
        seed=0,
        batch_size=64,
        marginal="auto",
    ):
        self.mode = check_choice(mode, set(_MODES), "mode")
        self.marginal = check_choice(marginal, set(_MARGINALS), "marginal")
        self.steps = check_int(steps, "steps")
        self.lr = check_positive(lr, "lr")
        self.filters = check_int(filters, "filters")
        self.hidden = check_int(hidden, "hidden")
        self.out = check_int(out, "out")
        self.shuffles = check_int(shuffles, "shuffles")
        self.projections = check_int(projections, "projections", minimum=2)
        self.dim = check_int(dim, "dim")
        self.seed = None if seed is None else int(seed)
        self.batch_size = check_int(batch_size, "batch_size")
        self.layer = layer
        self.model = model
        if model is None and self.mode == "conv" and not callable(layer):
            raise ValueError(
                "`model` is required with mode='conv' (or pass `layer` as a callable)."
            )
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
                        "`mode` is 'conv' but the model has no Conv2D layer; use mode='projection'."
                    )
            fn = _conv_feature_fn(self.model, layer)
        self._features, self._feature_input_shape = fn, input_shape
        return fn

    def critic(self, sample_shape):
        return _Critic(sample_shape, self.filters, self.hidden, self.out)

    # ------------------------------------------------------ graph-level pieces
    def init_state(self, critic, batch):
        """Fresh per-example parameters (seeded by ``seed``) and Adam state."""
        params = critic.init(batch, seed=self.seed)
        zeros = {k: tf.zeros_like(v) for k, v in params.items()}
        return params, (zeros, dict(zeros), tf.constant(0.0))

    def all_pairs(self, k):
        """Whether the marginal term scores all K^2 pairs (else random shuffles)."""
        if self.marginal == "auto":
            return int(k) <= MAX_ALL_PAIRS
        return self.marginal == "all_pairs"

    def dv_from_branches(self, critic, params, ha, hb, shuffles=1):
        """Per-example DV value (B,) from the two branch outputs (B, K, out)."""
        if self.all_pairs(ha.shape[1]):
            return dv_all_pairs(critic.pair_scores(params, ha, hb))
        b, k = tf.shape(ha)[0], tf.shape(ha)[1]
        perms = [_random_perm(b, k) for _ in range(shuffles)]
        joint, marg = critic.scores_from_branches(params, ha, hb, perms)
        return bounds.dv(joint, marg)

    def dv(self, critic, params, fa, fb, shuffles=1):
        """Per-example DV value (B,) of the statistics networks ``params``."""
        ha, hb = critic.branch(params, "a", fa), critic.branch(params, "b", fb)
        return self.dv_from_branches(critic, params, ha, hb, shuffles)

    def train_step(self, critic, params, opt, fa, fb, lr=None):
        """One Adam ascent step of the DV bound; returns (params, opt, dv (B,))."""
        with tf.GradientTape() as tape:
            tape.watch(params)
            mi = self.dv(critic, params, fa, fb)
            total = tf.reduce_sum(mi)
        grads = tape.gradient(total, params)
        params, opt = _adam(params, grads, opt, self.lr if lr is None else lr)
        return params, opt, mi

    def final_estimate(self, critic, params, fa, fb):
        return self.dv(critic, params, fa, fb, shuffles=self.shuffles)

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
        layer = (
            self.layer
            if isinstance(self.layer, str) or self.layer is None
            else getattr(self.layer, "name", None)
        )
        return dict(
            layer=layer,
            mode=self.mode,
            steps=self.steps,
            lr=self.lr,
            filters=self.filters,
            hidden=self.hidden,
            out=self.out,
            shuffles=self.shuffles,
            projections=self.projections,
            dim=self.dim,
            seed=self.seed,
            batch_size=self.batch_size,
            marginal=self.marginal,
        )

    @classmethod
    def from_config(cls, config, model=None):
        return cls(model=model, **config)

    def __repr__(self):
        return (
            "PerSampleMINE(" + ", ".join(f"{k}={v!r}" for k, v in self.get_config().items()) + ")"
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_compiled"] = {}
        state["_features"] = None
        return state
