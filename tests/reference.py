"""An independent NumPy reference for the estimators of ``docs/estimators.md``.

Written from the specification alone, one task at a time, for readability rather
than speed. It does not import ``fobmaml``: the tests compare the library against
this module, never the other way round.

Notation (``docs/estimators.md``): task ``i`` has a support loss ``g`` and a query loss
``f``; the inner problem is ``h(φ; x) = g(φ) + (λ/2)||φ − x||²``; the inner loop is
heavy-ball gradient descent

    φ_{-1} = φ_0 = x,
    φ_{k+1} = φ_k − α (∇g(φ_k) + λ(φ_k − x)) + β (φ_k − φ_{k−1}),   k = 0..K−1.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Callable

import numpy as np

# ----------------------------------------------------------------------------------------
# The quadratic family
# ----------------------------------------------------------------------------------------


class Quadratic:
    """One quadratic task: ``g(φ) = ½ φᵀAφ − bᵀφ``, ``f(φ) = ½ φᵀBφ − cᵀφ``."""

    def __init__(self, A, b, B=None, c=None):
        self.A = np.array(A, dtype=float)
        self.b = np.array(b, dtype=float)
        self.B = self.A if B is None else np.array(B, dtype=float)
        self.c = self.b if c is None else np.array(c, dtype=float)
        self.n = self.b.shape[0]

    def g(self, phi):
        return 0.5 * phi @ self.A @ phi - self.b @ phi

    def grad_g(self, phi):
        return self.A @ phi - self.b

    def hess_g(self, phi):
        return self.A

    def hvp_g(self, phi, v):
        return self.A @ v

    def f(self, phi):
        return 0.5 * phi @ self.B @ phi - self.c @ phi

    def grad_f(self, phi):
        return self.B @ phi - self.c


def task_list(A, b, B=None, c=None) -> list[Quadratic]:
    """Split batched arrays (m, n, n) / (m, n) into a list of ``Quadratic`` tasks."""
    m = len(A)
    return [
        Quadratic(A[i], b[i], None if B is None else B[i], None if c is None else c[i])
        for i in range(m)
    ]


def random_spd(rng: np.random.Generator, n: int, lo: float = 0.1, hi: float = 1.0):
    """A random symmetric positive definite matrix with eigenvalues uniform in [lo, hi]."""
    Q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    eig = rng.uniform(lo, hi, n)
    M = (Q * eig) @ Q.T
    return 0.5 * (M + M.T)


def random_quadratic(
    rng: np.random.Generator,
    m: int,
    n: int,
    separate_query: bool = False,
    lo: float = 0.1,
    hi: float = 1.0,
):
    """Random arrays ``(A, b, B, c)`` of ``m`` tasks (``B, c`` are None without a query)."""
    A = np.stack([random_spd(rng, n, lo, hi) for _ in range(m)])
    b = rng.standard_normal((m, n))
    if not separate_query:
        return A, b, None, None
    B = np.stack([random_spd(rng, n, lo, hi) for _ in range(m)])
    c = rng.standard_normal((m, n))
    return A, b, B, c


# ----------------------------------------------------------------------------------------
# The inner loop
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Inner:
    """The inner-loop hyper-parameters: K, α, λ, β."""

    steps: int
    lr: float
    lam: float
    momentum: float = 0.0


def inner_loop(
    task: Quadratic,
    x: np.ndarray,
    inner: Inner,
    extra_grad: Callable[[np.ndarray], np.ndarray] | None = None,
) -> list[np.ndarray]:
    """The trajectory ``[φ_0, φ_1, ..., φ_K]``.

    ``extra_grad(φ)`` is added to ``∇h`` (the gradient of a perturbation term).
    """
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum
    prev = x.copy()  # φ_{-1}
    cur = x.copy()  # φ_0
    traj = [cur]
    for _ in range(inner.steps):
        grad = task.grad_g(cur) + lam * (cur - x)
        if extra_grad is not None:
            grad = grad + extra_grad(cur)
        nxt = cur - alpha * grad + beta * (cur - prev)
        prev, cur = cur, nxt
        traj.append(cur)
    return traj


def adapt(task: Quadratic, x: np.ndarray, inner: Inner) -> np.ndarray:
    """``φ_K``."""
    return inner_loop(task, x, inner)[-1]


def meta_loss_k(tasks: list[Quadratic], x: np.ndarray, inner: Inner) -> float:
    """``F_K(x) = (1/m) Σ_i f_i(φ_{i,K}(x))`` by running the inner loop."""
    return float(np.mean([t.f(adapt(t, x, inner)) for t in tasks]))


# ----------------------------------------------------------------------------------------
# Estimators, one task at a time
# ----------------------------------------------------------------------------------------


def fomaml(task: Quadratic, x, inner: Inner):
    """``∇f(φ_K)``."""
    return task.grad_f(adapt(task, x, inner))


def reptile(task: Quadratic, x, inner: Inner):
    """``(x − φ_K) / (α K)``."""
    return (x - adapt(task, x, inner)) / (inner.lr * inner.steps)


def reverse_recursion(task: Quadratic, x, inner: Inner, hvp):
    """The MAML reverse recursion, exactly as written in ``docs/estimators.md``.

    a_K = ∇f(φ_K);  a_{K+1} = 0;  G = 0
    for k = K−1 down to 0:
        G  += α λ a_{k+1}
        a_k = (1 + β − αλ) a_{k+1} − α H_k a_{k+1} − β a_{k+2}
    return G + a_0 − β a_1
    """
    alpha, lam, beta, K = inner.lr, inner.lam, inner.momentum, inner.steps
    traj = inner_loop(task, x, inner)
    a = [None] * (K + 2)
    a[K] = task.grad_f(traj[K])
    a[K + 1] = np.zeros_like(x)
    G = np.zeros_like(x)
    for k in range(K - 1, -1, -1):
        G = G + alpha * lam * a[k + 1]
        a[k] = (
            (1 + beta - alpha * lam) * a[k + 1] - alpha * hvp(traj[k], a[k + 1]) - beta * a[k + 2]
        )
    return G + a[0] - beta * a[1]


def maml(task: Quadratic, x, inner: Inner):
    """MAML by the reverse recursion with exact Hessian-vector products."""
    return reverse_recursion(task, x, inner, task.hvp_g)


def maml_forward(task: Quadratic, x, inner: Inner):
    """MAML by forward-mode propagation of the dense Jacobian ``J_k = dφ_k/dx``.

    Differentiating the inner-loop update in ``x``:

        J_{-1} = J_0 = I,
        J_{k+1} = J_k − α (∇²g(φ_k) J_k + λ(J_k − I)) + β (J_k − J_{k−1}),

    and the gradient of ``f(φ_K(x))`` is ``J_Kᵀ ∇f(φ_K)``.
    """
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum
    eye = np.eye(x.shape[0])
    phi_prev, phi = x.copy(), x.copy()
    J_prev, J = eye.copy(), eye.copy()
    for _ in range(inner.steps):
        H = task.hess_g(phi)
        J_next = J - alpha * (H @ J + lam * (J - eye)) + beta * (J - J_prev)
        phi_next = phi - alpha * (task.grad_g(phi) + lam * (phi - x)) + beta * (phi - phi_prev)
        J_prev, J = J, J_next
        phi_prev, phi = phi, phi_next
    return J.T @ task.grad_f(phi)


def _companion_power(task: Quadratic, inner: Inner):
    """For quadratics: the top rows of ``T^K`` folded, ``E = (T^K)_{11} + (T^K)_{12}``.

    With ``H = A + λI`` and ``φ* = H^{-1}(b + λx)``, the errors ``e_k = φ_k − φ*`` obey
    ``[e_{k+1}; e_k] = T [e_k; e_{k−1}]``, ``T = [[(1+β)I − αH, −βI], [I, 0]]`` and
    ``e_{-1} = e_0 = x − φ*``, so ``φ_K = φ* + E (x − φ*)``.
    """
    n = task.n
    alpha, lam, beta = inner.lr, inner.lam, inner.momentum
    H = task.A + lam * np.eye(n)
    T = np.block(
        [[(1 + beta) * np.eye(n) - alpha * H, -beta * np.eye(n)], [np.eye(n), np.zeros((n, n))]]
    )
    P = np.linalg.matrix_power(T, inner.steps)
    return P[:n, :n] + P[:n, n:], H


def adapt_closed_form(task: Quadratic, x, inner: Inner):
    """``φ_K`` of a quadratic task in closed form (needs ``A + λI`` invertible)."""
    E, H = _companion_power(task, inner)
    phi_star = np.linalg.solve(H, task.b + inner.lam * x)
    return phi_star + E @ (x - phi_star)


def maml_closed_form(task: Quadratic, x, inner: Inner):
    """MAML for a quadratic task in closed form: ``(dφ_K/dx)ᵀ ∇f(φ_K)`` with
    ``dφ_K/dx = λH^{-1} + E (I − λH^{-1})`` (needs ``A + λI`` invertible)."""
    E, H = _companion_power(task, inner)
    D = inner.lam * np.linalg.inv(H)
    J = D + E @ (np.eye(task.n) - D)
    return J.T @ task.grad_f(adapt_closed_form(task, x, inner))


def meta_loss_k_closed_form(tasks: list[Quadratic], x, inner: Inner) -> float:
    """``F_K(x)`` of quadratic tasks in closed form."""
    return float(np.mean([t.f(adapt_closed_form(t, x, inner)) for t in tasks]))


def hfmaml(task: Quadratic, x, inner: Inner, eps: float):
    """The MAML recursion with ``∇²g(φ)v ≈ (∇g(φ + εv) − ∇g(φ − εv)) / (2ε)``."""

    def fd_hvp(phi, v):
        return (task.grad_g(phi + eps * v) - task.grad_g(phi - eps * v)) / (2 * eps)

    return reverse_recursion(task, x, inner, fd_hvp)


def conjugate_gradient(matvec, rhs, iters: int):
    """``iters`` iterations of plain CG from ``u = 0``; stops early on a zero residual or
    a zero curvature (where the recurrence is undefined).

    The one CG of the references: ``mlp_reference`` and the fuzz tests use it too.
    """
    u = np.zeros_like(rhs)
    r = rhs.copy()
    p = r.copy()
    rr = r @ r
    for _ in range(iters):
        if rr == 0.0:
            break
        Mp = matvec(p)
        curv = p @ Mp
        if curv == 0.0:
            break
        step = rr / curv
        u = u + step * p
        r = r - step * Mp
        rr_new = r @ r
        p = r + (rr_new / rr) * p
        rr = rr_new
    return u


def imaml(task: Quadratic, x, inner: Inner, cg_steps: int):
    """``cg_steps`` of CG from ``u = 0`` on ``(I + ∇²g(φ_K)/λ) u = ∇f(φ_K)``."""
    phi = adapt(task, x, inner)
    lam = inner.lam
    return conjugate_gradient(lambda v: v + task.hvp_g(phi, v) / lam, task.grad_f(phi), cg_steps)


def fobmaml(task: Quadratic, x, inner: Inner, delta: float, scheme: str, perturbation: str):
    """FO-B-MAML.

    ``ψ^s_K`` is the inner loop on ``h(ψ; x) + s f(ψ)`` ("objective") or
    ``h(ψ; x) + s ⟨v, ψ⟩`` with ``v = ∇f(φ_K)`` fixed ("linear").
    forward: ``λ(φ_K − ψ^{+δ}_K)/δ``;  symmetric: ``λ(ψ^{−δ}_K − ψ^{+δ}_K)/(2δ)``.
    """
    lam = inner.lam
    phi = adapt(task, x, inner)
    if perturbation == "objective":

        def perturbed(s):
            return inner_loop(task, x, inner, lambda psi: s * task.grad_f(psi))[-1]

    elif perturbation == "linear":
        v = task.grad_f(phi)

        def perturbed(s):
            return inner_loop(task, x, inner, lambda psi: s * v)[-1]

    else:
        raise ValueError(perturbation)
    if scheme == "forward":
        return lam * (phi - perturbed(delta)) / delta
    if scheme == "symmetric":
        return lam * (perturbed(-delta) - perturbed(delta)) / (2 * delta)
    raise ValueError(scheme)


def inner_solution(task: Quadratic, x, lam: float):
    """``φ*(x) = argmin g(φ) + (λ/2)||φ − x||² = (A + λI)^{-1}(b + λx)`` (dense solve)."""
    return np.linalg.solve(task.A + lam * np.eye(task.n), task.b + lam * x)


def exact(task: Quadratic, x, lam: float):
    """``λ (∇²g(φ*) + λI)^{-1} ∇f(φ*)`` by a dense solve."""
    phi_star = inner_solution(task, x, lam)
    H = task.hess_g(phi_star) + lam * np.eye(task.n)
    return lam * np.linalg.solve(H, task.grad_f(phi_star))


def exact_meta_loss(tasks: list[Quadratic], x, lam: float) -> float:
    """``F(x) = (1/m) Σ_i f_i(φ*_i(x))``."""
    return float(np.mean([t.f(inner_solution(t, x, lam)) for t in tasks]))


def per_task(fn, tasks: list[Quadratic], x, *args, **kwargs) -> np.ndarray:
    """Stack ``fn(task, x, ...)`` over tasks: shape (m, n)."""
    return np.stack([fn(t, x, *args, **kwargs) for t in tasks])


def rel_err(actual, desired) -> float:
    """The largest row-wise relative error ``||actual − desired|| / ||desired||``.

    For a vector this is the plain relative error; for an (m, n) array the worst task.
    """
    actual = np.atleast_2d(np.asarray(actual, dtype=float))
    desired = np.atleast_2d(np.asarray(desired, dtype=float))
    assert actual.shape == desired.shape, (actual.shape, desired.shape)
    num = np.linalg.norm(actual - desired, axis=-1)
    den = np.linalg.norm(desired, axis=-1)
    return float(np.max(num / den))


def seed_of(*parts: object) -> int:
    """A stable seed from a test's parameters (Python's hash() is salted per process)."""
    return zlib.crc32(repr(parts).encode())
