r"""Sequential networks as a task family: layers with torch.nn's arguments and semantics.

>>> import fobmaml as fm
>>> net = fm.nn.Sequential(
...     fm.nn.Conv1d(1, 8, kernel_size=5, stride=2, padding=1), fm.nn.ReLU(),
...     fm.nn.MaxPool1d(2), fm.nn.Flatten(), fm.nn.Linear(8 * 9, 5))
>>> net.num_params, net.output_shape((1, 40))
(413, (5,))

A network is a list of layers; :class:`fobmaml.NetTasks` makes it a task family that
every estimator runs on (exact gradients by backpropagation, exact Hessian-vector products
by the R-operator, all in C++). The layers:

- :class:`Linear` ``(in_features, out_features, bias=True)``;
- :class:`Conv1d` ``(in_channels, out_channels, kernel_size, stride=1, padding=0,
  bias=True)``, zero padding (``padding`` may also be ``"valid"`` or ``"same"``), no
  dilation or groups;
- :class:`ReLU`, :class:`Tanh`;
- :class:`MaxPool1d` ``(kernel_size, stride=None)`` and :class:`AvgPool1d`
  ``(kernel_size, stride=None)``, no padding, the stride defaulting to the kernel size;
- :class:`Flatten`, channel-major, as torch flattens ``(C, L)``.

One sample's input has shape ``(C_in, L)`` when the first layer is :class:`Conv1d` and
``(d_in,)`` when it is :class:`Linear`. The flat parameter vector holds, layer by layer, the
weight (``(out, in)`` for Linear, ``(out_channels, in_channels, kernel_size)`` for Conv1d,
row-major) and then the bias: ``torch.nn.utils.parameters_to_vector`` of the same layers in
an ``nn.Sequential``. Second derivatives take ``relu'' = 0``, and max pooling routes
through the position of its maximum (the first one on a tie), so its own second derivative
is 0 (docs/estimators.md, "Sequential network").
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence

import numpy as np

from . import _validation as check
from ._native import core as _core

__all__ = [
    "Layer",
    "Linear",
    "Conv1d",
    "ReLU",
    "Tanh",
    "MaxPool1d",
    "AvgPool1d",
    "Flatten",
    "Sequential",
]

Shape = tuple  # (features,) or (channels, length)


def _size(value: object, name: str, minimum: int) -> int:
    """An int argument given as torch accepts it: an int or a one-element tuple."""
    if isinstance(value, (tuple, list)) and len(value) == 1:
        value = value[0]
    return check.integer(value, name, minimum=minimum)


def _only(value: object, default: object, name: str, layer: str, why: str) -> None:
    """Accept torch's argument `name` only at its `default` value."""
    v = value[0] if isinstance(value, (tuple, list)) and len(value) == 1 else value
    if not (isinstance(v, (bool, int, str, np.integer, np.bool_)) and v == default):
        raise ValueError(f"`{name}` of {layer} must be {default!r}: {why} (got {value!r})")


class Layer:
    """Base class of the layers. A layer only stores its arguments."""

    def _spec(self) -> _core.LayerSpec:
        raise NotImplementedError

    def _param_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """The layer's parameters, in order: [("weight", shape), ("bias", shape)]."""
        return []

    def _fan_in(self) -> int:
        return 1

    def get_config(self) -> dict:
        """The constructor arguments, JSON-serialisable, with the class as ``"layer"``."""
        return {"layer": type(self).__name__, **vars(self)}

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and vars(other) == vars(self)

    def __hash__(self) -> int:
        return hash((type(self).__name__, tuple(sorted(vars(self).items()))))


