"""The search space: one keep-ratio parameter per enabled group, within prior bounds.

The parameters are continuous by default (``search.step: null``); a sample that misses the budget is repaired
onto it by the objective (:func:`~psvit.allocation.repair_to_budget`), and pruned shapes are what identify a
model, so there is no need for a ladder. ``search.step`` puts them on one (e.g. 1/16) instead.

Priors from the sensitivity analysis narrow each group's range (the documented choice, rather than re-weighting
the sampler): a group may go down to the sensitivity grid ratio one below its deepest grid ratio whose
validation-accuracy drop stays within ``prior_tolerance`` (insensitive groups may go low), but never below
:data:`MIN_RATIO`; sensitive groups stay high. The range always includes the prior allocations that are
evaluated as the first trials. Without priors every group spans ``[0, 1]``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import FrozenTrial

from psvit.prune import Group
from psvit.sensitivity import SensitivityTable

#: The trial user attribute holding the keep ratios the model was pruned with (kept fractions, after any repair
#: onto the budget): the sampler's parameters are only what was asked for.
RATIOS_ATTR = "ratios"
#: The lowest bound the sensitivity priors give a group.
MIN_RATIO = 1 / 16


def trial_ratios(trial: FrozenTrial) -> dict[str, float]:
    """The keep ratios ``trial``'s model was pruned with (its parameters, for trials recorded without them)."""
    return dict(trial.user_attrs.get(RATIOS_ATTR, trial.params))


@dataclass(frozen=True)
class SearchSpace:
    """``bounds[group] = (low, high)`` keep ratios, continuous or on a ladder of ``step``."""

    bounds: dict[str, tuple[float, float]]
    step: float | None = None

    @classmethod
    def full(cls, groups: Sequence[Group], step: float | None = None,
             include: Sequence[Mapping[str, float]] = ()) -> SearchSpace:
        """``[0, 1]`` (or ``[step, 1]`` on a ladder) for every group, widened to hold the ``include``d allocations."""
        return cls({g.name: (_lowest(g.name, step or 0.0, include), 1.0) for g in groups}, step)

    @classmethod
    def from_priors(cls, groups: Sequence[Group], table: SensitivityTable, prior_tolerance: float,
                    include: Sequence[Mapping[str, float]] = (), step: float | None = None) -> SearchSpace:
        bounds = {}
        for g in groups:
            grid = sorted({r["ratio"] for r in table.rows if r["group"] == g.name})
            admissible = [r["ratio"] for r in table.rows if r["group"] == g.name and r["acc_drop"] <= prior_tolerance]
            deepest = min(admissible, default=1.0)
            below = [r for r in grid if r < deepest]
            low = max(MIN_RATIO, below[-1] if below else deepest)
            if step:
                low = max(step, snap_down(low, step))
            bounds[g.name] = (_lowest(g.name, low, include), 1.0)
        return cls(bounds, step)

    def distributions(self) -> dict[str, FloatDistribution]:
        """The Optuna distribution of every parameter, exactly as :meth:`suggest` asks for them."""
        return {name: FloatDistribution(lo, hi, step=self.step) for name, (lo, hi) in self.bounds.items()}

    def suggest(self, trial: optuna.Trial) -> dict[str, float]:
        """Ask the trial for one keep ratio per group (parameter names are the group names)."""
        return {name: trial.suggest_float(name, lo, hi, step=self.step) for name, (lo, hi) in self.bounds.items()}


def _lowest(name: str, low: float, include: Sequence[Mapping[str, float]]) -> float:
    return min([low, *(ratios[name] for ratios in include if name in ratios)])


def snap_down(ratio: float, step: float) -> float:
    """The largest multiple of ``step`` that is <= ``ratio`` (with float tolerance)."""
    return step * math.floor(ratio / step + 1e-9)
