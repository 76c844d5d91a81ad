"""Static MBConv layers and their elastic (weight-sharing) twins.

Following Once-for-All (Cai et al., ICLR 2020): an elastic layer holds the largest weights and runs a smaller
choice by slicing them (first channels, centre of the kernel); every elastic layer has a static twin built from
plain ``torch.nn`` layers, and :meth:`ElasticMBConv.extract` copies the sliced weights into that twin.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1, relu: bool = True) -> nn.Sequential:
    """Conv (no bias) → BatchNorm → optional ReLU, padded to keep ``ceil(size / stride)``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
    ]
    if relu:
        layers.append(nn.ReLU(inplace=True))
    return nn.Sequential(*layers)


class MBConv(nn.Module):
    """Inverted residual block (MobileNetV2): 1x1 expand → k×k depthwise → 1x1 project, residual when shapes match."""

    def __init__(self, in_chs: int, out_chs: int, stride: int, kernel: int, expand: int) -> None:
        super().__init__()
        mid = in_chs * expand
        self.expand = conv_bn_relu(in_chs, mid, 1)
        self.depthwise = conv_bn_relu(mid, mid, kernel, stride, groups=mid)
        self.project = conv_bn_relu(mid, out_chs, 1, relu=False)
        self.has_residual = stride == 1 and in_chs == out_chs

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.depthwise(self.expand(x)))
        return out + x if self.has_residual else out


def sliced_batch_norm(x: torch.Tensor, bn: nn.BatchNorm2d, channels: int) -> torch.Tensor:
    """BatchNorm over the first ``channels`` of ``bn``; running statistics of those channels update in place."""
    use_batch_stats = bn.training or bn.running_mean is None
    return F.batch_norm(
        x,
        bn.running_mean[:channels],
        bn.running_var[:channels],
        bn.weight[:channels],
        bn.bias[:channels],
        use_batch_stats,
        bn.momentum if bn.momentum is not None else 0.1,
        bn.eps,
    )


def copy_bn(source: nn.BatchNorm2d, target: nn.BatchNorm2d) -> None:
    """Copy the first ``target.num_features`` channels of ``source`` (weights and running statistics)."""
    c = target.num_features
    for name in ("weight", "bias", "running_mean", "running_var"):
        getattr(target, name).data.copy_(getattr(source, name).data[:c])
    target.num_batches_tracked.data.copy_(source.num_batches_tracked.data)
    target.eps, target.momentum = source.eps, source.momentum


class ElasticMBConv(nn.Module):
    """MBConv with elastic kernel size (centre crop of the largest kernel) and expansion ratio (first channels).

    ``kernel`` and ``expand`` are the active choices; only the supernet's ``activate`` sets them.
    """

    def __init__(self, in_chs: int, out_chs: int, stride: int, max_kernel: int, max_expand: int) -> None:
        super().__init__()
        self.in_chs, self.out_chs, self.stride = in_chs, out_chs, stride
        self.max_kernel = max_kernel
        max_mid = in_chs * max_expand
        self.expand_conv = nn.Conv2d(in_chs, max_mid, 1, bias=False)
        self.expand_bn = nn.BatchNorm2d(max_mid)
        self.depthwise_conv = nn.Conv2d(max_mid, max_mid, max_kernel, stride, max_kernel // 2, groups=max_mid, bias=False)
        self.depthwise_bn = nn.BatchNorm2d(max_mid)
        self.project_conv = nn.Conv2d(max_mid, out_chs, 1, bias=False)
        self.project_bn = nn.BatchNorm2d(out_chs)
        self.kernel, self.expand = max_kernel, max_expand

    def _depthwise_weight(self, mid: int) -> torch.Tensor:
        start = (self.max_kernel - self.kernel) // 2
        end = start + self.kernel
        return self.depthwise_conv.weight[:mid, :, start:end, start:end]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mid = self.in_chs * self.expand
        out = F.relu(sliced_batch_norm(F.conv2d(x, self.expand_conv.weight[:mid]), self.expand_bn, mid))
        out = F.conv2d(out, self._depthwise_weight(mid), None, self.stride, self.kernel // 2, 1, mid)
        out = F.relu(sliced_batch_norm(out, self.depthwise_bn, mid))
        out = self.project_bn(F.conv2d(out, self.project_conv.weight[:, :mid]))
        return out + x if self.stride == 1 and self.in_chs == self.out_chs else out

    def extract(self) -> MBConv:
        """The static twin of the active choice, holding a copy of the sliced weights."""
        mid = self.in_chs * self.expand
        block = MBConv(self.in_chs, self.out_chs, self.stride, self.kernel, self.expand)
        block.expand[0].weight.data.copy_(self.expand_conv.weight.data[:mid])
        copy_bn(self.expand_bn, block.expand[1])
        block.depthwise[0].weight.data.copy_(self._depthwise_weight(mid).data)
        copy_bn(self.depthwise_bn, block.depthwise[1])
        block.project[0].weight.data.copy_(self.project_conv.weight.data[:, :mid])
        copy_bn(self.project_bn, block.project[1])
        return block
