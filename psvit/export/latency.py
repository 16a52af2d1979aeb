"""Latency of the exported model beside psvit's: onnxruntime vs torch eager (and, optionally, ``torch.compile``),
at batch 1 and batch N, on the same CPU threads, median of timed forwards after warm-up ones."""

from __future__ import annotations

import copy
import os
import statistics
import timeit
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from psvit.cost.latency import WARMUP, measure_latency
from psvit.export.parity import onnx_session


@dataclass
class LatencyTable:
    """Median seconds per forward: ``seconds[runtime][batch]``."""

    seconds: dict[str, dict[int, float]] = field(default_factory=dict)
    threads: int = 1

    def add(self, runtime: str, batch: int, value: float) -> None:
        self.seconds.setdefault(runtime, {})[batch] = value

    @property
    def batches(self) -> list[int]:
        return sorted({b for row in self.seconds.values() for b in row})

    def format(self) -> str:
        """One line per runtime: ms per forward at each batch size (and per image at the largest)."""
        lines = [f"latency (CPU, {self.threads} thread(s), median ms per forward):"]
        for runtime, row in self.seconds.items():
            cells = [f"batch {b}: {row[b] * 1e3:.2f}" for b in self.batches if b in row]
            lines.append(f"  {runtime:<16} " + ", ".join(cells))
        return "\n".join(lines)

    def to_dict(self) -> dict[str, dict[str, float]]:
        return {runtime: {str(b): s for b, s in row.items()} for runtime, row in self.seconds.items()}

    def markdown(self) -> str:
        head = "| runtime | " + " | ".join(f"batch {b} (ms)" for b in self.batches) + " |"
        rows = [
            f"| {runtime} | " + " | ".join(f"{row[b] * 1e3:.2f}" if b in row else "" for b in self.batches) + " |"
            for runtime, row in self.seconds.items()
        ]
        return "\n".join([head, "|" + "---|" * (len(self.batches) + 1), *rows])


def onnx_latency(
    path: str | os.PathLike,
    images: torch.Tensor,
    *,
    repeats: int = 10,
    warmup: int = WARMUP,
    threads: int | None = None,
) -> float:
    """Median seconds of one onnxruntime run of the whole ``images`` batch."""
    session = onnx_session(path, threads)
    feed = {session.get_inputs()[0].name: np.ascontiguousarray(images.cpu().numpy(), dtype=np.float32)}
    for _ in range(warmup):
        session.run(None, feed)
    return statistics.median(timeit.repeat(lambda: session.run(None, feed), repeat=repeats, number=1))


def latency_table(
    model: nn.Module,
    graph: nn.Module,
    onnx_path: str | os.PathLike | None,
    images: torch.Tensor,
    batches: tuple[int, ...],
    *,
    repeats: int = 10,
    compiled: bool = False,
) -> LatencyTable:
    """Time psvit's ``model`` (torch eager), ``torch.compile(graph)`` (with ``compiled``) and the ONNX file (if
    any) on the first ``b`` of ``images`` for each ``b`` in ``batches``, on CPU."""
    table = LatencyTable(threads=torch.get_num_threads())
    if next(model.parameters()).device.type != "cpu":
        model = copy.deepcopy(model).cpu()
    fast = torch.compile(graph) if compiled else None
    for b in batches:
        batch = _batch(images, b)
        table.add("torch eager", b, measure_latency(model, batch, repeats=repeats))
        if fast is not None:
            table.add("torch compiled", b, measure_latency(fast, batch, repeats=repeats))
        if onnx_path is not None:
            table.add("onnxruntime", b, onnx_latency(onnx_path, batch, repeats=repeats))
    return table


def _batch(images: torch.Tensor, size: int) -> torch.Tensor:
    """``size`` images: the first ones, repeated if there are fewer."""
    reps = -(-size // len(images))
    return images.repeat(reps, 1, 1, 1)[:size].contiguous().cpu()
