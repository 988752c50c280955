"""Results do not depend on the number of threads: bit for bit, for every estimator,
``meta_loss`` and ``adapt`` (the sum over tasks is reduced in a fixed order)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

import fobmaml as fm

INNER = fm.InnerLoop(steps=13, lr=0.4, lam=0.6, momentum=0.3)

ESTIMATORS = {
    "MAML": fm.MAML(INNER),
    "MAML-lam0": fm.MAML(INNER.replace(lam=0.0)),
    "FOMAML": fm.FOMAML(INNER),
    "Reptile": fm.Reptile(INNER),
    "IMAML": fm.IMAML(INNER, cg_steps=4),
    "HFMAML": fm.HFMAML(INNER),
    "FOBMAML-forward-objective": fm.FOBMAML(INNER, 1e-3, "forward", "objective"),
    "FOBMAML-forward-linear": fm.FOBMAML(INNER, 1e-3, "forward", "linear"),
    "FOBMAML-symmetric-objective": fm.FOBMAML(INNER, 1e-3, "symmetric", "objective"),
    "FOBMAML-symmetric-linear": fm.FOBMAML(INNER, 1e-3, "symmetric", "linear"),
    "Exact-auto": fm.Exact(INNER),
    "Exact-iterative": fm.Exact(INNER, solver="iterative"),
}


@pytest.fixture(scope="module", params=[False, True], ids=["support", "query"])
def batch(request):
    # More tasks than threads, an odd dimension (SIMD remainders), uneven task costs.
    tasks = fm.datasets.quadratic_tasks(11, 13, kappa=30.0, seed=8, separate_query=request.param)
    x = np.linspace(-1.0, 2.0, 13)
    return tasks, x


def _with_threads(k, fn):
    fm.set_num_threads(k)
    assert fm.get_num_threads() == k
    return fn()


def test_set_and_get_num_threads(restore_threads):
    for k in (1, 2, 3):
        fm.set_num_threads(k)
        assert fm.get_num_threads() == k
    fm.set_num_threads(0)  # OpenMP's default
    assert fm.get_num_threads() >= 1


@pytest.mark.parametrize("name", list(ESTIMATORS))
def test_estimators_identical_for_one_and_two_threads(batch, name, restore_threads):
    tasks, x = batch
    est = ESTIMATORS[name]
    one = _with_threads(1, lambda: est.estimate(x, tasks, losses=True))
    two = _with_threads(2, lambda: est.estimate(x, tasks, losses=True))
    assert np.array_equal(one.task_gradients, two.task_gradients)
    assert np.array_equal(one.gradient, two.gradient)
    assert np.array_equal(one.losses, two.losses)
    # Several threads, several calls: still the same bits.
    three = _with_threads(3, lambda: est.estimate(x, tasks, losses=True))
    assert np.array_equal(one.gradient, three.gradient)
    assert np.array_equal(one.task_gradients, three.task_gradients)


@pytest.mark.parametrize("inner", [INNER, INNER.replace(momentum=0.0, lam=0.0)], ids=str)
def test_meta_loss_and_adapt_identical_for_one_and_two_threads(batch, inner, restore_threads):
    tasks, x = batch
    F1 = _with_threads(1, lambda: fm.meta_loss_k(x, tasks, inner))
    F2 = _with_threads(2, lambda: fm.meta_loss_k(x, tasks, inner))
    assert F1 == F2
    P1 = _with_threads(1, lambda: fm.adapt(x, tasks, inner))
    P2 = _with_threads(2, lambda: fm.adapt(x, tasks, inner))
    assert np.array_equal(P1, P2)
    V1 = _with_threads(1, lambda: ESTIMATORS["Exact-auto"].value_and_gradient(x, tasks))
    V2 = _with_threads(2, lambda: ESTIMATORS["Exact-auto"].value_and_gradient(x, tasks))
    assert V1[0] == V2[0] and np.array_equal(V1[1], V2[1])


# Large enough (n = 60) for the automatic thread count to use both threads.
_SCRIPT = """
import numpy as np, fobmaml as fm
tasks = fm.datasets.quadratic_tasks(9, 60, kappa=50.0, seed=4, separate_query=True)
inner = fm.InnerLoop(steps=25, lr=0.5, lam=0.8, momentum=0.4)
est = fm.FOBMAML(inner, delta=1e-3, scheme="symmetric").estimate(np.ones(60), tasks, losses=True)
maml = fm.MAML(inner).meta_gradient(np.ones(60), tasks)
print(fm.get_num_threads())
print(est.task_gradients.tobytes().hex())
print(est.gradient.tobytes().hex())
print(est.losses.tobytes().hex())
print(maml.tobytes().hex())
"""


@pytest.mark.slow
def test_omp_num_threads_environment_gives_identical_bytes():
    outputs = {}
    for k in ("1", "2"):
        env = {**os.environ, "OMP_NUM_THREADS": k}
        run = subprocess.run(
            [sys.executable, "-c", _SCRIPT], env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode == 0, run.stderr
        lines = run.stdout.split()
        assert lines[0] == k  # the kernels honour OMP_NUM_THREADS
        outputs[k] = lines[1:]
    assert outputs["1"] == outputs["2"]
    # The bytes are a real result (not, e.g., empty): they decode to finite numbers.
    g = np.frombuffer(bytes.fromhex(outputs["1"][1]), dtype=np.float64)
    assert g.shape == (60,) and np.isfinite(g).all() and np.abs(g).max() > 0


def test_more_threads_than_tasks(restore_threads):
    tasks = fm.datasets.quadratic_tasks(1, 6, kappa=10.0, seed=9, separate_query=True)
    x = np.ones(6)
    for est in (ESTIMATORS["MAML"], ESTIMATORS["FOBMAML-symmetric-objective"]):
        one = _with_threads(1, lambda: est.estimate(x, tasks, losses=True))  # noqa: B023
        two = _with_threads(2, lambda: est.estimate(x, tasks, losses=True))  # noqa: B023
        assert np.array_equal(one.task_gradients, two.task_gradients)
        assert np.array_equal(one.losses, two.losses)


def test_repeated_calls_are_bit_identical_whatever_the_output_address():
    # The kernels compute into aligned scratch and copy out, so the bits do not depend on
    # where NumPy happens to allocate the outputs (with FMA, Eigen's scalar head of an
    # unaligned destination rounds differently from its vector body).
    rng = np.random.default_rng(11)
    X = rng.standard_normal((5, 7, 3))
    tasks = fm.MLPTasks(X, np.sin(X[..., :2]), layers=[3, 5, 2], activation="tanh", loss="mse")
    x = fm.mlp.init_params([3, 5, 2], seed=1)
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0, momentum=0.3)
    for est in (fm.MAML(inner), fm.FOBMAML(inner, scheme="symmetric"), fm.IMAML(inner)):
        first = est.estimate(x, tasks, losses=True)
        keep = [np.empty(k) for k in range(1, 40)]  # shift later allocations around
        again = est.estimate(x, tasks, losses=True)
        del keep
        assert np.array_equal(first.task_gradients, again.task_gradients)
        assert np.array_equal(first.losses, again.losses)
    G1 = tasks.gradients(x)
    _ = [np.empty(3) for _ in range(7)]
    assert np.array_equal(G1, tasks.gradients(x))
