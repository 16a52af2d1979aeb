"""A quantized model's integer weights in the ONNX file: integer initializers and ``DequantizeLinear``.

psvit's quantized weights are exactly ``codes * scale`` per output channel (:mod:`psvit.quant`). The exported
graph (:func:`psvit.export.exportable`) recovers the codes and scales of each quantized layer
(:func:`exact_codes`); when a BatchNorm is folded into the layer, its per-channel factor ``a`` goes into the
scale (``(codes * s) * a = (codes * sign(a)) * (s * |a|)``, as psvit's checkpoint stores it), so the folded
weight is still ``codes * scale``, and the torch graph uses exactly the values that ``DequantizeLinear``
computes.

After the exporter has written the float graph, :func:`store_integer_weights` replaces each quantized layer's
float initializer (found by value: the exporter may store it transposed, for ``MatMul``) by an integer
initializer, a float32 scale per output channel and a ``DequantizeLinear`` node (on the output-channel axis: 1
where the exporter stored the weight transposed) whose output takes the initializer's name, so every consumer is
unchanged. The integer type is the narrowest that holds the codes among
those the file's ONNX opset allows and the installed onnxruntime runs (:data:`INTEGER_TYPES`): INT2 (opset 25)
for 2-bit codes, INT4 (opset 21) for 3-4 bits, INT8 (opset 13) for 5-8 bits, as psvit's checkpoint packs them;
the graph's opset is raised as needed. A layer no type can hold is left float, and :meth:`StoredWeights.lines`
says so.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from psvit.quant.quantizer import dequantize, qmax, quantize

#: The graph attribute (set by :func:`psvit.export.exportable`) holding the :class:`QuantWeight` of each layer.
ATTR = "quantized_weights"
DOMAIN = ""  # the default ONNX domain


@dataclass(frozen=True)
class QuantWeight:
    """A quantized layer of the exported graph: ``weight == dequantize(codes, scales)`` exactly."""

    layer: str
    group: str
    bits: int
    codes: torch.Tensor  # int8, the weight's shape
    scales: torch.Tensor  # float32, one per output channel (axis 0)

    @property
    def weight(self) -> torch.Tensor:
        return dequantize(self.codes, self.scales)


def exact_codes(weight: torch.Tensor, bits: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Codes (int8) and per-output-channel scales (float32) with ``codes * scales == weight`` exactly, for a
    weight on its ``bits``-bit grid (as psvit's quantized weights are). The quantizer's scale of such a row can
    be an ulp away from the one it was made with; the exact one is among a few candidates next to it. A row that
    no candidate reproduces keeps the quantizer's scale (the graph then uses ``codes * scale``)."""
    codes, scales = quantize(weight, bits)
    rows = weight.detach().reshape(len(weight), -1).float()
    c = codes.reshape(len(weight), -1).float()
    at = c.abs().argmax(1, keepdim=True)
    peak = c.gather(1, at).squeeze(1)
    ratio = torch.where(peak != 0, rows.gather(1, at).squeeze(1) / torch.where(peak != 0, peak, 1.0), scales)
    candidates = [scales, ratio]
    for start in (scales, ratio):
        up = down = start
        for _ in range(2):
            up, down = torch.nextafter(up, up + 1), torch.nextafter(down, down - 1)
            candidates += [up, down]
    found = torch.zeros(len(weight), dtype=torch.bool)
    best = scales.clone()
    for cand in candidates:
        exact = ~found & (c * cand[:, None] == rows).all(1)
        best = torch.where(exact, cand, best)
        found |= exact
    return codes, best


