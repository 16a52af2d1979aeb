"""``mnist_idx``: MNIST-format IDX files (MNIST, Fashion-MNIST, ...), raw or gzip, one channel.

``root`` holds ``<prefix>images-idx3-ubyte[.gz]`` with a matching ``<prefix>labels-idx1-ubyte[.gz]``. With both
``train-`` and ``t10k-`` files, train gives train/val and t10k the test split; a single pair is split three ways.
Without ``root``, the MNIST test set shipped with psvit (:data:`MNIST_T10K`, 10,000 images) is read.
"""

from __future__ import annotations

import gzip
import re
import zlib
from pathlib import Path

import numpy as np

from psvit.data.datasets import ArrayDataset, LoadedData, images_from_pixels
from psvit.data.registry import register_dataset
from psvit.errors import DataError

#: IDX magic: two zero bytes, the element type (0x08 = unsigned byte) and the number of dimensions.
UBYTE = 0x08
#: The MNIST test set (10,000 images, IDX gzip) shipped inside the package: the default ``root``.
MNIST_T10K = Path(__file__).resolve().parent / "mnist_t10k"
_IMAGES = re.compile(r"^(?P<prefix>.*)images[-.]idx3-ubyte(?:\.gz)?$")


def _read_bytes(path: Path) -> bytes:
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as f:
                return f.read()
        return path.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{path}: unreadable IDX file ({exc})") from None


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """The uint8 array of an IDX file with ``ndim`` dimensions, after checking its magic number and size."""
    raw = _read_bytes(path)
    header = 4 + 4 * ndim
    if len(raw) < header or raw[:4] != bytes([0, 0, UBYTE, ndim]):
        raise DataError(f"{path}: not an IDX file of {ndim}-D unsigned bytes (bad magic number {raw[:4].hex()})")
    shape = tuple(int(d) for d in np.frombuffer(raw, ">u4", count=ndim, offset=4))
    expected = header + int(np.prod(shape))
    if len(raw) != expected:
        raise DataError(f"{path}: {len(raw)} bytes where shape {shape} needs {expected} (truncated or corrupt)")
    return np.frombuffer(raw, np.uint8, offset=header).reshape(shape)


def _find(root: Path, stem: str) -> Path:
    """``root/stem`` raw if present, else gzipped."""
    for path in (root / stem, root / f"{stem}.gz"):
        if path.is_file():
            return path
    raise DataError(f"{root / stem}[.gz]: no such file (the labels matching the images)")


def _read_pair(root: Path, prefix: str, sep: str) -> tuple[np.ndarray, np.ndarray]:
    images_path = _find(root, f"{prefix}images{sep}idx3-ubyte")
    labels_path = _find(root, f"{prefix}labels{sep}idx1-ubyte")
    images, labels = read_idx(images_path, 3), read_idx(labels_path, 1)
    if not len(images):
        raise DataError(f"{images_path}: no images")
    if len(images) != len(labels):
        raise DataError(f"{images_path}: {len(images)} images but {labels_path} has {len(labels)} labels")
    return images, labels


def _dataset(images: np.ndarray, labels: np.ndarray, img_size: int) -> ArrayDataset:
    return ArrayDataset(images_from_pixels(images[:, None], img_size), labels.astype(np.int64))


@register_dataset("mnist_idx", default_root=MNIST_T10K)
def load(*, root: Path, img_size: int) -> LoadedData:
    """The IDX pairs in ``root``, scaled to [0, 1] and resized (antialiased bilinear) to ``img_size``."""
    pairs: dict[str, str] = {}  # file-name prefix -> separator before "idx3"
    for path in sorted(root.iterdir()):
        match = _IMAGES.match(path.name)
        if match:
            sep = path.name[match.end("prefix") + len("images")]
            pairs.setdefault(match["prefix"], sep)
    if not pairs:
        raise DataError(f"{root}: no *images-idx3-ubyte[.gz] file")
    if len(pairs) == 1:
        ((prefix, sep),) = pairs.items()
        pool, test = _read_pair(root, prefix, sep), None
    elif set(pairs) == {"train-", "t10k-"}:
        pool, test = _read_pair(root, "train-", pairs["train-"]), _read_pair(root, "t10k-", pairs["t10k-"])
    else:
        raise DataError(f"{root}: several IDX image files ({', '.join(sorted(pairs))}); expected train- and t10k-")
    labels = np.concatenate([pool[1], test[1]]) if test else pool[1]
    classes = tuple(str(c) for c in range(int(labels.max()) + 1))
    return LoadedData(_dataset(*pool, img_size), _dataset(*test, img_size) if test else None, classes, in_channels=1)
