"""The benchmark scripts run end to end (``--quick``) and write what bench/README.md says.

Nothing here looks at a time: the checks are on the files' structure and on the numbers
that are not timings (the peers' agreement, the predicted workspace).
"""

import csv
import json
from pathlib import Path

import gil
import memory  # bench/ is on the pytest pythonpath (pyproject.toml)
import pytest
import roofline
import threads

pytestmark = pytest.mark.slow


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


def test_threads_quick(tmp_path):
    assert threads.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "threads.csv")
    assert {r["estimator"] for r in rows} == {"FOMAML", "MAML", "FOBMAML"}
    for r in rows:
        one, top = float(r["one_thread_s"]), float(r["all_threads_s"])
        assert one > 0 and top > 0
        assert float(r["speedup"]) == pytest.approx(one / top)


def test_gil_quick(tmp_path, capsys):
    assert gil.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "gil.json").read_text())
    assert data["quick"] is True and len(data["cases"]) == 4
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 4
    for line, (name, r) in zip(printed, data["cases"].items()):
        assert line.startswith(name + ": one call")
        assert r["one_call_s"] > 0 and r["two_calls_s"] > 0
        assert r["ratio"] == pytest.approx(r["two_calls_s"] / r["one_call_s"])


def test_roofline_quick(tmp_path):
    assert roofline.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "roofline.json").read_text())
    for run in data["runs"].values():
        assert run["triad_gb_per_s"] > 0
        assert set(run["quadratic"]) == {"FOMAML", "FOBMAML(symmetric)"}
        assert set(run["mlp"]) == {"sinusoid", "mnist1d"}


def test_memory_quick_measures_and_predicts(tmp_path):
    assert memory.main(["--quick", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "memory.csv")
    assert len(rows) == 4 * 2  # four estimators, K in {10, 100}
    pred = {(r["estimator"], int(r["K"])): int(r["predicted_bytes"]) for r in rows}
    # MAML's workspace holds the trajectory, K n doubles per thread; FO-B-MAML's does not
    # depend on K. These are the kernels' own predictions, not measurements.
    assert pred[("MAML", 100)] > pred[("MAML", 10)]
    assert pred[("FOBMAML(symmetric)", 100)] == pred[("FOBMAML(symmetric)", 10)]
    assert all("extra_kib" in r and r["extra_kib"] != "" for r in rows)
    assert (tmp_path / "memory.png").stat().st_size > 0
    assert memory.main(["--out", str(tmp_path), "--replot"]) == 0


def test_compare_quick(tmp_path):
    """fobmaml alone, or next to JAX where it is installed (which must then agree)."""
    import compare

    args = ["--quick", "--problems", "quadratic-n100", "--peers", "jax", "--repeat", "1"]
    assert compare.main([*args, "--max-time", "0.1", "--out", str(tmp_path)]) == 0
    rows = _rows(tmp_path / "peers.csv")
    ours = [r for r in rows if r["implementation"] == "fobmaml"]
    assert [r["estimator"] for r in ours] == list(compare.P.ESTIMATORS)
    assert all(r["status"] == "ok" for r in rows)
    for name in ("peers.png", "machine.json", "table.txt"):
        assert (tmp_path / name).stat().st_size > 0


def test_torch_memory_predicts_before_running(tmp_path):
    """bench/torch_memory.py: runs measure, and a run predicted past the limit is skipped."""
    import extras

    extras.require("torch")
    import torch_memory

    rows = [
        {"estimator": "MAML(autograd)", "C": 16, "K": 1, "extra_kib": 100.0},
        {"estimator": "MAML(autograd)", "C": 16, "K": 5, "extra_kib": 500.0},
        {"estimator": "MAML(autograd)", "C": 64, "K": 1, "extra_kib": 400.0},
        {"estimator": "MAML(autograd)", "C": 32, "K": 1, "extra_kib": 200.0},
    ]
    # Linear in K at the same C; a power law in C (here exponent 1) for a new C.
    assert torch_memory.predict(rows, "MAML(autograd)", 16, 10) == pytest.approx(1000.0)
    assert torch_memory.predict(rows, "MAML(autograd)", 128, 1) == pytest.approx(800.0)
    assert torch_memory.predict(rows, "MAML(recursion)", 16, 1) is None

    args = ["--quick", "--ks", "1", "2", "--channels", "4", "--limit-gib", "1e-6"]
    name = "FOBMAML(symmetric)"
    assert torch_memory.main([*args, "--estimators", name, "--out", str(tmp_path)]) == 0
    first, second = _rows(tmp_path / "torch_memory.csv")
    assert (first["estimator"], first["K"], second["K"]) == (name, "1", "2")
    assert first["status"] == "ok" and float(first["extra_kib"]) >= 0
    assert float(first["loss"]) > 0
    # The second run is predicted (from the first) to pass the 1e-6 GiB limit: not made.
    assert second["status"].startswith("out of memory (predicted")
    assert second["extra_kib"] == ""
    assert (tmp_path / "torch_memory.png").stat().st_size > 0
    assert torch_memory.main(["--out", str(tmp_path), "--replot"]) == 0
