"""The data modules (lnas.data): image folders (plain and zipped), COCO json, image + mask folders, the embedded synthetic
scenes, the bad-file policy (``on_bad``) and the real CIFAR-10 JPEG zip through ``conf/data/cifar10.yaml``."""

from __future__ import annotations

import json
import os
import re
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hydra.utils import instantiate
from PIL import Image
from torch.utils.data import TensorDataset

from lnas.data import (
    IGNORE_INDEX,
    BadDataError,
    CocoDetectionDataModule,
    ImageFolderDataModule,
    SegmentationFolderDataModule,
    SyntheticClassificationDataModule,
    SyntheticDetectionDataModule,
    SyntheticSegmentationDataModule,
)
from lnas.data.transforms import AugmentedClassification

# Class folders written out of order: the data module sorts them.
CLASSES = ("zebra", "ant", "moth")
SIZES = ((40, 24), (17, 33), (32, 32), (64, 48))  # (width, height) of the images, cycled: every one is resized
TRAIN_BLUE, TEST_BLUE = 100, 200


# ----------------------------------------------------------------------------------------------------------- helpers
def write_image(path: Path, color=(128, 128, 128), size=(20, 20), array: np.ndarray | None = None) -> Path:
    """A solid ``color`` image of ``size`` (width, height), or ``array`` (H, W, 3 uint8), saved by its suffix (JPEG or PNG)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array is None:
        array = np.empty((size[1], size[0], 3), dtype=np.uint8)
        array[...] = color
    Image.fromarray(array).save(path, quality=95) if path.suffix == ".jpg" else Image.fromarray(array).save(path)
    return path


def write_mask(path: Path, mask: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = Image.fromarray(mask.astype(np.uint8))
    if mode == "P":
        image = image.convert("P")
        image.putpalette([v for i in range(256) for v in (i, 255 - i, (7 * i) % 256)])
    image.save(path)
    return path


def color_of(class_index: int, index: int, blue: int) -> tuple[int, int, int]:
    """A colour that identifies one image: red = its class (in CLASSES order), green = its number, blue = its split."""
    return 30 + 60 * class_index, 10 + 15 * index, blue


def make_image_folder(root: Path, train_per_class: int = 8, test_per_class: int | None = 2) -> Path:
    """``root/train/<class>/`` (half JPEG, half PNG, sizes from SIZES) and, when ``test_per_class``, ``root/test/<class>/``."""
    splits = {"train": (train_per_class, TRAIN_BLUE)} | ({"test": (test_per_class, TEST_BLUE)} if test_per_class else {})
    for split, (count, blue) in splits.items():
        for class_index, name in enumerate(CLASSES):
            for index in range(count):
                suffix = ".jpg" if index % 2 else ".png"
                write_image(root / split / name / f"{index:03d}{suffix}", color_of(class_index, index, blue), SIZES[index % len(SIZES)])
    return root


def fingerprints(dataset) -> list[tuple[str, int, int]]:
    """(class name from the image's colour, image number, split blue) of every sample; checks the label matches the colour."""
    found = []
    for index in range(len(dataset)):
        image, label = dataset[index]
        red, green, blue = (round(float(v) * 255) for v in image[:, image.shape[1] // 2, image.shape[2] // 2])
        class_index = round((red - 30) / 60)
        assert sorted(CLASSES)[int(label)] == CLASSES[class_index], f"label {int(label)} given to an image of {CLASSES[class_index]}"
        found.append((CLASSES[class_index], round((green - 10) / 15), round(blue / 100) * 100))
    return found


def zip_folder(folder: Path, archive: Path, prefix: str = "") -> Path:
    """``folder``'s files zipped, their names under ``prefix`` (``"images/"``: as ``zip -r images.zip images/`` writes them)."""
    with zipfile.ZipFile(archive, "w") as zipped:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                zipped.write(path, prefix + path.relative_to(folder).as_posix())
    return archive


def all_tensors(dm) -> dict[str, list[torch.Tensor]]:
    return {split: [torch.stack([dm.datasets[split][i][k] for i in range(len(dm.datasets[split]))]) for k in (0, 1)] for split in dm.datasets}


def error_naming(path: Path, *words: str) -> str:
    """A ``pytest.raises(match=...)`` pattern: the path, then every one of ``words``, in that order."""
    return ".*".join(re.escape(str(part)) for part in (path, *words))


# ----------------------------------------------------------------------------------------------------------- image folder
def test_image_folder_classes_resize_stratified_split_and_test_folder(tmp_path):
    root = make_image_folder(tmp_path / "images")
    dm = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, batch_size=4, augment=False, seed=3)
    assert dm.class_names == ("ant", "moth", "zebra") and dm.num_classes == 3 and dm.input_shape == (3, 32, 32)
    dm.setup("fit")
    assert {split: len(dm.datasets[split]) for split in ("train", "val", "test")} == {"train": 18, "val": 6, "test": 6}
    for split in ("train", "val", "test"):
        for index in range(len(dm.datasets[split])):
            image, label = dm.datasets[split][index]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
            assert label.dtype == torch.int64 and 0 <= int(label) < 3
    train, val, test = (fingerprints(dm.datasets[split]) for split in ("train", "val", "test"))
    # stratified: 25 % of each class's 8 images in val, the rest in train; disjoint, together every training image once
    assert sorted(name for name, _, _ in val) == ["ant", "ant", "moth", "moth", "zebra", "zebra"]
    assert not set(train) & set(val) and len(set(train)) == 18
    assert set(train) | set(val) == {(name, index, TRAIN_BLUE) for name in CLASSES for index in range(8)}
    # the test split is test/ (its own images), not the validation split
    assert set(test) == {(name, index, TEST_BLUE) for name in CLASSES for index in range(2)}
    # the loaders batch the same data
    images, labels = next(iter(dm.val_dataloader()))
    assert images.shape == (4, 3, 32, 32) and labels.shape == (4,)

    same_seed = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, augment=False, seed=3)
    same_seed.setup("fit")
    assert fingerprints(same_seed.datasets["val"]) == val and fingerprints(same_seed.datasets["train"]) == train
    other_seed = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, augment=False, seed=4)
    other_seed.setup("fit")
    assert set(fingerprints(other_seed.datasets["val"])) != set(val)  # 1 in 28**3 that it would be equal


