"""A ``torch.nn.Module`` as a pure function of one flat parameter vector, and the checks
of what users pass in (model, task batch, loss function).

The trainable parameters (``requires_grad=True``, in ``named_parameters()`` order) are
packed into one flat vector ``x`` of length n: each tensor flattened in row-major order,
one after the other. For ``nn.Sequential(nn.Linear, act, ...)`` this is
``torch.nn.utils.parameters_to_vector``, the layout of fobmaml's C++ core. Frozen
parameters (``requires_grad=False``) and buffers are passed to
``torch.func.functional_call`` unchanged: they are neither adapted nor meta-learned.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, jvp

BATCH_NAMES = ("X_support", "Y_support", "X_query", "Y_query")

# The modules whose running statistics training mode updates in place (BatchNorm*,
# InstanceNorm* with track_running_stats=True). _NormBase is their common base.
_NORM_BASE = getattr(nn.modules.batchnorm, "_NormBase", nn.modules.batchnorm._BatchNorm)

BUFFER_FIX = (
    "the estimators call the model inside torch.func.vmap (one call per task), where "
    "buffers cannot be updated; build normalization layers with track_running_stats=False "
    "(batch statistics) or put the model in eval mode (model.eval(): running statistics)"
)


# The core's warning class (fobmaml.errors), re-exported as fobmaml.torch.NonSmoothWarning.
from ..errors import NonSmoothWarning  # noqa: E402

# Layers whose gradient is discontinuous in the parameters: a finite difference that crosses
# one of their kinks measures the jump, not a derivative.
_NON_SMOOTH = tuple(
    getattr(nn, name)
    for name in (
        "ReLU", "ReLU6", "LeakyReLU", "PReLU", "RReLU", "Hardtanh", "Hardshrink",
        "Softshrink", "Threshold", "Hardsigmoid", "Hardswish",
        "MaxPool1d", "MaxPool2d", "MaxPool3d", "AdaptiveMaxPool1d", "AdaptiveMaxPool2d",
        "AdaptiveMaxPool3d", "FractionalMaxPool2d", "FractionalMaxPool3d", "LPPool1d", "LPPool2d",
    )
    if hasattr(nn, name)
)  # fmt: skip


def warn_if_non_smooth(model: nn.Module, estimator: str) -> None:
    """A NonSmoothWarning naming the first non-smooth layer of `model`, if it has one."""
    for name, module in model.named_modules():
        if isinstance(module, _NON_SMOOTH):
            warnings.warn(
                f"{estimator} differentiates by finite differences, which assume a smooth loss, "
                f"but `model.{name}` is {type(module).__name__}, whose gradient jumps: where a "
                "perturbed inner loop crosses such a kink, the estimate measures the jump "
                "(docs/torch.md, 'Smoothness', has measurements: the error grows as delta "
                "shrinks). Use smooth layers (SiLU, GELU, Tanh, AvgPool), or MAML or iMAML, "
                "whose Hessian-vector products take relu'' = 0",
                NonSmoothWarning,
                stacklevel=4,
            )
            return


def _describe(value: object) -> str:
    return type(value).__name__


def check_loss_fn(loss_fn: object) -> Callable:
    if not callable(loss_fn):
        raise TypeError(
            "`loss_fn` must be a callable loss_fn(outputs, targets) returning the mean loss, "
            f"such as torch.nn.functional.cross_entropy (got {_describe(loss_fn)})"
        )
    return loss_fn


def check_model(model: object) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise TypeError(f"`model` must be a torch.nn.Module (got {_describe(model)})")
    for name, module in model.named_modules():
        if (
            isinstance(module, _NORM_BASE)
            and module.training
            and getattr(module, "track_running_stats", False)
        ):
            where = f"`model.{name}`" if name else "`model`"
            raise ValueError(
                f"{where} ({type(module).__name__}) updates its running statistics in training "
                f"mode: {BUFFER_FIX}"
            )
    return model


class FlatModel:
    """The model's trainable parameters as a flat vector and its loss as a function of it.

    Parameters
    ----------
    model : torch.nn.Module
        Checked: it must have trainable floating-point parameters, all of one dtype and
        on one device, with finite values.
    loss_fn : callable
        ``loss_fn(outputs, targets)`` returning the mean loss (a 0-d tensor).
    """

    def __init__(self, model: object, loss_fn: object) -> None:
        self.model = check_model(model)
        self.loss_fn = check_loss_fn(loss_fn)
        named = list(self.model.named_parameters())
        trainable = [(n, p) for n, p in named if p.requires_grad]
        if not trainable:
            raise ValueError(
                "`model` has no trainable parameters (none with requires_grad=True); "
                "the estimators meta-learn a model's floating-point parameters"
            )
        bad = [(n, p.dtype) for n, p in trainable if not p.is_floating_point()]
        if bad:
            raise TypeError(
                f"`model` must have real floating-point parameters (got {bad[0][0]!r} of "
                f"dtype {bad[0][1]})"
            )
        first_name, first = trainable[0]
        for n, p in trainable[1:]:
            if p.dtype != first.dtype:
                raise TypeError(
                    f"`model`'s trainable parameters must share one dtype: {first_name!r} is "
                    f"{first.dtype} but {n!r} is {p.dtype} (convert with model.to(dtype))"
                )
            if p.device != first.device:
                raise ValueError(
                    f"`model`'s trainable parameters must be on one device: {first_name!r} is "
                    f"on {first.device} but {n!r} is on {p.device}"
                )
        self.names = [n for n, _ in trainable]
        self.params = [p for _, p in trainable]
        self.shapes = [p.shape for p in self.params]
        self.numels = [p.numel() for p in self.params]
        self.dtype, self.device = first.dtype, first.device
        self.frozen = {n: p.detach() for n, p in named if not p.requires_grad}
        self.buffers = dict(self.model.named_buffers())
        with torch.no_grad():
            self.x = torch.cat([p.detach().reshape(-1) for p in self.params])
        if not bool(torch.isfinite(self.x).all()):
            name = next(n for n, p in trainable if not bool(torch.isfinite(p).all()))
            raise ValueError(f"`model` parameter {name!r} contains NaN or Inf")

    @property
    def dim(self) -> int:
        return self.x.numel()

    # -- the function ------------------------------------------------------------------
    def unflatten(self, v: torch.Tensor) -> dict[str, torch.Tensor]:
        """``{name: view}`` of a flat vector (n,) in the parameters' shapes."""
        return {
            n: t.view(s) for n, t, s in zip(self.names, torch.split(v, self.numels), self.shapes)
        }

    def loss(self, v: torch.Tensor, X: torch.Tensor, Y: torch.Tensor) -> torch.Tensor:
        """``loss_fn(model(X), Y)`` with the trainable parameters replaced by ``v``."""
        out = functional_call(self.model, (self.unflatten(v), self.frozen, self.buffers), (X,))
        value = self.loss_fn(out, Y)
        if not isinstance(value, torch.Tensor) or value.dim() != 0:
            got = (
                f"a tensor of shape {tuple(value.shape)}"
                if isinstance(value, torch.Tensor)
                else _describe(value)
            )
            raise ValueError(
                "`loss_fn(outputs, targets)` must return a scalar (0-d tensor), the mean loss "
                f"over one task's samples (got {got}); use reduction='mean'"
            )
        return value

    # -- results -----------------------------------------------------------------------
    def to_dict(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """A flat (..., n) tensor as ``{name: tensor of shape (..., *param.shape)}``."""
        lead = flat.shape[:-1]
        return {
            n: t.reshape(*lead, *s)
            for n, t, s in zip(self.names, torch.split(flat, self.numels, dim=-1), self.shapes)
        }

    def add_to_grad(self, flat: torch.Tensor) -> None:
        """``p.grad += g`` for each trainable parameter (``p.grad = g`` where it is None)."""
        with torch.no_grad():
            for p, g in zip(self.params, torch.split(flat, self.numels)):
                g = g.view(p.shape)
                if p.grad is None:
                    p.grad = g.clone(memory_format=torch.contiguous_format)
                else:
                    p.grad.add_(g)

    # -- buffers -----------------------------------------------------------------------
    def buffer_versions(self) -> dict[str, int]:
        return {n: b._version for n, b in self.buffers.items()}

    def check_buffers_unchanged(self, before: dict[str, int]) -> None:
        for n, b in self.buffers.items():
            if b._version != before[n]:
                raise ValueError(f"`model` modified its buffer {n!r} in place: {BUFFER_FIX}")


def check_tensors(
    tensors: object, names: Sequence[str], flat: FlatModel, what: str
) -> tuple[torch.Tensor, ...]:
    """Task tensors: a tuple of len(names) tensors sharing their first (task) dimension m >= 1,
    on the parameters' device, floating ones in the parameters' dtype and finite."""
    if isinstance(tensors, torch.Tensor) or not isinstance(tensors, (tuple, list)):
        raise TypeError(
            f"`{what}` must be a tuple of {len(names)} tensors ({', '.join(names)}) whose first "
            f"dimension is the task (got {_describe(tensors)})"
        )
    if len(tensors) != len(names):
        raise ValueError(
            f"`{what}` must hold {len(names)} tensors ({', '.join(names)}), got {len(tensors)}"
        )
    out = []
    for name, t in zip(names, tensors):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"`{name}` must be a torch.Tensor (got {_describe(t)})")
        if t.dim() < 1 or t.shape[0] < 1:
            raise ValueError(
                f"`{name}` must have a leading task dimension of size >= 1 (got shape "
                f"{tuple(t.shape)})"
            )
        if t.device != flat.device:
            raise ValueError(
                f"`{name}` is on {t.device} but the model's parameters are on {flat.device}; "
                "move one of them (nothing is moved implicitly)"
            )
        if t.is_floating_point() or t.is_complex():
            if t.dtype != flat.dtype:
                raise TypeError(
                    f"`{name}` has dtype {t.dtype} but the model's parameters are {flat.dtype}; "
                    "convert one of them"
                )
            if not bool(torch.isfinite(t).all()):
                raise ValueError(f"`{name}` must contain only finite values (found NaN or Inf)")
        out.append(t.detach())
    m = out[0].shape[0]
    for name, t in zip(names[1:], out[1:]):
        if t.shape[0] != m:
            raise ValueError(
                f"the task dimensions do not match: `{names[0]}` holds {m} tasks but `{name}` "
                f"holds {t.shape[0]} (the first dimension of every tensor is the task)"
            )
    return tuple(out)


