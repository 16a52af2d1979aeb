"""One Optuna trial: keep ratios (and bit-widths) -> budget repair -> exact memory saving -> prune (and
quantize) -> evaluate -> MLflow.

The trial's parameters are the sampler's keep ratios. With ``search.repair`` (the default) a sample that misses
the budget is projected onto it along its own direction (:func:`~psvit.allocation.repair_to_budget`) instead
of being thrown away; the prior trials (the strategies' allocations) are taken as they are. The ratios the
model is pruned with are recorded as kept fractions in the trial's ``ratios`` user attribute (and in MLflow).

A sample that still misses the budget (``search.repair=false``) is recorded as infeasible without any pruning
or evaluation (constraint value positive, accuracy 0, ``evaluated=false``). A sample whose pruned shape equals
an already evaluated trial's is not evaluated again: it takes that trial's results (``duplicate_of``). Both
cost ~no time, and the benchmark counts both as wasted. Feasible new shapes are pruned, BatchNorm-recalibrated,
optionally fine-tuned for a few recovery epochs, and scored on the **validation** split; the trial records
``eval_seconds`` (prune to cost report). Each trial is one nested MLflow run under the search's parent run
(:mod:`psvit.search.trial_runs`), and records the worker running it and the base checkpoint's content hash.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import optuna
from optuna.trial import TrialState
from torch import nn

from psvit import tracking
from psvit.allocation import kept_fractions, repair_to_budget
from psvit.budget import Bits, quantized_bits
from psvit.cost import cost_report
from psvit.search.fidelity import FIDELITY_ATTR, FULL, PROMOTION_OF_ATTR, SUBSET, SUBSET_ACC_ATTR, Fidelity
from psvit.search.recovery import WORKER_ATTR, this_worker
from psvit.search.space import BITS_ATTR, RATIOS_ATTR, SearchSpace, trial_bits, trial_ratios
from psvit.search.trial_runs import TrialRuns
from psvit.train.base import sample_images
from psvit.train.loop import evaluate
from psvit.workflow import Setup, pruned_model, recalibrate, recover

BUDGET_CONSTRAINT = "memory_budget"
#: The trial user attribute holding the SHA-256 of the base checkpoint the trial pruned.
BASE_ATTR = "base_sha256"


@contextmanager
def phase(seconds: dict[str, float], name: str) -> Iterator[None]:
    """Add the wall time of the ``with`` body to ``seconds[name]``."""
    start = time.perf_counter()
    try:
        yield
    finally:
        seconds[name] = seconds.get(name, 0.0) + time.perf_counter() - start


@dataclass
class TrialObjective:
    """Callable objective for ``study.optimize``; returns (val_acc, memory_saving[, -energy_mj])."""

    setup: Setup
    space: SearchSpace
    budget: float | None
    runs: TrialRuns
    recovery_epochs: int = 0
    energy_objective: bool = False
    latency_repeats: int = 3
    n_priors: int = 0
    repair: bool = True
    fidelity: Fidelity = Fidelity()

    def __post_init__(self) -> None:
        self.val_subset = self.setup.base.splits.val_subset(self.fidelity.subset, self.setup.cfg.seed)

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        base = self.setup.base.sha256
        trial.set_user_attr(WORKER_ATTR, this_worker())
        trial.set_user_attr(BASE_ATTR, base)
        ratios, bits = self.space.suggest(trial)  # first: a retry of this trial needs its parameters
        run_id = self.runs.open(trial, **{f"psvit.{BASE_ATTR}": base})
        try:
            return self._run(trial, ratios, bits, run_id)
        except Exception as exc:  # Optuna records the trial FAIL; the run says why
            tracking.set_tags({"error": f"{type(exc).__name__}: {exc}"[:5000]}, run_id=run_id)
            raise

    def _run(self, trial: optuna.Trial, ratios: dict[str, float], bits: Bits, run_id: str) -> tuple[float, ...]:
        s = self.setup
        source = self._promoted_from(trial)
        if source is not None:  # a late promotion: exactly the model that trial scored on the subset
            ratios, bits = trial_ratios(source), trial_bits(source)
        elif self.repair and self.budget is not None and trial.number >= self.n_priors:
            ratios = repair_to_budget(s.memory, ratios, self.budget, bits)
        ratios = kept_fractions(s.memory, ratios, list(ratios))
        trial.set_user_attr(RATIOS_ATTR, ratios)
        if bits:
            trial.set_user_attr(BITS_ATTR, bits)
        saving = s.memory.saving(ratios, bits)
        if self.budget is not None:
            trial.set_constraint(BUDGET_CONSTRAINT, self.budget - saving)
        feasible = self.budget is None or saving >= self.budget
        metrics = {"memory_saving": saving, "weight_bytes": s.memory.bytes(ratios, bits)}
        if bits:  # bytes by storage kind: float32, int2, int4, int8
            metrics.update({f"weight_bytes_{kind}": n for kind, n in s.memory.storage(ratios, bits).items()})
        twin = self._evaluated_twin(trial, ratios, bits, full_only=source is not None) if feasible else None
        if twin is not None:
            trial.set_user_attr("duplicate_of", twin.number)
            trial.set_user_attr(FIDELITY_ATTR, twin.user_attrs.get(FIDELITY_ATTR, FULL))
            metrics.update(twin.user_attrs["metrics"])
        elif feasible:
            seconds: dict[str, float] = {}
            metrics.update(self._evaluate(trial, ratios, bits, saving, seconds, promoted=source is not None))
            trial.set_user_attr("seconds", seconds)
            trial.set_user_attr("eval_seconds", sum(seconds.values()))
            trial.set_user_attr(
                "metrics",
                {k: v for k, v in metrics.items() if k != "memory_saving" and not k.startswith("weight_bytes")},
            )
        evaluated = feasible and twin is None
        trial.set_user_attr("evaluated", evaluated)
        config = s.memory.config(ratios)
        widths = {k: v for k, v in config.items() if k.endswith("_dims") or k == "embed_dim"}
        tracking.log_params({"ratio": ratios, "width": widths, **({"bits": bits} if bits else {})}, run_id=run_id)
        tracking.log_metrics(metrics, run_id=run_id)
        tracking.set_tags(
            {
                "feasible": str(feasible).lower(),
                "evaluated": str(evaluated).lower(),
                "fidelity": trial.user_attrs.get(FIDELITY_ATTR, "none"),
            },
            run_id=run_id,
        )
        values = (metrics.get("val_acc", 0.0), saving)
        return values + ((-metrics.get("energy_mj", 0.0),) if self.energy_objective else ())

    def _evaluated_twin(
        self, trial: optuna.Trial, ratios: dict[str, float], bits: Bits, full_only: bool = False
    ) -> optuna.trial.FrozenTrial | None:
        """A COMPLETE, evaluated trial that pruned (and quantized) to the same model, if any (``full_only``: one
        scored at the full rung)."""
        memory, quantized = self.setup.memory, quantized_bits(bits)
        kept = memory.kept(ratios)
        for t in trial.study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            if (
                "metrics" in t.user_attrs
                and not (full_only and t.user_attrs.get(FIDELITY_ATTR) == SUBSET)
                and memory.kept(trial_ratios(t)) == kept
                and quantized_bits(trial_bits(t)) == quantized
            ):
                return t
        return None

    def _evaluate(
        self,
        trial: optuna.Trial,
        ratios: dict[str, float],
        bits: Bits,
        saving: float,
        seconds: dict[str, float],
        promoted: bool = False,
    ) -> dict[str, float]:
        """Prune (and quantize), recalibrate and score the model at the trial's fidelity (``promoted``: straight
        at the full rung); ``seconds`` gets each phase's time."""
        s = self.setup
        with phase(seconds, "prune"):
            model = pruned_model(s, ratios, recalibrate_bn=False, bits=bits)
        with phase(seconds, "recalibrate"):
            recalibrate(s, model)
        metrics: dict[str, float] = {}
        if self.fidelity.enabled and not promoted:
            with phase(seconds, "evaluate"):
                metrics[SUBSET_ACC_ATTR] = evaluate(model, self.val_subset, s.compute)
            trial.set_user_attr(SUBSET_ACC_ATTR, metrics[SUBSET_ACC_ATTR])
            if not self._promote(trial, metrics[SUBSET_ACC_ATTR], saving):
                trial.set_user_attr(FIDELITY_ATTR, SUBSET)
                metrics["val_acc"] = metrics[SUBSET_ACC_ATTR]
                return {**metrics, **(self._cost(model, seconds) if self.energy_objective else {})}
        trial.set_user_attr(FIDELITY_ATTR, FULL)
        if self.recovery_epochs:
            with phase(seconds, "recover"):
                recover(s, model, self.recovery_epochs)
        with phase(seconds, "evaluate"):
            metrics["val_acc"] = evaluate(model.eval(), s.base.splits.val, s.compute)
        return {**metrics, **self._cost(model, seconds)}

    def _cost(self, model: nn.Module, seconds: dict[str, float]) -> dict[str, float]:
        with phase(seconds, "cost"):
            images = sample_images(self.setup.base.splits, self.setup.compute)
            return cost_report(
                model, images, latency_repeats=self.latency_repeats, compute=self.setup.compute
            ).to_dict()

    def _promote(self, trial: optuna.Trial, score: float, saving: float) -> bool:
        """Successive halving's rule over every trial scored on the subset (finished or not, this one included):
        whether this trial goes to the full rung; earlier finished ones that now belong there are queued."""
        study = trial.study
        trials = study.get_trials(deepcopy=False)
        scores = {
            t.number: (t.user_attrs[SUBSET_ACC_ATTR], self.setup.memory.saving(trial_ratios(t), trial_bits(t)))
            for t in trials
            if t.number != trial.number
            and t.state in (TrialState.COMPLETE, TrialState.RUNNING)
            and SUBSET_ACC_ATTR in t.user_attrs
        }
        scores[trial.number] = (score, saving)
        rung = self.fidelity.full_rung(scores, constrained=self.budget is not None)
        if len(trials) >= self.n_priors:  # a queued trial takes the next number: never a prior's
            queued = {t.user_attrs.get(PROMOTION_OF_ATTR) for t in trials}
            for number in sorted(rung - queued - {trial.number}):
                waiting = trials[number]
                if waiting.state == TrialState.COMPLETE and waiting.user_attrs.get(FIDELITY_ATTR) == SUBSET:
                    study.enqueue_trial(waiting.params, user_attrs={PROMOTION_OF_ATTR: number})
        return trial.number in rung

    @staticmethod
    def _promoted_from(trial: optuna.Trial) -> optuna.trial.FrozenTrial | None:
        """The subset trial that this queued late promotion scores in full, if it is one."""
        number = trial.user_attrs.get(PROMOTION_OF_ATTR)
        return None if number is None else trial.study.get_trials(deepcopy=False)[number]
