"""The outer-stability study: its files, a run recomputed in NumPy, the range rule, its command."""

from __future__ import annotations

import csv
import json
from dataclasses import replace

import mlp_reference as mref
import numpy as np
import pytest
import quick_runs

from fobmaml import cli, mlp
from fobmaml.experiments import outer_stability as st

FILES = {
    "stability_runs.csv",
    "stability_loss.csv",
    "stability_ranges.csv",
    "stability.png",
    "settings.json",
}
RUN_COLUMNS = [
    "family",
    "optimizer",
    "lr",
    "seed",
    "final_loss",
    "final_accuracy",
    "loss_at_init",
    "grad_norm_init",
    "grad_norm_max",
    "iterations_run",
    "reason",
]
RANGE_COLUMNS = [
    "family",
    "optimizer",
    "best_lr",
    "best_loss",
    "lr_min",
    "lr_max",
    "n_within",
    "decades",
    "contiguous",
    "at_grid_edge",
    "largest_lr_without_divergence",
    "n_diverged_lrs",
    "grad_norm_init",
    "predicted_max_lr_least_squares",
    "predicted_max_lr_envelope",
]
OPTIMIZERS = ["GD", "Momentum", "Adam", "ClippedGD", "NormalizedGD", "SNGDM"]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    return quick_runs.quick_run("stability", tmp_path_factory)


def _read(path):
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        return reader.fieldnames, list(reader)


