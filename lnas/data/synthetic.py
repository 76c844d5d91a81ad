"""Data modules over the embedded procedural scenes (:mod:`lnas.data.scenes`), generated at ``setup``, never downloaded.

The same scenes serve the three tasks: detection (boxes and labels of up to ``max_objects`` shapes), semantic
segmentation (the class of every pixel, 0 = background) and classification (one shape per image; its class).
"""

from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Dataset, TensorDataset

from lnas.data.base import SPLITS, SplitDataModule, check_image_size, collate_detection
from lnas.data.scenes import CLASS_NAMES, Scene, render_scene, render_split
from lnas.data.transforms import AugmentedClassification


def _images(scenes: list[Scene]) -> torch.Tensor:
    return torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes]).float() / 255.0


class SceneDetectionDataset(Dataset):
    """Images as float tensors in [0, 1] (3, H, W) with targets ``{"boxes": (N, 4) xyxy, "labels": (N,)}``."""

    def __init__(self, scenes: list[Scene]) -> None:
        self.images = _images(scenes)
        self.targets = [{"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)} for s in scenes]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return self.images[index], self.targets[index]


class SyntheticDataModule(SplitDataModule):
    """Train/val/test splits of procedural scenes, deterministic from ``seed``; subclasses turn scenes into a dataset."""

    class_names = CLASS_NAMES

    def __init__(self, image_size: int = 128, num_train: int = 384, num_val: int = 96, num_test: int = 128, max_objects: int = 4,
                 batch_size: int = 32, seed: int = 0, collate_fn=None) -> None:
        super().__init__(batch_size, collate_fn=collate_fn)
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1 image (got {value}): the pipeline cannot train or evaluate on an empty split")
        if max_objects < 1:
            raise ValueError(f"data.max_objects must be >= 1, got {max_objects}")
        self.image_size, self.max_objects, self.seed = check_image_size(image_size), max_objects, seed
        self.split_sizes = dict(zip(SPLITS, (num_train, num_val, num_test), strict=True))

    def scenes(self, split: str) -> list[Scene]:
        return render_split(self.seed, SPLITS.index(split), self.split_sizes[split], self.image_size, self.max_objects)

    def dataset(self, split: str) -> Dataset:
        raise NotImplementedError

    def setup(self, stage: str | None = None) -> None:
        for split in SPLITS:
            if split not in self.datasets:
                self.datasets[split] = self.dataset(split)


class SyntheticDetectionDataModule(SyntheticDataModule):
    """Detection: up to ``max_objects`` shapes per image, boxes and labels (3 classes)."""

    num_classes = len(CLASS_NAMES)

    def __init__(self, **kwargs) -> None:
        super().__init__(collate_fn=collate_detection, **kwargs)

    def dataset(self, split: str) -> SceneDetectionDataset:
        return SceneDetectionDataset(self.scenes(split))


class SyntheticSegmentationDataModule(SyntheticDataModule):
    """Semantic segmentation: each pixel's class, 0 = background then the 3 shapes (4 classes)."""

    num_classes = len(CLASS_NAMES) + 1
    class_names = ("background", *CLASS_NAMES)

    def dataset(self, split: str) -> TensorDataset:
        scenes = self.scenes(split)
        return TensorDataset(_images(scenes), torch.stack([torch.from_numpy(s.class_map) for s in scenes]))


class SyntheticClassificationDataModule(SyntheticDataModule):
    """Classification: one shape per image (redrawn until exactly one is visible), labelled with its class (3 classes).

    ``augment``: random crops (zero padding of 1/8 of the size) and horizontal flips of the training images.
    """

    num_classes = len(CLASS_NAMES)

    def __init__(self, augment: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.augment = augment

    def scenes(self, split: str) -> list[Scene]:
        rng = np.random.default_rng([self.seed, SPLITS.index(split), 1])
        scenes: list[Scene] = []
        while len(scenes) < self.split_sizes[split]:
            scene = render_scene(rng, self.image_size, max_objects=1, min_size=0.25, max_size=0.7)
            if len(scene.labels) == 1:
                scenes.append(scene)
        return scenes

    def dataset(self, split: str) -> Dataset:
        scenes = self.scenes(split)
        images, labels = _images(scenes), torch.tensor([int(s.labels[0]) for s in scenes])
        if split == "train" and self.augment:
            return AugmentedClassification(images, labels)
        return TensorDataset(images, labels)
