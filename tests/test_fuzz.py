"""Property-based fuzzing of every public entry point (hypothesis).

The property: each call either returns a correct result, or raises one of the
documented exceptions.

- A correct result is finite, has the right shape and dtype, and, where a NumPy
  computation is cheap, matches it: the quadratic family's losses, gradients and
  HVPs; K <= 4 steps of every estimator on quadratic tasks; the linear models' closed
  forms; ``mlp.predict``; the optimizers' update rules; ``meta_train`` against its
  loop written out.
- The documented exceptions are ``ValueError``, ``TypeError``, ``FloatingPointError``,
  ``fobmaml.NotPositiveDefiniteError`` (a ``ValueError``) and ``fobmaml.ConvergenceError``
  (a ``RuntimeError``); and ``MemoryError`` for an estimator call whose workspace exceeds
  ``fm.set_memory_limit`` (``test_memory_limit``; the other tests stay far below it).
- Never allowed: a crash, a hang, another exception type, or a NaN/Inf returned
  silently. Warnings are errors in this suite (pyproject's ``filterwarnings``), so a
  NumPy ``RuntimeWarning`` escaping the library counts as another exception type.

Inputs are drawn as *variants* of valid arrays (see :func:`variants`):

- same values in another layout or container: strided, transposed/Fortran,
  negative strides, unaligned, byte-swapped, read-only, masked, nested lists. The
  result must be bit-identical to the result for the C-contiguous float64 array.
- other real dtypes (float32, float16, longdouble, int, uint). The result must be the
  result for the float64 of the cast values.
- NaN/Inf: ``ValueError``.
- complex, object, bool, str, bytes, datetime, structured, None: ``TypeError``.
- wrong shape: ``ValueError``.
- magnitudes scaled to 1e-320 ... 1.8e308: the contract only (a finite result, or a
  documented exception).

Scalar parameters are fuzzed with the wrong types (None, str, lists, complex, bool,
Decimal, numpy scalars, 0-d arrays) and the wrong values (NaN, Inf, 0, negative, huge
ints, subnormals), against an oracle of what each parameter accepts.

Guards against hangs: the inner loops run K <= 4 steps (never more than 8), IMAML at
most 6 CG steps, ``Exact(solver="iterative")`` at most 200 iterations; a test still
running after its time budget dumps every thread's traceback and exits the process.

Budgets (``tests/fuzz_settings.py``): the ``ci`` profile (default) runs 3,430 examples
over the file (each test's ``fuzz_settings(n)``), derived from a fixed seed;
``FOBMAML_FUZZ_PROFILE=thorough`` runs ten times as many (34,300) from a random seed.
A test stops generating at its first failure (and shrinks it), so a failing run counts
fewer. ``--hypothesis-show-statistics`` prints the count of each test::

    FOBMAML_FUZZ_PROFILE=thorough python -m pytest tests/test_fuzz.py -q \
        --hypothesis-show-statistics

The last section holds deterministic regression tests for the bugs fuzzing found.
"""

from __future__ import annotations

import dataclasses
import faulthandler
import math
import numbers
import sys
import types
from decimal import Decimal
from fractions import Fraction
from typing import NamedTuple

import numpy as np
import pytest
import reference as ref
from fuzz_settings import SCALE, fuzz_settings
from hypothesis import assume, given, note
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import fobmaml as fm
from fobmaml import optim

# Thousands of hypothesis examples: the full suite runs them, `-m "not slow"` does not.
pytestmark = pytest.mark.slow

DOCUMENTED = (ValueError, TypeError, FloatingPointError, fm.ConvergenceError)
# What a call with valid arguments may still raise: the kernels' numerical failures.
NUMERIC = (FloatingPointError, fm.ConvergenceError, fm.NotPositiveDefiniteError)
EPS = np.finfo(np.float64).eps
FMAX = np.finfo(np.float64).max


@pytest.fixture(autouse=True)
def _hang_guard():
    """A test running past its budget prints every thread's stack and ends the run."""
    # The process's real stderr: pytest may have replaced sys.stderr with a capture object.
    faulthandler.dump_traceback_later(300 * SCALE, exit=True, file=sys.__stderr__)
    yield
    faulthandler.cancel_dump_traceback_later()


# ===========================================================================================
# Outcome checks
# ===========================================================================================
def attempt(fn, *args, **kwargs):
    """``(result, None)``, or ``(None, exc)`` for a documented exception; others propagate."""
    try:
        return fn(*args, **kwargs), None
    except DOCUMENTED as exc:
        return None, exc


def expect_raises(expected, fn, *args, **kwargs):
    """`fn` must raise one of `expected` (a class or tuple)."""
    try:
        result = fn(*args, **kwargs)
    except expected:
        return
    except DOCUMENTED as exc:
        raise AssertionError(f"expected {expected}, got {type(exc).__name__}: {exc}") from exc
    raise AssertionError(f"expected {expected}, got a result: {result!r}")


def finite_array(a, shape, name="result") -> np.ndarray:
    assert isinstance(a, np.ndarray), f"{name}: not an ndarray ({type(a).__name__})"
    assert a.dtype == np.float64, f"{name}: dtype {a.dtype}"
    assert a.shape == tuple(shape), f"{name}: shape {a.shape}, expected {tuple(shape)}"
    assert np.isfinite(a).all(), f"{name}: NaN/Inf returned silently: {a}"
    return a


def finite_float(v, name="result") -> float:
    assert isinstance(v, float), f"{name}: {type(v).__name__}, expected float"
    assert math.isfinite(v), f"{name}: NaN/Inf returned silently ({v})"
    return v


def same_bits(a, b, name="result"):
    """Equal values (NaN in the same places); results must not depend on layout."""
    if isinstance(a, tuple):
        for i, (x, y) in enumerate(zip(a, b)):
            same_bits(x, y, f"{name}[{i}]")
        return
    if a is None or b is None:
        assert a is None and b is None, name
        return
    assert np.array_equal(np.asarray(a), np.asarray(b), equal_nan=True), f"{name}: {a} != {b}"


def close(actual, expected, atol, rtol=1e-9, name="result"):
    actual, expected = np.asarray(actual, float), np.asarray(expected, float)
    assert actual.shape == expected.shape, f"{name}: shape {actual.shape} != {expected.shape}"
    err = np.abs(actual - expected)
    bound = atol + rtol * np.abs(expected)
    assert (err <= bound).all(), (
        f"{name}: max error {err.max():.3g} over bound {bound.min():.3g}\n"
        f"got      {actual}\nexpected {expected}"
    )


# ===========================================================================================
# Scalar parameters and their oracle
# ===========================================================================================
WEIRD_SCALARS = st.one_of(
    st.none(),
    st.text(max_size=3),
    st.sampled_from(["0.1", "1", "nan", b"1", [0.1], (1,), {"lr": 0.1}, {0.5}, object()]),
    st.lists(st.floats(0.0, 1.0), max_size=2),
    st.booleans(),
    st.sampled_from([np.bool_(True), np.bool_(False)]),
    st.complex_numbers(max_magnitude=10.0, allow_nan=False),
    st.sampled_from([0.5 + 0j, np.complex128(1.0)]),
    st.sampled_from(
        [
            np.float16(0.5),
            np.float32(1e-3),
            np.float64(-1.0),
            np.longdouble(0.25),
            np.int8(-3),
            np.uint8(200),
            np.int64(3),
            np.uint64(2**64 - 1),
            np.int32(0),
            np.float64("nan"),
            np.float32("inf"),
        ]
    ),
    st.sampled_from([np.array(0.5), np.array([0.5]), np.array(3)]),
    st.sampled_from([Fraction(1, 3), Decimal("0.1"), 10**400, -(10**400), 2**63, 2**31]),
    st.floats(),
    st.integers(),
    st.sampled_from([1e300, 1e-300, 5e-324, -0.0, 0.0, 1.0, 0.999999999, 1.0000001, -1]),
)


def reals(lo, hi):
    """Plausible valid reals mixed with the weird ones."""
    return st.one_of(st.floats(lo, hi), WEIRD_SCALARS)


def ints(lo, hi):
    return st.one_of(st.integers(lo, hi), WEIRD_SCALARS)


class Bad(NamedTuple):
    """The exception classes an invalid parameter may raise (a tuple)."""

    exc: tuple


