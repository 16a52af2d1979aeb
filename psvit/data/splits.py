"""Seeded stratified train/validation/test splitting and the :class:`DataSplits` result.

Two split policies (:data:`SPLIT_POLICIES`):

* ``from-train`` (a base model trained by psvit): validation is ``val_fraction`` of the training part; the test
  split is the dataset's held-out part (``val/``, ``t10k-``, CIFAR's test batch) or ``test_fraction`` of the pool.
* ``held-out`` (a pretrained ``model.checkpoint``, which saw the training part): validation and test are a fixed,
  stratified, seeded half each of the held-out part, and fine-tuning uses all of the training part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

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
    policy: str = "from-train"  #: how val and test were drawn (module docstring)
    #: ``{"val"|"test": (part, indices)}``: where each evaluation split's images come from ("train" or
    #: "held-out" part of the dataset) and their indices in that part
    members: dict[str, tuple[str, np.ndarray]] = field(default_factory=dict, repr=False, compare=False)
    #: why a pretrained checkpoint may have seen the validation images ("" when it cannot have)
    leak: str = ""

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

    @property
    def has_held_out_part(self) -> bool:
        """Whether the dataset has a held-out part (image_folder ``val/``, mnist_idx ``t10k-``, CIFAR's test batch)."""
        return self.members.get("test", ("train",))[0] == "held-out"

    def describe(self) -> str:
        """One line: split sizes, class count, image shape and the split policy when it is not ``from-train``."""
        return (
            f"{self.name}: {len(self.train)} train / {len(self.val)} val / {len(self.test)} test, "
            f"{self.num_classes} classes, {self.in_channels}x{self.img_size}x{self.img_size} images"
            + (f", split {self.policy}" if self.policy != "from-train" else "")
        )

    def listing(self) -> str:
        """The validation and test members as TSV: ``split, part, index, label, file`` (file: the image's path
        for image folders, empty for in-memory data), one row per image."""
        rows = ["split\tpart\tindex\tlabel\tfile"]
        for split, (part, indices) in self.members.items():
            dataset = getattr(self, split)
            paths = getattr(dataset, "paths", None) or [""] * len(dataset)
            rows += [
                f"{split}\t{part}\t{i}\t{label}\t{path}"
                for i, label, path in zip(indices.tolist(), dataset.labels.tolist(), paths)
            ]
        return "\n".join(rows) + "\n"

    def write_listing(self, path: Path) -> Path:
        """:meth:`listing` to ``path`` (written atomically by renaming a sibling temporary file)."""
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(self.listing())
        tmp.replace(path)
        return path


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


#: The split policies (module docstring).
SPLIT_POLICIES = ("from-train", "held-out")
#: The share of the held-out part that is the validation split under the ``held-out`` policy (the rest: test).
HELD_OUT_VAL_SHARE = 0.5


def make_splits(
    data: LoadedData,
    *,
    name: str,
    img_size: int,
    val_fraction: float,
    test_fraction: float,
    seed: int,
    held_out: bool = False,
    allow_val_from_train: bool = False,
) -> DataSplits:
    """Split ``data`` by the ``held-out`` policy when ``held_out`` is asked for and the dataset has a held-out part,
    else by ``from-train`` (module docstring). Asked for ``held_out`` without a held-out part, the splits say in
    ``leak`` why a pretrained model's validation would leak, unless ``allow_val_from_train``."""
    official = data.test is not None
    common = {
        "num_classes": len(data.classes),
        "in_channels": data.in_channels,
        "img_size": img_size,
        "name": name,
        "classes": data.classes,
    }
    if held_out and official:
        test, _, val = stratified_split(data.test.labels, 0.0, HELD_OUT_VAL_SHARE, seed)
        return DataSplits(
            train=data.pool.for_training(),
            val=data.test.subset(val),
            test=data.test.subset(test),
            policy="held-out",
            members={"val": ("held-out", val), "test": ("held-out", test)},
            **common,
        )
    train, val, test = stratified_split(data.pool.labels, val_fraction, 0.0 if official else test_fraction, seed)
    leak = ""
    if held_out and not allow_val_from_train:
        leak = (
            f"{name}: model.checkpoint was trained on images that the validation split ({val_fraction} of "
            f"this dataset) would come from, as the dataset has no held-out part (image_folder train/ + val/, "
            f"mnist_idx train- + t10k-); use such a dataset, or set data.allow_val_from_train=true to accept it"
        )
    return DataSplits(
        train=data.pool.subset(train).for_training(),
        val=data.pool.subset(val),
        test=data.test if official else data.pool.subset(test),
        policy="from-train",
        members={
            "val": ("train", val),
            "test": ("held-out", np.arange(len(data.test))) if official else ("train", test),
        },
        leak=leak,
        **common,
    )
