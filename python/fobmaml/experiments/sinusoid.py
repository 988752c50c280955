"""Few-shot sinusoid regression (Finn et al., 2017), meta-trained with each estimator.

Tasks: y = A sin(x - phi), A ~ U[0.1, 5], phi ~ U[0, pi], x ~ U[-5, 5], with 10
support and 10 query points per task, 25 tasks per meta-batch, and a
[1, 40, 40, 1] network. Every estimator gets the same budget (iterations, batch
stream, outer optimizer) and is evaluated on the same 100 held-out sines
(10 support points, 100 query points each) by the query MSE after adaptation.

The inner loop is the proximal one of the paper: K steps of gradient descent on
g_i(phi) + lam/2 ||phi - x||^2. With lam = 20 and lr = 0.025 it nearly solves the
inner problem in K = 10 steps, which FO-B-MAML (an estimate of the gradient of the
solved problem) needs. The default activation is tanh: with relu the inner
problem is non-smooth and gradient descent chatters around kinks instead of
converging, so the derivative of its solution, which FO-B-MAML estimates, is not
defined (``--activation relu`` runs it anyway).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import datasets, mlp
from ..evaluation import evaluate
from ..inner import InnerLoop
from . import _metatrain as mt
from ._io import environment, new_figure, out_dir, write_csv, write_json

#: MAML's 10-shot sinusoid MSE as published (one inner step, lr 0.01), as reported in
#: Li et al. (2017), "Meta-SGD", Table 1: 0.77 +- 0.11.
PUBLISHED_MAML_10SHOT_MSE = 0.77


@dataclass(frozen=True)
class SinusoidConfig:
    estimators: tuple[str, ...] = ("fobmaml", "maml", "fomaml", "reptile")
    optimizer: str = "adam"
    outer_lr: float = 1e-3
    iterations: int = 2000
    eval_every: int = 100
    meta_batch: int = 25
    k_support: int = 10
    k_query: int = 10
    eval_tasks: int = 100
    eval_k_query: int = 100
    layers: tuple[int, ...] = (1, 40, 40, 1)
    activation: str = "tanh"
    steps: int = 10
    inner_lr: float = 0.025
    lam: float = 20.0
    momentum: float = 0.0
    delta: float = 1e-3
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls) -> SinusoidConfig:
        return cls(
            iterations=30,
            eval_every=10,
            meta_batch=5,
            eval_tasks=10,
            layers=(1, 20, 20, 1),
            steps=5,
            quick=True,
        )

    def inner(self) -> InnerLoop:
        return InnerLoop(steps=self.steps, lr=self.inner_lr, lam=self.lam, momentum=self.momentum)


def _plot_fits(cfg, runs, x0, path):
    """A few held-out sines: the truth, the support points, and each estimator's adapted fit."""
    sampler = datasets.sinusoid(3, cfg.k_support, 1, layers=cfg.layers, activation=cfg.activation)
    rng = np.random.default_rng(cfg.seed + 2)
    amps, phases = np.array([0.5, 2.5, 4.5]), np.array([0.3, 1.5, 2.8])
    tasks = sampler.tasks_from(amps, phases, rng)
    grid = np.linspace(-5, 5, 200)
    fig, axes = new_figure(3, width=4.0, height=3.2)
    inner = cfg.inner()
    starts = {"no meta-training": x0, **{n: r.x for n, r in runs.items()}}
    for j, ax in enumerate(axes):
        ax.plot(grid, amps[j] * np.sin(grid - phases[j]), color="#bbbbbb", lw=4, label="true")
        ax.scatter(
            tasks.X_support[j, :, 0],
            tasks.Y_support[j, :, 0],
            color="k",
            s=14,
            zorder=5,
            label=f"{cfg.k_support} support points",
        )
        for name, x in starts.items():
            phi = _adapted(x, tasks[j], inner)
            color = mt.COLORS.get(name, "#999999")
            ax.plot(
                grid,
                mlp.predict(phi, grid[:, None], cfg.layers, cfg.activation)[:, 0],
                color=color,
                lw=1.3,
                ls=":" if name == "no meta-training" else "-",
                label=mt.LABELS.get(name, name),
            )
        ax.set_title(f"A = {amps[j]:g}, phase = {phases[j]:g}", fontsize=9)
        ax.set_xlabel("x")
    axes[0].set_ylabel(f"prediction after K = {cfg.steps} adaptation steps")
    axes[-1].legend(fontsize=7)
    fig.savefig(path, dpi=150)
    return path


