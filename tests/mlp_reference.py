"""An independent NumPy reference for the MLP task family and its estimators.

Written from ``docs/estimators.md`` ("Task families", "The estimators") alone, one task at a
time, for readability rather than speed. It does not import ``fobmaml``: the tests
compare the library against this module, never the other way round.

The network (``layers = [d_0, d_1, ..., d_L]``):

    a_0 = x,   z_l = W_l a_{l-1} + b_l,   a_l = act(z_l) (l < L),   ŷ = z_L,

with ``act`` = relu or tanh and the flat parameter vector holding, for each layer,
``W_l`` of shape ``(d_l, d_{l-1})`` in row-major order and then ``b_l``: the order of
``torch.nn.utils.parameters_to_vector`` for ``nn.Sequential(nn.Linear, act, ...)``.

Losses over the k samples of a task: ``mse`` = mean over all k·d_L output elements of
``(ŷ − y)²``; ``xent`` = mean over samples of ``−log softmax(ŷ)[label]``.

How each derivative is obtained (all independent of the library's R-operator):

- the gradient: hand-written backpropagation (``gradient``);
- Hessian-vector products: the *complex step* of that backpropagation,
  ``H v = Im ∇ℓ(φ + i h v) / h`` with ``h = 1e-30``. Every operation in the forward and
  backward pass is complex-analytic (relu is written ``z · [Re z > 0]``, so relu'' = 0
  exactly as the spec prescribes), so this has no subtractive cancellation and is
  exact to rounding, unlike a finite difference;
- dense Hessians: column by column from those HVPs.

The inner loop and the estimators are those of ``tests/reference.py`` (the quadratic
family's reference), with the task functions supplied by ``MLPTask``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import reference

# ----------------------------------------------------------------------------------------
# Parameters
# ----------------------------------------------------------------------------------------


def num_params(layers) -> int:
    """``Σ_l d_l (d_{l-1} + 1)``."""
    return sum(layers[i + 1] * (layers[i] + 1) for i in range(len(layers) - 1))


def unflatten(params, layers) -> list[tuple[np.ndarray, np.ndarray]]:
    """``[(W_1, b_1), ..., (W_L, b_L)]`` from the flat vector (PyTorch's order)."""
    params = np.asarray(params)
    assert params.shape == (num_params(layers),), (params.shape, layers)
    out, off = [], 0
    for d_in, d_out in zip(layers[:-1], layers[1:]):
        W = params[off : off + d_out * d_in].reshape(d_out, d_in)  # row-major
        off += d_out * d_in
        b = params[off : off + d_out]
        off += d_out
        out.append((W, b))
    return out


def flatten(weights) -> np.ndarray:
    """The inverse of ``unflatten``: ``[W_1 (row-major), b_1, W_2, b_2, ...]``."""
    return np.concatenate([np.concatenate([W.ravel(), b.ravel()]) for W, b in weights])


# ----------------------------------------------------------------------------------------
# Forward pass, losses, backpropagation (all complex-safe, for the complex step)
# ----------------------------------------------------------------------------------------


def act(z, activation: str):
    if activation == "relu":
        return z * (z.real > 0)  # analytic away from the kink; its second derivative is 0
    if activation == "tanh":
        return np.tanh(z)
    raise ValueError(activation)


def act_prime(z, activation: str):
    if activation == "relu":
        return (z.real > 0).astype(float)
    if activation == "tanh":
        return 1.0 - np.tanh(z) ** 2
    raise ValueError(activation)


def forward(params, X, layers, activation):
    """Pre-activations ``[z_1, ..., z_L]`` and activations ``[a_0 = X, a_1, ..., a_{L-1}]``.

    Samples are rows: ``X`` is (k, d_0) and ``z_l`` is (k, d_l).
    """
    weights = unflatten(params, layers)
    a = [np.asarray(X)]
    zs = []
    for layer, (W, b) in enumerate(weights):
        z = a[-1] @ W.T + b
        zs.append(z)
        if layer + 1 < len(weights):
            a.append(act(z, activation))
    return zs, a


def predict(params, X, layers, activation):
    """The network's outputs ``ŷ`` (logits for classification), shape (k, d_L)."""
    return forward(params, X, layers, activation)[0][-1]


def log_softmax(Z):
    """Row-wise ``log softmax``, shifted by the (real part of the) row maximum."""
    shift = Z.real.max(axis=1, keepdims=True)
    E = np.exp(Z - shift)
    return Z - shift - np.log(E.sum(axis=1, keepdims=True))


def loss_of_outputs(Yhat, Y, loss: str):
    """The loss of outputs (k, d_L) against targets: (k, d_L) floats or (k,) labels."""
    k = Yhat.shape[0]
    if loss == "mse":
        R = Yhat - Y
        return (R * R).sum() / R.size  # no abs(): stays complex-analytic
    if loss == "xent":
        return -log_softmax(Yhat)[np.arange(k), Y].sum() / k
    raise ValueError(loss)


def output_gradient(Yhat, Y, loss: str):
    """``∂loss/∂ŷ``, shape (k, d_L)."""
    k = Yhat.shape[0]
    if loss == "mse":
        return 2.0 * (Yhat - Y) / Yhat.size
    if loss == "xent":
        P = np.exp(log_softmax(Yhat))
        P[np.arange(k), Y] -= 1.0
        return P / k
    raise ValueError(loss)


@dataclass(frozen=True)
class Net:
    """The family's fixed choices: layer sizes, hidden activation, loss."""

    layers: tuple
    activation: str = "tanh"
    loss: str = "mse"

    @property
    def n(self) -> int:
        return num_params(self.layers)

    def predict(self, params, X):
        return predict(params, X, self.layers, self.activation)

    def loss_value(self, params, X, Y):
        return loss_of_outputs(self.predict(params, X), Y, self.loss)

    def gradient(self, params, X, Y):
        """Backpropagation. With ``δ_L = ∂loss/∂z_L``:

        ∂loss/∂W_l = δ_lᵀ a_{l-1},  ∂loss/∂b_l = Σ_samples δ_l,
        δ_{l-1} = (δ_l W_l) ⊙ act'(z_{l-1}).
        """
        layers, activation = self.layers, self.activation
        weights = unflatten(params, layers)
        zs, a = forward(params, X, layers, activation)
        delta = output_gradient(zs[-1], Y, self.loss)
        grads = [None] * len(weights)
        for j in range(len(weights) - 1, -1, -1):  # layer j + 1 in the notation above
            W, _ = weights[j]
            grads[j] = (delta.T @ a[j], delta.sum(axis=0))
            if j > 0:
                delta = (delta @ W) * act_prime(zs[j - 1], activation)
        return flatten(grads)

    def hvp(self, params, X, Y, v, h: float = 1e-30):
        """``∇²loss(φ) v`` by the complex step of ``gradient``: ``Im ∇loss(φ + ihv) / h``."""
        params = np.asarray(params, dtype=float)
        v = np.asarray(v, dtype=float)
        return self.gradient(params + 1j * h * v, X, Y).imag / h

    def hessian(self, params, X, Y):
        """The dense Hessian, column by column from ``hvp``."""
        eye = np.eye(self.n)
        H = np.stack([self.hvp(params, X, Y, e) for e in eye], axis=1)
        return 0.5 * (H + H.T)


# ----------------------------------------------------------------------------------------
# Random data and closed forms of the no-hidden-layer case
# ----------------------------------------------------------------------------------------


def random_data(rng: np.random.Generator, net: Net, m: int, k: int):
    """Inputs (m, k, d_in) ~ N(0, 1) and targets: N(0, 1) floats (mse) or labels (xent)."""
    X = rng.standard_normal((m, k, net.layers[0]))
    if net.loss == "mse":
        Y = rng.standard_normal((m, k, net.layers[-1]))
    else:
        Y = rng.integers(0, net.layers[-1], size=(m, k))
    return X, Y


def init_bounds(layers) -> np.ndarray:
    """Per parameter, the bound ``1/sqrt(d_{l-1})`` of PyTorch's ``nn.Linear`` default."""
    return np.concatenate(
        [
            np.full(d_out * (d_in + 1), 1.0 / np.sqrt(d_in))
            for d_in, d_out in zip(layers, layers[1:])
        ]
    )


def linear_regression_design(X):
    """``[X, 1]``: with ``layers = [d, 1]`` the prediction is ``[X, 1] φ``, φ = (w, b)."""
    return np.hstack([X, np.ones((X.shape[0], 1))])


def linear_regression_gradient(params, X, y):
    """``∇ (1/k)||Xw + b − y||²  = (2/k) [X, 1]ᵀ (Xw + b − y)`` for ``layers = [d, 1]``."""
    Xa = linear_regression_design(X)
    return 2.0 * Xa.T @ (Xa @ params - y.ravel()) / X.shape[0]


def linear_regression_hessian(X):
    """``(2/k) [X, 1]ᵀ [X, 1]``, constant in φ."""
    Xa = linear_regression_design(X)
    return 2.0 * Xa.T @ Xa / X.shape[0]


def softmax_regression_gradient(params, X, labels, c: int):
    """``layers = [d, c]``, xent: ``∂/∂W = (P − Y)ᵀ X / k``, ``∂/∂b = Σ (P − Y) / k``."""
    d = X.shape[1]
    W, b = params[: c * d].reshape(c, d), params[c * d :]
    Z = X @ W.T + b
    P = np.exp(Z - Z.max(axis=1, keepdims=True))
    P /= P.sum(axis=1, keepdims=True)
    P[np.arange(X.shape[0]), labels] -= 1.0
    return np.concatenate([(P.T @ X).ravel(), P.sum(axis=0)]) / X.shape[0]


# ----------------------------------------------------------------------------------------
# One task: support loss g and query loss f
# ----------------------------------------------------------------------------------------


class MLPTask:
    """Task i: ``g(φ) = ℓ(net_φ(X_s), Y_s)``, ``f(φ) = ℓ(net_φ(X_q), Y_q)`` (default f = g)."""

    def __init__(self, net: Net, Xs, Ys, Xq=None, Yq=None):
        self.net = net
        self.Xs, self.Ys = Xs, Ys
        self.Xq, self.Yq = (Xs, Ys) if Xq is None else (Xq, Yq)
        self.n = net.n
        self.solutions = {}  # inner_solution's cache: (x bytes, Inner) -> φ*

    def g(self, phi):
        return self.net.loss_value(phi, self.Xs, self.Ys)

    def grad_g(self, phi):
        return self.net.gradient(phi, self.Xs, self.Ys)

    def hvp_g(self, phi, v):
        return self.net.hvp(phi, self.Xs, self.Ys, v)

    def hess_g(self, phi):
        return self.net.hessian(phi, self.Xs, self.Ys)

    def f(self, phi):
        return self.net.loss_value(phi, self.Xq, self.Yq)

    def grad_f(self, phi):
        return self.net.gradient(phi, self.Xq, self.Yq)

    def hvp_f(self, phi, v):
        return self.net.hvp(phi, self.Xq, self.Yq, v)

    def query_accuracy(self, phi):
        """Fraction of query samples whose largest output is the label (xent only)."""
        return float(np.mean(np.argmax(self.net.predict(phi, self.Xq), axis=1) == self.Yq))


def task_list(net: Net, Xs, Ys, Xq=None, Yq=None) -> list[MLPTask]:
    """Split batched arrays (m, k, ...) into a list of ``MLPTask``."""
    return [
        MLPTask(net, Xs[i], Ys[i], None if Xq is None else Xq[i], None if Yq is None else Yq[i])
        for i in range(len(Xs))
    ]


# ----------------------------------------------------------------------------------------
# The inner loop
# ----------------------------------------------------------------------------------------


# The inner loop and the estimators are the quadratic reference's (``reference.py``): they
# use a task only through its f, ∇g, ∇f and ∇²g·v, which MLPTask supplies.
Inner = reference.Inner
inner_loop = reference.inner_loop
adapt = reference.adapt
meta_loss_k = reference.meta_loss_k
fomaml = reference.fomaml
reptile = reference.reptile
maml = reference.maml
hfmaml = reference.hfmaml
conjugate_gradient = reference.conjugate_gradient
imaml = reference.imaml
fobmaml = reference.fobmaml


class NotConvex(ValueError):
    """The reference found ``∇²g + λI`` not positive definite at its inner solution."""


def inner_solution(task: MLPTask, x, inner: Inner, max_steps: int = 100_000):
    """``φ*(x)``, a minimizer of ``h(φ; x) = g(φ) + (λ/2)||φ − x||²`` to machine precision.

    Heavy-ball GD from x (the inner loop's own α and β, so that it lands in the same
    basin as the library's iterative solve) until ``||∇h|| ≤ 1e-6 ||∇h(x)||``, then
    Newton steps with the dense Hessian ``∇²g + λI`` until they reach rounding level.
    Raises ``NotConvex`` if that Hessian is not positive definite there.
    """
    key = (x.tobytes(), inner)
    if key in task.solutions:
        return task.solutions[key]
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum

    def grad_h(phi):
        return task.grad_g(phi) + lam * (phi - x)

    prev, cur = x.copy(), x.copy()
    start = np.linalg.norm(grad_h(x))
    for _ in range(max_steps):
        g = grad_h(cur)
        if np.linalg.norm(g) <= 1e-6 * start:
            break
        prev, cur = cur, cur - alpha * g + beta * (cur - prev)
    else:
        raise RuntimeError("reference inner solve did not converge")
    for _ in range(10):
        H = task.hess_g(cur) + lam * np.eye(task.n)
        step = np.linalg.solve(H, grad_h(cur))
        cur = cur - step
        if np.linalg.norm(step) <= 1e-15 * (1.0 + np.linalg.norm(cur)):
            break
    smallest = np.linalg.eigvalsh(task.hess_g(cur) + lam * np.eye(task.n))[0]
    if smallest <= 0.0:
        raise NotConvex(f"∇²g + λI has eigenvalue {smallest:.3g} at φ*")
    task.solutions[key] = cur
    return cur


def exact(task: MLPTask, x, inner: Inner):
    """``λ (∇²g(φ*) + λI)^{-1} ∇f(φ*)`` by a dense solve with the dense Hessian."""
    lam = inner.lam
    phi_star = inner_solution(task, x, inner)
    H = task.hess_g(phi_star) + lam * np.eye(task.n)
    return lam * np.linalg.solve(H, task.grad_f(phi_star))


def exact_meta_loss(tasks: list[MLPTask], x, inner: Inner) -> float:
    """``F(x) = (1/m) Σ_i f_i(φ*_i(x))``."""
    return float(np.mean([t.f(inner_solution(t, x, inner)) for t in tasks]))


# ----------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------


per_task = reference.per_task
rel_err = reference.rel_err
seed_of = reference.seed_of


def central_differences(fun, x, h):
    """``(fun(x + h e_j) − fun(x − h e_j)) / (2h)`` for every j; ``fun`` may return arrays
    (the result then has the coordinate j as its last axis)."""
    cols = []
    for j in range(x.size):
        e = np.zeros_like(x)
        e[j] = h
        cols.append((np.asarray(fun(x + e)) - np.asarray(fun(x - e))) / (2 * h))
    return np.stack(cols, axis=-1)
