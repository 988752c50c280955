r"""The paper's outer optimizers as ``torch.optim.Optimizer`` classes.

They apply the updates of fobmaml's core optimizers (``fobmaml.optim``) to the
``.grad`` of any parameters, whatever computed it. With :math:`G` the gradient and
:math:`\eta` a parameter group's ``lr``:

================  ==========================================================================
``ClippedGD``     :math:`x \leftarrow x - \eta \min(1, c/\lVert G\rVert)\, G`
``NormalizedGD``  :math:`x \leftarrow x - \eta\, G/\lVert G\rVert`
``SNGDM``         :math:`m \leftarrow \beta m + (1-\beta)G;\ x \leftarrow x - \eta m/\lVert m\rVert`
================  ==========================================================================

**The norm is over all parameters**, of every parameter group together, as in the
paper's methods (not per tensor, not per group): :math:`\lVert G\rVert^2 = \sum_p
\lVert G_p\rVert^2`. Parameters whose ``.grad`` is None are skipped (their momentum is
left as it is) and do not enter the norm. A zero gradient (or momentum) gives no step.
Norms are computed with a rescaling that neither overflows nor underflows; a gradient
with a NaN or Inf raises ``FloatingPointError`` before any parameter changes.

Examples
--------
>>> import torch, fobmaml.torch as fmt
>>> w = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
>>> opt = fmt.SNGDM([w], lr=0.1, beta=0.9)
>>> w.grad = torch.tensor([3.0, 0.0, 4.0], dtype=torch.float64)
>>> opt.step()
>>> w.data
tensor([-0.0600,  0.0000, -0.0800], dtype=torch.float64)
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable

import torch

from .. import _validation as check

__all__ = ["SNGDM", "ClippedGD", "NormalizedGD", "global_norm"]


def global_norm(tensors: Iterable[torch.Tensor]) -> torch.Tensor:
    r"""The Euclidean norm of all the tensors together, :math:`\sqrt{\sum_p \lVert t_p\rVert^2}`.

    Computed as :math:`a \sqrt{\sum_p \lVert t_p / a\rVert^2}` with :math:`a = \max |t|`, so
    it neither overflows nor underflows where the norm itself is representable. A 0-d tensor
    (0 for empty input or all zeros; NaN or Inf if an entry is).
    """
    tensors = [t.detach() for t in tensors]
    if not tensors:
        return torch.zeros(())
    device = tensors[0].device
    dtype = functools.reduce(torch.promote_types, (t.dtype for t in tensors))
    a = torch.stack([t.abs().amax().to(device, dtype) for t in tensors]).amax()
    if not bool(torch.isfinite(a)):
        return a  # NaN or Inf: the caller reports it
    safe = torch.where(a > 0, a, torch.ones_like(a))
    sq = torch.stack([((t / safe.to(t.device)) ** 2).sum().to(device, dtype) for t in tensors])
    return torch.where(a > 0, a * torch.sqrt(sq.sum()), torch.zeros_like(a))


class _GlobalNormOptimizer(torch.optim.Optimizer):
    """Shared machinery: hyper-parameter checks per group, the parameters with gradients."""

    _checks: dict[str, Callable] = {}

    def __init__(self, params, defaults: dict) -> None:
        for key, value in defaults.items():
            defaults[key] = self._checks[key](value, key)
        super().__init__(params, defaults)

    def add_param_group(self, param_group: dict) -> None:
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        for key, fn in self._checks.items():
            group[key] = fn(group[key], key)

    def _with_grads(self) -> list[tuple[dict, torch.Tensor]]:
        out = []
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if p.grad.is_sparse:
                    raise TypeError(f"{type(self).__name__} does not support sparse gradients")
                out.append((group, p))
        return out

    def _norm(self, tensors: list[torch.Tensor], what: str) -> float:
        norm = float(global_norm(tensors))
        if norm != norm or norm == float("inf"):
            raise FloatingPointError(
                f"{type(self).__name__}: the {what} is not finite (NaN or Inf); no parameter "
                "was changed"
            )
        return norm

    def _update(self, pairs: list[tuple[dict, torch.Tensor]]) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure: Callable | None = None):
        """One step on every parameter that has a ``.grad``; returns ``closure()`` if given."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        pairs = self._with_grads()
        if pairs:
            self._update(pairs)
        return loss


