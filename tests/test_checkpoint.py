"""Checkpoint files (format, checksum, atomic writes) and meta_train's checkpoint/resume."""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import struct

import numpy as np
import pytest
from train_helpers import assert_same_state, guarded

import fobmaml as fm
from fobmaml import checkpoint as ckpt
from fobmaml.checkpoint import (
    CheckpointError,
    flatten_state,
    load_checkpoint,
    restore_state,
    save_checkpoint,
)
from fobmaml.optim import GD, SNGDM, Adam, ClippedGD, Momentum, NormalizedGD
from fobmaml.train import meta_train

M, N = 4, 5
TASKS = fm.datasets.quadratic_tasks(M, N, kappa=10.0, seed=3)
INNER = fm.InnerLoop(steps=20, lr=0.5, lam=1.0)
EST = fm.FOBMAML(INNER, delta=1e-4, scheme="symmetric")
EXACT = fm.Exact(INNER)
OPTIMIZERS = [GD(0.5), Momentum(0.3, 0.7), Adam(0.05), SNGDM(0.1, 0.8)]


def sampler(rng):
    return TASKS[rng.choice(M, size=2, replace=False)]


def arrays_and_metadata():
    arrays = {
        "x": np.linspace(-1, 1, 7),
        "history/iteration": np.arange(4, dtype=np.int64),
        "mask": np.array([True, False]),
        "scalar": np.array(3.25),
        "empty": np.zeros((0, 3)),
        "f32": np.arange(6, dtype=np.float32).reshape(2, 3),
    }
    metadata = {
        "iteration": 7,
        "big": 2**127 + 5,
        "tiny": 5e-324,
        "third": 1.0 / 3.0,
        "nan": float("nan"),
        "nested": {"list": [1, "two", None, True]},
        "numpy": np.float64(0.1),
    }
    return arrays, metadata


@pytest.fixture
def saved(tmp_path):
    arrays, metadata = arrays_and_metadata()
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, arrays, metadata)
    return path


# -- the file format --------------------------------------------------------------------------
def test_round_trip_is_exact(saved):
    arrays, metadata = arrays_and_metadata()
    ck = load_checkpoint(saved)
    assert ck.version == ckpt.FORMAT_VERSION == 1
    assert sorted(ck.arrays) == sorted(arrays)
    for name, arr in arrays.items():
        assert ck.arrays[name].dtype == arr.dtype and ck.arrays[name].shape == arr.shape
        assert ck.arrays[name].tobytes() == arr.tobytes()
    meta = ck.metadata
    assert meta["big"] == 2**127 + 5 and meta["tiny"] == 5e-324 and meta["third"] == 1.0 / 3.0
    assert np.isnan(meta["nan"]) and meta["numpy"] == 0.1
    assert meta["nested"] == {"list": [1, "two", None, True]}


def test_the_layout_is_magic_fields_digest_header_payload(saved):
    data = saved.read_bytes()
    assert data[:8] == b"\x89FMCKPT\n"
    version, header_len, payload_len = struct.unpack("<IQQ", data[8:28])
    assert version == 1 and len(data) == 60 + header_len + payload_len
    assert data[28:60] == hashlib.sha256(data[8:28] + data[60:]).digest()
    header = json.loads(data[60 : 60 + header_len])
    assert header["metadata"]["iteration"] == 7
    assert header["arrays"]["x"] == {"dtype": "<f8", "shape": [7]}
    with np.load(io.BytesIO(data[60 + header_len :]), allow_pickle=False) as npz:
        np.testing.assert_array_equal(npz["x"], np.linspace(-1, 1, 7))


@pytest.mark.slow
def test_every_flipped_bit_is_detected(saved):
    data = saved.read_bytes()
    flipped = saved.with_name("flipped.ckpt")
    for i in range(len(data)):
        bad = bytearray(data)
        bad[i] ^= 1 << (i % 8)
        flipped.write_bytes(bytes(bad))
        with pytest.raises(CheckpointError):
            load_checkpoint(flipped)


