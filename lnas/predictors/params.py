"""Parameter count as a proxy (the baseline every zero-shot proxy must beat)."""

from __future__ import annotations

from torch import nn

from lnas.hardware.cost import count_params
from lnas.predictors.base import Inputs, Proxy


class Params(Proxy):
    """Number of parameters: the simplest baseline proxy (ZiCo Table 1: Spearman 0.75 on NAS-Bench-201). Data-free."""

    name = "params"
    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return float(count_params(model))
