"""One entry for every allocation strategy: keep ratios per group for a keep ratio or a memory budget.

``uniform`` takes a keep ratio (``ratio``) or a budget; ``psvit`` and ``largest_first`` take a budget and the
sensitivity table, which is asked for (``sensitivity()``) only by them. With ``bits``, a budget counts the
weights at those bit-widths, so the widths are found for the saving that is left once they are quantized.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from psvit.allocation.largest_first import largest_first
from psvit.allocation.sensitivity_greedy import sensitivity_greedy
from psvit.allocation.uniform import uniform_for_budget, uniform_ratios
from psvit.budget import Bits, MemoryModel
from psvit.config import check_budget_value
from psvit.errors import ConfigError
from psvit.prune import Group
from psvit.sensitivity.table import SensitivityTable

STRATEGIES = ("uniform", "psvit", "largest_first")
#: ``psvit``'s default ratio ladder (``conf/strategy/psvit.yaml``) and ``largest_first``'s drop tolerance.
PSVIT_STEP = 1 / 32
LARGEST_FIRST_TOLERANCE = 0.01


def check_strategy(strategy: str, budget: float | None, ratio: float | None) -> float | None:
    """One-line errors for an unknown strategy or a bad budget/ratio combination; returns the budget as a float."""
    if strategy not in STRATEGIES:
        raise ConfigError(f"unknown strategy {strategy!r}; choose one of: {', '.join(STRATEGIES)}")
    if budget is not None:
        budget = check_budget_value(budget)
    if ratio is not None:
        if strategy != "uniform":
            raise ConfigError("+ratio=R is for strategy=uniform; other strategies take +budget=B")
        if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0 < ratio <= 1:
            raise ConfigError(f"ratio must be a keep ratio in (0, 1], got {ratio!r}")
    elif budget is None:
        raise ConfigError(
            f"strategy={strategy} needs +budget=B (minimum memory saving, 0 < B < 1)"
            + (" or +ratio=R" if strategy == "uniform" else "")
        )
    return budget


def allocate(
    strategy: str,
    memory: MemoryModel,
    groups: Sequence[Group],
    *,
    budget: float | None = None,
    ratio: float | None = None,
    bits: Bits = None,
    sensitivity: Callable[[], SensitivityTable] | None = None,
    step: float = PSVIT_STEP,
    tolerance: float = LARGEST_FIRST_TOLERANCE,
) -> tuple[dict[str, float], str]:
    """Keep ratios per group for ``strategy``; and a note on how they were found. The budget's feasibility is
    checked (:meth:`MemoryModel.check_feasible`) before any sensitivity is asked for."""
    budget = check_strategy(strategy, budget, ratio)
    if ratio is not None:
        return uniform_ratios(groups, ratio), f"uniform keep ratio {ratio}"
    assert budget is not None  # check_strategy: a ratio or a budget
    memory.check_feasible(budget, groups, bits)
    if strategy == "uniform":
        return uniform_for_budget(memory, groups, budget, bits=bits), f"largest uniform ratio saving >= {budget}"
    if sensitivity is None:
        raise ConfigError(f"strategy={strategy} needs the sensitivity table")
    table = sensitivity()
    if strategy == "psvit":
        return sensitivity_greedy(memory, groups, table, budget, step, bits), "from the sensitivity table"
    return largest_first(memory, groups, table, budget, tolerance, bits), "from the sensitivity table"
