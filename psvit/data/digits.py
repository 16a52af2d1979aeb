"""``digits``: scikit-learn's embedded 1797 real 8x8 handwritten digits (values 0..16), one channel."""

from __future__ import annotations

import numpy as np

from psvit.data.datasets import ArrayDataset, LoadedData, images_from_pixels
from psvit.data.registry import register_dataset

#: Largest pixel value in the digits images.
DIGITS_MAX = 16.0


@register_dataset("digits")
def load(*, img_size: int) -> LoadedData:
    """All digits scaled to [0, 1] and bilinearly resized to ``img_size``; there is no official test split."""
    from sklearn.datasets import load_digits  # scikit-learn takes seconds to import: only when digits are read

    bunch = load_digits()
    pixels = bunch.images[:, None].astype(np.float32)
    images = images_from_pixels(pixels, img_size, scale=DIGITS_MAX)
    classes = tuple(str(c) for c in bunch.target_names)
    return LoadedData(ArrayDataset(images, bunch.target), None, classes, in_channels=1)
