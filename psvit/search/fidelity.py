"""Multi-fidelity trials: score every pruned model on a small validation subset, promote the promising ones.

Asynchronous successive halving with two rungs, decided inside the objective:

* rung ``subset``: the pruned, BatchNorm-recalibrated model is scored on a fixed, stratified ``subset`` fraction of
  the validation split (the same images in every worker and trial);
* rung ``full``: once ``ceil(1 / promote)`` subset scores exist, every trial whose subset accuracy ranks in the top
  ``floor(promote * n)`` of the ``n`` (with a budget), or is non-dominated in (subset accuracy, memory saving) (without
  one), belongs at the full rung. Promotion adds the recovery epochs (if any), the full validation split and the
  cost report. The trial that was just scored is promoted in place; an earlier one that now ranks there (one
  scored before the rung opened, or overtaken since) is queued as a new trial of the same model, tagged
  ``promotion_of`` (asynchronous successive halving's late promotion). The prior trials (psvit's allocation,
  uniform) compete like any other: a weak prior costs a subset score, not a recovery.

Optuna's own pruners (successive halving, Hyperband) cannot be used here: they raise for multi-objective studies,
and the study keeps (accuracy, saving) so that MLflow's front and the constraint handling stay as they are.
Every trial records its ``fidelity``; the Pareto front and the chosen model use ``full`` trials only.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

from psvit.errors import ConfigError

#: Trial user attribute naming the rung a trial's values come from.
FIDELITY_ATTR = "fidelity"
SUBSET, FULL = "subset", "full"
#: Trial user attribute holding the subset (rung-0) accuracy.
SUBSET_ACC_ATTR = "val_acc_subset"
#: User attribute of a queued late promotion: the number of the subset trial whose model it scores in full.
PROMOTION_OF_ATTR = "promotion_of"


@dataclass(frozen=True)
class Fidelity:
    """``subset``: the validation fraction of the first rung (1.0: every trial is scored at full fidelity);
    ``promote``: the fraction of trials promoted to the full rung (at least one in every ``1 / promote``)."""

    subset: float = 1.0
    promote: float = 1 / 3

    def __post_init__(self) -> None:
        if not 0.0 < self.subset <= 1.0:
            raise ConfigError(f"search.fidelity.subset must be in (0, 1], got {self.subset}")
        if not 0.0 < self.promote <= 1.0:
            raise ConfigError(f"search.fidelity.promote must be in (0, 1], got {self.promote}")

    @property
    def enabled(self) -> bool:
        return self.subset < 1.0

    @property
    def rung_size(self) -> int:
        """How many subset scores must exist before any trial is promoted (successive halving's ``1 / eta``)."""
        return math.ceil(1 / self.promote - 1e-9)

    def full_rung(self, scores: Mapping[int, tuple[float, float]], constrained: bool) -> set[int]:
        """The trials (by number) that belong at the full rung, given every ``(subset accuracy, saving)`` so far.

        None before :attr:`rung_size` scores exist. ``constrained`` (a budget: every trial sits at it): those with
        fewer than ``floor(promote * n)`` of the ``n`` scores strictly above theirs (ties go up together).
        Otherwise the non-dominated ones.
        """
        if len(scores) < self.rung_size:
            return set()
        if constrained:
            top = max(1, math.floor(self.promote * len(scores) + 1e-9))
            return {t for t, (a, _) in scores.items() if sum(b > a for b, _ in scores.values()) < top}
        return {
            t
            for t, (a, s) in scores.items()
            if not any(b >= a and r >= s and (b > a or r > s) for b, r in scores.values())
        }
