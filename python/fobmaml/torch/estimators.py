r"""The meta-gradient estimators for any ``torch.nn.Module`` (``torch.func``).

The formulas are those of fobmaml's core (``ESTIMATORS.md``), applied to the model's
trainable parameters :math:`x` (``named_parameters()`` order) with the support loss
:math:`g_i(\phi)` = ``loss_fn(model_phi(X_support[i]), Y_support[i])`` and the query loss
:math:`f_i(\phi)` = ``loss_fn(model_phi(X_query[i]), Y_query[i])``. The inner loop, from
:math:`\phi_{-1} = \phi_0 = x`, is

.. math::

    \phi_{k+1} = \phi_k - \alpha\,(\nabla g_i(\phi_k) + \lambda(\phi_k - x))
                 + \beta\,(\phi_k - \phi_{k-1}), \quad k = 0, \dots, K-1.

=============  ====================================================================
``MAML``       the exact gradient of :math:`f_i(\phi_{i,K}(x))`; ``backward="autograd"``
               differentiates through the K steps, ``backward="recursion"`` runs the
               reverse recursion with Hessian-vector products
``FOMAML``     :math:`\nabla f_i(\phi_K)`
``Reptile``    :math:`(x-\phi_K)/(\alpha K)`
``IMAML``      ``cg_steps`` of CG on :math:`(I+\nabla^2 g_i(\phi_K)/\lambda)u=\nabla f_i(\phi_K)`
``HFMAML``     the MAML recursion with finite-difference HVPs
``FOBMAML``    :math:`\lambda(\phi_K-\psi^{+\delta}_K)/\delta` (forward) or
               :math:`\lambda(\psi^{-\delta}_K-\psi^{+\delta}_K)/(2\delta)` (symmetric)
=============  ====================================================================

Each task is one call of a pure function of the flat parameter vector; ``torch.func.vmap``
runs the tasks as one batch (``chunk_size`` tasks at a time if given). Gradients come from
``torch.func.grad``, Hessian-vector products from ``jvp`` of ``grad`` (``vjp`` of ``grad``
where forward-mode AD does not run through the model or loss).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import NamedTuple

import torch
from torch.func import grad, grad_and_value, jvp, vjp, vmap

from .. import _validation as check
from ..inner import InnerLoop
from ._model import (
    BATCH_NAMES,
    BUFFER_FIX,
    FlatModel,
    NonSmoothWarning,
    check_tensors,
    hvp_mode,
    warn_if_non_smooth,
)

__all__ = [
    "NonSmoothWarning",
    "Estimator",
    "MAML",
    "FOMAML",
    "Reptile",
    "IMAML",
    "HFMAML",
    "FOBMAML",
    "adapt",
    "meta_loss",
]

Tensor = torch.Tensor
Batch = tuple[Tensor, Tensor, Tensor, Tensor]

#: The inner loop of a task fails when its gradient norm grows past this many times
#: (1 + its initial norm), as in fobmaml's core.
DIVERGENCE_FACTOR = 1e8

_STAGES = {
    "inner": "inner loop",
    "plus": "perturbed inner loop (s = +delta)",
    "minus": "perturbed inner loop (s = -delta)",
}


# -- the inner loop -----------------------------------------------------------------------------
def _inner_loop(
    x: Tensor, grad_fn: Callable[[Tensor], Tensor], inner: InnerLoop, trajectory=None
) -> tuple[Tensor, Tensor]:
    """phi_K of one task from x, with ``grad_fn`` the gradient of its (perturbed) support loss.

    Returns phi_K and a status: 0, or the first step k + 1 whose gradient was not finite or
    had grown past DIVERGENCE_FACTOR (1 + its initial norm). With a list ``trajectory``,
    phi_0 .. phi_{K-1} are appended to it.
    """
    lr, lam, beta = inner.lr, inner.lam, inner.momentum
    phi = prev = x
    status = torch.zeros((), dtype=torch.int64, device=x.device)
    start = None
    for k in range(inner.steps):
        if trajectory is not None:
            trajectory.append(phi)
        gr = grad_fn(phi)
        if lam != 0.0:
            gr = gr + lam * (phi - x)
        norm = torch.linalg.vector_norm(gr.detach())
        if start is None:
            start = norm
        bad = ~torch.isfinite(norm) | (norm > DIVERGENCE_FACTOR * (1.0 + start))
        status = torch.where(bad & (status == 0), k + 1, status)
        if beta != 0.0:
            phi, prev = phi + (beta * (phi - prev) - lr * gr), phi
        else:
            phi = phi - lr * gr
    return phi, status


class _Task:
    """One task's functions of the flat parameters (used inside vmap over tasks)."""

    def __init__(self, flat: FlatModel, Xs, Ys, Xq, Yq, hvp: str | None = None) -> None:
        self.flat, self.Xs, self.Ys, self.Xq, self.Yq = flat, Xs, Ys, Xq, Yq
        self._grad = grad(flat.loss)
        self._grad_and_value = grad_and_value(flat.loss)
        self.hvp_mode = hvp

    def f(self, p: Tensor) -> Tensor:
        return self.flat.loss(p, self.Xq, self.Yq)

    def grad_g(self, p: Tensor) -> Tensor:
        return self._grad(p, self.Xs, self.Ys)

    def perturbed_grad(self, s: float) -> Callable[[Tensor], Tensor]:
        """``p -> ∇g(p) + s ∇f(p)``, as the gradient of ``g + s f`` (one backward pass)."""
        flat, Xs, Ys, Xq, Yq = self.flat, self.Xs, self.Ys, self.Xq, self.Yq
        return grad(lambda p: flat.loss(p, Xs, Ys) + s * flat.loss(p, Xq, Yq))

    def grad_and_f(self, p: Tensor) -> tuple[Tensor, Tensor]:
        return self._grad_and_value(p, self.Xq, self.Yq)

    def hvp(self, p: Tensor, v: Tensor) -> Tensor:
        """``∇²g(p) v``: forward-over-reverse (``jvp`` of ``grad``) or reverse-over-reverse."""
        if self.hvp_mode == "forward":
            return jvp(self.grad_g, (p,), (v,))[1]
        return vjp(self.grad_g, p)[1](v)[0]


