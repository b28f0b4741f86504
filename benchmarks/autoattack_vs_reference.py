"""AutoAttack standard: robustkit vs the reference (pyautoattack 0.2.0) and torchattacks 3.5.1.

Run by hand (not by the tests); needs the ``bench`` extra (CPU torch first)::

    pip install torch==2.13.0            # the CPU wheel, first
    pip install --no-deps pyautoattack==0.2.0 torchattacks==3.5.1   # the rest of [bench]
    # (--no-deps: torchattacks lists torchvision, which it does not import here)
    python benchmarks/autoattack_vs_reference.py --dataset mnist --n 1000
    python benchmarks/autoattack_vs_reference.py --dataset cifar10 --n 500

What it does:

1. trains (or loads from ``benchmarks/.cache/``) the model with the hand-written PGD-AT
   loop of ``_common.py``: MNIST, a small CNN (16/32 filters, 64 dense units; 20,000
   training images, L-inf 0.3, 3 epochs); CIFAR-10, a ResNet-18 with 16 base filters
   (the 9,000 training images of the local CIFAR-10 file, L-inf 8/255, 5-step PGD);
2. ports the weights to PyTorch (``_torch_port.py``) and checks that both frameworks give
   the same logits on the test images before any timing;
3. runs AutoAttack standard (APGD-CE, APGD-T, FAB-T, Square) in robustkit and in the
   reference *stage by stage, interleaved*: stage s of robustkit, then stage s of the
   reference, each on the examples its own pipeline still finds robust (the reference's
   stages are driven as its ``run_standard_evaluation`` drives them), so load changes on
   the shared machine hit both sides alike; ``--repeats`` repeats the whole comparison;
4. times torchattacks' ``AutoAttack(version="standard")`` on the same images (its
   "standard" runs 10 APGD/FAB iterations instead of 100 and rescales Square's schedule).

Robust accuracy counts an example robust when the model still classifies the attack's
output correctly (both sides' outputs are checked to lie in the eps-ball).
"""

import os
import sys
import time

# OpenMP threads that spin-wait lose badly on a shared machine (a torch fwd+bwd measured
# 20x slower at load 6); passive waiting is the reference's best setting here
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import numpy as np

rk = C.rk
STAGES = ("apgd-ce", "apgd-t", "fab-t", "square")
SETTINGS = {
    "mnist": dict(eps=0.3, n_train=20000, epochs=3, steps=10, step_frac=0.25, warmup=0.5),
    "cifar10": dict(eps=8 / 255, n_train=9000, epochs=5, steps=5, step_frac=0.5, warmup=1.0),
}


