"""MAML with ``higher`` (Grefenstette et al.): the library's own recipe, task by task.

The meta-parameters live in an ``nn.Module`` (an ``nn.Sequential`` of ``nn.Linear`` and
``nn.Tanh``/``nn.ReLU`` in float64 for an MLP, ``net.to_torch()`` for any ``fobmaml.nn``
network, loaded from ``x0`` with ``vector_to_parameters``; for quadratic tasks, a module
holding one parameter vector). For each task,

    with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (fmodel, diffopt):
        for k in range(K):
            diffopt.step(g(fmodel) + lam/2 * sum ||p_fast - p||^2)
        f(fmodel).backward()

with ``inner_opt = torch.optim.SGD(lr=lr, momentum=beta)``: torch's SGD momentum
(``buf = beta buf + grad``, buffer started at the first gradient) is exactly the heavy
ball ``phi_{k+1} = phi_k - lr grad + beta (phi_k - phi_{k-1})`` from ``phi_{-1} = phi_0``.
``copy_initial_weights=False`` makes the model's parameters the start of the fast
weights, so ``backward`` reaches them both through ``phi_0 = x`` and through the
proximal term. The meta-gradient is the accumulated ``.grad`` divided by m.

Only MAML: ``higher`` exists to differentiate through an inner optimizer.
"""

from __future__ import annotations

from collections.abc import Callable

import higher
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parameters_to_vector, vector_to_parameters

from ._torch_common import DTYPE, settings, tensors, to_numpy
from .problems import Problem

__all__ = ["NAME", "ESTIMATORS", "build", "to_numpy", "settings"]

NAME = "torch-higher"
ESTIMATORS = ("MAML",)


class _QuadraticModel(nn.Module):
    """A parameter vector phi; ``forward()`` returns it."""

    def __init__(self, n: int) -> None:
        super().__init__()
        self.phi = nn.Parameter(torch.zeros(n, dtype=DTYPE))

    def forward(self) -> torch.Tensor:
        return self.phi


def _model(problem: Problem) -> nn.Module:
    if problem.family == "quadratic":
        model = _QuadraticModel(problem.dim)
    else:
        model = problem.net.to_torch()  # float64; an MLP is a fobmaml.nn network too
    vector_to_parameters(torch.from_numpy(problem.x0.copy()), model.parameters())
    return model


def _task_losses(problem: Problem) -> list[tuple[Callable, Callable]]:
    """Per task: (support loss of a (functional) model, query loss of it)."""
    d = tensors(problem)
    out = []
    for i in range(problem.num_tasks):
        if problem.family == "quadratic":
            A, b, B, c = d["A"][i], d["b"][i], d["B"][i], d["c"][i]

            def g(fm_, A=A, b=b):
                p = fm_()
                return 0.5 * p @ (A @ p) - b @ p

            def f(fm_, B=B, c=c):
                p = fm_()
                return 0.5 * p @ (B @ p) - c @ p

        else:
            crit = F.cross_entropy if problem.loss == "xent" else F.mse_loss
            Xs, Ys, Xq, Yq = d["Xs"][i], d["Ys"][i], d["Xq"][i], d["Yq"][i]

            def g(fm_, X=Xs, Y=Ys, crit=crit):
                return crit(fm_(X), Y)

            def f(fm_, X=Xq, Y=Yq, crit=crit):
                return crit(fm_(X), Y)

        out.append((g, f))
    return out


def build(problem: Problem, estimator: str) -> Callable[[], torch.Tensor]:
    if estimator not in ESTIMATORS:
        raise ValueError(f"{NAME} implements only MAML (got {estimator!r})")
    model = _model(problem)
    params = list(model.parameters())
    losses = _task_losses(problem)
    inner = problem.inner
    K, lam, m = inner.steps, inner.lam, problem.num_tasks
    inner_opt = torch.optim.SGD(params, lr=inner.lr, momentum=inner.momentum)

    def maml() -> torch.Tensor:
        for p in params:
            p.grad = None
        for g, f in losses:
            with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False) as (
                fmodel,
                diffopt,
            ):
                for _ in range(K):
                    prox = sum(((q - p) ** 2).sum() for q, p in zip(fmodel.parameters(), params))
                    diffopt.step(g(fmodel) + 0.5 * lam * prox)
                f(fmodel).backward()
        return parameters_to_vector([p.grad for p in params]) / m

    return maml
