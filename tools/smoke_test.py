"""Smoke test of an installed fobmaml, run from a directory outside the source tree.

    python smoke_test.py OUT_DIR

Checks that the package imported is the installed one (not a source checkout); that every
compiled variant of the core loads and gives FO-B-MAML's meta-gradient close to Exact's on a
small quadratic problem, bit-identical on 1 and 2 threads; that on Linux the OpenMP runtime
loaded is the one vendored in the wheel (``fobmaml.libs/``); and that ``fobmaml figure1
--quick`` writes its figure and data. Exits non-zero on any failure. tools/check_wheel.sh
runs it on the repaired wheel.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def meta_gradients(isa: str) -> dict:
    """FO-B-MAML and Exact on a fixed problem, in a fresh interpreter with FOBMAML_ISA=isa."""
    code = """
import json, sys
import numpy as np
import fobmaml as fm

tasks = fm.datasets.quadratic_tasks(m=6, n=12, kappa=10.0, seed=0)
inner = fm.InnerLoop(steps=400, lr=0.5, lam=1.0)
x = np.linspace(-1.0, 1.0, 12)
est = fm.FOBMAML(inner, delta=1e-4, scheme="symmetric")
with fm.num_threads(1):
    g1 = est.meta_gradient(x, tasks)
with fm.num_threads(2):
    g2 = est.meta_gradient(x, tasks)
exact = fm.Exact(inner).meta_gradient(x, tasks)
try:  # the OpenMP runtime this process loaded (Linux)
    with open("/proc/self/maps") as fh:
        omp = sorted({l.split()[-1] for l in fh if "gomp" in l or "libomp" in l})
except OSError:
    omp = []
json.dump({"file": fm.__file__, "version": fm.__version__, "build": fm.build_info(), "omp": omp,
           "rel_err": float(np.linalg.norm(g1 - exact) / np.linalg.norm(exact)),
           "norm": float(np.linalg.norm(exact)), "threads_equal": bool(np.array_equal(g1, g2))},
          sys.stdout)
"""
    env = {**os.environ, "FOBMAML_ISA": isa}
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    return json.loads(out.stdout)


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    out = Path(sys.argv[1])
    failures = []

    def check(ok: bool, what: str) -> None:
        print(("ok    " if ok else "FAIL  ") + what)
        if not ok:
            failures.append(what)

    import fobmaml

    installed = Path(fobmaml.__file__).resolve()
    check("site-packages" in installed.parts, f"fobmaml is the installed package ({installed})")
    check((installed.parent / "py.typed").is_file(), "the py.typed marker is installed")

    isas = ["baseline"]
    if fobmaml.build_info()["isa"] == "avx2":
        isas.append("avx2")
    for isa in isas:
        r = meta_gradients(isa)
        check(
            r["build"]["isa"] == isa, f"FOBMAML_ISA={isa} loads that variant ({r['build']['isa']})"
        )
        check(r["build"]["openmp"], f"[{isa}] built with OpenMP ({r['build']['compiler']})")
        if sys.platform.startswith("linux"):
            vendored = [p for p in r["omp"] if "fobmaml.libs" in Path(p).parts]
            check(len(vendored) == 1 and vendored == r["omp"], f"[{isa}] OpenMP runtime {r['omp']}")
        check(r["norm"] > 1e-3, f"[{isa}] the exact meta-gradient is not trivial ({r['norm']:.3g})")
        check(
            r["rel_err"] < 1e-6, f"[{isa}] FO-B-MAML matches Exact (rel. error {r['rel_err']:.2e})"
        )
        check(r["threads_equal"], f"[{isa}] 1 and 2 threads give identical bits")

    # The console script the wheel installed, next to this interpreter (its venv need not be
    # activated).
    script = shutil.which("fobmaml", path=os.path.dirname(sys.executable))
    check(script is not None, f"the fobmaml command is installed next to {sys.executable}")
    cmd = [script or "fobmaml", "figure1", "--quick", "--no-progress", "--out", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    check(
        run.returncode == 0,
        " ".join(cmd) + (f"\n{run.stdout}\n{run.stderr}" if run.returncode else ""),
    )
    written = sorted(p.name for p in out.glob("*")) if out.is_dir() else []
    check("figure1.png" in written and "settings.json" in written, f"figure1 wrote {written}")
    check(
        out.joinpath("figure1.png").is_file()
        and out.joinpath("figure1.png").stat().st_size > 10_000,
        "figure1.png is a real image",
    )
    print(f"{len(failures)} failed" if failures else "smoke test passed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
