r"""Diagnostics of the meta-objective: its local smoothness, and how it grows with the gradient.

The paper (Chayti & Jaggi, Section 3) shows that the MAML meta-objective
:math:`F(x) = \frac1m \sum_i f_i(\phi^*_i(x))` is not L-smooth: its local smoothness
grows with the meta-gradient norm,

.. math::

    \lVert \nabla^2 F(x) \rVert \le L_0 + L_1 \lVert \nabla F(x) \rVert ,

which is why normalized and clipped outer methods (:class:`fobmaml.SNGDM`,
:class:`fobmaml.ClippedGD`) are the sound choice. This module measures both sides
of that inequality with exact meta-gradients (:class:`fobmaml.Exact`):

- :func:`local_smoothness` estimates :math:`\lVert\nabla^2 F(x)\rVert` at one point, by
  gradient differences over random directions or by power iteration on
  finite-difference Hessian-vector products;
- :func:`smoothness_profile` does so at many points, which :func:`trajectory_points`
  (along a meta-training run) and :func:`random_points` (around an initialization)
  collect;
- :func:`fit_smoothness` fits :math:`L_0 + L_1 g` to the (gradient norm, smoothness)
  pairs, by least squares or as an upper envelope.

Failures
--------
:class:`fobmaml.Exact` fails, rather than returning garbage, where the exact
meta-gradient is not defined or cannot be computed (``∇²g_i(φ*) + λI`` not positive
definite, an inner solve that diverges or does not converge). :func:`local_smoothness`
always **propagates** these errors, with the same exception type
(:class:`fobmaml.NotPositiveDefiniteError`, :class:`FloatingPointError`,
:class:`fobmaml.ConvergenceError`) and a message that adds where it happened.
:func:`smoothness_profile` propagates them too by default (``errors="raise"``); with
``errors="record"`` it records the point as failed instead: ``ok[j]`` is False,
``reason[j]`` holds the exception type and message, and the point's numbers are NaN.
Invalid arguments always raise TypeError or ValueError naming the argument.
"""

from __future__ import annotations

import dataclasses
from typing import Any, NamedTuple

import numpy as np

from . import _validation as check
from ._frozen import frozen, store
from ._numerics import norm
from .errors import ConvergenceError, NotPositiveDefiniteError
from .estimators import Estimator, Exact
from .tasks import TaskBatch
from .train import TrainResult, meta_train

__all__ = [
    "SmoothnessOptions",
    "LocalSmoothness",
    "local_smoothness",
    "SmoothnessProfile",
    "smoothness_profile",
    "Trajectory",
    "trajectory_points",
    "random_points",
    "SmoothnessFit",
    "fit_smoothness",
]

#: The estimator failures that ``errors="record"`` records instead of raising.
ESTIMATOR_ERRORS = (NotPositiveDefiniteError, ConvergenceError, FloatingPointError)

METHODS = ("difference", "power")


# -- checks ---------------------------------------------------------------------------------
def _check_exact(exact: object) -> Exact:
    if isinstance(exact, type):
        raise TypeError(
            "`exact` must be a fobmaml.Exact instance such as Exact(inner), not a class"
        )
    if not isinstance(exact, Exact):
        raise TypeError(
            "`exact` must be a fobmaml.Exact estimator (the smoothness of F needs exact "
            f"meta-gradients; got {type(exact).__name__})"
        )
    return exact


def _check_directions(directions: object, n: int) -> np.ndarray:
    d = check.float_array(directions, "directions", ndim=2, shape_doc=f"(s, {n})")
    if d.shape[0] == 0 or d.shape[1] != n:
        raise ValueError(
            f"`directions` must have shape (s, {n}) with s >= 1 to match the tasks (got {d.shape})"
        )
    scale = np.abs(d).max(axis=1)
    if not (scale > 0).all():
        raise ValueError(
            f"`directions` must have nonzero rows (row {int(np.flatnonzero(scale == 0)[0])} is 0)"
        )
    d = d / scale[:, None]  # then the norms neither overflow nor underflow
    return d / np.linalg.norm(d, axis=1)[:, None]


