"""The benchmark problems, built with fobmaml's own samplers, and fobmaml's side of them.

A :class:`Problem` holds a fobmaml task batch, the inner loop (K, lr, lam, momentum) and
the meta-parameters ``x0``. Every peer reads its tasks from :meth:`Problem.arrays`, so
fobmaml and the peers see the same float64 numbers.

Defaults, taken from the repository:

- sinusoid (``python/fobmaml/experiments/sinusoid.py``): m = 25 sines, 10 support and
  10 query points, ``[1, 40, 40, 1]`` tanh, mse, inner lr 0.025, lam 20;
- MNIST-1D (``bench/test_bench_mlp.py``): 5-way 5-shot, 15 queries per class,
  16 episodes, ``[40, 64, 64, 5]`` tanh, xent, K = 10, inner lr 0.1, lam 2;
- quadratic (``bench/test_bench_quadratic.py``): ``quadratic_tasks(m=8, n, kappa=100)``,
  K = 20, inner lr 0.5, lam 1; the query loss is the support loss;
- the MNIST-1D CNN (:func:`mnist1d_cnn`): ``Conv1d(1, C, 5, stride=2, padding=1)``, ReLU,
  ``Conv1d(C, C, 3, stride=2, padding=1)``, ReLU, ``MaxPool1d(2)``, Flatten,
  ``Linear(5 C, 5)`` on 5-way 5-shot episodes with 5 queries per class (25 support and 25
  query samples), 16 episodes, xent, K = 10, inner lr 0.1, lam 2 (the MLP's); C = 64 for
  the speed benchmark, any C and K for the memory study (``fobmaml memory``).

``x0`` is ``fm.mlp.init_params(layers, seed=0)`` for MLPs and ``net.init_params(seed=0)``
for networks (PyTorch's default initialization, in ``parameters_to_vector`` order), and 0
for quadratics.

>>> from fobmaml.peers import problems as P
>>> sorted(P.benchmark_problems())[:3]
['mnist1d-K10', 'mnist1d-cnn-C64-K10', 'quadratic-n100']
>>> P.cnn(16).num_params
1285
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

import fobmaml as fm
from fobmaml.experiments import mnist1d_fewshot

__all__ = [
    "ESTIMATORS",
    "CG_STEPS",
    "DELTA",
    "Problem",
    "sinusoid",
    "mnist1d",
    "cnn",
    "mnist1d_cnn",
    "network",
    "quadratic",
    "benchmark_problems",
    "fobmaml_estimator",
    "build_fobmaml",
    "relative_error",
]

#: The estimators every implementation computes, under the names the benchmarks use.
ESTIMATORS = ("MAML", "FOMAML", "IMAML(cg=5)", "FOBMAML(symmetric)")
#: iMAML's number of CG iterations.
CG_STEPS = 5
#: FO-B-MAML's perturbation size (symmetric scheme, objective perturbation).
DELTA = 1e-3


@dataclass(frozen=True, eq=False)
class Problem:
    """One benchmark problem: fobmaml tasks, the inner loop and the meta-parameters x0."""

    name: str
    family: str  # "mlp", "net" or "quadratic"
    tasks: fm.TaskBatch
    inner: fm.InnerLoop
    x0: np.ndarray
    info: dict = field(default_factory=dict)  # written to the CSV / JSON

    @property
    def num_tasks(self) -> int:
        return self.tasks.num_tasks

    @property
    def dim(self) -> int:
        return self.tasks.dim

    # MLP only
    @property
    def layers(self) -> list[int]:
        return list(self.tasks.layers)

    # networks ("mlp" and "net")
    @property
    def net(self) -> fm.nn.Sequential:
        """The network (an MLP is one too)."""
        return self.tasks.net

    @property
    def config(self) -> list[dict]:
        """The network as ``net.get_config()``: what the peers build their functions from."""
        return self.tasks.net.get_config()

    @property
    def activation(self) -> str:
        return self.tasks.activation

    @property
    def loss(self) -> str:
        return self.tasks.loss

    def arrays(self) -> dict[str, np.ndarray]:
        """The task data as float64 (int64 labels) C-contiguous NumPy arrays, stacked over tasks.

        MLP and net: ``Xs, Ys, Xq, Yq`` with X (m, k, *input_shape) (``(d_in,)``, or
        ``(C_in, L)`` for a network that starts with Conv1d) and Y (m, k, d_out) for mse or
        (m, k) labels for xent. Quadratic: ``A, b, B, c`` with A, B (m, n, n) and b, c (m, n).
        """
        t = self.tasks
        if self.family in ("mlp", "net"):
            raw = {"Xs": t.X_support, "Ys": t.Y_support, "Xq": t.X_query, "Yq": t.Y_query}
        else:
            raw = {"A": t.A, "b": t.b, "B": t.B, "c": t.c}
        out = {}
        for key, arr in raw.items():
            dtype = np.int64 if arr.dtype.kind in "iu" else np.float64
            out[key] = np.ascontiguousarray(arr, dtype=dtype)
        return out

    def description(self) -> str:
        i = self.inner
        return (
            f"{self.name}: m={self.num_tasks}, n={self.dim}, K={i.steps}, lr={i.lr:g}, "
            f"lam={i.lam:g}, momentum={i.momentum:g}"
        )


def sinusoid(
    steps: int,
    *,
    meta_batch: int = 25,
    k_shot: int = 10,
    layers: tuple[int, ...] = (1, 40, 40, 1),
    lr: float = 0.025,
    lam: float = 20.0,
    momentum: float = 0.0,
    seed: int = 0,
) -> Problem:
    """Sinusoid regression (tanh, mse): ``fm.datasets.sinusoid`` with ``default_rng(seed)``."""
    sampler = fm.datasets.sinusoid(
        meta_batch, k_shot, k_shot, layers=list(layers), activation="tanh"
    )
    tasks = sampler(np.random.default_rng(seed))
    inner = fm.InnerLoop(steps=steps, lr=lr, lam=lam, momentum=momentum)
    return Problem(
        name=f"sinusoid-K{steps}",
        family="mlp",
        tasks=tasks,
        inner=inner,
        x0=fm.mlp.init_params(list(layers), seed=seed),
        info={"layers": list(layers), "activation": "tanh", "loss": "mse", "k_shot": k_shot},
    )


def mnist1d(
    steps: int = 10,
    *,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 15,
    meta_batch: int = 16,
    hidden: tuple[int, ...] = (64, 64),
    lr: float = 0.1,
    lam: float = 2.0,
    momentum: float = 0.0,
    num_samples: int = 5000,
    seed: int = 0,
) -> Problem:
    """MNIST-1D N-way K-shot episodes (tanh, xent): ``fm.datasets.mnist1d_fewshot``."""
    layers = [40, *hidden, n_way]
    sampler = fm.datasets.mnist1d_fewshot(
        n_way,
        k_shot,
        q_query,
        "train",
        meta_batch=meta_batch,
        layers=layers,
        activation="tanh",
        num_samples=num_samples,
    )
    tasks = sampler(np.random.default_rng(seed))
    inner = fm.InnerLoop(steps=steps, lr=lr, lam=lam, momentum=momentum)
    return Problem(
        name=f"mnist1d-K{steps}",
        family="mlp",
        tasks=tasks,
        inner=inner,
        x0=fm.mlp.init_params(layers, seed=seed),
        info={
            "layers": layers,
            "activation": "tanh",
            "loss": "xent",
            "n_way": n_way,
            "k_shot": k_shot,
            "q_query": q_query,
        },
    )


def cnn(channels: int, n_way: int = 5) -> fm.nn.Sequential:
    """The MNIST-1D CNN with `channels` channels (ReLU, max pooling): input (1, 40), output
    `n_way` logits; :func:`fobmaml.experiments.mnist1d_fewshot.cnn`."""
    return mnist1d_fewshot.cnn(channels, n_way)


def mnist1d_cnn(
    steps: int = 10,
    *,
    channels: int = 64,
    n_way: int = 5,
    k_shot: int = 5,
    q_query: int = 5,
    meta_batch: int = 16,
    lr: float = 0.1,
    lam: float = 2.0,
    momentum: float = 0.0,
    num_samples: int = 5000,
    seed: int = 0,
) -> Problem:
    """MNIST-1D N-way K-shot episodes for the CNN of :func:`cnn` (relu, xent)."""
    net = cnn(channels, n_way)
    sampler = fm.datasets.mnist1d_fewshot(
        n_way, k_shot, q_query, "train", meta_batch=meta_batch, net=net, num_samples=num_samples
    )
    tasks = sampler(np.random.default_rng(seed))
    inner = fm.InnerLoop(steps=steps, lr=lr, lam=lam, momentum=momentum)
    return Problem(
        name=f"mnist1d-cnn-C{channels}-K{steps}",
        family="net",
        tasks=tasks,
        inner=inner,
        x0=net.init_params(seed=seed),
        info={
            "net": net.get_config(),
            "channels": channels,
            "loss": "xent",
            "n_way": n_way,
            "k_shot": k_shot,
            "q_query": q_query,
        },
    )


def network(name: str, tasks: fm.NetTasks, inner: fm.InnerLoop, seed: int = 0) -> Problem:
    """A problem of any network: `tasks` (a :class:`fobmaml.NetTasks`) at the network's
    default initialization ``tasks.net.init_params(seed)``."""
    if not isinstance(tasks, fm.NetTasks):
        raise TypeError(f"`tasks` must be a fobmaml.NetTasks (got {type(tasks).__name__})")
    return Problem(
        name=name,
        family="net",
        tasks=tasks,
        inner=inner,
        x0=tasks.net.init_params(seed=seed),
        info={"net": tasks.net.get_config(), "loss": tasks.loss},
    )


def quadratic(
    n: int,
    *,
    m: int = 8,
    steps: int = 20,
    kappa: float = 100.0,
    lr: float = 0.5,
    lam: float = 1.0,
    momentum: float = 0.0,
    seed: int = 0,
) -> Problem:
    """Quadratic tasks ``fm.datasets.quadratic_tasks(m, n, kappa, seed)``; x0 = 0."""
    tasks = fm.datasets.quadratic_tasks(m, n, kappa=kappa, seed=seed)
    inner = fm.InnerLoop(steps=steps, lr=lr, lam=lam, momentum=momentum)
    return Problem(
        name=f"quadratic-n{n}",
        family="quadratic",
        tasks=tasks,
        inner=inner,
        x0=np.zeros(n),
        info={"kappa": kappa},
    )


#: The problems of the full comparison, by name, built lazily (MNIST-1D takes seconds).
_BENCHMARK_PROBLEMS: dict[str, Callable[[], Problem]] = {
    "sinusoid-K1": lambda: sinusoid(1),
    "sinusoid-K5": lambda: sinusoid(5),
    "sinusoid-K20": lambda: sinusoid(20),
    "mnist1d-K10": lambda: mnist1d(10),
    "mnist1d-cnn-C64-K10": lambda: mnist1d_cnn(10, channels=64),
    "quadratic-n100": lambda: quadratic(100),
    "quadratic-n1000": lambda: quadratic(1000),
    "quadratic-n2000": lambda: quadratic(2000),
}


def benchmark_problems() -> dict[str, Callable[[], Problem]]:
    """Problem name -> a function that builds it."""
    return dict(_BENCHMARK_PROBLEMS)


def fobmaml_estimator(name: str, inner: fm.InnerLoop, api: Any = fm, **maml_options: Any):
    """The fobmaml estimator behind one of :data:`ESTIMATORS`, from ``api``: the core
    (``fobmaml``, the default) or the PyTorch front end (``fobmaml.torch``, whose MAML takes
    ``maml_options`` such as ``backward="recursion"``)."""
    if name == "MAML":
        return api.MAML(inner, **maml_options)
    if name == "FOMAML":
        return api.FOMAML(inner)
    if name == "IMAML(cg=5)":
        return api.IMAML(inner, cg_steps=CG_STEPS)
    if name == "FOBMAML(symmetric)":
        return api.FOBMAML(inner, delta=DELTA, scheme="symmetric", perturbation="objective")
    raise ValueError(f"`estimator` must be one of {ESTIMATORS} (got {name!r})")


def build_fobmaml(problem: Problem, estimator: str) -> Callable[[], np.ndarray]:
    """A no-argument function that returns fobmaml's mean meta-gradient at ``problem.x0``."""
    est = fobmaml_estimator(estimator, problem.inner)
    x, tasks = problem.x0, problem.tasks
    return lambda: est.meta_gradient(x, tasks)


def relative_error(got: np.ndarray, ref: np.ndarray) -> float:
    """``||got - ref|| / ||ref||`` (absolute error if ref = 0)."""
    got, ref = np.asarray(got, dtype=np.float64), np.asarray(ref, dtype=np.float64)
    if got.shape != ref.shape:
        return float("inf")
    scale = float(np.linalg.norm(ref))
    err = float(np.linalg.norm(got - ref))
    return err / scale if scale > 0 else err
