"""fm.diagnostics: local smoothness of F against closed forms, the (L0, L1) fit, failures."""

from __future__ import annotations

import numpy as np
import pytest

import fobmaml as fm
from fobmaml import diagnostics as dg

LAM = 0.5


# -- an independent dense reference for quadratic tasks -------------------------------------
def dense_quadratic(tasks, lam):
    r"""H = mean_i lam^2 P_i B_i P_i with P_i = (A_i + lam I)^{-1}, and F, grad F.

    phi*_i(x) = P_i (b_i + lam x), so F is quadratic with constant Hessian H.
    """
    n = tasks.dim
    eye = np.eye(n)
    P = [np.linalg.inv(A + lam * eye) for A in tasks.A]
    H = np.mean([lam**2 * Pi @ B @ Pi for Pi, B in zip(P, tasks.B)], axis=0)
    H = 0.5 * (H + H.T)

    def phis(x):
        return [Pi @ (b + lam * x) for Pi, b in zip(P, tasks.b)]

    def F(x):
        return float(
            np.mean([0.5 * p @ B @ p - c @ p for p, B, c in zip(phis(x), tasks.B, tasks.c)])
        )

    def grad(x):
        return np.mean(
            [lam * Pi @ (B @ p - c) for Pi, p, B, c in zip(P, phis(x), tasks.B, tasks.c)], axis=0
        )

    return H, F, grad


TASKS = fm.datasets.quadratic_tasks(5, 6, kappa=20.0, seed=11, separate_query=True)
EXACT = fm.Exact(fm.InnerLoop(lam=LAM))
H, F_REF, GRAD_REF = dense_quadratic(TASKS, LAM)
EIG, VEC = np.linalg.eigh(H)
NORM_H = float(np.abs(EIG).max())
X_STAR = np.linalg.solve(H, -GRAD_REF(np.zeros(TASKS.dim)))
U = np.random.default_rng(5).standard_normal(TASKS.dim)
U /= np.linalg.norm(U)
# Points whose gradient norms span ~8 orders of magnitude (grad F(x* + s u) = s H u).
POINTS = np.array([X_STAR + s * U for s in (0.0, 1e-2, 1.0, 1e2, 1e4)])


def test_the_reference_agrees_with_the_exact_estimator():
    x = np.linspace(-1.0, 1.0, TASKS.dim)
    loss, g = EXACT.value_and_gradient(x, TASKS)
    np.testing.assert_allclose(g, GRAD_REF(x), rtol=1e-9, atol=1e-12)
    assert loss == pytest.approx(F_REF(x), rel=1e-10)
    assert np.linalg.norm(GRAD_REF(X_STAR)) < 1e-10
    assert EIG.min() > 0 and EIG[-2] < EIG[-1]  # PSD, with a simple top eigenvalue


# -- local_smoothness on a quadratic F: the Hessian is constant and known -------------------
@pytest.mark.parametrize("j", range(len(POINTS)))
def test_power_method_finds_the_hessian_norm_at_every_point(j):
    x = POINTS[j]
    est = dg.local_smoothness(x, TASKS, EXACT, method="power", power_iters=400, power_tol=1e-13)
    assert est.smoothness == pytest.approx(NORM_H, rel=1e-6)
    assert est.eigenvalue == pytest.approx(EIG[-1], rel=1e-6)
    assert np.isnan(est.mean) and est.method == "power"
    assert est.grad_norm == pytest.approx(np.linalg.norm(GRAD_REF(x)), rel=1e-8, abs=1e-10)
    assert est.loss == pytest.approx(F_REF(x), rel=1e-9, abs=1e-12)
    assert 3 <= est.evaluations <= 1 + 2 * 400


@pytest.mark.parametrize("j", range(len(POINTS)))
def test_difference_method_is_exact_along_given_directions(j):
    # For a quadratic F, grad F(x + u) - grad F(x) = H u exactly, so each ratio is
    # ||H u|| / ||u||: the top eigenvector attains ||H||, any other direction is below.
    x = POINTS[j]
    D = np.vstack([VEC[:, -1], np.random.default_rng(j).standard_normal((6, TASKS.dim))])
    est = dg.local_smoothness(x, TASKS, EXACT, directions=7.0 * D)
    ratios = np.linalg.norm(D @ H, axis=1) / np.linalg.norm(D, axis=1)  # H symmetric
    rel = 1e-9 if np.linalg.norm(x) < 1e3 else 1e-7  # rounding of grad F at x scales with x
    assert est.smoothness == pytest.approx(NORM_H, rel=rel)
    assert est.mean == pytest.approx(ratios.mean(), rel=rel)
    assert np.isnan(est.eigenvalue) and est.evaluations == 1 + len(D)


