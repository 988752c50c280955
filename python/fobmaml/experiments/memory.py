r"""The memory claim: extra peak memory and time of one meta-gradient on the MNIST-1D CNN.

``fobmaml memory --out DIR`` measures MAML, symmetric FO-B-MAML and FO-MAML on the
convolutional network of :func:`fobmaml.peers.problems.cnn` (two Conv1d layers with C
channels, relu, max pooling, a linear head; 5-way 5-shot MNIST-1D episodes with 25 support
and 25 query samples, m = 16 episodes, float64) along two sweeps:

- (a) the channels C in {16, 32, 64, 128, 256} at K = 10 inner steps;
- (b) the inner steps K in {5, 10, 20, 40, 80} at C = 256.

**How one point is measured.** Every (implementation, estimator, C, K) runs in a fresh
Python process, which builds the tasks and the estimator (a JAX peer is compiled ahead of
time, so its call runs the estimator only), then resets the kernel's peak-RSS counter
(``/proc/self/clear_refs``), reads its resident set size, makes **one** meta-gradient call,
and reads the peak again. The extra peak memory of the call is the peak during the call
minus the RSS before it; the time is that call's wall time. ``extra_maxrss_kib`` is the
same call measured as ``bench/memory.py`` does (``ru_maxrss`` after minus before), the
fallback where the counter cannot be reset. fobmaml's rows also report the workspace the
kernels predict before they allocate (``Estimator.workspace_bytes``): MAML keeps the
trajectory, K n doubles per thread, and FO-B-MAML keeps none.

**Threads.** ``threads`` (``--threads``) puts every implementation on that many threads:
fobmaml's, torch's intra-op pool, OpenMP and MKL, and XLA's CPU pool. On a machine that
other work keeps busy, a runtime that synchronizes its threads after every small operation
(torch eager and ``torch.func`` here) waits a scheduler time slice at each barrier whose
thread was pushed off its core; one thread each keeps the times comparable there. The
default, 0, leaves each at its own default.

**Peers.** With torch and JAX installed, the peers of :mod:`fobmaml.peers` (PyTorch eager
autograd through the K steps, ``torch.func``, JAX jit + vmap, and ``higher`` for MAML)
run the same points, side by side. Before each run, its extra memory is predicted from the
runs already made (:func:`predict`: linear in K at the same C, a power law in C at the
same K); a run predicted to pass ``limit_gib`` (16 GiB by default) is not made, and is
recorded as out of memory with its prediction. A peer's time is predicted the same way, and
a peer's run predicted to take longer than ``time_limit`` seconds is recorded as too slow
(with both predictions) instead of made; fobmaml's runs are always made.

Outputs: ``memory.csv`` (one row per point), ``memory.png`` (extra memory against C and
against K, log-log), ``time.png`` (the time of the call, the same axes) and
``settings.json`` (the configuration, the machine, the peers' versions, and the growth
rates read from the rows).
"""

from __future__ import annotations

import csv
import json
import math
import os
import re
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .. import _validation as check
from ._io import environment, new_figure, out_dir, write_json

__all__ = [
    "ESTIMATORS",
    "PEERS",
    "MemoryConfig",
    "points",
    "num_params",
    "predict",
    "run",
    "summarize",
    "plot",
]

#: The estimators measured, under the names of :data:`fobmaml.peers.problems.ESTIMATORS`.
ESTIMATORS = ("MAML", "FOBMAML(symmetric)", "FOMAML")
#: The peers measured when installed, in this order (``torch-higher`` implements MAML only).
PEERS = ("torch-eager", "torch-func", "jax", "torch-higher")

CSV_FIELDS = (
    "implementation",
    "estimator",
    "channels",
    "K",
    "m",
    "n",
    "threads",
    "status",
    "extra_kib",
    "extra_maxrss_kib",
    "baseline_kib",
    "workspace_bytes",
    "predicted_extra_kib",
    "time_s",
    "predicted_time_s",
    "method",
)

_GIB_KIB = 2**20  # KiB in a GiB


