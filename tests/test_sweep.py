"""The estimator-error sweep: its files, its numbers (recomputed with NumPy), its command."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from dataclasses import replace

import numpy as np
import pytest
import quick_runs
import reference as ref

import fobmaml as fm
from fobmaml import cli
from fobmaml.experiments import sweep

# The documented outputs, written out here so that a renamed file or column fails.
FILES = {"estimator_error.csv", "heatmap_vs_imaml_cg5.png", "heatmap_vs_maml.png", "settings.json"}
COLUMNS = ["kappa", "lam", "lr", "momentum", "K", "estimator", "rel_error"]
ESTIMATORS = [
    "MAML",
    "iMAML-cg2",
    "iMAML-cg5",
    "iMAML-cg10",
    "FO-MAML",
    "Reptile",
    "HF-MAML",
    "FO-B-MAML-forward",
    "FO-B-MAML-symmetric",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return quick_runs.quick_run("sweep", tmp_path_factory)


def _rows(out):
    with open(out / "estimator_error.csv", newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_quick_run_writes_exactly_the_documented_files_and_columns(quick_run):
    out, cfg, summary = quick_run
    assert {p.name for p in out.iterdir()} == FILES
    for name in FILES:
        assert (out / name).stat().st_size > 0, name
    for png in ("heatmap_vs_imaml_cg5.png", "heatmap_vs_maml.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, rows = _rows(out)
    assert header == COLUMNS
    # Every grid point once, with every estimator once.
    seen = {}
    for r in rows:
        key = (float(r["kappa"]), float(r["lam"]), float(r["momentum"]), int(r["K"]))
        seen.setdefault(key, []).append(r["estimator"])
        assert float(r["lr"]) == pytest.approx(1.0 / (cfg.L + float(r["lam"])), rel=1e-15)
    expected = {
        (k, lam, b, K)
        for k in cfg.kappas
        for lam in cfg.lams
        for b in (0.0, cfg.momentum)
        for K in cfg.steps
    }
    assert set(seen) == expected
    assert all(v == ESTIMATORS for v in seen.values())


def test_settings_hold_the_task_arguments_delta_and_eps(quick_run):
    out, cfg, _ = quick_run
    settings = json.loads((out / "settings.json").read_text())
    assert settings["tasks"] == {
        "m": cfg.m,
        "n": cfg.n,
        "L": 1.0,
        "task_spread": 1.0,
        "seed": 0,
        "separate_query": False,
    }
    assert settings["delta"] == 1e-3 and settings["eps"] == 1e-5
    assert settings["settings"]["quick"] is True
    # The recorded arguments regenerate the tasks.
    tasks = fm.datasets.quadratic_tasks(kappa=cfg.kappas[0], **settings["tasks"])
    assert np.linalg.cond(tasks.A[0]) == pytest.approx(cfg.kappas[0], rel=1e-6)


def _reference_errors(tasks, lam, lr, beta, K, delta, eps):
    """Every estimator's relative error, from the NumPy reference and dense solves."""
    tl = ref.task_list(tasks.A, tasks.b)
    x = np.zeros(tasks.dim)
    inner = ref.Inner(K, lr, lam, beta)
    exact = ref.per_task(ref.exact, tl, x, lam).mean(0)

    def err(fn, *args):
        g = ref.per_task(fn, tl, x, inner, *args).mean(0)
        return np.linalg.norm(g - exact) / np.linalg.norm(exact)

    return {
        "MAML": err(ref.maml),
        "iMAML-cg2": err(ref.imaml, 2),
        "iMAML-cg5": err(ref.imaml, 5),
        "iMAML-cg10": err(ref.imaml, 10),
        "FO-MAML": err(ref.fomaml),
        "Reptile": err(ref.reptile),
        "HF-MAML": err(ref.hfmaml, eps),
        "FO-B-MAML-forward": err(ref.fobmaml, delta, "forward", "objective"),
        "FO-B-MAML-symmetric": err(ref.fobmaml, delta, "symmetric", "objective"),
    }


@pytest.mark.parametrize(
    ("kappa", "lam", "beta", "K"), [(1e3, 0.1, 0.0, 20), (1e1, 1.0, 0.5, 5), (1e3, 1.0, 0.5, 20)]
)
def test_csv_errors_match_an_independent_recomputation(quick_run, kappa, lam, beta, K):
    out, cfg, _ = quick_run
    _, rows = _rows(out)
    mine = {
        r["estimator"]: float(r["rel_error"])
        for r in rows
        if (float(r["kappa"]), float(r["lam"]), float(r["momentum"]), int(r["K"]))
        == (kappa, lam, beta, K)
    }
    tasks = fm.datasets.quadratic_tasks(kappa=kappa, **cfg.task_kwargs())
    expected = _reference_errors(tasks, lam, 1.0 / (1.0 + lam), beta, K, cfg.delta, cfg.eps)
    assert set(mine) == set(expected)
    for name, value in expected.items():
        # The two computations round differently; FO-B-MAML divides that by delta.
        assert mine[name] == pytest.approx(value, rel=1e-6, abs=1e-11), name


