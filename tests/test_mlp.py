"""The MLP task family against an independent NumPy reference (``tests/mlp_reference.py``),
central finite differences and the closed forms of its no-hidden-layer case (linear
and softmax regression): losses, gradients and HVPs, ``fm.mlp`` helpers, every
estimator, ``fm.evaluate``, thread-count independence and sub-batches."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import mlp_reference as ref  # tests/ is on the path (pytest `pythonpath`)
import numpy as np
import pytest

import fobmaml as fm

FAMILIES = [(a, loss) for a in ("tanh", "relu") for loss in ("mse", "xent")]
FAMILY_IDS = [f"{a}-{loss}" for a, loss in FAMILIES]

# No hidden layer (linear / softmax regression), one hidden layer, a deeper net.
ARCHITECTURES = {"linear": [4, 3], "shallow": [3, 4, 3], "deep": [3, 6, 5, 4, 2]}


@dataclass
class Case:
    tasks: fm.MLPTasks
    T: list  # reference tasks
    net: ref.Net
    x: np.ndarray
    arrays: tuple  # (Xs, Ys, Xq, Yq)


def make_case(
    rng, layers, activation="tanh", loss="mse", m=3, k=5, sep=False, k_query=7, x_scale=1.0
) -> Case:
    """Random data for ``m`` tasks, the library's batch, the reference's tasks and an x."""
    net = ref.Net(tuple(layers), activation, loss)
    Xs, Ys = ref.random_data(rng, net, m, k)
    Xq, Yq = ref.random_data(rng, net, m, k_query) if sep else (None, None)
    tasks = fm.MLPTasks(Xs, Ys, Xq, Yq, layers=list(layers), activation=activation, loss=loss)
    x = x_scale * rng.uniform(-1, 1, net.n) * ref.init_bounds(layers)
    return Case(tasks, ref.task_list(net, Xs, Ys, Xq, Yq), net, x, (Xs, Ys, Xq, Yq))


def rng_for(*key) -> np.random.Generator:
    return np.random.default_rng(ref.seed_of("test_mlp", *key))


# ----------------------------------------------------------------------------------------
# Losses, gradients and HVPs of the family
# ----------------------------------------------------------------------------------------


def _fd_gradients(tasks, Phi, which, h):
    """Per-task central differences of ``tasks.losses`` at the rows of Phi: (m, n)."""
    G = np.empty_like(Phi)
    for j in range(Phi.shape[1]):
        E = np.zeros_like(Phi)
        E[:, j] = h
        G[:, j] = (tasks.losses(Phi + E, which) - tasks.losses(Phi - E, which)) / (2 * h)
    return G


def _fd_hvps(grad, Phi, V, h):
    """``(grad(Φ + hV) − grad(Φ − hV)) / (2h)`` row by row."""
    return (grad(Phi + h * V) - grad(Phi - h * V)) / (2 * h)


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize("which", ["support", "query"])
def test_gradient_and_hvp_match_central_differences(which, activation, loss, arch):
    layers = ARCHITECTURES[arch]
    c = make_case(rng_for("fd", which, activation, loss, arch), layers, activation, loss, sep=True)
    rng = rng_for("fd-points", which, activation, loss, arch)
    m, n = c.tasks.num_tasks, c.tasks.dim
    Phi = c.x + 0.3 * rng.standard_normal((m, n))  # a different point per task
    V = rng.standard_normal((m, n))

    G = c.tasks.gradients(Phi, which)
    assert G.shape == (m, n)
    assert ref.rel_err(G, _fd_gradients(c.tasks, Phi, which, 1e-6)) <= 1e-6

    HV = c.tasks.hvps(Phi, V, which)
    assert HV.shape == (m, n)
    fd = _fd_hvps(lambda P: c.tasks.gradients(P, which), Phi, V, 1e-6)
    assert ref.rel_err(HV, fd) <= 1e-6


@pytest.mark.parametrize("arch", list(ARCHITECTURES))
@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize("sep", [False, True], ids=["no-query", "query"])
def test_losses_gradients_hvps_match_reference(sep, activation, loss, arch):
    layers = ARCHITECTURES[arch]
    rng = rng_for("ref", sep, activation, loss, arch)
    c = make_case(rng, layers, activation, loss, sep=sep, k=5, k_query=3)
    rng = rng_for("ref-points", sep, activation, loss, arch)
    m, n = c.tasks.num_tasks, c.tasks.dim
    Phi = c.x + 0.5 * rng.standard_normal((m, n))
    V = rng.standard_normal((m, n))

    for which, fun in (("support", "g"), ("query", "f")):
        L = c.tasks.losses(Phi, which)
        L_ref = np.array([getattr(t, fun)(p) for t, p in zip(c.T, Phi)])
        np.testing.assert_allclose(L, L_ref, rtol=1e-13, atol=0)
        G = c.tasks.gradients(Phi, which)
        G_ref = np.stack([getattr(t, f"grad_{fun}")(p) for t, p in zip(c.T, Phi)])
        assert ref.rel_err(G, G_ref) <= 1e-10
        HV = c.tasks.hvps(Phi, V, which)
        HV_ref = np.stack([getattr(t, f"hvp_{fun}")(p, v) for t, p, v in zip(c.T, Phi, V)])
        assert ref.rel_err(HV, HV_ref) <= 1e-10

        # A vector phi / v is used for every task.
        L1 = c.tasks.losses(c.x, which)
        np.testing.assert_allclose(L1, [getattr(t, fun)(c.x) for t in c.T], rtol=1e-13)
        HV1 = c.tasks.hvps(c.x, V[0], which)
        assert ref.rel_err(HV1, [getattr(t, f"hvp_{fun}")(c.x, V[0]) for t in c.T]) <= 1e-10

    # Without a query set the query functions are the support functions.
    if not sep:
        for name in ("losses", "gradients"):
            a = getattr(c.tasks, name)(Phi, "support")
            assert np.array_equal(a, getattr(c.tasks, name)(Phi, "query"))


@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
def test_hvp_is_symmetric_and_linear(activation, loss):
    c = make_case(rng_for("sym", activation, loss), [3, 6, 5, 2], activation, loss)
    rng = rng_for("sym-points", activation, loss)
    m, n = c.tasks.num_tasks, c.tasks.dim
    Phi = c.x + 0.5 * rng.standard_normal((m, n))
    U, V = rng.standard_normal((2, m, n))
    HU, HV = c.tasks.hvps(Phi, U), c.tasks.hvps(Phi, V)
    np.testing.assert_allclose(
        np.einsum("ij,ij->i", U, HV), np.einsum("ij,ij->i", V, HU), rtol=1e-12
    )
    assert ref.rel_err(c.tasks.hvps(Phi, 2.0 * U - 3.0 * V), 2.0 * HU - 3.0 * HV) <= 1e-12


@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
def test_reference_derivatives_match_finite_differences(activation, loss):
    # The reference itself: backprop against central differences of its loss, and its
    # complex-step HVP against central differences of its gradient.
    c = make_case(rng_for("self", activation, loss), [3, 5, 4, 2], activation, loss)
    t, x = c.T[0], c.x
    v = rng_for("self-v", activation, loss).standard_normal(c.net.n)
    assert ref.rel_err(t.grad_g(x), ref.central_differences(t.g, x, 1e-6)) <= 1e-7
    fd = (t.grad_g(x + 1e-6 * v) - t.grad_g(x - 1e-6 * v)) / 2e-6
    assert ref.rel_err(t.hvp_g(x, v), fd) <= 1e-7
    H = t.hess_g(x)
    assert ref.rel_err(H @ v, t.hvp_g(x, v)) <= 1e-12


# ----------------------------------------------------------------------------------------
# fm.mlp: parameters, initialization, prediction
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("activation", ["relu", "tanh"])
@pytest.mark.parametrize("arch", list(ARCHITECTURES))
def test_predict_matches_reference_forward(arch, activation):
    layers = ARCHITECTURES[arch]
    rng = rng_for("predict", arch, activation)
    params = rng.standard_normal(ref.num_params(layers))
    X = rng.standard_normal((3, 5, layers[0]))
    out = fm.mlp.predict(params, X, layers, activation)
    assert out.shape == (3, 5, layers[-1])
    for i in range(3):
        expected = ref.predict(params, X[i], layers, activation)
        np.testing.assert_allclose(out[i], expected, rtol=1e-13, atol=1e-14)
    np.testing.assert_allclose(
        fm.mlp.predict(params, X[0], layers, activation),
        ref.predict(params, X[0], layers, activation),
        rtol=1e-13,
        atol=1e-14,
    )


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_parameter_order_is_pytorchs(activation):
    # W (out, in) row-major then b, layer by layer, built by hand with distinct values.
    layers = [3, 4, 2]
    W1 = np.arange(12.0).reshape(4, 3) / 10 - 0.5
    b1 = np.array([0.1, -0.2, 0.3, -0.4])
    W2 = np.arange(8.0).reshape(2, 4) / 7 - 0.6
    b2 = np.array([0.25, -0.75])
    flat = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    assert fm.mlp.num_params(layers) == flat.size == 4 * 3 + 4 + 2 * 4 + 2
    X = np.random.default_rng(0).standard_normal((6, 3))
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0))
    by_hand = act(X @ W1.T + b1) @ W2.T + b2
    np.testing.assert_allclose(fm.mlp.predict(flat, X, layers, activation), by_hand, rtol=1e-14)
    (W1_, b1_), (W2_, b2_) = fm.mlp.unflatten(flat, layers)
    for a, b in ((W1_, W1), (b1_, b1), (W2_, W2), (b2_, b2)):
        assert np.array_equal(a, b)
    # The task family reads the same layout: its loss is the mse of these predictions.
    Y = np.random.default_rng(1).standard_normal((1, 6, 2))
    tasks = fm.MLPTasks(X[None], Y, layers=layers, activation=activation)
    np.testing.assert_allclose(tasks.losses(flat), [np.mean((by_hand - Y[0]) ** 2)], rtol=1e-14)
    # ... and its gradient of the bias of the last layer is the mean output residual.
    g = tasks.gradients(flat)[0]
    np.testing.assert_allclose(g[-2:], 2 * (by_hand - Y[0]).sum(axis=0) / 12, rtol=1e-12)


@pytest.mark.parametrize("layers", [[1, 40, 40, 1], [5, 3], [7, 64, 2, 10]])
def test_init_params_shape_bounds_determinism(layers):
    p = fm.mlp.init_params(layers, seed=3)
    assert p.shape == (fm.mlp.num_params(layers),) == (ref.num_params(layers),)
    assert p.dtype == np.float64
    assert np.array_equal(p, fm.mlp.init_params(layers, seed=3))
    assert not np.array_equal(p, fm.mlp.init_params(layers, seed=4))
    # Each layer's W and b lie in U(-1/sqrt(fan_in), 1/sqrt(fan_in)).
    off = 0
    for d_in, d_out in zip(layers, layers[1:]):
        bound = 1.0 / np.sqrt(d_in)
        for size in (d_out * d_in, d_out):
            block = p[off : off + size]
            off += size
            assert np.all(np.abs(block) <= bound)
            if size >= 40:  # large blocks fill the interval (not a narrower one)
                assert np.abs(block).max() > 0.8 * bound
                assert 0.3 < np.mean(np.abs(block) < 0.5 * bound) < 0.7
    assert off == p.size
    # The default seed is 0.
    assert np.array_equal(fm.mlp.init_params(layers), fm.mlp.init_params(layers, seed=0))


# ----------------------------------------------------------------------------------------
# The no-hidden-layer case: linear and softmax regression in closed form
# ----------------------------------------------------------------------------------------


def _linear_regression(rng, m=3, k=8, d=4, sep=True, activation="relu"):
    Xs, ys = rng.standard_normal((m, k, d)), rng.standard_normal((m, k, 1))
    Xq, yq = rng.standard_normal((m, k + 2, d)), rng.standard_normal((m, k + 2, 1))
    if not sep:
        Xq, yq = Xs, ys
    query = (Xq, yq) if sep else (None, None)
    tasks = fm.MLPTasks(Xs, ys, *query, layers=[d, 1], activation=activation, loss="mse")
    return tasks, (Xs, ys, Xq, yq)


@pytest.mark.parametrize("activation", ["relu", "tanh"])  # irrelevant without hidden layers
def test_linear_regression_gradient_and_hessian_closed_form(activation):
    rng = rng_for("linreg-grad", activation)
    tasks, (Xs, ys, Xq, yq) = _linear_regression(rng, activation=activation)
    Phi, V = rng.standard_normal((2, 3, 5))
    for which, X, y in (("support", Xs, ys), ("query", Xq, yq)):
        G = tasks.gradients(Phi, which)
        G_ref = [ref.linear_regression_gradient(p, X[i], y[i]) for i, p in enumerate(Phi)]
        assert ref.rel_err(G, G_ref) <= 1e-12
        HV = tasks.hvps(Phi, V, which)
        HV_ref = [ref.linear_regression_hessian(X[i]) @ V[i] for i in range(3)]
        assert ref.rel_err(HV, HV_ref) <= 1e-12
        L_ref = [np.mean((X[i] @ p[:4] + p[4] - y[i, :, 0]) ** 2) for i, p in enumerate(Phi)]
        np.testing.assert_allclose(tasks.losses(Phi, which), L_ref, rtol=1e-13)


def test_linear_regression_with_several_outputs_is_mean_over_all_elements():
    rng = rng_for("linreg-multi")
    X, Y = rng.standard_normal((2, 6, 3)), rng.standard_normal((2, 6, 4))
    tasks = fm.MLPTasks(X, Y, layers=[3, 4], loss="mse")
    phi = rng.standard_normal(16)
    W, b = phi[:12].reshape(4, 3), phi[12:]
    R = X @ W.T + b - Y  # (2, 6, 4)
    np.testing.assert_allclose(tasks.losses(phi), (R**2).mean(axis=(1, 2)), rtol=1e-13)
    gW = 2 * np.einsum("iko,ikd->iod", R, X) / 24
    gb = 2 * R.sum(axis=1) / 24
    G_ref = np.hstack([gW.reshape(2, 12), gb])
    assert ref.rel_err(tasks.gradients(phi), G_ref) <= 1e-12


@pytest.mark.parametrize("c", [2, 4])
def test_softmax_regression_gradient_closed_form(c):
    rng = rng_for("softmax", c)
    d, k = 3, 9
    X, labels = rng.standard_normal((3, k, d)), rng.integers(0, c, (3, k))
    tasks = fm.MLPTasks(X, labels, layers=[d, c], loss="xent")
    Phi = 2.0 * rng.standard_normal((3, c * d + c))
    G_ref = [ref.softmax_regression_gradient(p, X[i], labels[i], c) for i, p in enumerate(Phi)]
    assert ref.rel_err(tasks.gradients(Phi), G_ref) <= 1e-12
    # The loss: mean of logsumexp(z) − z[label].
    for i, p in enumerate(Phi):
        Z = X[i] @ p[: c * d].reshape(c, d).T + p[c * d :]
        lse = np.log(np.exp(Z).sum(axis=1))
        want = np.mean(lse - Z[np.arange(k), labels[i]])
        np.testing.assert_allclose(tasks.losses(Phi)[i], want, rtol=1e-13)


def test_xent_is_stable_for_huge_logits():
    # Logits of order 1e3: a naive softmax overflows; the loss and gradient stay finite
    # and equal the stable closed form (the loss ~ the logit gap of a wrong label).
    X = np.array([[[1.0, 0.0], [0.0, 1.0]]])
    labels = np.array([[0, 0]])
    W = np.array([[1000.0, 0.0], [0.0, 1000.0]])
    phi = np.concatenate([W.ravel(), [0.0, 0.0]])
    tasks = fm.MLPTasks(X, labels, layers=[2, 2], loss="xent")
    np.testing.assert_allclose(tasks.losses(phi), [(0.0 + 1000.0) / 2], rtol=1e-14)
    G_ref = ref.softmax_regression_gradient(phi, X[0], labels[0], 2)
    assert ref.rel_err(tasks.gradients(phi), G_ref[None]) <= 1e-14


@pytest.mark.parametrize("sep", [False, True], ids=["no-query", "query"])
@pytest.mark.parametrize("lam", [0.3, 4.0])
def test_exact_on_linear_regression_equals_dense_closed_form(lam, sep):
    # g(φ) = (1/k)||Xa φ − y||² with Xa = [X, 1] is quadratic with Hessian H = (2/k) XaᵀXa:
    #   φ* = (H + λI)^{-1} (λx + (2/k) Xaᵀy),   ∇F_i = λ (H + λI)^{-1} ∇f(φ*).
    rng = rng_for("linreg-exact", lam, sep)
    tasks, (Xs, ys, Xq, yq) = _linear_regression(rng, sep=sep)
    x = rng.standard_normal(5)
    G_ref, F_ref = [], []
    for i in range(3):
        Xa = ref.linear_regression_design(Xs[i])
        H = ref.linear_regression_hessian(Xs[i]) + lam * np.eye(5)
        phi_star = np.linalg.solve(H, lam * x + 2.0 * Xa.T @ ys[i, :, 0] / Xs.shape[1])
        gf = ref.linear_regression_gradient(phi_star, Xq[i], yq[i])
        G_ref.append(lam * np.linalg.solve(H, gf))
        Xqa = ref.linear_regression_design(Xq[i])
        F_ref.append(np.mean((Xqa @ phi_star - yq[i, :, 0]) ** 2))
    inner = fm.InnerLoop(steps=3, lr=1.0 / (lam + 6.0), lam=lam, momentum=0.3)
    est = fm.Exact(inner, tol=1e-13)
    out = est.estimate(x, tasks, losses=True)
    assert ref.rel_err(out.task_gradients, G_ref) <= 1e-9
    np.testing.assert_allclose(out.losses, F_ref, rtol=1e-10)
    # MLPs have no closed form in the library: "auto" is the iterative path.
    iterative = fm.Exact(inner, tol=1e-13, solver="iterative").estimate(x, tasks)
    assert np.array_equal(iterative.task_gradients, out.task_gradients)
    # On a quadratic, MAML with many steps converges to the same thing.
    maml = fm.MAML(inner.replace(steps=400, momentum=0.0)).task_gradients(x, tasks)
    assert ref.rel_err(maml, G_ref) <= 1e-8


# ----------------------------------------------------------------------------------------
# Every estimator against the reference
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variant:
    id: str
    make: Callable[[fm.InnerLoop], fm.Estimator]
    reference: Callable
    needs_lam: bool = False
    exact: bool = False
    rtol: float = 1e-10


def _fob(scheme, perturbation, delta=1e-3):
    return Variant(
        f"FOBMAML-{scheme}-{perturbation}",
        lambda inner: fm.FOBMAML(inner, delta=delta, scheme=scheme, perturbation=perturbation),
        lambda t, x, r: ref.fobmaml(t, x, r, delta, scheme, perturbation),
        needs_lam=True,
    )


def _imaml(cg):
    return Variant(
        f"IMAML-cg{cg}",
        lambda inner: fm.IMAML(inner, cg_steps=cg),
        lambda t, x, r: ref.imaml(t, x, r, cg),
        needs_lam=True,
    )


def _hfmaml(eps, rtol):
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
    # The finite-difference HVP rounds: u ||∇g|| / ε per product, relative to ||a_k||.
    _hfmaml(1e-5, rtol=1e-8),
    _hfmaml(1e-2, rtol=1e-10),
    _imaml(1),
    _imaml(4),
    _imaml(35),  # more CG steps than the dimension
    _fob("forward", "objective"),
    _fob("forward", "linear"),
    _fob("symmetric", "objective"),
    _fob("symmetric", "linear"),
    Variant(
        "Exact",
        lambda inner: fm.Exact(inner, tol=1e-13),
        lambda t, x, r: ref.exact(t, x, r),
        needs_lam=True,
        exact=True,
    ),
]

LAYERS = {("tanh", "mse"): [2, 5, 2], ("relu", "mse"): [3, 4, 3]}
LAYERS[("tanh", "xent")] = [3, 4, 3]
LAYERS[("relu", "xent")] = [2, 5, 2]


# Each variant meets every family on four (λ, β, query?, K) combinations that between them
# cover λ = 0 and λ > 0, β = 0 and β > 0, both query modes and several K.
COMBOS = {
    False: [(0.0, 0.0, False, 1), (0.0, 0.5, True, 5), (2.0, 0.0, True, 4), (2.0, 0.5, False, 2)],
    True: [(2.0, 0.0, False, 1), (2.0, 0.5, True, 5), (0.7, 0.0, True, 4), (5.0, 0.5, False, 2)],
}
# Exact with relu: h is only piecewise smooth, and for moderate λ its minimizer often sits
# on a kink (a pre-activation exactly 0), where gradient descent cannot converge to a tight
# tolerance (Exact then raises ConvergenceError; see test_mlp_errors.py). So Exact is
# checked with relu at a large λ, from an x whose first-layer pre-activations are far from
# 0, and the reference asserts that they stay away from 0 at φ*.
EXACT_LAM = {"tanh": 6.0, "relu": 30.0}


EST_CASES = [
    pytest.param(
        v,
        act,
        loss,
        lam,
        beta,
        sep,
        K,
        id=f"{v.id}-{act}-{loss}-lam{lam}-beta{beta}-{'query' if sep else 'support'}-K{K}",
    )
    for v in VARIANTS
    for act, loss in FAMILIES
    for lam, beta, sep, K in (
        [(EXACT_LAM[act], b, s, 3) for b in (0.0, 0.5) for s in (False, True)]
        if v.exact
        else COMBOS[v.needs_lam]
    )
]


def _away_from_relu_kinks(c: Case, rng) -> np.ndarray:
    """x with a small first layer and first-layer biases ±1: |z_1| >= ~0.4 on these data."""
    (W1, b1), *rest = ref.unflatten(c.x, c.net.layers)
    W1 = 0.2 * W1
    b1 = rng.choice([-1.0, 1.0], size=b1.shape)
    return ref.flatten([(W1, b1), *rest])


def _min_abs_preactivation(t: ref.MLPTask, phi) -> float:
    zs, _ = ref.forward(phi, t.Xs, t.net.layers, t.net.activation)
    return float(min(np.abs(z).min() for z in zs[:-1]))


@pytest.mark.parametrize(("variant", "act", "loss", "lam", "beta", "sep", "K"), EST_CASES)
def test_estimator_matches_numpy_reference(variant, act, loss, lam, beta, sep, K):
    rng = rng_for("est", variant.id, act, loss, lam, beta, sep, K)
    m, k = 3, int(rng.integers(4, 7))
    k_query = int(rng.integers(2, 9))  # fewer or more query samples than support samples
    c = make_case(rng, LAYERS[(act, loss)], act, loss, m=m, k=k, sep=sep, k_query=k_query)
    if variant.exact and act == "relu":
        c.x = _away_from_relu_kinks(c, rng)
    n = c.net.n
    lr = min(0.1, 1.0 / (lam + 4.0))  # stable: ||∇²g|| < 4 for these nets and data
    inner = fm.InnerLoop(steps=K, lr=lr, lam=lam, momentum=beta)
    rinner = ref.Inner(K, lr, lam, beta)
    est = variant.make(inner)

    out = est.estimate(c.x, c.tasks, losses=True)
    G_ref = ref.per_task(variant.reference, c.T, c.x, rinner)
    assert out.task_gradients.shape == (m, n) and out.gradient.shape == (n,)
    assert out.status.ok.all()
    assert ref.rel_err(out.task_gradients, G_ref) <= variant.rtol
    assert ref.rel_err(out.gradient, G_ref.mean(axis=0)) <= variant.rtol

    if variant.exact:
        points = [ref.inner_solution(t, c.x, rinner) for t in c.T]
        if act == "relu":
            assert min(_min_abs_preactivation(t, p) for t, p in zip(c.T, points)) > 0.05
    else:
        points = [ref.adapt(t, c.x, rinner) for t in c.T]
    losses_ref = np.array([t.f(p) for t, p in zip(c.T, points)])
    np.testing.assert_allclose(out.losses, losses_ref, rtol=1e-10)

    F, g = est.value_and_gradient(c.x, c.tasks)
    assert np.array_equal(g, out.gradient)
    assert abs(F - losses_ref.mean()) <= 1e-10 * (1 + abs(losses_ref.mean()))


@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_adapt_and_meta_loss_match_reference(activation, loss, beta):
    c = make_case(rng_for("adapt", activation, loss, beta), [3, 4, 3], activation, loss, sep=True)
    inner, rinner = fm.InnerLoop(6, 0.1, 1.0, beta), ref.Inner(6, 0.1, 1.0, beta)
    phi = fm.adapt(c.x, c.tasks, inner)
    assert ref.rel_err(phi, ref.per_task(ref.adapt, c.T, c.x, rinner)) <= 1e-12
    F_ref = ref.meta_loss_k(c.T, c.x, rinner)
    assert abs(fm.meta_loss_k(c.x, c.tasks, inner) - F_ref) <= 1e-12 * (1 + F_ref)


@pytest.mark.parametrize(
    ("activation", "loss", "sep", "lam", "beta"),
    [
        ("tanh", "mse", False, 0.0, 0.0),
        ("tanh", "mse", True, 1.0, 0.5),
        ("tanh", "xent", True, 0.0, 0.3),
        ("tanh", "xent", False, 2.0, 0.0),
        ("relu", "mse", True, 0.5, 0.0),
        ("relu", "xent", True, 0.0, 0.5),
    ],
)
def test_maml_matches_central_differences_of_meta_loss(activation, loss, sep, lam, beta):
    c = make_case(
        rng_for("maml-fd", activation, loss, sep, lam, beta), [2, 5, 2], activation, loss, sep=sep
    )
    inner = fm.InnerLoop(steps=4, lr=0.2, lam=lam, momentum=beta)
    fd = ref.central_differences(lambda z: fm.meta_loss_k(z, c.tasks, inner), c.x, 1e-5)
    assert ref.rel_err(fm.MAML(inner).meta_gradient(c.x, c.tasks), fd) <= 1e-7
    # ... and the reference's own recursion passes the same test.
    G_ref = ref.per_task(ref.maml, c.T, c.x, ref.Inner(4, 0.2, lam, beta)).mean(axis=0)
    assert ref.rel_err(G_ref, fd) <= 1e-7


@pytest.mark.parametrize(("activation", "loss"), FAMILIES, ids=FAMILY_IDS)
def test_exact_matches_central_differences_of_exact_meta_loss(activation, loss):
    # Directional derivatives of F(x) = (1/m) Σ f_i(φ*_i(x)) along random directions.
    rng = rng_for("exact-fd", activation, loss)
    c = make_case(rng, [2, 3, 2], activation, loss, sep=True)
    if activation == "relu":
        c.x = _away_from_relu_kinks(c, rng)
    lam = EXACT_LAM[activation]
    est = fm.Exact(fm.InnerLoop(lr=1.0 / (lam + 4.0), lam=lam), tol=1e-13)
    g = est.meta_gradient(c.x, c.tasks)
    h = 1e-4
    for d in rng.standard_normal((3, c.net.n)):
        fd = (est.meta_loss(c.x + h * d, c.tasks) - est.meta_loss(c.x - h * d, c.tasks)) / (2 * h)
        assert abs(g @ d - fd) <= 1e-6 * np.linalg.norm(g) * np.linalg.norm(d)
    # The reference's exact meta-loss is the same function.
    F_ref = ref.exact_meta_loss(c.T, c.x, ref.Inner(1, 1.0 / (lam + 4.0), lam))
    assert abs(est.meta_loss(c.x, c.tasks) - F_ref) <= 1e-11 * (1 + F_ref)


@pytest.mark.parametrize("perturbation", ["objective", "linear"])
@pytest.mark.parametrize(("activation", "loss"), [("tanh", "mse"), ("relu", "xent")])
def test_fobmaml_symmetric_approaches_exact_as_steps_grow(activation, loss, perturbation):
    # λ = 10 makes the inner problem strongly convex near φ* for this small net (the
    # reference checks that ∇²g + λI is positive definite there); GD with lr = 0.08
    # contracts quickly. δ = 1e-4 leaves an O(δ²) bias far below the final tolerance.
    c = make_case(rng_for("fob-K", activation, loss), [2, 5, 2], activation, loss, sep=True)
    lam, lr = 10.0, 0.08
    G_exact = fm.Exact(fm.InnerLoop(lr=lr, lam=lam), tol=1e-13).task_gradients(c.x, c.tasks)
    assert ref.rel_err(G_exact, ref.per_task(ref.exact, c.T, c.x, ref.Inner(1, lr, lam))) <= 1e-9
    errors = []
    for K in (1, 2, 4, 8, 16, 32):
        est = fm.FOBMAML(fm.InnerLoop(K, lr, lam), 1e-4, "symmetric", perturbation)
        errors.append(ref.rel_err(est.task_gradients(c.x, c.tasks), G_exact))
    assert all(e1 < e0 for e0, e1 in zip(errors, errors[1:])), errors
    assert errors[-1] <= 1e-7, errors
    # FO-MAML does not: its limit ∇f(φ*) is not the meta-gradient.
    fo = fm.FOMAML(fm.InnerLoop(32, lr, lam)).task_gradients(c.x, c.tasks)
    assert ref.rel_err(fo, G_exact) > 0.03


# ----------------------------------------------------------------------------------------
# fm.evaluate
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [False, True], ids=["no-query", "query"])
def test_evaluate_mse_has_no_accuracy(sep):
    c = make_case(rng_for("eval-mse", sep), [2, 8, 1], "tanh", "mse", m=4, k=10, sep=sep)
    inner = fm.InnerLoop(steps=10, lr=0.1)
    ev = fm.evaluate(c.x, c.tasks, inner)
    assert ev.accuracy is None and ev.accuracy_before is None and ev.task_accuracy is None
    rinner = ref.Inner(10, 0.1, 0.0)
    task_loss = [t.f(ref.adapt(t, c.x, rinner)) for t in c.T]
    np.testing.assert_allclose(ev.task_loss, task_loss, rtol=1e-12)
    assert abs(ev.loss - np.mean(task_loss)) <= 1e-12 * ev.loss
    before = c.tasks.losses(c.x, "query")
    np.testing.assert_allclose(before, [t.f(c.x) for t in c.T], rtol=1e-13)
    assert ev.loss_before == pytest.approx(before.mean(), rel=1e-14)
    # Adaptation with a reasonable lr lowers the support loss of every task.
    phi = fm.adapt(c.x, c.tasks, inner)
    assert np.all(c.tasks.losses(phi, "support") < c.tasks.losses(c.x, "support"))
    if not sep:
        assert ev.loss < ev.loss_before


@pytest.mark.parametrize("activation", ["relu", "tanh"])
def test_evaluate_xent_accuracy_matches_reference(activation):
    rng = rng_for("eval-xent", activation)
    c = make_case(rng, [3, 8, 4], activation, "xent", m=5, k=12, sep=True, k_query=15, x_scale=3.0)
    inner = fm.InnerLoop(steps=15, lr=0.5, lam=0.1, momentum=0.2)
    ev = fm.evaluate(c.x, c.tasks, inner)
    rinner = ref.Inner(15, 0.5, 0.1, 0.2)
    phis = [ref.adapt(t, c.x, rinner) for t in c.T]
    acc = [t.query_accuracy(p) for t, p in zip(c.T, phis)]
    acc_before = [t.query_accuracy(c.x) for t in c.T]
    assert np.array_equal(ev.task_accuracy, acc)
    assert ev.accuracy == pytest.approx(np.mean(acc), abs=1e-15)
    assert ev.accuracy_before == pytest.approx(np.mean(acc_before), abs=1e-15)
    assert len(set(acc)) > 1  # the data gives the check teeth: accuracies differ
    np.testing.assert_allclose(ev.task_loss, [t.f(p) for t, p in zip(c.T, phis)], rtol=1e-12)
    assert ev.loss_before == pytest.approx(np.mean([t.f(c.x) for t in c.T]), rel=1e-13)
    phi = fm.adapt(c.x, c.tasks, inner)
    assert np.all(c.tasks.losses(phi, "support") < c.tasks.losses(c.x, "support"))
    # Accuracy counts samples: a multiple of 1/k_query.
    assert np.allclose(np.asarray(ev.task_accuracy) * 15, np.round(np.asarray(acc) * 15))


# ----------------------------------------------------------------------------------------
# Threads and sub-batches
# ----------------------------------------------------------------------------------------


@pytest.fixture
def threads_zero_after():
    """Put the kernels back on the automatic thread count (0) after the test."""
    yield
    fm.set_num_threads(0)


THREAD_INNER = fm.InnerLoop(steps=7, lr=0.1, lam=3.0, momentum=0.3)
THREAD_ESTIMATORS = {
    "MAML": fm.MAML(THREAD_INNER),
    "FOMAML": fm.FOMAML(THREAD_INNER),
    "Reptile": fm.Reptile(THREAD_INNER),
    "IMAML": fm.IMAML(THREAD_INNER, cg_steps=5),
    "HFMAML": fm.HFMAML(THREAD_INNER),
    "FOBMAML-forward-objective": fm.FOBMAML(THREAD_INNER, 1e-3, "forward", "objective"),
    "FOBMAML-symmetric-linear": fm.FOBMAML(THREAD_INNER, 1e-3, "symmetric", "linear"),
    "Exact": fm.Exact(THREAD_INNER.replace(lam=8.0)),
}


@pytest.mark.parametrize(("activation", "loss"), [("tanh", "xent"), ("relu", "mse")])
def test_one_and_two_threads_are_bit_identical(activation, loss, threads_zero_after):
    c = make_case(
        rng_for("threads", activation, loss), [3, 7, 5, 2], activation, loss, m=9, k=6, sep=True
    )
    V = rng_for("threads-v", activation, loss).standard_normal((9, c.net.n))

    def run():
        out = {n: e.estimate(c.x, c.tasks, losses=True) for n, e in THREAD_ESTIMATORS.items()}
        out["adapt"] = fm.adapt(c.x, c.tasks, THREAD_INNER)
        out["evaluate"] = fm.evaluate(c.x, c.tasks, THREAD_INNER)
        out["family"] = (c.tasks.losses(c.x), c.tasks.gradients(V), c.tasks.hvps(V, V, "query"))
        return out

    fm.set_num_threads(1)
    one = run()
    fm.set_num_threads(2)
    two = run()
    fm.set_num_threads(0)
    for name in THREAD_ESTIMATORS:
        for field in ("task_gradients", "gradient", "losses"):
            assert np.array_equal(getattr(one[name], field), getattr(two[name], field)), name
    assert np.array_equal(one["adapt"], two["adapt"])
    ev1, ev2 = one["evaluate"], two["evaluate"]
    assert ev1.as_dict() == ev2.as_dict()
    assert np.array_equal(ev1.task_loss, ev2.task_loss)
    for a, b in zip(one["family"], two["family"]):
        assert np.array_equal(a, b)


@pytest.mark.parametrize("sep", [False, True], ids=["no-query", "query"])
@pytest.mark.parametrize(
    "index",
    [2, slice(1, 4), [4, 0, 3], np.array([True, False] * 3)],
    ids=["int", "slice", "list", "mask"],
)
def test_sub_batch_rows_equal_full_batch_rows(index, sep):
    c = make_case(rng_for("sub", sep), [3, 4, 2], "tanh", "xent", m=6, k=5, sep=sep)
    sub = c.tasks[index]
    idx = np.atleast_1d(np.arange(6)[index])
    assert isinstance(sub, fm.MLPTasks)
    assert sub.num_tasks == idx.size and sub.dim == c.tasks.dim
    assert sub.separate_query == sep
    inner = fm.InnerLoop(steps=4, lr=0.2, lam=1.0, momentum=0.2)
    # Every task is computed the same way wherever it sits in the batch: bit for bit.
    for est in (fm.MAML(inner), fm.FOBMAML(inner, 1e-3, "symmetric"), fm.Exact(inner)):
        full = est.estimate(c.x, c.tasks, losses=True)
        part = est.estimate(c.x, sub, losses=True)
        assert np.array_equal(part.task_gradients, full.task_gradients[idx]), est
        assert np.array_equal(part.losses, full.losses[idx]), est
    for which in ("support", "query"):
        assert np.array_equal(sub.gradients(c.x, which), c.tasks.gradients(c.x, which)[idx])
    assert np.array_equal(fm.adapt(c.x, sub, inner), fm.adapt(c.x, c.tasks, inner)[idx])
    # The sub-batch holds exactly the selected tasks' data.
    assert np.array_equal(sub.X_support, c.arrays[0][idx])
    assert np.array_equal(sub.Y_query, (c.arrays[3] if sep else c.arrays[1])[idx])


@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_input_dtypes_and_layouts_give_the_same_results(loss):
    # float32, Fortran-ordered and strided inputs are converted; the results equal those of
    # C-contiguous float64 input (the kernels read the arrays in place as row-major).
    rng = rng_for("layouts", loss)
    c = make_case(rng, [3, 4, 2], "tanh", loss, m=3, k=5, sep=True)
    Xs, Ys, Xq, Yq = c.arrays
    Xs32 = Xs.astype(np.float32)
    variants = {
        "float32": (Xs32, Ys, Xq, Yq),
        "fortran": (np.asfortranarray(Xs), np.asfortranarray(Ys), Xq, np.asfortranarray(Yq)),
        "strided": (
            np.repeat(Xs, 2, axis=1)[:, ::2],
            np.repeat(Ys, 2, axis=1)[:, ::2],
            np.repeat(Xq, 2, axis=0)[::2],
            np.repeat(Yq, 2, axis=0)[::2],
        ),
    }
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0)
    for name, arrays in variants.items():
        tasks = fm.MLPTasks(*arrays, layers=[3, 4, 2], activation="tanh", loss=loss)
        want_tasks = c.tasks
        if name == "float32":
            want_tasks = fm.MLPTasks(
                Xs32.astype(np.float64), Ys, Xq, Yq, layers=[3, 4, 2], activation="tanh", loss=loss
            )
        G = fm.MAML(inner).task_gradients(c.x, tasks)
        assert np.array_equal(G, fm.MAML(inner).task_gradients(c.x, want_tasks)), name
