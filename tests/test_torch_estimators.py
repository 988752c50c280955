"""fobmaml.torch: the estimators equal the C++ core on MLPs and plain autograd on a CNN.

- Against the core: on ``nn.Sequential(nn.Linear, act, ...)`` networks, whose
  ``parameters_to_vector`` layout is the core's, every estimator (both MAML backward
  passes, every FO-B-MAML scheme and perturbation), with and without momentum, gives the
  core's per-task estimates, mean and K-step meta-loss in float64 to a relative
  difference <= 1e-9; so do ``adapt`` and ``meta_loss``.
- Against autograd: on a small Conv1d network, every estimator equals a reference written
  here with eager ``torch.autograd`` on a hand-written functional CNN (``F.conv1d``,
  ``F.max_pool1d``, ``F.linear``): MAML by ``create_graph=True`` through the K steps,
  Hessian-vector products by double backward. Neither uses ``torch.func``.
- ``backward`` adds the mean meta-gradient to ``.grad`` (twice: exactly twice it);
  float32 agrees with float64 to rounding; ``chunk_size`` does not change the numbers;
  the results live on the parameters' device and dtype (CUDA when available).
"""

from __future__ import annotations

import extras
import numpy as np
import pytest

torch = extras.require("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402
from torch.nn.utils import parameters_to_vector, vector_to_parameters  # noqa: E402

import fobmaml as fm  # noqa: E402
import fobmaml.torch as fmt  # noqa: E402

TOL = 1e-9
F64 = torch.float64

# The CNN below has ReLU and max pooling, on which FO-B-MAML and HF-MAML warn that their finite
# differences cross kinks (tested on its own at the end). Here they are compared with a
# reference that computes the same finite differences, so the warning is expected.
pytestmark = pytest.mark.filterwarnings("ignore::fobmaml.torch.NonSmoothWarning")


def flat(d: dict, lead: int = 0) -> torch.Tensor:
    """A result dict as one tensor (lead leading dims kept), in named_parameters() order."""
    return torch.cat([t.reshape(*t.shape[:lead], -1) for t in d.values()], dim=lead)


def rel(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _estimator_pairs(inner: fm.InnerLoop):
    """(id, core estimator, fobmaml.torch estimator) for every estimator and variant."""
    pairs = [
        ("MAML-autograd", fm.MAML(inner), fmt.MAML(inner)),
        ("MAML-recursion", fm.MAML(inner), fmt.MAML(inner, backward="recursion")),
        ("FOMAML", fm.FOMAML(inner), fmt.FOMAML(inner)),
        ("Reptile", fm.Reptile(inner), fmt.Reptile(inner)),
        ("IMAML", fm.IMAML(inner, cg_steps=4), fmt.IMAML(inner, cg_steps=4)),
        ("HFMAML", fm.HFMAML(inner, eps=1e-5), fmt.HFMAML(inner, eps=1e-5)),
    ]
    for scheme in ("forward", "symmetric"):
        for pert in ("objective", "linear"):
            kw = {"delta": 1e-3, "scheme": scheme, "perturbation": pert}
            pairs.append(
                (f"FOBMAML-{scheme}-{pert}", fm.FOBMAML(inner, **kw), fmt.FOBMAML(inner, **kw))
            )
    return pairs


ESTIMATOR_IDS = [p[0] for p in _estimator_pairs(fm.InnerLoop(lam=1.0))]


# -- the same MLP tasks for the core and for torch ----------------------------------------------
LAYERS = [3, 6, 5, 4]


def mlp_model(layers, activation, x0) -> nn.Module:
    act = nn.Tanh if activation == "tanh" else nn.ReLU
    mods = []
    for j, (a, b) in enumerate(zip(layers[:-1], layers[1:])):
        mods.append(nn.Linear(a, b, dtype=F64))
        if j < len(layers) - 2:
            mods.append(act())
    model = nn.Sequential(*mods)
    vector_to_parameters(torch.from_numpy(x0.copy()), model.parameters())
    return model


@pytest.fixture(scope="module", params=[("mse", "tanh"), ("xent", "relu")], ids=str)
def mlp_case(request):
    loss, activation = request.param
    rng = np.random.default_rng(7 if loss == "mse" else 8)
    m, k, q = 4, 6, 7
    Xs, Xq = rng.standard_normal((m, k, 3)), rng.standard_normal((m, q, 3))
    if loss == "mse":
        Ys, Yq = rng.standard_normal((m, k, 4)), rng.standard_normal((m, q, 4))
    else:
        Ys, Yq = rng.integers(0, 4, (m, k)), rng.integers(0, 4, (m, q))
    tasks = fm.MLPTasks(Xs, Ys, Xq, Yq, layers=LAYERS, activation=activation, loss=loss)
    x0 = fm.mlp.init_params(LAYERS, seed=3)
    batch = tuple(torch.from_numpy(a) for a in (Xs, Ys, Xq, Yq))
    loss_fn = F.mse_loss if loss == "mse" else F.cross_entropy
    return tasks, x0, mlp_model(LAYERS, activation, x0), batch, loss_fn


@pytest.mark.parametrize("beta", [0.0, 0.5], ids=["gd", "momentum"])
@pytest.mark.parametrize("which", ESTIMATOR_IDS)
def test_equals_the_core_on_mlps(mlp_case, which, beta):
    tasks, x0, model, batch, loss_fn = mlp_case
    inner = fm.InnerLoop(steps=4, lr=0.1, lam=1.5, momentum=beta)
    _, core, est = next(p for p in _estimator_pairs(inner) if p[0] == which)
    want_F, want_g = core.value_and_gradient(x0, tasks)
    want_G = core.task_gradients(x0, tasks)

    G = est.task_gradients(model, batch, loss_fn)
    assert list(G) == [n for n, _ in model.named_parameters()]
    for (name, p), t in zip(model.named_parameters(), G.values()):
        assert t.shape == (4, *p.shape) and t.dtype == F64, name
    assert rel(flat(G, 1), want_G) <= TOL
    F_K, g = est.value_and_gradient(model, batch, loss_fn)
    assert rel(flat(g), want_g) <= TOL
    assert abs(float(F_K) - want_F) <= TOL * abs(want_F)


@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_adapt_and_meta_loss_equal_the_core(mlp_case, beta):
    tasks, x0, model, batch, loss_fn = mlp_case
    inner = fm.InnerLoop(steps=5, lr=0.1, lam=0.5, momentum=beta)
    phi = fmt.adapt(model, batch[0], batch[1], inner, loss_fn)
    assert phi["0.weight"].shape == (4, 6, 3)
    assert rel(flat(phi, 1), fm.adapt(x0, tasks, inner)) <= TOL
    want = fm.meta_loss_k(x0, tasks, inner)
    assert abs(float(fmt.meta_loss(model, batch, inner, loss_fn)) - want) <= TOL * want


def test_backward_adds_the_mean_meta_gradient_and_returns_F_K(mlp_case):
    tasks, x0, model, batch, loss_fn = mlp_case
    inner = fm.InnerLoop(steps=4, lr=0.1, lam=1.5)
    est = fmt.FOBMAML(inner, delta=1e-3, scheme="symmetric")
    g = est.meta_gradient(model, batch, loss_fn)
    model.zero_grad(set_to_none=True)
    loss = est.backward(model, batch, loss_fn)
    assert loss.dim() == 0 and not loss.requires_grad
    assert abs(float(loss) - fm.meta_loss_k(x0, tasks, inner)) <= TOL * float(loss)
    for p, gp in zip(model.parameters(), g.values()):
        assert torch.equal(p.grad, gp)
    est.backward(model, batch, loss_fn)  # a second call adds it again
    for p, gp in zip(model.parameters(), g.values()):
        assert torch.equal(p.grad, 2 * gp)
    model.zero_grad(set_to_none=True)
    core = fm.FOBMAML(inner, delta=1e-3, scheme="symmetric").meta_gradient(x0, tasks)
    est.backward(model, batch, loss_fn)
    assert rel(parameters_to_vector([p.grad for p in model.parameters()]), core) <= TOL
    model.zero_grad(set_to_none=True)


def test_chunk_size_gives_the_same_numbers(mlp_case):
    _, _, model, batch, loss_fn = mlp_case
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=1.0, momentum=0.3)
    for make in (fmt.MAML, fmt.FOBMAML, lambda i, **kw: fmt.MAML(i, "recursion", **kw)):
        whole = flat(make(inner).task_gradients(model, batch, loss_fn), 1)
        for chunk in (1, 3):
            got = flat(make(inner, chunk_size=chunk).task_gradients(model, batch, loss_fn), 1)
            torch.testing.assert_close(got, whole, rtol=1e-13, atol=0)


# -- the CNN and its autograd reference ---------------------------------------------------------
def cnn(channels: int = 3, n_out: int = 4) -> nn.Module:
    """Input (1, 40) -> 19 -> 10 -> pooled 5 positions of `channels` -> n_out logits."""
    return nn.Sequential(
        nn.Conv1d(1, channels, 5, stride=2, padding=1),
        nn.ReLU(),
        nn.Conv1d(channels, channels, 3, stride=2, padding=1),
        nn.Tanh(),
        nn.MaxPool1d(2),
        nn.Flatten(),
        nn.Linear(5 * channels, n_out),
    )


def cnn_forward(p: list[torch.Tensor], X: torch.Tensor) -> torch.Tensor:
    """The same network, written with torch.nn.functional on a list of tensors."""
    h = torch.relu(F.conv1d(X, p[0], p[1], stride=2, padding=1))
    h = torch.tanh(F.conv1d(h, p[2], p[3], stride=2, padding=1))
    h = F.max_pool1d(h, 2).flatten(1)
    return F.linear(h, p[4], p[5])


class Ref:
    """The spec's estimators for one task, with eager autograd on lists of tensors."""

    def __init__(self, x, Xs, Ys, Xq, Yq, inner):
        self.x, self.inner = [t.detach() for t in x], inner
        self.Xs, self.Ys, self.Xq, self.Yq = Xs, Ys, Xq, Yq

    def g(self, p):
        return F.cross_entropy(cnn_forward(p, self.Xs), self.Ys)

    def f(self, p):
        return F.cross_entropy(cnn_forward(p, self.Xq), self.Yq)

    @staticmethod
    def grad(fn, p, create_graph=False):
        p = [t if t.requires_grad else t.detach().requires_grad_() for t in p]
        return list(torch.autograd.grad(fn(p), p, create_graph=create_graph))

    def hvp(self, p, v):
        p = [t.detach().requires_grad_() for t in p]
        gr = torch.autograd.grad(self.g(p), p, create_graph=True)
        return [h.detach() for h in torch.autograd.grad(gr, p, v)]

    def loop(self, x, extra=None, trajectory=None, create_graph=False):
        """phi_K; `extra(phi, k)` is added to the support gradient (the perturbations)."""
        lr, lam, beta = self.inner.lr, self.inner.lam, self.inner.momentum
        phi, prev = list(x), list(x)
        for _ in range(self.inner.steps):
            if trajectory is not None:
                trajectory.append([t.detach() for t in phi])
            gr = self.grad(self.g, phi, create_graph)
            if extra is not None:
                gr = [a + b for a, b in zip(gr, extra(phi))]
            new = [
                p - lr * (gi + lam * (p - xi)) + beta * (p - q)
                for p, gi, xi, q in zip(phi, gr, x, prev)
            ]
            prev, phi = phi, new
        return phi

    def maml(self):
        x = [t.clone().requires_grad_() for t in self.x]
        self.f(self.loop(x, create_graph=True)).backward()
        return [t.grad for t in x]

    def fomaml(self):
        return self.grad(self.f, self.loop(self.x))

    def reptile(self):
        K, lr = self.inner.steps, self.inner.lr
        return [(a - b) / (lr * K) for a, b in zip(self.x, self.loop(self.x))]

    def imaml(self, cg_steps):
        lam = self.inner.lam
        phi = [t.detach() for t in self.loop(self.x)]
        b = self.grad(self.f, phi)

        def dot(a, c):
            return sum((s * t).sum() for s, t in zip(a, c))

        u = [torch.zeros_like(t) for t in b]
        r, p = list(b), list(b)
        rs = dot(r, r)
        for _ in range(cg_steps):
            Mp = [s + h / lam for s, h in zip(p, self.hvp(phi, p))]
            a = rs / dot(p, Mp)
            u = [s + a * t for s, t in zip(u, p)]
            r = [s - a * t for s, t in zip(r, Mp)]
            rs_new = dot(r, r)
            p = [s + (rs_new / rs) * t for s, t in zip(r, p)]
            rs = rs_new
        return u

    def hfmaml(self, eps):
        lr, lam, beta, K = self.inner.lr, self.inner.lam, self.inner.momentum, self.inner.steps
        traj = []
        phi = self.loop(self.x, trajectory=traj)
        a_next = self.grad(self.f, phi)
        a_next2 = [torch.zeros_like(t) for t in a_next]
        G = [torch.zeros_like(t) for t in a_next]
        for k in range(K - 1, -1, -1):
            plus = self.grad(self.g, [p + eps * a for p, a in zip(traj[k], a_next)])
            minus = self.grad(self.g, [p - eps * a for p, a in zip(traj[k], a_next)])
            hv = [(s - t) / (2 * eps) for s, t in zip(plus, minus)]
            G = [s + lr * lam * a for s, a in zip(G, a_next)]
            a_cur = [
                (1 + beta - lr * lam) * a - lr * h - beta * a2
                for a, h, a2 in zip(a_next, hv, a_next2)
            ]
            a_next2, a_next = a_next, a_cur
        return [s + a - beta * a1 for s, a, a1 in zip(G, a_next, a_next2)]

    def fobmaml(self, delta, scheme, perturbation):
        lam = self.inner.lam
        phi = self.loop(self.x)
        if perturbation == "objective":

            def pert(s):
                return lambda p: [s * t for t in self.grad(self.f, p)]

        else:
            v = self.grad(self.f, phi)

            def pert(s):
                return lambda p: [s * t for t in v]

        plus = self.loop(self.x, pert(delta))
        if scheme == "forward":
            return [lam * (a - b) / delta for a, b in zip(phi, plus)]
        minus = self.loop(self.x, pert(-delta))
        return [lam * (a - b) / (2 * delta) for a, b in zip(minus, plus)]


REF_CASES = {
    "MAML-autograd": (lambda i: fmt.MAML(i), lambda r: r.maml()),
    "MAML-recursion": (lambda i: fmt.MAML(i, backward="recursion"), lambda r: r.maml()),
    "FOMAML": (fmt.FOMAML, lambda r: r.fomaml()),
    "Reptile": (fmt.Reptile, lambda r: r.reptile()),
    "IMAML": (lambda i: fmt.IMAML(i, cg_steps=3), lambda r: r.imaml(3)),
    "HFMAML": (lambda i: fmt.HFMAML(i, eps=1e-4), lambda r: r.hfmaml(1e-4)),
    **{
        f"FOBMAML-{s}-{p}": (
            lambda i, s=s, p=p: fmt.FOBMAML(i, delta=1e-3, scheme=s, perturbation=p),
            lambda r, s=s, p=p: r.fobmaml(1e-3, s, p),
        )
        for s in ("forward", "symmetric")
        for p in ("objective", "linear")
    },
}


@pytest.fixture(scope="module")
def cnn_case():
    torch.manual_seed(0)
    model = cnn().to(F64)
    m = 3
    Xs, Xq = torch.randn(m, 8, 1, 40, dtype=F64), torch.randn(m, 10, 1, 40, dtype=F64)
    Ys, Yq = torch.randint(0, 4, (m, 8)), torch.randint(0, 4, (m, 10))
    return model, (Xs, Ys, Xq, Yq)


# Momentum on the CNN for the estimators that differentiate through or along the trajectory
# (the others only read phi_K, whose momentum the MLP tests against the core cover).
CNN_CASES = [(w, 0.0) for w in REF_CASES] + [
    (w, 0.4) for w in ("MAML-autograd", "MAML-recursion", "HFMAML", "FOBMAML-symmetric-objective")
]


@pytest.mark.parametrize(("which", "beta"), CNN_CASES, ids=[f"{w}-beta{b:g}" for w, b in CNN_CASES])
def test_equals_plain_autograd_on_a_cnn(cnn_case, which, beta):
    model, batch = cnn_case
    inner = fm.InnerLoop(steps=3, lr=0.2, lam=1.0, momentum=beta)
    make, reference = REF_CASES[which]
    G = flat(make(inner).task_gradients(model, batch, F.cross_entropy), 1)
    x = list(model.parameters())
    want = torch.stack(
        [
            torch.cat([t.reshape(-1) for t in reference(Ref(x, *(b[i] for b in batch), inner))])
            for i in range(batch[0].shape[0])
        ]
    )
    assert rel(G, want) <= TOL, which


# -- dtype and device ---------------------------------------------------------------------------
FLOAT32_CASES = {
    # HF-MAML's and FO-B-MAML's finite differences divide float32 rounding by eps and
    # delta, so they are compared at eps = delta = 1e-2 (the same in both precisions).
    "MAML": (fmt.MAML, 1e-4),
    "MAML-recursion": (lambda i: fmt.MAML(i, backward="recursion"), 1e-4),
    "IMAML": (lambda i: fmt.IMAML(i, cg_steps=3), 1e-4),
    "HFMAML": (lambda i: fmt.HFMAML(i, eps=1e-2), 2e-3),
    "FOBMAML": (lambda i: fmt.FOBMAML(i, delta=1e-2, scheme="symmetric"), 2e-3),
}


@pytest.mark.parametrize("which", list(FLOAT32_CASES))
def test_float32_agrees_with_float64_to_rounding(cnn_case, which):
    model64, batch64 = cnn_case
    model32 = cnn().float()
    model32.load_state_dict(model64.state_dict())
    batch32 = tuple(t.float() if t.is_floating_point() else t for t in batch64)
    inner = fm.InnerLoop(steps=3, lr=0.2, lam=1.0)
    make, tol = FLOAT32_CASES[which]
    F64_, g64 = make(inner).value_and_gradient(model64, batch64, F.cross_entropy)
    F32_, g32 = make(inner).value_and_gradient(model32, batch32, F.cross_entropy)
    assert all(t.dtype == torch.float32 for t in g32.values())
    assert rel(flat(g32), flat(g64)) <= tol
    assert abs(float(F32_) - float(F64_)) <= 1e-5 * abs(float(F64_))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
@pytest.mark.cuda
@pytest.mark.parametrize("which", ["MAML", "MAML-recursion", "FOBMAML", "IMAML"])
def test_cuda_results_stay_on_the_device_and_match_cpu(cnn_case, which):
    model_cpu, batch_cpu = cnn_case
    model = cnn().to(F64).cuda()
    model.load_state_dict(model_cpu.state_dict())
    batch = tuple(t.cuda() for t in batch_cpu)
    make = FLOAT32_CASES[which][0]
    inner = fm.InnerLoop(steps=3, lr=0.2, lam=1.0)
    g = make(inner).meta_gradient(model, batch, F.cross_entropy)
    assert all(t.is_cuda for t in g.values())
    want = make(inner).meta_gradient(model_cpu, batch_cpu, F.cross_entropy)
    assert rel(flat(g).cpu(), flat(want)) <= 1e-9
    model.zero_grad()
    make(inner).backward(model, batch, F.cross_entropy)
    assert all(p.grad.is_cuda for p in model.parameters())


# -- models beyond plain stacks -----------------------------------------------------------------
def test_frozen_parameters_are_neither_adapted_nor_returned():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(3, 5), nn.Tanh(), nn.Linear(5, 2)).double()
    model[0].weight.requires_grad_(False)
    X = torch.randn(2, 6, 3, dtype=F64)
    Y = torch.randn(2, 6, 2, dtype=F64)
    inner = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
    g = fmt.FOMAML(inner).meta_gradient(model, (X, Y, X, Y), F.mse_loss)
    assert list(g) == ["0.bias", "2.weight", "2.bias"]
    phi = fmt.adapt(model, X, Y, inner, F.mse_loss)
    # Reference: the same computation with the frozen weight as a constant of the loss.
    W0 = model[0].weight.detach()

    def loss(p, Xi, Yi):
        h = torch.tanh(F.linear(Xi, W0, p[0]))
        return F.mse_loss(F.linear(h, p[1], p[2]), Yi)

    ref = Ref.__new__(Ref)
    for i in range(2):
        ref.x, ref.inner = [t.detach() for t in model.parameters() if t.requires_grad], inner
        ref.g = lambda p, i=i: loss(p, X[i], Y[i])
        ref.f = ref.g
        want = ref.loop(ref.x)
        got = [phi[n][i] for n in phi]
        assert (
            rel(torch.cat([t.reshape(-1) for t in got]), torch.cat([t.reshape(-1) for t in want]))
            <= TOL
        )


