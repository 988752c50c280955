r"""Outer-optimizer stability over step sizes, on non-quadratic task families.

The paper argues that the meta-objective's smoothness grows with its gradient,
:math:`\lVert\nabla^2 F\rVert \le L_0 + L_1\lVert\nabla F\rVert`, so that clipped and
normalized outer methods are the sound choice: gradient descent's largest stable step
shrinks like :math:`2/(L_0 + L_1 G)` where the gradient norm is G, while a clipped
step never exceeds :math:`\eta c` and a normalized step has length :math:`\eta`.

This study meta-trains with symmetric FO-B-MAML under six outer optimizers (``GD``,
``Momentum``, ``Adam``, ``ClippedGD``, ``NormalizedGD``, ``SNGDM``), each over the same
log grid of step sizes and the same seeds, on two families:

- **sinusoid**: the setting of the smoothness experiment (``fobmaml smoothness``), a
  ``[1, 10, 10, 1]`` tanh network, so that its (L0, L1) fit applies;
- **mnist1d**: 5-way 5-shot MNIST-1D with a ``[40, 32, 5]`` tanh network.

For each (family, optimizer, step size, seed) it records the final held-out query loss
after adaptation, or "diverged": the estimator or the evaluation overflowed, the
training meta-loss went past ``blowup_factor`` times its initial value (the run is
stopped there), or the final held-out loss is more than ``divergence_factor`` times
its value at the initialization. Per optimizer, the loss of a step size is the mean
over the seeds (a step size where any seed diverged counts as diverged), and the
**stable range** is the set of step sizes whose loss is within ``within`` (10 %) of the
optimizer's best.

Given an (L0, L1) fit of the sinusoid family (``smoothness``, e.g. read from the
``settings.json`` of ``fobmaml smoothness``), the ranges table also holds the largest
step each optimizer can take at the initial gradient norm G0 under the local model
:math:`L = L_0 + L_1 G`: :math:`2/L` for GD, :math:`2(1+\beta)/L` for heavy-ball
momentum, :math:`2/(L_0 + L_1\min(c, G_0))` for ClippedGD (whatever the gradient),
:math:`2G_0/(L_0 + L_1 G_0)` for the step length of the normalized methods (which
tends to :math:`2/L_1` for large gradients), and none for Adam.

Outputs (``run``): ``stability_runs.csv`` (every run), ``stability_loss.csv`` (per step
size: mean, min and max over seeds), ``stability_ranges.csv`` (per optimizer),
``stability.png`` and ``settings.json``.
"""

from __future__ import annotations

import csv
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .. import _validation as check
from .. import datasets, mlp
from ..estimators import FOBMAML
from ..evaluation import evaluate
from ..inner import InnerLoop
from ..optim import GD, SNGDM, Adam, ClippedGD, Momentum, NormalizedGD, Optimizer
from ..train import meta_train
from ._io import environment, new_figure, out_dir, write_csv, write_json

OPTIMIZERS = ("GD", "Momentum", "Adam", "ClippedGD", "NormalizedGD", "SNGDM")
FAMILIES = ("sinusoid", "mnist1d")
COLORS = {
    "GD": "#d62728",
    "Momentum": "#ff7f0e",
    "Adam": "#9467bd",
    "ClippedGD": "#1f77b4",
    "NormalizedGD": "#17becf",
    "SNGDM": "#2ca02c",
}
RUN_COLUMNS = (
    "family",
    "optimizer",
    "lr",
    "seed",
    "final_loss",
    "final_accuracy",
    "loss_at_init",
    "grad_norm_init",
    "grad_norm_max",
    "iterations_run",
    "reason",
)
LOSS_COLUMNS = (
    "family",
    "optimizer",
    "lr",
    "mean_loss",
    "min_loss",
    "max_loss",
    "seeds_diverged",
    "within",
)
RANGE_COLUMNS = (
    "family",
    "optimizer",
    "best_lr",
    "best_loss",
    "lr_min",
    "lr_max",
    "n_within",
    "decades",
    "contiguous",
    "at_grid_edge",
    "largest_lr_without_divergence",
    "n_diverged_lrs",
    "grad_norm_init",
    "predicted_max_lr_least_squares",
    "predicted_max_lr_envelope",
)
#: The sinusoid settings an (L0, L1) fit must share with this study to apply to it.
_SMOOTHNESS_KEYS = ("hidden", "activation", "k_support", "k_query", "lam", "inner_lr", "steps")


