"""Carlini–Wagner L2 attack (Carlini & Wagner, IEEE S&P 2017).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.CW(steps=20, binary_search_steps=2)(model, x, y)
>>> x_adv.shape, bool(x_adv.min() >= 0 and x_adv.max() <= 1)
((4, 8, 8, 1), True)
"""

import math

import keras
import tensorflow as tf

from robustkit._validation import check_int, check_non_negative, check_positive
from robustkit.attacks.base import Attack

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8


def _l2(t):
    """Per-example L2 norm of a batch, shape (B,)."""
    flat = tf.reshape(t, [tf.shape(t)[0], -1])
    return tf.sqrt(tf.reduce_sum(tf.square(flat), axis=1))


def _margins(logits, y):
    """``(z_y, max_{j != y} z_j)`` per example."""
    onehot = tf.one_hot(y, tf.shape(logits)[-1], dtype=logits.dtype)
    true = tf.reduce_sum(onehot * logits, axis=-1)
    other = tf.reduce_max(logits - onehot * 1e9, axis=-1)
    return true, other


def select_within(x, x_adv, eps):
    """Returns ``x_adv`` where its L2 distance to ``x`` is <= ``eps``, else ``x``.

    Used by the minimal-norm attacks (CW, DDN) for their optional ``eps``: an
    example whose smallest successful perturbation is larger than ``eps`` counts
    as not fooled.
    """
    if eps is None:
        return x_adv
    keep = _l2(x_adv - x) <= eps * (1 + 1e-6)
    return tf.where(tf.reshape(keep, [-1] + [1] * (x.shape.rank - 1)), x_adv, x)


