"""Task families: batches of tasks that the C++ kernels read in place."""

from __future__ import annotations

import numpy as np

from . import _validation as check
from . import mlp as _mlp
from . import nn as _nn
from ._native import core as _core

__all__ = ["TaskBatch", "QuadraticTasks", "NetTasks", "MLPTasks"]


class TaskBatch:
    """A batch of m tasks over parameters of dimension n (a family's common base)."""

    _handle: object

    @property
    def num_tasks(self) -> int:
        """m, the number of tasks."""
        return int(self._handle.num_tasks)

    @property
    def dim(self) -> int:
        """n, the dimension of the (meta-)parameters."""
        return int(self._handle.dim)

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index) -> TaskBatch:
        """The sub-batch of the tasks selected by `index` (an int, slice or index array)."""
        raise NotImplementedError

    # -- the family's own functions ---------------------------------------------------
    def _rows(self, value: object, name: str) -> np.ndarray:
        """`value` as (m, n): a vector (n,) is used for every task."""
        m, n = self.num_tasks, self.dim
        arr = check.float_array(value, name)
        if arr.shape == (n,):
            return np.ascontiguousarray(np.broadcast_to(arr, (m, n)))
        if arr.shape != (m, n):
            raise ValueError(f"`{name}` must have shape ({n},) or ({m}, {n}) (got {arr.shape})")
        return arr

    def _eval(self, phi, v, which: str):
        check.choice(which, "which", ("support", "query"))
        phi = self._rows(phi, "phi")
        v = None if v is None else self._rows(v, "v")
        out = _core.family_eval(self._handle, which == "query", phi, v)
        for name, arr in zip(("loss", "gradient", "hvp"), out):
            if arr is not None and not np.isfinite(arr).all():
                raise FloatingPointError(f"the {which} {name} is not finite at the given `phi`")
        return out

    def losses(self, phi: np.ndarray, which: str = "support") -> np.ndarray:
        """Per-task loss g_i(phi_i) (``which="support"``) or f_i(phi_i) (``"query"``), shape (m,).

        `phi` is a vector (n,) used for every task, or one row per task (m, n).
        """
        return self._eval(phi, None, which)[0]

    def gradients(self, phi: np.ndarray, which: str = "support") -> np.ndarray:
        """Per-task gradient of the support (or query) loss at phi, shape (m, n)."""
        return self._eval(phi, None, which)[1]

    def hvps(self, phi: np.ndarray, v: np.ndarray, which: str = "support") -> np.ndarray:
        """Per-task Hessian-vector product of the support (or query) loss at phi with v, (m, n).

        `v` is a vector (n,) used for every task, or one row per task (m, n).
        """
        if v is None:
            raise TypeError("`v` must be a float array of shape (n,) or (m, n), not None")
        return self._eval(phi, v, which)[2]

    def _select(self, index) -> np.ndarray:
        idx = np.arange(self.num_tasks)[index]
        idx = np.atleast_1d(idx)
        if idx.size == 0:
            raise ValueError("`index` selects no task; a task batch needs at least one task")
        return idx


def _symmetry_check(M: np.ndarray, name: str) -> None:
    # Relative tolerance: a few ulps of the largest entry, as produced by (M + M^T)/2 in float64.
    # An asymmetry that overflows (1e308 against -1e308) is infinite, hence rejected.
    with np.errstate(over="ignore", invalid="ignore"):
        asym = np.abs(M - np.swapaxes(M, 1, 2)).max(axis=(1, 2))
    scale = np.maximum(np.abs(M).max(axis=(1, 2)), np.finfo(np.float64).tiny)
    bad = np.flatnonzero(asym > 1e-10 * scale)
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"`{name}` must hold symmetric matrices: {name}[{i}] differs from its transpose "
            f"by up to {asym[i]:.3g} (symmetrize with ({name} + {name}.transpose(0, 2, 1)) / 2)"
        )


