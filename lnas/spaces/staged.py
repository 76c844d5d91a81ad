"""Stage-structured elastic spaces and their weight-sharing supernet (Once-for-All, Cai et al., ICLR 2020).

A network is a fixed stem, then stages. Each stage has an elastic depth and width multiplier; each of its blocks a
type and the choices of that type. Labels (stages count from 1, blocks from 0; block labels exist only for the
active blocks and their type, so one network has exactly one arch dict):

=================================  ===================================================================
``resolution``                      input resolution (only when the space is given ``resolutions``)
``stage{i}.depth``                  number of blocks
``stage{i}.width``                  multiplier of the stage's output channels (rounded to ``channel_divisor``)
``stage{i}.block{j}.type``          block type (see :mod:`lnas.spaces.blocks`), then that type's labels:
``stage{i}.block{j}.kernel``        ``mbconv``, ``ds``: depthwise kernel size
``stage{i}.block{j}.expand``        ``mbconv``: hidden/input channels; ``bottleneck``, ``basic``: hidden/output channels
``stage{i}.block{j}.se``            ``mbconv``, ``ds``: squeeze-excite on/off
=================================  ===================================================================

String form (timm-like, documented in :data:`BLOCK_TOKENS`): stages joined by ``-``, each ``w{width}`` followed by
one token per block; ``r{resolution}-`` in front when the space has resolutions. Example with two stages:
``w1k3e4k5e6s-w0.75rep`` (stage 1: width 1, two MBConv blocks, the second with SE; stage 2: width 0.75, one RepVGG block).
"""

from __future__ import annotations

import copy
import itertools
import math
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

import optuna
import torch
from timm.layers import make_divisible
from torch import nn

from lnas.spaces.arch import Arch, InvalidArchError, check_arch, choose, format_choice
from lnas.spaces.base import FeatureInfo, SearchSpace, Supernet
from lnas.spaces.blocks import ACTIVATIONS, BlockConfig, MBConv, ResidualBlock, conv_bn_act
from lnas.spaces.elastic import ElasticConvAct, ElasticMBConv, ElasticResidual
from lnas.spaces.parts import Part, tensor_input
from lnas.spaces.recalibrate import recalibrate_batchnorm
from lnas.spaces.repvgg import ElasticRepVGG, RepVGGBlock

BLOCK_TOKENS: dict[str, str] = {
    "mbconv": "k{kernel}e{expand}{se}",  # k3e4, k5e6s (s: with squeeze-excite)
    "ds": "d{kernel}{se}",               # d3, d3s
    "conv": "c",
    "repvgg": "rep",
    "bottleneck": "bt{expand}",          # bt0.25
    "basic": "bs{expand}",               # bs1
}
SCALED_DIMENSIONS = ("resolution", "depth", "width", "kernel", "expand")
"""The labels :meth:`StagedSpace.scalings` scales down: each has ordered choices where a smaller one costs less."""
FIXED_KERNELS = {"conv": 1, "repvgg": 3, "bottleneck": 3, "basic": 3}
RESIDUAL_KINDS = ("bottleneck", "basic")
_FIELD_PATTERNS = {"kernel": r"(?P<kernel>\d+)", "expand": r"(?P<expand>\d+(?:\.\d+)?)", "se": r"(?P<se>s?)"}
_WIDTH = re.compile(r"w(\d+(?:\.\d+)?)")


def _labels(kind: str) -> tuple[str, ...]:
    """The labels of a block of type ``kind`` besides ``type`` (the fields of its token)."""
    return tuple(re.findall(r"\{(\w+)\}", BLOCK_TOKENS[kind]))


_TOKEN_PATTERNS = {kind: re.compile(re.sub(r"\{(\w+)\}", lambda m: _FIELD_PATTERNS[m.group(1)], token)) for kind, token in BLOCK_TOKENS.items()}


@dataclass(frozen=True)
class SEStyle:
    """How a squeeze-excite layer is sized and gated (timm's MobileNetV3 and EfficientNet conventions differ)."""

    gate: str
    act: str | None  # None: the block's activation
    divisor: int | None  # None: Python round; else timm's make_divisible(·, divisor)
    from_expanded: bool  # reduction ratio of the expanded width (MobileNetV3) or of the block input (EfficientNet)
    ratio: float = 0.25

    def reduced(self, mid: int, expand: float) -> int:
        base = mid * self.ratio if self.from_expanded else mid * self.ratio / expand
        return make_divisible(base, self.divisor) if self.divisor else round(base)


