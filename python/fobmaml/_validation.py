"""Argument checks shared by the public API.

Every check names the argument and says what was expected, e.g.
"`lam` must be > 0 for FOBMAML (got 0.0)".
"""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np


def _describe(value: object) -> str:
    return f"{type(value).__name__} {value!r}" if not isinstance(value, np.ndarray) else "array"


def real_scalar(value: object, name: str) -> float:
    """`value` as a finite Python float; TypeError for non-reals, ValueError for NaN/Inf."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        raise TypeError(f"`{name}` must be a real number (got {_describe(value)})")
    try:
        out = float(value)
    except OverflowError:  # an integer beyond float64's range
        raise ValueError(
            f"`{name}` must be finite (got an integer of {int(value).bit_length()} bits)"
        ) from None
    if not np.isfinite(out):
        raise ValueError(f"`{name}` must be finite (got {out})")
    return out


def positive(value: object, name: str, context: str = "") -> float:
    out = real_scalar(value, name)
    if out <= 0.0:
        raise ValueError(f"`{name}` must be > 0{context} (got {out})")
    return out


def non_negative(value: object, name: str, context: str = "") -> float:
    out = real_scalar(value, name)
    if out < 0.0:
        raise ValueError(f"`{name}` must be >= 0{context} (got {out})")
    return out


def in_unit_interval(value: object, name: str) -> float:
    """A value in [0, 1)."""
    out = real_scalar(value, name)
    if not 0.0 <= out < 1.0:
        raise ValueError(f"`{name}` must be in [0, 1) (got {out})")
    return out


def integer(
    value: object, name: str, minimum: int | None = None, maximum: int | None = None
) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        raise TypeError(f"`{name}` must be an integer (got {_describe(value)})")
    out = int(value)
    if minimum is not None and out < minimum:
        raise ValueError(f"`{name}` must be >= {minimum} (got {out})")
    if maximum is not None and out > maximum:
        raise ValueError(f"`{name}` must be <= {maximum} (got {out})")
    return out


def choice(value: object, name: str, options: tuple[str, ...]) -> str:
    if not isinstance(value, str) or value not in options:
        expected = ", ".join(repr(o) for o in options)
        raise ValueError(f"`{name}` must be one of {expected} (got {value!r})")
    return value


def float_array(
    value: object, name: str, ndim: int | None = None, shape_doc: str = ""
) -> np.ndarray:
    """`value` as a finite, C-contiguous, aligned float64 array (no copy when it already is one).

    Integer and floating dtypes are accepted; bool, complex, object and string
    dtypes raise TypeError. NaN/Inf raise ValueError.
    """
    arr = np.asarray(value)
    if arr.dtype.kind not in "iuf":
        raise TypeError(f"`{name}` must be a real-valued numeric array (got dtype {arr.dtype})")
    if ndim is not None and arr.ndim != ndim:
        doc = f" of shape {shape_doc}" if shape_doc else ""
        raise ValueError(f"`{name}` must be a {ndim}-D array{doc} (got shape {arr.shape})")
    # order="C" keeps 0-d arrays 0-d (ascontiguousarray would make them 1-d); casting
    # from a wider type (long double) may overflow: that is reported as non-finite below.
    with np.errstate(over="ignore", invalid="ignore"):
        arr = np.asarray(arr, dtype=np.float64, order="C")
    if not arr.flags.aligned:  # e.g. a view at an odd byte offset; the kernels need aligned doubles
        arr = arr.copy()
    if not np.isfinite(arr).all():
        raise ValueError(f"`{name}` must contain only finite values (found NaN or Inf)")
    return arr


def task_batch(value: object, what: str = "`tasks`") -> Any:
    """`value` if it is a fobmaml task batch (a :class:`fobmaml.TaskBatch`), else TypeError.

    ``what`` names the argument in the message, e.g. "`eval_tasks`".
    """
    from .tasks import TaskBatch  # here: tasks imports this module

    if not isinstance(value, TaskBatch):
        raise TypeError(
            f"{what} must be a fobmaml task batch such as QuadraticTasks or MLPTasks "
            f"(got {type(value).__name__})"
        )
    return value


def inner_loop(value: object) -> Any:
    """`value` if it is a :class:`fobmaml.InnerLoop`, else TypeError naming `inner`."""
    from .inner import InnerLoop  # here: inner imports this module

    if not isinstance(value, InnerLoop):
        raise TypeError(f"`inner` must be a fobmaml.InnerLoop (got {type(value).__name__})")
    return value


def params_vector(x: object, n: int, name: str = "x") -> np.ndarray:
    """Meta-parameters: a finite float64 vector of length n."""
    arr = float_array(x, name, ndim=1, shape_doc=f"({n},)")
    if arr.shape[0] != n:
        raise ValueError(f"`{name}` must have shape ({n},) to match the tasks (got {arr.shape})")
    return arr


def safe_mean(values: np.ndarray) -> float:
    """The mean of finite values, without overflowing where their sum would (1e308 + 1e308)."""
    v = np.asarray(values, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        mean = float(np.mean(v))
    if not np.isfinite(mean) and np.isfinite(v).all():
        mean = float(np.sum(v / v.size))
    return mean