@pytest.mark.slow
def test_every_truncation_and_any_trailing_data_are_detected(saved):
    data = saved.read_bytes()
    cut = saved.with_name("cut.ckpt")
    for size in range(len(data)):
        cut.write_bytes(data[:size])
        with pytest.raises(CheckpointError, match="truncated|not a fobmaml checkpoint"):
            load_checkpoint(cut)
    cut.write_bytes(data + b"\0")
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(cut)


def test_messages_name_the_problem(saved, tmp_path):
    data = saved.read_bytes()
    other = tmp_path / "other.ckpt"
    other.write_bytes(data[:28] + bytes(32) + data[60:])
    with pytest.raises(CheckpointError, match="SHA-256 checksum does not match"):
        load_checkpoint(other)
    other.write_bytes(data[:-10])
    with pytest.raises(CheckpointError, match=r"truncated: .* announces \d+ bytes, the file has"):
        load_checkpoint(other)
    other.write_bytes(b"PK\x03\x04" + data[4:])
    with pytest.raises(CheckpointError, match="not a fobmaml checkpoint"):
        load_checkpoint(other)
    with pytest.raises(FileNotFoundError):
        load_checkpoint(tmp_path / "missing.ckpt")


def forge(header: bytes, payload: bytes, version: int = 1) -> bytes:
    """A file with a valid checksum around arbitrary contents."""
    fields = struct.pack("<IQQ", version, len(header), len(payload))
    return (
        b"\x89FMCKPT\n"
        + fields
        + hashlib.sha256(fields + header + payload).digest()
        + header
        + payload
    )


def npz_bytes(**arrays) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def test_valid_checksums_around_bad_contents_are_rejected(tmp_path):
    path = tmp_path / "forged.ckpt"
    good_header = json.dumps({"metadata": {}, "arrays": {"x": {"dtype": "<f8", "shape": [2]}}})
    payload = npz_bytes(x=np.zeros(2))
    path.write_bytes(forge(good_header.encode(), payload))
    assert load_checkpoint(path).arrays["x"].shape == (2,)  # the forgery itself is sound
    path.write_bytes(forge(good_header.encode(), payload, version=2))
    with pytest.raises(CheckpointError, match="format version 2; this fobmaml reads version 1"):
        load_checkpoint(path)
    cases = [
        (b"{not json", payload, "malformed"),
        (b'{"metadata": {}}', payload, "malformed"),
        (good_header.replace("[2]", "[3]").encode(), payload, "does not match its dtype"),
        (good_header.replace('"x"', '"y"').encode(), payload, "the archive holds"),
        (good_header.encode(), b"not a zip archive", "malformed"),
        # A pickled object array is never unpickled.
        (
            b'{"metadata": {}, "arrays": {"x": {"dtype": "|O", "shape": [1]}}}',
            npz_bytes(x=np.array([{"a": 1}], dtype=object)),
            "malformed",
        ),
    ]
    for header, body, match in cases:
        path.write_bytes(forge(header, body))
        with pytest.raises(CheckpointError, match=match):
            load_checkpoint(path)


def test_bad_contents_are_refused_at_save(tmp_path):
    path = tmp_path / "a.ckpt"
    with pytest.raises(TypeError, match=r"`arrays\['o'\]` must be a numeric.*pickle"):
        save_checkpoint(path, {"o": np.array([None])}, {})
    with pytest.raises(TypeError, match="`metadata` must be JSON-serialisable: found object"):
        save_checkpoint(path, {}, {"o": object()})
    with pytest.raises(TypeError, match="`arrays` must be a mapping"):
        save_checkpoint(path, [np.zeros(2)], {})
    with pytest.raises(TypeError, match="`metadata` must be a dict"):
        save_checkpoint(path, {}, [1])
    assert not os.listdir(tmp_path)


