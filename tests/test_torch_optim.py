"""fobmaml.torch's outer optimizers: the updates of their formulas, with the norm over all
parameters (every tensor of every group), on any gradient.

Each is checked step by step against the formula written here in NumPy on the flattened
parameters, and against the core's optimizer (``fobmaml.SNGDM`` etc.) on the same
sequence of gradients.
"""

from __future__ import annotations

import extras
import numpy as np
import pytest

torch = extras.require("torch")

from torch import nn  # noqa: E402

import fobmaml as fm  # noqa: E402
import fobmaml.torch as fmt  # noqa: E402

F64 = torch.float64
SHAPES = [(3, 4), (4,), (2, 3)]


def params(seed: int = 0) -> list[nn.Parameter]:
    g = torch.Generator().manual_seed(seed)
    return [nn.Parameter(torch.randn(*s, dtype=F64, generator=g)) for s in SHAPES]


def flat(ts) -> np.ndarray:
    return np.concatenate([t.detach().numpy().ravel() for t in ts])


def set_grads(ps, g: np.ndarray) -> None:
    off = 0
    for p in ps:
        p.grad = torch.from_numpy(g[off : off + p.numel()].reshape(p.shape).copy())
        off += p.numel()


def sngdm(x, grads, lr, beta):
    m = np.zeros_like(x)
    for g in grads:
        m = beta * m + (1 - beta) * g
        x = x - lr * m / np.linalg.norm(m)
    return x


def clipped(x, grads, lr, clip):
    for g in grads:
        x = x - lr * min(1.0, clip / np.linalg.norm(g)) * g
    return x


def normalized(x, grads, lr):
    for g in grads:
        x = x - lr * g / np.linalg.norm(g)
    return x


CASES = {
    "SNGDM": (
        lambda ps: fmt.SNGDM(ps, lr=0.05, beta=0.8),
        lambda x, gs: sngdm(x, gs, 0.05, 0.8),
        fm.SNGDM(lr=0.05, beta=0.8),
    ),
    "ClippedGD": (
        lambda ps: fmt.ClippedGD(ps, lr=0.1, clip=2.0),
        lambda x, gs: clipped(x, gs, 0.1, 2.0),
        fm.ClippedGD(lr=0.1, clip=2.0),
    ),
    "NormalizedGD": (
        lambda ps: fmt.NormalizedGD(ps, lr=0.05),
        lambda x, gs: normalized(x, gs, 0.05),
        fm.NormalizedGD(lr=0.05),
    ),
}


@pytest.mark.parametrize("name", list(CASES))
def test_steps_follow_the_formula_with_the_norm_over_all_parameters(name):
    make, formula, core = CASES[name]
    ps = params()
    # Two parameter groups: the norm must still run over every parameter.
    opt = make([{"params": ps[:2]}, {"params": ps[2:]}])
    x0 = flat(ps)
    rng = np.random.default_rng(1)
    # Gradients of norm 0.5 .. 8: ClippedGD both clips and passes through.
    grads = [rng.standard_normal(x0.size) * s for s in (0.1, 2.0, 0.3, 1.5, 0.05)]
    for g in grads:
        set_grads(ps, g)
        opt.step()
    want = formula(x0, grads)
    np.testing.assert_allclose(flat(ps), want, rtol=1e-13, atol=1e-15)
    x, state = x0, core.init(x0)
    for g in grads:
        x, state = core.step(x, g, state)
    np.testing.assert_allclose(flat(ps), x, rtol=1e-13, atol=1e-15)


def test_the_norm_is_global_not_per_tensor():
    a, b = nn.Parameter(torch.zeros(1, dtype=F64)), nn.Parameter(torch.zeros(1, dtype=F64))
    opt = fmt.NormalizedGD([a, b], lr=1.0)
    a.grad, b.grad = torch.tensor([3.0], dtype=F64), torch.tensor([4.0], dtype=F64)
    opt.step()
    assert (a.item(), b.item()) == pytest.approx((-0.6, -0.8), rel=1e-15)


