"""Zen-score (Lin et al., ICCV 2021, "Zen-NAS: A Zero-Shot NAS for High-Performance Image Recognition").

Following the reference implementation (idstcv/ZenNAS, ``compute_zen_score.py``): a copy of the network with
Gaussian weights (N(0, 1) for Conv2d/Linear, BatchNorm weight 1 and bias 0), in training mode; two standard-normal
batches ``x`` and ``x + 0.01 ε``; ``Δ = mean_n sum |f(x) - f(x + 0.01 ε)|`` of the features before global pooling;
the score is ``log Δ + sum over BatchNorm2d layers of log sqrt(mean running_var)``. Data-free.

One draw of batch 64, as NASLib scores it. Zen-NAS's own default, the mean over 32 draws of batch 16, is eight times
the work and ranks networks the same way: Spearman 0.9996 between the two over 300 NAS-Bench-201 cells, and 0.377
against 0.373 with their accuracy.
"""

from __future__ import annotations

import torch
from torch import nn

from lnas.predictors.base import (
    Inputs,
    Proxy,
    checked_batch_size,
    flatten_outputs,
    gaussian,
    input_shape,
    model_device,
    scoring_copy,
    seeded_generator,
)

MIXUP_GAMMA = 1e-2


def gaussian_init_(net: nn.Module, generator: torch.Generator) -> None:
    """The reference's ``network_weight_gaussian_init``, drawing with ``generator``."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                module.weight.copy_(gaussian(module.weight.shape, generator))
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm) and module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.zero_()


def _pre_pool_features(net: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """The input of the last global pooling layer, or the model's outputs when it has none (e.g. a backbone)."""
    pools = [m for m in net.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    if not pools:
        return flatten_outputs(net(x))
    captured: list[torch.Tensor] = []
    handle = pools[-1].register_forward_hook(lambda module, args, output: captured.append(args[0]))
    try:
        net(x)
    finally:
        handle.remove()
    return captured[-1:]


def zen_score(model: nn.Module, shape: tuple[int, ...], seed: int = 0) -> float:
    """Zen-score of a Gaussian-initialised copy of ``model`` for inputs of ``shape`` (N, C, H, W)."""
    generator = seeded_generator(seed, model_device(model))
    net = scoring_copy(model)
    gaussian_init_(net, generator)
    x = gaussian(shape, generator)
    mixed = x + MIXUP_GAMMA * gaussian(shape, generator)
    with torch.no_grad():
        clean, perturbed = _pre_pool_features(net, x), _pre_pool_features(net, mixed)
        delta = sum((a - b).abs().reshape(len(a), -1).sum(1).mean() for a, b in zip(clean, perturbed, strict=True))
        log_bn_scale = sum(torch.log(torch.sqrt(m.running_var.mean())) for m in net.modules()
                           if isinstance(m, nn.BatchNorm2d) and m.running_var is not None)
        return float(torch.log(delta) + log_bn_scale)


class ZenScore(Proxy):
    """Zen-score with ``batch_size`` Gaussian inputs of the given input shape; data-free, higher is better."""

    name = "zen"
    higher_is_better = True
    needs_data = False

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        self.batch_size, self.seed = checked_batch_size(self.name, batch_size), seed

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return zen_score(model, (self.batch_size, *input_shape(inputs)[1:]), self.seed)
