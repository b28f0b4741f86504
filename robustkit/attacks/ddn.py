"""Decoupled direction and norm (DDN) L2 attack (Rony et al., CVPR 2019).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.DDN(steps=20)(model, x, y)
>>> x_adv.shape, bool(x_adv.min() >= 0 and x_adv.max() <= 1)
((4, 8, 8, 1), True)
"""

import math

import keras
import tensorflow as tf

from robustkit import threat as threat_lib
from robustkit._validation import check_choice, check_int, check_positive
from robustkit.attacks import engine
from robustkit.attacks.base import loss_and_grad
from robustkit.attacks.minimal_norm import MinimalNormL2

__all__ = ["DDN"]


@keras.saving.register_keras_serializable(package="robustkit")
class DDN(MinimalNormL2):
    """Decoupled direction and norm: a fast minimal-L2 attack.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.DDN()             # 100 steps, eps_0 1, gamma 0.05
    >>> atk.steps, atk.init_epsilon, atk.gamma, atk.norm, atk.label
    (100, 1.0, 0.05, 'l2', 'DDN')
    >>> # x_adv = atk(model, x, y); DDN(eps=0.5) also returns x where ||x_adv - x|| > 0.5

    Each step moves the perturbation ``delta`` along the normalised
    cross-entropy gradient (step ``alpha_k``, cosine-annealed from ``max_step`` to
    ``min_step``), then rescales it to the current norm ``eps_k`` and clips
    ``x + delta`` to the box. The norm shrinks by ``(1 - gamma)`` while the
    current point is adversarial and grows by ``(1 + gamma)`` while it is not.
    Reference: J. Rony, L. G. Hafemann, L. S. Oliveira, I. Ben Ayed,
    R. Sabourin, E. Granger, "Decoupling Direction and Norm for Efficient
    Gradient-Based L2 Adversarial Attacks and Defenses", CVPR 2019
    (https://arxiv.org/abs/1811.09600), Algorithm 1.

    Args:
        steps: iterations (default 100; the NAMID evaluation protocol uses 20).
        init_epsilon: initial norm ``eps_0`` (default 1.0, the paper's).
        gamma: norm update factor (default 0.05, the paper's).
        max_step, min_step: the step size is cosine-annealed from ``max_step``
            (default 1.0) to ``min_step`` (default 0.01), as in the paper.
        eps: optional L2 radius: an example whose smallest perturbation found is
            larger than ``eps`` counts as not fooled (its clean input is returned).
        quantize: ``None`` (default) or a number of levels: after every step
            ``x + delta`` is rounded to ``levels`` evenly spaced values of the box
            (256: 8-bit images; the NAMID evaluation uses 16).
        schedule: ``"robustkit"`` (default: step ``k`` uses the cosine value at ``k``, and
            the norm is capped at the largest one the box allows) or ``"advertorch"``
            (the scheduler is stepped before each step, so step ``k`` uses the value at
            ``k + 1`` and the last step ``min_step``; the norm is not capped).
        any_norm: count a success at any norm (no ``eps``; see
            :class:`~robustkit.attacks.minimal_norm.MinimalNormL2`).
        loop: ``"unrolled"``, ``"while"`` or ``"auto"`` (default): the engine's policy
            (:func:`robustkit.attacks.engine.unrolled`; a ``tf.while_loop`` for more than
            one step).
        bounds: the valid input box (default ``(0, 1)``).
        batch_size, jit_compile, seed: see :class:`~robustkit.attacks.Attack`.

    Returns, per example, the adversarial point with the smallest L2 norm seen
    over all iterates, the final one included (``engine.Tracker.min_norm``), or
    the clean input where none was found. The quantisation step of the paper is
    off by default (``quantize``). DDN has no ``restarts`` and no ``early_stop``: it
    starts from ``x`` deterministically, and a fooled example is what it works on
    (its norm keeps shrinking until the last step).

    :meth:`release` builds the DDN of the NAMID evaluation (advertorch's
    ``DDNL2Attack(nb_iter=20, gamma=0.05, init_norm=1.0, quantize=True, levels=16)``).
    """

    def __init__(
        self,
        steps=100,
        init_epsilon=1.0,
        gamma=0.05,
        max_step=1.0,
        min_step=0.01,
        eps=None,
        loop="auto",
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
        quantize=None,
        schedule="robustkit",
        any_norm=False,
    ):
        super().__init__(
            eps=eps,
            bounds=bounds,
            any_norm=any_norm,
            batch_size=batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )
        self.quantize = None if quantize is None else check_int(quantize, "quantize", minimum=2)
        self.schedule = check_choice(schedule, {"robustkit", "advertorch"}, "schedule")
        self.steps = check_int(steps, "steps")
        self.init_epsilon = check_positive(init_epsilon, "init_epsilon")
        self.gamma = check_positive(gamma, "gamma")
        if self.gamma >= 1:
            raise ValueError(f"`gamma` must be in (0, 1); got {gamma!r}.")
        self.max_step = check_positive(max_step, "max_step")
        self.min_step = check_positive(min_step, "min_step")
        if self.min_step > self.max_step:
            raise ValueError(f"`min_step` ({min_step}) must not exceed `max_step` ({max_step}).")
        self.loop = engine.check_loop(loop)
        #: steps per while-loop iteration
        self.chunk = engine.WHILE_CHUNK

    def get_config(self):
        config = super().get_config()
        config.update(
            steps=self.steps,
            init_epsilon=self.init_epsilon,
            gamma=self.gamma,
            max_step=self.max_step,
            min_step=self.min_step,
            loop=self.loop,
        )
        if self.quantize is not None:
            config["quantize"] = self.quantize
        if self.schedule != "robustkit":
            config["schedule"] = self.schedule
        return config

    @classmethod
    def release(cls, **overrides):
        """The NAMID evaluation's DDN (see above), with ``overrides`` on top.

        >>> atk = DDN.release()
        >>> atk.steps, atk.quantize, atk.schedule, atk.init_epsilon, atk.gamma
        (20, 16, 'advertorch', 1.0, 0.05)
        """
        settings = dict(steps=20, init_epsilon=1.0, gamma=0.05, quantize=16, schedule="advertorch")
        return cls(**{**settings, **overrides})

    def quantized(self, x_adv):
        """``x_adv`` rounded to ``quantize`` evenly spaced levels of the box (as is if None).

        >>> import numpy as np
        >>> DDN(quantize=16).quantized(np.array([0.0, 0.04, 0.5, 1.0], "float32")).numpy()
        array([0.        , 0.06666667, 0.53333336, 1.        ], dtype=float32)
        """
        if self.quantize is None:
            return x_adv
        lo, hi = self.bounds
        levels = float(self.quantize - 1)
        unit = (tf.convert_to_tensor(x_adv, tf.float32) - lo) / (hi - lo)
        return lo + (hi - lo) * tf.round(unit * levels) / levels

    def _step_size(self, i):
        """Cosine annealing from ``max_step`` (i = 0) towards ``min_step``; with
        ``schedule="advertorch"`` the value at ``i + 1``."""
        i = tf.cast(i, tf.float32)
        if self.schedule == "advertorch":
            i = i + 1.0
        cos = (1.0 + tf.cos(math.pi * i / self.steps)) / 2.0
        return self.min_step + (self.max_step - self.min_step) * cos

    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe DDN: returns the smallest successful ``x_adv`` per example."""
        y = tf.cast(y, tf.int64)
        batch = tf.shape(x)[0]
        shape = engine.per_example_shape(x)
        lo, hi = self.bounds
        tracker = engine.Tracker.min_norm()

        def l2(t):
            return threat_lib.norm_of(t, "l2")

        # the largest L2 distance reachable inside the box
        worst = l2(tf.maximum(x - lo, hi - x))

        def track(best, delta, logits):
            fooled = tf.not_equal(tf.argmax(logits, -1), y)
            return fooled, tracker.update(best, x + delta, fooled, l2(delta))

        def body(k, state):
            delta, epsilon, best = state
            logits, _, grad = loss_and_grad(model_fn, x + delta, y, "ce")
            fooled, best = track(best, delta, logits)
            g_norm = tf.reshape(l2(grad), shape)
            delta = delta + self._step_size(k) * grad / tf.maximum(g_norm, 1e-12)
            epsilon = epsilon * tf.where(fooled, 1.0 - self.gamma, 1.0 + self.gamma)
            if self.schedule == "robustkit":
                epsilon = tf.minimum(epsilon, worst)
            d_norm = tf.reshape(l2(delta), shape)
            delta = delta * tf.reshape(epsilon, shape) / tf.maximum(d_norm, 1e-12)
            delta = tf.clip_by_value(self.quantized(x + delta), lo, hi) - x
            return delta, epsilon, best

        state = (
            tf.zeros_like(x),
            tf.fill([batch], tf.constant(self.init_epsilon, tf.float32)),
            tracker.init(x),
        )
        delta, _, best = engine.run_loop(
            body,
            state,
            self.steps,
            unrolled=engine.unrolled(self.loop, self.steps),
            chunk=self.chunk,
        )
        _, best = track(best, delta, model_fn(x + delta))
        x_adv = tf.clip_by_value(tracker.result(best), lo, hi)
        return self._finish(x, x_adv)
