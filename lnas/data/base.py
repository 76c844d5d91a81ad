"""What every lnas data module shares: train/val/test datasets, loaders, ``num_classes`` and ``input_shape``."""

from __future__ import annotations

from collections.abc import Callable

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, Subset

SPLITS = ("train", "val", "test")
IGNORE_INDEX = 255
"""Mask value of pixels that count in neither the segmentation loss nor its metrics."""
DetectionTarget = dict[str, torch.Tensor]


def collate_detection(batch: list[tuple[torch.Tensor, DetectionTarget]]) -> tuple[torch.Tensor, list[DetectionTarget]]:
    """Stack images, keep per-image targets as a list (their box counts differ)."""
    images, targets = zip(*batch, strict=True)
    return torch.stack(images), list(targets)


def check_image_size(image_size: int, multiple: int = 32) -> int:
    """``image_size`` if it is a positive multiple of ``multiple`` (the backbones' largest stride)."""
    if image_size < multiple or image_size % multiple:
        raise ValueError(f"data.image_size must be a multiple of {multiple} that is >= {multiple} (the backbone's stride), got {image_size}")
    return image_size


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        raise ValueError(f"data.batch_size must be >= 1, got {batch_size}")
    return batch_size


def check_fraction(fraction: float) -> float:
    """``fraction`` if it lies strictly between 0 and 1 (the share of training data held out for validation)."""
    if not 0 < fraction < 1:
        raise ValueError(f"data.val_fraction must be between 0 and 1 (exclusive), got {fraction}")
    return fraction


def holdout(dataset: Dataset, fraction: float, seed: int) -> tuple[Subset, Subset]:
    """``dataset`` split at random into the kept part and a held-out ``fraction`` (at least one sample)."""
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed)).tolist()
    held = max(1, round(fraction * len(dataset)))
    return Subset(dataset, order[held:]), Subset(dataset, order[:held])


class SplitDataModule(L.LightningDataModule):
    """Loaders over ``self.datasets[split]`` (filled by ``setup``); images are float tensors in [0, 1] (C, H, W).

    Subclasses set ``num_classes``, ``image_size`` and ``class_names``, and fill ``datasets`` in ``setup``.
    """

    num_classes: int
    image_size: int
    class_names: tuple[str, ...] = ()

    def __init__(self, batch_size: int, num_workers: int = 0, collate_fn: Callable | None = None) -> None:
        super().__init__()
        self.batch_size, self.num_workers = check_batch_size(batch_size), num_workers
        self.collate_fn = collate_fn
        self.datasets: dict[str, Dataset] = {}

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """(channels, height, width) of one image."""
        return (3, self.image_size, self.image_size)

    def _loader(self, split: str, shuffle: bool) -> DataLoader:
        if split not in self.datasets:
            self.setup("fit" if split != "test" else "test")
        return DataLoader(self.datasets[split], batch_size=self.batch_size, shuffle=shuffle, collate_fn=self.collate_fn,
                          num_workers=self.num_workers, persistent_workers=self.num_workers > 0, drop_last=False)

    def train_dataloader(self) -> DataLoader:
        return self._loader("train", shuffle=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader("val", shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self._loader("test", shuffle=False)
