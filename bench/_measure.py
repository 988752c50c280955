"""Small measurement helpers shared by memory.py, roofline.py and threads.py."""

from __future__ import annotations

import json
import os
import platform
import time
from pathlib import Path

import numpy as np

import fobmaml as fm


def best_time(fn, repeat: int = 7, inner: int = 1) -> float:
    """Best wall time of one call to fn (seconds): min over `repeat` rounds of `inner` calls.

    The minimum is the least disturbed estimate on a shared machine.
    """
    fn()  # warm-up
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        best = min(best, (time.perf_counter() - t0) / inner)
    return best


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:  # pragma: no cover
        pass
    return platform.processor() or "unknown"


def machine() -> dict:
    return {
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "fobmaml": fm.__version__,
        "build": fm.build_info(),
        "numpy": np.__version__,
        "python": platform.python_version(),
        "load_average_1min": load_average(),
    }


def write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n")


def new_figure(width: float = 6.0, height: float = 4.2):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), layout="constrained")
    return fig, fig.subplots()
