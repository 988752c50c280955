r"""FO-B-MAML's finite-difference step δ: bias, inner-loop error, and the best δ.

FO-B-MAML differentiates the solution of the perturbed inner problem
:math:`h_i(\psi; x) + s f_i(\psi)` in s by a finite difference of step δ. Its error
against :math:`\nabla F` has three parts (the estimator contract, ``docs/estimators.md``):

- the **bias** of the difference quotient: O(δ) for the forward scheme, O(δ²) for the
  symmetric one, on smooth problems;
- the **inner-loop error**: the perturbed problems are solved only approximately. If the
  solves carry errors of size ε that are *independent* of each other, the difference
  quotient divides them by δ: a term of order ε/δ;
- **rounding**, the same ε/δ law with ε the float64 rounding of the solutions.

Minimising bias + ε/δ gives the best step δ* ∝ ε^{1/2} and an error ∝ ε^{1/2} for the
forward scheme, and δ* ∝ ε^{1/3} and an error ∝ ε^{2/3} for the symmetric one.
The study measures each part separately (every curve is the relative error
:math:`\lVert \hat g - \nabla F\rVert / \lVert\nabla F\rVert` at x = 0 over a log grid
of δ):

- **(a) K-step inner loops** (``part="K-step"``): the library's :class:`fobmaml.FOBMAML`
  on Figure 1's quadratic tasks, with K inner steps of plain gradient descent for
  several K (several inner accuracies). Both perturbed loops start at x and take the
  same K steps, so their errors are smooth functions of s; the study also computes
  the δ → 0 limit of the K-step estimate exactly (forward-mode derivative of the
  inner loop in s), which is the inner-loop part of the error on its own.
- **(b) noisy inner loops** (``part="noisy-independent"`` / ``"noisy-shared"``): the
  same inner loop with Gaussian gradient noise of relative size σ (an SGD inner
  loop), long enough that the noise is the only inner error. The noise is either
  drawn independently for each of the solves (the setting of the ε/δ bound) or
  shared by them (common random numbers, e.g. the same mini-batches).
- **(c) bias alone** (``part="solved"``): quadratic tasks with the perturbed problems
  solved exactly (dense solves), and sinusoid regression with a tanh network
  whose inner loop has converged to rounding, against :class:`fobmaml.Exact`.
  The slopes of log error against log δ are fitted where the bias dominates.

Outputs (``run``): ``delta_error.csv`` (every curve), ``delta_best.csv`` (the best δ
of each curve and its error), ``bias_slopes.csv`` (the fitted exponents),
``delta_tradeoff.png`` and ``settings.json``.
"""

from __future__ import annotations

import csv
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .. import _validation as check
from .. import datasets, mlp
from ..estimators import FOBMAML, Exact, adapt
from ..inner import InnerLoop
from ._io import environment, new_figure, out_dir, write_csv, write_json

SCHEMES = ("forward", "symmetric")
ERROR_COLUMNS = (
    "part",
    "family",
    "scheme",
    "K",
    "sigma",
    "inner_error",
    "delta",
    "rel_error",
)
BEST_COLUMNS = (
    "part",
    "family",
    "scheme",
    "K",
    "sigma",
    "inner_error",
    "best_delta",
    "best_error",
    "delta_lo",
    "delta_hi",
)
SLOPE_COLUMNS = ("part", "family", "scheme", "exponent", "delta_min", "delta_max", "points")


