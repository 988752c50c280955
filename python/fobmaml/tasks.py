"""Task families: batches of tasks that the C++ kernels read in place."""

from __future__ import annotations

import numpy as np

from . import _core
from . import _validation as check

__all__ = ["TaskBatch", "QuadraticTasks"]


class TaskBatch:
    """A batch of m tasks over parameters of dimension n (a family's common base)."""

    _handle: object

    @property
    def num_tasks(self) -> int:
        """m, the number of tasks."""
        return int(self._handle.num_tasks)

    @property
    def dim(self) -> int:
        """n, the dimension of the (meta-)parameters."""
        return int(self._handle.dim)

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index) -> TaskBatch:
        """The sub-batch of the tasks selected by `index` (an int, slice or index array)."""
        raise NotImplementedError

    def _select(self, index) -> np.ndarray:
        idx = np.arange(self.num_tasks)[index]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("`index` selects no task; a task batch needs at least one task")
        return idx


def _symmetry_check(M: np.ndarray, name: str) -> None:
    # Relative tolerance: a few ulps of the largest entry, as produced by (M + M^T)/2 in float64.
    asym = np.abs(M - np.swapaxes(M, 1, 2)).max(axis=(1, 2))
    scale = np.maximum(np.abs(M).max(axis=(1, 2)), np.finfo(np.float64).tiny)
    bad = np.flatnonzero(asym > 1e-10 * scale)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"`{name}` must hold symmetric matrices: {name}[{i}] differs from its transpose "
            f"by up to {asym[i]:.3g} (symmetrize with ({name} + {name}.transpose(0, 2, 1)) / 2)"
        )


class QuadraticTasks(TaskBatch):
    r"""A batch of quadratic tasks.

    .. math::

        g_i(\phi) = \tfrac12 \phi^\top A_i \phi - b_i^\top \phi, \qquad
        f_i(\phi) = \tfrac12 \phi^\top B_i \phi - c_i^\top \phi .

    Parameters
    ----------
    A : array_like, shape (m, n, n)
        Symmetric support-loss matrices.
    b : array_like, shape (m, n)
        Support-loss linear terms.
    B : array_like, shape (m, n, n), optional
        Symmetric query-loss matrices; default `A` (the query loss is the support loss).
    c : array_like, shape (m, n), optional
        Query-loss linear terms; default `b`.

    Notes
    -----
    Arrays that already are float64 and C-contiguous are used in place, without a
    copy (the kernels read them through row-major Eigen maps). Do not modify them
    while the task batch is in use.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> A = np.stack([np.eye(3), 2 * np.eye(3)]); b = np.ones((2, 3))
    >>> tasks = fm.QuadraticTasks(A, b)
    >>> tasks.num_tasks, tasks.dim
    (2, 3)
    """

    def __init__(
        self,
        A: np.ndarray,
        b: np.ndarray,
        B: np.ndarray | None = None,
        c: np.ndarray | None = None,
    ) -> None:
        A = check.float_array(A, "A", ndim=3, shape_doc="(m, n, n)")
        m, n = A.shape[0], A.shape[1]
        if A.shape[2] != n:
            raise ValueError(f"`A` must have shape (m, n, n) with square matrices (got {A.shape})")
        if m == 0 or n == 0:
            raise ValueError(
                f"`A` must hold at least one task of dimension >= 1 (got shape {A.shape})"
            )
        b = check.float_array(b, "b", ndim=2, shape_doc=f"({m}, {n})")
        if b.shape != (m, n):
            raise ValueError(f"`b` must have shape ({m}, {n}) to match `A` (got {b.shape})")
        _symmetry_check(A, "A")
        self.separate_query = B is not None or c is not None
        if self.separate_query:
            B = A if B is None else check.float_array(B, "B", ndim=3, shape_doc=f"({m}, {n}, {n})")
            c = b if c is None else check.float_array(c, "c", ndim=2, shape_doc=f"({m}, {n})")
            if B.shape != (m, n, n):
                raise ValueError(
                    f"`B` must have shape ({m}, {n}, {n}) to match `A` (got {B.shape})"
                )
            if c.shape != (m, n):
                raise ValueError(f"`c` must have shape ({m}, {n}) to match `A` (got {c.shape})")
            _symmetry_check(B, "B")
        self.A, self.b = A, b
        self.B, self.c = (B, c) if self.separate_query else (A, b)
        self._handle = _core.QuadraticTasks(A, b, B, c)

    def __getitem__(self, index) -> QuadraticTasks:
        idx = self._select(index)
        if self.separate_query:
            return QuadraticTasks(self.A[idx], self.b[idx], self.B[idx], self.c[idx])
        return QuadraticTasks(self.A[idx], self.b[idx])

    def __repr__(self) -> str:
        q = ", separate query" if self.separate_query else ""
        return f"QuadraticTasks(m={self.num_tasks}, n={self.dim}{q})"
