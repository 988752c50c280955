"""QuadraticTasks (properties, indexing, zero-copy, conversions) and the quadratic
task sampler ``fm.datasets.quadratic_tasks``."""

from __future__ import annotations

import numpy as np
import pytest
import reference as ref

import fobmaml as fm

# ----------------------------------------------------------------------------------------
# QuadraticTasks
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [False, True])
def test_properties_and_repr(problem, sep):
    tasks, _, _, (A, b, B, c) = problem(5, 7, separate_query=sep)
    assert isinstance(tasks, fm.TaskBatch)
    assert tasks.num_tasks == 5 and len(tasks) == 5 and tasks.dim == 7
    assert tasks.separate_query is sep
    assert repr(tasks) == (
        "QuadraticTasks(m=5, n=7, separate query)" if sep else "QuadraticTasks(m=5, n=7)"
    )
    np.testing.assert_array_equal(tasks.A, A)
    np.testing.assert_array_equal(tasks.b, b)
    if sep:
        np.testing.assert_array_equal(tasks.B, B)
        np.testing.assert_array_equal(tasks.c, c)
    else:
        assert tasks.B is tasks.A and tasks.c is tasks.b


def test_single_task_of_dimension_one():
    tasks = fm.QuadraticTasks([[[2.0]]], [[1.0]])
    assert (tasks.num_tasks, tasks.dim) == (1, 1)
    inner = fm.InnerLoop(steps=4, lr=0.2, lam=0.5)
    T, rinner = ref.task_list(np.array([[[2.0]]]), np.array([[1.0]])), ref.Inner(4, 0.2, 0.5)
    g = fm.MAML(inner).meta_gradient([0.3], tasks)
    assert ref.rel_err(g, ref.maml(T[0], np.array([0.3]), rinner)) <= 1e-12
    g = fm.Exact(inner).meta_gradient([0.3], tasks)
    assert ref.rel_err(g, ref.exact(T[0], np.array([0.3]), 0.5)) <= 1e-12


INDICES = {
    "int": 2,
    "negative-int": -1,
    "numpy-int": np.int64(3),
    "slice": slice(1, 4),
    "step-slice": slice(None, None, -2),
    "list": [4, 0, 2],
    "repeated": [1, 1],
    "bool-mask": np.array([True, False, True, False, False, True]),
}


@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize("key", list(INDICES))
def test_indexing_gives_the_sub_batch(problem, key, sep):
    tasks, _, x, _ = problem(6, 5, separate_query=sep)
    index = INDICES[key]
    rows = np.atleast_1d(np.arange(6)[index])
    sub = tasks[index]
    assert isinstance(sub, fm.QuadraticTasks)
    assert sub.num_tasks == rows.size and sub.dim == 5 and sub.separate_query is sep
    np.testing.assert_array_equal(sub.A, tasks.A[rows])
    np.testing.assert_array_equal(sub.c, tasks.c[rows])
    inner = fm.InnerLoop(steps=6, lr=0.3, lam=0.5, momentum=0.3)
    for est in (
        fm.MAML(inner),
        fm.FOBMAML(inner, scheme="symmetric"),
        fm.IMAML(inner, cg_steps=3),
        fm.Exact(inner),
    ):
        full = est.estimate(x, tasks, losses=True)
        part = est.estimate(x, sub, losses=True)
        # Each task is computed on its own: the rows are the same numbers.
        assert np.array_equal(part.task_gradients, full.task_gradients[rows]), est
        assert np.array_equal(part.losses, full.losses[rows]), est
        np.testing.assert_allclose(
            part.gradient, full.task_gradients[rows].mean(axis=0), rtol=1e-13
        )
    assert np.array_equal(fm.adapt(x, sub, inner), fm.adapt(x, tasks, inner)[rows])


def test_bad_indices(problem):
    tasks, _, _, _ = problem(3, 4)
    with pytest.raises(IndexError):
        tasks[3]
    with pytest.raises(ValueError, match="`index` selects no task"):
        tasks[[]]
    with pytest.raises(ValueError, match="`index` selects no task"):
        tasks[2:2]