class _Counter:
    """Exact meta-loss and meta-gradient at a point, counting calls and naming failures."""

    def __init__(self, exact: Exact, tasks: TaskBatch) -> None:
        self.exact, self.tasks, self.calls = exact, tasks, 0

    def __call__(self, x: np.ndarray, where: str) -> tuple[float, np.ndarray]:
        self.calls += 1
        try:
            loss, grad = self.exact.value_and_gradient(x, self.tasks)
        except ESTIMATOR_ERRORS as exc:
            raise type(exc)(
                f"local_smoothness: the exact meta-gradient at {where} failed: {exc}"
            ) from exc
        if not (np.isfinite(loss) and np.isfinite(grad).all()):
            # Defensive: a kernel that overflows without reporting it must not yield garbage.
            raise FloatingPointError(
                f"local_smoothness: the exact meta-loss or meta-gradient at {where} is not "
                f"finite (F = {loss}); the point is too far out for float64"
            )
        return float(loss), grad


# -- one point ------------------------------------------------------------------------------
@frozen(eq=False)
class SmoothnessOptions:
    r"""How :func:`local_smoothness` estimates :math:`\lVert\nabla^2 F(x)\rVert`.

    All fields are checked at construction (TypeError or ValueError naming the field).

    Parameters
    ----------
    method : {"difference", "power"}
        Gradient differences over random directions, or power iteration on
        finite-difference Hessian-vector products (see :func:`local_smoothness`).
    radius : float
        The norm r > 0 of the difference directions, and the finite-difference step
        :math:`\varepsilon` of the power method (absolute, in the units of x).
    samples : int
        Number of random directions (``"difference"``; ignored with ``directions``).
    power_iters : int
        Maximum number of power iterations (``"power"``), >= 1.
    power_tol : float
        Relative-change stopping tolerance of the power method, >= 0 (0: run until
        ``power_iters`` iterations or until two successive estimates are equal).
    seed : int
        Seed of the random directions or of :math:`v_0`.
    directions : array_like, shape (s, n), optional
        Explicit directions for ``"difference"`` (rescaled to norm r; rows must be
        nonzero); checked against n when used.

    Examples
    --------
    >>> SmoothnessOptions(method="power", power_iters=50).power_iters
    50
    """

    method: str = "difference"
    radius: float = 1e-3
    samples: int = 8
    power_iters: int = 20
    power_tol: float = 1e-6
    seed: int = 0
    directions: Any = None

    def __post_init__(self) -> None:
        method = check.choice(self.method, "method", METHODS)
        store(
            self,
            method=method,
            radius=check.positive(self.radius, "radius"),
            samples=check.integer(self.samples, "samples", minimum=1),
            power_iters=check.integer(self.power_iters, "power_iters", minimum=1),
            power_tol=check.non_negative(self.power_tol, "power_tol"),
            seed=check.integer(self.seed, "seed", minimum=0),
        )
        if self.directions is not None and method != "difference":
            raise ValueError("`directions` is only used with method='difference'")

    @classmethod
    def of(cls, options: object, overrides: dict, who: str) -> SmoothnessOptions:
        """``options`` (default: all defaults) with the fields in ``overrides`` replaced.

        ``who`` is the function that received ``overrides`` as keyword arguments.
        """
        if options is None:
            options = cls()
        elif not isinstance(options, cls):
            raise TypeError(
                f"`options` must be a SmoothnessOptions or None (got {type(options).__name__})"
            )
        names = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(overrides) - set(names))
        if unknown:
            raise TypeError(
                f"{who}() got an unexpected keyword argument {unknown[0]!r}: unknown "
                f"local_smoothness options: {', '.join(unknown)} "
                f"(expected some of {', '.join(names)})"
            )
        return dataclasses.replace(options, **overrides) if overrides else options

    def units(self, n: int | None) -> np.ndarray | None:
        """The explicit directions as unit rows, checked against n (None: none given)."""
        if self.directions is None or n is None:
            return None
        return _check_directions(self.directions, n)


