"""Elastic (weight-sharing) twins of the static blocks in :mod:`lnas.spaces.blocks`.

Following Once-for-All (Cai et al., ICLR 2020): an elastic layer holds the largest weights and runs a smaller choice
by slicing them (first input/output channels, centre of the kernel). Elastic layers keep no active state: each call
receives the :class:`~lnas.spaces.blocks.BlockConfig` to run, and ``extract(cfg)`` returns the static twin holding a
copy of the sliced weights, so the extracted block computes exactly what the elastic one does for ``cfg``.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from lnas.spaces.blocks import ACTIVATIONS, BlockConfig, MBConv, ResidualBlock, SqueezeExcite, conv_bn_act, make_act

ACT_FUNCTIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {name: make_act(name) for name in ACTIVATIONS}  # stateless


def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` of ``bn``; running statistics of those channels update in place."""
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(x, bn.running_mean[:channels], bn.running_var[:channels], bn.weight[:channels], bn.bias[:channels],
                        use_batch_stats, bn.momentum if bn.momentum is not None else 0.1, bn.eps)


def copy_bn(source: nn.BatchNorm2d, target: nn.BatchNorm2d) -> None:
    """Copy the first ``target.num_features`` channels of ``source`` (weights and running statistics)."""
    c = target.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).data.copy_(getattr(source, name).data[:c])
    target.num_batches_tracked.data.copy_(source.num_batches_tracked.data)
    target.eps, target.momentum = source.eps, source.momentum


