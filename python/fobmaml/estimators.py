r"""Meta-gradient estimators (the contract: ``docs/estimators.md``).

Every estimator returns one vector per task; the batch estimate is their mean.

=============  ====================================================================
``Exact``      :math:`\lambda(\nabla^2 g_i(\phi^*_i)+\lambda I)^{-1}\nabla f_i(\phi^*_i)`
``MAML``       the exact gradient of :math:`f_i(\phi_{i,K}(x))` (reverse mode, K HVPs)
``FOMAML``     :math:`\nabla f_i(\phi_K)`
``Reptile``    :math:`(x-\phi_K)/(\alpha K)`
``IMAML``      ``cg_steps`` of CG on :math:`(I+\nabla^2 g_i(\phi_K)/\lambda)u=\nabla f_i(\phi_K)`
``HFMAML``     the MAML recursion with finite-difference HVPs
``FOBMAML``    :math:`\lambda(\phi_K-\psi^{+\delta}_K)/\delta` (forward) or
               :math:`\lambda(\psi^{-\delta}_K-\psi^{+\delta}_K)/(2\delta)` (symmetric)
=============  ====================================================================
"""

from __future__ import annotations

import dataclasses
import os
import sys
import warnings
from typing import ClassVar, NamedTuple

import numpy as np

from . import _adapt as _adapt_kernel
from . import _validation as check
from ._frozen import frozen, store
from ._native import core as _core
from .errors import NonSmoothWarning, TaskStatus, raise_for_status
from .inner import InnerLoop
from .tasks import TaskBatch

__all__ = [
    "Estimate",
    "Estimator",
    "MAML",
    "FOMAML",
    "Reptile",
    "IMAML",
    "HFMAML",
    "FOBMAML",
    "Exact",
    "meta_loss_k",
    "meta_loss",
    "adapt",
    "set_memory_limit",
    "get_memory_limit",
]


class Estimate(NamedTuple):
    """The full output of one estimator call."""

    task_gradients: np.ndarray  # (m, n)
    gradient: np.ndarray  # (n,), the mean over tasks
    losses: np.ndarray | None  # (m,): f_i at the adapted point, if requested
    status: TaskStatus


def _default_memory_limit() -> int | None:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return None


_memory_limit: int | None = _default_memory_limit()


def set_memory_limit(nbytes: int | None) -> int | None:
    """Cap the workspace one estimator call may allocate; returns the previous cap.

    Before allocating, every call predicts its workspace (for MAML and HF-MAML it holds
    the K-step trajectory, ``K n`` doubles per thread) and raises :class:`MemoryError`
    with the predicted size if it exceeds the cap, instead of being killed by the
    operating system. The default cap is half of the machine's physical memory;
    ``None`` removes it.
    """
    global _memory_limit
    previous = _memory_limit
    _memory_limit = None if nbytes is None else check.integer(nbytes, "nbytes", minimum=0)
    return previous


def get_memory_limit() -> int | None:
    """The current workspace cap in bytes (None: no cap); see :func:`set_memory_limit`."""
    return _memory_limit


def _gib(nbytes: int) -> str:
    return f"{nbytes / 2**30:.2f} GiB" if nbytes >= 2**27 else f"{nbytes / 2**20:.1f} MiB"


def _warn_if_not_smooth(tasks: TaskBatch, name: str) -> None:
    """A NonSmoothWarning when `tasks` is a network batch with a ReLU or max-pooling layer."""
    net = getattr(tasks, "net", None)
    i = None if net is None else net._first_kink()
    if i is not None:
        warnings.warn(
            f"{name} differentiates by finite differences, which assume a smooth loss, but "
            f"layer {i} of the network is {type(net.layers[i]).__name__}, whose gradient jumps: "
            "where a perturbed inner loop crosses such a kink, the estimate measures the jump, "
            "and its error grows as the finite-difference step shrinks (docs/networks.md, "
            "'MNIST-1D on the convolutional network'). Use Tanh and AvgPool1d, or MAML or "
            "iMAML, whose Hessian-vector products take relu'' = 0",
            NonSmoothWarning,
            stacklevel=_outside_the_package(),
        )


