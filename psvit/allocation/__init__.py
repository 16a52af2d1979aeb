"""Allocation strategies: which keep ratio each group gets, for a ratio or a memory budget."""

from psvit.allocation.budget import InfeasibleBudget, MemoryModel, check_budget_value, select_groups
from psvit.allocation.largest_first import largest_first
from psvit.allocation.projection import kept_fractions, project_to_saving, repair_to_budget
from psvit.allocation.sensitivity_greedy import predicted_total_drop, sensitivity_greedy
from psvit.allocation.uniform import uniform_for_budget, uniform_ratios

STRATEGIES = ("uniform", "psvit", "largest_first")

__all__ = [
    "STRATEGIES",
    "InfeasibleBudget",
    "MemoryModel",
    "check_budget_value",
    "kept_fractions",
    "largest_first",
    "predicted_total_drop",
    "project_to_saving",
    "repair_to_budget",
    "select_groups",
    "sensitivity_greedy",
    "uniform_for_budget",
    "uniform_ratios",
]
