"""fobmaml.torch: bad input raises ValueError or TypeError naming the problem; a diverging
task raises FloatingPointError naming the task; models that mutate buffers or draw random
numbers inside vmap get an error that names the fix."""

from __future__ import annotations

import extras
import pytest

torch = extras.require("torch")

import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

import fobmaml as fm  # noqa: E402
import fobmaml.torch as fmt  # noqa: E402

F64 = torch.float64
INNER = fm.InnerLoop(steps=3, lr=0.1, lam=1.0)


@pytest.fixture
def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(3, 4), nn.Tanh(), nn.Linear(4, 2)).double()


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(3, 5, 3, dtype=F64, generator=g)
    Y = torch.randn(3, 5, 2, dtype=F64, generator=g)
    return X, Y, X + 0.1, Y - 0.1


ESTIMATORS = [
    fmt.MAML(INNER),
    fmt.MAML(INNER, backward="recursion"),
    fmt.FOMAML(INNER),
    fmt.Reptile(INNER),
    fmt.IMAML(INNER),
    fmt.HFMAML(INNER),
    fmt.FOBMAML(INNER, scheme="symmetric"),
]


# -- the batch ----------------------------------------------------------------------------------
@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_a_batch_that_is_not_four_tensors(est, model, batch):
    with pytest.raises(ValueError, match=r"`batch` must hold 4 tensors .*got 3"):
        est.meta_gradient(model, batch[:3], F.mse_loss)
    with pytest.raises(TypeError, match=r"`batch` must be a tuple of 4 tensors"):
        est.meta_gradient(model, batch[0], F.mse_loss)
    with pytest.raises(TypeError, match=r"`Y_query` must be a torch.Tensor \(got ndarray\)"):
        est.backward(model, (*batch[:3], batch[3].numpy()), F.mse_loss)


def test_mismatched_task_dimensions(model, batch):
    X, Y, Xq, Yq = batch
    with pytest.raises(ValueError, match=r"`X_support` holds 3 tasks but `X_query` holds 2"):
        fmt.FOBMAML(INNER).meta_gradient(model, (X, Y, Xq[:2], Yq[:2]), F.mse_loss)
    with pytest.raises(ValueError, match=r"`Y_support` must have a leading task dimension"):
        fmt.FOMAML(INNER).meta_gradient(
            model, (X, torch.tensor(1.0, dtype=F64), Xq, Yq), F.mse_loss
        )
    with pytest.raises(ValueError, match="`X_support` must have a leading task dimension"):
        fmt.adapt(model, X[:0], Y[:0], INNER, F.mse_loss)


def test_wrong_dtype_device_or_values_in_the_batch(model, batch):
    X, Y, Xq, Yq = batch
    with pytest.raises(TypeError, match=r"`X_support` has dtype torch.float32 but the model"):
        fmt.FOMAML(INNER).meta_gradient(model, (X.float(), Y, Xq, Yq), F.mse_loss)
    with pytest.raises(ValueError, match=r"`Y_query` is on meta but the model's parameters are"):
        fmt.FOMAML(INNER).meta_gradient(model, (X, Y, Xq, Yq.to("meta")), F.mse_loss)
    bad = Xq.clone()
    bad[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="`X_query` must contain only finite values"):
        fmt.FOMAML(INNER).meta_gradient(model, (X, Y, bad, Yq), F.mse_loss)


# -- the model, the loss, the estimator ---------------------------------------------------------
def test_a_model_without_floating_parameters(batch):
    with pytest.raises(ValueError, match="`model` has no trainable parameters"):
        fmt.FOMAML(INNER).meta_gradient(nn.Tanh(), batch, F.mse_loss)
    frozen = nn.Linear(3, 2).double().requires_grad_(False)
    with pytest.raises(ValueError, match="`model` has no trainable parameters"):
        fmt.FOBMAML(INNER).backward(frozen, batch, F.mse_loss)
    with pytest.raises(TypeError, match="`model` must be a torch.nn.Module"):
        fmt.FOMAML(INNER).meta_gradient(lambda x: x, batch, F.mse_loss)


def test_mixed_or_non_finite_parameters(model, batch):
    model[2].to(torch.float32)
    with pytest.raises(TypeError, match="must share one dtype: '0.weight' is torch.float64"):
        fmt.FOMAML(INNER).meta_gradient(model, batch, F.mse_loss)
    model[2].to(F64)
    with torch.no_grad():
        model[2].bias[0] = float("inf")
    with pytest.raises(ValueError, match="`model` parameter '2.bias' contains NaN or Inf"):
        fmt.FOMAML(INNER).meta_gradient(model, batch, F.mse_loss)


@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_a_loss_fn_that_does_not_return_a_scalar(est, model, batch):
    def per_sample(out, y):
        return F.mse_loss(out, y, reduction="none").mean(-1)

    with pytest.raises(ValueError, match=r"must return a scalar .*got a tensor of shape \(5,\)"):
        est.meta_gradient(model, batch, per_sample)
    with pytest.raises(TypeError, match="`loss_fn` must be a callable"):
        est.meta_gradient(model, batch, "mse")


