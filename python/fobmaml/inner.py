"""The inner loop shared by every estimator."""

from __future__ import annotations

from dataclasses import asdict

from . import _validation as check
from ._frozen import frozen, store
from ._native import core as _core


@frozen
class InnerLoop:
    r"""K steps of heavy-ball gradient descent on the proximal inner problem.

    .. math::

        h_i(\phi; x) = g_i(\phi) + \tfrac{\lambda}{2}\lVert \phi - x\rVert^2, \qquad
        \phi_{-1} = \phi_0 = x,

        \phi_{k+1} = \phi_k - \alpha\,(\nabla g_i(\phi_k) + \lambda(\phi_k - x))
                     + \beta\,(\phi_k - \phi_{k-1}), \quad k = 0, \dots, K-1.

    Parameters
    ----------
    steps : int
        K >= 1, the number of inner steps.
    lr : float
        The step size alpha > 0.
    lam : float
        The proximal strength lambda >= 0 (0 is classic MAML). FOBMAML, IMAML and
        Exact need lambda > 0.
    momentum : float
        The heavy-ball coefficient beta in [0, 1); 0 is plain gradient descent.

    Examples
    --------
    >>> import fobmaml as fm
    >>> fm.InnerLoop(steps=20, lr=0.05, lam=1.0)
    InnerLoop(steps=20, lr=0.05, lam=1.0, momentum=0.0)
    """

    steps: int = 5
    lr: float = 0.1
    lam: float = 0.0
    momentum: float = 0.0

    def __post_init__(self) -> None:
        store(
            self,
            steps=check.integer(self.steps, "steps", minimum=1, maximum=2**31 - 1),
            lr=check.positive(self.lr, "lr"),
            lam=check.non_negative(self.lam, "lam"),
            momentum=check.in_unit_interval(self.momentum, "momentum"),
        )

    def replace(self, **changes: object) -> InnerLoop:
        """A copy with some fields changed (validated again)."""
        return InnerLoop(**{**asdict(self), **changes})

    def to_dict(self) -> dict:
        return asdict(self)

    def _config(self) -> _core.InnerConfig:
        c = _core.InnerConfig()
        c.steps, c.lr, c.lam, c.momentum = self.steps, self.lr, self.lam, self.momentum
        return c
