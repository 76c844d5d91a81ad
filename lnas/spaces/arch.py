"""The architecture type: a plain ``dict`` of stable hierarchical labels to choices (NNI style).

Example: ``{"stage1.depth": 2, "stage1.block0.kernel": 3, "stage1.block0.expand": 4, ...}``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch

Arch = dict[str, int | str]


class InvalidArchError(ValueError):
    """An architecture dict or string that does not belong to its search space."""


def choose(choices: Sequence, generator: torch.Generator):
    """One element of ``choices``, drawn uniformly with ``generator`` (never the global RNG)."""
    return choices[int(torch.randint(len(choices), (1,), generator=generator))]


def check_arch(arch: Mapping[str, object], allowed: Mapping[str, Sequence]) -> None:
    """Raise :class:`InvalidArchError` naming the first label that is missing, unknown or out of its choices."""
    missing = [label for label in allowed if label not in arch]
    if missing:
        raise InvalidArchError(f"arch is missing label {missing[0]!r} (allowed values: {list(allowed[missing[0]])})")
    unknown = [label for label in arch if label not in allowed]
    if unknown:
        raise InvalidArchError(f"arch has unknown label {unknown[0]!r}; valid labels here: {sorted(allowed)}")
    for label, choices in allowed.items():
        if arch[label] not in choices:
            raise InvalidArchError(f"arch label {label!r} = {arch[label]!r} is not one of the allowed values {list(choices)}")
