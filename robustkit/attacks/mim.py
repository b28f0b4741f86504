"""Momentum iterative FGSM (MIM, Dong et al. 2018) and TI-DIM (MIM with diverse
inputs, Xie et al. 2019, and translation-invariant gradients, Dong et al. 2019).

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> y = np.array([0, 1, 2, 3])
>>> x_adv = rk.attacks.MIM(eps=0.1, steps=5)(model, x, y)
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6)
True
"""

import math

import keras
import numpy as np
import tensorflow as tf

from robustkit import threat as threat_lib
from robustkit._validation import check_int, check_non_negative, check_positive
from robustkit.attacks.base import Attack, loss_and_grad

_LOOPS = ("auto", "unrolled", "while")
#: above this many steps, ``loop="auto"`` uses ``tf.while_loop``
MAX_UNROLLED_STEPS = 4


@keras.saving.register_keras_serializable(package="robustkit")
class MIM(Attack):
    """Momentum iterative fast gradient sign method.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.MIM(eps=0.3, steps=10)
    >>> round(atk.step_size, 6), atk.decay
    (0.03, 1.0)

    ``g_{t+1} = decay * g_t + grad / ||grad||_1``, then a steepest-ascent step of
    the threat model along ``g_{t+1}`` (``sign`` under L-inf, ``g / ||g||_2``
    under L2) and a projection onto the eps-ball and [0, 1].
    Reference: Y. Dong, F. Liao, T. Pang, H. Su, J. Zhu, X. Hu, J. Li, "Boosting
    Adversarial Attacks with Momentum", CVPR 2018 (https://arxiv.org/abs/1710.06081).

    Args:
        eps: radius (default 8/255).
        steps: iterations (default 10, the paper's).
        step_size: step per iteration; ``None`` means ``eps / steps`` (the paper's).
        decay: momentum decay ``mu`` (default 1.0, the paper's).
        norm: ``"linf"`` (default) or ``"l2"``.
        loop: ``"unrolled"``, ``"while"`` or ``"auto"`` (unrolled up to 4 steps;
            tracing an unrolled Keras model call costs ~0.5 s per step, so longer
            loops use ``tf.while_loop``).
        batch_size, jit_compile, seed: see :class:`~robustkit.attacks.Attack`.

    The L1 normalisation of the gradient is per example (cleverhans 4.0 does the
    same). Evaluation calls return, per example, the most adversarial iterate:
    a misclassified one if any (highest loss among those), else the
    highest-loss one; the clean input is a candidate.
    """

    def __init__(
        self,
        eps=8 / 255,
        steps=10,
        step_size=None,
        decay=1.0,
        norm="linf",
        loop="auto",
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat(norm, eps)
        self.eps = self.threat.eps
        self.norm = self.threat.norm
        self.steps = check_int(steps, "steps")
        self.step_size = (
            self.eps / self.steps if step_size is None else check_positive(step_size, "step_size")
        )
        self.decay = check_non_negative(decay, "decay")
        if loop not in _LOOPS:
            raise ValueError(f"Unknown `loop` {loop!r}; expected one of {list(_LOOPS)}.")
        self.loop = loop

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            steps=self.steps,
            step_size=self.step_size,
            decay=self.decay,
            norm=self.norm,
            loop=self.loop,
        )
        return config

    # ------------------------------------------------------------ hooks
    def _gradient(self, model_fn, x_adv, y):
        """Logits at ``x_adv``, per-example loss and the gradient to accumulate."""
        return loss_and_grad(model_fn, x_adv, y, "ce")

    def _needs_separate_eval(self):
        return False

    # ------------------------------------------------------------- core
    def perturb(self, model_fn, x, y, eps=None, track_best=True):
        """Graph-safe MIM; ``eps`` overrides the radius (scalar or per example)."""
        eps = self.eps if eps is None else eps
        step = tf.convert_to_tensor(eps, tf.float32) * (self.step_size / self.eps)
        y = tf.cast(y, tf.int64)
        shape = [-1] + [1] * (x.shape.rank - 1)
        separate = self._needs_separate_eval()

        def evaluate(x_cur):
            logits = model_fn(x_cur)
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.int32), logits=logits
            )
            return tf.not_equal(tf.argmax(logits, -1), y), loss

        def merge(best, x_cur, fooled, loss):
            bx, bf, bl = best
            better = tf.logical_or(
                tf.logical_and(fooled, tf.logical_not(bf)),
                tf.logical_and(tf.equal(fooled, bf), loss > bl),
            )
            return (
                tf.where(tf.reshape(better, shape), x_cur, bx),
                tf.where(better, fooled, bf),
                tf.where(better, loss, bl),
            )

        def body(i, x_adv, g, best):
            logits, loss, grad = self._gradient(model_fn, x_adv, y)
            if track_best:
                if separate:
                    fooled, loss = evaluate(x_adv)
                else:
                    fooled = tf.not_equal(tf.argmax(logits, -1), y)
                best = merge(best, x_adv, fooled, loss)
            l1 = tf.reduce_sum(tf.abs(tf.reshape(grad, [tf.shape(grad)[0], -1])), axis=1)
            g = self.decay * g + grad / tf.maximum(tf.reshape(l1, shape), 1e-12)
            x_adv = self.threat.project(self.threat.step(x_adv, g, step), x, eps)
            return i + 1, x_adv, g, best

        batch = tf.shape(x)[0]
        best = (x, tf.zeros([batch], tf.bool), tf.fill([batch], -math.inf))
        state = (tf.constant(0), x, tf.zeros_like(x), best)
        unrolled = self.loop == "unrolled" or (
            self.loop == "auto" and self.steps <= MAX_UNROLLED_STEPS
        )
        if unrolled:
            for _ in range(self.steps):
                state = body(*state)
        else:
            state = tf.while_loop(lambda i, *rest: i < self.steps, body, state)
        _, x_adv, _, best = state
        if not track_best:
            return tf.stop_gradient(x_adv)
        best = merge(best, x_adv, *evaluate(x_adv))
        return tf.stop_gradient(best[0])