# -- atomic writes ----------------------------------------------------------------------------
def test_the_write_syncs_the_file_and_the_directory(tmp_path, monkeypatch):
    synced = []
    real_fsync = os.fsync

    def fsync(fd):
        synced.append(os.path.realpath(f"/proc/self/fd/{fd}") if os.path.exists("/proc") else fd)
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    save_checkpoint(str(tmp_path / "a.ckpt"), {"x": np.ones(2)}, {})
    assert len(synced) == (2 if os.name == "posix" else 1)
    if os.path.exists("/proc") and os.name == "posix":
        directory = os.path.realpath(tmp_path)
        assert synced[0].startswith(os.path.join(directory, ".a.ckpt."))  # the temporary file
        assert synced[1] == directory  # then the directory, after the rename
    assert os.listdir(tmp_path) == ["a.ckpt"]


@pytest.mark.parametrize("where", ["fsync", "replace"])
@pytest.mark.parametrize("error", [OSError("disk full"), KeyboardInterrupt()])
def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(
    tmp_path, monkeypatch, where, error
):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"x": np.ones(3)}, {"version": "old"})
    before = path.read_bytes()

    def fail(*args):
        raise error

    monkeypatch.setattr(os, where, fail)
    with pytest.raises(type(error)):
        save_checkpoint(path, {"x": np.zeros(3)}, {"version": "new"})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert os.listdir(tmp_path) == ["a.ckpt"]
    assert load_checkpoint(path).metadata == {"version": "old"}


def test_a_save_replaces_the_previous_file(tmp_path):
    path = tmp_path / "a.ckpt"
    save_checkpoint(path, {"x": np.ones(3)}, {"n": 1})
    save_checkpoint(path, {"x": np.zeros(2)}, {"n": 2})
    ck = load_checkpoint(path)
    assert ck.metadata == {"n": 2} and ck.arrays["x"].shape == (2,)
    assert os.listdir(tmp_path) == ["a.ckpt"]


# -- optimizer states -------------------------------------------------------------------------
def states_after_steps(opt, steps=3):
    x = np.linspace(-1, 1, N)
    state = opt.init(x)
    for k in range(steps):
        x, state = opt.step(x, np.cos(np.arange(N) + k), state)
    return state


@pytest.mark.parametrize(
    "opt", OPTIMIZERS + [ClippedGD(0.1, 1.0), NormalizedGD(0.1)], ids=lambda o: repr(o)
)
def test_optimizer_states_round_trip_exactly(opt, tmp_path):
    state = states_after_steps(opt)
    spec, arrays = flatten_state(state)
    path = tmp_path / "s.ckpt"
    save_checkpoint(path, {f"s{i}": a for i, a in enumerate(arrays)}, {"spec": spec})
    ck = load_checkpoint(path)
    loaded = [ck.arrays[f"s{i}"] for i in range(len(arrays))]
    restored = restore_state(opt.init(np.zeros(N)), ck.metadata["spec"], loaded)
    assert_same_state(restored, state)
    # The restored state continues exactly like the original.
    g = np.sin(np.arange(N))
    u1, s1 = opt.update(g, state, np.ones(N))
    u2, s2 = opt.update(g, restored, np.ones(N))
    assert u1.tobytes() == u2.tobytes()
    assert_same_state(s1, s2)


def test_restore_state_refuses_a_state_of_another_shape_or_optimizer():
    spec, arrays = flatten_state(states_after_steps(Adam(0.1)))
    with pytest.raises(CheckpointError, match=r"expected a ScaleByAdamState, found 'TraceState'"):
        restore_state(
            Adam(0.1).init(np.zeros(N)), *flatten_state(states_after_steps(Momentum(0.1)))
        )
    with pytest.raises(CheckpointError, match=r"expected float64 \(6,\), found float64 \(5,\)"):
        restore_state(Adam(0.1).init(np.zeros(N + 1)), spec, arrays)
    with pytest.raises(CheckpointError, match="array 1 is missing"):
        restore_state(Adam(0.1).init(np.zeros(N)), spec, arrays[:1])
    bad = json.loads(json.dumps(spec).replace('"type": "int"', '"type": "float"'))
    with pytest.raises(CheckpointError, match="expected a int"):
        restore_state(Adam(0.1).init(np.zeros(N)), bad, arrays)
    with pytest.raises(TypeError, match="can only hold tuples, arrays and scalars .*found dict"):
        flatten_state(({"a": 1},))