@dataclass(frozen=True)
class MemoryConfig:
    """Every setting of ``fobmaml memory`` (all written to ``settings.json``)."""

    channels: tuple[int, ...] = (16, 32, 64, 128, 256)  # sweep (a)
    channels_steps: int = 10  # K of sweep (a)
    steps: tuple[int, ...] = (5, 10, 20, 40, 80)  # sweep (b)
    steps_channels: int = 256  # C of sweep (b)
    estimators: tuple[str, ...] = ESTIMATORS
    peers: tuple[str, ...] = PEERS  # run those installed
    meta_batch: int = 16
    n_way: int = 5
    k_shot: int = 5
    q_query: int = 5
    lr: float = 0.1
    lam: float = 2.0
    num_samples: int = 5000
    limit_gib: float = 16.0  # skip a run predicted to need more extra memory than this
    time_limit: float = 900.0  # skip a peer's run predicted to take longer than this (s)
    timeout: float = 1800.0  # seconds one run may take
    threads: int = 0  # threads of every implementation: 0 = each at its own default
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls) -> MemoryConfig:
        """A version of seconds per point for smoke tests: small C and K, fobmaml only."""
        return cls(
            channels=(8, 16),
            channels_steps=5,
            steps=(5, 40),
            steps_channels=32,
            peers=(),
            num_samples=1000,
            quick=True,
        )

    def __post_init__(self) -> None:
        for name in ("channels", "steps"):
            values = getattr(self, name)
            if isinstance(values, (str, bytes)) or not isinstance(values, Sequence) or not values:
                raise ValueError(f"`{name}` must be a non-empty sequence of ints >= 1")
            object.__setattr__(self, name, tuple(check.integer(v, name, minimum=1) for v in values))
        for name in ("channels_steps", "steps_channels", "meta_batch", "k_shot", "q_query"):
            check.integer(getattr(self, name), name, minimum=1)
        check.integer(self.n_way, "n_way", minimum=2, maximum=10)
        check.integer(self.threads, "threads", minimum=0)
        for name in ("limit_gib", "time_limit", "timeout", "lr", "lam"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
                raise ValueError(f"`{name}` must be a finite number > 0 (got {value!r})")
        from ..peers import IMPLEMENTATIONS
        from ..peers.problems import ESTIMATORS as KNOWN

        for est in self.estimators:
            if est not in KNOWN:
                raise ValueError(f"`estimators` must be taken from {KNOWN} (got {est!r})")
        for peer in self.peers:
            if peer not in IMPLEMENTATIONS:
                raise ValueError(f"`peers` must be taken from {IMPLEMENTATIONS} (got {peer!r})")


def points(cfg: MemoryConfig) -> list[tuple[int, int]]:
    """The distinct (C, K) points of the two sweeps, in the order they run: sweep (a) by
    growing C, then sweep (b) by growing K (the point they share runs once)."""
    out: list[tuple[int, int]] = []
    for p in [(c, cfg.channels_steps) for c in sorted(cfg.channels)] + [
        (cfg.steps_channels, k) for k in sorted(cfg.steps)
    ]:
        if p not in out:
            out.append(p)
    return out


def num_params(channels: int, n_way: int = 5) -> int:
    """n of the MNIST-1D CNN: two Conv1d layers (kernels 5 and 3) and the linear head."""
    C = channels
    return (C * 1 * 5 + C) + (C * C * 3 + C) + (n_way * C * 5 + n_way)


# -- one measurement, in a fresh process --------------------------------------------------------
def _status_kib() -> dict[str, int]:
    """VmRSS and VmHWM (the peak) of this process, KiB, from /proc/self/status ({} elsewhere)."""
    try:
        text = Path("/proc/self/status").read_text()
    except OSError:
        return {}
    out = {}
    for key in ("VmRSS", "VmHWM"):
        match = re.search(rf"^{key}:\s+(\d+)\s+kB", text, re.MULTILINE)
        if match:
            out[key] = int(match.group(1))
    return out


def _reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if it cannot."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _problem(spec: dict):
    from fobmaml.peers import problems as P

    return P.mnist1d_cnn(
        spec["K"],
        channels=spec["channels"],
        n_way=spec["n_way"],
        k_shot=spec["k_shot"],
        q_query=spec["q_query"],
        meta_batch=spec["meta_batch"],
        lr=spec["lr"],
        lam=spec["lam"],
        num_samples=spec["num_samples"],
        seed=spec["seed"],
    )


def _save_episodes(spec: dict, path: Path) -> None:
    """Draw the episodes once (as :func:`fobmaml.peers.problems.mnist1d_cnn` does; they do
    not depend on C or K) and save them for the measuring processes."""
    t = _problem({**spec, "channels": 1, "K": 1}).tasks
    np.savez(path, Xs=t.X_support, Ys=t.Y_support, Xq=t.X_query, Yq=t.Y_query)


def _child(spec: dict) -> dict:
    """Build one point's tasks and estimator, then measure one meta-gradient call."""
    import resource

    import fobmaml as fm
    from fobmaml import peers
    from fobmaml.peers import problems as P

    if spec["threads"]:
        fm.set_num_threads(spec["threads"])
    if spec.get("episodes"):  # the episodes the parent drew, the same for every C and K
        with np.load(spec["episodes"]) as d:
            Xs, Ys, Xq, Yq = (np.ascontiguousarray(d[k]) for k in ("Xs", "Ys", "Xq", "Yq"))
        net = P.cnn(spec["channels"], spec["n_way"])
        tasks = fm.NetTasks(Xs, Ys, Xq, Yq, net=net, loss="xent")
        inner = fm.InnerLoop(steps=spec["K"], lr=spec["lr"], lam=spec["lam"])
        problem = P.network(
            f"mnist1d-cnn-C{spec['channels']}-K{spec['K']}", tasks, inner, seed=spec["seed"]
        )
    else:
        problem = _problem(spec)
    impl, name = spec["implementation"], spec["estimator"]
    out: dict = {"n": problem.dim, "m": problem.num_tasks}
    if impl.startswith("torch") and spec["threads"]:
        import torch

        torch.set_num_threads(spec["threads"])
    if impl == "fobmaml":
        est = P.fobmaml_estimator(name, problem.inner)
        out["workspace_bytes"] = est.workspace_bytes(problem.tasks)
        out["threads"] = fm.get_num_threads()
        x0, tasks = problem.x0, problem.tasks

        def call():
            return est.meta_gradient(x0, tasks)

    else:
        mod = peers.load(impl)
        if name not in mod.ESTIMATORS:
            return {**out, "status": "not implemented"}
        call = getattr(mod, "build_compiled", mod.build)(problem, name)
        out["settings"] = mod.settings()
    reset = _reset_peak()
    before = _status_kib()
    maxrss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    result = call()
    seconds = time.perf_counter() - t0
    maxrss_after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    after = _status_kib()
    if impl != "fobmaml":
        result = mod.to_numpy(result)
    if not np.isfinite(np.asarray(result)).all():
        return {**out, "status": "non-finite meta-gradient"}
    peak_method = reset and "VmRSS" in before and "VmHWM" in after
    out.update(
        status="ok",
        time_s=seconds,
        extra_maxrss_kib=maxrss_after - maxrss_before,
        baseline_kib=before.get("VmRSS", maxrss_before),
        extra_kib=(after["VmHWM"] - before["VmRSS"])
        if peak_method
        else maxrss_after - maxrss_before,
        method="peak reset" if peak_method else "ru_maxrss",
    )
    return out


def child_main(argv: Sequence[str]) -> int:
    """Entry point of a measuring process: one JSON spec in, one JSON line out."""
    print(json.dumps(_child(json.loads(argv[0]))), flush=True)
    return 0


_CHILD = (
    "import sys; from fobmaml.experiments.memory import child_main; "
    "sys.exit(child_main(sys.argv[1:]))"
)


def thread_environment(threads: int) -> dict[str, str]:
    """The environment of a measuring process: with ``threads`` > 0, every runtime on that
    many threads (OpenMP, MKL, and XLA's CPU pool; torch is also set in the process)."""
    env = dict(os.environ)
    if threads:
        env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        multi = "true" if threads > 1 else "false"
        env["XLA_FLAGS"] = (
            env.get("XLA_FLAGS", "")
            + f" --xla_cpu_multi_thread_eigen={multi} intra_op_parallelism_threads={threads}"
        ).strip()
    return env


def measure(spec: dict, timeout: float) -> dict:
    """Run one point in a fresh process; its JSON result, or a status saying why not."""
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _CHILD, json.dumps(spec)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=thread_environment(int(spec.get("threads", 0))),
        )
    except subprocess.TimeoutExpired:
        return {"status": f"timeout after {timeout:g} s"}
    if proc.returncode < 0:
        return {"status": f"killed by signal {-proc.returncode} (out of memory?)"}
    lines = proc.stdout.strip().splitlines()
    if proc.returncode != 0 or not lines:
        last = proc.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"status": f"failed: {last[0][:300]}"}
    return json.loads(lines[-1])


