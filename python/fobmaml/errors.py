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

The outer optimizers raise :class:`NonFiniteStepError` (a ``FloatingPointError``) when
a step overflows. FO-B-MAML and HF-MAML issue a :class:`NonSmoothWarning` on a network
whose gradient jumps (ReLU, max pooling).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._native import core as _core

__all__ = [
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "NonFiniteStepError",
    "NonSmoothWarning",
    "Code",
    "Stage",
    "TaskStatus",
    "raise_for_status",
]

#: The per-task status codes of the kernels (``cpp/include/fobmaml/status.hpp``):
#: ``ok``, ``non_finite``, ``diverged``, ``not_pos_def``, ``not_converged``.
Code = _core.Code
#: The computation a status refers to (``cpp/include/fobmaml/status.hpp``).
Stage = _core.Stage


class NotPositiveDefiniteError(np.linalg.LinAlgError):
    """The inner Hessian plus λI is not positive definite where it must be."""


class ConvergenceError(RuntimeError):
    """A solve to tolerance did not reach it within its iteration cap."""


class NonSmoothWarning(UserWarning):
    """A finite-difference estimator meets a layer whose gradient jumps.

    FO-B-MAML (a difference between two perturbed inner solutions) and HF-MAML (a
    difference of gradients for each Hessian-vector product) assume a differentiable
    gradient of the inner loss. ReLU and max pooling make it jump: where one perturbed
    loop crosses a kink and the other does not, the estimate measures the jump divided by
    the step, and its error grows as the step shrinks. MAML and iMAML, whose
    Hessian-vector products take relu'' = 0, are not affected. Issued by
    :class:`fobmaml.FOBMAML` and :class:`fobmaml.HFMAML` on a :class:`fobmaml.NetTasks`
    (or ReLU :class:`fobmaml.MLPTasks`) batch, and by their :mod:`fobmaml.torch`
    counterparts on a ``torch.nn.Module``.
    """


class NonFiniteStepError(FloatingPointError):
    """An outer optimizer step overflowed: its update, its state or the new parameters.

    Raised by the optimizers of :mod:`fobmaml.optim` and by
    :func:`fobmaml.optim.apply_updates`; :func:`fobmaml.meta_train` reports it as a
    divergence of the outer loop.

    Attributes
    ----------
    what : str
        What became non-finite: ``"update"``, ``"optimizer state"`` or ``"x"`` (the
        parameters plus the update).

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> opt = fm.GD(lr=1.0)
    >>> try:
    ...     opt.step(np.array([1e308]), np.array([-1e308]), opt.init(np.zeros(1)))
    ... except fm.NonFiniteStepError as exc:
    ...     print(exc.what)
    x
    """

    def __init__(self, message: str, what: str) -> None:
        super().__init__(message)
        self.what = what

    def __reduce__(self):
        return (type(self), (str(self), self.what))


_STAGE_TEXT = {
    Stage.none: "computation",
    Stage.inner_loop: "inner loop",
    Stage.perturbed_plus: "perturbed inner loop (s = +delta)",
    Stage.perturbed_minus: "perturbed inner loop (s = -delta)",
    Stage.backward: "MAML backward recursion",
    Stage.cg: "conjugate-gradient solve",
    Stage.inner_solve: "inner problem solved to tolerance",
    Stage.direct_solve: "closed-form solve",
    Stage.query: "query loss",
    Stage.curvature_probe: "curvature probe (Lanczos) of ∇²g + λI at the inner solution",
    Stage.output: "returned estimate or loss (each step was finite; the final combination, "
    "e.g. λ/δ times a difference, overflowed)",
}

#: The codes of a diverging task: what ``meta_train(on_divergence="skip")`` drops.
_DIVERGENCE = (int(Code.non_finite), int(Code.diverged))


class TaskStatus(NamedTuple):
    """Per-task outcome arrays of one kernel call (all of length m).

    ``code`` and ``stage`` hold the integer values of :data:`Code` and :data:`Stage`;
    ``step`` is the 1-based step of the failing computation (-1 where none applies) and
    ``value`` extra information (a curvature, a residual, a gradient norm), 0 if unused.
    """

    code: np.ndarray
    stage: np.ndarray
    step: np.ndarray
    value: np.ndarray

    @property
    def ok(self) -> np.ndarray:
        """Boolean mask of the tasks that succeeded."""
        return self.code == int(Code.ok)

    @property
    def diverged(self) -> np.ndarray:
        """Boolean mask of the tasks that diverged: a NaN/Inf, or a diverging inner loop."""
        return np.isin(self.code, _DIVERGENCE)

    def restricted(self, mask: np.ndarray) -> TaskStatus:
        """The same statuses, with every task outside ``mask`` reported as ok."""
        return self._replace(code=np.where(mask, self.code, int(Code.ok)))

    def describe(self, i: int) -> str:
        """A sentence on task i's failure ("" if it succeeded)."""
        code = Code(int(self.code[i]))
        if code == Code.ok:
            return ""
        stage = _STAGE_TEXT[Stage(int(self.stage[i]))]
        step = int(self.step[i])
        where = f"task {i}, step {step}" if step >= 0 else f"task {i}"
        if code == Code.non_finite:
            return f"non-finite value (NaN or Inf) at {where} of the {stage}"
        if code == Code.diverged:
            return (
                f"diverged at {where} of the {stage}: the inner gradient norm reached "
                f"{self.value[i]:.3g}, over 1e8 times (1 + its initial norm)"
            )
        if code == Code.not_pos_def:
            return f"∇²g + λI is not positive definite at {where} of the {stage}" + (
                f" (curvature {self.value[i]:.3g})" if self.value[i] != 0 else ""
            )
        return f"no convergence at {where} of the {stage}" + (
            f" (residual {self.value[i]:.3g})" if self.value[i] != 0 else ""
        )


def raise_for_status(status: TaskStatus, who: str, hint: str = "") -> None:
    """Raise the documented exception for the first failed task, if any."""
    failed = ~status.ok
    if not failed.any():
        return
    bad = np.flatnonzero(failed)
    i = int(bad[0])
    code = Code(int(status.code[i]))
    more = f" ({bad.size} of {status.code.size} tasks failed)" if bad.size > 1 else ""
    msg = f"{who}: {status.describe(i)}{more}"
    if code in (Code.non_finite, Code.diverged):
        raise FloatingPointError(msg + (hint or "; reduce the inner `lr` or check the task data"))
    if code == Code.not_pos_def:
        raise NotPositiveDefiniteError(msg + (hint or "; increase `lam`"))
    raise ConvergenceError(msg + (hint or "; raise `max_iter` or loosen `tol`"))
