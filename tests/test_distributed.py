"""fobmaml.distributed.DaskExecutor on a LocalCluster of worker processes.

Every result is compared with the same call in this process, bit for bit: the estimator
calls on a fixed batch, meta_train on a fixed batch and on a sampler (with a reference,
the divergence policies, checkpoints), a run during which a worker is killed with
SIGKILL, runs that lose their scheduler or its connection and resume from their
checkpoint, and a run interrupted by Ctrl-C. One cluster (two workers of one thread)
serves the module; no process or thread outlives a test or the module.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import extras
import numpy as np
import pytest
from train_helpers import assert_same_state, guarded

import fobmaml as fm
from fobmaml.distributed import ClusterError, DaskExecutor
from fobmaml.train import meta_train

distributed = extras.require("dask.distributed")
import dask_helpers  # noqa: E402 - imports Dask: only once it is known to be installed

N = 12
INNER = fm.InnerLoop(steps=20, lr=0.5, lam=1.0)
TASKS = fm.datasets.quadratic_tasks(5, N, kappa=20.0, seed=0)
FOB = fm.FOBMAML(INNER, delta=1e-3, scheme="symmetric")
ESTIMATORS = [FOB, fm.MAML(INNER), fm.FOMAML(INNER), fm.Exact(INNER)]
# Task 4 diverges: its eigenvalue 10 + lam, with lr 0.45, multiplies the error by 4.5 per step.
BAD_INNER = fm.InnerLoop(steps=30, lr=0.45, lam=0.5)
PARTLY_BAD = fm.QuadraticTasks(
    np.concatenate([TASKS.A[:4], 10.0 * np.eye(N)[None]]),
    np.concatenate([TASKS.b[:4], np.ones((1, N))]),
)
LAYERS = [1, 10, 10, 1]
SAMPLER = fm.datasets.sinusoid(5, layers=LAYERS, activation="tanh")
X0_MLP = fm.mlp.init_params(LAYERS, seed=0)
MLP_INNER = fm.InnerLoop(steps=5, lr=0.025, lam=20.0)
MLP_FOB = fm.FOBMAML(MLP_INNER, delta=1e-3, scheme="symmetric")

# Threads whose lifetime is the process's, not a test's: Dask's offload pool, tqdm's monitor.
_GLOBAL_THREADS = ("Dask-Offload", "tqdm_monitor")
# Threads of the module's cluster, which a test may restart a worker of: its nannies watch
# their worker processes from threads of this process (checked when the cluster closes).
_CLUSTER_THREADS = ("AsyncProcess Dask Worker process", "QueueFeederThread")


def _threads(cluster: bool = True) -> set:
    skip = _GLOBAL_THREADS if cluster else _GLOBAL_THREADS + _CLUSTER_THREADS
    return {t for t in threading.enumerate() if not t.name.startswith(skip)}


def _children() -> set:
    """This process's children, but multiprocessing's resource tracker (started once, kept)."""
    psutil = pytest.importorskip("psutil")  # a dependency of distributed
    out = set()
    for p in psutil.Process().children():
        try:
            if "resource_tracker" not in " ".join(p.cmdline()):
                out.add(p.pid)
        except psutil.NoSuchProcess:
            pass
    return out


def _eventually(predicate, timeout=30.0) -> bool:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.fixture(scope="module")
def client():
    threads, children = _threads(), _children()
    cluster = distributed.LocalCluster(
        n_workers=2,
        threads_per_worker=1,
        processes=True,
        dashboard_address=None,
        silence_logs=logging.ERROR,
    )
    with cluster, distributed.Client(cluster) as c:
        yield c
    assert _eventually(lambda: _children() <= children), "worker processes outlived the cluster"
    assert _eventually(lambda: _threads() <= threads), _threads() - threads


def _others(client) -> set:
    """This process's children that are not the cluster's workers (which tests may restart)."""
    return _children() - set(client.run(os.getpid).values())


@pytest.fixture(autouse=True)
def no_leaks(client):
    """No process or thread started by a test outlives it; the cluster is whole again."""
    client.wait_for_workers(2, timeout=60)
    threads, children = _threads(cluster=False), _others(client)
    yield
    assert _eventually(lambda: client.status == "running")
    client.wait_for_workers(2, timeout=60)
    assert _eventually(lambda: _others(client) <= children), "a test left processes behind"
    assert _eventually(lambda: _threads(cluster=False) <= threads), _threads(False) - threads


@pytest.fixture
def executor(client):
    with DaskExecutor(client) as ex:
        yield ex


def _assert_same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def _assert_same_run(got, want):
    _assert_same_bits(got.x, want.x)
    assert got.history.keys() == want.history.keys()
    for key in want.history:
        if key != "time":
            _assert_same_bits(got.history[key], want.history[key])
    assert_same_state(got.state, want.state)
    assert (got.stopped_early, got.skipped_iterations) == (
        want.stopped_early,
        want.skipped_iterations,
    )


# -- results -------------------------------------------------------------------------------
@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
def test_estimator_calls_on_a_fixed_batch_are_bit_identical(executor, est):
    x = np.linspace(-1.0, 1.0, N)
    _assert_same_bits(executor.meta_gradient(est, x, TASKS), est.meta_gradient(x, TASKS))
    _assert_same_bits(executor.task_gradients(est, x, TASKS), est.task_gradients(x, TASKS))
    loss, grad = executor.value_and_gradient(est, x, TASKS)
    want_loss, want_grad = est.value_and_gradient(x, TASKS)
    assert loss == want_loss
    _assert_same_bits(grad, want_grad)


def test_failed_tasks_are_reported_as_in_process(executor):
    est, x = fm.FOBMAML(BAD_INNER, delta=1e-3), np.full(N, 0.5)
    got = executor.estimate(est, x, PARTLY_BAD, losses=True, errors="return")
    want = est.estimate(x, PARTLY_BAD, losses=True, errors="return")
    assert list(want.status.ok) == [True] * 4 + [False]
    for a, b in zip([*got[:3], *got.status], [*want[:3], *want.status]):
        _assert_same_bits(a, b)
    with pytest.raises(FloatingPointError) as in_process:
        est.meta_gradient(x, PARTLY_BAD)
    with pytest.raises(FloatingPointError) as on_cluster:
        executor.meta_gradient(est, x, PARTLY_BAD)
    assert str(on_cluster.value) == str(in_process.value)
    assert "task 4" in str(on_cluster.value)


def test_meta_train_on_a_fixed_batch_is_bit_identical(executor):
    kw = dict(reference=fm.Exact(INNER), progress=False)
    want = meta_train(np.zeros(N), TASKS, FOB, fm.Adam(0.1), 8, **kw)
    _assert_same_run(
        meta_train(np.zeros(N), TASKS, FOB, fm.Adam(0.1), 8, executor=executor, **kw), want
    )


def test_meta_train_on_a_sampler_is_bit_identical(client, tmp_path):
    # Seven shards of five tasks: two shards are empty, and the draws are cut unevenly.
    kw = dict(seed=3, reference=fm.Exact(MLP_INNER), progress=False)
    want = meta_train(X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 6, checkpoint=tmp_path / "a", **kw)
    for shards in (None, 7):
        with DaskExecutor(client, shards=shards) as ex:
            path = tmp_path / f"b{shards}"
            got = meta_train(
                X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 6, executor=ex, checkpoint=path, **kw
            )
        _assert_same_run(got, want)
        # The client's generator advanced exactly as in-process.
        state = fm.load_checkpoint(path).metadata["rng_state"]
        assert state == fm.load_checkpoint(tmp_path / "a").metadata["rng_state"]


def test_divergence_policies_are_unchanged(executor):
    est, args = fm.FOBMAML(BAD_INNER, delta=1e-3), (np.zeros(N), PARTLY_BAD)
    want = meta_train(*args, est, fm.GD(0.1), 4, on_divergence="skip", progress=False)
    got = meta_train(
        *args, est, fm.GD(0.1), 4, on_divergence="skip", progress=False, executor=executor
    )
    _assert_same_run(got, want)
    assert list(got.history["skipped_tasks"]) == [1] * 5
    with pytest.raises(FloatingPointError) as in_process:
        meta_train(*args, est, fm.GD(0.1), 4, progress=False)
    with pytest.raises(FloatingPointError) as on_cluster:
        meta_train(*args, est, fm.GD(0.1), 4, progress=False, executor=executor)
    assert str(on_cluster.value) == str(in_process.value)
    _assert_same_run(on_cluster.value.result, in_process.value.result)


def test_callbacks_see_the_same_records(executor):
    seen = {"in": [], "out": []}

    def recorder(where):
        def callback(t, x, record):
            seen[where].append((t, x.tobytes(), record["meta_loss"]))
            return t == 3

        return callback

    meta_train(X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 9, callback=recorder("in"), progress=False)
    res = meta_train(
        X0_MLP,
        SAMPLER,
        MLP_FOB,
        fm.Adam(1e-2),
        9,
        callback=recorder("out"),
        progress=False,
        executor=executor,
    )
    assert res.stopped_early and len(seen["in"]) == 4 and seen["out"] == seen["in"]


def test_each_worker_runs_its_kernels_on_its_threads(executor):
    settings = executor.settings()
    assert len(settings) == 2
    for info in settings.values():
        # Set by the executor's worker plugin to the worker's nthreads (0 would be automatic).
        assert info == {"version": fm.__version__, "isa": fm.build_info()["isa"], "num_threads": 1}


# -- traffic -------------------------------------------------------------------------------
def _spy(monkeypatch, client):
    """Record what the client scatters and submits."""
    calls = {"scatter": [], "submit": []}
    scatter, submit = client.scatter, client.submit

    def spy_scatter(data, *args, **kwargs):
        calls["scatter"].append(data)
        return scatter(data, *args, **kwargs)

    def spy_submit(fn, *args, **kwargs):
        calls["submit"].append(args)
        return submit(fn, *args, **kwargs)

    monkeypatch.setattr(client, "scatter", spy_scatter)
    monkeypatch.setattr(client, "submit", spy_submit)
    return calls


def _batches_in(args) -> int:
    return sum(isinstance(a, fm.TaskBatch) for a in args)


def test_a_fixed_batch_is_sent_once(monkeypatch, client, executor):
    calls = _spy(monkeypatch, client)
    x = np.zeros(N)
    executor.meta_gradient(FOB, x, TASKS)
    shards = [b for data in calls["scatter"] for b in data]
    assert sorted(b.num_tasks for b in shards) == [2, 3]  # five tasks, two workers
    meta_train(x, TASKS, FOB, fm.Adam(0.1), 5, progress=False, executor=executor)
    assert len(calls["scatter"]) == 2  # nothing more was scattered
    assert len(calls["submit"]) == 2 * 7 and not any(_batches_in(a) for a in calls["submit"])
    executor.release(TASKS)
    executor.meta_gradient(FOB, x, TASKS)
    assert len(calls["scatter"]) == 4  # released, then sent again


def test_a_sampler_is_sent_once_per_run_and_no_batch_ever(monkeypatch, client, executor):
    calls = _spy(monkeypatch, client)
    meta_train(X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 6, progress=False, executor=executor)
    assert [type(d[0]) for d in calls["scatter"]] == [type(SAMPLER)] * 2  # one per worker
    assert len(calls["submit"]) == 2 * 7  # one task per shard and record
    assert not any(_batches_in(a) for a in calls["submit"])


def test_workers_that_draw_different_batches_are_refused(executor):
    with pytest.raises(RuntimeError, match="drew different batches") as info:
        meta_train(
            X0_MLP,
            dask_helpers.unseeded_sampler,
            MLP_FOB,
            fm.GD(0.1),
            3,
            progress=False,
            executor=executor,
        )
    assert len(info.value.result.history["iteration"]) == 0


def test_a_failing_sampler_raises_its_own_error(executor):
    with pytest.raises(ValueError, match="fails on purpose") as info:
        meta_train(
            X0_MLP,
            dask_helpers.failing_sampler,
            MLP_FOB,
            fm.GD(0.1),
            3,
            progress=False,
            executor=executor,
        )
    assert info.value.result.x.tobytes() == X0_MLP.tobytes()


# -- failures ------------------------------------------------------------------------------
@pytest.mark.parametrize("source", ["fixed", "sampler"])
def test_a_worker_killed_mid_run_changes_nothing(client, executor, tmp_path, source):
    # The third shard computation a worker starts (on a fixed batch, or drawing its shard
    # from the sampler) kills it with SIGKILL: its shard is placed on the other worker and
    # computed again.
    prefix = "estimate_shard" if source == "fixed" else "estimate_sampled"
    if source == "fixed":
        args = (np.zeros(N), TASKS, FOB, fm.Adam(0.1), 8)
    else:
        args = (X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 8)
    want = meta_train(*args, progress=False, seed=1)
    before = set(client.nthreads())
    marker = str(tmp_path / "killed")
    client.register_plugin(
        dask_helpers.KillOnce(marker, prefix, 2), name=dask_helpers.KillOnce.name
    )
    try:
        got = meta_train(*args, progress=False, seed=1, executor=executor)
    finally:
        client.unregister_worker_plugin(dask_helpers.KillOnce.name)
    assert os.path.exists(marker)  # a worker was killed
    assert set(client.nthreads()) != before  # and replaced (or still being restarted)
    _assert_same_run(got, want)


def test_a_lost_connection_raises_with_the_partial_result_and_resumes(client, tmp_path):
    path = tmp_path / "run.ckpt"
    args = (X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 8)
    want = meta_train(*args, progress=False)

    def drop_connection(t, x, record):
        if t == 3:  # Dask cancels every future of a client whose connection drops
            sentinel = client.scatter(1)
            client.loop.add_callback(client.scheduler_comm.comm.abort)
            assert _eventually(lambda: sentinel.status == "cancelled", 10)

    with DaskExecutor(client) as ex, pytest.raises(ClusterError, match="connection") as info:
        meta_train(*args, progress=False, callback=drop_connection, checkpoint=path, executor=ex)
    partial = info.value.result
    assert list(partial.history["iteration"]) == [0, 1, 2, 3]
    assert _eventually(lambda: client.status == "running")  # the client reconnects by itself
    with DaskExecutor(client) as ex:
        resumed = meta_train(*args, progress=False, checkpoint=path, resume=True, executor=ex)
    assert resumed.resumed_from == 4
    _assert_same_run(resumed, want)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


_SCHEDULER = """
import time
from dask.distributed import LocalCluster
if __name__ == "__main__":
    cluster = LocalCluster(
        n_workers=1, threads_per_worker=1, dashboard_address=None, worker_dashboard_address=None
    )
    print(cluster.scheduler_address, flush=True)
    time.sleep(300)
