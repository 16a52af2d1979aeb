"""Uniform channel pruning (PSViT step 1): one keep ratio for every enabled group."""

from __future__ import annotations

from collections.abc import Sequence

from psvit.budget import Bits, MemoryModel
from psvit.prune import Group

#: Resolution of the uniform ratio searched for a budget.
UNIFORM_STEP = 1 / 128


def uniform_ratios(groups: Sequence[Group], ratio: float) -> dict[str, float]:
    return {g.name: float(ratio) for g in groups}


def uniform_for_budget(
    memory: MemoryModel, groups: Sequence[Group], budget: float, step: float = UNIFORM_STEP, bits: Bits = None
) -> dict[str, float]:
    """The largest uniform keep ratio (on a grid of ``step``) whose pruned model (at bit-widths ``bits``) saves
    at least ``budget``."""
    memory.check_feasible(budget, groups, bits)
    steps = round(1 / step)
    for k in range(steps, -1, -1):
        ratios = uniform_ratios(groups, k / steps)
        if memory.saving(ratios, bits) >= budget:
            return ratios
    return uniform_ratios(groups, 0.0)