@dataclass(frozen=True)
class DeltaConfig:
    """Every setting of the δ study (all written to ``settings.json``)."""

    deltas: tuple[float, ...] = tuple(
        float(f"{v:.3g}") for v in 10.0 ** np.arange(-12.0, 0.01, 1 / 3)
    )
    # Quadratic tasks: Figure 1's setting (plain GD inner loop of step 1/(L + lam)).
    m: int = 10
    n: int = 50
    kappa: float = 1e4
    L: float = 1.0
    lam: float = 0.05
    seed: int = 0
    # (a) K-step inner loops: the inner accuracies.
    steps: tuple[int, ...] = (25, 50, 100, 200, 400)
    # (b) noisy inner loops, on a better conditioned proximal problem so that a short
    # loop removes the deterministic error and the noise is what remains.
    noise_lam: float = 1.0
    noise_steps: int = 60
    sigmas: tuple[float, ...] = (1e-10, 1e-8, 1e-6, 1e-4)  # relative to ||grad g_i(x)||
    noise_repeats: int = 5
    # (c) bias alone on sinusoid regression: the smoothness experiment's network.
    mlp_hidden: int = 10
    mlp_tasks: int = 10
    mlp_lam: float = 20.0
    mlp_lr: float = 0.01
    mlp_steps: int = 300
    exact_tol: float = 1e-12
    # Slope fits: points with delta <= fit_max_delta whose error exceeds
    # fit_floor_factor x the curve's minimum.
    fit_max_delta: float = 0.1
    fit_floor_factor: float = 30.0
    quick: bool = False

    @classmethod
    def quick_config(cls) -> DeltaConfig:
        """A seconds-long version for smoke tests: fewer δ, accuracies and repeats."""
        return cls(
            deltas=tuple(float(f"{v:.3g}") for v in 10.0 ** np.arange(-12.0, 0.01, 1.0)),
            m=4,
            n=12,
            steps=(25, 100),
            sigmas=(1e-8, 1e-4),
            noise_repeats=2,
            mlp_tasks=4,
            mlp_steps=200,
            quick=True,
        )

    def inner(self, steps: int) -> InnerLoop:
        return InnerLoop(steps=steps, lr=1.0 / (self.L + self.lam), lam=self.lam)

    def noise_inner(self) -> InnerLoop:
        return InnerLoop(
            steps=self.noise_steps, lr=1.0 / (self.L + self.noise_lam), lam=self.noise_lam
        )

    def mlp_inner(self) -> InnerLoop:
        return InnerLoop(steps=self.mlp_steps, lr=self.mlp_lr, lam=self.mlp_lam)

    def mlp_exact(self) -> Exact:
        inner = InnerLoop(lam=self.mlp_lam, lr=self.mlp_lr, momentum=0.5)
        return Exact(inner, tol=self.exact_tol, solver="iterative")

    @property
    def layers(self) -> list[int]:
        return [1, self.mlp_hidden, self.mlp_hidden, 1]

    def settings(self) -> dict:
        return asdict(self)


def check_config(cfg: object) -> DeltaConfig:
    """Validate `cfg` before any work; errors name the field and what was expected."""
    if not isinstance(cfg, DeltaConfig):
        raise TypeError(f"`cfg` must be a DeltaConfig or None (got {type(cfg).__name__})")
    for name in ("deltas", "steps", "sigmas"):
        values = getattr(cfg, name)
        if not isinstance(values, (tuple, list)) or len(values) == 0:
            raise ValueError(f"`{name}` must be a non-empty sequence (got {values!r})")
    for d in cfg.deltas:
        check.positive(d, "deltas")
    for K in cfg.steps:
        check.integer(K, "steps", minimum=1, maximum=100_000)
    for s in cfg.sigmas:
        check.positive(s, "sigmas")
    check.integer(cfg.noise_repeats, "noise_repeats", minimum=1, maximum=1000)
    check.integer(cfg.noise_steps, "noise_steps", minimum=1, maximum=100_000)
    check.positive(cfg.fit_max_delta, "fit_max_delta")
    if check.real_scalar(cfg.fit_floor_factor, "fit_floor_factor") < 1:
        raise ValueError(f"`fit_floor_factor` must be >= 1 (got {cfg.fit_floor_factor})")
    datasets.quadratic_tasks(1, 1, cfg.kappa, L=cfg.L, seed=cfg.seed)  # kappa, L, seed
    check.integer(cfg.m, "m", minimum=1, maximum=10_000)
    check.integer(cfg.n, "n", minimum=1, maximum=5_000)
    for name in ("lam", "noise_lam", "mlp_lam"):
        check.positive(getattr(cfg, name), name)
    cfg.inner(1), cfg.noise_inner(), cfg.mlp_inner(), cfg.mlp_exact()  # lr, steps, tol
    check.integer(cfg.mlp_hidden, "mlp_hidden", minimum=1)
    check.integer(cfg.mlp_tasks, "mlp_tasks", minimum=1)
    return cfg


