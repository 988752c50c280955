"""Task samplers: the sinusoid benchmark and MNIST-1D few-shot episodes."""

from __future__ import annotations

import json
import random
import time

import numpy as np
import pytest

import fobmaml as fm
from fobmaml.datasets import mnist1d as mnist1d_module

SMOKE_INNER = fm.InnerLoop(steps=2, lr=0.1, lam=1.0)
RNG = np.random.default_rng(0)  # for argument checks that fail before drawing

# ----------------------------------------------------------------------------------------
# Sinusoid regression
# ----------------------------------------------------------------------------------------


def test_sinusoid_batch_shapes_and_model():
    sampler = fm.datasets.sinusoid(7, 5, 3)
    assert isinstance(sampler, fm.datasets.SinusoidSampler)
    tasks = sampler(np.random.default_rng(0))
    assert isinstance(tasks, fm.MLPTasks)
    assert tasks.num_tasks == 7 and tasks.separate_query
    assert tasks.layers == [1, 40, 40, 1] and tasks.activation == "relu" and tasks.loss == "mse"
    assert tasks.dim == fm.mlp.num_params([1, 40, 40, 1])
    assert tasks.X_support.shape == tasks.Y_support.shape == (7, 5, 1)
    assert tasks.X_query.shape == tasks.Y_query.shape == (7, 3, 1)
    for arr in (tasks.X_support, tasks.Y_support, tasks.X_query, tasks.Y_query):
        assert arr.dtype == np.float64


def test_sinusoid_values_lie_in_their_ranges_and_follow_the_sine_exactly():
    sampler = fm.datasets.sinusoid(
        50,
        8,
        9,
        layers=[1, 10, 1],
        activation="tanh",
        amplitude=(1.0, 2.0),
        phase=(-0.5, 0.25),
        x_range=(2.0, 3.0),
    )
    tasks, a, p = sampler.sample(np.random.default_rng(1))
    assert a.shape == p.shape == (50,)
    assert np.all((1.0 <= a) & (a <= 2.0)) and np.all((-0.5 <= p) & (p <= 0.25))
    for X, Y in ((tasks.X_support, tasks.Y_support), (tasks.X_query, tasks.Y_query)):
        assert np.all((2.0 <= X) & (X <= 3.0))
        np.testing.assert_array_equal(Y, a[:, None, None] * np.sin(X - p[:, None, None]))
    assert tasks.layers == [1, 10, 1] and tasks.activation == "tanh"


def test_sinusoid_default_distributions_are_the_papers():
    sampler = fm.datasets.sinusoid(4000, 1, 1)
    tasks, a, p = sampler.sample(np.random.default_rng(2))
    X = np.concatenate([tasks.X_support.ravel(), tasks.X_query.ravel()])
    for v, lo, hi in ((a, 0.1, 5.0), (p, 0.0, np.pi), (X, -5.0, 5.0)):
        assert lo <= v.min() and v.max() <= hi
        # Uniform: mean and standard deviation within a few standard errors.
        width = hi - lo
        assert abs(v.mean() - (lo + hi) / 2) < 5 * width / np.sqrt(12 * v.size)
        assert abs(v.std() - width / np.sqrt(12)) < 0.02 * width


def test_sinusoid_support_and_query_are_independent_draws_of_the_same_sine():
    tasks, a, p = fm.datasets.sinusoid(20, 10, 10).sample(np.random.default_rng(3))
    for i in range(20):
        assert not np.isin(tasks.X_query[i], tasks.X_support[i]).any()
    # Same sine: the query targets use the same amplitude and phase as the support.
    np.testing.assert_array_equal(
        tasks.Y_query, a[:, None, None] * np.sin(tasks.X_query - p[:, None, None])
    )


