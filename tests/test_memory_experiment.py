"""``fobmaml memory``: what its quick mode measures and writes, and how it predicts.

The growth checks are independent of the code under test: n is counted from the CNN's
layers here, MAML's trajectory is K n doubles per thread (docs/estimators.md, "MAML's
reverse recursion"), and the memory is measured by the operating system in fresh
processes. No time is asserted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from fobmaml import cli
from fobmaml.experiments import memory

THREADS = 2


def _n(channels: int) -> int:
    # Conv1d(1, C, 5): C*5 weights + C biases; Conv1d(C, C, 3): 3 C^2 + C; Linear(5 C, 5).
    return channels * 6 + (3 * channels**2 + channels) + (25 * channels + 5)


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("memory")
    code = cli.main(["memory", "--quick", "--threads", str(THREADS), "--out", str(out)])
    assert code == 0
    return out, memory.read_csv(out / "memory.csv")


@pytest.mark.slow
def test_quick_mode_writes_one_row_per_point_and_estimator(quick_run):
    out, rows = quick_run
    cfg = memory.MemoryConfig.quick_config()
    want = {(c, k) for c in cfg.channels for k in [cfg.channels_steps]} | {
        (cfg.steps_channels, k) for k in cfg.steps
    }
    got = {(r["channels"], r["K"]) for r in rows}
    assert got == want
    assert {r["implementation"] for r in rows} == {"fobmaml"}  # quick: no peers
    assert len(rows) == len(want) * len(memory.ESTIMATORS)
    for r in rows:
        assert r["status"] == "ok", r
        assert r["n"] == _n(r["channels"]) and r["m"] == 16 and r["threads"] == THREADS
        assert r["extra_kib"] >= 0 and r["time_s"] > 0 and r["workspace_bytes"] > 0
        assert r["method"] == "peak reset" or sys.platform != "linux"
    for name in ("memory.png", "time.png"):
        assert (out / name).stat().st_size > 0
    settings = json.loads((out / "settings.json").read_text())
    assert settings["config"]["quick"] is True and settings["config"]["threads"] == THREADS
    assert set(settings["summary"]) == {f"fobmaml {e}" for e in memory.ESTIMATORS}
    (out / "memory.png").unlink()
    assert cli.main(["memory", "--out", str(out), "--replot"]) == 0
    assert (out / "memory.png").stat().st_size > 0


@pytest.mark.slow
@pytest.mark.skipif(
    "libasan" in os.environ.get("LD_PRELOAD", ""),
    reason="under AddressSanitizer (tools/sanitize.sh) the RSS holds its shadow memory and its "
    "quarantine of freed blocks, not the kernels' workspace",
)
def test_growth_in_k_is_the_trajectory_for_maml_and_nothing_for_fobmaml(quick_run):
    _, rows = quick_run
    cfg = memory.MemoryConfig.quick_config()
    C, (k_lo, k_hi) = cfg.steps_channels, cfg.steps
    at = {(r["estimator"], r["K"]): r for r in rows if r["channels"] == C}
    n = _n(C)

    def growth(est, key):
        return at[(est, k_hi)][key] - at[(est, k_lo)][key]

    # The prediction: MAML keeps K n doubles per thread; FO-B-MAML and FO-MAML keep no
    # trajectory.
    assert growth("MAML", "workspace_bytes") == (k_hi - k_lo) * n * 8 * THREADS
    assert growth("FOBMAML(symmetric)", "workspace_bytes") == 0
    assert growth("FOMAML", "workspace_bytes") == 0
    # The measurement, by the operating system: MAML's extra peak grows by the trajectory
    # (about 2.3 MiB here; RSS is counted in 4 KiB pages), FO-B-MAML's by less than 1 MiB.
    predicted_kib = (k_hi - k_lo) * n * 8 * THREADS / 1024
    assert growth("MAML", "extra_kib") == pytest.approx(predicted_kib, rel=0.1, abs=64)
    assert abs(growth("FOBMAML(symmetric)", "extra_kib")) < 1024
    summary = memory.summarize(rows, cfg)
    maml = summary["fobmaml MAML"]
    assert maml["predicted_growth_mib"] == pytest.approx(predicted_kib / 1024)
    assert maml["growth_mib"] == pytest.approx(growth("MAML", "extra_kib") / 1024)


def test_a_run_predicted_past_the_limit_is_not_made(tmp_path, monkeypatch):
    made = []

    def fake_measure(spec, timeout):
        made.append((spec["implementation"], spec["estimator"], spec["channels"], spec["K"]))
        return {"status": "ok", "extra_kib": 1000.0, "time_s": 0.5, "n": 1, "m": 16}

    monkeypatch.setattr(memory, "measure", fake_measure)
    cfg = memory.MemoryConfig(
        channels=(4, 8), channels_steps=5, steps=(5,), steps_channels=8, peers=(), limit_gib=1e-3
    )
    memory.run(tmp_path, cfg, progress=False)
    # One run per estimator at C = 4 (nothing to predict from); at C = 8 the prediction is
    # 1000 KiB (8/4)^2 = 3.8 MiB, past the 1e-3 GiB (1.0 MiB) limit: not made.
    assert made == [("fobmaml", e, 4, 5) for e in memory.ESTIMATORS]
    rows = memory.read_csv(tmp_path / "memory.csv")
    for r in rows:
        if r["channels"] == 4:
            assert r["status"] == "ok" and r["predicted_extra_kib"] is None
        else:
            assert r["status"].startswith(
                "out of memory (predicted 0.00381 GiB > 0.001 GiB; not run)"
            )
            assert r["extra_kib"] is None
            assert r["predicted_extra_kib"] == pytest.approx(4000.0)
    assert (tmp_path / "memory.png").stat().st_size > 0


def test_a_run_predicted_too_slow_is_not_made(tmp_path, monkeypatch):
    def fake_measure(spec, timeout):
        return {"status": "ok", "extra_kib": 10.0, "time_s": 2.0 * spec["K"], "n": 1, "m": 16}

    monkeypatch.setattr(memory, "measure", fake_measure)
    monkeypatch.setattr(memory, "available_peers", lambda names: (list(names), {}))
    cfg = memory.MemoryConfig(
        channels=(4,),
        channels_steps=5,
        steps=(5, 10, 40),
        steps_channels=4,
        peers=("jax",),
        estimators=("MAML",),
        time_limit=60.0,
        num_samples=1000,
    )
    memory.run(tmp_path, cfg, progress=False)
    all_rows = memory.read_csv(tmp_path / "memory.csv")
    # fobmaml's runs are always made; only the peer's are skipped.
    assert all(r["status"] == "ok" for r in all_rows if r["implementation"] == "fobmaml")
    rows = {r["K"]: r for r in all_rows if r["implementation"] == "jax"}
    assert rows[5]["status"] == rows[10]["status"] == "ok"
    # Linear in K through (5, 10 s) and (10, 20 s): 80 s at K = 40, past 60 s.
    assert rows[40]["status"] == "too slow (predicted 80 s > 60 s; not run)"
    assert rows[40]["predicted_time_s"] == pytest.approx(80.0)
    assert rows[40]["predicted_extra_kib"] == pytest.approx(10.0)


def test_resume_keeps_the_rows_already_measured(tmp_path, monkeypatch):
    made = []

    def fake_measure(spec, timeout):
        made.append((spec["channels"], spec["K"]))
        return {"status": "ok", "extra_kib": 10.0, "time_s": 1.0, "n": 1, "m": 16}

    monkeypatch.setattr(memory, "measure", fake_measure)
    small = dict(channels_steps=5, steps=(5,), steps_channels=4, peers=(), estimators=("MAML",))
    cfg = memory.MemoryConfig(channels=(4,), num_samples=1000, **small)
    memory.run(tmp_path, cfg, progress=False)
    assert made == [(4, 5)]
    more = memory.MemoryConfig(channels=(4, 8), num_samples=1000, **small)
    memory.run(tmp_path, more, progress=False, resume=True)
    assert made == [(4, 5), (8, 5)]  # (4, 5) was kept, not run again
    assert [(r["channels"], r["status"]) for r in memory.read_csv(tmp_path / "memory.csv")] == [
        (4, "ok"),
        (8, "ok"),
    ]


def test_prediction_is_linear_in_k_and_a_power_law_in_channels():
    def row(c, k, e, impl="jax", est="MAML", status="ok"):
        return {
            "implementation": impl,
            "estimator": est,
            "channels": c,
            "K": k,
            "status": status,
            "extra_kib": e,
        }

    rows = [row(16, 10, 100.0), row(32, 10, 300.0), row(64, 10, 900.0)]
    # Along C at K = 10: the slope between 32 and 64 is log(3)/log(2), clamped to [1, 2].
    assert memory.predict(rows, "jax", "MAML", 128, 10) == pytest.approx(2700.0)
    rows += [row(64, 20, 1400.0), row(64, 40, 2400.0)]
    # Along K at C = 64: the least-squares line through (10, 900), (20, 1400), (40, 2400).
    assert memory.predict(rows, "jax", "MAML", 64, 80) == pytest.approx(4400.0)
    # One point at a C: proportional to K upwards, never below it downwards.
    one = [row(16, 10, 100.0)]
    assert memory.predict(one, "jax", "MAML", 16, 30) == pytest.approx(300.0)
    assert memory.predict(one, "jax", "MAML", 16, 5) == pytest.approx(100.0)
    # Other implementations, estimators, failed runs and smaller-only data do not count.
    assert memory.predict(rows, "torch-func", "MAML", 64, 10) is None
    assert memory.predict(rows, "jax", "FOMAML", 64, 10) is None
    assert memory.predict([row(16, 10, 5.0, status="timeout")], "jax", "MAML", 32, 10) is None
    assert memory.predict(rows, "jax", "MAML", 8, 10) is None


def test_points_run_each_distinct_point_once_in_sweep_order():
    cfg = memory.MemoryConfig()
    assert memory.points(cfg) == [
        (16, 10),
        (32, 10),
        (64, 10),
        (128, 10),
        (256, 10),
        (256, 5),
        (256, 20),
        (256, 40),
        (256, 80),
    ]
    assert memory.num_params(64) == _n(64)


@pytest.mark.parametrize(
    ("kwargs", "pattern"),
    [
        ({"channels": ()}, "`channels` must be a non-empty sequence"),
        ({"steps": (5, 0)}, "`steps`"),
        ({"limit_gib": 0.0}, "`limit_gib` must be a finite number > 0"),
        ({"timeout": float("inf")}, "`timeout`"),
        ({"time_limit": -1.0}, "`time_limit`"),
        ({"threads": -1}, "`threads`"),
        ({"estimators": ("Reptile",)}, "`estimators` must be taken from"),
        ({"peers": ("learn2learn",)}, "`peers` must be taken from"),
    ],
)
def test_bad_settings_name_the_argument(kwargs, pattern):
    with pytest.raises((ValueError, TypeError), match=pattern):
        memory.MemoryConfig(**kwargs)


def test_the_command_reports_bad_settings(tmp_path, capsys):
    assert cli.main(["memory", "--limit-gib", "-1", "--out", str(tmp_path)]) == 2
    assert "`limit_gib` must be a finite number > 0" in capsys.readouterr().err


@pytest.mark.slow
def test_importing_fobmaml_and_its_peers_imports_no_framework():
    code = (
        "import sys, fobmaml, fobmaml.cli\n"
        "assert 'fobmaml.peers' not in sys.modules, 'import fobmaml imported fobmaml.peers'\n"
        "import fobmaml.peers, fobmaml.peers.problems, fobmaml.peers._network\n"
        "import fobmaml.experiments.memory\n"
        "bad = [m for m in ('torch', 'jax', 'jaxlib', 'higher') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_threads_reach_every_runtime_of_a_measuring_process(monkeypatch):
    monkeypatch.setenv("XLA_FLAGS", "--xla_dump_to=/tmp/x")
    env = memory.thread_environment(1)
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "1"
    assert env["XLA_FLAGS"] == (
        "--xla_dump_to=/tmp/x --xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
    )
    assert "intra_op_parallelism_threads=2" in memory.thread_environment(2)["XLA_FLAGS"]
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    assert "OMP_NUM_THREADS" not in memory.thread_environment(0)  # each at its own default
