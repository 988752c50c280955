"""FO-B-MAML and HF-MAML warn on networks whose gradient jumps; the other estimators do not.

The suite ignores NonSmoothWarning (pyproject.toml) because many tests run the
finite-difference estimators on ReLU networks on purpose; here each case turns it back on.
"""

import warnings

import extras
import numpy as np
import pytest

import fobmaml as fm
from fobmaml.experiments.mnist1d_fewshot import cnn

INNER = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
FINITE_DIFFERENCE = [fm.FOBMAML(INNER), fm.FOBMAML(INNER, scheme="symmetric"), fm.HFMAML(INNER)]
EXACT_PRODUCTS = [fm.MAML(INNER), fm.FOMAML(INNER), fm.Reptile(INNER), fm.IMAML(INNER, 2)]


def _cnn_tasks(activation, pool):
    net = cnn(3, 4, activation, pool)
    rng = np.random.default_rng(0)
    X, y = rng.standard_normal((2, 4, 1, 40)), rng.integers(0, 4, (2, 4))
    return fm.NetTasks(X, y, net=net, loss="xent"), net.init_params(seed=0)


def _mlp_tasks(activation):
    rng = np.random.default_rng(1)
    layers = [3, 5, 2]
    X, Y = rng.standard_normal((2, 4, 3)), rng.standard_normal((2, 4, 2))
    tasks = fm.MLPTasks(X, Y, layers=layers, activation=activation)
    return tasks, fm.mlp.init_params(layers, seed=0)


def _warnings(est, tasks, x):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est.meta_gradient(x, tasks)
    return [w for w in caught if issubclass(w.category, fm.NonSmoothWarning)]


@pytest.mark.parametrize("est", FINITE_DIFFERENCE, ids=lambda e: e.name)
@pytest.mark.parametrize(
    ("make", "layer"),
    [
        (lambda: _cnn_tasks("relu", "max"), "layer 1 of the network is ReLU"),
        (lambda: _cnn_tasks("tanh", "max"), "layer 4 of the network is MaxPool1d"),
        (lambda: _mlp_tasks("relu"), "layer 1 of the network is ReLU"),
    ],
    ids=["cnn-relu", "cnn-maxpool", "mlp-relu"],
)
def test_finite_differences_warn_on_kinks_at_the_callers_line(est, make, layer):
    tasks, x = make()
    caught = _warnings(est, tasks, x)
    assert len(caught) == 1
    message = str(caught[0].message)
    assert (
        message.startswith(f"{est.name} differentiates by finite differences") and layer in message
    )
    assert caught[0].filename == __file__  # the user's line, not the package's


@pytest.mark.parametrize("est", FINITE_DIFFERENCE + EXACT_PRODUCTS, ids=lambda e: e.name)
def test_no_warning_on_smooth_networks_or_quadratics(est):
    cases = [_cnn_tasks("tanh", "avg"), _mlp_tasks("tanh")]
    cases.append((fm.datasets.quadratic_tasks(2, 3, seed=0), np.zeros(3)))
    for tasks, x in cases:
        assert _warnings(est, tasks, x) == []


@pytest.mark.parametrize("est", EXACT_PRODUCTS, ids=lambda e: e.name)
def test_exact_hessian_vector_products_do_not_warn_on_kinks(est):
    tasks, x = _cnn_tasks("relu", "max")
    assert _warnings(est, tasks, x) == []


def test_meta_train_warns_at_its_caller():
    tasks, x = _cnn_tasks("relu", "max")
    with pytest.warns(fm.NonSmoothWarning, match="FOBMAML differentiates") as caught:
        fm.meta_train(x, tasks, fm.FOBMAML(INNER), fm.GD(0.1), 2, progress=False)
    assert {w.filename for w in caught} == {__file__}


def test_the_torch_front_end_shares_the_class():
    extras.require("torch")
    import fobmaml.torch as fmt

    assert fmt.NonSmoothWarning is fm.NonSmoothWarning
