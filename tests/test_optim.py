"""Outer optimizers against hand-written NumPy arithmetic and known convergence facts.

The expected values below are computed with plain NumPy in the test, never by calling
the pieces of ``fobmaml.optim``.
"""

from __future__ import annotations

import copy
import json
import pickle

import numpy as np
import pytest

import fobmaml as fm
from fobmaml import optim
from fobmaml.optim import (
    GD,
    SGD,
    SNGDM,
    Adam,
    ClippedGD,
    Momentum,
    NormalizedGD,
    Optimizer,
    apply_updates,
    chain,
    clip_by_norm,
    ema,
    normalize,
    scale,
    scale_by_adam,
    trace,
)

N = 4
RNG_GRADS = np.random.default_rng(1234).standard_normal((6, N))  # a fixed gradient sequence
X0 = np.array([0.5, -1.0, 2.0, 0.25])


def run(opt, grads, x0=X0):
    """Apply `opt` to a fixed sequence of gradients; return the iterates x_0..x_T."""
    x, state = np.array(x0), opt.init(x0)
    xs = [x]
    for g in grads:
        x, state = opt.step(x, g, state)
        xs.append(x)
    return np.array(xs)


def quadratic(seed=0, n=5, mu=0.1, L=2.0):
    """A convex quadratic 0.5 x^T A x - b^T x with spectrum in [mu, L] and its minimizer."""
    rng = np.random.default_rng(seed)
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = np.linspace(mu, L, n)
    A = (Q * eig) @ Q.T
    A = 0.5 * (A + A.T)
    b = rng.standard_normal(n)
    return A, b, np.linalg.solve(A, b)


def minimize(opt, A, b, steps, x0=None):
    x = np.zeros(len(b)) if x0 is None else np.array(x0)
    state = opt.init(x)
    for _ in range(steps):
        x, state = opt.step(x, A @ x - b, state)
    return x


# -- each optimizer against its update rule, written out by hand ---------------------------
def test_gd_matches_hand_computation():
    lr = 0.3
    xs = run(GD(lr), RNG_GRADS)
    expected = [X0]
    for g in RNG_GRADS:
        expected.append(expected[-1] - lr * g)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-15)


def test_momentum_matches_hand_computation():
    lr, beta = 0.2, 0.7
    xs = run(Momentum(lr, beta), RNG_GRADS)
    x, m = X0.copy(), np.zeros(N)
    expected = [x]
    for g in RNG_GRADS:
        m = beta * m + g
        x = x - lr * m
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-14)


def test_adam_matches_hand_computation():
    lr, b1, b2, eps = 0.05, 0.8, 0.95, 1e-6
    xs = run(Adam(lr, b1=b1, b2=b2, eps=eps), RNG_GRADS)
    x, mu, nu = X0.copy(), np.zeros(N), np.zeros(N)
    expected = [x]
    for t, g in enumerate(RNG_GRADS, start=1):
        mu = b1 * mu + (1 - b1) * g
        nu = b2 * nu + (1 - b2) * g**2
        mhat, vhat = mu / (1 - b1**t), nu / (1 - b2**t)
        x = x - lr * mhat / (np.sqrt(vhat) + eps)
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-14)


def test_adam_first_step_is_lr_times_sign():
    # With bias correction the first step is lr * g / (|g| + eps): lr * sign(g) per coordinate.
    g = np.array([3.0, -0.5, 1e-3, -20.0])
    x, _ = Adam(0.01, eps=1e-12).step(np.zeros(N), g, Adam(0.01, eps=1e-12).init(np.zeros(N)))
    np.testing.assert_allclose(x, -0.01 * np.sign(g), rtol=1e-9)


def test_clipped_gd_matches_hand_computation():
    lr, c = 0.4, 1.5
    xs = run(ClippedGD(lr, clip=c), RNG_GRADS)
    x = X0.copy()
    expected = [x]
    for g in RNG_GRADS:
        x = x - lr * min(1.0, c / np.sqrt(np.sum(g * g))) * g
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-14)


def test_normalized_gd_matches_hand_computation():
    lr = 0.25
    xs = run(NormalizedGD(lr), RNG_GRADS)
    x = X0.copy()
    expected = [x]
    for g in RNG_GRADS:
        x = x - lr * g / np.sqrt(np.sum(g * g))
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-14)


