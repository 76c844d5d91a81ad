"""NASWOT (Mellor et al., ICML 2021, "Neural Architecture Search without Training").

Following the reference implementation (BayesWatch/nas-without-training, ``score_networks.py``): one forward pass of
a batch of 128 real images through the network in training mode (BatchNorm on batch statistics); at every ReLU the
binary code ``c = 1[input > 0]`` of each sample; the kernel ``K = sum over ReLUs of c cᵀ + (1 - c)(1 - c)ᵀ``
(the number of units on which two samples agree); the score is ``log |det K|``.
"""

from __future__ import annotations

import torch
from torch import nn

from lnas.predictors.base import Inputs, Proxy, checked_batch_size, first, require_tensor, scoring_copy

ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.Hardswish, nn.SiLU, nn.GELU)
"""Modules whose inputs give the binary codes (the reference hooks ``nn.ReLU``; the others extend it by sign)."""


def naswot_score(model: nn.Module, inputs: torch.Tensor) -> float:
    """``log |det K|`` of the activation-pattern kernel of ``inputs`` through a copy of ``model`` (training mode)."""
    net = scoring_copy(model)
    activations = [m for m in net.modules() if isinstance(m, ACTIVATIONS)]
    if not activations:
        raise TypeError(f"NASWOT needs activation modules ({', '.join(a.__name__ for a in ACTIVATIONS)}); {type(model).__name__} has none")
    kernel = torch.zeros(len(inputs), len(inputs), dtype=torch.float64, device=inputs.device)

    def accumulate(module: nn.Module, args: tuple, output: torch.Tensor) -> None:
        nonlocal kernel
        codes = (args[0].reshape(len(args[0]), -1) > 0).float()
        kernel = kernel + (codes @ codes.t()).double() + ((1.0 - codes) @ (1.0 - codes).t()).double()

    handles = [module.register_forward_hook(accumulate) for module in activations]
    try:
        with torch.no_grad():
            net(inputs)
    finally:
        for handle in handles:
            handle.remove()
    return float(torch.linalg.slogdet(kernel).logabsdet)


class NASWOT(Proxy):
    """NASWOT on the first ``batch_size`` samples (128 in the paper). Needs real data, no labels; higher is better."""

    name = "naswot"
    higher_is_better = True
    needs_data = True
    needs_labels = False

    def __init__(self, batch_size: int = 128) -> None:
        self.batch_size = checked_batch_size(self.name, batch_size, minimum=2)

    def score(self, model: nn.Module, inputs: Inputs, targets: object | None = None) -> float:
        return naswot_score(model, first(require_tensor(inputs, self.name), self.batch_size))