def test_sinusoid_is_reproducible_from_the_generator_only():
    sampler = fm.datasets.sinusoid(6, 4, 5)
    t1, a1, p1 = sampler.sample(np.random.default_rng(11))
    t2, a2, p2 = sampler.sample(np.random.default_rng(11))
    t3 = sampler(np.random.default_rng(11))  # __call__ draws the same batch as sample
    for t in (t2, t3):
        for name in ("X_support", "Y_support", "X_query", "Y_query"):
            np.testing.assert_array_equal(getattr(t, name), getattr(t1, name))
    np.testing.assert_array_equal(a1, a2)
    np.testing.assert_array_equal(p1, p2)
    t4, a4, p4 = sampler.sample(np.random.default_rng(12))
    assert not np.array_equal(a4, a1) and not np.array_equal(p4, p1)
    assert not np.array_equal(t4.X_support, t1.X_support)
    # Successive batches from one generator differ.
    rng = np.random.default_rng(11)
    assert not np.array_equal(sampler(rng).X_support, sampler(rng).X_support)


def test_sinusoid_tasks_from_given_sines():
    sampler = fm.datasets.sinusoid(5, 6, 4)
    a, p = np.array([0.0, 7.0, -1.0]), np.array([10.0, 0.0, 1.0])  # outside the ranges: fine
    tasks = sampler.tasks_from(a, p, np.random.default_rng(0))
    assert tasks.num_tasks == 3
    assert tasks.X_support.shape == (3, 6, 1) and tasks.X_query.shape == (3, 4, 1)
    np.testing.assert_array_equal(
        tasks.Y_support, a[:, None, None] * np.sin(tasks.X_support - p[:, None, None])
    )
    one = sampler.tasks_from(2.0, 0.5, np.random.default_rng(0))
    assert one.num_tasks == 1
    np.testing.assert_array_equal(one.Y_query, 2.0 * np.sin(one.X_query - 0.5))


def test_sinusoid_params_repr_and_equality():
    sampler = fm.datasets.sinusoid(25, 5, 15, activation="tanh", amplitude=(0.5, 2))
    params = sampler.get_params()
    assert params == {
        "name": "sinusoid",
        "meta_batch": 25,
        "k_support": 5,
        "k_query": 15,
        "layers": [1, 40, 40, 1],
        "activation": "tanh",
        "amplitude": [0.5, 2.0],
        "phase": [0.0, np.pi],
        "x_range": [-5.0, 5.0],
    }
    assert json.loads(json.dumps(params)) == params
    kwargs = {k: v for k, v in params.items() if k != "name"}
    assert fm.datasets.sinusoid(**kwargs) == sampler
    assert fm.datasets.sinusoid(24, 5, 15) != sampler
    assert repr(sampler) == (
        "SinusoidSampler(meta_batch=25, k_support=5, k_query=15, layers=[1, 40, 40, 1], "
        "activation='tanh', amplitude=(0.5, 2.0), phase=(0.0, 3.141592653589793), "
        "x_range=(-5.0, 5.0))"
    )


def test_sinusoid_batches_work_with_the_estimators_and_meta_train():
    sampler = fm.datasets.sinusoid(4, 5, 5)
    x0 = fm.mlp.init_params(sampler.layers)
    est = fm.FOBMAML(SMOKE_INNER)
    g = est.meta_gradient(x0, sampler(np.random.default_rng(0)))
    assert g.shape == x0.shape and np.isfinite(g).all() and np.any(g != 0)
    res = fm.meta_train(x0, sampler, est, fm.Adam(1e-3), 2, seed=0, progress=False)
    assert np.isfinite(res.x).all()