@dataclass(frozen=True)
class StabilityConfig:
    """Every setting of the stability study (all written to ``settings.json``)."""

    families: tuple[str, ...] = FAMILIES
    optimizers: tuple[str, ...] = OPTIMIZERS
    lrs: tuple[float, ...] = tuple(float(f"{v:.3g}") for v in 10.0 ** np.arange(-4.0, 1.01, 1 / 3))
    seeds: tuple[int, ...] = (0, 1, 2)
    delta: float = 1e-3  # symmetric FO-B-MAML
    momentum_beta: float = 0.9
    sngdm_beta: float = 0.9
    clip: float = 1.0
    within: float = 0.1  # the stable range: loss <= (1 + within) x the best
    divergence_factor: float = 10.0
    blowup_factor: float = 100.0
    threads: int = 1  # these batches are too small for a second thread to pay
    test_seed: int = 10_000  # the held-out batch, the same for every run of a family
    # sinusoid: the smoothness experiment's setting
    hidden: int = 10
    activation: str = "tanh"
    k_support: int = 10
    k_query: int = 10
    meta_batch: int = 10
    lam: float = 20.0
    inner_lr: float = 0.01
    steps: int = 20
    iterations: int = 400
    test_tasks: int = 100
    # mnist1d
    mnist_hidden: tuple[int, ...] = (32,)
    n_way: int = 5
    k_shot: int = 5
    q_query: int = 5
    mnist_test_q_query: int = 15
    mnist_meta_batch: int = 8
    mnist_lam: float = 2.0
    mnist_inner_lr: float = 0.1
    mnist_steps: int = 20
    mnist_iterations: int = 200
    mnist_test_tasks: int = 50
    num_samples: int = 5000
    # An (L0, L1) fit of the sinusoid family (the summary of `fobmaml smoothness`), or None.
    smoothness: dict | None = field(default=None, compare=False)
    quick: bool = False

    @classmethod
    def quick_config(cls) -> StabilityConfig:
        """A seconds-long version for smoke tests: 3 step sizes, 1 seed, short runs."""
        return cls(
            lrs=(1e-2, 1e-1, 1.0),
            seeds=(0,),
            hidden=6,
            meta_batch=4,
            steps=10,
            iterations=15,
            test_tasks=8,
            mnist_hidden=(8,),
            mnist_meta_batch=2,
            mnist_steps=5,
            mnist_iterations=10,
            mnist_test_tasks=4,
            num_samples=2000,
            quick=True,
        )

    def sinusoid_layers(self) -> list[int]:
        return [1, self.hidden, self.hidden, 1]

    def mnist_layers(self) -> list[int]:
        return [40, *self.mnist_hidden, self.n_way]

    def inner(self, family: str) -> InnerLoop:
        if family == "sinusoid":
            return InnerLoop(steps=self.steps, lr=self.inner_lr, lam=self.lam)
        return InnerLoop(steps=self.mnist_steps, lr=self.mnist_inner_lr, lam=self.mnist_lam)

    def estimator(self, family: str) -> FOBMAML:
        return FOBMAML(self.inner(family), delta=self.delta, scheme="symmetric")

    def iterations_of(self, family: str) -> int:
        return self.iterations if family == "sinusoid" else self.mnist_iterations

    def optimizer(self, name: str, lr: float) -> Optimizer:
        if name == "GD":
            return GD(lr)
        if name == "Momentum":
            return Momentum(lr, beta=self.momentum_beta)
        if name == "Adam":
            return Adam(lr)
        if name == "ClippedGD":
            return ClippedGD(lr, clip=self.clip)
        if name == "NormalizedGD":
            return NormalizedGD(lr)
        return SNGDM(lr, beta=self.sngdm_beta)

    def settings(self) -> dict:
        d = asdict(self)
        d["derived"] = {
            f: {
                "layers": self.sinusoid_layers() if f == "sinusoid" else self.mnist_layers(),
                "estimator": self.estimator(f).get_params(),
                "iterations": self.iterations_of(f),
            }
            for f in FAMILIES
        }
        return d


