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
source, the evaluation, the guarded outer step, the history, checkpoints, the
progress bar). Its reliability rests on one invariant: the loop's progress is an
immutable :class:`_Snapshot` (``x_t``, the optimizer state, the sampler's generator
state before batch ``t`` is drawn, the number of history records that go with them),
replaced by a single assignment once an iteration is complete. Whatever interrupts
the loop (Ctrl-C, a divergence, an exception in a callback), the last snapshot is a
consistent point to report, checkpoint, and resume from.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from . import _validation as check
from ._native import core as _core
from ._version import __version__
from .checkpoint import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    restore_state,
    save_checkpoint,
)
from .errors import TaskStatus, raise_for_status
from .estimators import Estimator, Exact
from .optim import _all_finite, _state_finite, apply_updates
from .tasks import TaskBatch

__all__ = ["TrainResult", "meta_train"]

#: A fixed task batch, or a sampler ``rng -> TaskBatch``.
TaskSource = TaskBatch | Callable[[np.random.Generator], TaskBatch]

_CHECKPOINT_KIND = "fobmaml.meta_train"
#: Kernel status codes that count as a diverging task under ``on_divergence="skip"``.
_DIVERGED = tuple(_core.STATUS_CODES.index(c) for c in ("non_finite", "diverged"))


class TrainResult(NamedTuple):
    """What :func:`meta_train` returns (and attaches to its exceptions as ``exc.result``).

    Attributes
    ----------
    x : numpy.ndarray, shape (n,)
        The last iterate: x_T, or x_t if the callback stopped the run at iteration t,
        or the last good iterate of a run that failed or was interrupted.
    history : dict of str to numpy.ndarray
        One entry per record: ``iteration`` (int), ``meta_loss``, ``estimate_norm``,
        ``time``; with a reference ``exact_loss`` and ``exact_grad_norm``; with
        ``on_divergence="skip"`` ``skipped_tasks`` (int).
    state : object
        The optimizer state that goes with ``x`` (to resume from).
    stopped_early : bool
        True when the callback stopped the run before the last iteration.
    skipped_iterations : int
        Outer steps not taken under ``on_divergence="skip"``: every task of the batch
        diverged, or the step itself produced non-finite values.
    interrupted : bool
        True when a KeyboardInterrupt ended the run (see ``on_interrupt``).
    resumed_from : int or None
        The iteration t of the checkpoint the run resumed from (its x_t), or None.
    """

    x: np.ndarray
    history: dict
    state: Any
    stopped_early: bool
    skipped_iterations: int = 0
    interrupted: bool = False
    resumed_from: int | None = None


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


def _check_checkpointing(
    checkpoint: object, checkpoint_every: object, resume: object
) -> tuple[str | None, int | None, bool]:
    if checkpoint is not None and not isinstance(checkpoint, (str, os.PathLike)):
        raise TypeError(
            f"`checkpoint` must be a path (str or os.PathLike) or None "
            f"(got {type(checkpoint).__name__})"
        )
    path = None if checkpoint is None else os.fspath(checkpoint)
    if path is not None and not isinstance(path, str):
        raise TypeError("`checkpoint` must be a text path, not bytes")
    every = None
    if checkpoint_every is not None:
        every = check.integer(checkpoint_every, "checkpoint_every", minimum=1)
        if path is None:
            raise ValueError("`checkpoint_every` needs `checkpoint`, the file to write")
    if not isinstance(resume, (bool, np.bool_)):
        raise TypeError(f"`resume` must be a bool (got {type(resume).__name__})")
    if resume and path is None:
        raise ValueError("`resume=True` needs `checkpoint`, the file to resume from")
    return path, every, bool(resume)


# -- the task source ------------------------------------------------------------------------
class _FixedSource:
    """The same batch at every record."""

    def __init__(self, batch: TaskBatch) -> None:
        self.batch = batch

    def draw(self) -> TaskBatch:
        return self.batch

    def rng_state(self) -> None:
        return None

    def set_rng_state(self, state: object) -> None:
        pass


