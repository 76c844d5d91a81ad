"""RepVGG block (Ding et al., "RepVGG: Making VGG-style ConvNets Great Again", CVPR 2021) and its elastic twin.

While training, the block sums three branches (3x3 conv-BN, 1x1 conv-BN and, when shapes allow, an identity BN)
before its activation. Every branch is linear in eval mode, so they fold into one 3x3 conv with bias (structural
re-parameterisation). In eval mode :class:`RepVGGBlock` therefore runs that single fused conv (its weights computed
from the branches, so they never go stale), and an ONNX export of an eval-mode network holds one Conv per block:
export and latency always see the fused form. :meth:`RepVGGBlock.reparameterize` makes the fusion permanent for
deployment in PyTorch (the branches are dropped).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from lnas.spaces.blocks import BlockConfig, conv_bn_act, make_act
from lnas.spaces.elastic import ACT_FUNCTIONS, ElasticConvBn, copy_bn, sliced_batch_norm

_CENTRE = F.pad(torch.ones(1, 1, 1, 1), [1, 1, 1, 1])  # a 3x3 kernel that is 1 at its centre


def _fold(weight: torch.Tensor, norm: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """A conv weight (no bias) followed by eval-mode ``norm`` as one conv's weight and bias.

    ``norm`` is a BatchNorm, or an identity where a tool removed the BatchNorm layers (e.g. SynFlow scoring).
    Plain tensor ops: ``torch.nn.utils.fusion.fuse_conv_bn_weights`` wraps its results in Parameters, which breaks ONNX tracing.
    """
    if isinstance(norm, nn.Identity):
        return weight, weight.new_zeros(weight.shape[0])
    if not isinstance(norm, nn.BatchNorm2d):
        raise TypeError(f"RepVGG branches fold only BatchNorm2d or Identity, got {type(norm).__name__}")
    scale = norm.weight * torch.rsqrt(norm.running_var + norm.eps)
    return weight * scale.reshape(-1, 1, 1, 1), norm.bias - norm.running_mean * scale


class RepVGGBlock(nn.Module):
    """``act(BN(conv3x3(x)) + BN(conv1x1(x)) + BN(x))``; the identity branch only when stride is 1 and in == out."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride = cfg.in_chs, cfg.out_chs, cfg.stride
        self.dense: nn.Sequential | None = conv_bn_act(cfg.in_chs, cfg.out_chs, 3, cfg.stride, act=None)
        self.pointwise: nn.Sequential | None = conv_bn_act(cfg.in_chs, cfg.out_chs, 1, cfg.stride, act=None)
        self.identity: nn.BatchNorm2d | None = nn.BatchNorm2d(cfg.out_chs) if cfg.has_residual else None
        self.act = make_act(cfg.act)
        self.fused: nn.Conv2d | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.fused is not None:
            return self.act(self.fused(x))
        if self.training:
            return self.forward_branches(x)
        weight, bias = self.fused_weight_bias()
        return self.act(F.conv2d(x, weight, bias, self.stride, 1))

    def forward_branches(self, x: torch.Tensor) -> torch.Tensor:
        """The multi-branch form (what training runs; in eval mode it equals the fused conv)."""
        out = self.dense(x) + self.pointwise(x)
        return self.act(out + self.identity(x) if self.identity is not None else out)

    def fused_weight_bias(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The 3x3 weight and bias of the single conv equal to the three branches in eval mode.

        The 1x1 kernels are placed at the centre of the 3x3 by broadcasting against a centre mask rather than by
        padding, so ONNX shape inference keeps the kernel shape and the export folds the whole sum into one Conv.
        """
        centre = _CENTRE.to(self.dense[0].weight)
        weight, bias = _fold(self.dense[0].weight, self.dense[1])
        weight_1x1, bias_1x1 = _fold(self.pointwise[0].weight, self.pointwise[1])
        weight, bias = weight + weight_1x1 * centre, bias + bias_1x1
        if self.identity is not None:
            eye = torch.eye(self.out_chs, dtype=weight.dtype, device=weight.device).reshape(self.out_chs, self.out_chs, 1, 1)
            weight_id, bias_id = _fold(eye * centre, self.identity)
            weight, bias = weight + weight_id, bias + bias_id
        return weight, bias

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Replace the branches by the single fused 3x3 conv (irreversible; for deployment)."""
        if self.fused is not None:
            return
        weight, bias = self.fused_weight_bias()
        self.fused = nn.Conv2d(self.in_chs, self.out_chs, 3, self.stride, 1).to(weight.device)
        self.fused.weight.copy_(weight)
        self.fused.bias.copy_(bias)
        self.dense = self.pointwise = self.identity = None


class MultiBranch(nn.Module):
    """A RepVGG block kept in its multi-branch form in eval mode (what an unfused export would run)."""

    def __init__(self, block: RepVGGBlock) -> None:
        super().__init__()
        self.block = block

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.block.forward_branches(x)


def multi_branch(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose RepVGG blocks run their branches (never the fused conv), e.g. to measure fusion's gain."""
    model = copy.deepcopy(model)
    for parent in list(model.modules()):
        for name, child in parent.named_children():
            if isinstance(child, RepVGGBlock):
                setattr(parent, name, MultiBranch(child))
    return model


def reparameterize(model: nn.Module) -> nn.Module:
    """Fuse every :class:`RepVGGBlock` of ``model`` in place (see :meth:`RepVGGBlock.reparameterize`); returns ``model``."""
    for module in model.modules():
        if isinstance(module, RepVGGBlock):
            module.reparameterize()
    return model


class ElasticRepVGG(nn.Module):
    """Elastic twin of :class:`RepVGGBlock`: elastic input and output channels, branches sliced from the largest."""

    def __init__(self, largest: BlockConfig) -> None:
        super().__init__()
        self.dense = ElasticConvBn(largest.in_chs, largest.out_chs, 3, largest.stride)
        self.pointwise = ElasticConvBn(largest.in_chs, largest.out_chs, 1, largest.stride)
        self.identity = nn.BatchNorm2d(largest.out_chs) if largest.stride == 1 else None

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        out = self.dense(x, cfg.out_chs, 3) + self.pointwise(x, cfg.out_chs, 1)
        if cfg.has_residual:
            out = out + sliced_batch_norm(x, self.identity, cfg.out_chs)
        return ACT_FUNCTIONS[cfg.act](out)

    def extract(self, cfg: BlockConfig) -> RepVGGBlock:
        block = RepVGGBlock(cfg)
        self.dense.copy_into(block.dense)
        self.pointwise.copy_into(block.pointwise)
        if cfg.has_residual:
            copy_bn(self.identity, block.identity)
        return block