@pytest.mark.parametrize("sep", [False, True])
def test_float64_c_contiguous_inputs_are_not_copied(problem, sep):
    tasks, _, x, (A, b, B, c) = problem(4, 5, separate_query=sep)
    for mine, given in ((tasks.A, A), (tasks.b, b)) + (((tasks.B, B), (tasks.c, c)) if sep else ()):
        assert np.shares_memory(mine, given)
    # The kernels read the caller's memory in place: changing b (the docs say not to)
    # changes the results, exactly as for a task batch built from the new b.
    inner = fm.InnerLoop(steps=5, lr=0.3, lam=0.5)
    before = fm.FOMAML(inner).task_gradients(x, tasks)
    b += 1.0
    after = fm.FOMAML(inner).task_gradients(x, tasks)
    assert not np.allclose(before, after)
    fresh = fm.QuadraticTasks(
        A.copy(), b.copy(), None if B is None else B.copy(), None if c is None else c.copy()
    )
    assert np.array_equal(after, fm.FOMAML(inner).task_gradients(x, fresh))


CONVERSIONS = {
    "int64": lambda a: np.rint(a * 8).astype(np.int64),
    "int32": lambda a: np.rint(a * 8).astype(np.int32),
    "uint8": lambda a: np.rint(np.abs(a) * 8).astype(np.uint8),
    "float32": lambda a: a.astype(np.float32),
    "float16": lambda a: a.astype(np.float16),
    "big-endian": lambda a: a.astype(">f8"),
    "fortran": np.asfortranarray,
    "strided": lambda a: np.repeat(a, 2, axis=-1)[..., ::2],
    "read-only": lambda a: _read_only(a),
    "list": lambda a: a.tolist(),
}


def _read_only(a):
    a = a.copy()
    a.setflags(write=False)
    return a


@pytest.mark.parametrize("kind", list(CONVERSIONS))
def test_inputs_are_converted_to_float64(problem, kind):
    _, _, x, (A, b, B, c) = problem(3, 4, separate_query=True)
    conv = CONVERSIONS[kind]
    # Symmetric by construction even after rounding (integer/float32 casts of a symmetric
    # matrix stay symmetric); the reference sees exactly the converted values.
    raw = [conv(A), conv(b), conv(B), conv(c)]
    tasks = fm.QuadraticTasks(*raw)
    values = [np.asarray(r, dtype=np.float64) for r in raw]
    for arr, val in zip((tasks.A, tasks.b, tasks.B, tasks.c), values):
        assert arr.dtype == np.float64 and arr.flags.c_contiguous
        np.testing.assert_array_equal(arr, val)
    T = ref.task_list(*values)
    lam = 20.0  # large enough for integer-scaled matrices to give a stable positive definite h
    inner, rinner = fm.InnerLoop(4, 0.01, lam, 0.2), ref.Inner(4, 0.01, lam, 0.2)
    xc = conv(x)
    xv = np.asarray(xc, dtype=np.float64)
    G = fm.MAML(inner).task_gradients(xc, tasks)
    assert ref.rel_err(G, ref.per_task(ref.maml, T, xv, rinner)) <= 1e-9
    G = fm.Exact(inner).task_gradients(xc, tasks)
    assert ref.rel_err(G, ref.per_task(ref.exact, T, xv, lam)) <= 1e-9


def test_x_is_not_modified(problem):
    tasks, _, x, _ = problem(3, 4)
    keep = x.copy()
    inner = fm.InnerLoop(steps=3, lr=0.3, lam=0.5, momentum=0.4)
    for est in (fm.MAML(inner), fm.FOBMAML(inner), fm.Exact(inner, solver="iterative")):
        est.meta_gradient(x, tasks)
    fm.adapt(x, tasks, inner)
    assert np.array_equal(x, keep)