def test_image_folder_val_fraction_sets_the_split_sizes_and_without_test_the_test_split_is_val(tmp_path):
    root = make_image_folder(tmp_path / "images", train_per_class=10, test_per_class=None)
    dm = ImageFolderDataModule(root, image_size=64, val_fraction=0.3, augment=False)
    dm.setup("fit")
    assert len(dm.datasets["val"]) == 9 and len(dm.datasets["train"]) == 21  # 3 of each class's 10
    assert dm.datasets["test"] is dm.datasets["val"] and dm.input_shape == (3, 64, 64)
    assert dm.datasets["train"][0][0].shape == (3, 64, 64)
    # <class>/*.jpg directly (no train/): the same classes
    flat = ImageFolderDataModule(root / "train", image_size=32, augment=False)
    assert flat.class_names == ("ant", "moth", "zebra")
    flat.setup("fit")
    assert len(flat.datasets["train"]) + len(flat.datasets["val"]) == 30 and flat.datasets["test"] is flat.datasets["val"]


def test_image_folder_augments_training_images_only_when_asked(tmp_path):
    root = make_image_folder(tmp_path / "images", train_per_class=4, test_per_class=None)
    torch.manual_seed(0)
    augmented = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, augment=True)
    augmented.setup("fit")
    train, val = augmented.datasets["train"], augmented.datasets["val"]
    assert isinstance(train, AugmentedClassification)
    # zero-padded random crops of solid images: most accesses differ (the same offset twice has chance 1/81)
    assert any(not torch.equal(train[i][0], train[i][0]) for i in range(len(train)))
    assert all(torch.equal(train[i][1], train[i][1]) for i in range(len(train)))
    assert all(torch.equal(val[i][0], val[i][0]) for i in range(len(val)))
    plain = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, augment=False)
    plain.setup("fit")
    assert isinstance(plain.datasets["train"], TensorDataset)
    assert all(torch.equal(plain.datasets["train"][i][0], plain.datasets["train"][i][0]) for i in range(len(plain.datasets["train"])))
    # the augmented module holds the same (unaugmented) images
    assert torch.equal(train.images, plain.datasets["train"].tensors[0])


