"""What the MINE attacks share: the criterion, the per-sample MINE, the batched run.

An adversarial example is the point of the L-inf box that is *most similar* to ``x`` --
similarity measured by the per-sample mutual information ``I(x, x + delta)``
(:class:`robustkit.mine.PerSampleMINE`) -- among those that satisfy an attack criterion
``f(x + delta) <= 0`` (Hsu et al., AAAI 2022):

``max_delta I(x, x + delta)  s.t.  f(x + delta) <= 0,  |delta|_inf <= eps,  x + delta in [0, 1]``

For unsupervised models the MI sign flips: the UAE keeps the autoencoder's reconstruction
loss (``f = 0``) while being *dissimilar* to ``x``. The loops run on
:mod:`robustkit.attacks.engine`, the best point per example is kept by
:meth:`robustkit.attacks.engine.Tracker.by_score` (the largest / smallest MI among
successes, else the smallest criterion), the box and the start come from
:class:`robustkit.threat.Linf`.

Two MI numbers are reported per example (FIDELITY §2.1): ``mi``, robustkit's online
all-pairs estimate at the kept point (bounded by ``log K``), and ``mi_release``, the
statistic the released code reports: the maximum over iterations (unsupervised: the
minimum above 0) of the online one-permutation estimate among successful iterates.

Example:

>>> import robustkit as rk
>>> atk = rk.mine.MinMax(eps=0.3, steps=3, hidden=8)
>>> atk.threat, atk.uses_labels
(Linf(eps=0.3), True)
"""

import collections

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import (
    check_choice,
    check_images,
    check_int,
    check_labels,
    check_non_negative,
    check_positive,
)
from robustkit.attacks import engine
from robustkit.attacks.base import Attack
from robustkit.mine.criteria import CRITERIA, supervised_criterion, unsupervised_criterion
from robustkit.mine.per_sample import PerSampleMINE
from robustkit.models.adapter import as_logits_fn

#: the per-example outputs of :meth:`MINEAttack.run`
OUTPUTS = ("x_adv", "mi", "mi_release", "success", "f")
_STARTS = {False: "none", True: "uniform", "release": "release"}
_BOXES = ("project", "clip")


def release_start_limit(image_shape):
    """Half-width of the released code's start ``delta_0 ~ U(-l, l)`` (FIDELITY §2.4).

    The release creates its perturbation with ``tf.get_variable`` and no initialiser,
    i.e. TF1's glorot-uniform on the shape ``(1, H, W, C)``: fan-in ``H * W``, fan-out
    ``C * H``, ``l = sqrt(6 / (fan_in + fan_out))``.

    >>> round(release_start_limit((28, 28, 1)), 4), round(release_start_limit((32, 32, 3)), 4)
    (0.086, 0.0732)
    """
    h, w, c = (int(v) for v in image_shape)
    return (6.0 / (h * w + c * h)) ** 0.5


#: one evaluation of an iterate (see :meth:`MINEAttack._evaluate`)
Evaluation = collections.namedtuple(
    "Evaluation", ["x_img", "f", "ok", "mi", "bounded", "single", "grad_f", "grad_i", "grad_p"]
)


