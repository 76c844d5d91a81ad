"""Spaces centred on the user's timm baseline: ``default()`` is the baseline itself, with smaller and larger choices around it.

The baseline is read from the network timm builds from its own architecture definitions
(``timm.create_model(name, pretrained=False)``): stage by stage, each block's type, channels, stride, kernel,
expansion, activation and squeeze-excite. Supported families: MobileNetV3 and EfficientNet (timm's
``_efficientnet_builder`` blocks ``ds``, ``ir``, ``cn``) and ResNet (``BasicBlock``/``Bottleneck`` with the plain stem).

Around the baseline: every stage's depth moves by ``depth_offsets`` and its width by the multipliers ``widths``; every
block may take any kernel of ``kernels`` and expansion of ``expands`` (each stage also keeps its baseline values) and
squeeze-excite on or off. The built ``default()`` network has the same layers as timm's ``features_only`` model of
the baseline (the parameter counts are compared in the tests).
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
from timm.layers import make_divisible
from timm.models import _efficientnet_blocks as effnet_blocks
from timm.models.efficientnet import EfficientNet
from timm.models.mobilenetv3 import MobileNetV3
from timm.models.resnet import BasicBlock, Bottleneck, ResNet
from torch import nn

from lnas.spaces.blocks import ACTIVATIONS
from lnas.spaces.staged import SE_STYLES, StagedSpace

_RESNET_EXPANDS = {"bottleneck": (0.2, 0.25, 0.35), "basic": (0.75, 1.0, 1.25)}  # OFA-ResNet's bottleneck ratios


def _act_name(module: nn.Module) -> str:
    for name, cls in ACTIVATIONS.items():
        if type(module) is cls:
            return name
    raise ValueError(f"activation {type(module).__name__} is not supported; supported: {[c.__name__ for c in ACTIVATIONS.values()]}")


def _check_conv(conv: nn.Module, where: str) -> nn.Conv2d:
    if type(conv) is not nn.Conv2d or conv.padding != (conv.kernel_size[0] // 2,) * 2 or conv.dilation != (1, 1):
        raise ValueError(f"{where}: {type(conv).__name__} {conv} is not a plain symmetric-padded conv (TF 'same' padding and "
                         "dilation are not supported; use the non-tf_ variant)")
    return conv


def _expand_ratio(numerator: int, denominator: int, where: str) -> float:
    """The 2-decimal ratio whose ``make_divisible`` reproduces ``numerator`` (timm arch strings use such ratios, e.g. e2.3)."""
    ratio = round(numerator / denominator, 2)
    if make_divisible(denominator * ratio, 8) != numerator:
        raise ValueError(f"{where}: no 2-decimal ratio reproduces {numerator} channels from {denominator}")
    return ratio


def _mbconv_block(block: nn.Module, where: str) -> dict:
    """One timm EfficientNet-family block as ``{type, in, out, stride, act, kernel, expand, se, se_obs}``."""
    if type(block) is effnet_blocks.InvertedResidual:
        if block.conv_s2d is not None or _check_conv(block.conv_pw, where).kernel_size != (1, 1):
            raise ValueError(f"{where}: space-to-depth and non-1x1 expansion convs are not supported")
        dw, in_chs, mid, out = _check_conv(block.conv_dw, where), block.conv_pw.in_channels, block.conv_pw.out_channels, block.conv_pwl.out_channels
        info = {"type": "mbconv", "expand": _expand_ratio(mid, in_chs, where)}
    elif type(block) is effnet_blocks.DepthwiseSeparableConv:
        if block.has_pw_act or block.conv_s2d is not None:
            raise ValueError(f"{where}: depthwise-separable blocks with a point-wise activation or space-to-depth are not supported")
        dw, in_chs, out = _check_conv(block.conv_dw, where), block.conv_dw.in_channels, block.conv_pw.out_channels
        mid, info = in_chs, {"type": "ds", "expand": 1.0}
    elif type(block) is effnet_blocks.ConvBnAct:
        conv = _check_conv(block.conv, where)
        if conv.kernel_size != (1, 1) or block.has_skip:
            raise ValueError(f"{where}: only 1x1 conv blocks without skip are supported, got {conv}")
        return {"type": "conv", "in": conv.in_channels, "out": conv.out_channels, "stride": conv.stride[0], "act": _act_name(block.bn1.act)}
    else:
        raise ValueError(f"{where}: timm block {type(block).__name__} is not supported; "
                         "supported: InvertedResidual, DepthwiseSeparableConv, ConvBnAct")
    if dw.groups != mid or block.has_skip != (dw.stride[0] == 1 and in_chs == out):
        raise ValueError(f"{where}: grouped (non-depthwise) convs and blocks without their residual are not supported")
    se = block.se if not isinstance(block.se, nn.Identity) else None
    info.update({"in": in_chs, "out": out, "stride": dw.stride[0], "act": _act_name(block.bn1.act), "kernel": dw.kernel_size[0],
                 "se": se is not None})
    if se is not None:
        info["se_obs"] = (se.conv_reduce.out_channels, mid, info["expand"], _act_name(se.gate), _act_name(se.act1))
    return info


def _se_style(blocks: Sequence[dict]) -> str:
    """The :data:`SE_STYLES` entry reproducing every observed squeeze-excite (reduced width, gate, activation)."""
    observed = [(b["se_obs"], b["act"]) for b in blocks if "se_obs" in b]
    for name, style in SE_STYLES.items():
        if all(style.reduced(mid, expand) == rd and style.gate == gate and (style.act or act) == se_act
               for (rd, mid, expand, gate, se_act), act in observed):
            return name
    if not observed:
        return "mobilenetv3"
    raise ValueError(f"the baseline's squeeze-excite layers match none of the supported styles {sorted(SE_STYLES)}")


def _stage(blocks: Sequence[dict], where: str, depth_offsets: Sequence[int], kernels: Sequence[int], expands: Sequence[float],
           extra_types: Sequence[str]) -> dict:
    """A ``stages`` entry of :class:`StagedSpace` whose ``default`` is the baseline stage ``blocks``."""
    first = blocks[0]
    uniform = all(b["out"] == first["out"] and b["act"] == first["act"] and b["type"] == first["type"] for b in blocks)
    if not uniform or any(b["stride"] != 1 for b in blocks[1:]):
        raise ValueError(f"{where}: a stage must keep one block type, width and activation, and stride only in its first block")
    kind = first["type"]
    labels = {"mbconv": ("kernel", "expand", "se"), "ds": ("kernel", "se"), "conv": (), "bottleneck": ("expand",), "basic": ("expand",)}[kind]
    stage = {"channels": first["out"], "stride": first["stride"], "act": first["act"],
             "types": [kind, *(t for t in extra_types if kind in ("mbconv", "bottleneck", "basic"))],
             "depths": [len(blocks)] if kind == "conv" else sorted({max(1, len(blocks) + offset) for offset in depth_offsets}),
             "default": [{"type": kind, **{name: b[name] for name in labels}} for b in blocks]}
    if "kernel" in labels:
        stage["kernels"] = sorted(set(kernels) | {b["kernel"] for b in blocks})
    if "expand" in labels:
        stage["expands"] = sorted(set(expands) | {b["expand"] for b in blocks})
    return stage


def _default_out_indices(stages: Sequence[dict], stem_reduction: int, levels: int = 3) -> list[int]:
    """The last stage of each of the ``levels`` deepest reductions (timm's ``feature_info`` "bottleneck" locations)."""
    reduction, last_of = stem_reduction, {}
    for index, stage in enumerate(stages):
        reduction *= stage["stride"]
        last_of[reduction] = index
    return sorted(last_of.values())[-levels:]


def _efficientnet_family(model: nn.Module, name: str, **choices) -> dict:
    stem = _check_conv(model.conv_stem, f"{name}.conv_stem")
    if stem.stride != (2, 2) or model.bn1.eps != 1e-5:
        raise ValueError(f"{name}: only a stride-2 stem and BatchNorm eps 1e-5 are supported (got {stem.stride}, eps {model.bn1.eps})")
    stages, all_blocks = [], []
    for i, timm_stage in enumerate(model.blocks):
        blocks = [_mbconv_block(block, f"{name}.blocks.{i}.{j}") for j, block in enumerate(timm_stage)]
        all_blocks += blocks
        stages.append(_stage(blocks, f"{name}.blocks.{i}", choices["depth_offsets"], choices["kernels"], choices["expands"] or (3, 4, 6),
                             choices["block_types"]))
    se = sorted(set(choices["se"]) | {b.get("se", False) for b in all_blocks})
    return {"stages": stages, "stem_channels": stem.out_channels, "stem_kernel": stem.kernel_size[0], "stem_pool": False,
            "act": _act_name(model.bn1.act), "se_style": _se_style(all_blocks), "se": se}


def _resnet_block(block: nn.Module, where: str) -> dict:
    if type(block) not in (BasicBlock, Bottleneck) or block.se is not None or not isinstance(block.aa, nn.Identity):
        raise ValueError(f"{where}: only plain timm BasicBlock/Bottleneck blocks are supported (no SE, anti-aliasing), got {type(block).__name__}")
    convs = [block.conv1, block.conv2] + ([block.conv3] if type(block) is Bottleneck else [])
    if any(_check_conv(c, where).groups != 1 for c in convs):
        raise ValueError(f"{where}: grouped convs (ResNeXt) are not supported")
    downsample = block.downsample
    if downsample is not None and not (isinstance(downsample, nn.Sequential) and len(downsample) == 2 and type(downsample[0]) is nn.Conv2d
                                       and downsample[0].kernel_size == (1, 1)):
        raise ValueError(f"{where}: only 1x1-conv downsampling is supported (not avg-down 'd' variants)")
    kind, strided = ("bottleneck", block.conv2) if type(block) is Bottleneck else ("basic", block.conv1)
    in_chs, mid, out = block.conv1.in_channels, block.conv1.out_channels, convs[-1].out_channels
    if (downsample is None) != (strided.stride[0] == 1 and in_chs == out) or strided.kernel_size != (3, 3):
        raise ValueError(f"{where}: expected 3x3 convs and a shortcut exactly when the shape changes")
    return {"type": kind, "in": in_chs, "out": out, "stride": strided.stride[0], "act": _act_name(block.act1),
            "expand": _expand_ratio(mid, out, where)}


def _resnet_family(model: ResNet, name: str, **choices) -> dict:
    stem = model.conv1
    if type(stem) is not nn.Conv2d or stem.stride != (2, 2) or not isinstance(model.maxpool, nn.MaxPool2d | nn.Identity):
        raise ValueError(f"{name}: only the plain ResNet stem (one stride-2 conv, optional max-pool) is supported, not deep stems")
    _check_conv(stem, f"{name}.conv1")
    stages = []
    for i in range(1, 5):
        blocks = [_resnet_block(block, f"{name}.layer{i}.{j}") for j, block in enumerate(getattr(model, f"layer{i}"))]
        stages.append(_stage(blocks, f"{name}.layer{i}", choices["depth_offsets"], (), choices["expands"] or _RESNET_EXPANDS[blocks[0]["type"]],
                             choices["block_types"]))
    return {"stages": stages, "stem_channels": stem.out_channels, "stem_kernel": stem.kernel_size[0],
            "stem_pool": isinstance(model.maxpool, nn.MaxPool2d), "act": _act_name(model.act1), "se": [False]}


def timm_space(
    model_name: str,
    widths: Sequence[float] = (0.75, 1.0, 1.25),
    depth_offsets: Sequence[int] = (-1, 0, 1),
    kernels: Sequence[int] = (3, 5, 7),
    expands: Sequence[float] | None = None,
    se: Sequence[bool] = (False, True),
    block_types: Sequence[str] = (),
    out_indices: Sequence[int] | None = None,
    resolutions: Sequence[int] | None = None,
) -> StagedSpace:
    """An elastic :class:`StagedSpace` centred on timm's ``model_name`` (its ``default()`` is the baseline).

    Args:
        model_name: a timm model of the MobileNetV3/EfficientNet family (e.g. ``mobilenetv3_large_100``,
            ``efficientnet_b0``) or of the ResNet family (e.g. ``resnet18``, ``resnet50``).
        widths: per-stage width multipliers (1.0 is the baseline).
        depth_offsets: each stage's depth choices are its baseline depth plus these (at least 1).
        kernels, expands: per-block choices added to the baseline's own values (``expands`` defaults to 3/4/6 for
            MBConv blocks and to hidden/output ratios 0.2/0.25/0.35 (bottleneck) or 0.75/1/1.25 (basic) for ResNets).
        se: squeeze-excite choices of MBConv-family blocks (the baseline's value is always allowed).
        block_types: extra block types offered in MBConv and ResNet stages (e.g. ``["repvgg"]``).
        out_indices: output stages (default: the last stage of each of the three deepest reductions, strides 8/16/32).
        resolutions: input resolutions to choose from (none by default).
    """
    model = timm.create_model(model_name, pretrained=False)
    choices = {"depth_offsets": tuple(depth_offsets), "kernels": tuple(kernels), "expands": tuple(expands) if expands else None,
               "se": tuple(se), "block_types": tuple(block_types)}
    if isinstance(model, MobileNetV3 | EfficientNet):
        spec = _efficientnet_family(model, model_name, **choices)
    elif isinstance(model, ResNet):
        spec = _resnet_family(model, model_name, **choices)
    else:
        raise ValueError(f"timm model {model_name!r} ({type(model).__name__}) is not supported; supported families: MobileNetV3, "
                         "EfficientNet (timm.models.mobilenetv3 / efficientnet) and ResNet (timm.models.resnet)")
    stem_reduction = 4 if spec["stem_pool"] else 2
    return StagedSpace(widths=widths, out_indices=out_indices if out_indices is not None else _default_out_indices(spec["stages"], stem_reduction),
                       resolutions=resolutions, **spec)