def test_image_folder_zip_is_extracted_once_and_reads_as_the_folder(tmp_path, monkeypatch):
    folder = make_image_folder(tmp_path / "images", train_per_class=4)
    archive = zip_folder(folder, tmp_path / "images.zip")
    extractions, extractall = [], zipfile.ZipFile.extractall

    def counting_extractall(self, *args, **kwargs):
        extractions.append(self.filename)
        return extractall(self, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "extractall", counting_extractall)

    cache = tmp_path / "cache"
    zipped = ImageFolderDataModule(archive, image_size=32, val_fraction=0.25, augment=False, cache_dir=cache)
    zipped.setup("fit")
    assert len(extractions) == 1 and zipped.folder.parent == cache and (zipped.folder / "train" / "ant").is_dir()
    assert [p.name for p in cache.iterdir()] == [zipped.folder.name]  # no temporary folder left behind
    inode = zipped.folder.stat().st_ino
    again = ImageFolderDataModule(archive, image_size=32, val_fraction=0.25, augment=False, cache_dir=str(cache))
    again.setup("fit")
    assert len(extractions) == 1 and again.folder == zipped.folder and again.folder.stat().st_ino == inode

    plain = ImageFolderDataModule(folder, image_size=32, val_fraction=0.25, augment=False)
    plain.setup("fit")
    expected, got = all_tensors(plain), all_tensors(zipped)
    assert expected.keys() == got.keys() == {"train", "val", "test"}
    for split in expected:
        assert all(torch.equal(a, b) for a, b in zip(expected[split], got[split], strict=True)), split

    # a changed archive is extracted anew
    stat = archive.stat()
    os.utime(archive, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    changed = ImageFolderDataModule(archive, image_size=32, augment=False, cache_dir=cache)
    assert changed.folder != zipped.folder and len(extractions) == 2


def test_image_folder_zip_of_a_folder_reads_the_folder_inside(tmp_path):
    # `zip -r images.zip images/` (macOS adds __MACOSX/): every member under images/
    folder = make_image_folder(tmp_path / "images", train_per_class=4)
    archive = zip_folder(folder, tmp_path / "images.zip", prefix="images/")
    with zipfile.ZipFile(archive, "a") as zipped:
        zipped.writestr("__MACOSX/images/._000.png", b"resource fork")
    dm = ImageFolderDataModule(archive, image_size=32, augment=False, cache_dir=tmp_path / "cache")
    assert dm.folder.name == "images" and (dm.folder / "train").is_dir()
    assert dm.class_names == ("ant", "moth", "zebra")
    dm.setup("fit")
    assert set(fingerprints(dm.datasets["test"])) == {(name, index, TEST_BLUE) for name in CLASSES for index in range(2)}


def test_image_folder_settings_are_checked(tmp_path):
    root = make_image_folder(tmp_path / "images", train_per_class=2, test_per_class=None)
    with pytest.raises(ValueError, match=re.escape("['error', 'skip']")):
        ImageFolderDataModule(root, on_bad="bogus")
    for fraction in (0, 1, -0.1, 1.5):
        with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
            ImageFolderDataModule(root, val_fraction=fraction)
    with pytest.raises(ValueError, match="multiple of 32"):
        ImageFolderDataModule(root, image_size=48)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        ImageFolderDataModule(tmp_path / "nowhere")
    write_image(tmp_path / "one_class" / "train" / "cat" / "0.png")
    with pytest.raises(ValueError, match="one folder per class"):
        ImageFolderDataModule(tmp_path / "one_class").setup("fit")


# ----------------------------------------------------------------------------------------------------------- image folder: bad files
def test_image_folder_unreadable_image_stops_the_run_or_is_skipped(tmp_path):
    root = make_image_folder(tmp_path / "images", train_per_class=4, test_per_class=None)
    broken = root / "train" / "moth" / "broken.jpg"
    broken.write_text("not a JPEG")
    with pytest.raises(BadDataError, match=error_naming(broken, "unreadable image", "data.on_bad=skip")):
        ImageFolderDataModule(root, image_size=32, val_fraction=0.25).setup("fit")
    dm = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, on_bad="skip", augment=False)
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 12
    assert len(dm.bad.skipped["train"]) == 1 and str(broken) in dm.bad.skipped["train"][0]


