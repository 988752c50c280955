"""Helpers of the meta_train tests: ``guarded`` and ``assert_same_state``."""

import numpy as np
import pytest

from fobmaml.train import meta_train


def guarded(*args, **kwargs):
    """meta_train, failing the test if a KeyboardInterrupt escapes it.

    pytest treats a KeyboardInterrupt as the user stopping the session: without this, an
    interrupt that `on_interrupt="return"` failed to catch would end the run quietly.
    """
    try:
        return meta_train(*args, **kwargs)
    except KeyboardInterrupt as exc:
        pytest.fail(f"a KeyboardInterrupt escaped meta_train ({exc!r})")


def assert_same_state(a, b):
    """Optimizer states equal bit for bit: same types, dtypes, bytes and writeable flags."""
    assert type(a) is type(b)
    if isinstance(a, tuple):
        assert len(a) == len(b)
        for u, v in zip(a, b):
            assert_same_state(u, v)
    elif isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.tobytes() == b.tobytes()
        assert a.flags.writeable == b.flags.writeable
    else:
        assert a == b