def test_quick_run_writes_exactly_the_documented_files_and_columns(quick_run):
    out, cfg, summary = quick_run
    assert {p.name for p in out.iterdir()} == FILES
    assert (out / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    header, rows = _read(out / "stability_runs.csv")
    assert header == RUN_COLUMNS
    keys = [(r["family"], r["optimizer"], float(r["lr"]), int(r["seed"])) for r in rows]
    assert keys == [
        (f, o, lr, s)
        for f in ("sinusoid", "mnist1d")
        for o in OPTIMIZERS
        for lr in cfg.lrs
        for s in cfg.seeds
    ]
    for r in rows:  # a number, or "diverged" with the reason
        if r["final_loss"] == "diverged":
            assert r["reason"]
        else:
            assert float(r["final_loss"]) > 0 and not r["reason"]
        if r["family"] == "mnist1d" and r["final_loss"] != "diverged":
            assert 0 <= float(r["final_accuracy"]) <= 1
    assert _read(out / "stability_ranges.csv")[0] == RANGE_COLUMNS
    assert _read(out / "stability_loss.csv")[0] == [
        "family",
        "optimizer",
        "lr",
        "mean_loss",
        "min_loss",
        "max_loss",
        "seeds_diverged",
        "within",
    ]
    settings = json.loads((out / "settings.json").read_text())
    assert settings["runs"] == len(rows) and settings["settings"]["quick"] is True


def _numpy_final_loss(cfg, name, lr, seed):
    """The sinusoid run of `name` at `lr`, redone with the NumPy reference: FO-B-MAML by
    the reference inner loops, the outer update written out, the held-out loss by the
    reference network. Only the task draws come from the library's sampler."""
    fam = st._Family(cfg, "sinusoid")
    net = mref.Net(tuple(fam.layers), cfg.activation, "mse")
    inner = mref.Inner(cfg.steps, cfg.inner_lr, cfg.lam)
    x = mlp.init_params(fam.layers, seed=seed)  # the initialization is not under test
    rng = np.random.default_rng(seed)
    m = np.zeros_like(x)
    for _ in range(cfg.iterations):
        b = fam.sampler(rng)
        tasks = mref.task_list(net, b.X_support, b.Y_support, b.X_query, b.Y_query)
        g = np.mean(
            [mref.fobmaml(t, x, inner, cfg.delta, "symmetric", "objective") for t in tasks], axis=0
        )
        if name == "GD":
            x = x - lr * g
        elif name == "ClippedGD":
            x = x - lr * min(1.0, cfg.clip / np.linalg.norm(g)) * g
        elif name == "SNGDM":
            m = cfg.sngdm_beta * m + (1 - cfg.sngdm_beta) * g
            x = x - lr * m / np.linalg.norm(m)
        else:
            raise ValueError(name)
    t = fam.test
    test = mref.task_list(net, t.X_support, t.Y_support, t.X_query, t.Y_query)
    return mref.meta_loss_k(test, x, inner)


@pytest.mark.parametrize("name", ["GD", "ClippedGD", "SNGDM"])
def test_final_losses_match_a_numpy_recomputation(quick_run, name):
    out, cfg, _ = quick_run
    _, rows = _read(out / "stability_runs.csv")
    lr = 0.1
    (row,) = [
        r
        for r in rows
        if (r["family"], r["optimizer"], float(r["lr"]), r["seed"]) == ("sinusoid", name, lr, "0")
    ]
    assert row["final_loss"] != "diverged"
    assert float(row["final_loss"]) == pytest.approx(_numpy_final_loss(cfg, name, lr, 0), rel=1e-8)


def test_a_diverging_step_size_is_recorded_as_diverged(tmp_path):
    cfg = replace(
        st.StabilityConfig.quick_config(),
        families=("sinusoid",),
        optimizers=("GD", "NormalizedGD"),
        lrs=(1e4,),
    )
    summary = st.run(tmp_path, cfg, progress=False)
    _, rows = _read(tmp_path / "stability_runs.csv")
    by = {r["optimizer"]: r for r in rows}
    assert by["GD"]["final_loss"] == "diverged" and by["GD"]["reason"]
    # The GD range has no finite point; the table says so instead of inventing one.
    gd = summary["ranges"]["sinusoid GD"]
    assert gd["lr_min"] == "" and gd["n_diverged_lrs"] == 1


def _runs(losses):
    """Synthetic runs: {(optimizer, lr): [loss or None per seed]}."""
    return [
        {
            "family": "sinusoid",
            "optimizer": opt,
            "lr": lr,
            "seed": s,
            "final_loss": v,
            "grad_norm_init": 2.0,
            "loss_at_init": 4.0,
        }
        for (opt, lr), vals in losses.items()
        for s, v in enumerate(vals)
    ]


def test_stable_range_is_the_step_sizes_within_ten_percent_of_the_best():
    cfg = replace(
        st.StabilityConfig(),
        optimizers=("GD", "ClippedGD"),
        families=("sinusoid",),
        lrs=(0.01, 0.1, 1.0, 10.0),
        seeds=(0, 1),
        smoothness={"least_squares": {"L0": 1.0, "L1": 2.0}, "envelope": {"L0": 3.0, "L1": 4.0}},
    )
    runs = _runs(
        {
            ("GD", 0.01): [2.0, 2.2],  # mean 2.1
            ("GD", 0.1): [1.0, 1.2],  # mean 1.1: the best
            ("GD", 1.0): [1.2, 1.2],  # 1.2 <= 1.1 * 1.1 = 1.21: within
            ("GD", 10.0): [1.0, None],  # one seed diverged: the step size diverged
            ("ClippedGD", 0.01): [1.0, 1.0],
            ("ClippedGD", 0.1): [3.0, 3.0],
            ("ClippedGD", 1.0): [1.05, 1.05],
            ("ClippedGD", 10.0): [5.0, 5.0],
        }
    )
    rows = {r[1]: dict(zip(RANGE_COLUMNS, r)) for r in st.ranges(runs, cfg)}
    gd = rows["GD"]
    assert (gd["best_lr"], gd["lr_min"], gd["lr_max"], gd["n_within"]) == (0.1, 0.1, 1.0, 2)
    assert gd["best_loss"] == pytest.approx(1.1) and gd["decades"] == pytest.approx(1.0)
    assert gd["contiguous"] and not gd["at_grid_edge"]
    assert gd["largest_lr_without_divergence"] == 1.0 and gd["n_diverged_lrs"] == 1
    # GD: 2 / (L0 + L1 G0) with G0 = 2.
    assert gd["predicted_max_lr_least_squares"] == pytest.approx(2 / (1 + 2 * 2))
    assert gd["predicted_max_lr_envelope"] == pytest.approx(2 / (3 + 4 * 2))
    cl = rows["ClippedGD"]
    assert (cl["lr_min"], cl["lr_max"], cl["n_within"]) == (0.01, 1.0, 2)
    assert not cl["contiguous"] and cl["at_grid_edge"]
    # ClippedGD: 2 / (L0 + L1 min(c, G0)) with c = 1.
    assert cl["predicted_max_lr_least_squares"] == pytest.approx(2 / (1 + 2 * 1))
    loss = {(r[1], r[2]): r for r in st.loss_table(runs, cfg.within)}
    assert loss["GD", 10.0][3] == "diverged" and loss["GD", 10.0][6] == 1
    assert loss["GD", 0.01][4:6] == (2.0, 2.2) and loss["GD", 0.01][7] is False


def test_predicted_limits():
    cfg = st.StabilityConfig()
    assert st.predicted_max_lr("GD", 1.0, 2.0, 3.0, cfg) == pytest.approx(2 / 7)
    assert st.predicted_max_lr("Momentum", 1.0, 2.0, 3.0, cfg) == pytest.approx(2 * 1.9 / 7)
    assert st.predicted_max_lr("ClippedGD", 1.0, 2.0, 3.0, cfg) == pytest.approx(2 / 3)
    assert st.predicted_max_lr("NormalizedGD", 1.0, 2.0, 3.0, cfg) == pytest.approx(6 / 7)
    assert st.predicted_max_lr("Adam", 1.0, 2.0, 3.0, cfg) is None


def _smoothness_file(tmp_path, **changes):
    settings = {k: getattr(st.StabilityConfig(), k) for k in st._SMOOTHNESS_KEYS}
    settings.update(changes)
    data = {
        "settings": settings,
        "fit": {"least_squares": {"L0": 0.0, "L1": 5.0}, "envelope": {"L0": 10.0, "L1": 9.0}},
    }
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(data))
    return path


