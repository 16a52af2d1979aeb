"""Where and how tensors are computed: the device, mixed precision, evaluation batch size and data loading.

One :class:`Compute` is made from the ``device`` option and the ``compute`` config group and handed to every
step (base model, pruning, sensitivity, trials, fine-tuning), so all of them run on the same device.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from psvit.errors import ConfigError, PsvitError
from psvit.models.lif import lif_backend

#: ``compute.amp`` values and the autocast dtype each one means (``None``: float32, no autocast).
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
#: Most DataLoader workers ``num_workers: null`` picks for datasets that decode files.
MAX_AUTO_WORKERS = 8


def resolve_device(device: str | torch.device = "auto") -> torch.device:
    """``"auto"`` picks CUDA when available, else CPU; anything else is passed to ``torch.device``.

    Asking for CUDA on a machine without it is a one-line :class:`ConfigError`.
    """
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise ConfigError(f"device must be auto, cpu, cuda or cuda:<index>, got {device!r}") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device} but this machine has no CUDA GPU that torch can use; use device=auto")
    return dev


class UserErrorLoader(DataLoader):
    """A DataLoader whose worker processes' user errors (a corrupt image, say) surface as the one-line error they
    were, not wrapped in the worker's traceback."""

    def __iter__(self) -> Iterator:
        batches = super().__iter__()
        while True:
            try:
                batch = next(batches)
            except StopIteration:
                return
            except PsvitError as exc:  # the message is "Caught X in DataLoader worker ...\n<traceback>\nX: msg"
                last = str(exc).strip().splitlines()[-1]
                raise type(exc)(last.split(": ", 1)[-1] if last.startswith("psvit.") else str(exc)) from None
            yield batch


def device_name(device: torch.device) -> str:
    """``cpu``, or ``cuda:0 (<GPU name>)``."""
    return f"{device} ({torch.cuda.get_device_name(device)})" if device.type == "cuda" else str(device)


@dataclass(frozen=True)
class Compute:
    """The device, the autocast precision (``amp``: None, ``"bf16"`` or ``"fp16"``), ``torch.compile`` for
    evaluation (``compile``, :mod:`psvit.train.compiled`) and the loader settings.

    ``num_workers=None`` picks 0 for in-memory datasets and up to :data:`MAX_AUTO_WORKERS` for lazily decoded
    ones (image folders). ``pin_memory`` only takes effect when the device is CUDA.
    """

    device: torch.device = field(default_factory=resolve_device)
    amp: str | None = None
    eval_batch_size: int = 256
    num_workers: int | None = None
    pin_memory: bool = True
    compile: bool = False

    def __post_init__(self) -> None:
        if self.amp not in (None, *AMP_DTYPES):
            raise ConfigError(f"compute.amp must be null, bf16 or fp16, got {self.amp!r}")
        if not isinstance(self.compile, bool):
            raise ConfigError(f"compute.compile must be true or false, got {self.compile!r}")
        if (
            isinstance(self.eval_batch_size, bool)
            or not isinstance(self.eval_batch_size, int)
            or self.eval_batch_size < 1
        ):
            raise ConfigError(f"compute.eval_batch_size must be a positive integer, got {self.eval_batch_size!r}")
        if self.num_workers is not None and (not isinstance(self.num_workers, int) or self.num_workers < 0):
            raise ConfigError(f"compute.num_workers must be null or an integer >= 0, got {self.num_workers!r}")

    @classmethod
    def from_options(cls, device: str, options: dict[str, Any]) -> Compute:
        """From the ``device`` option and the ``compute`` config group (a plain dict)."""
        unknown = sorted(set(options) - {"amp", "eval_batch_size", "num_workers", "pin_memory", "compile"})
        if unknown:
            raise ConfigError(f"unknown compute option(s): {', '.join(unknown)}")
        return cls(resolve_device(device), **options)

    @property
    def amp_dtype(self) -> torch.dtype | None:
        return AMP_DTYPES.get(self.amp) if self.amp else None

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to ``amp`` on this device, or a no-op context in float32."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def workers_for(self, dataset: Dataset) -> int:
        """DataLoader workers for ``dataset``: ``num_workers``, or the automatic choice (see the class doc)."""
        if self.num_workers is not None:
            return self.num_workers
        in_memory = hasattr(dataset, "images")  # ArrayDataset holds its decoded tensor
        return 0 if in_memory else min(MAX_AUTO_WORKERS, os.cpu_count() or 1)

    def loader(self, dataset: Dataset, batch_size: int, *, shuffle: bool = False, seed: int = 0) -> DataLoader:
        """A DataLoader over ``dataset``; shuffling is driven by its own seeded generator."""
        generator = torch.Generator().manual_seed(seed) if shuffle else None
        workers = self.workers_for(dataset)
        return UserErrorLoader(
            dataset,
            batch_size=batch_size,
            shuffle=shuffle,
            generator=generator,
            num_workers=workers,
            pin_memory=self.pin_memory and self.device.type == "cuda",
        )

    def to_device(self, batches: DataLoader) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The loader's ``(images, labels)`` on this device (non-blocking from pinned memory)."""
        for images, labels in batches:
            yield (images.to(self.device, non_blocking=True), labels.to(self.device, non_blocking=True))

    def describe(self) -> str:
        """One line: the device (with the GPU's name), the precision, the LIF neuron backend and compilation."""
        return (
            f"device: {device_name(self.device)}, precision: {self.amp or 'float32'}, "
            f"LIF: {lif_backend(self.device)}" + (", evaluation compiled (torch.compile)" if self.compile else "")
        )
