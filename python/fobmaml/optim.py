r"""Outer optimizers: small composable pieces with explicit state, in the manner of optax.

A :class:`Transform` has ``init(params) -> state`` and
``update(grads, state, params=None) -> (updates, new_state)``; :func:`apply_updates`
adds the updates to the parameters. The public optimizers are compositions of the
pieces, never copies (``docs/estimators.md``, "Outer optimizers"), with :math:`G` the batch
meta-gradient estimate and :math:`\eta` the learning rate:

================  ==========================================================================
optimizer         update rule
================  ==========================================================================
``GD`` / ``SGD``  :math:`x \leftarrow x - \eta G`
``Momentum``      :math:`m \leftarrow \beta m + G;\ x \leftarrow x - \eta m`
``Adam``          standard Adam with bias correction (see :func:`scale_by_adam`)
``ClippedGD``     :math:`x \leftarrow x - \eta \min(1, c/\lVert G\rVert)\, G`
``NormalizedGD``  :math:`x \leftarrow x - \eta\, G/\lVert G\rVert`
``SNGDM``         :math:`m \leftarrow \beta m + (1-\beta)G;\ x \leftarrow x - \eta m/\lVert m\rVert`
================  ==========================================================================

and the compositions that implement them:

================  ==========================================================================
``GD``            ``chain(scale(-lr))``
``Momentum``      ``chain(trace(beta), scale(-lr))``
``Adam``          ``chain(scale_by_adam(b1, b2, eps), scale(-lr))``
``ClippedGD``     ``chain(clip_by_norm(clip), scale(-lr))``
``NormalizedGD``  ``chain(normalize(), scale(-lr))``
``SNGDM``         ``chain(ema(beta), normalize(), scale(-lr))``
================  ==========================================================================

Conventions
-----------
- The normalized methods map a zero vector to a zero update (``normalize()`` returns 0
  when the norm is 0, so the step is skipped rather than producing NaN).
- Norms are Euclidean and never overflow: NumPy's up to ``max |g_j| = 1e150``,
  ``a ||g / a||`` with ``a = max |g_j|`` above. Directions ``g / ||g||`` are always
  computed from ``g / a``, so they neither overflow nor underflow.
- States are tuples and NamedTuples of NumPy arrays and Python scalars only, so they
  pickle and can be checkpointed. Updates never modify a state in place: they return a
  new one, and the arrays inside a state are marked read-only.
- Gradients must be finite real 1-D arrays of the shape of the parameters (ValueError
  naming ``grads`` otherwise, TypeError for non-numeric dtypes).

Examples
--------
>>> import numpy as np, fobmaml as fm
>>> opt = fm.SNGDM(lr=0.1, beta=0.9)
>>> x = np.zeros(3)
>>> state = opt.init(x)
>>> x, state = opt.step(x, np.array([3.0, 0.0, 4.0]), state)
>>> x
array([-0.06,  0.  , -0.08])
"""

from __future__ import annotations

import dataclasses
import inspect
from typing import Any, Callable, NamedTuple

import numpy as np

from . import _validation as check
from ._frozen import frozen, store
from ._numerics import norm, tree_finite, unit
from .errors import NonFiniteStepError

__all__ = [
    "Transform",
    "EmptyState",
    "TraceState",
    "EmaState",
    "ScaleByAdamState",
    "scale",
    "trace",
    "ema",
    "normalize",
    "clip_by_norm",
    "scale_by_adam",
    "chain",
    "apply_updates",
    "Optimizer",
    "GD",
    "SGD",
    "Momentum",
    "Adam",
    "ClippedGD",
    "NormalizedGD",
    "SNGDM",
]


# -- states ---------------------------------------------------------------------------------
class EmptyState(NamedTuple):
    """The state of a stateless piece (``scale``, ``normalize``, ``clip_by_norm``)."""


class TraceState(NamedTuple):
    """The state of :func:`trace`: the accumulated ``m``."""

    trace: np.ndarray


class EmaState(NamedTuple):
    """The state of :func:`ema`: the moving average ``m``."""

    ema: np.ndarray


class ScaleByAdamState(NamedTuple):
    """The state of :func:`scale_by_adam`: step count and first/second moment estimates."""

    count: int
    mu: np.ndarray
    nu: np.ndarray


