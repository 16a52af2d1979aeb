"""A psvit model as an MLflow Model: logged (MLflow 3's logged model, a ``pyfunc`` with a signature, an input
example, the ``weights_only`` checkpoint and the ONNX file as artifacts) and optionally registered with tags.

The pyfunc is a model from code (:mod:`psvit.export.model_code`, class :class:`psvit.export.pyfunc.PsvitModel`):
loading it needs psvit and MLflow (its pip requirements), and no pickle.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from psvit.export.pyfunc import CHECKPOINT, ONNX
from psvit.tracking import import_mlflow

#: The logged model's name inside its run (MLflow 3: ``log_model(name=...)``).
MODEL_NAME = "model"
#: How many input images the model's input example holds.
EXAMPLE_IMAGES = 2
PROGRESS_ENV = "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"


@dataclass(frozen=True)
class LoggedModel:
    """Where the logged model is (``models:/<model_id>``) and, if registered, its registry name and version."""

    model_uri: str
    model_id: str
    registered_name: str | None = None
    version: int | None = None

    @property
    def registry_uri(self) -> str | None:
        return f"models:/{self.registered_name}/{self.version}" if self.registered_name else None


@contextlib.contextmanager
def no_progress_bars() -> Iterator[None]:
    """MLflow's artifact download bars, which it shows while it validates a model's input example."""
    old = os.environ.get(PROGRESS_ENV)
    os.environ[PROGRESS_ENV] = "false"
    try:
        yield
    finally:
        if old is None:
            os.environ.pop(PROGRESS_ENV, None)
        else:
            os.environ[PROGRESS_ENV] = old


def signature(shape: tuple[int, int, int], num_classes: int):
    """Images float32 ``[-1, C, H, W]`` in, logits float32 ``[-1, classes]`` out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *shape))]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, num_classes))]),
    )


def pip_requirements() -> list[str]:
    """psvit (which brings torch and spikingjelly) and the MLflow that logged the model."""
    import psvit

    return [f"psvit=={psvit.__version__}", f"mlflow=={import_mlflow().__version__}"]


def log_model(
    checkpoint: str | os.PathLike,
    images: np.ndarray,
    *,
    onnx: str | os.PathLike | None = None,
    metadata: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    tags: dict[str, Any] | None = None,
) -> LoggedModel:
    """Log the psvit checkpoint at ``checkpoint`` as a pyfunc MLflow Model in the active run (``images``: real
    preprocessed inputs, the first :data:`EXAMPLE_IMAGES` become the input example)."""
    import psvit

    mlflow = import_mlflow()
    model = psvit.load(checkpoint)
    cfg = model.config
    shape = (int(cfg["in_channels"]), int(cfg["img_size"]), int(cfg["img_size"]))
    artifacts = {CHECKPOINT: str(checkpoint), **({ONNX: str(onnx)} if onnx is not None else {})}
    code = Path(__file__).with_name("model_code.py")
    with no_progress_bars():
        info = mlflow.pyfunc.log_model(
            name=MODEL_NAME,
            python_model=str(code),
            artifacts=artifacts,
            signature=signature(shape, int(cfg["num_classes"])),
            input_example=np.ascontiguousarray(images[:EXAMPLE_IMAGES], dtype=np.float32),
            pip_requirements=pip_requirements(),
            metadata={"psvit": {"model": model.model_name, **(metadata or {})}},
            params={k: str(v) for k, v in (params or {}).items()} or None,
            tags={k: str(v) for k, v in (tags or {}).items()} or None,
        )
    return LoggedModel(info.model_uri, info.model_id)


def register(logged: LoggedModel, name: str, tags: dict[str, Any]) -> LoggedModel:
    """Register ``logged`` as a new version of registered model ``name``, its version tagged with ``tags``."""
    with no_progress_bars():
        version = import_mlflow().register_model(logged.model_uri, name, tags={k: str(v) for k, v in tags.items()})
    return LoggedModel(logged.model_uri, logged.model_id, name, int(version.version))
