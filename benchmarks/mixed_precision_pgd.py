"""PGD under mixed precision: robust accuracy of one trained CNN computed in float32 and in
float16 (``mixed_float16``), with robustkit's per-example gradient rescaling
(``robustkit.models.adapter.unit_upstream``) and without it (the raw float16 logits).

Without the rescaling, confident examples get an input gradient of exactly 0 in float16 (the
CE gradient ``p - onehot`` ~ 1e-8 underflows), sign steps do not move them, and PGD looks
weaker on the float16 model than on the same weights in float32.

Run by hand::

    python benchmarks/mixed_precision_pgd.py            # digits CNN, 359 test images
    python benchmarks/mixed_precision_pgd.py --dataset mnist --data-dir ../shared/data

Writes ``benchmarks/results/mixed_precision_pgd.md``.
"""

import argparse
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras
import numpy as np
import tensorflow as tf

import robustkit as rk

HERE = os.path.dirname(os.path.abspath(__file__))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dataset", default="digits")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--epochs", type=int, default=20)
    p.add_argument("--n-test", type=int, default=1000)
    p.add_argument("--eps", default="0.1,0.2,0.3")
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--out", default=os.path.join(HERE, "results", "mixed_precision_pgd.md"))
    args = p.parse_args()
    x, y = rk.data.load(args.dataset, "train", args.data_dir)
    x_te, y_te = rk.data.load(args.dataset, "test", args.data_dir)
    x_te, y_te = rk.data.subset(x_te, y_te, args.n_test)
    keras.utils.set_random_seed(0)
    m32 = rk.models.small_cnn(x.shape[1:])
    m32.compile(keras.optimizers.Adam(3e-3),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))  # fmt: skip
    m32.fit(x, y, epochs=args.epochs, batch_size=64, verbose=0)
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        m16 = rk.models.small_cnn(x.shape[1:])
    finally:
        keras.mixed_precision.set_global_policy("float32")
    m16.set_weights(m32.get_weights())

    def raw16(z):  # the float16 model without the rescaling
        return tf.cast(m16(z, training=False), tf.float32)

    models = {"float32": m32, "float16 (robustkit)": m16, "float16 (raw logits)": raw16}
    clean = float(np.mean(np.argmax(m32.predict(x_te, verbose=0), -1) == y_te))
    rows = []
    for name, model in models.items():
        fn = model if name.endswith("raw logits)") else rk.attacks.as_logits_fn(model)
        _, _, grad = rk.attacks.base.loss_and_grad(fn, tf.constant(x_te), tf.constant(y_te))
        zero = int((np.abs(grad.numpy()).reshape(len(x_te), -1).max(1) == 0).sum())
        accs, seconds = [], 0.0
        for eps in [float(e) for e in args.eps.split(",")]:
            pgd = rk.attacks.PGD(eps=eps, steps=args.steps, random_start=False)
            start = time.perf_counter()
            x_adv = pgd(model, x_te, y_te)
            seconds += time.perf_counter() - start
            accs.append(float(np.mean(np.argmax(m32.predict(x_adv, verbose=0), -1) == y_te)))
        rows.append((name, zero, accs, seconds))
    eps_cols = " | ".join(f"PGD-{args.steps} eps {e}" for e in args.eps.split(","))
    lines = [
        "# PGD under mixed precision (`benchmarks/mixed_precision_pgd.py`)",
        "",
        f"Command: `python benchmarks/mixed_precision_pgd.py --dataset {args.dataset} "
        f"--epochs {args.epochs} --n-test {args.n_test} --eps {args.eps} --steps {args.steps}`",
        "",
        f"small_cnn trained {args.epochs} epochs on {args.dataset} ({len(x)} images), clean "
        f"accuracy {100 * clean:.1f} % on {len(x_te)} test images; the float16 copy has the "
        "same weights. Accuracy of the float32 model on each model's adversarial examples "
        "(no random start); lower is a stronger attack.",
        "",
        f"| model | examples with a zero input gradient | {eps_cols} | attack seconds |",
        "|---|---|" + "---|" * len(rows[0][2]) + "---|",
    ]
    for name, zero, accs, seconds in rows:
        cells = " | ".join(f"{100 * a:.1f} %" for a in accs)
        lines.append(f"| {name} | {zero} | {cells} | {seconds:.1f} |")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        f.write("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