# -- prediction ---------------------------------------------------------------------------------
def _measured(rows: Sequence[dict], impl: str, est: str, key: str) -> dict[tuple[int, int], float]:
    return {
        (int(r["channels"]), int(r["K"])): float(r[key])
        for r in rows
        if r["implementation"] == impl
        and r["estimator"] == est
        and r.get("status") == "ok"
        and r.get(key) not in (None, "")
    }


def _in_k(known: dict[int, float], K: int) -> float:
    """Extra memory at K from measurements at other K of the same C: the least-squares line
    through them (two or more), or proportional to K from one (never below it)."""
    ks = sorted(known)
    if len(ks) == 1:
        return known[ks[0]] * max(K / ks[0], 1.0)
    slope, icpt = np.polyfit(np.array(ks, float), np.array([known[k] for k in ks]), 1)
    return max(float(slope * K + icpt), max(known.values()) if K >= ks[-1] else 0.0)


def predict(
    rows: Sequence[dict], impl: str, est: str, channels: int, K: int, key: str = "extra_kib"
) -> float | None:
    """The extra peak memory (KiB) of `impl` `est` at (channels, K), from the rows measured
    (or, with ``key="time_s"``, the time of the call, s).

    At a C with measurements: linear in K (:func:`_in_k`). At a new C: the prediction at K
    for the largest smaller C measured, scaled by ``(C / C_below)**p``, with p the log-log
    slope between the two largest smaller C (clamped to [1, 2]: activations grow like C,
    parameters like C^2), or p = 2 with only one. None when nothing smaller was measured.

    >>> rows = [{"implementation": "jax", "estimator": "MAML", "channels": c, "K": k,
    ...          "status": "ok", "extra_kib": e} for c, k, e in
    ...         [(16, 10, 100.0), (32, 10, 200.0), (256, 5, 900.0), (256, 10, 1000.0)]]
    >>> [round(predict(rows, "jax", "MAML", c, k), 6) for c, k in [(64, 10), (256, 20)]]
    [400.0, 1200.0]
    >>> predict(rows, "jax", "MAML", 8, 10) is None
    True
    """
    seen = _measured(rows, impl, est, key)
    by_c: dict[int, dict[int, float]] = {}
    for (c, k), e in seen.items():
        by_c.setdefault(c, {})[k] = e
    if channels in by_c:
        return _in_k(by_c[channels], K)
    below = sorted(c for c in by_c if c < channels)
    if not below:
        return None
    c1 = below[-1]
    e1 = _in_k(by_c[c1], K)
    p = 2.0
    if len(below) >= 2:
        c0 = below[-2]
        e0 = _in_k(by_c[c0], K)
        if e0 > 0 and e1 > 0:
            p = min(max(math.log(e1 / e0) / math.log(c1 / c0), 1.0), 2.0)
    return e1 * (channels / c1) ** p


