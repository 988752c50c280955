"""Bad input to the MLP family raises the documented error, with a message naming the
argument; failures inside the kernels (divergence, a non-convex inner problem for
``Exact``) raise the documented exceptions and never return silent garbage.

Documented contract (``fobmaml/_validation.py``, ``fobmaml/tasks.py``,
``fobmaml/errors.py``, ``fobmaml.Exact``): shapes and values -> ValueError; non-real
dtypes, non-integer labels and non-integer layer sizes -> TypeError; a diverging or
non-finite inner loop -> FloatingPointError naming the task and the step; ``∇²g + λI``
not positive definite -> ``fm.NotPositiveDefiniteError``; an iteration cap hit ->
``fm.ConvergenceError``.
"""

from __future__ import annotations

import re

import numpy as np
import pytest

import fobmaml as fm

LAYERS = [3, 4, 2]
M, K, KQ = 3, 5, 6
DOCUMENTED = (FloatingPointError, fm.NotPositiveDefiniteError, fm.ConvergenceError)


@pytest.fixture
def data():
    """Valid support and query arrays for both losses."""
    rng = np.random.default_rng(2024)
    return {
        "X_support": rng.standard_normal((M, K, 3)),
        "Y_support": rng.standard_normal((M, K, 2)),
        "L_support": rng.integers(0, 2, (M, K)),
        "X_query": rng.standard_normal((M, KQ, 3)),
        "Y_query": rng.standard_normal((M, KQ, 2)),
        "L_query": rng.integers(0, 2, (M, KQ)),
    }


def _make(data, loss="mse", query=True, layers=LAYERS, activation="tanh", **changes):
    """MLPTasks from `data` with `changes` applied (keys as in `data`)."""
    d = {**data, **changes}
    y = "Y" if loss == "mse" else "L"
    q = (d["X_query"], d[f"{y}_query"]) if query else (None, None)
    return fm.MLPTasks(
        d["X_support"], d[f"{y}_support"], *q, layers=layers, activation=activation, loss=loss
    )


@pytest.mark.parametrize("loss", ["mse", "xent"])
@pytest.mark.parametrize("query", [False, True])
def test_valid_input_is_accepted(data, loss, query):
    tasks = _make(data, loss, query)
    assert tasks.num_tasks == M and tasks.dim == fm.mlp.num_params(LAYERS)
    assert fm.FOMAML(fm.InnerLoop(steps=2)).meta_gradient(np.zeros(tasks.dim), tasks).shape == (
        tasks.dim,
    )


# ----------------------------------------------------------------------------------------
# Labels
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("which", ["support", "query"])
@pytest.mark.parametrize("shift", [-1, 2, 100], ids=["negative", "d_out", "far"])
def test_labels_out_of_range_raise_value_error(data, which, shift):
    labels = data[f"L_{which}"].copy()
    labels[1, 2] = shift if shift < 0 else LAYERS[-1] + shift - 2
    with pytest.raises(ValueError, match=rf"`Y_{which}` labels must be in \[0, 2\)"):
        _make(data, "xent", **{f"L_{which}": labels})


@pytest.mark.parametrize("which", ["support", "query"])
@pytest.mark.parametrize("dtype", [np.float64, np.float32, bool], ids=["f64", "f32", "bool"])
def test_non_integer_labels_raise_type_error(data, which, dtype):
    labels = data[f"L_{which}"].astype(dtype)
    with pytest.raises(TypeError, match=f"`Y_{which}` must hold integer class labels"):
        _make(data, "xent", **{f"L_{which}": labels})


@pytest.mark.parametrize("dtype", [np.int32, np.uint8, np.int16])
def test_other_integer_label_dtypes_are_accepted(data, dtype):
    ref_tasks = _make(data, "xent")
    tasks = _make(
        data,
        "xent",
        L_support=data["L_support"].astype(dtype),
        L_query=data["L_query"].astype(dtype),
    )
    x = fm.mlp.init_params(LAYERS, seed=1)
    assert np.array_equal(tasks.gradients(x), ref_tasks.gradients(x))


