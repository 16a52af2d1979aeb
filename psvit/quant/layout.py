"""Which weights a group's bit-width quantizes, and the exact bytes of a model stored that way.

**Which weights.** A group's bit-width applies to every conv/linear weight whose output channels the group
owns (the filters it *produces*: ``out`` slices). A conv/linear layer that no group produces (the classifier
head) takes the bit-width of the group its input belongs to (the residual stream, ``embed``). Layers of groups
that are not enabled stay float32. Everything that is not a conv/linear weight (BatchNorm, biases, unused norms)
stays float32.

**How it is stored** (:mod:`psvit.quant.storage` writes exactly this): a quantized layer keeps its packed codes
(:func:`~psvit.quant.packing.packed_bytes`), one float32 scale per output channel and, if it has a bias or a
BatchNorm after it, one float32 shift per output channel. The BatchNorm is folded into the scale and the shift
(exact for a per-output-channel scale: it multiplies each channel by a constant), so its affine parameters are
not stored. A float32 layer is stored as it is.

With every bit-width at 32 the bytes are exactly ``4 * parameters``: today's weight memory.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

from psvit.models.channels import Group
from psvit.quant.packing import container_bits, packed_bytes
from psvit.quant.quantizer import FLOAT_BITS

FLOAT_BYTES = 4


@dataclass(frozen=True)
class QuantLayer:
    """A conv/linear layer whose weight takes group ``group``'s bit-width; ``bn`` is the BatchNorm after it."""

    name: str
    group: str
    bn: str | None


def quant_layers(groups: Sequence[Group], enabled: Collection[str]) -> list[QuantLayer]:
    """The layers the enabled groups (by name) quantize, in group order (see the module docstring).

    ``groups`` are all of the model's groups: a layer that some group produces is never a head.
    """
    produced: dict[str, tuple[str, str | None]] = {}
    consumed: dict[str, str] = {}
    for g in groups:
        layer = None
        for s in g.slices:
            if s.role == "out":
                layer = s.key.removesuffix(".weight")
                produced[layer] = (g.name, None)
            elif s.role == "bn_weight" and layer is not None:
                produced[layer] = (g.name, s.key.removesuffix(".weight"))
            elif s.role == "in":
                consumed.setdefault(s.key.removesuffix(".weight"), g.name)
    layers = [QuantLayer(name, group, bn) for name, (group, bn) in produced.items() if group in enabled]
    layers += [
        QuantLayer(name, group, None) for name, group in consumed.items() if name not in produced and group in enabled
    ]
    return layers


def layer_bits(layers: Sequence[QuantLayer], bits: Mapping[str, int]) -> dict[str, int]:
    """Bit-width per quantized layer name (only those below 32) for group bit-widths ``bits``."""
    return {q.name: bits[q.group] for q in layers if bits.get(q.group, FLOAT_BITS) < FLOAT_BITS}


def storage_bytes(
    shapes: Mapping[str, tuple[int, ...]], layers: Sequence[QuantLayer], bits: Mapping[str, int]
) -> dict[str, int]:
    """Bytes by storage kind (``"float32"``, ``"int2"``, ``"int4"``, ``"int8"``) of a model whose parameters
    have ``shapes``, its ``layers`` quantized at the bit-widths ``bits`` gives them by layer name (see
    :func:`layer_bits`; layers left out are float32)."""
    numel = {name: math.prod(shape) for name, shape in shapes.items()}
    out = {"float32": FLOAT_BYTES * sum(numel.values())}
    for q in layers:
        b = bits.get(q.name, FLOAT_BITS)
        if b >= FLOAT_BITS:
            continue
        weight = f"{q.name}.weight"
        channels = shapes[weight][0]
        floats = [weight, f"{q.name}.bias"] + ([f"{q.bn}.weight", f"{q.bn}.bias"] if q.bn else [])
        shifted = f"{q.name}.bias" in numel or q.bn is not None
        out["float32"] += FLOAT_BYTES * (channels * (1 + shifted) - sum(numel.get(k, 0) for k in floats))
        kind = f"int{container_bits(b)}"
        out[kind] = out.get(kind, 0) + packed_bytes(numel[weight], b)
    return out
