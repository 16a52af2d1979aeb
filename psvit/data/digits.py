"""``digits``: scikit-learn's embedded 1797 real 8x8 handwritten digits (values 0..16), one channel."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from psvit.data.datasets import ArrayDataset, LoadedData, images_from_pixels
from psvit.data.registry import register_dataset

#: Largest pixel value in the digits images.
DIGITS_MAX = 16.0


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 digit images ``(N, 8, 8)`` and their labels, as ``sklearn.datasets.load_digits`` gives them.

    Read straight from the ``digits.csv.gz`` that scikit-learn ships (found without importing scikit-learn, whose
    import takes about a second, paid by every command on the default data); through ``load_digits`` if the file
    is not where scikit-learn keeps it."""
    spec = importlib.util.find_spec("sklearn")
    folders = list(spec.submodule_search_locations or []) if spec else []
    for folder in folders:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            data = np.loadtxt(path, delimiter=",")
            return data[:, :-1].reshape(-1, 8, 8), data[:, -1].astype(int)
    from sklearn.datasets import load_digits

    bunch = load_digits()
    return bunch.images, bunch.target


@register_dataset("digits")
def load(*, img_size: int) -> LoadedData:
    """All digits scaled to [0, 1] and bilinearly resized to ``img_size``; there is no official test split."""
    images, labels = digits_arrays()
    pixels = images[:, None].astype(np.float32)
    classes = tuple(str(c) for c in range(10))
    return LoadedData(
        ArrayDataset(images_from_pixels(pixels, img_size, scale=DIGITS_MAX), labels), None, classes, in_channels=1
    )
