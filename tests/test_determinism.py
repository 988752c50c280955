"""Determinism of whole meta-training runs.

Guaranteed (and tested here): with the same build (the same ISA variant of the core,
see ``fm.build_info()["isa"]``), the same inputs and the same seed,

- repeated runs give bit-identical trajectories (x, losses, estimate norms);
- the number of threads does not change a single bit: 1 and 2 threads, set in-process
  or through ``OMP_NUM_THREADS``, give identical meta-gradients and trajectories.

Not guaranteed: bit-identity across the two ISA variants (the AVX2 build contracts
multiply-adds into FMAs), across compilers or Eigen versions, or across machines whose
build selects a different variant; results then agree to rounding.
"""

import os
import subprocess
import sys

import numpy as np
import pytest

import fobmaml as fm


def _run(threads: int):
    sampler = fm.datasets.sinusoid(12, 10, 10, layers=[1, 24, 24, 1], activation="tanh")
    inner = fm.InnerLoop(steps=5, lr=0.025, lam=20.0, momentum=0.3)
    x0 = fm.mlp.init_params([1, 24, 24, 1], seed=3)
    with fm.num_threads(threads):
        return fm.meta_train(
            x0,
            sampler,
            fm.FOBMAML(inner, scheme="symmetric"),
            fm.SNGDM(0.05, 0.9),
            15,
            seed=7,
            progress=False,
        )


def test_same_seed_same_trajectory_any_thread_count():
    a, b, c = _run(1), _run(1), _run(2)
    for other in (b, c):
        assert np.array_equal(a.x, other.x)
        for key in ("meta_loss", "estimate_norm"):
            assert np.array_equal(a.history[key], other.history[key])


def test_different_seeds_differ():
    sampler = fm.datasets.sinusoid(4, 5, 5, layers=[1, 8, 1], activation="tanh")
    inner = fm.InnerLoop(steps=2, lr=0.05, lam=5.0)
    x0 = fm.mlp.init_params([1, 8, 1])
    runs = [
        fm.meta_train(x0, sampler, fm.FOMAML(inner), fm.GD(0.01), 3, seed=s, progress=False)
        for s in (0, 1)
    ]
    assert not np.array_equal(runs[0].x, runs[1].x)


_SCRIPT = """
import numpy as np, fobmaml as fm
sampler = fm.datasets.sinusoid(16, 10, 10, layers=[1, 40, 40, 1], activation="tanh")
inner = fm.InnerLoop(steps=5, lr=0.025, lam=20.0)
x0 = fm.mlp.init_params([1, 40, 40, 1], seed=0)
res = fm.meta_train(x0, sampler, fm.MAML(inner), fm.Adam(1e-3), 6, seed=1, progress=False)
print(fm.get_num_threads(), res.x.tobytes().hex(), res.history["meta_loss"].tobytes().hex())
"""


@pytest.mark.slow
def test_omp_num_threads_one_and_two_give_identical_trajectories():
    out = {}
    for k in ("1", "2"):
        proc = subprocess.run(
            [sys.executable, "-c", _SCRIPT],
            env={**os.environ, "OMP_NUM_THREADS": k},
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert proc.returncode == 0, proc.stderr
        threads, x_hex, loss_hex = proc.stdout.split()
        assert threads == k
        out[k] = (x_hex, loss_hex)
    assert out["1"] == out["2"]
    x = np.frombuffer(bytes.fromhex(out["1"][0]))
    assert x.size == fm.mlp.num_params([1, 40, 40, 1]) and np.isfinite(x).all()
