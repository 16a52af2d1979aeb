"""Allocation strategies: which keep ratio each group gets, for a ratio or a memory budget."""

from psvit.allocation.largest_first import largest_first
from psvit.allocation.projection import kept_fractions, project_to_saving, repair_to_budget
from psvit.allocation.sensitivity_greedy import bit_ladder, greedy_allocation, predicted_total_drop, sensitivity_greedy
from psvit.allocation.strategy import LARGEST_FIRST_TOLERANCE, PSVIT_STEP, STRATEGIES, allocate, check_strategy
from psvit.allocation.uniform import uniform_for_budget, uniform_ratios

__all__ = [
    "LARGEST_FIRST_TOLERANCE",
    "PSVIT_STEP",
    "STRATEGIES",
    "allocate",
    "bit_ladder",
    "check_strategy",
    "greedy_allocation",
    "kept_fractions",
    "largest_first",
    "predicted_total_drop",
    "project_to_saving",
    "repair_to_budget",
    "sensitivity_greedy",
    "uniform_for_budget",
    "uniform_ratios",
]