# -- quadratic tasks in NumPy: perturbed solves, the δ -> 0 limit, noisy inner loops ------------
def _perturbed_solution(tasks, x: np.ndarray, lam: float, s: float) -> np.ndarray:
    """psi*(s) = argmin g + s f + lam/2 ||. - x||^2 of every task, by dense solves: (m, n)."""
    eye = np.eye(tasks.dim)
    return np.stack(
        [
            np.linalg.solve(A + s * B + lam * eye, b + s * c + lam * x)
            for A, b, B, c in zip(tasks.A, tasks.b, tasks.B, tasks.c)
        ]
    )


def exact_gradient(tasks, x: np.ndarray, lam: float) -> np.ndarray:
    r"""Mean over tasks of :math:`\lambda(A_i + \lambda I)^{-1}(B_i\phi^*_i - c_i)` (dense)."""
    phi = _perturbed_solution(tasks, x, lam, 0.0)
    eye = np.eye(tasks.dim)
    return np.mean(
        [
            lam * np.linalg.solve(A + lam * eye, B @ p - c)
            for A, B, c, p in zip(tasks.A, tasks.B, tasks.c, phi)
        ],
        axis=0,
    )


def solved_estimate(tasks, x: np.ndarray, lam: float, delta: float, scheme: str) -> np.ndarray:
    """FO-B-MAML with every perturbed problem solved exactly: its bias alone."""
    plus = _perturbed_solution(tasks, x, lam, delta)
    if scheme == "forward":
        return np.mean(lam * (_perturbed_solution(tasks, x, lam, 0.0) - plus) / delta, axis=0)
    minus = _perturbed_solution(tasks, x, lam, -delta)
    return np.mean(lam * (minus - plus) / (2 * delta), axis=0)


def inner_loop(tasks, x, inner: InnerLoop, s: float, noise: np.ndarray | None = None):
    """psi_K(s) of every task, (m, n): the inner loop on g + s f, plus gradient noise.

    ``noise`` (K, m, n), if given, is added to the gradient at each step (an SGD
    inner loop). With ``noise=None`` this is the library's inner loop.
    """
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum
    X = np.broadcast_to(x, (tasks.num_tasks, tasks.dim))
    prev = cur = X.copy()
    for k in range(inner.steps):
        grad = np.einsum("mij,mj->mi", tasks.A, cur) - tasks.b + lam * (cur - X)
        if s != 0.0:
            grad = grad + s * (np.einsum("mij,mj->mi", tasks.B, cur) - tasks.c)
        if noise is not None:
            grad = grad + noise[k]
        prev, cur = cur, cur - alpha * grad + beta * (cur - prev)
    return cur


def k_step_limit(tasks, x: np.ndarray, inner: InnerLoop) -> np.ndarray:
    r"""The δ → 0 limit of K-step FO-B-MAML: :math:`-\lambda\, d\psi_K/ds` at s = 0, batch mean.

    Differentiating the perturbed inner loop in s gives, with :math:`d_{-1} = d_0 = 0`,
    :math:`d_{k+1} = d_k - \alpha((A + \lambda I) d_k + B\phi_k - c) + \beta(d_k - d_{k-1})`.
    """
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum
    X = np.broadcast_to(x, (tasks.num_tasks, tasks.dim))
    prev = cur = X.copy()
    d_prev = d = np.zeros_like(prev)
    for _ in range(inner.steps):
        Ad = np.einsum("mij,mj->mi", tasks.A, d) + lam * d
        fgrad = np.einsum("mij,mj->mi", tasks.B, cur) - tasks.c
        d_prev, d = d, d - alpha * (Ad + fgrad) + beta * (d - d_prev)
        grad = np.einsum("mij,mj->mi", tasks.A, cur) - tasks.b + lam * (cur - X)
        prev, cur = cur, cur - alpha * grad + beta * (cur - prev)
    return np.mean(-lam * d, axis=0)