SINUSOID_BAD = [
    ({"meta_batch": 0}, ValueError, "`meta_batch` must be >= 1"),
    ({"meta_batch": 2.0}, TypeError, "`meta_batch` must be an integer"),
    ({"k_support": 0}, ValueError, "`k_support` must be >= 1"),
    ({"k_query": -1}, ValueError, "`k_query` must be >= 1"),
    ({"k_query": True}, TypeError, "`k_query` must be an integer"),
    (
        {"layers": [2, 40, 1]},
        ValueError,
        "`layers` must start with d_in = 1 and end with d_out = 1",
    ),
    (
        {"layers": [1, 40, 3]},
        ValueError,
        "`layers` must start with d_in = 1 and end with d_out = 1",
    ),
    ({"layers": [1]}, ValueError, "`layers` must list at least"),
    ({"layers": [1, 0, 1]}, ValueError, r"`layers\[1\]` must be >= 1"),
    ({"layers": "1-40-1"}, TypeError, "`layers` must be a sequence"),
    ({"activation": "sigmoid"}, ValueError, "`activation` must be one of"),
    ({"amplitude": (5.0, 0.1)}, ValueError, "`amplitude` must be \\(low, high\\) with low < high"),
    ({"amplitude": (-1.0, 1.0)}, ValueError, "`amplitude` must have low >= 0"),
    ({"amplitude": (1.0,)}, ValueError, "`amplitude` must be a pair"),
    ({"amplitude": 3.0}, TypeError, "`amplitude` must be a pair"),
    ({"amplitude": (0.0, np.inf)}, ValueError, r"`amplitude\[1\]` must be finite"),
    ({"phase": (1.0, 1.0)}, ValueError, "`phase` must be \\(low, high\\) with low < high"),
    ({"phase": ("a", "b")}, TypeError, r"`phase\[0\]` must be a real number"),
    ({"x_range": (5.0, -5.0)}, ValueError, "`x_range` must be \\(low, high\\) with low < high"),
    ({"x_range": (np.nan, 1.0)}, ValueError, r"`x_range\[0\]` must be finite"),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), SINUSOID_BAD)
def test_sinusoid_rejects_bad_arguments(kwargs, exc, match):
    args = {"meta_batch": 4, **kwargs}
    with pytest.raises(exc, match=match):
        fm.datasets.sinusoid(**args)


@pytest.mark.parametrize(
    ("call", "exc", "match"),
    [
        (lambda s: s(0), TypeError, "`rng` must be a numpy.random.Generator"),
        (lambda s: s.sample(np.random.RandomState(0)), TypeError, "`rng` must be a numpy"),
        (lambda s: s.tasks_from([1.0], [0.0], 3), TypeError, "`rng` must be a numpy"),
        (lambda s: s.tasks_from([1.0, 2.0], [0.0], RNG), ValueError, "`phases` must have shape"),
        (lambda s: s.tasks_from([], [], RNG), ValueError, "`amplitudes` must hold at least one"),
        (lambda s: s.tasks_from([np.nan], [0.0], RNG), ValueError, "`amplitudes` must contain"),
        (lambda s: s.tasks_from([[1.0]], [0.0], RNG), ValueError, "`amplitudes` must be a 1-D"),
        (lambda s: s.tasks_from([1.0], ["a"], RNG), TypeError, "`phases` must be a real-valued"),
    ],
)
def test_sinusoid_sampling_rejects_bad_arguments(call, exc, match):
    with pytest.raises(exc, match=match):
        call(fm.datasets.sinusoid(2))


# ----------------------------------------------------------------------------------------
# MNIST-1D few-shot episodes
# ----------------------------------------------------------------------------------------

N_SAMPLES = 2000  # generated once per test session (a few seconds), then cached


@pytest.fixture(scope="session")
def data():
    return mnist1d_module._generate(N_SAMPLES, 0)


@pytest.fixture(scope="session")
def origin(data):
    """Each sample's row bytes -> (split, original class): the ground truth to look up."""
    table = {}
    for split, X, y in (("train", data.x, data.y), ("test", data.x_test, data.y_test)):
        for row, c in zip(X, y):
            table[row.tobytes()] = (split, int(c))
    return table


def fewshot(n_way=5, k_shot=2, q_query=3, split="train", **kwargs):
    kwargs.setdefault("num_samples", N_SAMPLES)
    return fm.datasets.mnist1d_fewshot(n_way, k_shot, q_query, split, **kwargs)


