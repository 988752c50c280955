"""fobmaml against the meta-gradients users would otherwise write: PyTorch and JAX.

Usage::

    python bench/compare.py [--quick] [--out DIR] [--problems NAME ...] [--peers NAME ...]
                            [--estimators NAME ...] [--repeat N] [--max-time SECONDS]
                            [--wait-quiet SECONDS]

In one process, on one machine, for every (problem, estimator, implementation):

1. checks that the peer computes the same mean meta-gradient as fobmaml, to a relative
   error of at most 1e-8 (a mismatch is printed loudly, marked in the CSV, and makes the
   exit status 1);
2. times one meta-gradient call: the median of ``--repeat`` calls (``time.perf_counter``)
   after one warm-up call (whose time, compilation included, is reported as
   ``first_call_s``); a cell stops early, after at least 3 calls, once it has spent
   ``--max-time`` seconds. fobmaml runs at its default number of threads;
3. prints the ratio table (peer time / fobmaml time: how many times faster fobmaml
   is) and writes ``peers.csv``, ``peers.png``, ``machine.json`` (CPU, versions, thread
   settings) and ``table.txt`` to ``--out``.

Every cell also records how many cores other processes kept busy while it was timed
(``background_load``); cells above 0.2 cores are marked ``~``. On a shared machine,
``--wait-quiet SECONDS`` waits for idle CPUs before each cell and retimes disturbed ones.
Peers whose packages are not installed are skipped with a note. ``--quick`` is a smoke
run, well under a minute (two small problems, 3 repeats).
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import os
import platform
import statistics
import sys
import time
import traceback
import warnings
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

import fobmaml as fm
from fobmaml import peers
from fobmaml.peers import problems as P

TOL = 1e-8
#: Cores kept busy by other processes above which a cell's timing is marked as disturbed.
DISTURBED = 0.2
#: Seconds of sleep before each cell, so that the previous one's spinning threads go idle.
SETTLE = 0.25
QUICK_PROBLEMS = ("sinusoid-K1", "quadratic-n100")
CSV_FIELDS = (
    "problem",
    "family",
    "m",
    "n",
    "K",
    "lr",
    "lam",
    "momentum",
    "estimator",
    "implementation",
    "median_s",
    "min_s",
    "repeats",
    "first_call_s",
    "ratio_vs_fobmaml",
    "rel_err_vs_fobmaml",
    "status",
    "background_load",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    names = list(P.benchmark_problems())
    parser = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="smoke run: two small problems")
    parser.add_argument("--out", default="compare-peers", help="output directory")
    parser.add_argument(
        "--problems",
        nargs="+",
        metavar="NAME",
        help="problems, or their prefixes before a '-' (sinusoid, mnist1d, mnist1d-cnn,\n"
        "quadratic); default: all\n"
        f"problems: {', '.join(names)}",
    )
    parser.add_argument(
        "--peers",
        nargs="+",
        metavar="NAME",
        choices=peers.IMPLEMENTATIONS,
        default=list(peers.IMPLEMENTATIONS),
        help=f"peers to run (default: all installed): {', '.join(peers.IMPLEMENTATIONS)}",
    )
    parser.add_argument(
        "--estimators",
        nargs="+",
        metavar="NAME",
        choices=P.ESTIMATORS,
        default=list(P.ESTIMATORS),
        help=f"estimators (default: all): {', '.join(P.ESTIMATORS)}",
    )
    parser.add_argument("--repeat", type=int, help="timed calls per cell (default 10; quick 3)")
    parser.add_argument(
        "--max-time",
        type=float,
        help="seconds after which a cell stops timing, once it has 3 calls (default 10; quick 1)",
    )
    parser.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each cell, wait up to SECONDS until other processes use < 0.1 core\n"
        "(for shared machines; default 0: do not wait)",
    )
    args = parser.parse_args(argv)
    if args.repeat is None:
        args.repeat = 3 if args.quick else 10
    if args.max_time is None:
        args.max_time = 1.0 if args.quick else 10.0
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.problems is None:
        args.problems = list(QUICK_PROBLEMS) if args.quick else names
    selected = []
    for name in args.problems:
        match = [p for p in names if p == name or p.startswith(name + "-")]
        if not match:
            parser.error(f"unknown problem {name!r}; expected a family or one of {names}")
        selected += [p for p in match if p not in selected]
    args.problems = selected
    return args


# -- measuring -----------------------------------------------------------------------------
def _busy_jiffies() -> tuple[int, int]:
    """(busy, total) CPU jiffies of the whole machine, from /proc/stat ((0, 0) elsewhere)."""
    try:
        with open("/proc/stat") as fh:
            vals = [int(v) for v in fh.readline().split()[1:9]]
    except (OSError, ValueError):
        return 0, 0
    return sum(vals) - vals[3] - vals[4], sum(vals)  # all but idle and iowait


class LoadMeter:
    """How many cores other processes kept busy since this meter was made.

    The machine's busy CPU time (/proc/stat) minus this process's own CPU time, over
    the elapsed time: 0 on a quiet machine, up to the number of cores.
    """

    def __init__(self) -> None:
        self.jiffies, self.cpu, self.wall = _busy_jiffies(), time.process_time(), time.time()

    def others(self) -> float | None:
        busy, total = _busy_jiffies()
        wall = time.time() - self.wall
        if total <= self.jiffies[1] or wall <= 0:
            return None
        hz = os.sysconf("SC_CLK_TCK")
        other_cpu = (busy - self.jiffies[0]) / hz - (time.process_time() - self.cpu)
        return max(other_cpu, 0.0) / wall


def wait_for_quiet(max_wait: float, threshold: float = 0.1) -> float:
    """Sleep until other processes use < `threshold` cores (1 s windows); the time waited."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_wait:
        meter = LoadMeter()
        time.sleep(1.0)
        others = meter.others()
        if others is None or others < threshold:
            break
    return time.perf_counter() - start


