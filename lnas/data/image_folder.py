"""Classification from an image folder: ``train/<class>/*.jpg`` (a validation split carved from it) and, when present,
``test/<class>/*.jpg``; or ``<class>/*.jpg`` directly. The folder may be a ``.zip`` archive (of its contents or of the
folder itself), extracted once into the cache.

Images are decoded at ``setup``, resized to ``image_size`` and held in memory as uint8 (CIFAR-10's 20,000 images at
32x32 take 61 MB). A file that cannot be read, or a test class the training split does not have, stops the run
naming the file (``on_bad="skip"``: skipped and counted).
"""

from __future__ import annotations

import logging
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import TensorDataset

from lnas.data.archive import extracted
from lnas.data.bad_files import BadFiles
from lnas.data.base import SplitDataModule, check_fraction, check_image_size
from lnas.data.transforms import AugmentedClassification

log = logging.getLogger("lnas.data")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp")


def resize_rgb(array: np.ndarray, size: int | tuple[int, int]) -> np.ndarray:
    """A uint8 (H, W, C) image resized (bilinear) to ``size`` (square int, or (H, W)); unchanged at that size."""
    height, width = (size, size) if isinstance(size, int) else size
    if array.shape[:2] == (height, width):
        return array
    return np.asarray(Image.fromarray(array).resize((width, height), Image.Resampling.BILINEAR), dtype=np.uint8)


def read_rgb(path: Path, size: int | tuple[int, int] | None = None) -> np.ndarray:
    """The image at ``path`` as uint8 (H, W, 3), resized to ``size`` when given."""
    with Image.open(path) as image:
        array = np.asarray(image.convert("RGB"), dtype=np.uint8)
    return array if size is None else resize_rgb(array, size)


def image_files(folder: Path) -> list[Path]:
    """Image files directly in ``folder``, sorted by name."""
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of the kept and the held-out samples: ``fraction`` of every class (at least one when it has two or more)."""
    generator = torch.Generator().manual_seed(seed)
    kept, held = [], []
    for label in labels.unique().tolist():
        members = (labels == label).nonzero().squeeze(1)
        members = members[torch.randperm(len(members), generator=generator)]
        count = min(max(round(fraction * len(members)), 1), len(members) - 1) if len(members) > 1 else 0
        held.append(members[:count])
        kept.append(members[count:])
    return torch.cat(kept).sort().values, torch.cat(held).sort().values


class ImageFolderDataModule(SplitDataModule):
    """Image-folder classification.

    Args:
        root: the folder, or a ``.zip`` of it.
        image_size: every image is resized to ``image_size`` x ``image_size``.
        val_fraction: share of each training class held out for validation (the search's and the final training's).
        augment: random crops and horizontal flips of the training images (:mod:`lnas.data.transforms`).
        on_bad: ``error`` (stop at the first bad file, naming it) or ``skip`` (skip and count).
        cache_dir: where a zip is extracted (default ``$LNAS_CACHE_DIR/datasets``).
    """

    def __init__(self, root: str | Path, image_size: int = 32, val_fraction: float = 0.1, batch_size: int = 64, seed: int = 0,
                 augment: bool = True, on_bad: str = "error", cache_dir: str | Path | None = None, num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers)
        self.root, self.image_size, self.val_fraction = Path(root), check_image_size(image_size), check_fraction(val_fraction)
        self.seed, self.augment, self.cache_dir = seed, augment, cache_dir
        self.bad = BadFiles(on_bad)
        if not self.root.exists():
            raise FileNotFoundError(f"data.root {self.root} does not exist (an image folder or a .zip of one)")

    @cached_property
    def folder(self) -> Path:
        """The image folder (the extracted archive for a zip, or the one folder in it: ``zip -r images.zip images/``)."""
        if self.root.suffix.lower() != ".zip":
            return self.root
        folder = extracted(self.root, self.cache_dir)
        inside = [p for p in folder.iterdir() if not p.name.startswith(".") and p.name != "__MACOSX"]
        return inside[0] if len(inside) == 1 and inside[0].is_dir() and inside[0].name not in ("train", "test") else folder

    @cached_property
    def class_names(self) -> tuple[str, ...]:
        train = self._split_dir("train")
        names = tuple(sorted(p.name for p in train.iterdir() if p.is_dir() and not p.name.startswith(".")))
        if len(names) < 2:
            raise ValueError(f"{train} must hold one folder per class (train/<class>/*.jpg or <class>/*.jpg); found {list(names)}")
        return names

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def _split_dir(self, split: str) -> Path:
        return self.folder / split if (self.folder / split).is_dir() else self.folder

    def _read(self, folder: Path, split: str) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = [], []
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")):
            if class_dir.name not in self.class_names:
                self.bad.report(split, class_dir, f"class folder {class_dir.name!r} is not one of the training classes {list(self.class_names)}")
                continue
            for path in image_files(class_dir):
                try:
                    images.append(read_rgb(path, self.image_size))
                except (OSError, ValueError) as error:
                    self.bad.report(split, path, f"unreadable image ({type(error).__name__}: {error})")
                    continue
                labels.append(self.class_names.index(class_dir.name))
        self.bad.summarise(split)
        if not images:
            raise ValueError(f"no readable images in {folder} (expected <class>/*{'|*'.join(IMAGE_SUFFIXES)})")
        return torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous(), torch.tensor(labels)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        images, labels = self._read(self._split_dir("train"), "train")
        kept, held = stratified_split(labels, self.val_fraction, self.seed)
        train_images = images[kept].float() / 255.0
        self.datasets["train"] = (AugmentedClassification(train_images, labels[kept]) if self.augment
                                  else TensorDataset(train_images, labels[kept]))
        self.datasets["val"] = TensorDataset(images[held].float() / 255.0, labels[held])
        if (self.folder / "test").is_dir() and (self.folder / "train").is_dir():
            test_images, test_labels = self._read(self.folder / "test", "test")
            self.datasets["test"] = TensorDataset(test_images.float() / 255.0, test_labels)
        else:
            log.warning("%s has no test/ folder: test metrics are computed on the validation split", self.folder)
            self.datasets["test"] = self.datasets["val"]
