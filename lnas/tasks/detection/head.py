"""Anchor-free detection head (FCOS, Tian et al., ICCV 2019), its anchor points and postprocessing.

The head sizes itself from the backbone's ``feature_info``. Its ONNX-exportable forward returns raw tensors;
decoding and NMS (``torchvision.ops.batched_nms``) happen in :func:`postprocess`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import batched_nms

from lnas.spaces.base import FeatureInfo
from lnas.spaces.blocks import conv_bn_act
from lnas.tasks.base import ElasticLaterals, TaskHead

Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


class FCOSHead(TaskHead):
    """Per level: 1x1 lateral to ``width`` (:class:`~lnas.tasks.base.ElasticLaterals`); shared depthwise-separable
    tower; class, box and centerness outputs. Box distances are in the pixels of the images given to the model."""

    def __init__(self, feature_info: Sequence[FeatureInfo], num_classes: int, width: int = 64, tower_depth: int = 2) -> None:
        super().__init__()
        self.strides = [info.reduction for info in feature_info]
        self.laterals = ElasticLaterals(feature_info, width)
        self.tower = nn.Sequential(
            *(nn.Sequential(conv_bn_act(width, width, 3, groups=width), conv_bn_act(width, width, 1)) for _ in range(tower_depth))
        )
        self.cls_out = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box_out = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_out = nn.Conv2d(width, 1, 3, padding=1)
        prior = 0.01  # focal-loss prior (Lin et al., 2017): start with low foreground probability
        nn.init.constant_(self.cls_out.bias, -torch.log(torch.tensor((1 - prior) / prior)).item())

    def forward(self, features: Sequence[torch.Tensor], network_size: tuple[int, int], image_size: tuple[int, int]) -> Outputs:
        """Class logits (B, N, C), box distances ltrb (B, N, 4), centerness logits (B, N); N over all levels."""
        cls, box, ctr = [], [], []
        for x, stride in zip(self.laterals(features), self.strides, strict=True):
            x = self.tower(x)
            cls.append(self.cls_out(x).flatten(2).transpose(1, 2))
            box.append((self.box_out(x).clamp(max=8.0).exp() * stride).flatten(2).transpose(1, 2))
            ctr.append(self.ctr_out(x).flatten(1))
        box_all = torch.cat(box, 1)
        if tuple(network_size) != tuple(image_size):  # the backbone ran on resized images: distances back to image pixels
            (net_h, net_w), (img_h, img_w) = network_size, image_size
            box_all = box_all * torch.tensor([img_w / net_w, img_h / net_h] * 2, dtype=box_all.dtype, device=box_all.device)
        return torch.cat(cls, 1), box_all, torch.cat(ctr, 1)


def anchor_points(image_size: tuple[int, int], strides: Sequence[int], device: torch.device | None = None,
                  resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (N, 2) of every output location, in pixels, and the stride (N,) of the level each belongs to.

    With a ``resolution`` (the network runs on the image resized to it, see :class:`~lnas.tasks.base.TaskModel`), the locations are
    those of the resized image, mapped back to the image's pixels (square images: one scale for both axes).
    """
    if resolution is not None and tuple(image_size) != (resolution, resolution):
        points, point_strides = anchor_points((resolution, resolution), strides, device)
        scale = torch.tensor([image_size[1] / resolution, image_size[0] / resolution], device=device)
        return points * scale, point_strides * scale.max()
    points, point_strides = [], []
    for stride in strides:
        h, w = -(-image_size[0] // stride), -(-image_size[1] // stride)
        ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
        centres = torch.stack([xs.flatten(), ys.flatten()], 1).float() * stride + stride / 2
        points.append(centres)
        point_strides.append(torch.full((h * w,), float(stride), device=device))
    return torch.cat(points), torch.cat(point_strides)


def distances_to_boxes(points: torch.Tensor, ltrb: torch.Tensor) -> torch.Tensor:
    """xyxy boxes from centres (…, 2) and left/top/right/bottom distances (…, 4)."""
    return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], -1)


@torch.no_grad()
def postprocess(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    points: torch.Tensor,
    image_size: tuple[int, int],
    score_threshold: float = 0.05,
    iou_threshold: float = 0.6,
    max_detections: int = 100,
) -> list[dict[str, torch.Tensor]]:
    """Per image: score = sqrt(class prob × centerness), top candidates, class-wise NMS; torchmetrics' format."""
    cls, box, ctr = outputs
    scores_all = (cls.sigmoid() * ctr.sigmoid().unsqueeze(-1)).sqrt()
    results = []
    for scores, ltrb in zip(scores_all, box, strict=True):
        flat = scores.flatten()
        keep = torch.nonzero(flat > score_threshold).squeeze(1)
        keep = keep[flat[keep].topk(min(len(keep), 1000)).indices]
        point_index, labels = keep // scores.shape[1], keep % scores.shape[1]
        boxes = distances_to_boxes(points[point_index], ltrb[point_index])
        boxes[:, 0::2] = boxes[:, 0::2].clamp(0, image_size[1])
        boxes[:, 1::2] = boxes[:, 1::2].clamp(0, image_size[0])
        kept = batched_nms(boxes, flat[keep], labels, iou_threshold)[:max_detections]
        results.append({"boxes": boxes[kept], "scores": flat[keep][kept], "labels": labels[kept]})
    return results
