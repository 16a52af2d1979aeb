"""The PrimeSVT-style baseline: prune the largest groups first, each as deep as a drop tolerance allows.

Groups are ranked by the memory they hold (the bytes saved by pruning that group alone to its minimum). From
the largest to the smallest, each group takes the deepest keep ratio of the sensitivity grid whose measured
accuracy drop is at most ``tolerance``; as soon as the budget holds, the last group is raised back to the
shallowest admissible grid ratio that still meets it, and the rest stay intact.
"""

from __future__ import annotations

from collections.abc import Sequence

from psvit.budget import Bits, InfeasibleBudget, MemoryModel
from psvit.prune import Group
from psvit.sensitivity.table import SensitivityTable


def largest_first(
    memory: MemoryModel,
    groups: Sequence[Group],
    table: SensitivityTable,
    budget: float,
    tolerance: float = 0.01,
    bits: Bits = None,
) -> dict[str, float]:
    memory.check_feasible(budget, groups, bits)
    by_size = sorted(groups, key=lambda g: memory.saving({g.name: 0.0}), reverse=True)
    ratios: dict[str, float] = {}
    for g in by_size:
        admissible = sorted(r["ratio"] for r in table.rows if r["group"] == g.name and r["acc_drop"] <= tolerance)
        if not admissible:
            continue
        ratios[g.name] = admissible[0]
        if memory.saving(ratios, bits) >= budget:
            for r in reversed(admissible):  # shallowest ratio that still meets the budget
                if memory.saving({**ratios, g.name: r}, bits) >= budget:
                    ratios[g.name] = r
                    break
            return ratios
    raise InfeasibleBudget(
        f"largest_first cannot reach budget {budget:.4f} with accuracy drops <= {tolerance} per group: it saves at "
        f"most {memory.saving(ratios, bits):.4f}; raise strategy.tolerance or lower the budget"
    )
