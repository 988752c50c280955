"""The kernels' inner loop on a task batch, behind ``adapt``, ``meta_loss_k`` and ``evaluate``."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from ._native import core as _core
from .errors import TaskStatus, raise_for_status


class Adapted(NamedTuple):
    """The inner loop's results on each of the m tasks."""

    phi: np.ndarray | None  # (m, n): phi_K, when asked for
    losses: np.ndarray  # (m,): the query loss f_i(phi_K)
    accuracy: np.ndarray | None  # (m,): the query accuracy, for classification families


def run(
    x: np.ndarray, tasks, config: _core.InnerConfig, who: str, want_phi: bool = False
) -> Adapted:
    """Run the inner loop ``config`` from ``x`` on every task; raise for any failed task.

    ``x`` and ``tasks`` must already be validated; ``who`` names the caller in errors.
    """
    phi, losses, accuracy, status = _core.adapt(tasks._handle, x, config, want_phi)
    raise_for_status(TaskStatus(*status), who)
    return Adapted(
        phi if want_phi else None, losses, None if np.isnan(accuracy).all() else accuracy
    )
