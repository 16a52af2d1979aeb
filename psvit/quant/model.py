"""Quantizing a (pruned) psvit model's weights in place, and quantization-aware training.

A quantized model is an ordinary model of its family whose quantized conv/linear weights hold exactly their
dequantized values (codes times scales), plus the attribute ``model.quantization`` (layer name -> bit-width)
that says which. Evaluating it is evaluating the quantized model; :mod:`psvit.quant.storage` writes it with
packed integer codes, and :func:`psvit.load` restores it.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from torch import nn
from torch.nn.utils import parametrize

from psvit.models.channels import Group
from psvit.quant.layout import layer_bits, quant_layers, storage_bytes
from psvit.quant.quantizer import fake_quantize, quantized

#: The model attribute holding the bit-width of each quantized layer (absent or empty: a float32 model).
ATTR = "quantization"


def quantization(model: nn.Module) -> dict[str, int]:
    """Bit-width per quantized layer of ``model`` ({} for a float32 model)."""
    return dict(getattr(model, ATTR, None) or {})


def layers_for(groups: list[Group], bits: Mapping[str, int]) -> dict[str, int]:
    """Bit-width per layer that group bit-widths ``bits`` quantize (``groups``: all of the model's groups)."""
    return layer_bits(quant_layers(groups, set(bits)), bits)


def stored_bytes(model: nn.Module, groups: list[Group]) -> dict[str, int]:
    """Bytes by storage kind of ``model`` as :mod:`psvit.quant.storage` writes it (``groups``: all its groups)."""
    shapes = {name: tuple(p.shape) for name, p in model.named_parameters()}
    return storage_bytes(shapes, quant_layers(groups, {g.name for g in groups}), quantization(model))


def quantize_weights(model: nn.Module, layers: Mapping[str, int]) -> nn.Module:
    """Round each named layer's weight to its bit-width, in place; records ``model.quantization``."""
    modules = dict(model.named_modules())
    for name, bits in layers.items():
        weight = modules[name].weight
        weight.data.copy_(quantized(weight.data, bits))
    setattr(model, ATTR, {**quantization(model), **dict(layers)})
    return model


class _FakeQuantize(nn.Module):
    """Parametrization: the weight as the forward sees it during quantization-aware training."""

    def __init__(self, bits: int) -> None:
        super().__init__()
        self.bits = bits

    def forward(self, weight):
        return fake_quantize(weight, self.bits)


@contextmanager
def quantization_aware(model: nn.Module) -> Iterator[nn.Module]:
    """Train the float weights behind the quantized ones (straight-through estimator) inside the ``with``.

    On exit every quantized weight holds its quantized value again. A float32 model is left as it is.
    """
    layers = quantization(model)
    modules = dict(model.named_modules())
    for name, bits in layers.items():
        parametrize.register_parametrization(modules[name], "weight", _FakeQuantize(bits))
    try:
        yield model
    finally:
        for name in layers:
            parametrize.remove_parametrizations(modules[name], "weight", leave_parametrized=True)
        quantize_weights(model, layers)  # exactly on the grid (idempotent for weights already on it)
