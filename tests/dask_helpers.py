"""Helpers of the Dask tests that the worker processes import (so: no pytest here)."""

from __future__ import annotations

import os
import signal

import numpy as np
from distributed import WorkerPlugin


class KillOnce(WorkerPlugin):
    """SIGKILLs its own worker process when it starts computing a task whose key starts
    with ``prefix``, after ``skip`` such tasks on that worker; once per ``marker`` file.

    The marker, created atomically before the kill, keeps the worker that takes over the
    shard (and the restarted one) alive: a worker dies mid-iteration exactly once.
    """

    name = "fobmaml-test-kill-once"

    def __init__(self, marker: str, prefix: str, skip: int) -> None:
        self.marker, self.prefix, self.skip = marker, prefix, skip
        self.seen = 0

    def transition(self, key, start, finish, **kwargs) -> None:
        if finish != "executing" or not str(key).startswith(self.prefix):
            return
        self.seen += 1
        if self.seen <= self.skip:
            return
        try:
            fd = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return
        os.close(fd)
        os.kill(os.getpid(), signal.SIGKILL)


def unseeded_sampler(rng: np.random.Generator):
    """A sampler that ignores its generator: each worker draws a different batch."""
    import fobmaml as fm

    return fm.datasets.sinusoid(4, layers=[1, 10, 10, 1])(np.random.default_rng())


def failing_sampler(rng: np.random.Generator):
    raise ValueError("this sampler fails on purpose")
