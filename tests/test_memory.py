"""Workspace prediction, the memory cap, and immutable estimators."""

import numpy as np
import pytest

import fobmaml as fm


@pytest.fixture
def restore_limit():
    before = fm.get_memory_limit()
    yield
    fm.set_memory_limit(before)


@pytest.fixture(scope="module")
def tasks():
    return fm.datasets.quadratic_tasks(4, 50, kappa=10.0, seed=0)


def test_maml_workspace_grows_linearly_in_k_and_fobmaml_stays_flat(tasks):
    n = tasks.dim
    sizes = {}
    for K in (10, 100, 1000):
        inner = fm.InnerLoop(steps=K, lr=0.1, lam=1.0)
        sizes[K] = {e.name: e.workspace_bytes(tasks) for e in (fm.MAML(inner), fm.FOBMAML(inner))}
    # MAML stores phi_0..phi_{K-1}: K n doubles per thread, on top of a K-independent part.
    per_thread_growth = (sizes[1000]["MAML"] - sizes[100]["MAML"]) / (900 * n * 8)
    assert per_thread_growth == pytest.approx(round(per_thread_growth)) and per_thread_growth >= 1
    assert sizes[1000]["MAML"] - sizes[10]["MAML"] == pytest.approx(990 * n * 8 * per_thread_growth)
    assert sizes[10]["FOBMAML"] == sizes[100]["FOBMAML"] == sizes[1000]["FOBMAML"]


def test_memory_cap_raises_memory_error_with_the_predicted_size(tasks, restore_limit):
    inner = fm.InnerLoop(steps=500, lr=0.1, lam=1.0)
    est = fm.MAML(inner)
    need = est.workspace_bytes(tasks)
    fm.set_memory_limit(need - 1)
    with pytest.raises(MemoryError, match=r"MAML would allocate .* MiB of workspace .*K = 500"):
        est.meta_gradient(np.zeros(tasks.dim), tasks)
    fm.set_memory_limit(need)  # exactly at the cap is allowed
    g = est.meta_gradient(np.zeros(tasks.dim), tasks)
    assert np.isfinite(g).all()
    fm.set_memory_limit(need - 1)
    assert np.isfinite(fm.FOBMAML(inner).meta_gradient(np.zeros(tasks.dim), tasks)).all()
    assert fm.set_memory_limit(None) == need - 1
    assert fm.get_memory_limit() is None


@pytest.mark.parametrize("bad", [-1, 1.5, "1GB", True])
def test_memory_limit_argument_is_checked(bad, restore_limit):
    with pytest.raises((TypeError, ValueError), match="`nbytes`"):
        fm.set_memory_limit(bad)


def test_estimators_are_immutable():
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0)
    for est in (fm.MAML(inner), fm.FOBMAML(inner, delta=1e-2), fm.IMAML(inner), fm.Exact(inner)):
        before = est.get_params()
        with pytest.raises(AttributeError, match="immutable"):
            est.inner = fm.InnerLoop(steps=9, lr=0.1, lam=1.0)
        with pytest.raises(AttributeError, match="immutable"):
            est.anything = 1
        assert est.get_params() == before
