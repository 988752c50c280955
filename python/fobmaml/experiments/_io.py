"""Writing experiment outputs: CSV tables, JSON settings, figures."""

from __future__ import annotations

import csv
import json
import platform
from collections.abc import Iterable, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np


def with_overrides(cfg, **kw):
    """The frozen dataclass `cfg` with its fields replaced by the non-None keyword arguments.

    The command line passes every option, None where it was not given; only the given ones
    change the configuration.
    """
    return replace(cfg, **{k: v for k, v in kw.items() if v is not None})


def out_dir(path: str | Path) -> Path:
    p = Path(path)
    p.mkdir(parents=True, exist_ok=True)
    return p


def write_csv(path: Path, header: Sequence[str], rows: Iterable[Sequence[object]]) -> Path:
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        for row in rows:
            w.writerow([_fmt(v) for v in row])
    return path


def _fmt(v: object) -> object:
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return v


def _jsonable(obj: object) -> object:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return _jsonable(obj.tolist())
    if isinstance(obj, (np.integer,)):
        return int(obj)
    if isinstance(obj, (np.floating,)):
        return float(obj)
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    return obj


def write_json(path: Path, data: dict) -> Path:
    with open(path, "w") as fh:
        json.dump(_jsonable(data), fh, indent=2, sort_keys=False)
        fh.write("\n")
    return path


def environment() -> dict:
    """Versions and build information recorded with every experiment."""
    import fobmaml

    return {
        "fobmaml": fobmaml.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "platform": platform.platform(),
        "build": fobmaml.build_info(),
        "threads": fobmaml.get_num_threads(),
    }


def new_figure(ncols: int = 1, width: float = 5.2, height: float = 4.0):
    """A matplotlib Figure that needs no display and no pyplot state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height), layout="constrained")
    axes = fig.subplots(1, ncols, squeeze=False)[0]
    return fig, list(axes)
