"""fobmaml: first-order bilevel MAML and its baselines, with a C++ core.

>>> import numpy as np, fobmaml as fm
>>> tasks = fm.datasets.quadratic_tasks(m=8, n=20, kappa=100.0, seed=0)
>>> inner = fm.InnerLoop(steps=20, lr=0.5, lam=1.0)
>>> g = fm.FOBMAML(inner, delta=1e-3, scheme="symmetric").meta_gradient(np.zeros(20), tasks)
>>> g.shape
(20,)
"""

import contextlib

from . import checkpoint, datasets, diagnostics, mlp, nn, optim
from ._native import ISA as _ISA
from ._native import core as _core
from ._version import __version__
from .checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from .errors import (
    ConvergenceError,
    NonFiniteStepError,
    NonSmoothWarning,
    NotPositiveDefiniteError,
)
from .estimators import (
    FOBMAML,
    FOMAML,
    HFMAML,
    IMAML,
    MAML,
    Estimate,
    Estimator,
    Exact,
    Reptile,
    adapt,
    get_memory_limit,
    meta_loss,
    meta_loss_k,
    set_memory_limit,
)
from .evaluation import Evaluation, evaluate
from .inner import InnerLoop
from .optim import GD, SGD, SNGDM, Adam, ClippedGD, Momentum, NormalizedGD, Optimizer
from .tasks import MLPTasks, NetTasks, QuadraticTasks, TaskBatch
from .train import TrainResult, meta_train


def build_info() -> dict:
    """How the C++ core in use was built: compiler, OpenMP, threads, Eigen, SIMD, ISA variant."""
    return {**dict(_core.build_info()), "isa": _ISA}


def set_num_threads(k: int) -> int:
    """Threads used by the kernels, process-wide; returns the previous setting.

    ``k > 0`` uses exactly k threads (at most one per task). ``k = 0``, the default,
    is automatic: up to OpenMP's default (``OMP_NUM_THREADS`` or the number of cores),
    but a batch too small to pay for a second thread runs on one. Results do not
    depend on the number of threads: every task is computed the same way and the
    sum over tasks is taken in task order. See also :func:`num_threads`.
    """
    from . import _validation

    return int(_core.set_num_threads(_validation.integer(k, "k", minimum=0)))


@contextlib.contextmanager
def num_threads(k: int):
    """Context manager: run the kernels on k threads (0: automatic) inside the block.

    >>> import fobmaml as fm
    >>> with fm.num_threads(1):
    ...     pass
    """
    previous = set_num_threads(k)
    try:
        yield
    finally:
        _core.set_num_threads(previous)


def get_num_threads() -> int:
    """The most threads the kernels will use (a batch uses at most one per task)."""
    return int(_core.max_threads())


__all__ = [
    "__version__",
    "build_info",
    "set_num_threads",
    "get_num_threads",
    "num_threads",
    "set_memory_limit",
    "get_memory_limit",
    "datasets",
    "diagnostics",
    "InnerLoop",
    "TaskBatch",
    "QuadraticTasks",
    "MLPTasks",
    "NetTasks",
    "mlp",
    "nn",
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
    "evaluate",
    "Evaluation",
    "optim",
    "Optimizer",
    "GD",
    "SGD",
    "Momentum",
    "Adam",
    "ClippedGD",
    "NormalizedGD",
    "SNGDM",
    "meta_train",
    "TrainResult",
    "checkpoint",
    "CheckpointError",
    "save_checkpoint",
    "load_checkpoint",
    "NotPositiveDefiniteError",
    "ConvergenceError",
    "NonFiniteStepError",
    "NonSmoothWarning",
]
