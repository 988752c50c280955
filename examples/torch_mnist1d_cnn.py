"""Meta-train a 1-D CNN on MNIST-1D few-shot episodes with fobmaml.torch.

FO-B-MAML (symmetric) estimates the meta-gradient and SNGDM (normalized gradient descent
with momentum, norm over all parameters) takes the outer steps: the paper's method on an
ordinary ``torch.nn`` model. Needs ``pip install "fobmaml[torch]"``.

Usage::

    python examples/torch_mnist1d_cnn.py [--iterations 500] [--channels 32] [--steps 20]
        [--activation silu|relu|tanh] [--pool avg|max] [--estimator FOBMAML|MAML|FOMAML]
        [--lr 0.05] [--out DIR] [--device cpu]
        [--threads N] [--quick]

Every ``--eval-every`` iterations it reports the K-step meta-loss of the training batch and
the query accuracy after adaptation on 100 held-out test episodes (5-way 5-shot, 15
queries per class; chance is 0.2). With ``--out`` it writes ``curve.csv``,
``settings.json`` and ``curve.png`` there.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, vmap

import fobmaml as fm
import fobmaml.torch as fmt

N_WAY, K_SHOT, Q_QUERY = 5, 5, 15


def cnn(channels: int, activation: str = "silu", pool: str = "avg") -> nn.Module:
    """Two strided convolutions, pooling and a linear head; input (1, 40), 5 logits.

    The default layers are smooth (SiLU, average pooling): FO-B-MAML's finite difference
    needs a smooth loss, and ReLU or max pooling make it measure their kinks (docs/torch.md).
    """
    act = {"silu": nn.SiLU, "relu": nn.ReLU, "tanh": nn.Tanh}[activation]
    pooling = {"avg": nn.AvgPool1d, "max": nn.MaxPool1d}[pool]
    return nn.Sequential(
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        act(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        act(),
        pooling(2),
        nn.Flatten(),
        nn.Linear(5 * channels, N_WAY),
    )


def to_batch(tasks: fm.MLPTasks, device: str) -> tuple[torch.Tensor, ...]:
    """A fobmaml task batch as (X_support, Y_support, X_query, Y_query) tensors for Conv1d:
    X (m, k, 1, 40) float32, labels (m, k) int64."""

    def x(a):
        return torch.from_numpy(a[:, :, None, :].astype(np.float32)).to(device)

    def y(a):
        return torch.from_numpy(a.astype(np.int64)).to(device)

    return x(tasks.X_support), y(tasks.Y_support), x(tasks.X_query), y(tasks.Y_query)


def accuracy_after_adaptation(model, batch, inner: fm.InnerLoop) -> tuple[float, float]:
    """(query accuracy, query loss) of each task's adapted parameters, averaged over tasks."""
    Xs, Ys, Xq, Yq = batch
    phi = fmt.adapt(model, Xs, Ys, inner, F.cross_entropy)
    with torch.no_grad():
        logits = vmap(lambda p, X: functional_call(model, p, (X,)))(phi, Xq)
        acc = (logits.argmax(-1) == Yq).double().mean()
        loss = F.cross_entropy(logits.flatten(0, 1), Yq.flatten())
    return float(acc), float(loss)