def test_difference_method_with_random_directions_is_a_lower_estimate():
    x = POINTS[2]
    few = dg.local_smoothness(x, TASKS, EXACT, samples=3, seed=1)
    many = dg.local_smoothness(x, TASKS, EXACT, samples=300, seed=1)
    for est in (few, many):
        assert est.mean <= est.smoothness <= NORM_H * (1 + 1e-9)
    assert many.smoothness >= few.smoothness  # the 3 are the first of the 300 (same stream)
    assert many.smoothness > 0.9 * NORM_H  # n = 6: many directions come close to the top
    assert many.evaluations == 301


def test_power_method_estimates_rise_with_iterations_and_stop_early():
    x = POINTS[1]
    ests = [
        dg.local_smoothness(
            x, TASKS, EXACT, method="power", power_iters=k, power_tol=0.0
        ).smoothness
        for k in (1, 2, 4, 8, 16)
    ]
    assert all(a <= b * (1 + 1e-12) for a, b in zip(ests, ests[1:]))
    assert ests[-1] <= NORM_H * (1 + 1e-9)
    quick = dg.local_smoothness(x, TASKS, EXACT, method="power", power_iters=400, power_tol=1e-2)
    assert quick.evaluations < 1 + 2 * 400
    assert quick.smoothness == pytest.approx(NORM_H, rel=0.05)


def test_same_seed_same_estimate():
    a = dg.local_smoothness(POINTS[2], TASKS, EXACT, samples=4, seed=3)
    b = dg.local_smoothness(POINTS[2], TASKS, EXACT, samples=4, seed=3)
    c = dg.local_smoothness(POINTS[2], TASKS, EXACT, samples=4, seed=4)
    assert (a.smoothness, a.mean) == (b.smoothness, b.mean)
    assert a.smoothness != c.smoothness


def test_profile_and_fit_give_L1_zero_and_L0_the_hessian_norm():
    kinds = [f"s={s:g}" for s in (0.0, 1e-2, 1.0, 1e2, 1e4)]
    prof = dg.smoothness_profile(
        POINTS, TASKS, EXACT, kinds=kinds, method="power", power_iters=400, power_tol=1e-13
    )
    assert prof.ok.all() and (prof.reason == "").all()
    assert list(prof.kind) == kinds
    np.testing.assert_allclose(prof.smoothness, NORM_H, rtol=1e-6)
    g = np.array([np.linalg.norm(GRAD_REF(x)) for x in POINTS])
    np.testing.assert_allclose(prof.grad_norm, g, rtol=1e-8, atol=1e-10)
    assert prof.grad_norm.max() > 1e6 * prof.grad_norm[1:].min()
    for method in ("least_squares", "envelope"):
        fit = dg.fit_smoothness(prof.grad_norm, prof.smoothness, method=method)
        assert fit.L0 == pytest.approx(NORM_H, rel=1e-6)
        assert fit.L1 * prof.grad_norm.max() < 1e-6 * NORM_H  # L1 ~ 0 over the whole range


# -- a non-quadratic F: a small MLP against a dense finite-difference Hessian ----------------
def test_power_method_on_an_mlp_matches_a_dense_hessian():
    sampler = fm.datasets.sinusoid(3, 5, 5, layers=[1, 3, 1], activation="tanh")
    tasks = sampler(np.random.default_rng(0))
    exact = fm.Exact(fm.InnerLoop(lam=20.0, lr=0.02, momentum=0.5), tol=1e-12, solver="iterative")
    x = fm.mlp.init_params([1, 3, 1], seed=1)
    n, h = tasks.dim, 1e-4
    cols = [
        (exact.meta_gradient(x + h * e, tasks) - exact.meta_gradient(x - h * e, tasks)) / (2 * h)
        for e in np.eye(n)
    ]
    Hd = np.column_stack(cols)
    Hd = 0.5 * (Hd + Hd.T)
    top = float(np.abs(np.linalg.eigvalsh(Hd)).max())
    est = dg.local_smoothness(
        x, tasks, exact, method="power", radius=1e-4, power_iters=500, power_tol=1e-12
    )
    assert est.smoothness == pytest.approx(top, rel=1e-4)
    diff = dg.local_smoothness(x, tasks, exact, radius=1e-4, samples=50)
    assert diff.smoothness <= top * (1 + 1e-3)