def smoothness_fit(path: str | Path) -> dict:
    """The (L0, L1) fits and the settings of a ``fobmaml smoothness`` run's ``settings.json``."""
    try:
        data = json.loads(Path(path).read_text())
        fit = data["fit"]
        return {
            "source": str(path),
            "least_squares": {k: float(fit["least_squares"][k]) for k in ("L0", "L1")},
            "envelope": {k: float(fit["envelope"][k]) for k in ("L0", "L1")},
            "settings": {k: data["settings"][k] for k in _SMOOTHNESS_KEYS},
        }
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ValueError(
            f"`smoothness` must be the settings.json of a `fobmaml smoothness` run ({path}: {exc})"
        ) from None


def check_config(cfg: object) -> StabilityConfig:
    """Validate `cfg` before any work; errors name the field and what was expected."""
    if not isinstance(cfg, StabilityConfig):
        raise TypeError(f"`cfg` must be a StabilityConfig or None (got {type(cfg).__name__})")
    for name, known in (("families", FAMILIES), ("optimizers", OPTIMIZERS)):
        values = getattr(cfg, name)
        if (
            not isinstance(values, (tuple, list))
            or not values
            or any(v not in known for v in values)
            or len(set(values)) != len(values)
        ):
            raise ValueError(
                f"`{name}` must be a non-empty list of distinct names from {list(known)} "
                f"(got {values!r})"
            )
    if not isinstance(cfg.lrs, (tuple, list)) or len(cfg.lrs) == 0:
        raise ValueError(f"`lrs` must be a non-empty sequence (got {cfg.lrs!r})")
    for lr in cfg.lrs:
        for name in cfg.optimizers:
            cfg.optimizer(name, lr)  # validates lr, clip and the betas, naming them
    if len(set(cfg.lrs)) != len(cfg.lrs):
        raise ValueError(f"`lrs` must not repeat a value (got {list(cfg.lrs)})")
    if not isinstance(cfg.seeds, (tuple, list)) or len(cfg.seeds) == 0:
        raise ValueError(f"`seeds` must be a non-empty sequence (got {cfg.seeds!r})")
    for s in cfg.seeds:
        check.integer(s, "seeds", minimum=0)
    check.positive(cfg.within, "within")
    for name in ("divergence_factor", "blowup_factor"):
        if check.real_scalar(getattr(cfg, name), name) < 1:
            raise ValueError(f"`{name}` must be >= 1 (got {getattr(cfg, name)})")
    check.integer(cfg.threads, "threads", minimum=0)
    for f in FAMILIES:
        cfg.estimator(f)  # validates steps, inner_lr, lam, delta
        check.integer(cfg.iterations_of(f), "iterations", minimum=1)
    if cfg.smoothness is not None:
        fit = cfg.smoothness
        if not isinstance(fit, dict) or not {"least_squares", "envelope"} <= set(fit):
            raise ValueError("`smoothness` must be a dict from smoothness_fit() or None")
        ours = asdict(cfg)
        differ = {
            k: (fit["settings"][k], ours[k])
            for k in _SMOOTHNESS_KEYS
            if k in fit.get("settings", {}) and fit["settings"][k] != ours[k]
        }
        if differ:
            raise ValueError(
                "`smoothness`: the fit was made on another sinusoid setting, so it does not "
                f"apply here (fit, this study): {differ}"
            )
    return cfg


