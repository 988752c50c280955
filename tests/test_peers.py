"""The PyTorch and JAX peers (``fobmaml.peers``) compute fobmaml's meta-gradients.

For each installed peer and each estimator it implements (MAML, FO-MAML, iMAML with 5 CG
steps, symmetric FO-B-MAML with the objective perturbation), on small instances of the
benchmark families, with and without momentum (beta = 0.5; the MNIST-1D MLP and the other
network without only, to keep JAX's compilations few): the mean meta-gradient equals
fobmaml's to 1e-8 relative, in float64. The networks are the MNIST-1D CNN (Conv1d with
padding and stride, relu, max pooling) with few channels, and a network of the other
layers (a "same"-padded Conv1d with an even kernel and no bias, tanh, average pooling with
a stride below its kernel, mse), which the peers build from ``net.get_config()`` alone.
Peers whose packages are missing are skipped.
"""

import extras
import numpy as np
import pytest

import fobmaml as fm
from fobmaml import peers
from fobmaml.peers import problems as P
from fobmaml.peers._network import layer_ops, num_params

TOL = 1e-8

# torch.func's forward-mode AD (iMAML's HVP) loads its decompositions with
# torch.jit.script, which torch 2.13 itself reports as deprecated, once per process.
# torch.nn.Conv1d warns that an even kernel with padding="same" may copy its input.
pytestmark = [
    pytest.mark.filterwarnings(r"ignore:.*torch\.jit\.script.*:DeprecationWarning"),
    pytest.mark.filterwarnings(r"ignore:Using padding='same' with even kernel:UserWarning"),
]


def _other_net(beta):
    """Every layer kind the CNN does not use, on random regression tasks (mse)."""
    nn = fm.nn
    net = nn.Sequential(
        nn.Conv1d(2, 3, kernel_size=4, padding="same", bias=False),
        nn.Tanh(),
        nn.AvgPool1d(3, stride=2),
        nn.Conv1d(3, 2, kernel_size=2, stride=2),
        nn.ReLU(),
        nn.Flatten(),
        nn.Linear(8, 2),
    )
    rng = np.random.default_rng(1)
    X = rng.standard_normal((3, 4, 2, 19))
    Y = rng.standard_normal((3, 4, 2))
    Xq = rng.standard_normal((3, 5, 2, 19))
    Yq = rng.standard_normal((3, 5, 2))
    tasks = fm.NetTasks(X, Y, Xq, Yq, net=net, loss="mse")
    inner = fm.InnerLoop(steps=3, lr=0.1, lam=2.0, momentum=beta)
    return P.network("other-net", tasks, inner)


PROBLEMS = {
    "sinusoid": lambda beta: P.sinusoid(3, meta_batch=3, layers=(1, 8, 8, 1), momentum=beta),
    "mnist1d": lambda beta: P.mnist1d(
        3, n_way=3, k_shot=2, q_query=3, meta_batch=2, hidden=(8,), num_samples=500, momentum=beta
    ),
    "quadratic": lambda beta: P.quadratic(12, m=3, steps=5, momentum=beta),
    "cnn": lambda beta: P.mnist1d_cnn(
        3, channels=4, k_shot=2, q_query=2, meta_batch=2, num_samples=500, momentum=beta
    ),
    "other-net": _other_net,
}
ONE_BETA = ("mnist1d", "other-net")  # without momentum only
NETS = ("cnn", "other-net")  # slow: JAX compiles a convolutional network for each case


def _family(prob):
    return "net" if prob in NETS else "quadratic" if prob == "quadratic" else "mlp"


CASES = [
    (peer, est, prob, beta)
    for peer in peers.IMPLEMENTATIONS
    for est in P.ESTIMATORS
    for prob in PROBLEMS
    for beta in (0.0, 0.5)
    if (peer not in ("torch-higher", "fobmaml-torch-rec") or est == "MAML")
    and (prob not in ONE_BETA or beta == 0.0)
    and _family(prob) in peers.families(peer)
]


@pytest.fixture(scope="module")
def problem_cache():
    return {}


def _peer(name):
    for pkg in peers.requirements(name):
        extras.require(pkg)
    return peers.load(name)


@pytest.mark.parametrize(
    ("peer", "estimator", "family", "beta"),
    [pytest.param(*case, marks=pytest.mark.slow) if case[2] in NETS else case for case in CASES],
    ids=[f"{p}-{e}-{f}-beta{b:g}" for p, e, f, b in CASES],
)
def test_peer_matches_fobmaml(problem_cache, peer, estimator, family, beta):
    mod = _peer(peer)
    assert estimator in mod.ESTIMATORS
    assert peers.runs(peer, mod, _family(family), estimator)
    key = (family, beta)
    if key not in problem_cache:
        problem_cache[key] = PROBLEMS[family](beta)
    problem = problem_cache[key]
    ref = P.build_fobmaml(problem, estimator)()
    got = mod.to_numpy(mod.build(problem, estimator)())
    assert got.shape == ref.shape == problem.x0.shape
    assert got.dtype == np.float64
    err = P.relative_error(got, ref)
    assert err <= TOL, f"{peer} {estimator} on {family} (beta={beta}): relative error {err:.3e}"


