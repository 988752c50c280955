"""Meta-gradients on the MLP families.

- sinusoid: m = 25 tasks, [1, 40, 40, 1], 10-shot, K = 5;
- MNIST-1D: 5-way 5-shot (15 queries per class), 16 episodes, [40, 64, 64, 5], K = 10.
"""

import numpy as np
import pytest

import fobmaml as fm

SIN_INNER = fm.InnerLoop(steps=5, lr=0.025, lam=20.0)
MNIST_INNER = fm.InnerLoop(steps=10, lr=0.1, lam=2.0)

ESTIMATORS = {
    "MAML": lambda inner: fm.MAML(inner),
    "FOMAML": lambda inner: fm.FOMAML(inner),
    "Reptile": lambda inner: fm.Reptile(inner),
    "IMAML(cg=5)": lambda inner: fm.IMAML(inner, cg_steps=5),
    "HFMAML": lambda inner: fm.HFMAML(inner),
    "FOBMAML(forward)": lambda inner: fm.FOBMAML(inner, scheme="forward"),
    "FOBMAML(symmetric)": lambda inner: fm.FOBMAML(inner, scheme="symmetric"),
    "FOBMAML(symmetric, linear)": lambda inner: fm.FOBMAML(
        inner, scheme="symmetric", perturbation="linear"
    ),
}


@pytest.fixture(scope="module")
def sinusoid_batch():
    sampler = fm.datasets.sinusoid(25, 10, 10, layers=[1, 40, 40, 1], activation="tanh")
    return sampler(np.random.default_rng(0))


@pytest.fixture(scope="module")
def mnist1d_batch():
    sampler = fm.datasets.mnist1d_fewshot(5, 5, 15, "train", meta_batch=16, activation="tanh")
    return sampler(np.random.default_rng(0))


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_sinusoid_meta_gradient(benchmark, sinusoid_batch, name):
    benchmark.group = "sinusoid m=25 [1,40,40,1] K=5"
    est = ESTIMATORS[name](SIN_INNER)
    x = fm.mlp.init_params([1, 40, 40, 1], seed=0)
    g = benchmark(est.meta_gradient, x, sinusoid_batch)
    assert g.shape == x.shape and np.isfinite(g).all()


@pytest.mark.slow
@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_mnist1d_meta_gradient(benchmark, mnist1d_batch, name):
    benchmark.group = "MNIST-1D 5-way 5-shot [40,64,64,5] K=10"
    est = ESTIMATORS[name](MNIST_INNER)
    x = fm.mlp.init_params([40, 64, 64, 5], seed=0)
    g = benchmark(est.meta_gradient, x, mnist1d_batch)
    assert g.shape == x.shape and np.isfinite(g).all()