def real_oracle(value, lo=None, lo_open=False, hi=None, hi_open=False):
    """The float the library must store for `value`, or the exceptions it may raise."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Real):
        return Bad((TypeError,))
    try:
        f = float(value)
    except OverflowError:  # a real number beyond float range: out of range
        return Bad((ValueError, TypeError))
    if not math.isfinite(f):
        return Bad((ValueError,))
    if lo is not None and (f <= lo if lo_open else f < lo):
        return Bad((ValueError,))
    if hi is not None and (f >= hi if hi_open else f > hi):
        return Bad((ValueError,))
    return f


def positive_oracle(v):
    return real_oracle(v, lo=0.0, lo_open=True)


def nonneg_oracle(v):
    return real_oracle(v, lo=0.0)


def unit_oracle(v):
    return real_oracle(v, lo=0.0, hi=1.0, hi_open=True)


def int_oracle(value, lo=None, hi=None):
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, numbers.Integral):
        return Bad((TypeError,))
    v = int(value)
    if (lo is not None and v < lo) or (hi is not None and v > hi):
        return Bad((ValueError,))
    return v


def choice_oracle(value, options):
    return value if isinstance(value, str) and value in options else Bad((ValueError,))


def combine(expected: dict):
    """All valid: the dict of stored values. Otherwise the union of the allowed exceptions."""
    bad = [e.exc for e in expected.values() if isinstance(e, Bad)]
    if not bad:
        return expected
    return Bad(tuple({c for b in bad for c in b}))


def check_construct(build, expected, stored=None):
    """Build with fuzzed parameters: raise as the oracle says, or store exactly what it says."""
    if isinstance(expected, Bad):
        expect_raises(expected.exc, build)
        return None
    obj = build()
    for key, value in (stored if stored is not None else expected).items():
        got = getattr(obj, key)
        assert type(got) is type(value) and got == value, f"{key}: stored {got!r}, not {value!r}"
    return obj


# ===========================================================================================
# Array variants
# ===========================================================================================
class Variant(NamedTuple):
    kind: str  # same | cast | nonfinite | badtype | badshape | extreme
    how: str
    value: object  # what is passed
    reference: np.ndarray | None  # the float64 C array it must behave as (same, cast, extreme)


LAYOUTS = (
    "c",
    "strided",
    "fortran",
    "negative",
    "unaligned",
    "byteswapped",
    "readonly",
    "masked",
    "list",
)
CASTS = ("float32", "float16", "longdouble", "int64", "int32", "int8", "uint8", "uint64")
BADTYPES = (
    "complex",
    "complex64",
    "object",
    "bool",
    "str",
    "bytes",
    "datetime",
    "structured",
    "none",
    "string",
)
BADSHAPES = ("lead", "longer", "shorter", "scalar")
NONFINITE = (np.nan, np.inf, -np.inf)
EXPONENTS = (-320, -308, -300, -150, 150, 300, 307)
ALL_KINDS = ("same", "same", "same", "cast", "nonfinite", "badtype", "badshape", "extreme")
EXPECTED = {"nonfinite": (ValueError,), "badtype": (TypeError,), "badshape": (ValueError,)}


def relayout(a: np.ndarray, how: str):
    a = np.ascontiguousarray(a, dtype=np.float64)
    if how == "c":
        return a.copy()
    if how == "strided":
        big = np.zeros(tuple(2 * s for s in a.shape))
        view = big[tuple(slice(None, None, 2) for _ in a.shape)]
        view[...] = a
        return view
    if how == "fortran":
        return np.asfortranarray(a)
    if how == "negative":
        return a[::-1].copy()[::-1] if a.ndim else a.copy()
    if how == "unaligned":
        raw = np.zeros(a.size * 8 + 1, dtype=np.uint8)
        view = raw[1:].view(np.float64).reshape(a.shape)
        view[...] = a
        return view
    if how == "byteswapped":
        return a.astype(a.dtype.newbyteorder(">"))
    if how == "readonly":
        out = a.copy()
        out.flags.writeable = False
        return out
    if how == "masked":
        return np.ma.masked_array(a, mask=False)
    if how == "list":
        return a.tolist()
    raise AssertionError(how)


def cast(a: np.ndarray, how: str) -> np.ndarray:
    dt = np.dtype(how)
    if dt.kind == "f":
        return a.astype(dt)
    info = np.iinfo(dt)
    return np.clip(np.round(a), max(info.min, -100), min(info.max, 100)).astype(dt)


def badtype(a: np.ndarray, how: str):
    with np.errstate(all="ignore"):
        if how == "complex":
            return a.astype(np.complex128)
        if how == "complex64":
            return a.astype(np.complex64) + 1j
        if how == "object":
            return a.astype(object)
        if how == "bool":
            return a != 0
        if how == "str":
            return a.astype(str)
        if how == "bytes":
            return a.astype("S32")
        if how == "datetime":
            return np.clip(a, -1e6, 1e6).astype(np.int64).astype("datetime64[s]")
        if how == "structured":
            out = np.zeros(a.shape, dtype=[("v", np.float64)])
            out["v"] = a
            return out
        if how == "none":
            return None
        if how == "string":
            return "1.0"
    raise AssertionError(how)


def badshape(a: np.ndarray, how: str):
    if how == "lead":  # two leading axes: one could be a valid (1, n) for m = 1
        return a[None, None].copy()
    if how == "longer":
        return np.concatenate([a, np.ones(a.shape[:-1] + (1,))], axis=-1)
    if how == "shorter":
        return a[..., :-1].copy()
    if how == "scalar":
        return np.float64(a.ravel()[0]) if a.size else np.float64(0.0)
    raise AssertionError(how)


@st.composite
def variants(draw, a: np.ndarray, kinds=ALL_KINDS, optional=False) -> Variant:
    """A variant of the valid float64 array `a` (see the module docstring).

    For an `optional` argument, None is the default, not a wrong type.
    """
    a = np.ascontiguousarray(a, dtype=np.float64)
    kind = draw(st.sampled_from(kinds))
    if kind in ("nonfinite", "badshape") and a.size == 0:
        kind = "same"
    if kind == "same":
        # (nested lists lose the shape of an empty array)
        how = draw(st.sampled_from(LAYOUTS if a.size else LAYOUTS[:-1]))
        return Variant(kind, how, relayout(a, how), a)
    if kind == "cast":
        how = draw(st.sampled_from(CASTS))
        value = cast(a, how)
        with np.errstate(all="ignore"):
            ref = np.ascontiguousarray(value, dtype=np.float64)
        return Variant(kind, how, value, ref)
    if kind == "nonfinite":
        out = a.copy()
        out.flat[draw(st.integers(0, a.size - 1))] = draw(st.sampled_from(NONFINITE))
        return Variant(kind, "nonfinite", out, None)
    if kind == "badtype":
        how = draw(st.sampled_from([b for b in BADTYPES if not (optional and b == "none")]))
        return Variant(kind, how, badtype(a, how), None)
    if kind == "badshape":
        how = draw(st.sampled_from(BADSHAPES))
        return Variant(kind, how, badshape(a, how), None)
    # extreme magnitudes, still finite
    how = draw(st.sampled_from((*EXPONENTS, "max")))
    with np.errstate(all="ignore"):
        if how == "max":
            out = np.where(a == 0, 0.0, np.sign(a) * FMAX)
        else:
            out = a * 10.0**how
            out = np.where(np.isfinite(out), out, np.sign(a) * FMAX)
    return Variant("extreme", str(how), out, out)


def floats_array(shape, lo=-2.0, hi=2.0):
    return hnp.arrays(
        np.float64, shape, elements=st.floats(lo, hi, allow_subnormal=False, width=64)
    )


# ===========================================================================================
# Valid task batches, inner loops and estimators
# ===========================================================================================
class Quad(NamedTuple):
    A: np.ndarray
    b: np.ndarray
    B: np.ndarray
    c: np.ndarray
    separate: bool

    def tasks(self) -> fm.QuadraticTasks:
        if self.separate:
            return fm.QuadraticTasks(self.A, self.b, self.B, self.c)
        return fm.QuadraticTasks(self.A, self.b)


@st.composite
def quad_data(draw, m=None, n=None, psd=False, lo=-2.0, hi=2.0) -> Quad:
    m = draw(st.integers(1, 3)) if m is None else m
    n = draw(st.integers(1, 4)) if n is None else n

    def sym():
        M = draw(floats_array((m, n, n), lo, hi))
        if psd:
            P = M @ M.transpose(0, 2, 1) / n
            return (P + P.transpose(0, 2, 1)) / 2
        return (M + M.transpose(0, 2, 1)) / 2

    A, b = sym(), draw(floats_array((m, n), 2 * lo, 2 * hi))
    separate = draw(st.booleans())
    B, c = (sym(), draw(floats_array((m, n), 2 * lo, 2 * hi))) if separate else (A, b)
    return Quad(A, b, B, c, separate)


class MLP(NamedTuple):
    Xs: np.ndarray
    Ys: np.ndarray
    Xq: np.ndarray | None
    Yq: np.ndarray | None
    layers: list
    activation: str
    loss: str

    def tasks(self) -> fm.MLPTasks:
        return fm.MLPTasks(
            self.Xs,
            self.Ys,
            self.Xq,
            self.Yq,
            layers=self.layers,
            activation=self.activation,
            loss=self.loss,
        )

    @property
    def query(self):
        return (self.Xs, self.Ys) if self.Xq is None else (self.Xq, self.Yq)


@st.composite
def mlp_data(draw, hidden=None) -> MLP:
    d_in, d_out = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    hidden = draw(st.lists(st.integers(1, 4), max_size=2)) if hidden is None else hidden
    layers = [d_in, *hidden, d_out]
    loss = draw(st.sampled_from(["mse", "xent"]))
    m, ks = draw(st.integers(1, 3)), draw(st.integers(1, 3))

    def data(k):
        X = draw(floats_array((m, k, d_in), -3.0, 3.0))
        if loss == "mse":
            return X, draw(floats_array((m, k, d_out), -3.0, 3.0))
        return X, draw(hnp.arrays(np.int64, (m, k), elements=st.integers(0, d_out - 1)))

    Xs, Ys = data(ks)
    Xq, Yq = data(draw(st.integers(1, 3))) if draw(st.booleans()) else (None, None)
    return MLP(Xs, Ys, Xq, Yq, layers, draw(st.sampled_from(["relu", "tanh"])), loss)


def families():
    return st.one_of(quad_data(), mlp_data())


def batch_of(data) -> fm.TaskBatch:
    return data.tasks()


@st.composite
def inner_loops(draw, lam_positive=False, max_steps=4) -> fm.InnerLoop:
    lam_low = 1e-2 if lam_positive else 0.0
    lam = draw(st.one_of(st.just(max(lam_low, 0.0) or 0.0), st.floats(max(lam_low, 1e-2), 10.0)))
    if lam_positive and lam == 0.0:
        lam = 1.0
    return fm.InnerLoop(
        steps=draw(st.integers(1, max_steps)),
        lr=draw(st.floats(1e-3, 1.0)),
        lam=lam,
        momentum=draw(st.one_of(st.just(0.0), st.floats(0.0, 0.9))),
    )


ESTIMATOR_KINDS = ("MAML", "FOMAML", "Reptile", "IMAML", "HFMAML", "FOBMAML", "Exact")


@st.composite
def estimators(draw, kinds=ESTIMATOR_KINDS, max_steps=4) -> fm.Estimator:
    kind = draw(st.sampled_from(kinds))
    needs_lam = kind in ("IMAML", "FOBMAML", "Exact")
    inner = draw(inner_loops(lam_positive=needs_lam, max_steps=max_steps))
    if kind == "IMAML":
        return fm.IMAML(inner, cg_steps=draw(st.integers(1, 6)))
    if kind == "HFMAML":
        return fm.HFMAML(inner, eps=draw(st.floats(1e-7, 1e-2)))
    if kind == "FOBMAML":
        return fm.FOBMAML(
            inner,
            delta=draw(st.floats(1e-5, 1e-1)),
            scheme=draw(st.sampled_from(["forward", "symmetric"])),
            perturbation=draw(st.sampled_from(["objective", "linear"])),
        )
    if kind == "Exact":
        return fm.Exact(
            inner,
            tol=draw(st.floats(1e-12, 1e-4)),
            max_iter=draw(st.integers(1, 200)),
            solver=draw(st.sampled_from(["auto", "iterative"])),
            pd_check_steps=draw(st.integers(0, 10)),
        )
    return getattr(fm, kind)(inner)


# ===========================================================================================
# NumPy references
# ===========================================================================================
def mv(A, X):
    return np.einsum("mij,mj->mi", A, X)


def q_loss(A, b, phi):
    return 0.5 * np.einsum("mi,mi->m", phi, mv(A, phi)) - np.einsum("mi,mi->m", b, phi)


def q_loss_scale(A, b, phi):
    """A bound on the magnitude of the terms of q_loss (for rounding tolerances)."""
    aphi = np.abs(phi)
    return 0.5 * np.einsum("mi,mi->m", aphi, mv(np.abs(A), aphi)) + np.einsum(
        "mi,mi->m", np.abs(b), aphi
    )


def np_inner(q: Quad, x, inner: fm.InnerLoop, s=0.0, v=None, t=0.0, steps=None):
    """phi_K (m, n) and the trajectory phi_0..phi_{K-1}, with optional perturbations."""
    K = inner.steps if steps is None else steps
    lr, lam, beta = inner.lr, inner.lam, inner.momentum
    phi = np.broadcast_to(x, q.b.shape).astype(float)
    prev, traj = phi.copy(), []
    for _ in range(K):
        traj.append(phi)
        g = mv(q.A, phi) - q.b + lam * (phi - x)
        if s:
            g = g + s * (mv(q.B, phi) - q.c)
        if t:
            g = g + t * v
        phi, prev = phi - lr * g + beta * (phi - prev), phi
    return phi, traj


def np_jacobian(q: Quad, inner: fm.InnerLoop) -> np.ndarray:
    """d phi_K / d x of every task, (m, n, n)."""
    m, n = q.b.shape
    eye = np.broadcast_to(np.eye(n), (m, n, n))
    J, prev = eye.copy(), eye.copy()
    for _ in range(inner.steps):
        step = J - inner.lr * (q.A @ J + inner.lam * (J - eye)) + inner.momentum * (J - prev)
        J, prev = step, J
    return J


def growth(q: Quad, inner: fm.InnerLoop) -> float:
    """A bound on the amplification of rounding errors by the inner loop."""
    normA = max(np.abs(q.A).sum(axis=2).max(), np.abs(q.B).sum(axis=2).max(), 1.0)
    return (1.0 + inner.lr * (normA + inner.lam) + 2 * inner.momentum) ** (inner.steps + 1)


def np_forward(params, X, layers, activation):
    """The network written out, independently of fobmaml.mlp."""
    h, off = np.asarray(X, float), 0
    for i in range(len(layers) - 1):
        W = params[off : off + layers[i + 1] * layers[i]].reshape(layers[i + 1], layers[i])
        off += layers[i + 1] * layers[i]
        bias = params[off : off + layers[i + 1]]
        off += layers[i + 1]
        h = np.einsum("...i,oi->...o", h, W) + bias
        if i < len(layers) - 2:
            h = np.tanh(h) if activation == "tanh" else np.maximum(h, 0.0)
    return h


def np_mlp_losses(params, X, Y, layers, activation, loss):
    """Per-task loss at the rows of params (m, n)."""
    out = np.stack([np_forward(p, x, layers, activation) for p, x in zip(params, X)])
    if loss == "mse":
        return ((out - Y) ** 2).mean(axis=(1, 2))
    z = out - out.max(axis=-1, keepdims=True)
    lse = np.log(np.exp(z).sum(axis=-1))
    picked = np.take_along_axis(z, Y[..., None], axis=-1)[..., 0]
    return (lse - picked).mean(axis=1)


def np_linear_grad_hvp(w, X, Y, d_out, loss, v):
    """Gradient and HVP of a linear model's loss (no hidden layer), one task."""
    k, d_in = X.shape
    W, bias = w[: d_out * d_in].reshape(d_out, d_in), w[d_out * d_in :]
    VW, vb = v[: d_out * d_in].reshape(d_out, d_in), v[d_out * d_in :]
    Z, dZ = X @ W.T + bias, X @ VW.T + vb
    if loss == "mse":
        R, S = 2.0 * (Z - Y) / (k * d_out), 2.0 * dZ / (k * d_out)
    else:
        P = np.exp(Z - Z.max(axis=1, keepdims=True))
        P /= P.sum(axis=1, keepdims=True)
        R = (P - np.eye(d_out)[Y]) / k
        S = (P * dZ - P * (P * dZ).sum(axis=1, keepdims=True)) / k
    flat = lambda M: np.concatenate([(M.T @ X).ravel(), M.sum(axis=0)])  # noqa: E731
    return flat(R), flat(S)


