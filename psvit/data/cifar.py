"""``cifar10``: the official CIFAR-10 python format; ``root`` is the ``cifar-10-batches-py`` folder.

The files are Python pickles (as distributed by the dataset's authors). They are read with an unpickler that only
builds numpy arrays, dtypes and plain Python values, so a tampered file cannot run code: it is refused.
"""

from __future__ import annotations

import pickle
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from psvit.data.datasets import ArrayDataset, LoadedData, Normalization, images_from_pixels
from psvit.data.registry import register_dataset
from psvit.errors import DataError

TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"
SIDE = 32
PIXELS = 3 * SIDE * SIDE


#: The only globals a CIFAR batch may name: what numpy pickles arrays and scalars with (numpy 1 and 2 paths).
_ALLOWED_GLOBALS = frozenset(
    {
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),
        *((f"numpy.{core}.multiarray", name) for core in ("core", "_core") for name in ("_reconstruct", "scalar")),
        *((f"numpy.{core}.numeric", "_frombuffer") for core in ("core", "_core")),
    }
)


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles numpy arrays and plain values; any other global (a callable a payload could run) is refused."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"refused to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(path: Path) -> dict[bytes, Any]:
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with path.open("rb") as f:
            content = _ArrayUnpickler(f, encoding="bytes").load()
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError) as exc:
        raise DataError(f"{path}: unreadable CIFAR pickle ({exc})") from None
    if not isinstance(content, dict):
        raise DataError(f"{path}: not a CIFAR pickle (a {type(content).__name__}, not a dict)")
    return content


def _read_batch(path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """``[N, 3, 32, 32]`` uint8 images and int64 labels (checked to be below ``num_classes``) of one batch file."""
    content = _unpickle(path)
    try:
        data = np.asarray(content[b"data"])
        labels = np.asarray(content[b"labels"], dtype=np.int64)
    except KeyError as exc:
        raise DataError(f"{path}: CIFAR batch without the {exc} key") from None
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != PIXELS or len(data) != len(labels):
        raise DataError(
            f"{path}: expected uint8 data [N, {PIXELS}] and N labels, got {data.dtype} {list(data.shape)} "
            f"and {len(labels)} labels"
        )
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"{path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, SIDE, SIDE), labels


def _dataset(
    batches: Sequence[tuple[np.ndarray, np.ndarray]], img_size: int, norm: Normalization | None
) -> ArrayDataset:
    images = np.concatenate([b[0] for b in batches])
    return ArrayDataset(images_from_pixels(images, img_size, norm=norm), np.concatenate([b[1] for b in batches]))


@register_dataset("cifar10")
def load(
    *, root: Path, img_size: int, mean: Sequence[float] | None = None, std: Sequence[float] | None = None
) -> LoadedData:
    """``data_batch_1..5`` for train/val and ``test_batch`` as the test split, scaled to [0, 1], resized
    (antialiased bilinear) to ``img_size`` and normalized by ``mean``/``std`` if given."""
    norm = Normalization.from_options(mean, std, 3)
    names = _unpickle(root / META).get(b"label_names")
    if not isinstance(names, list) or not names:
        raise DataError(f"{root / META}: no label_names list")
    classes = tuple(n.decode() if isinstance(n, bytes) else str(n) for n in names)
    pool = _dataset([_read_batch(root / name, len(classes)) for name in TRAIN_BATCHES], img_size, norm)
    test = _dataset([_read_batch(root / TEST_BATCH, len(classes))], img_size, norm)
    return LoadedData(pool, test, classes, in_channels=3)
