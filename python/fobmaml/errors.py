"""Exceptions raised by the kernels, and the translation of per-task statuses.

The C++ kernels never throw inside their parallel region: each task records a
status (code, stage, step, value), and :func:`raise_for_status` turns the first
failing task, in task order, into one of:

- :class:`FloatingPointError`: a NaN/Inf appeared, or the inner loop diverged
  (its gradient norm grew past 1e8 times (1 + its initial norm)).
- :class:`NotPositiveDefiniteError`: ``∇²g_i + λI`` is not positive definite where
  the exact meta-gradient needs it (a subclass of ``numpy.linalg.LinAlgError``,
  itself a ``ValueError``).
- :class:`ConvergenceError`: a solve to tolerance hit its iteration cap
  (a ``RuntimeError``).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._native import core as _core

__all__ = ["NotPositiveDefiniteError", "ConvergenceError", "TaskStatus", "raise_for_status"]


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The inner Hessian plus λI is not positive definite where it must be."""


class ConvergenceError(RuntimeError):
    """A solve to tolerance did not reach it within its iteration cap."""


_STAGE_TEXT = {
    "none": "computation",
    "inner_loop": "inner loop",
    "perturbed_plus": "perturbed inner loop (s = +delta)",
    "perturbed_minus": "perturbed inner loop (s = -delta)",
    "backward": "MAML backward recursion",
    "cg": "conjugate-gradient solve",
    "inner_solve": "inner problem solved to tolerance",
    "direct_solve": "closed-form solve",
    "query": "query loss",
    "curvature_probe": "curvature probe (Lanczos) of ∇²g + λI at the inner solution",
    "output": "returned estimate or loss (each step was finite; the final combination, "
    "e.g. λ/δ times a difference, overflowed)",
}


class TaskStatus(NamedTuple):
    """Per-task outcome arrays of one kernel call (all of length m)."""

    code: np.ndarray
    stage: np.ndarray
    step: np.ndarray
    value: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the tasks that succeeded."""
        return self.code == 0

    def describe(self, i: int) -> str:
        """A sentence on task i's failure ("" if it succeeded)."""
        code = _core.STATUS_CODES[int(self.code[i])]
        if code == "ok":
            return ""
        stage = _STAGE_TEXT[_core.STATUS_STAGES[int(self.stage[i])]]
        step = int(self.step[i])
        where = f"task {i}, step {step}" if step >= 0 else f"task {i}"
        if code == "non_finite":
            return f"non-finite value (NaN or Inf) at {where} of the {stage}"
        if code == "diverged":
            return (
                f"diverged at {where} of the {stage}: the inner gradient norm reached "
                f"{self.value[i]:.3g}, over 1e8 times (1 + its initial norm)"
            )
        if code == "not_pos_def":
            return f"∇²g + λI is not positive definite at {where} of the {stage}" + (
                f" (curvature {self.value[i]:.3g})" if self.value[i] != 0 else ""
            )
        return f"no convergence at {where} of the {stage}" + (
            f" (residual {self.value[i]:.3g})" if self.value[i] != 0 else ""
        )


def raise_for_status(status: TaskStatus, who: str, hint: str = "") -> None:
    """Raise the documented exception for the first failed task, if any."""
    if not status.code.any():
        return
    bad = np.flatnonzero(status.code != 0)
    i = int(bad[0])
    code = _core.STATUS_CODES[int(status.code[i])]
    more = f" ({bad.size} of {status.code.size} tasks failed)" if bad.size > 1 else ""
    msg = f"{who}: {status.describe(i)}{more}"
    if code in ("non_finite", "diverged"):
        raise FloatingPointError(msg + (hint or "; reduce the inner `lr` or check the task data"))
    if code == "not_pos_def":
        raise NotPositiveDefiniteError(msg + (hint or "; increase `lam`"))
    raise ConvergenceError(msg + (hint or "; raise `max_iter` or loosen `tol`"))