# -- meta_train: checkpoint and resume --------------------------------------------------------
def run(opt, tasks=TASKS, T=9, **kwargs):
    kwargs.setdefault("progress", False)
    return guarded(np.linspace(0.5, -0.5, N), tasks, EST, opt, T, **kwargs)


def assert_same_run(res, ref, compare_time=False):
    assert res.x.tobytes() == ref.x.tobytes()
    assert set(res.history) == set(ref.history)
    for key in res.history:
        if key != "time" or compare_time:
            assert res.history[key].dtype == ref.history[key].dtype
            assert res.history[key].tobytes() == ref.history[key].tobytes(), key
    assert_same_state(res.state, ref.state)
    assert res.stopped_early == ref.stopped_early
    assert res.skipped_iterations == ref.skipped_iterations


def interrupt_at(k):
    def callback(t, x, record):
        if t == k:
            raise KeyboardInterrupt

    return callback


@pytest.mark.parametrize("tasks", [TASKS, sampler], ids=["fixed", "sampler"])
@pytest.mark.parametrize("opt", OPTIMIZERS, ids=lambda o: type(o).__name__)
def test_resume_after_an_interrupt_is_bit_identical(opt, tasks, tmp_path):
    path = tmp_path / "run.ckpt"
    ref = run(opt, tasks, checkpoint=tmp_path / "ref.ckpt", reference=EXACT)
    part = run(
        opt,
        tasks,
        checkpoint=path,
        reference=EXACT,
        callback=interrupt_at(5),
        on_interrupt="return",
    )
    assert part.interrupted and part.resumed_from is None
    assert load_checkpoint(path).metadata["iteration"] == 5
    seen = []
    res = run(
        opt,
        tasks,
        checkpoint=path,
        resume=True,
        reference=EXACT,
        callback=lambda t, *a: seen.append(t),
    )
    assert res.resumed_from == 5 and not res.interrupted
    assert seen == [5, 6, 7, 8, 9]
    assert_same_run(res, ref)
    assert np.all(np.diff(res.history["time"]) >= 0)
    # The final checkpoints agree too, generator state included.
    final, ref_final = (
        load_checkpoint(path).metadata,
        load_checkpoint(tmp_path / "ref.ckpt").metadata,
    )
    assert final["rng_state"] == ref_final["rng_state"]
    assert final["optimizer_state"] == ref_final["optimizer_state"]
    if tasks is sampler:
        assert final["rng_state"]["bit_generator"] == "PCG64"


@pytest.mark.parametrize("opt", [Momentum(0.3, 0.7), Adam(0.05)], ids=lambda o: type(o).__name__)
def test_resume_from_a_periodic_checkpoint_is_bit_identical(opt, tmp_path):
    path, copy = tmp_path / "run.ckpt", tmp_path / "copy.ckpt"
    iterations = []

    def grab(t, x, record):
        if t == 6:  # the callback runs before step 6: the file holds x_6 (saved after step 5)
            shutil.copy(path, copy)
        if path.exists():
            iterations.append(load_checkpoint(path).metadata["iteration"])

    ref = run(opt, sampler, seed=4, checkpoint=path, checkpoint_every=2, callback=grab)
    assert iterations == [2, 2, 4, 4, 6, 6, 8, 8]  # saved after every second step
    assert load_checkpoint(copy).metadata["iteration"] == 6
    res = run(opt, sampler, seed=4, checkpoint=copy, checkpoint_every=2, resume=True)
    assert res.resumed_from == 6
    assert_same_run(res, ref)


