"""AZ-NAS's training-free components (Lee & Ham, CVPR 2024, "AZ-NAS: Assembling Zero-Cost Proxies for Network
Architecture Search"): expressivity, progressivity and trainability, computed from one forward pass.

Following the reference implementation (cvlab-yonsei/AZ-NAS, ``NB201/ZeroShotProxy/compute_az_nas_score.py``): a
copy of the network with Kaiming-normal (fan-in) weights in training mode, one batch of Gaussian inputs, and the
output ``f_0 .. f_L`` of the stem and of every block (:func:`~lnas.predictors.base.feature_modules`):

- expressivity: ``sum_l H(f_l)``, ``H`` the entropy of the normalised eigenvalues of the channel covariance of ``f_l``;
- progressivity: ``min_l H(f_l) - H(f_{l-1})``;
- trainability: the mean over blocks of ``2 - σ - 1/σ``, σ the largest singular value of the block's Jacobian
  estimated with a Rademacher vector (``-inf`` for a block that is the identity).

The paper's fourth component, complexity, is FLOPs (:class:`~lnas.predictors.flops.Flops`).
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from lnas.predictors.base import (
    Inputs,
    SharedPass,
    SharedPassProxy,
    checked_batch_size,
    feature_modules,
    gaussian,
    input_shape,
    model_device,
    scoring_copy,
    seeded_generator,
)


def kaiming_init_(net: nn.Module, generator: torch.Generator) -> None:
    """Kaiming-normal fan-in weights (ReLU gain) for Conv2d/Linear, zero biases, unit BatchNorm: the reference's init."""
    with torch.no_grad():
        for module in net.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                std = math.sqrt(2.0 / module.weight[0].numel())
                module.weight.copy_(gaussian(module.weight.shape, generator) * std)
                if module.bias is not None:
                    module.bias.zero_()
            elif isinstance(module, nn.BatchNorm2d | nn.GroupNorm) and module.weight is not None:
                module.weight.fill_(1.0)
                module.bias.zero_()


def _entropy_of_spectrum(feature: torch.Tensor) -> float:
    channels = feature.shape[1]
    flat = feature.detach().transpose(0, 1).reshape(channels, -1)
    flat = flat - flat.mean(dim=1, keepdim=True)
    # small matrix: faster on the CPU. With fewer samples (batch x H x W) than channels the covariance is singular and
    # its zero eigenvalues come out slightly negative; they are zero.
    eigenvalues = torch.linalg.eigvalsh((flat @ flat.t() / flat.shape[1]).cpu()).clamp_min(0.0)
    probabilities = eigenvalues / eigenvalues.sum()
    return float((-probabilities * torch.log(probabilities + 1e-8)).sum())


def _to_output_grid(g_in: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """``g_in`` folded onto an output grid ``size`` (the reference's ``pixel_unshuffle`` by the block's stride): a side that
    a strided block rounded up (e.g. 7 -> 4 at stride 2) is zero-padded to ``stride x size`` first."""
    stride = max(1, round(g_in.shape[2] / size[0]))
    padding = (0, size[1] * stride - g_in.shape[3], 0, size[0] * stride - g_in.shape[2])
    if any(padding):
        g_in = F.pad(g_in, padding)
    return F.pixel_unshuffle(g_in, stride)


def _block_trainability(f_in: torch.Tensor, f_out: torch.Tensor, generator: torch.Generator) -> float:
    g_out = (torch.randint(0, 2, f_out.shape, generator=generator, device=generator.device).to(f_out) - 0.5) * 2
    (g_in,) = torch.autograd.grad(f_out, f_in, grad_outputs=g_out, allow_unused=True)
    if g_in is None:
        g_in = torch.zeros_like(f_in)
    if g_in.shape == g_out.shape and torch.equal(g_in, g_out):
        return -math.inf
    if g_in.shape[2:] != g_out.shape[2:]:
        g_in = _to_output_grid(g_in, tuple(g_out.shape[2:]))
    n, c_out, h, w = g_out.shape
    matrix = g_in.permute(0, 2, 3, 1).reshape(n * h * w, -1).t() @ g_out.permute(0, 2, 3, 1).reshape(n * h * w, c_out) / (n * h * w)
    sigma = float(torch.linalg.svdvals(matrix.cpu()).max())
    return -sigma - 1.0 / (sigma + 1e-6) + 2.0


def az_nas_scores(proxies: Sequence[AZNASProxy], model: nn.Module, inputs: Inputs, targets: object | None = None) -> dict[str, float]:
    """Expressivity, progressivity and trainability of a Kaiming-initialised copy of ``model`` (one shared pass)."""
    batch_size, seed = proxies[0].batch_size, proxies[0].seed
    generator = seeded_generator(seed, model_device(model))
    net = scoring_copy(model)
    kaiming_init_(net, generator)
    features: list[torch.Tensor] = []
    handles = [m.register_forward_hook(lambda module, args, output: features.append(output)) for m in feature_modules(net)]
    try:
        net(gaussian((batch_size, *input_shape(inputs)[1:]), generator))
    finally:
        for handle in handles:
            handle.remove()
    names = {p.name for p in proxies}
    scores: dict[str, float] = {}
    if names & {"expressivity", "progressivity"}:
        entropies = [_entropy_of_spectrum(f) for f in features]
        scores["expressivity"] = sum(entropies)
        scores["progressivity"] = min(b - a for a, b in zip(entropies, entropies[1:], strict=False))
    if "trainability" in names:
        block_scores = [_block_trainability(features[i - 1], features[i], generator) for i in reversed(range(1, len(features)))]
        scores["trainability"] = sum(block_scores) / len(block_scores)
    return {name: (value if not math.isnan(value) else -math.inf) for name, value in scores.items()}


class AZNASProxy(SharedPassProxy):
    """One AZ-NAS component, from ``batch_size`` Gaussian inputs of the given input shape. Data-free; higher is better."""

    needs_data = False

    def __init__(self, batch_size: int = 64, seed: int = 0) -> None:
        self.batch_size, self.seed = checked_batch_size(self.name, batch_size), seed

    def shared_pass(self) -> tuple[SharedPass, Hashable]:
        return az_nas_scores, (self.batch_size, self.seed)


class Expressivity(AZNASProxy):
    """AZ-NAS expressivity: how isotropic each block's features are (eigenvalue entropy), summed over blocks."""

    name = "expressivity"


class Progressivity(AZNASProxy):
    """AZ-NAS progressivity: the smallest increase of expressivity from one block to the next."""

    name = "progressivity"


class Trainability(AZNASProxy):
    """AZ-NAS trainability: how close each block's Jacobian spectral norm is to 1, averaged over blocks."""

    name = "trainability"