def _rel(g: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(g - ref) / np.linalg.norm(ref))


def _inner_error(phi: np.ndarray, phi_star: np.ndarray, x: np.ndarray) -> float:
    """||phi - phi*||_F / ||phi* - x||_F over all tasks: the relative inner error."""
    return float(np.linalg.norm(phi - phi_star) / np.linalg.norm(phi_star - x))


# -- the three parts --------------------------------------------------------------------------
def part_k_step(cfg: DeltaConfig, tasks) -> tuple[list[tuple], dict]:
    """(a): the library's FOBMAML with K inner steps, and the δ -> 0 limit of each K."""
    x = np.zeros(cfg.n)
    ref = exact_gradient(tasks, x, cfg.lam)
    phi_star = _perturbed_solution(tasks, x, cfg.lam, 0.0)
    rows, limits = [], {}
    for K in cfg.steps:
        inner = cfg.inner(K)
        eps = _inner_error(adapt(x, tasks, inner), phi_star, x)
        limits[K] = {"inner_error": eps, "limit_error": _rel(k_step_limit(tasks, x, inner), ref)}
        for scheme in SCHEMES:
            for delta in cfg.deltas:
                g = FOBMAML(inner, delta=delta, scheme=scheme).meta_gradient(x, tasks)
                rows.append(("K-step", "quadratic", scheme, K, "", eps, delta, _rel(g, ref)))
    return rows, limits


def _noise(rng, shape, scale: np.ndarray) -> np.ndarray:
    """Gaussian noise of expected norm about `scale` per task: (K, m, n)."""
    K, m, n = shape
    return rng.standard_normal(shape) * (scale[None, :, None] / np.sqrt(n))


def part_noisy(cfg: DeltaConfig, tasks, seed: int) -> list[tuple]:
    """(b): SGD-like inner loops, noise independent across the solves or shared by them."""
    x = np.zeros(cfg.n)
    inner = cfg.noise_inner()
    lam = inner.lam
    ref = exact_gradient(tasks, x, lam)
    phi_star = _perturbed_solution(tasks, x, lam, 0.0)
    g0 = np.linalg.norm(np.einsum("mij,j->mi", tasks.A, x) - tasks.b, axis=1)  # ||grad g_i(x)||
    shape = (inner.steps, tasks.num_tasks, tasks.dim)
    rows = []
    for j, sigma in enumerate(cfg.sigmas):
        for shared in (False, True):
            part = "noisy-shared" if shared else "noisy-independent"
            rng = np.random.default_rng([seed, j, int(shared)])
            draws = []
            for _ in range(cfg.noise_repeats):
                first = _noise(rng, shape, sigma * g0)
                draws.append(
                    [first] * 3
                    if shared
                    else [first] + [_noise(rng, shape, sigma * g0) for _ in range(2)]
                )
            eps = np.sqrt(
                np.mean(
                    [
                        _inner_error(inner_loop(tasks, x, inner, 0.0, d[0]), phi_star, x) ** 2
                        for d in draws
                    ]
                )
            )
            for scheme in SCHEMES:
                for delta in cfg.deltas:
                    errs = []
                    for n0, n_plus, n_minus in draws:
                        plus = inner_loop(tasks, x, inner, delta, n_plus)
                        if scheme == "forward":
                            base = inner_loop(tasks, x, inner, 0.0, n0)
                        else:
                            base = inner_loop(tasks, x, inner, -delta, n_minus)
                        step = delta if scheme == "forward" else 2 * delta
                        errs.append(_rel(np.mean(lam * (base - plus) / step, axis=0), ref))
                    rms = float(np.sqrt(np.mean(np.square(errs))))
                    rows.append((part, "quadratic", scheme, inner.steps, sigma, eps, delta, rms))
    return rows


