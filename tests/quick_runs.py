"""The quick runs of the reproduction studies, made once per test session and shared.

The sweep, delta and stability tests each read their study's quick run, and the report
tests read all three; running each study once keeps the suite short. The folders must not
be modified by the tests (copy them first).
"""

from __future__ import annotations

from fobmaml.experiments import delta_tradeoff, outer_stability, sweep

_STUDIES = {
    "sweep": (sweep.run, sweep.SweepConfig.quick_config),
    "delta": (delta_tradeoff.run, delta_tradeoff.DeltaConfig.quick_config),
    "stability": (outer_stability.run, outer_stability.StabilityConfig.quick_config),
}
_CACHE: dict[str, tuple] = {}


def quick_run(study: str, tmp_path_factory) -> tuple:
    """(folder, config, summary) of `study`'s quick run, made on first use."""
    if study not in _CACHE:
        run, config = _STUDIES[study]
        out = tmp_path_factory.mktemp(study)
        cfg = config()
        _CACHE[study] = (out, cfg, run(out, cfg, progress=False))
    return _CACHE[study]
