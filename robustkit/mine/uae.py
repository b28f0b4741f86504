"""Unsupervised adversarial examples (UAEs) as data augmentation for autoencoders.

Hsu et al., "Adversarial examples can be effective data augmentation for
unsupervised machine learning", AAAI 2022: generate one UAE per training image
(MinMax with the autoencoder reconstruction criterion: the UAE keeps the
reconstruction loss of ``x`` while having the lowest per-sample MI with ``x``),
append the UAEs to the training set and retrain; the test reconstruction error
drops. The L2-UAE baseline replaces the MI by the L2 distance.

Example:

>>> import numpy as np, robustkit as rk
>>> from robustkit.mine import uae
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> ae = rk.models.dense_autoencoder((8, 8, 1), code=8)
>>> atk = rk.mine.MinMax(criterion="unsupervised", steps=2, hidden=8,
...                      mine_mode="projection")
>>> x_uae = uae.augment(ae, x, attack=atk, verbose=0)
>>> x_uae.shape
(4, 8, 8, 1)
>>> x_all, _ = uae.augmented_set(x, x_uae)
>>> len(x_all)
8
"""

import keras
import numpy as np
import tensorflow as tf

from robustkit._validation import check_images, check_int, check_non_negative, check_positive
from robustkit.attacks import engine
from robustkit.attacks.base import Attack
from robustkit.mine.attacks import MinMax
from robustkit.mine.criteria import unsupervised_criterion
from robustkit.models.adapter import as_logits_fn


def _check_unsupervised(attack):
    if not isinstance(attack, Attack):
        raise ValueError(f"`attack` must be a robustkit Attack; got {type(attack).__name__}.")
    if getattr(attack, "uses_labels", True):
        raise ValueError(
            "`attack` must be unsupervised (e.g. MinMax(criterion='unsupervised') or L2UAE())."
        )
    return attack


def augment(autoencoder, x_train, attack=None, batch_size=None, verbose=1):
    """One UAE per training image, batched, with a progress bar.

    Args:
        autoencoder: the trained autoencoder (output = reconstruction).
        x_train: images in [0, 1], (N, H, W, C).
        attack: an unsupervised attack; default ``MinMax(criterion="unsupervised")``
            (paper settings: eps 0.3, alpha 0.01, beta 0.1, MINE lr 1.5e-5).
        batch_size: images per attack call (default: the attack's).
        verbose: 1 shows a ``keras.utils.Progbar``.

    Returns the UAEs (numpy, same shape as ``x_train``). Images for which no
    iterate kept the reconstruction loss come back as the iterate with the
    smallest criterion value (the paper's code does the same).
    """
    x_train = check_images(np.asarray(x_train, dtype=np.float32), "x_train")
    attack = _check_unsupervised(MinMax(criterion="unsupervised") if attack is None else attack)
    bs = attack.batch_size if batch_size is None else check_int(batch_size, "batch_size")
    n = len(x_train)
    out = np.empty_like(x_train)
    bar = keras.utils.Progbar(n, unit_name="image") if verbose else None
    for s in range(0, n, bs):
        out[s : s + bs] = attack(autoencoder, x_train[s : s + bs])
        if bar is not None:
            bar.update(min(n, s + bs))
    return out


def augmented_set(x_train, x_uae, target="self"):
    """Original + UAE inputs and reconstruction targets (the training set doubles).

    ``target="self"`` (default): each UAE is a new sample the autoencoder learns to
    reconstruct; ``"original"``: a UAE's target is its clean image (denoising).
    """
    x_train = np.asarray(x_train, dtype=np.float32)
    x_uae = check_images(np.asarray(x_uae, dtype=np.float32), "x_uae")
    if x_uae.shape != x_train.shape:
        raise ValueError(
            f"`x_uae` must have the shape of `x_train` {x_train.shape}; got {x_uae.shape}."
        )
    if target not in ("self", "original"):
        raise ValueError(f"Unknown `target` {target!r}; expected 'self' or 'original'.")
    inputs = np.concatenate([x_train, x_uae])
    targets = np.concatenate([x_train, x_uae if target == "self" else x_train])
    return inputs, targets


def retrain(
    autoencoder, x_train, x_uae, epochs=20, batch_size=100, target="self", verbose=0, **fit_kwargs
):
    """Retrains ``autoencoder`` on original + UAE data (one call); returns the History.

    The paper retrains the trained autoencoder with the UAEs appended (conv AE:
    20 epochs, batch 100).
    """
    x_train = check_images(np.asarray(x_train, dtype=np.float32), "x_train")
    epochs = check_int(epochs, "epochs")
    batch_size = check_int(batch_size, "batch_size")
    inputs, targets = augmented_set(x_train, x_uae, target)
    return autoencoder.fit(
        inputs,
        targets,
        epochs=epochs,
        batch_size=batch_size,
        shuffle=True,
        verbose=verbose,
        **fit_kwargs,
    )


def reconstruction_error(autoencoder, x, batch_size=500):
    """Mean squared reconstruction error per pixel over ``x`` (the paper's metric)."""
    x = check_images(np.asarray(x, dtype=np.float32), "x")
    recon = autoencoder.predict(x, batch_size=batch_size, verbose=0)
    return float(np.mean(np.square(x - recon)))


