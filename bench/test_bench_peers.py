"""fobmaml next to its PyTorch and JAX peers: sinusoid, m = 25, [1, 40, 40, 1] tanh, K = 5.

MAML and symmetric FO-B-MAML, one benchmark group each, so that
``pytest bench --benchmark-enable`` lists fobmaml and every installed peer side by side.
Peers whose packages are missing are skipped; the default test run (benchmarks
disabled) executes each body once. JAX compiles on its first call, so with benchmarks
enabled every body is warmed up before it is timed. The full comparison, with the ratio
table, is ``python bench/compare.py``.
"""

import numpy as np
import pytest

from fobmaml import peers
from fobmaml.peers import problems as P

ESTIMATORS = ("MAML", "FOBMAML(symmetric)")
CASES = [
    (impl, est)
    for est in ESTIMATORS
    for impl in ("fobmaml", *peers.IMPLEMENTATIONS)
    if impl not in ("torch-higher", "fobmaml-torch-rec") or est == "MAML"
]


@pytest.fixture(scope="module")
def problem():
    return P.sinusoid(5)


@pytest.mark.parametrize(("implementation", "estimator"), CASES)
def test_sinusoid_k5_peers(benchmark, problem, implementation, estimator):
    benchmark.group = f"peers: sinusoid m=25 [1,40,40,1] K=5 {estimator}"
    reference = P.build_fobmaml(problem, estimator)
    if implementation == "fobmaml":
        fn, to_numpy = reference, np.asarray
    else:
        for pkg in peers.requirements(implementation):
            pytest.importorskip(pkg)
        mod = peers.load(implementation)
        fn, to_numpy = mod.build(problem, estimator), mod.to_numpy
    if not benchmark.disabled:
        fn()  # warm-up: JAX compiles here
    g = to_numpy(benchmark(fn))
    assert g.shape == problem.x0.shape and np.isfinite(g).all()
    assert P.relative_error(g, reference()) <= 1e-8