# -- the runs ----------------------------------------------------------------------------------
class _Family:
    """A family's sampler, held-out batch and inner loop."""

    def __init__(self, cfg: StabilityConfig, name: str) -> None:
        self.name = name
        self.inner = cfg.inner(name)
        if name == "sinusoid":
            self.layers = cfg.sinusoid_layers()
            kw = dict(layers=self.layers, activation=cfg.activation)
            self.sampler = datasets.sinusoid(cfg.meta_batch, cfg.k_support, cfg.k_query, **kw)
            test = datasets.sinusoid(cfg.test_tasks, cfg.k_support, cfg.k_query, **kw)
        else:
            self.layers = cfg.mnist_layers()
            kw = dict(layers=self.layers, activation="tanh", num_samples=cfg.num_samples)
            self.sampler = datasets.mnist1d_fewshot(
                cfg.n_way, cfg.k_shot, cfg.q_query, "train", meta_batch=cfg.mnist_meta_batch, **kw
            )
            test = datasets.mnist1d_fewshot(
                cfg.n_way,
                cfg.k_shot,
                cfg.mnist_test_q_query,
                "test",
                meta_batch=cfg.mnist_test_tasks,
                **kw,
            )
        self.test = test(np.random.default_rng(cfg.test_seed))


def train_one(cfg: StabilityConfig, fam: _Family, name: str, lr: float, seed: int) -> dict:
    """One meta-training run: its final held-out loss, or why it counts as diverged."""
    x0 = mlp.init_params(fam.layers, seed=seed)
    init = evaluate(x0, fam.test, fam.inner)
    iterations = cfg.iterations_of(fam.name)
    first: list[float] = []

    def blew_up(t, x, record):
        loss = record["meta_loss"]
        if not first:
            first.append(loss)
        return not np.isfinite(loss) or loss > cfg.blowup_factor * first[0]

    row = {
        "family": fam.name,
        "optimizer": name,
        "lr": lr,
        "seed": seed,
        "final_loss": "diverged",
        "final_accuracy": "",
        "loss_at_init": init.loss,
        "grad_norm_init": "",
        "grad_norm_max": "",
        "iterations_run": 0,
        "reason": "",
    }
    try:
        res = meta_train(
            x0,
            fam.sampler,
            cfg.estimator(fam.name),
            cfg.optimizer(name, lr),
            iterations,
            seed=seed,
            callback=blew_up,
            progress=False,
        )
    except FloatingPointError as exc:
        h = getattr(getattr(exc, "result", None), "history", None)
        if h is not None and len(h["iteration"]):
            row["iterations_run"] = int(h["iteration"][-1])
            row["grad_norm_init"] = float(h["estimate_norm"][0])
        row["reason"] = f"overflow: {exc}"[:300]
        return row
    h = res.history
    row["iterations_run"] = int(h["iteration"][-1])
    row["grad_norm_init"] = float(h["estimate_norm"][0])
    finite = np.asarray(h["estimate_norm"])[np.isfinite(h["estimate_norm"])]
    row["grad_norm_max"] = float(finite.max()) if finite.size else ""
    if res.stopped_early:
        row["reason"] = (
            f"training meta-loss {h['meta_loss'][-1]:.3g} > {cfg.blowup_factor:g} x its initial "
            f"value at iteration {row['iterations_run']}"
        )
        return row
    try:
        ev = evaluate(res.x, fam.test, fam.inner)
    except FloatingPointError as exc:
        row["reason"] = f"evaluation overflowed: {exc}"[:300]
        return row
    if not ev.loss <= cfg.divergence_factor * init.loss:
        row["reason"] = (
            f"final held-out loss {ev.loss:.3g} > {cfg.divergence_factor:g} x its value at x0"
        )
        return row
    row["final_loss"] = ev.loss
    row["final_accuracy"] = "" if ev.accuracy is None else ev.accuracy
    return row


def run_all(
    cfg: StabilityConfig, families: dict[str, _Family] | None = None, progress: bool = False
) -> list[dict]:
    """Every (family, optimizer, lr, seed) run, in that order."""
    from tqdm.auto import tqdm

    from .. import num_threads

    fams = families or {f: _Family(cfg, f) for f in cfg.families}
    jobs = [
        (f, o, lr, s)
        for f in cfg.families
        for o in cfg.optimizers
        for lr in cfg.lrs
        for s in cfg.seeds
    ]
    rows = []
    with num_threads(cfg.threads):
        for f, o, lr, s in tqdm(jobs, desc="stability: runs", disable=not progress):
            rows.append(train_one(cfg, fams[f], o, lr, s))
    return rows