class QuadraticTasks(TaskBatch):
    r"""A batch of quadratic tasks.

    .. math::

        g_i(\phi) = \tfrac12 \phi^\top A_i \phi - b_i^\top \phi, \qquad
        f_i(\phi) = \tfrac12 \phi^\top B_i \phi - c_i^\top \phi .

    Parameters
    ----------
    A : array_like, shape (m, n, n)
        Symmetric support-loss matrices.
    b : array_like, shape (m, n)
        Support-loss linear terms.
    B : array_like, shape (m, n, n), optional
        Symmetric query-loss matrices; default `A` (the query loss is the support loss).
    c : array_like, shape (m, n), optional
        Query-loss linear terms; default `b`.

    Notes
    -----
    Arrays that already are float64 and C-contiguous are used in place, without a
    copy (the kernels read them through row-major Eigen maps). Do not modify them
    while the task batch is in use.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> A = np.stack([np.eye(3), 2 * np.eye(3)]); b = np.ones((2, 3))
    >>> tasks = fm.QuadraticTasks(A, b)
    >>> tasks.num_tasks, tasks.dim
    (2, 3)
    """

    def __init__(
        self,
        A: np.ndarray,
        b: np.ndarray,
        B: np.ndarray | None = None,
        c: np.ndarray | None = None,
    ) -> None:
        A = check.float_array(A, "A", ndim=3, shape_doc="(m, n, n)")
        m, n = A.shape[0], A.shape[1]
        if A.shape[2] != n:
            raise ValueError(f"`A` must have shape (m, n, n) with square matrices (got {A.shape})")
        if m == 0 or n == 0:
            raise ValueError(
                f"`A` must hold at least one task of dimension >= 1 (got shape {A.shape})"
            )
        b = check.float_array(b, "b", ndim=2, shape_doc=f"({m}, {n})")
        if b.shape != (m, n):
            raise ValueError(f"`b` must have shape ({m}, {n}) to match `A` (got {b.shape})")
        _symmetry_check(A, "A")
        self.separate_query = B is not None or c is not None
        if self.separate_query:
            B = A if B is None else check.float_array(B, "B", ndim=3, shape_doc=f"({m}, {n}, {n})")
            c = b if c is None else check.float_array(c, "c", ndim=2, shape_doc=f"({m}, {n})")
            if B.shape != (m, n, n):
                raise ValueError(
                    f"`B` must have shape ({m}, {n}, {n}) to match `A` (got {B.shape})"
                )
            if c.shape != (m, n):
                raise ValueError(f"`c` must have shape ({m}, {n}) to match `A` (got {c.shape})")
            _symmetry_check(B, "B")
        self.A, self.b = A, b
        self.B, self.c = (B, c) if self.separate_query else (A, b)
        self._handle = _core.QuadraticTasks(A, b, B, c)

    def __reduce__(self):
        # Pickled as its arrays; the kernel's view of them is rebuilt on unpickling.
        if self.separate_query:
            return (type(self), (self.A, self.b, self.B, self.c))
        return (type(self), (self.A, self.b))

    def __getitem__(self, index) -> QuadraticTasks:
        idx = self._select(index)
        if self.separate_query:
            return QuadraticTasks(self.A[idx], self.b[idx], self.B[idx], self.c[idx])
        return QuadraticTasks(self.A[idx], self.b[idx])

    def __repr__(self) -> str:
        q = ", separate query" if self.separate_query else ""
        return f"QuadraticTasks(m={self.num_tasks}, n={self.dim}{q})"


