"""``fobmaml.torch`` MAML with ``backward="recursion"``: the reverse recursion with
Hessian-vector products (``jvp`` of ``grad``), K parameter vectors per task and no
activations kept across steps. Everything else as in ``fobmaml_torch``."""

from __future__ import annotations

from collections.abc import Callable

import torch

from . import fobmaml_torch
from ._torch_common import settings, to_numpy
from .problems import Problem

__all__ = ["NAME", "ESTIMATORS", "build", "to_numpy", "settings"]

NAME = "fobmaml-torch-rec"
ESTIMATORS = ("MAML",)


def build(problem: Problem, estimator: str) -> Callable[[], torch.Tensor]:
    if estimator not in ESTIMATORS:
        raise ValueError(f"{NAME} implements only MAML (got {estimator!r})")
    return fobmaml_torch.build(problem, estimator, maml_backward="recursion")
