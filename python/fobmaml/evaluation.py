"""Post-adaptation evaluation on held-out tasks."""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

from . import _validation as check
from ._adapt import run
from .inner import InnerLoop
from .tasks import TaskBatch

__all__ = ["Evaluation", "evaluate"]


class Evaluation(NamedTuple):
    """What :func:`evaluate` returns (means over tasks, and the per-task values)."""

    loss: float  # mean query loss after K inner steps from x
    accuracy: float | None  # mean query accuracy after adaptation (classification only)
    loss_before: float  # the no-adaptation baseline: mean query loss at x itself
    accuracy_before: float | None
    task_loss: np.ndarray  # (m,)
    task_accuracy: np.ndarray | None  # (m,)

    def as_dict(self) -> dict:
        return {
            "loss": self.loss,
            "accuracy": self.accuracy,
            "loss_before": self.loss_before,
            "accuracy_before": self.accuracy_before,
        }


def evaluate(x: np.ndarray, tasks: TaskBatch, inner: InnerLoop) -> Evaluation:
    r"""Query loss (and accuracy, for classification) after adapting x to each task.

    For each task i, :math:`\phi_{i,K}` is computed from x on the support set with
    the inner loop, and the query loss :math:`f_i(\phi_{i,K})` and, for
    ``loss="xent"`` families, the query accuracy (the fraction of query samples whose
    largest logit is the label) are measured there. The same quantities at x itself,
    without adaptation, are reported as the baseline.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> tasks = fm.datasets.quadratic_tasks(4, 6, kappa=10.0, seed=0)
    >>> ev = fm.evaluate(np.zeros(6), tasks, fm.InnerLoop(steps=50, lr=0.5))
    >>> bool(ev.loss < ev.loss_before), ev.accuracy is None
    (True, True)
    """
    tasks = check.task_batch(tasks)
    inner = check.inner_loop(inner)
    x = check.params_vector(x, tasks.dim)
    after = run(x, tasks, inner._config(), "evaluate (after adaptation)")
    base = inner._config()
    base.steps = 0
    before = run(x, tasks, base, "evaluate (no adaptation)")
    return Evaluation(
        loss=check.safe_mean(after.losses),
        accuracy=None if after.accuracy is None else float(np.mean(after.accuracy)),
        loss_before=check.safe_mean(before.losses),
        accuracy_before=None if before.accuracy is None else float(np.mean(before.accuracy)),
        task_loss=after.losses,
        task_accuracy=after.accuracy,
    )