def _time_once(fn, args: argparse.Namespace) -> tuple[object, dict]:
    meter = LoadMeter()
    t0 = time.perf_counter()
    result = fn()
    first = time.perf_counter() - t0
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < args.repeat and (
        len(times) < 3 or time.perf_counter() - start < args.max_time
    ):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return result, {
        "median_s": statistics.median(times),
        "min_s": min(times),
        "repeats": len(times),
        "first_call_s": first,
        "background_load": meter.others(),
    }


def time_calls(fn, args: argparse.Namespace) -> tuple[object, dict]:
    """The first call's result, and the timings: warm-up call, then the median of repeats.

    With ``--wait-quiet``, the cell first waits for idle CPUs, and a measurement that other
    processes disturbed (more than DISTURBED cores busy) is taken again, up to 3 times in
    all; the least disturbed one is kept.
    """
    best = None
    for _ in range(3 if args.wait_quiet > 0 else 1):
        if args.wait_quiet > 0:
            wait_for_quiet(args.wait_quiet)
        # The previous cell's thread pools (OpenMP, torch's, XLA's) spin for a while after
        # their last parallel region; on few cores they would steal this cell's CPUs.
        time.sleep(SETTLE)
        result, timing = _time_once(fn, args)
        load = timing["background_load"]
        if best is None or (load is not None and load < best[1]["background_load"]):
            best = (result, timing)
        if load is None or load <= DISTURBED:
            break
    return best


def load_peers(names: list[str]) -> tuple[dict, dict]:
    """Import the peers that are installed: (name -> module, name -> note why skipped)."""
    loaded, skipped = {}, {}
    for name in names:
        lacking = peers.missing(name)
        if lacking:
            skipped[name] = f"not installed: {', '.join(lacking)}"
            continue
        try:
            loaded[name] = peers.load(name)
        except Exception as exc:  # an installed but broken package: say so and go on
            skipped[name] = f"import failed: {type(exc).__name__}: {exc}"
    return loaded, skipped


