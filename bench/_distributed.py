"""The body of ``bench/distributed.py``: the Dask executor against in-process.

Two cases, meta-trained with FO-B-MAML (symmetric) and plain GD:

- ``quadratic``: a fixed batch, ``quadratic_tasks(16, 1000, kappa=100, seed=0)``, K = 20
  (lr 0.5, lambda 1): 128 MB of task data, sent to the workers once;
- ``sinusoid``: the sampler ``sinusoid(64)`` ([1, 40, 40, 1] tanh; K = 10, lr 0.025,
  lambda 20): a fresh batch of 64 tasks per iteration, drawn on the workers.

**Time per iteration.** The same ``meta_train`` run (T iterations, so T + 1 records) in
this process on all cores, and with a ``DaskExecutor`` on a ``LocalCluster`` with one
single-threaded worker per core: the same total cores. The runs alternate (in-process,
Dask, in-process, ...) and each side's median wall time per record is reported, with the
ratio Dask / in-process. A warm-up run of each comes first (it also places the fixed
batch on the workers: that one-off is reported apart).

**Bytes per iteration.** ``distributed.comm.tcp.TCP.write`` is wrapped in every process
(the client's, which also runs the scheduler, and each worker's) to count the bytes each
process writes to each peer: every byte that moves is counted once, by its writer, whatever
the path (client to scheduler, scheduler to workers, worker to worker, and back). The count
over one timed run, divided by its records, is the traffic per iteration; the traffic of
an idle cluster over the same time (heartbeats) is measured apart and reported. For
comparison: the pickled size of one batch, which a design that shipped the batch from the
client every iteration would send.

**Projection to 1-64 workers** (a projection, not a measurement): for W workers (shards),

    T(W) = o + b (W - 2) + ceil(m / W) c,

with ``c`` the measured time of one task on one thread (in-process, ``fm.num_threads(1)``),
``o`` the measured overhead of the two-worker runs (their time per record minus the
slowest shard's compute time), and ``b`` the measured extra round-trip cost of one more
shard (a fit of the time of calls on a tiny batch cut into 1 ... 16 shards, on this
cluster). It assumes identical workers, tasks of equal cost, and the network of this
machine (loopback); a real network adds its latency to ``o`` and the bytes above divided
by its bandwidth.
"""

from __future__ import annotations

import argparse
import math
import pickle
import statistics
import time
from pathlib import Path

import numpy as np
from _measure import load_average, machine, write_json

import fobmaml as fm

# -- counting the bytes that move ----------------------------------------------------------
_COUNTS: dict = {}


def install_counter() -> bool:
    """Wrap TCP.write in this process to count the bytes written per (local, peer) address."""
    from distributed.comm import tcp

    if getattr(tcp.TCP.write, "_fobmaml_counter", False):
        return False
    original = tcp.TCP.write

    async def write(self, msg, serializers=None, on_error="message"):
        n = await original(self, msg, serializers=serializers, on_error=on_error)
        key = (self.local_address, self.peer_address)
        _COUNTS[key] = _COUNTS.get(key, 0) + int(n)
        return n

    write._fobmaml_counter = True
    tcp.TCP.write = write
    return True


def read_counter(reset: bool = True) -> dict:
    out = {f"{a}|{b}": n for (a, b), n in _COUNTS.items()}
    if reset:
        _COUNTS.clear()
    return out


def traffic(client, scheduler: str) -> dict:
    """Bytes written since the last call, by route; and the total.

    The client and a LocalCluster's scheduler share a process: there, writes to the
    scheduler's address are the client's, writes to the client's own connection addresses
    are the scheduler's replies, and the rest go to workers (the scheduler's messages, and
    data the client or the scheduler forwards). Everything a worker writes goes to the
    client's process or to another worker.
    """
    workers = set(client.nthreads())
    here = read_counter()
    client_ends = {pair.split("|")[0] for pair in here if pair.split("|")[1] == scheduler}
    out = {
        "client -> scheduler": 0,
        "scheduler -> client": 0,
        "client process -> workers": 0,
        "workers -> client process": 0,
        "worker -> worker": 0,
    }
    for pair, n in here.items():
        peer = pair.split("|")[1]
        if peer == scheduler:
            out["client -> scheduler"] += n
        elif peer in client_ends:
            out["scheduler -> client"] += n
        else:
            out["client process -> workers"] += n
    for per_worker in client.run(read_counter).values():
        for pair, n in per_worker.items():
            peer = pair.split("|")[1]
            out["worker -> worker" if peer in workers else "workers -> client process"] += n
    out["total"] = sum(out.values())
    return out


