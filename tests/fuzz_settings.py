"""Hypothesis profiles of the fuzz tests (``tests/test_fuzz.py``).

Two profiles are registered; the environment variable ``FOBMAML_FUZZ_PROFILE``
selects one (default ``"ci"``):

- ``ci``: the examples are derived from a fixed seed (``derandomize=True``), so a CI
  run is reproducible and a failure recurs on every run. Each test runs its own
  budget of examples (``fuzz_settings(n)``: n examples), 3,430 over the file.
- ``thorough``: ten times the budget of every test (34,300 examples over the file),
  from a fresh random seed each run; a failure prints the ``@reproduce_failure``
  blob to replay it.

Thorough run::

    FOBMAML_FUZZ_PROFILE=thorough python -m pytest tests/test_fuzz.py -q \
        --hypothesis-show-statistics

Neither profile writes an example database (no ``.hypothesis/`` directory).
Profiles are used as the parent of each test's settings, not loaded globally, so
other test files are unaffected.
"""

from __future__ import annotations

import os

from hypothesis import HealthCheck, Phase, settings

PROFILE_ENV = "FOBMAML_FUZZ_PROFILE"

# max_examples of a profile is the multiplier of every test's budget, in percent.
_BASE = 100
# No "explain" phase: on a failure it re-runs the test hundreds of times to say which
# lines only failing examples ran, which costs more than the run itself here.
_PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]

settings.register_profile(
    "ci",
    max_examples=_BASE,
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=False,
    suppress_health_check=list(HealthCheck),
    phases=_PHASES,
)
settings.register_profile(
    "thorough",
    max_examples=10 * _BASE,
    derandomize=False,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=list(HealthCheck),
    phases=_PHASES,
)


def profile_name() -> str:
    """The selected profile: ``$FOBMAML_FUZZ_PROFILE``, default ``"ci"``."""
    name = os.environ.get(PROFILE_ENV, "ci").strip() or "ci"
    if name not in ("ci", "thorough"):
        raise ValueError(f"{PROFILE_ENV} must be 'ci' or 'thorough' (got {name!r})")
    return name


PROFILE = settings.get_profile(profile_name())
SCALE = PROFILE.max_examples / _BASE


def fuzz_settings(examples: int) -> settings:
    """Settings for a test that runs `examples` examples under the ``ci`` profile.

    The selected profile scales that budget (x1 for ``ci``, x10 for ``thorough``).
    """
    return settings(parent=PROFILE, max_examples=max(1, round(examples * SCALE)))
