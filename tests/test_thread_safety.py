"""Calls from several Python threads at once: same bits as serial calls, nothing modified.

What is guaranteed (and tested here)
------------------------------------
- Every estimator (``estimate``, ``meta_gradient``, ``task_gradients``,
  ``value_and_gradient``), ``meta_loss``, ``adapt``, ``evaluate``, the task batches'
  ``losses``/``gradients``/``hvps`` and ``meta_train`` may be called concurrently from
  any number of Python threads, on shared estimator, inner-loop and task objects. Each
  call gives bit-identical results (estimates, losses, statuses and error messages) to
  the same call made serially. The kernels keep no state between calls: each call builds
  its own per-thread workspaces, and the reduction over tasks runs in task order.
- Calls modify none of their inputs: ``x``, the task batch's arrays, the estimator
  (``get_params()``), the ``InnerLoop`` (a frozen dataclass) and the optimizer (immutable,
  with read-only state arrays). Estimators are immutable too (assigning an attribute
  raises ``AttributeError``). They build their kernel configuration once, on first use;
  two threads making that first call at once both build the same one, which is harmless.
- The kernels release the GIL, so concurrent calls run in parallel (``bench/gil.py``
  measures how much; no test asserts a time).

What is not guaranteed
----------------------
- Changing ``fm.set_num_threads`` (or ``fm.set_memory_limit``) while other threads are
  inside kernels. Both settings are process-wide; a call that starts after the change uses
  the new value. Results do not depend on the thread count (``test_threads.py``), but
  which setting a concurrent call sees is unspecified. The tests here keep the settings
  fixed during each concurrent part.
- Modifying task arrays while calls run. ``QuadraticTasks`` and ``MLPTasks`` read float64
  C-contiguous arrays in place, without a copy, and the kernels read them without the GIL.
- A task sampler shared by concurrent ``meta_train`` runs must itself be thread-safe. Each
  run draws from its own generator, seeded from ``seed``.
- Progress bars (``progress=True``) from several threads interleave their output.
"""

from __future__ import annotations

import dataclasses
import random
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import fobmaml as fm

THREADS = 8
REPEATS = 6

INNER = fm.InnerLoop(steps=7, lr=0.3, lam=0.8, momentum=0.3)
MLP_INNER = fm.InnerLoop(steps=5, lr=0.05, lam=2.0, momentum=0.2)


def _estimators(inner):
    return {
        "MAML": fm.MAML(inner),
        "MAML-lam0": fm.MAML(inner.replace(lam=0.0)),
        "FOMAML": fm.FOMAML(inner),
        "Reptile": fm.Reptile(inner),
        "IMAML": fm.IMAML(inner, cg_steps=3),
        "HFMAML": fm.HFMAML(inner, eps=1e-5),
        "FOBMAML-forward": fm.FOBMAML(inner, 1e-3, "forward", "objective"),
        "FOBMAML-symmetric": fm.FOBMAML(inner, 1e-3, "symmetric", "objective"),
        "FOBMAML-linear": fm.FOBMAML(inner, 1e-3, "symmetric", "linear"),
        "Exact-auto": fm.Exact(inner, max_iter=2000),
        "Exact-iterative": fm.Exact(inner, solver="iterative", max_iter=2000),
    }


def _families():
    rng = np.random.default_rng(7)
    quad = fm.datasets.quadratic_tasks(5, 9, kappa=20.0, seed=3)
    quad_q = fm.datasets.quadratic_tasks(6, 7, kappa=50.0, seed=4, separate_query=True)
    X = rng.uniform(-2, 2, (5, 6, 2))
    Xq = rng.uniform(-2, 2, (5, 4, 2))
    mse = fm.MLPTasks(
        X, np.sin(X[..., :1]), Xq, np.sin(Xq[..., :1]), layers=[2, 5, 1], activation="tanh"
    )
    xent = fm.MLPTasks(
        X,
        rng.integers(0, 3, (5, 6)),
        Xq,
        rng.integers(0, 3, (5, 4)),
        layers=[2, 4, 3],
        activation="relu",
        loss="xent",
    )
    return {"quadratic": quad, "quadratic-query": quad_q, "mlp-mse": mse, "mlp-xent": xent}


FAMILIES = _families()


def _x(tasks, seed=0):
    return np.random.default_rng(seed).uniform(-0.5, 0.5, tasks.dim)


