"""In-memory labelled datasets, what a dataset loader returns, and the image transforms the loaders share."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from psvit.errors import ConfigError

#: Images converted and resized per chunk, to bound the float32 copies of a large uint8 array.
_CHUNK = 4096


class LabelledDataset(Protocol):
    """A dataset of ``(image [C, H, W] float32, int label)`` whose labels are known without decoding images."""

    labels: np.ndarray

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]: ...

    def subset(self, indices: np.ndarray) -> LabelledDataset: ...

    def for_training(self) -> LabelledDataset:
        """The dataset as the training split sees it (with its augmentation, if any)."""


class ArrayDataset(Dataset):
    """Images held in one ``[N, C, H, W]`` float32 tensor with an int64 label array."""

    def __init__(self, images: torch.Tensor, labels: np.ndarray) -> None:
        if len(images) != len(labels):
            raise ValueError(f"{len(images)} images but {len(labels)} labels")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        return self.images[index], int(self.labels[index])

    def subset(self, indices: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.images[torch.as_tensor(indices, dtype=torch.long)], self.labels[indices])

    def for_training(self) -> ArrayDataset:
        return self


@dataclass(frozen=True)
class LoadedData:
    """A loaded dataset before splitting: ``pool`` is split into train/val (and test when ``test`` is None)."""

    pool: LabelledDataset
    test: LabelledDataset | None
    classes: tuple[str, ...]
    in_channels: int


@dataclass(frozen=True)
class Normalization:
    """Per-channel ``(x - mean) / std``."""

    mean: torch.Tensor
    std: torch.Tensor

    @classmethod
    def from_options(
        cls, mean: Sequence[float] | None, std: Sequence[float] | None, channels: int
    ) -> Normalization | None:
        """Validate the ``mean``/``std`` options (both or neither, one value per channel, std > 0)."""
        if mean is None and std is None:
            return None
        if mean is None or std is None:
            raise ConfigError("data options mean and std must be given together")
        m, s = torch.tensor(list(mean), dtype=torch.float32), torch.tensor(list(std), dtype=torch.float32)
        if m.ndim != 1 or len(m) != channels or s.shape != m.shape:
            raise ConfigError(
                f"data options mean and std need {channels} value(s) each (one per image channel), "
                f"got {list(mean)}, {list(std)}; set them, or data.mean=null data.std=null"
            )
        if bool((s <= 0).any()):
            raise ConfigError(f"data option std must be positive, got {list(std)}")
        return cls(m.view(-1, 1, 1), s.view(-1, 1, 1))

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        """Normalize ``[C, H, W]`` or ``[N, C, H, W]`` images."""
        return (images - self.mean) / self.std


def resize(images: torch.Tensor, size: int) -> torch.Tensor:
    """Antialiased bilinear resize of float ``[N, C, H, W]`` images to ``size x size`` (a no-op at that size)."""
    if images.shape[-2:] == (size, size):
        return images
    return F.interpolate(images, size=(size, size), mode="bilinear", align_corners=False, antialias=True)


def images_from_pixels(
    array: np.ndarray, size: int, scale: float = 255.0, norm: Normalization | None = None
) -> torch.Tensor:
    """``[N, C, H, W]`` pixels in ``0..scale`` to float32 images in [0, 1], resized and normalized."""
    out = torch.empty((len(array), array.shape[1], size, size), dtype=torch.float32)
    for start in range(0, len(array), _CHUNK):
        chunk = torch.tensor(array[start : start + _CHUNK], dtype=torch.float32).div_(scale)
        chunk = resize(chunk, size)
        out[start : start + len(chunk)] = norm(chunk) if norm is not None else chunk
    return out
