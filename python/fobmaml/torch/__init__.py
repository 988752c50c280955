r"""fobmaml for any PyTorch model: FO-B-MAML and the baselines, and the paper's outer optimizers.

``fobmaml.torch`` computes the estimators of fobmaml's core (the same formulas, the same
:class:`fobmaml.InnerLoop`) for the trainable parameters of any ``torch.nn.Module``, on
the device and in the dtype of those parameters, with ``torch.func`` (``functional_call``,
``grad``, ``jvp``, and ``vmap`` over the tasks of a batch). ``import fobmaml`` does not
import torch; this module does (``pip install "fobmaml[torch]"``).

>>> import torch, torch.nn.functional as F, fobmaml as fm, fobmaml.torch as fmt
>>> model = torch.nn.Sequential(torch.nn.Linear(1, 16), torch.nn.Tanh(), torch.nn.Linear(16, 1))
>>> inner = fm.InnerLoop(steps=10, lr=0.1, lam=2.0)
>>> est = fmt.FOBMAML(inner, delta=1e-3, scheme="symmetric")
>>> opt = fmt.SNGDM(model.parameters(), lr=1e-2, beta=0.9)
>>> X = torch.randn(8, 10, 1)                            # 8 tasks of 10 samples
>>> batch = (X, torch.sin(X), X + 0.1, torch.sin(X + 0.1))
>>> opt.zero_grad()
>>> loss = est.backward(model, batch, F.mse_loss)        # adds the meta-gradient to p.grad
>>> opt.step()
"""

try:
    import torch as _torch  # noqa: F401
except ImportError as exc:  # pragma: no cover - exercised without torch installed
    raise ImportError(
        'fobmaml.torch needs PyTorch: pip install "fobmaml[torch]" (or any torch >= 2.1)'
    ) from exc

from .estimators import (
    FOBMAML,
    FOMAML,
    HFMAML,
    IMAML,
    MAML,
    Estimator,
    NonSmoothWarning,
    Reptile,
    adapt,
    meta_loss,
)
from .optim import SNGDM, ClippedGD, NormalizedGD, global_norm

__all__ = [
    "Estimator",
    "NonSmoothWarning",
    "MAML",
    "FOMAML",
    "Reptile",
    "IMAML",
    "HFMAML",
    "FOBMAML",
    "adapt",
    "meta_loss",
    "SNGDM",
    "ClippedGD",
    "NormalizedGD",
    "global_norm",
]