def gaussian_kernel(size, sigma):
    """A normalised ``size x size`` Gaussian kernel (numpy, float32).

    Example:

    >>> k = gaussian_kernel(3, 1.0)
    >>> k.shape, round(float(k.sum()), 6)
    ((3, 3), 1.0)
    """
    ax = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
    g = np.exp(-(ax**2) / (2.0 * sigma**2))
    k = np.outer(g, g)
    return (k / k.sum()).astype("float32")


def scaled_kernel(kernel_size, sigma, height, width):
    """The TI kernel for an image: ``(size, sigma)`` after scaling.

    Rule: the size is capped at the largest odd number <= ``min(H, W) / 2``
    (at least 1), and ``sigma`` shrinks in the same ratio. CIFAR-10 (32 px)
    keeps 15x15, sigma 3; MNIST (28 px) gets 13x13, sigma 2.6; 8x8 digits get
    3x3, sigma 0.6.

    Example:

    >>> scaled_kernel(15, 3.0, 28, 28)
    (13, 2.6)
    """
    cap = int(min(height, width) // 2)
    cap = cap if cap % 2 == 1 else cap - 1
    size = max(1, min(kernel_size, cap))
    return size, sigma * size / kernel_size


@keras.saving.register_keras_serializable(package="robustkit")
class TIDIM(MIM):
    """TI-DIM: momentum iterative FGSM with diverse inputs and translation-invariant
    gradient smoothing.

    Example:

    >>> import robustkit as rk
    >>> atk = rk.attacks.TIDIM()           # the NAMID evaluation's TI-DIM
    >>> atk.steps, atk.step_size, atk.p, atk.kernel_size, atk.sigma
    (40, 0.007, 0.5, 15, 3.0)

    Each step (i) with probability ``p`` per example replaces the input by a
    random resize-and-pad of it (diverse inputs: one random size ``r`` per step
    in ``[ceil(resize_rate * H), H]``, nearest-neighbour resize, zero padding at a
    random offset back to ``H x W``), (ii) convolves the input gradient with a
    Gaussian kernel per channel (translation invariance), and (iii) takes the
    MIM momentum step.
    References: C. Xie et al., "Improving Transferability of Adversarial Examples
    with Input Diversity", CVPR 2019 (https://arxiv.org/abs/1803.06978);
    Y. Dong, T. Pang, H. Su, J. Zhu, "Evading Defenses to Transferable
    Adversarial Examples by Translation-Invariant Attacks", CVPR 2019
    (https://arxiv.org/abs/1904.02884); MIM as in :class:`MIM`.

    Args:
        eps: radius (default 8/255).
        steps: iterations (default 40, the NAMID evaluation).
        step_size: step per iteration (default 0.007, the NAMID evaluation).
        decay: momentum decay (default 1.0).
        p: probability of the diverse-input transform (default 0.5, Xie et al.).
        resize_rate: smallest resize as a fraction of the image size (default 0.9).
        kernel_size, sigma: Gaussian kernel (default 15x15, sigma 3 pixels, the
            NAMID evaluation). Scaled for small images: the size is capped at the
            largest odd number <= min(H, W) / 2 and sigma shrinks in the same
            ratio (see :func:`scaled_kernel`). Dong et al.'s released code
            parameterises the kernel by its span in standard deviations
            (``nsig=3``); here ``sigma`` is in pixels.
        norm: ``"linf"`` (default) or ``"l2"``.
        loop, batch_size, jit_compile, seed: see :class:`MIM`.

    Evaluation calls return the most adversarial iterate judged on the
    untransformed image (one extra forward pass per step).
    """

    def __init__(
        self,
        eps=8 / 255,
        steps=40,
        step_size=0.007,
        decay=1.0,
        p=0.5,
        resize_rate=0.9,
        kernel_size=15,
        sigma=3.0,
        norm="linf",
        loop="auto",
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(
            eps=eps,
            steps=steps,
            step_size=step_size,
            decay=decay,
            norm=norm,
            loop=loop,
            batch_size=batch_size,
            jit_compile=jit_compile,
            seed=seed,
        )
        p = check_non_negative(p, "p")
        if p > 1:
            raise ValueError(f"`p` must be in [0, 1]; got {p!r}.")
        self.p = p
        self.resize_rate = check_positive(resize_rate, "resize_rate")
        if self.resize_rate > 1:
            raise ValueError(f"`resize_rate` must be in (0, 1]; got {resize_rate!r}.")
        self.kernel_size = check_int(kernel_size, "kernel_size")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"`kernel_size` must be odd; got {kernel_size}.")
        self.sigma = check_positive(sigma, "sigma")

    def get_config(self):
        config = super().get_config()
        config.update(
            p=self.p,
            resize_rate=self.resize_rate,
            kernel_size=self.kernel_size,
            sigma=self.sigma,
        )
        return config

    def _needs_separate_eval(self):
        return True

    def _diverse(self, x):
        """Random resize-and-pad, applied per example with probability ``p``."""
        h, w = int(x.shape[1]), int(x.shape[2])
        low = max(1, int(math.ceil(self.resize_rate * min(h, w))))
        size = tf.random.uniform([], low, min(h, w) + 1, dtype=tf.int32)
        resized = tf.image.resize(x, tf.stack([size, size]), method="nearest")
        top = tf.random.uniform([], 0, h - size + 1, dtype=tf.int32)
        left = tf.random.uniform([], 0, w - size + 1, dtype=tf.int32)
        padded = tf.pad(resized, [[0, 0], [top, h - size - top], [left, w - size - left], [0, 0]])
        padded = tf.ensure_shape(padded, x.shape)
        apply = tf.random.uniform([tf.shape(x)[0], 1, 1, 1]) < self.p
        return tf.where(apply, padded, x)

    def _smooth(self, grad):
        h, w, c = int(grad.shape[1]), int(grad.shape[2]), int(grad.shape[3])
        size, sigma = scaled_kernel(self.kernel_size, self.sigma, h, w)
        if size == 1:
            return grad
        k = tf.constant(gaussian_kernel(size, sigma))[:, :, None, None]
        k = tf.tile(k, [1, 1, c, 1])
        return tf.nn.depthwise_conv2d(grad, k, strides=[1, 1, 1, 1], padding="SAME")

    def _gradient(self, model_fn, x_adv, y):
        with tf.GradientTape(watch_accessed_variables=False) as tape:
            tape.watch(x_adv)
            logits = model_fn(self._diverse(x_adv))
            loss = tf.nn.sparse_softmax_cross_entropy_with_logits(
                labels=tf.cast(y, tf.int32), logits=logits
            )
            total = tf.reduce_sum(loss)
        grad = tape.gradient(total, x_adv)
        return logits, loss, self._smooth(grad)