class _Result(NamedTuple):
    task_gradients: Tensor  # (m, n)
    losses: Tensor  # (m,): f_i(phi_K), zeros where not requested
    flat: FlatModel


def _vmap_errors(exc: RuntimeError) -> Exception | None:
    """A clearer exception for the errors torch.func.vmap raises on common model patterns."""
    msg = str(exc)
    if "randomness" in msg:
        return ValueError(
            "`model` calls a random operation (Dropout in training mode, say) inside "
            "torch.func.vmap; call model.eval() or remove it: the estimators compare inner "
            "loops (and FO-B-MAML differentiates them by finite differences), which must "
            "see one deterministic function"
        )
    if "running_mean" in msg or "in-place" in msg or "inplace" in msg:
        return ValueError(f"`model` updates a buffer in place: {BUFFER_FIX}")
    return None


# -- the estimators ---------------------------------------------------------------------------
class Estimator:
    """Base class: the inner loop, the task chunking, and the public methods.

    Subclasses validate and store their parameters; the work happens in
    :meth:`task_gradients`, :meth:`meta_gradient`, :meth:`value_and_gradient` and
    :meth:`backward`. Estimators are immutable.

    Parameters
    ----------
    inner : fobmaml.InnerLoop
        K, the step size, lambda and the momentum of the inner loop.
    chunk_size : int, optional
        Tasks per ``vmap`` batch (default: all tasks at once). Smaller chunks need less
        memory and give the same numbers.
    """

    _needs_lam = False
    _uses_hvp = False
    _finite_differences = False

    def __init_subclass__(cls, **kwargs) -> None:
        # Freeze the instance once the most derived __init__ has run.
        super().__init_subclass__(**kwargs)
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kw):
            init(self, *args, **kw)
            if type(self) is cls:
                object.__setattr__(self, "_frozen", True)

        cls.__init__ = __init__

    def __setattr__(self, name: str, value: object) -> None:
        if getattr(self, "_frozen", False):
            raise AttributeError(
                f"{type(self).__name__} is immutable: build a new estimator instead of setting "
                f"`{name}`"
            )
        object.__setattr__(self, name, value)

    def __init__(self, inner: InnerLoop, *, chunk_size: int | None = None) -> None:
        if not isinstance(inner, InnerLoop):
            raise TypeError(f"`inner` must be a fobmaml.InnerLoop (got {type(inner).__name__})")
        if self._needs_lam and inner.lam <= 0.0:
            raise ValueError(f"`lam` must be > 0 for {type(self).__name__} (got {inner.lam})")
        self.inner = inner
        self.chunk_size = (
            None if chunk_size is None else check.integer(chunk_size, "chunk_size", minimum=1)
        )

    # -- configuration -----------------------------------------------------------------
    def get_params(self) -> dict:
        """The estimator's parameters (the inner loop as a dict), for logs and JSON."""
        return {"inner": self.inner.to_dict(), **self._extra_params()}

    def _extra_params(self) -> dict:
        return {} if self.chunk_size is None else {"chunk_size": self.chunk_size}

    def __repr__(self) -> str:
        extra = "".join(f", {k}={v!r}" for k, v in self._extra_params().items())
        return f"{type(self).__name__}({self.inner!r}{extra})"

    @property
    def name(self) -> str:
        return type(self).__name__

    # -- the per-task function (subclasses) --------------------------------------------
    def _task(self, t: _Task, x: Tensor, want_loss: bool) -> tuple[Tensor, Tensor, Tensor]:
        """(estimate (n,), f(phi_K) or 0, statuses (len(_stages),)) of one task."""
        raise NotImplementedError

    def _stages(self) -> tuple[str, ...]:
        return ("inner",)

    def _stage_text(self, stage: str) -> str:
        return _STAGES[stage]

    # -- the computation ---------------------------------------------------------------
    def _run(self, model, batch, loss_fn, want_loss: bool) -> _Result:
        flat = FlatModel(model, loss_fn)
        data = check_tensors(batch, BATCH_NAMES, flat, "batch")
        if self._finite_differences:
            warn_if_non_smooth(flat.model, self.name)
        x = flat.x
        mode = hvp_mode(grad(flat.loss), x, data[:2]) if self._uses_hvp else None

        def per_task(x, Xs, Ys, Xq, Yq):
            return self._task(_Task(flat, Xs, Ys, Xq, Yq, mode), x, want_loss)

        versions = flat.buffer_versions()
        try:
            with torch.no_grad():
                G, losses, status = vmap(
                    per_task, in_dims=(None, 0, 0, 0, 0), chunk_size=self.chunk_size
                )(x, *data)
        except RuntimeError as exc:
            clearer = _vmap_errors(exc)
            if clearer is None:
                raise
            raise clearer from exc
        flat.check_buffers_unchanged(versions)
        self._check_finite(status, G, losses if want_loss else None)
        return _Result(G, losses, flat)

    def _check_finite(self, status: Tensor, G: Tensor, losses: Tensor | None) -> None:
        """FloatingPointError for the first task whose loop diverged or whose result is not
        finite, naming the task (and the step and loop where it is known)."""
        finite = torch.isfinite(G).all(dim=1)
        if losses is not None:
            finite = finite & torch.isfinite(losses)
        failed = (status != 0).any(dim=1) | ~finite
        if not bool(failed.any()):
            return
        bad = torch.nonzero(failed).flatten().tolist()
        i = bad[0]
        more = f" ({len(bad)} of {G.shape[0]} tasks failed)" if len(bad) > 1 else ""
        row = status[i].tolist()
        for stage, step in zip(self._stages(), row):
            if step:
                raise FloatingPointError(
                    f"{self.name}: diverged at task {i}, step {step} of the "
                    f"{self._stage_text(stage)}: the inner gradient became NaN/Inf or grew past "
                    f"1e8 times (1 + its initial norm){more}; reduce the inner `lr` or check "
                    "the task data"
                )
        what = "meta-gradient" if not bool(finite[i]) or losses is None else "loss"
        raise FloatingPointError(
            f"{self.name}: the {what} of task {i} is not finite (NaN or Inf){more}; every "
            "inner step was finite, so the final combination overflowed (e.g. lambda/delta "
            "times a difference) or the query loss is not finite there"
        )

    # -- the public methods ------------------------------------------------------------
    def task_gradients(
        self, model: torch.nn.Module, batch: Batch, loss_fn: Callable
    ) -> dict[str, Tensor]:
        """The per-task estimates: ``{name: tensor of shape (m, *param.shape)}``.

        Parameters
        ----------
        model : torch.nn.Module
            Its trainable parameters are the meta-parameters x.
        batch : tuple of 4 tensors
            ``(X_support, Y_support, X_query, Y_query)``, each with the task as its first
            dimension (m), on the parameters' device; floating ones in their dtype.
        loss_fn : callable
            ``loss_fn(outputs, targets)``, the mean loss over one task's samples
            (``F.mse_loss``, ``F.cross_entropy``).
        """
        res = self._run(model, batch, loss_fn, want_loss=False)
        return res.flat.to_dict(res.task_gradients)

    def meta_gradient(
        self, model: torch.nn.Module, batch: Batch, loss_fn: Callable
    ) -> dict[str, Tensor]:
        """The batch estimate, the mean of the per-task estimates: ``{name: tensor}``
        shaped like ``named_parameters()``."""
        res = self._run(model, batch, loss_fn, want_loss=False)
        return res.flat.to_dict(res.task_gradients.mean(dim=0))

    def value_and_gradient(
        self, model: torch.nn.Module, batch: Batch, loss_fn: Callable
    ) -> tuple[Tensor, dict[str, Tensor]]:
        r"""The K-step meta-loss :math:`F_K(x) = \frac1m\sum_i f_i(\phi_{i,K})` (a 0-d tensor)
        and the batch estimate, from one pass."""
        res = self._run(model, batch, loss_fn, want_loss=True)
        return res.losses.mean(), res.flat.to_dict(res.task_gradients.mean(dim=0))

    def backward(self, model: torch.nn.Module, batch: Batch, loss_fn: Callable) -> Tensor:
        r"""Add the batch estimate to the parameters' ``.grad``; return :math:`F_K(x)`.

        Like ``loss.backward()``: the mean meta-gradient is added to ``p.grad`` of every
        trainable parameter (set where it is None), so that a ``torch.optim`` optimizer
        can step. Calling it twice adds it twice; call ``optimizer.zero_grad()`` first.

        Returns
        -------
        torch.Tensor
            The K-step meta-loss :math:`F_K(x) = \frac1m\sum_i f_i(\phi_{i,K})`, a detached
            0-d tensor.
        """
        res = self._run(model, batch, loss_fn, want_loss=True)
        mean = res.task_gradients.mean(dim=0)
        if not bool(torch.isfinite(mean).all()):
            raise FloatingPointError(f"{self.name}: the mean of the task estimates overflowed")
        res.flat.add_to_grad(mean)
        return res.losses.mean()