# -- points ---------------------------------------------------------------------------------
def test_random_points_are_at_the_given_distances():
    x0 = np.arange(4.0)
    pts, r = dg.random_points(x0, [0.0, 1.0, 3.0], per_radius=2, seed=1)
    assert pts.shape == (6, 4)
    np.testing.assert_array_equal(r, [0, 0, 1, 1, 3, 3])
    np.testing.assert_allclose(np.linalg.norm(pts - x0, axis=1), r, atol=1e-12)
    again, _ = dg.random_points(x0, [0.0, 1.0, 3.0], per_radius=2, seed=1)
    np.testing.assert_array_equal(pts, again)


def test_trajectory_points_record_every_few_iterations_and_the_last():
    tasks = fm.datasets.quadratic_tasks(3, 4, kappa=10.0, seed=0)
    est = fm.FOBMAML(fm.InnerLoop(steps=30, lr=0.5, lam=1.0), delta=1e-4)
    tr = dg.trajectory_points(np.zeros(4), tasks, est, fm.GD(lr=0.5), 7, every=3, progress=False)
    np.testing.assert_array_equal(tr.iterations, [0, 3, 6, 7])
    assert tr.points.shape == (4, 4)
    np.testing.assert_array_equal(tr.points[0], 0.0)
    np.testing.assert_allclose(tr.points[-1], tr.result.x)
    # The recorded iterates are the ones the run visited: replay the GD steps.
    x = np.zeros(4)
    for t in range(7):
        if t in (3, 6):
            np.testing.assert_allclose(tr.points[list(tr.iterations).index(t)], x)
        x = x - 0.5 * est.meta_gradient(x, tasks)


# -- the fit --------------------------------------------------------------------------------
def test_least_squares_recovers_a_known_line():
    rng = np.random.default_rng(0)
    g = rng.uniform(0.0, 10.0, 200)
    exact = dg.fit_smoothness(g, 2.0 + 3.0 * g)
    assert (exact.L0, exact.L1) == (pytest.approx(2.0, rel=1e-12), pytest.approx(3.0, rel=1e-12))
    assert exact.r2 == pytest.approx(1.0) and exact.rmse < 1e-12 and exact.n_points == 200
    noisy = dg.fit_smoothness(g, 2.0 + 3.0 * g + 0.05 * rng.standard_normal(200))
    assert noisy.L0 == pytest.approx(2.0, abs=0.03) and noisy.L1 == pytest.approx(3.0, abs=0.005)
    assert 0.99 < noisy.r2 < 1 and noisy.rmse == pytest.approx(0.05, rel=0.2)
    np.testing.assert_allclose(noisy.predict([0.0, 1.0]), [noisy.L0, noisy.L0 + noisy.L1])


def test_least_squares_keeps_L0_and_L1_nonnegative():
    g = np.linspace(1.0, 5.0, 20)
    # Decreasing data: the unconstrained slope is negative, the NNLS answer is the mean.
    down = dg.fit_smoothness(g, 10.0 - g)
    assert down.L1 == 0.0 and down.L0 == pytest.approx(np.mean(10.0 - g))
    # A line through (0, -5): the unconstrained intercept is negative -> L0 = 0, L1 by KKT.
    s = 3.0 * g - 2.0
    neg = dg.fit_smoothness(g, s)
    assert neg.L0 == 0.0 and neg.L1 == pytest.approx(g @ s / (g @ g))
    resid = s - neg.L1 * g
    assert abs(g @ resid) < 1e-9 and resid.sum() <= 0  # KKT: d/dL0 of the loss >= 0 at L0 = 0


def brute_force_envelope(g, s):
    """min L0 + L1 mean(g) over L0, L1 >= 0 with L0 + L1 g_j >= s_j: check every vertex."""
    lines = [(max(s.max(), 0.0), 0.0)]
    lines += [(0.0, sj / gj) for gj, sj in zip(g, s) if gj > 0]
    for i in range(g.size):
        for j in range(g.size):
            if g[i] != g[j]:
                L1 = (s[i] - s[j]) / (g[i] - g[j])
                lines.append((s[i] - L1 * g[i], L1))
    feasible = [
        (L0, L1)
        for L0, L1 in lines
        if L0 >= 0 and L1 >= 0 and (L0 + L1 * g >= s - 1e-12 * (1 + np.abs(s))).all()
    ]
    return min(feasible, key=lambda c: c[0] + c[1] * g.mean())