# -- argument checks ------------------------------------------------------------------------
def _check_params(params: object) -> np.ndarray:
    arr = check.float_array(params, "params", ndim=1, shape_doc="(n,)")
    if arr.size == 0:
        raise ValueError("`params` must have at least one entry (got shape (0,))")
    return arr


def _check_grads(grads: object, params: np.ndarray | None) -> np.ndarray:
    g = check.float_array(grads, "grads", ndim=1, shape_doc="(n,)")
    if params is not None and g.shape != params.shape:
        raise ValueError(
            f"`grads` must have shape {params.shape} to match `params` (got {g.shape})"
        )
    return g


def _check_state(state: object, cls: type, piece: str) -> None:
    if not isinstance(state, cls):
        raise TypeError(
            f"`state` must be the {cls.__name__} returned by {piece}.init "
            f"(got {type(state).__name__})"
        )


def _check_same_shape(g: np.ndarray, reference: np.ndarray) -> None:
    if g.shape != reference.shape:
        raise ValueError(
            f"`grads` must have shape {reference.shape} to match the optimizer state "
            f"(got {g.shape})"
        )


def _frozen(a: np.ndarray) -> np.ndarray:
    """Mark a freshly computed state array read-only (states are never modified in place)."""
    a.flags.writeable = False
    return a


# -- the transform type ---------------------------------------------------------------------
@frozen(eq=False, repr=False)
class Transform:
    """A gradient transformation: ``init(params)`` and ``update(grads, state, params=None)``.

    Build one with the lowercase functions of this module (:func:`scale`, :func:`trace`,
    :func:`ema`, :func:`normalize`, :func:`clip_by_norm`, :func:`scale_by_adam`) and
    combine them with :func:`chain`. Transforms are immutable.

    Parameters
    ----------
    init_fn : callable
        ``init_fn(params) -> state``, given validated float64 parameters.
    update_fn : callable
        ``update_fn(grads, state, params) -> (updates, new_state)``, given validated
        float64 gradients (and parameters, or None). It must not modify ``state``.
    name : str
        Shown by ``repr``, e.g. ``"ema(beta=0.9)"``.
    """

    init_fn: Callable
    update_fn: Callable
    name: str = "transform"

    def __repr__(self) -> str:
        return self.name

    def init(self, params: np.ndarray) -> Any:
        """The initial state for parameters ``params`` (a finite 1-D float array)."""
        return self.init_fn(_check_params(params))

    def update(
        self, grads: np.ndarray, state: Any, params: np.ndarray | None = None
    ) -> tuple[np.ndarray, Any]:
        """Transform ``grads`` and return ``(updates, new_state)``; ``state`` is not modified.

        ``grads`` must be a finite 1-D float array of the shape of the parameters that
        ``state`` was initialised for (ValueError naming ``grads`` otherwise).
        """
        p = None if params is None else _check_params(params)
        g = _check_grads(grads, p)
        with np.errstate(over="ignore", invalid="ignore"):
            updates, new_state = self.update_fn(g, state, p)
        _check_finite_step(self, updates, new_state, g)
        return updates, new_state


def _check_finite_step(transform: Any, updates: np.ndarray, state: Any, grads: np.ndarray) -> None:
    """NonFiniteStepError if a step overflowed: a non-finite update or state array."""
    if not np.isfinite(updates).all():
        what = "update"
    elif not tree_finite(state):
        what = "optimizer state"
    else:
        return
    raise NonFiniteStepError(
        f"{transform!r} overflowed: its {what} is not finite for gradients of magnitude "
        f"up to {float(np.max(np.abs(grads))) if grads.size else 0.0:.3g}; reduce the step size "
        "or use a normalized or clipped optimizer",
        what,
    )


def _apply(transform: Any, grads: np.ndarray, state: Any, params: np.ndarray | None):
    # Inside a chain, the gradients were validated once at the boundary.
    if isinstance(transform, Transform):
        return transform.update_fn(grads, state, params)
    return transform.update(grads, state, params)


def _fmt(value: float) -> str:
    return repr(float(value))


