"""Symmetric per-output-channel uniform quantization of a weight tensor: the arithmetic, nothing else.

A ``b``-bit weight row ``w`` (one output channel) is stored as integer codes ``q`` in ``[-Q, Q]`` with
``Q = 2**(b-1) - 1`` and one float scale ``s``: ``w ~ q * s``. The scale is the row's largest magnitude over
``Q``, shrunk by a clipping factor chosen per row to minimize the squared error (at 2-4 bits a little clipping
beats rounding the many small weights to 0); factor 1 is always a candidate, so quantizing an already quantized
row gives it back unchanged (the quantizer is idempotent, which the checkpoint format relies on).

``fake_quantize`` is the training form: the forward sees ``q * s``, the backward passes gradients straight
through to the float weights (the straight-through estimator), as quantization-aware training does.
"""

from __future__ import annotations

import torch

#: Bit-widths that mean "not quantized" (stored as float32).
FLOAT_BITS = 32
#: Clipping factors tried per row (the largest magnitude times each); 1.0 first, so ties keep no clipping.
CLIP_FACTORS = (1.0, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5, 0.45, 0.4, 0.35, 0.3)


def check_bits(bits: object) -> int:
    """``bits`` as an int in 2..8 or 32, else ValueError."""
    if isinstance(bits, bool) or not isinstance(bits, int) or not (2 <= bits <= 8 or bits == FLOAT_BITS):
        raise ValueError(f"a weight bit-width must be an integer in 2..8 or 32, got {bits!r}")
    return bits


def qmax(bits: int) -> int:
    """The largest code magnitude of ``bits``-bit symmetric quantization (2 bits: ternary, 1)."""
    return 2 ** (check_bits(bits) - 1) - 1


def _rows(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().reshape(weight.shape[0], -1).float()


def channel_scales(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """One scale per output channel (axis 0) of ``weight``: the squared-error-best clipped max-abs over Q."""
    rows, q = _rows(weight), qmax(bits)
    peak = rows.abs().amax(1)
    best_scale = peak / q
    best_err = torch.full_like(peak, float("inf"))
    for factor in CLIP_FACTORS:
        scale = (peak * factor / q).clamp_min(torch.finfo(torch.float32).tiny)
        err = ((torch.clamp(torch.round(rows / scale[:, None]), -q, q) * scale[:, None] - rows) ** 2).sum(1)
        better = err < best_err
        best_err = torch.where(better, err, best_err)
        best_scale = torch.where(better, scale, best_scale)
    return torch.where(peak > 0, best_scale, torch.ones_like(peak))


def quantize(weight: torch.Tensor, bits: int, scales: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes (int8, ``weight``'s shape) and per-output-channel scales (float32) of ``weight``."""
    q = qmax(bits)
    scales = channel_scales(weight, bits) if scales is None else scales
    shape = (-1,) + (1,) * (weight.dim() - 1)
    codes = torch.clamp(torch.round(weight.detach().float() / scales.reshape(shape)), -q, q)
    return codes.to(torch.int8), scales


def dequantize(codes: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """``codes * scales`` per output channel, as float32."""
    return codes.float() * scales.reshape((-1,) + (1,) * (codes.dim() - 1))


def quantized(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """``weight`` rounded to its ``bits``-bit grid (float, same dtype), no gradient."""
    return dequantize(*quantize(weight, bits)).to(weight.dtype)


def fake_quantize(weight: torch.Tensor, bits: int) -> torch.Tensor:
    """Quantized in the forward, identity in the backward (straight-through estimator)."""
    return weight + (quantized(weight, bits) - weight).detach()
