"""Closed-form costs from a model's config alone (no model built): parameters, weight bytes and FLOPs.

Dispatches by model name to the family's :class:`~psvit.models.registry.Analytics` (defined in the family's
own file). Convention: 1 FLOP = 1 MAC, as the Spikformer papers use; only conv, linear and attention-matmul
MACs are counted (not BN, LIF, pooling or residual additions).
"""

from __future__ import annotations

from typing import Any

from psvit.models.registry import get_analytics

#: float32 weights.
DEFAULT_BYTES_PER_PARAM = 4


def count_params(model_name: str, config: dict[str, Any], *, include_unused_norms: bool = True) -> int:
    """Parameters of ``model_name`` built from ``config``. ``include_unused_norms`` counts layers that are in
    the state_dict but never used in forward (Spikformer's ``norm1``/``norm2``), as the official figures do."""
    return get_analytics(model_name).count_params(config, include_unused_norms)


def weight_bytes(model_name: str, config: dict[str, Any], bytes_per_param: int = DEFAULT_BYTES_PER_PARAM) -> int:
    """Weight memory in bytes (the papers' "memory"): all parameters times ``bytes_per_param``."""
    return count_params(model_name, config) * bytes_per_param


def memory_saving(model_name: str, base_config: dict[str, Any], config: dict[str, Any]) -> float:
    """Fraction of weight memory saved by ``config`` relative to ``base_config``: ``1 - bytes / base bytes``."""
    return 1.0 - weight_bytes(model_name, config) / weight_bytes(model_name, base_config)


def layer_macs(model_name: str, config: dict[str, Any]) -> dict[str, int]:
    """MACs per image and per time step, keyed by module name (``"block.0.attn.q_linear"``) and attention
    matmul (``"block.0.attn.kv_matmul"`` for k^T@v, ``"block.0.attn.qkv_matmul"`` for q@(k^T v))."""
    return get_analytics(model_name).layer_macs(config)


def count_flops(model_name: str, config: dict[str, Any]) -> int:
    """FLOPs (= MACs) per image for ONE time step; a full inference over ``T`` steps is ``T * count_flops``."""
    return sum(layer_macs(model_name, config).values())
