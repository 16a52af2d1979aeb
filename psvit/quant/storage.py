"""A quantized model as one shared byte buffer: float32 values, then packed integer codes per container width.

What is stored is what :mod:`psvit.quant.layout` counts. Per quantized layer: its packed codes, one scale per
output channel and, if it has a bias or a BatchNorm after it, one shift per output channel, with the BatchNorm
folded in (``bn(conv(x)) = a * conv(x) + c`` per channel, so ``a`` goes into the scale, with its sign into the
codes, and ``c`` into the shift). Every other parameter and buffer of the state_dict is stored as float32,
except BatchNorm's ``num_batches_tracked`` counters (restored as 0). No tensor names are stored: the model is
rebuilt from its config, and its state_dict order says where each value is.

On restore, a folded BatchNorm becomes the identity plus the shift (weight 1, running mean 0, running variance
``1 - eps``) and the layer's own bias, if any, 0; the weight gets its dequantized value.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from psvit.prune.groups import list_groups
from psvit.quant.layout import QuantLayer, quant_layers
from psvit.quant.model import ATTR, quantization
from psvit.quant.packing import container_bits, pack, packed_bytes, unpack
from psvit.quant.quantizer import quantize


def _layers(model: nn.Module) -> list[QuantLayer]:
    groups = list_groups(model)
    bits = quantization(model)
    return [q for q in quant_layers(groups, {g.name for g in groups}) if q.name in bits]


def _folded_keys(layers: list[QuantLayer]) -> set[str]:
    """state_dict keys that a quantized layer's codes, scale and shift replace."""
    keys = set()
    for q in layers:
        keys |= {f"{q.name}.weight", f"{q.name}.bias"}
        if q.bn:
            keys |= {f"{q.bn}.{k}" for k in ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")}
    return keys


def _kept(state: dict[str, torch.Tensor], folded: set[str]) -> Iterator[str]:
    """The state_dict keys stored as float32, in order."""
    return (k for k, v in state.items() if k not in folded and not k.endswith("num_batches_tracked"))


def pack_model(model: nn.Module) -> dict[str, Any]:
    """The payload entries of a quantized model: ``quantization`` (layer -> bits), ``data`` (one uint8 tensor)
    and ``sections`` (its parts in order, ``float32``, ``int2``, ``int4``, ``int8``, with their byte counts)."""
    bits = quantization(model)
    layers = _layers(model)
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    floats = [state[k].float().flatten() for k in _kept(state, _folded_keys(layers))]
    codes: dict[int, list[torch.Tensor]] = {}
    modules = dict(model.named_modules())
    for q in layers:
        weight = state[f"{q.name}.weight"]
        q_codes, scale = quantize(weight, bits[q.name])
        bias = state.get(f"{q.name}.bias")
        shift = bias.float() if bias is not None else None
        if q.bn:
            eps = modules[q.bn].eps
            a = state[f"{q.bn}.weight"].float() / torch.sqrt(state[f"{q.bn}.running_var"].float() + eps)
            shift = (
                state[f"{q.bn}.bias"].float()
                - a * state[f"{q.bn}.running_mean"].float()
                + a * (shift if shift is not None else 0.0)
            )
            sign = torch.where(a < 0, -1, 1).to(torch.int8).reshape((-1,) + (1,) * (weight.dim() - 1))
            q_codes, scale = q_codes * sign, scale * a.abs()
        codes.setdefault(container_bits(bits[q.name]), []).append(pack(q_codes, bits[q.name]))
        floats += [scale] + ([shift] if shift is not None else [])
    parts = {"float32": (torch.cat(floats) if floats else torch.zeros(0)).contiguous().view(torch.uint8)}
    parts.update({f"int{c}": torch.cat(packed) for c, packed in sorted(codes.items())})
    return {
        "quantization": bits,
        "data": torch.cat(list(parts.values())),
        "sections": {k: v.numel() for k, v in parts.items()},
    }


def sections(data: torch.Tensor, lengths: dict[str, int]) -> dict[str, torch.Tensor]:
    """``data`` cut into its named sections (the float32 one viewed as float32)."""
    if sum(lengths.values()) != data.numel():
        raise ValueError(f"the data holds {data.numel()} bytes where its sections say {sum(lengths.values())}")
    out, at = {}, 0
    for name, n in lengths.items():
        out[name] = data[at : at + n]
        at += n
    out["float32"] = out["float32"].clone().view(torch.float32)
    return out


def unpack_model(model: nn.Module, quantized: dict[str, int], data: torch.Tensor, lengths: dict[str, int]) -> nn.Module:
    """Fill ``model`` (built from the stored config) from :func:`pack_model`'s entries, in place."""
    buffers = sections(data, lengths)
    setattr(model, ATTR, dict(quantized))
    layers = _layers(model)
    modules = dict(model.named_modules())
    state = model.state_dict()
    floats, at = buffers["float32"], 0

    def take(n: int) -> torch.Tensor:
        nonlocal at
        if at + n > floats.numel():
            raise ValueError("the float32 buffer is shorter than the model needs")
        at += n
        return floats[at - n : at]

    new: dict[str, torch.Tensor] = {}
    for k in _kept(state, _folded_keys(layers)):
        new[k] = take(state[k].numel()).reshape(state[k].shape)
    offsets = {name: 0 for name in buffers}
    for q in layers:
        weight = state[f"{q.name}.weight"]
        bits = quantized[q.name]
        kind = f"int{container_bits(bits)}"
        n_bytes = packed_bytes(weight.numel(), bits)
        packed = buffers[kind][offsets[kind] : offsets[kind] + n_bytes]
        offsets[kind] += n_bytes
        q_codes = unpack(packed, bits, weight.numel()).reshape(weight.shape)
        channels = weight.shape[0]
        scale = take(channels)
        new[f"{q.name}.weight"] = q_codes.float() * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
        has_bias = f"{q.name}.bias" in state
        shift = take(channels) if has_bias or q.bn else None
        if q.bn:
            bn = modules[q.bn]
            new[f"{q.bn}.weight"] = torch.ones(channels)
            new[f"{q.bn}.bias"] = shift
            new[f"{q.bn}.running_mean"] = torch.zeros(channels)
            new[f"{q.bn}.running_var"] = torch.full((channels,), 1.0 - bn.eps)
            if has_bias:
                new[f"{q.name}.bias"] = torch.zeros(channels)
        elif has_bias:
            new[f"{q.name}.bias"] = shift
    if at != floats.numel() or any(offsets[k] != buffers[k].numel() for k in offsets if k != "float32"):
        raise ValueError("the stored buffers are longer than the model needs")
    for k, v in state.items():
        if k.endswith("num_batches_tracked"):
            new[k] = torch.zeros_like(v)
    model.load_state_dict({k: v.to(state[k].dtype) for k, v in new.items()}, strict=True)
    return model
