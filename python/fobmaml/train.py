r"""The meta-training loop: an estimator, an outer optimizer, and a record per iterate.

For :math:`t = 0, \dots, T-1`, with :math:`B_t` the task batch of iteration t (the
same fixed batch every time, or a fresh draw from a sampler):

.. math::

    (\ell_t, G_t) = \text{estimator.value\_and\_gradient}(x_t, B_t), \qquad
    x_{t+1} = \text{optimizer}(x_t, G_t),

and one last evaluation at :math:`x_T` without a step, so the history has T + 1
records. :math:`\ell_t` is :math:`F_K(x_t)` on :math:`B_t` (:math:`F(x_t)` for
:class:`fobmaml.Exact`).

:func:`meta_train` checks its arguments and hands the run to a small trainer with
three methods: ``init`` (a fresh start, or a resume from a checkpoint), ``step`` (one
record, and one outer step unless the run is over) and ``run`` (steps to the end,
with periodic checkpoints). The task sources are in ``_sources.py``; the checkpoint
file format and the run's fingerprint in :mod:`fobmaml.checkpoint`. The trainer's
reliability rests on one invariant: its progress is an immutable :class:`_Snapshot`
(``x_t``, the optimizer state, the sampler's generator state before batch ``t`` is
drawn, the number of history records that go with them), replaced by a single
assignment once an iteration is complete. Whatever interrupts the loop (Ctrl-C, a
divergence, an exception in a callback), the last snapshot is a consistent point to
report, checkpoint, and resume from.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable
from typing import Any, NamedTuple

import numpy as np
from tqdm.auto import tqdm

from . import _validation as check
from ._executor import Executor
from ._numerics import all_finite, norm, tree_finite
from ._sources import FixedSource, Source, check_batch, task_source
from ._version import __version__
from .checkpoint import (
    CheckpointError,
    check_fingerprint,
    describe,
    fingerprint,
    flatten_state,
    load_checkpoint,
    restore_state,
    save_checkpoint,
)
from .errors import NonFiniteStepError, raise_for_status
from .estimators import Estimator, Exact
from .optim import apply_updates
from .tasks import TaskBatch

__all__ = ["TrainResult", "meta_train"]

#: A fixed task batch, or a sampler ``rng -> TaskBatch``.
TaskSource = TaskBatch | Callable[[np.random.Generator], TaskBatch]

_CHECKPOINT_KIND = "fobmaml.meta_train"


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
    return check_batch(eval_tasks, n, "`eval_tasks`")


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


# -- records and progress -------------------------------------------------------------------
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


def _attach(exc: BaseException, result: TrainResult) -> None:
    try:
        exc.result = result
    except AttributeError:  # an exception type without a __dict__
        pass


# -- the trainer ----------------------------------------------------------------------------
class _Trainer:
    """One run of :func:`meta_train`: its parts, its progress (a snapshot) and its history.

    ``init`` starts it (or resumes it from its checkpoint), ``step`` computes one record
    and, unless the run is over, takes one outer step, and ``run`` steps to the end.
    """

    def __init__(
        self,
        x0: np.ndarray,
        source: Source,
        estimator: Estimator,
        optimizer: Any,
        iterations: int,
        *,
        reference: Exact | None,
        eval_batch: TaskBatch | None,
        callback: Callable | None,
        skip: bool,
        checkpoint: str | None,
        checkpoint_every: int | None,
        config: dict | None,
        executor: Executor,
    ) -> None:
        # The executor computes every record (in this process, or on a cluster); it may
        # replace the source by one that draws its batches where it computes them.
        self.executor = executor
        source = executor._source(source)
        self.x0, self.source, self.estimator, self.optimizer = x0, source, estimator, optimizer
        self.iterations, self.reference, self.eval_batch = iterations, reference, eval_batch
        self.callback, self.skip = callback, skip
        self.path, self.every, self.config = checkpoint, checkpoint_every, config
        keys = ("iteration", "meta_loss", "estimate_norm", "time")
        if reference is not None:
            keys += ("exact_loss", "exact_grad_norm")
        if skip:
            keys += ("skipped_tasks",)
        self.history = _History(keys)
        self.snap: _Snapshot | None = None
        self.resumed_from: int | None = None

    # -- the three steps of a run ---------------------------------------------------------
    def init(self, resume: bool) -> None:
        """Start at ``x0`` with a fresh optimizer state, or from the checkpoint if resuming."""
        state = self.optimizer.init(self.x0)
        self.snap = _Snapshot(0, self.x0, state, self.source.rng_state(), 0, 0.0, 0)
        if resume and self.path is not None and os.path.exists(self.path):
            self.snap, self.history = self._restore(state)
            self.resumed_from = self.snap.t

    @property
    def finished(self) -> bool:
        return self.snap.finished

    def step(self, bar: Any) -> None:
        """Record at x_t; then take the outer step to x_{t+1}, or finish the run.

        Commits one snapshot when the iteration is complete, so an exception leaves the
        last complete one in place.
        """
        snap = self.snap
        t, x, state = snap.t, snap.x, snap.state
        batch = self.source.draw()
        start = time.perf_counter()
        loss, grad, failed = self._evaluate(x, batch)
        elapsed = snap.elapsed + (time.perf_counter() - start)
        good = grad is not None and all_finite(grad)
        if grad is not None and not good and not self.skip:
            raise FloatingPointError(
                f"meta_train: the batch estimate at iteration {t} is not finite; the last good "
                "x and the history so far are in `exc.result`"
            )
        record = {
            "iteration": t,
            "meta_loss": loss,
            "estimate_norm": norm(grad) if grad is not None else float("nan"),
            "time": elapsed,
        }
        if self.skip:
            record["skipped_tasks"] = failed
        if self.reference is not None:
            record.update(self._reference_record(x, batch))
        self.history.append(record)
        bar.set_postfix(_postfix(record), refresh=False)
        stop = self.callback is not None and self.callback(t, _readonly(x), dict(record))
        if stop or t == self.iterations:
            self.snap = snap._replace(
                rng_state=self.source.rng_state(),
                records=t + 1,
                elapsed=elapsed,
                finished=True,
                stopped_early=bool(stop) and t < self.iterations,
            )
            return
        start = time.perf_counter()
        stepped = self._outer_step(x, grad, state) if good else "estimate"
        elapsed += time.perf_counter() - start
        if isinstance(stepped, str):
            if stepped != "estimate" and not self.skip:
                raise FloatingPointError(
                    f"meta_train: the outer step at iteration {t} (x_{t} -> x_{t + 1}) produced "
                    f"a non-finite {stepped}; x_{t}, the last finite iterate, and the history "
                    f"up to iteration {t} are in `exc.result`"
                )
            x_next, state_next, skipped = x, state, 1
        else:
            (x_next, state_next), skipped = stepped, 0
        self.snap = _Snapshot(
            t=t + 1,
            x=x_next,
            state=state_next,
            rng_state=self.source.rng_state(),
            records=t + 1,
            elapsed=elapsed,
            skipped=snap.skipped + skipped,
        )
        bar.update(1)
        if self.path is not None and self.every is not None and (t + 1) % self.every == 0:
            self.save()

    def run(self, bar: Any) -> None:
        """Step until the run is finished."""
        while not self.finished:
            self.step(bar)

    # -- one iteration's pieces -----------------------------------------------------------
    def _evaluate(self, x: np.ndarray, batch: TaskBatch) -> tuple[float, Any, int]:
        """``(loss, estimate or None, diverged tasks)`` at x on the batch.

        Without ``skip``, any failing task raises. With it, the loss and the estimate are
        means over the tasks that did not diverge (NaN and None if none is left), and
        failures other than divergence still raise.
        """
        if not self.skip:
            loss, grad = self.executor.value_and_gradient(self.estimator, x, batch)
            return float(loss), grad, 0
        est = self.executor.estimate(self.estimator, x, batch, losses=True, errors="return")
        st = est.status
        ok = st.ok
        other = ~ok & ~st.diverged
        if other.any():
            raise_for_status(st.restricted(other), self.estimator.name)
        failed = int(np.count_nonzero(~ok))
        if failed == ok.size:
            return float("nan"), None, failed
        return float(np.mean(est.losses[ok])), est.gradient, failed

    def _outer_step(self, x: np.ndarray, grad: np.ndarray, state: Any) -> tuple | str:
        """``(x_next, state_next)``, or a description of what became non-finite.

        NumPy's overflow warnings are silenced here: a non-finite result is reported as
        a divergence of the outer loop instead.
        """
        with np.errstate(over="ignore", invalid="ignore", divide="ignore", under="ignore"):
            try:
                updates, new_state = self.optimizer.update(grad, state, x)
                if not all_finite(updates):
                    return "update"
                new_x = apply_updates(x, updates)
            except NonFiniteStepError as exc:  # fobmaml's optimizers and apply_updates
                return exc.what
        # apply_updates has checked new_x; optimizers of other libraries may not check their
        # state.
        if not tree_finite(new_state):
            return "optimizer state"
        return new_x, new_state

    def _reference_record(self, x: np.ndarray, batch: TaskBatch) -> dict:
        batch = batch if self.eval_batch is None else self.eval_batch
        loss, grad = self.executor.value_and_gradient(self.reference, x, batch)
        return {"exact_loss": float(loss), "exact_grad_norm": norm(grad)}

    # -- the result and the checkpoint ----------------------------------------------------
    def result(self, interrupted: bool) -> TrainResult:
        """The snapshot's x and state with every completed record (the evaluation at x_t too)."""
        snap = self.snap
        return TrainResult(
            x=snap.x,
            history=self.history.arrays(snap.records + 1),
            state=snap.state,
            stopped_early=snap.stopped_early,
            skipped_iterations=snap.skipped,
            interrupted=interrupted,
            resumed_from=self.resumed_from,
        )

    def save(self) -> None:
        """Write the snapshot, its history records and the fingerprint to the checkpoint."""
        snap = self.snap
        spec, state_arrays = flatten_state(snap.state)
        arrays = {"x": snap.x}
        arrays.update({f"history/{k}": v for k, v in self.history.arrays(snap.records).items()})
        arrays.update({f"state/{i}": a for i, a in enumerate(state_arrays)})
        metadata = {
            "kind": _CHECKPOINT_KIND,
            "fobmaml_version": __version__,
            "config": self.config,
            "iteration": snap.t,
            "records": snap.records,
            "elapsed": snap.elapsed,
            "skipped_iterations": snap.skipped,
            "finished": snap.finished,
            "stopped_early": snap.stopped_early,
            "rng_state": snap.rng_state,
            "optimizer_state": spec,
            "history_keys": list(self.history.keys),
        }
        save_checkpoint(self.path, arrays, metadata)

    def _restore(self, template: Any) -> tuple[_Snapshot, _History]:
        """Load the checkpoint, check that it belongs to this run, and rebuild it."""
        path, config, keys, n = self.path, self.config, self.history.keys, self.x0.size
        ck = load_checkpoint(path)
        meta = ck.metadata
        if meta.get("kind") != _CHECKPOINT_KIND:
            raise CheckpointError(f"checkpoint {path!r} was not written by fobmaml.meta_train")
        check_fingerprint(path, meta.get("config"), config)
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
            if (rng_state is None) != (self.source.rng_state() is None):
                raise ValueError("the generator state does not match the task source")
            if rng_state is not None:
                self.source.set_rng_state(rng_state)
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
    executor: Executor | None = None,
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
    executor : fobmaml.distributed.DaskExecutor, optional
        Where the records are computed: by default in this process; with a
        :class:`fobmaml.distributed.DaskExecutor`, each batch (and the reference's) in
        shards on the workers of a Dask cluster. Everything else is unchanged (the
        checkpoints, resuming, Ctrl-C, ``on_divergence``, the progress bar, the callback
        and the history), and so are the results, bit for bit, on the same fobmaml build
        (``docs/distributed.md``). A checkpoint written with one executor resumes with
        another or in-process. With a sampler, the workers draw the batches (from the
        generator state the client sends) and keep their shards; the sampler must then be
        picklable (by cloudpickle). A lost Dask scheduler or connection raises
        :class:`fobmaml.distributed.ClusterError` with the partial result.

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
    source = task_source(tasks, n, seed)
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
    if executor is None:
        executor = Executor()
    elif not isinstance(executor, Executor):
        raise TypeError(
            "`executor` must be a fobmaml.distributed.DaskExecutor, or None to compute in "
            f"this process (got {type(executor).__name__})"
        )

    config = None
    if path is not None:
        config = fingerprint(
            estimator=describe(estimator),
            optimizer=describe(optimizer),
            reference=None if reference is None else describe(reference),
            x0={"shape": [n], "sha256": hashlib.sha256(x.tobytes()).hexdigest()},
            seed=seed,
            iterations=iterations,
            tasks="batch" if isinstance(source, FixedSource) else "sampler",
            eval_tasks=eval_batch is not None,
            on_divergence=on_divergence,
        )
    trainer = _Trainer(
        x,
        source,
        estimator,
        optimizer,
        iterations,
        reference=reference,
        eval_batch=eval_batch,
        callback=callback,
        skip=skip,
        checkpoint=path,
        checkpoint_every=every,
        config=config,
        executor=executor,
    )
    try:
        return _run(trainer, resume, iterations, progress, desc, path, on_interrupt)
    finally:
        executor._end_run(trainer.source)


def _run(
    trainer: _Trainer,
    resume: bool,
    iterations: int,
    progress: bool,
    desc: str | None,
    path: str | None,
    on_interrupt: str,
) -> TrainResult:
    """Run the trainer: init (or resume), step to the end, checkpoint; see meta_train."""
    trainer.init(resume)
    if trainer.finished:  # a checkpoint of a finished run
        return trainer.result(interrupted=False)
    try:
        with _progress_bar(iterations, trainer.snap.t, bool(progress), desc) as bar:
            trainer.run(bar)
        if path is not None:
            trainer.save()
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        partial = trainer.result(interrupted=interrupted)
        if path is not None:
            try:
                trainer.save()
            except BaseException as failed:
                _attach(failed, partial)
                raise
        if interrupted and on_interrupt == "return":
            return partial
        _attach(exc, partial)
        raise
    return trainer.result(interrupted=False)