# -- the pieces -----------------------------------------------------------------------------
def scale(factor: float) -> Transform:
    r"""Multiply by a constant: :math:`u = \text{factor}\cdot g`.

    Examples
    --------
    >>> import numpy as np
    >>> t = scale(-0.5)
    >>> t.update(np.array([2.0, 4.0]), t.init(np.zeros(2)))[0]
    array([-1., -2.])
    """
    factor = check.real_scalar(factor, "factor")

    def init_fn(params):
        return EmptyState()

    def update_fn(grads, state, params):
        _check_state(state, EmptyState, "scale")
        return factor * grads, state

    return Transform(init_fn, update_fn, f"scale(factor={_fmt(factor)})")


def trace(beta: float) -> Transform:
    r"""Heavy-ball accumulation: :math:`m \leftarrow \beta m + g`, :math:`u = m` (``m_0 = 0``).

    Parameters
    ----------
    beta : float
        Decay in [0, 1); 0 passes the gradient through.
    """
    beta = check.in_unit_interval(beta, "beta")

    def init_fn(params):
        return TraceState(_frozen(np.zeros_like(params)))

    def update_fn(grads, state, params):
        _check_state(state, TraceState, "trace")
        _check_same_shape(grads, state.trace)
        m = _frozen(beta * state.trace + grads)
        return m, TraceState(m)

    return Transform(init_fn, update_fn, f"trace(beta={_fmt(beta)})")


def ema(beta: float) -> Transform:
    r"""Exponential moving average: :math:`m \leftarrow \beta m + (1-\beta) g`, :math:`u = m`.

    Starts from ``m_0 = 0`` with no bias correction (so the first update is
    :math:`(1-\beta) g`; a following :func:`normalize` makes the scale irrelevant).

    Parameters
    ----------
    beta : float
        Decay in [0, 1); 0 passes the gradient through.
    """
    beta = check.in_unit_interval(beta, "beta")

    def init_fn(params):
        return EmaState(_frozen(np.zeros_like(params)))

    def update_fn(grads, state, params):
        _check_state(state, EmaState, "ema")
        _check_same_shape(grads, state.ema)
        m = _frozen(beta * state.ema + (1.0 - beta) * grads)
        return m, EmaState(m)

    return Transform(init_fn, update_fn, f"ema(beta={_fmt(beta)})")


def normalize() -> Transform:
    r"""Unit direction: :math:`u = g / \lVert g\rVert`, and :math:`u = 0` when :math:`g = 0`.

    The zero case makes a vanishing gradient (or momentum) a skipped step instead of
    a NaN. The norm is computed without overflow or underflow, so the result has unit
    norm (to rounding) for any nonzero finite ``g``.

    Examples
    --------
    >>> import numpy as np
    >>> t = normalize()
    >>> t.update(np.array([3.0, 4.0]), t.init(np.zeros(2)))[0]
    array([0.6, 0.8])
    >>> t.update(np.zeros(2), t.init(np.zeros(2)))[0]
    array([0., 0.])
    """

    def init_fn(params):
        return EmptyState()

    def update_fn(grads, state, params):
        _check_state(state, EmptyState, "normalize")
        return unit(grads), state

    return Transform(init_fn, update_fn, "normalize()")


def clip_by_norm(max_norm: float) -> Transform:
    r"""Clip the norm: :math:`u = \min(1, c/\lVert g\rVert)\, g` with :math:`c` = ``max_norm``.

    ``g`` is passed through (as a copy) when :math:`\lVert g\rVert \le c`, including
    ``g = 0``; otherwise the result has norm exactly ``c`` (to rounding).

    Parameters
    ----------
    max_norm : float
        The threshold c > 0.
    """
    c = check.positive(max_norm, "max_norm")

    def init_fn(params):
        return EmptyState()

    def update_fn(grads, state, params):
        _check_state(state, EmptyState, "clip_by_norm")
        if norm(grads) <= c:
            return grads.copy(), state
        return c * unit(grads), state

    return Transform(init_fn, update_fn, f"clip_by_norm(max_norm={_fmt(c)})")


