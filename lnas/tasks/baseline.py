"""The user's baseline as a task model: a timm backbone with ``features_only`` plus the task's head.

``timm.create_model(name, pretrained=False, features_only=True, out_indices=...)`` gives the deepest
``num_levels`` feature levels; the head sizes itself from their ``feature_info`` exactly as it does for a candidate.
Nothing is downloaded: the baseline is trained from scratch with the same final recipe as the pick.
"""

from __future__ import annotations

import difflib

import torch
from torch import nn

from lnas.spaces.base import FeatureInfo
from lnas.tasks.base import Task, TaskModel

MULTI_SCALE_TASKS = frozenset({"detection", "segmentation"})


class BaselineError(ValueError):
    """A baseline name that timm does not know, or a model that cannot serve the task."""


def _timm_name(name: str) -> str:
    import timm

    known = timm.list_models()
    if name not in known:
        close = difflib.get_close_matches(name, known, n=5, cutoff=0.6)
        raise BaselineError(f"unknown timm model {name!r} for baseline=; close names: {close or 'none'} "
                            f"(all names: timm.list_models(), e.g. resnet18, mobilenetv3_large_100, efficientnet_b0)")
    return name


def timm_features(name: str, num_levels: int, in_channels: int = 3) -> tuple[nn.Module, list[FeatureInfo]]:
    """A freshly initialised timm backbone returning its deepest ``num_levels`` feature levels, and their feature info."""
    import timm

    try:
        probe = timm.create_model(_timm_name(name), pretrained=False, features_only=True, in_chans=in_channels)
    except (RuntimeError, ValueError, TypeError, AssertionError) as error:
        raise BaselineError(f"timm model {name!r} cannot give multi-scale features (features_only=True): {error}") from error
    available = len(probe.feature_info)
    if available < num_levels:
        raise BaselineError(f"timm model {name!r} gives {available} feature levels; the task needs {num_levels}")
    indices = tuple(range(available - num_levels, available))
    backbone = timm.create_model(name, pretrained=False, features_only=True, in_chans=in_channels, out_indices=indices)
    info = backbone.feature_info
    return backbone, [FeatureInfo(c, r) for c, r in zip(info.channels(), info.reduction(), strict=True)]


def timm_baseline(name: str, task: Task, input_shape: tuple[int, int, int], num_levels: int) -> TaskModel:
    """``name``'s backbone with ``task``'s head, checked by one forward pass at ``input_shape`` (C, H, W)."""
    backbone, feature_info = timm_features(name, num_levels, input_shape[0])
    reductions = [info.reduction for info in feature_info]
    if task.name in MULTI_SCALE_TASKS and len(set(reductions)) < len(reductions):
        raise BaselineError(f"timm model {name!r} gives features at reductions {reductions}; {task.name} needs distinct scales "
                            f"(a convolutional backbone such as resnet18, mobilenetv3_large_100 or efficientnet_b0)")
    model = TaskModel(backbone, task.head(feature_info))
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, *input_shape))
    except (RuntimeError, AssertionError, ValueError) as error:
        raise BaselineError(f"timm model {name!r} does not run on inputs of shape {list(input_shape)}: {error}") from error
    return model.train()