class MAML(Estimator):
    r"""The exact gradient of :math:`F_K`: reverse mode through the K inner steps.

    Parameters
    ----------
    inner : fobmaml.InnerLoop
    backward : {"autograd", "recursion"}
        ``"autograd"`` (default) differentiates through the inner loop with
        ``torch.func.grad``: the reference behaviour, whose memory holds every step's
        activations (it grows with K and with the model's activations).
        ``"recursion"`` runs the inner loop without a graph, keeps the K parameter vectors
        :math:`\phi_0 \dots \phi_{K-1}` and runs the reverse recursion

        .. math::

            a_K = \nabla f(\phi_K),\quad a_{K+1} = 0,\quad G = 0;\quad
            \text{for } k = K-1 \dots 0:\ G \mathrel{+}= \alpha\lambda a_{k+1},\
            a_k = (1+\beta-\alpha\lambda)a_{k+1} - \alpha\nabla^2 g(\phi_k)a_{k+1}
                  - \beta a_{k+2};

        returning :math:`G + a_0 - \beta a_1`, with one Hessian-vector product per step:
        K parameter vectors per task, no activations. Both give the same numbers.
    chunk_size : int, optional
        Tasks per vmap batch.

    Examples
    --------
    >>> import torch, fobmaml as fm, fobmaml.torch as fmt
    >>> model = torch.nn.Linear(3, 1).double()
    >>> X, Y = torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 5, 1, dtype=torch.float64)
    >>> est = fmt.MAML(fm.InnerLoop(steps=3, lr=0.1), backward="recursion")
    >>> g = est.meta_gradient(model, (X, Y, X, Y), torch.nn.functional.mse_loss)
    >>> g["weight"].shape
    torch.Size([1, 3])
    """

    def __init__(
        self, inner: InnerLoop, backward: str = "autograd", *, chunk_size: int | None = None
    ) -> None:
        super().__init__(inner, chunk_size=chunk_size)
        self.backward_mode = check.choice(backward, "backward", ("autograd", "recursion"))
        self._uses_hvp = self.backward_mode == "recursion"

    def _extra_params(self) -> dict:
        return {"backward": self.backward_mode, **super()._extra_params()}

    def _task(self, t, x, want_loss):
        inner = self.inner
        if self.backward_mode == "autograd":

            def f_after_k_steps(x):
                phi, status = _inner_loop(x, t.grad_g, inner)
                return t.f(phi), status

            g, (loss, status) = grad_and_value(f_after_k_steps, has_aux=True)(x)
            return g, loss, status.unsqueeze(0)
        trajectory: list[Tensor] = []
        phi, status = _inner_loop(x, t.grad_g, inner, trajectory)
        g, loss = _maml_recursion(t, trajectory, phi, inner, t.hvp)
        return g, loss, status.unsqueeze(0)


