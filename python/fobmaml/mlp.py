r"""Fully connected networks as a task family: parameters, initialization, prediction.

The flat parameter vector holds, for each layer ``l`` of ``layers = [d_0, ..., d_L]``,
the weight matrix ``W_l`` of shape ``(d_l, d_{l-1})`` in row-major order and then
the bias ``b_l`` of shape ``(d_l,)``. This is the order of
``torch.nn.utils.parameters_to_vector`` for ``nn.Sequential(nn.Linear, act, ...)``.
Hidden layers use ``relu`` or ``tanh``; the output layer is the identity.

With ``layers = [d_in, d_out]`` (no hidden layer) the model is linear:

- ``loss="mse"`` is linear regression (least squares, mean over output elements);
- ``loss="xent"`` is multinomial logistic (softmax) regression; with ``d_out = 2``
  it is logistic regression written with two logits.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _validation as check
from . import nn

__all__ = [
    "num_params",
    "init_params",
    "unflatten",
    "predict",
    "network",
    "ACTIVATIONS",
    "LOSSES",
]

ACTIVATIONS = ("relu", "tanh")
LOSSES = ("mse", "xent")


def check_layers(layers: object) -> list[int]:
    """`layers` as a list of at least two positive ints."""
    if isinstance(layers, np.ndarray) and layers.ndim == 1:
        layers = layers.tolist()
    if isinstance(layers, (str, bytes)) or not isinstance(layers, Sequence):
        raise TypeError(
            f"`layers` must be a sequence of ints like [1, 40, 40, 1] (got {type(layers).__name__})"
        )
    out = [check.integer(d, f"layers[{i}]", minimum=1) for i, d in enumerate(layers)]
    if len(out) < 2:
        raise ValueError(f"`layers` must list at least [d_in, d_out] (got {list(layers)})")
    return out


def network(layers: Sequence[int], activation: str = "relu"):
    """The :class:`fobmaml.nn.Sequential` network ``Linear, act, ..., act, Linear`` of `layers`.

    :class:`fobmaml.MLPTasks` is :class:`fobmaml.NetTasks` on this network.

    Examples
    --------
    >>> import fobmaml as fm
    >>> fm.mlp.network([1, 40, 1], "tanh").num_params == fm.mlp.num_params([1, 40, 1])
    True
    """

    d = check_layers(layers)
    act = {"relu": nn.ReLU, "tanh": nn.Tanh}[check.choice(activation, "activation", ACTIVATIONS)]
    mods = []
    for i in range(len(d) - 1):
        mods.append(nn.Linear(d[i], d[i + 1]))
        if i + 2 < len(d):
            mods.append(act())
    return nn.Sequential(*mods)


def num_params(layers: Sequence[int]) -> int:
    """Number of parameters: ``sum_l d_l (d_{l-1} + 1)``."""
    d = check_layers(layers)
    return sum(d[i + 1] * (d[i] + 1) for i in range(len(d) - 1))


def unflatten(params: np.ndarray, layers: Sequence[int]) -> list[tuple[np.ndarray, np.ndarray]]:
    """Views ``[(W_1, b_1), ..., (W_L, b_L)]`` into the flat vector."""
    d = check_layers(layers)
    params = check.float_array(params, "params", ndim=1, shape_doc=f"({num_params(d)},)")
    if params.size != num_params(d):
        raise ValueError(
            f"`params` must have {num_params(d)} entries for layers {d} (got {params.size})"
        )
    out, off = [], 0
    for i in range(len(d) - 1):
        W = params[off : off + d[i + 1] * d[i]].reshape(d[i + 1], d[i])
        off += d[i + 1] * d[i]
        b = params[off : off + d[i + 1]]
        off += d[i + 1]
        out.append((W, b))
    return out


def init_params(layers: Sequence[int], seed: int = 0) -> np.ndarray:
    """PyTorch's default ``nn.Linear`` initialization, flattened.

    Every weight and bias of layer l is drawn from ``U(-1/sqrt(d_{l-1}), 1/sqrt(d_{l-1}))``
    (what ``kaiming_uniform_(a=sqrt(5))`` and the bias rule of ``nn.Linear`` amount to),
    with ``numpy.random.default_rng(seed)``.

    Examples
    --------
    >>> import fobmaml as fm
    >>> fm.mlp.init_params([1, 40, 40, 1], seed=0).shape
    (1761,)
    """
    d = check_layers(layers)
    seed = check.integer(seed, "seed", minimum=0)
    rng = np.random.default_rng(seed)
    parts = []
    for i in range(len(d) - 1):
        bound = 1.0 / np.sqrt(d[i])
        parts.append(rng.uniform(-bound, bound, size=d[i + 1] * d[i]))
        parts.append(rng.uniform(-bound, bound, size=d[i + 1]))
    return np.concatenate(parts)


def predict(
    params: np.ndarray, X: np.ndarray, layers: Sequence[int], activation: str = "relu"
) -> np.ndarray:
    """The network's outputs (logits for classification).

    Parameters
    ----------
    params : array_like, shape (num_params(layers),)
    X : array_like, shape (..., d_in)
        Inputs; any leading shape (e.g. (k, d_in) or (m, k, d_in)).
    layers, activation
        As for :class:`fobmaml.MLPTasks`.

    Returns
    -------
    numpy.ndarray, shape (..., d_out)
    """
    d = check_layers(layers)
    check.choice(activation, "activation", ACTIVATIONS)
    X = check.float_array(X, "X")
    if X.ndim < 1 or X.shape[-1] != d[0]:
        raise ValueError(f"`X` must have last dimension d_in = {d[0]} (got shape {X.shape})")
    act = np.tanh if activation == "tanh" else (lambda z: np.maximum(z, 0.0))
    h = X
    weights = unflatten(params, d)
    with np.errstate(over="ignore", invalid="ignore"):
        for i, (W, b) in enumerate(weights):
            h = h @ W.T + b
            if i + 1 < len(weights):
                h = act(h)
    if not np.isfinite(h).all():
        raise FloatingPointError(
            "the network's output overflowed (NaN or Inf) for these `params` and `X`"
        )
    return h
