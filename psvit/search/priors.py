"""Prior allocations: the strategies' answers, evaluated first so that the search starts from them."""

from __future__ import annotations

import numpy as np

from psvit.allocation import sensitivity_greedy, uniform_for_budget
from psvit.sensitivity import SensitivityTable
from psvit.workflow import Setup

#: Budgets (as fractions of the largest feasible saving) of the prior trials of an unconstrained search.
FRONT_BUDGETS = (0.25, 0.5, 0.75)


def strategy_allocations(s: Setup, table: SensitivityTable, strategy: str,
                         budgets: list[float]) -> list[dict[str, float]]:
    """``strategy``'s ("psvit" or "uniform") allocation at each budget, exactly as ``python -m psvit.prune
    strategy=...`` makes it (same rule, same ladder), so a prior trial is that strategy's model."""
    out = []
    for b in budgets:
        if strategy == "psvit":
            out.append(sensitivity_greedy(s.memory, s.groups, table, b))
        else:
            out.append(uniform_for_budget(s.memory, s.groups, b))
    return out


def budget_ladder(s: Setup, budget: float | None, n: int) -> list[float]:
    """``n`` budgets from ``budget`` (or 5% of the reachable saving) up to 90% of the reachable saving."""
    top = 0.9 * s.memory.max_saving(s.groups)
    low = budget if budget is not None else 0.05 * top
    return [float(b) for b in np.linspace(low, max(low, top), n)]


def prior_allocations(s: Setup, table: SensitivityTable, sampler: str, budget: float | None,
                      n_trials: int) -> list[dict[str, float]]:
    """The allocations to evaluate first, without duplicates.

    A search sampler (guided/tpe/nsga2/random) starts from the psvit and uniform allocations for the budget (or, with no
    budget, at a few budgets along the front). The ``psvit``/``uniform`` samplers evaluate only their own strategy,
    at ``n_trials`` budgets from the given one upwards.
    """
    if sampler in ("psvit", "uniform"):
        allocations = strategy_allocations(s, table, sampler, budget_ladder(s, budget, n_trials))
    else:
        top = s.memory.max_saving(s.groups)
        budgets = [budget] if budget is not None else [f * top for f in FRONT_BUDGETS]
        allocations = [a for strategy in ("psvit", "uniform") for a in strategy_allocations(s, table, strategy, budgets)]
    unique: list[dict[str, float]] = []
    for a in allocations:
        if a not in unique:
            unique.append(a)
    return unique