def part_solved(cfg: DeltaConfig, tasks, mlp_tasks, x_mlp) -> list[tuple]:
    """(c): the bias alone, quadratic (dense solves) and sinusoid MLP (converged inner loop)."""
    rows = []
    x = np.zeros(cfg.n)
    ref = exact_gradient(tasks, x, cfg.lam)
    for scheme in SCHEMES:
        for delta in cfg.deltas:
            g = solved_estimate(tasks, x, cfg.lam, delta, scheme)
            rows.append(("solved", "quadratic", scheme, "", "", 0.0, delta, _rel(g, ref)))
    inner = cfg.mlp_inner()
    ref = cfg.mlp_exact().meta_gradient(x_mlp, mlp_tasks)
    longer = adapt(x_mlp, mlp_tasks, inner.replace(steps=2 * inner.steps))
    eps = float(
        np.linalg.norm(adapt(x_mlp, mlp_tasks, inner) - longer) / np.linalg.norm(longer - x_mlp)
    )
    for scheme in SCHEMES:
        for delta in cfg.deltas:
            try:
                g = FOBMAML(inner, delta=delta, scheme=scheme).meta_gradient(x_mlp, mlp_tasks)
                err = _rel(g, ref)
            except FloatingPointError:  # a perturbed inner problem that is not convex enough
                err = float("nan")
            rows.append(("solved", "sinusoid-mlp", scheme, inner.steps, "", eps, delta, err))
    return rows


# -- summaries ---------------------------------------------------------------------------------
def curves(rows) -> dict[tuple, tuple[np.ndarray, np.ndarray, float]]:
    """{(part, family, scheme, K, sigma): (deltas, errors, inner_error)} from CSV-like rows."""
    out: dict = {}
    for part, family, scheme, K, sigma, eps, delta, err in rows:
        out.setdefault((part, family, scheme, K, sigma), ([], [], float(eps)))
        out[(part, family, scheme, K, sigma)][0].append(float(delta))
        out[(part, family, scheme, K, sigma)][1].append(float(err))
    return {k: (np.array(d), np.array(e), eps) for k, (d, e, eps) in out.items()}


def best_deltas(rows, within: float = 1.1) -> list[tuple]:
    """The rows of ``delta_best.csv``, one per curve: the δ of the grid with the lowest
    error, that error, and the smallest and largest δ whose error is within a factor
    `within` of it (a wide range means a flat curve, where the best δ means little)."""
    out = []
    for (part, family, scheme, K, sigma), (d, e, eps) in curves(rows).items():
        e_ok = np.where(np.isfinite(e), e, np.inf)
        j = int(np.argmin(e_ok))
        near = d[e_ok <= within * e_ok[j]]
        out.append((part, family, scheme, K, sigma, eps, d[j], e[j], near.min(), near.max()))
    return out


def fit_slope(deltas, errors, max_delta: float, floor_factor: float):
    """Least-squares slope of log10(error) against log10(δ) where the bias dominates.

    Uses the points with δ <= `max_delta` whose error is at least `floor_factor` times
    the curve's minimum (so that the floor of inner error and rounding is left out),
    and only the contiguous run of such points that ends at the largest usable δ.
    Returns (exponent, δ_min, δ_max, points), or None with fewer than 3 points.
    """
    d, e = np.asarray(deltas, float), np.asarray(errors, float)
    order = np.argsort(d)
    d, e = d[order], e[order]
    ok = np.isfinite(e)
    floor = e[ok].min()
    use = ok & (d <= max_delta) & (e >= floor_factor * floor)
    idx = np.flatnonzero(use)
    if idx.size == 0:
        return None
    run = [idx[-1]]  # contiguous in the grid, walking down from the largest usable δ
    for i in idx[-2::-1]:
        if i == run[-1] - 1:
            run.append(i)
        else:
            break
    run = np.array(sorted(run))
    if run.size < 3:
        return None
    slope = np.polyfit(np.log10(d[run]), np.log10(e[run]), 1)[0]
    return float(slope), float(d[run][0]), float(d[run][-1]), int(run.size)


def slopes(rows, cfg: DeltaConfig) -> list[tuple]:
    """The rows of ``bias_slopes.csv``: the fitted bias exponent of each solved curve."""
    out = []
    for (part, family, scheme, _, _), (d, e, _) in curves(rows).items():
        if part != "solved":
            continue
        fit = fit_slope(d, e, cfg.fit_max_delta, cfg.fit_floor_factor)
        if fit is not None:
            out.append((part, family, scheme, *fit))
    return out


