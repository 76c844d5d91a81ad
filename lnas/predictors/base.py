"""The zero-shot proxy interface (torchmetrics style: class attributes other code reads, math in plain functions)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import nn


def flatten_outputs(output: torch.Tensor | Sequence) -> list[torch.Tensor]:
    """All tensors of a model output (a tensor, or nested lists/tuples of them, e.g. multi-level features)."""
    if isinstance(output, torch.Tensor):
        return [output]
    return [t for item in output for t in flatten_outputs(item)]


class Proxy(ABC):
    """A training-free score of a network's accuracy potential.

    Class attributes: ``higher_is_better`` (direction of the score), ``needs_data`` (uses real inputs rather than
    only their shape), ``needs_labels`` (uses targets). ``score`` never changes the model it is given.
    """

    name: ClassVar[str]
    higher_is_better: ClassVar[bool] = True
    needs_data: ClassVar[bool] = False
    needs_labels: ClassVar[bool] = False

    @abstractmethod
    def score(self, model: nn.Module, inputs: torch.Tensor, targets: object | None = None) -> float:
        """Score ``model``; ``inputs`` is a batch (data-free proxies use only its shape, dtype and device)."""

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"
