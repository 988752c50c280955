"""Dask stays optional: ``import fobmaml`` (and ``fobmaml.distributed``) never imports it, the
executor says how to install it, and meta_train and the command line check their
``executor`` and ``--dask`` arguments. The command line's ``--dask local:2`` gives the
same files as a run in this process (it needs Dask, and skips without it)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import extras
import numpy as np
import pytest

import fobmaml as fm
from fobmaml import cli


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=300
    )


@pytest.mark.slow
def test_import_fobmaml_does_not_import_dask():
    out = _python(
        """
        import sys
        import fobmaml, fobmaml.distributed, fobmaml.train
        loaded = sorted(m for m in sys.modules if m.split(".")[0] in ("dask", "distributed"))
        print(loaded)
        """
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[]"


@pytest.mark.slow
def test_without_dask_the_executor_says_how_to_install_it():
    # `sys.modules[name] = None` makes `import name` fail, as if it were not installed.
    out = _python(
        """
        import sys
        sys.modules["distributed"] = None
        from fobmaml.distributed import DaskExecutor
        try:
            DaskExecutor(object())
        except ImportError as exc:
            print(exc)
        """
    )
    assert out.returncode == 0, out.stderr
    assert 'pip install "fobmaml[dask]"' in out.stdout


def test_meta_train_checks_its_executor():
    tasks = fm.datasets.quadratic_tasks(2, 3, kappa=2.0, seed=0)
    est = fm.FOMAML(fm.InnerLoop(steps=2, lr=0.1))
    with pytest.raises(TypeError, match="`executor` must be a fobmaml.distributed.DaskExecutor"):
        fm.meta_train(np.zeros(3), tasks, est, fm.GD(0.1), 1, executor="local:2")


@pytest.mark.parametrize("value", ["local:0", "local:", "local:two", "dask", "tcp://", "8786"])
def test_the_command_line_checks_dask(value, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["sinusoid", "--quick", "--dask", value])
    assert info.value.code == 2
    assert "--dask: expected local:N" in capsys.readouterr().err


@pytest.mark.slow
def test_dask_on_the_command_line_gives_the_same_files(tmp_path):
    extras.require("dask.distributed")
    common = ["sinusoid", "--quick", "--no-progress", "--estimators", "fobmaml,fomaml"]
    common += ["--iterations", "6", "--eval-every", "3"]
    assert cli.main([*common, "--out", str(tmp_path / "here")]) == 0
    assert cli.main([*common, "--out", str(tmp_path / "dask"), "--dask", "local:2"]) == 0
    name = "sinusoid_curves.csv"
    assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "dask" / name).read_bytes()
    here, there = (
        np.load(tmp_path / "here" / "params.npz"),
        np.load(tmp_path / "dask" / "params.npz"),
    )
    assert sorted(here.files) == sorted(there.files) == ["fobmaml", "fomaml", "x0"]
    for key in here.files:
        assert here[key].tobytes() == there[key].tobytes()
