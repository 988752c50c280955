"""A network's layers as the peers evaluate them, read from ``net.get_config()``.

The peers build a pure function of the flat parameter vector for any
:class:`fobmaml.nn.Sequential`. They do not use fobmaml's layer objects for that: they read
the JSON configuration (the layers' constructor arguments, with torch's names and meanings)
and lay out the parameters themselves, layer by layer, the weight (``(out, in)`` for Linear,
``(out_channels, in_channels, kernel_size)`` for Conv1d, row-major) then the bias: the order
of ``torch.nn.utils.parameters_to_vector`` (``docs/estimators.md``, "Sequential networks").

>>> ops = layer_ops([
...     {"layer": "Conv1d", "in_channels": 1, "out_channels": 4, "kernel_size": 4,
...      "stride": 1, "padding": "same", "bias": False},
...     {"layer": "ReLU", "inplace": False},
...     {"layer": "Flatten"},
...     {"layer": "Linear", "in_features": 40, "out_features": 3, "bias": True}])
>>> [(op.kind, op.weight, op.bias) for op in ops if op.has_params]
[('conv1d', (0, 16), None), ('linear', (16, 136), (136, 139))]
>>> ops[0].pads, num_params(ops)
((1, 2), 139)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

__all__ = ["Op", "layer_ops", "num_params"]

_KINDS = {
    "Linear": "linear",
    "Conv1d": "conv1d",
    "ReLU": "relu",
    "Tanh": "tanh",
    "MaxPool1d": "maxpool1d",
    "AvgPool1d": "avgpool1d",
    "Flatten": "flatten",
}


@dataclass(frozen=True)
class Op:
    """One layer: its kind and, for Linear and Conv1d, where its parameters are.

    ``weight`` and ``bias`` are ``(start, stop)`` slices of the flat vector (``bias`` is None
    without a bias); ``shape`` is the weight's shape. ``kernel``, ``stride`` and ``pads``
    (zeros on the left and on the right) describe Conv1d and the pooling layers.
    """

    kind: str
    weight: tuple[int, int] | None = None
    bias: tuple[int, int] | None = None
    shape: tuple[int, ...] = ()
    kernel: int = 1
    stride: int = 1
    pads: tuple[int, int] = (0, 0)

    @property
    def has_params(self) -> bool:
        return self.weight is not None


def _pads(padding: int | str, kernel: int) -> tuple[int, int]:
    """torch's Conv1d padding as (left, right): "same" puts the odd zero on the right."""
    if padding == "valid":
        return 0, 0
    if padding == "same":
        total = kernel - 1
        return total // 2, total - total // 2
    return int(padding), int(padding)


def layer_ops(config: Sequence[dict]) -> list[Op]:
    """The layers of ``net.get_config()``, with their parameters' places in the flat vector."""
    ops, off = [], 0
    for i, entry in enumerate(config):
        kind = _KINDS.get(entry.get("layer")) if isinstance(entry, dict) else None
        if kind is None:
            raise ValueError(
                f"`config[{i}]` must be a layer dict with 'layer' one of {sorted(_KINDS)} "
                f"(got {entry!r})"
            )
        if kind in ("linear", "conv1d"):
            if kind == "linear":
                shape = (int(entry["out_features"]), int(entry["in_features"]))
            else:
                shape = (
                    int(entry["out_channels"]),
                    int(entry["in_channels"]),
                    int(entry["kernel_size"]),
                )
            size = 1
            for d in shape:
                size *= d
            weight = (off, off + size)
            off += size
            bias = None
            if entry.get("bias", True):
                bias = (off, off + shape[0])
                off += shape[0]
            if kind == "linear":
                ops.append(Op(kind, weight, bias, shape))
            else:
                k = shape[2]
                ops.append(
                    Op(
                        kind,
                        weight,
                        bias,
                        shape,
                        kernel=k,
                        stride=int(entry.get("stride", 1)),
                        pads=_pads(entry.get("padding", 0), k),
                    )
                )
        elif kind in ("maxpool1d", "avgpool1d"):
            k = int(entry["kernel_size"])
            stride = entry.get("stride")
            ops.append(Op(kind, kernel=k, stride=k if stride is None else int(stride)))
        else:
            ops.append(Op(kind))
    return ops


def num_params(ops: Sequence[Op]) -> int:
    """The length of the flat parameter vector."""
    ends = [op.bias[1] if op.bias else op.weight[1] for op in ops if op.has_params]
    return max(ends, default=0)
