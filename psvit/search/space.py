"""The search space: one keep-ratio parameter per enabled group, on a discrete ladder, within prior bounds.

Priors from the sensitivity analysis narrow each group's range (this is the documented choice, rather than
re-weighting the sampler): a group may go down to the deepest sensitivity grid ratio whose validation-accuracy
drop stays within ``prior_tolerance``, one ladder step deeper (insensitive groups may go low), but never below
the ladder's first step; sensitive groups stay high. The range always includes the prior allocations that are
evaluated as the first trials. Without priors every group spans ``[step, 1]`` (widened, for the ``psvit`` and
``uniform`` samplers, to hold their allocations).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna

from psvit.prune import Group
from psvit.sensitivity import SensitivityTable


@dataclass(frozen=True)
class SearchSpace:
    """``bounds[group] = (low, high)`` keep ratios on a ladder of ``step``."""

    bounds: dict[str, tuple[float, float]]
    step: float

    @classmethod
    def full(cls, groups: Sequence[Group], step: float, include: Sequence[Mapping[str, float]] = ()) -> SearchSpace:
        """``[step, 1]`` for every group, widened to hold the ``include``d allocations."""
        return cls({g.name: (_lowest(g.name, step, include), 1.0) for g in groups}, step)

    @classmethod
    def from_priors(cls, groups: Sequence[Group], table: SensitivityTable, step: float, prior_tolerance: float,
                    include: Sequence[Mapping[str, float]] = ()) -> SearchSpace:
        bounds = {}
        for g in groups:
            admissible = [r["ratio"] for r in table.rows if r["group"] == g.name and r["acc_drop"] <= prior_tolerance]
            deepest = min(admissible, default=1.0)
            bounds[g.name] = (_lowest(g.name, max(step, snap_down(deepest, step) - step), include), 1.0)
        return cls(bounds, step)

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Ask the trial for one keep ratio per group (parameter names are the group names)."""
        return {name: trial.suggest_float(name, lo, hi, step=self.step) for name, (lo, hi) in self.bounds.items()}


def _lowest(name: str, low: float, include: Sequence[Mapping[str, float]]) -> float:
    return min([low, *(ratios[name] for ratios in include if name in ratios)])


def snap_down(ratio: float, step: float) -> float:
    """The largest multiple of ``step`` that is <= ``ratio`` (with float tolerance)."""
    return step * math.floor(ratio / step + 1e-9)
