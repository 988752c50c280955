"""PyTorch eager autograd: the learn2learn / higher way, by hand.

A Python loop over the tasks of the batch (networks: MLPs and any ``fobmaml.nn`` net,
convolutional ones included); for quadratic tasks, all tasks at
once with batched matmuls (their losses are separable, so the gradient of the summed
loss holds each task's gradient). Per task, the inner loop

    phi_{k+1} = phi_k - lr (grad g(phi_k) + lam (phi_k - x)) + beta (phi_k - phi_{k-1})

runs on a flat float64 parameter vector with ``torch.autograd.grad``:

- MAML: ``create_graph=True`` through the K steps, then ``autograd.grad(f(phi_K), x)``;
- FO-MAML: no graph across steps; ``grad f(phi_K)``;
- iMAML: ``cg_steps`` CG iterations on ``(I + H/lam) u = grad f(phi_K)`` with the
  Hessian-vector product by double backward (``grad`` with ``create_graph=True`` once,
  then ``autograd.grad(grad, phi, v, retain_graph=True)`` per CG step);
- FO-B-MAML (symmetric, objective perturbation): the two perturbed inner loops on
  ``g + s f`` for ``s = +delta, -delta``, then ``lam (psi^- - psi^+) / (2 delta)``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from ._torch_common import make_loss, quad_loss, settings, tensors, to_numpy
from .problems import CG_STEPS, DELTA, ESTIMATORS, Problem

__all__ = ["NAME", "ESTIMATORS", "build", "to_numpy", "settings"]

NAME = "torch-eager"

Loss = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class _Unit:
    """One autograd unit of work: a single task (MLP) or the whole batch (quadratic)."""

    g: Loss  # support loss, summed over the unit's tasks
    f: Loss  # query loss, summed over the unit's tasks
    rows: int  # 0: phi is (n,); m: phi is (m, n)

    def start(self, x: torch.Tensor) -> torch.Tensor:
        return x if self.rows == 0 else x.expand(self.rows, -1)

    def total(self, per_task: torch.Tensor) -> torch.Tensor:
        """The sum over the unit's tasks of per-task vectors."""
        return per_task if self.rows == 0 else per_task.sum(0)


def _units(problem: Problem) -> list[_Unit]:
    d = tensors(problem)
    if problem.family == "quadratic":
        A, b, B, c = d["A"], d["b"], d["B"], d["c"]
        return [
            _Unit(lambda p: quad_loss(p, A, b), lambda p: quad_loss(p, B, c), problem.num_tasks)
        ]
    loss = make_loss(problem)
    units = []
    for i in range(problem.num_tasks):
        Xs, Ys, Xq, Yq = d["Xs"][i], d["Ys"][i], d["Xq"][i], d["Yq"][i]
        units.append(
            _Unit(lambda p, X=Xs, Y=Ys: loss(p, X, Y), lambda p, X=Xq, Y=Yq: loss(p, X, Y), 0)
        )
    return units


def _inner_loop(x, unit: _Unit, K, lr, lam, beta, s=0.0, create_graph=False):
    """phi_K (or psi^s_K); with create_graph the result is differentiable in x."""
    phi = prev = unit.start(x)
    for _ in range(K):
        if not create_graph:
            phi = phi.detach().requires_grad_(True)
        loss = unit.g(phi) if s == 0.0 else unit.g(phi) + s * unit.f(phi)
        (grad,) = torch.autograd.grad(loss, phi, create_graph=create_graph)
        with torch.set_grad_enabled(create_graph):
            new = phi - lr * (grad + lam * (phi - x))
            if beta:
                new = new + beta * (phi - prev)
        phi, prev = new, phi
    return phi if create_graph else phi.detach()


def _grad_at(loss: Loss, phi: torch.Tensor) -> torch.Tensor:
    phi = phi.detach().requires_grad_(True)
    return torch.autograd.grad(loss(phi), phi)[0]


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-task inner products (one per row for a batch), kept broadcastable."""
    return (a * b).sum(-1, keepdim=True)


def build(problem: Problem, estimator: str) -> Callable[[], torch.Tensor]:
    if estimator not in ESTIMATORS:
        raise ValueError(f"{NAME} does not implement {estimator!r}")
    units = _units(problem)
    x0 = torch.from_numpy(problem.x0.copy())
    m = problem.num_tasks
    inner = problem.inner
    K, lr, lam, beta = inner.steps, inner.lr, inner.lam, inner.momentum

    def maml():
        total = torch.zeros_like(x0)
        for u in units:
            x = x0.detach().requires_grad_(True)
            phi = _inner_loop(x, u, K, lr, lam, beta, create_graph=True)
            total += torch.autograd.grad(u.f(phi), x)[0]
        return total / m

    def fomaml():
        total = torch.zeros_like(x0)
        for u in units:
            phi = _inner_loop(x0, u, K, lr, lam, beta)
            total += u.total(_grad_at(u.f, phi))
        return total / m

    def imaml():
        total = torch.zeros_like(x0)
        for u in units:
            phi = _inner_loop(x0, u, K, lr, lam, beta).requires_grad_(True)
            rhs = _grad_at(u.f, phi)
            (grad_g,) = torch.autograd.grad(u.g(phi), phi, create_graph=True)

            def apply(v, grad_g=grad_g, phi=phi):
                (hv,) = torch.autograd.grad(grad_g, phi, v, retain_graph=True)
                return v + hv / lam

            with torch.no_grad():
                sol, r = torch.zeros_like(rhs), rhs.clone()
                p, rs = r.clone(), _dot(r, r)
            for _ in range(CG_STEPS):
                Mp = apply(p)
                with torch.no_grad():
                    a = rs / _dot(p, Mp)
                    sol += a * p
                    r -= a * Mp
                    rs_new = _dot(r, r)
                    p = r + (rs_new / rs) * p
                    rs = rs_new
            total += u.total(sol)
        return total / m

    def fobmaml():
        total = torch.zeros_like(x0)
        for u in units:
            plus = _inner_loop(x0, u, K, lr, lam, beta, s=DELTA)
            minus = _inner_loop(x0, u, K, lr, lam, beta, s=-DELTA)
            total += u.total(lam * (minus - plus) / (2 * DELTA))
        return total / m

    return {
        "MAML": maml,
        "FOMAML": fomaml,
        "IMAML(cg=5)": imaml,
        "FOBMAML(symmetric)": fobmaml,
    }[estimator]
