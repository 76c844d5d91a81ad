"""Semantic segmentation from image and mask folders: ``<split>/images/<name>.<jpg|png>`` with
``<split>/masks/<name>.png``, each mask pixel a class index (0..num_classes-1, or 255 = ignored); splits ``train``,
``val`` (else carved from train) and ``test`` (else the validation split).

Images and masks are decoded at ``setup``, resized to ``image_size`` (masks by nearest neighbour) and held in
memory. A bad file (unreadable, an image without its mask, a mask whose size differs from its image, a class index
not below ``num_classes``) stops the run naming the file; with ``on_bad="skip"`` the pair is skipped and counted.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from lnas.data.bad_files import BadFiles
from lnas.data.base import IGNORE_INDEX, SplitDataModule, check_fraction, check_image_size, holdout
from lnas.data.image_folder import image_files, read_rgb, resize_rgb


def read_mask(path: Path) -> np.ndarray:
    """A single-channel mask (H, W) of class indices."""
    with Image.open(path) as mask:
        if mask.mode not in ("L", "P", "I", "I;16"):
            raise ValueError(f"mode {mask.mode} is not a single-channel class-index mask (L, P, I or I;16)")
        return np.asarray(mask, dtype=np.int64)


class SegmentationFolderDataModule(SplitDataModule):
    """Image + mask folders for semantic segmentation.

    Args:
        root: the folder holding ``train/`` (and optionally ``val/``, ``test/``), each with ``images/`` and ``masks/``.
        num_classes: classes, background included; a mask value outside 0..num_classes-1 other than 255 is bad data.
        image_size: images and masks are resized to this square size (a multiple of 32).
    """

    def __init__(self, root: str | Path, num_classes: int, image_size: int = 128, val_fraction: float = 0.1, batch_size: int = 16,
                 seed: int = 0, on_bad: str = "error", num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers)
        self.root = Path(root)
        if not (self.root / "train" / "images").is_dir():
            raise FileNotFoundError(f"data.root {self.root} must hold train/images/ and train/masks/ (and optionally val/, test/)")
        if num_classes < 2:
            raise ValueError(f"data.num_classes must be >= 2 (background included), got {num_classes}")
        self.num_classes, self.image_size, self.seed = num_classes, check_image_size(image_size), seed
        self.val_fraction = check_fraction(val_fraction)
        self.bad = BadFiles(on_bad)

    def _read(self, split: str) -> TensorDataset:
        folder = self.root / split
        images, masks = [], []
        for image_path in image_files(folder / "images"):
            mask_path = folder / "masks" / f"{image_path.stem}.png"
            try:
                image = read_rgb(image_path)
            except (OSError, ValueError) as error:
                self.bad.report(split, image_path, f"unreadable image ({type(error).__name__}: {error})")
                continue
            try:
                mask = read_mask(mask_path)
            except (OSError, ValueError) as error:
                self.bad.report(split, mask_path, f"unreadable or missing mask of {image_path.name} ({type(error).__name__}: {error})")
                continue
            if mask.shape != image.shape[:2]:
                self.bad.report(split, mask_path, f"mask size {mask.shape[1]}x{mask.shape[0]} differs from its image's "
                                f"{image.shape[1]}x{image.shape[0]} ({image_path.name})")
                continue
            unknown = sorted({int(v) for v in np.unique(mask)} - set(range(self.num_classes)) - {IGNORE_INDEX})
            if unknown:
                self.bad.report(split, mask_path, f"class indices {unknown[:5]} are not in 0..{self.num_classes - 1} (or {IGNORE_INDEX} = ignore)")
                continue
            images.append(resize_rgb(image, self.image_size))
            masks.append(np.asarray(Image.fromarray(mask.astype(np.int32)).resize((self.image_size,) * 2, Image.Resampling.NEAREST)))
        self.bad.summarise(split)
        if not images:
            raise ValueError(f"no usable image/mask pairs in {folder}")
        pixels = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float() / 255.0
        return TensorDataset(pixels, torch.from_numpy(np.stack(masks).astype(np.int64)))

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train = self._read("train")
        if (self.root / "val" / "images").is_dir():
            self.datasets["train"], self.datasets["val"] = train, self._read("val")
        else:
            self.datasets["train"], self.datasets["val"] = holdout(train, self.val_fraction, self.seed)
        self.datasets["test"] = self._read("test") if (self.root / "test" / "images").is_dir() else self.datasets["val"]