class LocalSmoothness(NamedTuple):
    """What :func:`local_smoothness` returns.

    Attributes
    ----------
    smoothness : float
        The estimate of :math:`\\lVert\\nabla^2 F(x)\\rVert_2`: the largest difference
        ratio (``"difference"``) or the power-iteration estimate of the largest
        :math:`|\\text{eigenvalue}|` (``"power"``).
    mean : float
        ``"difference"``: the mean difference ratio over the directions. NaN for
        ``"power"``.
    eigenvalue : float
        ``"power"``: the signed Rayleigh quotient :math:`v^\\top \\widehat{H v}` at the last
        iterate (negative when the dominant curvature is negative). NaN for
        ``"difference"``.
    grad_norm : float
        :math:`\\lVert\\nabla F(x)\\rVert`.
    loss : float
        :math:`F(x)`.
    method : str
    evaluations : int
        The number of exact meta-gradient evaluations used (each on the whole batch).
    """

    smoothness: float
    mean: float
    eigenvalue: float
    grad_norm: float
    loss: float
    method: str
    evaluations: int


def local_smoothness(
    x: np.ndarray,
    tasks: TaskBatch,
    exact: Exact,
    options: SmoothnessOptions | None = None,
    **overrides: Any,
) -> LocalSmoothness:
    r"""Estimate the local smoothness :math:`\lVert\nabla^2 F(x)\rVert_2` of the meta-objective.

    :math:`F(x) = \frac1m\sum_i f_i(\phi^*_i(x))` on the fixed batch ``tasks``, with
    :math:`\nabla F` from ``exact`` (:class:`fobmaml.Exact`).

    ``method="difference"``: with ``samples`` directions :math:`u_j` of norm
    :math:`r` = ``radius`` (uniform on the sphere, from ``seed``, or the rows of
    ``directions`` rescaled to norm r),

    .. math::

        \rho_j = \frac{\lVert \nabla F(x + u_j) - \nabla F(x) \rVert}{\lVert u_j\rVert},
        \qquad \text{smoothness} = \max_j \rho_j, \qquad \text{mean} = \frac1s\sum_j \rho_j .

    Each :math:`\rho_j` is a local Lipschitz ratio of :math:`\nabla F`;
    :math:`\rho_j \to \lVert\nabla^2F(x)\,\hat u_j\rVert \le \lVert\nabla^2F(x)\rVert` as
    :math:`r \to 0`, with equality when :math:`\hat u_j` is a top eigenvector. The max
    is therefore a lower estimate that tightens with more directions (and is exact
    for a quadratic F when a top eigenvector is among the directions). Costs
    ``1 + samples`` exact evaluations.

    ``method="power"``: power iteration on the central-difference Hessian-vector product

    .. math::

        \widehat{Hv} = \frac{\nabla F(x + \varepsilon v) - \nabla F(x - \varepsilon v)}
                            {2\varepsilon}, \qquad \varepsilon = r,

    from a random unit :math:`v_0`: :math:`w_k = \widehat{H v_k}`,
    :math:`\sigma_k = \lVert w_k\rVert`, :math:`v_{k+1} = w_k/\sigma_k`, for at most
    ``power_iters`` iterations, stopping early once
    :math:`|\sigma_k - \sigma_{k-1}| \le` ``power_tol`` :math:`\cdot\,\sigma_k`. The
    estimate is the last :math:`\sigma_k`; for a symmetric Hessian (and exact HVPs) the
    :math:`\sigma_k` increase monotonically to the largest :math:`|\text{eigenvalue}|`,
    at a rate set by the ratio of the two largest :math:`|\text{eigenvalues}|`. Costs
    ``1 + 2k`` exact evaluations for k iterations.

    Parameters
    ----------
    x : array_like, shape (n,)
        The point.
    tasks : TaskBatch
        The fixed task batch that defines F.
    exact : Exact
        The exact estimator; its ``tol`` should be well below ``radius`` (the
        differences divide the solver's error by r).
    options : SmoothnessOptions, optional
        ``method``, ``radius``, ``samples``, ``power_iters``, ``power_tol``, ``seed``
        and ``directions`` (see :class:`SmoothnessOptions`); the defaults if omitted.
    **overrides
        Any of those fields by keyword, replacing the value in ``options``, e.g.
        ``local_smoothness(x, tasks, exact, method="power", power_iters=100)``.

    Returns
    -------
    LocalSmoothness
        ``smoothness``, ``mean``, ``eigenvalue``, ``grad_norm``, ``loss``, ``method``,
        ``evaluations``.

    Raises
    ------
    TypeError, ValueError
        For invalid arguments, naming the argument.
    NotPositiveDefiniteError, FloatingPointError, ConvergenceError
        When an exact meta-gradient fails (see :class:`fobmaml.Exact`); the same type,
        with the point (x, x + u_j or x ± εv) added to the message.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 6, kappa=10.0, seed=0)
    >>> exact = fm.Exact(fm.InnerLoop(lam=1.0))
    >>> est = local_smoothness(np.zeros(6), tasks, exact, method="power", power_iters=100)
    >>> est.method, est.evaluations <= 201, est.smoothness > 0
    ('power', True, True)
    """
    tasks = check.task_batch(tasks)
    exact = _check_exact(exact)
    x = check.params_vector(x, tasks.dim)
    opts = SmoothnessOptions.of(options, overrides, "local_smoothness")
    units = opts.units(tasks.dim)
    method, radius, samples = opts.method, opts.radius, opts.samples
    power_iters, power_tol, seed = opts.power_iters, opts.power_tol, opts.seed

    evaluate = _Counter(exact, tasks)
    loss, grad = evaluate(x, "x")
    grad_norm = norm(grad)
    rng = np.random.default_rng(seed)
    n = tasks.dim
    nan = float("nan")

    if method == "difference":
        if units is None:
            z = rng.standard_normal((samples, n))
            units = z / np.linalg.norm(z, axis=1)[:, None]
        ratios = np.empty(units.shape[0])
        for j, unit in enumerate(units):
            u = radius * unit
            _, g_u = evaluate(x + u, f"x + u_{j} (||u|| = {radius:g})")
            # ||u|| = r ||unit||: no underflow however small r is.
            ratios[j] = norm(g_u - grad) / (radius * norm(unit))
        return LocalSmoothness(
            float(ratios.max()), float(ratios.mean()), nan, grad_norm, loss, method, evaluate.calls
        )

    v = rng.standard_normal(n)
    v /= np.linalg.norm(v)
    sigma, rayleigh = nan, nan
    for k in range(power_iters):
        _, g_plus = evaluate(x + radius * v, f"x + eps v (eps = {radius:g}, power iteration {k})")
        _, g_minus = evaluate(x - radius * v, f"x - eps v (eps = {radius:g}, power iteration {k})")
        w = (g_plus - g_minus) / (2.0 * radius)
        previous, sigma, rayleigh = sigma, norm(w), float(v @ w)
        if sigma == 0.0:  # v is in the null space of the Hessian (F is flat along it)
            break
        v = w / sigma
        if k > 0 and abs(sigma - previous) <= power_tol * sigma:
            break
    return LocalSmoothness(sigma, nan, rayleigh, grad_norm, loss, method, evaluate.calls)