# -- the run ------------------------------------------------------------------------------------
def available_peers(names: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """The peers of `names` whose packages are installed, and why the others are skipped."""
    from .. import peers

    ok, skipped = [], {}
    for name in names:
        lacking = peers.missing(name)
        if lacking:
            skipped[name] = f"not installed: {', '.join(lacking)}"
        else:
            ok.append(name)
    return ok, skipped


def _fmt_row(r: dict) -> str:
    head = f"{r['implementation']:12s} {r['estimator']:18s} C={r['channels']:4d} K={r['K']:3d}"
    if r["status"] != "ok":
        guess = r.get("predicted_extra_kib")
        more = (
            f" (memory predicted {guess / 1024:.0f} MiB)" if guess and "slow" in r["status"] else ""
        )
        return f"{head}: {r['status']}{more}"
    text = f"{head}: {r['extra_kib'] / 1024:9.1f} MiB extra, {r['time_s']:8.3f} s"
    if r.get("workspace_bytes") not in (None, ""):
        text += f"  (workspace {r['workspace_bytes'] / 2**20:.1f} MiB)"
    if r.get("predicted_extra_kib") not in (None, ""):
        text += f"  (predicted {r['predicted_extra_kib'] / 1024:.1f} MiB)"
    return text


def run(
    out: str | Path, cfg: MemoryConfig | None = None, progress: bool = True, resume: bool = False
) -> dict:
    """Measure every point and write ``memory.csv``, the plots and ``settings.json``.

    With `resume`, the rows of an existing ``memory.csv`` in `out` that were measured (or
    skipped as predicted past a limit) are kept instead of run again; they must come from
    the same settings. The episodes are drawn once, here, and read by every measuring
    process (they do not depend on C or K).
    """
    cfg = cfg or MemoryConfig()
    out = out_dir(out)
    t_start = time.perf_counter()
    impls, skipped = available_peers(cfg.peers)
    impls = ["fobmaml", *impls]
    rows: list[dict] = []
    settings: dict[str, dict] = {}
    done: dict[tuple, dict] = {}
    if resume and (out / "memory.csv").exists():
        for r in read_csv(out / "memory.csv"):
            if r["status"] == "ok" or r["status"].startswith(("out of memory", "too slow")):
                done[(r["implementation"], r["estimator"], r["channels"], r["K"])] = r
    base = {k: v for k, v in asdict(cfg).items() if not isinstance(v, tuple)}
    scratch = tempfile.TemporaryDirectory(prefix="fobmaml-memory-")
    episodes = Path(scratch.name) / "episodes.npz"
    _save_episodes(base, episodes)
    limit_kib = cfg.limit_gib * _GIB_KIB
    for channels, K in points(cfg):
        for est in cfg.estimators:
            for impl in impls:
                if impl == "torch-higher" and est != "MAML":
                    continue
                row = {"implementation": impl, "estimator": est, "channels": channels, "K": K}
                if (impl, est, channels, K) in done:
                    rows.append(done[(impl, est, channels, K)])
                    continue
                guess = predict(rows, impl, est, channels, K)
                slow = predict(rows, impl, est, channels, K, key="time_s")
                row["predicted_extra_kib"] = guess
                row["predicted_time_s"] = slow
                if guess is not None and guess > limit_kib:
                    row["status"] = (
                        f"out of memory (predicted {guess / _GIB_KIB:.3g} GiB > "
                        f"{cfg.limit_gib:g} GiB; not run)"
                    )
                elif impl != "fobmaml" and slow is not None and slow > cfg.time_limit:
                    row["status"] = (
                        f"too slow (predicted {slow:.0f} s > {cfg.time_limit:g} s; not run)"
                    )
                else:
                    spec = {
                        **base,
                        "episodes": str(episodes),
                        "implementation": impl,
                        "estimator": est,
                        "channels": channels,
                        "K": K,
                    }
                    result = measure(spec, cfg.timeout)
                    if "settings" in result:
                        settings.setdefault(impl, result.pop("settings"))
                    row.update(result)
                rows.append(row)
                _write_csv(out / "memory.csv", rows)  # after every run: a partial run is kept
                if progress:
                    print(_fmt_row(row), flush=True)
    scratch.cleanup()
    summary = summarize(rows, cfg)
    plot(rows, cfg, out / "memory.png", "memory")
    plot(rows, cfg, out / "time.png", "time")
    seconds = time.perf_counter() - t_start
    write_json(
        out / "settings.json",
        {
            "config": asdict(cfg),
            "points": points(cfg),
            "environment": environment(),
            "peers": settings,
            "peers_skipped": skipped,
            "how": "extra peak RSS of one call in a fresh process (peak reset, then VmHWM "
            "after the call minus VmRSS before it); time: that call's wall time",
            "summary": summary,
            "seconds": seconds,
        },
    )
    if progress:
        _print_summary(summary)
        print(f"wrote {out}/memory.csv, memory.png, time.png, settings.json in {seconds:.0f} s")
    return {"rows": rows, "summary": summary, "seconds": seconds}


def _write_csv(path: Path, rows: Sequence[dict]) -> None:
    with open(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if r.get(k) is None else r.get(k, "")) for k in CSV_FIELDS})


