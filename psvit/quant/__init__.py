"""Weight quantization: per-output-channel symmetric integer weights at a bit-width per channel group.

* :mod:`~psvit.quant.quantizer`: the arithmetic (scales, codes, the straight-through fake quantizer);
* :mod:`~psvit.quant.packing`: integer codes packed into bytes;
* :mod:`~psvit.quant.layout`: which layers a group's bit-width quantizes, and the exact bytes;
* :mod:`~psvit.quant.model`: quantizing a model in place, quantization-aware training;
* :mod:`~psvit.quant.storage`: a quantized model as a few packed buffers (the checkpoint format).
"""

from psvit.quant.layout import QuantLayer, layer_bits, quant_layers, storage_bytes
from psvit.quant.model import layers_for, quantization, quantization_aware, quantize_weights, stored_bytes
from psvit.quant.quantizer import FLOAT_BITS, check_bits

__all__ = [
    "FLOAT_BITS",
    "QuantLayer",
    "check_bits",
    "layer_bits",
    "layers_for",
    "quant_layers",
    "quantization",
    "quantization_aware",
    "quantize_weights",
    "storage_bytes",
    "stored_bytes",
]