@pytest.mark.parametrize("which", ["support", "query"])
def test_labels_with_a_wrong_shape_raise(data, which):
    with pytest.raises(ValueError, match=f"`Y_{which}` must have shape"):
        _make(data, "xent", **{f"L_{which}": data[f"L_{which}"][..., None]})
    with pytest.raises(ValueError, match=f"`Y_{which}` must have shape"):
        _make(data, "xent", **{f"L_{which}": data[f"L_{which}"][:, :-1]})


def test_mse_with_label_targets_raises(data):
    with pytest.raises(ValueError, match="`Y_support` must be a 3-D array"):
        _make(data, "mse", Y_support=data["L_support"])


# ----------------------------------------------------------------------------------------
# Shapes
# ----------------------------------------------------------------------------------------

BAD_SHAPES = {
    # name: (argument named in the message, key, transform)
    "Y_support-k": ("Y_support", "Y_support", lambda a: a[:, :-1]),
    "Y_support-m": ("Y_support", "Y_support", lambda a: a[:-1]),
    "Y_support-d_out": ("Y_support", "Y_support", lambda a: a[..., :1]),
    "Y_support-2d": ("Y_support", "Y_support", lambda a: a[0]),
    "X_support-d_in": ("X_support", "X_support", lambda a: a[..., :2]),
    "X_support-d_in-wide": ("X_support", "X_support", lambda a: np.concatenate([a, a], -1)),
    "X_support-2d": ("X_support", "X_support", lambda a: a[0]),
    "X_support-4d": ("X_support", "X_support", lambda a: a[None]),
    "X_support-no-task": ("X_support", "X_support", lambda a: a[:0]),
    "X_query-m": ("X_query", "X_query", lambda a: a[:-1]),
    "X_query-d_in": ("X_query", "X_query", lambda a: a[..., :2]),
    "Y_query-m": ("Y_query", "Y_query", lambda a: a[:-1]),
    "Y_query-k": ("Y_query", "Y_query", lambda a: a[:, :-1]),
    "Y_query-d_out": ("Y_query", "Y_query", lambda a: np.concatenate([a, a], -1)),
}


@pytest.mark.parametrize("case", list(BAD_SHAPES))
def test_mismatched_shapes_raise_value_error_naming_the_argument(data, case):
    name, key, bad = BAD_SHAPES[case]
    with pytest.raises(ValueError, match=f"`{name}`"):
        _make(data, **{key: bad(data[key])})


def test_support_and_query_task_counts_must_agree(data):
    with pytest.raises(ValueError, match="`X_query` must hold the same 3 tasks as `X_support`"):
        _make(data, X_query=data["X_query"][:2], Y_query=data["Y_query"][:2])
    with pytest.raises(ValueError, match="`X_query` must hold the same 3 tasks"):
        _make(data, "xent", X_query=data["X_query"][:2], L_query=data["L_query"][:2])


@pytest.mark.parametrize("which", ["support", "query"])
@pytest.mark.parametrize("loss", ["mse", "xent"])
def test_zero_samples_per_task_raise(data, which, loss):
    y = "Y" if loss == "mse" else "L"
    changes = {f"X_{which}": data[f"X_{which}"][:, :0], f"{y}_{which}": data[f"{y}_{which}"][:, :0]}
    with pytest.raises(ValueError, match=rf"`X_{which}` must hold at least one sample.*k = 0"):
        _make(data, loss, **changes)


@pytest.mark.parametrize("given", ["X_query", "Y_query"])
def test_query_inputs_and_targets_come_together(data, given):
    with pytest.raises(ValueError, match="`X_query` and `Y_query` must be given together"):
        fm.MLPTasks(data["X_support"], data["Y_support"], layers=LAYERS, **{given: data[given]})


# ----------------------------------------------------------------------------------------
# layers, activation, loss
# ----------------------------------------------------------------------------------------

