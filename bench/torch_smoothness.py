"""How far FO-B-MAML's and HF-MAML's finite differences land from MAML on CNNs with and
without kinks (ReLU, max pooling), as delta shrinks.

Usage::

    python bench/torch_smoothness.py [--out DIR] [--ks 10 20 40] [--channels 32] [--quick]

For each activation (ReLU, Tanh, SiLU, GELU) and pooling (max, average) of the MNIST-1D CNN

    Conv1d(1, C, 5, stride=2, padding=1), act, Conv1d(C, C, 3, stride=2, padding=1), act,
    pool(2), Flatten, Linear(5 C, 5)

in float64, at its PyTorch initialization (seed 0), on one batch of 16 MNIST-1D episodes
(5-way 5-shot, 15 queries per class), inner step 0.1, lambda = 2, it computes the mean
meta-gradient of ``fmt.MAML`` (the exact gradient of F_K; HVPs take relu'' = 0) and the
relative difference ``||g - g_MAML|| / ||g_MAML||`` of:

- ``fmt.FOBMAML`` (symmetric, objective perturbation) for delta = 1e-2, 1e-3, 1e-4;
- ``fmt.HFMAML`` with eps = 1e-5;
- ``fmt.IMAML`` with 50 CG steps (an HVP-based estimate of the gradient at the inner solution).

On a smooth network, FO-B-MAML and iMAML approach MAML as K grows (both estimate the
gradient at the inner solution, which F_K's gradient approaches), whatever delta. Where a
perturbed inner loop crosses a kink, the finite difference measures the jump, and the
error grows as delta shrinks.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
import warnings
from pathlib import Path

import numpy as np
from _measure import machine, write_json

ACTIVATIONS = ("relu", "tanh", "silu", "gelu")
POOLS = ("max", "avg")
DELTAS = (1e-2, 1e-3, 1e-4)
FIELDS = [
    "activation",
    "pool",
    "K",
    "maml_norm",
    *[f"fobmaml_delta_{d:g}" for d in DELTAS],
    "hfmaml_eps_1e-05",
    "imaml_cg_50",
    "seconds",
]


def cnn(activation: str, pool: str, channels: int):
    from torch import nn

    act = {"relu": nn.ReLU, "tanh": nn.Tanh, "silu": nn.SiLU, "gelu": nn.GELU}[activation]
    pooling = {"max": nn.MaxPool1d, "avg": nn.AvgPool1d}[pool]
    return nn.Sequential(
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        act(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        act(),
        pooling(2),
        nn.Flatten(),
        nn.Linear(5 * channels, 5),
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/torch_smoothness")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 20, 40])
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--tasks", type=int, default=16)
    ap.add_argument("--threads", type=int, default=1, help="torch.set_num_threads (0: default)")
    ap.add_argument("--quick", action="store_true", help="smoke run: C = 4, 2 tasks, K = 2")
    args = ap.parse_args(argv)
    if args.quick:
        args.ks, args.channels, args.tasks = [2], 4, 2

    import torch
    import torch.nn.functional as F

    import fobmaml as fm
    import fobmaml.torch as fmt

    if args.threads:
        torch.set_num_threads(args.threads)
    warnings.simplefilter("ignore", fmt.NonSmoothWarning)  # what this script measures
    sampler = fm.datasets.mnist1d_fewshot(5, 5, 15, "train", meta_batch=args.tasks)
    t = sampler(np.random.default_rng(0))

    def x(a):
        return torch.from_numpy(np.ascontiguousarray(a[:, :, None, :], dtype=np.float64))

    batch = (
        x(t.X_support),
        torch.from_numpy(t.Y_support),
        x(t.X_query),
        torch.from_numpy(t.Y_query),
    )

    def flat(d):
        return torch.cat([v.reshape(-1) for v in d.values()])

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for activation in ACTIVATIONS:
        for pool in POOLS:
            for K in args.ks:
                torch.manual_seed(0)
                model = cnn(activation, pool, args.channels).double()
                inner = fm.InnerLoop(steps=K, lr=0.1, lam=2.0)
                start = time.perf_counter()

                def g(est, model=model):
                    return flat(est.meta_gradient(model, batch, F.cross_entropy))

                ref = g(fmt.MAML(inner, backward="recursion"))

                def err(est, g=g, ref=ref):
                    return float((g(est) - ref).norm() / ref.norm())

                row = {"activation": activation, "pool": pool, "K": K}
                row["maml_norm"] = float(ref.norm())
                for d in DELTAS:
                    est = fmt.FOBMAML(inner, delta=d, scheme="symmetric")
                    row[f"fobmaml_delta_{d:g}"] = err(est)
                row["hfmaml_eps_1e-05"] = err(fmt.HFMAML(inner, eps=1e-5))
                row["imaml_cg_50"] = err(fmt.IMAML(inner, cg_steps=50))
                row["seconds"] = time.perf_counter() - start
                rows.append(row)
                print(
                    f"{activation:4s} + {pool}pool, K = {K:3d}: relative difference to MAML: "
                    + ", ".join(
                        f"FO-B-MAML(delta={d:g}) {row[f'fobmaml_delta_{d:g}']:.3g}" for d in DELTAS
                    )
                    + f", HF-MAML {row['hfmaml_eps_1e-05']:.3g}, iMAML(50) "
                    f"{row['imaml_cg_50']:.3g}",
                    flush=True,
                )
    with open(out / "smoothness.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS)
        w.writeheader()
        w.writerows(rows)
    write_json(
        out / "smoothness.json",
        {
            "machine": machine(),
            "torch": torch.__version__,
            "channels": args.channels,
            "tasks": args.tasks,
            "ks": args.ks,
            "inner": {"lr": 0.1, "lam": 2.0, "momentum": 0.0},
            "dtype": "float64",
            "rows": rows,
        },
    )
    print(f"wrote {out}/smoothness.csv, smoothness.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
