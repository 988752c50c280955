"""The paper's synthetic family of quadratic tasks."""

from __future__ import annotations

import numpy as np

from .. import _validation as check
from ..tasks import QuadraticTasks


def _random_spd(rng: np.random.Generator, n: int, eigenvalues: np.ndarray) -> np.ndarray:
    # A Haar-distributed rotation (QR of a Gaussian matrix with the signs of R's diagonal
    # folded into Q), then Q diag(eigenvalues) Q^T, symmetrized to remove rounding.
    Q, R = np.linalg.qr(rng.standard_normal((n, n)))
    Q *= np.sign(np.diag(R))
    A = (Q * eigenvalues) @ Q.T
    return 0.5 * (A + A.T)


def quadratic_tasks(
    m: int,
    n: int,
    kappa: float = 100.0,
    *,
    L: float = 1.0,
    task_spread: float = 1.0,
    seed: int = 0,
    separate_query: bool = False,
) -> QuadraticTasks:
    r"""Draw m quadratic tasks of dimension n whose Hessians have condition number kappa.

    For each task i:

    - ``A_i = Q_i diag(s) Q_i^T`` with ``Q_i`` a Haar-random rotation and the
      eigenvalues ``s`` spaced geometrically from ``L`` down to ``L / kappa``
      (so ``cond(A_i) = kappa`` exactly, ``||A_i|| = L``; with n = 1 the single
      eigenvalue is L and kappa has no effect);
    - a task optimum ``θ_i = θ̄ + task_spread · z_i`` with ``θ̄, z_i ~ N(0, I)``
      (``θ̄`` shared by all tasks), and ``b_i = A_i θ_i``, so that ``g_i`` is
      minimised at ``θ_i``;
    - with ``separate_query=True``, a query loss from an independent rotation with
      the same spectrum and the same optimum: ``B_i = Q'_i diag(s) Q'_i^T``,
      ``c_i = B_i θ_i``. Otherwise the query loss is the support loss.

    Parameters
    ----------
    m, n : int
        Number of tasks and dimension.
    kappa : float
        Condition number of every ``A_i`` (>= 1).
    L : float
        Largest eigenvalue of every ``A_i`` (> 0).
    task_spread : float
        Standard deviation of the task optima around their common centre (>= 0).
    seed : int
        Seed of ``numpy.random.default_rng``.
    separate_query : bool
        Draw a separate query loss.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(3, 5, kappa=1e3, seed=0)
    >>> round(float(np.linalg.cond(tasks.A[0])))
    1000
    """
    m = check.integer(m, "m", minimum=1)
    n = check.integer(n, "n", minimum=1)
    kappa = check.real_scalar(kappa, "kappa")
    if kappa < 1.0:
        raise ValueError(f"`kappa` must be >= 1 (got {kappa})")
    L = check.positive(L, "L")
    task_spread = check.non_negative(task_spread, "task_spread")
    seed = check.integer(seed, "seed", minimum=0)
    if not isinstance(separate_query, (bool, np.bool_)):
        raise TypeError(f"`separate_query` must be a bool (got {type(separate_query).__name__})")

    rng = np.random.default_rng(seed)
    spectrum = L * np.geomspace(1.0, 1.0 / kappa, n) if n > 1 else np.array([L])
    centre = rng.standard_normal(n)
    A = np.empty((m, n, n))
    b = np.empty((m, n))
    B = np.empty((m, n, n)) if separate_query else None
    c = np.empty((m, n)) if separate_query else None
    for i in range(m):
        theta = centre + task_spread * rng.standard_normal(n)
        A[i] = _random_spd(rng, n, spectrum)
        b[i] = A[i] @ theta
        if separate_query:
            B[i] = _random_spd(rng, n, spectrum)
            c[i] = B[i] @ theta
    return QuadraticTasks(A, b, B, c)