BAD_LAYERS = {
    "empty": ([], ValueError, r"`layers` must list at least \[d_in, d_out\]"),
    "one-entry": ([3], ValueError, r"`layers` must list at least \[d_in, d_out\]"),
    "zero-width": ([3, 0, 2], ValueError, r"`layers.*` must be >= 1 \(got 0\)"),
    "negative-width": ([3, -4, 2], ValueError, r"`layers.*` must be >= 1 \(got -4\)"),
    "float-width": ([3, 4.0, 2], TypeError, r"`layers.*` must be an integer"),
    "bool-width": ([3, True, 2], TypeError, r"`layers.*` must be an integer"),
    "string-width": ([3, "4", 2], TypeError, r"`layers.*` must be an integer"),
    "string": ("3,4,2", TypeError, r"`layers` must be a sequence of ints"),
    "int": (3, TypeError, r"`layers` must be a sequence of ints"),
    "none": (None, TypeError, r"`layers` must be a sequence of ints"),
}


@pytest.mark.parametrize("case", list(BAD_LAYERS))
def test_bad_layers_raise(data, case):
    layers, exc, msg = BAD_LAYERS[case]
    with pytest.raises(exc, match=msg):
        _make(data, layers=layers)
    # The fm.mlp helpers validate the same way.
    with pytest.raises(exc, match=msg):
        fm.mlp.num_params(layers)
    with pytest.raises(exc, match=msg):
        fm.mlp.init_params(layers)


def test_layers_as_a_tuple_or_numpy_ints_are_accepted(data):
    a = _make(data, layers=(3, 4, 2))
    b = _make(data, layers=[np.int64(3), np.int32(4), 2])
    x = fm.mlp.init_params(LAYERS)
    assert np.array_equal(a.gradients(x), b.gradients(x))


@pytest.mark.parametrize("value", ["sigmoid", "ReLU", "", None, 1])
def test_unknown_activation_raises(data, value):
    with pytest.raises(ValueError, match="`activation` must be one of 'relu', 'tanh'"):
        _make(data, activation=value)
    with pytest.raises(ValueError, match="`activation` must be one of"):
        fm.mlp.predict(np.zeros(fm.mlp.num_params(LAYERS)), data["X_support"], LAYERS, value)


@pytest.mark.parametrize("value", ["ce", "MSE", "cross_entropy", None])
def test_unknown_loss_raises(data, value):
    with pytest.raises(ValueError, match="`loss` must be one of 'mse', 'xent'"):
        fm.MLPTasks(data["X_support"], data["Y_support"], layers=LAYERS, loss=value)


# ----------------------------------------------------------------------------------------
# Non-finite and non-real values
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("key", ["X_support", "Y_support", "X_query", "Y_query"])
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf], ids=["nan", "inf", "-inf"])
def test_non_finite_data_raise(data, key, bad):
    arr = data[key].copy()
    arr[1, 2, 0] = bad
    with pytest.raises(ValueError, match=f"`{key}` must contain only finite values"):
        _make(data, **{key: arr})


@pytest.mark.parametrize("key", ["X_support", "Y_support"])
def test_complex_data_raise_type_error(data, key):
    with pytest.raises(TypeError, match=f"`{key}` must be a real-valued numeric array"):
        _make(data, **{key: data[key].astype(complex)})


def _entry_points(tasks):
    inner = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
    return {
        "MAML": lambda x: fm.MAML(inner).meta_gradient(x, tasks),
        "FOBMAML": lambda x: fm.FOBMAML(inner).task_gradients(x, tasks),
        "Exact": lambda x: fm.Exact(inner).estimate(x, tasks),
        "meta_loss": lambda x: fm.meta_loss_k(x, tasks, inner),
        "adapt": lambda x: fm.adapt(x, tasks, inner),
        "evaluate": lambda x: fm.evaluate(x, tasks, inner),
        "losses": lambda x: tasks.losses(x),
        "gradients": lambda x: tasks.gradients(x, "query"),
        "hvps": lambda x: tasks.hvps(x, np.ones_like(x)),
    }


