"""Object detection: FCOS head and loss (Tian et al., ICCV 2019), COCO mAP via torchmetrics (pycocotools backend)."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from lnas.spaces.base import FeatureInfo
from lnas.tasks.base import Task
from lnas.tasks.detection.head import FCOSHead, Outputs, anchor_points, postprocess
from lnas.tasks.detection.loss import fcos_loss

DetectionTargets = list[dict[str, torch.Tensor]]


def points_of(model: nn.Module, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Anchor points and their strides for ``images`` through ``model`` (its head's strides, its ``resolution``)."""
    return anchor_points(tuple(images.shape[-2:]), model.head.strides, images.device, model.resolution)


class DetectionTask(Task):
    """Outputs (class logits, box distances, centerness logits); targets per image ``{"boxes": xyxy, "labels"}``;
    metrics ``map`` (primary, COCO mAP@[.5:.95]) and ``map_50``."""

    name = "detection"
    primary_metric = "map"

    def __init__(self, num_classes: int, head_width: int = 64, tower_depth: int = 2) -> None:
        super().__init__(num_classes)
        self.head_width, self.tower_depth = head_width, tower_depth

    def head(self, feature_info: Sequence[FeatureInfo]) -> FCOSHead:
        return FCOSHead(feature_info, self.num_classes, self.head_width, self.tower_depth)

    def loss(self, outputs: Outputs, targets: DetectionTargets, images: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        return fcos_loss(outputs, targets, *points_of(model, images))

    def metrics(self) -> MeanAveragePrecision:
        return MeanAveragePrecision(box_format="xyxy", backend="pycocotools")

    def postprocess(self, outputs: Outputs, images: torch.Tensor, model: nn.Module) -> DetectionTargets:
        """Boxes, scores and labels per image after decoding and class-wise NMS."""
        return postprocess(outputs, points_of(model, images)[0], tuple(images.shape[-2:]))

    def compute_metrics(self, metrics: MeanAveragePrecision) -> dict[str, torch.Tensor]:
        result = metrics.compute()
        return {"map": result["map"], "map_50": result["map_50"]}

    def describe_metric(self) -> str:
        return "mAP"
