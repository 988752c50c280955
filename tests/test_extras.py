"""The optional-dependency switch the extras' tests use (tests/extras.py)."""

from __future__ import annotations

import extras
import pytest

MISSING = "fobmaml_no_such_module_for_the_test"


def test_required_extras_are_parsed_from_the_environment(monkeypatch):
    monkeypatch.setenv("FOBMAML_REQUIRE_EXTRAS", f" torch, {MISSING} ,,")
    assert extras.required_extras() == {"torch", MISSING}


def test_a_required_missing_module_fails_instead_of_skipping(monkeypatch):
    monkeypatch.setenv("FOBMAML_REQUIRE_EXTRAS", MISSING)
    with pytest.raises(ImportError):
        extras.require(MISSING)


def test_a_missing_module_skips_when_not_required(monkeypatch):
    monkeypatch.delenv("FOBMAML_REQUIRE_EXTRAS", raising=False)
    with pytest.raises(pytest.skip.Exception):
        extras.require(MISSING)
    assert extras.require("json").dumps([1]) == "[1]"
