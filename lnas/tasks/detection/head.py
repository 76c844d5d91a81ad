"""Anchor-free detection head (FCOS, Tian et al., ICCV 2019) and the detector that joins it to a backbone.

The head sizes itself from the backbone's ``feature_info``. Its ONNX-exportable forward returns raw tensors;
decoding and NMS (``torchvision.ops.batched_nms``) happen in :func:`postprocess`.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import batched_nms

from lnas.spaces.base import FeatureInfo
from lnas.spaces.blocks import conv_bn_act


class FCOSHead(nn.Module):
    """Per level: 1x1 lateral to ``width`` channels; shared depthwise-separable tower; class, box and centerness outputs.

    Built for the supernet's (largest) feature channels, a lateral fed fewer channels uses the first input channels of
    its weights (Once-for-All slicing, as the elastic backbone does); :meth:`narrowed` gives the static head of one arch.
    """

    def __init__(self, feature_info: Sequence[FeatureInfo], num_classes: int, width: int = 64, tower_depth: int = 2) -> None:
        super().__init__()
        self.strides = [info.reduction for info in feature_info]
        self.lateral = nn.ModuleList(conv_bn_act(info.num_chs, width, 1) for info in feature_info)
        self.tower = nn.Sequential(
            *(nn.Sequential(conv_bn_act(width, width, 3, groups=width), conv_bn_act(width, width, 1)) for _ in range(tower_depth))
        )
        self.cls_out = nn.Conv2d(width, num_classes, 3, padding=1)
        self.box_out = nn.Conv2d(width, 4, 3, padding=1)
        self.ctr_out = nn.Conv2d(width, 1, 3, padding=1)
        prior = 0.01  # focal-loss prior (Lin et al., 2017): start with low foreground probability
        nn.init.constant_(self.cls_out.bias, -torch.log(torch.tensor((1 - prior) / prior)).item())

    def forward(self, features: Sequence[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Class logits (B, N, C), box distances ltrb in pixels (B, N, 4), centerness logits (B, N); N over all levels."""
        cls, box, ctr = [], [], []
        for feature, lateral, stride in zip(features, self.lateral, self.strides, strict=True):
            x = self.tower(_lateral(lateral, feature))
            cls.append(self.cls_out(x).flatten(2).transpose(1, 2))
            box.append((self.box_out(x).clamp(max=8.0).exp() * stride).flatten(2).transpose(1, 2))
            ctr.append(self.ctr_out(x).flatten(1))
        return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1)

    def narrowed(self, feature_info: Sequence[FeatureInfo]) -> FCOSHead:
        """A copy whose laterals take exactly ``feature_info``'s channels (the first input channels of these weights)."""
        head = copy.deepcopy(self)
        for lateral, info in zip(head.lateral, feature_info, strict=True):
            conv = lateral[0]
            if conv.in_channels != info.num_chs:
                narrow = nn.Conv2d(info.num_chs, conv.out_channels, 1, bias=False).to(conv.weight.device)
                narrow.weight.data.copy_(conv.weight.data[:, : info.num_chs])
                lateral[0] = narrow
        return head


def _lateral(lateral: nn.Sequential, feature: torch.Tensor) -> torch.Tensor:
    """``lateral(feature)``, slicing the conv's input channels when the feature is narrower (an elastic-width supernet)."""
    conv = lateral[0]
    if feature.shape[1] == conv.in_channels:
        return lateral(feature)
    return lateral[2](lateral[1](F.conv2d(feature, conv.weight[:, : feature.shape[1]])))


class Detector(nn.Module):
    """Backbone (returning a list of features) + :class:`FCOSHead`; a plain module that exports to ONNX.

    With a ``resolution`` (an arch's input-resolution choice), images are resized to ``resolution`` x ``resolution``
    inside the network and the predicted box distances scaled back, so inputs and outputs stay in the image's pixels:
    the exported model, its measured latency and its training all run the network at the chosen resolution.
    """

    def __init__(self, backbone: nn.Module, head: FCOSHead, resolution: int | None = None) -> None:
        super().__init__()
        self.backbone, self.head, self.resolution = backbone, head, resolution

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return at_resolution(images, self.resolution, lambda x: self.head(self.backbone(x)))

    def points(self, image_size: tuple[int, int], device: torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Anchor points (and their strides) of this detector's outputs, in the pixels of an ``image_size`` input."""
        return anchor_points(image_size, self.head.strides, device, self.resolution)


Outputs = tuple[torch.Tensor, torch.Tensor, torch.Tensor]


def at_resolution(images: torch.Tensor, resolution: int | None, network: Callable[[torch.Tensor], Outputs]) -> Outputs:
    """``network`` run on ``images`` resized (bilinear) to ``resolution``, box distances scaled back to the image's pixels."""
    height, width = images.shape[-2:]
    if resolution is None or (height, width) == (resolution, resolution):
        return network(images)
    cls, box, ctr = network(F.interpolate(images, size=(resolution, resolution), mode="bilinear", align_corners=False))
    scale = torch.tensor([width / resolution, height / resolution] * 2, dtype=box.dtype, device=box.device)
    return cls, box * scale, ctr


def anchor_points(image_size: tuple[int, int], strides: Sequence[int], device: torch.device | None = None,
                  resolution: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Centres (N, 2) of every output location, in pixels, and the stride (N,) of the level each belongs to.

    With a ``resolution`` (the network runs on the image resized to it, see :class:`Detector`), the locations are
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