def scale_by_adam(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8) -> Transform:
    r"""Adam's scaling, with bias correction (Kingma & Ba, 2015).

    .. math::

        t \leftarrow t + 1,\quad \mu \leftarrow b_1\mu + (1-b_1)g,\quad
        \nu \leftarrow b_2\nu + (1-b_2)g^2,\quad
        u = \frac{\mu/(1-b_1^t)}{\sqrt{\nu/(1-b_2^t)} + \varepsilon}

    (elementwise, from :math:`t = 0`, :math:`\mu = \nu = 0`).

    Parameters
    ----------
    b1, b2 : float
        Decay rates of the first and second moment estimates, in [0, 1).
    eps : float
        Added to the denominator, > 0.
    """
    b1 = check.in_unit_interval(b1, "b1")
    b2 = check.in_unit_interval(b2, "b2")
    eps = check.positive(eps, "eps")

    def init_fn(params):
        return ScaleByAdamState(0, _frozen(np.zeros_like(params)), _frozen(np.zeros_like(params)))

    def update_fn(grads, state, params):
        _check_state(state, ScaleByAdamState, "scale_by_adam")
        _check_same_shape(grads, state.mu)
        count = int(state.count) + 1
        mu = _frozen(b1 * state.mu + (1.0 - b1) * grads)
        nu = _frozen(b2 * state.nu + (1.0 - b2) * (grads * grads))
        mu_hat = mu / (1.0 - b1**count)
        nu_hat = nu / (1.0 - b2**count)
        return mu_hat / (np.sqrt(nu_hat) + eps), ScaleByAdamState(count, mu, nu)

    name = f"scale_by_adam(b1={_fmt(b1)}, b2={_fmt(b2)}, eps={_fmt(eps)})"
    return Transform(init_fn, update_fn, name)


def chain(*transforms: Any) -> Transform:
    r"""Apply transforms in sequence: :math:`u = T_k(\dots T_2(T_1(g)))`.

    The state is the tuple of the members' states, in order. Members may be any
    objects with ``init`` and ``update`` methods (including other chains).

    Examples
    --------
    >>> import numpy as np
    >>> t = chain(normalize(), scale(-0.1))
    >>> t.update(np.array([3.0, 4.0]), t.init(np.zeros(2)))[0]
    array([-0.06, -0.08])
    """
    for i, t in enumerate(transforms):
        if not (callable(getattr(t, "init", None)) and callable(getattr(t, "update", None))):
            raise TypeError(
                f"`transforms[{i}]` must be a Transform (an object with `init` and `update`) "
                f"(got {type(t).__name__})"
            )
    k = len(transforms)

    def init_fn(params):
        return tuple(t.init(params) for t in transforms)

    def update_fn(grads, state, params):
        if type(state) is not tuple or len(state) != k:
            got = f"a tuple of {len(state)}" if isinstance(state, tuple) else type(state).__name__
            raise TypeError(
                f"`state` must be the tuple of {k} member states returned by chain(...).init "
                f"(got {got})"
            )
        new_state = []
        for t, s in zip(transforms, state):
            grads, s = _apply(t, grads, s, params)
            new_state.append(s)
        return grads, tuple(new_state)

    return Transform(init_fn, update_fn, f"chain({', '.join(repr(t) for t in transforms)})")


def apply_updates(params: np.ndarray, updates: np.ndarray) -> np.ndarray:
    r"""The new parameters :math:`x + u`, as a new float64 array (``params`` is not modified).

    Both must be finite 1-D arrays of the same shape; non-finite updates (e.g. from an
    overflowing step) raise ValueError naming ``updates``, and a sum that overflows
    raises :class:`fobmaml.errors.NonFiniteStepError` (a ``FloatingPointError``).
    """
    x = _check_params(params)
    u = check.float_array(updates, "updates", ndim=1, shape_doc="(n,)")
    if u.shape != x.shape:
        raise ValueError(f"`updates` must have shape {x.shape} to match `params` (got {u.shape})")
    with np.errstate(over="ignore"):
        out = x + u
    if not np.isfinite(out).all():
        raise NonFiniteStepError(
            "`params` + `updates` overflowed (the new parameters are not finite)", "x"
        )
    return out