SE_STYLES = {
    "mobilenetv3": SEStyle(gate="hard_sigmoid", act="relu", divisor=8, from_expanded=True),
    "efficientnet": SEStyle(gate="sigmoid", act=None, divisor=None, from_expanded=False),
}


@dataclass(frozen=True)
class StageSpec:
    """One stage: output channels (at width 1), stride of its first block, depth/type/kernel/expansion choices.

    ``default`` lists the blocks of the reference network (labels without their ``stage{i}.block{j}.`` prefix, e.g.
    ``{"type": "mbconv", "kernel": 3, "expand": 4, "se": False}``); empty: the middle choices.
    """

    channels: int
    stride: int
    depths: tuple[int, ...]
    types: tuple[str, ...]
    act: str
    kernels: tuple[int, ...]
    expands: tuple[float, ...]
    default: tuple[Mapping, ...] = ()


class StagedNet(nn.Module):
    """Static network of one arch: stem, stages of static blocks; returns the features of ``out_indices``."""

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


def static_block(cfg: BlockConfig) -> nn.Module:
    """A freshly initialised static block for ``cfg``."""
    if cfg.kind in ("mbconv", "ds"):
        return MBConv(cfg)
    if cfg.kind == "conv":
        return conv_bn_act(cfg.in_chs, cfg.out_chs, cfg.kernel, cfg.stride, act=cfg.act)
    if cfg.kind == "repvgg":
        return RepVGGBlock(cfg)
    return ResidualBlock(cfg)


def elastic_block(largest: BlockConfig, first: bool) -> nn.Module:
    """The elastic twin holding the weights of ``largest``; ``first``: the first block of its stage (may change shape)."""
    if largest.kind in RESIDUAL_KINDS:
        return ElasticResidual(largest, first)
    return {"mbconv": ElasticMBConv, "ds": ElasticMBConv, "conv": ElasticConvAct, "repvgg": ElasticRepVGG}[largest.kind](largest)


