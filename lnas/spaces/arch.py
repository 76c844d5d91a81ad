"""The architecture type: a plain ``dict`` of stable hierarchical labels to choices (NNI style).

Example: ``{"stage1.depth": 2, "stage1.width": 1.0, "stage1.block0.type": "mbconv", "stage1.block0.kernel": 3, ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Arch = dict[str, int | float | str | bool]


class InvalidArchError(ValueError):
    """An architecture dict or string that does not belong to its search space."""


def choose(choices: Sequence, generator: torch.Generator):
    """One element of ``choices``, drawn uniformly with ``generator`` (never the global RNG)."""
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


def check_arch(arch: Mapping[str, object], allowed: Mapping[str, Sequence]) -> None:
    """Raise :class:`InvalidArchError` naming the first label that is out of its choices, missing or unknown.

    Values are checked first: ``allowed`` may depend on ``arch`` (block labels exist only for active blocks), so a
    depth or block type out of its choices is reported as such rather than as unknown labels of the blocks it implies.
    """
    for label, choices in allowed.items():
        if label in arch and arch[label] not in choices:
            raise InvalidArchError(f"arch label {label!r} = {arch[label]!r} is not one of the allowed values {list(choices)}")
    missing = [label for label in allowed if label not in arch]
    if missing:
        raise InvalidArchError(f"arch is missing label {missing[0]!r} (allowed values: {list(allowed[missing[0]])})")
    unknown = [label for label in arch if label not in allowed]
    if unknown:
        raise InvalidArchError(f"arch has unknown label {unknown[0]!r}; valid labels here: {sorted(allowed)}")


def format_choice(value: int | float | str | bool) -> str:
    """The short text of one choice in an arch string: ``3``, ``0.75``, ``2.5`` (floats without trailing zeros)."""
    return f"{value:g}" if isinstance(value, float) else str(value)