class NetTasks(TaskBatch):
    r"""A batch of few-shot learning tasks for a sequential network (:mod:`fobmaml.nn`).

    Task i adapts on its support set and is judged on its query set:

    .. math::

        g_i(\phi) = \ell(\mathrm{net}_\phi(X^s_i), Y^s_i), \qquad
        f_i(\phi) = \ell(\mathrm{net}_\phi(X^q_i), Y^q_i),

    with :math:`\ell` the mean squared error over all output elements (``"mse"``) or
    the mean over samples of the softmax cross-entropy (``"xent"``).

    Gradients are exact (backpropagation); Hessian-vector products are exact
    (Pearlmutter's R-operator), with the second derivative of relu taken as 0 and max
    pooling routed through the position of the maximum. The parameter vector is laid out
    as ``torch.nn.utils.parameters_to_vector`` of the same layers (see :mod:`fobmaml.nn`).

    Parameters
    ----------
    X_support : array_like, shape (m, k_s, *input_shape)
        ``input_shape`` is ``(C_in, L)`` for a network that starts with Conv1d and
        ``(d_in,)`` for one that starts with Linear.
    Y_support : array_like
        Shape (m, k_s, d_out) float targets for ``"mse"``; shape (m, k_s) integer labels
        in ``[0, d_out)`` for ``"xent"``.
    X_query, Y_query : array_like, optional
        The query set, shapes as above with k_q samples; default: the support set.
    net : fobmaml.nn.Sequential
        The network.
    loss : {"mse", "xent"}

    Notes
    -----
    Arrays that already are float64 (int64 for labels) and C-contiguous are used in
    place, without a copy. Do not modify them while the task batch is in use. Shapes
    are checked once, by the kernels' shape inference, which names the layer that
    cannot take its input.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> net = fm.nn.Sequential(
    ...     fm.nn.Conv1d(1, 4, kernel_size=3, padding=1), fm.nn.ReLU(),
    ...     fm.nn.Flatten(), fm.nn.Linear(4 * 10, 3))
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((2, 6, 1, 10)); y = rng.integers(0, 3, (2, 6))
    >>> tasks = fm.NetTasks(X, y, net=net, loss="xent")
    >>> tasks.num_tasks, tasks.dim
    (2, 139)
    """

    def __init__(
        self,
        X_support: np.ndarray,
        Y_support: np.ndarray,
        X_query: np.ndarray | None = None,
        Y_query: np.ndarray | None = None,
        net: _nn.Sequential | None = None,
        loss: str = "mse",
    ) -> None:
        if not isinstance(net, _nn.Sequential):
            raise TypeError(
                "`net` must be a fobmaml.nn.Sequential network "
                f"(got {'nothing' if net is None else type(net).__name__})"
            )
        self.net = net
        self.loss = check.choice(loss, "loss", _mlp.LOSSES)
        if (X_query is None) != (Y_query is None):
            raise ValueError("`X_query` and `Y_query` must be given together (or both omitted)")
        self.separate_query = X_query is not None
        self.X_support, self.Y_support = self._data(X_support, Y_support, "support")
        if self.separate_query:
            self.X_query, self.Y_query = self._data(X_query, Y_query, "query")
        else:
            self.X_query, self.Y_query = self.X_support, self.Y_support
        mse = self.loss == "mse"
        self._handle = _core.NetTasks(
            self.X_support,
            self.Y_support if mse else None,
            None if mse else self.Y_support,
            self.X_query,
            self.Y_query if mse else None,
            None if mse else self.Y_query,
            not self.separate_query,
            net._specs,
            getattr(_core.Loss, self.loss),
        )

    def _data(self, X, Y, which: str):
        """The arrays as the kernels read them: finite float64 inputs and targets, int64
        labels. Their shapes are checked by the kernels."""
        xn, yn = f"X_{which}", f"Y_{which}"
        X = check.float_array(X, xn)
        if X.ndim < 3:
            raise ValueError(
                f"`{xn}` must have shape (m, k, *input_shape), at least 3-D (got {X.shape})"
            )
        if self.loss == "mse":
            return X, check.float_array(Y, yn, ndim=3, shape_doc="(m, k, d_out)")
        Y = np.asarray(Y)
        if Y.dtype.kind not in "iu":
            raise TypeError(
                f"`{yn}` must hold integer class labels for loss='xent' (got dtype {Y.dtype})"
            )
        if Y.dtype.kind == "u" and Y.size and Y.max() > np.iinfo(np.int64).max:
            raise ValueError(f"`{yn}` labels must be in [0, d_out) (got {Y.max()})")
        # np.require also copies a misaligned view: the kernels read aligned int64.
        return X, np.require(Y, dtype=np.int64, requirements=["C", "A"])

    def _subset(self, idx: np.ndarray) -> tuple:
        q = (self.X_query[idx], self.Y_query[idx]) if self.separate_query else (None, None)
        return (self.X_support[idx], self.Y_support[idx], *q)

    def __reduce__(self):
        # Pickled as its arrays and network; the kernel's view of them is rebuilt on unpickling.
        # Without a separate query set, the support arrays are pickled once.
        q = (self.X_query, self.Y_query) if self.separate_query else (None, None)
        return (NetTasks, (self.X_support, self.Y_support, *q, self.net, self.loss))

    def __getitem__(self, index) -> NetTasks:
        return NetTasks(*self._subset(self._select(index)), net=self.net, loss=self.loss)

    def __repr__(self) -> str:
        k_s, k_q = self.X_support.shape[1], self.X_query.shape[1]
        return (
            f"NetTasks(m={self.num_tasks}, n={self.dim}, input_shape={self.X_support.shape[2:]}, "
            f"loss={self.loss!r}, k_support={k_s}, k_query={k_q})"
        )


