"""Shared driver of the meta-training comparisons (sinusoid, MNIST-1D).

Every estimator is meta-trained from the same initialization, on the same stream
of task batches (the sampler is driven by the same seed), with the same outer
optimizer and the same number of iterations, and evaluated on the same held-out
tasks every ``eval_every`` iterations.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from ..estimators import FOBMAML, FOMAML, HFMAML, IMAML, MAML, Estimator, Reptile
from ..evaluation import evaluate
from ..inner import InnerLoop
from ..optim import GD, SNGDM, Adam, ClippedGD, Momentum, NormalizedGD
from ..tasks import TaskBatch
from ..train import meta_train

#: Estimator names accepted by the commands, and how each is built from the inner loop.
ESTIMATORS: dict[str, Callable[[InnerLoop, float], Estimator]] = {
    "fobmaml": lambda inner, delta: FOBMAML(inner, delta=delta, scheme="symmetric"),
    "fobmaml-forward": lambda inner, delta: FOBMAML(inner, delta=delta, scheme="forward"),
    "fobmaml-linear": lambda inner, delta: FOBMAML(
        inner, delta=delta, scheme="symmetric", perturbation="linear"
    ),
    "maml": lambda inner, delta: MAML(inner),
    "fomaml": lambda inner, delta: FOMAML(inner),
    "reptile": lambda inner, delta: Reptile(inner),
    "imaml": lambda inner, delta: IMAML(inner, cg_steps=5),
    "hfmaml": lambda inner, delta: HFMAML(inner),
}

LABELS = {
    "fobmaml": "FO-B-MAML (symmetric)",
    "fobmaml-forward": "FO-B-MAML (forward)",
    "fobmaml-linear": "FO-B-MAML (symmetric, linear)",
    "maml": "MAML",
    "fomaml": "FO-MAML",
    "reptile": "Reptile",
    "imaml": "iMAML (cg=5)",
    "hfmaml": "HF-MAML",
}

COLORS = {
    "fobmaml": "#006d2c",
    "fobmaml-forward": "#74c476",
    "fobmaml-linear": "#31a354",
    "maml": "black",
    "fomaml": "#d62728",
    "reptile": "#ff7f0e",
    "imaml": "#2171b5",
    "hfmaml": "#7f7f7f",
}

#: Outer optimizers accepted by the commands: name -> (lr -> optimizer).
OPTIMIZERS: dict[str, Callable[[float], object]] = {
    "adam": lambda lr: Adam(lr),
    "sgd": lambda lr: GD(lr),
    "momentum": lambda lr: Momentum(lr, beta=0.9),
    "clipped": lambda lr: ClippedGD(lr, clip=1.0),
    "normalized": lambda lr: NormalizedGD(lr),
    "sngdm": lambda lr: SNGDM(lr, beta=0.9),
}


def check_names(names: Sequence[str], known: dict, what: str) -> tuple[str, ...]:
    names = tuple(names)
    unknown = [n for n in names if n not in known]
    if unknown or not names:
        raise ValueError(
            f"`{what}` must be a non-empty list drawn from {sorted(known)} (got {list(names)})"
        )
    return names


@dataclass
class Run:
    """One estimator's meta-training run and its held-out evaluations."""

    name: str
    x: np.ndarray
    iterations: list[int]
    eval_loss: list[float]
    eval_accuracy: list[float | None]
    train_loss: np.ndarray  # per iteration (F_K on the training batch)
    seconds: float  # wall time of estimator + optimizer work


def compare(
    names: Sequence[str],
    x0: np.ndarray,
    sampler: Callable[[np.random.Generator], TaskBatch],
    eval_tasks: TaskBatch,
    inner: InnerLoop,
    delta: float,
    optimizer: Callable[[], object],
    iterations: int,
    eval_every: int,
    seed: int,
    progress: bool,
    executor=None,
) -> dict[str, Run]:
    """Meta-train each named estimator under the same budget; evaluate on `eval_tasks`.

    With an ``executor`` (a :class:`fobmaml.distributed.DaskExecutor`) the meta-training
    runs on its cluster, with the same results.
    """
    runs = {}
    for name in names:
        est = ESTIMATORS[name](inner, delta)
        its, losses, accs = [], [], []

        def track(t, x, record, its=its, losses=losses, accs=accs):
            if t % eval_every == 0 or t == iterations:
                ev = evaluate(x, eval_tasks, inner)
                its.append(t)
                losses.append(ev.loss)
                accs.append(ev.accuracy)

        res = meta_train(
            x0,
            sampler,
            est,
            optimizer(),
            iterations,
            seed=seed,
            callback=track,
            progress=progress,
            desc=LABELS[name],
            executor=executor,
        )
        runs[name] = Run(
            name=name,
            x=res.x,
            iterations=its,
            eval_loss=losses,
            eval_accuracy=accs,
            train_loss=res.history["meta_loss"],
            seconds=float(res.history["time"][-1]) if len(res.history["time"]) else 0.0,
        )
    return runs


def curve_rows(runs: dict[str, Run], optimizer: str):
    for name, run in runs.items():
        for t, loss, acc in zip(run.iterations, run.eval_loss, run.eval_accuracy):
            yield (name, optimizer, t, loss, "" if acc is None else acc, run.train_loss[t])


def plot_curves(
    runs: dict[str, Run], path, ylabel: str, accuracy: bool, baseline: float, title: str
):
    from ._io import new_figure

    fig, (ax,) = new_figure(1, width=6.0, height=4.2)
    for name, run in runs.items():
        y = run.eval_accuracy if accuracy else run.eval_loss
        ax.plot(run.iterations, y, color=COLORS[name], label=LABELS[name])
    ax.axhline(baseline, color="#999999", linestyle=":", label="no meta-training")
    if not accuracy:
        ax.set_yscale("log")
    ax.set_xlabel("outer iteration")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=150)
    return path