def test_batch_statistics_and_eval_mode_normalization_work():
    """BatchNorm with track_running_stats=False (batch statistics, per task) or in eval mode
    (running statistics) runs, and leaves the buffers unchanged."""
    torch.manual_seed(2)
    X = torch.randn(3, 8, 4, dtype=F64)
    Y = torch.randint(0, 2, (3, 8))
    inner = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
    batch_stats = nn.Sequential(
        nn.Linear(4, 6), nn.BatchNorm1d(6, track_running_stats=False), nn.Linear(6, 2)
    ).double()
    g = fmt.FOBMAML(inner, scheme="symmetric").meta_gradient(
        batch_stats, (X, Y, X, Y), F.cross_entropy
    )
    assert all(torch.isfinite(t).all() for t in g.values())
    running = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Linear(6, 2)).double().eval()
    before = {n: b.clone() for n, b in running.named_buffers()}
    fmt.MAML(inner).meta_gradient(running, (X, Y, X, Y), F.cross_entropy)
    for n, b in running.named_buffers():
        assert torch.equal(b, before[n]), n


def test_finite_difference_estimators_warn_on_non_smooth_layers(cnn_case):
    model, batch = cnn_case
    inner = fm.InnerLoop(steps=1, lr=0.1, lam=1.0)
    for est in (fmt.FOBMAML(inner), fmt.HFMAML(inner)):
        with pytest.warns(fmt.NonSmoothWarning, match=r"`model.1` is ReLU, whose gradient jumps"):
            est.meta_gradient(model, batch, F.cross_entropy)
    smooth = nn.Sequential(
        nn.Conv1d(1, 3, 5, stride=2, padding=1), nn.SiLU(), nn.AvgPool1d(2), nn.Flatten(),
        nn.Linear(27, 4),
    ).double()  # fmt: skip
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fmt.FOBMAML(inner).meta_gradient(smooth, batch, F.cross_entropy)
        fmt.MAML(inner).meta_gradient(model, batch, F.cross_entropy)  # HVPs: no warning
