"""Batch normalisation with a closed-form second derivative, for GraSP's Hessian-vector product.

PyTorch differentiates its BatchNorm backward with ``batchnorm_double_backward`` (``FunctionsManual.cpp``), which
builds the result from about 25 full-size tensor operations: on the CPU that was 37% of the time of grad_norm and
GraSP together (NAS-Bench-201 cell 13806, batch 64). Here the double backward takes one fused native kernel, one
product with its sum and four in-place passes. Forward and first backward use PyTorch's own kernels (the affine
weights are applied after them), so values and first derivatives agree with ``nn.BatchNorm``'s to rounding.

Per channel, with ``M`` values, ``x̂ = (x - μ) r`` and ``r = (σ² + eps)^(-1/2)``, the first backward is
``gx = r (g - ḡ - x̂ c)``, ``c = mean(g x̂)`` (``∂x̂_i/∂x_j = r (δ_ij - 1/M - x̂_i x̂_j / M)``, eps included). For an
upstream gradient ``u`` of ``gx``, with ``ū = mean(u)``, ``d = mean(u x̂)`` and ``e = mean(u g) - ū ḡ - 3 c d``:

- the gradient for ``g`` is ``r (u - ū - x̂ d)``: the first backward applied to ``u`` (that map is symmetric);
- the gradient for ``x`` is ``-r² (c (u - ū) + d (g - ḡ) + e x̂)``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.autograd.function import FunctionCtx, once_differentiable

from lnas.predictors.base import per_channel, uses_batch_statistics

aten = torch.ops.aten
BATCH_NORM_TYPES = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)


def _normalisation_backward(grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                            eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PyTorch's fused BatchNorm backward without affine weights: ``r (grad - mean(grad) - x̂ mean(grad x̂))``,
    and the per-channel sums of ``grad x̂`` and of ``grad``."""
    return aten.native_batch_norm_backward(grad, x, None, None, None, mean, invstd, True, eps, [True, True, True])


class _Normalise(torch.autograd.Function):
    """``x̂`` of batch statistics, with the batch mean and ``r`` as non-differentiable outputs."""

    @staticmethod
    def forward(ctx: FunctionCtx, x: torch.Tensor, eps: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        normalised, mean, invstd = aten.native_batch_norm(x, None, None, None, None, True, 0.0, eps)
        ctx.save_for_backward(x, mean, invstd)
        ctx.eps = eps
        ctx.mark_non_differentiable(mean, invstd)
        return normalised, mean, invstd

    @staticmethod
    def backward(ctx: FunctionCtx, grad: torch.Tensor, _mean_grad: torch.Tensor, _invstd_grad: torch.Tensor) -> tuple[torch.Tensor, None]:
        x, mean, invstd = ctx.saved_tensors
        return _NormaliseBackward.apply(grad, x, mean, invstd, ctx.eps), None


class _NormaliseBackward(torch.autograd.Function):
    """The first backward ``gx(g, x)``, differentiable once more in closed form (module docstring)."""

    @staticmethod
    def forward(ctx: FunctionCtx, grad: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                eps: float) -> torch.Tensor:
        grad_x, grad_x_hat_sum, grad_sum = _normalisation_backward(grad, x, mean, invstd, eps)
        ctx.save_for_backward(grad, x, mean, invstd, grad_x_hat_sum, grad_sum)
        ctx.eps = eps
        return grad_x

    @staticmethod
    @once_differentiable
    def backward(ctx: FunctionCtx, upstream: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, None, None, None]:
        grad, x, mean, invstd, grad_x_hat_sum, grad_sum = ctx.saved_tensors
        count = x.numel() // x.shape[1]
        grad_of_grad, upstream_x_hat_sum, upstream_sum = _normalisation_backward(upstream, x, mean, invstd, ctx.eps)
        upstream_grad_sum = (upstream * grad).sum([0, *range(2, x.dim())])
        c, g_bar = grad_x_hat_sum / count, grad_sum / count
        d, u_bar = upstream_x_hat_sum / count, upstream_sum / count
        e = upstream_grad_sum / count - u_bar * g_bar - 3 * c * d
        scale = -invstd * invstd
        # -r² (c u + d g + e r x - (c ū + d ḡ + e r μ)), with x̂ = r (x - μ) written out
        grad_of_x = upstream * per_channel(scale * c, x)
        grad_of_x.addcmul_(grad, per_channel(scale * d, x)).addcmul_(x, per_channel(scale * e * invstd, x))
        grad_of_x.add_(per_channel(-scale * (c * u_bar + d * g_bar + e * invstd * mean), x))
        return grad_of_grad, grad_of_x, None, None, None


def _update_running_statistics(norm: nn.modules.batchnorm._BatchNorm, mean: torch.Tensor, invstd: torch.Tensor, count: int) -> None:
    """The running-statistics update of ``nn.BatchNorm``'s training forward (momentum, or a cumulative average when
    it is None; unbiased variance)."""
    if not (norm.training and norm.track_running_stats and norm.running_mean is not None):
        return
    with torch.no_grad():
        norm.num_batches_tracked.add_(1)
        factor = 1.0 / float(norm.num_batches_tracked) if norm.momentum is None else norm.momentum
        variance = (invstd.pow(-2) - norm.eps) * (count / (count - 1))
        norm.running_mean.lerp_(mean.to(norm.running_mean.dtype), factor)
        norm.running_var.lerp_(variance.to(norm.running_var.dtype), factor)


def _batch_norm_forward(norm: nn.modules.batchnorm._BatchNorm, x: torch.Tensor) -> torch.Tensor:
    """``norm``'s forward on batch statistics through :class:`_Normalise` (affine weights applied after it)."""
    if not uses_batch_statistics(norm):
        return type(norm).forward(norm, x)
    norm._check_input_dim(x)
    nn.functional._verify_batch_size(x.size())  # as F.batch_norm: one value per channel has no batch statistics
    normalised, mean, invstd = _Normalise.apply(x, norm.eps)
    _update_running_statistics(norm, mean, invstd, x.numel() // x.shape[1])
    if norm.weight is None:
        return normalised
    return torch.addcmul(per_channel(norm.bias, x), normalised, per_channel(norm.weight, x))


def with_closed_form_batch_norm_hessian(net: nn.Module) -> nn.Module:
    """Route ``net``'s plain BatchNorm layers (exactly ``nn.BatchNorm1d/2d/3d``; subclasses may do more in their
    forward) through :class:`_Normalise` while they use batch statistics. Changes ``net`` in place: use it on a
    scoring copy."""
    for module in net.modules():
        if type(module) in BATCH_NORM_TYPES:
            module.forward = _batch_norm_forward.__get__(module)
    return net