# -- many points ----------------------------------------------------------------------------
class SmoothnessProfile(NamedTuple):
    """What :func:`smoothness_profile` returns: one entry per point (arrays of length p).

    Attributes
    ----------
    smoothness, mean, eigenvalue, grad_norm, loss : numpy.ndarray of float
        The :class:`LocalSmoothness` fields of each point (NaN where the point failed).
    kind : numpy.ndarray of str
        The label of each point (e.g. ``"trajectory"``, ``"random r=1"``).
    ok : numpy.ndarray of bool
        False where the exact meta-gradient failed (``errors="record"`` only).
    reason : numpy.ndarray of str
        ``""`` for good points; for failed ones, the exception type and message.
    evaluations : numpy.ndarray of int
        Exact evaluations used per point (0 when the first one failed).
    """

    smoothness: np.ndarray
    mean: np.ndarray
    eigenvalue: np.ndarray
    grad_norm: np.ndarray
    loss: np.ndarray
    kind: np.ndarray
    ok: np.ndarray
    reason: np.ndarray
    evaluations: np.ndarray


def smoothness_profile(
    points: np.ndarray,
    tasks: TaskBatch,
    exact: Exact,
    options: SmoothnessOptions | None = None,
    *,
    kinds: Any = None,
    errors: str = "raise",
    progress: bool = False,
    desc: str | None = None,
    **overrides: Any,
) -> SmoothnessProfile:
    r"""Local smoothness, gradient norm and meta-loss at each of many points.

    Calls :func:`local_smoothness` at every row of ``points`` (with the same
    options, hence the same random directions at every point) and collects the
    pairs :math:`(\lVert\nabla F(x_j)\rVert, \widehat{\lVert\nabla^2F(x_j)\rVert})` that
    :func:`fit_smoothness` fits.

    Parameters
    ----------
    points : array_like, shape (p, n)
        The points, one a row.
    tasks : TaskBatch
        The fixed batch that defines F.
    exact : Exact
        The exact estimator.
    options : SmoothnessOptions, optional
        As for :func:`local_smoothness`, at every point.
    kinds : str or sequence of str, optional
        A label for every point (length p), or one label for all; default ``"point"``.
    errors : {"raise", "record"}
        What to do when an exact meta-gradient fails at a point
        (:class:`fobmaml.NotPositiveDefiniteError`, :class:`FloatingPointError`,
        :class:`fobmaml.ConvergenceError`): ``"raise"`` propagates the error (naming
        the point); ``"record"`` marks the point ``ok=False`` with the ``reason`` and
        NaN values, and goes on. Invalid arguments raise in both cases.
    progress : bool
        Show a tqdm progress bar.
    desc : str, optional
        The progress bar's label.
    **overrides
        Fields of :class:`SmoothnessOptions` by keyword, as for :func:`local_smoothness`.

    Returns
    -------
    SmoothnessProfile

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 6, kappa=10.0, seed=0)
    >>> pts = random_points(np.zeros(6), [0.0, 1.0, 10.0], per_radius=1)[0]
    >>> prof = smoothness_profile(pts, tasks, fm.Exact(fm.InnerLoop(lam=1.0)), method="power")
    >>> prof.smoothness.shape, bool(prof.ok.all())
    ((3,), True)
    """
    from tqdm.auto import tqdm

    tasks = check.task_batch(tasks)
    exact = _check_exact(exact)
    n = tasks.dim
    pts = check.float_array(points, "points", ndim=2, shape_doc=f"(p, {n})")
    if pts.shape[0] == 0 or pts.shape[1] != n:
        raise ValueError(
            f"`points` must have shape (p, {n}) with p >= 1 to match the tasks (got {pts.shape})"
        )
    p = pts.shape[0]
    kind = _check_kinds(kinds, p)
    errors = check.choice(errors, "errors", ("raise", "record"))
    if not isinstance(progress, (bool, np.bool_)):
        raise TypeError(f"`progress` must be a bool (got {type(progress).__name__})")
    if desc is not None and not isinstance(desc, str):
        raise TypeError(f"`desc` must be a str or None (got {type(desc).__name__})")
    options = SmoothnessOptions.of(options, overrides, "smoothness_profile")
    options.units(n)  # checks the directions once, before any work

    out = {k: np.full(p, np.nan) for k in ("smoothness", "mean", "eigenvalue", "grad_norm", "loss")}
    ok = np.ones(p, dtype=bool)
    reason = np.full(p, "", dtype=object)
    evaluations = np.zeros(p, dtype=np.int64)
    for j in tqdm(range(p), desc=desc, disable=not progress, dynamic_ncols=True):
        try:
            est = local_smoothness(pts[j], tasks, exact, options)
        except ESTIMATOR_ERRORS as exc:
            msg = f"point {j} ({kind[j]}): {exc}"
            if errors == "raise":
                raise type(exc)(msg) from exc
            ok[j] = False
            reason[j] = f"{type(exc).__name__}: {msg}"
            continue
        for key in out:
            out[key][j] = getattr(est, key)
        evaluations[j] = est.evaluations
    return SmoothnessProfile(
        **out, kind=kind, ok=ok, reason=reason.astype(str), evaluations=evaluations
    )


