"""Does the exported file compute what psvit computes? Run it (onnxruntime, or the loaded ``torch.export``
program) on real images and compare its logits with the same graph in torch and with psvit's own forward.

Two references: the exported graph in torch (BatchNorm folded, stateless neurons) and the unfolded psvit model.
A spiking network turns a rounding difference into a spike when a membrane potential sits within it of the
threshold: the runtime's kernels sum in another order than torch's (which order depends on the CPU), and folding
BN rounds differently again, so an image's logits can differ by a whole spike's worth. The checks therefore count
images: the runtime's logits must agree with the torch graph's within ``max_abs_logit`` on at least
``min_match_graph`` of the images, with the same top-1 on ``min_top1_graph`` of them, and with the psvit model's
top-1 on ``min_top1_model``. A wrong export is off on most images, not on one.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from psvit.export.files import INPUT
from psvit.export.graph import ExportError
from psvit.train import predict

Runner = Callable[[np.ndarray], np.ndarray]
#: Images per call of the runtime and the references (bounds memory at large image sizes).
CHUNK = 64


@dataclass(frozen=True)
class Tolerance:
    max_abs_logit: float = 1e-4
    min_match_graph: float = 0.99
    min_top1_graph: float = 0.99
    min_top1_model: float = 0.99


@dataclass(frozen=True)
class Parity:
    """The runtime's logits compared with the torch graph it was exported from and with the psvit model."""

    runtime: str
    images: int
    max_abs_logit: float  # the per-image tolerance that match_graph counts with
    match_graph: float  # share of images whose logits all agree with the torch graph's within max_abs_logit
    max_abs_graph: float
    top1_graph: float
    max_abs_model: float
    top1_model: float

    def failures(self, tol: Tolerance) -> list[str]:
        """What is off tolerance, one phrase each (empty when parity holds)."""
        out = []
        if not math.isfinite(self.max_abs_graph):  # a NaN or infinity on any image, however few
            out.append("non-finite logits vs the torch graph")
        if not self.match_graph >= tol.min_match_graph:
            out.append(
                f"logits within {self.max_abs_logit:g} on {self.match_graph:.2%} of the images < "
                f"{tol.min_match_graph:.0%} vs the torch graph"
            )
        if self.top1_graph < tol.min_top1_graph:
            out.append(f"top-1 agreement {self.top1_graph:.2%} < {tol.min_top1_graph:.0%} vs the torch graph")
        if self.top1_model < tol.min_top1_model:
            out.append(f"top-1 agreement {self.top1_model:.2%} < {tol.min_top1_model:.0%} vs the psvit model")
        return out

    def format(self) -> str:
        return (
            f"parity ({self.runtime}, {self.images} images): vs torch graph (BN folded) logits within "
            f"{self.max_abs_logit:g} on {self.match_graph:.2%}, max |dlogit| {self.max_abs_graph:.2e}, top-1 "
            f"{self.top1_graph:.2%}; vs psvit model max |dlogit| {self.max_abs_model:.2e}, top-1 {self.top1_model:.2%}"
        )

    def metrics(self) -> dict[str, float]:
        return {
            "parity_match_graph": self.match_graph,
            "parity_max_abs_logit": self.max_abs_graph,
            "parity_top1_graph": self.top1_graph,
            "parity_max_abs_logit_model": self.max_abs_model,
            "parity_top1_model": self.top1_model,
        }


#: onnxruntime session settings psvit runs its ONNX files with. By default onnxruntime fuses a quantized model's
#: ``DequantizeLinear`` into the ``MatMul`` it feeds (``MatMulNBits``), whose sums differ from the float graph's
#: (at its default accuracy level it quantizes the activations to int8; its 2-bit kernel differs at every level):
#: enough to flip spikes. With QDQ transforms off, onnxruntime dequantizes the weights once, at load, and runs
#: the float graph the file defines.
SESSION_CONFIG = {"session.disable_quant_qdq": "1"}


def onnx_session(path: str | os.PathLike, threads: int | None = None):
    """An onnxruntime CPU session of ``path``, with ``threads`` intra-op threads (default: torch's count) and
    :data:`SESSION_CONFIG`."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.log_severity_level = 3
    for key, value in SESSION_CONFIG.items():
        options.add_session_config_entry(key, value)
    try:
        return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise ExportError(f"onnxruntime cannot load {path}: {str(exc).strip().splitlines()[0][:300]}") from None


def onnx_runner(path: str | os.PathLike, threads: int | None = None) -> Runner:
    """Images ``[B, C, H, W]`` float32 to logits, through onnxruntime's CPUExecutionProvider."""
    session = onnx_session(path, threads)
    return lambda images: session.run(None, {INPUT: np.ascontiguousarray(images, dtype=np.float32)})[0]


def pt2_runner(path: str | os.PathLike) -> Runner:
    """Images to logits through the ``torch.export`` program saved at ``path``."""
    module = torch.export.load(str(path)).module()

    def run(images: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))).numpy()

    return run


def runner_for(path: str | os.PathLike, fmt: str) -> tuple[str, Runner]:
    """The runtime's name and runner of an exported file of format ``fmt``."""
    if fmt == "onnx":
        return "onnxruntime CPUExecutionProvider", onnx_runner(path)
    return "torch.export program", pt2_runner(Path(path))


def compare(
    run: Runner, runtime: str, graph: nn.Module, model: nn.Module, images: torch.Tensor, max_abs_logit: float
) -> Parity:
    """Run ``images`` through the runtime, ``graph`` (the exported torch graph) and psvit's ``model``; an image
    matches the graph when all its logits agree within ``max_abs_logit``."""
    got, want_graph, want_model = [], [], []
    for start in range(0, len(images), CHUNK):
        batch = images[start : start + CHUNK].cpu().float()
        got.append(torch.from_numpy(np.asarray(run(batch.numpy()))))
        with torch.no_grad():
            want_graph.append(graph(batch))
        want_model.append(predict(model, batch.to(_device(model))).cpu())
    out, ref_graph, ref_model = (torch.cat(x).double() for x in (got, want_graph, want_model))
    top1 = out.argmax(1)
    per_image = (out - ref_graph).abs().amax(1)
    return Parity(
        runtime,
        len(images),
        max_abs_logit,
        float((per_image <= max_abs_logit).double().mean()),
        float(per_image.max()),
        float((top1 == ref_graph.argmax(1)).double().mean()),
        float((out - ref_model).abs().max()),
        float((top1 == ref_model.argmax(1)).double().mean()),
    )


def check(parity: Parity, tol: Tolerance, path: str | os.PathLike) -> Parity:
    """``parity``, or a one-line :class:`ExportError` saying what is off tolerance."""
    bad = parity.failures(tol)
    if bad:
        raise ExportError(
            f"parity check failed for {path} ({parity.runtime}, {parity.images} images): " + "; ".join(bad)
        )
    return parity


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device