@keras.saving.register_keras_serializable(package="robustkit")
class L2UAE(Attack):
    """L2-UAE baseline: the MinMax scheme with the L2 distance instead of the MI.

    Maximises the dissimilarity ``||delta||_2^2`` subject to the autoencoder
    reconstruction criterion ``f(x + delta) = 0`` inside an L2 ball of radius
    ``eps`` (and [0, 1]), starting from Gaussian noise of std ``sigma``, with the
    same primal-dual updates as :class:`robustkit.mine.MinMax`
    (``delta <- delta - alpha (c grad f - grad ||delta||^2)``,
    ``c <- max(0, (1 - beta t^-1/4) c + beta f)``). Per example the ``f = 0``
    iterate farthest from ``x`` is kept (else the one with the smallest ``f``): the
    engine's :meth:`~robustkit.attacks.engine.Tracker.by_score` ordering on the distance,
    the loop through :func:`~robustkit.attacks.engine.run_loop`, the ball and the start
    from :class:`robustkit.threat.L2`.

    Example:

    >>> atk = L2UAE(eps=2.0, sigma=0.01)
    >>> atk.uses_labels
    False

    Args:
        eps: L2 radius (2.0, MNIST).
        sigma: std of the Gaussian start (0.01; robustkit's choice: the seed's sigma
            columns belong to its Gaussian-augmentation baseline, not to the L2-UAE).
        steps, alpha, beta, c0: as MinMax (100, 0.01, 0.1, 0).
    """

    uses_labels = False
    supported_norms = ("l2",)

    def __init__(
        self,
        eps=2.0,
        sigma=0.01,
        steps=100,
        alpha=0.01,
        beta=0.1,
        c0=0.0,
        batch_size=256,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat("l2", eps)
        self.eps = self.threat.eps
        self.sigma = check_non_negative(sigma, "sigma")
        self.steps = check_int(steps, "steps")
        self.alpha = check_positive(alpha, "alpha")
        self.beta = check_positive(beta, "beta")
        self.c0 = check_non_negative(c0, "c0")

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            sigma=self.sigma,
            steps=self.steps,
            alpha=self.alpha,
            beta=self.beta,
            c0=self.c0,
        )
        return config

    def __call__(self, model, x, y=None, verbose=0):
        """UAEs for ``x`` (numpy); ``model`` is the autoencoder, ``y`` is ignored."""
        fn = as_logits_fn(model)
        x_np = check_images(np.asarray(x, dtype=np.float32), "x")
        if len(x_np) == 0:
            return x_np
        x_t = tf.convert_to_tensor(x_np)
        probe = fn(x_t[:1])
        if tuple(probe.shape[1:]) != tuple(x_np.shape[1:]):
            raise ValueError("`model` must be an autoencoder whose output has the input's shape.")
        compiled = self._get_compiled(model, fn, x_t)
        zeros = tf.zeros([len(x_np)], tf.int64)
        bar = keras.utils.Progbar(len(x_np), unit_name="example") if verbose else None
        outs = []
        for s in range(0, len(x_np), self.batch_size):
            outs.append(compiled(x_t[s : s + self.batch_size], zeros[s : s + self.batch_size]))
            if bar is not None:
                bar.add(int(outs[-1].shape[0]))
        return np.concatenate([o.numpy() for o in outs])

    def perturb(self, model_fn, x, y):
        crit = unsupervised_criterion()
        tracker = engine.Tracker.by_score(maximize=True)  # the farthest f = 0 iterate
        clean = tf.stop_gradient(model_fn(x))
        b = tf.shape(x)[0]
        shape = engine.per_example_shape(x)
        delta = (
            self.threat.project(x + self.sigma * tf.random.normal(tf.shape(x), seed=self.seed), x)
            - x
        )
        c = tf.fill([b], tf.constant(self.c0, tf.float32))

        def evaluate(delta):
            x_adv = x + delta
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                f, ok = crit(x, model_fn(x_adv), None, clean)
                total = tf.reduce_sum(f)
            return f, ok, tape.gradient(total, x_adv)

        def track(best, delta, f, ok):
            dist = tf.reduce_sum(tf.square(tf.reshape(delta, [b, -1])), axis=1)
            return tracker.update(best, x + delta, ok, dist, f)

        def body(k, state):
            t = tf.cast(k, tf.float32) + 1.0
            delta, c, best = state
            f, ok, g_f = evaluate(delta)
            best = track(best, delta, f, ok)
            gamma = tf.pow(tf.maximum(t - 1.0, 1.0), -0.25)
            c = tf.where(t > 1.0, tf.maximum(0.0, (1.0 - self.beta * gamma) * c + self.beta * f), c)
            delta = delta - self.alpha * (tf.reshape(c, shape) * g_f - 2.0 * delta)
            delta = self.threat.project(x + delta, x) - x
            return delta, c, best

        delta, c, best = engine.run_loop(
            body,
            (delta, c, tracker.init(x)),
            self.steps,
            unrolled=engine.unrolled("auto", self.steps, "eval"),
            chunk=engine.WHILE_CHUNK,
        )
        f, ok, _ = evaluate(delta)
        return tracker.result(track(best, delta, f, ok))


__all__ = ["L2UAE", "augment", "augmented_set", "reconstruction_error", "retrain"]
