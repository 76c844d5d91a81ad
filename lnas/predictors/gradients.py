"""Gradient-based zero-cost proxies sharing one forward/backward pass: grad_norm, snip, grasp, fisher and jacob_cov
(Abdelfattah et al., ICLR 2021, "Zero-Cost Proxies for Lightweight NAS") and ZiCo (Li et al., ICLR 2023).

Each follows the reference implementation (SamsungLabs/zero-cost-nas, ``foresight/pruners/measures``; ZiCo:
SLDGroup/ZiCo ``compute_zico.py``): a copy of the network in training mode (BatchNorm on batch statistics), the
cross-entropy loss of one batch, scores summed over the Conv2d and Linear weights.

- grad_norm: ``sum over layers of ||dL/dW||_2``.
- snip (Lee et al., ICLR 2019): ``sum |dL/dW ⊙ W|``.
- grasp (Wang et al., ICLR 2020): ``sum -W ⊙ (H g)``, ``g = dL/dW``, ``H`` the Hessian of the loss. For a layer
  whose output only feeds a BatchNorm the loss is invariant to rescaling ``W``, so ``H W = -g`` and its term is
  ``||g||²`` (:mod:`lnas.predictors.scale_invariance`); the double backward is only needed for the other layers
  (``g · d(W_rest · dL/dW_rest)/dW``, by the symmetry of ``H``), and differentiates BatchNorm in closed form
  (:mod:`lnas.predictors.batchnorm_hessian`).
- fisher (Theis et al., 2018; Turner et al., ICLR 2020): per output channel ``0.5 * mean_n (sum_hw a ⊙ dL/da)^2`` of
  each layer's output ``a``, broadcast to every weight of the channel (as the reference does) and summed.
- jacob_cov (Mellor et al., v1 of "Neural Architecture Search without Training"): the Jacobian ``J`` of the summed
  outputs (the logits of a classifier) w.r.t. the inputs; ``-sum_i log(λ_i + k) + 1 / (λ_i + k)`` over the eigenvalues of ``corrcoef(J)``, k = 1e-5.
- zico: per-weight gradients of two batches; ``sum over layers of log(sum mean|g| / std(g))`` over weights with std > 0.

Shared passes: one forward of the first batch, one backward of the loss for all weight gradients (with a graph
when grasp needs a Hessian-vector product), the fisher statistics hooked into that backward, one extra backward
for the input Jacobian and one through the layers not followed by BatchNorm for grasp; ZiCo's second batch is one
more forward/backward.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence

import torch
from torch import nn

from lnas.predictors.base import (
    Inputs,
    SharedPass,
    SharedPassProxy,
    Supervision,
    checked_batch_size,
    first,
    flatten_outputs,
    require_tensor,
    scoring_copy,
    supervision_of,
    weight_layers,
)
from lnas.predictors.batchnorm_hessian import with_closed_form_batch_norm_hessian
from lnas.predictors.scale_invariance import ScaleInvariantLayers

JACOB_COV_K = 1e-5
LOSS_PROXIES = frozenset({"grad_norm", "snip", "grasp", "fisher", "zico"})


class FisherTap:
    """Accumulates the reference's channel-wise Fisher information of each layer output during one backward pass."""

    def __init__(self, layers: Sequence[nn.Conv2d | nn.Linear]) -> None:
        self.total: torch.Tensor | float = 0.0
        self.handles = [layer.register_forward_hook(self._on_output) for layer in layers]
        self.tensor_handles: list = []

    def _on_output(self, layer: nn.Module, args: tuple, output: torch.Tensor) -> None:
        fan_in = layer.weight[0].numel()
        activation = output.detach()

        def on_grad(grad: torch.Tensor) -> None:
            grad = grad.detach()
            g_nk = (activation * grad).sum(dim=tuple(range(2, grad.dim()))) if grad.dim() > 2 else activation * grad
            self.total = self.total + g_nk.pow(2).mean(0).mul(0.5).sum() * fan_in

        self.tensor_handles.append(output.register_hook(on_grad))

    def close(self) -> None:
        for handle in [*self.handles, *self.tensor_handles]:
            handle.remove()


