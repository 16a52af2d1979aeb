"""Export a psvit model in one call: write the file, check its parity on real images, time it beside torch."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from psvit.export.files import Written, write_file
from psvit.export.graph import exportable
from psvit.export.latency import LatencyTable, latency_table
from psvit.export.parity import Parity, Tolerance, check, compare, runner_for


@dataclass(frozen=True)
class Exported:
    """The written file, its parity with psvit and (when measured) its latency beside torch's."""

    written: Written
    parity: Parity
    latency: LatencyTable | None = None
    failures: tuple[str, ...] = ()  # off-tolerance parity (only when exported with ``strict=False``)

    @property
    def path(self) -> Path:
        return self.written.path

    def format(self) -> str:
        """What the command prints: ``<format>: <path>``, the exporter, its notes, parity and latency."""
        weights = self.written.weights.lines() if self.written.weights else []
        lines = [
            f"{self.written.format}: {self.path}",
            f"exporter: {self.written.exporter}",
            *(f"note: {n}" for n in self.written.notes),
            *weights,
            self.parity.format(),
            *(f"parity FAILED: {f}" for f in self.failures),
        ]
        return "\n".join(lines + ([self.latency.format()] if self.latency else []))


def verify(
    path: str | os.PathLike,
    fmt: str,
    model: nn.Module,
    images: torch.Tensor,
    *,
    fold_bn: bool = True,
    tol: Tolerance | None = None,
    strict: bool = True,
    graph: nn.Module | None = None,
) -> Parity:
    """Run the exported file at ``path`` on ``images`` and compare it with psvit's ``model`` and with the graph
    it should hold (``graph``, by default :func:`psvit.export.exportable` of ``model``); with ``strict``, a
    one-line :class:`~psvit.export.ExportError` when it is off tolerance."""
    runtime, run = runner_for(path, fmt)
    tol = tol or Tolerance()
    graph = graph if graph is not None else exportable(model, fold_bn=fold_bn)
    parity = compare(run, runtime, graph, model, images, tol.max_abs_logit)
    return check(parity, tol, path) if strict else parity


def export_model(
    model: nn.Module,
    path: str | os.PathLike,
    images: torch.Tensor,
    *,
    fmt: str = "onnx",
    fold_bn: bool = True,
    tol: Tolerance | None = None,
    latency_batches: tuple[int, ...] = (),
    repeats: int = 10,
    compiled: bool = False,
    strict: bool = True,
    progress: bool = False,
    max_opset: int | None = None,
) -> Exported:
    """Export psvit ``model`` to ``path`` (``fmt``: ``onnx`` or ``pt2``), check parity on ``images`` (real,
    preprocessed inputs) and, for each of ``latency_batches``, time it beside torch eager (and compiled).

    Off-tolerance parity is a one-line :class:`~psvit.export.ExportError` (the file stays written); with
    ``strict=False`` it is returned in ``failures`` instead. ``progress`` shows a bar over the three steps.
    A quantized model's ONNX file stores its weights as integers with ``DequantizeLinear``
    (:mod:`psvit.export.quantized`); ``max_opset`` bounds the ONNX opset those integer types may need."""
    tol = tol or Tolerance()
    steps = tqdm(total=3 if latency_batches else 2, desc=f"export {fmt}", unit="step", disable=not progress or None)
    with steps:
        graph = exportable(model, fold_bn=fold_bn)
        written = write_file(graph, path, images, fmt, max_opset=max_opset)
        steps.update()
        steps.set_description(f"parity on {len(images)} images")
        parity = verify(written.path, fmt, model, images, tol=tol, strict=strict, graph=graph)
        steps.update()
        latency = None
        if latency_batches:
            steps.set_description(f"latency at batch {', '.join(map(str, latency_batches))}")
            latency = latency_table(
                model,
                graph,
                written.path if fmt == "onnx" else None,
                images,
                tuple(latency_batches),
                repeats=repeats,
                compiled=compiled,
            )
            steps.update()
    return Exported(written, parity, latency, tuple(parity.failures(tol)))


def export_onnx(model: nn.Module, path: str | os.PathLike, images: torch.Tensor, **options: object) -> Exported:
    """:func:`export_model` to ONNX."""
    return export_model(model, path, images, fmt="onnx", **options)
