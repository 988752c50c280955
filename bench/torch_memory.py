"""Peak memory of fobmaml.torch's FO-B-MAML against MAML (both backward passes) on a CNN,
as the number of inner steps K and the network's channels C grow.

Usage::

    python bench/torch_memory.py [--out DIR] [--ks 1 5 10 20 50 100] [--channels 16 64 256]
                                 [--tasks 16] [--limit-gib 16] [--device cpu|cuda] [--threads N]
                                 [--quick] [--replot]

The network is the MNIST-1D CNN

    nn.Sequential(nn.Conv1d(1, C, 5, stride=2, padding=1), nn.ReLU(),
                  nn.Conv1d(C, C, 3, stride=2, padding=1), nn.ReLU(),
                  nn.MaxPool1d(2), nn.Flatten(), nn.Linear(5 * C, 5))

on inputs (1, 40), in float32, with one batch of ``--tasks`` MNIST-1D episodes (5-way
5-shot, 15 queries per class; ``fm.datasets.mnist1d_fewshot``), inner step 0.1 and
lambda = 2. Each run is one ``est.backward(model, batch, F.cross_entropy)`` call in a fresh
subprocess, after a warm-up call on one task with K = 1. On CPU the memory is the growth of
the peak resident set size (``ru_maxrss``) over that call, as the operating system counts
it; on CUDA it is ``torch.cuda.max_memory_allocated`` after ``reset_peak_memory_stats``.

**Every run is predicted before it runs** from the runs already made (they go by growing
C, then growing K): linearly in K from the last two runs of the same estimator and C;
for the first K of a C, from the smaller C at the same K with the power law in C of the
last two (exponent 2, parameters, when only one is known). A run whose predicted peak
(the process's baseline plus the predicted growth) passes ``--limit-gib``, or the memory
available on the machine, is not made: it is recorded as "out of memory (predicted X
GiB)". The CSV holds the prediction next to every measurement.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from _measure import machine, write_json

ESTIMATORS = ("FOBMAML(symmetric)", "MAML(autograd)", "MAML(recursion)")
GIB = 2**30

_CHILD = r"""
import json, resource, sys, time, warnings
import numpy as np, torch, torch.nn.functional as F
from torch import nn
import fobmaml as fm, fobmaml.torch as fmt
# This CNN has ReLU and max pooling, on which FO-B-MAML's estimate is inaccurate and says so;
# its memory, measured here, does not depend on that.
warnings.simplefilter("ignore", fmt.NonSmoothWarning)

name, C, K, path, device = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4], sys.argv[5]
if int(sys.argv[6]) > 0:
    torch.set_num_threads(int(sys.argv[6]))

def rss_kib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

def make(inner):
    if name == "FOBMAML(symmetric)":
        return fmt.FOBMAML(inner, delta=1e-3, scheme="symmetric")
    return fmt.MAML(inner, backward=name[5:-1])

torch.manual_seed(0)
model = nn.Sequential(
    nn.Conv1d(1, C, 5, stride=2, padding=1), nn.ReLU(),
    nn.Conv1d(C, C, 3, stride=2, padding=1), nn.ReLU(),
    nn.MaxPool1d(2), nn.Flatten(), nn.Linear(5 * C, 5),
).to(device)
data = np.load(path)
batch = tuple(torch.from_numpy(data[k]).to(device) for k in ("Xs", "Ys", "Xq", "Yq"))
inner = fm.InnerLoop(steps=K, lr=0.1, lam=2.0)
make(inner.replace(steps=1)).backward(model, tuple(t[:1] for t in batch), F.cross_entropy)
model.zero_grad(set_to_none=True)
if device == "cuda":
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
before = rss_kib()
t0 = time.perf_counter()
loss = make(inner).backward(model, batch, F.cross_entropy)
if device == "cuda":
    torch.cuda.synchronize()
seconds = time.perf_counter() - t0
out = {"baseline_kib": before, "seconds": seconds, "loss": float(loss),
       "n_params": sum(p.numel() for p in model.parameters())}
if device == "cuda":
    out["extra_kib"] = (torch.cuda.max_memory_allocated() - base) / 1024
else:
    out["extra_kib"] = rss_kib() - before