# ===========================================================================================
# 1. Constructors with fuzzed parameters
# ===========================================================================================
@fuzz_settings(200)
@given(
    steps=ints(1, 6),
    lr=reals(1e-4, 2.0),
    lam=reals(0.0, 5.0),
    momentum=reals(0.0, 0.99),
    replace=st.none() | st.fixed_dictionaries({}, optional={"lr": WEIRD_SCALARS}),
)
def test_inner_loop_constructor(steps, lr, lam, momentum, replace):
    expected = combine(
        {
            "steps": int_oracle(steps, 1, 2**31 - 1),
            "lr": positive_oracle(lr),
            "lam": nonneg_oracle(lam),
            "momentum": unit_oracle(momentum),
        }
    )
    inner = check_construct(
        lambda: fm.InnerLoop(steps=steps, lr=lr, lam=lam, momentum=momentum), expected
    )
    if inner is None:
        return
    assert inner.to_dict() == expected
    with pytest.raises(dataclasses.FrozenInstanceError):
        inner.lr = 1.0  # frozen
    if replace:
        new = check_construct(
            lambda: inner.replace(**replace), combine({"lr": positive_oracle(replace["lr"])})
        )
        if new is not None:
            assert new.steps == inner.steps and new.lam == inner.lam


SMALL_QUAD = fm.datasets.quadratic_tasks(2, 3, kappa=10.0, seed=1, separate_query=True)
SMALL_X = np.linspace(-1.0, 1.0, 3)
WRONG_INNERS = st.sampled_from(
    [None, {"steps": 1}, fm.InnerLoop, "InnerLoop", types.SimpleNamespace(steps=1, lr=0.1)]
)


@fuzz_settings(250)
@given(
    kind=st.sampled_from(ESTIMATOR_KINDS),
    inner=st.one_of(inner_loops(max_steps=8), WRONG_INNERS, st.builds(fm.InnerLoop)),
    params=st.fixed_dictionaries(
        {},
        optional={
            "delta": reals(1e-6, 1.0),
            "scheme": st.sampled_from(["forward", "symmetric", "central", "", None, 1]),
            "perturbation": st.sampled_from(["objective", "linear", "Linear", None]),
            "cg_steps": ints(1, 20),
            "eps": reals(1e-8, 1e-1),
            "tol": reals(1e-14, 1e-2),
            "max_iter": st.one_of(ints(1, 300), st.sampled_from([2**31, 2**63 - 1, 2**63])),
            "solver": st.sampled_from(["auto", "iterative", "direct", None]),
            "pd_check_steps": ints(0, 40),
        },
    ),
)
def test_estimator_constructors(kind, inner, params):
    cls = getattr(fm, kind)
    accepted = {
        "MAML": (),
        "FOMAML": (),
        "Reptile": (),
        "IMAML": ("cg_steps",),
        "HFMAML": ("eps",),
        "FOBMAML": ("delta", "scheme", "perturbation"),
        "Exact": ("tol", "max_iter", "solver", "pd_check_steps"),
    }[kind]
    kwargs = {k: v for k, v in params.items() if k in accepted}
    oracles = {
        "cg_steps": lambda v: int_oracle(v, 1, 2**31 - 1),
        "eps": positive_oracle,
        "delta": positive_oracle,
        "scheme": lambda v: choice_oracle(v, ("forward", "symmetric")),
        "perturbation": lambda v: choice_oracle(v, ("objective", "linear")),
        "tol": positive_oracle,
        "max_iter": lambda v: int_oracle(v, 1),
        "solver": lambda v: choice_oracle(v, ("auto", "iterative")),
        "pd_check_steps": lambda v: int_oracle(v, 0, 10_000),
    }
    expected = {k: oracles[k](v) for k, v in kwargs.items()}
    if not isinstance(inner, fm.InnerLoop):
        expected["inner"] = Bad((TypeError,))
    elif kind in ("IMAML", "FOBMAML", "Exact") and inner.lam <= 0:
        expected["inner"] = Bad((ValueError,))
    else:
        expected["inner"] = inner
    expected = combine(expected)
    est = check_construct(lambda: cls(inner, **kwargs), expected)
    if est is None:
        return
    params_before = est.get_params()
    assert params_before["inner"] == inner.to_dict()
    assert repr(est).startswith(kind + "(")
    # Whatever the constructor accepted must work: a call with valid tasks may fail only
    # numerically, never with a TypeError/ValueError about a stored parameter. Calls that
    # could run for long are skipped (hang guard).
    if inner.steps > 8 or getattr(est, "cg_steps", 0) > 50:
        return
    if kind == "Exact" and est.solver == "iterative" and 500 < est.max_iter < 2**63:
        return
    try:
        g = est.meta_gradient(SMALL_X, SMALL_QUAD)
    except NUMERIC:
        return
    finite_array(g, (3,))
    assert est.get_params() == params_before


@st.composite
def quad_constructor_args(draw):
    q = draw(quad_data())
    m, n = q.b.shape
    args = {"A": q.A, "b": q.b}
    if q.separate:
        which = draw(st.sampled_from(["both", "B", "c"]))
        if which in ("both", "B"):
            args["B"] = q.B
        if which in ("both", "c"):
            args["c"] = q.c
    structural = draw(
        st.sampled_from(["none"] * 6 + ["asymmetric", "zero_tasks", "zero_dim", "mismatch_m"])
    )
    expected = None
    if structural == "asymmetric" and n > 1:
        A = q.A.copy()
        A[0, 0, n - 1] += 1.0
        args["A"], expected = A, ValueError
    elif structural == "zero_tasks":
        args = {"A": np.zeros((0, n, n)), "b": np.zeros((0, n))}
        expected = ValueError
    elif structural == "zero_dim":
        args = {"A": np.zeros((m, 0, 0)), "b": np.zeros((m, 0))}
        expected = ValueError
    elif structural == "mismatch_m":
        args["b"] = np.zeros((m + 1, n))
        expected = ValueError
    if expected is not None:
        return args, None, (expected,)
    name = draw(st.sampled_from(sorted(args)))
    var = draw(variants(args[name], optional=name in ("B", "c")))
    note(f"{name}: {var.kind} {var.how}")
    refs = {k: v for k, v in args.items()}
    refs[name] = var.reference
    args[name] = var.value
    return args, (refs if var.reference is not None else None), EXPECTED.get(var.kind)


@fuzz_settings(200)
@given(case=quad_constructor_args(), phi_seed=st.integers(0, 2**32 - 1))
def test_quadratic_tasks_constructor(case, phi_seed):
    args, refs, expected = case
    if expected is not None:
        expect_raises(expected, fm.QuadraticTasks, **args)
        return
    # A valid variant of valid arrays (any layout, real dtype or magnitude) is accepted.
    tasks = fm.QuadraticTasks(**args)
    A = refs["A"]
    m, n = refs["b"].shape
    assert (tasks.num_tasks, tasks.dim, len(tasks)) == (m, n, m)
    assert repr(tasks).startswith("QuadraticTasks(")
    np.testing.assert_array_equal(tasks.A, A)
    B = refs.get("B", A) if ("B" in refs or "c" in refs) else A
    c = refs.get("c", refs["b"]) if ("B" in refs or "c" in refs) else refs["b"]
    phi = np.random.default_rng(phi_seed).uniform(-1, 1, (m, n))
    for which, (M, v) in (("support", (A, refs["b"])), ("query", (B, c))):
        got, err = attempt(tasks.losses, phi, which=which)
        with np.errstate(all="ignore"):
            want, scale = q_loss(M, v, phi), q_loss_scale(M, v, phi)
        if err is not None:
            assert isinstance(err, FloatingPointError) and not np.all(scale < 1e300), err
            continue
        finite_array(got, (m,))
        if np.all(scale < 1e300):
            close(got, want, atol=1e-13 * scale + 1e-300)


LAYER_VALUES = st.one_of(
    st.lists(st.integers(1, 4), min_size=2, max_size=4),
    st.sampled_from(
        [
            [],
            [2],
            [0, 1],
            [1, -1],
            [1.0, 2],
            [True, 1],
            "12",
            None,
            3,
            [[1], [2]],
            np.array([1, 2]),
            np.array([[1, 2]]),
            (1, 2),
            range(1, 3),
            {1, 2},
            [np.int64(2), np.uint8(1)],
            [1, 2**63],
        ]
    ),
)


def layers_oracle(layers):
    if isinstance(layers, np.ndarray) and layers.ndim == 1:
        layers = layers.tolist()
    if isinstance(layers, (str, bytes)) or not isinstance(layers, (list, tuple, range)):
        return Bad((TypeError,))
    entries = [int_oracle(d, 1) for d in layers]
    bad = [e for e in entries if isinstance(e, Bad)]
    if bad:
        return Bad(tuple({c for b in bad for c in b.exc}))
    return entries if len(entries) >= 2 else Bad((ValueError,))