class Linear(Layer):
    r"""``y = W x + b``, ``W`` of shape ``(out_features, in_features)``, as ``torch.nn.Linear``."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True) -> None:
        self.in_features = check.integer(in_features, "in_features", minimum=1)
        self.out_features = check.integer(out_features, "out_features", minimum=1)
        self.bias = _flag(bias, "bias")

    def _spec(self):
        return _core.LayerSpec(
            _core.LayerKind.linear, self.in_features, self.out_features, bias=self.bias
        )

    def _param_shapes(self):
        shapes = [("weight", (self.out_features, self.in_features))]
        return shapes + ([("bias", (self.out_features,))] if self.bias else [])

    def _fan_in(self) -> int:
        return self.in_features

    def __repr__(self) -> str:
        return (
            f"Linear(in_features={self.in_features}, out_features={self.out_features}, "
            f"bias={self.bias})"
        )


class Conv1d(Layer):
    r"""1-D convolution (cross-correlation) with zero padding, as ``torch.nn.Conv1d``.

    .. math::

        y_{o,t} = b_o + \sum_{i,j} W_{o,i,j}\, x_{i,\, t\,s + j - p}

    for an input of shape ``(in_channels, L)``; the output has length
    ``(L + 2p - kernel_size) // stride + 1``. ``padding`` is an int, ``"valid"`` (0) or
    ``"same"`` (stride 1 only; with an even kernel the extra zero goes on the right, as
    torch does). ``dilation``, ``groups`` and ``padding_mode`` are accepted at their
    defaults only.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int | str = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = True,
        padding_mode: str = "zeros",
    ) -> None:
        self.in_channels = check.integer(in_channels, "in_channels", minimum=1)
        self.out_channels = check.integer(out_channels, "out_channels", minimum=1)
        self.kernel_size = _size(kernel_size, "kernel_size", 1)
        self.stride = _size(stride, "stride", 1)
        if isinstance(padding, str):
            check.choice(padding, "padding", ("valid", "same"))
            if padding == "same" and self.stride != 1:
                raise ValueError(
                    f"`padding`='same' needs `stride` = 1, as in torch (got stride={self.stride})"
                )
            self.padding = padding
        else:
            self.padding = _size(padding, "padding", 0)
        _only(dilation, 1, "dilation", "Conv1d", "dilated convolutions are not supported")
        _only(groups, 1, "groups", "Conv1d", "grouped convolutions are not supported")
        _only(padding_mode, "zeros", "padding_mode", "Conv1d", "only zero padding is supported")
        self.bias = _flag(bias, "bias")

    def pads(self) -> tuple[int, int]:
        """Zeros added on the left and on the right of the input."""
        if self.padding == "valid":
            return 0, 0
        if self.padding == "same":
            total = self.kernel_size - 1
            return total // 2, total - total // 2
        return self.padding, self.padding

    def _spec(self):
        left, right = self.pads()
        return _core.LayerSpec(
            _core.LayerKind.conv1d,
            self.in_channels,
            self.out_channels,
            kernel=self.kernel_size,
            stride=self.stride,
            pad_left=left,
            pad_right=right,
            bias=self.bias,
        )

    def _param_shapes(self):
        shapes = [("weight", (self.out_channels, self.in_channels, self.kernel_size))]
        return shapes + ([("bias", (self.out_channels,))] if self.bias else [])

    def _fan_in(self) -> int:
        return self.in_channels * self.kernel_size

    def __repr__(self) -> str:
        pad = repr(self.padding) if isinstance(self.padding, str) else f"({self.padding},)"
        extra = "" if self.bias else ", bias=False"
        return (
            f"Conv1d({self.in_channels}, {self.out_channels}, kernel_size=({self.kernel_size},), "
            f"stride=({self.stride},), padding={pad}{extra})"
        )


class ReLU(Layer):
    r"""``max(x, 0)``, elementwise (its second derivative is taken as 0)."""

    def __init__(self, inplace: bool = False) -> None:
        # torch's in-place flag changes no values; it is accepted and ignored.
        self.inplace = _flag(inplace, "inplace")

    def _spec(self):
        return _core.LayerSpec(_core.LayerKind.relu)

    def __repr__(self) -> str:
        return "ReLU()"


class Tanh(Layer):
    r"""``tanh(x)``, elementwise."""

    def _spec(self):
        return _core.LayerSpec(_core.LayerKind.tanh)

    def __repr__(self) -> str:
        return "Tanh()"


