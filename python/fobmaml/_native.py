"""Selects the compiled core for this CPU.

The wheel carries two builds of the same C++ sources: ``_core`` for any x86-64
(SSE2) or other architecture, and, on x86-64, ``_core_avx2`` compiled for
x86-64-v3 (AVX2 + FMA). The second is used when the CPU supports it, unless the
environment variable ``FOBMAML_ISA=baseline`` asks for the portable build.
Results of the two builds agree to rounding, not bit for bit (FMA contracts
multiply-adds); within one build they are bit-identical for any thread count.
"""

from __future__ import annotations

import os

from . import _core as baseline


def _select():
    choice = os.environ.get("FOBMAML_ISA", "auto").strip().lower()
    if choice not in ("auto", "baseline", "avx2"):
        raise ImportError(f"FOBMAML_ISA must be 'auto', 'baseline' or 'avx2' (got {choice!r})")
    if choice == "baseline":
        return baseline
    features = baseline.cpu_features()
    if not (features.get("avx2") and features.get("fma")):
        if choice == "avx2":
            raise ImportError("FOBMAML_ISA=avx2, but this CPU lacks AVX2 or FMA")
        return baseline
    try:
        from . import _core_avx2
    except ImportError:
        if choice == "avx2":
            raise
        return baseline
    return _core_avx2


core = _select()
ISA = "avx2" if core is not baseline else "baseline"
