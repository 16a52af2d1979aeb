"""The MLflow ``pyfunc`` of a psvit model: it loads the ``weights_only`` psvit checkpoint logged as an artifact
with :func:`psvit.load` (no pickled Python objects) and predicts logits.

Input: preprocessed images, float32 ``[B, C, H, W]`` (as psvit's data pipeline makes them: resized, scaled to
[0, 1] and normalized with the ``mean``/``std`` recorded in the model's metadata, if any). Output: logits
``[B, classes]`` (the predicted class is their argmax). A request of the wrong shape or dtype, with a NaN or
infinity, or with no image at all is refused with a one-line message (HTTP 400 when served).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from mlflow.exceptions import MlflowException
from mlflow.pyfunc import PythonModel

#: The artifact keys of the logged model.
CHECKPOINT, ONNX = "checkpoint", "onnx"


class PsvitModel(PythonModel):
    """Loads ``artifacts["checkpoint"]`` with :func:`psvit.load`; ``predict`` runs psvit's own forward."""

    def load_context(self, context) -> None:
        import psvit

        self.model = psvit.load(context.artifacts[CHECKPOINT])
        cfg = self.model.config
        self.shape = (int(cfg["in_channels"]), int(cfg["img_size"]), int(cfg["img_size"]))

    # np.ndarray: a hint MLflow infers no schema from (the logged signature is the schema), which also keeps it
    # from warning every user that ``predict`` has none; a dict of one array is accepted too (checked_images)
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import torch

        from psvit.train import predict

        images = checked_images(model_input, self.shape)
        with torch.no_grad():
            return predict(self.model, torch.from_numpy(images)).numpy()


def checked_images(model_input: Any, shape: tuple[int, int, int]) -> np.ndarray:
    """``model_input`` as a float32 ``[B, *shape]`` array with B >= 1 and only finite values; else a one-line
    :class:`MlflowException` (invalid parameter value: HTTP 400)."""
    if isinstance(model_input, dict) and len(model_input) == 1:
        model_input = next(iter(model_input.values()))
    try:
        images = np.asarray(model_input)
    except (TypeError, ValueError) as exc:
        raise MlflowException.invalid_parameter_value(f"images must be a numeric array: {exc}") from None
    want = "x".join(map(str, shape))
    if images.dtype.kind not in "fiu":
        raise MlflowException.invalid_parameter_value(f"images must be float32 numbers, got dtype {images.dtype}")
    if images.ndim != 4 or tuple(images.shape[1:]) != tuple(shape):
        raise MlflowException.invalid_parameter_value(
            f"images must have shape [batch, {', '.join(map(str, shape))}] ({want} images), got {list(images.shape)}"
        )
    if images.shape[0] == 0:
        raise MlflowException.invalid_parameter_value("empty batch: send at least one image")
    images = images.astype(np.float32, copy=False)
    if not np.isfinite(images).all():
        raise MlflowException.invalid_parameter_value("images hold NaN or infinite values")
    return np.ascontiguousarray(images)