def test_estimator_parameters():
    for cls in (fmt.FOBMAML, fmt.IMAML):
        with pytest.raises(ValueError, match=rf"`lam` must be > 0 for {cls.__name__} \(got 0.0\)"):
            cls(fm.InnerLoop(steps=3, lr=0.1, lam=0.0))
    with pytest.raises(ValueError, match="`backward` must be one of 'autograd', 'recursion'"):
        fmt.MAML(INNER, backward="reverse")
    with pytest.raises(ValueError, match="`scheme` must be one of"):
        fmt.FOBMAML(INNER, scheme="central")
    with pytest.raises(ValueError, match="`delta` must be > 0"):
        fmt.FOBMAML(INNER, delta=0.0)
    with pytest.raises(ValueError, match="`chunk_size` must be >= 1"):
        fmt.FOMAML(INNER, chunk_size=0)
    with pytest.raises(TypeError, match="`inner` must be a fobmaml.InnerLoop"):
        fmt.FOMAML({"steps": 3})
    with pytest.raises(AttributeError, match="immutable"):
        fmt.FOMAML(INNER).inner = INNER
    assert repr(fmt.MAML(INNER, backward="recursion", chunk_size=2)) == (
        f"MAML({INNER!r}, backward='recursion', chunk_size=2)"
    )


# -- divergence and non-finite results ----------------------------------------------------------
@pytest.mark.parametrize("est", ESTIMATORS, ids=repr)
def test_a_diverging_task_is_named(est, batch):
    model = nn.Linear(3, 2).double()
    X, Y, Xq, Yq = batch
    X = X.clone()
    X[1] *= 1e3  # task 1's support loss has curvature ~1e6: a step of 0.1 blows up
    with pytest.raises(FloatingPointError, match=r"diverged at task 1, step [23] of the"):
        est.meta_gradient(model, (X, Y, Xq, Yq), F.mse_loss)
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_a_non_finite_meta_gradient_names_the_task(model, batch):
    X, Y, Xq, Yq = batch
    Yq = Yq.clone()
    Yq[2] = 0.0

    def loss_fn(out, y):  # the query loss of task 2 has an infinite slope
        return F.mse_loss(out, y) * torch.log(y.abs().amax())

    model.zero_grad(set_to_none=True)
    with pytest.raises(FloatingPointError, match="meta-gradient of task 2 is not finite"):
        fmt.FOMAML(INNER).backward(model, (X, Y, Xq, Yq), loss_fn)
    assert all(p.grad is None for p in model.parameters())  # nothing was added
    with pytest.raises(FloatingPointError, match="task 2"):
        fmt.adapt(model, Xq, Yq, INNER, loss_fn)


# -- buffers and randomness inside vmap ---------------------------------------------------------
def test_batchnorm_in_training_mode_names_the_fix(batch):
    X, _, Xq, _ = batch
    Y = torch.zeros(3, 5, dtype=torch.int64)
    model = nn.Sequential(nn.Linear(3, 4), nn.BatchNorm1d(4), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"`model.1` \(BatchNorm1d\) .*track_running_stats=False"):
        fmt.FOBMAML(INNER).meta_gradient(model, (X, Y, Xq, Y), F.cross_entropy)


class Counter(nn.Module):
    """Counts its calls in a buffer: a mutation vmap allows, but that would change the model."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("calls", torch.zeros((), dtype=torch.int64))

    def forward(self, x):
        self.calls += 1
        return self.lin(x)


class RunningMean(nn.Module):
    """Keeps a running mean of its inputs: a batched in-place update, which vmap rejects."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(3, 2)
        self.register_buffer("mean", torch.zeros(3))

    def forward(self, x):
        self.mean.mul_(0.9).add_(0.1 * x.mean(0))
        return self.lin(x)


@pytest.mark.parametrize("module", [Counter, RunningMean])
def test_a_model_that_mutates_its_buffers_names_the_fix(module, batch):
    model = module().double()
    before = {n: b.clone() for n, b in model.named_buffers()}
    with pytest.raises(ValueError, match=r"buffer .*track_running_stats=False .*model.eval\(\)"):
        fmt.FOMAML(INNER).meta_gradient(model, batch, F.mse_loss)
    if module is RunningMean:  # rejected before any change
        assert all(torch.equal(b, before[n]) for n, b in model.named_buffers())


def test_dropout_in_training_mode_names_the_fix(batch):
    model = nn.Sequential(nn.Linear(3, 4), nn.Dropout(0.5), nn.Linear(4, 2)).double()
    with pytest.raises(ValueError, match=r"random operation .*model.eval\(\)"):
        fmt.FOBMAML(INNER).meta_gradient(model, batch, F.mse_loss)
    model.eval()
    g = fmt.FOBMAML(INNER).meta_gradient(model, batch, F.mse_loss)
    assert all(torch.isfinite(t).all() for t in g.values())
