"""bench/distributed.py runs end to end (``--quick``) and writes what bench/README.md says.

It runs as a script, in a subprocess, as a user runs it: the file shares its name with
Dask's package, which it must hand over to (bench/README.md). Nothing here looks at a time.
"""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import extras
import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def test_distributed_quick(tmp_path):
    extras.require("dask.distributed")
    args = ["--quick", "--repeat", "1", "--iterations", "2", "--out", str(tmp_path)]
    out = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "distributed.py"), *args],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    data = json.loads((tmp_path / "distributed.json").read_text())
    assert data["quick"] is True and set(data["cases"]) == {"quadratic", "sinusoid"}
    for case in data["cases"].values():
        assert case["bit_identical"] is True
        local, dask = case["in_process_s_per_iteration"], case["dask_s_per_iteration"]
        assert case["ratio_dask_over_in_process"] == pytest.approx(dask / local)
        moved = case["bytes_per_iteration"]
        assert moved["total"] == pytest.approx(sum(v for k, v in moved.items() if k != "total"))
        # The rows come back: at least 8 m n bytes per iteration.
        assert moved["workers -> client process"] >= case["result_rows_bytes"]
        assert [row["workers"] for row in case["projection"]] == [1, 2, 4, 8, 16, 32, 64]
    # The fixed batch is sent once: its placement moved more than a whole batch, an
    # iteration less than one.
    quad = data["cases"]["quadratic"]
    assert quad["first_run_bytes_incl_placement"]["total"] > quad["one_batch_pickled_bytes"]
    assert quad["bytes_per_iteration"]["total"] < quad["one_batch_pickled_bytes"]
    with open(tmp_path / "projection.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 2 * 7 and float(rows[0]["projected_speedup_vs_1_worker"]) == 1.0