def validate_options(options: dict, n: int | None = None) -> None:
    """Check a dict of :class:`SmoothnessOptions` fields up front (``directions`` against n).

    TypeError names an unknown key.
    """
    SmoothnessOptions.of(None, options, "validate_options").units(n)


def _check_kinds(kinds: object, p: int) -> np.ndarray:
    if kinds is None:
        return np.full(p, "point")
    if isinstance(kinds, str):
        return np.full(p, kinds)
    arr = np.asarray(kinds)
    if arr.ndim != 1 or arr.shape[0] != p or arr.dtype.kind not in "UO":
        raise ValueError(
            f"`kinds` must be a str or a sequence of {p} str, one per point "
            f"(got shape {arr.shape}, dtype {arr.dtype})"
        )
    if not all(isinstance(k, str) for k in arr.tolist()):
        raise TypeError("`kinds` must hold str labels")
    return arr.astype(str)


# -- where to measure -----------------------------------------------------------------------
class Trajectory(NamedTuple):
    """What :func:`trajectory_points` returns.

    Attributes
    ----------
    points : numpy.ndarray, shape (p, n)
        The recorded iterates :math:`x_t`.
    iterations : numpy.ndarray of int, shape (p,)
        Their iteration numbers t.
    result : TrainResult
        The meta-training run (its history holds every iteration).
    """

    points: np.ndarray
    iterations: np.ndarray
    result: TrainResult


