r"""The meta-training loop: an estimator, an outer optimizer, and a record per iterate.

For :math:`t = 0, \dots, T-1`, with :math:`B_t` the task batch of iteration t (the
same fixed batch every time, or a fresh draw from a sampler):

.. math::

    (\ell_t, G_t) = \text{estimator.value\_and\_gradient}(x_t, B_t), \qquad
    x_{t+1} = \text{optimizer}(x_t, G_t),

and one last evaluation at :math:`x_T` without a step, so the history has T + 1
records. :math:`\ell_t` is :math:`F_K(x_t)` on :math:`B_t` (:math:`F(x_t)` for
:class:`fobmaml.Exact`).

The loop is split into one small function per concern (input checks, the task
source, the timed evaluation, the reference evaluation, the history, the progress
bar) so that divergence policies and checkpointing can be added around them.
"""

from __future__ import annotations

import time
from typing import Any, Callable, NamedTuple, Union

import numpy as np
from tqdm.auto import tqdm

from . import _validation as check
from .estimators import Estimator, Exact
from .optim import apply_updates
from .tasks import TaskBatch

__all__ = ["TrainResult", "meta_train"]

#: A fixed task batch, or a sampler ``rng -> TaskBatch``.
TaskSource = Union[TaskBatch, Callable[[np.random.Generator], TaskBatch]]


class TrainResult(NamedTuple):
    """What :func:`meta_train` returns.

    Attributes
    ----------
    x : numpy.ndarray, shape (n,)
        The last iterate (x_T, or x_t if the callback stopped the run at iteration t).
    history : dict of str to numpy.ndarray
        One entry per record: ``iteration`` (int), ``meta_loss``, ``estimate_norm``,
        ``time``, and with a reference ``exact_loss`` and ``exact_grad_norm``.
    state : object
        The optimizer state that goes with ``x`` (to resume from).
    stopped_early : bool
        True when the callback stopped the run before the last iteration.
    """

    x: np.ndarray
    history: dict
    state: Any
    stopped_early: bool


# -- input checks ---------------------------------------------------------------------------
def _check_x0(x0: object) -> np.ndarray:
    x = check.float_array(x0, "x0", ndim=1, shape_doc="(n,)")
    if x.size == 0:
        raise ValueError("`x0` must have at least one entry (got shape (0,))")
    return np.array(x, dtype=np.float64, copy=True)


def _check_batch(batch: object, n: int, name: str) -> TaskBatch:
    if not isinstance(batch, TaskBatch):
        raise TypeError(
            f"{name} must be a fobmaml task batch such as QuadraticTasks "
            f"(got {type(batch).__name__})"
        )
    if batch.dim != n:
        raise ValueError(f"{name} has tasks of dimension {batch.dim}, but `x0` has {n} entries")
    return batch


def _task_source(tasks: object, n: int, seed: int) -> Callable[[], TaskBatch]:
    """A function returning the batch of the next iteration."""
    if isinstance(tasks, TaskBatch):
        batch = _check_batch(tasks, n, "`tasks`")
        return lambda: batch
    if callable(tasks):
        rng = np.random.default_rng(seed)
        return lambda: _check_batch(tasks(rng), n, "the batch returned by the `tasks` sampler")
    raise TypeError(
        "`tasks` must be a fobmaml task batch such as QuadraticTasks, or a sampler "
        f"`rng -> TaskBatch` (got {type(tasks).__name__})"
    )


def _check_optimizer(optimizer: object) -> Any:
    if isinstance(optimizer, type):
        raise TypeError(
            f"`optimizer` must be an optimizer instance such as {optimizer.__name__}(lr=0.1), "
            "not the class"
        )
    if not (
        callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))
    ):
        raise TypeError(
            "`optimizer` must be an outer optimizer with `init` and `update` methods, "
            f"such as fobmaml.SNGDM (got {type(optimizer).__name__})"
        )
    return optimizer


