"""An independent NumPy reference for the sequential-network task family.

Written from the contract (docs/estimators.md, "Sequential network") alone, one task at a
time, for readability rather than speed. It does not import ``fobmaml``: layers are plain
tuples, and the tests build the library's network and this one from the same list.

Samples are rows, in torch's layout: a signal batch is (k, C, L), a flat batch (k, d).
The convolution is written directly (a sum over kernel taps of shifted, strided slices of
the zero-padded input), not by im2col as the library computes it. Parameters: layer by
layer, the weight ((out, in) for Linear, (out_channels, in_channels, kernel_size) for
Conv1d, row-major) and then the bias, as ``torch.nn.utils.parameters_to_vector``.

Derivatives, all independent of the library's R-operator:

- the gradient: hand-written backpropagation through each layer;
- Hessian-vector products: the complex step of that backpropagation,
  ``H v = Im ∇ℓ(φ + i h v) / h`` with ``h = 1e-30``. Every operation is complex-analytic
  where the contract makes it smooth: relu is ``z · [Re z > 0]`` (relu'' = 0) and max
  pooling selects by the real part, so it routes through the position of the maximum
  (the first one on a tie) and its own second derivative is 0.

Estimators come from ``mlp_reference`` unchanged: they only need a task with ``g``,
``grad_g``, ``hvp_g``, ``f``, ``grad_f``, ``hvp_f`` (``NetTask`` below).
"""

from __future__ import annotations

from dataclasses import dataclass

import mlp_reference as mref
import numpy as np

# A layer: ("linear", in, out, bias) | ("conv1d", in, out, kernel, stride, pad_left,
# pad_right, bias) | ("relu",) | ("tanh",) | ("maxpool1d", kernel, stride) |
# ("avgpool1d", kernel, stride) | ("flatten",)


def layers_of(net) -> tuple:
    """This module's description of a library network, read from its layers' arguments by
    class name (the reference does not import the library)."""
    out = []
    for layer in net:
        kind = type(layer).__name__
        if kind == "Linear":
            out.append(("linear", layer.in_features, layer.out_features, layer.bias))
        elif kind == "Conv1d":
            left, right = layer.pads()
            k, s, b = layer.kernel_size, layer.stride, layer.bias
            out.append(("conv1d", layer.in_channels, layer.out_channels, k, s, left, right, b))
        elif kind in ("MaxPool1d", "AvgPool1d"):
            out.append((kind.lower(), layer.kernel_size, layer.stride))
        elif kind in ("ReLU", "Tanh", "Flatten"):
            out.append((kind.lower(),))
        else:
            raise ValueError(f"unknown layer {kind}")
    return tuple(out)


def param_shapes(layers) -> list[tuple[int, ...]]:
    shapes = []
    for layer in layers:
        if layer[0] == "linear":
            _, i, o, bias = layer
            shapes += [(o, i)] + ([(o,)] if bias else [])
        elif layer[0] == "conv1d":
            _, i, o, K, _, _, _, bias = layer
            shapes += [(o, i, K)] + ([(o,)] if bias else [])
    return shapes


def num_params(layers) -> int:
    return int(sum(np.prod(s) for s in param_shapes(layers)))


def unflatten(params, layers) -> list[list[np.ndarray]]:
    """Per layer, its parameter arrays ([W, b], [W] or [])."""
    params = np.asarray(params)
    assert params.shape == (num_params(layers),), (params.shape, num_params(layers))
    out, off = [], 0
    for layer in layers:
        arrays = []
        if layer[0] in ("linear", "conv1d"):
            bias = layer[-1]
            shapes = param_shapes([layer])
            for shape in shapes[: 1 + bool(bias)]:
                size = int(np.prod(shape))
                arrays.append(params[off : off + size].reshape(shape))
                off += size
        out.append(arrays)
    return out


def flatten(grads) -> np.ndarray:
    return np.concatenate([g.ravel() for layer in grads for g in layer])


def fan_ins(layers) -> np.ndarray:
    """Per parameter, torch's default-init bound ``1/sqrt(fan_in)`` of its layer."""
    out = []
    for layer in layers:
        if layer[0] == "linear":
            _, i, o, bias = layer
            out.append(np.full(o * i + (o if bias else 0), 1.0 / np.sqrt(i)))
        elif layer[0] == "conv1d":
            _, i, o, K, _, _, _, bias = layer
            out.append(np.full(o * i * K + (o if bias else 0), 1.0 / np.sqrt(i * K)))
    return np.concatenate(out)


# ----------------------------------------------------------------------------------------
# Layers: forward (keeping what backward needs) and backward
# ----------------------------------------------------------------------------------------


def _windows(x, K, stride):
    """(k, C, L_out, K) view of the windows of (k, C, L) at the given stride (a copy)."""
    L_out = (x.shape[2] - K) // stride + 1
    idx = np.arange(L_out)[:, None] * stride + np.arange(K)[None, :]
    return x[:, :, idx]