def test_resuming_a_finished_run_returns_it_without_computing(tmp_path):
    path = tmp_path / "run.ckpt"
    ref = run(Adam(0.05), sampler, checkpoint=path)
    assert load_checkpoint(path).metadata["finished"]
    calls = []
    res = run(
        Adam(0.05), sampler, checkpoint=path, resume=True, callback=lambda *a: calls.append(1)
    )
    assert calls == [] and res.resumed_from == 9
    assert_same_run(res, ref, compare_time=True)
    # A run the callback stopped is finished too.
    stopped = run(GD(0.5), checkpoint=path, callback=lambda t, x, r: t == 4)
    again = run(GD(0.5), checkpoint=path, callback=lambda t, x, r: t == 4, resume=True)
    assert again.stopped_early and again.resumed_from == 4
    assert_same_run(again, stopped, compare_time=True)


def test_without_resume_or_without_a_file_the_run_starts_from_x0(tmp_path):
    path = tmp_path / "run.ckpt"
    fresh = run(GD(0.5), checkpoint=path, resume=True)  # no file yet: starts over
    assert fresh.resumed_from is None and path.exists()
    run(GD(0.5), checkpoint=path, callback=interrupt_at(3), on_interrupt="return")
    assert load_checkpoint(path).metadata["iteration"] == 3
    again = run(GD(0.5), checkpoint=path)  # resume=False: overwritten
    assert again.resumed_from is None and load_checkpoint(path).metadata["iteration"] == 9
    assert_same_run(again, fresh)


@pytest.mark.parametrize(
    "change, key",
    [
        ({"estimator": fm.FOBMAML(INNER, delta=1e-3, scheme="symmetric")}, "estimator"),
        ({"estimator": fm.FOMAML(INNER)}, "estimator"),
        ({"optimizer": Momentum(0.3, 0.6)}, "optimizer"),
        ({"optimizer": Adam(0.05)}, "optimizer"),
        ({"x0": np.linspace(0.5, -0.5, N) + 1e-12}, "x0"),
        ({"seed": 1}, "seed"),
        ({"iterations": 10}, "iterations"),
        ({"tasks": TASKS}, "tasks"),
        ({"reference": EXACT}, "reference"),
        ({"on_divergence": "skip"}, "on_divergence"),
    ],
)
def test_a_checkpoint_of_another_run_is_refused(change, key, tmp_path):
    path = tmp_path / "run.ckpt"
    args = {
        "x0": np.linspace(0.5, -0.5, N),
        "tasks": sampler,
        "estimator": EST,
        "optimizer": Momentum(0.3, 0.7),
        "iterations": 9,
    }
    guarded(
        *args.values(),
        checkpoint=path,
        progress=False,
        callback=interrupt_at(3),
        on_interrupt="return",
    )
    before = path.read_bytes()
    kwargs = {"seed": 0, "checkpoint": path, "resume": True, "progress": False}
    for k, v in change.items():
        (args if k in args else kwargs)[k] = v
    with pytest.raises(CheckpointError, match=rf"written by a different run: `{key}` differs"):
        meta_train(*args.values(), **kwargs)
    assert path.read_bytes() == before  # refused, and left alone


def test_a_checkpoint_for_another_dimension_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    run(GD(0.5), checkpoint=path, callback=interrupt_at(3), on_interrupt="return")
    other = fm.datasets.quadratic_tasks(M, N + 1, kappa=10.0, seed=3)
    with pytest.raises(CheckpointError, match=r"`x0` differs .*'shape': \[5\].*'shape': \[6\]"):
        meta_train(
            np.zeros(N + 1), other, EST, GD(0.5), 9, checkpoint=path, resume=True, progress=False
        )


