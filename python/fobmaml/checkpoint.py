r"""Checkpoint files: a checksummed JSON header plus NumPy arrays, written atomically.

A checkpoint holds named arrays and a JSON-serialisable ``metadata`` dict. It is what
:func:`fobmaml.meta_train` writes with ``checkpoint=path``, and it can hold anything else
of that shape. Nothing is ever pickled: arrays go through ``numpy.savez`` and are read
back with ``allow_pickle=False``, the rest is JSON, and the optimizer state is rebuilt
on a template (:func:`restore_state`) rather than from type names read from the file.

File format (version 1)
-----------------------
All integers little-endian::

    offset  size  content
    0       8     magic b"\x89FMCKPT\n"
    8       4     format version (uint32), 1
    12      8     header length H (uint64)
    20      8     payload length P (uint64)
    28      32    SHA-256 of bytes 8..27 followed by the header and the payload
    60      H     header: UTF-8 JSON {"metadata": ..., "arrays": {name: {"dtype", "shape"}}}
    60+H    P     payload: an uncompressed ``.npz`` archive of the arrays

:func:`load_checkpoint` checks the magic, the length (a truncated or extended file is
rejected), then the checksum, before it parses anything; it then checks that the
archive holds exactly the arrays the header lists, with their dtypes and shapes.

Atomic writes
-------------
:func:`save_checkpoint` writes to a temporary file in the target's directory, flushes
and ``fsync``\ s it, renames it over the target with ``os.replace`` (atomic on POSIX and
Windows) and then ``fsync``\ s the directory (POSIX), so that after a crash, a power
loss or an interrupt the path holds either the previous complete checkpoint or the new
one, never a mixture. The temporary file is removed if anything fails.

Example
-------
>>> import os, tempfile, numpy as np
>>> from fobmaml.checkpoint import save_checkpoint, load_checkpoint
>>> path = os.path.join(tempfile.mkdtemp(), "run.ckpt")
>>> save_checkpoint(path, {"x": np.arange(3.0)}, {"iteration": 7})
>>> ck = load_checkpoint(path)
>>> ck.metadata["iteration"], ck.arrays["x"]
(7, array([0., 1., 2.]))
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import os
import struct
import tempfile
import zipfile
from collections.abc import Mapping
from typing import Any, NamedTuple, Union

import numpy as np

__all__ = [
    "CheckpointError",
    "Checkpoint",
    "FORMAT_VERSION",
    "save_checkpoint",
    "load_checkpoint",
    "flatten_state",
    "restore_state",
    "describe",
    "fingerprint",
    "check_fingerprint",
]

#: The version written by :func:`save_checkpoint`, and the only one read.
FORMAT_VERSION = 1

_MAGIC = b"\x89FMCKPT\n"
_FIELDS = struct.Struct("<IQQ")  # version, header length, payload length
_PREAMBLE = len(_MAGIC) + _FIELDS.size + 32  # 60 bytes

PathLike = Union[str, "os.PathLike[str]"]


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of an unknown version, or does not fit.

    Raised instead of loading anything from such a file: a checksum or length mismatch,
    bad magic bytes, malformed contents, or (from :func:`fobmaml.meta_train`) a
    checkpoint written by a run with a different configuration.
    """


class Checkpoint(NamedTuple):
    """What :func:`load_checkpoint` returns.

    Attributes
    ----------
    metadata : dict
        The JSON metadata, as saved.
    arrays : dict of str to numpy.ndarray
        The arrays, as saved (writeable copies).
    version : int
        The file format version.
    """

    metadata: dict
    arrays: dict
    version: int


# -- writing --------------------------------------------------------------------------------
def _json_default(obj: object, *, lenient: bool = False) -> object:
    """JSON for what ``json`` cannot encode: NumPy scalars as Python ones; anything else
    is a TypeError, or its ``repr`` when ``lenient`` (fingerprints describe, never load)."""
    if isinstance(obj, np.generic):
        return obj.item()
    if lenient:
        return repr(obj)
    raise TypeError(
        f"`metadata` must be JSON-serialisable: found {type(obj).__name__} {obj!r} "
        "(use dicts, lists, str, int, float, bool and None)"
    )


