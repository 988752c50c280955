"""Ctrl-C during meta_train loses no completed iteration, and the run resumes exactly."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from train_helpers import assert_same_state, guarded

import fobmaml as fm
from fobmaml.checkpoint import load_checkpoint, restore_state
from fobmaml.optim import Momentum, Optimizer
from fobmaml.train import meta_train

M, N, T = 4, 5, 8
TASKS = fm.datasets.quadratic_tasks(M, N, kappa=10.0, seed=3)
EST = fm.FOBMAML(fm.InnerLoop(steps=20, lr=0.5, lam=1.0), delta=1e-4, scheme="symmetric")
X0 = np.linspace(0.5, -0.5, N)


def sampler(rng):
    return TASKS[rng.choice(M, size=2, replace=False)]


def run(**kwargs):
    kwargs.setdefault("progress", False)
    return guarded(X0, sampler, EST, Momentum(0.3, 0.7), T, seed=2, **kwargs)


def reference():
    """The uninterrupted run, and its iterates x_0 .. x_T."""
    xs = []
    res = run(callback=lambda t, x, r: xs.append(x.copy()))
    return res, xs


def assert_prefix(history, ref_history, count):
    """`history` holds exactly the first `count` records of the reference, bit for bit."""
    for key, column in history.items():
        assert column.shape == (count,), key
        if key != "time":
            assert column.tobytes() == ref_history[key][:count].tobytes(), key


def assert_same_run(res, ref):
    assert res.x.tobytes() == ref.x.tobytes()
    assert_prefix(res.history, ref.history, T + 1)
    assert_same_state(res.state, ref.state)


# -- KeyboardInterrupt injected at each stage of iteration K ----------------------------------
K = 4
# Where the interrupt lands, and what is complete then: the iterate x_K and its optimizer
# state always; the record at x_K only when its evaluation had finished.
STAGES = {"sampler": False, "estimator": False, "callback": True, "optimizer": True}


@pytest.fixture
def interrupt_at(monkeypatch):
    """Make the stage raise KeyboardInterrupt at iteration K (once)."""

    def arm(stage):
        calls = {"n": 0}

        def fire():
            calls["n"] += 1
            if calls["n"] == K + 1:
                raise KeyboardInterrupt

        if stage == "estimator":
            original = fm.FOBMAML.estimate

            def estimate(self, *args, **kwargs):
                fire()
                return original(self, *args, **kwargs)

            monkeypatch.setattr(fm.FOBMAML, "estimate", estimate)
        elif stage == "optimizer":

            def update(self, *args, **kwargs):
                fire()
                return Optimizer.update(self, *args, **kwargs)

            monkeypatch.setattr(Momentum, "update", update)
        elif stage == "sampler":

            def draw(rng):
                batch = sampler(rng)  # the generator has moved on when the interrupt hits
                fire()
                return batch

            return {"tasks": draw}
        elif stage == "callback":
            return {"callback": lambda t, x, r: fire()}
        return {}

    return arm


@pytest.mark.parametrize("stage", list(STAGES))
@pytest.mark.parametrize("on_interrupt", ["raise", "return"])
def test_an_interrupt_keeps_every_completed_iteration(
    stage, on_interrupt, interrupt_at, monkeypatch, tmp_path
):
    ref, xs = reference()
    path = tmp_path / "run.ckpt"
    options = interrupt_at(stage)
    tasks = options.pop("tasks", sampler)

    def go():
        return meta_train(
            X0, tasks, EST, Momentum(0.3, 0.7), T, seed=2, progress=False,
            checkpoint=path, on_interrupt=on_interrupt, **options,
        )  # fmt: skip

    if on_interrupt == "raise":
        with pytest.raises(KeyboardInterrupt) as info:
            go()
        partial = info.value.result
    else:
        try:
            partial = go()
        except KeyboardInterrupt:
            pytest.fail("on_interrupt='return' let the KeyboardInterrupt through")
    monkeypatch.undo()

    assert partial.interrupted and not partial.stopped_early and partial.resumed_from is None
    assert partial.x.tobytes() == xs[K].tobytes()
    short = meta_train(X0, sampler, EST, Momentum(0.3, 0.7), K, seed=2, progress=False)
    assert_same_state(partial.state, short.state)  # the state that goes with x_K
    assert_prefix(partial.history, ref.history, K + 1 if STAGES[stage] else K)
    # The checkpoint holds x_K and the K records before it, whatever the stage...
    ck = load_checkpoint(path)
    assert ck.metadata["iteration"] == K and not ck.metadata["finished"]
    assert ck.arrays["x"].tobytes() == xs[K].tobytes()
    assert_prefix(
        {k[8:]: v for k, v in ck.arrays.items() if k.startswith("history/")}, ref.history, K
    )
    template = Momentum(0.3, 0.7).init(X0)
    state = restore_state(template, ck.metadata["optimizer_state"], [ck.arrays["state/0"]])
    assert_same_state(state, partial.state)
    # ...and resuming from it completes the run bit for bit.
    res = run(checkpoint=path, resume=True)
    assert res.resumed_from == K and not res.interrupted
    assert_same_run(res, ref)


def test_an_interrupt_without_a_checkpoint_still_returns_the_run(interrupt_at):
    ref, xs = reference()
    res = run(on_interrupt="return", **interrupt_at("callback"))
    assert res.interrupted and res.x.tobytes() == xs[K].tobytes()
    assert_prefix(res.history, ref.history, K + 1)


# -- a real SIGINT, delivered to a meta-training in another process ---------------------------
# The problem is slow enough (tens of ms per iteration) that the signal usually lands in a
# kernel, with the GIL released. The child runs in lockstep with the test: after printing
# record t it waits for "go", except at record K, so when the SIGINT is sent it is
# somewhere between the end of record K and the wait after record K + 1, and cannot run
# away; no timing matters.
PROBLEM = """
import numpy as np
import fobmaml as fm