class TwiceDifferentiableHardsigmoid(nn.Module):
    """``hardsigmoid(x) = clamp(x / 6 + 1/2, 0, 1)`` from ops autograd differentiates twice (PyTorch's fused
    ``hardsigmoid_backward`` has no derivative, which GraSP's Hessian-vector product needs)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x / 6 + 0.5).clamp(0.0, 1.0)


class TwiceDifferentiableHardswish(TwiceDifferentiableHardsigmoid):
    """``hardswish(x) = x · hardsigmoid(x)``, differentiable twice (see :class:`TwiceDifferentiableHardsigmoid`)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * super().forward(x)


def with_twice_differentiable_activations(net: nn.Module) -> nn.Module:
    """Replace ``net``'s Hardsigmoid and Hardswish modules, in place, by equal ones autograd differentiates twice."""
    for name, child in net.named_children():
        if isinstance(child, nn.Hardswish):
            setattr(net, name, TwiceDifferentiableHardswish())
        elif isinstance(child, nn.Hardsigmoid):
            setattr(net, name, TwiceDifferentiableHardsigmoid())
        else:
            with_twice_differentiable_activations(child)
    return net


def jacob_cov_score(jacobian: torch.Tensor) -> float:
    """Score of the input Jacobian (one row per sample), as the reference's ``eval_score``; NaN when undefined."""
    corr = torch.corrcoef(jacobian.reshape(jacobian.shape[0], -1).double()).cpu()
    if not torch.isfinite(corr).all():
        return float("nan")
    eigenvalues = torch.linalg.eigvalsh(corr)
    return float(-(torch.log(eigenvalues + JACOB_COV_K) + 1.0 / (eigenvalues + JACOB_COV_K)).sum())


def zico_score(batch_grads: Sequence[Sequence[torch.Tensor | None]]) -> float:
    """ZiCo from per-batch weight gradients (``batch_grads[b][layer]``); layers without a gradient are skipped."""
    total = 0.0
    for per_batch in zip(*batch_grads, strict=True):
        if any(g is None for g in per_batch):
            continue
        stacked = torch.stack([g.detach().reshape(-1).double() for g in per_batch])
        std = stacked.std(dim=0, unbiased=False)
        nonzero = std != 0
        ratio_sum = (stacked.abs().mean(dim=0)[nonzero] / std[nonzero]).sum()
        if ratio_sum != 0:
            total += float(torch.log(ratio_sum))
    return total


def grasp_score(weights: Sequence[torch.Tensor], grads: Sequence[torch.Tensor | None], scale_invariant: set[int]) -> float:
    """``sum -W ⊙ (H g)`` over ``weights`` from their loss gradients ``grads`` (made with a graph unless every layer is
    in ``scale_invariant``): ``||g_l||²`` for a scale-invariant layer ``l`` (``H W_l = -g_l``), and for the rest
    ``-g · H W_rest``, the gradient of ``W_rest · g_rest`` along ``g``."""
    score = sum(g.detach().pow(2).sum() for k, g in enumerate(grads) if k in scale_invariant and g is not None)
    rest = [k for k, g in enumerate(grads) if k not in scale_invariant and g is not None]
    if rest:
        directional = sum((weights[k].detach() * grads[k]).sum() for k in rest)
        hessian_weights = torch.autograd.grad(directional, weights, retain_graph=True, allow_unused=True)
        score = score - sum((g.detach() * hw).sum() for g, hw in zip(grads, hessian_weights, strict=True) if g is not None and hw is not None)
    return float(score)


def _weight_grads(net: nn.Module, weights: list[torch.Tensor], inputs: torch.Tensor, supervision: Supervision) -> tuple:
    return torch.autograd.grad(supervision.loss_of(net(inputs)), weights, allow_unused=True)