@st.composite
def mlp_constructor_args(draw):
    d = draw(mlp_data())
    args = {"X_support": d.Xs, "Y_support": d.Ys}
    if d.Xq is not None:
        args.update(X_query=d.Xq, Y_query=d.Yq)
    kw = {"layers": d.layers, "activation": d.activation, "loss": d.loss}
    mode = draw(
        st.sampled_from(
            ["variant"] * 5
            + ["layers", "activation", "loss", "half_query", "k0", "m0", "labels", "mismatch"]
        )
    )
    m, k = d.Xs.shape[:2]
    if mode == "layers":
        kw["layers"] = draw(LAYER_VALUES)
        lo = layers_oracle(kw["layers"])
        if isinstance(lo, Bad):
            return args, kw, lo.exc
        if max(lo) >= 2**31:  # beyond the kernels' index range
            return args, kw, (ValueError, TypeError)
        if lo[0] != d.layers[0] or (d.loss == "mse" and lo[-1] != d.layers[-1]):
            return args, kw, (ValueError,)
        if d.loss == "xent" and int(d.Ys.max()) >= lo[-1]:
            return args, kw, (ValueError,)
        if d.Xq is not None and d.loss == "xent" and int(d.Yq.max()) >= lo[-1]:
            return args, kw, (ValueError,)
        return args, kw, None
    if mode in ("activation", "loss"):
        kw[mode] = draw(st.sampled_from(["RELU", "sigmoid", "", None, 0, "mse ", "xent"]))
        if mode == "loss" and kw["loss"] == "xent" and d.loss == "xent":
            return args, kw, None
        return args, kw, (ValueError, TypeError)
    if mode == "half_query":
        args = {"X_support": d.Xs, "Y_support": d.Ys, "X_query": d.Xs}
        return args, kw, (ValueError,)
    if mode == "k0":
        args = {"X_support": d.Xs[:, :0], "Y_support": d.Ys[:, :0]}
        return args, kw, (ValueError,)
    if mode == "m0":
        args = {"X_support": d.Xs[:0], "Y_support": d.Ys[:0]}
        return args, kw, (ValueError,)
    if mode == "mismatch":
        args = {"X_support": d.Xs, "Y_support": d.Ys, "X_query": d.Xs[:0], "Y_query": d.Ys[:0]}
        if m > 1:
            args.update(X_query=d.Xs[:1], Y_query=d.Ys[:1])
        return args, kw, (ValueError,)
    if mode == "labels":
        if d.loss == "mse":
            return args, kw, None
        how = draw(st.sampled_from(["float", "bool", "negative", "too_big", "uint8", "int8"]))
        Y = d.Ys
        if how == "float":
            args["Y_support"] = Y.astype(float)
            return args, kw, (TypeError,)
        if how == "bool":
            args["Y_support"] = Y > 0
            return args, kw, (TypeError,)
        if how == "negative":
            Y = Y.copy()
            Y.flat[0] = -1
            args["Y_support"] = Y
            return args, kw, (ValueError,)
        if how == "too_big":
            Y = Y.copy()
            Y.flat[-1] = d.layers[-1]
            args["Y_support"] = Y
            return args, kw, (ValueError,)
        args["Y_support"] = Y.astype(how)
        return args, kw, None
    names = [n for n in args if not (d.loss == "xent" and n.startswith("Y"))]
    name = draw(st.sampled_from(sorted(names)))
    var = draw(variants(args[name], optional=name.endswith("query")))
    note(f"{name}: {var.kind} {var.how}")
    args[name] = var.value
    return args, kw, EXPECTED.get(var.kind, "contract" if var.kind == "extreme" else None)


@fuzz_settings(200)
@given(case=mlp_constructor_args(), seed=st.integers(0, 2**32 - 1))
def test_mlp_tasks_constructor(case, seed):
    args, kw, expected = case
    if expected not in (None, "contract"):
        expect_raises(expected, fm.MLPTasks, **args, **kw)
        return
    tasks = fm.MLPTasks(**args, **kw)
    layers = [int(d) for d in kw["layers"]]
    m = np.asarray(args["X_support"]).shape[0]
    assert (tasks.num_tasks, tasks.dim) == (m, fm.mlp.num_params(layers))
    assert tasks.layers == layers and repr(tasks).startswith("MLPTasks(")
    phi = np.random.default_rng(seed).uniform(-1, 1, tasks.dim)
    got, err = attempt(tasks.losses, phi)
    if expected == "contract":  # scaled magnitudes: finite or FloatingPointError
        if err is not None:
            assert isinstance(err, FloatingPointError), err
            return
        finite_array(got, (m,))
        return
    assert err is None, err
    with np.errstate(all="ignore"):
        X = np.asarray(np.asarray(args["X_support"]), dtype=float)
        Y = np.asarray(args["Y_support"])
        Y = Y.astype(np.int64) if kw["loss"] == "xent" else Y.astype(float)
        want = np_mlp_losses(np.tile(phi, (m, 1)), X, Y, layers, kw["activation"], kw["loss"])
    close(finite_array(got, (m,)), want, atol=1e-12 * (1 + np.abs(want)))


# ===========================================================================================
# 2. Estimators: every method, every family, every variant of x
# ===========================================================================================
METHODS = ("meta_gradient", "task_gradients", "value_and_gradient", "estimate")


def run_method(est, method, x, tasks, losses=False, errors="raise"):
    if method == "estimate":
        return est.estimate(x, tasks, losses=losses, errors=errors)
    return getattr(est, method)(x, tasks)


def check_method_result(result, method, m, n, losses):
    if method == "meta_gradient":
        finite_array(result, (n,))
    elif method == "task_gradients":
        finite_array(result, (m, n))
    elif method == "value_and_gradient":
        loss, g = result
        finite_float(loss, "loss")
        finite_array(g, (n,), "gradient")
    else:
        assert isinstance(result, fm.Estimate)
        finite_array(result.task_gradients, (m, n), "task_gradients")
        finite_array(result.gradient, (n,), "gradient")
        assert result.status.ok.all()
        if losses:
            finite_array(result.losses, (m,), "losses")
        else:
            assert result.losses is None


def as_tuple(result):
    if isinstance(result, fm.Estimate):
        return (result.task_gradients, result.gradient, result.losses)
    return result if isinstance(result, tuple) else (result,)


@fuzz_settings(500)
@given(
    data=families(),
    est=estimators(),
    method=st.sampled_from(METHODS),
    losses=st.booleans(),
    x_seed=st.integers(0, 2**32 - 1),
    st_data=st.data(),
)
def test_estimator_methods(data, est, method, losses, x_seed, st_data):
    tasks = batch_of(data)
    m, n = tasks.num_tasks, tasks.dim
    x0 = np.random.default_rng(x_seed).uniform(-1.0, 1.0, n)
    var = st_data.draw(variants(x0), label="x")
    params_before = est.get_params()
    if var.kind in EXPECTED:
        expect_raises(EXPECTED[var.kind], run_method, est, method, var.value, tasks, losses)
        return
    result, err = attempt(run_method, est, method, var.value, tasks, losses)
    ref_result, ref_err = attempt(run_method, est, method, var.reference, tasks, losses)
    # Bit-identical to the same call on the C-contiguous float64 array, errors included.
    assert type(err) is type(ref_err), (err, ref_err)
    if err is not None:
        assert isinstance(err, NUMERIC), f"valid x ({var.kind} {var.how}) rejected: {err!r}"
        assert str(err) == str(ref_err)
    else:
        check_method_result(result, method, m, n, losses)
        same_bits(as_tuple(result), as_tuple(ref_result), "layout invariance")
    assert est.get_params() == params_before
    # errors="return" agrees with errors="raise": failed rows are NaN, the mean is over the
    # successful tasks, and a fully successful batch gives the same bits. (Asking for the
    # losses can fail a task, when f overflows at the adapted point.)
    losses = losses if method == "estimate" else method == "value_and_gradient"
    full, e2 = attempt(est.estimate, var.reference, tasks, losses=losses, errors="return")
    if e2 is not None:
        assert isinstance(e2, NUMERIC), e2  # an error that is not per-task
        return
    ok = full.status.ok
    assert full.task_gradients.shape == (m, n) and full.gradient.shape == (n,)
    assert np.isnan(full.task_gradients[~ok]).all()
    assert np.isfinite(full.task_gradients[ok]).all(), "NaN/Inf in a successful task's row"
    if losses:
        assert np.isnan(full.losses[~ok]).all()
        assert np.isfinite(full.losses[ok]).all(), "NaN/Inf in a successful task's loss"
    else:
        assert full.losses is None
    if ok.any():
        assert np.isfinite(full.gradient).all(), f"NaN/Inf mean over good tasks: {full.gradient}"
        with np.errstate(all="ignore"):
            mean = full.task_gradients[ok].sum(axis=0) / ok.sum()
        same_bits(full.gradient, mean, "mean over the successful tasks, in task order")
    else:
        assert np.isnan(full.gradient).all()
    if ok.all():
        assert ref_err is None, "errors='raise' raised while every task succeeded"
        if method == "meta_gradient":
            same_bits(ref_result, full.gradient, "meta_gradient vs estimate")
        elif method == "task_gradients":
            same_bits(ref_result, full.task_gradients, "task_gradients vs estimate")
        elif method == "value_and_gradient":
            same_bits(ref_result[1], full.gradient, "value_and_gradient vs estimate")
            assert ref_result[0] == float(np.mean(full.losses))
        else:
            same_bits(ref_result.task_gradients, full.task_gradients, "estimate twice")
    else:
        assert isinstance(ref_err, NUMERIC), "a task failed but errors='raise' did not raise"


@fuzz_settings(100)
@given(
    est=estimators(),
    tasks=st.sampled_from(
        [None, "tasks", [1, 2], np.zeros((2, 3)), SMALL_QUAD.A, fm.datasets.quadratic_tasks]
    ),
    errors=st.sampled_from(["raise", "return", "ignore", None, 1]),
)
def test_estimator_bad_tasks_and_errors(est, tasks, errors):
    expect_raises(TypeError, est.meta_gradient, SMALL_X, tasks)
    expect_raises(TypeError, est.task_gradients, SMALL_X, tasks)
    expect_raises(TypeError, est.value_and_gradient, SMALL_X, tasks)
    if errors in ("raise", "return"):
        return
    expect_raises((ValueError, TypeError), est.estimate, SMALL_X, SMALL_QUAD, errors=errors)


