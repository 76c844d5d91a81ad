"""Procedural synthetic scenes (no download): coloured rectangles, ellipses and triangles on a noisy background.

Every image is a deterministic function of ``(seed, split, index)``; each object comes with its tight box, its
class label and its pixel mask, so the same scenes serve detection, segmentation and classification.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

CLASS_NAMES = ("rectangle", "ellipse", "triangle")


@dataclass
class Scene:
    """One image (H, W, 3 uint8), its boxes (N, 4 xyxy float32), labels (N,) and class map (H, W; 0 = background)."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    class_map: np.ndarray


def _shape_mask(kind: int, yy: np.ndarray, xx: np.ndarray, x0: float, y0: float, w: float, h: float) -> np.ndarray:
    if kind == 0:  # rectangle
        return (xx >= x0) & (xx < x0 + w) & (yy >= y0) & (yy < y0 + h)
    if kind == 1:  # ellipse inscribed in the box
        cx, cy = x0 + w / 2, y0 + h / 2
        return ((xx + 0.5 - cx) / (w / 2)) ** 2 + ((yy + 0.5 - cy) / (h / 2)) ** 2 <= 1.0
    # triangle: apex at the top centre, base along the bottom edge
    rel_y = (yy + 0.5 - y0) / h
    half_width = rel_y * w / 2
    return (rel_y >= 0) & (rel_y <= 1) & (np.abs(xx + 0.5 - (x0 + w / 2)) <= half_width)


def render_scene(rng: np.random.Generator, size: int, max_objects: int, min_size: float = 0.12, max_size: float = 0.5) -> Scene:
    """Draw 1..``max_objects`` shapes with side lengths between ``min_size`` and ``max_size`` of the image."""
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    background = rng.uniform(0, 255, size=3)
    image = np.clip(background + rng.normal(0, 12, size=(size, size, 3)), 0, 255)
    class_map = np.zeros((size, size), dtype=np.int64)
    boxes, labels = [], []
    for _ in range(int(rng.integers(1, max_objects + 1))):
        kind = int(rng.integers(len(CLASS_NAMES)))
        w, h = rng.uniform(min_size, max_size, size=2) * size
        x0, y0 = rng.uniform(0, size - w), rng.uniform(0, size - h)
        mask = _shape_mask(kind, yy, xx, x0, y0, w, h)
        if mask.sum() < 16:
            continue
        color = (background + rng.uniform(70, 185, size=3) * rng.choice([-1, 1], size=3)) % 255
        image[mask] = np.clip(color + rng.normal(0, 8, size=(int(mask.sum()), 3)), 0, 255)
        class_map[mask] = kind + 1
        labels.append(kind)
        boxes.append([x0, y0, x0 + w, y0 + h])
    # occlusion: keep only objects still visible enough, with boxes tightened to their visible pixels
    kept_boxes, kept_labels = [], []
    for index, kind in enumerate(labels):
        visible = class_map == kind + 1
        later = _shape_mask(kind, yy, xx, boxes[index][0], boxes[index][1], boxes[index][2] - boxes[index][0], boxes[index][3] - boxes[index][1])
        own = visible & later
        if own.sum() < 0.5 * later.sum():
            continue
        ys, xs = np.nonzero(own)
        kept_boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
        kept_labels.append(kind)
    return Scene(
        image=image.astype(np.uint8),
        boxes=np.asarray(kept_boxes, dtype=np.float32).reshape(-1, 4),
        labels=np.asarray(kept_labels, dtype=np.int64),
        class_map=class_map,
    )


def render_split(seed: int, split_index: int, count: int, size: int, max_objects: int) -> list[Scene]:
    """``count`` scenes of one split; splits use independent streams of the same seed."""
    rng = np.random.default_rng([seed, split_index])
    return [render_scene(rng, size, max_objects) for _ in range(count)]
