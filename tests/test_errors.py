"""Bad input raises the documented error, with a message that names the argument.

Documented contract (``fobmaml/_validation.py``, ``fobmaml/errors.py``): shapes and
values -> ValueError, non-real dtypes and non-numbers -> TypeError, a diverging or
non-finite inner loop -> FloatingPointError naming the task and the step,
``∇²g + λI`` not positive definite -> ``fm.NotPositiveDefiniteError``, an iteration
cap hit -> ``fm.ConvergenceError``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
import reference as ref

import fobmaml as fm

M, N = 3, 4


@pytest.fixture
def arrays():
    """Valid arrays (A, b, B, c, x) of a small separate-query problem."""
    rng = np.random.default_rng(12345)
    A, b, B, c = ref.random_quadratic(rng, M, N, separate_query=True)
    return {"A": A, "b": b, "B": B, "c": c, "x": rng.standard_normal(N)}


def _call(arrays, **changes):
    """Build the tasks from `arrays` with `changes` applied and run one estimator."""
    a = {**arrays, **changes}
    tasks = fm.QuadraticTasks(a["A"], a["b"], a["B"], a["c"])
    return fm.FOMAML(fm.InnerLoop(steps=2, lr=0.1)).meta_gradient(a["x"], tasks)


def test_valid_arrays_are_accepted(arrays):
    assert _call(arrays).shape == (N,)


# ----------------------------------------------------------------------------------------
# Arrays: shapes, symmetry, values, dtypes
# ----------------------------------------------------------------------------------------

BAD_SHAPES = {
    "A-2d": ("A", lambda a: a["A"][0]),
    "A-4d": ("A", lambda a: a["A"][None]),
    "A-non-square": ("A", lambda a: a["A"][:, :, :-1]),
    "A-empty-batch": ("A", lambda a: a["A"][:0]),
    "b-1d": ("b", lambda a: a["b"][0]),
    "b-wrong-n": ("b", lambda a: a["b"][:, :-1]),
    "b-wrong-m": ("b", lambda a: a["b"][:-1]),
    "B-2d": ("B", lambda a: a["B"][0]),
    "B-non-square": ("B", lambda a: a["B"][:, :-1, :]),
    "B-wrong-m": ("B", lambda a: a["B"][:-1]),
    "c-wrong-n": ("c", lambda a: np.hstack([a["c"], a["c"][:, :1]])),
    "c-3d": ("c", lambda a: a["c"][None]),
    "x-too-long": ("x", lambda a: np.append(a["x"], 0.0)),
    "x-too-short": ("x", lambda a: a["x"][:-1]),
    "x-column": ("x", lambda a: a["x"][:, None]),
    "x-scalar": ("x", lambda a: np.float64(1.0)),
}


@pytest.mark.parametrize("case", list(BAD_SHAPES), ids=list(BAD_SHAPES))
def test_wrong_shapes_raise_value_error_naming_the_argument(arrays, case):
    name, bad = BAD_SHAPES[case]
    with pytest.raises(ValueError, match=f"`{name}`"):
        _call(arrays, **{name: bad(arrays)})


@pytest.mark.parametrize("name", ["A", "B"])
def test_non_symmetric_matrices_raise(arrays, name):
    M_ = arrays[name].copy()
    M_[1, 0, 2] += 1e-3
    with pytest.raises(ValueError, match=f"`{name}` must hold symmetric matrices.*{name}\\[1\\]"):
        _call(arrays, **{name: M_})


def test_symmetry_is_checked_to_a_relative_tolerance(arrays):
    # Rounding-level asymmetry is accepted (e.g. from computing Q D Q^T without
    # symmetrizing); a relative asymmetry of 1e-6 is not.
    A = arrays["A"] * 1e6
    A[0, 0, 1] *= 1 + 1e-14
    _call(arrays, A=A)
    A[0, 0, 1] *= 1 + 1e-6
    with pytest.raises(ValueError, match="`A`"):
        _call(arrays, A=A)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("name", ["A", "b", "B", "c", "x"])
def test_non_finite_values_raise_value_error(arrays, name, value):
    bad = arrays[name].copy()
    bad.flat[1] = value
    if bad.ndim == 3:  # keep the matrix symmetric so only the value is wrong
        bad[0, 1, 0] = value
    with pytest.raises(ValueError, match=f"`{name}` must contain only finite values"):
        _call(arrays, **{name: bad})


DTYPES = {
    "complex": lambda v: v.astype(np.complex128),
    "object": lambda v: v.astype(object),
    "bool": lambda v: v != 0,
    "str": lambda v: v.astype(str),
    "bytes": lambda v: v.astype("S8"),
    "datetime": lambda v: np.zeros(v.shape, dtype="datetime64[s]"),
}


@pytest.mark.parametrize("dtype", list(DTYPES))
@pytest.mark.parametrize("name", ["A", "b", "B", "c", "x"])
def test_non_real_dtypes_raise_type_error(arrays, name, dtype):
    with pytest.raises(TypeError, match=f"`{name}` must be a real-valued numeric array"):
        _call(arrays, **{name: DTYPES[dtype](arrays[name])})


def test_python_scalars_and_lists_are_arrays(arrays):
    # A nested list is an array like any other; a bare string is not.
    _call(arrays, x=arrays["x"].tolist())
    with pytest.raises(TypeError, match="`x`"):
        _call(arrays, x="0123")


# ----------------------------------------------------------------------------------------
# Hyper-parameters
# ----------------------------------------------------------------------------------------

GOOD = fm.InnerLoop(steps=3, lr=0.1, lam=0.5)

BAD_PARAMS = [
    # (id, callable, exception, message regex)
    ("steps=0", lambda: fm.InnerLoop(steps=0), ValueError, r"`steps` must be >= 1 \(got 0\)"),
    ("steps=-3", lambda: fm.InnerLoop(steps=-3), ValueError, r"`steps` must be >= 1"),
    ("steps=2.0", lambda: fm.InnerLoop(steps=2.0), TypeError, r"`steps` must be an integer"),
    ("steps=2.5", lambda: fm.InnerLoop(steps=2.5), TypeError, r"`steps` must be an integer"),
    ("steps=True", lambda: fm.InnerLoop(steps=True), TypeError, r"`steps` must be an integer"),
    ("steps='3'", lambda: fm.InnerLoop(steps="3"), TypeError, r"`steps` must be an integer"),
    ("lr=0", lambda: fm.InnerLoop(lr=0), ValueError, r"`lr` must be > 0 \(got 0.0\)"),
    ("lr=-0.1", lambda: fm.InnerLoop(lr=-0.1), ValueError, r"`lr` must be > 0"),
    ("lr=nan", lambda: fm.InnerLoop(lr=np.nan), ValueError, r"`lr` must be finite"),
    ("lr=inf", lambda: fm.InnerLoop(lr=np.inf), ValueError, r"`lr`"),
    ("lr=None", lambda: fm.InnerLoop(lr=None), TypeError, r"`lr` must be a real number"),
    ("lr=1j", lambda: fm.InnerLoop(lr=1j), TypeError, r"`lr` must be a real number"),
    ("lam=-1", lambda: fm.InnerLoop(lam=-1.0), ValueError, r"`lam` must be >= 0 \(got -1.0\)"),
    ("lam=nan", lambda: fm.InnerLoop(lam=np.nan), ValueError, r"`lam`"),
    (
        "momentum=1",
        lambda: fm.InnerLoop(momentum=1.0),
        ValueError,
        r"`momentum` must be in \[0, 1\)",
    ),
    ("momentum=-0.1", lambda: fm.InnerLoop(momentum=-0.1), ValueError, r"`momentum`"),
    ("momentum=2", lambda: fm.InnerLoop(momentum=2), ValueError, r"`momentum`"),
    ("momentum=nan", lambda: fm.InnerLoop(momentum=np.nan), ValueError, r"`momentum`"),
    ("replace-lr", lambda: GOOD.replace(lr=-1.0), ValueError, r"`lr`"),
    (
        "delta=0",
        lambda: fm.FOBMAML(GOOD, delta=0.0),
        ValueError,
        r"`delta` must be > 0 \(got 0.0\)",
    ),
    ("delta=-1e-3", lambda: fm.FOBMAML(GOOD, delta=-1e-3), ValueError, r"`delta` must be > 0"),
    ("delta=inf", lambda: fm.FOBMAML(GOOD, delta=np.inf), ValueError, r"`delta`"),
    ("eps=0", lambda: fm.HFMAML(GOOD, eps=0.0), ValueError, r"`eps` must be > 0"),
    ("eps=-1", lambda: fm.HFMAML(GOOD, eps=-1.0), ValueError, r"`eps` must be > 0"),
    ("cg_steps=0", lambda: fm.IMAML(GOOD, cg_steps=0), ValueError, r"`cg_steps` must be >= 1"),
    ("cg_steps=2.0", lambda: fm.IMAML(GOOD, cg_steps=2.0), TypeError, r"`cg_steps`"),
    ("tol=0", lambda: fm.Exact(GOOD, tol=0.0), ValueError, r"`tol` must be > 0"),
    ("tol=-1", lambda: fm.Exact(GOOD, tol=-1e-8), ValueError, r"`tol` must be > 0"),
    ("max_iter=0", lambda: fm.Exact(GOOD, max_iter=0), ValueError, r"`max_iter` must be >= 1"),
    ("max_iter=1.5", lambda: fm.Exact(GOOD, max_iter=1.5), TypeError, r"`max_iter`"),
    ("scheme", lambda: fm.FOBMAML(GOOD, scheme="central"), ValueError, r"`scheme` must be one of"),
    ("scheme=None", lambda: fm.FOBMAML(GOOD, scheme=None), ValueError, r"`scheme`"),
    (
        "perturbation",
        lambda: fm.FOBMAML(GOOD, perturbation="quadratic"),
        ValueError,
        r"`perturbation` must be one of",
    ),
    ("solver", lambda: fm.Exact(GOOD, solver="cholesky"), ValueError, r"`solver` must be one of"),
    ("inner=None", lambda: fm.MAML(None), TypeError, r"`inner` must be a fobmaml.InnerLoop"),
    ("inner=dict", lambda: fm.FOBMAML({"steps": 3}), TypeError, r"`inner`"),
]


@pytest.mark.parametrize(
    ("make", "exc", "message"), [p[1:] for p in BAD_PARAMS], ids=[p[0] for p in BAD_PARAMS]
)
def test_bad_hyper_parameters_raise(make, exc, message):
    with pytest.raises(exc, match=message):
        make()


@pytest.mark.parametrize(
    "make",
    [
        lambda inner: fm.FOBMAML(inner),
        lambda inner: fm.FOBMAML(inner, scheme="symmetric", perturbation="linear"),
        lambda inner: fm.IMAML(inner),
        lambda inner: fm.Exact(inner),
        lambda inner: fm.Exact(inner, solver="iterative"),
    ],
    ids=["FOBMAML", "FOBMAML-symmetric-linear", "IMAML", "Exact", "Exact-iterative"],
)
def test_lam_zero_rejected_where_lambda_is_needed(make):
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=0.0)
    name = make(inner.replace(lam=1.0)).name
    with pytest.raises(
        ValueError, match=f"^{re.escape(f'`lam` must be > 0 for {name} (got 0.0)')}$"
    ):
        make(inner)


@pytest.mark.parametrize("make", [fm.MAML, fm.FOMAML, fm.Reptile, fm.HFMAML])
def test_lam_zero_allowed_where_lambda_is_not_needed(make, arrays):
    tasks = fm.QuadraticTasks(arrays["A"], arrays["b"])
    g = make(fm.InnerLoop(steps=3, lr=0.1, lam=0.0)).meta_gradient(arrays["x"], tasks)
    assert np.isfinite(g).all()


# ----------------------------------------------------------------------------------------
# Entry points: tasks, errors=..., threads
# ----------------------------------------------------------------------------------------

NOT_TASKS = [None, (np.eye(2)[None], np.ones((1, 2))), np.eye(2), "tasks"]


@pytest.mark.parametrize("bad", NOT_TASKS, ids=["None", "tuple", "array", "str"])
def test_non_task_batch_raises_type_error(bad):
    x = np.zeros(2)
    inner = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
    for call in (
        lambda: fm.MAML(inner).meta_gradient(x, bad),
        lambda: fm.FOBMAML(inner).estimate(x, bad),
        lambda: fm.Exact(inner).meta_loss(x, bad),
        lambda: fm.meta_loss_k(x, bad, inner),
        lambda: fm.adapt(x, bad, inner),
    ):
        with pytest.raises(TypeError, match="`tasks` must be a fobmaml task batch"):
            call()


def test_meta_loss_and_adapt_check_inner_and_x(arrays):
    tasks = fm.QuadraticTasks(arrays["A"], arrays["b"])
    inner = fm.InnerLoop(steps=2, lr=0.1)
    for fn in (fm.meta_loss_k, fm.adapt):
        with pytest.raises(TypeError, match="`inner` must be a fobmaml.InnerLoop"):
            fn(arrays["x"], tasks, {"steps": 2})
        with pytest.raises(ValueError, match="`x` must have shape"):
            fn(np.zeros(N + 1), tasks, inner)
        with pytest.raises(ValueError, match="`x` must contain only finite values"):
            fn(np.full(N, np.nan), tasks, inner)
        with pytest.raises(TypeError, match="`x`"):
            fn(arrays["x"] + 0j, tasks, inner)


@pytest.mark.parametrize("errors", ["ignore", "warn", None, "RAISE"])
def test_unknown_errors_mode_raises(arrays, errors):
    tasks = fm.QuadraticTasks(arrays["A"], arrays["b"])
    with pytest.raises(ValueError, match="`errors` must be one of"):
        fm.MAML(fm.InnerLoop()).estimate(arrays["x"], tasks, errors=errors)


def test_set_num_threads_checks_its_argument(restore_threads):
    with pytest.raises(ValueError, match="`k` must be >= 0"):
        fm.set_num_threads(-1)
    with pytest.raises(TypeError, match="`k` must be an integer"):
        fm.set_num_threads(1.5)


# ----------------------------------------------------------------------------------------
# Failures inside the kernels
# ----------------------------------------------------------------------------------------

DIVERGENCE_FACTOR = 1e8  # documented in fobmaml.errors


def _one_diverging_task():
    """Four tasks; only task 2 diverges: ∇²h = 101 I there, so with lr = 0.1 and x = 0
    the inner gradient is multiplied by −9.1 at every step (|1 − 0.1·1.5| < 1 elsewhere).
    With ||∇h(φ_0)|| = ||b_2|| = 3 the bound 1e8 (1 + 3) is crossed at φ_9 by a factor 3.2."""
    A = np.stack([0.5 * np.eye(3)] * 4)
    A[2] = 100.0 * np.eye(3)
    b = np.arange(12.0).reshape(4, 3) / 10 - 0.5
    b[2] = np.sqrt(3.0)
    inner = fm.InnerLoop(steps=40, lr=0.1, lam=1.0)
    return A, b, inner


def _expected_divergence_step(A, b, lam, lr, x):
    """The 1-based inner step at which the documented bound is first exceeded.

    Step k (1-based) evaluates the inner gradient ∇h(φ_{k−1}); the divergence bound is
    ||∇h(φ_{k−1})|| > 1e8 (1 + ||∇h(φ_0)||). The crossing is chosen far from the bound
    (a factor 9.1 per step), so the step is unambiguous.
    """
    t = ref.Quadratic(A, b)
    traj = ref.inner_loop(t, x, ref.Inner(20, lr, lam))
    norms = [np.linalg.norm(t.grad_g(p) + lam * (p - x)) for p in traj]
    over = [j for j, v in enumerate(norms) if v > DIVERGENCE_FACTOR * (1 + norms[0])]
    j = over[0]
    assert norms[j] > 2 * DIVERGENCE_FACTOR * (1 + norms[0]) > 4 * norms[j - 1]
    return j + 1


DIVERGING = {
    "MAML": fm.MAML,
    "FOMAML": fm.FOMAML,
    "Reptile": fm.Reptile,
    "HFMAML": fm.HFMAML,
    "IMAML": fm.IMAML,
    "FOBMAML-forward": lambda inner: fm.FOBMAML(inner),
    "FOBMAML-symmetric-linear": lambda inner: fm.FOBMAML(
        inner, scheme="symmetric", perturbation="linear"
    ),
    "Exact-iterative": lambda inner: fm.Exact(inner, solver="iterative"),
}


@pytest.mark.parametrize("kind", list(DIVERGING))
def test_diverging_inner_loop_names_task_and_step(kind):
    A, b, inner = _one_diverging_task()
    tasks = fm.QuadraticTasks(A, b)
    x = np.zeros(3)
    step = _expected_divergence_step(A[2], b[2], inner.lam, inner.lr, x)
    est = DIVERGING[kind](inner)
    with pytest.raises(FloatingPointError) as info:
        est.meta_gradient(x, tasks)
    msg = str(info.value)
    assert re.search(rf"\btask 2, step {step}\b", msg), msg
    assert "task 0" not in msg and "task 1" not in msg and "task 3" not in msg, msg
    assert "diverged" in msg


@pytest.mark.parametrize("fn", [fm.meta_loss_k, fm.adapt], ids=["meta_loss", "adapt"])
def test_diverging_inner_loop_in_meta_loss_and_adapt(fn):
    A, b, inner = _one_diverging_task()
    step = _expected_divergence_step(A[2], b[2], inner.lam, inner.lr, np.zeros(3))
    with pytest.raises(FloatingPointError, match=rf"task 2, step {step}\b"):
        fn(np.zeros(3), fm.QuadraticTasks(A, b), inner)


def test_huge_step_size_raises_floating_point_error(arrays):
    tasks = fm.QuadraticTasks(arrays["A"], arrays["b"])
    inner = fm.InnerLoop(steps=10, lr=1e200, lam=1.0)
    for est in (fm.MAML(inner), fm.FOBMAML(inner, scheme="symmetric"), fm.IMAML(inner)):
        with pytest.raises(FloatingPointError, match=r"task 0, step \d+"):
            est.meta_gradient(arrays["x"], tasks)


def test_errors_return_reports_the_failed_task_without_raising():
    A, b, inner = _one_diverging_task()
    tasks = fm.QuadraticTasks(A, b)
    x = np.zeros(3)
    step = _expected_divergence_step(A[2], b[2], inner.lam, inner.lr, x)
    T = ref.task_list(A, b)
    rinner = ref.Inner(inner.steps, inner.lr, inner.lam)
    out = fm.MAML(inner).estimate(x, tasks, losses=True, errors="return")
    assert out.status.ok.tolist() == [True, True, False, True]
    assert out.status.step[2] == step
    assert out.status.describe(0) == ""
    assert re.search(rf"diverged at task 2, step {step} of the inner loop", out.status.describe(2))
    good = [0, 1, 3]
    G_ref = ref.per_task(ref.maml, [T[i] for i in good], x, rinner)
    assert ref.rel_err(out.task_gradients[good], G_ref) <= 1e-9
    losses_ref = [T[i].f(ref.adapt(T[i], x, rinner)) for i in good]
    np.testing.assert_allclose(out.losses[good], losses_ref, rtol=1e-12)


def test_errors_return_output_does_not_depend_on_leftover_memory():
    # Regression: with errors="return" the rows and losses of failed tasks used to be left
    # uninitialized and averaged into `gradient`, so two identical calls disagreed.
    A, b, inner = _one_diverging_task()
    tasks = fm.QuadraticTasks(A, b)
    est = fm.MAML(inner)
    x = np.zeros(3)
    outs = []
    for fill in (7.0, -3.0):
        # Leave a recognizable pattern in freed memory of the outputs' sizes; NumPy's
        # small-block cache hands such blocks to the next allocations of that size.
        junk_G, junk_l = np.full((4, 3), fill), np.full(4, fill)
        del junk_G, junk_l
        outs.append(est.estimate(x, tasks, losses=True, errors="return"))
    a, b_ = outs
    assert np.array_equal(a.gradient, b_.gradient, equal_nan=True), (a.gradient, b_.gradient)
    assert np.array_equal(a.task_gradients, b_.task_gradients, equal_nan=True)
    assert np.array_equal(a.losses, b_.losses, equal_nan=True)


def test_errors_return_contract_nan_rows_and_mean_over_good_tasks():
    # Documented: failed rows and losses are NaN; `gradient` is the mean over the good tasks.
    A, b, inner = _one_diverging_task()
    tasks = fm.QuadraticTasks(A, b)
    x = np.zeros(3)
    out = fm.MAML(inner).estimate(x, tasks, losses=True, errors="return")
    assert out.status.ok.tolist() == [True, True, False, True]
    assert np.isnan(out.task_gradients[2]).all() and np.isnan(out.losses[2])
    good = [0, 1, 3]
    ref_inner = ref.Inner(inner.steps, inner.lr, inner.lam, inner.momentum)
    expected = np.mean(
        [ref.maml(t, x, ref_inner) for t in (ref.task_list(A, b)[i] for i in good)], axis=0
    )
    assert ref.rel_err(out.gradient, expected) < 1e-9
    assert np.isfinite(out.losses[good]).all()
    # Every task failing gives a NaN mean, never numbers from nowhere.
    bad = fm.QuadraticTasks(A[[2]], b[[2]])
    out = fm.MAML(inner).estimate(x, bad, errors="return")
    assert np.isnan(out.gradient).all() and not out.status.ok.any()


def _indefinite_task_1():
    """Three tasks; A_1 has eigenvalue −2, so A_1 + λI is indefinite for λ = 1."""
    rng = np.random.default_rng(7)
    A, b, _, _ = ref.random_quadratic(rng, 3, 4)
    A[1] = np.diag([-2.0, 0.5, 0.7, 1.0])
    return A, b


def test_exact_on_indefinite_hessian_raises_not_positive_definite():
    A, b = _indefinite_task_1()
    tasks = fm.QuadraticTasks(A, b)
    est = fm.Exact(fm.InnerLoop(lam=1.0))
    with pytest.raises(fm.NotPositiveDefiniteError, match=r"task 1\b") as info:
        est.meta_gradient(np.zeros(4), tasks)
    assert isinstance(info.value, np.linalg.LinAlgError) and isinstance(info.value, ValueError)
    with pytest.raises(fm.NotPositiveDefiniteError):
        est.meta_loss(np.zeros(4), tasks)
    out = est.estimate(np.zeros(4), tasks, errors="return")
    assert out.status.ok.tolist() == [True, False, True]
    G_ref = ref.per_task(ref.exact, ref.task_list(A[[0, 2]], b[[0, 2]]), np.zeros(4), 1.0)
    assert ref.rel_err(out.task_gradients[[0, 2]], G_ref) <= 1e-9
    # A large enough λ makes A_1 + λI positive definite again.
    fm.Exact(fm.InnerLoop(lam=2.5)).meta_gradient(np.zeros(4), tasks)


def test_exact_iterative_meets_negative_curvature_in_cg():
    # A_0 + λI = diag(−1, 2). With b − A x ⊥ e_1 the inner gradient never has an e_1
    # component, so the inner iteration converges (to the saddle point φ* = (0, 1/2));
    # then CG on (A + λI) u = λ∇f(φ*) = (−1, 1/2) meets curvature −1 + 2/4 < 0 at once.
    A = np.array([[[-2.0, 0.0], [0.0, 1.0]]])
    b = np.array([[0.0, 1.0]])
    tasks = fm.QuadraticTasks(A, b, np.eye(2)[None], np.array([[1.0, 0.0]]))
    for solver in ("auto", "iterative"):
        est = fm.Exact(fm.InnerLoop(lr=0.3, lam=1.0), solver=solver)
        with pytest.raises(fm.NotPositiveDefiniteError, match="task 0"):
            est.meta_gradient(np.zeros(2), tasks)


def test_exact_iterative_on_indefinite_hessian_fails():
    # Generic x: the inner problem is unbounded below, so the iterative inner solve
    # diverges before CG is reached. Either documented error is acceptable here.
    A, b = _indefinite_task_1()
    est = fm.Exact(fm.InnerLoop(lr=0.3, lam=1.0), solver="iterative")
    with pytest.raises((fm.NotPositiveDefiniteError, FloatingPointError), match=r"task 1\b"):
        est.meta_gradient(np.ones(4), fm.QuadraticTasks(A, b))


def test_exact_iterative_iteration_cap_raises_convergence_error(arrays):
    tasks = fm.QuadraticTasks(arrays["A"], arrays["b"], arrays["B"], arrays["c"])
    est = fm.Exact(fm.InnerLoop(lr=0.3, lam=1.0), solver="iterative", max_iter=3)
    with pytest.raises(fm.ConvergenceError, match=r"task 0\b") as info:
        est.meta_gradient(arrays["x"], tasks)
    assert isinstance(info.value, RuntimeError)
    out = est.estimate(arrays["x"], tasks, errors="return")
    assert not out.status.ok.any()
    # The closed form has no iteration cap.
    fm.Exact(fm.InnerLoop(lr=0.3, lam=1.0), max_iter=3).meta_gradient(arrays["x"], tasks)


# ----------------------------------------------------------------------------------------
# fm.datasets.quadratic_tasks
# ----------------------------------------------------------------------------------------

DATASET_ERRORS = [
    ("m=0", dict(m=0), ValueError, "`m` must be >= 1"),
    ("m=2.0", dict(m=2.0), TypeError, "`m` must be an integer"),
    ("n=0", dict(n=0), ValueError, "`n` must be >= 1"),
    ("n=-1", dict(n=-1), ValueError, "`n` must be >= 1"),
    ("n='4'", dict(n="4"), TypeError, "`n` must be an integer"),
    ("kappa=0.5", dict(kappa=0.5), ValueError, r"`kappa` must be >= 1 \(got 0.5\)"),
    ("kappa=nan", dict(kappa=np.nan), ValueError, "`kappa`"),
    ("kappa=inf", dict(kappa=np.inf), ValueError, "`kappa`"),
    ("kappa=None", dict(kappa=None), TypeError, "`kappa` must be a real number"),
    ("L=0", dict(L=0.0), ValueError, "`L` must be > 0"),
    ("L=-1", dict(L=-1.0), ValueError, "`L` must be > 0"),
    ("task_spread=-1", dict(task_spread=-1.0), ValueError, "`task_spread` must be >= 0"),
    ("seed=-1", dict(seed=-1), ValueError, "`seed` must be >= 0"),
    ("seed=1.5", dict(seed=1.5), TypeError, "`seed` must be an integer"),
    ("separate_query=1", dict(separate_query=1), TypeError, "`separate_query` must be a bool"),
    ("separate_query='yes'", dict(separate_query="yes"), TypeError, "`separate_query`"),
]


@pytest.mark.parametrize(
    ("changes", "exc", "message"),
    [p[1:] for p in DATASET_ERRORS],
    ids=[p[0] for p in DATASET_ERRORS],
)
def test_quadratic_tasks_dataset_argument_errors(changes, exc, message):
    kwargs = {"m": 2, "n": 3, "kappa": 10.0, **changes}
    m, n = kwargs.pop("m"), kwargs.pop("n")
    with pytest.raises(exc, match=message):
        fm.datasets.quadratic_tasks(m, n, **kwargs)


# -- the status vocabulary --------------------------------------------------------------------
def test_status_codes_and_stages_come_from_the_kernels_enums():
    # status.hpp numbers its enumerators from 0 without gaps; the bound enums must too, so a
    # value the kernels write always has a name, and every stage has a sentence.
    Code, Stage = fm.errors.Code, fm.errors.Stage
    assert [int(c) for c in Code.__members__.values()] == list(range(len(Code.__members__)))
    assert [int(s) for s in Stage.__members__.values()] == list(range(len(Stage.__members__)))
    assert list(Code.__members__) == [
        "ok",
        "non_finite",
        "diverged",
        "not_pos_def",
        "not_converged",
    ]
    for stage in Stage.__members__.values():
        status = fm.errors.TaskStatus(
            np.array([int(Code.non_finite)]), np.array([int(stage)]), np.array([3]), np.zeros(1)
        )
        assert re.fullmatch(
            r"non-finite value \(NaN or Inf\) at task 0, step 3 of the .+", status.describe(0)
        ), stage


def test_task_status_masks():
    Code = fm.errors.Code
    codes = np.array([int(c) for c in Code.__members__.values()])
    status = fm.errors.TaskStatus(codes, np.zeros(5, int), np.full(5, -1), np.zeros(5))
    assert status.ok.tolist() == [True, False, False, False, False]
    assert status.diverged.tolist() == [False, True, True, False, False]
    only = status.restricted(np.array([False, False, False, True, False]))
    assert only.ok.tolist() == [True, True, True, False, True]
    with pytest.raises(fm.NotPositiveDefiniteError, match="task 3"):
        fm.errors.raise_for_status(only, "test")
