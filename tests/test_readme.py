"""The README's example runs and prints what the README says."""

import contextlib
import io
import re
from pathlib import Path

import pytest

# Runs the README's example.
pytestmark = pytest.mark.slow

README = Path(__file__).resolve().parents[1] / "README.md"


def _first_python_block() -> str:
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), re.S)
    assert blocks, "README has no python example"
    return blocks[0]


def test_readme_example_runs_and_matches_its_comment():
    if not README.exists():  # pragma: no cover - installed without the source tree
        pytest.skip("README.md not available")
    code = _first_python_block()
    assert len(code.strip().splitlines()) <= 12
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(io.StringIO()):
        exec(compile(code, "README.md", "exec"), {})
    text = out.getvalue()
    err = float(re.search(r"relative error: (\S+)", text).group(1))
    assert err == pytest.approx(2.2e-4, rel=0.05)  # the value quoted in the README comment
    first, last = map(float, re.search(r"exact meta-loss: (\S+) -> (\S+)", text).groups())
    assert last < first
