"""What runs on the Dask workers of :class:`fobmaml.distributed.DaskExecutor`.

Imported on the client by the executor and on each worker when a task refers to one of
these functions; ``import fobmaml`` never imports it (it imports Dask).

- :class:`ThreadsPlugin` sets each worker's kernel threads to its ``nthreads``.
- :func:`estimate_shard` computes one shard of a fixed batch (kept on the worker).
- :func:`estimate_sampled` runs the sampler from the generator state the client sent,
  keeps the worker's shard of the batch it draws, and computes on it.

Each computation returns its shard's rows, losses and statuses (``errors="return"``):
the client reduces them (:func:`fobmaml._executor.combine`) and raises for failed tasks.
"""

from __future__ import annotations

import collections
import hashlib
from typing import Any

import numpy as np
from dask.sizeof import sizeof
from distributed import WorkerPlugin

from . import _native
from ._sources import check_batch
from ._version import __version__
from .errors import TaskStatus
from .estimators import Estimate, Estimator
from .tasks import TaskBatch


@sizeof.register(TaskBatch)
def _sizeof_batch(batch: TaskBatch) -> int:
    """The bytes of a batch's arrays, so that the scheduler keeps work where its data is."""
    return sum(v.nbytes for v in vars(batch).values() if isinstance(v, np.ndarray)) + 1000


class ThreadsPlugin(WorkerPlugin):
    """Runs the kernels of each worker on as many threads as the worker has (``nthreads``).

    Dask's nanny starts worker processes with ``OMP_NUM_THREADS=1``; the kernels' own
    setting (``fobmaml.set_num_threads``) overrides it.
    """

    name = "fobmaml-threads"

    def setup(self, worker: Any) -> None:
        _native.core.set_num_threads(int(worker.state.nthreads))


def _check_build(build: tuple[str, str]) -> None:
    """Refuse to compute with another fobmaml version or instruction-set build than the client's."""
    here = (__version__, _native.ISA)
    if tuple(build) != here:
        raise RuntimeError(
            f"this Dask worker runs fobmaml {here[0]} with the {here[1]} build of the core, the "
            f"client fobmaml {build[0]} with the {build[1]} build; results are bit-identical only "
            "on the same version and build: install the same fobmaml everywhere, and set "
            "FOBMAML_ISA=baseline on every machine if their CPUs differ"
        )


def _empty(n: int, losses: bool) -> Estimate:
    status = TaskStatus(
        np.zeros(0, np.intc), np.zeros(0, np.intc), np.zeros(0, np.int64), np.zeros(0)
    )
    return Estimate(np.zeros((0, n)), np.zeros(n), np.zeros(0) if losses else None, status)


def _compute(estimator: Estimator, x: np.ndarray, shard: TaskBatch | None, n: int, losses: bool):
    if shard is None:
        est = _empty(n, losses)
    else:
        est = estimator.estimate(x, shard, losses=losses, errors="return")
    # The shard's mean is not sent back: the client reduces the rows of all shards.
    return est.task_gradients, est.losses, tuple(est.status)


def estimate_shard(
    estimator: Estimator, x: np.ndarray, shard: TaskBatch, losses: bool, build: tuple[str, str]
):
    """``(rows, losses, status)`` of one shard of a fixed batch."""
    _check_build(build)
    return _compute(estimator, x, shard, shard.dim, losses)


def digest(batch: TaskBatch) -> str:
    """A digest of a batch's arrays and description: equal batches give equal digests."""
    h = hashlib.blake2b(repr(batch).encode(), digest_size=16)
    for name, value in sorted(vars(batch).items()):
        if isinstance(value, np.ndarray):
            h.update(f"{name}{value.dtype.str}{value.shape}".encode())
            h.update(np.ascontiguousarray(value).view(np.uint8).ravel().data)
    return h.hexdigest()


def shard_bounds(m: int, shards: int, k: int) -> tuple[int, int]:
    """Tasks ``[lo, hi)`` of shard k of ``shards`` contiguous ones (sizes differ by at most 1)."""
    return k * m // shards, (k + 1) * m // shards


#: The shards this worker drew last, by (run token, generator state, shard, shards): a record
#: with a reference computes on its batch twice. Any worker can draw a shard again from
#: the same state (a lost worker's, say); this only saves drawing it twice in a row.
_DRAWN: collections.OrderedDict = collections.OrderedDict()
_DRAWN_KEEP = 4


def _draw(sampler: Any, n: int, rng_state: dict, k: int, shards: int, token: str):
    key = (token, repr(rng_state), k, shards)
    if key in _DRAWN:
        _DRAWN.move_to_end(key)
        return _DRAWN[key]
    rng = np.random.Generator(getattr(np.random, rng_state["bit_generator"])())
    rng.bit_generator.state = rng_state
    batch = check_batch(sampler(rng), n, "the batch returned by the `tasks` sampler")
    m = batch.num_tasks
    lo, hi = shard_bounds(m, shards, k)
    drawn = (batch[lo:hi] if hi > lo else None, (rng.bit_generator.state, digest(batch), m))
    _DRAWN[key] = drawn
    while len(_DRAWN) > _DRAWN_KEEP:
        _DRAWN.popitem(last=False)
    return drawn


def estimate_sampled(
    estimator: Estimator,
    x: np.ndarray,
    sampler: Any,
    n: int,
    rng_state: dict,
    k: int,
    shards: int,
    token: str,
    losses: bool,
    build: tuple[str, str],
):
    """Draw the batch from the client's generator state, and compute on shard k of it.

    Returns ``(rows, losses, status, info)``, with ``info`` the generator state after the
    draw, the batch's digest and its number of tasks: every shard reports them, so that
    the client can check that the workers drew the same batch.
    """
    _check_build(build)
    shard, info = _draw(sampler, n, rng_state, k, shards, token)
    return (*_compute(estimator, x, shard, n, losses), info)


def worker_settings() -> dict:
    """This worker's fobmaml version, core build and kernel thread setting."""
    previous = _native.core.set_num_threads(0)
    _native.core.set_num_threads(previous)
    return {"version": __version__, "isa": _native.ISA, "num_threads": int(previous)}
