"""FCOS targets and loss (Tian et al., ICCV 2019): centre sampling, per-level size ranges, focal + GIoU + centerness."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torchvision.ops import generalized_box_iou_loss, sigmoid_focal_loss

from lnas.tasks.detection.head import distances_to_boxes


def assign_targets(
    points: torch.Tensor, point_strides: torch.Tensor, boxes: torch.Tensor, labels: torch.Tensor,
    center_radius: float = 1.5, size_factor: float = 4.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """For each point: the index of its matched box (-1 = background) and the box's ltrb distances (N, 4).

    A point is positive for a box when it lies within ``center_radius`` strides of the box centre, inside the
    box, and the box's largest distance falls in its level's range ``(size_factor·s/2, size_factor·s]``
    (the first level has no lower bound and the last no upper bound). Ties go to the smallest box.
    """
    n = points.shape[0]
    if boxes.numel() == 0:
        return torch.full((n,), -1, dtype=torch.long, device=points.device), points.new_zeros(n, 4)
    x, y = points[:, 0:1], points[:, 1:2]
    ltrb = torch.stack([x - boxes[:, 0], y - boxes[:, 1], boxes[:, 2] - x, boxes[:, 3] - y], -1)  # (N, M, 4)
    inside = ltrb.min(-1).values > 0
    centres = (boxes[:, :2] + boxes[:, 2:]) / 2
    radius = point_strides[:, None] * center_radius
    near_centre = ((x - centres[:, 0]).abs() < radius) & ((y - centres[:, 1]).abs() < radius)
    reach = ltrb.max(-1).values
    lower = torch.where(point_strides == point_strides.min(), 0.0, point_strides * size_factor / 2)[:, None]
    upper = torch.where(point_strides == point_strides.max(), float("inf"), point_strides * size_factor)[:, None]
    valid = inside & near_centre & (reach > lower) & (reach <= upper)
    area = ((boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1]))[None].expand(n, -1)
    area = torch.where(valid, area, torch.full_like(area, float("inf")))
    best_area, matched = area.min(1)
    matched = torch.where(torch.isinf(best_area), torch.full_like(matched, -1), matched)
    return matched, ltrb[torch.arange(n, device=points.device), matched.clamp(min=0)]


def centerness(ltrb: torch.Tensor) -> torch.Tensor:
    """FCOS centerness: sqrt(min(l, r)/max(l, r) · min(t, b)/max(t, b))."""
    lr, tb = ltrb[:, 0::2], ltrb[:, 1::2]
    return ((lr.min(1).values / lr.max(1).values) * (tb.min(1).values / tb.max(1).values)).clamp(min=0).sqrt()


def fcos_loss(
    outputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
    targets: list[dict[str, torch.Tensor]],
    points: torch.Tensor,
    point_strides: torch.Tensor,
) -> dict[str, torch.Tensor]:
    """Focal classification loss, GIoU box loss (centerness-weighted) and centerness BCE, normalised by #positives."""
    cls, box, ctr = outputs
    cls_targets = torch.zeros_like(cls)
    positive_boxes, positive_preds, positive_points, positive_ctr, positive_ltrb = [], [], [], [], []
    for i, target in enumerate(targets):
        matched, ltrb = assign_targets(points, point_strides, target["boxes"], target["labels"])
        positive = matched >= 0
        cls_targets[i, positive, target["labels"][matched[positive]]] = 1.0
        positive_boxes.append(target["boxes"][matched[positive]])
        positive_preds.append(box[i, positive])
        positive_points.append(points[positive])
        positive_ctr.append(ctr[i, positive])
        positive_ltrb.append(ltrb[positive])
    num_positive = max(sum(len(b) for b in positive_boxes), 1)
    loss_cls = sigmoid_focal_loss(cls, cls_targets, reduction="sum") / num_positive
    gt_boxes, pred_ltrb = torch.cat(positive_boxes), torch.cat(positive_preds)
    if len(gt_boxes) == 0:
        zero = box.sum() * 0 + ctr.sum() * 0
        return {"loss": loss_cls + zero, "loss_cls": loss_cls, "loss_box": zero, "loss_ctr": zero}
    ctr_target = centerness(torch.cat(positive_ltrb))
    pred_boxes = distances_to_boxes(torch.cat(positive_points), pred_ltrb)
    giou = generalized_box_iou_loss(pred_boxes, gt_boxes, reduction="none")
    loss_box = (giou * ctr_target).sum() / ctr_target.sum().clamp(min=1e-6)
    loss_ctr = F.binary_cross_entropy_with_logits(torch.cat(positive_ctr), ctr_target, reduction="sum") / num_positive
    return {"loss": loss_cls + loss_box + loss_ctr, "loss_cls": loss_cls, "loss_box": loss_box, "loss_ctr": loss_ctr}
