"""SynFlow (Tanaka et al., NeurIPS 2020, "Pruning neural networks without any data by iteratively conserving
synaptic flow"), as a NAS proxy in Abdelfattah et al. (ICLR 2021, "Zero-Cost Proxies for Lightweight NAS").

Following the reference implementation (SamsungLabs/zero-cost-nas, ``synflow.py``): the network in float64 with
absolute weights, BatchNorm off, an all-ones input of batch 1, ``R = sum(f(1))``, and the score
``sum over Conv2d/Linear weights of |w ⊙ ∂R/∂w|``.
"""

from __future__ import annotations

import torch
from torch import nn

from lnas.predictors.base import Inputs, Proxy, flatten_outputs, input_shape, model_device, scoring_copy


def _without_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every BatchNorm layer by identity, in place (the reference builds its networks with ``bn=False``)."""
    for name, child in module.named_children():
        if isinstance(child, nn.modules.batchnorm._BatchNorm):
            setattr(module, name, nn.Identity())
        else:
            _without_batchnorm(child)
    return module


def synflow_score(model: nn.Module, sample_shape: tuple[int, ...]) -> float:
    """SynFlow of a copy of ``model`` for inputs of shape ``(C, H, W)``; ``model`` itself is not touched."""
    device = model_device(model)
    net = _without_batchnorm(scoring_copy(model)).double().eval()
    with torch.no_grad():
        for parameter in net.parameters():
            parameter.abs_()
    ones = torch.ones((1, *sample_shape), dtype=torch.float64, device=device)
    total = sum(t.sum() for t in flatten_outputs(net(ones)))
    total.backward()
    with torch.no_grad():
        layers = [m for m in net.modules() if isinstance(m, nn.Conv2d | nn.Linear) and m.weight.grad is not None]
        return float(sum((layer.weight * layer.weight.grad).abs().sum() for layer in layers))


class SynFlow(Proxy):
    """Data-free: uses only the input shape. Higher is better."""

    name = "synflow"
    higher_is_better = True
    needs_data = False

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return synflow_score(model, input_shape(inputs)[1:])