# -- the public optimizers ------------------------------------------------------------------
@frozen(repr=False)
class Optimizer:
    """Base class of the named outer optimizers: hyper-parameters plus a chain of pieces.

    Subclasses are frozen dataclasses whose fields are the hyper-parameters: they
    validate them in ``__post_init__`` (through :meth:`_store`) and say how to compose
    the pieces in :meth:`_build`. Optimizers are immutable, compare equal when their
    type and hyper-parameters are equal, and pickle by their hyper-parameters.
    """

    def _store(self, **hyper: float) -> None:
        """Set the validated hyper-parameters, then build the chain from them."""
        store(self, **hyper)
        store(self, _transform=self._build())

    def _build(self) -> Transform:
        raise NotImplementedError

    @property
    def _names(self) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(self))

    # -- configuration ---------------------------------------------------------------------
    @property
    def transform(self) -> Transform:
        """The chain of pieces this optimizer applies."""
        return self._transform

    def get_params(self) -> dict:
        """``{"name": ..., <hyper-parameter>: value, ...}``, JSON-serialisable.

        :meth:`Optimizer.from_params` rebuilds the optimizer from it.
        """
        return {"name": type(self).__name__, **{k: getattr(self, k) for k in self._names}}

    @staticmethod
    def from_params(params: dict) -> Optimizer:
        """The optimizer described by a :meth:`get_params` dict (e.g. read from JSON).

        Examples
        --------
        >>> Optimizer.from_params({"name": "Momentum", "lr": 0.1, "beta": 0.5})
        Momentum(lr=0.1, beta=0.5)
        """
        if not isinstance(params, dict) or "name" not in params:
            raise TypeError(
                f"`params` must be a dict with a 'name' key (got {type(params).__name__})"
            )
        kwargs = dict(params)
        name = kwargs.pop("name")
        cls = _OPTIMIZERS.get(name) if isinstance(name, str) else None
        if cls is None:
            expected = ", ".join(repr(n) for n in _OPTIMIZERS)
            raise ValueError(f"`params['name']` must be one of {expected} (got {name!r})")
        unknown = sorted(set(kwargs) - set(_signature_names(cls)))
        if unknown:
            raise ValueError(
                f"`params` has unknown hyper-parameters for {name}: {', '.join(unknown)} "
                f"(expected some of {', '.join(_signature_names(cls))})"
            )
        return cls(**kwargs)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={getattr(self, k)!r}" for k in self._names)
        return f"{type(self).__name__}({args})"

    def __reduce__(self):
        return (type(self), tuple(getattr(self, k) for k in self._names))

    # -- computation -----------------------------------------------------------------------
    def init(self, params: np.ndarray) -> tuple:
        """The initial state (a tuple of the pieces' states) for parameters ``params``."""
        return self._transform.init(params)

    def update(
        self, grads: np.ndarray, state: tuple, params: np.ndarray | None = None
    ) -> tuple[np.ndarray, tuple]:
        """``(updates, new_state)`` for the gradient estimate ``grads``; ``state`` is unchanged.

        Add the updates to the parameters with :func:`apply_updates`, or use :meth:`step`.
        ``grads`` is checked against the shape of the state's arrays and, when given,
        of ``params`` (the only reference for optimizers without arrays in their state,
        such as :class:`GD`).
        """
        return self._transform.update(grads, state, params)

    def step(self, params: np.ndarray, grads: np.ndarray, state: tuple) -> tuple[np.ndarray, tuple]:
        """One step: ``(new_params, new_state)``; neither ``params`` nor ``state`` is modified."""
        params = _check_params(params)
        updates, state = self._transform.update(grads, state, params)
        return apply_updates(params, updates), state


def _signature_names(cls: type) -> tuple[str, ...]:
    return tuple(inspect.signature(cls).parameters)


@frozen(repr=False)
class GD(Optimizer):
    r"""Gradient descent: :math:`x \leftarrow x - \eta G`. ``SGD`` is an alias.

    Parameters
    ----------
    lr : float
        The learning rate :math:`\eta > 0`.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> opt = fm.GD(lr=0.5)
    >>> opt.step(np.ones(2), np.array([1.0, -2.0]), opt.init(np.ones(2)))[0]
    array([0.5, 2. ])
    """

    lr: float

    def __post_init__(self) -> None:
        self._store(lr=check.positive(self.lr, "lr"))

    def _build(self) -> Transform:
        return chain(scale(-self.lr))


SGD = GD