@pytest.mark.parametrize("seed", range(4))
def test_envelope_is_the_lowest_line_above_every_point(seed):
    rng = np.random.default_rng(seed)
    g = rng.uniform(0.0, 4.0, 25)
    s = 1.0 + 2.0 * g + rng.gamma(1.0, 1.0, 25) * (seed % 2)
    fit = dg.fit_smoothness(g, s, method="envelope")
    L0, L1 = brute_force_envelope(g, s)
    assert fit.coverage == 1.0 and fit.method == "envelope"
    assert fit.L0 + fit.L1 * g.mean() == pytest.approx(L0 + L1 * g.mean(), rel=1e-12)
    assert (fit.L0, fit.L1) == (pytest.approx(L0, abs=1e-9), pytest.approx(L1, rel=1e-9))


def test_envelope_recovers_a_bounding_line_and_quantile_ignores_outliers():
    rng = np.random.default_rng(1)
    g = np.sort(rng.uniform(0.5, 6.0, 40))
    s = (1.5 + 4.0 * g) * rng.uniform(0.5, 1.0, 40)
    s[0], s[-1] = 1.5 + 4.0 * g[0], 1.5 + 4.0 * g[-1]  # the extremes touch the bound
    fit = dg.fit_smoothness(g, s, method="envelope")
    assert (fit.L0, fit.L1) == (pytest.approx(1.5, rel=1e-10), pytest.approx(4.0, rel=1e-10))
    spiked = s.copy()
    spiked[20] = 100.0
    strict = dg.fit_smoothness(g, spiked, method="envelope")
    assert strict.coverage == 1.0 and strict.predict(g[20]) >= 100.0 * (1 - 1e-12)
    robust = dg.fit_smoothness(g, spiked, method="envelope", quantile=39 / 40)
    assert (robust.L0, robust.L1) == (pytest.approx(1.5, rel=1e-10), pytest.approx(4.0, rel=1e-10))
    assert robust.coverage == pytest.approx(39 / 40) and robust.quantile == 39 / 40


# -- failures: reported, never garbage ------------------------------------------------------
def indefinite_tasks():
    A = TASKS.A.copy()
    A[2] -= 3.0 * np.eye(TASKS.dim)  # A_2 + lam I has negative eigenvalues
    return fm.QuadraticTasks(A, TASKS.b, TASKS.B, TASKS.c)


def test_a_failing_exact_gradient_propagates_with_its_type():
    bad = indefinite_tasks()
    with pytest.raises(fm.NotPositiveDefiniteError, match=r"local_smoothness: .* at x .*task 2"):
        dg.local_smoothness(np.zeros(TASKS.dim), bad, EXACT)
    iterative = fm.Exact(fm.InnerLoop(lam=LAM, lr=0.5), solver="iterative")
    with pytest.raises(FloatingPointError, match="local_smoothness: .*task 2"):
        dg.local_smoothness(np.zeros(TASKS.dim), bad, iterative, method="power")
    with pytest.raises(fm.NotPositiveDefiniteError, match="point 0 \\(init\\)"):
        dg.smoothness_profile(POINTS[:2], bad, EXACT, kinds="init")


@pytest.mark.parametrize("solver", ["auto", "iterative"])
def test_profile_records_failed_points_with_the_reason(solver):
    exact = fm.Exact(fm.InnerLoop(lam=LAM, lr=0.5), solver=solver)
    pts = np.array([POINTS[1], np.full(TASKS.dim, 1e200), POINTS[2]])  # F overflows at pts[1]
    prof = dg.smoothness_profile(pts, TASKS, exact, kinds=["a", "far", "b"], errors="record")
    np.testing.assert_array_equal(prof.ok, [True, False, True])
    assert prof.reason[0] == "" and prof.reason[2] == ""
    assert prof.reason[1].startswith("FloatingPointError: point 1 (far)")
    for field in ("smoothness", "mean", "grad_norm", "loss"):
        value = getattr(prof, field)
        assert np.isnan(value[1]) and np.isfinite(value[[0, 2]]).all()
    assert prof.evaluations[1] == 0 and (prof.evaluations[[0, 2]] == 9).all()
    with pytest.raises(FloatingPointError, match="point 1 \\(far\\)"):
        dg.smoothness_profile(pts, TASKS, exact, kinds=["a", "far", "b"], errors="raise")