class _Pool(Layer):
    _kind = ""

    def __init__(self, kernel_size: int, stride: int | None = None) -> None:
        self.kernel_size = _size(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else _size(stride, "stride", 1)

    def _spec(self):
        return _core.LayerSpec(
            getattr(_core.LayerKind, self._kind), kernel=self.kernel_size, stride=self.stride
        )

    def __repr__(self) -> str:
        return f"{type(self).__name__}(kernel_size={self.kernel_size}, stride={self.stride})"


class MaxPool1d(_Pool):
    r"""The maximum over windows of ``kernel_size`` positions every ``stride``, per channel.

    As ``torch.nn.MaxPool1d`` without padding, dilation or ``ceil_mode``. Derivatives route
    through the position of the maximum (the first one on a tie).
    """

    _kind = "maxpool1d"

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        dilation: int = 1,
        return_indices: bool = False,
        ceil_mode: bool = False,
    ) -> None:
        super().__init__(kernel_size, stride)
        _only(padding, 0, "padding", "MaxPool1d", "padded pooling is not supported")
        _only(dilation, 1, "dilation", "MaxPool1d", "dilated pooling is not supported")
        _only(return_indices, False, "return_indices", "MaxPool1d", "a layer returns one array")
        _only(ceil_mode, False, "ceil_mode", "MaxPool1d", "only floor mode is supported")


class AvgPool1d(_Pool):
    r"""The mean over windows of ``kernel_size`` positions every ``stride``, per channel.

    As ``torch.nn.AvgPool1d`` without padding or ``ceil_mode``.
    """

    _kind = "avgpool1d"

    def __init__(
        self,
        kernel_size: int,
        stride: int | None = None,
        padding: int = 0,
        ceil_mode: bool = False,
        count_include_pad: bool = True,
    ) -> None:
        super().__init__(kernel_size, stride)
        _only(padding, 0, "padding", "AvgPool1d", "padded pooling is not supported")
        _only(ceil_mode, False, "ceil_mode", "AvgPool1d", "only floor mode is supported")
        # Without padding, count_include_pad changes nothing; it is accepted either way.
        self.count_include_pad = _flag(count_include_pad, "count_include_pad")


class Flatten(Layer):
    r"""``(C, L) -> (C L,)`` channel-major, as ``torch.nn.Flatten()``; a no-op on a vector."""

    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        _only(start_dim, 1, "start_dim", "Flatten", "it flattens each sample whole")
        _only(end_dim, -1, "end_dim", "Flatten", "it flattens each sample whole")

    def _spec(self):
        return _core.LayerSpec(_core.LayerKind.flatten)

    def __repr__(self) -> str:
        return "Flatten(start_dim=1, end_dim=-1)"


def _flag(value: object, name: str) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"`{name}` must be a bool (got {type(value).__name__})")
    return bool(value)


def _input_shape(shape: object) -> tuple[int, ...]:
    if isinstance(shape, (numbers.Integral, np.integer)):
        shape = (shape,)
    if not isinstance(shape, (tuple, list)) or len(shape) not in (1, 2):
        raise ValueError(f"`input_shape` must be (features,) or (channels, length) (got {shape!r})")
    return tuple(check.integer(d, "input_shape", minimum=1) for d in shape)


def _describe(specs, input_shape):
    try:
        return _core.net_describe(specs, input_shape)
    except ValueError as err:
        raise ValueError(str(err)) from None