tasks = fm.datasets.quadratic_tasks(8, 120, kappa=100.0, seed=1)
est = fm.FOBMAML(fm.InnerLoop(steps=300, lr=0.5, lam=1.0), delta=1e-4, scheme="symmetric")
x0 = np.zeros(120)
if case == "fixed":
    source, opt = tasks, fm.Momentum(0.05, 0.5)
else:
    source, opt = (lambda rng: tasks[rng.choice(8, size=3, replace=False)]), fm.Adam(0.05)
args = (x0, source, est, opt, ITERATIONS)
options = dict(seed=7, progress=False)
"""

CHILD = """
import signal, sys
signal.signal(signal.SIGINT, signal.default_int_handler)  # whatever the parent ignores
case, path, out, on_interrupt = sys.argv[1:5]
{problem}
from fobmaml.checkpoint import save_checkpoint, flatten_state

def callback(t, x, record):
    print(f"record {{t}}", flush=True)
    if t != {k}:
        sys.stdin.readline()

try:
    res = fm.meta_train(*args, **options, callback=callback, checkpoint=path,
                        on_interrupt=on_interrupt)
    code = 0
except KeyboardInterrupt as exc:
    res, code = exc.result, 3
spec, arrays = flatten_state(res.state)
save_checkpoint(
    out,
    {{"x": res.x, **{{"h/" + k: v for k, v in res.history.items()}},
     **{{f"s/{{i}}": a for i, a in enumerate(arrays)}}}},
    {{"interrupted": res.interrupted, "spec": spec}},
)
sys.exit(code)
"""

ITERATIONS, K_CHILD = 8, 3
TIMEOUT = 300.0  # seconds; generous for a loaded machine, never reached when all is well


def problem(case):
    namespace = {"case": case, "ITERATIONS": ITERATIONS}
    exec(PROBLEM, namespace)
    return namespace["args"], namespace["options"]


def lines_of(stream):
    lines = queue.Queue()

    def pump():
        for line in iter(stream.readline, ""):
            lines.put(line.strip())
        lines.put(None)

    threading.Thread(target=pump, daemon=True).start()
    return lines


@pytest.mark.slow
@pytest.mark.skipif(sys.platform == "win32", reason="SIGINT by os.kill is POSIX")
@pytest.mark.parametrize("case, on_interrupt", [("fixed", "raise"), ("sampler", "return")])
def test_sigint_in_a_child_process_then_resume(case, on_interrupt, tmp_path):
    path, out, err = tmp_path / "run.ckpt", tmp_path / "out.ckpt", tmp_path / "stderr.txt"
    code = CHILD.format(problem=textwrap.dedent(PROBLEM), k=K_CHILD).replace(
        "ITERATIONS", str(ITERATIONS)
    )
    with open(err, "w") as stderr:
        child = subprocess.Popen(
            [sys.executable, "-c", code, case, str(path), str(out), on_interrupt],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=stderr,
            text=True,
        )
    try:
        lines = lines_of(child.stdout)
        for t in range(K_CHILD + 1):
            line = lines.get(timeout=TIMEOUT)
            assert line == f"record {t}", (line, err.read_text())
            if t < K_CHILD:
                child.stdin.write("go\n")
                child.stdin.flush()
        os.kill(child.pid, signal.SIGINT)
        returncode = child.wait(timeout=TIMEOUT)
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        child.stdin.close()
        child.stdout.close()
    assert returncode == (3 if on_interrupt == "raise" else 0), err.read_text()

    # The uninterrupted reference, in this process.
    args, options = problem(case)
    xs = []
    ref = meta_train(*args, **options, callback=lambda t, x, r: xs.append(x.copy()))

    # What the child returned (or attached to the KeyboardInterrupt) and checkpointed.
    got, ck = load_checkpoint(out), load_checkpoint(path)
    j = ck.metadata["iteration"]  # the last completed step: K or K + 1
    assert j in (K_CHILD, K_CHILD + 1) and not ck.metadata["finished"]
    assert got.metadata["interrupted"] is True
    history = {k[2:]: v for k, v in got.arrays.items() if k.startswith("h/")}
    count = len(history["iteration"])
    assert count >= K_CHILD + 1  # record K had been printed, so it is there
    assert count in (j, j + 1)
    assert_prefix(history, ref.history, count)
    assert got.arrays["x"].tobytes() == xs[j].tobytes()
    assert ck.arrays["x"].tobytes() == xs[j].tobytes()
    assert_prefix(
        {k[8:]: v for k, v in ck.arrays.items() if k.startswith("history/")}, ref.history, j
    )
    short = meta_train(*args[:4], j, **options)
    template = args[3].init(args[0])
    arrays = [got.arrays[f"s/{i}"] for i in range(sum(k.startswith("s/") for k in got.arrays))]
    state = restore_state(template, got.metadata["spec"], arrays)
    assert_same_state(state, short.state)

    # Resuming completes the run exactly as if it had never been interrupted.
    res = meta_train(*args, **options, checkpoint=path, resume=True)
    assert res.resumed_from == j
    assert res.x.tobytes() == ref.x.tobytes()
    assert_prefix(res.history, ref.history, ITERATIONS + 1)
    assert_same_state(res.state, ref.state)