def run(args: argparse.Namespace, loaded: dict) -> list[dict]:
    rows = []
    for pname in args.problems:
        t0 = time.perf_counter()
        problem = P.benchmark_problems()[pname]()
        print(f"\n{problem.description()}  (built in {time.perf_counter() - t0:.1f} s)")
        i = problem.inner
        base = {
            "problem": pname,
            "family": problem.family,
            "m": problem.num_tasks,
            "n": problem.dim,
            "K": i.steps,
            "lr": i.lr,
            "lam": i.lam,
            "momentum": i.momentum,
        }
        for est in args.estimators:
            ref, timing = time_calls(P.build_fobmaml(problem, est), args)
            ref = np.asarray(ref)
            ref_time = timing["median_s"]
            rows.append(
                {
                    **base,
                    "estimator": est,
                    "implementation": "fobmaml",
                    **timing,
                    "ratio_vs_fobmaml": 1.0,
                    "rel_err_vs_fobmaml": 0.0,
                    "status": "ok",
                }
            )
            line = [f"  {est:<20} fobmaml {_ms(ref_time)}"]
            for name, mod in loaded.items():
                row = {**base, "estimator": est, "implementation": name}
                if not peers.runs(name, mod, problem.family, est):
                    continue
                try:
                    out, timing = time_calls(mod.build(problem, est), args)
                except Exception as exc:
                    traceback.print_exc()
                    msg = f"error: {type(exc).__name__}: {exc}".replace("\n", " ")
                    print(f"!!! {name} {est} on {pname} FAILED: {msg}", file=sys.stderr)
                    rows.append({**row, "status": msg[:300]})
                    continue
                err = P.relative_error(mod.to_numpy(out), ref)
                status = "ok" if err <= TOL else "MISMATCH"
                if status != "ok":
                    print(
                        f"!!! MISMATCH: {name} {est} on {pname}: relative error {err:.3e} "
                        f"> {TOL:g} against fobmaml",
                        file=sys.stderr,
                    )
                rows.append(
                    {
                        **row,
                        **timing,
                        "ratio_vs_fobmaml": timing["median_s"] / ref_time,
                        "rel_err_vs_fobmaml": err,
                        "status": status,
                    }
                )
                line.append(f"{name} {_ms(timing['median_s'])} (err {err:.0e})")
            print(" | ".join(line), flush=True)
    return rows


# -- reporting -----------------------------------------------------------------------------
def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.3g} ms" if ms < 1000 else f"{ms:,.0f} ms"


def _disturbed(row: dict) -> bool:
    load = row.get("background_load")
    return load is not None and load > DISTURBED


def _ratio(row: dict | None, ref: dict) -> str:
    if row is None:
        return "-"
    if row["status"] not in ("ok", "MISMATCH"):
        return "ERROR"
    r = row["ratio_vs_fobmaml"]
    text = f"{r:.0f}x" if r >= 100 else f"{r:.1f}x" if r >= 10 else f"{r:.2f}x"
    if _disturbed(row) or _disturbed(ref):
        text = "~" + text
    return text + (" MISMATCH" if row["status"] == "MISMATCH" else "")


def ratio_table(rows: list[dict], implementations: list[str]) -> str:
    """Problem x estimator rows; fobmaml's time, then each peer's time / fobmaml's time."""
    index = {(r["problem"], r["estimator"], r["implementation"]): r for r in rows}
    cells = [(r["problem"], r["estimator"]) for r in rows if r["implementation"] == "fobmaml"]
    head = ["problem", "estimator", "fobmaml", *implementations]
    body = []
    for prob, est in cells:
        ref = index[(prob, est, "fobmaml")]
        body.append(
            [prob, est, ("~" if _disturbed(ref) else "") + _ms(ref["median_s"])]
            + [_ratio(index.get((prob, est, name)), ref) for name in implementations]
        )
    widths = [max(len(x) for x in col) for col in zip(head, *body)]

    def fmt(cols):
        return "  ".join(
            c.ljust(w) if j < 2 else c.rjust(w) for j, (c, w) in enumerate(zip(cols, widths))
        )

    lines = [fmt(head), fmt(["-" * w for w in widths])] + [fmt(b) for b in body]
    return "\n".join(lines)