def read_csv(path: str | Path) -> list[dict]:
    """The rows of a ``memory.csv``, numbers as numbers (empty cells as None)."""
    ints = {"channels", "K", "m", "n", "threads", "workspace_bytes"}
    floats = {
        "extra_kib",
        "extra_maxrss_kib",
        "baseline_kib",
        "predicted_extra_kib",
        "time_s",
        "predicted_time_s",
    }
    rows = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            for k in ints | floats:
                v = r.get(k)
                r[k] = None if v in (None, "") else (int(float(v)) if k in ints else float(v))
            rows.append(r)
    return rows


# -- reading the rows ----------------------------------------------------------------------------
def _slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0])


def summarize(rows: Sequence[dict], cfg: MemoryConfig) -> dict:
    """The growth rates, read from the rows, per (implementation, estimator).

    - ``per_step_mib``: the least-squares slope of the extra memory in K at C =
      ``steps_channels`` (MiB per inner step), and ``growth_mib``: its change from the
      smallest to the largest K (None if either was not measured);
    - ``channel_exponent``: the log-log slope of the extra memory in C at K =
      ``channels_steps`` (1: linear in C, 2: quadratic), over the points above 1 MiB;
    - for fobmaml, the same growth of the predicted workspace, and their ratio.
    """
    out: dict[str, dict] = {}
    keys = dict.fromkeys((r["implementation"], r["estimator"]) for r in rows)
    k_lo, k_hi = min(cfg.steps), max(cfg.steps)
    for impl, est in keys:
        sel = [
            r
            for r in rows
            if r["implementation"] == impl and r["estimator"] == est and r["status"] == "ok"
        ]
        along_k = sorted(
            (r["K"], r["extra_kib"] / 1024, r.get("workspace_bytes"))
            for r in sel
            if r["channels"] == cfg.steps_channels and r["K"] in cfg.steps
        )
        along_c = sorted(
            (r["channels"], r["extra_kib"] / 1024)
            for r in sel
            if r["K"] == cfg.channels_steps and r["channels"] in cfg.channels
        )
        entry: dict = {
            "measured_K": [k for k, _, _ in along_k],
            "measured_channels": [c for c, _ in along_c],
        }
        if len(along_k) >= 2:
            entry["per_step_mib"] = _slope([k for k, _, _ in along_k], [e for _, e, _ in along_k])
        ends = {k: (e, w) for k, e, w in along_k}
        if k_lo in ends and k_hi in ends and k_lo != k_hi:
            entry["growth_mib"] = ends[k_hi][0] - ends[k_lo][0]
            if ends[k_hi][1] is not None and ends[k_lo][1] is not None:
                predicted = (ends[k_hi][1] - ends[k_lo][1]) / 2**20
                entry["predicted_growth_mib"] = predicted
                if predicted > 0:
                    entry["measured_over_predicted"] = entry["growth_mib"] / predicted
        big = [(c, e) for c, e in along_c if e > 1.0]
        if len(big) >= 2:
            entry["channel_exponent"] = _slope(
                [math.log(c) for c, _ in big], [math.log(e) for _, e in big]
            )
        out[f"{impl} {est}"] = entry
    return out


