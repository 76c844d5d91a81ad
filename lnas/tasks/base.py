"""The task interface (DESIGN.md §3): what one vision task adds to a backbone that returns multi-scale features.

A :class:`Task` builds its head from the backbone's ``feature_info``, and gives the training loss, the loss that
label-using proxies differentiate, its torchmetrics (one of them primary, with its direction) and the postprocessing
of raw outputs. :class:`TaskModel` joins a backbone and a head into one plain module that exports to ONNX; with a
``resolution`` (an arch's input-resolution choice) it resizes its input inside the network, so training, latency and
the exported file all run the backbone at that resolution while inputs and outputs stay in the image's pixels.
"""

from __future__ import annotations

import copy
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import Metric, MetricCollection

from lnas.spaces.base import FeatureInfo
from lnas.spaces.blocks import conv_bn_act

Outputs = Any
"""Raw network outputs of a task (a tensor or a tuple of tensors; what the exported ONNX model returns)."""


class ElasticLaterals(nn.Module):
    """Per feature level a 1x1 conv → BatchNorm → ReLU to ``width`` channels.

    Built for the widest channels a supernet can give; a narrower feature uses the first input channels of the weights
    (Once-for-All slicing, as the elastic backbone does). :meth:`narrowed` gives the static laterals of one arch.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], width: int) -> None:
        super().__init__()
        self.units = nn.ModuleList(conv_bn_act(info.num_chs, width, 1) for info in feature_info)

    def forward(self, features: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        return [_lateral(unit, feature) for unit, feature in zip(self.units, features, strict=True)]

    def narrow_(self, feature_info: Sequence[FeatureInfo]) -> None:
        """Replace each conv by one taking exactly ``feature_info``'s channels (the first input channels of its weights)."""
        for unit, info in zip(self.units, feature_info, strict=True):
            conv = unit[0]
            if conv.in_channels != info.num_chs:
                narrow = nn.Conv2d(info.num_chs, conv.out_channels, 1, bias=False).to(conv.weight.device)
                narrow.weight.data.copy_(conv.weight.data[:, : info.num_chs])
                unit[0] = narrow


def _lateral(unit: nn.Sequential, feature: torch.Tensor) -> torch.Tensor:
    conv = unit[0]
    if feature.shape[1] == conv.in_channels:
        return unit(feature)
    return unit[2](unit[1](F.conv2d(feature, conv.weight[:, : feature.shape[1]])))


class TaskHead(nn.Module):
    """A head over the backbone's features. ``forward(features, network_size, image_size)``: ``network_size`` is the
    (H, W) the backbone ran at, ``image_size`` the (H, W) of the images given to the model.

    The feature levels it reads enter through ``self.laterals`` (:class:`ElasticLaterals`) or ``self.levels``
    (the indices of the backbone's outputs it reads, default all).
    """

    laterals: ElasticLaterals
    levels: ClassVar[slice] = slice(None)

    def narrowed(self, feature_info: Sequence[FeatureInfo]) -> TaskHead:
        """A copy for a backbone with exactly ``feature_info``'s channels (shared weights sliced)."""
        head = copy.deepcopy(self)
        head.laterals.narrow_(list(feature_info)[self.levels])
        return head


def resize(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """``images`` resized (bilinear) to ``resolution`` x ``resolution``; unchanged without a resolution or at that size."""
    if resolution is None or tuple(images.shape[-2:]) == (resolution, resolution):
        return images
    return F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False)


class TaskModel(nn.Module):
    """Backbone (a list of features) + task head: a plain module, free of lnas at run time except its layers."""

    def __init__(self, backbone: nn.Module, head: TaskHead, resolution: int | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.resolution = backbone, head, resolution

    def forward(self, images: torch.Tensor) -> Outputs:
        x = resize(images, self.resolution)
        return self.head(self.backbone(x), tuple(x.shape[-2:]), tuple(images.shape[-2:]))


class Task(ABC):
    """One vision task: head, losses, metrics and postprocessing for ``num_classes`` classes.

    Class attributes other code reads: ``name``, ``primary_metric`` (a key of :meth:`compute_metrics`) and
    ``higher_is_better`` (its direction). ``model`` arguments are the :class:`TaskModel` (or supernet module) that
    produced the outputs: heads and resolution define geometry some tasks need (detection's anchor points).
    """

    name: ClassVar[str]
    primary_metric: ClassVar[str]
    higher_is_better: ClassVar[bool] = True

    def __init__(self, num_classes: int) -> None:
        if num_classes < 1:
            raise ValueError(f"{self.name}: num_classes must be >= 1, got {num_classes}")
        self.num_classes = num_classes

    @abstractmethod
    def head(self, feature_info: Sequence[FeatureInfo]) -> TaskHead:
        """A freshly initialised head for a backbone with ``feature_info``."""

    @abstractmethod
    def loss(self, outputs: Outputs, targets: Any, images: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        """Training losses; ``"loss"`` is the total that is minimised, other keys are logged."""

    def proxy_loss(self, outputs: Outputs, targets: Any, images: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The loss label-using proxies (grad_norm, snip, grasp, fisher, zico) differentiate: the training loss."""
        return self.loss(outputs, targets, images, model)["loss"]

    @abstractmethod
    def metrics(self) -> Metric | MetricCollection:
        """Fresh torchmetrics state for one evaluation split."""

    @abstractmethod
    def postprocess(self, outputs: Outputs, images: torch.Tensor, model: nn.Module) -> Any:
        """Predictions from raw outputs, in the format the metrics take (also what an exported model's user does)."""

    def update_metrics(self, metrics: Metric | MetricCollection, outputs: Outputs, targets: Any, images: torch.Tensor, model: nn.Module) -> None:
        metrics.update(self.postprocess(outputs, images, model), targets)

    def compute_metrics(self, metrics: Metric | MetricCollection) -> dict[str, torch.Tensor]:
        """Metric name → value; includes :attr:`primary_metric`."""
        values = metrics.compute()
        return dict(values) if isinstance(values, Mapping) else {self.primary_metric: values}

    def describe_metric(self) -> str:
        """The primary metric's name as a report shows it (e.g. ``"top-1"``)."""
        return self.primary_metric