# --------------------------------------------------------------------- models
def predict(model, x, batch_size=500):
    """Logits (numpy) of ``model`` in inference mode, in batches."""
    return np.concatenate(
        [
            np.asarray(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )


# ------------------------------------------------------------- model-work counters
class KerasCounter:
    """The model behind an identity layer that counts examples through the forward pass
    and through the backward pass (an input gradient), inside the compiled graph."""

    def __init__(self, model):
        import keras
        import tensorflow as tf

        fwd = tf.Variable(0, dtype=tf.int64, trainable=False)
        bwd = tf.Variable(0, dtype=tf.int64, trainable=False)

        @tf.custom_gradient
        def count(t):
            fwd.assign_add(tf.cast(tf.shape(t)[0], tf.int64))

            def grad(dy):
                with tf.control_dependencies([bwd.assign_add(tf.cast(tf.shape(dy)[0], tf.int64))]):
                    return tf.identity(dy)

            return tf.identity(t), grad

        class Count(keras.layers.Layer):
            def call(self, t):
                return count(t)

        inp = keras.Input(model.input_shape[1:])
        self.model = keras.Model(inp, model(Count()(inp)), name=f"counted_{model.name}")
        self.fwd, self.bwd = fwd, bwd

    def read(self):
        return int(self.fwd.numpy()), int(self.bwd.numpy())

    def since(self, before):
        """``(forward, gradient)`` examples counted since ``before = read()``."""
        return tuple(a - b for a, b in zip(self.read(), before))


class TorchCounter:
    """The same for the torch port: a module counting forward and input-gradient examples."""

    def __init__(self, net):
        import torch

        box = [0, 0]

        class Grad(torch.autograd.Function):
            @staticmethod
            def forward(ctx, t):
                return t.view_as(t)

            @staticmethod
            def backward(ctx, g):
                box[1] += g.shape[0]
                return g

        class Counted(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.net = net

            def forward(self, t):
                box[0] += t.shape[0]
                if torch.is_grad_enabled() and t.requires_grad:
                    t = Grad.apply(t)
                return self.net(t)

        self.model, self.box = Counted().eval(), box

    def read(self):
        return tuple(self.box)

    since = KerasCounter.since


def unit_costs(model, net, x, batch, reps=10):
    """Seconds per example of one forward and of one forward + input gradient, in each
    framework, on ``batch`` images (the model work a stage cannot avoid)."""
    import _torch_port as P
    import tensorflow as tf
    import torch

    xb = tf.constant(x[:batch])

    @tf.function
    def k_fwd(t):
        return model(t, training=False)

    @tf.function
    def k_grad(t):
        with tf.GradientTape() as tape:
            tape.watch(t)
            z = tf.reduce_sum(model(t, training=False))
        return tape.gradient(z, t)

    xt = P.nchw(x[:batch])

    def t_fwd():
        with torch.no_grad():
            return net(xt)

    def t_grad():
        t = xt.clone().requires_grad_()
        return torch.autograd.grad(net(t).sum(), t)[0]

    out = {}
    for key, fn in (
        ("robustkit fwd", lambda: k_fwd(xb)),
        ("robustkit grad", lambda: k_grad(xb)),
        ("reference fwd", t_fwd),
        ("reference grad", t_grad),
    ):
        fn()
        t0 = time.perf_counter()
        for _ in range(reps):
            fn()
        out[key] = (time.perf_counter() - t0) / reps / batch
    return out


def build_model(dataset):
    """The benchmark's architecture for ``dataset`` (fresh weights)."""
    if dataset == "mnist":
        return rk.models.small_cnn((28, 28, 1), width=16, dense=64, name="mnist_pgdat_aa")
    return rk.models.resnet18((32, 32, 3), base_filters=16, name="cifar_pgdat_aa")


def load_model(dataset, data_dir, n_test, retrain=False, seed=0):
    """``(model, x_test, y_test)``: the cached PGD-trained model and the test images."""
    s = SETTINGS[dataset]
    if dataset == "mnist":
        x_tr, y_tr, x_te, y_te = C.mnist(data_dir, s["n_train"], n_test, seed=seed)
        name = f"attack_speed_pgdat_{s['n_train']}_{s['epochs']}"  # shared with attack_speed.py
    else:
        x_tr, y_tr = rk.data.load("cifar10_test_files", "train", data_dir)
        x_te, y_te = rk.data.subset(
            *rk.data.load("cifar10_test_files", "test", data_dir), n_test, seed=seed
        )
        name = f"aa_ref_cifar_resnet18w16_{s['epochs']}"
    model = C.cached(
        name,
        lambda: build_model(dataset),
        lambda m: C.train_pgd_at(
            m,
            x_tr,
            y_tr,
            eps=s["eps"],
            epochs=s["epochs"],
            steps=s["steps"],
            step_frac=s["step_frac"],
            warmup_epochs=s["warmup"],
            seed=seed,
        ),
        retrain=retrain,
    )
    return model, x_te, y_te


# ------------------------------------------------------------------ pipelines
class RobustkitPipeline:
    """robustkit's AutoAttack standard, one stage at a time (as ``AutoAttack.__call__``)."""

    name = "robustkit"

    def __init__(self, model, x, y, eps, batch_size, seed, counter):
        self.model, self.x, self.y = model, x, y
        self.counter = counter  # a KerasCounter of ``model``: the attacks run on its copy
        self.aa = rk.attacks.AutoAttack(eps=eps, norm="linf", batch_size=batch_size, seed=seed)
        assert self.aa.is_standard
        self.robust = np.argmax(predict(model, x), -1) == y
        self.x_adv = x.copy()

    def stage(self, name):
        idx = np.flatnonzero(self.robust)
        self.work = (0, 0)
        if len(idx):
            before = self.counter.read()
            adv = self.aa.components[name](self.counter.model, self.x[idx], self.y[idx])
            adv = np.asarray(adv)
            self.work = self.counter.since(before)
            fooled = np.argmax(predict(self.model, adv), -1) != self.y[idx]
            fooled &= self.aa.threat.contains_np(adv, self.x[idx])
            self.x_adv[idx[fooled]] = adv[fooled]
            self.robust[idx[fooled]] = False
        return float(self.robust.mean())


class ReferencePipeline:
    """pyautoattack 0.2.0 standard, its stages driven as ``run_standard_evaluation`` does."""

    name = "reference"

    def __init__(self, net, x, y, eps, batch_size, seed, counter):
        import _torch_port as P
        import torch
        from pyautoattack import AutoAttack

        self.torch, self.P = torch, P
        self.net, self.bs = net, batch_size
        self.x, self.y = P.nchw(x), torch.from_numpy(y.astype("int64"))
        self.counter = counter  # a TorchCounter of ``net``: the attacks run on its copy
        self.aa = AutoAttack(counter.model, norm="Linf", eps=eps, version="standard", seed=seed)
        self.eps = eps
        with torch.no_grad():
            self.robust = net(self.x).argmax(1) == self.y
        self.x_adv = self.x.clone()

    def stage(self, name):
        torch, aa = self.torch, self.aa
        idx_all = torch.nonzero(self.robust).flatten()
        before = self.counter.read()
        for start in range(0, len(idx_all), self.bs):
            idx = idx_all[start : start + self.bs]
            x, y = self.x[idx].clone(), self.y[idx].clone()
            if name == "apgd-ce":
                aa.apgd.loss = "ce"
                aa.apgd.seed = aa.get_seed()
                adv = aa.apgd.perturb(x, y)
            elif name == "apgd-t":
                aa.apgd_targeted.seed = aa.get_seed()
                adv = aa.apgd_targeted.perturb(x, y)
            elif name == "fab-t":
                aa.fab.targeted = True
                aa.fab.n_restarts = 1
                aa.fab.seed = aa.get_seed()
                adv = aa.fab.perturb(x, y)
            else:
                aa.square.seed = aa.get_seed()
                adv = aa.square.perturb(x, y)
            with torch.no_grad():
                fooled = self.net(adv).argmax(1) != y
            dist = (adv - x).abs().reshape(len(x), -1).amax(1)
            fooled &= dist <= self.eps + 1e-5
            self.robust[idx[fooled]] = False
            self.x_adv[idx[fooled]] = adv[fooled]
        self.work = self.counter.since(before)
        return float(self.robust.float().mean())


def run_torchattacks(net, x, y, eps, seed):
    import _torch_port as P
    import torch
    import torchattacks

    atk = torchattacks.AutoAttack(
        net, norm="Linf", eps=eps, version="standard", n_classes=10, seed=seed
    )
    xt, yt = P.nchw(x), torch.from_numpy(y.astype("int64"))
    t0 = time.perf_counter()
    adv = atk(xt, yt)
    seconds = time.perf_counter() - t0
    with torch.no_grad():
        acc = float((net(adv).argmax(1) == yt).float().mean())
    return acc, seconds


# ----------------------------------------------------------------------- main
def main():
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=sorted(SETTINGS), default="mnist")
    p.add_argument("--n", type=int, default=None, help="test images (mnist 1000, cifar10 500)")
    p.add_argument("--stages", default=",".join(STAGES), help="comma-separated subset")
    p.add_argument("--batch-size", type=int, default=500)
    p.add_argument("--no-torchattacks", action="store_true")
    p.add_argument("--train-only", action="store_true")
    p.add_argument("--name", default=None, help="results file (default autoattack_<dataset>)")
    p.set_defaults(repeats=1)
    args = p.parse_args()
    n = args.n or (1000 if args.dataset == "mnist" else 500)
    stages = [s for s in args.stages.split(",") if s]
    for s in stages:
        if s not in STAGES:
            p.error(f"unknown stage {s!r}; choose from {STAGES}")
    import torch

    torch.set_num_threads(os.cpu_count())
    import _torch_port as P

    model, x, y = load_model(args.dataset, args.data_dir, n, args.retrain, args.seed)
    if args.train_only:
        return
    eps = SETTINGS[args.dataset]["eps"]
    net = P.to_torch(model)
    with torch.no_grad():
        z_t = net(P.nchw(x)).numpy()
    z_k = predict(model, x)
    gap = float(np.abs(z_t - z_k).max())
    agree = float(np.mean(z_t.argmax(1) == z_k.argmax(1)))
    print(f"logits max |keras - torch| = {gap:.2e}; argmax agreement {100 * agree:.2f} %")
    assert gap < 1e-3 * max(1.0, float(np.abs(z_k).max())) and agree == 1.0, "port mismatch"
    clean = float(np.mean(z_k.argmax(1) == y))
    print(C.machine_info())
    print(f"{args.dataset}: {n} test images, clean accuracy {100 * clean:.2f} %, eps {eps:.4f}")

    # both sides attack a copy that counts its model work (examples through a forward pass,
    # and through an input gradient); the same counted model for warm-up and timing, so
    # that robustkit's traced functions are reused
    k_count, t_count = KerasCounter(model), TorchCounter(net)
    # warm-up: trace robustkit's compiled functions on 2 images outside the timings
    warm = RobustkitPipeline(model, x[:2], y[:2], eps, args.batch_size, args.seed, k_count)
    warm.robust[:] = True
    for s in stages:
        warm.stage(s)

    runs = []
    for rep in range(args.repeats):
        rkp = RobustkitPipeline(model, x, y, eps, args.batch_size, args.seed + rep, k_count)
        ref = ReferencePipeline(net, x, y, eps, args.batch_size, args.seed + rep, t_count)
        rows = {}
        for s in stages:
            for pipe in (rkp, ref):
                load = os.getloadavg()[0]
                t0 = time.perf_counter()
                acc = pipe.stage(s)
                sec = time.perf_counter() - t0
                rows[(pipe.name, s)] = (sec, acc, load, pipe.work)
                print(
                    f"[{rep}] {pipe.name:>9} {s:>7}: {sec:7.1f} s, robust {100 * acc:.2f} % "
                    f"(load {load:.2f}; examples through the model: {pipe.work[0]} forward, "
                    f"{pipe.work[1]} with a gradient)",
                    flush=True,
                )
        runs.append(rows)
    # the per-example model cost at the stages' typical batch (the robust examples after
    # the first stage, in batches of --batch-size)
    n_rob = max(1, int(round(runs[-1][("robustkit", stages[0])][1] * n)))
    batch = -(-n_rob // -(-n_rob // args.batch_size))
    costs = unit_costs(model, net, x, batch)
    print(
        f"model cost per example at batch {batch}: "
        + ", ".join(f"{k} {1e3 * v:.4f} ms" for k, v in costs.items()),
        flush=True,
    )
    ta = None
    if not args.no_torchattacks:
        load = os.getloadavg()[0]
        ta = run_torchattacks(net, x, y, eps, args.seed) + (load,)
        print(
            f"torchattacks AutoAttack: {ta[1]:.1f} s, robust {100 * ta[0]:.2f} % (load {ta[2]:.2f})"
        )
    write(args, n, eps, clean, stages, runs, ta, gap, costs, batch)


def _commit():
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", C.REPO, "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        )
        return out.stdout.strip() or "unknown"
    except OSError:
        return "unknown"


def write(args, n, eps, clean, stages, runs, ta, gap, costs, batch):
    med = lambda v: float(np.median(v))
    table, tot = [], {"robustkit": 0.0, "reference": 0.0}
    for s in stages:
        t_rk = med([r[("robustkit", s)][0] for r in runs])
        t_ref = med([r[("reference", s)][0] for r in runs])
        a_rk = runs[-1][("robustkit", s)][1]
        a_ref = runs[-1][("reference", s)][1]
        loads = [r[(k, s)][2] for r in runs for k in ("robustkit", "reference")]
        tot["robustkit"] += t_rk
        tot["reference"] += t_ref
        table.append(
            [
                s.upper(),
                f"{t_rk:.1f}",
                f"{t_ref:.1f}",
                f"{t_ref / t_rk:.2f}x",
                f"{100 * a_rk:.2f}",
                f"{100 * a_ref:.2f}",
                f"{min(loads):.1f}-{max(loads):.1f}",
            ]
        )
    table.append(
        [
            "**total**",
            f"**{tot['robustkit']:.1f}**",
            f"**{tot['reference']:.1f}**",
            f"**{tot['reference'] / tot['robustkit']:.2f}x**",
            "",
            "",
            "",
        ]
    )
    model_line = {
        "mnist": "small CNN (16/32 filters, 64 dense units), PGD-AT on 20,000 MNIST training "
        "images (L-inf 0.3, 10-step PGD, 3 epochs)",
        "cifar10": "ResNet-18 with 16 base filters, PGD-AT on the 9,000 training images of the "
        "local CIFAR-10 file (L-inf 8/255, 5-step PGD, 5 epochs)",
    }[args.dataset]
    cmd = (
        f"python benchmarks/autoattack_vs_reference.py --dataset {args.dataset} --n {n} "
        f"--repeats {args.repeats}" + ("" if len(stages) == 4 else f" --stages {','.join(stages)}")
    )
    lines = [
        f"# AutoAttack standard on {args.dataset}: robustkit vs the reference (pyautoattack 0.2.0)",
        "",
        f"Command: `{cmd}`",
        "",
        f"Machine: {C.machine_info()}; torch {__import__('torch').__version__} (CPU); "
        f"robustkit commit {_commit()}.",
        "",
        f"Model: {model_line}; weights ported to PyTorch, logits agree to {gap:.1e}. "
        f"{n} test images, clean accuracy {100 * clean:.2f} %, eps {eps:.4f}.",
        "",
        "Stages interleaved (robustkit stage s, then the reference's stage s), each on the "
        "examples its own pipeline still finds robust; seconds are the median over "
        f"{len(runs)} repeat(s), robust accuracy after the stage (last repeat). "
        "robustkit's compiled functions were traced on 2 images before timing.",
        "",
        C.markdown_table(
            [
                "stage",
                "robustkit (s)",
                "reference (s)",
                "speed-up",
                "robustkit robust (%)",
                "reference robust (%)",
                "1-min load",
            ],
            table,
        ),
        "",
    ]
    work = []
    for s in stages:
        row = [s.upper()]
        for side in ("robustkit", "reference"):
            sec = med([r[(side, s)][0] for r in runs])
            n_fwd, n_grad = runs[-1][(side, s)][3]
            floor = (n_fwd - n_grad) * costs[f"{side} fwd"] + n_grad * costs[f"{side} grad"]
            row += [f"{n_fwd:,}", f"{n_grad:,}", f"{floor:.1f}", f"{sec / max(floor, 1e-9):.2f}"]
        work.append(row)
    lines += [
        "Model work per stage (last repeat): examples through a forward pass (all) and through "
        "an input gradient (of those), counted inside each side's attack; the floor is that "
        "work at the per-example cost of the framework's own forward and forward + gradient "
        f"at batch {batch} (robustkit/TensorFlow forward {1e3 * costs['robustkit fwd']:.4f} ms, "
        f"+ gradient {1e3 * costs['robustkit grad']:.4f} ms; reference/PyTorch forward "
        f"{1e3 * costs['reference fwd']:.4f} ms, + gradient "
        f"{1e3 * costs['reference grad']:.4f} ms per example), and time / floor is what the "
        "stage spends beyond its model work (1.00 = none).",
        "",
        C.markdown_table(
            [
                "stage",
                "robustkit fwd",
                "robustkit grad",
                "robustkit floor (s)",
                "robustkit time / floor",
                "reference fwd",
                "reference grad",
                "reference floor (s)",
                "reference time / floor",
            ],
            work,
        ),
        "",
    ]
    last = runs[-1]
    slower = [  # on the medians, as the table above
        s.upper()
        for s in stages
        if med([r[("robustkit", s)][0] for r in runs]) > med([r[("reference", s)][0] for r in runs])
    ]
    gap_pt = 100 * (last[("robustkit", stages[-1])][1] - last[("reference", stages[-1])][1])
    total = tot["reference"] / tot["robustkit"]
    lines += [
        "Targets of issue #11 (AutoAttack standard >= 2x faster in total, no stage slower, "
        "robust accuracy <= the reference's + 0.5 pt): "
        f"total {total:.2f}x ({'met' if total >= 2 else 'missed'}); stages slower: "
        f"{', '.join(slower) if slower else 'none'}; robust accuracy "
        f"{gap_pt:+.1f} pt ({'met' if gap_pt <= 0.5 else 'missed'})"
        + ("" if len(stages) == 4 else " (not every stage ran)")
        + ".",
        "",
    ]
    if ta is not None:
        lines += [
            f"torchattacks 3.5.1 `AutoAttack(version='standard')`: {ta[1]:.1f} s, robust "
            f'accuracy {100 * ta[0]:.2f} % (load {ta[2]:.1f}). Its "standard" runs APGD, '
            "APGD-T and FAB with 10 iterations instead of 100 and rescales Square's p "
            "schedule, so it is a weaker and cheaper evaluation than AutoAttack standard.",
            "",
        ]
    path = C.write_result(
        args.name or f"autoattack_{args.dataset}", "\n".join(lines), enabled=not args.no_write
    )
    if path:
        print(f"wrote {os.path.relpath(path, C.REPO)}")


if __name__ == "__main__":
    main()