# ===========================================================================================
# 3. Correctness against NumPy on quadratic tasks (K <= 4)
# ===========================================================================================
@fuzz_settings(300)
@given(
    q=quad_data(),
    est=estimators(),
    x=st.integers(1, 4).flatmap(lambda n: floats_array((n,), -3.0, 3.0)),
)
def test_estimators_match_numpy_on_quadratics(q, est, x):
    n = q.b.shape[1]
    x = np.resize(x, n)
    inner = est.inner
    if isinstance(est, fm.IMAML):
        # CG compared step by step: only where (I + A/lam) is well conditioned and SPD.
        q = q._replace(A=q.A @ q.A.transpose(0, 2, 1) / n)
        q = q._replace(A=(q.A + q.A.transpose(0, 2, 1)) / 2)
        if not q.separate:
            q = q._replace(B=q.A)
        assume(inner.lam >= 0.1)
    tasks = q.tasks()
    G, err = attempt(est.task_gradients, x, tasks)
    phi, traj = np_inner(q, x, inner)
    gf = mv(q.B, phi) - q.c  # grad f(phi_K)
    amp = growth(q, inner)
    scale = max(1.0, np.abs(phi).max(), np.abs(x).max(), *(np.abs(t).max() for t in traj))
    gscale = max(1.0, np.abs(gf).max())
    if isinstance(est, fm.Exact):
        lam = inner.lam
        H = q.A + lam * np.eye(n)
        eig = np.linalg.eigvalsh(H)
        if eig.min() <= 1e-3 * max(1.0, np.abs(eig).max()):
            if est.solver == "auto" and eig.min() < -1e-8 * max(1.0, np.abs(eig).max()):
                # The Cholesky factorization of A + lam I fails.
                assert isinstance(err, fm.NotPositiveDefiniteError), (err, G)
            elif err is not None:
                # Iteratively, negative curvature is caught unless the probe is off or
                # the iterates never meet it (documented); near-singular: either outcome.
                assert isinstance(err, NUMERIC), err
            return
        if est.solver == "iterative":
            if err is not None:
                assert isinstance(err, NUMERIC), err
                return
            finite_array(G, q.b.shape)
            return
        assert err is None, err
        star = np.linalg.solve(H, (q.b + lam * x)[..., None])[..., 0]
        want = lam * np.linalg.solve(H, (mv(q.B, star) - q.c)[..., None])[..., 0]
        cond = eig.max() / eig.min() if eig.min() > 0 else np.inf
        close(G, want, atol=1e-11 * cond * max(1.0, np.abs(want).max()), rtol=1e-9 * cond)
        loss, gmean = est.value_and_gradient(x, tasks)
        same_bits(gmean, est.meta_gradient(x, tasks))
        wl = q_loss(q.B, q.c, star).mean()
        close(loss, wl, atol=1e-10 * cond * max(1.0, q_loss_scale(q.B, q.c, star).max()))
        return
    assert err is None, f"no failure possible with K <= 4 and these sizes: {err!r}"
    finite_array(G, q.b.shape)
    tol = 1e-12 * amp * scale * gscale * (1 + inner.lam)
    if isinstance(est, fm.FOMAML):
        want = gf
    elif isinstance(est, fm.Reptile):
        want = (x - phi) / (inner.lr * inner.steps)
        tol = 1e-12 * amp * scale / (inner.lr * inner.steps)
    elif isinstance(est, (fm.MAML, fm.HFMAML)):
        J = np_jacobian(q, inner)
        want = np.einsum("mji,mj->mi", J, gf)
        tol *= max(1.0, np.abs(J).max()) * n
        if isinstance(est, fm.HFMAML):
            gmax = max(np.abs(mv(q.A, t) - q.b).max() for t in traj)
            tol += 1e-13 * (1 + gmax + scale) / est.eps * amp * gscale * inner.steps
    elif isinstance(est, fm.IMAML):
        lam = inner.lam
        M = np.eye(n) + q.A / lam
        want = np.stack(
            [
                ref.conjugate_gradient(lambda v, Mi=Mi: Mi @ v, g, est.cg_steps)
                for Mi, g in zip(M, gf)
            ]
        )
        cond = np.linalg.cond(M).max()
        tol *= cond * (1 + est.cg_steps)
    else:  # FOBMAML
        d, lam = est.delta, inner.lam
        if est.perturbation == "objective":
            plus, _ = np_inner(q, x, inner, s=d)
            minus, _ = np_inner(q, x, inner, s=-d)
        else:
            plus, _ = np_inner(q, x, inner, v=gf, t=d)
            minus, _ = np_inner(q, x, inner, v=gf, t=-d)
        if est.scheme == "symmetric":
            want = lam * (minus - plus) / (2 * d)
        else:
            want = lam * (phi - plus) / d
        pscale = max(scale, np.abs(plus).max(), np.abs(minus).max())
        tol = 1e-13 * amp * pscale * lam / d * inner.steps + 1e-12 * np.abs(want).max()
    close(G, want, atol=tol, rtol=1e-8, name=type(est).__name__)
    # The batch estimate is the mean of the rows; value_and_gradient gives F_K with it.
    g = est.meta_gradient(x, tasks)
    same_bits(g, G.sum(axis=0) / len(G), "meta_gradient = mean of task_gradients")
    loss, g2 = est.value_and_gradient(x, tasks)
    same_bits(g2, g)
    FK = fm.meta_loss_k(x, tasks, inner)
    close(loss, FK, atol=1e-13 * amp * q_loss_scale(q.B, q.c, phi).max(), name="F_K")
    close(FK, q_loss(q.B, q.c, phi).mean(), atol=1e-12 * amp * q_loss_scale(q.B, q.c, phi).max())


@fuzz_settings(150)
@given(q=quad_data(), inner=inner_loops(), x_seed=st.integers(0, 2**32 - 1), st_data=st.data())
def test_meta_loss_adapt_evaluate(q, inner, x_seed, st_data):
    tasks = q.tasks()
    m, n = q.b.shape
    x0 = np.random.default_rng(x_seed).uniform(-2.0, 2.0, n)
    var = st_data.draw(variants(x0), label="x")
    fns = {
        "meta_loss": lambda x: fm.meta_loss_k(x, tasks, inner),
        "adapt": lambda x: fm.adapt(x, tasks, inner),
        "evaluate": lambda x: fm.evaluate(x, tasks, inner),
    }
    for name, fn in fns.items():
        if var.kind in EXPECTED:
            expect_raises(EXPECTED[var.kind], fn, var.value)
            continue
        got, err = attempt(fn, var.value)
        ref, ref_err = attempt(fn, var.reference)
        assert type(err) is type(ref_err), (name, err, ref_err)
        if err is not None:
            assert isinstance(err, FloatingPointError), (name, err)
            assert var.kind == "extreme", f"{name} failed on moderate input: {err}"
            continue
        if name == "evaluate":
            same_bits(tuple(got), tuple(ref), name)
        else:
            same_bits(got, ref, name)
        if var.kind == "extreme":
            if name == "meta_loss":
                finite_float(got, name)
            elif name == "adapt":
                finite_array(got, (m, n), name)
            else:
                finite_float(got.loss, "loss")
                finite_float(got.loss_before, "loss_before")
                finite_array(got.task_loss, (m,), "task_loss")
            continue
        x = var.reference
        phi, _ = np_inner(q, x, inner)
        amp = growth(q, inner)
        if name == "adapt":
            close(finite_array(got, (m, n)), phi, atol=1e-13 * amp * max(1, np.abs(phi).max()))
        elif name == "meta_loss":
            want = q_loss(q.B, q.c, phi).mean()
            close(finite_float(got), want, atol=1e-12 * amp * q_loss_scale(q.B, q.c, phi).max())
        else:
            assert got.accuracy is None and got.accuracy_before is None
            assert got.task_accuracy is None
            fl = q_loss(q.B, q.c, phi)
            close(
                finite_array(got.task_loss, (m,)),
                fl,
                atol=1e-12 * amp * q_loss_scale(q.B, q.c, phi).max(),
            )
            assert finite_float(got.loss) == float(np.mean(got.task_loss))
            xb = np.broadcast_to(x, (m, n))
            close(
                finite_float(got.loss_before),
                q_loss(q.B, q.c, xb).mean(),
                atol=1e-12 * (1 + q_loss_scale(q.B, q.c, xb).max()),
            )
            assert set(got.as_dict()) == {"loss", "accuracy", "loss_before", "accuracy_before"}


@fuzz_settings(100)
@given(d=mlp_data(), inner=inner_loops(), x_seed=st.integers(0, 2**32 - 1))
def test_evaluate_mlp(d, inner, x_seed):
    tasks = d.tasks()
    m, n = tasks.num_tasks, tasks.dim
    x = np.random.default_rng(x_seed).uniform(-1.0, 1.0, n)
    ev, err = attempt(fm.evaluate, x, tasks, inner)
    if err is not None:
        assert isinstance(err, FloatingPointError), err
        return
    finite_float(ev.loss)
    finite_float(ev.loss_before)
    finite_array(ev.task_loss, (m,))
    phi = fm.adapt(x, tasks, inner)
    Xq, Yq = d.query
    close(ev.task_loss, np_mlp_losses(phi, Xq, Yq, d.layers, d.activation, d.loss), atol=1e-10)
    before = np_mlp_losses(np.tile(x, (m, 1)), Xq, Yq, d.layers, d.activation, d.loss)
    close(ev.loss_before, before.mean(), atol=1e-10)
    assert ev.loss == fm.meta_loss_k(x, tasks, inner)
    if d.loss == "mse":
        assert ev.accuracy is None and ev.task_accuracy is None and ev.accuracy_before is None
        return
    finite_array(ev.task_accuracy, (m,))
    assert 0.0 <= ev.accuracy <= 1.0 and 0.0 <= ev.accuracy_before <= 1.0
    logits = np.stack([np_forward(p, xq, d.layers, d.activation) for p, xq in zip(phi, Xq)])
    top2 = np.sort(logits, axis=-1)[..., -2:] if logits.shape[-1] > 1 else None
    if top2 is None or (np.abs(top2[..., 1] - top2[..., 0]) > 1e-9).all():  # no ties
        acc = (logits.argmax(axis=-1) == Yq).mean(axis=1)
        close(ev.task_accuracy, acc, atol=1e-12)


# ===========================================================================================
# 4. Extreme magnitudes: the contract only
# ===========================================================================================
MAGNITUDES = st.sampled_from([0, 0, 0, -300, -150, 150, 300, 307, 308, 308])


@fuzz_settings(300)
@given(
    q=quad_data(),
    exps=st.tuples(*([MAGNITUDES] * 5)),
    est=estimators(),
    x=st.integers(1, 4).flatmap(lambda n: floats_array((n,), -1.7, 1.7)),
    which=st.sampled_from(["estimate", "meta_loss", "adapt", "evaluate", "family"]),
    clone=st.booleans(),
)
def test_extreme_magnitudes(q, exps, est, x, which, clone):
    n = q.b.shape[1]
    if clone:  # identical tasks: sums over tasks are at their largest
        q = Quad(*(np.broadcast_to(a[:1], a.shape).copy() for a in q[:4]), q.separate)

    def scaled(a, e):
        with np.errstate(all="ignore"):
            out = a * 10.0**e
        return np.where(np.isfinite(out), out, np.sign(a) * FMAX)

    A, b, B, c, x = (scaled(a, e) for a, e in zip((q.A, q.b, q.B, q.c, np.resize(x, n)), exps))
    tasks, err = attempt(fm.QuadraticTasks, A, b, B, c)
    if err is not None:
        assert isinstance(err, ValueError) and "symmetric" in str(err), err
        return
    m = q.b.shape[0]
    inner = est.inner
    if which == "estimate":
        full, err = attempt(est.estimate, x, tasks, losses=True)
        if err is None:
            check_method_result(full, "estimate", m, n, True)
            loss, g = est.value_and_gradient(x, tasks)
            finite_float(loss, "value_and_gradient loss")
            finite_array(g, (n,))
    elif which == "meta_loss":
        got, err = attempt(fm.meta_loss_k, x, tasks, inner)
        if err is None:
            finite_float(got)
    elif which == "adapt":
        got, err = attempt(fm.adapt, x, tasks, inner)
        if err is None:
            finite_array(got, (m, n))
    elif which == "evaluate":
        got, err = attempt(fm.evaluate, x, tasks, inner)
        if err is None:
            finite_float(got.loss, "loss")
            finite_float(got.loss_before, "loss_before")
            finite_array(got.task_loss, (m,), "task_loss")
    else:
        for fn in ("losses", "gradients", "hvps"):
            args = (x, x) if fn == "hvps" else (x,)
            got, err = attempt(getattr(tasks, fn), *args, which="query")
            if err is None:
                finite_array(got, (m,) if fn == "losses" else (m, n), fn)
    if err is not None:
        assert isinstance(err, NUMERIC), err