@frozen(repr=False)
class Momentum(Optimizer):
    r"""Heavy-ball momentum: :math:`m \leftarrow \beta m + G,\ x \leftarrow x - \eta m`, from m = 0.

    Parameters
    ----------
    lr : float
        The learning rate :math:`\eta > 0`.
    beta : float
        The momentum :math:`\beta \in [0, 1)`; 0 is :class:`GD`.
    """

    lr: float
    beta: float = 0.9

    def __post_init__(self) -> None:
        self._store(
            lr=check.positive(self.lr, "lr"), beta=check.in_unit_interval(self.beta, "beta")
        )

    def _build(self) -> Transform:
        return chain(trace(self.beta), scale(-self.lr))


@frozen(repr=False)
class Adam(Optimizer):
    r"""Adam: :math:`x \leftarrow x - \eta\,\hat\mu/(\sqrt{\hat\nu}+\varepsilon)`.

    :math:`\hat\mu, \hat\nu` are the bias-corrected moment estimates of
    :func:`scale_by_adam` (``m_0 = v_0 = 0``).

    Parameters
    ----------
    lr : float
        The learning rate :math:`\eta > 0`.
    b1, b2 : float
        Moment decay rates in [0, 1).
    eps : float
        Denominator offset, > 0.
    """

    lr: float
    b1: float = 0.9
    b2: float = 0.999
    eps: float = 1e-8

    def __post_init__(self) -> None:
        self._store(
            lr=check.positive(self.lr, "lr"),
            b1=check.in_unit_interval(self.b1, "b1"),
            b2=check.in_unit_interval(self.b2, "b2"),
            eps=check.positive(self.eps, "eps"),
        )

    def _build(self) -> Transform:
        return chain(scale_by_adam(self.b1, self.b2, self.eps), scale(-self.lr))


@frozen(repr=False)
class ClippedGD(Optimizer):
    r"""Clipped gradient descent: :math:`x \leftarrow x - \eta \min(1, c/\lVert G\rVert)\,G`.

    Equal to :class:`GD` while :math:`\lVert G\rVert \le c`; otherwise the step has
    length exactly :math:`\eta c`.

    Parameters
    ----------
    lr : float
        The learning rate :math:`\eta > 0`.
    clip : float
        The norm threshold :math:`c > 0`.
    """

    lr: float
    clip: float

    def __post_init__(self) -> None:
        self._store(lr=check.positive(self.lr, "lr"), clip=check.positive(self.clip, "clip"))

    def _build(self) -> Transform:
        return chain(clip_by_norm(self.clip), scale(-self.lr))


@frozen(repr=False)
class NormalizedGD(Optimizer):
    r"""Normalized gradient descent: :math:`x \leftarrow x - \eta\, G/\lVert G\rVert`.

    Every step has length exactly :math:`\eta`, except that :math:`G = 0` gives no step.

    Parameters
    ----------
    lr : float
        The learning rate (step length) :math:`\eta > 0`.
    """

    lr: float

    def __post_init__(self) -> None:
        self._store(lr=check.positive(self.lr, "lr"))

    def _build(self) -> Transform:
        return chain(normalize(), scale(-self.lr))


@frozen(repr=False)
class SNGDM(Optimizer):
    r"""Normalized gradient descent with momentum.

    .. math::

        m \leftarrow \beta m + (1-\beta) G, \qquad x \leftarrow x - \eta\, m/\lVert m\rVert
        \qquad (m_0 = 0).

    Every step has length exactly :math:`\eta`, except that :math:`m = 0` gives no step.
    This is the method the paper analyses for meta-objectives whose smoothness grows
    with :math:`\lVert\nabla F\rVert`.

    Parameters
    ----------
    lr : float
        The learning rate (step length) :math:`\eta > 0`.
    beta : float
        The momentum :math:`\beta \in [0, 1)`; 0 is :class:`NormalizedGD`.
    """

    lr: float
    beta: float = 0.9

    def __post_init__(self) -> None:
        self._store(
            lr=check.positive(self.lr, "lr"), beta=check.in_unit_interval(self.beta, "beta")
        )

    def _build(self) -> Transform:
        return chain(ema(self.beta), normalize(), scale(-self.lr))


_OPTIMIZERS: dict[str, type] = {
    "GD": GD,
    "SGD": GD,
    "Momentum": Momentum,
    "Adam": Adam,
    "ClippedGD": ClippedGD,
    "NormalizedGD": NormalizedGD,
    "SNGDM": SNGDM,
}
