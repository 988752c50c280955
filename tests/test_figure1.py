"""The Figure 1 reproduction: outputs, the closed-form optimum, and the story it tells."""

import csv
import json
import subprocess
import sys

import numpy as np
import pytest

import fobmaml as fm
from fobmaml.experiments import figure1

# Runs the Figure 1 experiment's quick configuration end to end.
pytestmark = pytest.mark.slow


def dense_optimum(tasks, lam):
    """x* and F* of F(x) = mean_i f_i(phi*_i(x)) by dense linear algebra.

    phi*_i(x) = P_i (b_i + lam x) with P_i = (A_i + lam I)^{-1}, so F is quadratic with
    Hessian mean_i lam^2 P_i B_i P_i and gradient at 0: mean_i lam P_i (B_i P_i b_i - c_i).
    """
    n = tasks.dim
    H = np.zeros((n, n))
    g0 = np.zeros(n)
    for A, b, B, c in zip(tasks.A, tasks.b, tasks.B, tasks.c):
        P = np.linalg.inv(A + lam * np.eye(n))
        H += lam**2 * P @ B @ P
        g0 += lam * P @ (B @ P @ b - c)
    H /= len(tasks.A)
    g0 /= len(tasks.A)
    x = np.linalg.solve(H, -g0)
    F = 0.0
    for A, b, B, c in zip(tasks.A, tasks.b, tasks.B, tasks.c):
        phi = np.linalg.solve(A + lam * np.eye(n), b + lam * x)
        F += 0.5 * phi @ B @ phi - c @ phi
    return x, F / len(tasks.A), np.linalg.eigvalsh(H)[-1]


@pytest.mark.parametrize("separate_query", [False, True])
def test_exact_optimum_matches_dense(separate_query):
    tasks = fm.datasets.quadratic_tasks(5, 8, kappa=50.0, seed=3, separate_query=separate_query)
    lam = 0.3
    x, F, L = figure1.exact_quadratic_optimum(tasks, fm.Exact(fm.InnerLoop(lam=lam)))
    x_ref, F_ref, L_ref = dense_optimum(tasks, lam)
    np.testing.assert_allclose(x, x_ref, rtol=1e-7, atol=1e-9)
    assert F == pytest.approx(F_ref, rel=1e-10)
    assert L == pytest.approx(L_ref, rel=1e-8)


def test_default_config_follows_the_paper_setting():
    cfg = figure1.Figure1Config()
    assert cfg.steps_right == 20
    assert min(cfg.steps_left) == 1 and max(cfg.steps_left) == 100
    assert cfg.kappa >= 1e3
    # Inner step 1/(L + lam); the momentum variants add heavy-ball beta to the same step.
    assert cfg.gd_inner(5).lr == pytest.approx(1 / (cfg.L + cfg.lam))
    hb = cfg.momentum_inner(5)
    assert hb.lr == cfg.gd_inner(5).lr and 0 < hb.momentum < 1


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("figure1")
    summary = figure1.run(out, figure1.Figure1Config.quick_config(), progress=False)
    return out, summary


def test_quick_run_writes_every_output(quick_run):
    out, summary = quick_run
    for name in [
        "figure1.png",
        "figure1_left.csv",
        "figure1_right.csv",
        "figure1_lr_tuning.csv",
        "settings.json",
    ]:
        assert (out / name).stat().st_size > 0, name
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["quick"] is True
    assert settings["settings"]["delta"] == 1e-3
    with open(out / "figure1_left.csv") as fh:
        rows = list(csv.reader(fh))
    assert rows[0][0] == "K" and "FO-B-MAML symmetric" in rows[0]
    assert [int(r[0]) for r in rows[1:]] == list(figure1.Figure1Config.quick_config().steps_left)


def test_quick_run_tells_the_papers_story(quick_run):
    out, summary = quick_run
    err = summary["left_error_at_max_K"]
    # With K = 100 inner steps, FO-B-MAML and MAML are accurate, FO-MAML and Reptile biased;
    # momentum in the inner loop takes symmetric FO-B-MAML to its O(delta^2) floor.
    assert err["FO-B-MAML symmetric"] < 1e-2 and err["MAML"] < 1e-2
    assert err["FO-B-MAML symmetric + momentum"] < 1e-5
    assert err["FO-B-MAML forward + momentum"] > 10 * err["FO-B-MAML symmetric + momentum"]
    assert err["FO-MAML"] > 0.1 and err["Reptile"] > 0.1
    gap = summary["right_final_gap"]
    for label in ["FO-B-MAML symmetric", "FO-B-MAML symmetric + momentum"]:
        assert gap[label] < gap["FO-MAML"] / 10
        assert gap[label] < gap["Reptile"] / 10


def test_left_csv_matches_an_independent_error_computation(quick_run):
    out, _ = quick_run
    cfg = figure1.Figure1Config.quick_config()
    tasks = figure1.make_tasks(cfg)
    with open(out / "figure1_left.csv") as fh:
        rows = list(csv.DictReader(fh))
    # Reference gradient by a dense solve, FO-MAML by plain NumPy iteration.
    n, lam = cfg.n, cfg.lam
    inner = cfg.gd_inner(1)
    ref = np.mean(
        [
            lam
            * np.linalg.solve(A + lam * np.eye(n), A @ np.linalg.solve(A + lam * np.eye(n), b) - b)
            for A, b in zip(tasks.A, tasks.b)
        ],
        axis=0,
    )
    for row in rows:
        K = int(row["K"])
        grads = []
        for A, b in zip(tasks.A, tasks.b):
            phi = np.zeros(n)
            for _ in range(K):
                phi = phi - inner.lr * (A @ phi - b + lam * phi)
            grads.append(A @ phi - b)
        g = np.mean(grads, axis=0)
        expected = np.linalg.norm(g - ref) / np.linalg.norm(ref)
        assert float(row["FO-MAML"]) == pytest.approx(expected, rel=1e-8)


def test_command_line_quick(tmp_path):
    out = tmp_path / "fig"
    proc = subprocess.run(
        [sys.executable, "-m", "fobmaml", "figure1", "--quick", "--no-progress", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert (out / "figure1.png").exists()
    assert "FO-B-MAML symmetric" in proc.stdout


def test_command_line_rejects_bad_settings(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "fobmaml",
            "figure1",
            "--quick",
            "--no-progress",
            "--lam",
            "0",
            "--out",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2
    assert "`lam` must be > 0" in proc.stderr