# -- the cases -----------------------------------------------------------------------------
def cases(quick: bool) -> dict:
    if quick:
        quad = fm.datasets.quadratic_tasks(4, 60, kappa=100.0, seed=0)
        sampler = fm.datasets.sinusoid(8, layers=[1, 10, 10, 1], activation="tanh")
        layers = [1, 10, 10, 1]
    else:
        quad = fm.datasets.quadratic_tasks(16, 1000, kappa=100.0, seed=0)
        sampler = fm.datasets.sinusoid(64, layers=[1, 40, 40, 1], activation="tanh")
        layers = [1, 40, 40, 1]
    return {
        "quadratic": {
            "tasks": quad,
            "estimator": fm.FOBMAML(fm.InnerLoop(steps=20, lr=0.5, lam=1.0), scheme="symmetric"),
            "x0": np.zeros(quad.dim),
            "lr": 0.1,
            "describe": f"quadratic_tasks({quad.num_tasks}, {quad.dim}, kappa=100), K=20, fixed",
        },
        "sinusoid": {
            "tasks": sampler,
            "estimator": fm.FOBMAML(
                fm.InnerLoop(steps=10, lr=0.025, lam=20.0), delta=1e-3, scheme="symmetric"
            ),
            "x0": fm.mlp.init_params(layers, seed=0),
            "lr": 1e-3,
            "describe": f"sinusoid({sampler.meta_batch}), {layers} tanh, K=10, sampler",
        },
    }


def _run(case: dict, iterations: int, executor=None) -> tuple[float, fm.TrainResult]:
    start = time.perf_counter()
    res = fm.meta_train(
        case["x0"],
        case["tasks"],
        case["estimator"],
        fm.GD(case["lr"]),
        iterations,
        seed=0,
        progress=False,
        executor=executor,
    )
    return (time.perf_counter() - start) / (iterations + 1), res


def _one_batch(case: dict):
    tasks = case["tasks"]
    return tasks if isinstance(tasks, fm.TaskBatch) else tasks(np.random.default_rng(0))


def per_task_seconds(case: dict, repeat: int) -> float:
    """c: the time of one task on one thread (the batch's median time divided by m)."""
    batch, est, x = _one_batch(case), case["estimator"], case["x0"]
    times = []
    with fm.num_threads(1):
        for _ in range(repeat):
            start = time.perf_counter()
            est.value_and_gradient(x, batch)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / batch.num_tasks


def shard_overhead(executor_cls, client, repeat: int) -> dict:
    """b: the extra cost of one more shard, from calls on a tiny batch in 1 ... 16 shards."""
    tasks = fm.datasets.quadratic_tasks(16, 4, kappa=2.0, seed=0)
    est, x = fm.FOMAML(fm.InnerLoop(steps=1, lr=0.1)), np.zeros(4)
    rows = {}
    for shards in (1, 2, 4, 8, 16):
        with executor_cls(client, shards=shards) as ex:
            ex.meta_gradient(est, x, tasks)  # places the batch
            times = []
            for _ in range(max(5, repeat * 3)):
                start = time.perf_counter()
                ex.meta_gradient(est, x, tasks)
                times.append(time.perf_counter() - start)
        rows[shards] = statistics.median(times)
    s = np.array(list(rows), dtype=float)
    t = np.array(list(rows.values()))
    slope, intercept = np.polyfit(s, t, 1)
    return {"seconds_by_shards": rows, "per_shard_s": float(slope), "intercept_s": float(intercept)}


def project(m: int, c: float, o2: float, b: float, workers=(1, 2, 4, 8, 16, 32, 64)) -> list:
    rows = []
    t1 = None
    for w in workers:
        t = o2 + b * (w - 2) + math.ceil(m / w) * c
        t1 = t if t1 is None else t1
        rows.append({"workers": w, "seconds_per_iteration": t, "speedup_vs_1": t1 / t})
    return rows


