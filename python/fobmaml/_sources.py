"""Where meta_train's task batches come from: one fixed batch, or a sampler with one generator."""

from __future__ import annotations

from typing import Callable, Union

import numpy as np

from . import _validation as check
from .tasks import TaskBatch


def check_batch(batch: object, n: int, what: str) -> TaskBatch:
    """``batch`` if it is a task batch of dimension n; ``what`` names it in errors."""
    batch = check.task_batch(batch, what)
    if batch.dim != n:
        raise ValueError(f"{what} has tasks of dimension {batch.dim}, but `x0` has {n} entries")
    return batch


class FixedSource:
    """The same batch at every record."""

    def __init__(self, batch: TaskBatch) -> None:
        self.batch = batch

    def draw(self) -> TaskBatch:
        return self.batch

    def rng_state(self) -> None:
        return None

    def set_rng_state(self, state: object) -> None:
        pass


class SamplerSource:
    """A fresh batch from ``sampler(rng)`` at every record, with one generator."""

    def __init__(self, sampler: Callable, n: int, seed: int) -> None:
        self.sampler, self.n = sampler, n
        self.rng = np.random.default_rng(seed)

    def draw(self) -> TaskBatch:
        return check_batch(
            self.sampler(self.rng), self.n, "the batch returned by the `tasks` sampler"
        )

    def rng_state(self) -> dict:
        return self.rng.bit_generator.state

    def set_rng_state(self, state: object) -> None:
        self.rng.bit_generator.state = state


Source = Union[FixedSource, SamplerSource]


def task_source(tasks: object, n: int, seed: int) -> Source:
    """The source for meta_train's ``tasks`` argument: a batch, or a sampler ``rng -> batch``."""
    if isinstance(tasks, TaskBatch):
        return FixedSource(check_batch(tasks, n, "`tasks`"))
    if callable(tasks):
        return SamplerSource(tasks, n, seed)
    raise TypeError(
        "`tasks` must be a fobmaml task batch such as QuadraticTasks, or a sampler "
        f"`rng -> TaskBatch` (got {type(tasks).__name__})"
    )
