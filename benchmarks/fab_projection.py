"""FAB's hyperplane-box projection: the sorted exact solve against bisection + Newton.

Run by hand (not by the tests)::

    python benchmarks/fab_projection.py --data-dir ../shared/data

What it does:

1. times :func:`robustkit.attacks.fab.project_hyperplane_box` with ``exact_sort=True``
   (argsort of the knees, the solve robustkit used before) and with the default fast solve
   (8 halvings, 4 Newton steps, sorted fallback for any row off by more than 1e-5) on flat
   784-pixel rows shaped like FAB's on MNIST (most pixels at 0 or 1), for L-inf and L2, and
   reports the largest difference between the two solutions;
2. runs FAB-T as AutoAttack standard runs it (9 targets x 100 steps, L-inf 0.3) on the
   robust test images of the PGD-trained MNIST CNN of ``autoattack_vs_reference.py`` with
   each solve, interleaved, and reports time and the fooled fraction (the same when the
   solves agree).
"""

import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import numpy as np
import tensorflow as tf

rk = C.rk


def projection_rows(rows, seed=0):
    """``(point, w, r)`` like FAB's on MNIST: most pixels at 0 or 1, some zero gradients."""
    rng = np.random.default_rng(seed)
    point = rng.uniform(size=(rows, 784)).astype("float32")
    point[rng.uniform(size=point.shape) < 0.7] = 0.0
    point[rng.uniform(size=point.shape) < 0.1] = 1.0
    w = rng.normal(size=(rows, 784)).astype("float32")
    w[rng.uniform(size=w.shape) < 0.05] = 0.0
    r = rng.normal(scale=3.0, size=rows).astype("float32")
    return point, w, r


def time_projection(norm, rows, repeats):
    from robustkit.attacks.fab import project_hyperplane_box

    point, w, r = (tf.constant(a) for a in projection_rows(rows))
    fns = {
        exact: tf.function(functools.partial(project_hyperplane_box, norm, exact_sort=exact))
        for exact in (True, False)
    }
    out = {k: f(w, r, -point, 1 - point) for k, f in fns.items()}
    times = {True: [], False: []}
    for _ in range(repeats):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(10):
                f(w, r, -point, 1 - point)
            times[k].append((time.perf_counter() - t0) / 10)
    diff = float(tf.reduce_max(tf.abs(out[True] - out[False])))
    return float(np.median(times[True])), float(np.median(times[False])), diff


def time_fab(model, x, y, repeats):
    from robustkit.attacks import fab as F

    original = F.project_hyperplane_box
    res = {True: [], False: []}
    try:
        for rep in range(repeats + 1):  # the first round traces
            for exact in (True, False):
                F.project_hyperplane_box = functools.partial(original, exact_sort=exact)
                attack = rk.attacks.FAB(eps=0.3, steps=100, n_target_classes=9, seed=0)
                t0 = time.perf_counter()
                adv = np.asarray(attack(model, x, y))
                sec = time.perf_counter() - t0
                fooled = float(np.mean(np.argmax(np.asarray(model(adv)), -1) != y))
                if rep:
                    res[exact].append((sec, fooled))
    finally:
        F.project_hyperplane_box = original
    return {k: (float(np.median([s for s, _ in v])), v[-1][1]) for k, v in res.items()}


def main():
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=368, help="rows per projection call")
    p.add_argument("--n", type=int, default=200, help="robust MNIST test images for FAB-T")
    args = p.parse_args()
    import autoattack_vs_reference as A

    lines = [
        "# FAB projection: sorted exact solve vs bisection + Newton (`benchmarks/fab_projection.py`)",
        "",
        f"Command: `python benchmarks/fab_projection.py --repeats {args.repeats} --rows "
        f"{args.rows} --n {args.n}`",
        "",
        f"Machine: {C.machine_info()}.",
        "",
        f"One projection call on {args.rows} flat 784-pixel rows (MNIST-like: 70 % of pixels at "
        "0, 10 % at 1), median over repeats of 10 calls:",
        "",
    ]
    rows = []
    for norm in ("linf", "l2"):
        t_sort, t_fast, diff = time_projection(norm, args.rows, args.repeats)
        rows.append(
            [
                norm,
                f"{1e3 * t_sort:.2f}",
                f"{1e3 * t_fast:.2f}",
                f"{t_sort / t_fast:.2f}x",
                f"{diff:.1e}",
            ]
        )
        print(rows[-1], flush=True)
    lines += [
        C.markdown_table(
            ["norm", "sorted (ms)", "bisection + Newton (ms)", "speed-up", "largest difference"],
            rows,
        ),
        "",
    ]
    model, x, y = A.load_model("mnist", args.data_dir, 1000)
    ok = np.argmax(A.predict(model, x), -1) == y
    xr, yr = x[ok][: args.n], y[ok][: args.n]
    fab = time_fab(model, xr, yr, args.repeats)
    lines += [
        f"FAB-T (9 targets x 100 steps, L-inf 0.3) on {len(xr)} correctly classified test "
        "images of the PGD-trained MNIST CNN of `autoattack_vs_reference.py`, median of "
        f"{args.repeats} run(s) after a tracing round: sorted solve {fab[True][0]:.1f} s "
        f"(fooled {100 * fab[True][1]:.1f} %), bisection + Newton {fab[False][0]:.1f} s "
        f"(fooled {100 * fab[False][1]:.1f} %): {fab[True][0] / fab[False][0]:.2f}x.",
        "",
    ]
    print(lines[-2], flush=True)
    path = C.write_result("fab_projection", "\n".join(lines), enabled=not args.no_write)
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
