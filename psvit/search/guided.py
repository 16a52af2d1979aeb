"""``search.sampler=guided``: a budget-exact, surrogate-guided local search around the best allocations.

Every proposal is a complete allocation that saves exactly the memory asked for (projected onto it with
:func:`~psvit.allocation.project_to_saving`), so no trial misses the budget, and none repeats a pruned shape
already evaluated or being evaluated by another worker. Each proposal is the candidate with the largest
expected improvement under :class:`~psvit.search.surrogate.AccuracySurrogate` (the sensitivity table as prior
mean, a GP fitted on every evaluated trial) among a few hundred candidates:

* local moves around the best evaluated allocations: hand ``delta`` of one group's channels to another
  (the other absorbs exactly the memory), or jitter several groups and re-project;
* global samples: random allocations projected onto the saving.

With a budget, most trials target the budget itself; every ``front_every``-th trial (``search.front_every``;
0: none) targets a larger saving (a low-discrepancy sequence between the budget and 95% of the reachable
saving) so that the Pareto front is mapped too. Without a budget every trial targets such a level. Another
worker's RUNNING trials enter the surrogate at their predicted accuracy (the "kriging believer"), so parallel
workers spread out.

**Bit-widths as a second axis** (more than one ``search.bits`` choice): an allocation is a keep ratio and a
bit-width per group, and the projection moves the widths onto the saving for the bit-widths it is given, so it
stays exact. The moves add a *bit trade*: one group one bit-width step up or down, the widths re-projected so
that the bytes stay the same (bits bought with channels, or channels with bits); jitters and global samples
draw bit-widths too.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.trial import FrozenTrial, TrialState

from psvit.allocation import project_to_saving
from psvit.budget import MemoryModel, quantized_bits
from psvit.search.space import RATIOS_ATTR, SearchSpace, trial_bits, trial_ratios
from psvit.search.surrogate import AccuracySurrogate, bits_feature, expected_improvement, feature_bits
from psvit.sensitivity import SensitivityTable

#: Keep-ratio steps of a transfer move, and jitter scales of a jitter move (kept-fraction units).
TRANSFER_DELTAS = (1 / 16, 1 / 8, 1 / 4)
JITTER_SCALES = (0.03, 0.08, 0.15)
#: Chance that a jitter move also redraws a group's bit-width.
BITS_JITTER = 0.2


def van_der_corput(k: int) -> float:
    """The ``k``-th point of the base-2 van der Corput sequence in [0, 1) (k = 0 gives 0.5)."""
    k, x, scale = k + 1, 0.0, 0.5
    while k:
        x += scale * (k & 1)
        k, scale = k >> 1, scale / 2
    return x


class GuidedSampler(BaseSampler):
    """See the module docstring. One parameter per group of ``space``; ``n_val`` (validation images) sets the
    surrogate's observation noise; ``parents``, ``moves`` and ``global_samples`` size the candidate pool."""

    def __init__(
        self,
        memory: MemoryModel,
        table: SensitivityTable,
        space: SearchSpace,
        budget: float | None,
        n_val: int,
        seed: int = 0,
        front_every: int = 5,
        parents: int = 3,
        moves: int = 40,
        global_samples: int = 60,
    ) -> None:
        self.memory = memory
        self.table = table
        self.space = space
        self.names = list(space.bounds)
        self.budget = budget
        self.n_val = n_val
        self.seed = seed
        self.front_every = front_every
        self.parents = parents
        self.moves = moves
        self.global_samples = global_samples
        #: the bit-width choices searched (None: one fixed bit-width, ``fixed``, or float32)
        self.choices = space.bits if space.searches_bits else None
        self.fixed = {n: space.bits[0] for n in self.names} if space.quantizes and not self.choices else None
        lowest = {n: min(space.bits) for n in self.names} if space.quantizes else None
        self.top = 0.95 * memory.max_saving([g for g in memory.groups if g.name in self.names], lowest)
        self._fallback = RandomSampler(seed=seed)

    # --- Optuna's sampler interface -------------------------------------------------------------------------

    def infer_relative_search_space(self, study: optuna.Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return self.space.distributions()

    def sample_relative(
        self, study: optuna.Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        if not search_space:
            return {}
        rng = np.random.default_rng([self.seed, trial.number])
        level = self.level(trial.number)
        done = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
            if t.user_attrs.get("evaluated") and RATIOS_ATTR in t.user_attrs
        ]
        running = [
            t
            for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
            if t.number != trial.number and RATIOS_ATTR in t.user_attrs
        ]
        choice = self.propose(
            rng,
            level,
            [self._vector(t) for t in done],
            [t.values[0] for t in done],
            [t.values[1] for t in done],
            [self._vector(t) for t in running],
        )
        if choice is None:
            return {}
        k = len(self.names)
        params: dict[str, Any] = {
            n: float(min(hi, max(lo, v)))
            for n, v, (lo, hi) in zip(self.names, choice[:k], (self.space.bounds[n] for n in self.names))
        }
        if self.choices:
            params.update({self.space.bits_param(n): feature_bits(v) for n, v in zip(self.names, choice[k:])})
        return params

    def sample_independent(
        self, study: optuna.Study, trial: FrozenTrial, param_name: str, param_distribution: BaseDistribution
    ) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    # --- the search itself ----------------------------------------------------------------------------------

    def level(self, number: int) -> float:
        """The memory saving trial ``number`` targets."""
        if self.budget is None:
            return 0.05 * self.top + van_der_corput(number) * 0.9 * self.top
        if not self.front_every or (number + 1) % self.front_every:
            return self.budget
        return self.budget + van_der_corput(number // self.front_every) * max(0.0, self.top - self.budget)

    def propose(
        self,
        rng: np.random.Generator,
        level: float,
        x: Sequence[np.ndarray],
        y: Sequence[float],
        savings: Sequence[float],
        pending: Sequence[np.ndarray] = (),
    ) -> np.ndarray | None:
        """The next allocation (kept fractions in ``names`` order) at ``level``, or None if nothing new is left."""
        seen = {self._key(v) for v in (*x, *pending)}
        candidates = [c for c in self._candidates(rng, level, x, y, savings) if self._key(c) not in seen]
        unique = list({self._key(c): c for c in candidates}.values())
        if not unique:
            return None
        surrogate = AccuracySurrogate(self.table, self.names, self.n_val, with_bits=bool(self.choices))
        width = len(self.names) * (2 if self.choices else 1)
        xs, ys = np.array(x, float).reshape(len(x), width), np.array(y, float)
        if len(pending):
            believed, _ = surrogate.fit(xs, ys).predict(np.array(pending))
            xs, ys = np.vstack([xs, pending]), np.concatenate([ys, believed])
        surrogate.fit(xs, ys)
        mu, sd = surrogate.predict(np.array(unique))
        reaching = [acc for acc, s in zip(y, savings) if s >= level - 1e-9]
        best = max(reaching) if reaching else float(mu.max())
        return unique[int(np.argmax(expected_improvement(mu, sd, best)))]

    def _candidates(
        self,
        rng: np.random.Generator,
        level: float,
        x: Sequence[np.ndarray],
        y: Sequence[float],
        savings: Sequence[float],
    ) -> list[np.ndarray]:
        order = sorted(range(len(x)), key=lambda i: (savings[i] < level - 1e-9, -y[i]))
        if self.choices:
            return self._joint_candidates(rng, level, [x[i] for i in order[: self.parents]])
        out = []
        for i in order[: self.parents]:
            parent = x[i]
            for _ in range(self.moves):
                a, b = rng.choice(len(self.names), size=2, replace=False)
                moved = parent.copy()
                moved[a] = min(1.0, moved[a] + rng.choice(TRANSFER_DELTAS))
                out.append(self._project(moved, level, {self.names[b]: 1.0}))
            for _ in range(self.moves):
                moved = parent.copy()
                mask = rng.random(len(moved)) < rng.uniform(0.2, 1.0)
                moved[mask] += rng.normal(0.0, rng.choice(JITTER_SCALES), mask.sum())
                out.append(self._project(np.clip(moved, 0.0, 1.0), level))
        for _ in range(self.global_samples):
            out.append(self._project(rng.random(len(self.names)), level))
        return [c for c in out if c is not None]

    def _joint_candidates(
        self, rng: np.random.Generator, level: float, parents: Sequence[np.ndarray]
    ) -> list[np.ndarray]:
        """Candidates over widths and bit-widths (the module docstring's moves)."""
        k, choices = len(self.names), list(self.choices)
        out = []
        for parent in parents:
            ratios, bits = parent[:k], [feature_bits(v) for v in parent[k:]]
            for _ in range(self.moves):  # transfer: channels from one group to another, bit-widths kept
                a, b = rng.choice(k, size=2, replace=False)
                moved = ratios.copy()
                moved[a] = min(1.0, moved[a] + rng.choice(TRANSFER_DELTAS))
                out.append(self._project(moved, level, {self.names[b]: 1.0}, bits))
            for _ in range(self.moves):  # bit trade: one group one step, the widths pay for it at the same bytes
                g = int(rng.integers(k))
                i = choices.index(bits[g]) + int(rng.choice((-1, 1)))
                if 0 <= i < len(choices):
                    out.append(self._project(ratios, level, None, [*bits[:g], choices[i], *bits[g + 1 :]]))
            for _ in range(self.moves):  # jitter: several widths, now and then a bit-width
                moved = ratios.copy()
                mask = rng.random(k) < rng.uniform(0.2, 1.0)
                moved[mask] += rng.normal(0.0, rng.choice(JITTER_SCALES), mask.sum())
                redraw = rng.random(k) < BITS_JITTER
                new_bits = [int(rng.choice(choices)) if r else b for r, b in zip(redraw, bits)]
                out.append(self._project(np.clip(moved, 0.0, 1.0), level, None, new_bits))
        for _ in range(self.global_samples):
            out.append(self._project(rng.random(k), level, None, [int(b) for b in rng.choice(choices, size=k)]))
        return [c for c in out if c is not None]

    def _project(
        self,
        vector: np.ndarray,
        level: float,
        direction: dict[str, float] | None = None,
        bits: Sequence[int] | None = None,
    ) -> np.ndarray | None:
        """``vector``'s keep ratios projected onto ``level`` at bit-widths ``bits`` (searched) or the fixed
        ones; the result carries the bit-widths' features when they are searched."""
        ratios = dict(zip(self.names, (float(v) for v in vector[: len(self.names)])))
        at = dict(zip(self.names, bits)) if bits is not None else self.fixed
        projected = project_to_saving(self.memory, ratios, level, direction, at)
        if projected is None:
            return None
        kept = [projected[n] for n in self.names]
        return np.array(kept + ([bits_feature(b) for b in bits] if bits is not None else []))

    def _vector(self, trial: FrozenTrial) -> np.ndarray:
        ratios = trial_ratios(trial)
        vector = [ratios.get(n, 1.0) for n in self.names]
        if self.choices:
            bits = trial_bits(trial) or {}
            vector += [bits_feature(bits.get(n, 32)) for n in self.names]
        return np.array(vector, float)

    def _key(self, vector: np.ndarray) -> tuple:
        k = len(self.names)
        kept = tuple(self.memory.kept(dict(zip(self.names, (float(v) for v in vector[:k])))).values())
        if not self.choices:
            return kept
        return kept, quantized_bits(dict(zip(self.names, (feature_bits(v) for v in vector[k:]))))