def gradient_scores(proxies: Sequence[GradientProxy], model: nn.Module, inputs: Inputs, targets: object | None = None) -> dict[str, float]:
    """The scores of ``proxies`` (all with the same ``batch_size``) from shared passes over one copy of ``model``."""
    names = {p.name for p in proxies}
    batch_size = proxies[0].batch_size
    inputs = require_tensor(inputs, proxies[0].name)
    net = scoring_copy(model)
    if "grasp" in names:
        with_twice_differentiable_activations(with_closed_form_batch_norm_hessian(net))
    layers = weight_layers(net)
    weights = [layer.weight for layer in layers]
    x = first(inputs, batch_size).detach().clone().requires_grad_("jacob_cov" in names)
    supervision = supervision_of(targets, inputs, proxies[0].name) if names & LOSS_PROXIES else None
    fisher = FisherTap(layers) if "fisher" in names else None
    invariance = ScaleInvariantLayers(net, layers) if "grasp" in names else None
    output = net(x)
    if invariance is not None:
        invariance.close()
    scores: dict[str, float] = {}
    grads: tuple = ()
    scale_invariant: set[int] = set()
    if names & LOSS_PROXIES:
        loss = supervision[:batch_size].loss_of(output)
        if invariance is not None:
            scale_invariant = invariance.find(loss)
        needs_graph = "grasp" in names and len(scale_invariant) < len(layers)
        grads = torch.autograd.grad(loss, weights, create_graph=needs_graph, retain_graph=True, allow_unused=True)
    if fisher is not None:
        fisher.close()
        scores["fisher"] = float(fisher.total)
    with torch.no_grad():
        if "grad_norm" in names:
            scores["grad_norm"] = float(sum(g.norm() for g in grads if g is not None))
        if "snip" in names:
            scores["snip"] = float(sum((g * w).abs().sum() for g, w in zip(grads, weights, strict=True) if g is not None))
    if "grasp" in names:
        scores["grasp"] = grasp_score(weights, grads, scale_invariant)
    if "jacob_cov" in names:
        (jacobian,) = torch.autograd.grad(sum(t.sum() for t in flatten_outputs(output)), x)
        scores["jacob_cov"] = jacob_cov_score(jacobian)
    if "zico" in names:
        half = min(batch_size, len(inputs) // 2)
        if half < 1:
            raise ValueError(f"proxy 'zico' needs two batches: at least 2 samples, got {len(inputs)}")
        first_grads = grads if half == batch_size else _weight_grads(net, weights, inputs[:half], supervision[:half])
        second_grads = _weight_grads(net, weights, inputs[half: 2 * half], supervision[half: 2 * half])
        scores["zico"] = zico_score([first_grads, second_grads])
    return scores


class GradientProxy(SharedPassProxy):
    """A proxy computed by :func:`gradient_scores` on the first ``batch_size`` samples (64 in the papers)."""

    needs_data = True
    needs_labels = True

    def __init__(self, batch_size: int = 64) -> None:
        self.batch_size = checked_batch_size(self.name, batch_size)

    def shared_pass(self) -> tuple[SharedPass, Hashable]:
        return gradient_scores, self.batch_size


class GradNorm(GradientProxy):
    """grad_norm (Abdelfattah et al., ICLR 2021): sum of the layers' weight-gradient L2 norms. Higher is better."""

    name = "grad_norm"


class Snip(GradientProxy):
    """SNIP (Lee et al., ICLR 2019) as a NAS proxy (Abdelfattah et al., ICLR 2021): ``sum |g ⊙ W|``. Higher is better."""

    name = "snip"


class Grasp(GradientProxy):
    """GraSP (Wang et al., ICLR 2020) as a NAS proxy (Abdelfattah et al., ICLR 2021): ``sum -W ⊙ Hg``. Higher is better."""

    name = "grasp"


class Fisher(GradientProxy):
    """Fisher (Turner et al., ICLR 2020) as a NAS proxy (Abdelfattah et al., ICLR 2021). Higher is better."""

    name = "fisher"


class JacobCov(GradientProxy):
    """jacob_cov (Mellor et al., 2020; Abdelfattah et al., ICLR 2021): input-Jacobian correlation. Higher is better.

    Uses no labels (only the summed outputs, so any model works), but the inputs must be real data.
    """

    name = "jacob_cov"
    needs_labels = False


class ZiCo(GradientProxy):
    """ZiCo (Li et al., ICLR 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of Variation on Gradients").

    Gradients of two batches of ``batch_size`` samples (the first two of the inputs given; when fewer than
    ``2 * batch_size`` samples are given, their two halves); higher is better.
    """

    name = "zico"
