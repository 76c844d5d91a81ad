"""A network as parts whose parameters and FLOPs add up to the whole's, so a candidate's costs come from its arch alone.

A part is a sub-network that recurs across candidates (a block at its input shape, a stem, a head for given feature
widths). Its costs are counted once, on a freshly built copy, and cached by its key; a candidate's costs are the sums
over its parts (:class:`PartCosts`). FLOPs follow :func:`lnas.hardware.cost.count_flops` (torch's ``FlopCounterMode``,
which counts convolutions and matrix products, not resizes or element-wise ops).
"""

from __future__ import annotations

from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class Part:
    """One part: its cache key, how to build it, and how to make example inputs for it (batch 1)."""

    key: Hashable
    build: Callable[[], nn.Module] = field(compare=False)
    inputs: Callable[[], tuple] = field(compare=False)


def tensor_input(shape: Sequence[int]) -> Callable[[], tuple]:
    """Example inputs of one tensor of ``(1, *shape)``."""
    return lambda: (torch.zeros((1, *shape)),)


def part_costs(part: Part) -> tuple[int, int]:
    """Parameters and FLOPs (batch 1, eval mode) of a freshly built ``part``."""
    module = part.build().eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        module(*part.inputs())
    return sum(p.numel() for p in module.parameters()), int(counter.get_total_flops())


class PartCosts:
    """Parameters and FLOPs of a candidate as the sum over its parts, each part counted once."""

    def __init__(self) -> None:
        self.cache: dict[Hashable, tuple[int, int]] = {}

    def __call__(self, parts: Sequence[Part]) -> tuple[int, int]:
        params = flops = 0
        for part in parts:
            if part.key not in self.cache:
                self.cache[part.key] = part_costs(part)
            p, f = self.cache[part.key]
            params, flops = params + p, flops + f
        return params, flops
