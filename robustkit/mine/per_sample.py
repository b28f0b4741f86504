"""Per-sample MINE: the mutual information between one image and its perturbation.

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022. A single image gives no sample of a
distribution, so the K feature maps of the model's first convolution layer are
used as K paired samples (:mod:`robustkit.mine.features`): ``(conv(x)_k,
conv(x + delta)_k)`` are joint pairs, ``(conv(x)_k, conv(x + delta)_perm(k))``
marginal pairs. A statistics network ``T`` (:class:`robustkit.mine.BatchedCritic`)
is trained from scratch for every example to maximise the Donsker-Varadhan bound;
its value is the per-example MI (nats).

Marginal term: by default (K <= 64 samples) robustkit scores all K^2 pairs
``T(conv(x)_i, conv(x + delta)_j)``, the exact expectation over uniformly random
shuffles that the paper samples with one permutation (``marginal="shuffle"``
gives the sampled version). With it the estimate is bounded by ``log K`` and has
no permutation noise; it costs one add per pair because ``T`` sums its two
branch outputs before the ReLU. ``marginal="release"`` is the released code's
estimate (one fresh permutation per evaluation, unbounded; FIDELITY §2.1).

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
>>> from robustkit.mine import PerSampleMINE
>>> mine = PerSampleMINE(model, steps=5, hidden=8, lr=1e-3)
>>> mine.estimate(x, x).shape
(3,)

Batching: robustkit estimates a whole batch at once, every example with its own
statistics network (:mod:`robustkit.mine.critic`, :mod:`robustkit.mine.optim`).
The official implementation handles one example at a time.
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_choice, check_images, check_int, check_positive
from robustkit.attacks import engine
from robustkit.estimators import bounds
from robustkit.mine import features as feats
from robustkit.mine.critic import BatchedCritic, dv_all_pairs, random_perm
from robustkit.mine.optim import adam
from robustkit.mine.optim import init_state as adam_state

_MODES = ("auto", "conv", "projection")
_MARGINALS = ("auto", "all_pairs", "shuffle", "release")
#: ``marginal="auto"`` scores all K^2 pairs up to this many samples per example
MAX_ALL_PAIRS = 64


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
    Donsker-Varadhan bound (:func:`robustkit.estimators.bounds.dv`). The training loop
    runs through :func:`robustkit.attacks.engine.run_loop` (the engine's loop policy).

    Example:

    >>> import numpy as np, robustkit as rk
    >>> x = np.random.default_rng(0).uniform(size=(2, 8, 8, 1)).astype("float32")
    >>> from robustkit.mine import PerSampleMINE
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
            ``"all_pairs"``, ``"shuffle"`` (the paper's sampled permutation) or
            ``"release"``: the released code's estimate, one fresh permutation per
            evaluation (every training step and the final estimate). When the
            permutation has no fixed point (probability ~1/e) no joint pair enters the
            marginal term and the value is the critic's joint/off-diagonal score gap:
            unbounded, unlike the all-pairs value (<= log K).
        projections, dim: the projection fallback (500, 128).
        seed: seeds the projections and the statistics networks' initial weights
            (stateless: example i of every call starts from the same network, so
            an estimate is a deterministic function of its inputs; ``None``
            draws fresh weights every call) and the marginal's permutations
            (op-level: a new estimator with the same seed repeats them). Default 0.
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
        if self.model is not None and feats.find_first_conv(self.model) is not None:
            return "conv"
        return "projection"

    def features(self, input_shape):
        """The feature function ``x -> samples`` for images of ``input_shape``."""
        input_shape = tuple(int(s) for s in input_shape)
        if self._features is not None and self._feature_input_shape == input_shape:
            return self._features
        mode = self.resolved_mode()
        if mode == "projection":
            fn = feats.projection_features(input_shape, self.projections, self.dim, self.seed)
        elif callable(self.layer) and not isinstance(self.layer, keras.layers.Layer):
            fn = feats.callable_features(self.layer)
        else:
            layer = self.layer
            if layer is None:
                layer = feats.find_first_conv(self.model) if self.model is not None else None
                if layer is None:
                    raise ValueError(
                        "`mode` is 'conv' but the model has no Conv2D layer; use mode='projection'."
                    )
            fn = feats.conv_features(self.model, layer)
        self._features, self._feature_input_shape = fn, input_shape
        return fn

    def critic(self, sample_shape):
        """The :class:`robustkit.mine.BatchedCritic` for samples of ``sample_shape``."""
        return BatchedCritic(sample_shape, self.filters, self.hidden, self.out)

    # ------------------------------------------------------ graph-level pieces
    def init_state(self, critic, batch):
        """Fresh per-example parameters (seeded by ``seed``) and Adam state."""
        params = critic.init(batch, seed=self.seed)
        return params, adam_state(params)

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
        shuffles = 1 if self.marginal == "release" else shuffles
        perms = [random_perm(b, k, seed=engine.op_seed(self, 1002 + i)) for i in range(shuffles)]
        joint, marg = critic.scores_from_branches(params, ha, hb, perms)
        return bounds.dv(joint, marg)

    def online_values(self, critic, params, ha, hb):
        """Three per-example DV values (B,) of one evaluation, from the branch outputs.

        ``(objective, bounded, single)``: ``objective`` is the value under ``marginal``
        (what an attack differentiates); ``bounded`` the all-pairs value (<= log K; for
        K > 64 without ``marginal="all_pairs"``, the one-permutation value); ``single``
        the released code's value with one fresh uniformly random permutation (read off
        the all-pairs scores when they are computed).

        >>> import tensorflow as tf
        >>> from robustkit.mine import BatchedCritic, PerSampleMINE
        >>> critic = BatchedCritic((3, 3), filters=2, hidden=4, out=3)
        >>> params = critic.init(2, seed=0)
        >>> h = critic.branch(params, "a", tf.random.stateless_uniform([2, 5, 3, 3], [0, 1]))
        >>> obj, bounded, single = PerSampleMINE(marginal="release").online_values(
        ...     critic, params, h, h)
        >>> bool(tf.reduce_all(obj == single)), bool(tf.reduce_all(bounded <= tf.math.log(5.0)))
        (True, True)
        """
        b, k = tf.shape(ha)[0], int(ha.shape[1])
        perm = random_perm(b, k, seed=engine.op_seed(self, 1001))
        if self.marginal == "all_pairs" or k <= MAX_ALL_PAIRS:
            t = critic.pair_scores(params, ha, hb)
            bounded = dv_all_pairs(t)
            single = bounds.dv(tf.linalg.diag_part(t), tf.gather(t, perm, batch_dims=2))
        else:
            single = bounds.dv(*critic.scores_from_branches(params, ha, hb, [perm]))
            bounded = single
        objective = bounded if self.all_pairs(k) else single
        return objective, bounded, single

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
        params, opt = adam(params, grads, opt, self.lr if lr is None else lr)
        return params, opt, mi

    def final_estimate(self, critic, params, fa, fb):
        return self.dv(critic, params, fa, fb, shuffles=self.shuffles)

    def _estimate_graph(self, x, x_adv):
        feat = self.features(x.shape[1:])
        fa, fb = tf.stop_gradient(feat(x)), tf.stop_gradient(feat(x_adv))
        critic = self.critic(fa.shape[2:])
        params, opt = self.init_state(critic, tf.shape(fa)[0])

        def body(k, state):
            params, opt, _ = self.train_step(critic, *state, fa, fb)
            return params, opt

        params, opt = engine.run_loop(
            body,
            (params, opt),
            self.steps,
            unrolled=engine.unrolled("auto", self.steps, "eval"),
            chunk=engine.WHILE_CHUNK,
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


__all__ = ["MAX_ALL_PAIRS", "PerSampleMINE"]