def test_image_folder_test_class_missing_from_train_stops_the_run_or_is_skipped(tmp_path):
    root = make_image_folder(tmp_path / "images", train_per_class=4, test_per_class=2)
    stray = root / "test" / "whale"
    write_image(stray / "0.png", (255, 255, 255))
    write_image(stray / "1.png", (255, 255, 255))
    with pytest.raises(BadDataError, match=error_naming(stray, "'whale' is not one of the training classes")):
        ImageFolderDataModule(root, image_size=32, val_fraction=0.25).setup("fit")
    dm = ImageFolderDataModule(root, image_size=32, val_fraction=0.25, on_bad="skip", augment=False)
    dm.setup("fit")
    assert dm.num_classes == 3 and len(dm.datasets["test"]) == 6 and len(dm.bad.skipped["test"]) == 1
    assert set(fingerprints(dm.datasets["test"])) == {(name, index, TEST_BLUE) for name in CLASSES for index in range(2)}


# ----------------------------------------------------------------------------------------------------------- COCO
COCO_IMAGES = [  # id, file, (width, height)
    (1, "a.jpg", (64, 32)),
    (2, "b.png", (128, 64)),
    (5, "c.png", (32, 32)),
    (8, "d.jpg", (96, 96)),
    (9, "e.png", (50, 40)),
]


def make_coco(folder: Path, annotations: list[dict], images=COCO_IMAGES, categories=None, name="train.json") -> Path:
    for _, file_name, size in images:
        if not (folder / "images" / file_name).exists():
            write_image(folder / "images" / file_name, (90, 160, 30), size)
    data = {"images": [{"id": i, "file_name": f, "width": w, "height": h} for i, f, (w, h) in images], "annotations": annotations,
            "categories": categories or [{"id": 7, "name": "dog"}, {"id": 3, "name": "cat"}]}
    (folder / name).write_text(json.dumps(data))
    return folder / name


def box(annotation_id: int, image_id: int, category_id: int, bbox, **extra) -> dict:
    return {"id": annotation_id, "image_id": image_id, "category_id": category_id, "bbox": list(bbox), **extra}


GOOD_BOXES = [
    box(1, 1, 7, [10, 8, 20, 16]),
    box(2, 2, 3, [40, 20, 40, 20]),
    box(3, 2, 7, [-0.5, 0, 8.5, 64.5]),  # within the 1-pixel tolerance: clipped to the image
    box(4, 5, 3, [0, 0, 32, 32]),
    box(5, 9, 3, [5, 4, 10, 8]),
]


def coco_module(folder: Path, annotations_path: Path, **kwargs) -> CocoDetectionDataModule:
    return CocoDetectionDataModule(annotations_path, folder / "images", **({"image_size": 32, "val_fraction": 0.2, "batch_size": 2} | kwargs))


def test_coco_labels_in_category_id_order_boxes_scaled_to_xyxy_and_val_held_out(tmp_path):
    dm = coco_module(tmp_path, make_coco(tmp_path, GOOD_BOXES))
    assert dm.num_classes == 2 and dm.class_names == ("cat", "dog") and dm.input_shape == (3, 32, 32)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 1 and dm.datasets["test"] is dm.datasets["val"]
    assert sorted(dm.datasets["train"].indices + dm.datasets["val"].indices) == [0, 1, 2, 3, 4]
    everything = dm.datasets["train"].dataset  # every image, in image-id order
    expected = {  # category 3 -> label 0, 7 -> 1; xywh -> xyxy, times (32 / width, 32 / height)
        0: ([[5.0, 8.0, 15.0, 24.0]], [1]),
        1: ([[10.0, 10.0, 20.0, 20.0], [0.0, 0.0, 2.0, 32.0]], [0, 1]),
        2: ([[0.0, 0.0, 32.0, 32.0]], [0]),
        3: (torch.zeros(0, 4), []),
        4: ([[3.2, 3.2, 9.6, 9.6]], [0]),
    }
    for index, (boxes, labels) in expected.items():
        image, target = everything[index]
        assert image.shape == (3, 32, 32) and 0 <= image.min() and image.max() <= 1
        torch.testing.assert_close(target["boxes"], torch.as_tensor(boxes, dtype=torch.float32).reshape(-1, 4))
        assert target["labels"].dtype == torch.int64 and target["labels"].tolist() == labels
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and isinstance(targets, list) and len(targets) == 2
    assert all(set(t) == {"boxes", "labels"} and t["boxes"].shape[1] == 4 for t in targets)
    # the same seed holds out the same image
    again = coco_module(tmp_path, tmp_path / "train.json")
    again.setup("fit")
    assert again.datasets["val"].indices == dm.datasets["val"].indices