def _adapted(x, task, inner):
    from ..estimators import adapt

    return adapt(x, task, inner)[0]


def run(
    out: str | Path, cfg: SinusoidConfig | None = None, progress: bool = True, executor=None
) -> dict:
    """Meta-train every configured estimator and write CSV, PNGs and settings.json to `out`.

    ``executor``: a :class:`fobmaml.distributed.DaskExecutor` to meta-train on a Dask cluster
    (the same results), or None to meta-train in this process.
    """
    cfg = cfg or SinusoidConfig()
    names = mt.check_names(cfg.estimators, mt.ESTIMATORS, "estimators")
    mt.check_names((cfg.optimizer,), mt.OPTIMIZERS, "optimizer")
    out = out_dir(out)
    t0 = time.perf_counter()
    inner = cfg.inner()
    sampler = datasets.sinusoid(
        cfg.meta_batch, cfg.k_support, cfg.k_query, layers=cfg.layers, activation=cfg.activation
    )
    eval_sampler = datasets.sinusoid(
        cfg.eval_tasks,
        cfg.k_support,
        cfg.eval_k_query,
        layers=cfg.layers,
        activation=cfg.activation,
    )
    eval_tasks = eval_sampler(np.random.default_rng(cfg.seed + 1))  # held out: a different stream
    x0 = mlp.init_params(cfg.layers, seed=cfg.seed)
    base = evaluate(x0, eval_tasks, inner)
    runs = mt.compare(
        names,
        x0,
        sampler,
        eval_tasks,
        inner,
        cfg.delta,
        lambda: mt.OPTIMIZERS[cfg.optimizer](cfg.outer_lr),
        cfg.iterations,
        cfg.eval_every,
        cfg.seed,
        progress,
        executor,
    )

    write_csv(
        out / "sinusoid_curves.csv",
        ["estimator", "optimizer", "iteration", "eval_mse", "eval_accuracy", "train_loss"],
        mt.curve_rows(runs, cfg.optimizer),
    )
    mt.plot_curves(
        runs,
        out / "sinusoid_curves.png",
        "held-out query MSE after adaptation",
        False,
        base.loss,
        f"sinusoid, {cfg.k_support}-shot, K={cfg.steps}, outer {cfg.optimizer}",
    )
    _plot_fits(cfg, runs, x0, out / "sinusoid_fits.png")
    results = {
        name: {
            "label": mt.LABELS[name],
            "mse_after_adaptation": r.eval_loss[-1],
            "mse_before_adaptation": evaluate(r.x, eval_tasks, inner).loss_before,
            "seconds": r.seconds,
        }
        for name, r in runs.items()
    }
    summary = {
        "settings": asdict(cfg),
        "estimators": {n: mt.ESTIMATORS[n](inner, cfg.delta).get_params() for n in names},
        "no_meta_training": {
            "mse_after_adaptation": base.loss,
            "mse_before_adaptation": base.loss_before,
        },
        "results": results,
        "published_maml_10shot_mse": PUBLISHED_MAML_10SHOT_MSE,
        "seconds": time.perf_counter() - t0,
        "environment": environment(),
    }
    np.savez(out / "params.npz", x0=x0, **{name: r.x for name, r in runs.items()})
    write_json(out / "settings.json", summary)
    return summary
