"""Writing the exportable graph (:mod:`psvit.export.graph`) to a file: ONNX, or a ``torch.export`` program (pt2).

ONNX uses the exporter current torch recommends, ``torch.onnx.export(..., dynamo=True)`` (it needs
``onnxscript``), and falls back to the legacy TorchScript exporter only when that one fails, saying why. Both
routes keep the batch dimension dynamic; the ``T`` time steps are unrolled. A quantized model's ONNX file holds
its integer weights (:mod:`psvit.export.quantized`). Files are written atomically.
"""

from __future__ import annotations

import contextlib
import logging
import os
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from psvit.export.graph import ExportError
from psvit.export.quantized import ATTR as QUANT_ATTR
from psvit.export.quantized import StoredWeights, store_integer_weights

FORMATS = ("onnx", "pt2")
SUFFIX = {"onnx": ".onnx", "pt2": ".pt2"}
INPUT, OUTPUT = "images", "logits"
#: The ONNX opset of the legacy exporter (the dynamo exporter picks its own, currently 18).
LEGACY_OPSET = 17


@dataclass(frozen=True)
class Written:
    """An exported file, the exporter that wrote it and what the user should know about how (fallbacks); for a
    quantized model's ONNX file, how its weights were stored (:class:`~psvit.export.quantized.StoredWeights`)."""

    path: Path
    format: str
    exporter: str
    notes: tuple[str, ...] = ()
    weights: StoredWeights | None = None


def write_onnx(
    graph: nn.Module, path: str | os.PathLike, example: torch.Tensor, *, max_opset: int | None = None
) -> Written:
    """Write ``graph`` (from :func:`psvit.export.exportable`) as ONNX with a dynamic batch dimension.

    ``example`` is an image batch of the model's input shape (2+ images, so the batch is not specialized). A
    quantized model's weights are stored as integers with ``DequantizeLinear``
    (:func:`~psvit.export.quantized.store_integer_weights`; ``max_opset`` bounds the opset that needs)."""
    path = Path(path)
    example = _batch_of_two(example)
    weights = getattr(graph, QUANT_ATTR, None)
    with _atomic(path) as tmp:
        exporter, notes = _export_onnx(graph, tmp, example)
        stored = store_integer_weights(tmp, weights, max_opset) if weights else None
    return Written(path, "onnx", exporter, notes, stored)


def _export_onnx(graph: nn.Module, tmp: Path, example: torch.Tensor) -> tuple[str, tuple[str, ...]]:
    """The dynamo exporter, else the legacy one (saying why); the exporter's name and the notes."""
    try:
        with _quiet():
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                dynamo=True,
                input_names=[INPUT],
                output_names=[OUTPUT],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
                external_data=False,
                verbose=False,
            )
        return f"torch.onnx dynamo exporter (torch {torch.__version__})", ()
    except Exception as exc:
        why = f"the dynamo exporter failed ({type(exc).__name__}: {_first_line(exc)})"
    tmp.unlink(missing_ok=True)
    try:
        with _quiet():
            torch.onnx.export(
                graph,
                (example,),
                str(tmp),
                dynamo=False,
                input_names=[INPUT],
                output_names=[OUTPUT],
                opset_version=LEGACY_OPSET,
                dynamic_axes={INPUT: {0: "batch"}, OUTPUT: {0: "batch"}},
            )
    except Exception as exc:
        raise ExportError(
            f"cannot export to ONNX: {why}; the legacy exporter failed too ({type(exc).__name__}: {_first_line(exc)})"
        ) from None
    return "torch.onnx legacy TorchScript exporter", (f"{why}; used the legacy exporter",)


def write_pt2(graph: nn.Module, path: str | os.PathLike, example: torch.Tensor) -> Written:
    """Write ``graph`` as a ``torch.export`` program (``torch.export.load(path).module()`` runs it)."""
    path = Path(path)
    example = _batch_of_two(example)
    try:
        with _quiet():
            # Dim.DYNAMIC: a named Dim trips on a guard torch cannot prove for every batch size (pruned SDT stems)
            program = torch.export.export(graph, (example,), dynamic_shapes=({0: torch.export.Dim.DYNAMIC},))
    except Exception as exc:
        raise ExportError(f"torch.export failed ({type(exc).__name__}: {_first_line(exc)})") from None
    with _atomic(path) as tmp:
        torch.export.save(program, tmp)
    return Written(path, "pt2", f"torch.export (torch {torch.__version__})")


def write_file(
    graph: nn.Module, path: str | os.PathLike, example: torch.Tensor, fmt: str, *, max_opset: int | None = None
) -> Written:
    """:func:`write_onnx` (with ``max_opset``) or :func:`write_pt2`, by ``fmt``."""
    if fmt not in FORMATS:
        raise ExportError(f"format must be one of {', '.join(FORMATS)}, got {fmt!r}")
    if fmt == "onnx":
        return write_onnx(graph, path, example, max_opset=max_opset)
    return write_pt2(graph, path, example)


def _batch_of_two(example: torch.Tensor) -> torch.Tensor:
    return (example[:2] if len(example) >= 2 else example[:1].expand(2, *example.shape[1:])).contiguous().cpu()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:300] if text else "no message"


@contextlib.contextmanager
def _atomic(path: Path) -> Iterator[Path]:
    """A temporary file beside ``path``, renamed to it when the block succeeds, removed when it fails."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=f".tmp{path.suffix}", dir=path.parent)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporters' deprecation and tracer warnings and their INFO logs (on under Hydra) are not the user's."""
    loggers = [logging.getLogger(name) for name in ("onnx_ir", "onnxscript", "torch.onnx", "torch.export")]
    levels = [log.level for log in loggers]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for log in loggers:
            log.setLevel(logging.WARNING)
        try:
            yield
        finally:
            for log, level in zip(loggers, levels):
                log.setLevel(level)