class StagedSpace(SearchSpace):
    """The space declaration (labels, choices, channel arithmetic); :class:`StagedSupernet` shares weights across it.

    Args:
        stages: one dict per stage: ``channels``, ``stride``, ``depths`` and optionally ``types``, ``act``,
            ``kernels``, ``expands`` (defaulting to the space-wide values below) and ``default`` (see :class:`StageSpec`).
        kernels, expands, block_types, act: space-wide choices and activation of the stages.
        widths: per-stage width multipliers; se: squeeze-excite choices (``[false, true]`` makes it searchable).
        se_style: ``mobilenetv3`` or ``efficientnet`` (see :data:`SE_STYLES`).
        stem_channels, stem_kernel, stem_stride, stem_pool: the fixed stem (conv of stride ``stem_stride`` → BN → act,
            then a 3x3/2 max-pool if ``stem_pool``); ``stem_stride=1`` keeps small inputs such as CIFAR's 32x32 at full size.
        out_indices: the stages whose outputs the network returns; resolutions: input resolutions to choose from.
        channel_divisor: channel counts are rounded with timm's ``make_divisible`` to multiples of this.
    """

    def __init__(
        self,
        stages: Sequence[Mapping],
        kernels: Sequence[int] = (3, 5, 7),
        expands: Sequence[float] = (3, 4, 6),
        widths: Sequence[float] = (1.0,),
        se: Sequence[bool] = (False,),
        block_types: Sequence[str] = ("mbconv",),
        act: str = "relu",
        se_style: str = "mobilenetv3",
        stem_channels: int = 16,
        stem_kernel: int = 3,
        stem_stride: int = 2,
        stem_pool: bool = False,
        in_channels: int = 3,
        out_indices: Sequence[int] = (1, 2, 3),
        resolutions: Sequence[int] | None = None,
        channel_divisor: int = 8,
    ) -> None:
        if not stages:
            raise ValueError("a staged space needs at least one stage")
        if se_style not in SE_STYLES:
            raise ValueError(f"unknown se_style {se_style!r}; allowed: {sorted(SE_STYLES)}")
        self.widths, self.se = tuple(float(w) for w in widths), tuple(bool(s) for s in se)
        if not self.widths or min(self.widths) <= 0:
            raise ValueError(f"widths must be positive multipliers, got {list(widths)}")
        self.se_style, self.channel_divisor = SE_STYLES[se_style], channel_divisor
        if stem_stride not in (1, 2):
            raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
        self.stem_channels, self.stem_kernel, self.stem_pool, self.in_channels = stem_channels, stem_kernel, stem_pool, in_channels
        self.stem_stride = stem_stride
        self.act = act
        self.stages = [self._stage(s, kernels, expands, block_types, act) for s in stages]
        self.out_indices = tuple(out_indices)
        bad = [i for i in self.out_indices if not 0 <= i < len(self.stages)]
        if bad:
            raise ValueError(f"out_indices {bad} are not stage indices 0..{len(self.stages) - 1}")
        self.resolutions = tuple(int(r) for r in resolutions) if resolutions else ()
        self.validate(self.default())

    @staticmethod
    def _stage(spec: Mapping, kernels: Sequence[int], expands: Sequence[float], block_types: Sequence[str], act: str) -> StageSpec:
        known = {"channels", "stride", "depths", "types", "act", "kernels", "expands", "default"}
        if set(spec) - known:
            raise ValueError(f"unknown stage keys {sorted(set(spec) - known)}; allowed: {sorted(known)}")
        stage = StageSpec(
            channels=int(spec["channels"]), stride=int(spec["stride"]), depths=tuple(int(d) for d in spec["depths"]),
            types=tuple(spec.get("types", block_types)), act=str(spec.get("act", act)),
            kernels=tuple(int(k) for k in spec.get("kernels", kernels)), expands=tuple(spec.get("expands", expands)),
            default=tuple(dict(block) for block in spec.get("default", ())),
        )
        if unknown := [t for t in stage.types if t not in BLOCK_TOKENS]:
            raise ValueError(f"unknown block types {unknown}; allowed: {sorted(BLOCK_TOKENS)}")
        if stage.act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {stage.act!r}; allowed: {sorted(ACTIVATIONS)}")
        if any(k % 2 == 0 for k in stage.kernels):
            raise ValueError(f"kernel sizes must be odd, got {list(stage.kernels)}")
        if not stage.depths or min(stage.depths) < 1:
            raise ValueError(f"stage depths must be >= 1, got {list(stage.depths)}")
        return stage

    # -- labels ------------------------------------------------------------------------------------------------
    def _choices(self, stage: StageSpec, name: str) -> tuple:
        return {"kernel": stage.kernels, "expand": stage.expands, "se": self.se}[name]

    def _walk(self, pick: Callable[[str, tuple], object]) -> tuple[Arch, dict[str, tuple]]:
        """Visit every label in canonical order; ``pick(label, choices)`` gives its value. Returns the arch and the allowed values."""
        arch: Arch = {}
        allowed: dict[str, tuple] = {}

        def take(label: str, choices: tuple):
            allowed[label] = choices
            arch[label] = pick(label, choices)
            return arch[label]

        if self.resolutions:
            take("resolution", self.resolutions)
        for i, stage in enumerate(self.stages, start=1):
            depth = take(f"stage{i}.depth", stage.depths)
            take(f"stage{i}.width", self.widths)
            for j in range(depth if depth in stage.depths else 0):
                kind = take(f"stage{i}.block{j}.type", stage.types)
                for name in _labels(kind) if kind in stage.types else ():
                    take(f"stage{i}.block{j}.{name}", self._choices(stage, name))
        return arch, allowed

    def allowed(self, arch: Arch) -> dict[str, tuple]:
        """Label → allowed values, for the blocks that ``arch``'s depths and block types make active."""
        return self._walk(lambda label, choices: arch.get(label))[1]

    def validate(self, arch: Arch) -> None:
        check_arch(arch, self.allowed(arch))

    def size(self) -> int:
        total = max(len(self.resolutions), 1)
        for stage in self.stages:
            per_block = sum(math.prod(len(self._choices(stage, name)) for name in _labels(kind)) for kind in stage.types)
            total *= len(self.widths) * sum(per_block**depth for depth in stage.depths)
        return total

    def sample(self, generator: torch.Generator) -> Arch:
        return self._walk(lambda label, choices: choose(choices, generator))[0]

    def suggest(self, trial: optuna.trial.BaseTrial) -> Arch:
        return self._walk(lambda label, choices: trial.suggest_categorical(label, list(choices)))[0]

    def mutate(self, arch: Arch, generator: torch.Generator) -> Arch:
        self.validate(arch)
        allowed = self.allowed(arch)
        mutable = [label for label, values in allowed.items() if len(values) > 1]
        if not mutable:
            raise InvalidArchError("this space has a single candidate; nothing to mutate")
        target = choose(mutable, generator)
        new_value = choose([v for v in allowed[target] if v != arch[target]], generator)

        def pick(label: str, choices: tuple):
            if label == target:
                return new_value
            return arch[label] if label in arch and arch[label] in choices else choose(choices, generator)

        return self._walk(pick)[0]

    def scalings(self, arch: Arch) -> list[Arch]:
        """Every combination of steps down in the ordered dimensions (:data:`SCALED_DIMENSIONS`): ``s`` steps down in a
        dimension move each of its labels ``s`` choices lower in that label's sorted choices (not below the smallest),
        in every stage and block alike, so a uniform arch stays uniform. Block types and SE are kept."""
        self.validate(arch)
        allowed = self.allowed(arch)

        def dimension(label: str) -> str:
            name = label.rsplit(".", 1)[-1]
            return name if name in SCALED_DIMENSIONS else ""

        def lower(label: str, choices: tuple):
            ordered = sorted(choices)
            return ordered[max(ordered.index(arch[label]) - step_of.get(dimension(label), 0), 0)]

        present = sorted({dimension(label) for label in arch} - {""}, key=SCALED_DIMENSIONS.index)
        most = {name: max(sorted(allowed[label]).index(arch[label]) for label in arch if dimension(label) == name) for name in present}
        seen, result = {self.encode(arch)}, []
        for steps in itertools.product(*(range(most[name] + 1) for name in present)):
            step_of = dict(zip(present, steps, strict=True))
            scaled = self._walk(lower)[0]  # scaling down never adds a block, so every label is one of arch's
            key = self.encode(scaled)
            if key not in seen:
                seen.add(key)
                result.append(scaled)
        return result

    def default(self) -> Arch:
        """The stages' ``default`` blocks where given; elsewhere the middle depth, kernel and expansion, the width
        closest to 1, the first block type and SE choice, and the largest resolution."""
        given: dict[str, object] = {}
        for i, stage in enumerate(self.stages, start=1):
            if stage.default:
                given[f"stage{i}.depth"] = len(stage.default)
            for j, block in enumerate(stage.default):
                given.update({f"stage{i}.block{j}.{name}": value for name, value in block.items()})

        def pick(label: str, choices: tuple):
            if label in given:
                return given[label]
            name = label.rsplit(".", 1)[-1]
            if name in ("type", "se"):
                return choices[0]
            if name == "width":
                return min(choices, key=lambda w: abs(w - 1.0))
            if name == "resolution":
                return max(choices)
            return sorted(choices)[len(choices) // 2]

        return self._walk(pick)[0]

    # -- string form -------------------------------------------------------------------------------------------
    def encode(self, arch: Arch) -> str:
        self.validate(arch)
        parts = [f"r{arch['resolution']}"] if self.resolutions else []
        for i in range(1, len(self.stages) + 1):
            tokens = [f"w{format_choice(arch[f'stage{i}.width'])}"]
            for j in range(arch[f"stage{i}.depth"]):
                prefix = f"stage{i}.block{j}"
                kind = arch[f"{prefix}.type"]
                fields = {name: arch[f"{prefix}.{name}"] for name in _labels(kind)}
                tokens.append(BLOCK_TOKENS[kind].format(**{k: ("s" if v else "") if k == "se" else format_choice(v) for k, v in fields.items()}))
            parts.append("".join(tokens))
        return "-".join(parts)

    @staticmethod
    def _lookup(label: str, text: str, choices: tuple):
        for choice in choices:
            if format_choice(choice) == text:
                return choice
        raise InvalidArchError(f"arch label {label!r} = {text!r} is not one of the allowed values {list(choices)}")

    def decode(self, text: str) -> Arch:
        parts = text.strip().split("-")
        expected = len(self.stages) + bool(self.resolutions)
        if len(parts) != expected:
            raise InvalidArchError(f"arch string {text!r} has {len(parts)} '-'-separated parts; this space needs {expected} "
                                   f"({'r<resolution>, then ' if self.resolutions else ''}one per stage, e.g. 'w1k3e4k5e6s')")
        arch: Arch = {}
        if self.resolutions:
            found = re.fullmatch(r"r(\d+)", parts[0])
            if not found:
                raise InvalidArchError(f"arch string {text!r} must start with the resolution, e.g. 'r{self.resolutions[0]}-'")
            arch["resolution"] = self._lookup("resolution", found.group(1), self.resolutions)
            parts = parts[1:]
        for i, (stage, part) in enumerate(zip(self.stages, parts, strict=True), start=1):
            found = _WIDTH.match(part)
            if not found:
                raise InvalidArchError(f"stage {i} of arch string {text!r} is {part!r}; it must start with its width, e.g. 'w1' or 'w0.75'")
            arch[f"stage{i}.width"] = self._lookup(f"stage{i}.width", found.group(1), self.widths)
            position, j = found.end(), 0
            while position < len(part):
                kind, block = next(((kind, m) for kind in stage.types if (m := _TOKEN_PATTERNS[kind].match(part, position))), (None, None))
                if block is None:
                    raise InvalidArchError(f"stage {i} of arch string {text!r}: cannot read a block at {part[position:]!r}; "
                                           f"blocks of this stage look like {[BLOCK_TOKENS[t] for t in stage.types]}")
                prefix = f"stage{i}.block{j}"
                arch[f"{prefix}.type"] = kind
                for name, raw in block.groupdict().items():
                    arch[f"{prefix}.{name}"] = raw == "s" if name == "se" else self._lookup(f"{prefix}.{name}", raw, self._choices(stage, name))
                position, j = block.end(), j + 1
            arch[f"stage{i}.depth"] = j
        self.validate(arch)
        return self._walk(lambda label, choices: arch[label])[0]

    # -- channel arithmetic ------------------------------------------------------------------------------------
    def stage_channels(self, index: int, width: float) -> int:
        """Output channels of stage ``index`` (0-based) at width multiplier ``width``."""
        return make_divisible(self.stages[index].channels * width, self.channel_divisor)

    def _block_config(self, stage: StageSpec, kind: str, in_chs: int, out_chs: int, stride: int, values: Mapping) -> BlockConfig:
        expand = values.get("expand", 1)
        if kind == "mbconv":
            mid = make_divisible(in_chs * expand, self.channel_divisor)
        elif kind in RESIDUAL_KINDS:
            mid = make_divisible(out_chs * expand, self.channel_divisor)
        else:
            mid = in_chs if kind == "ds" else out_chs
        se_rd = self.se_style.reduced(mid, expand) if values.get("se") else 0
        return BlockConfig(kind, in_chs, out_chs, stride, values.get("kernel", FIXED_KERNELS.get(kind)), mid, stage.act, se_rd,
                           self.se_style.act or stage.act, self.se_style.gate)

    def plan(self, arch: Arch) -> list[list[BlockConfig]]:
        """The :class:`BlockConfig` of every active block of ``arch``, stage by stage."""
        self.validate(arch)
        in_chs, plan = self.stem_channels, []
        for i, stage in enumerate(self.stages):
            out_chs = self.stage_channels(i, arch[f"stage{i + 1}.width"])
            blocks = []
            for j in range(arch[f"stage{i + 1}.depth"]):
                prefix = f"stage{i + 1}.block{j}"
                kind = arch[f"{prefix}.type"]
                values = {name: arch[f"{prefix}.{name}"] for name in _labels(kind)}
                blocks.append(self._block_config(stage, kind, in_chs if j == 0 else out_chs, out_chs, stage.stride if j == 0 else 1, values))
            plan.append(blocks)
            in_chs = out_chs
        return plan

    def largest_block(self, index: int, position: int, kind: str) -> BlockConfig:
        """Elementwise largest :class:`BlockConfig` a block of type ``kind`` at stage ``index``, ``position`` can take."""
        stage = self.stages[index]
        outs = [self.stage_channels(index, w) for w in self.widths]
        if position > 0:
            ins = outs
        else:
            ins = [self.stage_channels(index - 1, w) for w in self.widths] if index > 0 else [self.stem_channels]
        names = _labels(kind)
        configs = [self._block_config(stage, kind, a, b, stage.stride if position == 0 else 1, dict(zip(names, values, strict=True)))
                   for a in ins for b in outs for values in itertools.product(*(self._choices(stage, name) for name in names))]
        return BlockConfig(kind, max(c.in_chs for c in configs), max(c.out_chs for c in configs), configs[0].stride,
                           max(c.kernel for c in configs), max(c.mid for c in configs), stage.act, max(c.se_rd for c in configs),
                           configs[0].se_act, configs[0].se_gate)

    # -- networks ----------------------------------------------------------------------------------------------
    def feature_info(self, arch: Arch | None = None) -> list[FeatureInfo]:
        """Channels and reduction of each output; without ``arch``, the supernet's (largest) channels."""
        reduction, infos = self.stem_stride * (2 if self.stem_pool else 1), []
        for index, stage in enumerate(self.stages):
            reduction *= stage.stride
            if index in self.out_indices:
                width = max(self.widths) if arch is None else arch[f"stage{index + 1}.width"]
                infos.append(FeatureInfo(self.stage_channels(index, width), reduction))
        return infos

    def stem(self) -> nn.Sequential:
        """A freshly initialised stem: conv (stride ``stem_stride``) → BatchNorm → activation [→ 3x3/2 max-pool]."""
        stem = conv_bn_act(self.in_channels, self.stem_channels, self.stem_kernel, self.stem_stride, act=self.act)
        if self.stem_pool:
            stem.append(nn.MaxPool2d(3, 2, 1))
        return stem

    def parts(self, arch: Arch, input_shape: tuple[int, int, int]) -> list[Part]:
        """The stem at the arch's resolution, then every block at its input shape (keyed by its config and shape)."""
        height, width = (arch["resolution"],) * 2 if self.resolutions else tuple(input_shape[1:])
        parts = [Part(("stem", self.in_channels, self.stem_stride, height, width), self.stem, tensor_input((self.in_channels, height, width)))]
        height, width = -(-height // self.stem_stride), -(-width // self.stem_stride)
        if self.stem_pool:
            height, width = -(-height // 2), -(-width // 2)
        for blocks in self.plan(arch):
            for cfg in blocks:
                parts.append(Part(("block", cfg, height, width), lambda cfg=cfg: static_block(cfg), tensor_input((cfg.in_chs, height, width))))
                height, width = -(-height // cfg.stride), -(-width // cfg.stride)
        return parts

    def build(self, arch: Arch) -> StagedNet:
        stages = [nn.Sequential(*(static_block(cfg) for cfg in blocks)) for blocks in self.plan(arch)]
        return StagedNet(self.stem(), stages, self.out_indices)

    def supernet(self) -> StagedSupernet:
        """A weight-sharing supernet over this space."""
        return StagedSupernet(self)


class MBConvSpace(StagedSpace):
    """The elastic MBConv space of ``conf/space/mbconv.yaml``: a :class:`StagedSpace` whose blocks default to MBConv."""


class StagedSupernet(Supernet):
    """Once-for-All style supernet: the largest weights of every block type at every position.

    :meth:`activate` is the only method that changes what the module computes; the active arch and its block
    configs live here (not scattered over the layers), and :meth:`extract` never changes them.
    """

    def __init__(self, space: StagedSpace) -> None:
        super().__init__()
        self.space = space
        self.stem = space.stem()
        self.blocks = nn.ModuleList(
            nn.ModuleList(
                nn.ModuleDict({kind: elastic_block(space.largest_block(i, j, kind), first=j == 0) for kind in stage.types})
                for j in range(max(stage.depths))
            )
            for i, stage in enumerate(space.stages)
        )
        self.activate(space.default())

    def activate(self, arch: Arch) -> None:
        """Make ``arch`` the network this module computes."""
        self.plan = self.space.plan(arch)
        self.arch = dict(arch)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        x = self.stem(x)
        features = []
        for i, blocks in enumerate(self.plan):
            for j, cfg in enumerate(blocks):
                x = self.blocks[i][j][cfg.kind](x, cfg)
            if i in self.space.out_indices:
                features.append(x)
        return features

    def extract(self, arch: Arch, calibration_batches: Iterable | None = None) -> StagedNet:
        """A plain static network for ``arch`` holding copies of the shared weights (the active arch is unchanged).

        With ``calibration_batches`` (input tensors, or tuples whose first item is one), its BatchNorm statistics are
        re-estimated on them (:func:`~lnas.spaces.recalibrate.recalibrate_batchnorm`) instead of inherited.
        """
        stages = [nn.Sequential(*(self.blocks[i][j][cfg.kind].extract(cfg) for j, cfg in enumerate(blocks)))
                  for i, blocks in enumerate(self.space.plan(arch))]
        net = StagedNet(copy.deepcopy(self.stem), stages, self.space.out_indices)
        if calibration_batches is not None:
            recalibrate_batchnorm(net, calibration_batches)
        net.train(self.training)
        return net
