"""Estimators, task batches and networks pickle (as their constructor arguments), and the
unpickled objects compute the same bits. The Dask executor sends them to its workers this
way; ``multiprocessing`` and ``concurrent.futures`` need the same."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

import fobmaml as fm

INNER = fm.InnerLoop(steps=5, lr=0.05, lam=2.0, momentum=0.3)
ESTIMATORS = [
    fm.MAML(INNER),
    fm.FOMAML(INNER),
    fm.Reptile(INNER),
    fm.IMAML(INNER, cg_steps=3),
    fm.HFMAML(INNER, eps=1e-4),
    fm.FOBMAML(INNER, delta=1e-4, scheme="symmetric", perturbation="linear"),
    fm.Exact(INNER, tol=1e-9, max_iter=500, solver="iterative", pd_check_steps=5),
]


def _roundtrip(obj):
    return pickle.loads(pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL))


def _batches():
    rng = np.random.default_rng(0)
    quad = fm.datasets.quadratic_tasks(3, 4, kappa=10.0, seed=1)
    A, b = quad.A, quad.b
    X = rng.uniform(-1, 1, (3, 6, 2))
    net = fm.nn.Sequential(
        fm.nn.Conv1d(1, 2, kernel_size=3, padding=1),
        fm.nn.Tanh(),
        fm.nn.Flatten(),
        fm.nn.Linear(10, 3),
    )
    signal = rng.standard_normal((3, 6, 1, 5))
    return [
        quad,
        fm.QuadraticTasks(A, b, A + np.eye(4), b + 1.0),
        fm.MLPTasks(X, np.sin(X[..., :1]), layers=[2, 5, 1], activation="tanh"),
        fm.MLPTasks(
            X,
            rng.integers(0, 3, (3, 6)),
            X + 1,
            rng.integers(0, 3, (3, 6)),
            layers=[2, 3],
            loss="xent",
        ),
        fm.NetTasks(signal, rng.integers(0, 3, (3, 6)), net=net, loss="xent"),
    ]


@pytest.mark.parametrize("est", ESTIMATORS, ids=lambda e: e.name)
def test_estimators_pickle_as_their_parameters(est):
    tasks = fm.datasets.quadratic_tasks(3, 4, kappa=10.0, seed=1)
    x = np.linspace(-1, 1, 4)
    est.meta_gradient(x, tasks)  # builds the kernel configuration, which does not pickle
    again = _roundtrip(est)
    assert type(again) is type(est) and again.get_params() == est.get_params()
    assert again.meta_gradient(x, tasks).tobytes() == est.meta_gradient(x, tasks).tobytes()


@pytest.mark.parametrize("tasks", _batches(), ids=repr)
def test_task_batches_pickle_and_compute_the_same(tasks):
    again = _roundtrip(tasks)
    assert type(again) is type(tasks) and repr(again) == repr(tasks)
    assert again.separate_query == tasks.separate_query
    est = fm.FOBMAML(INNER, delta=1e-4)
    x = np.random.default_rng(2).standard_normal(tasks.dim) * 0.1
    for which in ("support", "query"):
        assert again.gradients(x, which).tobytes() == tasks.gradients(x, which).tobytes()
    assert est.task_gradients(x, again).tobytes() == est.task_gradients(x, tasks).tobytes()


def test_a_batch_without_a_query_set_pickles_its_data_once():
    X = np.random.default_rng(0).uniform(-1, 1, (4, 50, 1))
    tasks = fm.MLPTasks(X, np.sin(X), layers=[1, 4, 1])
    both = fm.MLPTasks(X, np.sin(X), X.copy(), np.sin(X), layers=[1, 4, 1])
    assert len(pickle.dumps(tasks)) < 0.6 * len(pickle.dumps(both))


def test_networks_pickle_as_their_layers():
    net = fm.nn.Sequential(fm.nn.Conv1d(1, 2, 3), fm.nn.ReLU(), fm.nn.MaxPool1d(2), fm.nn.Flatten())
    again = _roundtrip(net)
    assert again == net and again.num_params == net.num_params