class MLPTasks(NetTasks):
    r"""A batch of few-shot learning tasks for a fully connected network.

    Task i adapts on its support set and is judged on its query set:

    .. math::

        g_i(\phi) = \ell(\mathrm{net}_\phi(X^s_i), Y^s_i), \qquad
        f_i(\phi) = \ell(\mathrm{net}_\phi(X^q_i), Y^q_i),

    with :math:`\ell` the mean squared error over all output elements (``"mse"``) or
    the mean over samples of the softmax cross-entropy (``"xent"``). See
    :mod:`fobmaml.mlp` for the parameter layout (PyTorch's ``parameters_to_vector``
    order) and for the no-hidden-layer case: linear regression (``layers=[d, 1]``,
    ``"mse"``) and softmax/logistic regression (``layers=[d, c]``, ``"xent"``).

    This is :class:`NetTasks` on the network ``Linear, act, ..., Linear`` given by
    `layers` and `activation` (:func:`fobmaml.mlp.network`): the same kernels compute
    both. Gradients are exact (backpropagation); Hessian-vector products are exact
    (Pearlmutter's R-operator), with the second derivative of relu taken as 0.

    Parameters
    ----------
    X_support : array_like, shape (m, k_s, d_in)
    Y_support : array_like
        Shape (m, k_s, d_out) float targets for ``"mse"``; shape (m, k_s) integer labels
        in ``[0, d_out)`` for ``"xent"``.
    X_query, Y_query : array_like, optional
        The query set, shapes as above with k_q samples; default: the support set.
    layers : sequence of int
        ``[d_in, h_1, ..., d_out]``.
    activation : {"relu", "tanh"}
    loss : {"mse", "xent"}

    Notes
    -----
    Arrays that already are float64 (int64 for labels) and C-contiguous are used in
    place, without a copy. Do not modify them while the task batch is in use.

    Examples
    --------
    >>> import numpy as np, fobmaml as fm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((4, 10, 1)); Y = np.sin(X)
    >>> tasks = fm.MLPTasks(X, Y, layers=[1, 16, 1], activation="tanh", loss="mse")
    >>> tasks.num_tasks, tasks.dim
    (4, 49)
    """

    def __init__(
        self,
        X_support: np.ndarray,
        Y_support: np.ndarray,
        X_query: np.ndarray | None = None,
        Y_query: np.ndarray | None = None,
        *,
        layers: list[int],
        activation: str = "relu",
        loss: str = "mse",
    ) -> None:
        self.layers = _mlp.check_layers(layers)
        self.activation = check.choice(activation, "activation", _mlp.ACTIVATIONS)
        super().__init__(
            X_support,
            Y_support,
            X_query,
            Y_query,
            net=_mlp.network(self.layers, self.activation),
            loss=loss,
        )

    def __reduce__(self):
        q = (self.X_query, self.Y_query) if self.separate_query else (None, None)
        args = (self.X_support, self.Y_support, *q, self.layers, self.activation, self.loss)
        return (_mlp_tasks, args)

    def __getitem__(self, index) -> MLPTasks:
        return MLPTasks(
            *self._subset(self._select(index)),
            layers=self.layers,
            activation=self.activation,
            loss=self.loss,
        )

    def __repr__(self) -> str:
        k_s, k_q = self.X_support.shape[1], self.X_query.shape[1]
        return (
            f"MLPTasks(m={self.num_tasks}, layers={self.layers}, activation={self.activation!r}, "
            f"loss={self.loss!r}, k_support={k_s}, k_query={k_q})"
        )


def _mlp_tasks(X_support, Y_support, X_query, Y_query, layers, activation, loss) -> MLPTasks:
    """An MLPTasks from positional arguments (its layout arguments are keyword-only)."""
    return MLPTasks(
        X_support, Y_support, X_query, Y_query, layers=layers, activation=activation, loss=loss
    )