def _check_reference(reference: object, eval_tasks: object, n: int) -> TaskBatch | None:
    """Check `reference` and `eval_tasks`; return the fixed evaluation batch, if any."""
    if reference is not None and not isinstance(reference, Exact):
        raise TypeError(
            "`reference` must be a fobmaml.Exact estimator or None "
            f"(got {type(reference).__name__})"
        )
    if eval_tasks is None:
        return None
    if reference is None:
        raise ValueError("`eval_tasks` is only used with `reference`; pass a fobmaml.Exact too")
    return _check_batch(eval_tasks, n, "`eval_tasks`")


# -- one iteration's pieces -----------------------------------------------------------------
def _evaluate(estimator: Estimator, x: np.ndarray, batch: TaskBatch) -> tuple[float, np.ndarray]:
    return estimator.value_and_gradient(x, batch)


def _step(optimizer: Any, x: np.ndarray, grad: np.ndarray, state: Any) -> tuple[np.ndarray, Any]:
    updates, state = optimizer.update(grad, state, x)
    return apply_updates(x, updates), state


def _reference_record(reference: Exact, x: np.ndarray, batch: TaskBatch) -> dict:
    loss, grad = reference.value_and_gradient(x, batch)
    return {"exact_loss": float(loss), "exact_grad_norm": float(np.linalg.norm(grad))}


class _History:
    """Records appended one at a time, returned as a dict of arrays."""

    def __init__(self, keys: tuple[str, ...]) -> None:
        self._columns: dict[str, list] = {k: [] for k in keys}

    def append(self, record: dict) -> None:
        for key, column in self._columns.items():
            column.append(record[key])

    def arrays(self) -> dict[str, np.ndarray]:
        return {
            k: np.asarray(v, dtype=np.int64 if k == "iteration" else np.float64)
            for k, v in self._columns.items()
        }


def _progress_bar(iterations: int, progress: bool, desc: str | None):
    return tqdm(total=iterations, desc=desc, disable=not progress, dynamic_ncols=True)


def _postfix(record: dict) -> dict:
    post = {"loss": f"{record['meta_loss']:.4g}"}
    if "exact_loss" in record:
        post["F"] = f"{record['exact_loss']:.4g}"
    return post


