"""The examples in the docstrings (``>>>``) run as doctests, against the installed package.

Every module of the ``fobmaml`` package is imported and searched with
:class:`doctest.DocTestFinder`; each module's examples are one test. A module that
imports an optional dependency that is not installed is skipped, naming it.
"""

from __future__ import annotations

import doctest
import importlib
import importlib.machinery
import importlib.util
import pkgutil

import extras
import pytest

import fobmaml

FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _module_names() -> list[str]:
    names = ["fobmaml"]
    for info in pkgutil.walk_packages(fobmaml.__path__, prefix="fobmaml."):
        if info.name.endswith(".__main__"):  # importing it runs the command line
            continue
        spec = importlib.util.find_spec(info.name)
        if spec.origin and spec.origin.endswith(tuple(importlib.machinery.EXTENSION_SUFFIXES)):
            # The compiled cores hold no examples, and the AVX2 one must not be imported on
            # a CPU without AVX2 (fobmaml._native chooses which one to load).
            continue
        names.append(info.name)
    return sorted(names)


MODULES = _module_names()


def _import(name: str):
    try:
        return importlib.import_module(name)
    except ImportError as exc:
        # A missing optional dependency, raised directly or as the cause of the module's own
        # ImportError (fobmaml.torch says how to install torch); CI requires the extras.
        missing = exc if isinstance(exc, ModuleNotFoundError) else exc.__cause__
        if (
            isinstance(missing, ModuleNotFoundError)
            and missing.name
            and not missing.name.startswith("fobmaml")
            and missing.name.split(".")[0] not in extras.required_extras()
        ):
            pytest.skip(f"{name} needs {missing.name}, which is not installed")
        raise


def _examples(module) -> list[doctest.DocTest]:
    finder = doctest.DocTestFinder(exclude_empty=True)
    # Objects defined in this module only (not the names it imports), run in its namespace.
    tests = finder.find(module, module.__name__)
    return sorted((t for t in tests if t.examples), key=lambda t: t.name)


def test_every_module_is_searched():
    # Guards the walk itself: the package's main modules are among those collected.
    for name in ("fobmaml.estimators", "fobmaml.optim", "fobmaml.train", "fobmaml.datasets"):
        assert name in MODULES
    total = 0
    for name in MODULES:
        try:
            module = _import(name)
        except pytest.skip.Exception:  # an optional dependency is missing: count the others
            continue
        total += sum(len(t.examples) for t in _examples(module))
    assert total >= 90, total


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = _import(name)
    runner = doctest.DocTestRunner(optionflags=FLAGS)
    for test in _examples(module):
        runner.run(test)
    failed, attempted = runner.summarize(verbose=False)
    assert failed == 0, f"{failed} of {attempted} docstring examples of {name} failed (see above)"