class MINEAttack(Attack):
    """Base of :class:`robustkit.mine.MinMax` and :class:`robustkit.mine.PenaltyMINE`.

    Subclasses implement ``_search(model_fn, x, y) -> (x_adv, mi, mi_release, success, f)``.
    """

    supported_norms = ("linf",)

    def __init__(
        self,
        eps,
        steps,
        alpha,
        kappa,
        criterion,
        targeted,
        random_start,
        mine_lr,
        mine_layer,
        mine_mode,
        filters,
        hidden,
        out,
        maximize_mi,
        loop,
        batch_size,
        jit_compile,
        seed,
        projections=500,
        dim=128,
        *,
        marginal="auto",
        box="project",
        min_mi=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.projections = check_int(projections, "projections", minimum=2)
        self.dim = check_int(dim, "dim")
        self.threat = self._make_threat("linf", eps)
        self.eps = self.threat.eps
        self.steps = check_int(steps, "steps")
        self.alpha = check_positive(alpha, "alpha")
        self.kappa = check_non_negative(kappa, "kappa")
        if callable(criterion):
            self.criterion = criterion
        else:
            self.criterion = check_choice(criterion, set(CRITERIA), "criterion")
        self.targeted = bool(targeted)
        if self.targeted and self.criterion == "unsupervised":
            raise ValueError("`targeted` needs criterion='supervised'.")
        if random_start not in _STARTS:
            raise ValueError(
                f"`random_start` must be False, True or 'release'; got {random_start!r}."
            )
        self.random_start = random_start if isinstance(random_start, str) else bool(random_start)
        self.marginal = check_choice(marginal, {"auto", "release"}, "marginal")
        self.box = check_choice(box, set(_BOXES), "box")
        self.min_mi = None if min_mi is None else float(min_mi)
        self.mine_lr = check_positive(mine_lr, "mine_lr")
        self.mine_layer = mine_layer
        self.mine_mode = check_choice(mine_mode, {"auto", "conv", "projection"}, "mine_mode")
        self.filters = check_int(filters, "filters")
        self.hidden = check_int(hidden, "hidden")
        self.out = check_int(out, "out")
        if maximize_mi is not None and not isinstance(maximize_mi, bool):
            raise ValueError(f"`maximize_mi` must be None, True or False; got {maximize_mi!r}.")
        self.maximize_mi = maximize_mi
        self.loop = engine.check_loop(loop)
        #: steps per while-loop iteration (the engine's)
        self.chunk = engine.WHILE_CHUNK
        self._estimators = {}

    @property
    def uses_labels(self):
        return self.criterion != "unsupervised"

    def criterion_fn(self):
        """The criterion ``(x, output_adv, y, output_clean) -> (f, success)``."""
        if callable(self.criterion):
            return self.criterion
        if self.criterion == "supervised":
            return supervised_criterion(self.kappa, self.targeted)
        return unsupervised_criterion()

    def _maximize(self, crit):
        if self.maximize_mi is not None:
            return self.maximize_mi
        return bool(getattr(crit, "maximize_mi", True))

    @staticmethod
    def tracker(maximize):
        """The best-point ordering: largest (smallest) MI among successes, else smallest f."""
        return engine.Tracker.by_score(maximize)

    def estimator(self, model):
        """The :class:`PerSampleMINE` (features + statistics network) for ``model``."""
        key = id(model)
        entry = self._estimators.get(key)
        if entry is not None and entry[0] is model:
            return entry[1]
        keras_model = model if isinstance(model, keras.layers.Layer) else None
        est = PerSampleMINE(
            keras_model,
            layer=self.mine_layer,
            mode=self.mine_mode,
            steps=1,
            lr=self.mine_lr,
            filters=self.filters,
            hidden=self.hidden,
            out=self.out,
            projections=self.projections,
            dim=self.dim,
            seed=0 if self.seed is None else self.seed,
            marginal=self.marginal,
        )
        self._estimators[key] = (model, est)
        return est

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            steps=self.steps,
            alpha=self.alpha,
            kappa=self.kappa,
            criterion=self.criterion if isinstance(self.criterion, str) else None,
            targeted=self.targeted,
            random_start=self.random_start,
            mine_lr=self.mine_lr,
            mine_layer=self.mine_layer if isinstance(self.mine_layer, (str, type(None))) else None,
            mine_mode=self.mine_mode,
            filters=self.filters,
            hidden=self.hidden,
            out=self.out,
            maximize_mi=self.maximize_mi,
            loop=self.loop,
            projections=self.projections,
            dim=self.dim,
            marginal=self.marginal,
            box=self.box,
            min_mi=self.min_mi,
        )
        if config["criterion"] is None:
            config["criterion"] = "supervised"
        return config

    def __getstate__(self):
        state = super().__getstate__()
        state["_estimators"] = {}
        return state

    # ------------------------------------------------------------------ public
    def __call__(self, model, x, y=None, verbose=0):
        """Adversarial examples for ``x`` (same type and shape as ``x``)."""
        out = self.run(model, x, y, verbose=verbose)
        return out["x_adv"] if not tf.is_tensor(x) else tf.convert_to_tensor(out["x_adv"])

    def run(self, model, x, y=None, verbose=0):
        """Runs the attack and returns a dict of numpy arrays.

        ``x_adv``; ``mi`` (robustkit's online MINE value of the kept example: the
        all-pairs estimate, <= log K, nats); ``mi_release`` (the released code's
        statistic: the largest online one-permutation estimate over the successful
        iterates; unsupervised: the smallest one above 0; NaN where no iterate
        counts); ``success`` (the kept example satisfies the criterion, and has
        MI > ``min_mi`` when that is set); ``f`` (its criterion value). For
        ``criterion="unsupervised"`` ``model`` is the autoencoder and ``y`` is
        ignored. ``verbose=1`` shows a progress bar.
        """
        fn = as_logits_fn(model)
        x_np = check_images(
            np.asarray(x, dtype=np.float32) if not tf.is_tensor(x) else x.numpy(), "x"
        )
        n = int(x_np.shape[0])
        x_t = tf.convert_to_tensor(x_np, tf.float32)
        if n == 0:
            empty = np.zeros([0], np.float32)
            out = {name: empty for name in OUTPUTS}
            return {**out, "x_adv": x_np, "success": empty.astype(bool)}
        y_t = self._labels(fn, x_t, y, n)
        compiled = self._compile(model, fn, x_t, self._search, self._compiled)
        bar = keras.utils.Progbar(n, unit_name="example") if verbose else None
        parts = []
        for s in range(0, n, self.batch_size):
            parts.append(compiled(x_t[s : s + self.batch_size], y_t[s : s + self.batch_size]))
            if bar is not None:
                bar.add(int(parts[-1][0].shape[0]))
        return {
            name: np.concatenate([p[i].numpy() for p in parts]) for i, name in enumerate(OUTPUTS)
        }

    def perturb(self, model_fn, x, y):
        """Graph-safe core: ``x_adv`` for tensors ``x``, ``y``."""
        return self._search(model_fn, x, y)[0]

    # ---------------------------------------------------------------- helpers
    def _labels(self, fn, x_t, y, n):
        """The labels as int64 (checked), the model's predictions, or zeros (unsupervised)."""
        probe = fn(x_t[:1])
        if not self.uses_labels:
            if tuple(probe.shape[1:]) != tuple(x_t.shape[1:]):
                raise ValueError(
                    "criterion='unsupervised' needs an autoencoder whose output has the "
                    f"input's shape {tuple(x_t.shape[1:])}; got {tuple(probe.shape[1:])}."
                )
            return tf.zeros([n], tf.int64)
        if probe.shape.rank != 2:
            raise ValueError(
                f"`model` must return logits of shape (batch, classes); got {probe.shape}."
            )
        if y is None:
            if self.targeted:
                raise ValueError("`y` (the target classes) is required when targeted=True.")
            return self._predict_labels(fn, x_t)
        y = np.asarray(y) if not tf.is_tensor(y) else y
        y = check_labels(y, n=n, num_classes=int(probe.shape[-1]), name="y")
        return tf.cast(tf.convert_to_tensor(y), tf.int64)

    def _run(self, body, state, steps):
        """``state = body(t, state)`` for ``t = 1 .. steps`` (a float tensor) on the engine."""
        unrolled = engine.unrolled(self.loop, steps * getattr(self, "rounds", 1), "eval")
        return engine.run_loop(
            lambda k, s: body(tf.cast(k, tf.float32) + 1.0, s),
            state,
            steps,
            unrolled=unrolled,
            chunk=self.chunk,
        )

    def _repeat(self, body, state, times):
        """``state = body(state)`` ``times`` times: unrolled for one (or ``loop="unrolled"``),
        else one ``tf.while_loop`` (so many critic steps do not multiply the graph)."""
        unrolled = times == 1 or self.loop == "unrolled"
        return engine.run_loop(lambda k, s: body(s), state, times, unrolled=unrolled)

    def _setup(self, model_fn, x):
        """Feature function, statistics network and clean features/outputs."""
        model = getattr(model_fn, "__robustkit_model__", model_fn)
        est = self.estimator(model)
        feat = est.features(x.shape[1:])
        fa = tf.stop_gradient(feat(x))
        critic = est.critic(fa.shape[2:])
        clean = tf.stop_gradient(model_fn(x))
        return est, feat, fa, critic, clean

    def _start(self, x):
        """The first ``delta``: 0, uniform in the ball (``random_start=True``) or the
        release's glorot-uniform draw (``"release"``, :func:`release_start_limit`)."""
        if self.random_start == "release":
            limit = release_start_limit(x.shape[1:])
            delta = tf.random.uniform(tf.shape(x), -limit, limit, seed=self.seed)
            return self._project(x, tf.clip_by_value(delta, -self.eps, self.eps))
        kind = "uniform" if self.random_start else "none"
        return self.threat.random_start(x, kind=kind, seed=self.seed) - x

    def _project(self, x, delta):
        """``delta`` in the ball; with ``box="project"`` also ``x + delta`` in the box
        (with ``"clip"`` the model sees ``clip(x + delta)`` instead, as in the release)."""
        if self.box == "clip":
            return tf.clip_by_value(delta, -self.eps, self.eps)
        return self.threat.project(x + delta, x) - x

    def _image(self, x, delta):
        """The image the model sees: ``x + delta`` (clipped to the box for ``box="clip"``;
        no gradient flows to pixels outside the box, as through the release's clip)."""
        lo, hi = self.threat.bounds
        return tf.clip_by_value(x + delta, lo, hi) if self.box == "clip" else x + delta

    def _evaluate(self, model_fn, crit, est, feat, fa, critic, params, x, y, clean, delta):
        """An :class:`Evaluation` at ``delta``: the image, f, success, the MI under the
        attack's marginal (``mi``), the bounded and the one-permutation values, and the
        gradients of f and of ``mi`` w.r.t. delta and of ``mi`` w.r.t. theta."""
        with tf.GradientTape(watch_accessed_variables=False) as tape_f:
            tape_f.watch(delta)
            x_img = self._image(x, delta)
            f, ok = crit(x, model_fn(x_img), y, clean)
            f_sum = tf.reduce_sum(f)
        with tf.GradientTape(watch_accessed_variables=False) as tape_i:
            tape_i.watch([delta, params])
            fb = feat(self._image(x, delta))
            ha, hb = critic.branch(params, "a", fa), critic.branch(params, "b", fb)
            mi, bounded, single = est.online_values(critic, params, ha, hb)
            mi_sum = tf.reduce_sum(mi)
        grad_f = tape_f.gradient(f_sum, delta)
        grad_i, grad_p = tape_i.gradient(mi_sum, [delta, params])
        return Evaluation(x_img, f, ok, mi, bounded, single, grad_f, grad_i, grad_p)

    # ----------------------------------------------------- what is kept and reported
    def _keep_init(self, x, maximize):
        """``(best image, bounded MI at it, release statistic)`` before any iterate."""
        tracker = self.tracker(maximize)
        b = tf.shape(x)[0]
        worst = tf.fill([b], -np.inf if maximize else np.inf)
        return tracker.init(x), tracker.init(tf.zeros([b, 1])), worst

    def _keep(self, kept, ev, maximize):
        """Merges an :class:`Evaluation` into ``kept``: the point is ranked by the MI under
        the attack's marginal; the release statistic runs over the successful iterates."""
        best, best_mi, release = kept
        tracker = self.tracker(maximize)
        ok = ev.ok
        counts = ev.ok
        if self.min_mi is not None:
            ok = tf.logical_and(ok, ev.mi > self.min_mi)
            counts = tf.logical_and(counts, ev.single > self.min_mi)
        best = tracker.update(best, ev.x_img, ok, ev.mi, ev.f)
        best_mi = tracker.update(best_mi, ev.bounded[:, None], ok, ev.mi, ev.f)
        better = tf.maximum if maximize else tf.minimum
        release = tf.where(counts, better(release, ev.single), release)
        return best, best_mi, release

    @staticmethod
    def _outputs(kept):
        """``(x_adv, mi, mi_release, success, f)`` of the kept points."""
        best, best_mi, release = kept
        release = tf.where(tf.math.is_inf(release), tf.fill(tf.shape(release), np.nan), release)
        return engine.Tracker.result(best), best_mi.x[:, 0], release, best.ok, best.fallback


__all__ = ["OUTPUTS", "Evaluation", "MINEAttack", "release_start_limit"]