# -- summaries ---------------------------------------------------------------------------------
def read_runs(path: str | Path) -> list[dict]:
    """``stability_runs.csv`` with typed values (``final_loss`` None when diverged)."""
    out = []
    with open(path, newline="") as fh:
        for r in csv.DictReader(fh):
            out.append(
                {
                    **r,
                    "lr": float(r["lr"]),
                    "seed": int(r["seed"]),
                    "final_loss": None if r["final_loss"] == "diverged" else float(r["final_loss"]),
                    "loss_at_init": float(r["loss_at_init"]),
                    "grad_norm_init": float(r["grad_norm_init"]) if r["grad_norm_init"] else None,
                }
            )
    return out


def loss_table(runs: list[dict], within: float) -> list[tuple]:
    """The rows of ``stability_loss.csv``: per (family, optimizer, lr) over the seeds."""
    groups: dict = {}
    for r in runs:
        groups.setdefault((r["family"], r["optimizer"]), {}).setdefault(r["lr"], []).append(
            r["final_loss"]
        )
    rows = []
    for (family, opt), by_lr in groups.items():
        means = {}
        for lr, losses in by_lr.items():
            bad = sum(v is None for v in losses)
            means[lr] = (np.mean(losses) if bad == 0 else None, losses, bad)
        finite = [m for m, _, _ in means.values() if m is not None]
        best = min(finite) if finite else None
        for lr in sorted(means):
            mean, losses, bad = means[lr]
            ok = [v for v in losses if v is not None]
            rows.append(
                (
                    family,
                    opt,
                    lr,
                    "diverged" if mean is None else float(mean),
                    min(ok) if ok else "",
                    max(ok) if ok else "",
                    bad,
                    bool(mean is not None and best is not None and mean <= (1 + within) * best),
                )
            )
    return rows


def predicted_max_lr(name: str, L0: float, L1: float, G0: float, cfg: StabilityConfig):
    """The largest step of optimizer `name` at gradient norm G0 under L = L0 + L1 G (None: Adam)."""
    if name == "GD":
        return 2.0 / (L0 + L1 * G0)
    if name == "Momentum":
        return 2.0 * (1.0 + cfg.momentum_beta) / (L0 + L1 * G0)
    if name == "ClippedGD":
        return 2.0 / (L0 + L1 * min(cfg.clip, G0))
    if name in ("NormalizedGD", "SNGDM"):
        return 2.0 * G0 / (L0 + L1 * G0)
    return None


def ranges(runs: list[dict], cfg: StabilityConfig) -> list[tuple]:
    """The rows of ``stability_ranges.csv``: each optimizer's stable range of step sizes."""
    table = loss_table(runs, cfg.within)
    grid = sorted(cfg.lrs)
    out = []
    for family in cfg.families:
        for opt in cfg.optimizers:
            mine = [r for r in table if r[0] == family and r[1] == opt]
            if not mine:
                continue
            lrs = [r[2] for r in mine]
            finite = [r for r in mine if r[3] != "diverged"]
            g0 = [
                r["grad_norm_init"]
                for r in runs
                if r["family"] == family and r["optimizer"] == opt and r["grad_norm_init"]
            ]
            G0 = float(np.mean(g0)) if g0 else None
            preds = ["", ""]
            if cfg.smoothness is not None and family == "sinusoid" and G0 is not None:
                for j, fit in enumerate(("least_squares", "envelope")):
                    p = predicted_max_lr(
                        opt, cfg.smoothness[fit]["L0"], cfg.smoothness[fit]["L1"], G0, cfg
                    )
                    preds[j] = "" if p is None else p
            n_div = sum(r[3] == "diverged" for r in mine)
            # The largest step size below which no seed diverged.
            safe = ""
            for r in mine:
                if r[3] == "diverged":
                    break
                safe = r[2]
            if not finite:
                out.append(
                    (family, opt, "", "", "", "", 0, "", "", "", safe, n_div, G0 or "", *preds)
                )
                continue
            best = min(finite, key=lambda r: r[3])
            stable = [r for r in mine if r[7]]
            idx = [lrs.index(r[2]) for r in stable]
            lo, hi = min(r[2] for r in stable), max(r[2] for r in stable)
            out.append(
                (
                    family,
                    opt,
                    best[2],
                    best[3],
                    lo,
                    hi,
                    len(stable),
                    float(np.log10(hi / lo)),
                    idx == list(range(min(idx), max(idx) + 1)),
                    lo == grid[0] or hi == grid[-1],
                    safe,
                    n_div,
                    G0 if G0 is not None else "",
                    *preds,
                )
            )
    return out


