"""Meta-gradient of every estimator on quadratic tasks: m = 8, n = 200, K = 20."""

import numpy as np
import pytest
from _suite import quadratic_estimators

import fobmaml as fm

M, N, K = 8, 200, 20
INNER = fm.InnerLoop(steps=K, lr=0.5, lam=1.0)
ESTIMATORS = quadratic_estimators(INNER)


@pytest.fixture(scope="module")
def tasks():
    return fm.datasets.quadratic_tasks(M, N, kappa=100.0, seed=0)


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_quadratic_meta_gradient(benchmark, tasks, name):
    benchmark.group = f"quadratic m={M} n={N} K={K}"
    est = ESTIMATORS[name]
    x = np.zeros(N)
    g = benchmark(est.meta_gradient, x, tasks)
    assert g.shape == (N,)
    assert np.isfinite(g).all()


def test_quadratic_meta_loss(benchmark, tasks):
    benchmark.group = f"quadratic m={M} n={N} K={K}"
    value = benchmark(fm.meta_loss_k, np.zeros(N), tasks, INNER)
    assert np.isfinite(value)
