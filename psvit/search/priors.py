"""Prior allocations: the strategies' answers, evaluated first so that the search starts from them.

A prior is a dict of trial parameters: a keep ratio per group and, when bit-widths are searched, ``bits.<group>``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from psvit.allocation import greedy_allocation, sensitivity_greedy, uniform_for_budget
from psvit.budget import Bits, InfeasibleBudget
from psvit.quant import FLOAT_BITS
from psvit.search.space import BITS_PREFIX
from psvit.sensitivity import SensitivityTable
from psvit.workflow import Setup

#: The uniform bit-widths whose psvit allocations are priors of a bit-width search (when among the choices).
PRIOR_BITS = (8, 4)

#: Budgets (as fractions of the largest feasible saving) of the prior trials of an unconstrained search.
FRONT_BUDGETS = (0.25, 0.5, 0.75)


def strategy_allocations(
    s: Setup, table: SensitivityTable, strategy: str, budgets: list[float], bits: Bits = None
) -> list[dict[str, float]]:
    """``strategy``'s ("psvit" or "uniform") allocation at each budget, exactly as ``python -m psvit.prune
    strategy=...`` makes it (same rule, same ladder), so a prior trial is that strategy's model; with ``bits``,
    the widths for the budget left once the weights are counted at those bit-widths."""
    out = []
    for b in budgets:
        if strategy == "psvit":
            out.append(sensitivity_greedy(s.memory, s.groups, table, b, bits=bits))
        else:
            out.append(uniform_for_budget(s.memory, s.groups, b, bits=bits))
    return out


def bits_priors(
    s: Setup, table: SensitivityTable, budgets: list[float], choices: Sequence[int]
) -> list[dict[str, float]]:
    """The priors of a bit-width search: the psvit and uniform-width allocations with every group at the widest
    choice, then psvit's widths with every group at 8 and at 4 bits (those among the choices); with more than one
    choice, also the greedy rule over both axes (:func:`~psvit.allocation.greedy_allocation`) and over bit-widths
    alone (quantization only, AQ4SViT's greedy manner). A prior the budget is out of reach for is left out.
    Parameters include ``bits.<group>`` when there is more than one choice."""
    plans = [("psvit", max(choices)), ("uniform", max(choices))]
    plans += [("psvit", b) for b in PRIOR_BITS if b in choices and b != max(choices)]
    out = []
    for strategy, b in plans:
        bits = {g.name: b for g in s.groups}
        try:
            allocations = strategy_allocations(s, table, strategy, budgets, bits if b < FLOAT_BITS else None)
        except InfeasibleBudget:
            continue
        named = {BITS_PREFIX + g.name: b for g in s.groups} if len(choices) > 1 else {}
        out += [{**a, **named} for a in allocations]
    if len(choices) > 1:
        for widths in (True, False):
            for budget in budgets:
                try:
                    ratios, bits = greedy_allocation(s.memory, s.groups, table, budget, choices=choices, widths=widths)
                except InfeasibleBudget:
                    continue
                out.append({**ratios, **{BITS_PREFIX + g.name: bits[g.name] for g in s.groups}})
    return out


def budget_ladder(s: Setup, budget: float | None, n: int, bits: Bits = None) -> list[float]:
    """``n`` budgets from ``budget`` (or 5% of the reachable saving) up to 90% of the reachable saving."""
    top = 0.9 * s.memory.max_saving(s.groups, bits)
    low = budget if budget is not None else 0.05 * top
    return [float(b) for b in np.linspace(low, max(low, top), n)]


def prior_allocations(
    s: Setup,
    table: SensitivityTable,
    sampler: str,
    budget: float | None,
    n_trials: int,
    bits: Sequence[int] = (FLOAT_BITS,),
) -> list[dict[str, float]]:
    """The allocations to evaluate first, without duplicates.

    A search sampler (guided/tpe/nsga2/random) starts from the psvit and uniform allocations for the budget (or, with no
    budget, at a few budgets along the front); searching bit-widths too (``bits``: the choices), from
    :func:`bits_priors`. The ``psvit``/``uniform`` samplers evaluate only their own strategy, at ``n_trials``
    budgets from the given one upwards (at the one bit-width they are given).
    """
    quantized = {g.name: bits[0] for g in s.groups} if len(bits) == 1 and bits[0] < FLOAT_BITS else None
    if sampler in ("psvit", "uniform"):
        allocations = strategy_allocations(s, table, sampler, budget_ladder(s, budget, n_trials, quantized), quantized)
    elif bits != (FLOAT_BITS,):
        top = s.memory.max_saving(s.groups, {g.name: min(bits) for g in s.groups})
        budgets = [budget] if budget is not None else [f * top for f in FRONT_BUDGETS]
        allocations = bits_priors(s, table, budgets, bits)
    else:
        top = s.memory.max_saving(s.groups)
        budgets = [budget] if budget is not None else [f * top for f in FRONT_BUDGETS]
        allocations = [
            a for strategy in ("psvit", "uniform") for a in strategy_allocations(s, table, strategy, budgets)
        ]
    unique: list[dict[str, float]] = []
    for a in allocations:
        if a not in unique:
            unique.append(a)
    return unique
