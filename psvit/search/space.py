"""The search space: one keep-ratio parameter per enabled group, within prior bounds, and (with more than one
``search.bits`` choice) one weight bit-width parameter ``bits.<group>`` per group.

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
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution
from optuna.trial import FrozenTrial

from psvit.prune import Group
from psvit.quant import FLOAT_BITS
from psvit.sensitivity import SensitivityTable

#: The trial user attribute holding the keep ratios the model was pruned with (kept fractions, after any repair
#: onto the budget): the sampler's parameters are only what was asked for.
RATIOS_ATTR = "ratios"
#: The trial user attribute holding the weight bit-width of every group (absent: float32).
BITS_ATTR = "bits"
#: Bit-width parameters are named ``bits.<group>``.
BITS_PREFIX = "bits."
#: The lowest bound the sensitivity priors give a group.
MIN_RATIO = 1 / 16


def trial_ratios(trial: FrozenTrial) -> dict[str, float]:
    """The keep ratios ``trial``'s model was pruned with (its parameters, for trials recorded without them)."""
    return dict(
        trial.user_attrs.get(RATIOS_ATTR, {k: v for k, v in trial.params.items() if not k.startswith(BITS_PREFIX)})
    )


def trial_bits(trial: FrozenTrial) -> dict[str, int] | None:
    """The weight bit-width per group of ``trial``'s model (None: float32)."""
    bits = trial.user_attrs.get(BITS_ATTR)
    return {k: int(v) for k, v in bits.items()} if bits else None


@dataclass(frozen=True)
class SearchSpace:
    """``bounds[group] = (low, high)`` keep ratios, continuous or on a ladder of ``step``; ``bits``: the weight
    bit-widths every group may take (one value: all groups at it, no parameter; ``(32,)``: float32)."""

    bounds: dict[str, tuple[float, float]]
    step: float | None = None
    bits: tuple[int, ...] = (FLOAT_BITS,)

    @property
    def searches_bits(self) -> bool:
        return len(self.bits) > 1

    @property
    def quantizes(self) -> bool:
        return min(self.bits) < FLOAT_BITS

    def bits_param(self, group: str) -> str:
        return BITS_PREFIX + group

    @classmethod
    def full(
        cls,
        groups: Sequence[Group],
        step: float | None = None,
        include: Sequence[Mapping[str, float]] = (),
        bits: Sequence[int] = (FLOAT_BITS,),
    ) -> SearchSpace:
        """``[0, 1]`` (or ``[step, 1]`` on a ladder) for every group, widened to hold the ``include``d allocations."""
        return cls({g.name: (_lowest(g.name, step or 0.0, include), 1.0) for g in groups}, step, tuple(bits))

    @classmethod
    def from_priors(
        cls,
        groups: Sequence[Group],
        table: SensitivityTable,
        prior_tolerance: float,
        include: Sequence[Mapping[str, float]] = (),
        step: float | None = None,
        bits: Sequence[int] = (FLOAT_BITS,),
    ) -> SearchSpace:
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
        return cls(bounds, step, tuple(bits))

    def distributions(self) -> dict[str, BaseDistribution]:
        """The Optuna distribution of every parameter, exactly as :meth:`suggest` asks for them."""
        out: dict[str, BaseDistribution] = {
            name: FloatDistribution(lo, hi, step=self.step) for name, (lo, hi) in self.bounds.items()
        }
        if self.searches_bits:
            out.update({self.bits_param(name): CategoricalDistribution(self.bits) for name in self.bounds})
        return out

    def suggest(self, trial: optuna.Trial) -> tuple[dict[str, float], dict[str, int] | None]:
        """Ask the trial for one keep ratio per group (parameter names are the group names) and, when bit-widths
        are searched, one bit-width per group; returns the ratios and the bit-widths (None: float32)."""
        ratios = {name: trial.suggest_float(name, lo, hi, step=self.step) for name, (lo, hi) in self.bounds.items()}
        if self.searches_bits:
            return ratios, {
                name: int(trial.suggest_categorical(self.bits_param(name), self.bits)) for name in self.bounds
            }
        return ratios, ({name: self.bits[0] for name in self.bounds} if self.quantizes else None)


def _lowest(name: str, low: float, include: Sequence[Mapping[str, float]]) -> float:
    return min([low, *(ratios[name] for ratios in include if name in ratios)])


def snap_down(ratio: float, step: float) -> float:
    """The largest multiple of ``step`` that is <= ``ratio`` (with float tolerance)."""
    return step * math.floor(ratio / step + 1e-9)
