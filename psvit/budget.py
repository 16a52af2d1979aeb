"""Exact memory accounting of keep-ratio dicts, before any pruning: the budget side of every strategy.

The memory of a pruned model is its weight bytes (all parameters, see :mod:`psvit.cost`), computed from the
width config that :func:`psvit.prune.width_config` predicts, so a budget is checked without touching weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psvit.cost import param_shapes, weight_bytes
from psvit.cost.analytic import DEFAULT_BYTES_PER_PARAM, params_of_widths
from psvit.errors import ConfigError
from psvit.prune import Group, PruneConstraints, narrowed_config
from psvit.prune.constraints import check_known, keep_rule
from psvit.prune.groups import group_kinds, resolved_groups
from psvit.quant.layout import layer_bits, quant_layers, storage_bytes
from psvit.quant.quantizer import FLOAT_BITS

#: Weight bit-width per group name (groups left out: 32, float32). ``None``: every group at 32.
Bits = Mapping[str, int] | None


class InfeasibleBudget(ConfigError):
    """The memory budget cannot be reached under the constraints."""


def select_groups(groups: Sequence[Group], enabled: Sequence[str]) -> list[Group]:
    """The groups whose kind or exact name is listed in ``enabled`` (e.g. ``[mlp, qk, v, sps, embed]``). Kinds
    of other model families are allowed and select nothing, so one list serves every family."""
    chosen = [g for g in groups if g.kind in enabled or g.name in enabled]
    known = set(group_kinds()) | {g.name for g in groups}
    unknown = [e for e in enabled if e not in known]
    if unknown:
        kinds = ", ".join(dict.fromkeys(g.kind for g in groups))
        raise ConfigError(f"prune.enabled: unknown group or kind {unknown[0]!r}; this model's kinds: {kinds}")
    if not chosen:
        raise ConfigError("prune.enabled selects no group")
    return chosen


def quantized_bits(bits: Bits) -> tuple[tuple[str, int], ...]:
    """The groups of ``bits`` below 32 bits, sorted: what identifies the quantization (() for none)."""
    return tuple(sorted((n, int(b)) for n, b in (bits or {}).items() if b < FLOAT_BITS))


class MemoryModel:
    """Memory of any keep-ratio dict (and weight bit-widths) for one base model, exactly as the pruned (and
    quantized, :mod:`psvit.quant.layout`) model will store it; savings are against the float32 base.

    Sizes are memoized by the kept channel counts and bit-widths, so the many nearby allocations a search or a
    projection tries cost one cost-model call per distinct model.
    """

    def __init__(self, model_name: str, base_config: Mapping[str, Any], constraints: PruneConstraints) -> None:
        self.model_name = model_name
        self.constraints = constraints
        self.base_config, self.groups = resolved_groups(model_name, dict(base_config))
        self.layers = quant_layers(self.groups, {g.name for g in self.groups})
        self.base_bytes = weight_bytes(model_name, self.base_config)
        self._bytes: dict[tuple, dict[str, int]] = {}
        self._rules = [keep_rule(g, constraints) for g in self.groups]
        self._names = frozenset(g.name for g in self.groups)
        locations, self._params_of_widths = params_of_widths(model_name, self.base_config)
        by_location = {(g.config_key, g.index): g for g in self.groups}
        self._width_groups = [by_location[location] for location in locations]

    def kept(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channels per head of every group (:func:`psvit.prune.kept_channels`): what identifies the pruned
        model's shape."""
        if not ratios.keys() <= self._names:
            check_known(self.groups, ratios)
        return {rule.name: rule(ratios.get(rule.name, 1.0)) for rule in self._rules}

    def config(self, ratios: Mapping[str, float]) -> dict[str, Any]:
        """The pruned model's width config."""
        return narrowed_config(self.base_config, self.groups, self.kept(ratios))

    def storage(self, ratios: Mapping[str, float], bits: Bits = None) -> dict[str, int]:
        """Bytes by storage kind (``float32``, ``int2``, ``int4``, ``int8``) of the pruned, quantized model."""
        return self.kept_storage(self.kept(ratios), bits)

    def kept_storage(self, kept: Mapping[str, int], bits: Bits = None) -> dict[str, int]:
        """:meth:`storage` of the model that keeps ``kept`` (as :meth:`kept` returns it)."""
        quantized = quantized_bits(bits)
        key = (tuple(kept.values()), quantized)
        if key not in self._bytes:
            if quantized:
                config = narrowed_config(self.base_config, self.groups, kept)
                shapes = param_shapes(self.model_name, config)
                self._bytes[key] = storage_bytes(shapes, self.layers, layer_bits(self.layers, dict(quantized)))
            else:  # the pruned model differs from the base in its widths only: its count is a polynomial of them
                widths = [kept[g.name] * g.heads for g in self._width_groups]
                self._bytes[key] = {"float32": self._params_of_widths(widths) * DEFAULT_BYTES_PER_PARAM}
        return self._bytes[key]

    def bytes(self, ratios: Mapping[str, float], bits: Bits = None) -> int:
        return sum(self.storage(ratios, bits).values())

    def saving(self, ratios: Mapping[str, float], bits: Bits = None) -> float:
        """Fraction of the float32 base model's weight bytes that pruning with ``ratios`` (and quantizing at
        ``bits``) removes."""
        return self.kept_saving(self.kept(ratios), bits)

    def kept_saving(self, kept: Mapping[str, int], bits: Bits = None) -> float:
        """:meth:`saving` of the model that keeps ``kept``."""
        return 1.0 - sum(self.kept_storage(kept, bits).values()) / self.base_bytes

    def max_saving(self, groups: Sequence[Group], bits: Bits = None) -> float:
        """The largest saving reachable by pruning ``groups`` (every one down to the constraints' minimum)."""
        return self.saving({g.name: 0.0 for g in groups}, bits)

    def check_feasible(self, budget: float, groups: Sequence[Group], bits: Bits = None) -> None:
        """Raise :class:`InfeasibleBudget` (one line) when ``budget`` exceeds what ``groups`` can save."""
        best = self.max_saving(groups, bits)
        if budget > best:
            at = f" at {min(bits.values())} bits" if quantized_bits(bits) else ""
            raise InfeasibleBudget(
                f"budget {budget:.4f} is infeasible: pruning every enabled group ({len(groups)}) to its minimum "
                f"under the constraints{at} saves at most {best:.4f} of the weight memory"
            )