"""


def test_a_lost_scheduler_raises_with_the_partial_result_and_resumes(tmp_path):
    # A cluster in its own process group: killing the group with SIGKILL loses the scheduler
    # (and its worker) at once, as when its machine dies.
    proc = subprocess.Popen(
        [sys.executable, "-c", _SCHEDULER],
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        address = proc.stdout.readline().strip()
        assert address.startswith("tcp://"), address
        path = tmp_path / "run.ckpt"
        args = (np.zeros(N), TASKS, FOB, fm.Adam(0.1), 8)

        def kill_scheduler(t, x, record):
            if t == 2:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait(timeout=30)

        with distributed.Client(address, timeout=5) as remote:
            ex = DaskExecutor(remote)
            with pytest.raises(ClusterError) as info:
                meta_train(
                    *args, progress=False, callback=kill_scheduler, checkpoint=path, executor=ex
                )
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        proc.stdout.close()
    assert list(info.value.result.history["iteration"]) == [0, 1, 2]
    assert _eventually(lambda: not _group_alive(proc.pid)), "the cluster's processes live on"
    resumed = meta_train(*args, progress=False, checkpoint=path, resume=True)  # in-process
    assert resumed.resumed_from == 3
    _assert_same_run(resumed, meta_train(*args, progress=False))


def test_ctrl_c_during_a_distributed_run_loses_nothing(executor, tmp_path):
    path = tmp_path / "run.ckpt"
    args = (X0_MLP, SAMPLER, MLP_FOB, fm.Adam(1e-2), 30)
    fired = threading.Event()

    def fire():
        os.kill(os.getpid(), signal.SIGINT)
        fired.set()

    timer = threading.Timer(0.05, fire)

    def interrupt_soon(t, x, record):
        if t == 2:  # the signal comes while the next records compute on the cluster ...
            timer.start()
        elif t > 2 and not fired.is_set():
            # ... unless the timer thread runs late on a loaded machine: then the run is held
            # back until the signal is sent (at its 25th record at the latest), so that it
            # cannot end first.
            fired.wait(0.02 if t < 25 else 60)

    # Python turns SIGINT into KeyboardInterrupt only if it did not start with SIGINT ignored,
    # as a shell's background jobs do (CI may run the suite so): install the handler here.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        res = guarded(
            *args,
            progress=False,
            callback=interrupt_soon,
            checkpoint=path,
            on_interrupt="return",
            executor=executor,
        )
    finally:
        timer.join()
        signal.signal(signal.SIGINT, previous)
    assert res.interrupted and 3 <= len(res.history["iteration"]) < 31
    resumed = meta_train(*args, progress=False, checkpoint=path, resume=True, executor=executor)
    _assert_same_run(resumed, meta_train(*args, progress=False))


def test_a_checkpoint_written_under_an_executor_resumes_anywhere(executor, tmp_path):
    args = (X0_MLP, SAMPLER, MLP_FOB, fm.SNGDM(0.05), 10)
    want = meta_train(*args, progress=False, seed=5)

    def ctrl_c(t, x, record):
        if t == 4:
            raise KeyboardInterrupt

    path = tmp_path / "run.ckpt"
    partial = guarded(
        *args,
        progress=False,
        seed=5,
        callback=ctrl_c,
        checkpoint=path,
        on_interrupt="return",
        executor=executor,
    )
    assert partial.interrupted
    shutil.copy(path, tmp_path / "copy.ckpt")
    for resume_with, ck in ((executor, path), (None, tmp_path / "copy.ckpt")):
        res = meta_train(
            *args, progress=False, seed=5, checkpoint=ck, resume=True, executor=resume_with
        )
        assert res.resumed_from == 4
        _assert_same_run(res, want)


# -- bad input -----------------------------------------------------------------------------
def test_bad_input_raises_clear_errors(client, executor):
    with pytest.raises(TypeError, match="`client` must be a dask.distributed.Client"):
        DaskExecutor("tcp://127.0.0.1:8786")
    with pytest.raises(ValueError, match="`shards` must be >= 1"):
        DaskExecutor(client, shards=0)
    with pytest.raises(ValueError, match="`worker_timeout` must be > 0"):
        DaskExecutor(client, worker_timeout=0)
    with pytest.raises(ValueError, match=r"`x` must have shape \(12,\)"):
        executor.meta_gradient(FOB, np.zeros(3), TASKS)
    with pytest.raises(TypeError, match="`estimator` must be a fobmaml estimator"):
        executor.meta_gradient("FOBMAML", np.zeros(N), TASKS)
    with pytest.raises(TypeError, match="`tasks` must be a fobmaml task batch"):
        executor.meta_gradient(FOB, np.zeros(N), [TASKS])


def test_a_closed_client_is_refused(client):
    other = distributed.Client(client.scheduler.address)
    ex = DaskExecutor(other)
    other.close()
    with pytest.raises(ValueError, match="`client` must be a running dask.distributed.Client"):
        DaskExecutor(other)
    with pytest.raises(ClusterError, match="not connected"):
        ex.meta_gradient(FOB, np.zeros(N), TASKS)