def _check_arrays(arrays: object) -> dict[str, np.ndarray]:
    if not isinstance(arrays, Mapping):
        raise TypeError(f"`arrays` must be a mapping of str to array (got {type(arrays).__name__})")
    out = {}
    for name, value in arrays.items():
        if not isinstance(name, str) or not name:
            raise TypeError(f"`arrays` keys must be non-empty str (got {name!r})")
        arr = np.asarray(value)
        if arr.dtype.hasobject or arr.dtype.kind not in "biufcSU":
            raise TypeError(
                f"`arrays[{name!r}]` must be a numeric, bool or string array "
                f"(got dtype {arr.dtype}); object arrays would need pickle"
            )
        out[name] = arr
    return out


def _encode(arrays: Mapping[str, Any], metadata: Mapping[str, Any]) -> bytes:
    arrays = _check_arrays(arrays)
    if not isinstance(metadata, Mapping):
        raise TypeError(f"`metadata` must be a dict (got {type(metadata).__name__})")
    manifest = {k: {"dtype": a.dtype.str, "shape": list(a.shape)} for k, a in arrays.items()}
    header = json.dumps(
        {"metadata": dict(metadata), "arrays": manifest},
        sort_keys=True,
        default=_json_default,
        allow_nan=True,
    ).encode("utf-8")
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    payload = buffer.getvalue()
    fields = _FIELDS.pack(FORMAT_VERSION, len(header), len(payload))
    digest = hashlib.sha256(fields + header + payload).digest()
    return _MAGIC + fields + digest + header + payload


def _fsync_directory(directory: str) -> None:
    if os.name != "posix":  # directories cannot be opened (nor need syncing) on Windows
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _atomic_write(path: str, data: bytes) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(
        prefix="." + os.path.basename(path) + ".", suffix=".tmp", dir=directory
    )
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    _fsync_directory(directory)


def save_checkpoint(path: PathLike, arrays: Mapping[str, Any], metadata: Mapping[str, Any]) -> None:
    """Write ``arrays`` and ``metadata`` to ``path`` atomically, with a SHA-256 checksum.

    Parameters
    ----------
    path : str or os.PathLike
        The file to (over)write. Its directory must exist.
    arrays : mapping of str to array_like
        Numeric, bool or string arrays (no object arrays: they would need pickle).
    metadata : mapping
        JSON-serialisable values (NumPy scalars are converted). Floats round-trip
        exactly; NaN and infinities are kept.

    Notes
    -----
    The write is atomic: the data go to a temporary file in the same directory, which is
    flushed, ``fsync``-ed and renamed over ``path`` with ``os.replace``; the directory is
    then ``fsync``-ed (POSIX). If the write fails or is interrupted (KeyboardInterrupt
    included), ``path`` keeps its previous contents and the temporary file is removed.

    Raises
    ------
    TypeError
        For arrays of object dtype or metadata that is not JSON-serialisable.
    OSError
        When the file cannot be written.
    """
    path = os.fspath(path)
    _atomic_write(path, _encode(arrays, metadata))


# -- reading --------------------------------------------------------------------------------
def _decode(data: bytes, path: str) -> Checkpoint:
    where = f"checkpoint {path!r}"
    if len(data) < _PREAMBLE:
        if not _MAGIC.startswith(data[: len(_MAGIC)]):
            raise CheckpointError(f"{where} is not a fobmaml checkpoint (bad magic bytes)")
        raise CheckpointError(
            f"{where} is truncated: {len(data)} bytes, shorter than the {_PREAMBLE}-byte preamble"
        )
    if data[: len(_MAGIC)] != _MAGIC:
        raise CheckpointError(f"{where} is not a fobmaml checkpoint (bad magic bytes)")
    fields = data[len(_MAGIC) : len(_MAGIC) + _FIELDS.size]
    version, header_len, payload_len = _FIELDS.unpack(fields)
    expected = _PREAMBLE + header_len + payload_len
    if len(data) != expected:
        what = "truncated" if len(data) < expected else "corrupt (trailing data or bad lengths)"
        raise CheckpointError(
            f"{where} is {what}: its preamble announces {expected} bytes, the file has {len(data)}"
        )
    digest = data[len(_MAGIC) + _FIELDS.size : _PREAMBLE]
    body = data[_PREAMBLE:]
    if hashlib.sha256(fields + body).digest() != digest:
        raise CheckpointError(f"{where} is corrupt: its SHA-256 checksum does not match")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{where} has format version {version}; this fobmaml reads version {FORMAT_VERSION}"
        )
    try:
        header = json.loads(body[:header_len].decode("utf-8"))
        metadata, manifest = header["metadata"], header["arrays"]
        if not isinstance(metadata, dict) or not isinstance(manifest, dict):
            raise TypeError("the header must hold two dicts")
        arrays = {}
        with np.load(io.BytesIO(body[header_len:]), allow_pickle=False) as archive:
            if sorted(archive.files) != sorted(manifest):
                found, listed = sorted(archive.files), sorted(manifest)
                raise ValueError(f"the archive holds {found}, the header lists {listed}")
            for name, spec in manifest.items():
                arr = archive[name]
                if arr.dtype.str != spec["dtype"] or list(arr.shape) != spec["shape"]:
                    raise ValueError(f"array {name!r} does not match its dtype and shape")
                arrays[name] = arr
    except (ValueError, TypeError, KeyError, OSError, EOFError, zipfile.BadZipFile) as exc:
        raise CheckpointError(f"{where} is malformed: {exc}") from exc
    return Checkpoint(metadata, arrays, version)


