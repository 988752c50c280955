"""Every local file a Markdown page of the repository links to, or names under ``docs/``,
is tracked by git.

A path that exists only on the machine that produced it (an ignored result folder, say)
looks fine there and is missing from every clone. These tests read the tracked Markdown
files, collect their local links and the ``docs/...`` paths they name, and check each
against ``git ls-files``. They skip when the tree is not a git checkout (an sdist, say).
"""

from __future__ import annotations

import posixpath
import re
import shutil
import subprocess
from functools import lru_cache
from pathlib import Path, PurePosixPath

import pytest

ROOT = Path(__file__).resolve().parents[1]

# [text](target) and ![alt](target); the target ends at whitespace or ")".
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
# A docs/ path named in prose or code: docs/, docs/figure1/figure1.png, ...
_DOCS_PATH = re.compile(r"(?<![\w./-])(docs/[\w./-]*)")


@lru_cache(maxsize=1)
def _tracked() -> frozenset[str]:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    try:
        out = subprocess.run(
            ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True, timeout=60
        ).stdout
    except subprocess.CalledProcessError:
        pytest.skip("not a git checkout")
    files = frozenset(p for p in out.decode().split("\0") if p)
    if not files:
        pytest.skip("not a git checkout")
    return files


def _is_tracked(path: str) -> bool:
    """A tracked file, or a directory that holds at least one tracked file."""
    files = _tracked()
    path = path.rstrip("/")
    if path in ("", "."):
        return True
    return path in files or any(f.startswith(path + "/") for f in files)


def _normalize(base: PurePosixPath, target: str) -> str | None:
    """`target` (relative to the page's folder `base`) as a repository path, or None if
    it is not a local file path (a URL, an anchor, a mail address)."""
    target = target.split("#", 1)[0].split("?", 1)[0]
    if not target or re.match(r"^[a-zA-Z][a-zA-Z0-9+.-]*:", target):
        return None
    joined = target.lstrip("/") if target.startswith("/") else str(base / target)
    path = posixpath.normpath(joined)
    return "/.." if path == ".." or path.startswith("../") else path  # outside: missing


def local_references(page: str, text: str) -> set[str]:
    """The repository paths that the Markdown `text` of file `page` links to or names."""
    base = PurePosixPath(page).parent
    refs = set()
    for target in _LINK.findall(text):
        path = _normalize(base, target)
        if path is not None:
            refs.add(path)
    for path in _DOCS_PATH.findall(text):
        refs.add(path.rstrip(".,;:"))
    return refs


def _pages() -> list[str]:
    return sorted(
        p for p in _tracked() if p.endswith(".md") and not p.startswith("cpp/third_party/")
    )


def test_the_reference_parser_finds_links_and_docs_paths():
    text = (
        "![Figure 1](docs/figure1/figure1.png) see [why](bench/README.md#why) and "
        "[site](https://example.org/x.png), files in `docs/sinusoid/`. [up](../README.md)"
    )
    assert local_references("README.md", text) == {
        "docs/figure1/figure1.png",
        "bench/README.md",
        "docs/sinusoid/",
        "/..",
    }
    assert local_references("bench/README.md", "[a](../docs/x.csv) [b](#anchor)") == {"docs/x.csv"}


def test_readme_names_its_headline_figure():
    # Guards the parser against silently finding nothing in the real README.
    refs = local_references("README.md", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert "docs/figure1/figure1.png" in refs


def test_every_local_path_the_markdown_pages_reference_is_tracked():
    pages = _pages()
    assert "README.md" in pages and "bench/README.md" in pages
    missing = []
    for page in pages:
        text = (ROOT / page).read_text(encoding="utf-8")
        for path in sorted(local_references(page, text)):
            if not _is_tracked(path):
                missing.append(f"{page}: {path}")
    assert not missing, "referenced but not tracked by git:\n" + "\n".join(missing)