def test_generated_data_match_mnist1d(data):
    assert data.x.shape == (1600, 40) and data.x_test.shape == (400, 40)
    assert data.y.dtype == data.y_test.dtype == np.int64 and data.x.dtype == np.float64
    assert set(np.unique(data.y)) == set(np.unique(data.y_test)) == set(range(10))
    assert all(not a.flags.writeable for a in data)


def test_generated_data_are_cached_and_shared(data):
    start = time.perf_counter()
    a, b = fewshot(split="train"), fewshot(split="test", meta_batch=3)
    assert time.perf_counter() - start < 1.0  # no regeneration (that takes seconds)
    assert mnist1d_module._generate(N_SAMPLES, 0) is data
    assert a.X is data.x and a.y is data.y and b.X is data.x_test and b.y is data.y_test
    with pytest.raises(ValueError, match="read-only"):
        a.X[0, 0] = 1.0


def test_generation_leaves_the_global_generators_alone():
    # mnist1d's make_dataset seeds the legacy global generators; ours puts them back.
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    expected = (np.random.rand(), random.random())  # noqa: NPY002
    np.random.seed(123)  # noqa: NPY002
    random.seed(123)
    small = mnist1d_module._generate.__wrapped__(100, 7)  # uncached: really generates
    assert (np.random.rand(), random.random()) == expected  # noqa: NPY002
    other = mnist1d_module._generate.__wrapped__(100, 8)
    assert not np.array_equal(small.x, other.x)  # the data seed matters
    np.testing.assert_array_equal(mnist1d_module._generate.__wrapped__(100, 7).x, small.x)


def test_train_and_test_splits_share_no_sample(data, origin):
    assert len(origin) == data.x.shape[0] + data.x_test.shape[0]  # no identical rows at all


@pytest.mark.parametrize("split", ["train", "test"])
def test_episode_shapes_dtypes_and_model(split):
    sampler = fewshot(4, 3, 5, split, meta_batch=6)
    assert isinstance(sampler, fm.datasets.MNIST1DFewShot)
    assert sampler.layers == [40, 64, 64, 4] and sampler.classes == tuple(range(10))
    tasks = sampler(np.random.default_rng(0))
    assert isinstance(tasks, fm.MLPTasks) and tasks.loss == "xent" and tasks.separate_query
    assert tasks.layers == [40, 64, 64, 4] and tasks.dim == fm.mlp.num_params([40, 64, 64, 4])
    assert tasks.X_support.shape == (6, 12, 40) and tasks.X_query.shape == (6, 20, 40)
    assert tasks.Y_support.shape == (6, 12) and tasks.Y_query.shape == (6, 20)
    assert tasks.X_support.dtype == np.float64
    assert tasks.Y_support.dtype == tasks.Y_query.dtype == np.int64


@pytest.mark.parametrize("split", ["train", "test"])
def test_episodes_are_relabelled_consistently_with_k_and_q_per_class(split, origin):
    n, k, q = 5, 2, 4
    sampler = fewshot(n, k, q, split, meta_batch=12)
    tasks, classes, s_idx, q_idx = sampler.sample(np.random.default_rng(1))
    assert classes.shape == (12, n) and s_idx.shape == (12, n * k) and q_idx.shape == (12, n * q)
    for i in range(12):
        ys, yq = tasks.Y_support[i], tasks.Y_query[i]
        np.testing.assert_array_equal(np.bincount(ys, minlength=n), np.full(n, k))
        np.testing.assert_array_equal(np.bincount(yq, minlength=n), np.full(n, q))
        # Look each sample up in the raw data: its split and original class.
        seen = {}
        for X, Y in ((tasks.X_support[i], ys), (tasks.X_query[i], yq)):
            for row, label in zip(X, Y):
                where, c = origin[row.tobytes()]
                assert where == split
                assert seen.setdefault(int(label), c) == c  # one class per label
        assert len(set(seen.values())) == n  # distinct labels are distinct classes
        assert [seen[j] for j in range(n)] == list(classes[i])
        # The returned indices point at the same samples.
        np.testing.assert_array_equal(sampler.X[s_idx[i]], tasks.X_support[i])
        np.testing.assert_array_equal(sampler.y[q_idx[i]], classes[i][yq])