def _outside_the_package() -> int:
    """The ``stacklevel`` (for a ``warnings.warn`` in the caller) of the first frame whose code
    is not in this package: the user's line, whichever of our functions led to the warning."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_PACKAGE_DIR):
        frame, level = frame.f_back, level + 1
    return level


_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


@frozen(eq=False, repr=False)
class Estimator:
    """Base class: holds the inner loop and the kernel configuration.

    Estimators are frozen dataclasses whose fields are their parameters: subclasses
    only validate them (in ``__post_init__``); all work happens in :meth:`estimate` and
    the methods built on it. Being immutable (assigning a field raises
    ``dataclasses.FrozenInstanceError``, an ``AttributeError``; build a new one
    instead), one estimator can be shared between threads.
    """

    _kind: ClassVar[str] = ""
    _needs_lam: ClassVar[bool] = False
    _finite_difference: ClassVar[bool] = False

    inner: InnerLoop

    def __post_init__(self) -> None:
        inner = check.inner_loop(self.inner)
        if self._needs_lam and inner.lam <= 0.0:
            raise ValueError(f"`lam` must be > 0 for {type(self).__name__} (got {inner.lam})")
        object.__setattr__(self, "_cfg", None)

    # -- configuration ---------------------------------------------------------------
    def get_params(self) -> dict:
        """The estimator's parameters (the inner loop as a dict), for logs and JSON."""
        params = {"inner": self.inner.to_dict()}
        params.update(self._extra_params())
        return params

    def _extra_params(self) -> dict:
        """The parameters after ``inner``, in the constructor's order."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)[1:]}

    def _config(self) -> _core.EstimatorConfig:
        c = _core.EstimatorConfig()
        c.kind = getattr(_core.Kind, self._kind)
        c.inner = self.inner._config()
        return c

    def _kernel_config(self) -> _core.EstimatorConfig:
        """The kernel configuration, built once (the estimator is immutable)."""
        if self._cfg is None:
            object.__setattr__(self, "_cfg", self._config())
        return self._cfg

    def workspace_bytes(self, tasks: TaskBatch) -> int:
        """Bytes of workspace one call on `tasks` allocates (all threads), predicted."""
        return int(_core.workspace_bytes(check.task_batch(tasks)._handle, self._kernel_config()))

    def __reduce__(self):
        # Pickled as its constructor arguments (validated again); the kernel configuration,
        # a compiled object, is rebuilt on first use.
        return (type(self), tuple(getattr(self, f.name) for f in dataclasses.fields(self)))

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra_params().items())
        return f"{type(self).__name__}({self.inner!r}{extra})"

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- computation -----------------------------------------------------------------
    def estimate(
        self, x: np.ndarray, tasks: TaskBatch, *, losses: bool = False, errors: str = "raise"
    ) -> Estimate:
        """Per-task estimates, their mean, optionally the per-task losses, and statuses.

        Parameters
        ----------
        x : array_like, shape (n,)
            Meta-parameters.
        tasks : TaskBatch
            The tasks (m of them).
        losses : bool
            Also return f_i at the adapted point (phi_K; phi* for Exact).
        errors : {"raise", "return"}
            "raise" turns the first failing task into an exception (see
            :mod:`fobmaml.errors`). "return" reports failures in ``status`` instead
            (``status.ok`` masks the good tasks): the rows and losses of failed tasks
            are NaN, and ``gradient`` is the mean over the successful tasks only (NaN
            if none succeeded).
        """
        tasks = check.task_batch(tasks)
        x = check.params_vector(x, tasks.dim)
        check.choice(errors, "errors", ("raise", "return"))
        if self._finite_difference:
            _warn_if_not_smooth(tasks, self.name)
        cfg = self._kernel_config()
        if _memory_limit is not None:
            need = int(_core.workspace_bytes(tasks._handle, cfg))
            if need > _memory_limit:
                raise MemoryError(
                    f"{self.name} would allocate {_gib(need)} of workspace for {tasks.num_tasks} "
                    f"tasks of n = {tasks.dim} parameters with K = {self.inner.steps} inner steps, "
                    f"over the limit of {_gib(_memory_limit)}; raise it with "
                    "fobmaml.set_memory_limit(), use fewer threads, or use FOBMAML, whose memory "
                    "does not grow with K"
                )
        G, g, ell, st = _core.estimate(tasks._handle, x, cfg, losses)
        status = TaskStatus(*st)
        if errors == "raise":
            raise_for_status(status, self.name)
        return Estimate(G, g, ell, status)

    def task_gradients(self, x: np.ndarray, tasks: TaskBatch) -> np.ndarray:
        """The per-task estimates, shape (m, n)."""
        return self.estimate(x, tasks).task_gradients

    def meta_gradient(self, x: np.ndarray, tasks: TaskBatch) -> np.ndarray:
        """The batch estimate: the mean of the per-task estimates, shape (n,)."""
        return self.estimate(x, tasks).gradient

    def value_and_gradient(self, x: np.ndarray, tasks: TaskBatch) -> tuple[float, np.ndarray]:
        """The meta-loss at x and the batch estimate, from one pass.

        The loss is F_K(x), the mean query loss after the K inner steps (F(x) for Exact).
        """
        est = self.estimate(x, tasks, losses=True)
        return check.safe_mean(est.losses), est.gradient


@frozen(eq=False, repr=False)
class MAML(Estimator):
    """The exact gradient of F_K: reverse mode through the K inner steps.

    Needs K Hessian-vector products and O(K n) memory per thread.
    """

    _kind = "maml"


@frozen(eq=False, repr=False)
class FOMAML(Estimator):
    r"""First-order MAML: :math:`\nabla f_i(\phi_K)`."""

    _kind = "fomaml"


@frozen(eq=False, repr=False)
class Reptile(Estimator):
    r"""Reptile: :math:`(x - \phi_K) / (\alpha K)`."""

    _kind = "reptile"


@frozen(eq=False, repr=False)
class IMAML(Estimator):
    r"""Implicit MAML: ``cg_steps`` CG iterations from u = 0 on
    :math:`(I + \nabla^2 g_i(\phi_K)/\lambda)\,u = \nabla f_i(\phi_K)`. Needs lambda > 0."""

    _kind = "imaml"
    _needs_lam = True

    cg_steps: int = 5

    def __post_init__(self) -> None:
        super().__post_init__()
        cg_steps = check.integer(self.cg_steps, "cg_steps", minimum=1, maximum=2**31 - 1)
        store(self, cg_steps=cg_steps)

    def _config(self) -> _core.EstimatorConfig:
        c = super()._config()
        c.cg_steps = self.cg_steps
        return c


@frozen(eq=False, repr=False)
class HFMAML(Estimator):
    r"""Hessian-free MAML: the MAML recursion with every HVP replaced by
    :math:`(\nabla g(\phi + \varepsilon v) - \nabla g(\phi - \varepsilon v)) / (2\varepsilon)`."""

    _kind = "hfmaml"
    _finite_difference = True

    eps: float = 1e-5

    def __post_init__(self) -> None:
        super().__post_init__()
        store(self, eps=check.positive(self.eps, "eps"))

    def _config(self) -> _core.EstimatorConfig:
        c = super()._config()
        c.eps = self.eps
        return c


@frozen(eq=False, repr=False)
class FOBMAML(Estimator):
    r"""First-order bilevel MAML (Chayti & Jaggi).

    With :math:`\psi^{s}_K` the inner loop run on the perturbed problem
    :math:`h_i(\psi; x) + s\,f_i(\psi)` (``perturbation="objective"``) or
    :math:`h_i(\psi; x) + s\,\langle \nabla f_i(\phi_K), \psi\rangle` (``"linear"``):

    - forward:   :math:`\lambda(\phi_K - \psi^{+\delta}_K)/\delta`, bias O(delta);
    - symmetric: :math:`\lambda(\psi^{-\delta}_K - \psi^{+\delta}_K)/(2\delta)`, bias O(delta^2).

    Gradients only, no stored trajectory: memory does not grow with K. Needs lambda > 0.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 10, kappa=100.0, seed=0)
    >>> inner = fm.InnerLoop(steps=200, lr=0.5, lam=1.0)
    >>> est = fm.FOBMAML(inner, delta=1e-4, scheme="symmetric")
    >>> x = np.zeros(10)
    >>> g, g_ref = est.meta_gradient(x, tasks), fm.Exact(inner).meta_gradient(x, tasks)
    >>> bool(np.linalg.norm(g - g_ref) < 1e-6 * np.linalg.norm(g_ref))
    True
    """

    _kind = "fobmaml"
    _needs_lam = True
    _finite_difference = True

    delta: float = 1e-3
    scheme: str = "forward"
    perturbation: str = "objective"

    def __post_init__(self) -> None:
        super().__post_init__()
        store(
            self,
            delta=check.positive(self.delta, "delta"),
            scheme=check.choice(self.scheme, "scheme", ("forward", "symmetric")),
            perturbation=check.choice(self.perturbation, "perturbation", ("objective", "linear")),
        )

    def _config(self) -> _core.EstimatorConfig:
        c = super()._config()
        c.delta = self.delta
        c.scheme = getattr(_core.Scheme, self.scheme)
        c.perturbation = getattr(_core.Perturbation, self.perturbation)
        return c


@frozen(eq=False, repr=False)
class Exact(Estimator):
    r"""The exact meta-gradient of each task.

    .. math::

        \nabla F_i(x) = \lambda(\nabla^2 g_i(\phi^*_i) + \lambda I)^{-1} \nabla f_i(\phi^*_i).


    The reference every other estimator is judged against. Needs lambda > 0.

    Parameters
    ----------
    inner : InnerLoop
        Supplies lambda, and the step size and momentum of the iterative inner solve
        (its ``steps`` are not used).
    tol : float
        Relative tolerance of the iterative solves: the inner problem is solved until
        ``||∇h(φ)|| <= tol ||∇h(x)||``, then CG until ``||r|| <= tol ||λ∇f(φ*)||``.
    max_iter : int
        Iteration cap of each iterative solve; reaching it raises ConvergenceError.
    solver : {"auto", "iterative"}
        "auto" uses a family's closed form where it has one (a Cholesky solve of
        ``A_i + λI`` for quadratic tasks); "iterative" always uses the solves above.
    pd_check_steps : int
        Lanczos steps of the curvature probe run before CG on the iterative path
        (0 turns it off): a negative smallest Ritz value of ``∇²g_i(φ*) + λI``
        proves that it is not positive definite.

    Notes
    -----
    If ``∇²g_i(φ*) + λI`` is not positive definite, the exact meta-gradient is not
    defined by the formula, and the call fails instead of returning garbage:

    - the closed form (``solver="auto"`` on quadratic tasks) raises
      :class:`fobmaml.NotPositiveDefiniteError` when the Cholesky factorization of
      ``A_i + λI`` fails;
    - on the iterative path, gradient descent on an inner problem that is not
      strongly convex usually diverges (``FloatingPointError`` naming the task and
      step) or fails to converge (:class:`fobmaml.ConvergenceError`; typical of
      relu networks, whose inner problem is only piecewise smooth). If it does
      converge, to a saddle point say, a Lanczos probe of the smallest eigenvalue
      of ``∇²g_i(φ*) + λI`` (``pd_check_steps``) and then CG raise
      :class:`fobmaml.NotPositiveDefiniteError` on negative curvature. The probe's
      Ritz values lie inside the spectrum, so it never rejects a positive definite
      matrix; a negative eigenvalue it does not reach in ``pd_check_steps`` steps
      can still go unnoticed.

    :meth:`value_and_gradient` returns the exact meta-loss F(x) with the gradient.
    """

    _kind = "exact"
    _needs_lam = True

    tol: float = 1e-10
    max_iter: int = 100_000
    solver: str = "auto"
    pd_check_steps: int = 30

    def __post_init__(self) -> None:
        super().__post_init__()
        store(
            self,
            tol=check.positive(self.tol, "tol"),
            max_iter=check.integer(self.max_iter, "max_iter", minimum=1, maximum=2**63 - 1),
            solver=check.choice(self.solver, "solver", ("auto", "iterative")),
            pd_check_steps=check.integer(
                self.pd_check_steps, "pd_check_steps", minimum=0, maximum=10_000
            ),
        )

    def _config(self) -> _core.EstimatorConfig:
        c = super()._config()
        c.tol = self.tol
        c.max_iter = self.max_iter
        c.pd_check_steps = self.pd_check_steps
        c.solver = getattr(_core.ExactSolver, self.solver)
        return c

    def meta_loss(self, x: np.ndarray, tasks: TaskBatch) -> float:
        r"""The exact meta-objective :math:`F(x) = \frac1m \sum_i f_i(\phi^*_i(x))`.

        Not the K-step :math:`F_K` of :func:`fobmaml.meta_loss_k`: ``inner.steps`` is not
        used."""
        return self.value_and_gradient(x, tasks)[0]


def _adapt(x: object, tasks: object, inner: object, want_phi: bool) -> _adapt_kernel.Adapted:
    tasks = check.task_batch(tasks)
    inner = check.inner_loop(inner)
    x = check.params_vector(x, tasks.dim)
    return _adapt_kernel.run(x, tasks, inner._config(), "inner loop", want_phi)


def meta_loss_k(x: np.ndarray, tasks: TaskBatch, inner: InnerLoop) -> float:
    r"""The K-step meta-loss :math:`F_K(x) = \frac1m\sum_i f_i(\phi_{i,K}(x))`.

    The query loss after the K steps of ``inner``, averaged over the tasks: what
    ``MAML`` differentiates exactly. The exact meta-objective
    :math:`F(x) = \frac1m\sum_i f_i(\phi^*_i(x))` is :meth:`Exact.meta_loss`.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 6, kappa=10.0, seed=0)
    >>> inner = fm.InnerLoop(steps=200, lr=0.5, lam=1.0)
    >>> x = np.zeros(6)
    >>> F_K, F = fm.meta_loss_k(x, tasks, inner), fm.Exact(inner).meta_loss(x, tasks)
    >>> bool(abs(F_K - F) < 1e-12 * abs(F))  # K = 200 steps: F_K has converged to F
    True
    """
    return check.safe_mean(_adapt(x, tasks, inner, False).losses)


def meta_loss(x: np.ndarray, tasks: TaskBatch, inner: InnerLoop) -> float:
    """Deprecated name of :func:`meta_loss_k`, the K-step meta-loss :math:`F_K(x)`.

    Renamed because :meth:`Exact.meta_loss` is the exact :math:`F(x)`. Warns with a
    ``DeprecationWarning``.
    """
    warnings.warn(
        "fobmaml.meta_loss is the K-step meta-loss F_K and is now called fobmaml.meta_loss_k "
        "(Exact(inner).meta_loss is the exact meta-objective F)",
        DeprecationWarning,
        stacklevel=2,
    )
    return meta_loss_k(x, tasks, inner)


def adapt(x: np.ndarray, tasks: TaskBatch, inner: InnerLoop) -> np.ndarray:
    r"""The adapted parameters :math:`\phi_{i,K}(x)` of every task, shape (m, n)."""
    return _adapt(x, tasks, inner, True).phi
