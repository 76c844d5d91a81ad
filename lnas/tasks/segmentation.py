"""Semantic segmentation: a light FPN-style decoder over multi-scale features (Kirillov et al., CVPR 2019,
"Panoptic Feature Pyramid Networks", semantic branch, reduced to one fused level), pixel cross-entropy and mean IoU.

Masks hold a class index per pixel; :data:`~lnas.data.base.IGNORE_INDEX` marks pixels that count in neither loss nor metric.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

from lnas.data.base import IGNORE_INDEX
from lnas.spaces.base import FeatureInfo
from lnas.spaces.blocks import conv_bn_act
from lnas.tasks.base import ElasticLaterals, Task, TaskHead


class SegmentationHead(TaskHead):
    """Laterals to ``width`` channels, top-down sum (nearest upsampling) to the finest level, a depthwise-separable
    3x3 fuse, a 1x1 classifier, then bilinear upsampling of the logits to the image size."""

    def __init__(self, feature_info: Sequence[FeatureInfo], num_classes: int, width: int = 64) -> None:
        super().__init__()
        self.laterals = ElasticLaterals(feature_info, width)
        self.fuse = nn.Sequential(conv_bn_act(width, width, 3, groups=width), conv_bn_act(width, width, 1))
        self.classifier = nn.Conv2d(width, num_classes, 1)

    def forward(self, features: Sequence[torch.Tensor], network_size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
        levels = self.laterals(features)
        x = levels[-1]
        for lateral in reversed(levels[:-1]):
            x = lateral + F.interpolate(x, size=tuple(lateral.shape[-2:]), mode="nearest")
        logits = self.classifier(self.fuse(x))
        return F.interpolate(logits, size=tuple(image_size), mode="bilinear", align_corners=False)


class SegmentationTask(Task):
    """Logits (N, classes, H, W); cross-entropy ignoring :data:`IGNORE_INDEX`; metrics ``miou`` (primary, macro mean
    IoU over classes) and ``pixel_accuracy``."""

    name = "segmentation"
    primary_metric = "miou"

    def __init__(self, num_classes: int, head_width: int = 64) -> None:
        super().__init__(num_classes)
        if num_classes < 2:
            raise ValueError(f"segmentation needs num_classes >= 2 (background included), got {num_classes}")
        self.head_width = head_width

    def head(self, feature_info: Sequence[FeatureInfo]) -> SegmentationHead:
        return SegmentationHead(feature_info, self.num_classes, self.head_width)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, targets, ignore_index=IGNORE_INDEX)}

    def metrics(self) -> MetricCollection:
        return MetricCollection({
            "miou": MulticlassJaccardIndex(self.num_classes, average="macro", ignore_index=IGNORE_INDEX),
            "pixel_accuracy": MulticlassAccuracy(self.num_classes, average="micro", ignore_index=IGNORE_INDEX),
        })

    def postprocess(self, outputs: torch.Tensor, images: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """The class index of every pixel (N, H, W)."""
        return outputs.argmax(1)

    def describe_metric(self) -> str:
        return "mIoU"