def _maml_recursion(t: _Task, trajectory, phi_K, inner: InnerLoop, hvp) -> tuple[Tensor, Tensor]:
    """The reverse recursion of ESTIMATORS.md with ``hvp(phi, v)``; (estimate, f(phi_K))."""
    lr, lam, beta = inner.lr, inner.lam, inner.momentum
    a_next, loss = t.grad_and_f(phi_K)
    a_next2 = torch.zeros_like(a_next)
    acc = torch.zeros_like(a_next)
    keep = 1.0 + beta - lr * lam
    for k in range(inner.steps - 1, -1, -1):
        acc = acc + (lr * lam) * a_next
        a_cur = keep * a_next - lr * hvp(trajectory[k], a_next)
        if beta != 0.0:
            a_cur = a_cur - beta * a_next2
        a_next2, a_next = a_next, a_cur
    return acc + a_next - beta * a_next2, loss


class FOMAML(Estimator):
    r"""First-order MAML: :math:`\nabla f_i(\phi_K)`."""

    def _task(self, t, x, want_loss):
        phi, status = _inner_loop(x, t.grad_g, self.inner)
        g, loss = t.grad_and_f(phi)
        return g, loss, status.unsqueeze(0)


class Reptile(Estimator):
    r"""Reptile: :math:`(x - \phi_K) / (\alpha K)`."""

    def _task(self, t, x, want_loss):
        phi, status = _inner_loop(x, t.grad_g, self.inner)
        loss = t.f(phi) if want_loss else x.new_zeros(())
        return (x - phi) / (self.inner.lr * self.inner.steps), loss, status.unsqueeze(0)