# ----------------------------------------------------------------------------------------
# fm.datasets.quadratic_tasks
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("sep", [False, True])
@pytest.mark.parametrize(
    ("n", "kappa", "L"), [(2, 10.0, 1.0), (6, 100.0, 1.0), (9, 1e4, 3.5), (5, 1.0, 0.2)]
)
def test_dataset_spectrum_and_symmetry(n, kappa, L, sep):
    tasks = fm.datasets.quadratic_tasks(4, n, kappa, L=L, seed=1, separate_query=sep)
    assert (tasks.num_tasks, tasks.dim, tasks.separate_query) == (4, n, sep)
    spectrum = L * np.geomspace(1.0, 1.0 / kappa, n)
    for M in (tasks.A, tasks.B):
        assert np.array_equal(M, M.transpose(0, 2, 1))  # exactly symmetric
        for Mi in M:
            eig = np.linalg.eigvalsh(Mi)
            np.testing.assert_allclose(eig[::-1], spectrum, rtol=1e-9 * kappa, atol=0)
            assert eig.max() == pytest.approx(L, rel=1e-12)
            assert np.linalg.cond(Mi) == pytest.approx(kappa, rel=1e-9 * kappa)


def test_dataset_is_deterministic_for_a_seed():
    a = fm.datasets.quadratic_tasks(3, 5, 50.0, seed=42, separate_query=True)
    b = fm.datasets.quadratic_tasks(3, 5, 50.0, seed=42, separate_query=True)
    c = fm.datasets.quadratic_tasks(3, 5, 50.0, seed=43, separate_query=True)
    for name in "AbBc":
        assert np.array_equal(getattr(a, name), getattr(b, name))
        assert not np.allclose(getattr(a, name), getattr(c, name))


def test_dataset_separate_query_shapes_and_same_optimum():
    tasks = fm.datasets.quadratic_tasks(4, 6, 30.0, seed=2, separate_query=True)
    assert tasks.A.shape == tasks.B.shape == (4, 6, 6)
    assert tasks.b.shape == tasks.c.shape == (4, 6)
    assert not np.allclose(tasks.A, tasks.B)
    for i in range(4):
        theta_g = np.linalg.solve(tasks.A[i], tasks.b[i])
        theta_f = np.linalg.solve(tasks.B[i], tasks.c[i])
        np.testing.assert_allclose(theta_f, theta_g, rtol=1e-10, atol=1e-10)
    plain = fm.datasets.quadratic_tasks(4, 6, 30.0, seed=2)
    assert plain.B is plain.A and plain.c is plain.b


def test_dataset_task_spread():
    # Optima θ_i = θ̄ + spread · z_i: with spread 0 every task has the same optimum.
    same = fm.datasets.quadratic_tasks(5, 4, 10.0, task_spread=0.0, seed=3)
    optima = np.array([np.linalg.solve(A, b) for A, b in zip(same.A, same.b)])
    np.testing.assert_allclose(optima, np.broadcast_to(optima[0], optima.shape), atol=1e-10)
    spread = fm.datasets.quadratic_tasks(5, 4, 10.0, task_spread=1.0, seed=3)
    optima = np.array([np.linalg.solve(A, b) for A, b in zip(spread.A, spread.b)])
    assert optima.std(axis=0).min() > 0.1


def test_unaligned_arrays_are_copied_to_aligned_memory():
    """The kernels read doubles through aligned pointers (reading a misaligned double is
    undefined behaviour, which UBSan reports): validation copies a misaligned view."""
    from fobmaml._validation import float_array

    buf = np.zeros(8 * 12 + 1, dtype=np.uint8)
    view = np.frombuffer(buf.data, dtype=np.float64, count=12, offset=1)
    assert not view.flags.aligned
    out = float_array(view, "x")
    assert out.flags.aligned and out.flags.c_contiguous
    np.testing.assert_array_equal(out, view)
    labels = np.frombuffer(np.zeros(8 * 6 + 3, np.uint8).data, dtype=np.int64, count=6, offset=3)
    tasks = fm.MLPTasks(np.zeros((2, 3, 1)), labels.reshape(2, 3), layers=[1, 2], loss="xent")
    assert tasks.Y_support.flags.aligned
    np.testing.assert_array_equal(tasks.Y_support, labels.reshape(2, 3))