def test_higher_implements_only_maml():
    mod = _peer("torch-higher")
    assert mod.ESTIMATORS == ("MAML",)
    with pytest.raises(ValueError, match="only MAML"):
        mod.build(PROBLEMS["quadratic"](0.0), "FOMAML")


def test_fobmaml_torch_runs_only_the_network_problems():
    assert peers.families("fobmaml-torch") == ("mlp", "net")
    mod = _peer("fobmaml-torch")
    assert not peers.runs("fobmaml-torch", mod, "quadratic", "MAML")
    with pytest.raises(ValueError, match="network problems only"):
        mod.build(PROBLEMS["quadratic"](0.0), "FOMAML")
    rec = _peer("fobmaml-torch-rec")
    assert rec.ESTIMATORS == ("MAML",)


def test_missing_reports_uninstalled_packages():
    for name in peers.IMPLEMENTATIONS:
        assert set(peers.missing(name)) <= set(peers.requirements(name))
    with pytest.raises(ValueError, match="unknown peer"):
        peers.load("learn2learn")


def test_problems_share_fobmaml_arrays():
    """The peers read exactly the arrays fobmaml's kernels read."""
    problem = PROBLEMS["sinusoid"](0.0)
    arrays = problem.arrays()
    assert set(arrays) == {"Xs", "Ys", "Xq", "Yq"}
    np.testing.assert_array_equal(arrays["Xq"], problem.tasks.X_query)
    assert all(a.dtype == np.float64 and a.flags.c_contiguous for a in arrays.values())
    mn = PROBLEMS["mnist1d"](0.0).arrays()
    assert mn["Ys"].dtype == np.int64 and mn["Ys"].ndim == 2
    q = PROBLEMS["quadratic"](0.0)
    np.testing.assert_array_equal(q.arrays()["B"], q.tasks.A)  # query loss = support loss


def test_the_cnn_problem_is_the_speed_targets_setting():
    problem = P.benchmark_problems()["mnist1d-cnn-C64-K10"]()
    assert problem.family == "net" and problem.num_tasks == 16
    t = problem.tasks
    assert t.X_support.shape == (16, 25, 1, 40) and t.X_query.shape == (16, 25, 1, 40)
    assert t.loss == "xent" and t.Y_support.shape == (16, 25)
    # 5-way 5-shot, 5 queries per class: every label 5 times in each set.
    for Y in (t.Y_support, t.Y_query):
        assert all(np.array_equal(np.bincount(y, minlength=5), [5] * 5) for y in Y)
    assert problem.inner.steps == 10
    # Conv1d(1, 64, 5) + Conv1d(64, 64, 3) + Linear(64 * 5, 5), weights and biases.
    assert problem.dim == (64 * 5 + 64) + (64 * 64 * 3 + 64) + (5 * 320 + 5)
    np.testing.assert_array_equal(problem.x0, problem.net.init_params(seed=0))


def test_the_peers_layout_of_a_network_is_torchs():
    """The peers' reading of a config gives parameter_to_vector's slices (fobmaml's order)."""
    torch = extras.require("torch")
    problem = PROBLEMS["other-net"](0.0)
    ops = layer_ops(problem.config)
    assert num_params(ops) == problem.dim
    tnet = problem.net.to_torch()
    mods = [m for m in tnet if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d))]
    off = 0
    for op, mod in zip([op for op in ops if op.has_params], mods):
        assert op.shape == tuple(mod.weight.shape)
        assert op.weight == (off, off + mod.weight.numel())
        off = op.weight[1]
        if mod.bias is None:
            assert op.bias is None
        else:
            assert op.bias == (off, off + mod.bias.numel())
            off = op.bias[1]
    assert ops[0].pads == (1, 2)  # "same" with kernel 4: the odd zero on the right, as torch


def test_a_bad_config_names_the_entry():
    with pytest.raises(ValueError, match=r"`config\[1\]`"):
        layer_ops([{"layer": "Linear", "in_features": 2, "out_features": 1}, {"layer": "GRU"}])
    with pytest.raises(TypeError, match="`tasks` must be a fobmaml.NetTasks"):
        P.network("q", PROBLEMS["quadratic"](0.0).tasks, fm.InnerLoop())
