"""Multi-fidelity trials: score every pruned model on a small validation subset, promote the promising ones.

Asynchronous successive halving with two rungs, decided inside the objective:

* rung ``subset``: the pruned, BatchNorm-recalibrated model is scored on a fixed, stratified ``subset`` fraction of
  the validation split (the same images in every worker and trial);
* rung ``full``: a trial is promoted when its subset accuracy ranks in the top ``promote`` fraction of the subset
  accuracies seen so far (with a budget), or is non-dominated in (subset accuracy, memory saving) (without one).
  The prior trials (psvit, uniform) are always promoted. Promotion adds the recovery epochs (if any), the full
  validation split and the cost report.

Optuna's own pruners (successive halving, Hyperband) cannot be used here: they raise for multi-objective studies,
and the study keeps (accuracy, saving) so that MLflow's front and the constraint handling stay as they are.
Every trial records its ``fidelity``; the Pareto front and the chosen model use ``full`` trials only.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from psvit.errors import ConfigError

#: Trial user attribute naming the rung a trial's values come from.
FIDELITY_ATTR = "fidelity"
SUBSET, FULL = "subset", "full"
#: Trial user attribute holding the subset (rung-0) accuracy.
SUBSET_ACC_ATTR = "val_acc_subset"


@dataclass(frozen=True)
class Fidelity:
    """``subset``: the validation fraction of the first rung (1.0: every trial is scored at full fidelity);
    ``promote``: the fraction of trials promoted to the full rung."""

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

    def promotes(self, score: float, saving: float, peers: Sequence[tuple[float, float]], constrained: bool) -> bool:
        """Whether a trial with subset accuracy ``score`` and memory ``saving`` goes to the full rung, given the
        ``(subset accuracy, saving)`` of the other trials scored so far.

        ``constrained`` (a budget: every trial sits at it): the trial must rank within the top
        ``ceil(promote * n)`` of the ``n`` subset scores, itself included. Otherwise it must not be dominated.
        """
        if constrained:
            better = sum(1 for other, _ in peers if other > score)
            return better < math.ceil(self.promote * (len(peers) + 1))
        return not any(a >= score and s >= saving and (a > score or s > saving) for a, s in peers)
