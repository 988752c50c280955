"""fobmaml's own PyTorch front end (``fobmaml.torch``) on the benchmark problems.

The network is an ``nn.Sequential`` in float64: ``nn.Linear`` and ``nn.Tanh``/``nn.ReLU``
layers for an MLP problem, ``net.to_torch()`` for a ``fobmaml.nn`` network. It is loaded from
``x0`` with ``vector_to_parameters`` (the core's flat layout, which is torch's), and
the loss is ``F.mse_loss`` or ``F.cross_entropy``: the model and loss a user would write.
Each call is ``est.meta_gradient(model, batch, loss_fn)`` with the ``fobmaml.torch``
estimator of the benchmark's name; the result is concatenated in ``named_parameters()``
order. Network problems only: the quadratic tasks are not a ``torch.nn.Module``.

Two implementations share this module:

- ``fobmaml-torch``: every estimator, MAML with ``backward="autograd"`` (the default);
- ``fobmaml-torch-rec``: MAML only, with ``backward="recursion"`` (HVP reverse recursion).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import vector_to_parameters

import fobmaml as fm
import fobmaml.torch as fmt

from ._torch_common import settings, tensors, to_numpy
from .problems import ESTIMATORS, Problem, fobmaml_estimator

__all__ = ["NAME", "ESTIMATORS", "build", "to_numpy", "settings", "model_of"]

NAME = "fobmaml-torch"


def model_of(problem: Problem) -> nn.Module:
    """The problem's network as an ``nn.Sequential`` in float64, with parameters ``x0``."""
    model = problem.net.to_torch()  # float64; an MLP is a fobmaml.nn network too
    vector_to_parameters(torch.from_numpy(problem.x0.copy()), model.parameters())
    return model


def estimator(name: str, inner: fm.InnerLoop, maml_backward: str = "autograd") -> fmt.Estimator:
    """The ``fobmaml.torch`` estimator behind one of :data:`ESTIMATORS`."""
    return fobmaml_estimator(name, inner, fmt, backward=maml_backward)


def build(
    problem: Problem, name: str, maml_backward: str = "autograd"
) -> Callable[[], torch.Tensor]:
    if problem.family not in ("mlp", "net"):
        raise ValueError(f"{NAME} runs network problems only (got {problem.family!r})")
    est = estimator(name, problem.inner, maml_backward)
    model = model_of(problem)
    d = tensors(problem)
    batch = (d["Xs"], d["Ys"], d["Xq"], d["Yq"])
    loss_fn = F.cross_entropy if problem.loss == "xent" else F.mse_loss

    def call() -> torch.Tensor:
        # The benchmark networks have ReLU and max pooling on purpose (the problems every peer
        # runs); FO-B-MAML's warning about them is for users, not for this comparison.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", fmt.NonSmoothWarning)
            g = est.meta_gradient(model, batch, loss_fn)
        return torch.cat([t.reshape(-1) for t in g.values()])

    return call
