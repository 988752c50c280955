"""Extra peak memory of one meta-gradient call as the number of inner steps K grows.

Usage::

    python bench/memory.py [--out DIR] [--ks 10 30 100 300 1000] [--quick] [--replot]

For each estimator and K, a fresh subprocess builds the sinusoid batch (m = 25,
[1, 40, 40, 1] tanh, 10-shot; ``fobmaml.peers.problems.sinusoid``), records its peak resident set
size (``ru_maxrss``), makes one meta-gradient call (compilation included for JAX), and
records the peak again: the difference is the extra peak memory of the call, measured by
the operating system. The kernels' own prediction
(``Estimator.workspace_bytes``, the bytes of workspace all threads allocate) is reported
next to it. Expected: FO-B-MAML's memory does not depend on K; MAML's grows linearly
(it stores the trajectory phi_0..phi_{K-1}). Installed peers (PyTorch eager, JAX) are
measured the same way for comparison.
"""

from __future__ import annotations

import argparse
import csv
import json
import subprocess
import sys
from pathlib import Path

from _measure import machine, new_figure, write_json

ESTIMATORS = ("FOBMAML(symmetric)", "FOMAML", "IMAML(cg=5)", "MAML")

_CHILD = r"""
import json, resource, sys
from fobmaml import peers
from fobmaml.peers import problems as P
impl, name, K = sys.argv[1], sys.argv[2], int(sys.argv[3])
problem = P.sinusoid(K)
predicted = None
if impl == "fobmaml":
    est = P.fobmaml_estimator(name, problem.inner)
    predicted = est.workspace_bytes(problem.tasks)
    call = lambda: est.meta_gradient(problem.x0, problem.tasks)
else:
    mod = peers.load(impl)
    if name not in mod.ESTIMATORS:
        print(json.dumps({"error": "not implemented"}))
        sys.exit(0)
    call = mod.build(problem, name)
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
call()
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps(
    {"extra_kib": after - before, "baseline_kib": before, "predicted_bytes": predicted}
))
"""


def measure(impl: str, name: str, K: int) -> dict:
    proc = subprocess.run(
        [sys.executable, "-c", _CHILD, impl, name, str(K)],
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr else "failed"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def available_peers() -> list[str]:
    from fobmaml import peers

    return [p for p in ("torch-eager", "torch-func", "jax") if not peers.missing(p)]


COLORS = {"fobmaml": "#c44e52", "torch-eager": "#4c72b0", "torch-func": "#55a868", "jax": "#8172b2"}
STYLES = {
    "FOBMAML(symmetric)": ("o", "-"),
    "FOMAML": ("s", ":"),
    "IMAML(cg=5)": ("^", "-."),
    "MAML": ("D", "--"),
}
FLOOR_MIB = 0.05  # below what RSS resolves; zero growth is drawn at this floor


def plot(rows: list[dict], impls: list[str], path: Path) -> None:
    """Extra peak RSS against K, log-log; one colour per implementation, one style per estimator."""
    fig, ax = new_figure(6.4, 6.2)
    for impl in impls:
        for name in ESTIMATORS:
            pts = [
                (int(r["K"]), max(float(r["extra_kib"]) / 1024, FLOOR_MIB))
                for r in rows
                if r["implementation"] == impl
                and r["estimator"] == name
                and r.get("extra_kib") not in (None, "")
            ]
            if pts:
                marker, ls = STYLES[name]
                ax.plot(
                    *zip(*pts),
                    marker=marker,
                    ls=ls,
                    color=COLORS.get(impl),
                    lw=2.0 if impl == "fobmaml" else 1.2,
                    ms=4,
                    label=f"{impl}: {name}",
                )
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("inner steps K")
    ax.set_ylabel(f"extra peak RSS of one call, MiB (< {FLOOR_MIB}: drawn at {FLOOR_MIB})")
    ax.set_title("memory of one meta-gradient: sinusoid m=25, [1,40,40,1]", fontsize=10)
    ax.grid(True, which="both", alpha=0.3)
    handles, labels = ax.get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=2, fontsize=7)
    fig.savefig(path, dpi=150)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="bench-results/memory")
    ap.add_argument("--ks", type=int, nargs="+", default=[10, 30, 100, 300, 1000])
    ap.add_argument("--no-peers", action="store_true")
    ap.add_argument("--quick", action="store_true", help="K in {10, 100} and fobmaml only")
    ap.add_argument(
        "--replot", action="store_true", help="redraw memory.png from --out's memory.csv"
    )
    args = ap.parse_args(argv)
    if args.replot:
        with open(Path(args.out) / "memory.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        impls = list(dict.fromkeys(r["implementation"] for r in rows))
        plot(rows, impls, Path(args.out) / "memory.png")
        return 0
    ks = [10, 100] if args.quick else args.ks
    impls = ["fobmaml"] + ([] if (args.quick or args.no_peers) else available_peers())
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = []
    for impl in impls:
        for name in ESTIMATORS:
            for K in ks:
                r = measure(impl, name, K)
                rows.append({"implementation": impl, "estimator": name, "K": K, **r})
                shown = (
                    f"{r['extra_kib'] / 1024:8.2f} MiB measured"
                    + (
                        f", {r['predicted_bytes'] / 2**20:8.2f} MiB predicted"
                        if r.get("predicted_bytes") is not None
                        else ""
                    )
                    if "extra_kib" in r
                    else r["error"]
                )
                print(f"{impl:12s} {name:20s} K={K:5d}: {shown}", flush=True)
    with open(out / "memory.csv", "w", newline="") as fh:
        fields = [
            "implementation",
            "estimator",
            "K",
            "extra_kib",
            "predicted_bytes",
            "baseline_kib",
            "error",
        ]
        w = csv.DictWriter(fh, fieldnames=fields, extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    # Growth from the smallest to the largest K, the figure the README quotes.
    summary = {}
    for impl in impls:
        for name in ESTIMATORS:
            sel = {
                r["K"]: r for r in rows if r["implementation"] == impl and r["estimator"] == name
            }
            lo, hi = sel.get(min(ks), {}), sel.get(max(ks), {})
            if "extra_kib" in lo and "extra_kib" in hi:
                summary[f"{impl} {name}"] = {
                    "measured_growth_mib": (hi["extra_kib"] - lo["extra_kib"]) / 1024,
                    "predicted_growth_mib": (
                        (hi["predicted_bytes"] - lo["predicted_bytes"]) / 2**20
                        if hi.get("predicted_bytes") is not None
                        else None
                    ),
                }
    print(f"\nextra peak memory, K = {min(ks)} -> {max(ks)}:")
    for key, v in summary.items():
        pred = v["predicted_growth_mib"]
        print(
            f"  {key:36s} {v['measured_growth_mib']:+9.2f} MiB measured"
            + (f", {pred:+9.2f} MiB predicted" if pred is not None else "")
        )
    plot(rows, impls, out / "memory.png")
    write_json(
        out / "memory.json", {"machine": machine(), "ks": ks, "summary": summary, "rows": rows}
    )
    print(f"wrote {out}/memory.csv, memory.png, memory.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