def test_support_and_query_samples_are_disjoint(origin):
    tasks = fewshot(10, 5, 10, "test", meta_batch=8)(np.random.default_rng(2))
    for i in range(8):
        s = {row.tobytes() for row in tasks.X_support[i]}
        q = {row.tobytes() for row in tasks.X_query[i]}
        assert len(s) == 50 and len(q) == 100 and not s & q


def test_labels_are_random_permutations_and_sets_are_shuffled():
    sampler = fewshot(3, 4, 4, meta_batch=40)
    tasks, classes, _, _ = sampler.sample(np.random.default_rng(3))
    # The class given label 0 varies, and every class gets drawn.
    assert len(set(classes[:, 0])) > 3 and set(classes.ravel()) == set(range(10))
    # Some class pairs appear in both orders (the labels are not sorted classes).
    assert np.any(classes[:, 0] < classes[:, 1]) and np.any(classes[:, 0] > classes[:, 1])
    # The sets are shuffled, not grouped by label.
    grouped = np.repeat(np.arange(3), 4)
    assert any(not np.array_equal(y, grouped) for y in tasks.Y_support)
    assert any(not np.array_equal(y, grouped) for y in tasks.Y_query)


def test_disjoint_classes_split_the_classes(origin):
    train = fewshot(4, 1, 2, "train", meta_batch=30, disjoint_classes=True)
    test = fewshot(4, 1, 2, "test", meta_batch=30, disjoint_classes=True)
    assert train.classes == (0, 1, 2, 3, 4, 5) and test.classes == (6, 7, 8, 9)
    found = {}
    for name, sampler in (("train", train), ("test", test)):
        tasks, classes, _, _ = sampler.sample(np.random.default_rng(4))
        rows = np.concatenate([tasks.X_support.reshape(-1, 40), tasks.X_query.reshape(-1, 40)])
        found[name] = {origin[r.tobytes()][1] for r in rows}
        assert found[name] == set(classes.ravel())
    assert found["train"] == set(range(6)) and found["test"] == set(range(6, 10))
    # By default the two splits share all ten classes.
    shared = fewshot(4, 1, 2, "test", meta_batch=30).sample(np.random.default_rng(4))[1]
    assert set(shared.ravel()) == set(range(10))