def test_smoothness_fit_is_read_and_must_match_the_setting(tmp_path):
    fit = st.smoothness_fit(_smoothness_file(tmp_path))
    assert fit["least_squares"] == {"L0": 0.0, "L1": 5.0}
    st.check_config(replace(st.StabilityConfig(), smoothness=fit))
    other = st.smoothness_fit(_smoothness_file(tmp_path, lam=30.0))
    with pytest.raises(ValueError, match="another sinusoid setting"):
        st.check_config(replace(st.StabilityConfig(), smoothness=other))
    with pytest.raises(ValueError, match="`smoothness` must be the settings.json"):
        st.smoothness_fit(tmp_path / "missing.json")


@pytest.mark.parametrize(
    ("change", "match"),
    [
        ({"optimizers": ("GD", "Foo")}, "`optimizers` must be a non-empty list"),
        ({"families": ()}, "`families` must be a non-empty list"),
        ({"lrs": (0.0,)}, "`lr` must be > 0"),
        ({"lrs": ()}, "`lrs` must be a non-empty sequence"),
        ({"seeds": (-1,)}, "`seeds` must be >= 0"),
        ({"clip": 0.0}, "`clip` must be > 0"),
        ({"within": 0.0}, "`within` must be > 0"),
        ({"divergence_factor": 0.5}, "`divergence_factor` must be >= 1"),
        ({"lam": 0.0}, "`lam` must be > 0"),
        ({"num_samples": 100, "q_query": 50}, "exceeds"),
    ],
)
def test_run_rejects_bad_configs_before_any_work(tmp_path, change, match):
    cfg = replace(st.StabilityConfig.quick_config(), **change)
    with pytest.raises(ValueError, match=match):
        st.run(tmp_path / "out", cfg, progress=False)
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--optimizers", "GD,Foo"], "`optimizers` must be a non-empty list"),
        (["--families", "omniglot"], "`families` must be a non-empty list"),
        (["--lrs", "-0.1"], "`lr` must be > 0"),
        (["--lrs", "fast"], "expected comma-separated numbers"),
        (["--seeds", "0.5"], "expected comma-separated integers"),
        (["--smoothness", "/nonexistent/settings.json"], "`smoothness` must be"),
    ],
)
def test_command_line_rejects_bad_input(tmp_path, capsys, args, message):
    out = tmp_path / "so"
    try:
        code = cli.main(["stability", "--quick", "--no-progress", "--out", str(out), *args])
    except SystemExit as exc:
        code = exc.code
    assert code == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


def test_command_line_quick(tmp_path, capsys):
    out = tmp_path / "so"
    argv = ["stability", "--quick", "--no-progress", "--out", str(out)]
    argv += ["--families", "sinusoid", "--optimizers", "GD,SNGDM", "--lrs", "0.01,0.1"]
    assert cli.main(argv) == 0
    assert {p.name for p in out.iterdir()} == FILES
    assert "sinusoid GD" in capsys.readouterr().out


def test_replot_redraws_from_the_csvs_and_checks_them(quick_run, tmp_path, capsys):
    out, _, _ = quick_run
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in FILES - {"stability.png"}:
        (copy / name).write_bytes((out / name).read_bytes())
    assert cli.main(["stability", "--replot", "--out", str(copy)]) == 0
    assert (copy / "stability.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    # A ranges table that does not follow from the runs is refused.
    text = (copy / "stability_ranges.csv").read_text().splitlines()
    head, first = text[0], text[1].split(",")
    first[3] = "0.123"  # best_loss
    (copy / "stability_ranges.csv").write_text("\n".join([head, ",".join(first), *text[2:]]))
    capsys.readouterr()
    assert cli.main(["stability", "--replot", "--out", str(copy)]) == 2
    assert "does not follow from stability_runs.csv" in capsys.readouterr().err
    assert cli.main(["stability", "--replot", "--out", str(tmp_path / "none")]) == 2