def test_a_corrupt_checkpoint_is_never_resumed(tmp_path):
    path = tmp_path / "run.ckpt"
    run(Adam(0.05), checkpoint=path, callback=interrupt_at(4), on_interrupt="return")
    data = path.read_bytes()
    for bad in (
        data[: len(data) // 2],
        data[:-1],
        data[:100] + bytes([data[100] ^ 4]) + data[101:],
    ):
        path.write_bytes(bad)
        with pytest.raises(CheckpointError, match="truncated|corrupt"):
            run(Adam(0.05), checkpoint=path, resume=True)
    save_checkpoint(path, {"x": np.zeros(N)}, {"kind": "something else"})
    with pytest.raises(CheckpointError, match="not written by fobmaml.meta_train"):
        run(Adam(0.05), checkpoint=path, resume=True)


def test_a_well_formed_checkpoint_with_inconsistent_contents_is_refused(tmp_path):
    path = tmp_path / "run.ckpt"
    run(Momentum(0.3, 0.7), checkpoint=path, callback=interrupt_at(4), on_interrupt="return")
    ck = load_checkpoint(path)

    def rewrite(arrays=None, **meta):
        save_checkpoint(path, {**ck.arrays, **(arrays or {})}, {**ck.metadata, **meta})

    cases = [
        ({"iteration": 12}, None, "bad iteration 12"),
        ({"records": 3}, None, "3 history records do not go with iteration 4"),
        ({}, {"x": np.full(N, np.nan)}, "`x` must be 5 finite float64"),
        ({}, {"history/meta_loss": np.zeros(3)}, "history columns of the wrong length"),
        ({"rng_state": {"bit_generator": "PCG64"}}, None, "generator state does not match"),
        ({}, {"state/0": np.zeros(N + 1)}, "optimizer state at state"),
    ]
    for meta, arrays, match in cases:
        rewrite(arrays, **meta)
        with pytest.raises(CheckpointError, match=match):
            run(Momentum(0.3, 0.7), checkpoint=path, resume=True)


def test_a_failure_to_save_is_not_swallowed(tmp_path):
    path = tmp_path / "no-such-directory" / "run.ckpt"
    with pytest.raises(FileNotFoundError) as info:
        run(GD(0.5), checkpoint=path, checkpoint_every=4)
    # It surfaced at the first periodic save, with the run up to it attached.
    assert len(info.value.result.history["iteration"]) == 4


def test_checkpointing_does_not_change_the_run(tmp_path):
    ref = run(SNGDM(0.1, 0.8), sampler, reference=EXACT)
    res = run(
        SNGDM(0.1, 0.8), sampler, reference=EXACT, checkpoint=tmp_path / "c", checkpoint_every=1
    )
    assert_same_run(res, ref)
    ck = load_checkpoint(tmp_path / "c")
    assert ck.metadata["finished"] and ck.metadata["records"] == 10
    for key, column in ref.history.items():
        if key != "time":
            np.testing.assert_array_equal(ck.arrays[f"history/{key}"], column)
    np.testing.assert_array_equal(ck.arrays["x"], ref.x)


def test_fingerprints_encode_what_json_cannot_by_repr_but_metadata_refuses_it(tmp_path):
    # One JSON default, two policies: a run's fingerprint describes (repr), a checkpoint's
    # metadata must load back as it was saved (TypeError).
    odd = object()
    fp = fm.checkpoint.fingerprint(n=np.int64(3), x=np.float64(0.5), odd=odd, shape=(2,))
    assert fp == {"n": 3, "x": 0.5, "odd": repr(odd), "shape": [2]}
    assert type(fp["n"]) is int
    with pytest.raises(TypeError, match="`metadata` must be JSON-serialisable: found object"):
        fm.save_checkpoint(tmp_path / "c.ckpt", {}, {"odd": odd})
    est = fm.FOBMAML(fm.InnerLoop(lam=1.0))
    assert fm.checkpoint.describe(est) == {
        "type": "fobmaml.estimators.FOBMAML",
        "params": est.get_params(),
    }
    fm.checkpoint.check_fingerprint("p", fp, dict(fp))
    with pytest.raises(fm.CheckpointError, match="`n` differs .*checkpoint: 3; this call: 4"):
        fm.checkpoint.check_fingerprint("p", fp, {**fp, "n": 4})
    with pytest.raises(fm.CheckpointError, match="has no run configuration"):
        fm.checkpoint.check_fingerprint("p", None, fp)