def measure(quick: bool, repeat: int, iterations: int, workers: int) -> dict:
    from dask.distributed import Client, LocalCluster

    from fobmaml.distributed import DaskExecutor

    out = {"cases": {}, "load_average_before": load_average()}
    with (
        LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            worker_dashboard_address=None,
        ) as cluster,
        Client(cluster) as client,
    ):
        scheduler = cluster.scheduler_address
        install_counter()
        client.run(install_counter)
        client.wait_for_workers(workers)
        time.sleep(1.0)
        traffic(client, scheduler)  # reset
        idle_start = time.perf_counter()
        time.sleep(3.0)
        idle = traffic(client, scheduler)
        idle_rate = idle["total"] / (time.perf_counter() - idle_start)
        overhead = shard_overhead(DaskExecutor, client, repeat)
        for name, case in cases(quick).items():
            print(f"{name}: {case['describe']}", flush=True)
            with DaskExecutor(client) as ex:
                traffic(client, scheduler)
                first = time.perf_counter()
                _, want = _run(case, 1)
                _, got = _run(case, 1, ex)  # warm-up; places a fixed batch on the workers
                placement = traffic(client, scheduler)
                placement_s = time.perf_counter() - first
                same = bool(np.array_equal(want.x, got.x))
                local, dask, runs = [], [], []
                for _ in range(repeat):
                    t, res_local = _run(case, iterations)
                    local.append(t)
                    traffic(client, scheduler)
                    t0 = time.perf_counter()
                    t, res_dask = _run(case, iterations, ex)
                    wall = time.perf_counter() - t0
                    dask.append(t)
                    runs.append((traffic(client, scheduler), wall))
                    same = same and bool(np.array_equal(res_local.x, res_dask.x))
            records = iterations + 1
            bytes_per_iteration = {
                k: statistics.median(r[k] / records for r, _ in runs if k in r) for k in runs[0][0]
            }
            idle_per_iteration = idle_rate * statistics.median(w for _, w in runs) / records
            batch = _one_batch(case)
            m = batch.num_tasks
            c = per_task_seconds(case, repeat)
            shard_compute = math.ceil(m / workers) * c
            o2 = statistics.median(dask) - shard_compute
            out["cases"][name] = {
                "describe": case["describe"],
                "m": m,
                "n": batch.dim,
                "iterations": iterations,
                "repeat": repeat,
                "bit_identical": same,
                "in_process_s_per_iteration": statistics.median(local),
                "dask_s_per_iteration": statistics.median(dask),
                "ratio_dask_over_in_process": statistics.median(dask) / statistics.median(local),
                "all_in_process_s": local,
                "all_dask_s": dask,
                "bytes_per_iteration": bytes_per_iteration,
                "idle_bytes_per_iteration_estimate": idle_per_iteration,
                "one_batch_pickled_bytes": len(pickle.dumps(batch, protocol=5)),
                "result_rows_bytes": 8 * m * batch.dim,
                "first_run_bytes_incl_placement": placement,
                "first_runs_s": placement_s,
                "per_task_one_thread_s": c,
                "overhead_at_2_workers_s": o2,
                "projection": project(m, c, o2, overhead["per_shard_s"]),
            }
            r = out["cases"][name]
            print(
                f"  in-process {r['in_process_s_per_iteration'] * 1e3:.1f} ms, Dask "
                f"{r['dask_s_per_iteration'] * 1e3:.1f} ms per iteration: "
                f"{r['ratio_dask_over_in_process']:.2f}x; "
                f"{bytes_per_iteration['total'] / 1e3:.1f} kB moved per iteration (one batch "
                f"pickled: {r['one_batch_pickled_bytes'] / 1e3:.0f} kB); bit-identical: {same}",
                flush=True,
            )
    out["idle_bytes_per_s"] = idle_rate
    out["shard_overhead"] = overhead
    out["workers"] = workers
    out["load_average_after"] = load_average()
    return out


def write_projection(path: Path, data: dict) -> None:
    lines = ["case,workers,projected_s_per_iteration,projected_speedup_vs_1_worker"]
    for name, case in data["cases"].items():
        for row in case["projection"]:
            lines.append(
                f"{name},{row['workers']},{row['seconds_per_iteration']:.6g},"
                f"{row['speedup_vs_1']:.3f}"
            )
    path.write_text("\n".join(lines) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/distributed"))
    parser.add_argument("--quick", action="store_true", help="small cases, for a smoke test")
    parser.add_argument("--repeat", type=int, default=5, help="alternating timed runs per side")
    parser.add_argument("--iterations", type=int, default=10, help="iterations per timed run")
    parser.add_argument("--workers", type=int, default=2, help="workers (default: 2, the cores)")
    args = parser.parse_args(argv)
    data = measure(args.quick, args.repeat, args.iterations, args.workers)
    data = {"machine": machine(), "quick": args.quick, **data}
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "distributed.json", data)
    write_projection(args.out / "projection.csv", data)
    print(f"wrote {args.out}/distributed.json and projection.csv")
    return 0
