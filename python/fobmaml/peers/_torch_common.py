"""The task losses in PyTorch (float64), shared by the eager and torch.func peers.

The losses are plain functions of a flat parameter vector, written so that they work
on one task and, under ``torch.func.vmap``, on a batch of tasks:

- ``mlp_loss``: the network of ``fobmaml.MLPTasks``. For each layer, the weight
  ``(out, in)`` row-major, then the bias, as views into the flat vector (the order of
  ``parameters_to_vector`` for ``nn.Sequential(nn.Linear, ...)``); tanh or relu hidden
  layers, identity output; ``mse`` is the mean over all output elements of the squared
  error, ``xent`` is ``F.cross_entropy`` (the mean over samples). ``mse`` is written
  out as ``((h - Y) ** 2).mean()`` rather than ``F.mse_loss``: in torch 2.13,
  ``torch.func.jvp`` of ``grad`` through ``F.mse_loss`` fails with "ZeroTensors are
  immutable", and iMAML's forward-over-reverse HVP needs exactly that.
- ``make_net_loss``: any ``fobmaml.nn.Sequential``, built from ``net.get_config()``
  (``_network.layer_ops``): ``F.linear`` and ``F.conv1d`` on views into the flat vector
  (an uneven "same" padding with ``F.pad`` first), ``torch.relu``, ``torch.tanh``,
  ``F.max_pool1d``, ``F.avg_pool1d`` and ``flatten(1)``; the same losses as the MLP's.
- ``quad_loss``: ``1/2 phi^T A phi - b^T phi``; with ``phi`` (m, n) and ``A`` (m, n, n)
  it is the sum of the m task losses (one batched matmul), whose gradient with
  respect to ``phi`` holds the m task gradients as rows.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from ._network import layer_ops
from .problems import Problem

DTYPE = torch.float64


def tensors(problem: Problem) -> dict[str, torch.Tensor]:
    """The problem's arrays as torch tensors (sharing memory with the NumPy arrays)."""
    return {k: torch.from_numpy(v) for k, v in problem.arrays().items()}


def layer_slices(layers: list[int]) -> list[tuple[int, int, int, int]]:
    """``(offset_W, offset_b, out, in)`` of each layer in the flat vector."""
    out, off = [], 0
    for d_in, d_out in zip(layers[:-1], layers[1:]):
        out.append((off, off + d_out * d_in, d_out, d_in))
        off += d_out * (d_in + 1)
    return out


def make_mlp_loss(problem: Problem):
    """``loss(p, X, Y)`` of the problem's network: tanh/relu hidden layers, mse/xent."""
    slices = layer_slices(problem.layers)
    act = torch.tanh if problem.activation == "tanh" else torch.relu
    last = len(slices) - 1
    xent = problem.loss == "xent"

    def loss(p: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        h = X
        for j, (ow, ob, d_out, d_in) in enumerate(slices):
            W = p[ow:ob].view(d_out, d_in)
            h = F.linear(h, W, p[ob : ob + d_out])
            if j < last:
                h = act(h)
        return F.cross_entropy(h, Y) if xent else ((h - Y) ** 2).mean()

    return loss


def make_net_loss(problem: Problem):
    """``loss(p, X, Y)`` of the problem's network (any ``fobmaml.nn`` net), mse or xent.

    X holds one task's samples, (k, *input_shape); the network maps them to (k, d_out).
    """
    ops = layer_ops(problem.config)
    xent = problem.loss == "xent"

    def loss(p: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        h = X
        for op in ops:
            if op.has_params:
                W = p[op.weight[0] : op.weight[1]].view(op.shape)
                b = None if op.bias is None else p[op.bias[0] : op.bias[1]]
                if op.kind == "linear":
                    h = F.linear(h, W, b)
                else:
                    left, right = op.pads
                    if left != right:
                        h, left = F.pad(h, (left, right)), 0
                    h = F.conv1d(h, W, b, stride=op.stride, padding=left)
            elif op.kind == "relu":
                h = torch.relu(h)
            elif op.kind == "tanh":
                h = torch.tanh(h)
            elif op.kind == "maxpool1d":
                h = F.max_pool1d(h, op.kernel, op.stride)
            elif op.kind == "avgpool1d":
                h = F.avg_pool1d(h, op.kernel, op.stride)
            else:  # flatten: (k, C, L) -> (k, C L), channel-major; a no-op on (k, d)
                h = h.flatten(1)
        return F.cross_entropy(h, Y) if xent else ((h - Y) ** 2).mean()

    return loss


def make_loss(problem: Problem):
    """``loss(p, X, Y)`` of a network problem: the MLP's (``"mlp"``) or any net's (``"net"``)."""
    return make_net_loss(problem) if problem.family == "net" else make_mlp_loss(problem)


def quad_loss(p: torch.Tensor, A: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``1/2 p^T A p - b^T p``, summed over the leading (task) dimension if there is one."""
    Ap = (A @ p.unsqueeze(-1)).squeeze(-1)
    return 0.5 * (p * Ap).sum() - (b * p).sum()


def to_numpy(result: torch.Tensor) -> np.ndarray:
    return result.detach().cpu().numpy().astype(np.float64, copy=False)


def settings() -> dict:
    return {
        "torch": torch.__version__,
        "torch_num_threads": torch.get_num_threads(),
        "torch_num_interop_threads": torch.get_num_interop_threads(),
    }
