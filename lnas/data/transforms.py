"""Training-time augmentation on image tensors (no PIL): random crop with zero padding and horizontal flip, the
standard CIFAR recipe (He et al., CVPR 2016)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.utils.data import Dataset


def random_crop_flip(image: torch.Tensor, padding: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` (C, H, W) zero-padded by ``padding``, cropped back to (H, W) at a random offset, flipped with probability 1/2."""
    _, height, width = image.shape
    if padding:
        padded = F.pad(image, (padding,) * 4)
        top, left = (int(v) for v in torch.randint(0, 2 * padding + 1, (2,), generator=generator))
        image = padded[:, top:top + height, left:left + width]
    if bool(torch.rand((), generator=generator) < 0.5):
        image = image.flip(-1)
    return image


class AugmentedClassification(Dataset):
    """Images (N, C, H, W) in [0, 1] with labels, augmented by :func:`random_crop_flip` at every access."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, padding: int | None = None) -> None:
        self.images, self.labels = images, labels
        self.padding = images.shape[-1] // 8 if padding is None else padding

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        return random_crop_flip(self.images[index], self.padding), self.labels[index]
