"""Per-example model cost by batch size, TensorFlow (robustkit's side) against PyTorch.

Run by hand; needs the ``bench`` extra (CPU torch), as ``autoattack_vs_reference.py``::

    python benchmarks/model_cost.py --dataset cifar10 --batches 124,372,1116

The AutoAttack benchmark's stages are bound by the model's cost (each side spends about
its model work, see ``results/autoattack_cifar10.md``). This asks the two questions that
decide what is left to win: what one forward and one forward + input gradient cost per
example in each framework (their ratio bounds the AutoAttack speed-up once the attack's own
overhead is gone), and whether larger batches would make the model cheaper per example
(if they did, APGD-T's and FAB-T's nine target classes could run as one stacked batch).

The architectures are the AutoAttack benchmark's (MNIST: ``small_cnn(width=16, dense=64)``;
CIFAR-10: ``resnet18(base_filters=16)``), with freshly initialised weights: the cost does not
depend on their values. Rounds interleave every (framework, batch) cell so load changes hit
them alike; the table gives the median over rounds.
"""

import os
import sys

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # as autoattack_vs_reference.py

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common as C
import keras
import numpy as np
from autoattack_vs_reference import build_model, unit_costs

KEYS = ("robustkit fwd", "robustkit grad", "reference fwd", "reference grad")


def main():
    p = C.base_parser(__doc__.splitlines()[0])
    p.add_argument("--dataset", choices=["cifar10", "mnist"], default="cifar10")
    p.add_argument("--batches", default="124,372,1116", help="comma-separated batch sizes")
    p.add_argument("--reps", type=int, default=10, help="calls timed per cell and round")
    p.set_defaults(repeats=5)
    args = p.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    if not batches or min(batches) < 1:
        p.error("--batches must be positive integers")
    import torch

    torch.set_num_threads(os.cpu_count())
    import _torch_port as P

    keras.utils.set_random_seed(args.seed)
    model = build_model(args.dataset)
    net = P.to_torch(model)
    x = np.random.default_rng(args.seed).uniform(size=(max(batches),) + model.input_shape[1:])
    x = x.astype("float32")
    print(C.machine_info(), flush=True)
    cells = {b: {k: [] for k in KEYS} for b in batches}
    for rnd in range(args.repeats):
        for b in batches:
            for k, v in unit_costs(model, net, x, b, reps=args.reps).items():
                cells[b][k].append(v)
            med = {k: 1e3 * v[-1] for k, v in cells[b].items()}
            print(f"[{rnd}] batch {b}: " + ", ".join(f"{k} {v:.3f} ms" for k, v in med.items()),
                  flush=True)  # fmt: skip
    rows = []
    base = {k: np.median(cells[batches[0]][k]) for k in KEYS}
    for b in batches:
        m = {k: np.median(cells[b][k]) for k in KEYS}
        rows.append([b] + [f"{1e3 * m[k]:.3f} ({m[k] / base[k]:.2f}x)" for k in KEYS]
                    + [f"{m['reference fwd'] / m['robustkit fwd']:.2f}x",
                       f"{m['reference grad'] / m['robustkit grad']:.2f}x"])  # fmt: skip
    head = ["batch", "TF fwd ms/ex", "TF fwd+grad ms/ex", "torch fwd ms/ex",
            "torch fwd+grad ms/ex", "torch/TF fwd", "torch/TF fwd+grad"]  # fmt: skip
    text = "\n".join([
        f"# Model cost per example by batch: {args.dataset} (`benchmarks/model_cost.py`)", "",
        f"Command: `python benchmarks/model_cost.py {' '.join(sys.argv[1:])}`", "",
        f"Machine: {C.machine_info()}.", "",
        f"Model: {'small_cnn(width=16, dense=64)' if args.dataset == 'mnist' else 'resnet18(base_filters=16)'}"
        f", fresh weights; TensorFlow through a `tf.function` (robustkit's side), the same "
        f"weights ported to PyTorch (the reference's side). Median over {args.repeats} "
        f"interleaved rounds of {args.reps} calls; in brackets, relative to batch {batches[0]}.",
        "", C.markdown_table(head, rows), "",
    ])  # fmt: skip
    print(text)
    C.write_result(f"model_cost_{args.dataset}", text, not args.no_write)


if __name__ == "__main__":
    main()
