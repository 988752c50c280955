"""The installed distribution's metadata: one version, the typing marker, the licence files,
and supported Python versions that agree everywhere they are written.

The first tests read the installed metadata, so they hold for a wheel installed outside the
source tree as well. The last one reads pyproject.toml and skips without it.
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from importlib.resources import files
from pathlib import Path

import pytest

import fobmaml as fm

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def _classified_minors(meta) -> list[int]:
    """The 3.N of every ``Programming Language :: Python :: 3.N`` classifier, sorted."""
    pattern = re.compile(r"Programming Language :: Python :: 3\.(\d+)$")
    return sorted(
        int(m.group(1)) for c in meta.get_all("Classifier") or [] if (m := pattern.match(c))
    )


def _requires_python_minor(spec: str) -> int:
    match = re.fullmatch(r">=\s*3\.(\d+)", spec.strip())
    assert match, f"Requires-Python should be a plain lower bound '>=3.N' (got {spec!r})"
    return int(match.group(1))


def test_version_is_the_installed_distributions():
    # One source (python/fobmaml/_version.py): the build writes it into the metadata.
    assert fm.__version__ == md.version("fobmaml")
    assert re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?(\.post\d+)?(\.dev\d+)?", fm.__version__)


def test_the_typing_marker_is_installed():
    assert files("fobmaml").joinpath("py.typed").is_file()


def test_the_licence_files_are_in_the_metadata():
    dist = md.distribution("fobmaml")
    assert dist.metadata["License-Expression"] == "BSD-3-Clause"
    declared = set(dist.metadata.get_all("License-File") or [])
    assert {"LICENSE", "cpp/third_party/eigen/COPYING.MPL2"} <= declared
    shipped = {str(p).split(".dist-info/licenses/", 1)[-1] for p in dist.files or []}
    missing = declared - shipped
    assert not missing, f"declared License-File entries not installed: {sorted(missing)}"


def test_supported_python_versions_agree_in_the_metadata():
    meta = md.metadata("fobmaml")
    minors = _classified_minors(meta)
    low = _requires_python_minor(meta["Requires-Python"])
    assert minors, "no 'Programming Language :: Python :: 3.N' classifiers"
    assert minors == list(range(low, minors[-1] + 1)), (low, minors)
    assert "Typing :: Typed" in meta.get_all("Classifier")
    assert meta.get_all("Project-URL"), "no project URLs"


def test_supported_python_versions_agree_in_pyproject():
    if not PYPROJECT.exists():  # pragma: no cover - installed without the source tree
        pytest.skip("pyproject.toml not available")
    if sys.version_info < (3, 11):
        pytest.skip("tomllib is in the standard library from Python 3.11")
    import tomllib

    data = tomllib.loads(PYPROJECT.read_text(encoding="utf-8"))
    project = data["project"]
    low = _requires_python_minor(project["requires-python"])
    pattern = re.compile(r"Programming Language :: Python :: 3\.(\d+)$")
    minors = sorted(int(m.group(1)) for c in project["classifiers"] if (m := pattern.match(c)))
    assert minors[0] == low
    assert data["tool"]["ruff"]["target-version"] == f"py3{low}"
    # cibuildwheel builds exactly the classified CPython versions.
    built = sorted(
        int(m) for m in re.findall(r"\bcp3(\d+)-\*", data["tool"]["cibuildwheel"]["build"])
    )
    assert built == minors
