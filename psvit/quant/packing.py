"""Packing integer codes densely into bytes: 4 two-bit, 2 four-bit or 1 eight-bit code per byte.

Other widths go in the next container up (3 bits in 4, 5-7 bits in 8), so the bytes the memory model counts
(:func:`packed_bytes`) are the bytes a file holds. Codes are stored offset to unsigned: ``q + 2**(c-1)`` for a
``c``-bit container, little end first within a byte.
"""

from __future__ import annotations

import math

import torch

#: Container widths that pack densely into bytes.
CONTAINERS = (2, 4, 8)


def container_bits(bits: int) -> int:
    """The storage width of ``bits``-bit codes: the smallest of 2, 4, 8 that holds them (32 stays 32)."""
    if bits > 8:
        return bits
    return next(c for c in CONTAINERS if c >= bits)


def packed_bytes(numel: int, bits: int) -> int:
    """Bytes that ``numel`` codes of ``bits`` bits take once packed (float32 for 32 bits)."""
    return math.ceil(numel * container_bits(bits) / 8)


def pack(codes: torch.Tensor, bits: int) -> torch.Tensor:
    """Signed ``codes`` (any shape) of ``bits`` bits as a flat uint8 tensor of :func:`packed_bytes` bytes."""
    c = container_bits(bits)
    values = (codes.flatten().to(torch.int16) + 2 ** (c - 1)).to(torch.uint8)
    per_byte = 8 // c
    pad = (-values.numel()) % per_byte
    values = torch.cat([values, values.new_zeros(pad)]).reshape(-1, per_byte)
    shifts = torch.arange(per_byte, dtype=torch.uint8) * c
    return (values << shifts).sum(1, dtype=torch.uint8) if per_byte > 1 else values.flatten()


def unpack(data: torch.Tensor, bits: int, numel: int) -> torch.Tensor:
    """The first ``numel`` signed codes (int8, flat) packed in ``data`` by :func:`pack`."""
    c = container_bits(bits)
    per_byte = 8 // c
    shifts = torch.arange(per_byte, dtype=torch.uint8) * c
    values = (data.reshape(-1, 1) >> shifts) & (2**c - 1) if per_byte > 1 else data.reshape(-1, 1)
    return (values.flatten()[:numel].to(torch.int16) - 2 ** (c - 1)).to(torch.int8)
