"""``image_folder``: class-per-subfolder images (ImageNet / CIFAR export layout), decoded lazily with PIL.

``root/<class>/**/<image>`` is split three ways. If ``root`` has ``train/`` and ``val/`` (or ``test/``), train gives
train/val and val (or test) the test split, with the class list taken from ``train/``.

Evaluation preprocessing is the one the official Spikformer ImageNet code gets from timm: resize the shorter side to
``img_size / crop_pct`` (bicubic), centre-crop ``img_size``, scale to [0, 1], normalize (the config's default is
ImageNet's mean and std). With ``augment``, the training split instead takes a random-resized crop (scale 0.08-1,
aspect 3/4-4/3) and a random horizontal flip.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from psvit.data.datasets import LoadedData, Normalization
from psvit.data.registry import register_dataset
from psvit.errors import ConfigError, DataError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})
TEST_FOLDERS = ("val", "test")


INTERPOLATIONS = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
}


@dataclass(frozen=True)
class Preprocess:
    """How a decoded image becomes a tensor: the evaluation resize/crop, and the optional training augmentation."""

    img_size: int
    grayscale: bool = False
    norm: Normalization | None = None
    crop_pct: float = 0.875
    interpolation: str = "bicubic"
    augment: bool = False

    def __post_init__(self) -> None:
        if not 0.0 < self.crop_pct <= 1.0:
            raise ConfigError(f"data.crop_pct must be in (0, 1], got {self.crop_pct}")
        if self.interpolation not in INTERPOLATIONS:
            raise ConfigError(
                f"data.interpolation must be one of {', '.join(INTERPOLATIONS)}, got {self.interpolation!r}"
            )

    def evaluation(self, img: Image.Image) -> Image.Image:
        """Shorter side to ``img_size / crop_pct``, then the centre ``img_size`` square."""
        scale = int(self.img_size / self.crop_pct) / min(img.size)
        w, h = max(self.img_size, round(img.width * scale)), max(self.img_size, round(img.height * scale))
        img = img.resize((w, h), INTERPOLATIONS[self.interpolation])
        left, top = (w - self.img_size) // 2, (h - self.img_size) // 2
        return img.crop((left, top, left + self.img_size, top + self.img_size))

    def training(self, img: Image.Image) -> Image.Image:
        """A random-resized crop (area 8-100 %, aspect 3/4-4/3; else the centre crop) and a random flip."""
        area = img.width * img.height
        for _ in range(10):
            target = area * float(torch.empty(()).uniform_(0.08, 1.0))
            aspect = math.exp(float(torch.empty(()).uniform_(math.log(3 / 4), math.log(4 / 3))))
            w, h = round(math.sqrt(target * aspect)), round(math.sqrt(target / aspect))
            if 0 < w <= img.width and 0 < h <= img.height:
                left = int(torch.randint(0, img.width - w + 1, ()))
                top = int(torch.randint(0, img.height - h + 1, ()))
                img = img.resize(
                    (self.img_size, self.img_size),
                    INTERPOLATIONS[self.interpolation],
                    box=(left, top, left + w, top + h),
                )
                break
        else:
            img = self.evaluation(img)
        return img.transpose(Image.Transpose.FLIP_LEFT_RIGHT) if bool(torch.rand(()) < 0.5) else img

    def __call__(self, img: Image.Image, train: bool) -> torch.Tensor:
        img = img.convert("L" if self.grayscale else "RGB")
        img = self.training(img) if train and self.augment else self.evaluation(img)
        image = torch.from_numpy(np.array(img, dtype=np.float32) / 255.0).reshape(self.img_size, self.img_size, -1)
        image = image.permute(2, 0, 1).contiguous()
        return self.norm(image) if self.norm is not None else image


class ImageFolderDataset(Dataset):
    """Image files with labels; each image is read and preprocessed on access (augmented if ``train``)."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, preprocess: Preprocess, train: bool = False) -> None:
        self.paths = list(paths)
        self.labels = np.asarray(labels, dtype=np.int64)
        self.preprocess = preprocess
        self.train = train

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        path = self.paths[index]
        try:
            with Image.open(path) as img:
                image = self.preprocess(img, self.train)
        except (OSError, UnidentifiedImageError, ValueError) as exc:
            raise DataError(f"{path}: unreadable image ({exc})") from None
        return image, int(self.labels[index])

    def subset(self, indices: np.ndarray) -> ImageFolderDataset:
        paths = [self.paths[i] for i in indices]
        return ImageFolderDataset(paths, self.labels[indices], self.preprocess, self.train)

    def for_training(self) -> ImageFolderDataset:
        """The same images as the training split sees them (augmented when the preprocessing says so)."""
        return ImageFolderDataset(self.paths, self.labels, self.preprocess, train=True)


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
    crop_pct: float = 0.875,
    interpolation: str = "bicubic",
    augment: bool = False,
) -> LoadedData:
    """RGB (3 channels) or ``grayscale`` (1) images preprocessed as the module docstring says, normalized by
    ``mean``/``std`` (one value per channel) if given."""
    channels = 1 if grayscale else 3
    preprocess = Preprocess(
        img_size, grayscale, Normalization.from_options(mean, std, channels), crop_pct, interpolation, augment
    )
    test_dir = next((root / t for t in TEST_FOLDERS if (root / t).is_dir()), None)
    if not (root / "train").is_dir():
        test_dir = None
    paths, labels, classes = _labelled(root / "train" if test_dir else root, None)
    pool = ImageFolderDataset(paths, labels, preprocess)
    test = None
    if test_dir:
        test_paths, test_labels, _ = _labelled(test_dir, classes)
        test = ImageFolderDataset(test_paths, test_labels, preprocess)
    return LoadedData(pool, test, tuple(classes), channels)
