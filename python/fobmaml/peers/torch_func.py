"""torch.func: per-task functions, ``vmap`` over tasks, ``grad`` and ``jvp`` for the rest.

The task losses are pure functions of a flat float64 parameter vector (a hand-written
functional MLP, or any ``fobmaml.nn`` network built from its config, see
``_torch_common``; under ``vmap`` a convolution with per-task weights becomes one grouped
convolution). One task's inner loop is a Python loop of
``phi - lr (grad(g)(phi) + lam (phi - x)) + beta (phi - phi_prev)``; ``vmap`` runs it
for all tasks at once (``in_dims=(None, 0)``: x shared, data stacked over tasks).

- MAML: ``grad(lambda x: vmap(task_query_loss_after_K_steps)(x, data).mean())(x)``,
  reverse mode through the vmapped loop;
- FO-MAML: ``vmap(grad(f))`` at the vmapped ``phi_K``;
- iMAML: CG with forward-over-reverse Hessian-vector products,
  ``jvp(grad(g), (phi,), (v,))``, inside the vmapped per-task function;
- FO-B-MAML (symmetric, objective perturbation): the two perturbed loops on ``g + s f``
  (``s = +delta, -delta``) in the per-task function, vmapped over the tasks. (Vmapping
  over s as well, 2m loops in one batch, is 3x slower on the quadratics in torch 2.13.)
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch.func import grad, jvp, vmap

from ._torch_common import make_loss, quad_loss, settings, tensors, to_numpy
from .problems import CG_STEPS, DELTA, ESTIMATORS, Problem

__all__ = ["NAME", "ESTIMATORS", "build", "to_numpy", "settings"]

NAME = "torch-func"


def _losses(problem: Problem, d: dict[str, torch.Tensor]):
    """(data, g(p, task), f(p, task)) with data a tuple of tensors stacked over tasks."""
    if problem.family == "quadratic":
        data = (d["A"], d["b"], d["B"], d["c"])

        def g(p, t):
            return quad_loss(p, t[0], t[1])

        def f(p, t):
            return quad_loss(p, t[2], t[3])

    else:
        loss = make_loss(problem)
        data = (d["Xs"], d["Ys"], d["Xq"], d["Yq"])

        def g(p, t):
            return loss(p, t[0], t[1])

        def f(p, t):
            return loss(p, t[2], t[3])

    return data, g, f


def build(problem: Problem, estimator: str) -> Callable[[], torch.Tensor]:
    if estimator not in ESTIMATORS:
        raise ValueError(f"{NAME} does not implement {estimator!r}")
    data, g, f = _losses(problem, tensors(problem))
    x0 = torch.from_numpy(problem.x0.copy())
    inner = problem.inner
    K, lr, lam, beta = inner.steps, inner.lr, inner.lam, inner.momentum
    grad_g, grad_f = grad(g), grad(f)

    def inner_loop(x, t, s=None):
        """phi_K of task t; with s, psi^s_K of the perturbed problem g + s f."""
        step_grad = grad_g if s is None else grad(lambda p: g(p, t) + s * f(p, t))
        phi = prev = x
        for _ in range(K):
            gr = grad_g(phi, t) if s is None else step_grad(phi)
            new = phi - lr * (gr + lam * (phi - x))
            if beta:
                new = new + beta * (phi - prev)
            phi, prev = new, phi
        return phi

    over_tasks = (None, 0)

    def maml():
        def meta_loss(x):
            return vmap(lambda x, t: f(inner_loop(x, t), t), in_dims=over_tasks)(x, data).mean()

        return grad(meta_loss)(x0)

    def fomaml():
        phi = vmap(inner_loop, in_dims=over_tasks)(x0, data)
        return vmap(grad_f)(phi, data).mean(0)

    def imaml_task(x, t):
        phi = inner_loop(x, t)
        rhs = grad_f(phi, t)

        def apply(v):
            return v + jvp(lambda p: grad_g(p, t), (phi,), (v,))[1] / lam

        u, r = torch.zeros_like(rhs), rhs
        p, rs = r, r @ r
        for _ in range(CG_STEPS):
            Mp = apply(p)
            a = rs / (p @ Mp)
            u = u + a * p
            r = r - a * Mp
            rs_new = r @ r
            p = r + (rs_new / rs) * p
            rs = rs_new
        return u

    def imaml():
        return vmap(imaml_task, in_dims=over_tasks)(x0, data).mean(0)

    def fobmaml_task(x, t):
        plus, minus = inner_loop(x, t, DELTA), inner_loop(x, t, -DELTA)
        return lam * (minus - plus) / (2 * DELTA)

    def fobmaml():
        return vmap(fobmaml_task, in_dims=over_tasks)(x0, data).mean(0)

    return {
        "MAML": maml,
        "FOMAML": fomaml,
        "IMAML(cg=5)": imaml,
        "FOBMAML(symmetric)": fobmaml,
    }[estimator]