class _SamplerSource:
    """A fresh batch from ``sampler(rng)`` at every record, with one generator."""

    def __init__(self, sampler: Callable, n: int, seed: int) -> None:
        self.sampler, self.n = sampler, n
        self.rng = np.random.default_rng(seed)

    def draw(self) -> TaskBatch:
        return _check_batch(
            self.sampler(self.rng), self.n, "the batch returned by the `tasks` sampler"
        )

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: object) -> None:
        self.rng.bit_generator.state = state


def _task_source(tasks: object, n: int, seed: int) -> _FixedSource | _SamplerSource:
    if isinstance(tasks, TaskBatch):
        return _FixedSource(_check_batch(tasks, n, "`tasks`"))
    if callable(tasks):
        return _SamplerSource(tasks, n, seed)
    raise TypeError(
        "`tasks` must be a fobmaml task batch such as QuadraticTasks, or a sampler "
        f"`rng -> TaskBatch` (got {type(tasks).__name__})"
    )


# -- one iteration's pieces -----------------------------------------------------------------
def _evaluate(estimator: Estimator, x: np.ndarray, batch: TaskBatch) -> tuple[float, Any, int]:
    """``(loss, estimate, 0)``; any failing task raises (``on_divergence="raise"``)."""
    loss, grad = estimator.value_and_gradient(x, batch)
    return float(loss), grad, 0


def _evaluate_skipping(
    estimator: Estimator, x: np.ndarray, batch: TaskBatch
) -> tuple[float, Any, int]:
    """``(loss, estimate, failed)`` over the non-diverging tasks (``on_divergence="skip"``).

    The loss and the estimate are means over the good tasks; with no good task they are
    NaN and None. Failures other than divergence still raise.
    """
    est = estimator.estimate(x, batch, losses=True, errors="return")
    st = est.status
    ok = st.ok
    other = ~ok & ~np.isin(st.code, _DIVERGED)
    if other.any():
        raise_for_status(
            TaskStatus(np.where(other, st.code, 0), st.stage, st.step, st.value), estimator.name
        )
    failed = int(np.count_nonzero(~ok))
    if failed == ok.size:
        return float("nan"), None, failed
    return float(np.mean(est.losses[ok])), est.gradient, failed


def _norm(g: np.ndarray) -> float:
    """The Euclidean norm, finite for any finite ``g``.

    ``numpy.linalg.norm`` (bit for bit, as before) unless its squares could overflow,
    max |g_j| > 1e150; then ``a ||g/a||`` with a = max |g_j|.
    """
    g = np.asarray(g, dtype=np.float64)
    a = float(np.max(np.abs(g))) if g.size else 0.0
    if not np.isfinite(a) or a <= 1e150:
        return float(np.linalg.norm(g))
    s = g / a
    return a * float(np.sqrt(np.dot(s, s)))


def _outer_step(
    optimizer: Any, x: np.ndarray, grad: np.ndarray, state: Any
) -> tuple[np.ndarray, Any] | str:
    """``(x_next, state_next)``, or a description of what became non-finite.

    NumPy's overflow warnings are silenced here: a non-finite result is reported by
    the caller as a divergence of the outer loop instead.
    """
    with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
        try:
            updates, new_state = optimizer.update(grad, state, x)
            if not _all_finite(updates):
                return "update"
            new_x = apply_updates(x, updates)
        except FloatingPointError as exc:  # fobmaml's optimizers and apply_updates say what
            what = getattr(exc, "nonfinite", None)
            if what is None:
                raise
            return what
    # apply_updates has checked new_x; optimizers of other libraries may not check their state.
    if not _state_finite(new_state):
        return "optimizer state"
    return new_x, new_state


def _reference_record(reference: Exact, x: np.ndarray, batch: TaskBatch) -> dict:
    loss, grad = reference.value_and_gradient(x, batch)
    return {"exact_loss": float(loss), "exact_grad_norm": _norm(grad)}