def test_comparisons_count_the_wins_in_the_csv(quick_run):
    out, cfg, summary = quick_run
    _, rows = _rows(out)
    table = {}
    for r in rows:
        key = (r["kappa"], r["lam"], r["momentum"], r["K"])
        table.setdefault(key, {})[r["estimator"]] = float(r["rel_error"])
    for beta in (0.0, cfg.momentum):
        keys = [k for k in table if float(k[2]) == beta]
        for rival in ("MAML", "iMAML-cg5", "FO-MAML"):
            wins = sum(table[k]["FO-B-MAML-symmetric"] < table[k][rival] for k in keys)
            got = summary["comparisons"][f"{beta:g}"][rival]
            assert (got["wins"], got["points"]) == (wins, len(keys))
    # FO-MAML and Reptile stay biased however many steps: FO-B-MAML wins at K = 20.
    k20 = [k for k in table if k[3] == "20"]
    assert all(table[k]["FO-B-MAML-symmetric"] < table[k]["FO-MAML"] for k in k20)


def test_default_grid_is_the_documented_one():
    cfg = sweep.SweepConfig()
    assert cfg.kappas == (1e1, 1e2, 1e3, 1e4, 1e5)
    assert cfg.lams == (0.01, 0.1, 1.0, 10.0)
    assert cfg.steps == (5, 10, 20, 50, 100)
    assert 0 < cfg.momentum < 1 and cfg.momenta() == (0.0, cfg.momentum)
    assert cfg.inner(0.1, 0.0, 5).lr == pytest.approx(1 / 1.1)


@pytest.mark.parametrize(
    ("change", "exc", "match"),
    [
        ({"kappas": (0.5,)}, ValueError, "`kappas` must hold values >= 1"),
        ({"kappas": ()}, ValueError, "`kappas` must be a non-empty sequence"),
        ({"lams": (0.0,)}, ValueError, "`lams` must be > 0"),
        ({"steps": (0,)}, ValueError, "`steps` must be >= 1"),
        ({"steps": (5, 5)}, ValueError, "`steps` must not repeat"),
        ({"momentum": 0.0}, ValueError, "`momentum` must be in \\(0, 1\\)"),
        ({"momentum": 1.0}, ValueError, "`momentum` must be in \\[0, 1\\)"),
        ({"delta": -1.0}, ValueError, "`delta` must be > 0"),
        ({"eps": 0.0}, ValueError, "`eps` must be > 0"),
        ({"m": 0}, ValueError, "`m` must be >= 1"),
        ({"task_spread": -1.0}, ValueError, "`task_spread` must be >= 0"),
    ],
)
def test_run_rejects_bad_configs_before_any_work(tmp_path, change, exc, match):
    cfg = replace(sweep.SweepConfig.quick_config(), **change)
    with pytest.raises(exc, match=match):
        sweep.run(tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()
    with pytest.raises(TypeError, match="`cfg` must be a SweepConfig"):
        sweep.run(tmp_path / "out", "quick", progress=False)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "fobmaml", *args], capture_output=True, text=True, timeout=300
    )


def test_command_line_quick(tmp_path):
    out = tmp_path / "sw"
    proc = _cli("sweep", "--quick", "--no-progress", "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert {p.name for p in out.iterdir()} == FILES
    assert "FO-B-MAML" not in proc.stderr and "iMAML-cg5" in proc.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--kappas", "0.5"], "`kappas` must hold values >= 1"),
        (["--kappas", "ten"], "expected comma-separated numbers"),
        (["--lams", "-1"], "`lams` must be > 0"),
        (["--steps", "5,x"], "expected comma-separated integers"),
        (["--momentum", "1.5"], "`momentum` must be in [0, 1)"),
        (["--delta", "0"], "`delta` must be > 0"),
        (["--n", "0"], "`n` must be >= 1"),
    ],
)
def test_command_line_rejects_bad_input(tmp_path, capsys, args, message):
    out = tmp_path / "sw"
    argv = ["sweep", "--quick", "--no-progress", "--out", str(out), *args]
    try:
        code = cli.main(argv)
    except SystemExit as exc:  # argparse rejects a malformed value itself
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()