def test_profile_records_every_point_when_the_family_is_not_convex_enough():
    prof = dg.smoothness_profile(POINTS[:3], indefinite_tasks(), EXACT, errors="record")
    assert not prof.ok.any()
    assert all(r.startswith("NotPositiveDefiniteError: point") for r in prof.reason)
    assert np.isnan(prof.smoothness).all()
    with pytest.raises(ValueError, match="`grad_norm` must contain only finite values"):
        dg.fit_smoothness(prof.grad_norm, prof.smoothness)


# -- bad input ------------------------------------------------------------------------------
X0 = np.zeros(TASKS.dim)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"x": np.zeros(3)}, ValueError, "`x` must have shape \\(6,\\)"),
        ({"x": np.full(6, np.nan)}, ValueError, "`x` must contain only finite"),
        ({"tasks": [1, 2]}, TypeError, "`tasks` must be a fobmaml task batch"),
        (
            {"exact": fm.FOBMAML(fm.InnerLoop(lam=1.0))},
            TypeError,
            "`exact` must be a fobmaml.Exact",
        ),
        ({"exact": fm.Exact}, TypeError, "`exact` must be a fobmaml.Exact instance"),
        ({"method": "lanczos"}, ValueError, "`method` must be one of 'difference', 'power'"),
        ({"radius": 0.0}, ValueError, "`radius` must be > 0"),
        ({"radius": "1e-3"}, TypeError, "`radius` must be a real number"),
        ({"samples": 0}, ValueError, "`samples` must be >= 1"),
        ({"samples": 2.0}, TypeError, "`samples` must be an integer"),
        ({"power_iters": 0}, ValueError, "`power_iters` must be >= 1"),
        ({"power_tol": -1.0}, ValueError, "`power_tol` must be >= 0"),
        ({"seed": -1}, ValueError, "`seed` must be >= 0"),
        ({"directions": np.zeros((2, 6))}, ValueError, "`directions` must have nonzero rows"),
        ({"directions": np.ones((2, 5))}, ValueError, "`directions` must have shape \\(s, 6\\)"),
        ({"directions": np.ones(6)}, ValueError, "`directions` must be a 2-D array"),
        (
            {"directions": np.ones((1, 6)), "method": "power"},
            ValueError,
            "`directions` is only used with method='difference'",
        ),
    ],
)
def test_local_smoothness_rejects_bad_input(kwargs, exc, match):
    args = {"x": X0, "tasks": TASKS, "exact": EXACT, **kwargs}
    with pytest.raises(exc, match=match):
        dg.local_smoothness(args.pop("x"), args.pop("tasks"), args.pop("exact"), **args)


@pytest.mark.parametrize(
    ("kwargs", "exc", "match"),
    [
        ({"points": X0}, ValueError, "`points` must be a 2-D array"),
        ({"points": np.zeros((0, 6))}, ValueError, "`points` must have shape \\(p, 6\\)"),
        ({"points": np.zeros((2, 5))}, ValueError, "`points` must have shape \\(p, 6\\)"),
        ({"kinds": ["a"]}, ValueError, "`kinds` must be a str or a sequence of 2 str"),
        ({"kinds": [1, 2]}, ValueError, "`kinds` must be a str or a sequence of 2 str"),
        ({"errors": "ignore"}, ValueError, "`errors` must be one of 'raise', 'record'"),
        ({"progress": 1}, TypeError, "`progress` must be a bool"),
        ({"radius": -1.0}, ValueError, "`radius` must be > 0"),
        ({"iters": 3}, TypeError, "unexpected keyword argument 'iters'"),
        ({"desc": 3}, TypeError, "`desc` must be a str or None"),
        ({"exact": None}, TypeError, "`exact` must be a fobmaml.Exact"),
    ],
)
def test_smoothness_profile_rejects_bad_input(kwargs, exc, match):
    args = {"points": np.zeros((2, 6)), "tasks": TASKS, "exact": EXACT, "errors": "record"}
    args.update(kwargs)
    with pytest.raises(exc, match=match):
        dg.smoothness_profile(args.pop("points"), args.pop("tasks"), args.pop("exact"), **args)


