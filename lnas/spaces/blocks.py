"""Static blocks built from plain ``torch.nn`` layers, each described by one :class:`BlockConfig`.

These are the networks a space builds and a supernet extracts: they run without lnas (TorchScript, ONNX).
Block kinds and their references:

- ``mbconv``: inverted residual (MobileNetV2, Sandler et al. 2018) with optional squeeze-excite (MobileNetV3,
  Howard et al. 2019; EfficientNet, Tan & Le 2019), laid out as timm's ``InvertedResidual``;
- ``ds``: depthwise-separable block (timm's ``DepthwiseSeparableConv``, the first stage of MobileNetV3/EfficientNet);
- ``conv``: conv → BatchNorm → activation (timm's ``ConvBnAct``, MobileNetV3's last 1x1 stage);
- ``bottleneck`` and ``basic``: ResNet blocks (He et al., CVPR 2016), laid out as timm's ``Bottleneck``/``BasicBlock``;
- ``repvgg``: see :mod:`lnas.spaces.repvgg`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

ACTIVATIONS: dict[str, type[nn.Module]] = {
    "relu": nn.ReLU,
    "hard_swish": nn.Hardswish,
    "swish": nn.SiLU,
    "sigmoid": nn.Sigmoid,
    "hard_sigmoid": nn.Hardsigmoid,
}


def make_act(name: str) -> nn.Module:
    """The activation module called ``name`` (one of :data:`ACTIVATIONS`)."""
    if name not in ACTIVATIONS:
        raise ValueError(f"unknown activation {name!r}; allowed: {sorted(ACTIVATIONS)}")
    return ACTIVATIONS[name]()


@dataclass(frozen=True)
class BlockConfig:
    """Everything needed to build one block: its kind, channels, stride, kernel, hidden width, activation and SE."""

    kind: str
    in_chs: int
    out_chs: int
    stride: int
    kernel: int
    mid: int
    act: str
    se_rd: int = 0
    se_act: str = "relu"
    se_gate: str = "sigmoid"

    @property
    def has_residual(self) -> bool:
        """Identity shortcut: same shape in and out (timm's ``has_skip``)."""
        return self.stride == 1 and self.in_chs == self.out_chs


def conv_bn_act(in_chs: int, out_chs: int, kernel: int, stride: int = 1, groups: int = 1, act: str | None = "relu") -> nn.Sequential:
    """Conv (no bias) → BatchNorm → optional activation, padded to keep ``ceil(size / stride)``."""
    layers: list[nn.Module] = [
        nn.Conv2d(in_chs, out_chs, kernel, stride, padding=kernel // 2, groups=groups, bias=False),
        nn.BatchNorm2d(out_chs),
    ]
    if act is not None:
        layers.append(make_act(act))
    return nn.Sequential(*layers)


class SqueezeExcite(nn.Module):
    """Squeeze-and-excitation (Hu et al., CVPR 2018) as in timm's EfficientNet blocks: mean → reduce → act → expand → gate."""

    def __init__(self, channels: int, rd: int, act: str, gate: str) -> None:
        super().__init__()
        self.conv_reduce = nn.Conv2d(channels, rd, 1)
        self.act = make_act(act)
        self.conv_expand = nn.Conv2d(rd, channels, 1)
        self.gate = make_act(gate)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gate(self.conv_expand(self.act(self.conv_reduce(x.mean((2, 3), keepdim=True)))))


class MBConv(nn.Module):
    """``mbconv``: 1x1 expand → k×k depthwise → SE → 1x1 project; ``ds``: the same without the expansion."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        self.expand = conv_bn_act(cfg.in_chs, cfg.mid, 1, act=cfg.act) if cfg.kind == "mbconv" else nn.Identity()
        self.depthwise = conv_bn_act(cfg.mid, cfg.mid, cfg.kernel, cfg.stride, groups=cfg.mid, act=cfg.act)
        self.se = SqueezeExcite(cfg.mid, cfg.se_rd, cfg.se_act, cfg.se_gate) if cfg.se_rd else nn.Identity()
        self.project = conv_bn_act(cfg.mid, cfg.out_chs, 1, act=None)
        self.has_residual = cfg.has_residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.project(self.se(self.depthwise(self.expand(x))))
        return out + x if self.has_residual else out


class ResidualBlock(nn.Module):
    """``bottleneck``: 1x1 → k×k (stride) → 1x1; ``basic``: k×k (stride) → k×k; 1x1 projection shortcut when shapes change."""

    def __init__(self, cfg: BlockConfig) -> None:
        super().__init__()
        if cfg.kind == "bottleneck":
            self.body = nn.Sequential(conv_bn_act(cfg.in_chs, cfg.mid, 1, act=cfg.act),
                                      conv_bn_act(cfg.mid, cfg.mid, cfg.kernel, cfg.stride, act=cfg.act),
                                      conv_bn_act(cfg.mid, cfg.out_chs, 1, act=None))
        else:
            self.body = nn.Sequential(conv_bn_act(cfg.in_chs, cfg.mid, cfg.kernel, cfg.stride, act=cfg.act),
                                      conv_bn_act(cfg.mid, cfg.out_chs, cfg.kernel, act=None))
        self.shortcut = nn.Identity() if cfg.has_residual else conv_bn_act(cfg.in_chs, cfg.out_chs, 1, cfg.stride, act=None)
        self.act = make_act(cfg.act)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.body(x) + self.shortcut(x))
