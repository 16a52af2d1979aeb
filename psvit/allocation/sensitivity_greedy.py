"""PSViT step 3: fine-grained per-group keep ratios from the sensitivity table, for a memory budget.

The rule (greedy on accuracy drop per byte saved):

1. Every enabled group starts at keep ratio 1 and may step down a ladder of ratios ``1, 1 - s, 1 - 2s, ...``
   (``s = step``, default 1/32) to 0, where the constraints' minimum channel count takes over.
2. A group's predicted accuracy drop at any ratio is its sensitivity curve made monotone, linearly
   interpolated between grid points and extrapolated below the lowest one
   (:meth:`~psvit.sensitivity.SensitivityTable.predicted_drop`). Drops of different groups add up.
3. While the exact memory saving (from the width config) is below the budget, take the one step, over all
   groups, with the smallest increase in predicted drop per byte it saves; ties go to the larger saving.
   Steps that save no byte (rounding) are taken with the next one.
"""

from __future__ import annotations

from collections.abc import Sequence

from psvit.budget import Bits, MemoryModel
from psvit.prune import Group
from psvit.sensitivity.table import SensitivityTable

DEFAULT_STEP = 1 / 32


def sensitivity_greedy(
    memory: MemoryModel,
    groups: Sequence[Group],
    table: SensitivityTable,
    budget: float,
    step: float = DEFAULT_STEP,
    bits: Bits = None,
) -> dict[str, float]:
    """Per-group keep ratios meeting ``budget`` with the least predicted accuracy drop (see module doc), for
    weights stored at bit-widths ``bits`` (the widths that are left to prune once they are counted)."""
    memory.check_feasible(budget, groups, bits)
    n_steps = round(1 / step)
    level = {g.name: n_steps for g in groups}  # ratio = level / n_steps
    ratios = {g.name: 1.0 for g in groups}
    current = memory.bytes(ratios, bits)
    target = memory.base_bytes * (1 - budget)
    while current > target:
        best = None
        for g in groups:
            lvl = level[g.name]
            # walk down until this group saves at least one byte (or hits the bottom of its ladder)
            while lvl > 0:
                lvl -= 1
                trial = {**ratios, g.name: lvl / n_steps}
                trial_bytes = memory.bytes(trial, bits)
                if trial_bytes < current:
                    break
            else:
                continue
            saved = current - trial_bytes
            cost = table.predicted_drop(g.name, lvl / n_steps) - table.predicted_drop(g.name, ratios[g.name])
            key = (max(cost, 0.0) / saved, -saved)
            if best is None or key < best[0]:
                best = (key, g.name, lvl, trial_bytes)
        if best is None:  # cannot happen after check_feasible, but never loop forever
            break
        _, name, lvl, current = best
        level[name] = lvl
        ratios[name] = lvl / n_steps
    return ratios


def predicted_total_drop(table: SensitivityTable, ratios: dict[str, float]) -> float:
    """Sum of the groups' predicted accuracy drops (the additivity assumption of the greedy rule)."""
    return sum(table.predicted_drop(name, r) for name, r in ratios.items())
