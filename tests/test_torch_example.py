"""examples/torch_mnist1d_cnn.py runs end to end (a tiny version) and writes its results."""

from __future__ import annotations

import csv
import importlib.util
import json
import math
from pathlib import Path

import extras
import pytest

torch = extras.require("torch")

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "torch_mnist1d_cnn.py"


def _load():
    spec = importlib.util.spec_from_file_location("torch_mnist1d_cnn", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_example_meta_trains_and_writes_its_curve(tmp_path):
    example = _load()
    result = example.main(["--quick", "--out", str(tmp_path)])
    curve = result["curve"]
    assert [r["iteration"] for r in curve] == [0, 2, 4]
    for r in curve:
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert math.isfinite(r["test_loss"])
    assert all(math.isfinite(r["meta_loss"]) for r in curve[1:])
    # 5-way classification at initialization: the loss is near log 5.
    assert abs(curve[0]["test_loss"] - math.log(5)) < 0.5
    with open(tmp_path / "curve.csv", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 3
    settings = json.loads((tmp_path / "settings.json").read_text())
    assert settings["estimator"] == "FOBMAML" and settings["num_params"] == sum(
        p.numel() for p in example.cnn(4).parameters()
    )
    assert (tmp_path / "curve.png").stat().st_size > 0


def test_accuracy_after_adaptation_counts_correct_query_predictions():
    """The example's evaluation against a direct count with each task's adapted model."""
    import torch.nn.functional as F
    from torch.func import functional_call

    import fobmaml as fm
    import fobmaml.torch as fmt

    example = _load()
    torch.manual_seed(0)
    model = example.cnn(3)
    Xs, Xq = torch.randn(3, 10, 1, 40), torch.randn(3, 12, 1, 40)
    Ys, Yq = torch.randint(0, 5, (3, 10)), torch.randint(0, 5, (3, 12))
    inner = fm.InnerLoop(steps=2, lr=0.1, lam=2.0)
    acc, _ = example.accuracy_after_adaptation(model, (Xs, Ys, Xq, Yq), inner)
    phi = fmt.adapt(model, Xs, Ys, inner, F.cross_entropy)
    correct = 0
    for i in range(3):
        params = {name: t[i] for name, t in phi.items()}
        with torch.no_grad():
            correct += int((functional_call(model, params, (Xq[i],)).argmax(-1) == Yq[i]).sum())
    assert acc == correct / 36


def test_the_docs_example_runs_and_takes_one_normalized_step():
    """docs/torch.md's first code block, with one outer iteration instead of 500: SNGDM's
    first step has length exactly lr = 0.05 over all the CNN's parameters."""
    import re

    page = EXAMPLE.parents[1] / "docs" / "torch.md"
    code = re.findall(r"```python\n(.*?)```", page.read_text(), re.S)[0]
    assert "for t in range(500):" in code and len(code.strip().splitlines()) <= 20
    start = "x0 = torch.nn.utils.parameters_to_vector(model.parameters()).detach().clone()\n"
    code = code.replace("for t in range(500):", start + "for t in range(1):")
    # Smaller, for the test's time: 2 episodes per batch and 2 inner steps.
    code = code.replace("meta_batch=16", "meta_batch=2").replace("steps=20", "steps=2")
    scope: dict = {}
    exec(compile(code, "docs/torch.md", "exec"), scope)
    model, loss = scope["model"], scope["loss"]
    assert loss.dim() == 0 and 1.0 < float(loss) < 2.5  # 5 classes: about log 5 = 1.61
    step = torch.nn.utils.parameters_to_vector(model.parameters()).detach() - scope["x0"]
    assert float(step.norm()) == pytest.approx(0.05, rel=1e-5)