def load_checkpoint(path: PathLike) -> Checkpoint:
    """Read and verify a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or os.PathLike
        The checkpoint file.

    Returns
    -------
    Checkpoint
        ``metadata``, ``arrays`` and ``version``.

    Raises
    ------
    CheckpointError
        If the file is not a fobmaml checkpoint (bad magic bytes), is truncated or has
        trailing bytes, fails its SHA-256 checksum (any flipped bit), has another format
        version, or has contents that do not match its header. Nothing is returned from
        such a file.
    FileNotFoundError, OSError
        If the file cannot be read.
    """
    path = os.fspath(path)
    with open(path, "rb") as f:
        data = f.read()
    return _decode(data, path)


# -- optimizer states -----------------------------------------------------------------------
def _type_name(obj: object) -> str:
    return type(obj).__qualname__


def flatten_state(state: Any) -> tuple[Any, list[np.ndarray]]:
    """Split an optimizer state into a JSON description and a list of arrays.

    States are trees of tuples and NamedTuples whose leaves are NumPy arrays, NumPy
    scalars, Python ints, floats, bools or None (:mod:`fobmaml.optim`). The description
    records the tree (type names, field names) and the scalar leaves exactly; array
    leaves are replaced by their index in the returned list.

    Raises
    ------
    TypeError
        For a leaf of any other type.
    """
    arrays: list[np.ndarray] = []

    def walk(node: Any) -> Any:
        if isinstance(node, tuple):
            fields = list(node._fields) if hasattr(node, "_fields") else None
            return {"tuple": _type_name(node), "fields": fields, "items": [walk(v) for v in node]}
        if isinstance(node, (np.ndarray, np.generic)):
            arrays.append(np.asarray(node))
            return {"array": len(arrays) - 1, "scalar": isinstance(node, np.generic)}
        if node is None or isinstance(node, (bool, int, float)):
            return {"value": node, "type": _type_name(node)}
        raise TypeError(
            f"an optimizer state can only hold tuples, arrays and scalars to be checkpointed "
            f"(found {type(node).__name__})"
        )

    return walk(state), arrays