def write_csv(rows: list[dict], path: Path) -> None:
    with open(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for r in rows:
            writer.writerow({k: r.get(k, "") for k in CSV_FIELDS})


def write_plot(rows: list[dict], implementations: list[str], path: Path) -> None:
    """One panel per problem: per estimator, a bar per peer at its time / fobmaml's time."""
    from matplotlib.figure import Figure

    problems = list(dict.fromkeys(r["problem"] for r in rows))
    ncols = 2 if len(problems) > 1 else 1
    nrows = math.ceil(len(problems) / ncols)
    fig = Figure(figsize=(6.4 * ncols, 3.3 * nrows), layout="constrained")
    axes = np.atleast_1d(fig.subplots(nrows, ncols, squeeze=False)).ravel()
    palette = ("#4c72b0", "#dd8452", "#55a868", "#c44e52", "#8172b2", "#937860", "#da8bc3")
    colors = dict(zip(implementations, palette))
    width = 0.8 / max(len(implementations), 1)
    index = {(r["problem"], r["estimator"], r["implementation"]): r for r in rows}
    for ax, prob in zip(axes, problems):
        ests = [
            r["estimator"]
            for r in rows
            if r["problem"] == prob and r["implementation"] == "fobmaml"
        ]
        for j, name in enumerate(implementations):
            xs, ys = [], []
            for k, est in enumerate(ests):
                r = index.get((prob, est, name))
                if r is not None and r["status"] in ("ok", "MISMATCH"):
                    xs.append(k + (j - (len(implementations) - 1) / 2) * width)
                    ys.append(r["ratio_vs_fobmaml"])
            ax.bar(xs, ys, width, color=colors.get(name), label=name)
            for x, y in zip(xs, ys):
                ax.text(
                    x,
                    y,
                    f"{y:.0f}" if y >= 10 else f"{y:.2g}",
                    ha="center",
                    va="bottom",
                    fontsize=6,
                )
        ax.axhline(1.0, color="k", lw=0.8)
        ax.set_yscale("log")
        ax.set_xticks(range(len(ests)))
        ax.set_xticklabels([e.replace("(symmetric)", "(sym)") for e in ests], fontsize=8)
        ref = [index[(prob, e, "fobmaml")]["median_s"] for e in ests]
        ax.set_title(f"{prob}  (fobmaml: {', '.join(_ms(t) for t in ref)})", fontsize=8)
        ax.set_ylabel("peer time / fobmaml time", fontsize=8)
    for ax in axes[len(problems) :]:
        ax.set_visible(False)
    for ax in axes[: len(problems)]:
        lo, hi = ax.get_ylim()
        ax.set_ylim(lo, hi * 2.5)  # room for the value labels
    if implementations:
        handles, labels = axes[0].get_legend_handles_labels()
        fig.legend(handles, labels, loc="outside lower center", ncols=len(labels), fontsize=8)
    fig.suptitle(
        "Time of one meta-gradient call, as a multiple of fobmaml's (log scale; below 1: "
        "the peer is faster)",
        fontsize=10,
    )
    fig.savefig(path, dpi=130)


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def machine_info(loaded: dict, skipped: dict, args: argparse.Namespace) -> dict:
    import matplotlib

    info = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": sorted(os.sched_getaffinity(0))
        if hasattr(os, "sched_getaffinity")
        else None,
        "load_average_at_start": os.getloadavg(),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "numpy": np.__version__,
        "matplotlib": matplotlib.__version__,
        "fobmaml": fm.__version__,
        "fobmaml_build_info": fm.build_info(),
        "fobmaml_num_threads": fm.get_num_threads(),
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", ""),
        "peers": {name: mod.settings() for name, mod in loaded.items()},
        "peers_skipped": skipped,
        "args": {k: v for k, v in vars(args).items()},
        "tolerance": TOL,
        "cg_steps": P.CG_STEPS,
        "delta": P.DELTA,
    }
    if "torch-higher" in loaded:
        from importlib.metadata import version

        info["peers"]["torch-higher"]["higher"] = version("higher")
    return json.loads(json.dumps(info, default=str))