def test_sngdm_matches_hand_computation():
    lr, beta = 0.1, 0.6
    xs = run(SNGDM(lr, beta), RNG_GRADS)
    x, m = X0.copy(), np.zeros(N)
    expected = [x]
    for g in RNG_GRADS:
        m = beta * m + (1 - beta) * g
        x = x - lr * m / np.sqrt(np.sum(m * m))
        expected.append(x)
    np.testing.assert_allclose(xs, np.array(expected), rtol=0, atol=1e-14)


def test_sgd_is_gd():
    assert SGD is GD
    assert SGD(0.1) == GD(0.1)


# -- properties on known problems ----------------------------------------------------------
def test_gd_with_lr_one_over_L_has_the_known_linear_rate():
    # x_t - x* = (I - A/L)^t (x_0 - x*) exactly, so ||x_t - x*|| <= (1 - mu/L)^t ||x_0 - x*||.
    mu, L = 0.1, 2.0
    A, b, xstar = quadratic(mu=mu, L=L)
    x0 = np.ones(5)
    for t in (1, 5, 40):
        x = minimize(GD(1.0 / L), A, b, t, x0=x0)
        predicted = np.linalg.matrix_power(np.eye(5) - A / L, t) @ (x0 - xstar)
        np.testing.assert_allclose(x - xstar, predicted, rtol=0, atol=1e-12)
        bound = (1 - mu / L) ** t * np.linalg.norm(x0 - xstar)
        assert np.linalg.norm(x - xstar) <= bound * (1 + 1e-12)


@pytest.mark.parametrize(
    "opt, steps, tol",
    [
        (Momentum(0.3, beta=0.5), 400, 1e-10),
        (Adam(0.02), 3000, 1e-4),
    ],
    ids=["momentum", "adam"],
)
def test_momentum_and_adam_reach_the_minimizer_of_a_convex_quadratic(opt, steps, tol):
    A, b, xstar = quadratic(mu=0.2, L=2.0)
    x = minimize(opt, A, b, steps)
    assert np.linalg.norm(x - xstar) < tol * max(1.0, np.linalg.norm(xstar))


def test_normalized_gd_moves_exactly_lr_per_step():
    lr = 0.07
    xs = run(NormalizedGD(lr), RNG_GRADS * np.array([[1e-8], [1e3], [1], [5], [1e-3], [2]]))
    np.testing.assert_allclose(np.linalg.norm(np.diff(xs, axis=0), axis=1), lr, rtol=1e-14)


def test_sngdm_step_length_is_exactly_lr():
    lr = 0.05
    xs = run(SNGDM(lr, beta=0.9), RNG_GRADS)
    np.testing.assert_allclose(np.linalg.norm(np.diff(xs, axis=0), axis=1), lr, rtol=1e-14)


def test_clipped_gd_equals_gd_below_the_threshold_and_has_length_lr_c_above():
    lr, c = 0.3, 2.0
    g_small = np.array([0.3, -1.2, 0.5, 1.0])  # norm ~1.70 <= c
    g_on = g_small * (c / np.linalg.norm(g_small))  # norm == c (to rounding)
    g_big = 10 * g_small
    for g in (g_small, g_on):
        x_clip = ClippedGD(lr, c).step(X0, g, ClippedGD(lr, c).init(X0))[0]
        np.testing.assert_allclose(x_clip, X0 - lr * g, rtol=0, atol=1e-15)
    x_clip = ClippedGD(lr, c).step(X0, g_big, ClippedGD(lr, c).init(X0))[0]
    step = x_clip - X0
    np.testing.assert_allclose(np.linalg.norm(step), lr * c, rtol=1e-14)
    np.testing.assert_allclose(step / np.linalg.norm(step), -g_big / np.linalg.norm(g_big))


@pytest.mark.parametrize(
    "opt",
    [NormalizedGD(0.1), SNGDM(0.1, beta=0.9), SNGDM(0.1, beta=0.0), ClippedGD(0.1, 1.0)],
    ids=repr,
)
def test_zero_gradient_gives_a_zero_update_without_nan(opt):
    x0 = X0.copy()
    state = opt.init(x0)
    updates, state = opt.update(np.zeros(N), state, x0)
    assert np.array_equal(updates, np.zeros(N))
    x, _ = opt.step(x0, np.zeros(N), opt.init(x0))
    assert np.array_equal(x, x0)