class _History:
    """Records appended one at a time (one list append each), returned as a dict of arrays."""

    _DTYPES = {"iteration": np.int64, "skipped_tasks": np.int64}

    def __init__(self, keys: tuple[str, ...]) -> None:
        self.keys = keys
        self.records: list[dict] = []

    def __len__(self) -> int:
        return len(self.records)

    def append(self, record: dict) -> None:
        self.records.append(record)

    def arrays(self, count: int | None = None) -> dict[str, np.ndarray]:
        records = self.records[:count]
        return {
            k: np.asarray([r[k] for r in records], dtype=self._DTYPES.get(k, np.float64))
            for k in self.keys
        }

    def load(self, arrays: dict[str, np.ndarray], count: int) -> None:
        self.records = [{k: arrays[k][i].item() for k in self.keys} for i in range(count)]


def _progress_bar(iterations: int, initial: int, progress: bool, desc: str | None):
    return tqdm(
        total=iterations, initial=initial, desc=desc, disable=not progress, dynamic_ncols=True
    )


def _postfix(record: dict) -> dict:
    post = {"loss": f"{record['meta_loss']:.4g}"}
    if "exact_loss" in record:
        post["F"] = f"{record['exact_loss']:.4g}"
    return post


def _readonly(x: np.ndarray) -> np.ndarray:
    view = x.view()
    view.flags.writeable = False
    return view


# -- progress and checkpoints ---------------------------------------------------------------
class _Snapshot(NamedTuple):
    """A consistent point of the run; replaced as a whole, never modified."""

    t: int  # x is x_t
    x: np.ndarray
    state: Any
    rng_state: dict | None  # the sampler's generator before batch t is drawn
    records: int  # history records that go with x_t: t, or t + 1 once finished
    elapsed: float
    skipped: int
    finished: bool = False
    stopped_early: bool = False


class _Run:
    """The mutable holder of the current snapshot and the history."""

    def __init__(self, snap: _Snapshot, history: _History) -> None:
        self.snap = snap
        self.history = history

    def result(self, interrupted: bool, resumed_from: int | None) -> TrainResult:
        """The snapshot's x and state with every completed record (the evaluation at x_t too)."""
        snap = self.snap
        return TrainResult(
            x=snap.x,
            history=self.history.arrays(snap.records + 1),
            state=snap.state,
            stopped_early=snap.stopped_early,
            skipped_iterations=snap.skipped,
            interrupted=interrupted,
            resumed_from=resumed_from,
        )


def _describe(obj: Any) -> dict:
    """An estimator's or optimizer's identity: its type and parameters (or repr)."""
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    get_params = getattr(obj, "get_params", None)
    return {"type": kind, "params": get_params() if callable(get_params) else repr(obj)}


def _json_default(obj: object) -> object:
    if isinstance(obj, np.generic):
        return obj.item()
    return repr(obj)


def _fingerprint(**items: Any) -> dict:
    """The configuration as it reads back from JSON (so that it compares equal)."""
    return json.loads(json.dumps(items, sort_keys=True, default=_json_default))


def _save(path: str, config: dict, run: _Run) -> None:
    snap = run.snap
    spec, state_arrays = flatten_state(snap.state)
    arrays = {"x": snap.x}
    arrays.update({f"history/{k}": v for k, v in run.history.arrays(snap.records).items()})
    arrays.update({f"state/{i}": a for i, a in enumerate(state_arrays)})
    metadata = {
        "kind": _CHECKPOINT_KIND,
        "fobmaml_version": __version__,
        "config": config,
        "iteration": snap.t,
        "records": snap.records,
        "elapsed": snap.elapsed,
        "skipped_iterations": snap.skipped,
        "finished": snap.finished,
        "stopped_early": snap.stopped_early,
        "rng_state": snap.rng_state,
        "optimizer_state": spec,
        "history_keys": list(run.history.keys),
    }
    save_checkpoint(path, arrays, metadata)


