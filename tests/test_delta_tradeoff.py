"""The δ study: its files, its numbers (recomputed with NumPy), its slope fits, its command."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest
import quick_runs
import reference as ref

import fobmaml as fm
from fobmaml import cli
from fobmaml.experiments import delta_tradeoff as dt

FILES = {
    "delta_error.csv",
    "delta_best.csv",
    "bias_slopes.csv",
    "delta_tradeoff.png",
    "settings.json",
}
ERROR_COLUMNS = ["part", "family", "scheme", "K", "sigma", "inner_error", "delta", "rel_error"]
BEST_COLUMNS = [
    "part",
    "family",
    "scheme",
    "K",
    "sigma",
    "inner_error",
    "best_delta",
    "best_error",
    "delta_lo",
    "delta_hi",
]
SLOPE_COLUMNS = ["part", "family", "scheme", "exponent", "delta_min", "delta_max", "points"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return quick_runs.quick_run("delta", tmp_path_factory)


def _read(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def _tasks(cfg):
    return fm.datasets.quadratic_tasks(cfg.m, cfg.n, cfg.kappa, L=cfg.L, seed=cfg.seed)


def test_quick_run_writes_exactly_the_documented_files_and_columns(quick_run):
    out, cfg, summary = quick_run
    assert {p.name for p in out.iterdir()} == FILES
    assert (out / "delta_tradeoff.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, rows = _read(out / "delta_error.csv")
    assert header == ERROR_COLUMNS
    parts = {(r["part"], r["family"]) for r in rows}
    assert parts == {
        ("K-step", "quadratic"),
        ("noisy-independent", "quadratic"),
        ("noisy-shared", "quadratic"),
        ("solved", "quadratic"),
        ("solved", "sinusoid-mlp"),
    }
    # Each curve covers the whole delta grid, once.
    curves = {}
    for r in rows:
        key = (r["part"], r["family"], r["scheme"], r["K"], r["sigma"])
        curves.setdefault(key, []).append(float(r["delta"]))
    assert len(curves) == 2 * (len(cfg.steps) + 2 * len(cfg.sigmas) + 2)
    assert all(sorted(d) == sorted(cfg.deltas) for d in curves.values())
    assert _read(out / "delta_best.csv")[0] == BEST_COLUMNS
    assert _read(out / "bias_slopes.csv")[0] == SLOPE_COLUMNS
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["quick"] is True
    assert settings["outputs"] == sorted(FILES, key=summary["outputs"].index)


def test_k_step_rows_match_the_numpy_reference(quick_run):
    out, cfg, _ = quick_run
    _, rows = _read(out / "delta_error.csv")
    tasks = _tasks(cfg)
    tl = ref.task_list(tasks.A, tasks.b)
    x = np.zeros(cfg.n)
    exact = ref.per_task(ref.exact, tl, x, cfg.lam).mean(0)
    checked = 0
    for r in rows:
        if r["part"] != "K-step" or float(r["delta"]) not in (1e-3, 1e-1):
            continue
        inner = ref.Inner(int(r["K"]), 1.0 / (cfg.L + cfg.lam), cfg.lam)
        g = ref.per_task(ref.fobmaml, tl, x, inner, float(r["delta"]), r["scheme"], "objective")
        expected = np.linalg.norm(g.mean(0) - exact) / np.linalg.norm(exact)
        assert float(r["rel_error"]) == pytest.approx(expected, rel=1e-6, abs=1e-12)
        # The inner error: distance of phi_K to the dense inner solution, relative.
        phi = ref.per_task(ref.adapt, tl, x, inner)
        star = ref.per_task(ref.inner_solution, tl, x, cfg.lam)
        eps = np.linalg.norm(phi - star) / np.linalg.norm(star - x)
        assert float(r["inner_error"]) == pytest.approx(eps, rel=1e-8)
        checked += 1
    assert checked == 2 * 2 * len(cfg.steps)


def test_solved_quadratic_rows_are_the_bias_of_dense_difference_quotients(quick_run):
    out, cfg, _ = quick_run
    _, rows = _read(out / "delta_error.csv")
    tasks = _tasks(cfg)
    n, lam, x = cfg.n, cfg.lam, np.zeros(cfg.n)
    tl = ref.task_list(tasks.A, tasks.b)
    exact = ref.per_task(ref.exact, tl, x, lam).mean(0)

    def psi(A, b, s):  # argmin (1 + s) g + lam/2 ||. - x||^2, f = g here
        return np.linalg.solve((1 + s) * A + lam * np.eye(n), (1 + s) * b + lam * x)

    for r in rows:
        if (r["part"], r["family"]) != ("solved", "quadratic") or float(r["delta"]) < 1e-3:
            continue
        d = float(r["delta"])
        if r["scheme"] == "forward":
            g = [lam * (psi(A, b, 0) - psi(A, b, d)) / d for A, b in zip(tasks.A, tasks.b)]
        else:
            g = [lam * (psi(A, b, -d) - psi(A, b, d)) / (2 * d) for A, b in zip(tasks.A, tasks.b)]
        expected = np.linalg.norm(np.mean(g, 0) - exact) / np.linalg.norm(exact)
        # Rounding contributes about u cond(A + lam I) / delta, far below the bias here.
        assert float(r["rel_error"]) == pytest.approx(expected, rel=1e-4), (r["scheme"], d)


def test_numpy_inner_loop_without_noise_is_the_library_fobmaml():
    cfg = dt.DeltaConfig.quick_config()
    tasks = _tasks(cfg)
    x = np.linspace(-1, 1, cfg.n)
    inner = fm.InnerLoop(steps=30, lr=0.5, lam=0.3, momentum=0.4)
    for scheme in dt.SCHEMES:
        lib = fm.FOBMAML(inner, delta=1e-2, scheme=scheme).meta_gradient(x, tasks)
        plus = dt.inner_loop(tasks, x, inner, 1e-2)
        base = dt.inner_loop(tasks, x, inner, 0.0 if scheme == "forward" else -1e-2)
        step = 1e-2 if scheme == "forward" else 2e-2
        mine = np.mean(inner.lam * (base - plus) / step, axis=0)
        np.testing.assert_allclose(mine, lib, rtol=1e-10, atol=1e-13)


def test_k_step_limit_is_the_small_delta_limit_of_the_reference():
    cfg = dt.DeltaConfig.quick_config()
    tasks = _tasks(cfg)
    tl = ref.task_list(tasks.A, tasks.b)
    x = np.zeros(cfg.n)
    for beta in (0.0, 0.5):
        inner = fm.InnerLoop(steps=25, lr=1 / (1 + cfg.lam), lam=cfg.lam, momentum=beta)
        rinner = ref.Inner(25, inner.lr, cfg.lam, beta)
        # psi_K(s) is a polynomial in s: the symmetric quotient at 1e-4 is within O(1e-8).
        g = ref.per_task(ref.fobmaml, tl, x, rinner, 1e-4, "symmetric", "objective").mean(0)
        np.testing.assert_allclose(dt.k_step_limit(tasks, x, inner), g, rtol=1e-6)


def test_dense_bias_has_the_orders_of_the_schemes():
    # The forward quotient's bias is O(delta), the symmetric one's O(delta^2).
    cfg = dt.DeltaConfig.quick_config()
    tasks = _tasks(cfg)
    x = np.zeros(cfg.n)
    exact = dt.exact_gradient(tasks, x, cfg.lam)
    for scheme, order in (("forward", 1), ("symmetric", 2)):
        e = [
            np.linalg.norm(dt.solved_estimate(tasks, x, cfg.lam, d, scheme) - exact)
            for d in (1e-3, 1e-4)
        ]
        assert e[1] / e[0] == pytest.approx(10.0**-order, rel=0.05)


def test_fit_slope_ignores_the_floor():
    d = 10.0 ** np.arange(-10.0, 0.01, 0.5)
    for order in (1, 2):
        e = 3.0 * d**order + 1e-9  # a bias and a flat floor
        slope, lo, hi, pts = dt.fit_slope(d, e, max_delta=0.1, floor_factor=30)
        assert slope == pytest.approx(order, abs=0.02)
        assert hi == pytest.approx(0.1) and 3.0 * lo**order >= 29e-9 and pts >= 3
    assert dt.fit_slope(d[:2], 3 * d[:2], 0.1, 30) is None


def test_best_delta_and_its_range():
    rows = [
        ("p", "q", "forward", 5, "", 1e-3, d, e)
        for d, e in [(1e-3, 3.0), (1e-2, 1.0), (1e-1, 1.05), (1.0, 2.0)]
    ]
    (best,) = dt.best_deltas(rows)
    assert best[6:] == (1e-2, 1.0, 1e-2, 1e-1)


def test_noise_scaling_exponents_in_the_quick_run(quick_run):
    # Independent solve errors: the best delta grows with the inner error, the
    # symmetric scheme's faster for its error (eps^(2/3) against eps^(1/2) in theory).
    _, _, summary = quick_run
    sc = summary["best_delta_scaling"]
    assert sc["forward"]["best_delta_exponent"] > 0 and sc["symmetric"]["best_delta_exponent"] > 0
    assert sc["symmetric"]["best_error_exponent"] > sc["forward"]["best_error_exponent"]


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"deltas": ()}, "`deltas` must be a non-empty sequence"),
        ({"deltas": (0.0,)}, "`deltas` must be > 0"),
        ({"steps": (0,)}, "`steps` must be >= 1"),
        ({"sigmas": (-1e-3,)}, "`sigmas` must be > 0"),
        ({"noise_repeats": 0}, "`noise_repeats` must be >= 1"),
        ({"kappa": 0.5}, "`kappa` must be >= 1"),
        ({"lam": 0.0}, "`lam` must be > 0"),
        ({"fit_floor_factor": 0.5}, "`fit_floor_factor` must be >= 1"),
    ],
)
def test_run_rejects_bad_configs_before_any_work(tmp_path, change, match):
    cfg = replace(dt.DeltaConfig.quick_config(), **change)
    with pytest.raises(ValueError, match=match):
        dt.run(tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--deltas", "0,1e-3"], "`deltas` must be > 0"),
        (["--deltas", "1e-3,small"], "expected comma-separated numbers"),
        (["--steps", "-5"], "`steps` must be >= 1"),
        (["--sigmas", "-1"], "`sigmas` must be > 0"),
    ],
)
def test_command_line_rejects_bad_input(tmp_path, capsys, args, message):
    out = tmp_path / "dl"
    try:
        code = cli.main(["delta", "--quick", "--no-progress", "--out", str(out), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_command_line_quick(tmp_path, capsys):
    out = tmp_path / "dl"
    assert cli.main(["delta", "--quick", "--no-progress", "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} == FILES
    assert "bias exponent" in capsys.readouterr().out
