r"""(L0, L1)-smoothness of the meta-objective, and the outer methods it calls for.

The paper (Chayti & Jaggi) proves that the meta-objective
:math:`F(x) = \frac1m \sum_i f_i(\phi^*_i(x))` is not L-smooth: its local smoothness grows
with the meta-gradient norm, :math:`\lVert\nabla^2F(x)\rVert \le L_0 + L_1\lVert\nabla F(x)\rVert`.
This experiment measures that on sinusoid regression with a small tanh network and
shows what it means for the outer optimizer.

Part 1, smoothness (``smoothness.png``, ``smoothness_points.csv``): on a fixed batch of
tasks (so that F is one fixed function), :func:`fobmaml.diagnostics.local_smoothness`
estimates :math:`\lVert\nabla^2 F(x)\rVert` with exact meta-gradients
(:class:`fobmaml.Exact`) at

- the initialization :math:`x_0` (PyTorch's default ``nn.Linear`` init);
- points along the meta-training trajectories of part 2 (every ``trajectory_every``
  iterations of the tuned run of each optimizer);
- random points :math:`x_0 + r u`, :math:`\lVert u\rVert = 1`, for each radius r in
  ``random_radii``;

and :func:`fobmaml.diagnostics.fit_smoothness` fits :math:`L_0 + L_1\lVert\nabla F\rVert`
to the pairs, by nonnegative least squares (the trend) and as the upper envelope
(the smallest line above a fraction ``envelope_quantile`` of the points: the bound).
Points where the exact meta-gradient fails (e.g. :math:`\nabla^2 g_i(\phi^*) + \lambda I`
not positive definite, or an inner solve that does not converge) are recorded as
failed with the reason, and left out of the fit.

Part 2, outer methods (``optimizers.png``, ``optimizers.csv``,
``optimizer_tuning.csv``): GD, ClippedGD and SNGDM meta-train the same network from
the same :math:`x_0` with symmetric FO-B-MAML, on the same stream of task batches,
for the same number of iterations (one estimator call each, so the same budget).
The step size of each is tuned on a grid by the post-adaptation loss on a fixed
validation batch at the end of the run; the tuned runs are then compared on a
separate fixed test batch (:func:`fobmaml.evaluate`, every ``eval_every`` iterations).
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import datasets, diagnostics
from ..estimators import FOBMAML, Exact
from ..evaluation import evaluate
from ..inner import InnerLoop
from ..mlp import init_params, num_params
from ..optim import GD, SNGDM, ClippedGD, Optimizer
from ..train import meta_train
from ._io import environment, new_figure, out_dir, write_csv, write_json

OPTIMIZERS = ("GD", "ClippedGD", "SNGDM")
COLORS = {"GD": "#d62728", "ClippedGD": "#ff7f0e", "SNGDM": "#2ca02c"}


@dataclass(frozen=True)
class SmoothnessConfig:
    """Every setting of the smoothness experiment (all written to ``settings.json``)."""

    # Task family: sinusoid regression, y = A sin(x - phase), with an MLP [1, h, h, 1].
    hidden: int = 10
    activation: str = "tanh"
    k_support: int = 10
    k_query: int = 10
    meta_batch: int = 10  # tasks per meta-training batch (a fresh draw each iteration)
    smooth_tasks: int = 10  # the fixed batch that defines F for the smoothness estimates
    val_tasks: int = 50  # fixed validation batch (step-size tuning)
    test_tasks: int = 100  # fixed test batch (the reported comparison)
    # Inner problem and FO-B-MAML (symmetric).
    lam: float = 20.0
    inner_lr: float = 0.01
    steps: int = 20  # K
    delta: float = 1e-3
    # The exact meta-gradient: inner solve by heavy-ball GD to tol, then CG to tol.
    exact_lr: float = 0.01
    exact_momentum: float = 0.5
    exact_tol: float = 1e-8
    exact_max_iter: int = 20_000
    # Local smoothness estimates.
    method: str = "power"
    radius: float = 1e-3
    samples: int = 8  # directions, for method="difference"
    power_iters: int = 30
    power_tol: float = 1e-3
    trajectory_every: int = 40
    random_radii: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0)
    random_per_radius: int = 3
    envelope_quantile: float = 1.0
    # Outer methods, same budget.
    iterations: int = 400
    eval_every: int = 25
    clip: float = 1.0  # ClippedGD threshold c
    beta: float = 0.9  # SNGDM momentum
    divergence_factor: float = 10.0  # a run diverged if its final val loss > this x at x0
    lr_gd: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    lr_clipped: tuple[float, ...] = (0.03, 0.1, 0.3, 1.0)
    lr_sngdm: tuple[float, ...] = (0.01, 0.03, 0.1, 0.3)
    seed: int = 0
    quick: bool = False

    @classmethod
    def quick_config(cls) -> SmoothnessConfig:
        """A seconds-long version for smoke tests: a tiny net, few tasks, points and runs."""
        return cls(
            hidden=6,
            meta_batch=4,
            smooth_tasks=4,
            val_tasks=8,
            test_tasks=8,
            steps=10,
            power_iters=8,
            trajectory_every=10,
            random_radii=(0.5, 2.0),
            random_per_radius=1,
            iterations=20,
            eval_every=10,
            lr_gd=(0.1,),
            lr_clipped=(0.1,),
            lr_sngdm=(0.03,),
            quick=True,
        )

    # Derived objects -------------------------------------------------------------------
    @property
    def layers(self) -> list[int]:
        return [1, self.hidden, self.hidden, 1]

    def inner(self) -> InnerLoop:
        return InnerLoop(steps=self.steps, lr=self.inner_lr, lam=self.lam)

    def estimator(self) -> FOBMAML:
        return FOBMAML(self.inner(), delta=self.delta, scheme="symmetric")

    def exact(self) -> Exact:
        inner = InnerLoop(lam=self.lam, lr=self.exact_lr, momentum=self.exact_momentum)
        return Exact(inner, tol=self.exact_tol, max_iter=self.exact_max_iter, solver="iterative")

    def sampler(self, meta_batch: int):
        return datasets.sinusoid(
            meta_batch,
            self.k_support,
            self.k_query,
            layers=self.layers,
            activation=self.activation,
        )

    def lr_grid(self, name: str) -> tuple[float, ...]:
        return {"GD": self.lr_gd, "ClippedGD": self.lr_clipped, "SNGDM": self.lr_sngdm}[name]

    def optimizer(self, name: str, lr: float) -> Optimizer:
        if name == "GD":
            return GD(lr)
        if name == "ClippedGD":
            return ClippedGD(lr, clip=self.clip)
        return SNGDM(lr, beta=self.beta)

    def smoothness_options(self) -> diagnostics.SmoothnessOptions:
        return diagnostics.SmoothnessOptions(
            method=self.method,
            radius=self.radius,
            samples=self.samples,
            power_iters=self.power_iters,
            power_tol=self.power_tol,
            seed=self.seed,
        )

    def settings(self) -> dict:
        d = asdict(self)
        d["derived"] = {
            "layers": self.layers,
            "num_params": num_params(self.layers),
            "estimator": self.estimator().get_params(),
            "exact": self.exact().get_params(),
        }
        return d


def _check_config(cfg: object) -> SmoothnessConfig:
    if not isinstance(cfg, SmoothnessConfig):
        raise TypeError(f"`cfg` must be a SmoothnessConfig or None (got {type(cfg).__name__})")
    for name in OPTIMIZERS:
        if len(cfg.lr_grid(name)) == 0:
            raise ValueError(f"the step-size grid of {name} is empty; give at least one value")
        for lr in cfg.lr_grid(name):
            cfg.optimizer(name, lr)  # validates lr, clip and beta, naming them
    for field in ("iterations", "eval_every", "trajectory_every"):
        if not isinstance(getattr(cfg, field), int) or getattr(cfg, field) < 1:
            raise ValueError(f"`{field}` must be an integer >= 1 (got {getattr(cfg, field)!r})")
    if not (isinstance(cfg.divergence_factor, (int, float)) and cfg.divergence_factor >= 1):
        raise ValueError(f"`divergence_factor` must be >= 1 (got {cfg.divergence_factor!r})")
    cfg.exact()  # validates lam, exact_lr, exact_momentum, exact_tol, exact_max_iter
    cfg.estimator()  # validates steps, inner_lr, delta
    cfg.smoothness_options()  # validates method, radius, samples, power_iters, power_tol
    diagnostics.random_points(np.zeros(1), cfg.random_radii, cfg.random_per_radius)
    q = cfg.envelope_quantile
    if not (isinstance(q, (int, float)) and 0.0 < q <= 1.0):
        raise ValueError(
            f"`envelope_quantile`: the envelope's `quantile` must be in (0, 1] (got {q!r})"
        )
    return cfg


# -- data -----------------------------------------------------------------------------------
class _Data:
    """x0 and the fixed task batches, from independent streams of ``cfg.seed``."""

    def __init__(self, cfg: SmoothnessConfig) -> None:
        streams = np.random.SeedSequence(cfg.seed).spawn(4)
        rng = [np.random.default_rng(s) for s in streams]
        self.x0 = init_params(cfg.layers, seed=cfg.seed)
        self.train = cfg.sampler(cfg.meta_batch)  # sampler: a fresh batch per iteration
        self.smooth = cfg.sampler(cfg.smooth_tasks)(rng[0])
        self.val = cfg.sampler(cfg.val_tasks)(rng[1])
        self.test = cfg.sampler(cfg.test_tasks)(rng[2])
        self.points_seed = int(streams[3].generate_state(1)[0] % (2**31))


# -- part 2: outer methods ------------------------------------------------------------------
def _train(cfg: SmoothnessConfig, data: _Data, name: str, lr: float, limit: float) -> dict:
    """One meta-training run: history, test losses at checkpoints, recorded iterates.

    The run counts as diverged when the estimator fails with FloatingPointError (the
    inner loop overflowed), the meta-loss becomes non-finite, or the final validation
    loss exceeds `limit`.
    """
    inner = cfg.inner()
    checkpoints: list[tuple[int, float]] = []
    iterates: list[tuple[int, np.ndarray]] = []

    def callback(t: int, x: np.ndarray, record: dict) -> bool:
        if t % cfg.eval_every == 0 or t == cfg.iterations:
            checkpoints.append((t, evaluate(x, data.test, inner).loss))
        if t % cfg.trajectory_every == 0 or t == cfg.iterations:
            iterates.append((t, np.array(x, copy=True)))
        return not np.isfinite(record["meta_loss"])

    try:
        res = meta_train(
            data.x0,
            data.train,
            cfg.estimator(),
            cfg.optimizer(name, lr),
            cfg.iterations,
            seed=cfg.seed,
            callback=callback,
            progress=False,
        )
        if res.stopped_early:
            raise FloatingPointError(
                f"non-finite meta-loss at iteration {int(res.history['iteration'][-1])}"
            )
        val = evaluate(res.x, data.val, inner).loss
        if not val <= limit:
            raise FloatingPointError(
                f"final validation loss {val:.3g} > {cfg.divergence_factor:g} x its value at x0"
            )
    except FloatingPointError as exc:  # e.g. the inner loop diverged at an iterate far out
        return {"name": name, "lr": lr, "diverged": True, "reason": str(exc), "val_loss": np.inf}
    return {
        "name": name,
        "lr": lr,
        "diverged": False,
        "reason": "",
        "val_loss": float(val),
        "history": res.history,
        "test": np.array(checkpoints),
        "iterates": iterates,
    }


def compare_optimizers(cfg: SmoothnessConfig, data: _Data, progress: bool):
    """Every (optimizer, step size) run; returns (all runs, the tuned run of each)."""
    from tqdm.auto import tqdm

    jobs = [(name, lr) for name in OPTIMIZERS for lr in cfg.lr_grid(name)]
    limit = cfg.divergence_factor * evaluate(data.x0, data.val, cfg.inner()).loss
    runs = []
    for name, lr in tqdm(jobs, desc="smoothness: outer methods", disable=not progress):
        runs.append(_train(cfg, data, name, lr, limit))
    best = {}
    for name in OPTIMIZERS:
        mine = [r for r in runs if r["name"] == name and not r["diverged"]]
        if not mine:
            raise FloatingPointError(
                f"{name}: meta-training diverged for every step size in the grid"
            )
        best[name] = min(mine, key=lambda r: r["val_loss"])
    return runs, best


# -- part 1: smoothness ---------------------------------------------------------------------
def collect_points(cfg: SmoothnessConfig, data: _Data, best: dict):
    """The points (p, n), their kinds, and a label (iteration or radius) for each."""
    points, kinds, where = [data.x0], ["init"], [0.0]
    for name in OPTIMIZERS:
        for t, x in best[name]["iterates"]:
            if t > 0:
                points.append(x)
                kinds.append(f"trajectory:{name}")
                where.append(float(t))
    rand, radius = diagnostics.random_points(
        data.x0, cfg.random_radii, cfg.random_per_radius, seed=data.points_seed
    )
    points.extend(rand)
    kinds.extend(f"random:r={r:g}" for r in radius)
    where.extend(radius.tolist())
    return np.array(points), np.array(kinds), np.array(where)


def _plot_smoothness(cfg, prof, ls, env, path: Path) -> Path:
    fig, (ax,) = new_figure(1, width=6.4, height=4.8)
    ok = prof.ok
    styles = {f"trajectory:{n}": (COLORS[n], "o", f"trajectory ({n})") for n in OPTIMIZERS}
    styles["init"] = ("black", "*", "initialization")
    kinds = list(dict.fromkeys(prof.kind.tolist()))
    radii = [k for k in kinds if k.startswith("random:")]
    shades = np.linspace(0.75, 0.15, max(len(radii), 1))
    for k, shade in zip(radii, shades):
        styles[k] = (str(shade), "x", k.replace("random:", "random, "))
    for k in kinds:
        sel = ok & (prof.kind == k)
        if sel.any():
            color, marker, label = styles[k]
            ax.scatter(
                prof.grad_norm[sel], prof.smoothness[sel], c=color, marker=marker, s=28, label=label
            )
    g = np.linspace(0.0, float(np.nanmax(prof.grad_norm[ok])) * 1.05, 100)
    ax.plot(
        g,
        ls.predict(g),
        "-",
        color="#1f77b4",
        label=rf"least squares: $L_0$={ls.L0:.3g}, $L_1$={ls.L1:.3g} ($R^2$={ls.r2:.2f})",
    )
    q = f" (q={env.quantile:g})" if env.quantile < 1 else ""
    ax.plot(
        g,
        env.predict(g),
        "--",
        color="#9467bd",
        label=rf"envelope{q}: $L_0$={env.L0:.3g}, $L_1$={env.L1:.3g}",
    )
    failed = int((~ok).sum())
    ax.set_xlabel(r"$\|\nabla F(x)\|$")
    ax.set_ylabel(r"local smoothness $\widehat{\|\nabla^2 F(x)\|}$" + f" ({cfg.method})")
    ax.set_title(
        f"sinusoid, MLP {cfg.layers} {cfg.activation}, $\\lambda$={cfg.lam:g}: "
        f"{int(ok.sum())} points" + (f", {failed} failed" if failed else ""),
        fontsize=9,
    )
    ax.set_xlim(left=0)
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    fig.savefig(path, dpi=150)
    return path


def _plot_optimizers(cfg, runs, best, path: Path) -> Path:
    fig, (ax_train, ax_test, ax_tune) = new_figure(3, width=4.6, height=4.0)
    window = max(1, cfg.iterations // 25)
    for name in OPTIMIZERS:
        r = best[name]
        h = r["history"]
        loss = h["meta_loss"]
        smooth = np.convolve(loss, np.ones(window) / window, mode="valid")
        color = COLORS[name]
        ax_train.plot(h["iteration"], loss, color=color, alpha=0.2, linewidth=0.8)
        ax_train.plot(
            h["iteration"][window - 1 :], smooth, color=color, label=f"{name} (lr={r['lr']:g})"
        )
        ax_test.plot(r["test"][:, 0], r["test"][:, 1], "o-", color=color, markersize=3, label=name)
        grid = [x for x in runs if x["name"] == name]
        lrs = [x["lr"] for x in grid]
        vals = [x["val_loss"] if not x["diverged"] else np.nan for x in grid]
        ax_tune.semilogx(lrs, vals, "o-", color=color, label=name)
    ax_train.set_xlabel("outer iteration")
    ax_train.set_ylabel(rf"training meta-loss $F_K$ (moving mean over {window})")
    ax_train.set_title("training batches (fresh each iteration)", fontsize=9)
    ax_test.set_xlabel("outer iteration")
    ax_test.set_ylabel(f"held-out query loss after K={cfg.steps} inner steps")
    ax_test.set_title(f"{cfg.test_tasks} fixed test tasks, tuned step sizes", fontsize=9)
    ax_tune.set_xlabel("outer step size")
    ax_tune.set_ylabel("validation loss at the end (NaN: diverged)")
    ax_tune.set_title(f"tuning on {cfg.val_tasks} validation tasks", fontsize=9)
    for ax in (ax_train, ax_test, ax_tune):
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=7)
    fig.savefig(path, dpi=150)
    return path


# -- the experiment -------------------------------------------------------------------------
def run(out: str | Path, cfg: SmoothnessConfig | None = None, progress: bool = True) -> dict:
    """Both parts; writes PNG, CSV and JSON into `out` and returns the summary.

    Outputs: ``smoothness.png``, ``smoothness_points.csv``, ``optimizers.png``,
    ``optimizers.csv``, ``optimizer_tuning.csv`` and ``settings.json`` (the summary).
    """
    cfg = _check_config(SmoothnessConfig() if cfg is None else cfg)
    out = out_dir(out)
    t0 = time.perf_counter()
    data = _Data(cfg)

    runs, best = compare_optimizers(cfg, data, progress)
    t_train = time.perf_counter() - t0

    points, kinds, where = collect_points(cfg, data, best)
    prof = diagnostics.smoothness_profile(
        points,
        data.smooth,
        cfg.exact(),
        cfg.smoothness_options(),
        kinds=kinds,
        errors="record",
        progress=progress,
        desc="smoothness: local estimates",
    )
    ok = prof.ok
    if ok.sum() < 2 or np.ptp(prof.grad_norm[ok]) == 0:
        reasons = "; ".join(sorted(set(prof.reason[~ok].tolist())))[:2000]
        raise FloatingPointError(
            f"only {int(ok.sum())} of {ok.size} smoothness points succeeded, too few to fit "
            f"L0 + L1 ||grad F||: {reasons}"
        )
    ls = diagnostics.fit_smoothness(prof.grad_norm[ok], prof.smoothness[ok])
    env = diagnostics.fit_smoothness(
        prof.grad_norm[ok], prof.smoothness[ok], method="envelope", quantile=cfg.envelope_quantile
    )
    on_path = ok & np.char.startswith(prof.kind.astype(str), "trajectory:")
    try:  # the trend along the meta-training paths alone (random points left out)
        ls_path = diagnostics.fit_smoothness(prof.grad_norm[on_path], prof.smoothness[on_path])
    except ValueError:  # fewer than 2 usable trajectory points
        ls_path = None
    write_csv(
        out / "smoothness_points.csv",
        [
            "kind",
            "iteration_or_radius",
            "grad_norm",
            "smoothness",
            "eigenvalue",
            "mean_ratio",
            "loss",
            "evaluations",
            "ok",
            "reason",
        ],
        zip(
            prof.kind,
            where,
            prof.grad_norm,
            prof.smoothness,
            prof.eigenvalue,
            prof.mean,
            prof.loss,
            prof.evaluations,
            prof.ok,
            prof.reason,
        ),
    )
    rows = []
    for name in OPTIMIZERS:
        r = best[name]
        h = r["history"]
        test = dict((int(t), v) for t, v in r["test"])
        for t in range(len(h["iteration"])):
            it = int(h["iteration"][t])
            rows.append(
                (name, r["lr"], it, h["meta_loss"][t], h["estimate_norm"][t], test.get(it, ""))
            )
    write_csv(
        out / "optimizers.csv",
        ["optimizer", "outer_lr", "iteration", "meta_loss_K", "estimate_norm", "test_loss"],
        rows,
    )
    write_csv(
        out / "optimizer_tuning.csv",
        ["optimizer", "outer_lr", "val_loss", "diverged", "reason"],
        ((r["name"], r["lr"], r["val_loss"], r["diverged"], r["reason"]) for r in runs),
    )
    png_s = _plot_smoothness(cfg, prof, ls, env, out / "smoothness.png")
    png_o = _plot_optimizers(cfg, runs, best, out / "optimizers.png")

    test_before = evaluate(data.x0, data.test, cfg.inner())
    t_total = time.perf_counter() - t0
    summary = {
        "settings": cfg.settings(),
        "L0": ls.L0,
        "L1": ls.L1,
        "fit": {
            "least_squares": ls._asdict(),
            "envelope": env._asdict(),
            "least_squares_trajectories_only": None if ls_path is None else ls_path._asdict(),
        },
        "points": {
            "total": int(ok.size),
            "ok": int(ok.sum()),
            "failed": int((~ok).sum()),
            "by_kind": {k: int((prof.kind == k).sum()) for k in dict.fromkeys(prof.kind.tolist())},
            "grad_norm_range": [float(prof.grad_norm[ok].min()), float(prof.grad_norm[ok].max())],
            "smoothness_range": [
                float(prof.smoothness[ok].min()),
                float(prof.smoothness[ok].max()),
            ],
            "exact_evaluations": int(prof.evaluations.sum()),
            "failures": sorted(set(prof.reason[~ok].tolist())),
        },
        "optimizers": {
            name: {
                "outer_lr": best[name]["lr"],
                "val_loss": best[name]["val_loss"],
                "final_test_loss": float(best[name]["test"][-1, 1]),
                "best_test_loss": float(best[name]["test"][:, 1].min()),
                "diverged_lrs": [r["lr"] for r in runs if r["name"] == name and r["diverged"]],
            }
            for name in OPTIMIZERS
        },
        "test_loss_at_init": {
            "after_adaptation": test_before.loss,
            "before": test_before.loss_before,
        },
        "budget": {
            "iterations": cfg.iterations,
            "estimator_calls_per_run": cfg.iterations + 1,
            "runs": len(runs),
        },
        "seconds": {"optimizers": t_train, "smoothness": t_total - t_train, "total": t_total},
        "environment": environment(),
        "outputs": [
            png_s.name,
            "smoothness_points.csv",
            png_o.name,
            "optimizers.csv",
            "optimizer_tuning.csv",
            "settings.json",
        ],
    }
    write_json(out / "settings.json", summary)
    return summary
