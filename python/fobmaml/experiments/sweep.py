r"""Estimator error over settings: where FO-B-MAML is more accurate than its rivals, and where not.

Figure 1 measures every estimator's error at one setting. This sweep measures the
relative error

.. math::

    e(\hat g) = \frac{\lVert \hat g - \nabla F(0)\rVert}{\lVert \nabla F(0)\rVert}

of each estimator against :class:`fobmaml.Exact` at :math:`x = 0`, on
:func:`fobmaml.datasets.quadratic_tasks`, over a grid of

- condition numbers :math:`\kappa` of the task Hessians,
- proximal strengths :math:`\lambda`,
- numbers of inner steps K,
- inner momentum :math:`\beta = 0` and one :math:`\beta > 0`,

with the inner step :math:`\alpha = 1/(L + \lambda)` (L the largest eigenvalue of
every :math:`A_i`). Every estimator at a grid point sees the same tasks and the same
inner loop. Nothing is tuned: the grid, :math:`\delta` and :math:`\varepsilon` are fixed
before the run.

Outputs (``run``): ``estimator_error.csv`` (columns ``kappa, lam, lr, momentum, K,
estimator, rel_error``), ``settings.json``, and two heat-map figures over
:math:`(\kappa, \lambda)`, one panel per K and momentum:
``heatmap_vs_imaml_cg5.png`` shows :math:`\log_{10}` (error of symmetric FO-B-MAML /
error of iMAML with 5 CG steps) and ``heatmap_vs_maml.png`` the same against MAML.
Negative values (blue) are settings where FO-B-MAML is the more accurate.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import _validation as check
from .. import datasets
from ..estimators import FOBMAML, FOMAML, HFMAML, IMAML, MAML, Estimator, Exact, Reptile
from ..inner import InnerLoop
from ._io import environment, new_figure, out_dir, write_csv, write_json

#: The columns of ``estimator_error.csv``, in order.
COLUMNS = ("kappa", "lam", "lr", "momentum", "K", "estimator", "rel_error")

#: The estimator names of ``estimator_error.csv``, in order.
ESTIMATORS = (
    "MAML",
    "iMAML-cg2",
    "iMAML-cg5",
    "iMAML-cg10",
    "FO-MAML",
    "Reptile",
    "HF-MAML",
    "FO-B-MAML-forward",
    "FO-B-MAML-symmetric",
)

#: The estimators symmetric FO-B-MAML is compared against in the heat maps (file -> name).
HEATMAPS = {"heatmap_vs_imaml_cg5.png": "iMAML-cg5", "heatmap_vs_maml.png": "MAML"}

#: What the paper's first claim compares FO-B-MAML with (Figure 1).
FIRST_ORDER = ("FO-MAML", "Reptile", "HF-MAML")


@dataclass(frozen=True)
class SweepConfig:
    """Every setting of the sweep (all written to ``settings.json``).

    The task draw is ``quadratic_tasks(m, n, kappa=kappa, L=L, task_spread=task_spread,
    seed=seed, separate_query=separate_query)`` for each ``kappa`` of the grid.
    """

    kappas: tuple[float, ...] = (1e1, 1e2, 1e3, 1e4, 1e5)
    lams: tuple[float, ...] = (0.01, 0.1, 1.0, 10.0)
    steps: tuple[int, ...] = (5, 10, 20, 50, 100)
    momentum: float = 0.5  # the beta > 0 of the grid (Figure 1's value); beta = 0 always runs
    m: int = 10  # tasks (Figure 1's setting)
    n: int = 50  # dimension
    L: float = 1.0  # largest eigenvalue of every A_i
    task_spread: float = 1.0
    separate_query: bool = False
    seed: int = 0
    delta: float = 1e-3  # FO-B-MAML's finite-difference step
    eps: float = 1e-5  # HF-MAML's finite-difference step
    quick: bool = False

    @classmethod
    def quick_config(cls) -> SweepConfig:
        """A seconds-long version for smoke tests: a small problem on a 2 x 2 x 2 grid."""
        return cls(kappas=(1e1, 1e3), lams=(0.1, 1.0), steps=(5, 20), m=4, n=12, quick=True)

    def task_kwargs(self) -> dict:
        """Every keyword argument passed to ``quadratic_tasks`` except ``kappa``."""
        return {
            "m": self.m,
            "n": self.n,
            "L": self.L,
            "task_spread": self.task_spread,
            "seed": self.seed,
            "separate_query": self.separate_query,
        }

    def inner(self, lam: float, momentum: float, K: int) -> InnerLoop:
        """The inner loop of a grid point: K steps of size 1/(L + lam)."""
        return InnerLoop(steps=K, lr=1.0 / (self.L + lam), lam=lam, momentum=momentum)

    def momenta(self) -> tuple[float, ...]:
        return (0.0, self.momentum)

    def estimators(self, inner: InnerLoop) -> dict[str, Estimator]:
        """The estimators of one grid point, by their CSV name."""
        return {
            "MAML": MAML(inner),
            "iMAML-cg2": IMAML(inner, cg_steps=2),
            "iMAML-cg5": IMAML(inner, cg_steps=5),
            "iMAML-cg10": IMAML(inner, cg_steps=10),
            "FO-MAML": FOMAML(inner),
            "Reptile": Reptile(inner),
            "HF-MAML": HFMAML(inner, eps=self.eps),
            "FO-B-MAML-forward": FOBMAML(inner, delta=self.delta, scheme="forward"),
            "FO-B-MAML-symmetric": FOBMAML(inner, delta=self.delta, scheme="symmetric"),
        }

    def settings(self) -> dict:
        return asdict(self)


def _grid(values: object, name: str, convert, **limits) -> tuple:
    if not isinstance(values, (tuple, list)) or len(values) == 0:
        raise ValueError(f"`{name}` must be a non-empty sequence (got {values!r})")
    out = tuple(convert(v, name, **limits) for v in values)
    if len(set(out)) != len(out):
        raise ValueError(f"`{name}` must not repeat a value (got {list(out)})")
    return out


def _kappa(value: object, name: str) -> float:
    v = check.real_scalar(value, name)
    if v < 1.0:
        raise ValueError(f"`{name}` must hold values >= 1 (got {v})")
    return v


def check_config(cfg: object) -> SweepConfig:
    """Validate `cfg` before any work; errors name the field and what was expected."""
    if not isinstance(cfg, SweepConfig):
        raise TypeError(f"`cfg` must be a SweepConfig or None (got {type(cfg).__name__})")
    _grid(cfg.kappas, "kappas", _kappa)
    _grid(cfg.lams, "lams", check.positive)
    _grid(cfg.steps, "steps", check.integer, minimum=1, maximum=100_000)
    if check.in_unit_interval(cfg.momentum, "momentum") == 0.0:
        raise ValueError("`momentum` must be in (0, 1): beta = 0 is always part of the grid")
    check.positive(cfg.delta, "delta")
    check.positive(cfg.eps, "eps")
    datasets.quadratic_tasks(**{**cfg.task_kwargs(), "m": 1, "n": 1})  # validates m.. seed
    check.integer(cfg.m, "m", minimum=1, maximum=10_000)
    check.integer(cfg.n, "n", minimum=1, maximum=5_000)
    return cfg


def errors(cfg: SweepConfig, progress: bool = False) -> list[tuple]:
    """The rows of ``estimator_error.csv``: one per grid point and estimator."""
    from tqdm.auto import tqdm

    x = np.zeros(cfg.n)
    total = len(cfg.kappas) * len(cfg.lams) * 2 * len(cfg.steps)
    bar = tqdm(total=total, desc="sweep: estimator error", disable=not progress)
    rows = []
    for kappa in cfg.kappas:
        tasks = datasets.quadratic_tasks(kappa=kappa, **cfg.task_kwargs())
        for lam in cfg.lams:
            ref = Exact(InnerLoop(lam=lam)).meta_gradient(x, tasks)
            ref_norm = float(np.linalg.norm(ref))
            for beta in cfg.momenta():
                for K in cfg.steps:
                    inner = cfg.inner(lam, beta, K)
                    for name, est in cfg.estimators(inner).items():
                        g = est.meta_gradient(x, tasks)
                        err = float(np.linalg.norm(g - ref)) / ref_norm
                        rows.append((kappa, lam, inner.lr, beta, K, name, err))
                    bar.update()
    bar.close()
    return rows


def read_errors(path: str | Path) -> list[dict]:
    """``estimator_error.csv`` as a list of dicts with typed values."""
    with open(path, newline="") as fh:
        return [
            {
                "kappa": float(r["kappa"]),
                "lam": float(r["lam"]),
                "lr": float(r["lr"]),
                "momentum": float(r["momentum"]),
                "K": int(r["K"]),
                "estimator": r["estimator"],
                "rel_error": float(r["rel_error"]),
            }
            for r in csv.DictReader(fh)
        ]


def _table(rows: list[dict]) -> dict[tuple, dict[str, float]]:
    """{(kappa, lam, momentum, K): {estimator: rel_error}}."""
    out: dict[tuple, dict[str, float]] = {}
    for r in rows:
        key = (r["kappa"], r["lam"], r["momentum"], r["K"])
        out.setdefault(key, {})[r["estimator"]] = r["rel_error"]
    return out


def comparisons(rows: list[dict], subject: str = "FO-B-MAML-symmetric") -> dict:
    """How often `subject` is more accurate than each other estimator, per momentum.

    For each momentum and each rival: the number of grid points, the number where
    `subject`'s error is strictly lower, and the median and range of
    log10(error of subject / error of rival).
    """
    table = _table(rows)
    momenta = sorted({k[2] for k in table})
    rivals = [e for e in ESTIMATORS if e != subject]
    out: dict = {}
    for beta in momenta:
        keys = [k for k in table if k[2] == beta]
        per = {}
        for rival in rivals:
            ratio = np.array([np.log10(table[k][subject] / table[k][rival]) for k in keys])
            per[rival] = {
                "points": len(keys),
                "wins": int((ratio < 0).sum()),
                "median_log10_ratio": float(np.median(ratio)),
                "min_log10_ratio": float(ratio.min()),
                "max_log10_ratio": float(ratio.max()),
            }
        out[f"{beta:g}"] = per
    return out


def wins_by(rows: list[dict], rival: str, by: str, subject: str = "FO-B-MAML-symmetric") -> dict:
    """Wins of `subject` over `rival` per value of one grid axis and momentum.

    Returns ``{momentum: {value: (wins, points)}}`` with `by` one of kappa, lam, K.
    """
    index = {"kappa": 0, "lam": 1, "K": 3}[by]
    table = _table(rows)
    out: dict = {}
    for key, errs in sorted(table.items()):
        beta = f"{key[2]:g}"
        cell = out.setdefault(beta, {}).setdefault(key[index], [0, 0])
        cell[0] += int(errs[subject] < errs[rival])
        cell[1] += 1
    return {b: {v: tuple(c) for v, c in d.items()} for b, d in out.items()}


def plot_heatmap(rows: list[dict], rival: str, path: Path, cfg: SweepConfig) -> Path:
    """log10(err symmetric FO-B-MAML / err `rival`) over (kappa, lam): rows = momentum, cols = K."""
    from matplotlib.colors import TwoSlopeNorm

    table = _table(rows)
    kappas, lams = sorted(cfg.kappas), sorted(cfg.lams)
    momenta, steps = cfg.momenta(), sorted(cfg.steps)
    fig, _ = new_figure(1, width=2.6 * len(steps), height=2.5 * len(momenta) + 0.9)
    fig.clf()
    axes = fig.subplots(len(momenta), len(steps), squeeze=False, sharex=True, sharey=True)
    limit = 4.0  # colours saturate at 10^4 either way; the numbers in the cells do not
    norm = TwoSlopeNorm(vmin=-limit, vcenter=0.0, vmax=limit)
    image = None
    for i, beta in enumerate(momenta):
        for j, K in enumerate(steps):
            ax = axes[i][j]
            Z = np.array(
                [
                    [
                        np.log10(
                            table[(kap, lam, beta, K)]["FO-B-MAML-symmetric"]
                            / table[(kap, lam, beta, K)][rival]
                        )
                        for kap in kappas
                    ]
                    for lam in lams
                ]
            )
            image = ax.imshow(
                np.clip(Z, -limit, limit), cmap="RdBu_r", norm=norm, origin="lower", aspect="auto"
            )
            for a in range(len(lams)):
                for b in range(len(kappas)):
                    ax.text(
                        b,
                        a,
                        f"{Z[a, b]:.1f}",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if abs(Z[a, b]) > 0.6 * limit else "black",
                    )
            ax.set_xticks(range(len(kappas)), [f"{k:.0e}".replace("e+0", "e") for k in kappas])
            ax.set_yticks(range(len(lams)), [f"{v:g}" for v in lams])
            ax.tick_params(labelsize=7)
            ax.set_title(f"K = {K}, β = {beta:g}", fontsize=9)
            if i == len(momenta) - 1:
                ax.set_xlabel("κ", fontsize=8)
            if j == 0:
                ax.set_ylabel("λ", fontsize=8)
    fig.colorbar(image, ax=axes, shrink=0.8, label=f"log10(err FO-B-MAML sym / err {rival})")
    fig.suptitle(
        f"symmetric FO-B-MAML (δ={cfg.delta:g}) against {rival}: blue = FO-B-MAML more accurate; "
        f"inner step 1/(L+λ), m={cfg.m}, n={cfg.n}, x=0",
        fontsize=10,
    )
    fig.savefig(path, dpi=130)
    return path


def run(out: str | Path, cfg: SweepConfig | None = None, progress: bool = True) -> dict:
    """Run the sweep; write the CSV, the heat maps and ``settings.json`` into `out`.

    Returns the summary written to ``settings.json``.

    Examples
    --------
    >>> import tempfile
    >>> from fobmaml.experiments import sweep
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = sweep.run(d, sweep.SweepConfig.quick_config(), progress=False)
    >>> s["outputs"][0]
    'estimator_error.csv'
    """
    cfg = check_config(SweepConfig() if cfg is None else cfg)
    out = out_dir(out)
    t0 = time.perf_counter()
    rows = errors(cfg, progress)
    seconds = time.perf_counter() - t0
    write_csv(out / "estimator_error.csv", COLUMNS, rows)
    typed = read_errors(out / "estimator_error.csv")
    for name, rival in HEATMAPS.items():
        plot_heatmap(typed, rival, out / name, cfg)
    summary = {
        "tasks": cfg.task_kwargs(),
        "delta": cfg.delta,
        "eps": cfg.eps,
        "grid": {
            "kappa": list(cfg.kappas),
            "lam": list(cfg.lams),
            "K": list(cfg.steps),
            "momentum": list(cfg.momenta()),
            "lr": "1 / (L + lam)",
            "x": "zeros(n)",
        },
        "settings": cfg.settings(),
        "estimators": {
            name: est.get_params()
            for name, est in cfg.estimators(cfg.inner(cfg.lams[0], 0.0, cfg.steps[0])).items()
        },
        "reference": Exact(InnerLoop(lam=cfg.lams[0])).get_params(),
        "comparisons": comparisons(typed),
        "seconds": {"errors": seconds, "total": time.perf_counter() - t0},
        "environment": environment(),
        "outputs": ["estimator_error.csv", *HEATMAPS, "settings.json"],
    }
    write_json(out / "settings.json", summary)
    return summary
