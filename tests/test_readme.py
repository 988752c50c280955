"""The README's example runs and prints what the README says."""

import contextlib
import io
import re
from pathlib import Path

import extras
import numpy as np
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


def _block(marker: str) -> str:
    blocks = [
        b for b in re.findall(r"```python\n(.*?)```", README.read_text(), re.S) if marker in b
    ]
    assert len(blocks) == 1, f"README must have one python block with {marker!r}"
    return blocks[0]


def test_readme_network_example_runs():
    """The network example, with 8 channels and 2 outer steps instead of 64 and 100."""
    if not README.exists():  # pragma: no cover - installed without the source tree
        pytest.skip("README.md not available")
    code = _block("fm.datasets.mnist1d_fewshot(5, 5, 5, meta_batch=16, net=net)")
    assert code.count("64") == 4 and code.count(", 100)") == 1
    code = code.replace("64", "8").replace(", 100)", ", 2)")
    scope: dict = {}
    exec(compile(code, "README.md", "exec"), scope)
    net, res = scope["net"], scope["res"]
    assert net.shapes((1, 40))[-1] == (5,)
    x0 = net.init_params(seed=0)
    assert res.x.shape == x0.shape and np.isfinite(res.x).all() and not np.array_equal(res.x, x0)


def test_readme_torch_example_runs():
    """The PyTorch example, with 2 outer steps instead of 500."""
    extras.require("torch")
    if not README.exists():  # pragma: no cover - installed without the source tree
        pytest.skip("README.md not available")
    code = _block("import fobmaml as fm, fobmaml.torch as fmt")
    assert code.count("range(500)") == 1
    scope: dict = {}
    exec(compile(code.replace("range(500)", "range(2)"), "README.md", "exec"), scope)
    model, opt = scope["model"], scope["opt"]
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and bool(g.isfinite().all()) for g in grads)
    buffers = [opt.state[p]["momentum_buffer"] for p in model.parameters()]
    assert all(bool(b.isfinite().all()) and bool(b.any()) for b in buffers)
