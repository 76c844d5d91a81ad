"""Image classification: a pooled linear head over the deepest features, cross-entropy, top-1 and top-k accuracy."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torchmetrics import MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from lnas.spaces.base import FeatureInfo
from lnas.tasks.base import ElasticLaterals, Task, TaskHead


class ClassifierHead(TaskHead):
    """The deepest feature → 1x1 conv-BN-ReLU to ``width`` → global average pooling → dropout → linear (MobileNetV3's head)."""

    levels: ClassVar[slice] = slice(-1, None)

    def __init__(self, feature_info: Sequence[FeatureInfo], num_classes: int, width: int = 256, dropout: float = 0.0) -> None:
        super().__init__()
        self.laterals = ElasticLaterals(list(feature_info)[self.levels], width)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(dropout)
        self.fc = nn.Linear(width, num_classes)

    def forward(self, features: Sequence[torch.Tensor], network_size: tuple[int, int], image_size: tuple[int, int]) -> torch.Tensor:
        (x,) = self.laterals(list(features)[self.levels])
        return self.fc(self.dropout(torch.flatten(self.pool(x), 1)))


class ClassificationTask(Task):
    """Logits (N, classes); cross-entropy with ``label_smoothing``; metrics ``top1`` (primary) and ``top{k}``, k = min(5, classes)."""

    name = "classification"
    primary_metric = "top1"

    def __init__(self, num_classes: int, head_width: int = 256, dropout: float = 0.0, label_smoothing: float = 0.0) -> None:
        super().__init__(num_classes)
        if num_classes < 2:
            raise ValueError(f"classification needs num_classes >= 2, got {num_classes}")
        self.head_width, self.dropout, self.label_smoothing = head_width, dropout, label_smoothing
        self.top_k = min(5, num_classes)

    def head(self, feature_info: Sequence[FeatureInfo]) -> ClassifierHead:
        return ClassifierHead(feature_info, self.num_classes, self.head_width, self.dropout)

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, model: nn.Module) -> dict[str, torch.Tensor]:
        return {"loss": F.cross_entropy(outputs, targets, label_smoothing=self.label_smoothing)}

    def proxy_loss(self, outputs: torch.Tensor, targets: torch.Tensor, images: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Plain cross-entropy, as the zero-cost proxy papers differentiate."""
        return F.cross_entropy(outputs, targets)

    def metrics(self) -> MetricCollection:
        return MetricCollection({"top1": MulticlassAccuracy(self.num_classes, top_k=1, average="micro"),
                                 f"top{self.top_k}": MulticlassAccuracy(self.num_classes, top_k=self.top_k, average="micro")})

    def postprocess(self, outputs: torch.Tensor, images: torch.Tensor, model: nn.Module) -> torch.Tensor:
        """Class probabilities (N, classes)."""
        return outputs.softmax(-1)

    def describe_metric(self) -> str:
        return "top-1"
