"""meta_train against a dense NumPy solution of the quadratic meta-objective."""

from __future__ import annotations

import numpy as np
import pytest

import fobmaml as fm
from fobmaml.optim import GD, SNGDM, Momentum
from fobmaml.train import TrainResult, meta_train

M, N, LAM = 4, 5, 1.0
TASKS = fm.datasets.quadratic_tasks(M, N, kappa=10.0, seed=3)
INNER = fm.InnerLoop(steps=20, lr=0.5, lam=LAM)
EXACT = fm.Exact(INNER)
KEYS = {"iteration", "meta_loss", "estimate_norm", "time"}


# -- an independent dense reference ---------------------------------------------------------
def dense_objective(tasks, lam):
    r"""F(x) = 1/2 x^T H x - q^T x + const, from phi*_i(x) = P_i x + v_i.

    phi*_i(x) = (A_i + lam I)^{-1} (b_i + lam x), f_i(phi) = 1/2 phi^T B_i phi - c_i^T phi.
    Returns (F, grad F, H) as functions / matrix.
    """
    eye = np.eye(tasks.dim)
    P = [lam * np.linalg.inv(A + lam * eye) for A in tasks.A]
    v = [np.linalg.solve(A + lam * eye, b) for A, b in zip(tasks.A, tasks.b)]

    def F(x):
        vals = []
        for Pi, vi, B, c in zip(P, v, tasks.B, tasks.c):
            phi = Pi @ x + vi
            vals.append(0.5 * phi @ B @ phi - c @ phi)
        return float(np.mean(vals))

    def grad(x):
        return np.mean(
            [Pi.T @ (B @ (Pi @ x + vi) - c) for Pi, vi, B, c in zip(P, v, tasks.B, tasks.c)],
            axis=0,
        )

    H = np.mean([Pi.T @ B @ Pi for Pi, B in zip(P, tasks.B)], axis=0)
    return F, grad, H


F_REF, GRAD_REF, H_REF = dense_objective(TASKS, LAM)
X_STAR = np.linalg.solve(H_REF, -GRAD_REF(np.zeros(N)))  # grad F is affine: H x + grad F(0)
L_F = float(np.linalg.eigvalsh(H_REF).max())


