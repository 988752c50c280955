"""Optional dependencies in the tests: skip without them, unless CI requires them.

``import fobmaml`` never imports torch, dask or JAX, and the default test command works
without them: their tests skip. CI installs the extras and sets
``FOBMAML_REQUIRE_EXTRAS`` (a comma-separated list of module names, e.g.
``torch,dask.distributed``): a listed module that fails to import then fails the test
instead of skipping it, so the extras' tests cannot silently stop running.
"""

from __future__ import annotations

import os
from types import ModuleType

import pytest


def required_extras() -> set[str]:
    """The module names CI requires (``FOBMAML_REQUIRE_EXTRAS``)."""
    raw = os.environ.get("FOBMAML_REQUIRE_EXTRAS", "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def require(module: str, minversion: str | None = None) -> ModuleType:
    """Import `module`; skip the test if it is missing, or fail if CI requires it."""
    if module in required_extras() or module.split(".")[0] in required_extras():
        import importlib

        return importlib.import_module(module)
    return pytest.importorskip(module, minversion=minversion)
