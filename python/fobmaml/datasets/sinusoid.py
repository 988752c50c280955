"""The sinusoid regression benchmark of MAML (Finn et al., 2017)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from .. import _validation as check
from .. import mlp as _mlp
from ..tasks import MLPTasks
from ._common import Sampler, check_layers_io, check_rng

__all__ = ["sinusoid", "SinusoidSampler"]


def _check_range(value: object, name: str, minimum: float | None = None) -> tuple[float, float]:
    """`value` as a pair of finite floats ``(low, high)`` with ``low < high``."""
    if isinstance(value, (str, bytes)) or not isinstance(value, (Sequence, np.ndarray)):
        raise TypeError(
            f"`{name}` must be a pair (low, high) of real numbers (got {type(value).__name__})"
        )
    if len(value) != 2:
        raise ValueError(f"`{name}` must be a pair (low, high) (got {len(value)} values)")
    low = check.real_scalar(value[0], f"{name}[0]")
    high = check.real_scalar(value[1], f"{name}[1]")
    if not low < high:
        raise ValueError(f"`{name}` must be (low, high) with low < high (got ({low}, {high}))")
    if minimum is not None and low < minimum:
        raise ValueError(f"`{name}` must have low >= {minimum} (got ({low}, {high}))")
    return low, high


class SinusoidSampler(Sampler):
    r"""Draws batches of sinusoid regression tasks; built by :func:`sinusoid`.

    Calling the sampler, ``sampler(rng)``, returns an :class:`fobmaml.MLPTasks` of
    ``meta_batch`` tasks. :meth:`sample` also returns each task's amplitude and
    phase, and :meth:`tasks_from` builds tasks for given sines. All randomness
    comes from the ``numpy.random.Generator`` passed in: equal generator states give
    identical batches.

    Attributes
    ----------
    meta_batch, k_support, k_query : int
    layers : list of int
    activation : str
    amplitude, phase, x_range : tuple of float
        ``(low, high)`` of the uniform distributions.
    """

    def __init__(
        self,
        meta_batch: int,
        k_support: int = 10,
        k_query: int = 10,
        *,
        layers: Sequence[int] = (1, 40, 40, 1),
        activation: str = "relu",
        amplitude: tuple[float, float] = (0.1, 5.0),
        phase: tuple[float, float] = (0.0, np.pi),
        x_range: tuple[float, float] = (-5.0, 5.0),
    ) -> None:
        self.meta_batch = check.integer(meta_batch, "meta_batch", minimum=1)
        self.k_support = check.integer(k_support, "k_support", minimum=1)
        self.k_query = check.integer(k_query, "k_query", minimum=1)
        self.layers = check_layers_io(layers, 1, 1, "sinusoid regression")
        self.activation = check.choice(activation, "activation", _mlp.ACTIVATIONS)
        self.amplitude = _check_range(amplitude, "amplitude", minimum=0.0)
        self.phase = _check_range(phase, "phase")
        self.x_range = _check_range(x_range, "x_range")

    # -- sampling --------------------------------------------------------------------------
    def __call__(self, rng: np.random.Generator) -> MLPTasks:
        """A batch of ``meta_batch`` random tasks (see :meth:`sample`)."""
        return self.sample(rng)[0]

    def sample(self, rng: np.random.Generator) -> tuple[MLPTasks, np.ndarray, np.ndarray]:
        """A batch of ``meta_batch`` random tasks, with their amplitudes and phases.

        Draws, from `rng` and in this order, the amplitudes ``A ~ U[amplitude]`` (m,),
        the phases ``φ ~ U[phase]`` (m,), then the inputs as in :meth:`tasks_from`.

        Returns
        -------
        tasks : MLPTasks
        amplitudes, phases : numpy.ndarray, shape (meta_batch,)
        """
        rng = check_rng(rng)
        m = self.meta_batch
        amplitudes = rng.uniform(*self.amplitude, size=m)
        phases = rng.uniform(*self.phase, size=m)
        return self.tasks_from(amplitudes, phases, rng), amplitudes, phases

    def tasks_from(
        self, amplitudes: np.ndarray, phases: np.ndarray, rng: np.random.Generator
    ) -> MLPTasks:
        r"""Tasks for the given sines ``y = A sin(x - φ)``, with inputs drawn from `rng`.

        Task i has ``k_support`` support inputs and then ``k_query`` query inputs drawn
        independently from ``U[x_range]``, and targets
        ``Y = amplitudes[i] * sin(X - phases[i])``. The number of tasks is the length of
        `amplitudes`, not ``meta_batch``; the amplitudes and phases may lie outside the
        sampler's ranges (useful to plot fits on chosen sines).

        Parameters
        ----------
        amplitudes, phases : array_like, shape (m,) or scalars
        rng : numpy.random.Generator

        Returns
        -------
        MLPTasks
            ``X_support`` (m, k_support, 1), ``X_query`` (m, k_query, 1), ``Y`` alike.
        """
        amplitudes = check.float_array(np.atleast_1d(amplitudes), "amplitudes", ndim=1)
        phases = check.float_array(np.atleast_1d(phases), "phases", ndim=1)
        rng = check_rng(rng)
        m = amplitudes.shape[0]
        if m == 0:
            raise ValueError("`amplitudes` must hold at least one task (got 0 values)")
        if phases.shape != (m,):
            raise ValueError(
                f"`phases` must have shape ({m},) to match `amplitudes` (got {phases.shape})"
            )
        X_s = rng.uniform(*self.x_range, size=(m, self.k_support, 1))
        X_q = rng.uniform(*self.x_range, size=(m, self.k_query, 1))
        A, p = amplitudes[:, None, None], phases[:, None, None]
        return MLPTasks(
            X_s,
            A * np.sin(X_s - p),
            X_q,
            A * np.sin(X_q - p),
            layers=self.layers,
            activation=self.activation,
            loss="mse",
        )

    # -- configuration ---------------------------------------------------------------------
    def get_params(self) -> dict:
        """``{"name": "sinusoid", <argument>: value, ...}``, JSON-serialisable.

        Without ``"name"`` these are the keyword arguments of :func:`sinusoid` that
        rebuild this sampler.
        """
        return {
            "name": "sinusoid",
            "meta_batch": self.meta_batch,
            "k_support": self.k_support,
            "k_query": self.k_query,
            "layers": list(self.layers),
            "activation": self.activation,
            "amplitude": list(self.amplitude),
            "phase": list(self.phase),
            "x_range": list(self.x_range),
        }

    def __repr__(self) -> str:
        return (
            f"SinusoidSampler(meta_batch={self.meta_batch}, k_support={self.k_support}, "
            f"k_query={self.k_query}, layers={self.layers}, activation={self.activation!r}, "
            f"amplitude={self.amplitude}, phase={self.phase}, x_range={self.x_range})"
        )


def sinusoid(
    meta_batch: int,
    k_support: int = 10,
    k_query: int = 10,
    *,
    layers: Sequence[int] = (1, 40, 40, 1),
    activation: str = "relu",
    amplitude: tuple[float, float] = (0.1, 5.0),
    phase: tuple[float, float] = (0.0, np.pi),
    x_range: tuple[float, float] = (-5.0, 5.0),
) -> SinusoidSampler:
    r"""A sampler of sinusoid regression tasks, the benchmark of MAML (Finn et al., 2017).

    Each task is a sine

    .. math::

        y = A \sin(x - \varphi), \qquad A \sim U[0.1, 5], \quad \varphi \sim U[0, \pi],

    observed at ``k_support`` support inputs and ``k_query`` query inputs, all drawn
    independently from :math:`x \sim U[-5, 5]` (the query set is a fresh sample of
    the same sine). The model is a fully connected network ``layers`` (by default
    1-40-40-1 with relu, as in the paper) trained with the mean squared error.

    Parameters
    ----------
    meta_batch : int
        Tasks per batch (>= 1).
    k_support, k_query : int
        Support and query points per task (>= 1).
    layers : sequence of int
        ``[1, h_1, ..., 1]``: one input and one output.
    activation : {"relu", "tanh"}
    amplitude : (float, float)
        Range of A (0 <= low < high).
    phase : (float, float)
        Range of φ (low < high).
    x_range : (float, float)
        Range of the inputs x (low < high).

    Returns
    -------
    SinusoidSampler
        Callable ``sampler(rng) -> MLPTasks`` with ``rng`` a
        ``numpy.random.Generator``; see also :meth:`SinusoidSampler.sample` and
        :meth:`SinusoidSampler.tasks_from`.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> sampler = fm.datasets.sinusoid(meta_batch=25, k_support=10, k_query=10)
    >>> tasks, amplitudes, phases = sampler.sample(np.random.default_rng(0))
    >>> tasks.X_support.shape, tasks.Y_query.shape, amplitudes.shape
    ((25, 10, 1), (25, 10, 1), (25,))
    >>> tasks.dim == fm.mlp.num_params([1, 40, 40, 1])
    True
    """
    return SinusoidSampler(
        meta_batch,
        k_support,
        k_query,
        layers=layers,
        activation=activation,
        amplitude=amplitude,
        phase=phase,
        x_range=x_range,
    )