# ===========================================================================================
# 5. The families' own functions: losses, gradients, hvps
# ===========================================================================================
@fuzz_settings(200)
@given(
    data=families(),
    fn=st.sampled_from(["losses", "gradients", "hvps"]),
    which=st.sampled_from(["support", "query", "support", "query", "Support", None, 0]),
    per_task=st.booleans(),
    seed=st.integers(0, 2**32 - 1),
    st_data=st.data(),
)
def test_family_functions(data, fn, which, per_task, seed, st_data):
    tasks = batch_of(data)
    m, n = tasks.num_tasks, tasks.dim
    rng = np.random.default_rng(seed)
    phi0 = rng.uniform(-1.0, 1.0, (m, n) if per_task else n)
    v0 = rng.uniform(-1.0, 1.0, (m, n) if st_data.draw(st.booleans()) else n)
    target = st_data.draw(st.sampled_from(["phi", "v"] if fn == "hvps" else ["phi"]))
    var = st_data.draw(variants(phi0 if target == "phi" else v0), label=target)
    phi, v = (var.value, v0) if target == "phi" else (phi0, var.value)

    def call(phi, v):
        args = (phi, v) if fn == "hvps" else (phi,)
        return getattr(tasks, fn)(*args, which=which)

    if which not in ("support", "query"):
        expect_raises(ValueError, call, phi0, v0)
        return
    if var.kind in EXPECTED:
        expect_raises(EXPECTED[var.kind], call, phi, v)
        return
    got, err = attempt(call, phi, v)
    ref_phi, ref_v = (var.reference, v0) if target == "phi" else (phi0, var.reference)
    ref, ref_err = attempt(call, ref_phi, ref_v)
    assert type(err) is type(ref_err)
    if err is not None:
        assert isinstance(err, FloatingPointError) and var.kind == "extreme", err
        return
    same_bits(got, ref, "layout invariance")
    finite_array(got, (m,) if fn == "losses" else (m, n), fn)
    if var.kind == "extreme":
        return
    P = np.ascontiguousarray(np.broadcast_to(ref_phi, (m, n)))
    V = np.ascontiguousarray(np.broadcast_to(ref_v, (m, n)))
    if isinstance(data, Quad):
        M, c = (data.A, data.b) if which == "support" else (data.B, data.c)
        if fn == "losses":
            close(got, q_loss(M, c, P), atol=1e-13 * (1 + q_loss_scale(M, c, P)))
        elif fn == "gradients":
            close(got, mv(M, P) - c, atol=1e-13 * (1 + mv(np.abs(M), np.abs(P)) + np.abs(c)))
        else:
            close(got, mv(M, V), atol=1e-13 * (1 + mv(np.abs(M), np.abs(V))))
        return
    X, Y = (data.Xs, data.Ys) if which == "support" else data.query
    if fn == "losses":
        want = np_mlp_losses(P, X, Y, data.layers, data.activation, data.loss)
        close(got, want, atol=1e-12 * (1 + np.abs(want)))
    elif len(data.layers) == 2:  # linear model: closed forms
        for i in range(m):
            g, hv = np_linear_grad_hvp(P[i], X[i], Y[i], data.layers[-1], data.loss, V[i])
            close(got[i], g if fn == "gradients" else hv, atol=1e-12 * (1 + np.abs(got[i]).max()))
    elif fn == "hvps":
        # Exact HVPs are linear in v and symmetric: <w, H v> = <v, H w>.
        twice = call(ref_phi, 2.0 * V)
        same_bits(twice, 2.0 * got, "H(2v) = 2 Hv")
        W = rng.uniform(-1.0, 1.0, (m, n))
        Hw = call(ref_phi, W)
        lhs, rhs = np.einsum("mi,mi->m", W, got), np.einsum("mi,mi->m", V, Hw)
        bound = (
            1e-9 * (np.abs(W) @ np.abs(got).T).diagonal()
            + 1e-9 * (np.abs(V) @ np.abs(Hw).T).diagonal()
        )
        assert (np.abs(lhs - rhs) <= bound + 1e-12).all(), (lhs, rhs)


@fuzz_settings(50)
@given(
    data=families(),
    index=st.one_of(
        st.integers(-4, 4),
        st.slices(4),
        st.lists(st.integers(-3, 2), max_size=3),
        st.sampled_from([[], np.array([], dtype=int), "a", 0.5, None, (0, 0), [True]]),
    ),
)
def test_task_batch_indexing(data, index):
    tasks = batch_of(data)
    m = tasks.num_tasks
    try:
        sel = np.atleast_1d(np.arange(m)[index])
    except (IndexError, TypeError, ValueError) as exc:
        # Out of range or not an index: the conventional IndexError (or the documented ones).
        expect_raises((IndexError, TypeError, ValueError), tasks.__getitem__, index)
        note(f"numpy: {exc!r}")
        return
    if sel.ndim != 1 or sel.size == 0:
        expect_raises((IndexError, ValueError), tasks.__getitem__, index)
        return
    sub = tasks[index]
    assert type(sub) is type(tasks) and sub.num_tasks == sel.size and sub.dim == tasks.dim
    phi = np.linspace(-1.0, 1.0, tasks.dim)
    same_bits(sub.losses(phi), tasks.losses(phi)[sel])


# ===========================================================================================
# 6. MLP parameters and prediction
# ===========================================================================================
@fuzz_settings(150)
@given(
    layers=LAYER_VALUES,
    seed=st.one_of(st.integers(0, 2**64), WEIRD_SCALARS),
    lead=st.sampled_from([(), (2,), (2, 3), (0,)]),
    activation=st.sampled_from(["relu", "tanh", "relu", "tanh", "gelu", None]),
    st_data=st.data(),
)
def test_mlp_init_and_predict(layers, seed, lead, activation, st_data):
    lo, so = layers_oracle(layers), int_oracle(seed, 0)
    if isinstance(lo, Bad) or isinstance(so, Bad):
        exc = tuple(
            set((lo.exc if isinstance(lo, Bad) else ()) + (so.exc if isinstance(so, Bad) else ()))
        )
        expect_raises(exc, fm.mlp.init_params, layers, seed)
        if isinstance(lo, Bad):
            expect_raises(lo.exc, fm.mlp.num_params, layers)
        return
    n = fm.mlp.num_params(layers)
    if n > 10**6:  # [1, 2**63]: too many parameters to allocate
        expect_raises((ValueError, TypeError), fm.mlp.init_params, layers, seed)
        return
    p = fm.mlp.init_params(layers, seed)
    finite_array(p, (n,))
    same_bits(p, fm.mlp.init_params(layers, seed), "deterministic by seed")
    off = 0
    for i in range(len(lo) - 1):  # U(-1/sqrt(fan_in), 1/sqrt(fan_in)) for W and b
        size = lo[i + 1] * (lo[i] + 1)
        assert (np.abs(p[off : off + size]) <= 1.0 / np.sqrt(lo[i])).all()
        off += size
    views = fm.mlp.unflatten(p, layers)
    assert [W.shape for W, _ in views] == [(lo[i + 1], lo[i]) for i in range(len(lo) - 1)]
    X0 = np.random.default_rng(0).uniform(-2.0, 2.0, (*lead, lo[0]))
    target = st_data.draw(st.sampled_from(["params", "X"]))
    var = st_data.draw(variants(p if target == "params" else X0), label=target)
    params, X = (var.value, X0) if target == "params" else (p, var.value)
    if activation not in ("relu", "tanh"):
        expect_raises(ValueError, fm.mlp.predict, p, X0, layers, activation)
        return
    if var.kind in EXPECTED:
        expected = EXPECTED[var.kind]
        if target == "X" and var.how == "scalar" and lo[0] == 1:
            expected = None  # a 0-d X has no last dimension: ValueError
            expect_raises(ValueError, fm.mlp.predict, params, X, layers, activation)
            return
        if target == "X" and var.how == "lead":
            expected = None  # X may have any leading shape: this one is valid
        if expected is not None:
            expect_raises(expected, fm.mlp.predict, params, X, layers, activation)
            return
        ref_params, ref_X = (p, np.asarray(X, float))
    else:
        ref_params, ref_X = (var.reference, X0) if target == "params" else (p, var.reference)
    with np.errstate(all="ignore"):
        want = np_forward(ref_params, ref_X, lo, activation)
    if not np.isfinite(want).all():  # the outputs themselves overflow: a documented error
        expect_raises(FloatingPointError, fm.mlp.predict, params, X, layers, activation)
        return
    got = fm.mlp.predict(params, X, layers, activation)
    finite_array(got, (*np.shape(ref_X)[:-1], lo[-1]), "predict")
    close(got, want, atol=1e-12 * (1 + np.abs(want)))


# ===========================================================================================
# 7. Outer optimizers
# ===========================================================================================
OPTIMIZER_ARGS = {
    "GD": {"lr": positive_oracle},
    "SGD": {"lr": positive_oracle},
    "Momentum": {"lr": positive_oracle, "beta": unit_oracle},
    "Adam": {"lr": positive_oracle, "b1": unit_oracle, "b2": unit_oracle, "eps": positive_oracle},
    "ClippedGD": {"lr": positive_oracle, "clip": positive_oracle},
    "NormalizedGD": {"lr": positive_oracle},
    "SNGDM": {"lr": positive_oracle, "beta": unit_oracle},
}
PIECES = {
    "scale": {"factor": real_oracle},
    "trace": {"beta": unit_oracle},
    "ema": {"beta": unit_oracle},
    "normalize": {},
    "clip_by_norm": {"max_norm": positive_oracle},
    "scale_by_adam": {"b1": unit_oracle, "b2": unit_oracle, "eps": positive_oracle},
}


@fuzz_settings(150)
@given(
    name=st.sampled_from(sorted(OPTIMIZER_ARGS) + sorted(PIECES)),
    values=st.fixed_dictionaries(
        {k: reals(1e-3, 0.99) for k in ("lr", "beta", "b1", "b2", "eps", "clip", "factor")}
        | {"max_norm": reals(1e-3, 10.0)}
    ),
    drop=st.sets(st.sampled_from(["beta", "b1", "b2", "eps"])),
)
def test_optimizer_constructors(name, values, drop):
    if name in OPTIMIZER_ARGS:
        spec, build = OPTIMIZER_ARGS[name], getattr(fm, name)
    else:
        spec, build = PIECES[name], getattr(optim, name)
    required = {"ClippedGD": ("lr", "clip"), "trace": ("beta",), "ema": ("beta",)}
    required.update(scale=("factor",), clip_by_norm=("max_norm",))
    kwargs = {
        k: values[k] for k in spec if not (k in drop and k not in required.get(name, ("lr",)))
    }
    expected = combine({k: spec[k](v) for k, v in kwargs.items()})
    if name in PIECES:
        if isinstance(expected, Bad):
            expect_raises(expected.exc, build, **kwargs)
            return
        t = build(**kwargs)
        assert isinstance(t, optim.Transform)
        with pytest.raises(AttributeError):
            t.x = 1
        return
    opt = check_construct(lambda: build(**kwargs), expected)
    if opt is None:
        return
    params = opt.get_params()
    assert params["name"] == type(opt).__name__
    assert fm.optim.Optimizer.from_params(params) == opt
    assert hash(opt) == hash(fm.optim.Optimizer.from_params(params))
    with pytest.raises(AttributeError):
        opt.lr = 1.0


def np_optimizer(name, hp, params, grads_seq):
    """The update rules of the docstring table, written out in long double.

    Returns the final parameters and whether every intermediate quantity (state,
    update, parameters) fits in float64, i.e. whether a float64 implementation can be
    expected to produce the result rather than an overflow error.
    """
    ld = np.longdouble
    x, m, v = params.astype(ld), np.zeros(len(params), ld), np.zeros(len(params), ld)
    fits = True
    for t, g in enumerate(grads_seq, start=1):
        g = g.astype(ld)
        if name in ("GD", "SGD"):
            u = -hp["lr"] * g
        elif name == "Momentum":
            m = hp["beta"] * m + g
            u = -hp["lr"] * m
        elif name == "Adam":
            m = hp["b1"] * m + (1 - hp["b1"]) * g
            v = hp["b2"] * v + (1 - hp["b2"]) * g * g
            mh, vh = m / (1 - ld(hp["b1"]) ** t), v / (1 - ld(hp["b2"]) ** t)
            u = -hp["lr"] * mh / (np.sqrt(vh) + hp["eps"])
        elif name == "ClippedGD":
            nrm = np.sqrt((g * g).sum())
            u = -hp["lr"] * (g if nrm <= hp["clip"] else hp["clip"] * g / nrm)
        elif name == "NormalizedGD":
            nrm = np.sqrt((g * g).sum())
            u = -hp["lr"] * (g / nrm if nrm > 0 else 0 * g)
        else:  # SNGDM
            m = hp["beta"] * m + (1 - hp["beta"]) * g
            nrm = np.sqrt((m * m).sum())
            u = -hp["lr"] * (m / nrm if nrm > 0 else 0 * m)
        x = x + u
        fits = fits and all(np.abs(a).max() <= FMAX for a in (m, v, u, x))
    return x.astype(np.float64), fits