@keras.saving.register_keras_serializable(package="robustkit")
class CW(Attack):
    """Carlini–Wagner L2 attack: the smallest L2 perturbation that fools the model.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.CW()              # 9 x 1000 Adam steps, lr 0.01, c0 1e-3
    >>> atk.binary_search_steps, atk.lr, atk.initial_const
    (9, 0.01, 0.001)
    >>> # x_adv = atk(model, x, y); CW(eps=2.0) also returns x where ||x_adv - x|| > 2

    Minimises ``||x' - x||_2^2 + c * max(z_y - max_{j != y} z_j + kappa, 0)``
    over ``x' = (tanh(w) + 1) / 2`` (the tanh box keeps ``x'`` in [0, 1]) with
    Adam, and binary-searches the constant ``c`` per example: ``c`` is
    multiplied by 10 until an adversarial example is found, then bisected.
    Reference: N. Carlini, D. Wagner, "Towards Evaluating the Robustness of
    Neural Networks", IEEE S&P 2017 (https://arxiv.org/abs/1608.04644).

    Args:
        steps: Adam steps per binary-search step (default 1000, the cleverhans
            default; the paper uses up to 10,000 with early abort).
        lr: Adam learning rate (default 0.01, the paper's).
        initial_const: initial ``c`` (default 1e-3, the paper's).
        binary_search_steps: search steps over ``c`` (default 9, the paper's).
        confidence: margin ``kappa`` (default 0): an example counts as fooled
            when ``max_{j != y} z_j > z_y + kappa``.
        abort_early: stop a search step when the total loss has not decreased
            by 0.01 % over the last ``steps / 10`` steps (default True, the paper's).
        eps: optional L2 radius: an example whose smallest perturbation found is
            larger than ``eps`` counts as not fooled (its clean input is returned).
        batch_size, jit_compile, seed: see :class:`~robustkit.attacks.Attack`.

    Returns, per example, the successful point with the smallest L2 distance
    found over all steps and search steps, and the clean input where none was
    found. Each search step's optimisation is one ``tf.while_loop``, nested in
    an outer ``tf.while_loop`` over the search steps (one compiled function).
    """

    def __init__(
        self,
        steps=1000,
        lr=0.01,
        initial_const=1e-3,
        binary_search_steps=9,
        confidence=0.0,
        abort_early=True,
        eps=None,
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.steps = check_int(steps, "steps")
        self.lr = check_positive(lr, "lr")
        self.initial_const = check_positive(initial_const, "initial_const")
        self.binary_search_steps = check_int(binary_search_steps, "binary_search_steps")
        self.confidence = check_non_negative(confidence, "confidence")
        self.abort_early = bool(abort_early)
        self.eps = None if eps is None else check_positive(eps, "eps")

    def get_config(self):
        config = super().get_config()
        config.update(
            steps=self.steps,
            lr=self.lr,
            initial_const=self.initial_const,
            binary_search_steps=self.binary_search_steps,
            confidence=self.confidence,
            abort_early=self.abort_early,
            eps=self.eps,
        )
        return config

    # ----------------------------------------------------------------- core
    def perturb(self, model_fn, x, y):
        """Graph-safe CW-L2: returns the smallest successful ``x_adv`` per example."""
        y = tf.cast(y, tf.int64)
        batch = tf.shape(x)[0]
        w0 = tf.atanh(tf.clip_by_value((2.0 * x - 1.0) * 0.999999, -1.0, 1.0))
        x_rec = (tf.tanh(w0) + 1.0) / 2.0
        best_x = x
        best_norm = tf.fill([batch], tf.constant(math.inf, tf.float32))
        const = tf.fill([batch], tf.constant(self.initial_const, tf.float32))
        lower = tf.zeros([batch])
        upper = tf.fill([batch], tf.constant(math.inf, tf.float32))

        def search_step(s, const, lower, upper, best_x, best_norm):
            found, best_x, best_norm = self._optimise(
                model_fn, x, y, w0, x_rec, const, best_x, best_norm
            )
            upper = tf.where(found, tf.minimum(upper, const), upper)
            lower = tf.where(found, lower, tf.maximum(lower, const))
            const = tf.where(tf.math.is_inf(upper), const * 10.0, (lower + upper) / 2.0)
            return s + 1, const, lower, upper, best_x, best_norm

        # The search steps are an outer tf.while_loop: the model is traced once.
        state = tf.while_loop(
            lambda s, *rest: s < self.binary_search_steps,
            search_step,
            (tf.constant(0), const, lower, upper, best_x, best_norm),
        )
        best_x = state[4]
        return tf.stop_gradient(select_within(x, best_x, self.eps))

    def _optimise(self, model_fn, x, y, w0, x_rec, const, best_x, best_norm):
        """One search step: ``steps`` Adam steps at fixed ``const`` (one while loop)."""
        mask_shape = [-1] + [1] * (x.shape.rank - 1)
        check_every = max(1, math.ceil(self.steps / 10))
        kappa = self.confidence
        lr = self.lr

        def body(i, delta, m, v, prev_loss, stop, found, bx, bn):
            with tf.GradientTape(watch_accessed_variables=False) as tape:
                tape.watch(delta)
                x_adv = (tf.tanh(w0 + delta) + 1.0) / 2.0
                logits = model_fn(x_adv)
                true, other = _margins(logits, y)
                hinge = tf.maximum(true - other + kappa, 0.0)
                sq = tf.reduce_sum(tf.reshape(tf.square(x_adv - x_rec), [tf.shape(x)[0], -1]), 1)
                loss = tf.reduce_sum(sq + const * hinge)
            grad = tape.gradient(loss, delta)
            # book-keeping at the current point
            fooled = other > true + kappa
            norm = _l2(x_adv - x)
            better = tf.logical_and(fooled, norm < bn)
            bx = tf.where(tf.reshape(better, mask_shape), x_adv, bx)
            bn = tf.where(better, norm, bn)
            found = tf.logical_or(found, fooled)
            # Adam step
            t = tf.cast(i + 1, tf.float32)
            m = _BETA1 * m + (1 - _BETA1) * grad
            v = _BETA2 * v + (1 - _BETA2) * tf.square(grad)
            m_hat = m / (1 - tf.pow(_BETA1, t))
            v_hat = v / (1 - tf.pow(_BETA2, t))
            delta = delta - lr * m_hat / (tf.sqrt(v_hat) + _ADAM_EPS)
            # abort early: every tenth of the steps, require 0.01 % progress
            if self.abort_early:
                at_check = tf.equal(i % check_every, 0)
                stalled = tf.logical_and(at_check, loss > 0.9999 * prev_loss)
                stop = tf.logical_or(stop, stalled)
                prev_loss = tf.where(at_check, loss, prev_loss)
            return i + 1, delta, m, v, prev_loss, stop, found, bx, bn

        zeros = tf.zeros_like(x)
        state = (
            tf.constant(0),
            zeros,
            zeros,
            zeros,
            tf.constant(math.inf, tf.float32),
            tf.constant(False),
            tf.zeros([tf.shape(x)[0]], tf.bool),
            best_x,
            best_norm,
        )

        def cond(i, delta, m, v, prev_loss, stop, *rest):
            return tf.logical_and(i < self.steps, tf.logical_not(stop))

        state = tf.while_loop(cond, body, state)
        delta = state[1]
        found, bx, bn = state[6:]
        # the last update is evaluated too
        x_adv = (tf.tanh(w0 + delta) + 1.0) / 2.0
        true, other = _margins(model_fn(x_adv), y)
        fooled = other > true + kappa
        norm = _l2(x_adv - x)
        better = tf.logical_and(fooled, norm < bn)
        bx = tf.where(tf.reshape(better, mask_shape), x_adv, bx)
        bn = tf.where(better, norm, bn)
        return tf.logical_or(found, fooled), bx, bn