def restore_state(template: Any, spec: Any, arrays: list[np.ndarray]) -> Any:
    """Rebuild a state flattened by :func:`flatten_state`, on the structure of ``template``.

    ``template`` is a state of the same optimizer for parameters of the same shape, such
    as ``optimizer.init(x0)``: the result has its types (tuples and NamedTuples), and each
    array is checked against the template's dtype and shape and made read-only when the
    template's is. No type is ever looked up by a name read from a file.

    Raises
    ------
    CheckpointError
        When ``spec`` and ``arrays`` do not describe a state shaped like ``template``.
    """

    def fail(where: str, what: str) -> CheckpointError:
        return CheckpointError(f"the optimizer state at {where} does not fit: {what}")

    def walk(node: Any, desc: Any, where: str) -> Any:
        if not isinstance(desc, dict):
            raise fail(where, "malformed description")
        if isinstance(node, tuple):
            items = desc.get("items")
            if desc.get("tuple") != _type_name(node) or not isinstance(items, list):
                raise fail(where, f"expected a {_type_name(node)}, found {desc.get('tuple')!r}")
            fields = list(node._fields) if hasattr(node, "_fields") else None
            if desc.get("fields") != fields or len(items) != len(node):
                raise fail(where, f"expected {len(node)} items {fields or ''}")
            values = [walk(n, d, f"{where}[{i}]") for i, (n, d) in enumerate(zip(node, items))]
            return type(node)(*values) if fields is not None else tuple(values)
        if isinstance(node, (np.ndarray, np.generic)):
            index = desc.get("array")
            if not isinstance(index, int) or isinstance(index, bool):
                raise fail(where, "expected an array")
            if not 0 <= index < len(arrays):
                raise fail(where, f"array {index} is missing")
            ref, arr = np.asarray(node), np.asarray(arrays[index])
            if arr.dtype != ref.dtype or arr.shape != ref.shape:
                raise fail(
                    where,
                    f"expected {ref.dtype} {ref.shape}, found {arr.dtype} {arr.shape}",
                )
            if isinstance(node, np.generic):
                return arr[()]
            arr = np.array(arr, copy=True)
            arr.flags.writeable = node.flags.writeable
            return arr
        if node is None or isinstance(node, (bool, int, float)):
            if desc.get("type") != _type_name(node) or "value" not in desc:
                raise fail(where, f"expected a {_type_name(node)}")
            value = desc["value"]
            if node is None:
                return None
            if type(value) is not type(node) and not (
                isinstance(node, float) and type(value) is int
            ):
                raise fail(where, f"expected a {_type_name(node)}, found {value!r}")
            return type(node)(value)
        raise fail(where, f"unsupported template leaf {type(node).__name__}")

    return walk(template, spec, "state")


# -- fingerprints of a run ------------------------------------------------------------------
def describe(obj: Any) -> dict:
    """An estimator's or optimizer's identity: its type and parameters (or ``repr``).

    ``{"type": "<module>.<qualname>", "params": obj.get_params()}``, with ``repr(obj)``
    as the parameters of objects without ``get_params``.

    >>> import fobmaml as fm
    >>> describe(fm.GD(lr=0.5))
    {'type': 'fobmaml.optim.GD', 'params': {'name': 'GD', 'lr': 0.5}}
    """
    kind = f"{type(obj).__module__}.{type(obj).__qualname__}"
    get_params = getattr(obj, "get_params", None)
    return {"type": kind, "params": get_params() if callable(get_params) else repr(obj)}


def fingerprint(**items: Any) -> dict:
    """The configuration of a run as it reads back from a checkpoint's JSON header.

    Encoded and decoded once (NumPy scalars become Python numbers, other values that
    JSON cannot hold their ``repr``), so that a fingerprint computed now compares equal
    to one saved earlier by the same configuration.

    >>> fingerprint(seed=np.int64(3), shape=(2,))
    {'seed': 3, 'shape': [2]}
    """
    default = functools.partial(_json_default, lenient=True)
    return json.loads(json.dumps(items, sort_keys=True, default=default))


def check_fingerprint(path: str, saved: object, config: dict) -> None:
    """CheckpointError naming the first key on which a saved fingerprint differs.

    Parameters
    ----------
    path : str
        The checkpoint, for the message.
    saved : dict
        The fingerprint read from it.
    config : dict
        The current run's :func:`fingerprint`.

    Raises
    ------
    CheckpointError
        If ``saved`` is not a dict, or differs from ``config`` on any key.

    Examples
    --------
    >>> check_fingerprint("run.ckpt", {"seed": 0}, {"seed": 0})
    >>> check_fingerprint("run.ckpt", {"seed": 0}, {"seed": 1})
    Traceback (most recent call last):
    ...
    fobmaml.checkpoint.CheckpointError: checkpoint 'run.ckpt' was written by a different run: ...
    """
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {path!r} has no run configuration")
    for key in sorted(set(saved) | set(config)):
        if saved.get(key) != config.get(key):
            raise CheckpointError(
                f"checkpoint {path!r} was written by a different run: `{key}` differs "
                f"(checkpoint: {saved.get(key)!r}; this call: {config.get(key)!r}). "
                "Pass the same arguments to resume, or remove the file (or pass "
                "resume=False) to start over"
            )
