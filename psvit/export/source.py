"""What an export starts from: a psvit checkpoint and the data it was made with (recorded in its ``meta``)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from psvit import checkpoint
from psvit.data import DataSplits, build_splits
from psvit.errors import CheckpointError, ConfigError

#: The checkpoint ``meta`` key holding the data config a pruned model was made with (see ``workflow.finish``).
DATA_KEY = "data"
#: Keys of the recorded data config that are not arguments of :func:`psvit.data.build_splits`.
_RECORD_ONLY = ("in_channels",)


@dataclass(frozen=True)
class Source:
    """A loaded psvit model, its checkpoint's ``meta`` and the data config its inputs come from."""

    path: Path
    model: nn.Module
    meta: dict[str, Any]
    data: dict[str, Any]

    @property
    def input_shape(self) -> tuple[int, int, int]:
        """``(C, H, W)`` of one input image."""
        cfg = self.model.config
        return (int(cfg["in_channels"]), int(cfg["img_size"]), int(cfg["img_size"]))

    def splits(self) -> DataSplits:
        """The train/validation/test splits of the recorded data config."""
        return data_splits(self.data)

    def images(self, count: int) -> torch.Tensor:
        """The first ``count`` test images of the recorded data (preprocessed as in training), as one batch."""
        return sample_images(self.data, count, self.input_shape)


def open_source(path: str | os.PathLike, data: dict[str, Any] | None = None) -> Source:
    """Load the checkpoint at ``path`` and take its recorded data config, or ``data`` when given (checkpoints
    written before psvit recorded it need that)."""
    path = checkpoint.existing(path)
    meta = dict(checkpoint.read(path).get("meta") or {})
    model = checkpoint.load(path)
    recorded = meta.get(DATA_KEY)
    if data is None and not isinstance(recorded, dict):
        raise CheckpointError(
            f"{path} does not record the data config it was made with (written before psvit "
            "recorded it); name it: data=<name> with its options, e.g. data=digits data.img_size=16"
        )
    return Source(path, model, meta, dict(data if data is not None else recorded))


def data_splits(data: dict[str, Any]) -> DataSplits:
    """:func:`psvit.data.build_splits` of a recorded data config."""
    return build_splits(**{k: v for k, v in data.items() if k not in _RECORD_ONLY})


def sample_images(data: dict[str, Any], count: int, shape: tuple[int, int, int]) -> torch.Tensor:
    """``count`` test images (all of them if fewer) of data config ``data``; a one-line error unless they have the
    model's input ``shape``."""
    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise ConfigError(f"the number of parity images must be a positive integer, got {count!r}")
    splits = data_splits(data)
    found = (splits.in_channels, splits.img_size, splits.img_size)
    if found != tuple(shape):
        raise ConfigError(
            f"the data gives {'x'.join(map(str, found))} images but the model takes "
            f"{'x'.join(map(str, shape))}; set data.* to the data the model was made with"
        )
    test = splits.test
    return torch.stack([test[i][0] for i in range(min(count, len(test)))])