def _lr(value, name):
    return check.positive(value, name)


def _beta(value, name):
    return check.in_unit_interval(value, name)


class NormalizedGD(_GlobalNormOptimizer):
    r"""Normalized gradient descent: :math:`x \leftarrow x - \eta\, G/\lVert G\rVert`.

    Every step has length :math:`\eta` (over all parameters), except that :math:`G = 0`
    gives no step.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups, as for any ``torch.optim`` optimizer.
    lr : float
        The step length :math:`\eta > 0`.
    """

    _checks = {"lr": _lr}

    def __init__(self, params, lr: float) -> None:
        super().__init__(params, {"lr": lr})

    def _update(self, pairs):
        norm = self._norm([p.grad for _, p in pairs], "gradient")
        if norm == 0.0:
            return
        for group, p in pairs:
            p.add_(p.grad, alpha=-group["lr"] / norm)


class ClippedGD(_GlobalNormOptimizer):
    r"""Clipped gradient descent: :math:`x \leftarrow x - \eta \min(1, c/\lVert G\rVert)\,G`.

    Plain gradient descent while :math:`\lVert G\rVert \le c`; otherwise the step has
    length :math:`\eta c`.

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float
        The learning rate :math:`\eta > 0`.
    clip : float
        The norm threshold :math:`c > 0` (over all parameters).
    """

    _checks = {"lr": _lr, "clip": _lr}

    def __init__(self, params, lr: float, clip: float) -> None:
        super().__init__(params, {"lr": lr, "clip": clip})

    def _update(self, pairs):
        norm = self._norm([p.grad for _, p in pairs], "gradient")
        for group, p in pairs:
            c = group["clip"]
            scale = 1.0 if norm <= c else c / norm
            p.add_(p.grad, alpha=-group["lr"] * scale)


class SNGDM(_GlobalNormOptimizer):
    r"""Normalized gradient descent with momentum.

    .. math::

        m \leftarrow \beta m + (1-\beta) G, \qquad x \leftarrow x - \eta\, m/\lVert m\rVert
        \qquad (m_0 = 0),

    with the norm over all parameters. Every step has length :math:`\eta`, except that
    :math:`m = 0` gives no step. This is the method the paper analyses for
    meta-objectives whose smoothness grows with :math:`\lVert\nabla F\rVert`. The
    momentum is ``state[p]["momentum_buffer"]`` (saved by ``state_dict()``).

    Parameters
    ----------
    params : iterable
        Parameters or parameter groups.
    lr : float
        The step length :math:`\eta > 0`.
    beta : float
        The momentum :math:`\beta \in [0, 1)`; 0 is :class:`NormalizedGD`.
    """

    _checks = {"lr": _lr, "beta": _beta}

    def __init__(self, params, lr: float, beta: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "beta": beta})

    def _update(self, pairs):
        # Check the gradients first, so that a NaN leaves the momentum untouched.
        self._norm([p.grad for _, p in pairs], "gradient")
        bufs = []
        for group, p in pairs:
            state = self.state[p]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = torch.zeros_like(p, memory_format=torch.preserve_format)
                state["momentum_buffer"] = buf
            beta = group["beta"]
            buf.mul_(beta).add_(p.grad, alpha=1.0 - beta)
            bufs.append(buf)
        norm = self._norm(bufs, "momentum")
        if norm == 0.0:
            return
        for (group, p), buf in zip(pairs, bufs):
            p.add_(buf, alpha=-group["lr"] / norm)
