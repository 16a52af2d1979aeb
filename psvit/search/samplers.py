"""Optuna samplers for the width search, with the prior allocations as the study's first trials.

:class:`PriorFirstSampler` gives trial number ``i < len(priors)`` the ``i``-th prior allocation and leaves every
later trial to the wrapped sampler. Trial numbers are handed out atomically by the storage, so each prior is
evaluated exactly once even with many workers on one study (a queue filled by each worker would duplicate them).

``search.sampler``: ``guided`` (the default: budget-exact, surrogate-guided, see :mod:`psvit.search.guided`),
``tpe`` (multivariate multi-objective TPE with ``constant_liar`` so that parallel workers spread out), ``nsga2``
(its population sized to the trial budget: Optuna's default of 50 makes a short search all random) and
``random``; ``psvit`` and ``uniform`` evaluate only their strategy's allocations (the baselines, through the
same pipeline).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler
from optuna.trial import FrozenTrial

from psvit.errors import ConfigError

SEARCH_SAMPLERS = ("guided", "tpe", "nsga2", "random")
STRATEGY_SAMPLERS = ("psvit", "uniform")


class PriorFirstSampler(BaseSampler):
    """Trials ``0..k-1`` take the ``k`` given allocations; the rest come from ``base``."""

    def __init__(self, base: BaseSampler, priors: Sequence[Mapping[str, float]]) -> None:
        self.base = base
        self.priors = [dict(p) for p in priors]

    def _is_prior(self, trial: FrozenTrial) -> bool:
        return trial.number < len(self.priors)

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {} if self._is_prior(trial) else self.base.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return {} if self._is_prior(trial) else self.base.sample_relative(study, trial, search_space)

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        if self._is_prior(trial):
            return self.priors[trial.number][param_name]
        return self.base.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study: optuna.Study, trial: FrozenTrial) -> None:
        self.base.before_trial(study, trial)

    def after_trial(
        self, study: optuna.Study, trial: FrozenTrial, state: optuna.trial.TrialState, values: Sequence[float] | None
    ) -> None:
        self.base.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.base.reseed_rng()


def nsga2_population(n_trials: int) -> int:
    """NSGA-II's population for a budget of ``n_trials``: about five generations, between 4 and 50."""
    return max(4, min(50, n_trials // 5))


def base_sampler(name: str, seed: int, n_startup_trials: int, n_trials: int) -> BaseSampler:
    """The Optuna sampler behind ``search.sampler`` (strategy samplers need none: all trials are priors;
    ``guided`` needs the search's state and is built by the session)."""
    if name == "tpe":
        return optuna.samplers.TPESampler(
            seed=seed, n_startup_trials=n_startup_trials, multivariate=True, constant_liar=True
        )
    if name == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=nsga2_population(n_trials))
    if name in ("random", *STRATEGY_SAMPLERS):
        return optuna.samplers.RandomSampler(seed=seed)
    raise ConfigError(f"search.sampler must be one of {', '.join(SEARCH_SAMPLERS + STRATEGY_SAMPLERS)}, got {name!r}")
