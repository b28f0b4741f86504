"""AutoAttack (Croce & Hein, ICML 2020): an ensemble of parameter-free attacks.

Example:

>>> import numpy as np, keras, robustkit as rk
>>> model = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
...                           keras.layers.Dense(10)])
>>> x = np.random.default_rng(0).uniform(size=(4, 8, 8, 1)).astype("float32")
>>> aa = rk.attacks.AutoAttack(eps=0.1, norm="linf", steps=5, n_target_classes=2, n_queries=20)
>>> x_adv = aa(model, x, np.array([0, 1, 2, 3]))
>>> bool(np.abs(x_adv - x).max() <= 0.1 + 1e-6), [h["attack"] for h in aa.history]
(True, ['clean', 'apgd-ce', 'apgd-t', 'fab-t', 'square'])

Reference: F. Croce and M. Hein, "Reliable evaluation of adversarial robustness
with an ensemble of diverse parameter-free attacks", ICML 2020.
"""

import time

import keras
import numpy as np
import tensorflow as tf

from robustkit import _log
from robustkit._validation import check_choice, check_images, check_int, check_labels
from robustkit.attacks import engine
from robustkit.attacks.apgd import APGD, APGDT
from robustkit.attacks.base import Attack, as_logits_fn
from robustkit.attacks.fab import FAB
from robustkit.attacks.square import Square

#: the attacks each version runs, in order
VERSIONS = {
    "standard": ("apgd-ce", "apgd-t", "fab-t", "square"),
    "rand": ("apgd-ce", "apgd-dlr"),
}
ATTACK_NAMES = ("apgd-ce", "apgd-dlr", "apgd-t", "fab-t", "square")
#: the attacks that run under L1 (FAB and Square have no L1 version here)
L1_ATTACKS = ("apgd-ce", "apgd-dlr", "apgd-t")