def main(argv: list[str] | None = None) -> int:
    # The MNIST-1D CNN here has ReLU and max pooling on purpose (the network every
    # implementation runs); FO-B-MAML's warning about them is for users, not for timings.
    warnings.filterwarnings("ignore", category=fm.NonSmoothWarning)
    args = parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    t_start = time.perf_counter()
    run_meter = LoadMeter()
    # torch.func's forward-mode AD loads its decompositions with torch.jit.script, which
    # torch 2.13 itself reports as deprecated; the warning says nothing about this run.
    warnings.filterwarnings(
        "ignore", message=r".*torch\.jit\.script.*", category=DeprecationWarning
    )
    loaded, skipped = load_peers(args.peers)
    info = machine_info(loaded, skipped, args)

    print(
        f"CPU: {info['cpu_model']} ({info['cpu_count']} logical cores; "
        f"this process may run on {info['cpu_affinity']})"
    )
    print(f"load average at start: {info['load_average_at_start'][0]:.2f}")
    if info["load_average_at_start"][0] > 0.5 * (os.cpu_count() or 1):
        print("WARNING: the machine is busy; timings will be noisy", file=sys.stderr)
    print(
        f"fobmaml {fm.__version__}: {fm.get_num_threads()} threads (default), "
        f"build {info['fobmaml_build_info']}"
    )
    for name, mod in loaded.items():
        print(f"{name}: {mod.settings()}")
    for name, why in skipped.items():
        print(f"NOTE: skipping {name} ({why})")
    print(
        f"timing: median of {args.repeat} calls after one warm-up call "
        f"(at least 3 calls, at most ~{args.max_time:g} s per cell); tolerance {TOL:g}"
    )

    rows = run(args, loaded)
    impls = list(loaded)
    table = ratio_table(rows, impls)
    print("\nTime of one meta-gradient call: fobmaml's, and each peer's as a multiple of it")
    print("(higher = fobmaml is that many times faster; '-' = not implemented by that peer)\n")
    print(table)
    disturbed = [r for r in rows if _disturbed(r)]
    if disturbed:
        print(
            f"\n~ : {len(disturbed)} of {len(rows)} timings were taken while other processes "
            f"kept more than {DISTURBED:g} cores busy; rerun them on a quiet machine "
            "(--wait-quiet helps on a shared one)",
            file=sys.stderr,
        )

    peer_rows = [r for r in rows if r["implementation"] != "fobmaml"]
    bad = [r for r in peer_rows if r["status"] != "ok"]
    checked = [r for r in peer_rows if r["status"] in ("ok", "MISMATCH")]
    if checked:
        worst = max(checked, key=lambda r: r["rel_err_vs_fobmaml"])
        print(
            f"\nCorrectness: {len(checked) - len(bad)} of {len(peer_rows)} peer results match "
            f"fobmaml to <= {TOL:g} relative; largest relative error "
            f"{worst['rel_err_vs_fobmaml']:.2e} ({worst['implementation']}, "
            f"{worst['estimator']}, {worst['problem']})"
        )
    for r in bad:
        err = r.get("rel_err_vs_fobmaml")
        print(
            f"!!! {r['status']}: {r['implementation']} {r['estimator']} on {r['problem']}"
            + (f" (relative error {err:.3e})" if isinstance(err, float) else ""),
            file=sys.stderr,
        )

    write_csv(rows, out / "peers.csv")
    write_plot(rows, impls, out / "peers.png")
    info["load_average_at_end"] = os.getloadavg()
    info["wall_time_s"] = time.perf_counter() - t_start
    others = run_meter.others()
    info["background_load_cores"] = others
    if others is not None:
        print(f"other processes kept {others:.2f} of {os.cpu_count()} cores busy during the run")
        if others > 0.1:
            print("WARNING: timings were disturbed by other processes", file=sys.stderr)
    info["mismatches"] = len(bad)
    (out / "machine.json").write_text(json.dumps(info, indent=2) + "\n")
    (out / "table.txt").write_text(table + "\n")
    print(
        f"\nwrote {out / 'peers.csv'}, {out / 'peers.png'}, {out / 'machine.json'}, "
        f"{out / 'table.txt'}  ({info['wall_time_s']:.0f} s in all)"
    )
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