def layer_forward(layer, params, x):
    """Output of one layer and a cache for its backward pass."""
    kind = layer[0]
    if kind == "linear":
        W = params[0]
        y = x @ W.T
        if layer[-1]:
            y = y + params[1]
        return y, x
    if kind == "conv1d":
        _, _, _, K, stride, pl, pr, bias = layer
        W = params[0]
        xp = np.pad(x, ((0, 0), (0, 0), (pl, pr)))
        L_out = (xp.shape[2] - K) // stride + 1
        y = np.zeros((x.shape[0], W.shape[0], L_out), dtype=np.result_type(x, W))
        for j in range(K):
            tap = xp[:, :, j : j + stride * (L_out - 1) + 1 : stride]  # (k, C_in, L_out)
            y = y + np.einsum("oi,sit->sot", W[:, :, j], tap)
        if bias:
            y = y + params[1][None, :, None]
        return y, (xp, L_out)
    if kind == "relu":
        return x * (x.real > 0), x
    if kind == "tanh":
        y = np.tanh(x)
        return y, y
    if kind == "maxpool1d":
        _, K, stride = layer
        win = _windows(x, K, stride)
        arg = np.argmax(win.real, axis=3)  # the first maximum on a tie
        y = np.take_along_axis(win, arg[..., None], axis=3)[..., 0]
        return y, (x.shape, arg)
    if kind == "avgpool1d":
        _, K, stride = layer
        return _windows(x, K, stride).sum(axis=3) / K, x.shape
    if kind == "flatten":
        return x.reshape(x.shape[0], -1), x.shape
    raise ValueError(kind)


def layer_backward(layer, params, cache, dy):
    """(gradient w.r.t. the layer's input, [gradients of its parameters])."""
    kind = layer[0]
    if kind == "linear":
        x = cache
        W = params[0]
        grads = [dy.T @ x] + ([dy.sum(axis=0)] if layer[-1] else [])
        return dy @ W, grads
    if kind == "conv1d":
        _, _, _, K, stride, pl, pr, bias = layer
        xp, L_out = cache
        W = params[0]
        dW = np.zeros(W.shape, dtype=np.result_type(dy, xp))
        dxp = np.zeros(xp.shape, dtype=np.result_type(dy, W))
        for j in range(K):
            sl = slice(j, j + stride * (L_out - 1) + 1, stride)
            dW[:, :, j] = np.einsum("sot,sit->oi", dy, xp[:, :, sl])
            dxp[:, :, sl] += np.einsum("oi,sot->sit", W[:, :, j], dy)
        grads = [dW] + ([dy.sum(axis=(0, 2))] if bias else [])
        return dxp[:, :, pl : xp.shape[2] - pr], grads
    if kind == "relu":
        return dy * (cache.real > 0), []
    if kind == "tanh":
        return dy * (1.0 - cache**2), []
    if kind == "maxpool1d":
        _, K, stride = layer
        shape, arg = cache
        dx = np.zeros(shape, dtype=dy.dtype)
        pos = np.arange(arg.shape[2])[None, None, :] * stride + arg  # (k, C, L_out)
        s, c = np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij")
        for t in range(arg.shape[2]):
            np.add.at(dx, (s, c, pos[:, :, t]), dy[:, :, t])
        return dx, []
    if kind == "avgpool1d":
        _, K, stride = layer
        dx = np.zeros(cache, dtype=dy.dtype)
        for t in range(dy.shape[2]):
            dx[:, :, t * stride : t * stride + K] += dy[:, :, t : t + 1] / K
        return dx, []
    if kind == "flatten":
        return dy.reshape(cache), []
    raise ValueError(kind)


def predict(params, X, layers):
    h = np.asarray(X)
    for layer, p in zip(layers, unflatten(params, layers)):
        h, _ = layer_forward(layer, p, h)
    return h


@dataclass(frozen=True)
class Net:
    layers: tuple
    loss: str = "mse"

    @property
    def n(self) -> int:
        return num_params(self.layers)

    def predict(self, params, X):
        return predict(params, X, self.layers)

    def loss_value(self, params, X, Y):
        return mref.loss_of_outputs(self.predict(params, X), Y, self.loss)

    def gradient(self, params, X, Y):
        """Backpropagation, layer by layer, from ∂loss/∂output."""
        weights = unflatten(params, self.layers)
        h, caches = np.asarray(X), []
        for layer, p in zip(self.layers, weights):
            h, cache = layer_forward(layer, p, h)
            caches.append(cache)
        d = mref.output_gradient(h, Y, self.loss)
        grads = [None] * len(self.layers)
        for j in range(len(self.layers) - 1, -1, -1):
            d, grads[j] = layer_backward(self.layers[j], weights[j], caches[j], d)
        return flatten(grads)

    def hvp(self, params, X, Y, v, h: float = 1e-30):
        """``∇²loss(φ) v`` by the complex step of ``gradient``."""
        params = np.asarray(params, dtype=float)
        return self.gradient(params + 1j * h * np.asarray(v, dtype=float), X, Y).imag / h

    def hessian(self, params, X, Y):
        """The dense Hessian, column by column from ``hvp``."""
        H = np.stack([self.hvp(params, X, Y, e) for e in np.eye(self.n)], axis=1)
        return 0.5 * (H + H.T)


class NetTask(mref.MLPTask):
    """Task i of a network: the MLP reference's task with this module's network."""


def task_list(net: Net, Xs, Ys, Xq=None, Yq=None) -> list[NetTask]:
    return [
        NetTask(net, Xs[i], Ys[i], None if Xq is None else Xq[i], None if Yq is None else Yq[i])
        for i in range(len(Xs))
    ]
