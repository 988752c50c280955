"""What the task samplers share: their argument checks and their equality."""

from __future__ import annotations

import numpy as np

from .. import mlp as _mlp


def check_rng(rng: object) -> np.random.Generator:
    """`rng` as a ``numpy.random.Generator`` (the only source of randomness of a sampler)."""
    if not isinstance(rng, np.random.Generator):
        raise TypeError(
            "`rng` must be a numpy.random.Generator, e.g. numpy.random.default_rng(seed) "
            f"(got {type(rng).__name__})"
        )
    return rng


def check_layers_io(layers: object, d_in: int, d_out: int, what: str) -> list[int]:
    """`layers` as a list of ints that starts with `d_in` and ends with `d_out`."""
    out = _mlp.check_layers(layers)
    if out[0] != d_in or out[-1] != d_out:
        raise ValueError(
            f"`layers` must start with d_in = {d_in} and end with d_out = {d_out} for {what} "
            f"(got {out})"
        )
    return out


class Sampler:
    """Base of the samplers: equal when of the same type with equal ``get_params()``.

    Samplers have mutable attributes, so equal samplers need not hash alike: they are
    unhashable.
    """

    def get_params(self) -> dict:
        raise NotImplementedError

    def __eq__(self, other: object) -> bool:
        if type(other) is not type(self):
            return NotImplemented
        return self.get_params() == other.get_params()

    __hash__ = None
