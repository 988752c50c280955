"""Numerical helpers shared by the optimizers, the training loop and the diagnostics."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np

#: Above this magnitude the squares in a norm overflow.
_BIG = 1e150


def norm(v: np.ndarray) -> float:
    r"""The Euclidean norm :math:`\lVert v\rVert_2`, finite for every finite v.

    ``numpy.linalg.norm(v)``, bit for bit, when :math:`a = \max_j |v_j| \le 10^{150}`
    (its squares cannot overflow); otherwise :math:`a \lVert v/a\rVert`, which would
    overflow only if the norm itself did. Like NumPy's, it loses relative accuracy for
    vectors below about 1e-154, whose squares underflow. 0 for an empty vector; NaN
    or Inf as NumPy gives them for a non-finite v.

    >>> norm(np.array([3.0, 4.0])), norm(np.zeros(0))
    (5.0, 0.0)
    >>> bool(np.isclose(norm(np.array([3e200, 4e200])), 5e200, rtol=1e-15))
    True
    """
    v = np.asarray(v, dtype=np.float64)
    if v.size == 0:
        return 0.0
    a = float(np.max(np.abs(v)))
    if not np.isfinite(a) or a <= _BIG:
        return float(np.linalg.norm(v))
    s = v / a
    return a * float(np.sqrt(np.dot(s, s)))


def unit(v: np.ndarray) -> np.ndarray:
    r"""The direction :math:`v / \lVert v\rVert`, and a zero vector when :math:`v = 0`.

    Computed as :math:`s/\lVert s\rVert` with :math:`s = v/\max_j|v_j|`, so that it neither
    overflows nor underflows.

    >>> unit(np.array([3.0, 4.0])), unit(np.zeros(2))
    (array([0.6, 0.8]), array([0., 0.]))
    """
    a = float(np.max(np.abs(v))) if v.size else 0.0
    if a == 0.0:
        return np.zeros_like(v)
    s = v / a
    return s / float(np.sqrt(np.dot(s, s)))


def all_finite(a: Any) -> bool:
    """False if ``a`` holds a NaN or Inf (non-float values count as finite)."""
    arr = np.asarray(a)
    return arr.dtype.kind not in "fc" or bool(np.all(np.isfinite(arr)))


def _leaves(tree: Any) -> Iterator[Any]:
    if isinstance(tree, (tuple, list)):
        for item in tree:
            yield from _leaves(item)
    elif isinstance(tree, dict):
        for item in tree.values():
            yield from _leaves(item)
    else:
        yield tree


def tree_finite(tree: Any) -> bool:
    """Whether every leaf of a tree of tuples, lists and dicts (an optimizer state) is finite.

    None leaves are skipped.
    """
    return all(all_finite(leaf) for leaf in _leaves(tree) if leaf is not None)
