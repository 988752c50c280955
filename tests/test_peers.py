"""The PyTorch and JAX peers of bench/compare.py compute fobmaml's meta-gradients.

For each installed peer and each estimator it implements (MAML, FO-MAML, iMAML with 5 CG
steps, symmetric FO-B-MAML with the objective perturbation), on small instances of the
three benchmark families, with and without momentum (beta = 0.5; MNIST-1D without only,
to keep JAX's compilations few): the mean meta-gradient equals
fobmaml's to 1e-8 relative, in float64. Peers whose packages are missing are skipped.
"""

import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import peers  # noqa: E402
from peers import problems as P  # noqa: E402

TOL = 1e-8

# torch.func's forward-mode AD (iMAML's HVP) loads its decompositions with
# torch.jit.script, which torch 2.13 itself reports as deprecated, once per process.
pytestmark = pytest.mark.filterwarnings(r"ignore:.*torch\.jit\.script.*:DeprecationWarning")

PROBLEMS = {
    "sinusoid": lambda beta: P.sinusoid(3, meta_batch=3, layers=(1, 8, 8, 1), momentum=beta),
    "mnist1d": lambda beta: P.mnist1d(
        3, n_way=3, k_shot=2, q_query=3, meta_batch=2, hidden=(8,), num_samples=500, momentum=beta
    ),
    "quadratic": lambda beta: P.quadratic(12, m=3, steps=5, momentum=beta),
}
CASES = [
    (peer, est, prob, beta)
    for peer in peers.IMPLEMENTATIONS
    for est in P.ESTIMATORS
    for prob in PROBLEMS
    for beta in (0.0, 0.5)
    if (peer not in ("torch-higher", "fobmaml-torch-rec") or est == "MAML")
    and (prob != "mnist1d" or beta == 0.0)
    and ("mlp" if prob != "quadratic" else "quadratic") in peers.families(peer)
]


@pytest.fixture(scope="module")
def problem_cache():
    return {}


def _peer(name):
    for pkg in peers.requirements(name):
        pytest.importorskip(pkg)
    return peers.load(name)


@pytest.mark.parametrize(
    ("peer", "estimator", "family", "beta"),
    CASES,
    ids=[f"{p}-{e}-{f}-beta{b:g}" for p, e, f, b in CASES],
)
def test_peer_matches_fobmaml(problem_cache, peer, estimator, family, beta):
    mod = _peer(peer)
    assert estimator in mod.ESTIMATORS
    assert peers.runs(peer, mod, "quadratic" if family == "quadratic" else "mlp", estimator)
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


def test_fobmaml_torch_runs_only_the_mlp_problems():
    assert peers.families("fobmaml-torch") == ("mlp",)
    mod = _peer("fobmaml-torch")
    assert not peers.runs("fobmaml-torch", mod, "quadratic", "MAML")
    with pytest.raises(ValueError, match="MLP problems only"):
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