def _print_summary(summary: dict) -> None:
    print("\ngrowth of the extra peak memory (read from memory.csv):")
    for key, v in summary.items():
        parts = []
        if "per_step_mib" in v:
            parts.append(f"{v['per_step_mib']:+.3f} MiB per inner step")
        if "growth_mib" in v:
            parts.append(f"{v['growth_mib']:+.2f} MiB over the K sweep")
        if "predicted_growth_mib" in v:
            parts.append(f"workspace {v['predicted_growth_mib']:+.2f} MiB")
        if "channel_exponent" in v:
            parts.append(f"~ C^{v['channel_exponent']:.2f}")
        print(f"  {key:32s} " + ("; ".join(parts) or "too few points"))


# -- plots --------------------------------------------------------------------------------------
COLORS = {
    "fobmaml": "#c44e52",
    "torch-eager": "#4c72b0",
    "torch-func": "#55a868",
    "jax": "#8172b2",
    "torch-higher": "#dd8452",
}
STYLES = {"MAML": ("D", "--"), "FOBMAML(symmetric)": ("o", "-"), "FOMAML": ("s", ":")}
FLOOR_MIB = 0.05  # zero growth is drawn at this floor (log scale)


def plot(rows: Sequence[dict], cfg: MemoryConfig, path: Path, what: str = "memory") -> None:
    """Extra memory (``what="memory"``) or time (``"time"``) against C and against K, log-log.

    Skipped runs (predicted out of memory) are drawn as open markers at their prediction.
    """
    from matplotlib.ticker import NullFormatter

    fig, axes = new_figure(2, 5.0, 4.6)
    sweeps = [
        ("channels", "channels C", lambda r: r["K"] == cfg.channels_steps, cfg.channels),
        ("K", "inner steps K", lambda r: r["channels"] == cfg.steps_channels, cfg.steps),
    ]
    keys = list(dict.fromkeys((r["implementation"], r["estimator"]) for r in rows))
    for ax, (field, label, on_sweep, values) in zip(axes, sweeps):
        for impl, est in keys:
            sel = sorted(
                (r for r in rows if r["implementation"] == impl and r["estimator"] == est),
                key=lambda r: r[field],
            )
            sel = [r for r in sel if on_sweep(r) and r[field] in values]
            marker, ls = STYLES.get(est, ("o", "-"))
            color = COLORS.get(impl)
            ok = [r for r in sel if r["status"] == "ok"]
            if what == "memory":
                pts = [(r[field], max(r["extra_kib"] / 1024, FLOOR_MIB)) for r in ok]
            else:
                pts = [(r[field], r["time_s"]) for r in ok]
            if pts:
                ax.plot(
                    *zip(*pts),
                    marker=marker,
                    ls=ls,
                    color=color,
                    lw=2.0 if impl == "fobmaml" else 1.2,
                    ms=4,
                    label=f"{impl}: {est}",
                )
            oom = [
                (r[field], r["predicted_extra_kib"] / 1024)
                for r in sel
                if r["status"].startswith(("out of memory", "too slow"))
                and r.get("predicted_extra_kib")
            ]
            if oom and what == "memory":
                ax.plot(*zip(*oom), marker=marker, ls="none", mfc="none", color=color, ms=6)
        top = max((line.get_ydata().max() for line in ax.get_lines()), default=0.0)
        if what == "memory" and top > cfg.limit_gib * 1024 / 20:  # the limit, when near
            ax.axhline(cfg.limit_gib * 1024, color="k", lw=0.8, ls=":")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xticks(list(values))
        ax.set_xticklabels([str(v) for v in values])
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        fixed = f"K = {cfg.channels_steps}" if field == "channels" else f"C = {cfg.steps_channels}"
        ax.set_title(f"{fixed}, m = {cfg.meta_batch}", fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel(
        f"extra peak RSS of one call, MiB (< {FLOOR_MIB}: drawn at {FLOOR_MIB})"
        if what == "memory"
        else "wall time of one call, s"
    )
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=7)
    title = (
        "Extra peak memory of one meta-gradient, MNIST-1D CNN (open markers: predicted, "
        f"not run; dotted: the {cfg.limit_gib:g} GiB limit)"
        if what == "memory"
        else "Time of one meta-gradient (one call in a fresh process), MNIST-1D CNN"
    )
    fig.suptitle(title, fontsize=9)
    fig.savefig(path, dpi=140)


def replot(out: str | Path, cfg: MemoryConfig | None = None) -> None:
    """Redraw the plots of `out` from its ``memory.csv`` (and the settings' configuration)."""
    out = Path(out)
    if cfg is None:
        saved = json.loads((out / "settings.json").read_text())["config"]
        cfg = replace(
            MemoryConfig(),
            **{k: tuple(v) if isinstance(v, list) else v for k, v in saved.items()},
        )
    rows = read_csv(out / "memory.csv")
    plot(rows, cfg, out / "memory.png", "memory")
    plot(rows, cfg, out / "time.png", "time")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(child_main(sys.argv[1:]))