class IMAML(Estimator):
    r"""Implicit MAML: ``cg_steps`` conjugate-gradient iterations from u = 0 on
    :math:`(I + \nabla^2 g_i(\phi_K)/\lambda)\,u = \nabla f_i(\phi_K)`. Needs lambda > 0.

    A step with zero curvature, or a zero residual, ends the iteration early (as in the
    core). Hessian-vector products are ``jvp`` of ``grad``.
    """

    _needs_lam = True
    _uses_hvp = True

    def __init__(
        self, inner: InnerLoop, cg_steps: int = 5, *, chunk_size: int | None = None
    ) -> None:
        super().__init__(inner, chunk_size=chunk_size)
        self.cg_steps = check.integer(cg_steps, "cg_steps", minimum=1, maximum=2**31 - 1)

    def _extra_params(self) -> dict:
        return {"cg_steps": self.cg_steps, **super()._extra_params()}

    def _task(self, t, x, want_loss):
        lam = self.inner.lam
        phi, status = _inner_loop(x, t.grad_g, self.inner)
        b, loss = t.grad_and_f(phi)
        u = torch.zeros_like(b)
        r, p = b, b
        rs = r @ r
        done = rs == 0
        for _ in range(self.cg_steps):
            Mp = p + t.hvp(phi, p) / lam
            curv = p @ Mp
            stop = done | (curv == 0)
            a = torch.where(stop, torch.zeros_like(rs), rs / curv)
            u = torch.where(stop, u, u + a * p)
            r_new = torch.where(stop, r, r - a * Mp)
            rs_new = r_new @ r_new
            ratio = torch.where(stop, torch.zeros_like(rs), rs_new / rs)
            p = torch.where(stop, p, r_new + ratio * p)
            r, rs = r_new, torch.where(stop, rs, rs_new)
            done = stop | (rs == 0)
        return u, loss, status.unsqueeze(0)


