"""FLOPs as a proxy (ZiCo Table 1: Spearman 0.73 on NAS-Bench-201; AZ-NAS's "complexity" component)."""

from __future__ import annotations

from torch import nn

from lnas.hardware.cost import count_flops
from lnas.predictors.base import Inputs, Proxy, input_shape


class Flops(Proxy):
    """FLOPs of one sample's forward pass, counted by torch's ``FlopCounterMode``. Data-free; higher is better."""

    name = "flops"
    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return float(count_flops(model, input_shape(inputs)[1:]))