def trajectory_points(
    x0: np.ndarray,
    tasks: Any,
    estimator: Estimator,
    optimizer: Any,
    iterations: int,
    *,
    every: int = 1,
    **train_options: Any,
) -> Trajectory:
    r"""The iterates of a meta-training run, every ``every`` iterations.

    Runs :func:`fobmaml.meta_train` ``(x0, tasks, estimator, optimizer, iterations,
    **train_options)`` with a callback that records :math:`x_t` for
    :math:`t = 0, e, 2e, \dots` and the last record (:math:`x_T`).

    Parameters
    ----------
    x0, tasks, estimator, optimizer, iterations
        As for :func:`fobmaml.meta_train`.
    every : int
        Record every ``every``-th iterate (>= 1).
    **train_options
        Other keyword arguments of :func:`fobmaml.meta_train` (``seed``,
        ``reference``, ``eval_tasks``, ``progress``, ``desc``); not ``callback``.

    Returns
    -------
    Trajectory
        ``points`` (p, n), ``iterations`` (p,), and the run's ``result``.
    """
    every = check.integer(every, "every", minimum=1)
    iterations = check.integer(iterations, "iterations", minimum=0)
    if "callback" in train_options:
        raise TypeError("`callback` cannot be passed: trajectory_points uses its own")
    recorded: list[np.ndarray] = []
    at: list[int] = []

    def record(t: int, x: np.ndarray, _: dict) -> None:
        if t % every == 0 or t == iterations:
            recorded.append(np.array(x, copy=True))
            at.append(t)

    result = meta_train(
        x0, tasks, estimator, optimizer, iterations, callback=record, **train_options
    )
    return Trajectory(np.array(recorded), np.array(at, dtype=np.int64), result)


