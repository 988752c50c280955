"""The reduction executors share (fobmaml._executor.combine, the core's finish_batch), and
the in-process executor.

A batch computed shard by shard (as the Dask workers do), with the shards' rows reduced by
``combine``, must give the in-process estimate bit for bit on every path of
``finish_batch`` (``cpp/include/fobmaml/batch.hpp``): all tasks good, some failed, none
good, and a sum of finite rows that overflows. None of this needs Dask.
"""

from __future__ import annotations

import numpy as np
import pytest

import fobmaml as fm
from fobmaml._executor import Executor, combine
from fobmaml._native import core

# Task 4 of BAD diverges: with lr 0.45, eigenvalue 10 + lam multiplies the error by 4.5 per
# step (as in tests/test_train.py).
INNER = fm.InnerLoop(steps=30, lr=0.45, lam=0.5)
GOOD = fm.datasets.quadratic_tasks(5, 6, kappa=8.0, seed=3)
BAD = fm.QuadraticTasks(
    np.concatenate([GOOD.A[:4], 10.0 * np.eye(6)[None]]),
    np.concatenate([GOOD.b[:4], np.ones((1, 6))]),
)
ALL_BAD = BAD[[4, 4, 4]]
# Each task's FOMAML estimate is 1e308 (finite); the sum of the rows overflows, and the
# kernels fall back to averaging the scaled rows (tests/test_fuzz.py has the same batch).
OVERFLOW = fm.QuadraticTasks(
    np.ones((3, 1, 1)), np.zeros((3, 1)), np.ones((3, 1, 1)), np.full((3, 1), -1e308)
)

ESTIMATORS = [fm.FOBMAML(INNER, delta=1e-3, scheme="symmetric"), fm.MAML(INNER), fm.Exact(INNER)]


def _sharded(est, x, tasks, cuts, losses=True):
    """The estimate computed shard by shard (cut before the given task indices), combined."""
    bounds = list(zip([0, *cuts], [*cuts, tasks.num_tasks]))
    parts = [est.estimate(x, tasks[lo:hi], losses=losses, errors="return") for lo, hi in bounds]
    return combine(parts, losses)


def _assert_same(got, want):
    assert got.task_gradients.tobytes() == want.task_gradients.tobytes()
    assert got.gradient.tobytes() == want.gradient.tobytes()
    if want.losses is None:
        assert got.losses is None
    else:
        assert got.losses.tobytes() == want.losses.tobytes()
    for a, b in zip(got.status, want.status):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
@pytest.mark.parametrize("cuts", [[], [1], [2, 3], [1, 2, 3, 4]], ids=str)
def test_sharded_batches_reduce_to_the_in_process_bits(est, cuts):
    x = np.linspace(-1.0, 2.0, 6)
    want = est.estimate(x, GOOD, losses=True, errors="return")
    assert want.status.ok.all()
    _assert_same(_sharded(est, x, GOOD, cuts), want)


@pytest.mark.parametrize("cuts", [[], [2], [4], [3, 4]], ids=str)
def test_some_tasks_failed(cuts):
    est = fm.FOBMAML(INNER, delta=1e-3)
    x = np.full(6, 0.5)
    want = est.estimate(x, BAD, losses=True, errors="return")
    assert list(want.status.ok) == [True] * 4 + [False]
    got = _sharded(est, x, BAD, cuts)
    _assert_same(got, want)
    assert np.isnan(got.task_gradients[4]).all() and np.isnan(got.losses[4])
    assert np.isfinite(got.gradient).all()


def test_no_task_succeeded():
    est = fm.FOBMAML(INNER, delta=1e-3)
    want = est.estimate(np.ones(6), ALL_BAD, losses=True, errors="return")
    assert not want.status.ok.any()
    got = _sharded(est, np.ones(6), ALL_BAD, [1])
    _assert_same(got, want)
    assert np.isnan(got.gradient).all()


def test_a_sum_that_overflows_falls_back_as_in_process():
    est = fm.FOMAML(fm.InnerLoop(steps=1, lr=0.5))
    want = est.estimate(np.ones(1), OVERFLOW, errors="return")
    with np.errstate(over="ignore"):
        assert np.isinf(want.task_gradients.sum())
    assert want.gradient.tolist() == [1e308]
    _assert_same(_sharded(est, np.ones(1), OVERFLOW, [1], losses=False), want)
    _assert_same(_sharded(est, np.ones(1), OVERFLOW, [2], losses=False), want)


def test_finish_batch_reduces_in_task_order():
    # Rows whose sum depends on the order of summation: 1e16 + 1 - 1e16 is 0 in task
    # order, 1 if the last two rows were summed first.
    G = np.array([[1e16], [1.0], [-1e16]])
    g = core.finish_batch(G, None, np.zeros(3, np.intc))
    assert g[0] == ((1e16 + 1.0) - 1e16) / 3
    assert g[0] == 0.0


def test_finish_batch_marks_failed_rows_in_place():
    G, losses = np.arange(6.0).reshape(3, 2), np.array([1.0, 2.0, 3.0])
    g = core.finish_batch(G, losses, np.array([0, 2, 0], np.intc))
    assert g.tolist() == [2.0, 3.0]
    assert np.isnan(G[1]).all() and np.isnan(losses[1])
    assert G[[0, 2]].tolist() == [[0.0, 1.0], [4.0, 5.0]]


def test_finish_batch_checks_its_arguments():
    with pytest.raises(ValueError, match="`code` must have shape"):
        core.finish_batch(np.zeros((3, 2)), None, np.zeros(2, np.intc))
    with pytest.raises(ValueError, match="`losses` must have shape"):
        core.finish_batch(np.zeros((3, 2)), np.zeros(2), np.zeros(3, np.intc))
    with pytest.raises(ValueError, match="`G` must have shape"):
        core.finish_batch(np.zeros(3), None, np.zeros(3, np.intc))
    readonly = np.zeros((3, 2))
    readonly.flags.writeable = False
    with pytest.raises(ValueError, match="`G` must be writeable"):
        core.finish_batch(readonly, None, np.zeros(3, np.intc))


def test_combine_needs_a_shard():
    with pytest.raises(ValueError, match="at least one shard"):
        combine([], False)


def test_the_in_process_executor_is_the_estimator():
    ex, est, x = Executor(), fm.FOBMAML(INNER, delta=1e-3), np.full(6, 0.3)
    assert ex.meta_gradient(est, x, GOOD).tobytes() == est.meta_gradient(x, GOOD).tobytes()
    assert ex.task_gradients(est, x, GOOD).tobytes() == est.task_gradients(x, GOOD).tobytes()
    assert ex.value_and_gradient(est, x, GOOD)[0] == est.value_and_gradient(x, GOOD)[0]
    with pytest.raises(FloatingPointError, match="diverged at task 4"):
        ex.meta_gradient(est, x, BAD)
    with pytest.raises(TypeError, match="`estimator` must be a fobmaml estimator"):
        ex.meta_gradient("FOBMAML", x, GOOD)
    with pytest.raises(ValueError, match="`errors` must be one of"):
        ex.estimate(est, x, GOOD, errors="ignore")