print(json.dumps(out))
"""


def cnn_params(C: int) -> int:
    """Parameters of the CNN with C channels."""
    return (5 * C + C) + (3 * C * C + C) + (5 * C * 5 + 5)


def available_gib() -> float:
    """MemAvailable from /proc/meminfo, in GiB (inf where unknown)."""
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024 / GIB
    except OSError:  # pragma: no cover - non-Linux
        pass
    return math.inf


def write_batch(path: Path, tasks: int, quick: bool) -> dict:
    """One batch of MNIST-1D episodes, reshaped for Conv1d: X (m, k, 1, 40), int64 labels."""
    import fobmaml as fm

    sampler = fm.datasets.mnist1d_fewshot(
        5, 5, 15, "train", meta_batch=tasks, num_samples=1000 if quick else 5000
    )
    t = sampler(np.random.default_rng(0))
    arrays = {
        "Xs": t.X_support[:, :, None, :].astype(np.float32),
        "Ys": t.Y_support.astype(np.int64),
        "Xq": t.X_query[:, :, None, :].astype(np.float32),
        "Yq": t.Y_query.astype(np.int64),
    }
    np.savez(path, **arrays)
    return {k: list(v.shape) for k, v in arrays.items()}


def measure(name: str, C: int, K: int, path: Path, device: str, threads: int = 0) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, name, str(C), str(K), str(path), device, str(threads)],
        capture_output=True,
        text=True,
        timeout=3600,
    )
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def predict(rows: list[dict], name: str, C: int, K: int) -> float | None:
    """Predicted growth (KiB) of run (name, C, K) from the measured rows, or None."""
    done = [r for r in rows if r["estimator"] == name and r.get("extra_kib") not in (None, "")]
    same_c = sorted((r["K"], float(r["extra_kib"])) for r in done if r["C"] == C and r["K"] < K)
    if len(same_c) >= 2:
        (k0, m0), (k1, m1) = same_c[-2:]
        slope = max((m1 - m0) / (k1 - k0), 0.0)
        return m1 + slope * (K - k1)
    at_k = sorted((r["C"], float(r["extra_kib"])) for r in done if r["K"] == K and r["C"] < C)
    if at_k:
        c1, m1 = at_k[-1]
        p = 2.0
        if len(at_k) >= 2:
            c0, m0 = at_k[-2]
            if m0 > 0 and m1 > 0:
                p = min(max(math.log(m1 / m0) / math.log(c1 / c0), 0.0), 2.0)
        grown = max(m1, 1.0) * (C / c1) ** p
        if same_c:  # one run at this C already: keep its level, scale the growth in K
            k1, m_c = same_c[-1]
            return max(grown, m_c)
        return grown
    if same_c:
        return same_c[-1][1]
    return None


COLORS = {
    "FOBMAML(symmetric)": "#c44e52",
    "MAML(autograd)": "#4c72b0",
    "MAML(recursion)": "#55a868",
}
FLOOR_MIB = 0.5


def plot(rows: list[dict], path: Path, device: str) -> None:
    """Extra peak memory against K, one panel per channel count; predicted-only runs hollow."""
    from matplotlib.figure import Figure

    channels = sorted({int(r["C"]) for r in rows})
    fig = Figure(figsize=(4.2 * len(channels), 4.0), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(channels), sharey=True))
    for ax, C in zip(axes, channels):
        for name in ESTIMATORS:
            sel = [r for r in rows if r["estimator"] == name and int(r["C"]) == C]
            ran = [
                (int(r["K"]), max(float(r["extra_kib"]) / 1024, FLOOR_MIB))
                for r in sel
                if r.get("extra_kib") not in (None, "")
            ]
            skipped = [
                (int(r["K"]), float(r["predicted_kib"]) / 1024)
                for r in sel
                if r.get("status", "").startswith("out of memory")
            ]
            if ran:
                ax.plot(*zip(*ran), "o-", color=COLORS[name], label=name, ms=4)
            if skipped:
                ax.plot(
                    *zip(*skipped),
                    "o",
                    mfc="none",
                    color=COLORS[name],
                    ms=6,
                    label=f"{name}: predicted, not run",
                )
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_title(f"C = {C} channels ({cnn_params(C):,} parameters)", fontsize=9)
        ax.set_xlabel("inner steps K")
        ax.grid(True, which="both", alpha=0.3)
    what = "CUDA max_memory_allocated" if device == "cuda" else "peak RSS growth"
    axes[0].set_ylabel(f"{what} of one backward call, MiB")
    handles, labels = [], []
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            if lab not in labels:
                handles.append(h)
                labels.append(lab)
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7)
    fig.suptitle("fobmaml.torch on an MNIST-1D CNN: memory of one meta-gradient", fontsize=10)
    fig.savefig(path, dpi=140)


FIELDS = [
    "estimator",
    "C",
    "K",
    "n_params",
    "status",
    "extra_kib",
    "predicted_kib",
    "baseline_kib",
    "seconds",
    "loss",
    "error",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/torch_memory")
    ap.add_argument("--ks", type=int, nargs="+", help="default: 1 5 10 20 50 100")
    ap.add_argument("--channels", type=int, nargs="+", help="default: 16 64 256")
    ap.add_argument("--tasks", type=int, help="tasks per batch (default 16)")
    ap.add_argument(
        "--estimators", nargs="+", choices=ESTIMATORS, default=list(ESTIMATORS), metavar="NAME"
    )
    ap.add_argument("--limit-gib", type=float, default=16.0)
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument(
        "--threads", type=int, default=0, help="torch.set_num_threads in each run (0: default)"
    )
    ap.add_argument(
        "--quick", action="store_true", help="smoke run: C in {4, 8}, K in {1, 3}, 2 tasks"
    )
    ap.add_argument("--replot", action="store_true", help="redraw from --out's CSV")
    args = ap.parse_args(argv)
    out = Path(args.out)
    if args.replot:
        with open(out / "torch_memory.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        device = json.loads((out / "torch_memory.json").read_text()).get("device", "cpu")
        plot(rows, out / "torch_memory.png", device)
        return 0
    quick = {"ks": [1, 3], "channels": [4, 8], "tasks": 2}
    full = {"ks": [1, 5, 10, 20, 50, 100], "channels": [16, 64, 256], "tasks": 16}
    for key, value in (quick if args.quick else full).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    out.mkdir(parents=True, exist_ok=True)
    rows: list[dict] = []
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "batch.npz"
        shapes = write_batch(path, args.tasks, args.quick)
        print(f"batch: {shapes}; device {args.device}; limit {args.limit_gib:g} GiB")
        baseline_kib = None
        for C in sorted(args.channels):
            for name in args.estimators:
                for K in sorted(args.ks):
                    pred = predict(rows, name, C, K)
                    row = {"estimator": name, "C": C, "K": K, "n_params": cnn_params(C)}
                    row["predicted_kib"] = pred
                    if pred is not None and baseline_kib is not None:
                        peak_gib = (baseline_kib + pred) * 1024 / GIB
                        free = available_gib() - 1.0
                        if peak_gib > min(args.limit_gib, free):
                            why = (
                                f"over the {args.limit_gib:g} GiB limit"
                                if peak_gib > args.limit_gib
                                else f"over the {free:.1f} GiB available"
                            )
                            row["status"] = f"out of memory (predicted {peak_gib:.1f} GiB, {why})"
                            rows.append(row)
                            print(f"{name:19s} C={C:4d} K={K:4d}: {row['status']}", flush=True)
                            continue
                    r = measure(name, C, K, path, args.device, args.threads)
                    row.update(r)
                    row["status"] = "ok" if "extra_kib" in r else "error"
                    if "baseline_kib" in r and args.device == "cpu":
                        baseline_kib = max(baseline_kib or 0, r["baseline_kib"])
                    elif args.device == "cuda":
                        baseline_kib = 0
                    rows.append(row)
                    shown = (
                        f"{r['extra_kib'] / 1024:9.1f} MiB in {r['seconds']:7.2f} s"
                        + (f" (predicted {pred / 1024:9.1f} MiB)" if pred is not None else "")
                        if "extra_kib" in r
                        else r["error"]
                    )
                    print(f"{name:19s} C={C:4d} K={K:4d}: {shown}", flush=True)
    with open(out / "torch_memory.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    plot(rows, out / "torch_memory.png", args.device)
    import torch

    info = {
        "machine": machine(),
        "torch": torch.__version__,
        "torch_num_threads": args.threads or torch.get_num_threads(),
        "device": args.device,
        "batch_shapes": shapes,
        "tasks": args.tasks,
        "dtype": "float32",
        "inner": {"lr": 0.1, "lam": 2.0, "momentum": 0.0},
        "delta": 1e-3,
        "limit_gib": args.limit_gib,
        "ks": args.ks,
        "channels": args.channels,
        "rows": rows,
    }
    write_json(out / "torch_memory.json", info)
    print(f"wrote {out}/torch_memory.csv, torch_memory.png, torch_memory.json")
    return 1 if any(r["status"] == "error" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