def test_normalize_survives_overflow_and_underflow():
    t = normalize()
    s = t.init(np.zeros(2))
    np.testing.assert_allclose(t.update(np.array([1e300, 1e300]), s)[0], [2**-0.5] * 2)
    np.testing.assert_allclose(t.update(np.array([5e-324, 0.0]), s)[0], [1.0, 0.0])
    c = clip_by_norm(3.0)
    np.testing.assert_allclose(
        c.update(np.array([1e300, -1e300]), s)[0], [3 * 2**-0.5, -3 * 2**-0.5]
    )


# -- the pieces ------------------------------------------------------------------------------
def test_pieces_against_hand_arithmetic():
    g1, g2 = RNG_GRADS[0], RNG_GRADS[1]
    p = np.zeros(N)

    t = trace(0.5)
    u1, s = t.update(g1, t.init(p))
    u2, s = t.update(g2, s)
    np.testing.assert_allclose(u2, 0.5 * g1 + g2, rtol=1e-15)

    t = ema(0.5)
    u1, s = t.update(g1, t.init(p))
    u2, s = t.update(g2, s)
    np.testing.assert_allclose(u1, 0.5 * g1, rtol=1e-15)
    np.testing.assert_allclose(u2, 0.25 * g1 + 0.5 * g2, rtol=1e-15)

    t = scale(-3.0)
    np.testing.assert_allclose(t.update(g1, t.init(p))[0], -3.0 * g1, rtol=1e-15)

    t = scale_by_adam(0.5, 0.5, 1e-8)
    u1, s = t.update(g1, t.init(p))
    assert s.count == 1
    np.testing.assert_allclose(u1, g1 / (np.abs(g1) + 1e-8), rtol=1e-14)

    t = chain(chain(ema(0.0)), chain(normalize(), scale(2.0)))
    np.testing.assert_allclose(t.update(g1, t.init(p))[0], 2 * g1 / np.linalg.norm(g1))


def test_each_optimizer_is_a_chain_of_pieces():
    assert repr(SNGDM(0.1, 0.9).transform) == (
        "chain(ema(beta=0.9), normalize(), scale(factor=-0.1))"
    )
    assert repr(Adam(0.1).transform).startswith("chain(scale_by_adam(")
    assert repr(Momentum(0.1, 0.5).transform) == "chain(trace(beta=0.5), scale(factor=-0.1))"
    assert repr(ClippedGD(0.1, 2.0).transform) == (
        "chain(clip_by_norm(max_norm=2.0), scale(factor=-0.1))"
    )


def test_apply_updates_returns_a_new_array():
    x = np.array([1.0, 2.0])
    y = apply_updates(x, np.array([0.5, -1.0]))
    np.testing.assert_array_equal(y, [1.5, 1.0])
    np.testing.assert_array_equal(x, [1.0, 2.0])
    with pytest.raises(ValueError, match="`updates` must have shape"):
        apply_updates(x, np.ones(3))
    with pytest.raises(ValueError, match="`updates` must contain only finite"):
        apply_updates(x, np.array([np.inf, 0.0]))


# -- state: explicit, immutable, picklable ---------------------------------------------------
ALL = [
    GD(0.1),
    Momentum(0.1, 0.9),
    Adam(0.1),
    ClippedGD(0.1, 1.0),
    NormalizedGD(0.1),
    SNGDM(0.1, 0.9),
]


@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_update_does_not_modify_the_old_state_or_the_inputs(opt):
    x, g = X0.copy(), RNG_GRADS[0].copy()
    _, state = opt.step(x, RNG_GRADS[1], opt.init(x))  # a state with nonzero arrays
    before = copy.deepcopy(state)
    x_new, new_state = opt.step(x, g, state)
    assert pickle.dumps(state) == pickle.dumps(before)
    np.testing.assert_array_equal(x, X0)
    np.testing.assert_array_equal(g, RNG_GRADS[0])
    assert new_state is not state
    for leaf in _leaves(new_state):
        if isinstance(leaf, np.ndarray):
            assert not leaf.flags.writeable
            with pytest.raises(ValueError, match="read-only"):
                leaf[0] = 1.0