def _outcome(fn):
    """The call's result, or ("raised", type name, message): errors must match too."""
    try:
        return fn()
    except (ValueError, TypeError, FloatingPointError, fm.ConvergenceError) as exc:
        return ("raised", type(exc).__name__, str(exc))


def _raised(result) -> bool:
    return isinstance(result, tuple) and len(result) == 3 and result[0] == "raised"


def _assert_same(a, b, what):
    if isinstance(a, fm.Evaluation):
        a, b = tuple(a), tuple(b)
    if isinstance(a, fm.Estimate):
        a = (a.task_gradients, a.gradient, a.losses, *a.status)
        b = (b.task_gradients, b.gradient, b.losses, *b.status)
    if isinstance(a, tuple):
        assert isinstance(b, tuple) and len(a) == len(b), what
        for i, (u, v) in enumerate(zip(a, b)):
            _assert_same(u, v, f"{what}[{i}]")
        return
    if a is None or isinstance(a, str):
        assert a == b, f"{what}: {a!r} != {b!r}"
        return
    a, b = np.asarray(a), np.asarray(b)
    assert a.dtype == b.dtype and a.shape == b.shape, what
    # Bit for bit: compare the bytes, so that NaN payloads and signed zeros count too.
    assert a.tobytes() == b.tobytes(), f"{what}: concurrent result differs from serial"


def _estimator_jobs():
    jobs = []
    for fam, tasks in FAMILIES.items():
        inner = INNER if fam.startswith("quadratic") else MLP_INNER
        x = _x(tasks)
        for name, est in _estimators(inner).items():
            jobs.append(
                (
                    f"{name}/{fam}/estimate",
                    lambda e=est, t=tasks, x=x: e.estimate(x, t, losses=True, errors="return"),
                )
            )
            jobs.append((f"{name}/{fam}/raise", lambda e=est, t=tasks, x=x: e.meta_gradient(x, t)))
            jobs.append((f"{name}/{fam}/task", lambda e=est, t=tasks, x=x: e.task_gradients(x, t)))
            jobs.append(
                (f"{name}/{fam}/vag", lambda e=est, t=tasks, x=x: e.value_and_gradient(x, t))
            )
    return jobs


def _function_jobs():
    jobs = []
    for fam, tasks in FAMILIES.items():
        inner = INNER if fam.startswith("quadratic") else MLP_INNER
        x = _x(tasks)
        rows = np.random.default_rng(1).uniform(-0.5, 0.5, (tasks.num_tasks, tasks.dim))
        v = np.random.default_rng(2).uniform(-1, 1, tasks.dim)
        jobs += [
            (f"meta_loss/{fam}", lambda t=tasks, x=x, i=inner: fm.meta_loss_k(x, t, i)),
            (f"adapt/{fam}", lambda t=tasks, x=x, i=inner: fm.adapt(x, t, i)),
            (f"evaluate/{fam}", lambda t=tasks, x=x, i=inner: fm.evaluate(x, t, i)),
            (
                f"momentum0/{fam}",
                lambda t=tasks, x=x, i=inner: fm.adapt(x, t, i.replace(momentum=0)),
            ),
        ]
        for which in ("support", "query"):
            jobs += [
                (f"losses/{fam}/{which}", lambda t=tasks, p=rows, w=which: t.losses(p, w)),
                (f"gradients/{fam}/{which}", lambda t=tasks, p=rows, w=which: t.gradients(p, w)),
                (f"hvps/{fam}/{which}", lambda t=tasks, p=x, v=v, w=which: t.hvps(p, v, w)),
            ]
    return jobs


def _run_concurrently(jobs, threads=THREADS, repeats=REPEATS, seed=0):
    """Every job `repeats` times, shuffled, on a pool of `threads` Python threads."""
    order = [i for i in range(len(jobs)) for _ in range(repeats)]
    random.Random(seed).shuffle(order)
    with ThreadPoolExecutor(max_workers=threads) as pool:
        futures = [(i, pool.submit(_outcome, jobs[i][1])) for i in order]
        return [(i, f.result()) for i, f in futures]