def scaling(best_rows) -> dict:
    """Log-log slopes of the best δ and the best error against the inner error, per scheme,
    over the noisy-independent curves (``ε^{1/2}``, ``ε^{1/3}``, ``ε^{2/3}`` in theory)."""
    out = {}
    for scheme in SCHEMES:
        sel = [r for r in best_rows if r[0] == "noisy-independent" and r[2] == scheme]
        if len(sel) < 2:
            continue
        eps = np.log10([r[5] for r in sel])
        out[scheme] = {
            "best_delta_exponent": float(np.polyfit(eps, np.log10([r[6] for r in sel]), 1)[0]),
            "best_error_exponent": float(np.polyfit(eps, np.log10([r[7] for r in sel]), 1)[0]),
            "points": len(sel),
        }
    return out


def read_csv(path: str | Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


# -- the figure --------------------------------------------------------------------------------
def plot(rows, limits, best, fits, scale, cfg: DeltaConfig, path: Path) -> Path:
    fig, _ = new_figure(2, width=5.4, height=9.0)
    fig.clf()
    (ax_a, ax_b), (ax_c, ax_d) = fig.subplots(2, 2)
    cs = curves(rows)
    style = {"forward": "--", "symmetric": "-"}
    colors = ["#08306b", "#2171b5", "#4292c6", "#6baed6", "#9ecae1", "#c6dbef"]
    # (a) K-step inner loops.
    for j, K in enumerate(cfg.steps):
        c = colors[j % len(colors)]
        for scheme in SCHEMES:
            d, e, eps = cs[("K-step", "quadratic", scheme, K, "")]
            label = f"K={K} (inner err {eps:.0e})" if scheme == "symmetric" else None
            ax_a.loglog(d, e, style[scheme], color=c, label=label)
        ax_a.axhline(limits[K]["limit_error"], color=c, lw=0.8, ls=":")
    ax_a.set_title(
        f"(a) K-step GD inner loop, quadratic κ={cfg.kappa:g}, λ={cfg.lam:g}\n"
        "solid symmetric, dashed forward, dotted: δ→0 limit",
        fontsize=8,
    )
    # (b) noisy inner loops.
    for j, sigma in enumerate(cfg.sigmas):
        c = colors[j % len(colors)]
        for scheme in SCHEMES:
            d, e, eps = cs[("noisy-independent", "quadratic", scheme, cfg.noise_steps, sigma)]
            label = f"σ={sigma:g} (inner err {eps:.0e})" if scheme == "symmetric" else None
            ax_b.loglog(d, e, style[scheme], color=c, label=label)
            d, e, _ = cs[("noisy-shared", "quadratic", scheme, cfg.noise_steps, sigma)]
            ax_b.loglog(d, e, ":", color=c, lw=0.9)
    ax_b.set_title(
        f"(b) noisy inner loop (K={cfg.noise_steps}, λ={cfg.noise_lam:g}), independent noise\n"
        "dotted: the same noise in every solve",
        fontsize=8,
    )
    # (c) bias alone.
    fam_color = {"quadratic": "#2ca02c", "sinusoid-mlp": "#d62728"}
    slope_of = {(f[1], f[2]): f[3] for f in fits}
    for family, c in fam_color.items():
        for scheme in SCHEMES:
            key = next(k for k in cs if k[0] == "solved" and k[1] == family and k[2] == scheme)
            d, e, _ = cs[key]
            s = slope_of.get((family, scheme))
            label = f"{family} {scheme}" + (f" (slope {s:.2f})" if s is not None else "")
            ax_c.loglog(d, e, style[scheme], color=c, label=label)
    ax_c.set_title("(c) bias alone: solved inner problems", fontsize=8)
    for ax in (ax_a, ax_b, ax_c):
        ax.set_xlabel("δ")
        ax.grid(True, which="major", alpha=0.3)
        ax.legend(fontsize=6)
    for ax in (ax_a, ax_c):
        ax.set_ylabel(r"relative error $\|\hat g - \nabla F\| / \|\nabla F\|$")
    # (d) best δ against the inner error, noisy-independent curves.
    for scheme, marker in (("forward", "o"), ("symmetric", "s")):
        sel = [r for r in best if r[0] == "noisy-independent" and r[2] == scheme]
        eps = [r[5] for r in sel]
        sc = scale.get(scheme, {})
        ax_d.loglog(
            eps,
            [r[6] for r in sel],
            marker=marker,
            color="#1f77b4",
            ls=style[scheme],
            label=f"best δ, {scheme} (slope {sc.get('best_delta_exponent', np.nan):.2f})",
        )
        ax_d.loglog(
            eps,
            [r[7] for r in sel],
            marker=marker,
            color="#ff7f0e",
            ls=style[scheme],
            label=f"error at best δ, {scheme} (slope {sc.get('best_error_exponent', np.nan):.2f})",
        )
    ax_d.set_xlabel("inner error ε (relative)")
    ax_d.set_title("(d) best δ and its error vs inner accuracy, from (b)", fontsize=8)
    ax_d.grid(True, which="major", alpha=0.3)
    ax_d.legend(fontsize=6)
    fig.savefig(path, dpi=140)
    return path


def run(out: str | Path, cfg: DeltaConfig | None = None, progress: bool = True) -> dict:
    """All three parts; writes CSV, PNG and ``settings.json`` into `out`; returns the summary.

    Examples
    --------
    >>> import tempfile
    >>> from fobmaml.experiments import delta_tradeoff
    >>> with tempfile.TemporaryDirectory() as d:
    ...     s = delta_tradeoff.run(d, delta_tradeoff.DeltaConfig.quick_config(), progress=False)
    >>> sorted(s["bias_exponents"])[:1]
    ['quadratic forward']
    """
    from tqdm.auto import tqdm

    cfg = check_config(DeltaConfig() if cfg is None else cfg)
    out = out_dir(out)
    t0 = time.perf_counter()
    tasks = datasets.quadratic_tasks(cfg.m, cfg.n, cfg.kappa, L=cfg.L, seed=cfg.seed)
    sampler = datasets.sinusoid(cfg.mlp_tasks, 10, 10, layers=cfg.layers, activation="tanh")
    mlp_tasks = sampler(np.random.default_rng(cfg.seed))
    x_mlp = mlp.init_params(cfg.layers, seed=cfg.seed)
    with tqdm(total=3, desc="delta trade-off", disable=not progress) as bar:
        rows_a, limits = part_k_step(cfg, tasks)
        bar.update()
        rows_b = part_noisy(cfg, tasks, cfg.seed)
        bar.update()
        rows_c = part_solved(cfg, tasks, mlp_tasks, x_mlp)
        bar.update()
    rows = rows_a + rows_b + rows_c
    best = best_deltas(rows)
    fits = slopes(rows, cfg)
    scale = scaling(best)
    write_csv(out / "delta_error.csv", ERROR_COLUMNS, rows)
    write_csv(out / "delta_best.csv", BEST_COLUMNS, best)
    write_csv(out / "bias_slopes.csv", SLOPE_COLUMNS, fits)
    plot(rows, limits, best, fits, scale, cfg, out / "delta_tradeoff.png")
    summary = {
        "settings": cfg.settings(),
        "tasks": {"m": cfg.m, "n": cfg.n, "kappa": cfg.kappa, "L": cfg.L, "seed": cfg.seed},
        "mlp": {
            "layers": cfg.layers,
            "activation": "tanh",
            "inner": cfg.mlp_inner().to_dict(),
            "exact": cfg.mlp_exact().get_params(),
        },
        "k_step_limits": {str(K): v for K, v in limits.items()},
        "bias_exponents": {f"{f[1]} {f[2]}": f[3] for f in fits},
        "best_delta_scaling": scale,
        "seconds": time.perf_counter() - t0,
        "environment": environment(),
        "outputs": [
            "delta_error.csv",
            "delta_best.csv",
            "bias_slopes.csv",
            "delta_tradeoff.png",
            "settings.json",
        ],
    }
    write_json(out / "settings.json", summary)
    return summary
