"""Every estimator against the independent NumPy reference, finite differences and
closed forms on random quadratic tasks, plus the convergence properties that
``docs/estimators.md`` claims (bias orders of FO-B-MAML, the persistent bias of the
first-order baselines, MAML/IMAML -> Exact, momentum helping FO-B-MAML)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np
import pytest
import reference as ref

import fobmaml as fm

# ----------------------------------------------------------------------------------------
# The estimator variants and their references
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    id: str
    make: Callable[[fm.InnerLoop], fm.Estimator]
    reference: Callable[[ref.Quadratic, np.ndarray, ref.Inner], np.ndarray]
    needs_lam: bool = False
    exact: bool = False  # its losses are f(φ*) rather than f(φ_K)
    rtol: float = 1e-9  # relative error allowed against the reference


def _fobmaml(scheme: str, perturbation: str, delta: float = 1e-3) -> Variant:
    return Variant(
        f"FOBMAML-{scheme}-{perturbation}",
        lambda inner: fm.FOBMAML(inner, delta=delta, scheme=scheme, perturbation=perturbation),
        lambda t, x, r: ref.fobmaml(t, x, r, delta, scheme, perturbation),
        needs_lam=True,
    )


def _imaml(cg_steps: int) -> Variant:
    return Variant(
        f"IMAML-cg{cg_steps}",
        lambda inner: fm.IMAML(inner, cg_steps=cg_steps),
        lambda t, x, r: ref.imaml(t, x, r, cg_steps),
        needs_lam=True,
    )


def _hfmaml(eps: float, rtol: float) -> Variant:
    return Variant(
        f"HFMAML-eps{eps:g}",
        lambda inner: fm.HFMAML(inner, eps=eps),
        lambda t, x, r: ref.hfmaml(t, x, r, eps),
        rtol=rtol,
    )


VARIANTS = [
    Variant("MAML", fm.MAML, ref.maml),
    Variant("FOMAML", fm.FOMAML, ref.fomaml),
    Variant("Reptile", fm.Reptile, ref.reptile),
    # A finite-difference HVP of a quadratic is exact up to rounding, u ||∇g(φ)|| / ε per
    # product: with ε = 1e-5 two correct implementations can differ by ~1e-11 / ||a_k||,
    # which is above 1e-9 relative when the meta-gradient is small. ε = 1e-2 is held to 1e-9.
    _hfmaml(1e-5, rtol=1e-7),
    _hfmaml(1e-2, rtol=1e-9),
    _imaml(1),
    _imaml(3),
    _imaml(25),  # more CG steps than the dimension
    _fobmaml("forward", "objective"),
    _fobmaml("forward", "linear"),
    _fobmaml("symmetric", "objective"),
    _fobmaml("symmetric", "linear"),
    Variant(
        "Exact-auto",
        lambda inner: fm.Exact(inner, solver="auto"),
        lambda t, x, r: ref.exact(t, x, r.lam),
        needs_lam=True,
        exact=True,
    ),
    Variant(
        "Exact-iterative",
        lambda inner: fm.Exact(inner, tol=1e-13, solver="iterative"),
        lambda t, x, r: ref.exact(t, x, r.lam),
        needs_lam=True,
        exact=True,
    ),
]

CASES = [
    pytest.param(
        v, lam, beta, sep, K, id=f"{v.id}-lam{lam}-beta{beta}-{'query' if sep else 'support'}-K{K}"
    )
    for v in VARIANTS
    for lam in (0.0, 0.7)
    if lam > 0 or not v.needs_lam
    for beta in (0.0, 0.5)
    for sep in (False, True)
    for K in (1, 4, 17)
]

RTOL = 1e-9  # relative error allowed against the references (per task and for the mean)


def _random_case(*key):
    rng = np.random.default_rng(ref.seed_of(*key))
    m, n = int(rng.integers(3, 6)), int(rng.integers(4, 13))
    return rng, m, n


@pytest.mark.parametrize(("variant", "lam", "beta", "sep", "K"), CASES)
def test_estimator_matches_numpy_reference(variant, lam, beta, sep, K):
    rng, m, n = _random_case(variant.id, lam, beta, sep, K)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    lr = 0.3  # stable: the inner Hessians A_i + λI have eigenvalues in [0.1, 1.7]
    inner = fm.InnerLoop(steps=K, lr=lr, lam=lam, momentum=beta)
    rinner = ref.Inner(K, lr, lam, beta)
    est = variant.make(inner)

    out = est.estimate(x, tasks, losses=True)
    G_ref = ref.per_task(variant.reference, T, x, rinner)
    assert out.task_gradients.shape == (m, n) and out.gradient.shape == (n,)
    assert out.status.ok.all()
    assert ref.rel_err(out.task_gradients, G_ref) <= variant.rtol
    assert ref.rel_err(out.gradient, G_ref.mean(axis=0)) <= variant.rtol

    # The losses are f_i at the adapted point: φ_K, or φ* for Exact.
    if variant.exact:
        points = [ref.inner_solution(t, x, lam) for t in T]
    else:
        points = [ref.adapt(t, x, rinner) for t in T]
    losses_ref = np.array([t.f(p) for t, p in zip(T, points)])
    np.testing.assert_allclose(out.losses, losses_ref, rtol=RTOL, atol=1e-12)

    # The convenience methods are the same computation.
    assert np.array_equal(est.task_gradients(x, tasks), out.task_gradients)
    assert np.array_equal(est.meta_gradient(x, tasks), out.gradient)
    F, g = est.value_and_gradient(x, tasks)
    assert isinstance(F, float)
    assert np.array_equal(g, out.gradient)
    assert abs(F - losses_ref.mean()) <= RTOL * (1.0 + abs(losses_ref.mean()))
    assert est.estimate(x, tasks).losses is None


# ----------------------------------------------------------------------------------------
# MAML: three references and finite differences
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 6, 30])
@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_maml_matches_forward_mode_and_closed_form(beta, lam, sep, K):
    rng, m, n = _random_case("maml-three", beta, lam, sep, K)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    inner, rinner = fm.InnerLoop(K, 0.3, lam, beta), ref.Inner(K, 0.3, lam, beta)

    reverse = ref.per_task(ref.maml, T, x, rinner)
    forward = ref.per_task(ref.maml_forward, T, x, rinner)
    closed = ref.per_task(ref.maml_closed_form, T, x, rinner)
    # The spec's reverse recursion is the transpose of the forward Jacobian recursion.
    assert ref.rel_err(reverse, forward) <= 1e-12
    assert ref.rel_err(closed, forward) <= 1e-10

    G = fm.MAML(inner).task_gradients(x, tasks)
    assert ref.rel_err(G, forward) <= RTOL
    assert ref.rel_err(G, closed) <= RTOL


def _central_differences(fun, x, h):
    grad = np.empty_like(x)
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        grad[j] = (fun(x + e) - fun(x - e)) / (2 * h)
    return grad


# For quadratic tasks φ_K(x) and φ*(x) are affine in x, so F_K and F are quadratic in x
# and central differences are exact up to rounding: a large h keeps rounding small.
FD_STEP = 1e-3
FD_RTOL = 1e-7


@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_maml_matches_central_differences_of_meta_loss(beta, lam, sep):
    rng, m, n = _random_case("maml-fd", beta, lam, sep)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    inner, rinner = fm.InnerLoop(9, 0.3, lam, beta), ref.Inner(9, 0.3, lam, beta)

    fd_lib = _central_differences(lambda z: fm.meta_loss_k(z, tasks, inner), x, FD_STEP)
    fd_ref = _central_differences(lambda z: ref.meta_loss_k(T, z, rinner), x, FD_STEP)
    assert ref.rel_err(fd_lib, fd_ref) <= FD_RTOL
    assert ref.rel_err(fm.MAML(inner).meta_gradient(x, tasks), fd_lib) <= FD_RTOL
    # ... and the reference's own MAML passes the same test.
    assert ref.rel_err(ref.per_task(ref.maml, T, x, rinner).mean(axis=0), fd_ref) <= FD_RTOL


@pytest.mark.parametrize("solver", ["auto", "iterative"])
@pytest.mark.parametrize("sep", [False, True])
def test_exact_matches_central_differences_of_exact_meta_loss(solver, sep):
    rng, m, n = _random_case("exact-fd", solver, sep)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks = fm.QuadraticTasks(A, b, B, c)
    x = rng.standard_normal(n)
    est = fm.Exact(fm.InnerLoop(lr=0.5, lam=0.4), tol=1e-13, solver=solver)
    fd = _central_differences(lambda z: est.meta_loss(z, tasks), x, FD_STEP)
    assert ref.rel_err(est.meta_gradient(x, tasks), fd) <= FD_RTOL


# ----------------------------------------------------------------------------------------
# meta_loss, adapt and Exact against the reference and closed forms
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("K", [1, 5, 23])
@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("lam", [0.0, 0.7])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_meta_loss_and_adapt_match_reference(beta, lam, sep, K):
    rng, m, n = _random_case("adapt", beta, lam, sep, K)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    inner, rinner = fm.InnerLoop(K, 0.3, lam, beta), ref.Inner(K, 0.3, lam, beta)

    phi = fm.adapt(x, tasks, inner)
    assert phi.shape == (m, n)
    assert ref.rel_err(phi, ref.per_task(ref.adapt, T, x, rinner)) <= 1e-12
    assert ref.rel_err(phi, ref.per_task(ref.adapt_closed_form, T, x, rinner)) <= 1e-10

    F = fm.meta_loss_k(x, tasks, inner)
    assert isinstance(F, float)
    for F_ref in (ref.meta_loss_k(T, x, rinner), ref.meta_loss_k_closed_form(T, x, rinner)):
        assert abs(F - F_ref) <= 1e-10 * (1.0 + abs(F_ref))


@pytest.mark.parametrize("spectrum", ["spd", "indefinite"])
@pytest.mark.parametrize("beta", [0.0, 0.5])
@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("solver", ["auto", "iterative"])
def test_exact_matches_dense_solve(solver, sep, beta, spectrum):
    rng, m, n = _random_case("exact", solver, sep, beta, spectrum)
    # "indefinite": A_i has negative eigenvalues but A_i + λI is positive definite, so
    # the exact meta-gradient is still defined.
    lo, lam = (0.1, 0.3) if spectrum == "spd" else (-0.3, 0.6)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep, lo=lo, hi=1.0)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    inner = fm.InnerLoop(steps=3, lr=0.4, lam=lam, momentum=beta)
    G_ref = ref.per_task(ref.exact, T, x, lam)
    F_ref = ref.exact_meta_loss(T, x, lam)

    tight = fm.Exact(inner, tol=1e-13, solver=solver)
    assert ref.rel_err(tight.task_gradients(x, tasks), G_ref) <= RTOL
    assert abs(tight.meta_loss(x, tasks) - F_ref) <= RTOL * (1.0 + abs(F_ref))
    F, g = tight.value_and_gradient(x, tasks)
    assert abs(F - F_ref) <= RTOL * (1.0 + abs(F_ref))
    assert ref.rel_err(g, G_ref.mean(axis=0)) <= RTOL

    # The default tolerance (1e-10, relative) is still far below any estimator's bias.
    default = fm.Exact(inner, solver=solver)
    assert ref.rel_err(default.task_gradients(x, tasks), G_ref) <= 1e-7
    # Exact does not depend on the number of inner steps.
    other = fm.Exact(inner.replace(steps=50), tol=1e-13, solver=solver)
    assert ref.rel_err(other.task_gradients(x, tasks), G_ref) <= RTOL


def test_query_defaults_to_support_per_argument(problem):
    # B alone (c defaults to b) and c alone (B defaults to A).
    _, _, x, (A, b, B, c) = problem(4, 6, separate_query=True)
    inner, rinner = fm.InnerLoop(7, 0.3, 0.5, 0.2), ref.Inner(7, 0.3, 0.5, 0.2)
    for kwargs, T in (
        ({"B": B}, ref.task_list(A, b, B, b)),
        ({"c": c}, ref.task_list(A, b, A, c)),
        ({"B": A, "c": b}, ref.task_list(A, b)),
    ):
        tasks = fm.QuadraticTasks(A, b, **kwargs)
        G = fm.MAML(inner).task_gradients(x, tasks)
        assert ref.rel_err(G, ref.per_task(ref.maml, T, x, rinner)) <= RTOL


# ----------------------------------------------------------------------------------------
# Properties
# ----------------------------------------------------------------------------------------


def _exact_and_error(tasks, x, lam):
    G_exact = fm.Exact(fm.InnerLoop(lam=lam)).task_gradients(x, tasks)
    return lambda G: ref.rel_err(G, G_exact)


@pytest.mark.parametrize("perturbation", ["objective", "linear"])
@pytest.mark.parametrize("scheme", ["forward", "symmetric"])
def test_fobmaml_converges_to_exact_as_steps_grow_and_delta_shrinks(scheme, perturbation):
    tasks = fm.datasets.quadratic_tasks(3, 8, kappa=10.0, seed=11, separate_query=True)
    x = np.zeros(8)
    lam = 0.1  # inner Hessians in [0.2, 1.1]: GD with lr = 1/1.1 contracts by 0.82 a step
    error = _exact_and_error(tasks, x, lam)
    errors = [
        error(
            fm.FOBMAML(fm.InnerLoop(K, 1 / 1.1, lam), delta, scheme, perturbation).task_gradients(
                x, tasks
            )
        )
        for K, delta in [(5, 1e-1), (20, 1e-2), (80, 1e-3), (320, 1e-4)]
    ]
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert errors[-1] <= (1e-3 if scheme == "forward" and perturbation == "objective" else 1e-6)


@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize(
    ("scheme", "deltas", "order"),
    [
        ("forward", np.geomspace(1e-1, 1e-3, 7), 1.0),
        ("symmetric", np.geomspace(3e-1, 1e-2, 7), 2.0),
    ],
)
def test_fobmaml_bias_order_in_delta(scheme, deltas, order, sep):
    # With K large the inner loops have converged to machine precision (contraction 0.45
    # per step, 150 steps), so the error left is the finite-difference truncation
    # C δ^order; over these δ it dominates rounding (~1e-16 / δ) by many decades.
    tasks = fm.datasets.quadratic_tasks(3, 8, kappa=10.0, seed=3, separate_query=sep)
    x = np.linspace(-1.0, 1.0, 8)
    inner = fm.InnerLoop(steps=150, lr=0.5, lam=1.0)
    error = _exact_and_error(tasks, x, 1.0)
    errors = [error(fm.FOBMAML(inner, d, scheme).task_gradients(x, tasks)) for d in deltas]
    slope = np.polyfit(np.log(deltas), np.log(errors), 1)[0]
    assert abs(slope - order) <= 0.1, (slope, errors)


@pytest.mark.parametrize("beta", [0.0, 0.5])
@pytest.mark.parametrize("sep", [False, True])
def test_fobmaml_linear_perturbation_is_exactly_linear_in_delta(sep, beta):
    # The perturbed inner loop with the linear term s⟨v, ψ⟩ is an affine recursion in ψ
    # whose only dependence on s is the constant forcing −α s v. Hence ψ^s_k = φ_k + s w_k
    # exactly, for every k (converged or not), with
    #     w_{-1} = w_0 = 0,  w_{k+1} = w_k − α((∇²g + λI) w_k + v) + β(w_k − w_{k−1}).
    # So the finite difference (ψ^{±δ}_K − φ_K) is exactly linear in δ: both schemes return
    # −λ w_K for every δ. The estimate has no O(δ) or O(δ²) bias at all (δ can be taken
    # large, which also avoids the 1/δ amplification of rounding); its only bias is the
    # inner loop's (w_K vs −(∇²g + λI)^{-1} v, and v = ∇f(φ_K) vs ∇f(φ*)), which vanishes
    # as K grows -- like IMAML with an exact linear solve.
    rng, m, n = _random_case("linear-in-delta", sep, beta)
    A, b, B, c = ref.random_quadratic(rng, m, n, sep)
    tasks, T = fm.QuadraticTasks(A, b, B, c), ref.task_list(A, b, B, c)
    x = rng.standard_normal(n)
    lam, lr, K = 0.5, 0.3, 6  # K small: far from converged on purpose
    inner = fm.InnerLoop(K, lr, lam, beta)

    # −λ w_K from the recursion above, per task.
    expected = []
    for t in T:
        v = t.grad_f(ref.adapt(t, x, ref.Inner(K, lr, lam, beta)))
        H = t.A + lam * np.eye(n)
        w_prev, w = np.zeros(n), np.zeros(n)
        for _ in range(K):
            w_prev, w = w, w - lr * (H @ w + v) + beta * (w - w_prev)
        expected.append(-lam * w)
    expected = np.array(expected)
    if beta == 0.0:
        # Closed form for plain GD: −λ w_K = λ H^{-1} (I − (I − αH)^K) v.
        for t, e in zip(T, expected):
            H = t.A + lam * np.eye(n)
            v = t.grad_f(ref.adapt(t, x, ref.Inner(K, lr, lam)))
            M = np.linalg.matrix_power(np.eye(n) - lr * H, K)
            assert ref.rel_err(e, lam * np.linalg.solve(H, v - M @ v)) <= 1e-12

    for scheme in ("forward", "symmetric"):
        for delta in (1e-4, 1e-2, 1.0, 30.0):
            G = fm.FOBMAML(inner, delta, scheme, "linear").task_gradients(x, tasks)
            assert ref.rel_err(G, expected) <= 1e-9, (scheme, delta)

    # The objective perturbation, by contrast, does depend on δ.
    G_small = fm.FOBMAML(inner, 1e-4, "forward").task_gradients(x, tasks)
    G_large = fm.FOBMAML(inner, 1.0, "forward").task_gradients(x, tasks)
    assert ref.rel_err(G_large, G_small) > 1e-3


def test_first_order_baselines_keep_their_bias_while_maml_and_imaml_converge():
    tasks = fm.datasets.quadratic_tasks(3, 8, kappa=10.0, seed=3, separate_query=True)
    x = np.zeros(8)
    error = _exact_and_error(tasks, x, 1.0)
    table = {"FOMAML": [], "Reptile": [], "MAML": [], "IMAML": []}
    for K, cg in [(5, 1), (20, 3), (80, 6), (320, 10)]:
        inner = fm.InnerLoop(steps=K, lr=0.5, lam=1.0)
        table["FOMAML"].append(error(fm.FOMAML(inner).task_gradients(x, tasks)))
        table["Reptile"].append(error(fm.Reptile(inner).task_gradients(x, tasks)))
        table["MAML"].append(error(fm.MAML(inner).task_gradients(x, tasks)))
        table["IMAML"].append(error(fm.IMAML(inner, cg_steps=cg).task_gradients(x, tasks)))
    # FO-MAML tends to ∇f(φ*), not λ(∇²g + λI)^{-1}∇f(φ*); Reptile's (x − φ_K)/(αK) → 0.
    assert min(table["FOMAML"]) > 0.1, table
    assert min(table["Reptile"]) > 0.5, table
    assert table["Reptile"][-1] > table["Reptile"][0], table
    for name in ("MAML", "IMAML"):
        errs = table[name]
        assert all(e1 < e0 for e0, e1 in zip(errs[:3], errs[1:3])), (name, table)
        assert errs[-1] <= 1e-10, (name, table)


def test_momentum_speeds_up_fobmaml():
    # An ill-conditioned inner problem: eigenvalues of ∇²g + λI in [0.02, 1.01].
    tasks = fm.datasets.quadratic_tasks(2, 10, kappa=100.0, seed=5)
    x = np.zeros(10)
    lam = 0.01
    mu, L = 1.0 / 100 + lam, 1.0 + lam
    error = _exact_and_error(tasks, x, lam)
    tuned = {
        "gd": dict(lr=2 / (L + mu), momentum=0.0),
        "heavy-ball": dict(
            lr=4 / (np.sqrt(L) + np.sqrt(mu)) ** 2,
            momentum=((np.sqrt(L / mu) - 1) / (np.sqrt(L / mu) + 1)) ** 2,
        ),
    }
    grid = [25, 50, 100, 200, 400, 800, 1600]
    needed = {}
    for name, kw in tuned.items():
        for K in grid:
            est = fm.FOBMAML(fm.InnerLoop(steps=K, lam=lam, **kw), delta=1e-4, scheme="symmetric")
            if error(est.task_gradients(x, tasks)) <= 1e-4:
                needed[name] = K
                break
    assert set(needed) == {"gd", "heavy-ball"}, needed
    assert 4 * needed["heavy-ball"] <= needed["gd"], needed


def test_meta_loss_is_a_deprecated_name_of_meta_loss_k(problem):
    tasks, _, x, _ = problem(3, 4)
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0)
    with pytest.warns(DeprecationWarning, match="now called fobmaml.meta_loss_k"):
        old = fm.meta_loss(x, tasks, inner)
    assert old == fm.meta_loss_k(x, tasks, inner)
