"""The library's one immutability mechanism: frozen dataclasses that say what to do instead.

Estimators, inner loops, optimizers and their pieces are values: built once, shared
freely between threads, never modified. :func:`frozen` makes a class a frozen
dataclass (``dataclasses.dataclass(frozen=True)``, so assigning or deleting a field
raises :class:`dataclasses.FrozenInstanceError`, an ``AttributeError``) whose error
names the class and says to build a new instance. Validation belongs in
``__post_init__``, which sets the checked values with :func:`store`.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, TypeVar

T = TypeVar("T")


def frozen(cls: type[T] | None = None, **options: Any) -> Any:
    """``dataclasses.dataclass(frozen=True, **options)`` with a clearer error message.

    >>> @frozen
    ... class Point:
    ...     x: float
    >>> Point(1.0).x = 2.0
    Traceback (most recent call last):
    ...
    dataclasses.FrozenInstanceError: Point is immutable: build a new one instead of setting `x`
    """

    def wrap(c: type[T]) -> type[T]:
        c = dataclasses.dataclass(frozen=True, **options)(c)
        c.__setattr__ = _explained(c.__setattr__, "setting")
        c.__delattr__ = _explained(c.__delattr__, "deleting")
        return c

    return wrap if cls is None else wrap(cls)


def _explained(method: Callable, doing: str) -> Callable:
    def explained(self: Any, name: str, *args: Any) -> None:
        try:
            method(self, name, *args)
        except dataclasses.FrozenInstanceError:
            raise dataclasses.FrozenInstanceError(
                f"{type(self).__name__} is immutable: build a new one instead of {doing} `{name}`"
            ) from None

    explained.__name__ = method.__name__
    return explained


def store(obj: object, **values: Any) -> None:
    """Set fields of a frozen instance from its ``__post_init__`` (validated values)."""
    for name, value in values.items():
        object.__setattr__(obj, name, value)