class ElasticConvBn(nn.Module):
    """Conv (no bias) + BatchNorm of the largest size, run on the first channels and the centre of the kernel."""

    def __init__(self, max_in: int, max_out: int, max_kernel: int, stride: int = 1, depthwise: bool = False) -> None:
        super().__init__()
        self.conv = nn.Conv2d(max_in, max_out, max_kernel, stride, max_kernel // 2, groups=max_out if depthwise else 1, bias=False)
        self.bn = nn.BatchNorm2d(max_out)
        self.max_kernel, self.stride, self.depthwise = max_kernel, stride, depthwise

    def weight(self, in_chs: int, out_chs: int, kernel: int) -> torch.Tensor:
        start = (self.max_kernel - kernel) // 2
        return self.conv.weight[:out_chs, : 1 if self.depthwise else in_chs, start:start + kernel, start:start + kernel]

    def forward(self, x: torch.Tensor, out_chs: int, kernel: int) -> torch.Tensor:
        weight = self.weight(x.shape[1], out_chs, kernel)
        out = F.conv2d(x, weight, None, self.stride, kernel // 2, 1, out_chs if self.depthwise else 1)
        return sliced_batch_norm(out, self.bn, out_chs)

    def copy_into(self, unit: nn.Sequential) -> None:
        """Copy the slice matching ``unit`` (a static conv → BatchNorm [→ act] of the same stride) into it."""
        conv = unit[0]
        conv.weight.data.copy_(self.weight(conv.in_channels, conv.out_channels, conv.kernel_size[0]).data)
        copy_bn(self.bn, unit[1])


class ElasticSqueezeExcite(nn.Module):
    """:class:`~lnas.spaces.blocks.SqueezeExcite` over the first channels, with an elastic reduced width."""

    def __init__(self, max_channels: int, max_rd: int) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(max_channels, max_rd, 1)
        self.conv_expand = nn.Conv2d(max_rd, max_channels, 1)

    def forward(self, x: torch.Tensor, rd: int, act: str, gate: str) -> torch.Tensor:
        c = x.shape[1]
        s = F.conv2d(x.mean((2, 3), keepdim=True), self.conv_reduce.weight[:rd, :c], self.conv_reduce.bias[:rd])
        s = F.conv2d(ACT_FUNCTIONS[act](s), self.conv_expand.weight[:c, :rd], self.conv_expand.bias[:c])
        return x * ACT_FUNCTIONS[gate](s)

    def copy_into(self, se: SqueezeExcite) -> None:
        rd, c = se.conv_reduce.out_channels, se.conv_reduce.in_channels
        se.conv_reduce.weight.data.copy_(self.conv_reduce.weight.data[:rd, :c])
        se.conv_reduce.bias.data.copy_(self.conv_reduce.bias.data[:rd])
        se.conv_expand.weight.data.copy_(self.conv_expand.weight.data[:c, :rd])
        se.conv_expand.bias.data.copy_(self.conv_expand.bias.data[:c])


class ElasticMBConv(nn.Module):
    """Elastic ``mbconv``/``ds`` block: elastic input/output channels, kernel, expansion and squeeze-excite width."""

    def __init__(self, largest: BlockConfig) -> None:
        super().__init__()
        self.expand = ElasticConvBn(largest.in_chs, largest.mid, 1) if largest.kind == "mbconv" else None
        self.depthwise = ElasticConvBn(largest.mid, largest.mid, largest.kernel, largest.stride, depthwise=True)
        self.se = ElasticSqueezeExcite(largest.mid, largest.se_rd) if largest.se_rd else None
        self.project = ElasticConvBn(largest.mid, largest.out_chs, 1)

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        act = ACT_FUNCTIONS[cfg.act]
        out = act(self.expand(x, cfg.mid, 1)) if self.expand is not None else x
        out = act(self.depthwise(out, cfg.mid, cfg.kernel))
        if cfg.se_rd:
            out = self.se(out, cfg.se_rd, cfg.se_act, cfg.se_gate)
        out = self.project(out, cfg.out_chs, 1)
        return out + x if cfg.has_residual else out

    def extract(self, cfg: BlockConfig) -> MBConv:
        block = MBConv(cfg)
        if self.expand is not None:
            self.expand.copy_into(block.expand)
        self.depthwise.copy_into(block.depthwise)
        if cfg.se_rd:
            self.se.copy_into(block.se)
        self.project.copy_into(block.project)
        return block


class ElasticConvAct(nn.Module):
    """Elastic ``conv`` block (conv → BatchNorm → activation) with elastic input/output channels."""

    def __init__(self, largest: BlockConfig) -> None:
        super().__init__()
        self.unit = ElasticConvBn(largest.in_chs, largest.out_chs, largest.kernel, largest.stride)

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        return ACT_FUNCTIONS[cfg.act](self.unit(x, cfg.out_chs, cfg.kernel))

    def extract(self, cfg: BlockConfig) -> nn.Sequential:
        unit = conv_bn_act(cfg.in_chs, cfg.out_chs, cfg.kernel, cfg.stride, act=cfg.act)
        self.unit.copy_into(unit)
        return unit


class ElasticResidual(nn.Module):
    """Elastic ResNet ``bottleneck``/``basic`` block: elastic input/output/hidden channels; projection shortcut on demand."""

    def __init__(self, largest: BlockConfig, first: bool) -> None:
        super().__init__()
        k, s = largest.kernel, largest.stride
        if largest.kind == "bottleneck":
            units = [ElasticConvBn(largest.in_chs, largest.mid, 1), ElasticConvBn(largest.mid, largest.mid, k, s),
                     ElasticConvBn(largest.mid, largest.out_chs, 1)]
        else:
            units = [ElasticConvBn(largest.in_chs, largest.mid, k, s), ElasticConvBn(largest.mid, largest.out_chs, k)]
        self.body = nn.ModuleList(units)
        # only a stage's first block can change shape (stride, or input width != output width)
        self.shortcut = ElasticConvBn(largest.in_chs, largest.out_chs, 1, s) if first else None

    def _kernels(self, cfg: BlockConfig) -> list[int]:
        return [1, cfg.kernel, 1] if cfg.kind == "bottleneck" else [cfg.kernel, cfg.kernel]

    def forward(self, x: torch.Tensor, cfg: BlockConfig) -> torch.Tensor:
        act = ACT_FUNCTIONS[cfg.act]
        widths = [cfg.mid] * (len(self.body) - 1) + [cfg.out_chs]
        out = x
        for index, (unit, width, kernel) in enumerate(zip(self.body, widths, self._kernels(cfg), strict=True)):
            out = unit(out, width, kernel)
            if index < len(self.body) - 1:
                out = act(out)
        shortcut = x if cfg.has_residual else self.shortcut(x, cfg.out_chs, 1)
        return act(out + shortcut)

    def extract(self, cfg: BlockConfig) -> ResidualBlock:
        block = ResidualBlock(cfg)
        for unit, static in zip(self.body, block.body, strict=True):
            unit.copy_into(static)
        if not cfg.has_residual:
            self.shortcut.copy_into(block.shortcut)
        return block

