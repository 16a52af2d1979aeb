"""``image_folder``: class-per-subfolder images (ImageNet / CIFAR export layout), decoded lazily with PIL.

``root/<class>/**/<image>`` is split three ways. If ``root`` has ``train/`` and ``val/`` (or ``test/``), train gives
train/val and val (or test) the test split, with the class list taken from ``train/``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from psvit.data.datasets import LoadedData, Normalization
from psvit.data.registry import register_dataset
from psvit.errors import DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
TEST_FOLDERS = ("val", "test")


class ImageFolderDataset(Dataset):
    """Image files with labels; each image is read, converted, resized and normalized on access."""

    def __init__(
        self, paths: Sequence[Path], labels: np.ndarray, img_size: int, grayscale: bool, norm: Normalization | None
    ) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.img_size = img_size
        self.grayscale = grayscale
        self.norm = norm

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                img = img.convert("L" if self.grayscale else "RGB")
                img = img.resize((self.img_size, self.img_size), Image.Resampling.BILINEAR)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from None
        image = torch.from_numpy(np.array(img, dtype=np.float32) / 255.0).reshape(self.img_size, self.img_size, -1)
        image = image.permute(2, 0, 1).contiguous()
        return (self.norm(image) if self.norm is not None else image), int(self.labels[index])

    def subset(self, indices: np.ndarray) -> ImageFolderDataset:
        paths = [self.paths[i] for i in indices]
        return ImageFolderDataset(paths, self.labels[indices], self.img_size, self.grayscale, self.norm)


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


def _class_files(root: Path) -> dict[str, list[Path]]:
    """``{class name: sorted image paths}`` for the (non-hidden) subfolders of ``root`` that hold images."""
    found = {d.name: _images(d) for d in sorted(root.iterdir()) if d.is_dir() and not d.name.startswith(".")}
    found = {name: files for name, files in found.items() if files}
    if not found:
        raise DataError(f"{root}: no class subfolders with images (expected {root}/<class>/<image>)")
    return found


def _labelled(root: Path, classes: dict[str, int] | None) -> tuple[list[Path], np.ndarray, dict[str, int]]:
    """The image paths under ``root``'s class folders, their labels and the class indices (``classes``, or the
    folders of ``root`` in sorted order when None)."""
    found = _class_files(root)
    if classes is None:
        classes = {name: i for i, name in enumerate(found)}
    paths: list[Path] = []
    labels: list[int] = []
    for name, files in found.items():
        if name not in classes:
            raise DataError(f"{root / name}: class folder not among the training classes")
        paths += files
        labels += [classes[name]] * len(files)
    return paths, np.array(labels, dtype=np.int64), classes


@register_dataset("image_folder")
def load(
    *,
    root: Path,
    img_size: int,
    grayscale: bool = False,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
) -> LoadedData:
    """Images resized (bilinear) to ``img_size``: RGB (3 channels) or ``grayscale`` (1), scaled to [0, 1], then
    normalized by ``mean``/``std`` (one value per channel) if given."""
    channels = 1 if grayscale else 3
    norm = Normalization.from_options(mean, std, channels)
    test_dir = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if not (root / "train").is_dir():
        test_dir = None
    paths, labels, classes = _labelled(root / "train" if test_dir else root, None)
    pool = ImageFolderDataset(paths, labels, img_size, grayscale, norm)
    test = None
    if test_dir:
        test_paths, test_labels, _ = _labelled(test_dir, classes)
        test = ImageFolderDataset(test_paths, test_labels, img_size, grayscale, norm)
    return LoadedData(pool, test, tuple(classes), channels)