# -- the figure --------------------------------------------------------------------------------
def _draw(ax, table, family: str, cfg: StabilityConfig) -> float | None:
    """One family's curves on `ax`; returns the largest finite loss drawn."""
    top = None
    for opt in cfg.optimizers:
        mine = [r for r in table if r[0] == family and r[1] == opt]
        lr = np.array([r[2] for r in mine])
        mean = np.array([np.nan if r[3] == "diverged" else r[3] for r in mine], float)
        lo = np.array([np.nan if r[4] == "" else r[4] for r in mine], float)
        hi = np.array([np.nan if r[5] == "" else r[5] for r in mine], float)
        c = COLORS[opt]
        ax.plot(lr, mean, "-", color=c, label=opt, lw=1.2)
        ax.fill_between(lr, lo, hi, color=c, alpha=0.12, lw=0)
        stable = np.array([bool(r[7]) for r in mine])
        ax.plot(lr[stable], mean[stable], "o", color=c, ms=5)
        ax.plot(lr[~stable], mean[~stable], "o", color=c, ms=4, mfc="white")
        finite = hi[np.isfinite(hi)]
        if finite.size:
            top = max(top or 0.0, float(finite.max()))
    ax.set_xscale("log")
    return top


def plot(runs: list[dict], cfg: StabilityConfig, rng_rows: list[tuple], path: Path) -> Path:
    """Final held-out loss against the step size: one column per family; the bottom row
    zooms on the optimizers' best losses."""
    table = loss_table(runs, cfg.within)
    fig, _ = new_figure(len(cfg.families), width=6.0, height=8.4)
    fig.clf()
    grid = fig.subplots(2, len(cfg.families), squeeze=False)
    for j, family in enumerate(cfg.families):
        ax, zoom = grid[0][j], grid[1][j]
        # Every seed has as many runs, so this is the mean over the seeds' initializations.
        init = float(np.mean([r["loss_at_init"] for r in runs if r["family"] == family]))
        top = _draw(ax, table, family, cfg)
        _draw(zoom, table, family, cfg)
        ax.set_yscale("log")
        ymax = max(top or init, init) * 1.6
        for k, opt in enumerate(cfg.optimizers):  # stacked, so that coinciding ones show
            mine = [r for r in table if r[0] == family and r[1] == opt]
            div = [r[2] for r in mine if r[3] == "diverged"]
            ax.plot(div, [ymax * 0.94**k] * len(div), "x", color=COLORS[opt], ms=6)
        for r in rng_rows:
            if r[0] == family and r[1] == "GD" and r[13] != "":
                for a in (ax, zoom):
                    a.axvline(
                        float(r[13]),
                        color=COLORS["GD"],
                        ls=":",
                        lw=1.0,
                        label="GD limit 2/(L0+L1·G0), least squares",
                    )
                    a.axvline(
                        float(r[14]),
                        color=COLORS["GD"],
                        ls="-.",
                        lw=0.8,
                        label="GD limit 2/(L0+L1·G0), envelope",
                    )
        for a in (ax, zoom):
            a.axhline(init, color="#999999", ls="--", lw=0.8, label="no meta-training")
            a.set_xlim(min(cfg.lrs) / 1.5, max(cfg.lrs) * 1.5)  # also when nothing is finite
            a.set_xlabel("outer step size η")
            a.grid(True, which="major", alpha=0.3)
        ax.set_ylim(top=ymax * 1.05)
        bests = [r[3] for r in table if r[0] == family and r[3] != "diverged"]
        per_opt = [
            min(
                (r[3] for r in table if r[0] == family and r[1] == o and r[3] != "diverged"),
                default=np.nan,
            )
            for o in cfg.optimizers
        ]
        if bests:
            zoom.set_ylim(0.97 * min(bests), 1.25 * np.nanmax(per_opt))
        ax.set_title(
            f"{family}: final held-out loss, mean (band: min-max) of {len(cfg.seeds)} seeds\n"
            f"filled: within {cfg.within:.0%} of the best; x (top): diverged at that step size",
            fontsize=8,
        )
        zoom.set_title(f"{family}: zoom on the best losses (linear scale)", fontsize=8)
        ax.legend(fontsize=7)
    grid[0][0].set_ylabel("held-out query loss after adaptation")
    grid[1][0].set_ylabel("held-out query loss after adaptation")
    fig.savefig(path, dpi=130)
    return path