def _mismatch(path: str, saved: dict, config: dict) -> str | None:
    for key in sorted(set(saved) | set(config)):
        if saved.get(key) != config.get(key):
            return (
                f"checkpoint {path!r} was written by a different run: `{key}` differs "
                f"(checkpoint: {saved.get(key)!r}; this call: {config.get(key)!r}). "
                "Pass the same arguments to resume, or remove the file (or pass "
                "resume=False) to start over"
            )
    return None


def _restore(
    path: str, config: dict, keys: tuple[str, ...], template: Any, source: Any, n: int
) -> tuple[_Snapshot, _History]:
    """Load a meta_train checkpoint, check that it belongs to this run, and rebuild it."""
    ck = load_checkpoint(path)
    meta = ck.metadata
    if meta.get("kind") != _CHECKPOINT_KIND:
        raise CheckpointError(f"checkpoint {path!r} was not written by fobmaml.meta_train")
    if not isinstance(meta.get("config"), dict):
        raise CheckpointError(f"checkpoint {path!r} has no run configuration")
    message = _mismatch(path, meta["config"], config)
    if message:
        raise CheckpointError(message)
    try:
        t, records = meta["iteration"], meta["records"]
        finished = meta["finished"]
        if not (isinstance(t, int) and 0 <= t <= config["iterations"]):
            raise ValueError(f"bad iteration {t!r}")
        if records != t + (1 if finished else 0):
            raise ValueError(f"{records!r} history records do not go with iteration {t}")
        if meta["history_keys"] != list(keys):
            raise ValueError(f"history keys {meta['history_keys']} (expected {list(keys)})")
        x = ck.arrays["x"]
        if x.dtype != np.float64 or x.shape != (n,) or not np.all(np.isfinite(x)):
            raise ValueError(f"`x` must be {n} finite float64 values")
        history = _History(keys)
        columns = {k: ck.arrays[f"history/{k}"] for k in keys}
        if any(c.shape != (records,) for c in columns.values()):
            raise ValueError("history columns of the wrong length")
        history.load(columns, records)
        state_arrays = []
        while f"state/{len(state_arrays)}" in ck.arrays:
            state_arrays.append(ck.arrays[f"state/{len(state_arrays)}"])
        state = restore_state(template, meta["optimizer_state"], state_arrays)
        rng_state = meta["rng_state"]
        if (rng_state is None) != (source.rng_state() is None):
            raise ValueError("the generator state does not match the task source")
        if rng_state is not None:
            source.set_rng_state(rng_state)
        snap = _Snapshot(
            t=t,
            x=x,
            state=state,
            rng_state=rng_state,
            records=records,
            elapsed=float(meta["elapsed"]),
            skipped=int(meta["skipped_iterations"]),
            finished=bool(finished),
            stopped_early=bool(meta["stopped_early"]),
        )
    except CheckpointError:
        raise
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"checkpoint {path!r} has malformed contents: {exc}") from exc
    return snap, history


def _attach(exc: BaseException, result: TrainResult) -> None:
    try:
        exc.result = result
    except AttributeError:  # an exception type without a __dict__
        pass