ENTRY_POINTS = list(_entry_points(None))
N = fm.mlp.num_params(LAYERS)


@pytest.mark.parametrize("entry", ENTRY_POINTS)
@pytest.mark.parametrize(
    ("x", "pattern"),
    [
        (np.zeros(N - 1), rf"must have shape \({N},\)"),
        (np.zeros(N + 1), rf"must have shape \({N},\)"),
        (np.zeros(fm.mlp.num_params([3, 4, 3])), rf"must have shape \({N},\)"),
        (np.full(N, np.nan), "must contain only finite values"),
        (np.r_[np.zeros(N - 1), np.inf], "must contain only finite values"),
    ],
    ids=["short", "long", "other-net", "nan", "inf"],
)
def test_bad_parameter_vectors_raise_value_error(data, entry, x, pattern):
    fn = _entry_points(_make(data))[entry]
    name = "phi" if entry in ("losses", "gradients", "hvps") else "x"
    with pytest.raises(ValueError, match=f"`{name}` {pattern}"):
        fn(x)


def test_bad_hvp_direction_and_which_raise(data):
    tasks = _make(data)
    x = np.zeros(N)
    with pytest.raises(ValueError, match=rf"`v` must have shape \({N},\) or \(3, {N}\)"):
        tasks.hvps(x, np.zeros(N - 1))
    with pytest.raises(ValueError, match="`v` must contain only finite values"):
        tasks.hvps(x, np.full(N, np.nan))
    with pytest.raises(ValueError, match=rf"`phi` must have shape \({N},\) or \(3, {N}\)"):
        tasks.gradients(np.zeros((2, N)))
    with pytest.raises(ValueError, match="`which` must be one of 'support', 'query'"):
        tasks.losses(x, which="train")


def test_overflowing_parameters_raise_floating_point_error(data):
    tasks = _make(data)
    with pytest.raises(FloatingPointError, match="the support loss is not finite"):
        tasks.losses(np.full(N, 1e200))
    with pytest.raises(FloatingPointError, match="the query (loss|gradient) is not finite"):
        tasks.gradients(np.full(N, 1e200), "query")


def test_mlp_helpers_validate_their_inputs():
    params = np.zeros(N)
    with pytest.raises(ValueError, match=r"`X` must have last dimension d_in = 3"):
        fm.mlp.predict(params, np.zeros((5, 2)), LAYERS)
    with pytest.raises(ValueError, match=f"`params` must have {N} entries"):
        fm.mlp.predict(params[:-1], np.zeros((5, 3)), LAYERS)
    with pytest.raises(ValueError, match=f"`params` must have {N} entries"):
        fm.mlp.unflatten(np.zeros(N + 1), LAYERS)
    with pytest.raises(ValueError, match="`X` must contain only finite values"):
        fm.mlp.predict(params, np.full((5, 3), np.nan), LAYERS)
    with pytest.raises(ValueError, match="`seed` must be >= 0"):
        fm.mlp.init_params(LAYERS, seed=-1)
    with pytest.raises(TypeError, match="`seed` must be an integer"):
        fm.mlp.init_params(LAYERS, seed=1.5)


# ----------------------------------------------------------------------------------------
# Divergence of the inner loop
# ----------------------------------------------------------------------------------------


@pytest.fixture
def one_bad_task():
    """Four relu/mse tasks; task 2's data are 100 times larger, so that an inner lr of 0.5,
    harmless for the others, makes its inner loop diverge within a few steps."""
    rng = np.random.default_rng(7)
    X, Y = rng.standard_normal((4, 6, 3)), rng.standard_normal((4, 6, 2))
    X[2] *= 100.0
    Y[2] *= 100.0
    tasks = fm.MLPTasks(X, Y, layers=[3, 8, 2], activation="relu", loss="mse")
    return tasks, fm.mlp.init_params([3, 8, 2], seed=0)


