"""Do the kernels release the GIL? Two Python threads, each running one long call.

Usage::

    python bench/gil.py [--out DIR] [--quick]

Each case is timed alone and as two concurrent calls from a thread pool, with the
kernels on one thread each (``fm.num_threads(1)``), so that two calls can use both
cores. The ratio of the pair's time to one call's is 1 when the calls overlap fully and
2 (or worse) when they are serialized. Two baselines calibrate the machine:
``numpy.sin`` on a large array releases the GIL (the best overlap the machine gives at
the moment) and a pure-Python loop holds it (serialized). On a loaded machine even the
first stays near 2. The results are printed and written to ``gil.json``; nothing is
asserted about them (``tests/test_thread_safety.py`` checks that concurrent calls
return the same bits as serial ones).
"""

from __future__ import annotations

import argparse
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from _measure import best_time, machine, write_json

import fobmaml as fm


def _python_loop(count: int) -> int:
    total = 0
    for i in range(count):
        total += i
    return total


def cases(quick: bool) -> dict:
    """The calls to time, by name (smaller under ``quick``)."""
    scale = 10 if quick else 1
    quad = fm.datasets.quadratic_tasks(4, 120, kappa=100.0, seed=0)
    rng = np.random.default_rng(0)
    X = rng.uniform(-2, 2, (4, 40, 1))
    mlp = fm.MLPTasks(X, np.sin(X), layers=[1, 32, 32, 1], activation="tanh")
    big = rng.uniform(size=1_000_000 // scale)
    fob = fm.FOBMAML(fm.InnerLoop(steps=1500 // scale, lr=0.5, lam=1.0), scheme="symmetric")
    maml = fm.MAML(fm.InnerLoop(steps=60 // scale, lr=0.05, lam=1.0))
    return {
        f"FOBMAML.meta_gradient, quadratic n=120, K={fob.inner.steps}": lambda: fob.meta_gradient(
            np.zeros(120), quad
        ),
        f"MAML.meta_gradient, MLP 1-32-32-1, K={maml.inner.steps}": lambda: maml.meta_gradient(
            np.zeros(mlp.dim), mlp
        ),
        f"baseline: numpy.sin, {big.size:.0e} entries x 3 (releases the GIL)": lambda: [
            np.sin(big) for _ in range(3)
        ],
        "baseline: Python loop (holds the GIL)": lambda: _python_loop(300_000 // scale),
    }


def measure(quick: bool) -> dict:
    """``{name: {"one_call_s", "two_calls_s", "ratio"}}`` for every case."""
    out = {}
    with fm.num_threads(1):
        for name, fn in cases(quick).items():

            def two(fn=fn):
                with ThreadPoolExecutor(max_workers=2) as pool:
                    for f in [pool.submit(fn), pool.submit(fn)]:
                        f.result()

            single, pair = best_time(fn, repeat=3), best_time(two, repeat=3)
            out[name] = {"one_call_s": single, "two_calls_s": pair, "ratio": pair / single}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("docs/bench/gil"))
    parser.add_argument("--quick", action="store_true", help="smaller calls, for a smoke test")
    args = parser.parse_args(argv)
    results = measure(args.quick)
    for name, r in results.items():
        print(
            f"{name}: one call {r['one_call_s'] * 1e3:.1f} ms, two concurrent calls "
            f"{r['two_calls_s'] * 1e3:.1f} ms = {r['ratio']:.2f}x "
            "(1x: full overlap, 2x: serialized)"
        )
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "gil.json", {"machine": machine(), "quick": args.quick, "cases": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
