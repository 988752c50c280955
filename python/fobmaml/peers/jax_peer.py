"""JAX: ``jax.jit`` of the whole meta-gradient, ``jax.vmap`` over tasks, float64.

``jax_enable_x64`` is switched on when this module is imported. The task losses are pure
functions of a flat parameter vector (static slices reshaped into the layers' weights).
A ``fobmaml.nn`` network is built from ``net.get_config()`` (``_network.layer_ops``):
``lax.conv_general_dilated`` with the layer's (left, right) zero padding for Conv1d, and
pooling over the windows gathered with a static index array (max pooling takes the first
maximum, as torch and fobmaml do).

One task's inner loop is a ``lax.scan`` over the K steps with carry
``(phi_k, phi_{k-1})``; ``vmap`` runs it for all tasks and ``jit`` compiles the whole
estimator, with K, lr, lam, beta, delta and cg_steps static. The task data are
arguments of the compiled function, not constants baked into it.

- MAML: ``jax.grad`` of ``mean(vmap(f(scan_loop(x))))``, reverse mode through the scan;
- FO-MAML: ``vmap(grad(f))`` at the vmapped ``phi_K``;
- iMAML: ``jax.linearize(grad(g), phi_K)`` once, then ``cg_steps`` CG iterations in a
  ``lax.fori_loop`` with that linear map as the Hessian-vector product
  (forward-over-reverse, no Hessian formed);
- FO-B-MAML (symmetric, objective perturbation): the perturbed loop on ``g + s f``,
  vmapped over the tasks and, inside, over ``s in (+delta, -delta)``.

Timing starts after a warm-up call (the first call compiles); every call ends with
``block_until_ready()``.
"""

from __future__ import annotations

import os
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from ._network import layer_ops
from .problems import CG_STEPS, DELTA, ESTIMATORS, Problem

jax.config.update("jax_enable_x64", True)

__all__ = ["NAME", "ESTIMATORS", "build", "build_compiled", "to_numpy", "settings"]

NAME = "jax"


def _mlp_loss(problem: Problem):
    layers = problem.layers
    act = jnp.tanh if problem.activation == "tanh" else jax.nn.relu
    xent = problem.loss == "xent"
    shapes, off = [], 0
    for d_in, d_out in zip(layers[:-1], layers[1:]):
        shapes.append((off, off + d_out * d_in, d_out, d_in))
        off += d_out * (d_in + 1)

    def loss(p, X, Y):
        h = X
        for j, (ow, ob, d_out, d_in) in enumerate(shapes):
            h = h @ p[ow:ob].reshape(d_out, d_in).T + p[ob : ob + d_out]
            if j < len(shapes) - 1:
                h = act(h)
        if xent:
            logp = jax.nn.log_softmax(h, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, Y[:, None], axis=-1))
        return jnp.mean((h - Y) ** 2)

    return loss


def _pool_index(length: int, kernel: int, stride: int) -> np.ndarray:
    """(L_out, kernel) positions of each pooling window (no padding, floor mode)."""
    out = (length - kernel) // stride + 1
    return np.arange(out)[:, None] * stride + np.arange(kernel)[None, :]


def _net_loss(problem: Problem):
    """``loss(p, X, Y)`` of any ``fobmaml.nn`` network; X is one task's (k, *input_shape)."""
    ops = layer_ops(problem.config)
    xent = problem.loss == "xent"

    def loss(p, X, Y):
        h = X
        for op in ops:
            if op.has_params:
                W = p[op.weight[0] : op.weight[1]].reshape(op.shape)
                if op.kind == "linear":
                    h = h @ W.T
                else:
                    h = lax.conv_general_dilated(
                        h,
                        W,
                        window_strides=(op.stride,),
                        padding=[op.pads],
                        dimension_numbers=("NCH", "OIH", "NCH"),
                    )
                if op.bias is not None:
                    b = p[op.bias[0] : op.bias[1]]
                    h = h + (b if op.kind == "linear" else b[:, None])
            elif op.kind == "relu":
                h = jax.nn.relu(h)
            elif op.kind == "tanh":
                h = jnp.tanh(h)
            elif op.kind in ("maxpool1d", "avgpool1d"):
                win = h[..., _pool_index(h.shape[-1], op.kernel, op.stride)]  # (k, C, L', kernel)
                if op.kind == "avgpool1d":
                    h = jnp.mean(win, axis=-1)
                else:  # the first maximum, as torch and fobmaml route it
                    first = jnp.argmax(win, axis=-1)[..., None]
                    h = jnp.take_along_axis(win, first, axis=-1)[..., 0]
            else:
                h = h.reshape(h.shape[0], -1)
        if xent:
            logp = jax.nn.log_softmax(h, axis=-1)
            return -jnp.mean(jnp.take_along_axis(logp, Y[:, None], axis=-1))
        return jnp.mean((h - Y) ** 2)

    return loss