DIVERGING = {
    "MAML": lambda inner: fm.MAML(inner),
    "FOMAML": lambda inner: fm.FOMAML(inner),
    "Reptile": lambda inner: fm.Reptile(inner),
    "IMAML": lambda inner: fm.IMAML(inner.replace(lam=1.0)),
    "HFMAML": lambda inner: fm.HFMAML(inner),
    "FOBMAML": lambda inner: fm.FOBMAML(inner.replace(lam=1.0)),
    "FOBMAML-symmetric-linear": lambda inner: fm.FOBMAML(
        inner.replace(lam=1.0), scheme="symmetric", perturbation="linear"
    ),
}
STEP = re.compile(r"task 2, step (\d+)")


@pytest.mark.parametrize("name", list(DIVERGING))
def test_divergence_raises_floating_point_error_naming_task_and_step(one_bad_task, name):
    tasks, x = one_bad_task
    inner = fm.InnerLoop(steps=60, lr=0.5)
    est = DIVERGING[name](inner)
    with pytest.raises(FloatingPointError, match=f"^{est.name}: diverged at task 2, step") as info:
        est.meta_gradient(x, tasks)
    step = int(STEP.search(str(info.value)).group(1))
    assert 1 <= step <= 60
    assert "reduce the inner `lr`" in str(info.value)
    # errors="return": only task 2 failed; its row is NaN, the others are finite and the
    # batch mean is over the good tasks.
    out = est.estimate(x, tasks, losses=True, errors="return")
    assert out.status.ok.tolist() == [True, True, False, True]
    assert np.isnan(out.task_gradients[2]).all() and np.isnan(out.losses[2])
    good = out.task_gradients[[0, 1, 3]]
    assert np.isfinite(good).all()
    np.testing.assert_allclose(out.gradient, good.mean(axis=0), rtol=1e-14)


@pytest.mark.parametrize("entry", ["meta_loss", "adapt", "evaluate"])
def test_divergence_in_meta_loss_adapt_evaluate(one_bad_task, entry):
    tasks, x = one_bad_task
    inner = fm.InnerLoop(steps=60, lr=0.5)
    fn = {"meta_loss": fm.meta_loss_k, "adapt": fm.adapt, "evaluate": fm.evaluate}[entry]
    with pytest.raises(FloatingPointError, match=r"diverged at task 2, step \d+ of the inner loop"):
        fn(x, tasks, inner)


def test_a_stable_lr_does_not_diverge(one_bad_task):
    tasks, x = one_bad_task
    G = fm.MAML(fm.InnerLoop(steps=60, lr=1e-4)).task_gradients(x, tasks)
    assert np.isfinite(G).all()


# ----------------------------------------------------------------------------------------
# Exact on a non-convex inner problem
# ----------------------------------------------------------------------------------------
#
# What happens (observed, and what the docstring of fm.Exact documents): with λ too small
# for ∇²g + λI to be positive definite, the iterative solve of the inner problem
#   - crawls along the non-convex landscape and hits max_iter -> fm.ConvergenceError;
#   - or, with a step size too large for the (now badly conditioned) problem, blows up
#     -> FloatingPointError naming the task and the step;
#   - with relu, also when λ is moderate: h is only piecewise smooth and its minimizer
#     typically lies on a kink, where GD oscillates -> fm.ConvergenceError;
#   - if it does converge to a minimizer, ∇²g + λI is positive semi-definite there and
#     the result is the implicit gradient at that local minimizer; CG meeting
#     non-positive curvature raises fm.NotPositiveDefiniteError.
# In every case the call must not return non-finite or unflagged results.


def _nonconvex_case(activation, loss, seed=0):
    rng = np.random.default_rng(seed)
    layers = [2, 16, 2]
    X = rng.standard_normal((3, 8, 2))
    Y = rng.standard_normal((3, 8, 2)) if loss == "mse" else rng.integers(0, 2, (3, 8))
    Xq = rng.standard_normal((3, 8, 2))
    Yq = rng.standard_normal((3, 8, 2)) if loss == "mse" else rng.integers(0, 2, (3, 8))
    tasks = fm.MLPTasks(X, Y, Xq, Yq, layers=layers, activation=activation, loss=loss)
    return tasks, fm.mlp.init_params(layers, seed=seed)


