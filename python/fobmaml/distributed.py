r"""Meta-batches across processes and machines, with Dask distributed.

A meta-batch is a sum over tasks, so it parallelizes across workers: each worker computes
the per-task estimates of a shard of the batch, and the client reduces them.

>>> from dask.distributed import Client, LocalCluster   # doctest: +SKIP
>>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))   # doctest: +SKIP
>>> ex = DaskExecutor(client)   # doctest: +SKIP
>>> res = fm.meta_train(x0, tasks, est, opt, 1000, executor=ex)   # doctest: +SKIP
>>> g = ex.meta_gradient(est, x, tasks)   # doctest: +SKIP

How it works (``docs/distributed.md`` has the whole story):

- **Bit-identical.** Every task is computed the same way whichever worker runs it,
  and the client reduces the per-task rows in task order with the kernels' own
  reduction (:func:`fobmaml._executor.combine`), so the results are the in-process
  bits (on the same fobmaml version and build of the core, which every worker checks).
- **Fixed batches are sent once.** A batch is cut into contiguous shards, one per worker,
  scattered to the workers the first time it is used, and kept there while the batch
  object lives (or until :meth:`DaskExecutor.release`). Per call only ``x`` and the
  estimator go out; the per-task rows, losses and statuses come back.
- **Samplers run on the workers.** ``meta_train`` with a sampler sends each worker a
  copy of the sampler once per run; per iteration it sends the generator state, each
  worker draws the whole batch from it and keeps its own shard, and the generator
  state after the draw comes back with the results. The client's generator advances
  exactly as in-process, so checkpoints are the same too.
- **Lost workers.** A shard whose worker died (killed, crashed) is placed on another
  worker and computed again; the result is the same bits.
- **A lost cluster.** When the scheduler, or the client's connection to it, is lost,
  the call raises :class:`ClusterError` (``meta_train`` attaches the partial result as
  ``exc.result`` and writes its checkpoint, from which the run resumes).

``import fobmaml`` does not import Dask, nor does importing this module: the executor
imports it when it is created (install it with ``pip install "fobmaml[dask]"``).
"""

from __future__ import annotations

import time
import uuid
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from . import _native
from . import _validation as check
from ._executor import ShardedExecutor, combine
from ._sources import SamplerSource
from ._version import __version__
from .estimators import Estimate, Estimator
from .tasks import TaskBatch

__all__ = ["DaskExecutor", "ClusterError"]

#: ``x`` larger than this is scattered to the workers instead of sent with each shard's task.
_SCATTER_X_BYTES = 1 << 18
#: Seconds the executor trusts its list of the cluster's workers (it asks again at once after
#: losing a shard): a worker that joins gets shards within this time.
_REFRESH = 2.0


class ClusterError(ConnectionError):
    """The executor lost its cluster: the scheduler, or the client's connection to it.

    :func:`fobmaml.meta_train` raises it with the partial result as ``exc.result`` (and
    writes its checkpoint first, if it has one); a new client can resume the run from it.
    """


def _distributed():
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            'fobmaml.distributed.DaskExecutor needs Dask distributed: pip install "fobmaml[dask]"'
        ) from exc
    return distributed


class _Resident:
    """Objects kept on the workers: piece k as one Dask future, on one worker.

    ``make(k)`` builds piece k on the client; it is called again whenever the piece must
    be placed anew (its worker died or left, or the pieces are rebalanced).
    """

    def __init__(self, make: Callable[[int], Any], count: int) -> None:
        self.make, self.count = make, count
        self.futures: list[Any] = [None] * count
        self.where: list[str | None] = [None] * count

    def placed(self, workers: list[str]) -> bool:
        """Whether every piece is on one of ``workers`` (as far as the client knows)."""
        return all(
            f is not None and f.status == "finished" and w in workers
            for f, w in zip(self.futures, self.where)
        )

    def place(self, client: Any, workers: list[str]) -> None:
        """Put every piece on a live worker, as evenly as the pieces allow.

        Pieces stay where they are unless their worker is gone (or their data was lost),
        or the loads differ by more than one piece (a worker joined, say).
        """
        for f in self.futures:
            if f is not None and f.status == "cancelled":
                _raise_if_disconnected(f, client)
        order = {w: i for i, w in enumerate(workers)}
        keep = {
            k
            for k, (f, w) in enumerate(zip(self.futures, self.where))
            if f is not None and f.status == "finished" and w in order
        }
        load = Counter({w: 0 for w in workers})
        for k in keep:
            load[self.where[k]] += 1
        target: dict[int, str] = {}
        for k in range(self.count):
            if k not in keep:
                w = min(workers, key=lambda w: (load[w], order[w]))
                load[w] += 1
                target[k] = w
        while True:
            busy = max(workers, key=lambda w: (load[w], -order[w]))
            idle = min(workers, key=lambda w: (load[w], order[w]))
            movable = [k for k in keep if self.where[k] == busy]
            if load[busy] - load[idle] <= 1 or not movable:
                break
            k = max(movable)
            keep.discard(k)
            load[busy] -= 1
            load[idle] += 1
            target[k] = idle
        by_worker: dict[str, list[int]] = {}
        for k, w in sorted(target.items()):
            by_worker.setdefault(w, []).append(k)
        for w, ks in by_worker.items():
            pieces = [self.make(k) for k in ks]
            futures = client.scatter(pieces, workers=[w], hash=False)
            for k, f in zip(ks, futures):
                self.futures[k], self.where[k] = f, w

    def release(self) -> None:
        self.futures = [None] * self.count
        self.where = [None] * self.count


