"""Data-free mode (``data=characteristics``): the characteristics of the user's data stand in for the data itself.

The input shape, the number of classes and, for detection, the range of object sizes are all the search needs to build
candidates, score them with data-free proxies (those whose published definition feeds the network synthetic inputs:
SynFlow's all-ones input, Zen-NAS's and AZ-NAS's Gaussian inputs, FLOPs, params) and measure their latency. Its batches
are Gaussian noise of that shape with no targets, so the supernet module trains nothing on them.
"""

from __future__ import annotations

from collections.abc import Sequence

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from lnas.data.base import check_image_size
from lnas.spaces.base import FeatureInfo


class NoiseImages(Dataset):
    """``count`` standard-normal images of ``shape``, fixed by ``seed``."""

    def __init__(self, count: int, shape: tuple[int, int, int], seed: int) -> None:
        self.images = torch.randn((count, *shape), generator=torch.Generator().manual_seed(seed))

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.images[index]


def collate_without_targets(images: Sequence[torch.Tensor]) -> tuple[torch.Tensor, None]:
    """A batch of images and no targets (``None``): nothing to train or evaluate on."""
    return torch.stack(list(images)), None


class DataCharacteristics(L.LightningDataModule):
    """The input shape (``channels`` x ``image_size`` x ``image_size``), ``num_classes`` and, for detection,
    ``object_sizes`` (the smallest and largest object side in pixels) of data the search never sees.

    ``data_free`` tells the main job to search without training (see :mod:`lnas.data.characteristics`).
    """

    data_free = True
    EXAMPLE = "data=characteristics data.image_size=128 data.num_classes=10 [data.object_sizes=[8,96] for detection]"

    def __init__(self, image_size: int | None = None, num_classes: int | None = None, channels: int = 3,
                 object_sizes: Sequence[int] | None = None, batch_size: int = 16, num_batches: int = 8, seed: int = 0) -> None:
        super().__init__()
        missing = [name for name, value in (("image_size", image_size), ("num_classes", num_classes)) if value is None]
        if missing:
            raise ValueError(f"data=characteristics: missing {missing}; give the input's side in pixels and the number of classes, "
                             f"e.g. {self.EXAMPLE}")
        if num_classes < 1 or channels < 1 or batch_size < 1 or num_batches < 1:
            raise ValueError(f"data=characteristics: num_classes, channels, batch_size and num_batches must be >= 1; got {num_classes}, "
                             f"{channels}, {batch_size}, {num_batches}")
        self.image_size, self.num_classes, self.channels = check_image_size(image_size), int(num_classes), int(channels)
        self.object_sizes = self._object_sizes(object_sizes, self.image_size)
        self.batch_size, self.num_batches, self.seed = batch_size, num_batches, seed

    @staticmethod
    def _object_sizes(sizes: Sequence[int] | None, image_size: int) -> tuple[int, int] | None:
        if sizes is None:
            return None
        sizes = tuple(int(s) for s in sizes)
        if len(sizes) != 2 or not 1 <= sizes[0] <= sizes[1] <= image_size:
            raise ValueError(f"data.object_sizes must be [smallest, largest] object side in pixels with 1 <= smallest <= largest <= "
                             f"image_size ({image_size}); got {list(sizes)}")
        return sizes

    def check_task(self, task_name: str, feature_info: Sequence[FeatureInfo]) -> None:
        """Detection needs the object sizes, and its finest feature stride (of ``feature_info``, the space's outputs)
        must not exceed the smallest object, or such objects may fall between the head's anchor points."""
        if task_name != "detection":
            return
        if self.object_sizes is None:
            raise ValueError(f"data=characteristics for detection: missing object_sizes (the smallest and largest object side in pixels), "
                             f"e.g. {self.EXAMPLE}")
        finest = min(info.reduction for info in feature_info)
        if self.object_sizes[0] < finest:
            raise ValueError(f"data.object_sizes: objects of {self.object_sizes[0]} px are smaller than the finest feature stride of this "
                             f"space ({finest} px): use a space with a finer output (space.out_indices) or give sizes >= {finest}")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.channels, self.image_size, self.image_size

    def describe(self) -> str:
        sizes = f", objects {self.object_sizes[0]}-{self.object_sizes[1]} px" if self.object_sizes else ""
        return f"input {list(self.input_shape)}, {self.num_classes} classes{sizes}"

    def _loader(self) -> DataLoader:
        return DataLoader(NoiseImages(self.batch_size * self.num_batches, self.input_shape, self.seed), batch_size=self.batch_size,
                          collate_fn=collate_without_targets)

    def train_dataloader(self) -> DataLoader:
        return self._loader()

    def test_dataloader(self) -> DataLoader:
        """The same noise (the ONNX export is checked on it); there is nothing to test on."""
        return self._loader()