# -- Hessian-vector products ------------------------------------------------------------------
_jvp_loaded = False


def _load_forward_ad() -> None:
    """torch's forward-mode AD loads its decompositions with torch.jit.script on first use,
    which recent torch reports as deprecated; load them once with that warning silenced."""
    global _jvp_loaded
    if _jvp_loaded:
        return
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*torch\.jit\.script.*")
        z = torch.zeros(1)
        jvp(torch.sin, (z,), (z,))
    _jvp_loaded = True


def hvp_mode(grad_fn: Callable, x: torch.Tensor, data: tuple[torch.Tensor, ...]) -> str:
    """ "forward" (``jvp`` of ``grad``) if forward-mode AD runs through this model and loss,
    else "reverse" (``vjp`` of ``grad``).

    Forward mode is the cheaper HVP, but not every operator supports it: in torch 2.13,
    ``jvp`` of ``grad`` through ``F.mse_loss`` fails with "ZeroTensors are immutable".
    One HVP on the first task decides, at the start of each call.
    """
    _load_forward_ad()
    task0 = tuple(t[0] for t in data)
    try:
        jvp(lambda p: grad_fn(p, *task0), (x,), (torch.zeros_like(x),))
    except (RuntimeError, NotImplementedError):
        return "reverse"
    return "forward"