@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_state_pickles_and_resumes_identically(opt):
    x, state = X0.copy(), opt.init(X0)
    for g in RNG_GRADS[:3]:
        x, state = opt.step(x, g, state)
    for leaf in _leaves(state):
        assert isinstance(leaf, (np.ndarray, int, float))
    restored = pickle.loads(pickle.dumps(state))
    a = opt.step(x, RNG_GRADS[3], state)[0]
    b = pickle.loads(pickle.dumps(opt)).step(x, RNG_GRADS[3], restored)[0]
    np.testing.assert_array_equal(a, b)


def _leaves(tree):
    if isinstance(tree, tuple):
        for t in tree:
            yield from _leaves(t)
    else:
        yield tree


# -- configuration ---------------------------------------------------------------------------
@pytest.mark.parametrize("opt", ALL, ids=repr)
def test_get_params_round_trips_through_json(opt):
    params = opt.get_params()
    assert params["name"] == type(opt).__name__
    rebuilt = Optimizer.from_params(json.loads(json.dumps(params)))
    assert rebuilt == opt and repr(rebuilt) == repr(opt)


def test_repr_and_params():
    assert repr(SNGDM(0.1, beta=0.5)) == "SNGDM(lr=0.1, beta=0.5)"
    assert Adam(1e-3).get_params() == {
        "name": "Adam",
        "lr": 1e-3,
        "b1": 0.9,
        "b2": 0.999,
        "eps": 1e-8,
    }
    assert ClippedGD(0.5, clip=2).get_params() == {"name": "ClippedGD", "lr": 0.5, "clip": 2.0}
    assert Optimizer.from_params({"name": "SGD", "lr": 0.2}) == GD(0.2)


def test_optimizers_are_immutable():
    opt = GD(0.1)
    with pytest.raises(AttributeError, match="immutable"):
        opt.lr = 0.2
    with pytest.raises(AttributeError, match="immutable"):
        normalize().name = "x"


def test_from_params_rejects_bad_dicts():
    with pytest.raises(ValueError, match=r"`params\['name'\]` must be one of"):
        Optimizer.from_params({"name": "RMSProp", "lr": 0.1})
    with pytest.raises(ValueError, match="unknown hyper-parameters for GD: beta"):
        Optimizer.from_params({"name": "GD", "lr": 0.1, "beta": 0.9})
    with pytest.raises(TypeError, match="`params` must be a dict"):
        Optimizer.from_params(["GD", 0.1])


# -- bad input ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "factory, kwargs, exc, match",
    [
        (GD, {"lr": 0.0}, ValueError, r"`lr` must be > 0 \(got 0.0\)"),
        (GD, {"lr": -1.0}, ValueError, r"`lr` must be > 0 \(got -1.0\)"),
        (GD, {"lr": float("inf")}, ValueError, "`lr` must be finite"),
        (GD, {"lr": float("nan")}, ValueError, "`lr` must be finite"),
        (GD, {"lr": "0.1"}, TypeError, "`lr` must be a real number"),
        (GD, {"lr": True}, TypeError, "`lr` must be a real number"),
        (Momentum, {"lr": 0.1, "beta": 1.0}, ValueError, r"`beta` must be in \[0, 1\)"),
        (Momentum, {"lr": 0.1, "beta": -0.1}, ValueError, r"`beta` must be in \[0, 1\)"),
        (SNGDM, {"lr": 0.1, "beta": 1.5}, ValueError, r"`beta` must be in \[0, 1\)"),
        (SNGDM, {"lr": -0.1}, ValueError, "`lr` must be > 0"),
        (ClippedGD, {"lr": 0.1, "clip": 0.0}, ValueError, r"`clip` must be > 0 \(got 0.0\)"),
        (ClippedGD, {"lr": 0.1, "clip": None}, TypeError, "`clip` must be a real number"),
        (Adam, {"lr": 0.1, "eps": 0.0}, ValueError, "`eps` must be > 0"),
        (Adam, {"lr": 0.1, "b1": 1.0}, ValueError, r"`b1` must be in \[0, 1\)"),
        (Adam, {"lr": 0.1, "b2": -0.5}, ValueError, r"`b2` must be in \[0, 1\)"),
        (NormalizedGD, {"lr": 0}, ValueError, "`lr` must be > 0"),
        (trace, {"beta": 1.0}, ValueError, r"`beta` must be in \[0, 1\)"),
        (ema, {"beta": 2.0}, ValueError, r"`beta` must be in \[0, 1\)"),
        (clip_by_norm, {"max_norm": -1.0}, ValueError, "`max_norm` must be > 0"),
        (scale, {"factor": float("nan")}, ValueError, "`factor` must be finite"),
        (scale_by_adam, {"eps": -1.0}, ValueError, "`eps` must be > 0"),
    ],
)
def test_bad_hyper_parameters_raise(factory, kwargs, exc, match):
    with pytest.raises(exc, match=match):
        factory(**kwargs)