def make_estimator(name: str, inner: fm.InnerLoop) -> fmt.Estimator:
    if name == "FOBMAML":
        return fmt.FOBMAML(inner, delta=1e-3, scheme="symmetric")
    if name == "MAML":
        return fmt.MAML(inner)
    if name == "FOMAML":
        return fmt.FOMAML(inner)
    raise ValueError(f"`estimator` must be FOBMAML, MAML or FOMAML (got {name!r})")


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=500)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--activation", default="silu", choices=("silu", "relu", "tanh"))
    ap.add_argument("--pool", default="avg", choices=("avg", "max"))
    ap.add_argument("--steps", type=int, default=20, help="inner steps K")
    ap.add_argument("--inner-lr", type=float, default=0.1)
    ap.add_argument("--lam", type=float, default=2.0)
    ap.add_argument("--estimator", default="FOBMAML", choices=("FOBMAML", "MAML", "FOMAML"))
    ap.add_argument("--lr", type=float, default=0.05, help="SNGDM step length")
    ap.add_argument("--beta", type=float, default=0.9, help="SNGDM momentum")
    ap.add_argument("--meta-batch", type=int, default=16)
    ap.add_argument("--test-episodes", type=int, default=100)
    ap.add_argument("--eval-every", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    ap.add_argument("--out", help="directory for curve.csv, settings.json and curve.png")
    ap.add_argument("--quick", action="store_true", help="a seconds-long smoke run")
    ap.add_argument(
        "--plot",
        metavar="DIR",
        help="only draw DIR/curves.png from the curve.csv of DIR's subfolders (earlier runs)",
    )
    args = ap.parse_args(argv)
    if args.plot:
        plot_runs(Path(args.plot))
        return {}
    num_samples = 5000
    if args.quick:
        args.iterations, args.channels, args.steps = 4, 4, 2
        args.meta_batch, args.test_episodes, args.eval_every = 2, 4, 2

    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    model = cnn(args.channels, args.activation, args.pool).to(args.device)
    inner = fm.InnerLoop(steps=args.steps, lr=args.inner_lr, lam=args.lam)
    est = make_estimator(args.estimator, inner)
    opt = fmt.SNGDM(model.parameters(), lr=args.lr, beta=args.beta)

    def sampler(split, m):
        return fm.datasets.mnist1d_fewshot(
            N_WAY, K_SHOT, Q_QUERY, split, meta_batch=m, num_samples=num_samples
        )

    train = sampler("train", args.meta_batch)
    test = to_batch(sampler("test", args.test_episodes)(np.random.default_rng(10**6)), args.device)
    rng = np.random.default_rng(args.seed)

    curve = []
    acc, qloss = accuracy_after_adaptation(model, test, inner)
    curve.append({"iteration": 0, "meta_loss": float("nan"), "test_accuracy": acc,
                  "test_loss": qloss, "seconds": 0.0})  # fmt: skip
    print(f"{est!r}, SNGDM(lr={args.lr}, beta={args.beta}), {args.channels} channels")
    print(f"iteration    0: test accuracy after adaptation {acc:.3f}")
    start = time.perf_counter()
    for it in range(1, args.iterations + 1):
        batch = to_batch(train(rng), args.device)
        opt.zero_grad()
        meta_loss = float(est.backward(model, batch, F.cross_entropy))
        opt.step()
        if it % args.eval_every == 0 or it == args.iterations:
            elapsed = time.perf_counter() - start
            acc, qloss = accuracy_after_adaptation(model, test, inner)
            curve.append({"iteration": it, "meta_loss": meta_loss, "test_accuracy": acc,
                          "test_loss": qloss, "seconds": elapsed})  # fmt: skip
            print(
                f"iteration {it:4d}: batch F_K {meta_loss:.3f}, test accuracy after adaptation "
                f"{acc:.3f} ({elapsed:.0f} s)",
                flush=True,
            )
    result = {
        "settings": {
            **{k: v for k, v in vars(args).items() if k not in ("out", "quick")},
            "quick": args.quick,
            "n_way": N_WAY,
            "k_shot": K_SHOT,
            "q_query": Q_QUERY,
            "num_samples": num_samples,
            "num_params": sum(p.numel() for p in model.parameters()),
            "torch": torch.__version__,
            "torch_num_threads": torch.get_num_threads(),
        },
        "curve": curve,
    }
    if args.out:
        write(result, Path(args.out))
    return result


def write(result: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "curve.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(result["curve"][0]))
        w.writeheader()
        w.writerows(result["curve"])
    (out / "settings.json").write_text(json.dumps(result["settings"], indent=2) + "\n")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6), layout="constrained")
    ax = fig.subplots()
    it = [r["iteration"] for r in result["curve"]]
    ax.plot(it, [r["test_accuracy"] for r in result["curve"]], "o-", ms=3)
    ax.axhline(1 / N_WAY, color="k", lw=0.8, ls=":", label="chance")
    s = result["settings"]
    ax.set_xlabel("outer iteration")
    ax.set_ylabel("test accuracy after adaptation")
    ax.set_title(
        f"MNIST-1D {N_WAY}-way {K_SHOT}-shot, {s['activation']}/{s['pool']}-pool CNN "
        f"({s['num_params']:,} parameters), K = {s['steps']}: {s['estimator']} + SNGDM",
        fontsize=9,
    )
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.savefig(out / "curve.png", dpi=140)


def plot_runs(folder: Path) -> None:
    """Test accuracy against iteration of every run under `folder` (one curve.csv each)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(6.0, 3.8), layout="constrained")
    ax = fig.subplots()
    for run in sorted(p.parent for p in folder.glob("*/curve.csv")):
        with open(run / "curve.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        s = json.loads((run / "settings.json").read_text())
        label = f"{s['estimator']} ({s['activation']}, {s['pool']}-pool, K = {s['steps']})"
        ax.plot(
            [int(r["iteration"]) for r in rows],
            [float(r["test_accuracy"]) for r in rows],
            "o-",
            ms=3,
            label=label,
        )
    ax.axhline(1 / N_WAY, color="k", lw=0.8, ls=":", label="chance")
    ax.set_xlabel("outer iteration (SNGDM, lr 0.05)")
    ax.set_ylabel("test accuracy after adaptation")
    ax.set_title("MNIST-1D 5-way 5-shot, 1-D CNN (4,101 parameters), 100 test episodes", fontsize=9)
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    fig.savefig(folder / "curves.png", dpi=140)


if __name__ == "__main__":
    main()
    sys.exit(0)
