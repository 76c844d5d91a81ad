"""Parameter count as a proxy (the baseline every zero-shot proxy must beat)."""

from __future__ import annotations

import torch
from torch import nn

from lnas.predictors.base import Proxy


class Params(Proxy):
    """Number of parameters: the simplest baseline proxy (ZiCo Table 1: Spearman 0.75 on NAS-Bench-201)."""

    name = "params"
    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, inputs: torch.Tensor, targets: object | None = None) -> float:
        return float(sum(p.numel() for p in model.parameters()))
