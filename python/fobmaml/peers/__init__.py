"""Meta-gradients written the way a strong user of each framework would, to compare with fobmaml.

``import fobmaml`` does not import this package, and importing it imports neither torch
nor JAX: a peer's own module imports its framework when :func:`load` asks for it.

Every peer module exposes the same small interface:

- ``NAME``: the implementation's name in tables (``"torch-eager"``, ...);
- ``ESTIMATORS``: the names of :data:`fobmaml.peers.problems.ESTIMATORS` it implements;
- ``build(problem, estimator)``: converts the problem's arrays once and returns a
  no-argument function that computes the mean meta-gradient at ``problem.x0`` and
  returns it as the framework's own array (computation finished: JAX results are
  ``block_until_ready``);
- ``to_numpy(result)``: that array as a NumPy float64 vector;
- ``settings()``: versions and thread settings, for the report.

Every peer runs every problem family: the quadratics, the MLPs, and any
:class:`fobmaml.nn.Sequential` network (the ``"net"`` family), which each peer builds as a
function of the flat parameter vector from ``net.get_config()``.
The ``fobmaml.torch`` peers run the networks only: the quadratic tasks are not a
``torch.nn.Module`` (:func:`families`).

The peers are optional: :func:`load` imports one, and :func:`missing` says which of its
packages are not installed. ``bench/compare.py``, ``fobmaml memory`` and the tests use
them.

>>> from fobmaml import peers
>>> peers.IMPLEMENTATIONS
('torch-eager', 'torch-higher', 'torch-func', 'jax', 'fobmaml-torch', 'fobmaml-torch-rec')
>>> peers.requirements("jax")
('jax', 'jaxlib')
"""

from __future__ import annotations

import importlib
import importlib.util
from types import ModuleType

from .problems import ESTIMATORS

__all__ = [
    "IMPLEMENTATIONS",
    "ESTIMATORS",
    "FAMILIES",
    "requirements",
    "families",
    "missing",
    "load",
    "runs",
]

#: implementation name -> (module in this package, the packages it imports)
_PEERS = {
    "torch-eager": ("torch_eager", ("torch",)),
    "torch-higher": ("torch_higher", ("torch", "higher")),
    "torch-func": ("torch_func", ("torch",)),
    "jax": ("jax_peer", ("jax", "jaxlib")),
    "fobmaml-torch": ("fobmaml_torch", ("torch",)),
    "fobmaml-torch-rec": ("fobmaml_torch_rec", ("torch",)),
}

#: The problem families of the benchmarks.
FAMILIES = ("mlp", "net", "quadratic")
#: The peers that run only some families.
_ONLY = {"fobmaml-torch": ("mlp", "net"), "fobmaml-torch-rec": ("mlp", "net")}

#: The peers, in the order of the tables.
IMPLEMENTATIONS = tuple(_PEERS)


def requirements(name: str) -> tuple[str, ...]:
    """The packages the peer `name` imports."""
    return _PEERS[_check(name)][1]


def missing(name: str) -> list[str]:
    """The packages of peer `name` that are not installed (empty when it can run)."""
    return [pkg for pkg in requirements(name) if importlib.util.find_spec(pkg) is None]


def load(name: str) -> ModuleType:
    """Import the peer `name` (raises ImportError if one of its packages is missing)."""
    module = _PEERS[_check(name)][0]
    return importlib.import_module(f".{module}", __name__)


def _check(name: str) -> str:
    if name not in _PEERS:
        raise ValueError(f"unknown peer {name!r}; expected one of {IMPLEMENTATIONS}")
    return name


def families(name: str) -> tuple[str, ...]:
    """The problem families the peer `name` runs."""
    return _ONLY.get(_check(name), FAMILIES)


def runs(name: str, module: ModuleType, family: str, estimator: str) -> bool:
    """Whether the peer `name` (loaded as `module`) computes `estimator` on `family`."""
    return estimator in module.ESTIMATORS and family in families(name)