@st.composite
def optimizers(draw):
    name = draw(st.sampled_from(sorted(OPTIMIZER_ARGS)))
    hp = {
        k: draw(st.floats(1e-3, 0.999) if k != "eps" else st.floats(1e-10, 1e-3))
        for k in OPTIMIZER_ARGS[name]
    }
    if "clip" in hp:
        hp["clip"] = draw(st.floats(1e-2, 10.0))
    return name, hp, getattr(fm, name)(**hp)


WRONG_STATES = st.sampled_from([None, (), (1, 2, 3, 4), "state", [()], (optim.EmptyState(),) * 5])


@fuzz_settings(250)
@given(
    opt=optimizers(),
    n=st.integers(1, 4),
    steps=st.integers(1, 3),
    seed=st.integers(0, 2**32 - 1),
    target=st.sampled_from(["grads", "grads", "params", "state", "none"]),
    st_data=st.data(),
)
def test_optimizer_steps(opt, n, steps, seed, target, st_data):
    name, hp, opt = opt
    rng = np.random.default_rng(seed)
    x0 = rng.uniform(-2.0, 2.0, n)
    grads = [rng.uniform(-3.0, 3.0, n) for _ in range(steps)]
    if st_data.draw(st.booleans()):
        grads[0] = np.zeros(n)  # a zero gradient: no NaN from the normalized methods
    state = opt.init(x0)
    if target == "state":
        bad = st_data.draw(WRONG_STATES)
        expect_raises(TypeError, opt.update, grads[0], bad, x0)
        expect_raises(TypeError, opt.step, x0, grads[0], bad)
        other = fm.Adam(0.1) if name != "Adam" else fm.Momentum(0.1)
        expect_raises((TypeError, ValueError), opt.step, x0, grads[0], other.init(x0))
        if name in ("Momentum", "Adam", "SNGDM"):  # a state for another dimension
            expect_raises(ValueError, opt.step, x0, grads[0], opt.init(np.ones(n + 1)))
        return
    if target in ("grads", "params"):
        var = st_data.draw(variants(grads[0] if target == "grads" else x0), label=target)
        g_in, x_in = (var.value, x0) if target == "grads" else (grads[0], var.value)
        if var.kind in EXPECTED:
            expected = EXPECTED[var.kind]
            expect_raises(expected, opt.step, x_in, g_in, state)
            if target == "grads":
                expect_raises(expected, opt.update, g_in, state, x0)
            return
        if target == "grads":
            grads[0] = var.reference
        else:
            x0 = var.reference
            state = opt.init(x0)
        extreme = var.kind == "extreme"
    else:
        g_in, x_in, extreme = grads[0], x0, False
    with np.errstate(all="ignore"):
        want, fits = np_optimizer(name, hp, x0, grads)
        nonzero = np.abs(np.concatenate(grads + [x0]))
    nonzero = nonzero[nonzero > 0]
    # Subnormal inputs may underflow to a zero step; elsewhere the result is determined.
    determined = fits and (nonzero.size == 0 or nonzero.min() >= 1e-300)
    # Neither params nor state are modified; the state's arrays are read-only.
    x_copy = np.array(x_in, dtype=float, copy=True) if not isinstance(x_in, list) else None
    x, state, err = x_in, state, None
    for i, g in enumerate(grads):
        out, err = attempt(opt.step, x, g_in if i == 0 else g, state)
        if err is not None:
            break
        x, state = out
        finite_array(x, (n,), f"params after step {i + 1}")
        for leaf in state:
            for arr in leaf if isinstance(leaf, tuple) else ():
                if isinstance(arr, np.ndarray):
                    assert not arr.flags.writeable, "a state array is writeable"
    if x_copy is not None:
        np.testing.assert_array_equal(np.asarray(x_in, dtype=float), x_copy)
    if err is not None:
        assert isinstance(err, ValueError), err
        assert extreme and not determined, f"{name} failed on representable input: {err}"
        return
    if determined:
        close(x, want, atol=1e-12 * (1 + np.abs(want)), rtol=1e-9, name=name)
    if not extreme:
        updates, _ = opt.update(grads[0], opt.init(x0), x0)
        first, _ = np_optimizer(name, hp, x0, grads[:1])
        close(optim.apply_updates(x0, updates), first, atol=1e-12 * (1 + np.abs(first)))


# ===========================================================================================
# 8. meta_train, a few iterations
# ===========================================================================================
class _Sampler:
    """rng -> QuadraticTasks (for sampler mode)."""

    def __init__(self, n):
        self.n = n

    def __call__(self, rng):
        M = rng.uniform(-1, 1, (2, self.n, self.n))
        A = M @ M.transpose(0, 2, 1) / self.n + np.eye(self.n)
        return fm.QuadraticTasks((A + A.transpose(0, 2, 1)) / 2, rng.uniform(-1, 1, (2, self.n)))


@fuzz_settings(150)
@given(
    q=quad_data(psd=True),
    est=estimators(kinds=("FOMAML", "MAML", "Reptile", "FOBMAML", "IMAML", "Exact")),
    opt=optimizers(),
    iterations=st.one_of(st.integers(0, 3), WEIRD_SCALARS),
    mode=st.sampled_from(["batch", "batch", "sampler", "bad_tasks", "bad_dim"]),
    reference=st.sampled_from(["none", "none", "exact", "exact_eval", "bad", "eval_only"]),
    callback=st.sampled_from(["none", "none", "stop1", "record", "bad"]),
    progress=st.sampled_from([False, False, np.bool_(False), "no", None, 0]),
    desc=st.sampled_from([None, "fuzz", 1]),
    seed=st.one_of(st.integers(0, 10), st.sampled_from([-1, 1.5, None, "0"])),
    st_data=st.data(),
)
def test_meta_train(
    q, est, opt, iterations, mode, reference, callback, progress, desc, seed, st_data
):
    name, hp, opt = opt
    n = q.b.shape[1]
    q = q._replace(A=q.A + np.eye(n))  # strongly convex: Exact is defined
    if not q.separate:
        q = q._replace(B=q.A)
    tasks = q.tasks()
    x0 = np.linspace(-1.0, 1.0, n)
    var = st_data.draw(variants(x0), label="x0")
    source = {"batch": tasks, "sampler": _Sampler(n), "bad_tasks": q.A}.get(mode)
    if mode == "bad_dim":
        source = fm.QuadraticTasks(np.ones((1, n + 1, n + 1)), np.ones((1, n + 1)))
    exact = fm.Exact(fm.InnerLoop(steps=1, lr=0.5, lam=1.0))
    ref_kw = {
        "none": {},
        "exact": {"reference": exact},
        "exact_eval": {"reference": exact, "eval_tasks": tasks},
        "bad": {"reference": est if not isinstance(est, fm.Exact) else "exact"},
        "eval_only": {"eval_tasks": tasks},
    }[reference]
    records = []
    cb = {
        "none": None,
        "stop1": lambda t, x, rec: t == 1,
        "record": lambda t, x, rec: records.append((t, np.array(x), dict(rec))),
        "bad": "callback",
    }[callback]
    kwargs = dict(seed=seed, callback=cb, progress=progress, desc=desc, **ref_kw)

    def run(x):
        return fm.meta_train(x, source, est, opt, iterations, **kwargs)

    it = int_oracle(iterations, 0)
    problems = [
        EXPECTED.get(var.kind),
        it.exc if isinstance(it, Bad) else None,
        (TypeError, ValueError) if mode in ("bad_tasks", "bad_dim") else None,
        (TypeError, ValueError) if reference in ("bad", "eval_only") else None,
        (TypeError,) if callback == "bad" else None,
        (TypeError,) if not isinstance(progress, (bool, np.bool_)) else None,
        (TypeError,) if desc is not None and not isinstance(desc, str) else None,
        int_oracle(seed, 0).exc if isinstance(int_oracle(seed, 0), Bad) else None,
    ]
    problems = [p for p in problems if p]
    if problems:  # meta_train validates everything before the first iteration
        expect_raises(tuple({c for p in problems for c in p}), run, var.value)
        return
    if it > 5:
        return  # a valid but long run (hang guard)
    res, err = attempt(run, var.value)
    if err is not None:
        assert isinstance(err, NUMERIC) or (var.kind == "extreme" and isinstance(err, ValueError))
        return
    assert isinstance(res, fm.TrainResult)
    hist = res.history
    T = it if callback != "stop1" else min(it, 1)
    assert res.stopped_early == (callback == "stop1" and it > 1)
    assert hist["iteration"].tolist() == list(range(T + 1))
    keys = {"iteration", "meta_loss", "estimate_norm", "time"}
    if reference.startswith("exact"):
        keys |= {"exact_loss", "exact_grad_norm"}
    assert set(hist) == keys
    for key, col in hist.items():
        assert col.shape == (T + 1,) and np.isfinite(col).all(), f"history[{key!r}]: {col}"
    finite_array(res.x, (n,))
    # The loop written out.
    rng = np.random.default_rng(seed)
    x = np.array(var.reference, dtype=float)
    state = opt.init(x)
    for t in range(T + 1):
        batch = tasks if mode == "batch" else source(rng)
        loss, g = est.value_and_gradient(x, batch)
        assert hist["meta_loss"][t] == loss
        assert hist["estimate_norm"][t] == np.linalg.norm(g)
        if reference.startswith("exact"):
            el, eg = exact.value_and_gradient(x, tasks if reference == "exact_eval" else batch)
            assert hist["exact_loss"][t] == el
        if callback == "record":
            assert records[t][0] == t and np.array_equal(records[t][1], x)
        if t == T:
            break
        x, state = opt.step(x, g, state)
    same_bits(res.x, x, "final x")


# ===========================================================================================
# 9. Datasets and the thread setting
# ===========================================================================================
@fuzz_settings(60)
@given(
    m=ints(1, 3),
    n=ints(1, 4),
    kappa=reals(1.0, 1e4),
    L=reals(1e-3, 10.0),
    spread=reals(0.0, 2.0),
    seed=st.one_of(st.integers(0, 2**64), WEIRD_SCALARS),
    separate=st.sampled_from([True, False, np.bool_(True), 1, None, "yes"]),
)
def test_quadratic_tasks_dataset(m, n, kappa, L, spread, seed, separate):
    ko = real_oracle(kappa, lo=1.0)
    expected = combine(
        {
            "m": int_oracle(m, 1),
            "n": int_oracle(n, 1),
            "kappa": ko,
            "L": positive_oracle(L),
            "spread": nonneg_oracle(spread),
            "seed": int_oracle(seed, 0),
            "separate": separate if isinstance(separate, (bool, np.bool_)) else Bad((TypeError,)),
        }
    )

    def build():
        return fm.datasets.quadratic_tasks(
            m, n, kappa, L=L, task_spread=spread, seed=seed, separate_query=separate
        )

    if isinstance(expected, Bad):
        expect_raises(expected.exc, build)
        return
    if expected["m"] * expected["n"] ** 2 > 10_000:
        return  # valid but too big to draw here
    tasks = build()
    assert (tasks.num_tasks, tasks.dim) == (expected["m"], expected["n"])
    finite_array(tasks.A, (expected["m"], expected["n"], expected["n"]))
    eig = np.linalg.eigvalsh(tasks.A)
    close(eig.max(axis=1), np.full(expected["m"], expected["L"]), atol=0, rtol=1e-8)