def test_coco_val_and_test_json_are_their_own_splits(tmp_path):
    train = make_coco(tmp_path, GOOD_BOXES)
    val = make_coco(tmp_path, [box(1, 8, 3, [0, 0, 48, 48])], images=[COCO_IMAGES[3]], name="val.json")
    test = make_coco(tmp_path, [box(1, 5, 7, [0, 0, 16, 16])], images=[COCO_IMAGES[2]], name="test.json")
    dm = coco_module(tmp_path, train, val_annotations=val, val_images=tmp_path / "images", test_annotations=test, test_images=tmp_path / "images")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 5 and len(dm.datasets["val"]) == 1 and len(dm.datasets["test"]) == 1
    for split, label in (("val", 0), ("test", 1)):  # 48 px of a 96 px image and 16 px of a 32 px one: 16 px at size 32
        torch.testing.assert_close(dm.datasets[split][0][1]["boxes"], torch.tensor([[0.0, 0.0, 16.0, 16.0]]))
        assert dm.datasets[split][0][1]["labels"].tolist() == [label]
    with pytest.raises(ValueError, match="go together"):
        coco_module(tmp_path, train, val_annotations=val)


def test_coco_settings_are_checked(tmp_path):
    train = make_coco(tmp_path, GOOD_BOXES)
    with pytest.raises(ValueError, match=re.escape("['error', 'skip']")):
        coco_module(tmp_path, train, on_bad="bogus")
    for fraction in (0, 1):
        with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
            coco_module(tmp_path, train, val_fraction=fraction)
    (tmp_path / "not_coco.json").write_text(json.dumps({"images": []}))
    with pytest.raises(ValueError, match="lacks"):
        coco_module(tmp_path, tmp_path / "not_coco.json").setup("fit")


@pytest.mark.parametrize("bad, entry, problem", [
    (box(6, 1, 7, [50, 8, 20, 16]), "annotation id 6 of a.jpg", "lies outside its 64x32 image"),
    (box(6, 2, 3, [-5, 0, 10, 10]), "annotation id 6 of b.png", "lies outside its 128x64 image"),
    (box(6, 1, 4, [1, 1, 5, 5]), "annotation id 6", "unknown category id 4"),
    (box(6, 42, 3, [1, 1, 5, 5]), "annotation id 6", "unknown image id 42"),
    (box(6, 5, 3, [1, 1, 0, 5]), "annotation id 6 of c.png", "has no area"),
], ids=["box-outside", "box-before-origin", "unknown-category", "unknown-image", "empty-box"])
def test_coco_bad_annotation_stops_the_run_or_is_skipped(tmp_path, bad, entry, problem):
    annotations_path = make_coco(tmp_path, [*GOOD_BOXES, bad])
    with pytest.raises(BadDataError, match=error_naming(annotations_path, entry, problem)):
        coco_module(tmp_path, annotations_path).setup("fit")
    dm = coco_module(tmp_path, annotations_path, on_bad="skip")
    dm.setup("fit")
    assert len(dm.bad.skipped["train"]) == 1 and problem in dm.bad.skipped["train"][0]
    everything = dm.datasets["train"].dataset
    assert len(everything) == 5 and sum(len(everything[i][1]["labels"]) for i in range(5)) == len(GOOD_BOXES)
    reference = coco_module(tmp_path, make_coco(tmp_path, GOOD_BOXES, name="good.json"))
    reference.setup("fit")
    assert all(torch.equal(everything[i][1]["boxes"], reference.datasets["train"].dataset[i][1]["boxes"]) for i in range(5))


def test_coco_missing_or_unreadable_image_stops_the_run_or_is_skipped(tmp_path):
    annotations_path = make_coco(tmp_path, GOOD_BOXES)
    missing = tmp_path / "images" / "b.png"
    missing.unlink()
    with pytest.raises(BadDataError, match=error_naming(missing, "image id 2", "unreadable or missing image")):
        coco_module(tmp_path, annotations_path).setup("fit")
    dm = coco_module(tmp_path, annotations_path, on_bad="skip")
    dm.setup("fit")
    assert len(dm.datasets["train"]) + len(dm.datasets["val"]) == 4 and len(dm.bad.skipped["train"]) == 1
    assert sorted(len(dm.datasets["train"].dataset[i][1]["labels"]) for i in range(4)) == [0, 1, 1, 1]  # b.png's two boxes went with it
    missing.write_text("not a PNG")
    with pytest.raises(BadDataError, match=error_naming(missing, "image id 2", "unreadable or missing image")):
        coco_module(tmp_path, annotations_path).setup("fit")