@pytest.mark.parametrize(
    ("g", "s", "kwargs", "exc", "match"),
    [
        ([1, 2, 3], [1, 2], {}, ValueError, "must have the same length \\(got 3 and 2\\)"),
        ([1], [1], {}, ValueError, "need at least 2 points"),
        ([[1, 2]], [[1, 2]], {}, ValueError, "`grad_norm` must be a 1-D array"),
        ([1, np.nan], [1, 2], {}, ValueError, "`grad_norm` must contain only finite"),
        ([1, 2], [1, np.inf], {}, ValueError, "`smoothness` must contain only finite"),
        ([-1, 2], [1, 2], {}, ValueError, "`grad_norm` must be >= 0"),
        ([1, 2], [1, -2], {}, ValueError, "`smoothness` must be >= 0"),
        ([2, 2, 2], [1, 2, 3], {}, ValueError, "at least 2 distinct values"),
        (["a", "b"], [1, 2], {}, TypeError, "`grad_norm` must be a real-valued"),
        ([1, 2], [1, 2], {"method": "lad"}, ValueError, "`method` must be one of"),
        ([1, 2], [1, 2], {"method": "envelope", "quantile": 0}, ValueError, "`quantile` must be"),
        ([1, 2], [1, 2], {"method": "envelope", "quantile": 1.5}, ValueError, "in \\(0, 1\\]"),
        ([1, 2], [1, 2], {"quantile": 0.9}, ValueError, "only used with method='envelope'"),
    ],
)
def test_fit_smoothness_rejects_bad_input(g, s, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        dg.fit_smoothness(g, s, **kwargs)


def test_validate_options_names_unknown_options():
    dg.validate_options({"method": "power", "power_iters": 3})
    with pytest.raises(TypeError, match="unknown local_smoothness options: iters"):
        dg.validate_options({"iters": 3})
    with pytest.raises(ValueError, match="`directions` must have shape"):
        dg.validate_options({"directions": np.ones((1, 3))}, n=4)


def test_point_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="`radii` must be a non-empty list of distances >= 0"):
        dg.random_points(X0, [1.0, -1.0])
    with pytest.raises(ValueError, match="`radii` must be a non-empty"):
        dg.random_points(X0, [])
    with pytest.raises(ValueError, match="`per_radius` must be >= 1"):
        dg.random_points(X0, [1.0], per_radius=0)
    with pytest.raises(ValueError, match="`x0` must be a 1-D array"):
        dg.random_points(np.zeros((2, 2)), [1.0])
    est = fm.FOMAML(fm.InnerLoop())
    with pytest.raises(TypeError, match="`callback` cannot be passed"):
        dg.trajectory_points(X0, TASKS, est, fm.GD(0.1), 3, callback=print)
    with pytest.raises(ValueError, match="`every` must be >= 1"):
        dg.trajectory_points(X0, TASKS, est, fm.GD(0.1), 3, every=0)


def test_smoothness_options_object_and_keywords_are_the_same_options():
    x = POINTS[1]
    opts = dg.SmoothnessOptions(method="power", power_iters=30, seed=2)
    by_object = dg.local_smoothness(x, TASKS, EXACT, opts)
    by_keywords = dg.local_smoothness(x, TASKS, EXACT, method="power", power_iters=30, seed=2)
    same = np.array(by_object[:5]), np.array(by_keywords[:5])  # mean is NaN for "power"
    np.testing.assert_array_equal(*same)
    assert by_object[5:] == by_keywords[5:]
    override = dg.local_smoothness(x, TASKS, EXACT, opts, power_iters=3)
    assert override.evaluations == 1 + 2 * 3 < by_object.evaluations
    prof = dg.smoothness_profile(POINTS[:2], TASKS, EXACT, opts)
    assert prof.smoothness[1] == by_object.smoothness
    with pytest.raises(TypeError, match="`options` must be a SmoothnessOptions"):
        dg.local_smoothness(x, TASKS, EXACT, {"method": "power"})
    with pytest.raises(ValueError, match="`radius` must be > 0"):
        dg.SmoothnessOptions(radius=0.0)
    with pytest.raises(AttributeError, match="immutable"):
        opts.radius = 1.0
