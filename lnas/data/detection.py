"""Detection LightningDataModule over embedded synthetic scenes (generated at ``setup``, never downloaded)."""

from __future__ import annotations

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lnas.data.synthetic import CLASS_NAMES, Scene, render_split

DetectionTarget = dict[str, torch.Tensor]


class SceneDetectionDataset(Dataset):
    """Images as float tensors in [0, 1] (3, H, W) with targets ``{"boxes": (N, 4) xyxy, "labels": (N,)}``."""

    def __init__(self, scenes: list[Scene]) -> None:
        self.images = torch.stack([torch.from_numpy(s.image).permute(2, 0, 1) for s in scenes]) if scenes else torch.empty(0)
        self.targets = [{"boxes": torch.from_numpy(s.boxes), "labels": torch.from_numpy(s.labels)} for s in scenes]

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, DetectionTarget]:
        return self.images[index].float() / 255.0, self.targets[index]


def collate_detection(batch: list[tuple[torch.Tensor, DetectionTarget]]) -> tuple[torch.Tensor, list[DetectionTarget]]:
    """Stack images, keep per-image targets as a list (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


class SyntheticDetectionDataModule(L.LightningDataModule):
    """Train/val/test splits of procedural scenes, deterministic from ``seed``."""

    class_names = CLASS_NAMES
    num_classes = len(CLASS_NAMES)

    def __init__(
        self,
        image_size: int = 128,
        num_train: int = 512,
        num_val: int = 128,
        num_test: int = 128,
        max_objects: int = 4,
        batch_size: int = 32,
        seed: int = 0,
    ) -> None:
        super().__init__()
        for name, value in (("num_train", num_train), ("num_val", num_val), ("num_test", num_test)):
            if value < 1:
                raise ValueError(f"data.{name} must be >= 1 image (got {value}): the pipeline cannot train or evaluate on an empty split")
        if image_size < 32 or image_size % 32:
            raise ValueError(f"data.image_size must be a multiple of 32 that is >= 32 (the backbone's stride), got {image_size}")
        if batch_size < 1:
            raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
        self.image_size, self.max_objects, self.seed = image_size, max_objects, seed
        self.split_sizes = {"train": num_train, "val": num_val, "test": num_test}
        self.batch_size = batch_size
        self.datasets: dict[str, SceneDetectionDataset] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return (3, self.image_size, self.image_size)

    def setup(self, stage: str | None = None) -> None:
        for split_index, (split, count) in enumerate(self.split_sizes.items()):
            if split not in self.datasets:
                scenes = render_split(self.seed, split_index, count, self.image_size, self.max_objects)
                self.datasets[split] = SceneDetectionDataset(scenes)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=collate_detection,
                          drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