# ----------------------------------------------------------------------------------------------------------- segmentation
def stripes(size: int, values=(0, 1, 2)) -> np.ndarray:
    """A (size, size) mask of vertical stripes cycling through ``values``, one pixel wide."""
    return np.tile(np.asarray(values)[np.arange(size) % len(values)], (size, 1))


def segmentation_mask(size: int, values=(0, 1, 2)) -> np.ndarray:
    """Stripes of ``values`` under an ignored band (the top quarter)."""
    mask = stripes(size, values)
    mask[: size // 4] = IGNORE_INDEX
    return mask


def make_segmentation(root: Path, counts: dict[str, int], size: int = 16, values=(0, 1, 2)) -> Path:
    for split, count in counts.items():
        for index in range(count):
            mask = segmentation_mask(size, values)
            write_image(root / split / "images" / f"{index:02d}.{'jpg' if index % 2 else 'png'}", (40 * index, 80, 120), (size, size))
            write_mask(root / split / "masks" / f"{index:02d}.png", mask, mode="P" if index % 2 else "L")
    return root


def test_segmentation_masks_resized_by_nearest_neighbour_keep_classes_and_ignore(tmp_path):
    root = make_segmentation(tmp_path / "seg", {"train": 5, "test": 2}, size=16)
    dm = SegmentationFolderDataModule(root, num_classes=3, image_size=32, val_fraction=0.2, batch_size=2)
    assert dm.input_shape == (3, 32, 32)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 4 and len(dm.datasets["val"]) == 1 and len(dm.datasets["test"]) == 2
    expected = torch.from_numpy(segmentation_mask(16).repeat(2, 0).repeat(2, 1))  # nearest neighbour at twice the size: every pixel doubled
    for split in ("train", "val", "test"):
        for index in range(len(dm.datasets[split])):
            image, mask = dm.datasets[split][index]
            assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and 0 <= image.min() and image.max() <= 1
            assert mask.shape == (32, 32) and mask.dtype == torch.int64 and torch.equal(mask, expected)
    images, masks = next(iter(dm.train_dataloader()))
    assert images.shape == (2, 3, 32, 32) and masks.shape == (2, 32, 32)

    # halving 64 -> 32 keeps every other pixel (bilinear would blend stripes of 0 and 3, and 255 with them)
    large = make_segmentation(tmp_path / "seg64", {"train": 2, "val": 1}, size=64, values=(0, 3))
    dm = SegmentationFolderDataModule(large, num_classes=4, image_size=32)
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["val"]) == 1 and dm.datasets["test"] is dm.datasets["val"]
    expected = torch.from_numpy(segmentation_mask(64, (0, 3))[1::2, 1::2])
    assert set(expected.unique().tolist()) == {3, IGNORE_INDEX}
    for split in ("train", "val"):
        for _, mask in dm.datasets[split]:
            assert torch.equal(mask, expected)


def test_segmentation_settings_are_checked(tmp_path):
    root = make_segmentation(tmp_path / "seg", {"train": 2})
    with pytest.raises(ValueError, match="num_classes must be >= 2"):
        SegmentationFolderDataModule(root, num_classes=1, image_size=32)
    with pytest.raises(ValueError, match=re.escape("['error', 'skip']")):
        SegmentationFolderDataModule(root, num_classes=3, image_size=32, on_bad="bogus")
    with pytest.raises(ValueError, match="val_fraction must be between 0 and 1"):
        SegmentationFolderDataModule(root, num_classes=3, image_size=32, val_fraction=1.0)
    with pytest.raises(FileNotFoundError, match="train/images"):
        SegmentationFolderDataModule(tmp_path / "empty", num_classes=3)


