"""Datasets as seeded, stratified train/validation/test splits: ``build_splits(**cfg.data)``.

Registered datasets: ``digits`` (embedded, the default), ``mnist_idx`` (reads the MNIST test set shipped with
psvit, :data:`MNIST_T10K`, unless given a ``root``), ``image_folder`` and ``cifar10``.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from psvit.lazy import lazy_exports

if TYPE_CHECKING:
    from psvit.data.mnist_idx import MNIST_T10K
    from psvit.data.registry import dataset_options, list_datasets, register_dataset
    from psvit.data.splits import DataSplits

__all__ = [
    "MNIST_T10K",
    "DataSplits",
    "build_splits",
    "dataset_options",
    "list_datasets",
    "register_dataset",
    "remember_splits",
]

#: The names this package re-exports, imported on first use (they import torch, which a command need not load to
#: reject its config; :func:`remember_splits` needs none of them).
__getattr__ = lazy_exports(
    __name__,
    {
        "MNIST_T10K": "psvit.data.mnist_idx",
        "DataSplits": "psvit.data.splits",
        "dataset_options": "psvit.data.registry",
        "list_datasets": "psvit.data.registry",
        "register_dataset": "psvit.data.registry",
    },
)


def build_splits(
    name: str,
    *,
    root: str | Path | None = None,
    img_size: int = 16,
    val_fraction: float = 0.2,
    test_fraction: float = 0.2,
    seed: int = 0,
    allow_val_from_train: bool = False,
    held_out: bool = False,
    **options: Any,
) -> DataSplits:
    """Load dataset ``name`` (files under ``root`` unless embedded) at ``img_size`` and split it: val and test
    take ``val_fraction`` / ``test_fraction`` of the samples per class, or, when the dataset has an official test
    split, that is the test split and val takes ``val_fraction`` of the rest. Same ``seed``, same splits.

    ``held_out`` (a pretrained model): val and test are halves of the dataset's held-out part instead, and all
    of its training part is the training split; see :mod:`psvit.data.splits` and ``allow_val_from_train``."""
    key = json.dumps(
        [name, str(root), img_size, val_fraction, test_fraction, seed, allow_val_from_train, held_out, options],
        sort_keys=True,
        default=str,
    )
    if _remembered is not None and key in _remembered:
        return _remembered[key]
    from psvit.data.registry import load_dataset
    from psvit.data.splits import check_fractions, make_splits

    check_fractions(val_fraction, test_fraction)
    data = load_dataset(name, root, img_size, options)
    splits = make_splits(
        data,
        name=name,
        img_size=img_size,
        val_fraction=val_fraction,
        test_fraction=test_fraction,
        seed=seed,
        held_out=held_out,
        allow_val_from_train=allow_val_from_train,
    )
    if _remembered is not None:
        _remembered[key] = splits
    return splits


_remembered: dict[str, DataSplits] | None = None


@contextlib.contextmanager
def remember_splits() -> Iterator[None]:
    """Within this block, :func:`build_splits` reads each dataset once and returns the same splits for the same
    arguments: a command checks its data before any work, then trains on it, without reading the files twice."""
    global _remembered
    outer, _remembered = _remembered, {} if _remembered is None else _remembered
    try:
        yield
    finally:
        _remembered = outer