@pytest.mark.parametrize(
    ("activation", "loss", "lam", "lr", "expected"),
    [
        ("tanh", "mse", 1e-3, 0.1, fm.ConvergenceError),
        ("tanh", "xent", 1e-3, 0.1, fm.ConvergenceError),
        ("relu", "mse", 1e-3, 0.1, fm.ConvergenceError),
        ("relu", "mse", 1.0, 0.1, fm.ConvergenceError),  # minimizer on a relu kink
        ("relu", "xent", 1e-3, 0.1, fm.ConvergenceError),
        ("relu", "mse", 1e-3, 20.0, FloatingPointError),
    ],
)
def test_exact_with_a_non_convex_inner_problem_raises(activation, loss, lam, lr, expected):
    tasks, x = _nonconvex_case(activation, loss)
    est = fm.Exact(fm.InnerLoop(lr=lr, lam=lam), max_iter=3000)
    with pytest.raises(DOCUMENTED) as info:
        est.meta_gradient(x, tasks)
    assert isinstance(info.value, expected), info.value
    assert re.search(r"^Exact: .* at task \d+, step \d+ of the ", str(info.value))
    out = est.estimate(x, tasks, losses=True, errors="return")
    assert not out.status.ok.all()
    # Failed tasks are NaN, never a stale or partial result; the rest is finite.
    bad = ~out.status.ok
    assert np.isnan(out.task_gradients[bad]).all() and np.isnan(out.losses[bad]).all()
    assert np.isfinite(out.task_gradients[~bad]).all()


def test_exact_at_a_saddle_point_does_not_return_silently():
    # x = 0 for a tanh net is a symmetric point: every W-gradient vanishes there
    # (W_2 = 0 kills the backward signal, tanh(0) = 0 kills the forward one), so GD on the
    # inner problem only moves the output bias and converges -- to a saddle of h, not a
    # minimizer. With λ = 0.05, ∇²g + λI has eigenvalues ≈ −5.1 at that point (the W_1–W_2
    # cross terms), so by the contract of docs/estimators.md (Exact needs ∇²g(φ*) + λI positive
    # definite) and the docstring of fm.Exact ("the call fails instead of returning
    # garbage"), a documented error must be raised. The right-hand side λ∇f(φ) lives in the
    # output-bias direction, an eigenvector of the Hessian with positive curvature, so CG
    # never meets the negative curvature.
    rng = np.random.default_rng(0)
    layers = [2, 4, 1]
    X = rng.standard_normal((1, 8, 2))
    Y = 2.0 * X[:, :, :1] + 0.5 * X[:, :, 1:]
    tasks = fm.MLPTasks(X, Y, layers=layers, activation="tanh", loss="mse")
    lam = 0.05
    x = np.zeros(fm.mlp.num_params(layers))
    # The point the inner solve reaches is stationary for h but ∇²g + λI is indefinite:
    phi = fm.adapt(x, tasks, fm.InnerLoop(steps=3000, lr=0.1, lam=lam))
    grad_h = tasks.gradients(phi) + lam * (phi - x)
    assert np.linalg.norm(grad_h) < 1e-12
    n = x.size
    H = np.stack([tasks.hvps(phi, e)[0] for e in np.eye(n)], axis=1) + lam * np.eye(n)
    assert np.linalg.eigvalsh(0.5 * (H + H.T))[0] < -1.0
    # So Exact must not return a value: the Lanczos curvature probe finds the negative
    # eigenvalue that CG misses; without the probe, the call returns silently.
    with pytest.raises(fm.NotPositiveDefiniteError, match="curvature probe"):
        fm.Exact(fm.InnerLoop(lr=0.1, lam=lam)).meta_gradient(x, tasks)
    unchecked = fm.Exact(fm.InnerLoop(lr=0.1, lam=lam), pd_check_steps=0).meta_gradient(x, tasks)
    assert np.isfinite(unchecked).all()