@fuzz_settings(40)
@given(
    meta_batch=ints(1, 3),
    k_support=ints(1, 4),
    k_query=ints(1, 4),
    layers=st.sampled_from([(1, 4, 1), [1, 1], (1, 40, 40, 1), [2, 1], [1, 2], "1", None]),
    seed=st.integers(0, 2**32 - 1),
)
def test_sinusoid_sampler(meta_batch, k_support, k_query, layers, seed):
    expected = combine(
        {
            "meta_batch": int_oracle(meta_batch, 1),
            "k_support": int_oracle(k_support, 1),
            "k_query": int_oracle(k_query, 1),
            "layers": Bad((TypeError,))
            if isinstance(layers, str) or layers is None
            else (layers if layers[0] == 1 and layers[-1] == 1 else Bad((ValueError,))),
        }
    )

    def build():
        return fm.datasets.sinusoid(meta_batch, k_support, k_query, layers=layers)

    if isinstance(expected, Bad):
        expect_raises(expected.exc, build)
        return
    if expected["meta_batch"] * (expected["k_support"] + expected["k_query"]) > 10_000:
        return
    tasks = build()(np.random.default_rng(seed))
    assert tasks.num_tasks == expected["meta_batch"]
    assert tasks.X_support.shape == (expected["meta_batch"], expected["k_support"], 1)
    finite_array(tasks.losses(fm.mlp.init_params(layers, 0)), (expected["meta_batch"],))


@fuzz_settings(40)
@given(k=st.one_of(st.integers(0, 8), WEIRD_SCALARS))
def test_set_num_threads(k):
    expected = int_oracle(k, 0)
    before = fm.set_num_threads(0)
    fm.set_num_threads(before)
    try:
        if isinstance(expected, Bad):
            expect_raises(expected.exc, fm.set_num_threads, k)
            assert fm.set_num_threads(before) == before  # unchanged by the failed call
            return
        if expected >= 2**31:
            # Accepted by the Python check but beyond the C int: a TypeError from pybind11.
            expect_raises((TypeError, ValueError), fm.set_num_threads, k)
            return
        assert fm.set_num_threads(k) == before
        if expected > 0:
            assert fm.get_num_threads() == expected
        with fm.num_threads(1):
            g = fm.FOMAML(fm.InnerLoop(steps=2)).meta_gradient(SMALL_X, SMALL_QUAD)
        assert fm.get_num_threads() == (expected if expected > 0 else fm.get_num_threads())
        finite_array(g, (3,))
    finally:
        fm.set_num_threads(before)


@fuzz_settings(40)
@given(
    limit=st.one_of(st.none(), st.integers(0, 10**6), WEIRD_SCALARS),
    kind=st.sampled_from(["MAML", "HFMAML", "FOBMAML", "Exact"]),
    steps=st.integers(1, 50),
)
def test_memory_limit(limit, kind, steps):
    """The workspace cap: validated, and a call over it raises MemoryError (documented)."""
    expected = None if limit is None else int_oracle(limit, 0)
    before = fm.get_memory_limit()
    try:
        if isinstance(expected, Bad):
            expect_raises(expected.exc, fm.set_memory_limit, limit)
            assert fm.get_memory_limit() == before
            return
        assert fm.set_memory_limit(limit) == before
        assert fm.get_memory_limit() == expected
        est = getattr(fm, kind)(fm.InnerLoop(steps=steps, lr=0.5, lam=1.0))
        need = est.workspace_bytes(SMALL_QUAD)
        assert isinstance(need, int) and need > 0
        if expected is not None and need > expected:
            with pytest.raises(MemoryError, match="workspace"):
                est.meta_gradient(SMALL_X, SMALL_QUAD)
        else:
            finite_array(est.meta_gradient(SMALL_X, SMALL_QUAD), (3,))
    finally:
        fm.set_memory_limit(before)


# ===========================================================================================
# 10. Regressions: the bugs fuzzing found, as plain deterministic tests
# ===========================================================================================
def _overflowing_mean_batch():
    """Two tasks whose estimates are each finite (1e308) but whose sum overflows."""
    A = np.ones((2, 1, 1))
    return fm.QuadraticTasks(A, np.zeros((2, 1)), A, np.full((2, 1), -1e308))


def test_regression_meta_gradient_mean_of_finite_rows_is_not_inf():
    # Each task's FOMAML estimate is 1e308 (finite); their mean is 1e308, but the batch
    # mean is summed first and then divided (cpp/include/fobmaml/batch.hpp, finish_batch),
    # so it overflows and inf is returned without an error.
    tasks = _overflowing_mean_batch()
    est = fm.FOMAML(fm.InnerLoop(steps=1, lr=0.5))
    G = est.task_gradients(np.ones(1), tasks)
    finite_array(G, (2, 1), "task_gradients")
    g, err = attempt(est.meta_gradient, np.ones(1), tasks)
    if err is None:
        finite_array(g, (1,), "meta_gradient")
    else:
        assert isinstance(err, FloatingPointError), err


def test_regression_meta_loss_mean_of_finite_losses_is_not_inf():
    # Per-task query losses of 1e308 (finite): np.mean over tasks overflows in meta_loss,
    # value_and_gradient and evaluate, giving inf (with a RuntimeWarning, an error here).
    tasks = _overflowing_mean_batch()
    inner = fm.InnerLoop(steps=1, lr=1e-300)
    x = np.ones(1)
    for name, fn in [
        ("meta_loss", lambda: fm.meta_loss_k(x, tasks, inner)),
        ("evaluate", lambda: fm.evaluate(x, tasks, inner).loss),
        ("value_and_gradient", lambda: fm.FOMAML(inner).value_and_gradient(x, tasks)[0]),
    ]:
        got, err = attempt(fn)
        if err is None:
            finite_float(got, name)
        else:
            assert isinstance(err, FloatingPointError), (name, err)


def test_regression_meta_train_history_norm_overflow():
    # estimate_norm = np.linalg.norm of a finite 1e200 estimate overflowed (RuntimeWarning in
    # np.dot, inf in the history). The run is valid (NormalizedGD takes steps of length 0.1
    # whatever the estimate's size), so it must return, with the finite norm in its history.
    big = np.full((1, 2), -1e200)
    tasks = fm.QuadraticTasks(np.eye(2)[None], np.zeros((1, 2)), np.eye(2)[None], big)
    est = fm.FOMAML(fm.InnerLoop(steps=1, lr=0.1))
    res, err = attempt(
        fm.meta_train, np.zeros(2), tasks, est, fm.NormalizedGD(0.1), 1, progress=False
    )
    assert err is None, err
    norms = res.history["estimate_norm"]
    assert np.isfinite(norms).all(), res.history
    g = est.meta_gradient(np.zeros(2), tasks)
    close(norms[0], 1e200 * np.linalg.norm(g / 1e200), atol=0, rtol=1e-15)


def test_regression_apply_updates_overflow_raises_floating_point_error():
    # x + u overflowed: GD.step returned [inf] (with a RuntimeWarning). A sum that
    # overflows is now a documented FloatingPointError.
    opt = fm.GD(lr=1.0)
    x = np.array([1e308])
    expect_raises(FloatingPointError, opt.step, x, np.array([-1e308]), opt.init(x))


def test_regression_scale_overflow_raises_floating_point_error():
    # lr * grads overflowed inside scale(): a RuntimeWarning escaped before the error. An
    # overflowing step is now a documented FloatingPointError, without warnings.
    opt = fm.GD(lr=1e300)
    expect_raises(
        FloatingPointError, opt.step, np.zeros(1), np.array([1e300]), opt.init(np.zeros(1))
    )


def test_regression_adam_huge_gradient_raises_instead_of_a_zero_step():
    # g * g overflowed in scale_by_adam: nu = inf and the update was 0 (plus a RuntimeWarning),
    # whereas Adam's first step is -lr * g / (|g| + eps) = -lr * sign(g) for any scale.
    # The second moment cannot hold g^2 > 1.8e308: that is now a documented
    # FloatingPointError naming the optimizer state, instead of a silent zero step.
    opt = fm.Adam(lr=0.1)
    x = np.zeros(2)
    expect_raises(FloatingPointError, opt.step, x, np.array([1e200, -1e200]), opt.init(x))
    with pytest.raises(FloatingPointError, match="its optimizer state is not finite"):
        opt.step(x, np.array([1e200, -1e200]), opt.init(x))
    # Below the overflow, the step is -lr * sign(g).
    close(opt.step(x, np.array([1e150, -1e150]), opt.init(x))[0], [-0.1, 0.1], atol=1e-12)


def test_regression_huge_int_parameter_is_not_overflow_error():
    # check.real_scalar calls float(10**400): OverflowError, not the documented ValueError.
    expect_raises((ValueError, TypeError), fm.InnerLoop, lr=10**400)
    expect_raises((ValueError, TypeError), fm.FOBMAML, fm.InnerLoop(lam=1.0), delta=10**400)
    expect_raises((ValueError, TypeError), fm.GD, lr=10**400)


def test_regression_exact_max_iter_beyond_int64_rejected_at_construction():
    # Exact(max_iter=2**63) was accepted, then every call failed inside pybind11 with
    # "incompatible function arguments" (EstimatorConfig.max_iter is an int64). It is now
    # a ValueError at construction; the largest int64 is accepted and works.
    inner = fm.InnerLoop(lam=1.0)
    expect_raises(ValueError, fm.Exact, inner, max_iter=2**63)
    with pytest.raises(ValueError, match=r"`max_iter` must be <= 9223372036854775807"):
        fm.Exact(inner, max_iter=2**63)
    g = fm.Exact(inner, max_iter=2**63 - 1).meta_gradient(SMALL_X, SMALL_QUAD)
    close(g, fm.Exact(inner).meta_gradient(SMALL_X, SMALL_QUAD), atol=0, rtol=0)


def test_regression_predict_overflow_raises_floating_point_error():
    # mlp.predict returned inf for finite inputs whose outputs overflow (and warned). An
    # output that overflows is now a documented FloatingPointError.
    params = np.array([0.9, 0.9, 0.0])
    expect_raises(FloatingPointError, fm.mlp.predict, params, np.full((1, 2), 1e308), [2, 1])
    with pytest.raises(FloatingPointError, match="the network's output overflowed"):
        fm.mlp.predict(params, np.full((1, 2), 1e308), [2, 1])
    # Just below the overflow, the output is the finite 0.9 * (x1 + x2).
    close(fm.mlp.predict(params, np.full((1, 2), 1e307), [2, 1]), [[1.8e307]], atol=0)


def test_regression_longdouble_beyond_float64_is_a_value_error():
    # A longdouble array beyond float64's range: the cast to float64 warns (overflow in
    # cast) before float_array's finiteness check raises ValueError.
    x = np.array([np.longdouble("1e400"), 1.0], dtype=np.longdouble)
    expect_raises(ValueError, fm.FOMAML(fm.InnerLoop()).meta_gradient, np.resize(x, 3), SMALL_QUAD)


def test_regression_symmetry_check_overflow_is_a_value_error():
    # _symmetry_check computes A - A^T, which overflows for entries of +-1e308: a
    # RuntimeWarning escapes before the ValueError.
    A = np.zeros((1, 2, 2))
    A[0, 0, 1], A[0, 1, 0] = 1e308, -1e308
    expect_raises(ValueError, fm.QuadraticTasks, A, np.zeros((1, 2)))


def test_regression_zero_d_array_is_not_a_length_one_vector():
    # check.float_array ends with np.ascontiguousarray, which turns a 0-d array into shape
    # (1,). So a scalar passes as a vector of length 1: mlp.predict's own `X.ndim < 1`
    # check can never fire, and the task functions accept a scalar `phi` when n = 1 (and
    # report "got (1,)" for a scalar when n > 1).
    expect_raises(ValueError, fm.mlp.predict, np.array([2.0, 1.0]), np.float64(0.5), [1, 1])
    tasks = fm.QuadraticTasks(np.ones((1, 1, 1)), np.zeros((1, 1)))
    expect_raises(ValueError, tasks.losses, np.float64(0.5))