@pytest.mark.parametrize("kind", ["size", "class-index", "rgb-mask", "unreadable-mask", "missing-mask", "unreadable-image"])
def test_segmentation_bad_pair_stops_the_run_or_is_skipped(tmp_path, kind):
    root = make_segmentation(tmp_path / "seg", {"train": 4}, size=16)
    image_path, mask_path = root / "train" / "images" / "02.png", root / "train" / "masks" / "02.png"
    bad_file, problem = mask_path, {
        "size": "mask size 16x12 differs from its image's 16x16 (02.png)",
        "class-index": "class indices [3, 7] are not in 0..2 (or 255 = ignore)",
        "rgb-mask": "mode RGB is not a single-channel",
        "unreadable-mask": "unreadable or missing mask of 02.png (UnidentifiedImageError",
        "missing-mask": "unreadable or missing mask of 02.png (FileNotFoundError",
        "unreadable-image": "unreadable image (UnidentifiedImageError",
    }[kind]
    if kind == "size":
        write_mask(mask_path, stripes(16)[:12])
    elif kind == "class-index":
        mask = stripes(16)
        mask[0, 0], mask[1, 1] = 3, 7
        write_mask(mask_path, mask)
    elif kind == "rgb-mask":
        write_image(mask_path, (1, 1, 1), (16, 16))
    elif kind == "unreadable-mask":
        mask_path.write_text("not a PNG")
    elif kind == "missing-mask":
        mask_path.unlink()
    else:
        image_path.write_text("not a PNG")
        bad_file = image_path
    with pytest.raises(BadDataError, match=error_naming(bad_file, problem)):
        SegmentationFolderDataModule(root, num_classes=3, image_size=32).setup("fit")
    dm = SegmentationFolderDataModule(root, num_classes=3, image_size=32, val_fraction=0.25, on_bad="skip")
    dm.setup("fit")
    assert len(dm.datasets["train"]) == 2 and len(dm.datasets["val"]) == 1
    assert len(dm.bad.skipped["train"]) == 1 and dm.bad.skipped["train"][0].startswith(str(bad_file))


# ----------------------------------------------------------------------------------------------------------- synthetic
SYNTHETIC = {"image_size": 32, "num_train": 6, "num_val": 3, "num_test": 4, "batch_size": 4}


def test_synthetic_classification_is_deterministic_with_one_object_per_image(tmp_path):
    dm = SyntheticClassificationDataModule(augment=False, seed=1, **SYNTHETIC)
    dm.setup("fit")
    assert dm.num_classes == 3 and dm.class_names == ("rectangle", "ellipse", "triangle") and dm.input_shape == (3, 32, 32)
    assert {split: len(dm.datasets[split]) for split in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 4}
    for split in ("train", "val", "test"):
        images, labels = dm.datasets[split].tensors
        assert images.shape[1:] == (3, 32, 32) and 0 <= images.min() and images.max() <= 1 and set(labels.tolist()) <= {0, 1, 2}
        for scene, label in zip(dm.scenes(split), labels.tolist(), strict=True):
            assert scene.labels.tolist() == [label] and set(np.unique(scene.class_map).tolist()) == {0, label + 1}
    again = SyntheticClassificationDataModule(augment=False, seed=1, **SYNTHETIC)
    again.setup("fit")
    other = SyntheticClassificationDataModule(augment=False, seed=2, **SYNTHETIC)
    other.setup("fit")
    for split in ("train", "val", "test"):
        assert all(torch.equal(a, b) for a, b in zip(dm.datasets[split].tensors, again.datasets[split].tensors, strict=True))
        assert not torch.equal(dm.datasets[split].tensors[0], other.datasets[split].tensors[0])
    assert not torch.equal(dm.datasets["train"].tensors[0][:3], dm.datasets["val"].tensors[0])  # splits are different images
    augmented = SyntheticClassificationDataModule(augment=True, seed=1, **SYNTHETIC)
    augmented.setup("fit")
    assert isinstance(augmented.datasets["train"], AugmentedClassification) and isinstance(augmented.datasets["val"], TensorDataset)
    assert torch.equal(augmented.datasets["train"].images, dm.datasets["train"].tensors[0])


def test_synthetic_detection_is_deterministic_with_boxes_inside_the_image():
    dm = SyntheticDetectionDataModule(seed=0, max_objects=3, **SYNTHETIC)
    dm.setup("fit")
    again = SyntheticDetectionDataModule(seed=0, max_objects=3, **SYNTHETIC)
    again.setup("fit")
    assert dm.num_classes == 3 and {split: len(dm.datasets[split]) for split in ("train", "val", "test")} == {"train": 6, "val": 3, "test": 4}
    for split in ("train", "val", "test"):
        for (image, target), (image2, target2) in zip(dm.datasets[split], again.datasets[split], strict=True):
            assert image.shape == (3, 32, 32) and torch.equal(image, image2) and torch.equal(target["boxes"], target2["boxes"])
            boxes, labels = target["boxes"], target["labels"]
            assert len(labels) <= 3 and set(labels.tolist()) <= {0, 1, 2} and boxes.shape == (len(labels), 4)
            assert (boxes >= 0).all() and (boxes <= 32).all() and (boxes[:, 2:] > boxes[:, :2]).all()
    images, targets = next(iter(dm.train_dataloader()))
    assert images.shape == (4, 3, 32, 32) and isinstance(targets, list) and len(targets) == 4 and set(targets[0]) == {"boxes", "labels"}