class HFMAML(Estimator):
    r"""Hessian-free MAML: the MAML recursion with every HVP replaced by
    :math:`(\nabla g(\phi + \varepsilon v) - \nabla g(\phi - \varepsilon v)) / (2\varepsilon)`.
    Keeps the K parameter vectors of the trajectory. Like FOBMAML, it needs a smooth loss
    (a NonSmoothWarning names a ReLU or max-pooling layer)."""

    _finite_differences = True

    def __init__(
        self, inner: InnerLoop, eps: float = 1e-5, *, chunk_size: int | None = None
    ) -> None:
        super().__init__(inner, chunk_size=chunk_size)
        self.eps = check.positive(eps, "eps")

    def _extra_params(self) -> dict:
        return {"eps": self.eps, **super()._extra_params()}

    def _task(self, t, x, want_loss):
        e = self.eps

        def fd_hvp(p, v):
            return (t.grad_g(p + e * v) - t.grad_g(p - e * v)) / (2.0 * e)

        trajectory: list[Tensor] = []
        phi, status = _inner_loop(x, t.grad_g, self.inner, trajectory)
        g, loss = _maml_recursion(t, trajectory, phi, self.inner, fd_hvp)
        return g, loss, status.unsqueeze(0)


class FOBMAML(Estimator):
    r"""First-order bilevel MAML (Chayti & Jaggi): gradients only, no stored trajectory.

    With :math:`\psi^{s}_K` the inner loop run on the perturbed problem
    :math:`h_i(\psi; x) + s\,f_i(\psi)` (``perturbation="objective"``) or
    :math:`h_i(\psi; x) + s\,\langle \nabla f_i(\phi_K), \psi\rangle` (``"linear"``):

    - forward:   :math:`\lambda(\phi_K - \psi^{+\delta}_K)/\delta`, bias O(delta);
    - symmetric: :math:`\lambda(\psi^{-\delta}_K - \psi^{+\delta}_K)/(2\delta)`, bias O(delta^2).

    No autograd graph spans inner steps, so memory does not grow with K. Needs lambda > 0.

    The finite difference assumes a smooth loss. Layers whose gradient jumps (ReLU, max
    pooling) make it measure the jumps instead: a :class:`NonSmoothWarning` names such a
    layer. Use smooth layers (SiLU, GELU, Tanh, average pooling) with FO-B-MAML.

    Parameters
    ----------
    inner : fobmaml.InnerLoop
    delta : float
        The perturbation size > 0.
    scheme : {"forward", "symmetric"}
    perturbation : {"objective", "linear"}
    chunk_size : int, optional
        Tasks per vmap batch.

    Examples
    --------
    >>> import torch, fobmaml as fm, fobmaml.torch as fmt
    >>> model = torch.nn.Linear(3, 1).double()
    >>> X, Y = torch.randn(4, 5, 3, dtype=torch.float64), torch.randn(4, 5, 1, dtype=torch.float64)
    >>> est = fmt.FOBMAML(fm.InnerLoop(steps=10, lr=0.1, lam=2.0), scheme="symmetric")
    >>> loss = est.backward(model, (X, Y, X, Y), torch.nn.functional.mse_loss)
    >>> model.weight.grad.shape
    torch.Size([1, 3])
    """

    _needs_lam = True
    _finite_differences = True

    def __init__(
        self,
        inner: InnerLoop,
        delta: float = 1e-3,
        scheme: str = "forward",
        perturbation: str = "objective",
        *,
        chunk_size: int | None = None,
    ) -> None:
        super().__init__(inner, chunk_size=chunk_size)
        self.delta = check.positive(delta, "delta")
        self.scheme = check.choice(scheme, "scheme", ("forward", "symmetric"))
        self.perturbation = check.choice(perturbation, "perturbation", ("objective", "linear"))

    def _extra_params(self) -> dict:
        return {
            "delta": self.delta,
            "scheme": self.scheme,
            "perturbation": self.perturbation,
            **super()._extra_params(),
        }

    def _stages(self) -> tuple[str, ...]:
        return ("inner", "plus", "minus")

    def _task(self, t, x, want_loss):
        d, lam, inner = self.delta, self.inner.lam, self.inner
        sym = self.scheme == "symmetric"
        zero = torch.zeros((), dtype=torch.int64, device=x.device)
        phi = loss = None
        st_phi = st_minus = zero
        if self.perturbation == "linear":
            phi, st_phi = _inner_loop(x, t.grad_g, inner)
            v, loss = t.grad_and_f(phi)

            def perturbed(s):
                return lambda p: t.grad_g(p) + s * v

        else:

            def perturbed(s):
                return t.perturbed_grad(s)

            if not sym or want_loss:
                phi, st_phi = _inner_loop(x, t.grad_g, inner)
                loss = t.f(phi) if want_loss else None
        psi_plus, st_plus = _inner_loop(x, perturbed(d), inner)
        if sym:
            psi_minus, st_minus = _inner_loop(x, perturbed(-d), inner)
            g = (lam / (2.0 * d)) * (psi_minus - psi_plus)
        else:
            g = (lam / d) * (phi - psi_plus)
        if loss is None:
            loss = x.new_zeros(())
        return g, loss, torch.stack([st_phi, st_plus, st_minus])