def test_per_group_learning_rates_share_one_norm():
    a, b = nn.Parameter(torch.zeros(1, dtype=F64)), nn.Parameter(torch.zeros(1, dtype=F64))
    opt = fmt.SNGDM([{"params": [a], "lr": 1.0}, {"params": [b], "lr": 2.0}], lr=0.5, beta=0.0)
    a.grad, b.grad = torch.tensor([3.0], dtype=F64), torch.tensor([4.0], dtype=F64)
    opt.step()
    assert (a.item(), b.item()) == pytest.approx((-0.6, -1.6), rel=1e-15)
    assert opt.param_groups[1]["beta"] == 0.0


def test_zero_gradient_takes_no_step_and_none_gradients_are_skipped():
    ps = params()
    before = flat(ps)
    for make, _, _ in CASES.values():
        opt = make(ps)
        set_grads(ps, np.zeros(before.size))
        opt.step()
        np.testing.assert_array_equal(flat(ps), before)
    ps[0].grad = None
    ps[1].grad = torch.ones(4, dtype=F64)
    ps[2].grad = torch.ones(2, 3, dtype=F64)
    opt = fmt.NormalizedGD(ps, lr=1.0)
    opt.step()
    np.testing.assert_array_equal(flat(ps[:1]), before[:12])  # untouched
    np.testing.assert_allclose(flat(ps[1:]), before[12:] - 1 / np.sqrt(10), rtol=1e-14)


def test_the_norm_neither_overflows_nor_underflows():
    for scale in (1e200, 1e-200):
        p = nn.Parameter(torch.zeros(3, dtype=F64))
        opt = fmt.NormalizedGD([p], lr=1.0)
        p.grad = torch.tensor([3.0, 0.0, 4.0], dtype=F64) * scale
        opt.step()
        np.testing.assert_allclose(p.detach().numpy(), [-0.6, 0.0, -0.8], rtol=1e-15)
    assert float(fmt.global_norm([torch.full((1000,), 3e30)])) == pytest.approx(3e30 * 1000**0.5)


@pytest.mark.parametrize("name", list(CASES))
def test_a_non_finite_gradient_raises_and_changes_nothing(name):
    make = CASES[name][0]
    ps = params()
    opt = make(ps)
    set_grads(ps, np.ones(flat(ps).size))
    opt.step()
    before = flat(ps)
    state = {k: {n: t.clone() for n, t in v.items()} for k, v in opt.state.items()}
    ps[1].grad[2] = float("nan")
    with pytest.raises(FloatingPointError, match=rf"{name}: the gradient is not finite"):
        opt.step()
    np.testing.assert_array_equal(flat(ps), before)
    for k, v in opt.state.items():
        for n, t in v.items():
            assert torch.equal(t, state[k][n])


def test_works_with_any_gradient_and_a_closure():
    """Plain loss.backward() gradients, a closure, float32 and state_dict round trips."""
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    X, Y = torch.randn(32, 4), torch.randn(32, 1)
    opt = fmt.SNGDM(model.parameters(), lr=0.01, beta=0.9)

    def closure():
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(X), Y)
        loss.backward()
        return loss

    first = opt.step(closure).item()
    for _ in range(50):
        opt.step(closure)
    assert closure().item() < first
    assert model.weight.dtype == torch.float32
    assert opt.state[model.weight]["momentum_buffer"].dtype == torch.float32
    clone = fmt.SNGDM(nn.Linear(4, 1).parameters(), lr=0.01)
    clone.load_state_dict(opt.state_dict())
    assert clone.param_groups[0]["beta"] == 0.9


def test_hyper_parameters_are_checked():
    ps = params()
    with pytest.raises(ValueError, match=r"`lr` must be > 0 \(got 0.0\)"):
        fmt.SNGDM(ps, lr=0.0)
    with pytest.raises(ValueError, match=r"`beta` must be in \[0, 1\) \(got 1.0\)"):
        fmt.SNGDM(ps, lr=0.1, beta=1.0)
    with pytest.raises(ValueError, match=r"`clip` must be > 0"):
        fmt.ClippedGD(ps, lr=0.1, clip=-1.0)
    with pytest.raises(ValueError, match=r"`lr` must be > 0 \(got -1.0\)"):
        fmt.NormalizedGD([{"params": ps[:1]}, {"params": ps[1:], "lr": -1.0}], lr=0.1)
    with pytest.raises(TypeError, match="`lr` must be a real number"):
        fmt.NormalizedGD(ps, lr="fast")
