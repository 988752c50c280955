"""torch is optional: ``import fobmaml`` never imports it, and ``import fobmaml.torch``
without torch says how to install it. Both run in fresh interpreters, with or without
torch installed."""

from __future__ import annotations

import subprocess
import sys


def _run(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False
    )


def test_import_fobmaml_does_not_import_torch():
    proc = _run(
        "import sys, numpy as np, fobmaml as fm\n"
        "tasks = fm.datasets.quadratic_tasks(m=2, n=4, kappa=10.0, seed=0)\n"
        "fm.FOBMAML(fm.InnerLoop(steps=3, lr=0.5, lam=1.0)).meta_gradient(np.zeros(4), tasks)\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'jax', 'dask')))"
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_fobmaml_torch_without_torch_says_how_to_install_it():
    # sys.modules["torch"] = None makes `import torch` fail as if it were not installed.
    proc = _run(
        "import sys; sys.modules['torch'] = None\n"
        "try:\n"
        "    import fobmaml.torch\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    assert proc.returncode == 0, proc.stderr
    assert 'pip install "fobmaml[torch]"' in proc.stdout
