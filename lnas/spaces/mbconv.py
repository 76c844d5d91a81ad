"""An elastic MobileNetV2-style space: per-stage depth, per-block kernel size and expansion ratio.

Arch labels: ``stage{i}.depth`` and, for each active block ``j < depth``, ``stage{i}.block{j}.kernel`` and
``stage{i}.block{j}.expand``. Only active blocks have labels, so one network has exactly one arch dict.

String encoding (timm-like): one token ``k{kernel}e{expand}`` per block, blocks of a stage concatenated, stages
joined by ``-``. Example with two stages: ``k3e4k5e6-k7e3`` (stage 1: two blocks, stage 2: one block).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from lnas.spaces.arch import Arch, InvalidArchError, check_arch, choose
from lnas.spaces.base import FeatureInfo, SearchSpace
from lnas.spaces.layers import ElasticMBConv, MBConv, conv_bn_relu

_BLOCK_TOKEN = re.compile(r"k(\d+)e(\d+)")


@dataclass(frozen=True)
class StageSpec:
    """One stage: output channels, stride of its first block and the depths it may take."""

    channels: int
    stride: int
    depths: tuple[int, ...]


class MBConvNet(nn.Module):
    """Static network of one arch: stem, stages of :class:`MBConv` blocks; returns the features of ``out_indices``."""

    def __init__(self, stem: nn.Module, stages: Sequence[nn.Module], out_indices: Sequence[int]) -> None:
        super().__init__()
        self.stem = stem
        self.stages = nn.ModuleList(stages)
        self.out_indices = list(out_indices)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for index, stage in enumerate(self.stages):
            x = stage(x)
            if index in self.out_indices:
                features.append(x)
        return features


class MBConvSpace(SearchSpace):
    """The space declaration (labels and choices); :class:`MBConvSupernet` shares weights across it."""

    def __init__(
        self,
        stages: Sequence[dict],
        kernels: Sequence[int] = (3, 5, 7),
        expands: Sequence[int] = (3, 4, 6),
        stem_channels: int = 16,
        in_channels: int = 3,
        out_indices: Sequence[int] = (1, 2, 3),
    ) -> None:
        self.stages = [StageSpec(int(s["channels"]), int(s["stride"]), tuple(int(d) for d in s["depths"])) for s in stages]
        if not self.stages:
            raise ValueError("MBConvSpace needs at least one stage")
        self.kernels, self.expands = tuple(int(k) for k in kernels), tuple(int(e) for e in expands)
        if any(k % 2 == 0 for k in self.kernels):
            raise ValueError(f"kernel sizes must be odd, got {list(self.kernels)}")
        self.stem_channels, self.in_channels = stem_channels, in_channels
        self.out_indices = tuple(out_indices)
        bad = [i for i in self.out_indices if not 0 <= i < len(self.stages)]
        if bad:
            raise ValueError(f"out_indices {bad} are not stage indices 0..{len(self.stages) - 1}")

    # -- labels --------------------------------------------------------------------------------------------
    def allowed(self, arch: Arch) -> dict[str, tuple]:
        """Label → allowed values for ``arch``'s depths (block labels exist only for active blocks)."""
        allowed: dict[str, tuple] = {}
        for i, stage in enumerate(self.stages, start=1):
            allowed[f"stage{i}.depth"] = stage.depths
            depth = arch.get(f"stage{i}.depth")
            for j in range(depth if depth in stage.depths else 0):
                allowed[f"stage{i}.block{j}.kernel"] = self.kernels
                allowed[f"stage{i}.block{j}.expand"] = self.expands
        return allowed

    def validate(self, arch: Arch) -> None:
        check_arch(arch, self.allowed(arch))

    def size(self) -> int:
        per_block = len(self.kernels) * len(self.expands)
        total = 1
        for stage in self.stages:
            total *= sum(per_block**depth for depth in stage.depths)
        return total

    def _with_blocks(self, depths: Sequence[int], block_choice) -> Arch:
        arch: Arch = {}
        for i, depth in enumerate(depths, start=1):
            arch[f"stage{i}.depth"] = depth
            for j in range(depth):
                arch[f"stage{i}.block{j}.kernel"], arch[f"stage{i}.block{j}.expand"] = block_choice(i, j)
        return arch

    def sample(self, generator: torch.Generator) -> Arch:
        depths = [choose(stage.depths, generator) for stage in self.stages]
        return self._with_blocks(depths, lambda i, j: (choose(self.kernels, generator), choose(self.expands, generator)))

    def mutate(self, arch: Arch, generator: torch.Generator) -> Arch:
        self.validate(arch)
        mutable = [label for label, values in self.allowed(arch).items() if len(values) > 1]
        if not mutable:
            raise InvalidArchError("this space has a single candidate; nothing to mutate")
        label = choose(mutable, generator)
        values = [v for v in self.allowed(arch)[label] if v != arch[label]]
        new_value = choose(values, generator)
        depths = [new_value if label == f"stage{i}.depth" else arch[f"stage{i}.depth"] for i in range(1, len(self.stages) + 1)]

        def block_choice(i: int, j: int) -> tuple:
            prefix = f"stage{i}.block{j}"
            if f"{prefix}.kernel" in arch:
                kernel, expand = arch[f"{prefix}.kernel"], arch[f"{prefix}.expand"]
            else:
                kernel, expand = choose(self.kernels, generator), choose(self.expands, generator)
            return (new_value if label == f"{prefix}.kernel" else kernel, new_value if label == f"{prefix}.expand" else expand)

        return self._with_blocks(depths, block_choice)

    def default(self) -> Arch:
        """The middle depth of each stage with the middle kernel and expansion."""
        mid = lambda values: sorted(values)[len(values) // 2]  # noqa: E731
        return self._with_blocks([mid(s.depths) for s in self.stages], lambda i, j: (mid(self.kernels), mid(self.expands)))

    def largest(self) -> Arch:
        """The candidate with every choice at its maximum (the supernet's full size)."""
        return self._with_blocks([max(s.depths) for s in self.stages], lambda i, j: (max(self.kernels), max(self.expands)))

    # -- string form ---------------------------------------------------------------------------------------
    def encode(self, arch: Arch) -> str:
        self.validate(arch)
        return "-".join(
            "".join(f"k{arch[f'stage{i}.block{j}.kernel']}e{arch[f'stage{i}.block{j}.expand']}" for j in range(arch[f"stage{i}.depth"]))
            for i in range(1, len(self.stages) + 1)
        )

    def decode(self, text: str) -> Arch:
        parts = text.strip().split("-")
        if len(parts) != len(self.stages):
            raise InvalidArchError(f"arch string {text!r} has {len(parts)} stages; this space has {len(self.stages)} (format: k3e4k5e6-k3e3-...)")
        arch: Arch = {}
        for i, part in enumerate(parts, start=1):
            blocks = _BLOCK_TOKEN.findall(part)
            if "".join(f"k{k}e{e}" for k, e in blocks) != part:
                raise InvalidArchError(f"stage {i} of arch string {text!r} is {part!r}; expected blocks like 'k3e4k5e6'")
            arch[f"stage{i}.depth"] = len(blocks)
            for j, (kernel, expand) in enumerate(blocks):
                arch[f"stage{i}.block{j}.kernel"], arch[f"stage{i}.block{j}.expand"] = int(kernel), int(expand)
        self.validate(arch)
        return arch

    # -- networks ------------------------------------------------------------------------------------------
    def feature_info(self, arch: Arch | None = None) -> list[FeatureInfo]:
        reduction, infos = 2, []
        for index, stage in enumerate(self.stages):
            reduction *= stage.stride
            if index in self.out_indices:
                infos.append(FeatureInfo(stage.channels, reduction))
        return infos

    def _stage_inputs(self) -> list[int]:
        return [self.stem_channels] + [s.channels for s in self.stages[:-1]]

    def build(self, arch: Arch) -> MBConvNet:
        self.validate(arch)
        stages = []
        for i, (stage, in_chs) in enumerate(zip(self.stages, self._stage_inputs(), strict=True), start=1):
            blocks = [
                MBConv(in_chs if j == 0 else stage.channels, stage.channels, stage.stride if j == 0 else 1,
                       arch[f"stage{i}.block{j}.kernel"], arch[f"stage{i}.block{j}.expand"])
                for j in range(arch[f"stage{i}.depth"])
            ]
            stages.append(nn.Sequential(*blocks))
        return MBConvNet(conv_bn_relu(self.in_channels, self.stem_channels, 3, 2), stages, self.out_indices)

    def supernet(self) -> MBConvSupernet:
        """A weight-sharing supernet over this space."""
        return MBConvSupernet(self)


class MBConvSupernet(nn.Module):
    """Once-for-All style supernet: the largest network, running the arch set by :meth:`activate`."""

    def __init__(self, space: MBConvSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = conv_bn_relu(space.in_channels, space.stem_channels, 3, 2)
        self.stages = nn.ModuleList(
            nn.ModuleList(
                ElasticMBConv(in_chs if j == 0 else stage.channels, stage.channels, stage.stride if j == 0 else 1,
                              max(space.kernels), max(space.expands))
                for j in range(max(stage.depths))
            )
            for stage, in_chs in zip(space.stages, space._stage_inputs(), strict=True)
        )
        self.arch = space.largest()
        self.activate(self.arch)

    def activate(self, arch: Arch) -> None:
        """Make ``arch`` the network this module computes (the only method that changes the active choice)."""
        self.space.validate(arch)
        for i, stage in enumerate(self.stages, start=1):
            for j in range(arch[f"stage{i}.depth"]):
                stage[j].kernel = arch[f"stage{i}.block{j}.kernel"]
                stage[j].expand = arch[f"stage{i}.block{j}.expand"]
        self.arch = dict(arch)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, stage in enumerate(self.stages):
            for block in stage[: self.arch[f"stage{i + 1}.depth"]]:
                x = block(x)
            if i in self.space.out_indices:
                features.append(x)
        return features

    def extract(self, arch: Arch) -> MBConvNet:
        """A plain static network for ``arch`` holding copies of the shared weights (the supernet is unchanged)."""
        previous = self.arch
        self.activate(arch)
        try:
            stem = conv_bn_relu(self.space.in_channels, self.space.stem_channels, 3, 2)
            stem.load_state_dict(self.stem.state_dict())
            stages = [nn.Sequential(*(block.extract() for block in stage[: arch[f"stage{i}.depth"]]))
                      for i, stage in enumerate(self.stages, start=1)]
        finally:
            self.activate(previous)
        net = MBConvNet(stem, stages, self.space.out_indices)
        net.train(self.training)
        return net