def fold_into_scale(
    codes: torch.Tensor, scales: torch.Tensor, factor: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``codes * scales`` times a per-output-channel ``factor`` (a folded BatchNorm's ``a``), still as codes and
    scales: the sign of ``factor`` goes into the codes (symmetric: they stay in range), its magnitude into the
    scales."""
    sign = torch.where(factor < 0, -1, 1).to(torch.int8).reshape((-1,) + (1,) * (codes.dim() - 1))
    return codes * sign, scales * factor.abs().float()


@dataclass(frozen=True)
class IntegerType:
    """An ONNX integer type for weight codes: its width, its ``TensorProto`` name and the opset it needs."""

    bits: int
    name: str  # TensorProto data type name: INT2, INT4, INT8
    opset: int

    @property
    def label(self) -> str:
        return self.name.lower()

    @property
    def onnx_type(self) -> int:
        from onnx import TensorProto

        return getattr(TensorProto, self.name)


#: Narrowest first. ``DequantizeLinear`` takes INT8 per axis from opset 13, INT4 from 21, INT2 from 25.
INTEGER_TYPES = (IntegerType(2, "INT2", 25), IntegerType(4, "INT4", 21), IntegerType(8, "INT8", 13))


def _pack(codes: np.ndarray, bits: int) -> bytes:
    """Signed ``codes`` as ONNX raw data of a ``bits``-bit integer type: two's complement, packed ``8 // bits``
    to a byte, the first element in the lowest bits."""
    flat = codes.astype(np.int64).ravel() & ((1 << bits) - 1)
    per_byte = 8 // bits
    flat = np.concatenate([flat, np.zeros((-len(flat)) % per_byte, dtype=np.int64)]).reshape(-1, per_byte)
    return (flat << (np.arange(per_byte) * bits)).sum(1).astype(np.uint8).tobytes()


def _tensor(name: str, kind: IntegerType, codes: np.ndarray):
    from onnx import helper

    return helper.make_tensor(name, kind.onnx_type, codes.shape, _pack(codes, kind.bits), raw=True)


@functools.cache
def runtime_runs(kind: IntegerType) -> bool:
    """Whether the installed onnx and onnxruntime (CPU) dequantize ``kind`` per axis exactly (a tiny model)."""
    import onnx
    import onnxruntime as ort
    from onnx import helper, numpy_helper

    if not hasattr(onnx.TensorProto, kind.name):
        return False
    q = qmax(min(kind.bits, 8))
    codes = np.arange(-q, q + 1, dtype=np.int64).repeat(2).reshape(2, -1, 1)
    codes[1] = -codes[1]
    scale = np.array([0.5, 3.0], dtype=np.float32)
    node = helper.make_node("DequantizeLinear", ["w", "s"], ["y"], axis=0)
    graph = helper.make_graph(
        [node],
        "probe",
        [],
        [helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, None)],
        initializer=[_tensor("w", kind, codes), numpy_helper.from_array(scale, "s")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid(DOMAIN, kind.opset)])
    model.ir_version = helper.find_min_ir_version_for(list(model.opset_import))
    try:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        return bool(np.array_equal(session.run(None, {})[0], codes * scale[:, None, None]))
    except Exception:
        return False


def integer_type(bits: int, max_opset: int | None = None) -> IntegerType | None:
    """The narrowest type of :data:`INTEGER_TYPES` that holds ``bits``-bit codes, within ``max_opset`` and run
    by the installed onnxruntime; None if none does."""
    return next(
        (
            t
            for t in INTEGER_TYPES
            if t.bits >= bits and (max_opset is None or t.opset <= max_opset) and runtime_runs(t)
        ),
        None,
    )


@dataclass(frozen=True)
class StoredWeights:
    """What :func:`store_integer_weights` did: the layers per integer type, those left float (and why), the
    file's opset and its size beside the exporter's float file of the same graph."""

    integer: dict[str, list[QuantWeight]]  # type label (int2, int4, int8) -> layers
    floats: dict[str, list[QuantWeight]]  # reason -> layers
    opset: int
    file_bytes: int
    float_bytes: int  # the exporter's file, float32 weights
    weight_bytes: int = 0  # the integer weights' codes and scales in the file
    float_weight_bytes: int = 0  # the same weights as float32

    def lines(self) -> list[str]:
        """What the export prints: the integer types by group and bit-width, the file size, and one line per
        reason some quantized weights stayed float."""
        out = []
        if self.integer:
            parts = [f"{label} for {_by_bits(layers)}" for label, layers in self.integer.items()]
            out.append(f"integer weights (DequantizeLinear, ONNX opset {self.opset}): " + "; ".join(parts))
        out.append(
            f"onnx file: {_mb(self.file_bytes)} (float export: {_mb(self.float_bytes)}); its integer weights "
            f"take {_mb(self.weight_bytes)} with their scales (float32: {_mb(self.float_weight_bytes)})"
        )
        for reason, layers in self.floats.items():
            bits = sorted({q.bits for q in layers})
            out.append(
                f"note: weights of groups {','.join(dict.fromkeys(q.group for q in layers))} at "
                f"{'/'.join(map(str, bits))} bits stored as float ({reason})"
            )
        return out


def _by_bits(layers: Sequence[QuantWeight]) -> str:
    groups: dict[int, dict[str, None]] = {}
    for q in layers:
        groups.setdefault(q.bits, {})[q.group] = None
    return ", ".join(f"{bits}-bit groups {','.join(names)}" for bits, names in sorted(groups.items()))


def _mb(size: int) -> str:
    return f"{size / 1e6:.2f} MB" if size >= 1e6 else f"{size / 1e3:.1f} kB" if size >= 1e4 else f"{size:,} bytes"


def _find(arrays: dict[str, np.ndarray], weight: np.ndarray) -> tuple[str, bool] | None:
    """The initializer holding ``weight``, and whether transposed (a 2-D weight that the exporter stored
    transposed, for ``MatMul``)."""
    for name, array in arrays.items():
        if array.shape == weight.shape and np.array_equal(array, weight):
            return name, False
    if weight.ndim == 2:
        for name, array in arrays.items():
            if array.shape == weight.shape[::-1] and np.array_equal(array, weight.T):
                return name, True
    return None


def store_integer_weights(
    path: str | os.PathLike, weights: Sequence[QuantWeight], max_opset: int | None = None
) -> StoredWeights:
    """Rewrite the ONNX file at ``path`` (the float graph of a quantized model) with integer weights (see the
    module docstring); ``max_opset`` bounds the opset the integer types may need (None: no bound)."""
    import onnx
    from onnx import helper, numpy_helper, version_converter

    path = Path(path)
    model = onnx.load(str(path))
    float_bytes = path.stat().st_size
    graph = model.graph
    arrays = {
        init.name: numpy_helper.to_array(init) for init in graph.initializer if init.data_type == onnx.TensorProto.FLOAT
    }
    integer: dict[str, list[QuantWeight]] = {}
    floats: dict[str, list[QuantWeight]] = {}
    plan = []
    for q in weights:
        kind = integer_type(q.bits, max_opset)
        if kind is None:
            import onnxruntime

            within = f" within opset {max_opset}" if max_opset is not None else ""
            floats.setdefault(
                f"no ONNX integer type for {q.bits}-bit codes{within} that onnxruntime {onnxruntime.__version__} runs",
                [],
            ).append(q)
            continue
        found = _find(arrays, q.weight.numpy())
        if found is None:
            floats.setdefault("the exporter did not store them as an initializer", []).append(q)
            continue
        del arrays[found[0]]  # one initializer per layer
        plan.append((q, kind, *found))
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    needed = max((kind.opset for _, kind, _, _ in plan), default=opset)
    if needed > opset:
        meta = {node.name: list(node.metadata_props) for node in graph.node if node.name}
        model = version_converter.convert_version(model, needed)
        graph, opset = model.graph, needed
        for node in graph.node:  # the converter drops the exporter's per-node metadata (module paths)
            if node.name in meta and not node.metadata_props:
                node.metadata_props.extend(meta[node.name])
    by_name = {init.name: i for i, init in enumerate(graph.initializer)}
    nodes = []
    for q, kind, name, transposed in sorted(plan, key=lambda p: by_name[p[2]], reverse=True):
        del graph.initializer[by_name[name]]  # descending indices: the others stay valid
        codes = q.codes.numpy().T if transposed else q.codes.numpy()  # as the exporter stored the weight
        graph.initializer.extend(
            [
                _tensor(f"{name}.codes", kind, codes),
                numpy_helper.from_array(q.scales.numpy().astype(np.float32), f"{name}.scale"),
            ]
        )
        nodes.append(
            helper.make_node(
                "DequantizeLinear",
                [f"{name}.codes", f"{name}.scale"],
                [name],
                axis=1 if transposed else 0,
                name=f"{name}.dequantize",
            )
        )
    for q, kind, *_ in plan:
        integer.setdefault(kind.label, []).append(q)
    order = [t.label for t in INTEGER_TYPES]
    integer = {label: integer[label] for label in order if label in integer}
    if nodes:
        old = list(graph.node)
        del graph.node[:]
        graph.node.extend(nodes[::-1] + old)
        model.ir_version = max(model.ir_version, helper.find_min_ir_version_for(list(model.opset_import)))
        onnx.save(model, str(path))
    added = [init for init in graph.initializer if init.name.endswith((".codes", ".scale"))]
    return StoredWeights(
        integer,
        floats,
        opset,
        path.stat().st_size,
        float_bytes,
        sum(len(init.raw_data) for init in added),
        sum(4 * q.codes.numel() for q, *_ in plan),
    )