def _snapshot():
    """Everything a call could modify: task arrays, estimator parameters."""
    arrays = {}
    for fam, tasks in FAMILIES.items():
        names = (
            ("A", "b", "B", "c")
            if isinstance(tasks, fm.QuadraticTasks)
            else ("X_support", "Y_support", "X_query", "Y_query")
        )
        for name in names:
            arrays[f"{fam}.{name}"] = np.array(getattr(tasks, name), copy=True)
    return arrays


@pytest.mark.parametrize("threads_setting", [1, 2])
@pytest.mark.parametrize("kind", ["estimators", "functions"])
def test_concurrent_calls_match_serial_calls(kind, threads_setting, restore_threads):
    jobs = _estimator_jobs() if kind == "estimators" else _function_jobs()
    before = _snapshot()
    with fm.num_threads(threads_setting):  # fixed during the concurrent part
        serial = [_outcome(fn) for _, fn in jobs]
        concurrent = _run_concurrently(jobs, seed=threads_setting)
    for i, result in concurrent:
        _assert_same(result, serial[i], jobs[i][0])
    after = _snapshot()
    for key in before:
        assert np.array_equal(before[key], after[key]), f"{key} modified by the calls"
    # The serial results are real results, not all failures.
    raised = [jobs[i][0] for i, r in enumerate(serial) if _raised(r)]
    assert len(raised) <= len(jobs) // 4, raised


def test_estimators_and_inputs_not_modified_by_concurrent_calls(restore_threads):
    tasks = FAMILIES["quadratic-query"]
    ests = _estimators(INNER)
    params = {name: est.get_params() for name, est in ests.items()}
    reprs = {name: repr(est) for name, est in ests.items()}
    x = _x(tasks)
    x_copy = x.copy()
    jobs = [(name, lambda e=est: e.estimate(x, tasks, losses=True)) for name, est in ests.items()]
    with fm.num_threads(2):
        _run_concurrently(jobs, repeats=10)
    assert np.array_equal(x, x_copy) and x.flags.writeable
    for name, est in ests.items():
        assert est.get_params() == params[name], name
        assert repr(est) == reprs[name], name
        assert est.inner == INNER.replace(lam=est.inner.lam)
    # Estimators are immutable; InnerLoop is a frozen dataclass.
    for est in ests.values():
        with pytest.raises(AttributeError):
            est.inner = INNER
    with pytest.raises(AttributeError):
        ests["FOBMAML-forward"].delta = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        INNER.steps = 3
    assert dataclasses.is_dataclass(INNER) and INNER.__dataclass_params__.frozen
    # Optimizers are immutable; their states are read-only.
    opt = fm.SNGDM(lr=0.1, beta=0.9)
    with pytest.raises(AttributeError):
        opt.lr = 1.0
    state = opt.init(x)
    assert not state[0].ema.flags.writeable


def test_concurrent_meta_train_matches_serial(restore_threads):
    tasks = FAMILIES["quadratic"]
    mlp = FAMILIES["mlp-mse"]
    runs = [
        (tasks, fm.FOBMAML(INNER, delta=1e-3, scheme="symmetric"), fm.SNGDM(lr=0.1)),
        (tasks, fm.MAML(INNER), fm.Adam(lr=0.05)),
        (mlp, fm.FOMAML(MLP_INNER), fm.Momentum(lr=0.05, beta=0.5)),
        (mlp, fm.FOBMAML(MLP_INNER, delta=1e-3), fm.ClippedGD(lr=0.1, clip=1.0)),
    ]
    sampler = fm.datasets.sinusoid(3, 4, 4, layers=[1, 5, 1], activation="tanh")
    runs.append((sampler, fm.Reptile(MLP_INNER), fm.GD(lr=0.1)))

    def job(i):
        source, est, opt = runs[i]
        dim = source.dim if isinstance(source, fm.TaskBatch) else fm.mlp.num_params([1, 5, 1])
        res = fm.meta_train(np.full(dim, 0.1), source, est, opt, 4, seed=i, progress=False)
        return (res.x, *(res.history[k] for k in ("iteration", "meta_loss", "estimate_norm")))

    with fm.num_threads(1):
        serial = [job(i) for i in range(len(runs))]
        with ThreadPoolExecutor(max_workers=len(runs)) as pool:
            concurrent = list(pool.map(job, [i for i in range(len(runs)) for _ in range(3)]))
    for k, result in enumerate(concurrent):
        _assert_same(result, serial[k // 3], f"meta_train run {k // 3}")