def test_episodes_are_reproducible_from_the_generator_only():
    sampler = fewshot(5, 1, 3, meta_batch=4)
    a, b = sampler(np.random.default_rng(5)), sampler(np.random.default_rng(5))
    c = sampler(np.random.default_rng(6))
    for name in ("X_support", "Y_support", "X_query", "Y_query"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    assert not np.array_equal(a.X_support, c.X_support)
    rng = np.random.default_rng(5)
    assert not np.array_equal(sampler(rng).X_query, sampler(rng).X_query)


def test_fewshot_params_repr_and_equality():
    sampler = fewshot(3, 1, 5, "test", meta_batch=8, layers=[40, 32, 3], activation="tanh")
    params = sampler.get_params()
    assert params == {
        "name": "mnist1d_fewshot",
        "n_way": 3,
        "k_shot": 1,
        "q_query": 5,
        "split": "test",
        "meta_batch": 8,
        "layers": [40, 32, 3],
        "activation": "tanh",
        "disjoint_classes": False,
        "num_samples": N_SAMPLES,
        "data_seed": 0,
    }
    assert json.loads(json.dumps(params)) == params
    assert fm.datasets.mnist1d_fewshot(**{k: v for k, v in params.items() if k != "name"}) == (
        sampler
    )
    assert repr(sampler) == (
        "MNIST1DFewShot(n_way=3, k_shot=1, q_query=5, split='test', meta_batch=8, "
        "layers=[40, 32, 3], activation='tanh', disjoint_classes=False, num_samples=2000, "
        "data_seed=0)"
    )
    assert fewshot(3, 1, 5).get_params()["layers"] == [40, 64, 64, 3]


def test_episodes_work_with_the_estimators():
    sampler = fewshot(5, 1, 5, meta_batch=4, layers=[40, 16, 5])
    x0 = fm.mlp.init_params(sampler.layers)
    g = fm.FOBMAML(SMOKE_INNER).meta_gradient(x0, sampler(np.random.default_rng(0)))
    assert g.shape == x0.shape and np.isfinite(g).all() and np.any(g != 0)


FEWSHOT_BAD = [
    ({"n_way": 1}, ValueError, "`n_way` must be >= 2"),
    ({"n_way": 11}, ValueError, "`n_way` must be <= 10"),
    ({"n_way": 5.0}, TypeError, "`n_way` must be an integer"),
    ({"k_shot": 0}, ValueError, "`k_shot` must be >= 1"),
    ({"q_query": 0}, ValueError, "`q_query` must be >= 1"),
    ({"q_query": "5"}, TypeError, "`q_query` must be an integer"),
    ({"split": "val"}, ValueError, "`split` must be one of 'train', 'test'"),
    ({"meta_batch": 0}, ValueError, "`meta_batch` must be >= 1"),
    (
        {"layers": [41, 64, 5]},
        ValueError,
        "`layers` must start with d_in = 40 and end with d_out = 5",
    ),
    (
        {"layers": [40, 64, 4]},
        ValueError,
        "`layers` must start with d_in = 40 and end with d_out = 5",
    ),
    ({"layers": 40}, TypeError, "`layers` must be a sequence"),
    ({"activation": "gelu"}, ValueError, "`activation` must be one of"),
    ({"disjoint_classes": "yes"}, TypeError, "`disjoint_classes` must be a bool"),
    ({"num_samples": 5}, ValueError, "`num_samples` must be >= 10"),
    ({"num_samples": 2000.0}, TypeError, "`num_samples` must be an integer"),
    ({"data_seed": -1}, ValueError, "`data_seed` must be >= 0"),
    ({"data_seed": 2**32}, ValueError, "`data_seed` must be <= 4294967295"),
    (
        {"n_way": 5, "split": "test", "disjoint_classes": True},
        ValueError,
        "`n_way` must be <= 4 for split='test' with disjoint_classes=True",
    ),
    (
        {"n_way": 7, "disjoint_classes": True},
        ValueError,
        "`n_way` must be <= 6 for split='train' with disjoint_classes=True",
    ),
    (
        {"k_shot": 20, "q_query": 30, "split": "test"},
        ValueError,
        r"`k_shot` \+ `q_query` = 50 exceeds the \d+ samples of class \d in the 'test' split",
    ),
]


@pytest.mark.parametrize(("kwargs", "exc", "match"), FEWSHOT_BAD)
def test_fewshot_rejects_bad_arguments(kwargs, exc, match):
    args = {"n_way": 5, "k_shot": 1, "q_query": 5, "num_samples": N_SAMPLES, **kwargs}
    with pytest.raises(exc, match=match):
        fm.datasets.mnist1d_fewshot(**args)


def test_fewshot_sampling_rejects_a_bad_generator():
    sampler = fewshot()
    for call in (sampler, sampler.sample, sampler.sample_episode):
        with pytest.raises(TypeError, match="`rng` must be a numpy.random.Generator"):
            call(42)


def test_samplers_compare_by_their_parameters_and_are_unhashable():
    a, b = fm.datasets.sinusoid(4, 5), fm.datasets.sinusoid(4, 5)
    assert a == b and a != fm.datasets.sinusoid(4, 6)
    m = fm.datasets.mnist1d_fewshot(3, 1, 2, num_samples=200)
    assert m == fm.datasets.mnist1d_fewshot(3, 1, 2, num_samples=200)
    assert m != fm.datasets.mnist1d_fewshot(3, 1, 2, num_samples=300)
    assert a != m and m != a
    for sampler in (a, m):
        with pytest.raises(TypeError, match="unhashable"):
            hash(sampler)