def _readonly(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view


# -- the loop -------------------------------------------------------------------------------
def meta_train(
    x0: np.ndarray,
    tasks: TaskSource,
    estimator: Estimator,
    optimizer: Any,
    iterations: int,
    *,
    seed: int = 0,
    reference: Exact | None = None,
    eval_tasks: TaskBatch | None = None,
    callback: Callable[[int, np.ndarray, dict], bool | None] | None = None,
    progress: bool = True,
    desc: str | None = None,
) -> TrainResult:
    r"""Meta-train ``x`` with an estimator and an outer optimizer.

    For :math:`t = 0, \dots, T-1` (``T = iterations``): take the batch :math:`B_t`,
    compute :math:`(\ell_t, G_t)` = ``estimator.value_and_gradient(x_t, B_t)`` (the
    meta-loss and the batch estimate, from one kernel call), record, and update
    :math:`x_{t+1} = x_t + \text{updates}` from ``optimizer.update(G_t, state, x_t)``.
    Then one final record at :math:`x_T`, computed the same way (on a fresh batch in
    sampler mode), so the history holds T + 1 records.

    Parameters
    ----------
    x0 : array_like, shape (n,)
        The initial meta-parameters (copied to float64; never modified).
    tasks : TaskBatch or callable
        A fixed task batch used at every iteration, or a sampler ``rng -> TaskBatch``
        called once per record with one ``numpy.random.Generator`` created from ``seed``
        (stochastic meta-training).
    estimator : Estimator
        Any fobmaml estimator, e.g. ``fm.FOBMAML(inner, delta=1e-3)``.
    optimizer : Optimizer
        An outer optimizer (e.g. ``fm.SNGDM(lr=0.1)``), or any object with optax-style
        ``init(params)`` and ``update(grads, state, params)``.
    iterations : int
        T >= 0, the number of optimizer steps.
    seed : int
        Seed of the sampler's generator (unused with a fixed batch).
    reference : Exact, optional
        When given, every record also holds the exact meta-loss :math:`F(x_t)` and
        :math:`\lVert\nabla F(x_t)\rVert`, from ``reference.value_and_gradient`` on
        ``eval_tasks`` (or on the current batch). Its cost is not in ``time``.
    eval_tasks : TaskBatch, optional
        A fixed batch for the reference (needs ``reference``).
    callback : callable, optional
        ``callback(t, x_t, record)`` after each record (``x_t`` is a read-only view,
        ``record`` a dict of the record's values). Returning True (or any truthy value)
        stops the run; the result then holds ``x_t``, the history up to ``t`` and
        ``stopped_early=True`` (unless ``t`` was the final record, t = T).
    progress : bool
        Show a tqdm progress bar with the current loss.
    desc : str, optional
        The progress bar's label.

    Returns
    -------
    TrainResult
        ``x``, ``history``, ``state`` and ``stopped_early``. ``history["time"][t]`` is the
        wall time (``time.perf_counter``) spent in the estimator and the optimizer up to
        and including the evaluation at :math:`x_t`.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, naming the argument.
    FloatingPointError, NotPositiveDefiniteError, ConvergenceError
        From the estimator or the reference (see :mod:`fobmaml.errors`), unchanged.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 5, kappa=10.0, seed=0)
    >>> est = fm.FOBMAML(fm.InnerLoop(steps=50, lr=0.5, lam=1.0), delta=1e-4)
    >>> res = fm.meta_train(np.zeros(5), tasks, est, fm.GD(lr=1.0), 20, progress=False)
    >>> loss = res.history["meta_loss"]
    >>> len(loss), bool(loss[-1] < loss[0])
    (21, True)
    """
    x = _check_x0(x0)
    n = x.size
    next_batch = _task_source(tasks, n, check.integer(seed, "seed", minimum=0))
    if not isinstance(estimator, Estimator):
        raise TypeError(
            "`estimator` must be a fobmaml estimator such as fobmaml.FOBMAML "
            f"(got {type(estimator).__name__})"
        )
    optimizer = _check_optimizer(optimizer)
    iterations = check.integer(iterations, "iterations", minimum=0)
    eval_batch = _check_reference(reference, eval_tasks, n)
    if callback is not None and not callable(callback):
        raise TypeError(f"`callback` must be callable or None (got {type(callback).__name__})")
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"`progress` must be a bool (got {type(progress).__name__})")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"`desc` must be a str or None (got {type(desc).__name__})")

    keys = ("iteration", "meta_loss", "estimate_norm", "time")
    if reference is not None:
        keys += ("exact_loss", "exact_grad_norm")
    history = _History(keys)
    state = optimizer.init(x)
    elapsed = 0.0
    stopped_early = False

    with _progress_bar(iterations, bool(progress), desc) as bar:
        for t in range(iterations + 1):
            batch = next_batch()
            start = time.perf_counter()
            loss, grad = _evaluate(estimator, x, batch)
            elapsed += time.perf_counter() - start
            record = {
                "iteration": t,
                "meta_loss": float(loss),
                "estimate_norm": float(np.linalg.norm(grad)),
                "time": elapsed,
            }
            if reference is not None:
                ref_batch = batch if eval_batch is None else eval_batch
                record.update(_reference_record(reference, x, ref_batch))
            history.append(record)
            bar.set_postfix(_postfix(record), refresh=False)
            if callback is not None and callback(t, _readonly(x), dict(record)):
                stopped_early = t < iterations
                break
            if t == iterations:
                break
            start = time.perf_counter()
            x, state = _step(optimizer, x, grad, state)
            elapsed += time.perf_counter() - start
            bar.update(1)

    return TrainResult(x=x, history=history.arrays(), state=state, stopped_early=stopped_early)
