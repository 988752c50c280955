"""The smoothness experiment: the quick configuration end to end, and its checks."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import numpy as np
import pytest

from fobmaml.experiments import smoothness
from fobmaml.experiments._io import with_overrides

# Runs the smoothness experiment's quick configuration end to end.
pytestmark = pytest.mark.slow

OUTPUTS = [
    "smoothness.png",
    "smoothness_points.csv",
    "optimizers.png",
    "optimizers.csv",
    "optimizer_tuning.csv",
    "settings.json",
]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("smoothness")
    cfg = smoothness.SmoothnessConfig.quick_config()
    return out, cfg, smoothness.run(out, cfg, progress=False)


def test_quick_run_writes_every_output(quick_run):
    out, cfg, summary = quick_run
    for name in OUTPUTS:
        assert (out / name).stat().st_size > 0, name
    assert summary["outputs"] == OUTPUTS
    assert (out / "smoothness.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    settings = json.loads((out / "settings.json").read_text())
    assert settings["settings"]["quick"] is True
    assert settings["L0"] == summary["L0"] and settings["L1"] == summary["L1"]


def test_quick_run_fits_finite_L0_L1(quick_run):
    _, _, summary = quick_run
    for key in ("L0", "L1"):
        assert np.isfinite(summary[key]) and summary[key] >= 0
    for fit in ("least_squares", "envelope"):
        assert np.isfinite(summary["fit"][fit]["L0"]) and np.isfinite(summary["fit"][fit]["L1"])
    assert summary["fit"]["envelope"]["coverage"] == 1.0
    assert summary["points"]["ok"] >= 2


def test_quick_run_points_csv_matches_the_summary(quick_run):
    out, cfg, summary = quick_run
    with open(out / "smoothness_points.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == summary["points"]["total"]
    kinds = {r["kind"] for r in rows}
    assert "init" in kinds
    assert {f"trajectory:{n}" for n in smoothness.OPTIMIZERS} <= kinds
    assert {f"random:r={r:g}" for r in cfg.random_radii} <= kinds
    good = [r for r in rows if r["ok"] == "True"]
    assert len(good) == summary["points"]["ok"]
    g = np.array([float(r["grad_norm"]) for r in good])
    s = np.array([float(r["smoothness"]) for r in good])
    assert (g > 0).all() and (s > 0).all()
    lo, hi = summary["points"]["grad_norm_range"]
    assert g.min() == pytest.approx(lo) and g.max() == pytest.approx(hi)


def test_quick_run_compares_the_optimizers_on_the_same_budget(quick_run):
    out, cfg, summary = quick_run
    with open(out / "optimizers.csv") as fh:
        rows = list(csv.DictReader(fh))
    for name in smoothness.OPTIMIZERS:
        mine = [r for r in rows if r["optimizer"] == name]
        assert [int(r["iteration"]) for r in mine] == list(range(cfg.iterations + 1))
        tested = [int(r["iteration"]) for r in mine if r["test_loss"] != ""]
        assert tested == list(range(0, cfg.iterations + 1, cfg.eval_every))
        res = summary["optimizers"][name]
        assert res["outer_lr"] in cfg.lr_grid(name) and np.isfinite(res["final_test_loss"])
    assert summary["budget"]["estimator_calls_per_run"] == cfg.iterations + 1
    with open(out / "optimizer_tuning.csv") as fh:
        tuning = list(csv.DictReader(fh))
    assert len(tuning) == sum(len(cfg.lr_grid(n)) for n in smoothness.OPTIMIZERS)


def test_diverging_step_sizes_are_reported_and_not_chosen(tmp_path):
    cfg = replace(
        smoothness.SmoothnessConfig.quick_config(),
        lr_gd=(1e4, 0.1),
        random_radii=(0.5,),
        trajectory_every=20,
        power_iters=3,
    )
    summary = smoothness.run(tmp_path, cfg, progress=False)
    assert summary["optimizers"]["GD"]["diverged_lrs"] == [1e4]
    assert summary["optimizers"]["GD"]["outer_lr"] == 0.1
    with open(tmp_path / "optimizer_tuning.csv") as fh:
        rows = {(r["optimizer"], float(r["outer_lr"])): r for r in csv.DictReader(fh)}
    assert rows["GD", 1e4]["diverged"] == "True" and rows["GD", 1e4]["reason"] != ""
    assert rows["GD", 0.1]["diverged"] == "False"
    bad = replace(cfg, lr_gd=(1e4,))
    with pytest.raises(FloatingPointError, match="GD: meta-training diverged for every step size"):
        smoothness.run(tmp_path / "bad", bad, progress=False)


def test_default_config_is_the_documented_setting():
    cfg = smoothness.SmoothnessConfig()
    assert cfg.layers == [1, cfg.hidden, cfg.hidden, 1] and cfg.activation == "tanh"
    assert cfg.estimator().scheme == "symmetric" and cfg.exact().solver == "iterative"
    assert cfg.exact().inner.lam == cfg.lam == cfg.estimator().inner.lam
    for name in smoothness.OPTIMIZERS:
        assert len(cfg.lr_grid(name)) >= 3
    assert not cfg.quick and smoothness.SmoothnessConfig.quick_config().quick
    assert with_overrides(cfg, lam=30.0, seed=None).lam == 30.0


@pytest.mark.parametrize(
    ("cfg", "exc", "match"),
    [
        ("quick", TypeError, "`cfg` must be a SmoothnessConfig"),
        ({"lam": 0.0}, ValueError, "`lam` must be > 0"),
        ({"lr_gd": ()}, ValueError, "grid of GD is empty"),
        ({"lr_sngdm": (-0.1,)}, ValueError, "`lr` must be > 0"),
        ({"clip": 0.0}, ValueError, "`clip` must be > 0"),
        ({"iterations": 0}, ValueError, "`iterations` must be an integer >= 1"),
        ({"method": "exact"}, ValueError, "`method` must be one of"),
        ({"random_radii": (-1.0,)}, ValueError, "`radii` must be"),
        ({"envelope_quantile": 0.0}, ValueError, "`quantile` must be in"),
        ({"divergence_factor": 0.5}, ValueError, "`divergence_factor` must be >= 1"),
    ],
)
def test_run_rejects_bad_configs_before_any_work(tmp_path, cfg, exc, match):
    if isinstance(cfg, dict):
        cfg = replace(smoothness.SmoothnessConfig.quick_config(), **cfg)
    with pytest.raises(exc, match=match):
        smoothness.run(tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()