def test_the_dense_reference_agrees_with_the_exact_estimator():
    # Guards the reference itself: the affine gradient vanishes at X_STAR.
    np.testing.assert_allclose(GRAD_REF(X_STAR), 0, atol=1e-12)
    x = np.linspace(-1, 1, N)
    loss, g = EXACT.value_and_gradient(x, TASKS)
    np.testing.assert_allclose(g, GRAD_REF(x), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(loss, F_REF(x), rtol=1e-10)


# -- convergence and the records --------------------------------------------------------------
def test_gd_on_the_exact_meta_gradient_reaches_the_dense_minimizer():
    res = meta_train(np.zeros(N), TASKS, EXACT, GD(1.0 / L_F), 300, progress=False)
    assert isinstance(res, TrainResult)
    np.testing.assert_allclose(res.x, X_STAR, rtol=0, atol=1e-8)
    assert not res.stopped_early
    assert res.history["meta_loss"][-1] == pytest.approx(F_REF(X_STAR), rel=1e-12)


def test_iterates_and_records_match_hand_gd_with_dense_gradients():
    lr, T = 1.0 / L_F, 6
    x0 = np.linspace(1.0, -1.0, N)
    res = meta_train(x0, TASKS, EXACT, GD(lr), T, progress=False)
    xs = [x0]
    for _ in range(T):
        xs.append(xs[-1] - lr * GRAD_REF(xs[-1]))
    np.testing.assert_allclose(res.x, xs[-1], rtol=1e-9, atol=1e-12)
    h = res.history
    np.testing.assert_allclose(h["meta_loss"], [F_REF(x) for x in xs], rtol=1e-9)
    np.testing.assert_allclose(
        h["estimate_norm"], [np.linalg.norm(GRAD_REF(x)) for x in xs], rtol=1e-8
    )


def test_history_keys_lengths_and_time():
    T = 7
    res = meta_train(np.zeros(N), TASKS, fm.FOBMAML(INNER), SNGDM(0.1), T, progress=False)
    h = res.history
    assert set(h) == KEYS
    for key in KEYS:
        assert h[key].shape == (T + 1,)
    np.testing.assert_array_equal(h["iteration"], np.arange(T + 1))
    assert h["iteration"].dtype == np.int64 and h["meta_loss"].dtype == np.float64
    assert h["time"][0] > 0 and np.all(np.diff(h["time"]) >= 0)
    assert np.all(np.isfinite(h["meta_loss"])) and np.all(h["estimate_norm"] > 0)
    # The recorded loss of a K-step estimator is F_K, the mean query loss after K steps.
    assert h["meta_loss"][-1] == pytest.approx(fm.meta_loss_k(res.x, TASKS, INNER), rel=1e-12)


def test_the_state_goes_with_x_and_resumes_the_run():
    full = meta_train(np.zeros(N), TASKS, EXACT, Momentum(0.5, 0.5), 8, progress=False)
    first = meta_train(np.zeros(N), TASKS, EXACT, Momentum(0.5, 0.5), 5, progress=False)
    # Resume by hand from (x_5, state_5) for 3 more steps.
    x, state = first.x, first.state
    for _ in range(3):
        _, g = EXACT.value_and_gradient(x, TASKS)
        x, state = Momentum(0.5, 0.5).step(x, g, state)
    np.testing.assert_allclose(x, full.x, rtol=0, atol=1e-14)


def test_reference_records_exact_loss_and_gradient_norm():
    T = 4
    est = fm.FOBMAML(INNER, delta=1e-4, scheme="symmetric")
    res = meta_train(np.zeros(N), TASKS, est, SNGDM(0.2), T, reference=EXACT, progress=False)
    h = res.history
    assert set(h) == KEYS | {"exact_loss", "exact_grad_norm"}
    assert h["exact_loss"].shape == (T + 1,)
    np.testing.assert_allclose(h["exact_loss"][-1], F_REF(res.x), rtol=1e-10)
    np.testing.assert_allclose(h["exact_grad_norm"][-1], np.linalg.norm(GRAD_REF(res.x)), rtol=1e-8)
    # F_K with K = 20 is close to, but not the same as, F.
    assert not np.array_equal(h["exact_loss"], h["meta_loss"])
    np.testing.assert_allclose(h["exact_loss"], h["meta_loss"], rtol=1e-2)


class Clock:
    """A stand-in for the ``time`` module in fobmaml.train: time moves only when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def perf_counter(self) -> float:
        return self.now


class SlowExact(fm.Exact):
    """An Exact estimator whose every call takes `delay` seconds of the clock."""

    def __init__(self, inner, delay, clock):
        super().__init__(inner)
        self.delay, self.clock = delay, clock

    def value_and_gradient(self, x, tasks):
        self.clock.now += self.delay
        return super().value_and_gradient(x, tasks)


def test_time_counts_the_estimator_but_not_the_reference(monkeypatch):
    # A controlled clock instead of the wall clock: the machine's load cannot change it.
    clock = Clock()
    monkeypatch.setattr(fm.train, "time", clock)
    T, delay = 2, 0.03
    slow = SlowExact(INNER, delay, clock)
    slow_est = meta_train(np.zeros(N), TASKS, slow, GD(0.5), T, progress=False)
    assert slow_est.history["time"][-1] >= (T + 1) * delay
    np.testing.assert_array_less(np.arange(1, T + 2) * delay, slow_est.history["time"] + 1e-12)
    slow_ref = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), T, reference=slow, progress=False)
    assert slow_ref.history["time"][-1] < delay
    assert clock.now == pytest.approx(2 * (T + 1) * delay)  # the reference did run


def test_reference_on_eval_tasks():
    other = fm.datasets.quadratic_tasks(3, N, kappa=10.0, seed=9)
    F_other = dense_objective(other, LAM)[0]
    res = meta_train(
        np.zeros(N), TASKS, EXACT, GD(0.5), 3, reference=EXACT, eval_tasks=other, progress=False
    )
    np.testing.assert_allclose(res.history["exact_loss"][-1], F_other(res.x), rtol=1e-10)
    np.testing.assert_allclose(res.history["meta_loss"][-1], F_REF(res.x), rtol=1e-10)


def test_zero_iterations_records_x0_and_leaves_it_alone():
    x0 = np.array([0.3, -0.2, 0.1, 0.0, 1.0])
    res = meta_train(x0, TASKS, EXACT, GD(0.5), 0, progress=False)
    np.testing.assert_array_equal(res.x, x0)
    assert res.x is not x0
    assert len(res.history["meta_loss"]) == 1
    assert res.history["meta_loss"][0] == pytest.approx(F_REF(x0), rel=1e-10)


def test_x0_is_never_modified():
    x0 = np.ones(N)
    res = meta_train(x0, TASKS, EXACT, GD(0.5), 5, progress=False)
    np.testing.assert_array_equal(x0, np.ones(N))
    assert not np.array_equal(res.x, x0)
    res.x[0] = 42.0  # the result is the caller's to modify
    np.testing.assert_array_equal(x0, np.ones(N))


# -- callback ---------------------------------------------------------------------------------
def test_callback_stops_early_and_sees_every_record():
    seen = []

    def callback(t, x, record):
        seen.append((t, x.copy(), record))
        assert not x.flags.writeable
        return t == 3

    res = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 10, callback=callback, progress=False)
    assert res.stopped_early
    assert [t for t, _, _ in seen] == [0, 1, 2, 3]
    assert len(res.history["meta_loss"]) == 4
    short = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 3, progress=False)
    np.testing.assert_array_equal(res.x, short.x)
    np.testing.assert_array_equal(seen[-1][1], short.x)
    for key in ("meta_loss", "estimate_norm", "iteration"):
        np.testing.assert_array_equal(res.history[key], short.history[key])
    assert seen[2][2]["meta_loss"] == res.history["meta_loss"][2]


def test_callback_returning_none_or_false_does_not_stop():
    calls = []
    res = meta_train(
        np.zeros(N), TASKS, EXACT, GD(0.5), 4, callback=lambda *a: calls.append(a), progress=False
    )
    assert len(calls) == 5 and not res.stopped_early
    res = meta_train(
        np.zeros(N), TASKS, EXACT, GD(0.5), 4, callback=lambda *a: False, progress=False
    )
    assert len(res.history["meta_loss"]) == 5 and not res.stopped_early


def test_callback_true_on_the_final_record_is_not_an_early_stop():
    res = meta_train(
        np.zeros(N), TASKS, EXACT, GD(0.5), 2, callback=lambda t, x, r: t == 2, progress=False
    )
    assert not res.stopped_early and len(res.history["meta_loss"]) == 3


# -- sampler mode -----------------------------------------------------------------------------
def fresh_tasks(rng):
    return fm.datasets.quadratic_tasks(2, N, kappa=10.0, seed=int(rng.integers(2**31)))


def sub_batches(rng):
    return TASKS[rng.choice(M, size=2, replace=False)]


@pytest.mark.parametrize("sampler", [fresh_tasks, sub_batches])
def test_sampler_mode_is_reproducible_by_seed(sampler):
    est = fm.FOBMAML(INNER)

    def run(seed):
        return meta_train(np.zeros(N), sampler, est, SNGDM(0.1), 6, seed=seed, progress=False)

    a, b, c = run(1), run(1), run(2)
    np.testing.assert_array_equal(a.x, b.x)
    np.testing.assert_array_equal(a.history["meta_loss"], b.history["meta_loss"])
    assert not np.array_equal(a.history["meta_loss"], c.history["meta_loss"])
    assert not np.array_equal(a.x, c.x)


def test_sampler_gets_one_generator_called_once_per_record():
    generators = []

    def sampler(rng):
        generators.append(rng)
        return TASKS

    res = meta_train(np.zeros(N), sampler, EXACT, GD(0.5), 4, seed=5, progress=False)
    assert len(generators) == 5
    assert all(g is generators[0] for g in generators)
    assert isinstance(generators[0], np.random.Generator)
    # Sampling the same fixed batch every time is the fixed-batch run.
    fixed = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 4, progress=False)
    np.testing.assert_array_equal(res.x, fixed.x)


# -- progress bar -----------------------------------------------------------------------------
def test_progress_false_prints_nothing(capsys):
    meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 3, progress=False, desc="quiet")
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_progress_bar_shows_desc_and_loss(capsys):
    meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 3, desc="meta-GD")
    out, err = capsys.readouterr()
    assert "meta-GD" in err and "loss=" in err and "3/3" in err


# -- errors -----------------------------------------------------------------------------------
def test_estimator_errors_propagate():
    # A + lam I is indefinite for the first task, so the exact meta-gradient is undefined.
    A = np.stack([-2.0 * np.eye(N), np.eye(N)])
    bad = fm.QuadraticTasks(A, np.ones((2, N)))
    with pytest.raises(fm.NotPositiveDefiniteError):
        meta_train(np.zeros(N), bad, EXACT, GD(0.5), 3, progress=False)
    with pytest.raises(fm.NotPositiveDefiniteError):
        est = fm.FOBMAML(INNER)
        meta_train(np.zeros(N), TASKS, est, GD(0.5), 3, reference=EXACT, eval_tasks=bad)


class NoUpdate:
    def init(self, params):
        return ()


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"x0": np.zeros((N, 1))}, ValueError, "`x0` must be a 1-D array"),
        ({"x0": np.zeros(N + 1)}, ValueError, r"`tasks` has tasks of dimension 5, but `x0` has 6"),
        ({"x0": np.array([0, 0, np.nan, 0, 0])}, ValueError, "`x0` must contain only finite"),
        ({"x0": np.zeros(0)}, ValueError, "`x0` must have at least one entry"),
        ({"x0": ["a"] * N}, TypeError, "`x0` must be a real-valued"),
        ({"tasks": "tasks"}, TypeError, "`tasks` must be a fobmaml task batch .* or a sampler"),
        ({"tasks": lambda rng: "x"}, TypeError, "the batch returned by the `tasks` sampler must"),
        (
            {"tasks": lambda rng: fm.datasets.quadratic_tasks(2, N + 1, seed=0)},
            ValueError,
            "the batch returned by the `tasks` sampler has tasks of dimension 6",
        ),
        ({"estimator": "FOBMAML"}, TypeError, "`estimator` must be a fobmaml estimator"),
        ({"optimizer": NoUpdate()}, TypeError, "`optimizer` must be an outer optimizer"),
        ({"optimizer": GD}, TypeError, r"`optimizer` must be an optimizer instance .*GD\(lr="),
        ({"iterations": -1}, ValueError, r"`iterations` must be >= 0 \(got -1\)"),
        ({"iterations": 2.0}, TypeError, "`iterations` must be an integer"),
        ({"iterations": True}, TypeError, "`iterations` must be an integer"),
        ({"seed": -3}, ValueError, "`seed` must be >= 0"),
        ({"reference": fm.FOBMAML(INNER)}, TypeError, "`reference` must be a fobmaml.Exact"),
        ({"eval_tasks": TASKS}, ValueError, "`eval_tasks` is only used with `reference`"),
        (
            {"reference": EXACT, "eval_tasks": fm.datasets.quadratic_tasks(2, N + 1, seed=0)},
            ValueError,
            "`eval_tasks` has tasks of dimension 6",
        ),
        ({"reference": EXACT, "eval_tasks": [TASKS]}, TypeError, "`eval_tasks` must be a fobmaml"),
        ({"callback": 3}, TypeError, "`callback` must be callable or None"),
        ({"progress": "yes"}, TypeError, "`progress` must be a bool"),
        ({"desc": 3}, TypeError, "`desc` must be a str or None"),
    ],
)
def test_bad_inputs_raise(kwargs, exc, match):
    positional = {"x0": np.zeros(N), "tasks": TASKS, "estimator": EXACT, "optimizer": GD(0.5)}
    positional["iterations"] = 2
    keywords = {"progress": False}
    for key, value in kwargs.items():
        (positional if key in positional else keywords)[key] = value
    with pytest.raises(exc, match=match):
        meta_train(*positional.values(), **keywords)


# -- the result's new fields ------------------------------------------------------------------
def test_a_plain_run_has_no_skips_no_interrupt_and_no_resume():
    res = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 3, progress=False)
    assert res.skipped_iterations == 0 and not res.interrupted and res.resumed_from is None
    assert res[:4] == (res.x, res.history, res.state, res.stopped_early)


# -- divergence policies ----------------------------------------------------------------------
# A task whose support Hessian has eigenvalue 10: GD with step 0.5 on it (with lam = 1)
# multiplies the error by 4.5 per step, so its inner loop diverges at any x.
A_BAD = np.concatenate([TASKS.A, 10.0 * np.eye(N)[None]])
B_BAD = np.concatenate([TASKS.b, np.ones((1, N))])
PARTLY_BAD = fm.QuadraticTasks(A_BAD, B_BAD)  # tasks 0-3 are TASKS, task 4 diverges
ALL_BAD = fm.QuadraticTasks(10.0 * np.stack([np.eye(N)] * 2), np.ones((2, N)))
FOB = fm.FOBMAML(INNER, delta=1e-4, scheme="symmetric")


def batches(*sequence):
    """A sampler that returns the given batches in turn (ignoring the generator)."""
    draws = iter(sequence)
    return lambda rng: next(draws)


def assert_same_floats(a, b):
    assert a.shape == b.shape and a.tobytes() == b.tobytes()


def test_the_diverging_test_task_diverges():
    est = FOB.estimate(np.zeros(N), PARTLY_BAD, losses=True, errors="return")
    assert est.status.ok.tolist() == [True, True, True, True, False]
    with pytest.raises(FloatingPointError, match="diverged at task 4"):
        FOB.meta_gradient(np.zeros(N), PARTLY_BAD)


def test_raise_is_the_default_and_keeps_the_run_up_to_the_failure():
    T = 3
    ref = meta_train(np.zeros(N), TASKS, FOB, Momentum(0.3, 0.5), T, progress=False)
    sampler = batches(*[TASKS] * T, PARTLY_BAD)
    with pytest.raises(FloatingPointError, match="diverged at task 4") as info:
        meta_train(np.zeros(N), sampler, FOB, Momentum(0.3, 0.5), 6, progress=False)
    partial = info.value.result
    assert isinstance(partial, TrainResult) and not partial.interrupted
    # x_3 is the last good iterate; records 0..2 are complete, the one at x_3 failed.
    assert_same_floats(partial.x, ref.x)
    for a, b in zip(partial.state[0], ref.state[0]):
        assert_same_floats(a, b)
    assert set(partial.history) == KEYS
    for key in ("iteration", "meta_loss", "estimate_norm"):
        assert_same_floats(partial.history[key], ref.history[key][:T])


def test_skip_averages_over_the_good_tasks():
    T = 5
    good = fm.QuadraticTasks(A_BAD[:M], B_BAD[:M])  # the same tasks, built the same way
    ref = meta_train(np.zeros(N), good, FOB, Momentum(0.3, 0.5), T, progress=False)
    res = meta_train(
        np.zeros(N), PARTLY_BAD, FOB, Momentum(0.3, 0.5), T, on_divergence="skip", progress=False
    )
    assert set(res.history) == KEYS | {"skipped_tasks"}
    assert res.history["skipped_tasks"].dtype == np.int64
    np.testing.assert_array_equal(res.history["skipped_tasks"], np.ones(T + 1))
    assert res.skipped_iterations == 0
    assert_same_floats(res.x, ref.x)
    for key in ("iteration", "meta_loss", "estimate_norm"):
        assert_same_floats(res.history[key], ref.history[key])


def test_skip_makes_no_step_when_every_task_diverges():
    sequence = [TASKS, ALL_BAD, TASKS, ALL_BAD, ALL_BAD, TASKS]  # 5 steps, 3 of them skipped
    seen = []
    res = meta_train(
        np.zeros(N),
        batches(*sequence),
        FOB,
        Momentum(0.3, 0.5),
        5,
        on_divergence="skip",
        progress=False,
        callback=lambda t, x, r: seen.append(x.copy()),
    )
    assert res.skipped_iterations == 3
    h = res.history
    np.testing.assert_array_equal(h["skipped_tasks"], [0, 2, 0, 2, 2, 0])
    assert (
        np.isnan(h["meta_loss"][[1, 3, 4]]).all() and np.isnan(h["estimate_norm"][[1, 3, 4]]).all()
    )
    # x and the optimizer state stand still over the skipped iterations...
    assert_same_floats(seen[2], seen[1])
    assert_same_floats(seen[4], seen[3]) and assert_same_floats(seen[5], seen[4])
    # ...so the run is the good-batch run with the skipped steps left out.
    ref = meta_train(np.zeros(N), TASKS, FOB, Momentum(0.3, 0.5), 2, progress=False)
    assert_same_floats(res.x, ref.x)
    assert_same_floats(res.state[0].trace, ref.state[0].trace)
    assert_same_floats(h["meta_loss"][[0, 2, 5]], ref.history["meta_loss"])


def test_skip_still_raises_failures_that_are_not_divergence():
    A = np.stack([-2.0 * np.eye(N), np.eye(N)])  # Exact: A_0 + lam I is indefinite
    bad = fm.QuadraticTasks(A, np.ones((2, N)))
    with pytest.raises(fm.NotPositiveDefiniteError, match="task 0") as info:
        meta_train(np.zeros(N), bad, EXACT, GD(0.5), 3, on_divergence="skip", progress=False)
    assert len(info.value.result.history["iteration"]) == 0


class BlowUp:
    """Wraps an optimizer; at step `at`, makes the update, x, or the state non-finite."""

    def __init__(self, base, at, what="update"):
        self.base, self.at, self.what, self.calls = base, at, what, 0

    def init(self, params):
        return (self.base.init(params), np.zeros(1))

    def update(self, grads, state, params=None):
        updates, inner = self.base.update(grads, state[0], params)
        self.calls += 1
        if self.calls - 1 == self.at:
            if self.what == "update":
                updates = updates * 1e308 * 1e308  # overflows (without a warning escaping)
            elif self.what == "x":
                updates = updates + 1e308  # finite, but x + updates overflows
            else:
                return updates, (inner, np.full(1, np.inf))
        return updates, (inner, state[1])


class ZeroGradient(fm.Exact):
    """An estimator that returns loss 0 and a zero gradient at any x, however large."""

    def value_and_gradient(self, x, tasks):
        return 0.0, np.zeros(N)


@pytest.mark.parametrize("what", ["update", "x", "optimizer state"])
def test_a_diverging_outer_step_raises_naming_the_iteration(what):
    est, x0 = (ZeroGradient(INNER), np.full(N, 1e308)) if what == "x" else (FOB, np.zeros(N))
    ref = meta_train(x0, TASKS, est, Momentum(0.3, 0.5), 2, progress=False)
    opt = BlowUp(Momentum(0.3, 0.5), at=2, what=what)
    with pytest.raises(
        FloatingPointError, match=rf"outer step at iteration 2 \(x_2 -> x_3\) .*non-finite {what}"
    ) as info:
        meta_train(x0, TASKS, est, opt, 5, progress=False)
    partial = info.value.result
    assert_same_floats(partial.x, ref.x)
    assert_same_floats(partial.state[0][0].trace, ref.state[0].trace)
    assert len(partial.history["iteration"]) == 3  # the evaluation at x_2 completed
    assert_same_floats(partial.history["meta_loss"], ref.history["meta_loss"])


def test_real_overflow_of_the_outer_step_is_a_divergence_not_a_warning():
    x0 = np.full(N, 1e3)  # the gradient is large, so lr * G overflows
    with pytest.raises(FloatingPointError, match="iteration 0 .*non-finite update") as info:
        meta_train(x0, TASKS, EXACT, GD(1e308), 4, progress=False)
    np.testing.assert_array_equal(info.value.result.x, x0)
    res = meta_train(x0, TASKS, EXACT, GD(1e308), 4, on_divergence="skip", progress=False)
    assert res.skipped_iterations == 4
    np.testing.assert_array_equal(res.x, x0)
    np.testing.assert_array_equal(res.history["skipped_tasks"], np.zeros(5))


def test_skip_keeps_x_and_the_state_over_a_diverging_outer_step():
    opt = BlowUp(Momentum(0.3, 0.5), at=2, what="optimizer state")
    res = meta_train(np.zeros(N), TASKS, FOB, opt, 6, on_divergence="skip", progress=False)
    assert res.skipped_iterations == 1
    # Step 2 was dropped; the wrapper's call count moved on, so the run is 5 good steps.
    ref = meta_train(np.zeros(N), TASKS, FOB, Momentum(0.3, 0.5), 5, progress=False)
    assert_same_floats(res.x, ref.x)
    assert_same_floats(res.state[0][0].trace, ref.state[0].trace)
    assert_same_floats(res.history["meta_loss"][3], res.history["meta_loss"][2])


def test_exceptions_from_the_callback_carry_the_partial_result():
    def callback(t, x, record):
        if t == 2:
            raise RuntimeError("user code failed")

    with pytest.raises(RuntimeError, match="user code failed") as info:
        meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 5, callback=callback, progress=False)
    partial = info.value.result
    short = meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 2, progress=False)
    np.testing.assert_array_equal(partial.x, short.x)
    np.testing.assert_array_equal(partial.history["meta_loss"], short.history["meta_loss"])


@pytest.mark.parametrize(
    "kwargs, exc, match",
    [
        ({"on_divergence": "ignore"}, ValueError, "`on_divergence` must be one of 'raise', 'skip'"),
        ({"on_interrupt": None}, ValueError, "`on_interrupt` must be one of 'raise', 'return'"),
        ({"checkpoint": 3}, TypeError, "`checkpoint` must be a path"),
        ({"checkpoint": b"run.ckpt"}, TypeError, "`checkpoint` must be a path"),
        ({"checkpoint_every": 5}, ValueError, "`checkpoint_every` needs `checkpoint`"),
        ({"checkpoint": "c", "checkpoint_every": 0}, ValueError, "`checkpoint_every` must be >= 1"),
        ({"checkpoint": "c", "checkpoint_every": 1.0}, TypeError, "`checkpoint_every` must be an"),
        ({"resume": True}, ValueError, r"`resume=True` needs `checkpoint`"),
        ({"checkpoint": "c", "resume": "yes"}, TypeError, "`resume` must be a bool"),
    ],
)
def test_bad_reliability_options_raise(kwargs, exc, match, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(exc, match=match):
        meta_train(np.zeros(N), TASKS, EXACT, GD(0.5), 2, progress=False, **kwargs)
    assert not list(tmp_path.iterdir())


def test_new_options_are_keyword_only():
    import inspect

    params = inspect.signature(meta_train).parameters
    for name in ("on_divergence", "on_interrupt", "checkpoint", "checkpoint_every", "resume"):
        assert params[name].kind is inspect.Parameter.KEYWORD_ONLY


def test_the_estimate_norm_of_a_huge_finite_estimate_is_finite():
    # FOMAML's estimate is B phi - c = -c = 1e200 (1, 1): its norm overflows in a plain dot.
    big = fm.QuadraticTasks(
        np.eye(2)[None], np.zeros((1, 2)), np.eye(2)[None], np.full((1, 2), -1e200)
    )
    est = fm.FOMAML(fm.InnerLoop(steps=1, lr=0.1))
    res = meta_train(np.zeros(2), big, est, fm.NormalizedGD(0.1), 1, progress=False)
    np.testing.assert_allclose(res.history["estimate_norm"], np.sqrt(2) * 1e200, rtol=1e-15)
    # In the usual range the norm is numpy's, bit for bit, as before.
    ordinary = meta_train(np.zeros(N), TASKS, FOB, GD(0.5), 0, progress=False)
    g = FOB.meta_gradient(np.zeros(N), TASKS)
    assert ordinary.history["estimate_norm"][0] == np.linalg.norm(g)
