"""Where estimator calls run: the in-process executor, and the reduction the others share.

An executor computes ``estimator.estimate(x, tasks)`` and the methods built on it. The
base class runs them in this process. :class:`fobmaml.distributed.DaskExecutor` runs
the tasks of a batch in shards on other processes or machines and brings the per-task
rows back; :func:`combine` then reduces them exactly as the kernels reduce their own
(``finish_batch`` in ``cpp/include/fobmaml/batch.hpp``: the mean over the successful
tasks, summed in task order, with the overflow fallback), so that the results are the
same bits as in-process.

:func:`fobmaml.meta_train` takes an executor as ``executor=``; the trainer hands it its
task source (:meth:`Executor._source`) and evaluates every record through it.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from . import _validation as check
from ._native import core as _core
from .errors import TaskStatus, raise_for_status
from .estimators import Estimate, Estimator

__all__ = ["Executor", "ShardedExecutor", "combine"]


def combine(parts: list[Estimate], want_losses: bool) -> Estimate:
    """One batch's :class:`~fobmaml.Estimate` from its shards' estimates, in task order.

    ``parts`` are the estimates of consecutive shards of the batch (each computed with
    ``errors="return"``). Their rows, losses and statuses are concatenated, and the mean
    is reduced by the kernels' own ``finish_batch``: bit for bit the ``gradient`` that
    one call on the whole batch returns, on every path (all tasks good, some failed,
    none good, a sum that overflows).
    """
    if not parts:
        raise ValueError("`parts` must hold at least one shard's estimate")
    G = np.concatenate([p.task_gradients for p in parts], axis=0)
    losses = np.concatenate([p.losses for p in parts]) if want_losses else None
    status = TaskStatus(*(np.concatenate(field) for field in zip(*(p.status for p in parts))))
    code = np.ascontiguousarray(status.code, dtype=np.intc)
    gradient = _core.finish_batch(G, losses, code)
    return Estimate(G, gradient, losses, status)


def check_estimator(estimator: object) -> Estimator:
    if not isinstance(estimator, Estimator):
        raise TypeError(
            "`estimator` must be a fobmaml estimator such as fobmaml.FOBMAML "
            f"(got {type(estimator).__name__})"
        )
    return estimator


class Executor:
    """Computes estimator calls on task batches; this base class, in this process.

    The methods mirror the estimators' own: ``ex.meta_gradient(est, x, tasks)`` is
    ``est.meta_gradient(x, tasks)`` (here, that very call), computed where the executor
    runs its work.
    """

    def estimate(
        self,
        estimator: Estimator,
        x: np.ndarray,
        tasks: Any,
        *,
        losses: bool = False,
        errors: str = "raise",
    ) -> Estimate:
        """``estimator.estimate(x, tasks, losses=losses, errors=errors)``."""
        return check_estimator(estimator).estimate(x, tasks, losses=losses, errors=errors)

    def task_gradients(self, estimator: Estimator, x: np.ndarray, tasks: Any) -> np.ndarray:
        """The per-task estimates, shape (m, n): ``estimator.task_gradients(x, tasks)``."""
        return check_estimator(estimator).task_gradients(x, tasks)

    def meta_gradient(self, estimator: Estimator, x: np.ndarray, tasks: Any) -> np.ndarray:
        """The batch estimate, shape (n,): ``estimator.meta_gradient(x, tasks)``."""
        return check_estimator(estimator).meta_gradient(x, tasks)

    def value_and_gradient(
        self, estimator: Estimator, x: np.ndarray, tasks: Any
    ) -> tuple[float, np.ndarray]:
        """The meta-loss and the batch estimate: ``estimator.value_and_gradient(x, tasks)``."""
        return check_estimator(estimator).value_and_gradient(x, tasks)

    # -- meta_train's hooks ---------------------------------------------------------------
    def _source(self, source: Any) -> Any:
        """The task source a meta_train run draws from (the same one, in-process)."""
        return source

    def _end_run(self, source: Any) -> None:
        """Called once when a meta_train run ends, however it ends."""


class ShardedExecutor(Executor):
    """Base of the executors that compute a batch in shards elsewhere.

    Every method is built on :meth:`_estimate`, which returns the whole batch's estimate
    with ``errors="return"`` (reduced by :func:`combine`); failed tasks then raise here,
    in the client, exactly as in-process (the first failing task in task order).
    """

    def estimate(
        self,
        estimator: Estimator,
        x: np.ndarray,
        tasks: Any,
        *,
        losses: bool = False,
        errors: str = "raise",
    ) -> Estimate:
        """``estimator.estimate(x, tasks, losses=losses, errors=errors)``, computed in shards."""
        estimator = check_estimator(estimator)
        check.choice(errors, "errors", ("raise", "return"))
        est = self._estimate(estimator, x, tasks, bool(losses))
        if errors == "raise":
            raise_for_status(est.status, estimator.name)
        return est

    def task_gradients(self, estimator: Estimator, x: np.ndarray, tasks: Any) -> np.ndarray:
        """The per-task estimates, shape (m, n): ``estimator.task_gradients(x, tasks)``."""
        return self.estimate(estimator, x, tasks).task_gradients

    def meta_gradient(self, estimator: Estimator, x: np.ndarray, tasks: Any) -> np.ndarray:
        """The batch estimate, shape (n,): ``estimator.meta_gradient(x, tasks)``."""
        return self.estimate(estimator, x, tasks).gradient

    def value_and_gradient(
        self, estimator: Estimator, x: np.ndarray, tasks: Any
    ) -> tuple[float, np.ndarray]:
        """The meta-loss and the batch estimate: ``estimator.value_and_gradient(x, tasks)``.

        The loss is the mean of the per-task losses, as the estimator computes it.
        """
        est = self.estimate(estimator, x, tasks, losses=True)
        return check.safe_mean(est.losses), est.gradient

    def _estimate(self, estimator: Estimator, x: np.ndarray, tasks: Any, losses: bool) -> Estimate:
        """The batch's estimate with ``errors="return"`` (failed tasks in its status)."""
        raise NotImplementedError