def random_points(
    x0: np.ndarray, radii: Any, per_radius: int = 4, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    r"""Random points at given distances from ``x0``.

    For each radius :math:`r` in ``radii``, ``per_radius`` points
    :math:`x_0 + r\, z/\lVert z\rVert` with :math:`z \sim N(0, I)` (independent draws
    from ``numpy.random.default_rng(seed)``), so that :math:`\lVert x - x_0\rVert = r`.

    Returns
    -------
    points : numpy.ndarray, shape (len(radii) * per_radius, n)
        Grouped by radius, in the order of ``radii``.
    radius : numpy.ndarray, shape (len(radii) * per_radius,)
        The distance of each point from ``x0``.
    """
    x0 = check.float_array(x0, "x0", ndim=1, shape_doc="(n,)")
    if x0.size == 0:
        raise ValueError("`x0` must have at least one entry (got shape (0,))")
    r = check.float_array(radii, "radii", ndim=1, shape_doc="(k,)")
    if r.size == 0 or (r < 0).any():
        raise ValueError(f"`radii` must be a non-empty list of distances >= 0 (got {r.tolist()})")
    per_radius = check.integer(per_radius, "per_radius", minimum=1)
    seed = check.integer(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    z = rng.standard_normal((r.size * per_radius, x0.size))
    z /= np.linalg.norm(z, axis=1)[:, None]
    radius = np.repeat(r, per_radius)
    return x0 + radius[:, None] * z, radius


# -- the fit --------------------------------------------------------------------------------
class SmoothnessFit(NamedTuple):
    """What :func:`fit_smoothness` returns.

    Attributes
    ----------
    L0, L1 : float
        The line :math:`L_0 + L_1 g`, both >= 0.
    r2 : float
        Coefficient of determination of the line as a predictor of the smoothness,
        :math:`1 - \\sum_j (s_j - L_0 - L_1 g_j)^2 / \\sum_j (s_j - \\bar s)^2` (NaN when
        all :math:`s_j` are equal).
    rmse : float
        Root mean square residual :math:`\\sqrt{\\frac1p \\sum_j (s_j - L_0 - L_1 g_j)^2}`.
    coverage : float
        Fraction of the points on or under the line (1 for the envelope with quantile 1).
    method : str
    quantile : float
        The envelope's quantile (1.0 for least squares, where it is not used).
    n_points : int
    """

    L0: float
    L1: float
    r2: float
    rmse: float
    coverage: float
    method: str
    quantile: float
    n_points: int

    def predict(self, grad_norm: Any) -> np.ndarray:
        """The line :math:`L_0 + L_1 g` at the given gradient norms."""
        return self.L0 + self.L1 * np.asarray(grad_norm, dtype=np.float64)


def fit_smoothness(
    grad_norm: Any,
    smoothness: Any,
    *,
    method: str = "least_squares",
    quantile: float = 1.0,
) -> SmoothnessFit:
    r"""Fit :math:`s \approx L_0 + L_1 g` with :math:`L_0, L_1 \ge 0` to smoothness estimates.

    ``method="least_squares"``: nonnegative least squares,

    .. math::

        \min_{L_0 \ge 0,\ L_1 \ge 0}\ \sum_j (s_j - L_0 - L_1 g_j)^2 ,

    solved exactly (two variables: the unconstrained solution if it is feasible,
    otherwise the better of the two one-variable solutions with :math:`L_1 = 0` or
    :math:`L_0 = 0`). The line passes through the middle of the cloud: it describes
    the trend, not a bound.

    ``method="envelope"``: the smallest line under which at least a fraction
    ``quantile`` = q of the points lie,

    .. math::

        \min_{L_0 \ge 0,\ L_1 \ge 0}\ L_0 + L_1 \bar g
        \quad\text{s.t.}\quad \#\{j : s_j \le L_0 + L_1 g_j\} \ge \lceil q p \rceil ,

    i.e. the line of least mean height over the data (:math:`\bar g` the mean of the
    :math:`g_j`). With q = 1 it lies above every point: the empirical version of the
    bound :math:`\lVert\nabla^2F\rVert \le L_0 + L_1\lVert\nabla F\rVert`; q < 1 ignores
    the highest outliers. For a fixed :math:`L_1` the best :math:`L_0` is the
    :math:`\lceil qp\rceil`-th smallest :math:`s_j - L_1 g_j` (or 0), which is piecewise
    linear in :math:`L_1`, so the optimum is found exactly among its breakpoints
    (slopes through pairs of points and through single points and the origin):
    O(p^3) work, fine for hundreds of points.

    Parameters
    ----------
    grad_norm : array_like, shape (p,)
        The gradient norms :math:`g_j \ge 0`.
    smoothness : array_like, shape (p,)
        The smoothness estimates :math:`s_j \ge 0` (e.g. from :func:`smoothness_profile`;
        drop the failed points first with ``profile.ok``).
    method : {"least_squares", "envelope"}
    quantile : float
        The envelope's q in (0, 1].

    Returns
    -------
    SmoothnessFit
        ``L0``, ``L1``, ``r2``, ``rmse``, ``coverage``, ``method``, ``quantile``, ``n_points``.

    Raises
    ------
    TypeError, ValueError
        For arrays that are not 1-D, of different lengths, non-finite, negative, with
        fewer than 2 points or fewer than 2 distinct gradient norms (L1 is then not
        identifiable), and for an invalid method or quantile.

    Examples
    --------
    >>> g = np.array([0.0, 1.0, 2.0, 3.0]); s = 2.0 + 0.5 * g
    >>> fit = fit_smoothness(g, s)
    >>> round(fit.L0, 12), round(fit.L1, 12), fit.r2
    (2.0, 0.5, 1.0)
    >>> env = fit_smoothness(g, s + np.array([0.0, 0.0, 1.0, 0.0]), method="envelope")
    >>> float(env.L0), float(env.L1), env.coverage
    (2.0, 1.0, 1.0)
    """
    g = check.float_array(grad_norm, "grad_norm", ndim=1, shape_doc="(p,)")
    s = check.float_array(smoothness, "smoothness", ndim=1, shape_doc="(p,)")
    if g.shape != s.shape:
        raise ValueError(
            f"`grad_norm` and `smoothness` must have the same length (got {g.size} and {s.size})"
        )
    if g.size < 2:
        raise ValueError(f"`grad_norm` and `smoothness` need at least 2 points (got {g.size})")
    if (g < 0).any():
        raise ValueError(f"`grad_norm` must be >= 0 (got min {g.min():.3g})")
    if (s < 0).any():
        raise ValueError(f"`smoothness` must be >= 0 (got min {s.min():.3g})")
    if np.ptp(g) == 0:
        raise ValueError(
            "`grad_norm` must hold at least 2 distinct values to identify the slope L1 "
            f"(all are {g[0]:.6g})"
        )
    method = check.choice(method, "method", ("least_squares", "envelope"))
    quantile = check.real_scalar(quantile, "quantile")
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"`quantile` must be in (0, 1] (got {quantile})")
    if method == "least_squares":
        if quantile != 1.0:
            raise ValueError("`quantile` is only used with method='envelope'")
        L0, L1 = _nnls_line(g, s)
    else:
        L0, L1 = _envelope_line(g, s, quantile)
    resid = s - L0 - L1 * g
    ssr = float(resid @ resid)
    sst = float(np.sum((s - s.mean()) ** 2))
    r2 = 1.0 - ssr / sst if sst > 0 else float("nan")
    # "On or under": allow rounding in L0 + L1 g (a few ulps of the line's height).
    slack = 8 * np.finfo(np.float64).eps * np.maximum(np.abs(s), L0 + L1 * g)
    coverage = float(np.mean(resid <= slack))
    return SmoothnessFit(
        float(L0), float(L1), r2, float(np.sqrt(ssr / g.size)), coverage, method, quantile, g.size
    )


def _nnls_line(g: np.ndarray, s: np.ndarray) -> tuple[float, float]:
    """argmin over L0, L1 >= 0 of ||s - L0 - L1 g||^2 (exact, 2 variables)."""
    gc = g - g.mean()
    L1 = float(gc @ (s - s.mean()) / (gc @ gc))
    L0 = float(s.mean() - L1 * g.mean())
    if L0 >= 0 and L1 >= 0:
        return L0, L1
    # The constrained optimum lies on a face: L1 = 0 or L0 = 0 (KKT; the objective is convex).
    candidates = [(max(0.0, float(s.mean())), 0.0), (0.0, max(0.0, float(g @ s / (g @ g))))]
    return min(candidates, key=lambda c: float(np.sum((s - c[0] - c[1] * g) ** 2)))


def _envelope_line(g: np.ndarray, s: np.ndarray, q: float) -> tuple[float, float]:
    """The line of least mean height with L0, L1 >= 0 above ceil(q p) of the points."""
    p = g.size
    k = int(np.ceil(q * p - 1e-12))  # points that must lie under the line
    gbar = float(g.mean())

    def best_l0(slopes: np.ndarray) -> np.ndarray:
        # For each slope, the k-th smallest of s_j - L1 g_j, clipped at 0.
        shifted = s[None, :] - slopes[:, None] * g[None, :]
        return np.maximum(np.partition(shifted, k - 1, axis=1)[:, k - 1], 0.0)

    # Breakpoints of L1 -> best_l0(L1): slopes through two points, and through a point and
    # L0 = 0; the objective is piecewise linear in L1, so its minimum is at one of them or 0.
    i, j = np.triu_indices(p, 1)
    dg = g[i] - g[j]
    keep = dg != 0
    pair = (s[i][keep] - s[j][keep]) / dg[keep]
    pos = g > 0
    candidates = np.concatenate([[0.0], pair, s[pos] / g[pos]])
    candidates = np.unique(candidates[candidates >= 0])
    best = (np.inf, 0.0, 0.0)
    for chunk in np.array_split(candidates, max(1, candidates.size * p // 2_000_000 + 1)):
        l0 = best_l0(chunk)
        height = l0 + chunk * gbar
        a = int(np.argmin(height))
        if height[a] < best[0]:
            best = (float(height[a]), float(l0[a]), float(chunk[a]))
    return best[1], best[2]