def config_from_settings(settings: dict) -> StabilityConfig:
    """The :class:`StabilityConfig` a run's ``settings.json`` was written from."""
    fields = {f: v for f, v in settings["settings"].items() if f != "derived"}
    for name, value in list(fields.items()):
        if isinstance(value, list):
            fields[name] = tuple(value)
    return check_config(StabilityConfig(**fields))


def replot(out: str | Path) -> Path:
    """Redraw ``stability.png`` from the CSVs and ``settings.json`` in `out`, without running.

    The ranges are recomputed from ``stability_runs.csv``; they must equal
    ``stability_ranges.csv``, or the folder is inconsistent and ValueError is raised.
    """
    out = Path(out)
    try:
        settings = json.loads((out / "settings.json").read_text())
        cfg = config_from_settings(settings)
        runs = read_runs(out / "stability_runs.csv")
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"`out` must hold a stability run's results ({out}: {exc})") from None
    rng_rows = ranges(runs, cfg)
    with open(out / "stability_ranges.csv", newline="") as fh:
        recorded = list(csv.reader(fh))[1:]
    again = [[_csv_cell(v) for v in r] for r in rng_rows]
    if again != recorded:
        raise ValueError("`out`: stability_ranges.csv does not follow from stability_runs.csv")
    return plot(runs, cfg, rng_rows, out / "stability.png")


def _csv_cell(v: object) -> str:
    """A value as write_csv writes it."""
    if isinstance(v, (float, np.floating)):
        return repr(float(v))
    return str(v)


def run(out: str | Path, cfg: StabilityConfig | None = None, progress: bool = True) -> dict:
    """Every run; writes the CSVs, the figure and ``settings.json`` into `out`.

    Examples
    --------
    >>> import tempfile
    >>> from dataclasses import replace
    >>> from fobmaml.experiments import outer_stability as st
    >>> cfg = replace(st.StabilityConfig.quick_config(), families=("sinusoid",), optimizers=("GD",))
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = st.run(d, cfg, progress=False)
    >>> s["runs"]
    3
    """
    cfg = check_config(StabilityConfig() if cfg is None else cfg)
    t0 = time.perf_counter()
    families = {f: _Family(cfg, f) for f in cfg.families}  # checks the data settings too
    out = out_dir(out)
    rows = run_all(cfg, families, progress)
    seconds = time.perf_counter() - t0
    write_csv(out / "stability_runs.csv", RUN_COLUMNS, ([r[c] for c in RUN_COLUMNS] for r in rows))
    runs = read_runs(out / "stability_runs.csv")
    write_csv(out / "stability_loss.csv", LOSS_COLUMNS, loss_table(runs, cfg.within))
    rng_rows = ranges(runs, cfg)
    write_csv(out / "stability_ranges.csv", RANGE_COLUMNS, rng_rows)
    plot(runs, cfg, rng_rows, out / "stability.png")
    summary = {
        "settings": cfg.settings(),
        "smoothness": cfg.smoothness,
        "runs": len(rows),
        "diverged_runs": sum(r["final_loss"] == "diverged" for r in rows),
        "ranges": {f"{r[0]} {r[1]}": dict(zip(RANGE_COLUMNS[2:], r[2:])) for r in rng_rows},
        "seconds": seconds,
        "environment": environment(),
        "outputs": [
            "stability_runs.csv",
            "stability_loss.csv",
            "stability_ranges.csv",
            "stability.png",
            "settings.json",
        ],
    }
    write_json(out / "settings.json", summary)
    return summary
