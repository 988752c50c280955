"""``guarded``: meta_train for tests that deliver KeyboardInterrupts."""

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