def test_synthetic_segmentation_masks_hold_background_and_three_classes():
    dm = SyntheticSegmentationDataModule(seed=0, **SYNTHETIC)
    dm.setup("fit")
    again = SyntheticSegmentationDataModule(seed=0, **SYNTHETIC)
    again.setup("fit")
    assert dm.num_classes == 4 and dm.class_names[0] == "background"
    values = set()
    for split, count in (("train", 6), ("val", 3), ("test", 4)):
        images, masks = dm.datasets[split].tensors
        assert images.shape == (count, 3, 32, 32) and masks.shape == (count, 32, 32) and masks.dtype == torch.int64
        assert torch.equal(masks, again.datasets[split].tensors[1]) and torch.equal(images, again.datasets[split].tensors[0])
        values |= set(masks.unique().tolist())
    assert 0 in values and values <= {0, 1, 2, 3} and len(values) >= 3


@pytest.mark.parametrize("module", [SyntheticClassificationDataModule, SyntheticDetectionDataModule, SyntheticSegmentationDataModule])
def test_synthetic_sizes_are_checked(module):
    for name in ("num_train", "num_val", "num_test"):
        with pytest.raises(ValueError, match=f"data.{name} must be >= 1 image"):
            module(**(SYNTHETIC | {name: 0}))
    with pytest.raises(ValueError, match="must be a multiple of 32 that is >= 32"):
        module(**(SYNTHETIC | {"image_size": 50}))
    with pytest.raises(ValueError, match="batch_size must be >= 1"):
        module(**(SYNTHETIC | {"batch_size": 0}))


@pytest.mark.parametrize("task", ["classification", "detection", "segmentation"])
def test_synthetic_data_is_every_experiments_default(compose_cfg, tmp_path, task):
    cfg = compose_cfg(f"+experiment={task}", f"output_dir={tmp_path}")
    assert cfg.data._target_ == f"lnas.data.Synthetic{task.capitalize()}DataModule"


# ----------------------------------------------------------------------------------------------------------- real CIFAR-10
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def test_cifar10_jpeg_zip_through_the_shipped_config(compose_cfg, shared_data_file, tmp_path):
    archive = shared_data_file("cifar10/cifar10_10k_jpeg.zip")
    cfg = compose_cfg("data=cifar10", f"output_dir={tmp_path}", f"data.cache_dir={tmp_path / 'cache'}")
    assert Path(cfg.data.root) == archive
    dm = instantiate(cfg.data)
    dm.setup("fit")
    assert dm.class_names == CIFAR10_CLASSES and dm.num_classes == 10 and dm.input_shape == (3, 32, 32)
    assert {split: len(dm.datasets[split]) for split in ("train", "val", "test")} == {"train": 9000, "val": 1000, "test": 10000}
    assert isinstance(dm.datasets["train"], AugmentedClassification)
    for split, per_class in (("val", 100), ("test", 1000)):
        images, labels = dm.datasets[split].tensors
        assert images.shape[1:] == (3, 32, 32) and images.dtype == torch.float32 and 0 <= images.min() and images.max() <= 1
        assert torch.bincount(labels, minlength=10).tolist() == [per_class] * 10
        assert images.std() > 0.1  # real photographs, not blank images
    train = dm.datasets["train"]
    assert train.images.shape == (9000, 3, 32, 32) and torch.bincount(train.labels, minlength=10).tolist() == [900] * 10
    assert 0 <= train.images.min() and train.images.max() <= 1 and train[0][0].shape == (3, 32, 32)


def test_coco_crowd_regions_are_left_out_not_reported(tmp_path):
    crowd = box(8, 1, 7, [0, 0, 60, 30], iscrowd=1)
    dm = coco_module(tmp_path, make_coco(tmp_path, [*GOOD_BOXES, crowd]), val_fraction=0.5)
    dm.setup("fit")
    assert dm.bad.skipped == {} and sum(len(t["boxes"]) for d in (dm.datasets["train"], dm.datasets["val"]) for _, t in d) == len(GOOD_BOXES)
