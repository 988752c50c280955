"""The documentation site under docs/: every page is in the table of contents, the estimator
contract names every estimator and optimizer, and (with the ``docs`` extra) Sphinx builds it
with warnings as errors, as ``tools/build_docs.sh`` does in CI."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import extras
import pytest

import fobmaml as fm

DOCS = Path(__file__).resolve().parents[1] / "docs"


def _toctree_entries() -> list[str]:
    text = (DOCS / "index.md").read_text(encoding="utf-8")
    entries = []
    for block in re.findall(r"```\{toctree\}\n(.*?)```", text, flags=re.S):
        entries += [ln.strip() for ln in block.splitlines() if ln.strip() and ":" not in ln]
    return entries


def test_every_page_is_in_the_table_of_contents():
    # An orphan page is a warning, and the site is built with warnings as errors.
    pages = sorted(p.stem for p in DOCS.glob("*.md") if p.name != "index.md")
    entries = _toctree_entries()
    assert "estimators" in entries and "api" in entries
    assert sorted(entries) == pages


def test_the_contract_names_every_estimator_and_optimizer():
    text = (DOCS / "estimators.md").read_text(encoding="utf-8")
    for name in ("Exact", "MAML", "FOMAML", "Reptile", "IMAML", "HFMAML", "FOBMAML"):
        assert isinstance(getattr(fm, name), type)
        assert f"`{name}(inner" in text, name
    for name in ("GD", "Momentum", "Adam", "ClippedGD", "NormalizedGD", "SNGDM"):
        assert f"`{name}(lr" in text, name


@pytest.mark.slow
def test_the_site_builds_without_warnings(tmp_path):
    extras.require("sphinx")
    extras.require("myst_parser")
    extras.require("numpydoc")
    extras.require("furo")
    out = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-q", "-b", "html"]
        + [str(DOCS), str(tmp_path / "html")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert (tmp_path / "html" / "estimators.html").exists()