@keras.saving.register_keras_serializable(package="robustkit")
class AutoAttack(Attack):
    """AutoAttack: APGD-CE, APGD-T, FAB-T and Square, each on the still-robust examples.

    ``version="standard"`` (the paper's standard setting): APGD-CE (100 steps,
    no restarts), APGD-T (targeted DLR, 9 target classes, 100 steps each), FAB-T
    (9 target classes, 100 steps each) and Square (5,000 queries, ``p_init``
    0.8). ``version="rand"`` (for randomised defences): APGD-CE and APGD-DLR
    with Expectation over Transformation over 20 draws per step.

    Every attack runs only on the examples no earlier attack has fooled, and the
    result per example is the first successful adversarial example (all within
    the eps-ball and [0, 1]); examples never fooled get APGD-CE's highest-loss
    point. Robust accuracy is the per-example worst case over the ensemble.
    Square runs with its p schedule unrescaled, as in the reference implementation.

    L1: the reference's L1 version adds a larger-eps schedule to APGD and L1 versions of
    FAB-T and Square, which robustkit does not have; ``norm="l1"`` therefore needs
    ``attacks=`` naming only APGD attacks (``"apgd-ce"``, ``"apgd-dlr"``, ``"apgd-t"``,
    run as APGD-L1) and is never ``is_standard``.

    Args:
        eps: radius (MNIST L-inf 0.3, CIFAR L-inf 8/255, CIFAR L2 0.5, CIFAR L1 12).
        norm: ``"linf"``, ``"l2"`` or ``"l1"`` (with ``attacks=``, see above).
        version: ``"standard"`` or ``"rand"``.
        attacks: optional subset/order of ``"apgd-ce"``, ``"apgd-dlr"``,
            ``"apgd-t"``, ``"fab-t"``, ``"square"`` (default: the version's).
        steps, n_target_classes, n_queries, eot_iter: ``None`` means the
            version's value (100, 9, 5000, 20 for "rand" / 1 otherwise); smaller
            numbers give a cheaper, *non-standard* evaluation (``is_standard``
            tells which).
        bounds: the valid input box (default ``(0, 1)``).

    After an eager call ``attack(model, x, y)``, ``history`` lists per attack
    the examples attacked, the robust accuracy after it and its seconds.
    """

    supported_norms = ("linf", "l2", "l1")

    def __init__(
        self,
        eps=8 / 255,
        norm="linf",
        version="standard",
        attacks=None,
        steps=None,
        n_target_classes=None,
        n_queries=None,
        eot_iter=None,
        verbose=False,
        bounds=(0.0, 1.0),
        batch_size=500,
        jit_compile="auto",
        seed=None,
    ):
        super().__init__(batch_size=batch_size, jit_compile=jit_compile, seed=seed)
        self.threat = self._make_threat(norm, eps, bounds)
        self.eps, self.norm = self.threat.eps, self.threat.norm
        self.version = check_choice(version, set(VERSIONS), "version")
        if attacks is None:
            self.attacks = VERSIONS[self.version]
        else:
            if isinstance(attacks, str) or not attacks:
                raise ValueError(f"`attacks` must be a non-empty list of names; got {attacks!r}.")
            self.attacks = tuple(check_choice(a, set(ATTACK_NAMES), "attacks") for a in attacks)
        if self.norm == "l1" and not set(self.attacks) <= set(L1_ATTACKS):
            raise ValueError(
                f"AutoAttack under `norm` 'l1' runs only {list(L1_ATTACKS)} (no L1 FAB or "
                f"Square); pass e.g. attacks=['apgd-ce', 'apgd-t']; got {list(self.attacks)}."
            )
        self.steps = None if steps is None else check_int(steps, "steps")
        self.n_target_classes = (
            None if n_target_classes is None else check_int(n_target_classes, "n_target_classes")
        )
        self.n_queries = None if n_queries is None else check_int(n_queries, "n_queries")
        self.eot_iter = None if eot_iter is None else check_int(eot_iter, "eot_iter")
        self.verbose = bool(verbose)
        self.history = []
        self._sub = {name: self._build(name) for name in self.attacks}

    @property
    def label(self):
        """``"AA"`` (``"AA-rand"``) for the version's published setting only; any other budget
        says so, e.g. ``"AA-40 (non-standard)"`` for ``steps=40``, so that a report never
        shows a reduced run under the standard's name."""
        name = "AA" if self.version == "standard" else "AA-rand"
        if self.is_standard:
            return name
        if self.steps is not None:
            name += f"-{self.steps}"
        return name + " (non-standard)"

    @property
    def components(self):
        """The attacks this AutoAttack runs, by name (``"apgd-ce"``, ...), in order."""
        return dict(self._sub)

    @property
    def is_standard(self):
        """Whether this is the version's published setting (no budget overrides)."""
        return (
            self.norm != "l1"
            and self.attacks == VERSIONS[self.version]
            and self.steps is None
            and self.n_target_classes is None
            and self.n_queries is None
            and self.eot_iter is None
        )

    def _build(self, name):
        steps = 100 if self.steps is None else self.steps
        targets = 9 if self.n_target_classes is None else self.n_target_classes
        eot = (20 if self.version == "rand" else 1) if self.eot_iter is None else self.eot_iter
        common = dict(
            bounds=self.threat.bounds,
            batch_size=self.batch_size,
            jit_compile=self.jit_compile,
            seed=self.seed,
        )
        if name in ("apgd-ce", "apgd-dlr"):
            return APGD(
                eps=self.eps,
                norm=self.norm,
                steps=steps,
                restarts=1,
                loss="ce" if name == "apgd-ce" else "dlr",
                eot_iter=eot,
                loop="while",
                **common,
            )
        if name == "apgd-t":
            return APGDT(
                eps=self.eps,
                norm=self.norm,
                steps=steps,
                restarts=1,
                n_target_classes=targets,
                eot_iter=eot,
                loop="while",
                **common,
            )
        if name == "fab-t":
            return FAB(
                eps=self.eps,
                norm=self.norm,
                steps=steps,
                restarts=1,
                targeted=True,
                n_target_classes=targets,
                **common,
            )
        queries = 5000 if self.n_queries is None else self.n_queries
        return Square(
            eps=self.eps,
            norm=self.norm,
            n_queries=queries,
            p_init=0.8,
            restarts=1,
            rescale_schedule=False,
            **common,
        )

    def get_config(self):
        config = super().get_config()
        config.update(
            eps=self.eps,
            norm=self.norm,
            version=self.version,
            attacks=list(self.attacks),
            steps=self.steps,
            n_target_classes=self.n_target_classes,
            n_queries=self.n_queries,
            eot_iter=self.eot_iter,
            verbose=self.verbose,
        )
        if self.threat.bounds != (0.0, 1.0):
            config["bounds"] = list(self.threat.bounds)
        return config

    def _check_call(self, x, y, num_classes):
        for sub in self._sub.values():
            sub._check_call(x, y, num_classes)

    # --------------------------------------------------------- eager driver
    def __call__(self, model, x, y=None, verbose=None, strategy=None):
        """Runs the attacks one after another on the still-robust examples.

        Same contract as :meth:`Attack.__call__` (``strategy``: each sub-attack's batches are
        split over the local replicas); also fills ``history``. ``verbose`` (default: the
        constructor's) logs one line per attack.
        """
        verbose = self.verbose if verbose is None else verbose
        fn = as_logits_fn(model)
        return_numpy = not tf.is_tensor(x)
        x_np = np.asarray(
            check_images(np.asarray(x) if return_numpy else x.numpy(), "x", bounds=self.bounds),
            dtype="float32",
        )
        n = len(x_np)
        if n == 0:
            return x
        probe = fn(tf.convert_to_tensor(x_np[:1]))
        if probe.shape.rank != 2:
            raise ValueError(
                f"`model` must return logits of shape (batch, classes); got {probe.shape}."
            )
        # Every sub-attack validates x, y (shape, range, labels) on its first call;
        # run the class-count checks up front, before any work.
        self._check_call(tf.convert_to_tensor(x_np[:1]), None, int(probe.shape[-1]))
        if y is None:
            y_np = self._predict_labels(fn, tf.convert_to_tensor(x_np)).numpy()
        else:
            y_np = np.asarray(
                check_labels(y, n=n, num_classes=int(probe.shape[-1]), name="y"), dtype="int64"
            )
        robust = self._correct(fn, x_np, y_np)
        x_adv = x_np.copy()
        self.history = [
            dict(attack="clean", attacked=n, robust_accuracy=float(robust.mean()), seconds=0.0)
        ]
        self._log(self.history[-1], verbose)
        first = True
        for name in self.attacks:
            idx = np.flatnonzero(robust)
            t0 = time.perf_counter()
            if len(idx):
                sub = self._sub[name]
                sub_adv = np.asarray(sub(model, x_np[idx], y_np[idx], strategy=strategy))
                still = self._correct(fn, sub_adv, y_np[idx])
                fooled = ~still
                fooled &= self.threat.contains_np(sub_adv, x_np[idx], tol=1e-5)
                if first:
                    x_adv[idx] = sub_adv  # fallback for never-fooled examples
                else:
                    x_adv[idx[fooled]] = sub_adv[fooled]
                robust[idx[fooled]] = False
            first = False
            self.history.append(
                dict(
                    attack=name,
                    attacked=int(len(idx)),
                    robust_accuracy=float(robust.mean()),
                    seconds=time.perf_counter() - t0,
                )
            )
            self._log(self.history[-1], verbose)
        return x_adv if return_numpy else tf.convert_to_tensor(x_adv)

    def _correct(self, fn, x, y):
        preds = [
            np.argmax(fn(tf.convert_to_tensor(x[s : s + self.batch_size])).numpy(), -1)
            for s in range(0, len(x), self.batch_size)
        ]
        return np.concatenate(preds) == y

    @staticmethod
    def _log(entry, verbose):
        _log.info(
            f"[AutoAttack] {entry['attack']:>8}: robust accuracy "
            f"{100 * entry['robust_accuracy']:.2f} % ({entry['attacked']} attacked, "
            f"{entry['seconds']:.1f} s)",
            verbose,
        )

    # ------------------------------------------------------------ graph path
    @tf.autograph.experimental.do_not_convert
    def perturb(self, model_fn, x, y):
        """Graph-safe AutoAttack (for use inside other compiled code, e.g. Transfer)."""
        y = tf.cast(y, tf.int64)
        fooled = tf.not_equal(tf.argmax(model_fn(x), -1), y)
        x_adv = x
        shape4 = engine.per_example_shape(x)
        for i, name in enumerate(self.attacks):
            sub = self._sub[name]
            idx = tf.where(tf.logical_not(fooled))[:, 0]

            def attack(sub=sub, idx=idx, x_adv=x_adv, fooled=fooled, first=(i == 0)):
                xs, ys = tf.gather(x, idx), tf.gather(y, idx)
                out = sub.perturb(model_fn, xs, ys)
                hit = tf.logical_and(
                    tf.not_equal(tf.argmax(model_fn(out), -1), ys), self.threat.contains(out, xs)
                )
                keep = tf.ones_like(hit) if first else hit
                new = tf.where(tf.reshape(keep, shape4), out, tf.gather(x_adv, idx))
                return engine.scatter(x_adv, idx, new), engine.scatter(fooled, idx, hit)

            x_adv, fooled = tf.cond(
                tf.size(idx) > 0, attack, lambda x_adv=x_adv, fooled=fooled: (x_adv, fooled)
            )
        return tf.stop_gradient(x_adv)
