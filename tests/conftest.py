"""Shared fixtures for the estimator tests on the quadratic family."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref  # tests/ is on the pytest pythonpath (pyproject.toml)

import fobmaml as fm


@pytest.fixture
def restore_threads():
    """Put the process-wide kernel thread setting back as it was after the test."""
    before = fm.set_num_threads(0)
    fm.set_num_threads(before)
    yield
    fm.set_num_threads(before)


@pytest.fixture
def rng(request) -> np.random.Generator:
    """A generator seeded from the test's node id: reproducible, different per test."""
    return np.random.default_rng(ref.seed_of(request.node.nodeid))


@pytest.fixture
def problem(rng):
    """A factory of small random quadratic problems.

    ``problem(m, n, separate_query=False, lo=0.1, hi=1.0)`` returns
    ``(tasks, ref_tasks, x, (A, b, B, c))``: the library's task batch, the
    reference's list of tasks, a random meta-parameter and the raw arrays.
    """

    def make(m: int, n: int, separate_query: bool = False, lo: float = 0.1, hi: float = 1.0):
        A, b, B, c = ref.random_quadratic(rng, m, n, separate_query, lo, hi)
        tasks = fm.QuadraticTasks(A, b, B, c)
        x = rng.standard_normal(n)
        return tasks, ref.task_list(A, b, B, c), x, (A, b, B, c)

    return make