class _Drawn:
    """One draw of a sampler on the workers (meta_train's batch B_t with a sampler).

    It is drawn with the first computation on it, each worker keeping its shard for the
    next (the reference's, say); the client adopts the generator state after the draw.
    """

    def __init__(self, source: _RemoteSampler, rng_state: dict) -> None:
        self.source, self.rng_state = source, rng_state
        self.info: tuple | None = None

    @property
    def dim(self) -> int:
        return self.source.local.n


class _RemoteSampler:
    """meta_train's sampler source with the sampler on the workers (see the module doc)."""

    def __init__(self, local: SamplerSource, executor: DaskExecutor) -> None:
        self.local, self.executor = local, executor
        self.token = uuid.uuid4().hex
        self.resident: _Resident | None = None
        self.shards: int | None = None

    def draw(self) -> _Drawn:
        return _Drawn(self, self.local.rng_state())

    def rng_state(self) -> dict:
        return self.local.rng_state()

    def set_rng_state(self, state: object) -> None:
        self.local.set_rng_state(state)

    def close(self) -> None:
        if self.resident is not None:
            self.resident.release()


class DaskExecutor(ShardedExecutor):
    """Computes estimator calls on a Dask cluster, one shard of each batch per worker.

    Parameters
    ----------
    client : dask.distributed.Client
        A running client, of a ``LocalCluster`` or of any Dask cluster
        (``Client("tcp://scheduler:8786")``). The executor does not close it.
    shards : int, optional
        The number of shards a batch is cut into (contiguous runs of tasks, in task
        order). Default: the number of workers when the batch is first used. Results do
        not depend on it.
    max_attempts : int
        How many times one call places and computes the shards of lost workers before it
        raises :class:`ClusterError`.
    worker_timeout : float
        Seconds a call waits for a worker when the cluster has none (all of them
        restarting, say) before it raises :class:`ClusterError`.

    Notes
    -----
    The results are bit-identical to the in-process ones (``est.meta_gradient(x, tasks)``,
    ``fm.meta_train(...)``) when every worker runs the same fobmaml version and build of
    the core as the client (``fobmaml.build_info()["isa"]``); a worker that does not
    refuses to compute. Each worker runs its kernels on its ``nthreads`` threads
    (``fobmaml.set_num_threads``), set by a worker plugin.

    Examples
    --------
    >>> from dask.distributed import Client, LocalCluster   # doctest: +SKIP
    >>> client = Client(LocalCluster(n_workers=2, threads_per_worker=1))   # doctest: +SKIP
    >>> ex = DaskExecutor(client)   # doctest: +SKIP
    >>> g = ex.meta_gradient(est, x, tasks)   # doctest: +SKIP
    >>> bool(np.array_equal(g, est.meta_gradient(x, tasks)))   # doctest: +SKIP
    True
    """

    def __init__(
        self,
        client: Any,
        *,
        shards: int | None = None,
        max_attempts: int = 5,
        worker_timeout: float = 60.0,
    ) -> None:
        dd = _distributed()
        if not isinstance(client, dd.Client):
            raise TypeError(
                "`client` must be a dask.distributed.Client, e.g. "
                f"Client(LocalCluster(n_workers=2)) (got {type(client).__name__})"
            )
        if client.status != "running":
            raise ValueError(
                f"`client` must be a running dask.distributed.Client (its status is "
                f"{client.status!r}); create a new one"
            )
        self.client = client
        self.shards = None if shards is None else check.integer(shards, "shards", minimum=1)
        self.max_attempts = check.integer(max_attempts, "max_attempts", minimum=1)
        self.worker_timeout = check.positive(worker_timeout, "worker_timeout")
        self._dd = dd
        self._build = (__version__, _native.ISA)
        self._fixed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
        self._known: tuple[float, list[str]] | None = None  # (when, the workers)
        from . import _dask

        self._worker = _dask
        client.register_plugin(_dask.ThreadsPlugin(), name=_dask.ThreadsPlugin.name)

    def __repr__(self) -> str:
        return f"DaskExecutor({self.client!r}, shards={self.shards})"

    # -- placing data ------------------------------------------------------------------
    def _workers(self, refresh: bool = False) -> list[str]:
        """The cluster's workers, asked of the scheduler at most every ``_REFRESH`` seconds."""
        self._check_client()
        now = time.monotonic()
        if not refresh and self._known is not None and now - self._known[0] < _REFRESH:
            return self._known[1]
        try:
            workers = sorted(self.client.nthreads())
        except OSError as exc:
            raise ClusterError(f"lost the Dask cluster: {exc}") from exc
        if not workers:  # all restarting, say: wait for one
            try:
                self.client.wait_for_workers(1, timeout=self.worker_timeout)
                workers = sorted(self.client.nthreads())
            except (OSError, self._dd.TimeoutError) as exc:
                raise ClusterError(
                    f"the Dask cluster has had no worker for {self.worker_timeout} s"
                ) from exc
        self._known = (now, workers)
        return workers

    def _check_client(self) -> None:
        if self.client.status != "running":
            raise ClusterError(
                f"the Dask client is not connected to its scheduler (status "
                f"{self.client.status!r}); the scheduler or the connection was lost"
            )

    def _resident_batch(self, batch: TaskBatch) -> _Resident:
        res = self._fixed.get(batch)
        if res is None:
            m = batch.num_tasks
            shards = min(m, self.shards or len(self._workers()))
            bounds = [self._worker.shard_bounds(m, shards, k) for k in range(shards)]
            ref = weakref.ref(batch)  # a strong one would keep the batch, its key, alive

            def make(k: int) -> TaskBatch:
                return ref()[bounds[k][0] : bounds[k][1]]

            res = _Resident(make, shards)
            self._fixed[batch] = res
        return res

    def scatter(self, tasks: TaskBatch) -> None:
        """Place a fixed batch on the workers now (otherwise its first use does)."""
        tasks = check.task_batch(tasks)
        self._resident_batch(tasks).place(self.client, self._workers())

    def release(self, tasks: TaskBatch | None = None) -> None:
        """Drop a fixed batch's shards from the workers (every batch's, if None)."""
        if tasks is None:
            for res in list(self._fixed.values()):
                res.release()
            self._fixed.clear()
        elif tasks in self._fixed:
            self._fixed.pop(tasks).release()

    def close(self) -> None:
        """Release everything this executor keeps on the workers (the client stays open)."""
        self.release()

    def __enter__(self) -> DaskExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def settings(self) -> dict[str, dict]:
        """Each worker's fobmaml version, core build and kernel threads, by address."""
        self._check_client()
        return self.client.run(self._worker.worker_settings)

    # -- computing -----------------------------------------------------------------------
    def _x(self, x: np.ndarray, n: int) -> Any:
        x = check.params_vector(x, n)
        if x.nbytes > _SCATTER_X_BYTES:
            return self.client.scatter(x, broadcast=True, hash=False)
        return x

    def _estimate(self, estimator: Estimator, x: np.ndarray, tasks: Any, losses: bool) -> Estimate:
        if isinstance(tasks, _Drawn):
            return self._estimate_drawn(estimator, x, tasks, losses)
        tasks = check.task_batch(tasks)
        xs = self._x(x, tasks.dim)
        res = self._resident_batch(tasks)
        w = self._worker

        def submit(k: int) -> Any:
            return self.client.submit(
                w.estimate_shard,
                estimator,
                xs,
                res.futures[k],
                losses,
                self._build,
                workers=[res.where[k]],
                allow_other_workers=True,
                pure=False,
            )

        results = self._collect(res, submit)
        return combine([_as_estimate(r, losses) for r in results], losses)

    def _estimate_drawn(
        self, estimator: Estimator, x: np.ndarray, drawn: _Drawn, losses: bool
    ) -> Estimate:
        source, n = drawn.source, drawn.dim
        xs = self._x(x, n)
        if source.resident is None:
            source.shards = self.shards or len(self._workers())
            sampler = source.local.sampler
            source.resident = _Resident(lambda k: sampler, source.shards)
        res, shards = source.resident, source.shards

        def submit(k: int) -> Any:
            return self.client.submit(
                self._worker.estimate_sampled,
                estimator,
                xs,
                res.futures[k],
                n,
                drawn.rng_state,
                k,
                shards,
                source.token,
                losses,
                self._build,
                workers=[res.where[k]],
                allow_other_workers=True,
                pure=False,
            )

        results = self._collect(res, submit)
        infos = [r[3] for r in results]
        state, digest, m = infos[0]
        if any(info[1:] != (digest, m) or info[0] != state for info in infos):
            raise RuntimeError(
                "the workers drew different batches from the same generator state: the "
                "`tasks` sampler must draw all its randomness from the generator it is given"
            )
        if drawn.info is None:
            drawn.info = infos[0]
            source.local.set_rng_state(state)
        return combine([_as_estimate(r[:3], losses) for r in results], losses)

    def _collect(self, res: _Resident, submit: Callable[[int], Any]) -> list:
        """Compute every shard (``submit(k)``), computing again those whose worker was lost."""
        dd = self._dd
        futures: list[Any] = [None] * res.count
        todo = list(range(res.count))
        try:
            for attempt in range(self.max_attempts):
                workers = self._workers(refresh=attempt > 0)
                if not res.placed(workers):  # something moves: on the workers there are now
                    workers = self._workers(refresh=True)
                res.place(self.client, workers)
                for k in todo:
                    futures[k] = submit(k)
                try:
                    dd.wait([futures[k] for k in todo])
                except dd.CancelledError:
                    pass  # examined below
                lost = []
                for k in todo:
                    f = futures[k]
                    if f.status == "error":
                        f.result()  # raises the worker's exception, with its traceback
                    if f.status != "finished":
                        _raise_if_disconnected(f, self.client)
                        lost.append(k)
                if not lost:
                    return self._gather(futures)
                todo = lost
            raise ClusterError(
                f"shards {todo} were lost {self.max_attempts} times (their workers died each "
                "time); the cluster is not healthy"
            )
        finally:
            pending = [f for f in futures if f is not None and f.status == "pending"]
            if pending and self.client.status == "running":
                self.client.cancel(pending)

    def _gather(self, futures: list) -> list:
        try:
            return self.client.gather(futures)
        except self._dd.CancelledError as exc:
            raise ClusterError(f"lost results while gathering them: {exc}") from exc
        except OSError as exc:
            raise ClusterError(f"lost the Dask cluster while gathering results: {exc}") from exc

    # -- meta_train's hooks --------------------------------------------------------------
    def _source(self, source: Any) -> Any:
        if isinstance(source, SamplerSource):
            return _RemoteSampler(source, self)
        return source

    def _end_run(self, source: Any) -> None:
        if isinstance(source, _RemoteSampler):
            source.close()


def _raise_if_disconnected(future: Any, client: Any) -> None:
    """Raise ClusterError if ``future`` was cancelled because the scheduler connection was lost.

    Dask cancels every future of a client that loses its scheduler connection (even if
    it then reconnects); the data the executor kept on the cluster is gone with them.
    Other cancellations (a worker died with the only copy of its data) are recoverable.
    """
    import distributed

    reason = ""
    if future.status == "cancelled":
        try:
            future.result(timeout=5)
        except distributed.CancelledError as exc:
            reason = str(getattr(exc, "reason", ""))
        except Exception:  # noqa: BLE001 - only the cancellation's reason matters here
            pass
    if "connection" in reason or client.status != "running":
        raise ClusterError(
            "lost the connection to the Dask scheduler (client status "
            f"{client.status!r}, reason {reason or 'unknown'!r}); the data this executor kept "
            "on the cluster is gone: resume from the checkpoint, with this client once it has "
            "reconnected or with a new one"
        )


def _as_estimate(result: tuple, losses: bool) -> Estimate:
    from .errors import TaskStatus

    rows, ell, status = result
    return Estimate(rows, np.zeros(0), ell if losses else None, TaskStatus(*status))
