"""Shared fixtures of the benchmark suites.

Run the benchmarks with ``pytest bench --benchmark-enable``; the default test run
executes every benchmark body once (``--benchmark-disable``) as a smoke test.
"""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def rng():
    return np.random.default_rng(0)
