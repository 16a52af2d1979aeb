"""Exact memory accounting of keep-ratio dicts, before any pruning: the budget side of every strategy.

The memory of a pruned model is its weight bytes (all parameters, see :mod:`psvit.cost`), computed from the
width config that :func:`psvit.prune.width_config` predicts, so a budget is checked without touching weights.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psvit.cost import weight_bytes
from psvit.errors import ConfigError
from psvit.prune import Group, PruneConstraints, kept_channels, narrowed_config
from psvit.prune.groups import group_kinds, resolved_groups


class InfeasibleBudget(ConfigError):
    """The memory budget cannot be reached under the constraints."""


def check_budget_value(budget: object) -> float:
    """``budget`` as a float strictly inside (0, 1), else a one-line :class:`ConfigError`."""
    if isinstance(budget, bool) or not isinstance(budget, (int, float)) or not 0.0 < float(budget) < 1.0:
        raise ConfigError(f"budget must be a number strictly between 0 and 1 (a memory-saving fraction), got {budget!r}")
    return float(budget)


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


class MemoryModel:
    """Memory saving of any keep-ratio dict for one base model, exactly as the pruned model will have it.

    Sizes are memoized by the kept channel counts, so the many nearby ratio dicts a search or a projection
    tries cost one cost-model call per distinct pruned model.
    """

    def __init__(self, model_name: str, base_config: Mapping[str, Any], constraints: PruneConstraints) -> None:
        self.model_name = model_name
        self.constraints = constraints
        self.base_config, self.groups = resolved_groups(model_name, dict(base_config))
        self.base_bytes = weight_bytes(model_name, self.base_config)
        self._bytes: dict[tuple[int, ...], int] = {}

    def kept(self, ratios: Mapping[str, float]) -> dict[str, int]:
        """Kept channels per head of every group: what identifies the pruned model's shape."""
        return kept_channels(self.groups, ratios, self.constraints)

    def config(self, ratios: Mapping[str, float]) -> dict[str, Any]:
        """The pruned model's width config."""
        return narrowed_config(self.base_config, self.groups, self.kept(ratios))

    def bytes(self, ratios: Mapping[str, float]) -> int:
        kept = self.kept(ratios)
        key = tuple(kept.values())
        if key not in self._bytes:
            self._bytes[key] = weight_bytes(self.model_name, narrowed_config(self.base_config, self.groups, kept))
        return self._bytes[key]

    def saving(self, ratios: Mapping[str, float]) -> float:
        """Fraction of the base model's weight bytes that pruning with ``ratios`` removes."""
        return 1.0 - self.bytes(ratios) / self.base_bytes

    def max_saving(self, groups: Sequence[Group]) -> float:
        """The largest saving reachable by pruning ``groups`` (every one down to the constraints' minimum)."""
        return self.saving({g.name: 0.0 for g in groups})

    def check_feasible(self, budget: float, groups: Sequence[Group]) -> None:
        """Raise :class:`InfeasibleBudget` (one line) when ``budget`` exceeds what ``groups`` can save."""
        best = self.max_saving(groups)
        if budget > best:
            raise InfeasibleBudget(
                f"budget {budget:.4f} is infeasible: pruning every enabled group ({len(groups)}) to its minimum "
                f"under the constraints saves at most {best:.4f} of the weight memory"
            )