class Sequential:
    r"""A stack of layers applied in order, as ``torch.nn.Sequential``.

    Parameters
    ----------
    *layers : Layer
        :class:`Linear`, :class:`Conv1d`, :class:`ReLU`, :class:`Tanh`,
        :class:`MaxPool1d`, :class:`AvgPool1d` or :class:`Flatten` instances.

    Layers that cannot follow each other (sizes that do not chain, a Linear layer on a
    signal) raise ``ValueError`` naming the layer index. A convolutional network's input
    length is known only with data; the checks that need it run then (:meth:`shapes`,
    :meth:`predict`, :class:`fobmaml.NetTasks`).

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> net = fm.nn.Sequential(fm.nn.Linear(3, 16), fm.nn.Tanh(), fm.nn.Linear(16, 2))
    >>> x = net.init_params(seed=0)
    >>> net.num_params, net.predict(x, np.ones((4, 3))).shape
    (98, (4, 2))
    """

    def __init__(self, *layers: Layer) -> None:
        if len(layers) == 1 and isinstance(layers[0], (list, tuple)):
            layers = tuple(layers[0])
        for i, layer in enumerate(layers):
            if not isinstance(layer, Layer):
                raise TypeError(
                    f"layer {i} must be a fobmaml.nn layer such as fm.nn.Linear "
                    f"(got {type(layer).__name__})"
                )
        if not layers:
            raise ValueError("a Sequential network needs at least one layer")
        self.layers = tuple(layers)
        self._specs = [layer._spec() for layer in self.layers]
        first = self.layers[0]
        if not isinstance(first, (Linear, Conv1d)):
            raise ValueError(
                f"layer 0 ({type(first).__name__}) does not fix the input shape: start the "
                "network with Linear or Conv1d"
            )
        _, params, n = _describe(self._specs, None)  # the checks that need no input length
        self._layout = params
        self.num_params = int(n)

    # -- structure ----------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    def __getitem__(self, index: int) -> Layer:
        return self.layers[index]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Sequential) and other.layers == self.layers

    def __hash__(self) -> int:
        return hash(self.layers)

    def __repr__(self) -> str:
        body = "".join(f"\n  ({i}): {layer!r}" for i, layer in enumerate(self.layers))
        return f"Sequential({body}\n)"

    @property
    def input_shape(self) -> tuple[int | None, ...]:
        """One sample's input shape: ``(d_in,)``, or ``(C_in, None)`` (any length) for Conv1d."""
        first = self.layers[0]
        return (first.in_features,) if isinstance(first, Linear) else (first.in_channels, None)

    def shapes(self, input_shape: Sequence[int]) -> list[tuple[int, ...]]:
        """The per-sample shape after every layer (the input's first), for `input_shape`.

        Raises ``ValueError`` naming the first layer that cannot take its input.
        """
        return [tuple(s) for s in _describe(self._specs, list(_input_shape(input_shape)))[0]]

    def output_shape(self, input_shape: Sequence[int]) -> tuple[int, ...]:
        """One sample's output shape for `input_shape`: ``(d_out,)``."""
        return self.shapes(input_shape)[-1]

    def parameter_shapes(self) -> list[tuple[str, tuple[int, ...]]]:
        """``[(name, shape), ...]`` in flat-vector order, named as ``torch.nn.Sequential``
        names them (``"0.weight"``, ``"0.bias"``, ...)."""
        return [
            (f"{i}.{name}", shape)
            for i, layer in enumerate(self.layers)
            for name, shape in layer._param_shapes()
        ]

    # -- parameters ------------------------------------------------------------------------------
    def unflatten(self, params: np.ndarray) -> dict[str, np.ndarray]:
        """Views ``{name: array}`` of the flat vector, as ``named_parameters()`` would give."""
        params = check.float_array(params, "params", ndim=1, shape_doc=f"({self.num_params},)")
        if params.size != self.num_params:
            raise ValueError(
                f"`params` must have {self.num_params} entries for this network (got {params.size})"
            )
        out, off = {}, 0
        for name, shape in self.parameter_shapes():
            size = int(np.prod(shape))
            out[name] = params[off : off + size].reshape(shape)
            off += size
        return out

    def init_params(self, seed: int = 0) -> np.ndarray:
        r"""torch's default initialization of every layer, flattened.

        Each weight and bias of a Linear or Conv1d layer is drawn from
        ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))`` with ``fan_in = in_features`` or
        ``in_channels * kernel_size`` (what ``kaiming_uniform_(a=sqrt(5))`` and the bias
        rule of torch's layers amount to), layer by layer, weight then bias, with
        ``numpy.random.default_rng(seed)``. A network of Linear layers gets the numbers of
        :func:`fobmaml.mlp.init_params`.
        """
        seed = check.integer(seed, "seed", minimum=0)
        rng = np.random.default_rng(seed)
        parts = []
        for layer in self.layers:
            bound = 1.0 / np.sqrt(layer._fan_in())
            for _, shape in layer._param_shapes():
                parts.append(rng.uniform(-bound, bound, size=int(np.prod(shape))))
        return np.concatenate(parts) if parts else np.zeros(0)

    def predict(self, params: np.ndarray, X: np.ndarray) -> np.ndarray:
        """The network's outputs (logits for classification), computed by the C++ kernels.

        Parameters
        ----------
        params : array_like, shape (num_params,)
        X : array_like, shape (..., *input_shape)
            Inputs; any leading shape, e.g. (k, C, L) or (m, k, C, L).

        Returns
        -------
        numpy.ndarray, shape (..., d_out)
        """
        params = check.float_array(params, "params", ndim=1, shape_doc=f"({self.num_params},)")
        if params.size != self.num_params:
            raise ValueError(
                f"`params` must have {self.num_params} entries for this network (got {params.size})"
            )
        X = check.float_array(X, "X")
        sample = 1 if isinstance(self.layers[0], Linear) else 2
        if X.ndim < sample:
            raise ValueError(
                f"`X` must have shape (..., {', '.join(map(str, self._sample_doc()))}) "
                f"(got {X.shape})"
            )
        lead = X.shape[: X.ndim - sample]
        flat = np.ascontiguousarray(X.reshape((-1, *X.shape[X.ndim - sample :])))
        with np.errstate(over="ignore", invalid="ignore"):
            out = _core.net_predict(self._specs, params, flat)
        if not np.isfinite(out).all():
            raise FloatingPointError(
                "the network's output overflowed (NaN or Inf) for these `params` and `X`"
            )
        return out.reshape((*lead, out.shape[-1]))

    def _sample_doc(self) -> tuple:
        shape = self.input_shape
        return tuple("L" if d is None else d for d in shape)

    # -- interoperability ---------------------------------------------------------------------
    def __reduce__(self):
        # Pickled as its layers (which only store their arguments); the kernel's layer specs
        # are rebuilt, as by the constructor.
        return (type(self), self.layers)

    def _first_kink(self) -> int | None:
        """The index of the first layer whose gradient jumps (ReLU, MaxPool1d), or None."""
        return next(
            (i for i, layer in enumerate(self.layers) if isinstance(layer, (ReLU, MaxPool1d))),
            None,
        )

    def get_config(self) -> list[dict]:
        """The layers' constructor arguments, JSON-serialisable (see :meth:`from_config`)."""
        return [layer.get_config() for layer in self.layers]

    @classmethod
    def from_config(cls, config: Sequence[dict]) -> Sequential:
        """The network :meth:`get_config` describes.

        >>> import fobmaml as fm
        >>> net = fm.nn.Sequential(fm.nn.Linear(3, 4), fm.nn.ReLU(), fm.nn.Linear(4, 2))
        >>> fm.nn.Sequential.from_config(net.get_config()) == net
        True
        """
        if isinstance(config, (str, bytes)) or not isinstance(config, Sequence):
            raise TypeError(f"`config` must be a list of layer dicts (got {type(config).__name__})")
        layers = []
        for i, entry in enumerate(config):
            if not isinstance(entry, dict) or entry.get("layer") not in _LAYERS:
                raise ValueError(
                    f"`config[{i}]` must be a dict whose 'layer' is one of {sorted(_LAYERS)} "
                    f"(got {entry!r})"
                )
            args = {k: v for k, v in entry.items() if k != "layer"}
            layers.append(_LAYERS[entry["layer"]](**args))
        return cls(*layers)

    def to_torch(self):
        """The same network as a ``torch.nn.Sequential`` (float64); needs torch installed.

        Load parameters into it with ``torch.nn.utils.vector_to_parameters``.
        """
        import torch

        mods = []
        for layer in self.layers:
            if isinstance(layer, Linear):
                mods.append(torch.nn.Linear(layer.in_features, layer.out_features, layer.bias))
            elif isinstance(layer, Conv1d):
                mods.append(
                    torch.nn.Conv1d(
                        layer.in_channels,
                        layer.out_channels,
                        layer.kernel_size,
                        stride=layer.stride,
                        padding=layer.padding,
                        bias=layer.bias,
                    )
                )
            elif isinstance(layer, ReLU):
                mods.append(torch.nn.ReLU())
            elif isinstance(layer, Tanh):
                mods.append(torch.nn.Tanh())
            elif isinstance(layer, MaxPool1d):
                mods.append(torch.nn.MaxPool1d(layer.kernel_size, layer.stride))
            elif isinstance(layer, AvgPool1d):
                mods.append(torch.nn.AvgPool1d(layer.kernel_size, layer.stride))
            else:
                mods.append(torch.nn.Flatten())
        return torch.nn.Sequential(*mods).double()


_LAYERS = {cls.__name__: cls for cls in (Linear, Conv1d, ReLU, Tanh, MaxPool1d, AvgPool1d, Flatten)}