def test_chain_rejects_non_transforms():
    with pytest.raises(TypeError, match=r"`transforms\[1\]` must be a Transform"):
        chain(scale(1.0), lambda g: g)


@pytest.mark.parametrize("opt", ALL, ids=repr)
@pytest.mark.parametrize(
    "grads, exc, match",
    [
        (np.ones(N + 1), ValueError, r"`grads` must have shape \(4,\)"),
        (np.ones((N, 1)), ValueError, "`grads` must be a 1-D array"),
        (np.array([1.0, np.nan, 0.0, 0.0]), ValueError, "`grads` must contain only finite"),
        (np.array([1.0, np.inf, 0.0, 0.0]), ValueError, "`grads` must contain only finite"),
        (np.ones(N, dtype=complex), TypeError, "`grads` must be a real-valued"),
        (np.array(["a"] * N), TypeError, "`grads` must be a real-valued"),
    ],
    ids=["length", "2-D", "nan", "inf", "complex", "str"],
)
def test_bad_grads_raise(opt, grads, exc, match):
    state = opt.init(X0)
    with pytest.raises(exc, match=match):
        opt.step(X0, grads, state)
    with pytest.raises(exc, match=match):
        opt.update(grads, state, X0)


@pytest.mark.parametrize("opt", [Momentum(0.1), Adam(0.1), SNGDM(0.1)], ids=repr)
def test_grads_are_checked_against_the_state_without_params(opt):
    with pytest.raises(ValueError, match=r"`grads` must have shape \(4,\) to match the optimizer"):
        opt.update(np.ones(N + 1), opt.init(X0))


def test_a_state_from_another_optimizer_is_rejected():
    with pytest.raises(TypeError, match="`state` must be the EmaState"):
        SNGDM(0.1).update(RNG_GRADS[0], Momentum(0.1).init(X0) + (optim.EmptyState(),))
    with pytest.raises(TypeError, match=r"tuple of 3 member states .*\(got a tuple of 2\)"):
        SNGDM(0.1).update(RNG_GRADS[0], Adam(0.1).init(X0))


def test_bad_params_raise():
    with pytest.raises(ValueError, match="`params` must be a 1-D array"):
        GD(0.1).init(np.zeros((2, 2)))
    with pytest.raises(ValueError, match="`params` must have at least one entry"):
        GD(0.1).init(np.zeros(0))
    with pytest.raises(ValueError, match="`params` must contain only finite"):
        GD(0.1).step(np.array([np.nan, 0, 0, 0]), np.ones(N), GD(0.1).init(X0))


def test_an_overflowing_step_says_what_became_non_finite():
    x = np.zeros(2)
    cases = [
        (GD(lr=1e300), np.array([1e300, 0.0]), x, "update"),
        (Adam(lr=0.1), np.array([1e200, -1e200]), x, "optimizer state"),
        (GD(lr=1.0), np.array([1e308, 0.0]), np.array([-1e308, 0.0]), "x"),
    ]
    for opt, g, x0, what in cases:
        with pytest.raises(fm.NonFiniteStepError, match="overflowed") as info:
            opt.step(x0, g, opt.init(x0))
        assert isinstance(info.value, FloatingPointError)
        assert info.value.what == what, (opt, info.value)
        again = pickle.loads(pickle.dumps(info.value))
        assert type(again) is fm.NonFiniteStepError
        assert (str(again), again.what) == (str(info.value), what)