def _losses(problem: Problem):
    """(g(p, task), f(p, task)) with task a tuple of one task's arrays."""
    if problem.family == "quadratic":

        def g(p, t):
            return 0.5 * p @ (t[0] @ p) - t[1] @ p

        def f(p, t):
            return 0.5 * p @ (t[2] @ p) - t[3] @ p

    else:
        loss = _net_loss(problem) if problem.family == "net" else _mlp_loss(problem)

        def g(p, t):
            return loss(p, t[0], t[1])

        def f(p, t):
            return loss(p, t[2], t[3])

    return g, f


def _estimator(problem: Problem, estimator: str):
    """The jitted ``(x, data) -> mean meta-gradient``."""
    g, f = _losses(problem)
    inner = problem.inner
    K, lr, lam, beta = inner.steps, inner.lr, inner.lam, inner.momentum
    grad_g, grad_f = jax.grad(g), jax.grad(f)

    def inner_loop(x, t, s=None):
        """phi_K of task t; with s, psi^s_K of the perturbed problem g + s f."""
        step_grad = grad_g if s is None else jax.grad(lambda p, t: g(p, t) + s * f(p, t))

        def step(carry, _):
            phi, prev = carry
            new = phi - lr * (step_grad(phi, t) + lam * (phi - x))
            if beta:
                new = new + beta * (phi - prev)
            return (new, phi), None

        (phi, _), _ = lax.scan(step, (x, x), None, length=K)
        return phi

    over_tasks = (None, 0)

    def maml(x, data):
        def meta_loss(x):
            return jnp.mean(jax.vmap(lambda x, t: f(inner_loop(x, t), t), over_tasks)(x, data))

        return jax.grad(meta_loss)(x)

    def fomaml(x, data):
        phi = jax.vmap(inner_loop, over_tasks)(x, data)
        return jnp.mean(jax.vmap(grad_f)(phi, data), axis=0)

    def imaml_task(x, t):
        phi = inner_loop(x, t)
        rhs = grad_f(phi, t)
        _, hvp = jax.linearize(lambda p: grad_g(p, t), phi)

        def cg_step(_, state):
            u, r, p, rs = state
            Mp = p + hvp(p) / lam
            a = rs / (p @ Mp)
            u, r = u + a * p, r - a * Mp
            rs_new = r @ r
            return u, r, r + (rs_new / rs) * p, rs_new

        u, *_ = lax.fori_loop(0, CG_STEPS, cg_step, (jnp.zeros_like(rhs), rhs, rhs, rhs @ rhs))
        return u

    def imaml(x, data):
        return jnp.mean(jax.vmap(imaml_task, over_tasks)(x, data), axis=0)

    def fobmaml(x, data):
        signs = jnp.array([DELTA, -DELTA], dtype=x.dtype)
        per_s = jax.vmap(inner_loop, (None, None, 0))  # over s, inside
        psi = jax.vmap(per_s, (None, 0, None))(x, data, signs)  # over tasks: (m, 2, n)
        return jnp.mean(lam * (psi[:, 1] - psi[:, 0]) / (2 * DELTA), axis=0)

    fn = {"MAML": maml, "FOMAML": fomaml, "IMAML(cg=5)": imaml, "FOBMAML(symmetric)": fobmaml}
    return jax.jit(fn[estimator])


def _arguments(problem: Problem, estimator: str):
    if estimator not in ESTIMATORS:
        raise ValueError(f"{NAME} does not implement {estimator!r}")
    arrays = problem.arrays()
    keys = ("A", "b", "B", "c") if problem.family == "quadratic" else ("Xs", "Ys", "Xq", "Yq")
    return jnp.asarray(problem.x0), tuple(jnp.asarray(arrays[k]) for k in keys)


def build(problem: Problem, estimator: str) -> Callable[[], jax.Array]:
    x, data = _arguments(problem, estimator)
    fn = _estimator(problem, estimator)
    return lambda: fn(x, data).block_until_ready()


def build_compiled(problem: Problem, estimator: str) -> Callable[[], jax.Array]:
    """As :func:`build`, but compiled ahead of time (``jit(...).lower(...).compile()``), so
    that the first call runs the estimator only. ``fobmaml memory`` measures that call."""
    x, data = _arguments(problem, estimator)
    fn = _estimator(problem, estimator).lower(x, data).compile()
    return lambda: fn(x, data).block_until_ready()


def to_numpy(result: jax.Array) -> np.ndarray:
    return np.asarray(result, dtype=np.float64)


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def settings() -> dict:
    import jaxlib

    return {
        "jax": jax.__version__,
        "jaxlib": jaxlib.__version__,
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "jax_x64": bool(jax.config.jax_enable_x64),
        "XLA_FLAGS": os.environ.get("XLA_FLAGS", ""),
        "jax_threads": "XLA CPU default: one intra-op thread pool over the usable cores "
        f"({_usable_cores()})",
    }