# -- the loop -------------------------------------------------------------------------------
def _loop(
    run: _Run,
    *,
    iterations: int,
    source: Any,
    evaluate: Callable[[np.ndarray, TaskBatch], tuple[float, Any, int]],
    step: Callable[[np.ndarray, np.ndarray, Any], Any],
    reference: Callable[[np.ndarray, TaskBatch], dict] | None,
    callback: Callable | None,
    skip: bool,
    completed: Callable[[int], None],
    bar: Any,
) -> None:
    """Run from ``run.snap`` to the end, committing one snapshot per completed iteration.

    ``evaluate(x, batch)`` gives ``(loss, estimate or None, diverged tasks)``,
    ``step(x, estimate, state)`` the guarded outer step (:func:`_outer_step`),
    ``reference(x, batch)`` the reference's record entries, and ``completed(k)`` is
    told after the k-th step (for periodic checkpoints).
    """
    while True:
        snap = run.snap
        t, x, state = snap.t, snap.x, snap.state
        batch = source.draw()
        start = time.perf_counter()
        loss, grad, failed = evaluate(x, batch)
        elapsed = snap.elapsed + (time.perf_counter() - start)
        good = grad is not None and _all_finite(grad)
        if grad is not None and not good and not skip:
            raise FloatingPointError(
                f"meta_train: the batch estimate at iteration {t} is not finite; the last good "
                "x and the history so far are in `exc.result`"
            )
        record = {
            "iteration": t,
            "meta_loss": loss,
            "estimate_norm": _norm(grad) if grad is not None else float("nan"),
            "time": elapsed,
        }
        if skip:
            record["skipped_tasks"] = failed
        if reference is not None:
            record.update(reference(x, batch))
        run.history.append(record)
        bar.set_postfix(_postfix(record), refresh=False)
        stop = callback is not None and callback(t, _readonly(x), dict(record))
        if stop or t == iterations:
            run.snap = snap._replace(
                rng_state=source.rng_state(),
                records=t + 1,
                elapsed=elapsed,
                finished=True,
                stopped_early=bool(stop) and t < iterations,
            )
            return
        start = time.perf_counter()
        stepped = step(x, grad, state) if good else "estimate"
        elapsed += time.perf_counter() - start
        if isinstance(stepped, str):
            if stepped != "estimate" and not skip:
                raise FloatingPointError(
                    f"meta_train: the outer step at iteration {t} (x_{t} -> x_{t + 1}) produced "
                    f"a non-finite {stepped}; x_{t}, the last finite iterate, and the history "
                    f"up to iteration {t} are in `exc.result`"
                )
            x_next, state_next, skipped = x, state, 1
        else:
            (x_next, state_next), skipped = stepped, 0
        run.snap = _Snapshot(
            t=t + 1,
            x=x_next,
            state=state_next,
            rng_state=source.rng_state(),
            records=t + 1,
            elapsed=elapsed,
            skipped=snap.skipped + skipped,
        )
        bar.update(1)
        completed(t + 1)


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
    on_divergence: str = "raise",
    on_interrupt: str = "raise",
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
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
        (stochastic meta-training). For checkpoints to resume exactly, the sampler must
        draw all its randomness from that generator.
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
        ``eval_tasks`` (or on the current batch). Its cost is not in ``time``, and its
        failures always raise (``on_divergence`` does not apply to it).
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
    on_divergence : {"raise", "skip"}
        What a divergence does. A task diverges when its kernel reports a NaN/Inf or a
        diverging inner loop (see :mod:`fobmaml.errors`); the outer loop diverges when
        the batch estimate is not finite, or when the step produces a non-finite update,
        ``x`` or optimizer state.

        - ``"raise"`` (default): the estimator's ``FloatingPointError`` propagates
          unchanged; an outer divergence raises ``FloatingPointError`` naming the
          iteration. Either way ``exc.result`` holds the partial :class:`TrainResult`:
          the last good iterate :math:`x_t`, its optimizer state, and the history up to
          the failure (with the record at :math:`x_t` if it was computed).
        - ``"skip"``: the batch is evaluated with
          ``estimator.estimate(x, batch, losses=True, errors="return")``; the record's
          loss and the step use the means over the tasks that did not diverge, and the
          history gains ``skipped_tasks``, the number of diverged tasks at each record.
          If every task diverges (loss and estimate norm are then NaN), or the outer step
          diverges, no step is taken: ``x`` and the optimizer state stay as they were,
          and the iteration is counted in ``skipped_iterations``. Kernel failures other
          than divergence (``NotPositiveDefiniteError``, ``ConvergenceError``) still
          raise. With a fixed batch a diverging task diverges at every iteration.
    on_interrupt : {"raise", "return"}
        What a ``KeyboardInterrupt`` (Ctrl-C) during the run does. No completed
        iteration is lost: the partial result holds :math:`x_t` and the optimizer state
        after the last completed step, and every completed record (including the
        evaluation at :math:`x_t` if it finished), with ``interrupted=True``. With
        ``checkpoint``, the checkpoint is written first (the last completed step).
        ``"raise"`` (default) re-raises the KeyboardInterrupt with the partial result as
        ``exc.result``; ``"return"`` returns it. The kernels run without the GIL and are
        not cut short: an interrupt during one takes effect when it returns. A second
        interrupt while the checkpoint is being written aborts that write; the file then
        keeps its previous contents.
    checkpoint : str or os.PathLike, optional
        A file to checkpoint the run to (see :mod:`fobmaml.checkpoint` for the format).
        It is written atomically every ``checkpoint_every`` iterations, at the end of the
        run (also when the callback stops it), and when the run is interrupted or fails
        (an exception from the estimator, the reference, the optimizer, the sampler or
        the callback), always at the last completed step. It holds x, the optimizer
        state, the sampler's generator state, the iteration, the history, the skipped
        count, the accumulated ``time`` and a fingerprint of the run: the estimator,
        optimizer and reference (type and ``get_params()``, or ``repr`` for optimizers
        without it), ``x0`` (shape and SHA-256 of its float64 bytes), ``seed``,
        ``iterations``, whether ``tasks`` is a batch or a sampler, whether
        ``eval_tasks`` is given, and ``on_divergence``. The task data and the sampler's
        code are not part of it. A failure to write the checkpoint is never swallowed.
    checkpoint_every : int, optional
        Save after every ``checkpoint_every``-th completed iteration (t + 1 a multiple
        of it, counted from the start of the run, across resumes). By default the file
        is written only at the end, on an interrupt and on a failure. Needs
        ``checkpoint``.
    resume : bool
        If True and ``checkpoint`` exists, continue from it instead of from ``x0``;
        if it does not exist, start from ``x0``. A resumed run is bit-identical to the
        uninterrupted run with the same arguments: the same iterates, the same history
        except ``time`` (which continues from the saved total), and the same final
        optimizer state and generator state. (This assumes the same fobmaml build and
        instruction-set variant, ``fobmaml.build_info()["isa"]``; the thread count does
        not matter.) The callback is only called for the records
        computed after resuming. A checkpoint of a finished run is returned as it is,
        without computing anything. If False (default), an existing file is overwritten
        at the first save.

    Returns
    -------
    TrainResult
        ``x``, ``history``, ``state``, ``stopped_early``, ``skipped_iterations``,
        ``interrupted`` and ``resumed_from``. ``history["time"][t]`` is the wall time
        (``time.perf_counter``) spent in the estimator and the optimizer up to and
        including the evaluation at :math:`x_t`.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, naming the argument.
    FloatingPointError, NotPositiveDefiniteError, ConvergenceError
        From the estimator or the reference (see :mod:`fobmaml.errors`), unchanged, and
        ``FloatingPointError`` for a divergence of the outer loop (see
        ``on_divergence``).
    KeyboardInterrupt
        With ``on_interrupt="raise"``.
    fobmaml.checkpoint.CheckpointError
        With ``resume=True``, when the checkpoint is corrupt, truncated, of another
        format version, or written by a run with a different fingerprint; nothing is
        loaded from it.

    Any exception raised once the loop has started (the above, or one from the
    callback or the sampler) carries the partial result as ``exc.result``.

    Notes
    -----
    A checkpoint (read it with :func:`fobmaml.checkpoint.load_checkpoint`) holds the
    arrays ``x`` (:math:`x_t`), ``history/<key>`` (the records before :math:`x_t`, or up
    to and including it once the run is finished) and ``state/<i>`` (the optimizer
    state's arrays), and the metadata ``iteration`` (t), ``records``, ``finished``,
    ``stopped_early``, ``skipped_iterations``, ``elapsed``, ``rng_state`` (the
    ``bit_generator.state`` dict, or None for a fixed batch), ``optimizer_state`` (its
    structure and scalars), ``history_keys``, ``config`` (the fingerprint),
    ``fobmaml_version`` and ``kind`` (``"fobmaml.meta_train"``).

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 5, kappa=10.0, seed=0)
    >>> est = fm.FOBMAML(fm.InnerLoop(steps=50, lr=0.5, lam=1.0), delta=1e-4)
    >>> res = fm.meta_train(np.zeros(5), tasks, est, fm.GD(lr=1.0), 20, progress=False)
    >>> loss = res.history["meta_loss"]
    >>> len(loss), bool(loss[-1] < loss[0])
    (21, True)

    Checkpointing, and resuming after an interruption:

    >>> import os, tempfile
    >>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
    >>> opts = dict(progress=False, checkpoint=path, checkpoint_every=5, resume=True)
    >>> res = fm.meta_train(np.zeros(5), tasks, est, fm.GD(lr=1.0), 20, **opts)
    >>> again = fm.meta_train(np.zeros(5), tasks, est, fm.GD(lr=1.0), 20, **opts)
    >>> again.resumed_from, bool(np.array_equal(again.x, res.x))
    (20, True)
    """
    x = _check_x0(x0)
    n = x.size
    seed = check.integer(seed, "seed", minimum=0)
    source = _task_source(tasks, n, seed)
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
    skip = check.choice(on_divergence, "on_divergence", ("raise", "skip")) == "skip"
    check.choice(on_interrupt, "on_interrupt", ("raise", "return"))
    path, every, resume = _check_checkpointing(checkpoint, checkpoint_every, resume)

    keys = ("iteration", "meta_loss", "estimate_norm", "time")
    if reference is not None:
        keys += ("exact_loss", "exact_grad_norm")
    if skip:
        keys += ("skipped_tasks",)
    state = optimizer.init(x)
    run = _Run(_Snapshot(0, x, state, source.rng_state(), 0, 0.0, 0), _History(keys))
    resumed_from = None
    save = None
    if path is not None:
        config = _fingerprint(
            estimator=_describe(estimator),
            optimizer=_describe(optimizer),
            reference=None if reference is None else _describe(reference),
            x0={"shape": [n], "sha256": hashlib.sha256(x.tobytes()).hexdigest()},
            seed=seed,
            iterations=iterations,
            tasks="batch" if isinstance(source, _FixedSource) else "sampler",
            eval_tasks=eval_batch is not None,
            on_divergence=on_divergence,
        )

        def save() -> None:
            _save(path, config, run)

        if resume and os.path.exists(path):
            run.snap, run.history = _restore(path, config, keys, state, source, n)
            resumed_from = run.snap.t
            if run.snap.finished:
                return run.result(interrupted=False, resumed_from=resumed_from)

    def completed(k: int) -> None:
        if save is not None and every is not None and k % every == 0:
            save()

    def reference_record(x: np.ndarray, batch: TaskBatch) -> dict:
        return _reference_record(reference, x, batch if eval_batch is None else eval_batch)

    evaluate = _evaluate_skipping if skip else _evaluate
    try:
        with _progress_bar(iterations, run.snap.t, bool(progress), desc) as bar:
            _loop(
                run,
                iterations=iterations,
                source=source,
                evaluate=functools.partial(evaluate, estimator),
                step=functools.partial(_outer_step, optimizer),
                reference=None if reference is None else reference_record,
                callback=callback,
                skip=skip,
                completed=completed,
                bar=bar,
            )
        if save is not None:
            save()
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        partial = run.result(interrupted=interrupted, resumed_from=resumed_from)
        if save is not None:
            try:
                save()
            except BaseException as failed:
                _attach(failed, partial)
                raise
        if interrupted and on_interrupt == "return":
            return partial
        _attach(exc, partial)
        raise
    return run.result(interrupted=False, resumed_from=resumed_from)
