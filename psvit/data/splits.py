"""Seeded stratified train/validation/test splitting and the :class:`DataSplits` result."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import Dataset

from psvit.data.datasets import LoadedData
from psvit.errors import DataError


@dataclass(frozen=True)
class DataSplits:
    """Train/validation/test datasets of ``(image float32 [C, H, W], int label)`` and their shape."""

    train: Dataset
    val: Dataset
    test: Dataset
    num_classes: int
    in_channels: int
    img_size: int
    name: str
    classes: tuple[str, ...] = ()

    def val_subset(self, fraction: float, seed: int = 0) -> Dataset:
        """A fixed, stratified ``fraction`` of the validation split (the split itself when ``fraction`` is 1):
        the same ``seed`` always gives the same images, in every worker."""
        if not 0.0 < fraction <= 1.0:
            raise DataError(f"a validation subset fraction must be in (0, 1], got {fraction}")
        if fraction == 1.0:
            return self.val
        _, _, part = stratified_split(self.val.labels, 0.0, fraction, seed)
        if not len(part):
            raise DataError(f"a {fraction} subset of {len(self.val)} validation images is empty; raise the fraction")
        return self.val.subset(part)

    def describe(self) -> str:
        """One line: split sizes, class count and image shape."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, {self.in_channels}x{self.img_size}x{self.img_size} images"
        )


def check_fractions(val_fraction: float, test_fraction: float) -> None:
    """Both fractions in [0, 1) and leaving part of the data for training."""
    for key, value in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not 0.0 <= value < 1.0:
            raise DataError(f"bad split fractions: {key} must be in [0, 1), got {value}")
    if val_fraction + test_fraction >= 1.0:
        raise DataError(
            f"bad split fractions: val_fraction + test_fraction must be < 1, got {val_fraction} + {test_fraction}"
        )


def _allocate(counts: np.ndarray, total: int) -> np.ndarray:
    """Split ``total`` over classes proportionally to ``counts`` (largest remainder; ties to the lower class)."""
    exact = counts * (total / max(int(counts.sum()), 1))
    alloc = np.floor(exact).astype(np.int64)
    order = np.argsort(-(exact - alloc), kind="stable")
    alloc[order[: total - int(alloc.sum())]] += 1
    return alloc


def stratified_split(
    labels: np.ndarray, val_fraction: float, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Sorted train/val/test index arrays: each holds every class in proportion (within one sample), the val and
    test sizes are ``round(n * fraction)``, and the same ``seed`` gives the same split."""
    labels = np.asarray(labels)
    n = len(labels)
    classes, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
    test_counts = _allocate(counts, round(n * test_fraction))
    rest = counts - test_counts
    val_counts = _allocate(rest, min(round(n * val_fraction), int(rest.sum())))
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {"train": [], "val": [], "test": []}
    for c in range(len(classes)):
        idx = rng.permutation(np.flatnonzero(inverse == c))
        val_start, train_start = test_counts[c], test_counts[c] + val_counts[c]
        parts["test"].append(idx[:val_start])
        parts["val"].append(idx[val_start:train_start])
        parts["train"].append(idx[train_start:])
    train, val, test = (np.sort(np.concatenate(p)) if p else np.empty(0, np.int64) for p in parts.values())
    if n and not len(train):
        raise DataError(f"bad split fractions: no training samples left out of {n}")
    return train, val, test


def make_splits(
    data: LoadedData, *, name: str, img_size: int, val_fraction: float, test_fraction: float, seed: int
) -> DataSplits:
    """Split ``data.pool`` into train/val(/test); an official ``data.test`` is kept whole as the test split."""
    official = data.test is not None
    train, val, test = stratified_split(data.pool.labels, val_fraction, 0.0 if official else test_fraction, seed)
    return DataSplits(
        train=data.pool.subset(train).for_training(),
        val=data.pool.subset(val),
        test=data.test if official else data.pool.subset(test),
        num_classes=len(data.classes),
        in_channels=data.in_channels,
        img_size=img_size,
        name=name,
        classes=data.classes,
    )
