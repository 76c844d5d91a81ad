"""Detection from COCO-format annotations (``{"images": [...], "annotations": [...], "categories": [...]}``, boxes as
``[x, y, width, height]`` in pixels; Lin et al., ECCV 2014).

Each split is one json file and its image folder; without a validation json, a share of the training images is held
out. Category ids map to contiguous labels in id order (from the training json). Images are decoded at ``setup``,
resized to ``image_size`` x ``image_size`` (boxes scaled alike) and held in memory; crowd regions (``iscrowd``) are
left out. A bad file or entry (an unreadable
or missing image, a box outside its image or of zero size, an unknown category or image id) stops the
run naming the file and the entry; with ``on_bad="skip"`` the entry (a bad image: the image) is skipped and counted.
"""

from __future__ import annotations

import json
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from lnas.data.bad_files import BadFiles
from lnas.data.base import SplitDataModule, check_fraction, check_image_size, collate_detection, holdout
from lnas.data.image_folder import read_rgb, resize_rgb

BOX_TOLERANCE = 1.0  # pixels a box may pass its image's border (rounding in exported annotations)


class DetectionImages(Dataset):
    """Images (N, 3, S, S) in [0, 1] with targets ``{"boxes": xyxy, "labels"}`` in the resized image's pixels."""

    def __init__(self, images: list[np.ndarray], targets: list[dict[str, torch.Tensor]]) -> None:
        self.images, self.targets = images, targets

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        return torch.tensor(self.images[index]).permute(2, 0, 1).float() / 255.0, self.targets[index]  # a copy: PIL arrays are read-only


def load_json(path: Path) -> dict:
    if not path.is_file():
        raise FileNotFoundError(f"COCO annotation file {path} not found")
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as error:
        raise ValueError(f"{path} is not valid JSON: {error}") from error
    missing = [key for key in ("images", "annotations", "categories") if key not in data]
    if missing:
        raise ValueError(f"{path} is not a COCO detection file: it lacks {missing} (needs images, annotations, categories)")
    return data


class CocoDetectionDataModule(SplitDataModule):
    """COCO-json detection.

    Args:
        train_annotations, train_images: the training json and its image folder (``file_name`` is relative to it).
        val_annotations, val_images, test_annotations, test_images: optional further splits; without val, ``val_fraction``
            of the training images are held out; without test, the validation split is the test split.
        image_size: images are resized to this square size (a multiple of 32).
        on_bad: ``error`` or ``skip``.
    """

    def __init__(self, train_annotations: str | Path, train_images: str | Path, val_annotations: str | Path | None = None,
                 val_images: str | Path | None = None, test_annotations: str | Path | None = None, test_images: str | Path | None = None,
                 image_size: int = 128, val_fraction: float = 0.1, batch_size: int = 16, seed: int = 0, on_bad: str = "error",
                 num_workers: int = 0) -> None:
        super().__init__(batch_size, num_workers, collate_fn=collate_detection)
        self.sources = {"train": (train_annotations, train_images), "val": (val_annotations, val_images), "test": (test_annotations, test_images)}
        for split, (json_file, images) in self.sources.items():
            if (json_file is None) != (images is None):
                raise ValueError(f"data.{split}_annotations and data.{split}_images go together; got only one of them")
        self.image_size, self.val_fraction, self.seed = check_image_size(image_size), check_fraction(val_fraction), seed
        self.bad = BadFiles(on_bad)

    @cached_property
    def categories(self) -> list[dict]:
        """The training json's categories in id order."""
        return sorted(load_json(Path(self.sources["train"][0]))["categories"], key=lambda c: c["id"])

    @property
    def num_classes(self) -> int:
        return len(self.categories)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(str(c.get("name", c["id"])) for c in self.categories)

    def _read(self, split: str) -> DetectionImages:
        annotations_path, folder = (Path(p) for p in self.sources[split])
        data = load_json(annotations_path)
        label_of = {c["id"]: index for index, c in enumerate(self.categories)}
        images = {entry["id"]: entry for entry in data["images"]}
        per_image: dict[int, list[dict]] = {image_id: [] for image_id in images}
        for annotation in data["annotations"]:
            entry = f"annotation id {annotation.get('id')}"
            if annotation.get("image_id") not in images:
                self.bad.report(split, annotations_path, f"refers to unknown image id {annotation.get('image_id')}", entry)
            elif annotation.get("category_id") not in label_of:
                self.bad.report(split, annotations_path, f"unknown category id {annotation.get('category_id')} "
                                f"(categories: {sorted(label_of)})", entry)
            else:
                per_image[annotation["image_id"]].append(annotation)
        pixels, targets = [], []
        for image_id, image in sorted(images.items()):
            path = folder / image["file_name"]
            try:
                array = read_rgb(path)
            except (OSError, ValueError) as error:
                self.bad.report(split, path, f"unreadable or missing image ({type(error).__name__}: {error})", f"image id {image_id}")
                continue
            height, width = array.shape[:2]
            boxes, labels = [], []
            for annotation in per_image[image_id]:
                if annotation.get("iscrowd"):  # crowd regions are left out of training and evaluation, as COCO's own tools do
                    continue
                x, y, w, h = (float(v) for v in annotation["bbox"])
                problem = (f"box [{x}, {y}, {w}, {h}] has no area" if w <= 0 or h <= 0 else
                           f"box [{x}, {y}, {w}, {h}] lies outside its {width}x{height} image"
                           if x < -BOX_TOLERANCE or y < -BOX_TOLERANCE or x + w > width + BOX_TOLERANCE or y + h > height + BOX_TOLERANCE else "")
                if problem:
                    self.bad.report(split, annotations_path, problem, f"annotation id {annotation.get('id')} of {image['file_name']}")
                    continue
                boxes.append([max(x, 0.0), max(y, 0.0), min(x + w, width), min(y + h, height)])
                labels.append(label_of[annotation["category_id"]])
            scale = np.array([self.image_size / width, self.image_size / height] * 2, dtype=np.float32)
            pixels.append(resize_rgb(array, self.image_size))
            targets.append({"boxes": torch.from_numpy(np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * scale),
                            "labels": torch.tensor(labels, dtype=torch.int64)})
        self.bad.summarise(split)
        if not pixels:
            raise ValueError(f"no usable images in {annotations_path}")
        return DetectionImages(pixels, targets)

    def setup(self, stage: str | None = None) -> None:
        if self.datasets:
            return
        train = self._read("train")
        if self.sources["val"][0] is None:
            self.datasets["train"], self.datasets["val"] = holdout(train, self.val_fraction, self.seed)
        else:
            self.datasets["train"], self.datasets["val"] = train, self._read("val")
        self.datasets["test"] = self._read("test") if self.sources["test"][0] is not None else self.datasets["val"]