# -- adaptation and the meta-loss ---------------------------------------------------------------
def _adapt(model, X_support, Y_support, inner, loss_fn, chunk_size, query=None):
    if not isinstance(inner, InnerLoop):
        raise TypeError(f"`inner` must be a fobmaml.InnerLoop (got {type(inner).__name__})")
    chunk_size = None if chunk_size is None else check.integer(chunk_size, "chunk_size", minimum=1)
    flat = FlatModel(model, loss_fn)
    if query is None:
        data = check_tensors((X_support, Y_support), BATCH_NAMES[:2], flat, "support set")
    else:
        data = check_tensors(query, BATCH_NAMES, flat, "batch")
    grad_g = grad(flat.loss)

    def per_task(x, Xs, Ys, *q):
        phi, status = _inner_loop(x, lambda p: grad_g(p, Xs, Ys), inner)
        loss = flat.loss(phi, *q) if q else x.new_zeros(())
        return phi, loss, status

    versions = flat.buffer_versions()
    try:
        with torch.no_grad():
            phi, losses, status = vmap(
                per_task, in_dims=(None,) + (0,) * len(data), chunk_size=chunk_size
            )(flat.x, *data)
    except RuntimeError as exc:
        clearer = _vmap_errors(exc)
        if clearer is None:
            raise
        raise clearer from exc
    flat.check_buffers_unchanged(versions)
    failed = (status != 0) | ~torch.isfinite(phi).all(dim=1) | ~torch.isfinite(losses)
    if bool(failed.any()):
        i = int(torch.nonzero(failed).flatten()[0])
        step = int(status[i])
        where = f"task {i}, step {step}" if step else f"task {i}"
        raise FloatingPointError(
            f"inner loop: diverged or not finite at {where}; reduce the inner `lr` or check "
            "the task data"
        )
    return flat, phi, losses


def adapt(
    model: torch.nn.Module,
    X_support: Tensor,
    Y_support: Tensor,
    inner: InnerLoop,
    loss_fn: Callable,
    *,
    chunk_size: int | None = None,
) -> dict[str, Tensor]:
    r"""The adapted parameters :math:`\phi_{i,K}(x)` of every task: ``{name: (m, *shape)}``.

    Runs the inner loop (K steps of heavy-ball gradient descent on
    :math:`g_i(\phi) + \frac{\lambda}{2}\lVert\phi - x\rVert^2` from :math:`\phi_0 = x`)
    on each task's support set. Use the result with ``torch.func.functional_call(model,
    {name: phi[name][i] for name in phi}, X)`` to predict with task i's parameters.

    Examples
    --------
    >>> import torch, fobmaml as fm, fobmaml.torch as fmt
    >>> model = torch.nn.Linear(3, 2)
    >>> X, Y = torch.randn(4, 5, 3), torch.randint(0, 2, (4, 5))
    >>> inner = fm.InnerLoop(steps=5, lr=0.1)
    >>> phi = fmt.adapt(model, X, Y, inner, torch.nn.functional.cross_entropy)
    >>> phi["weight"].shape
    torch.Size([4, 2, 3])
    """
    flat, phi, _ = _adapt(model, X_support, Y_support, inner, loss_fn, chunk_size)
    return flat.to_dict(phi)


def meta_loss(
    model: torch.nn.Module,
    batch: Batch,
    inner: InnerLoop,
    loss_fn: Callable,
    *,
    chunk_size: int | None = None,
) -> Tensor:
    r"""The K-step meta-loss :math:`F_K(x) = \frac1m\sum_i f_i(\phi_{i,K}(x))`, a 0-d tensor."""
    _, _, losses = _adapt(model, None, None, inner, loss_fn, chunk_size, query=batch)
    return losses.mean()
