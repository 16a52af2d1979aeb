"""One Optuna trial: keep ratios -> exact memory saving (the budget constraint) -> prune -> evaluate -> MLflow.

A sample that misses the budget is recorded as infeasible without any pruning or evaluation (its constraint
value is positive, its accuracy is reported as 0 and ``evaluated=false``), so it costs ~no time. Feasible
samples are pruned, BatchNorm-recalibrated, optionally fine-tuned for a few recovery epochs, and scored on the
**validation** split. Each finished trial becomes one nested MLflow run under the search's parent run.
"""

from __future__ import annotations

from dataclasses import dataclass

import optuna

from psvit import tracking
from psvit.cost import cost_report
from psvit.search.space import SearchSpace
from psvit.train.base import sample_images
from psvit.train.loop import evaluate, train_model
from psvit.workflow import Setup, pruned_model

BUDGET_CONSTRAINT = "memory_budget"


@dataclass
class TrialObjective:
    """Callable objective for ``study.optimize``; returns (val_acc, memory_saving[, -energy_mj])."""

    setup: Setup
    space: SearchSpace
    budget: float | None
    parent_run_id: str
    study_name: str
    recovery_epochs: int = 0
    energy_objective: bool = False
    latency_repeats: int = 3

    def __call__(self, trial: optuna.Trial) -> tuple[float, ...]:
        s = self.setup
        ratios = self.space.suggest(trial)
        saving = s.memory.saving(ratios)
        if self.budget is not None:
            trial.set_constraint(BUDGET_CONSTRAINT, self.budget - saving)
        feasible = self.budget is None or saving >= self.budget
        config = s.memory.config(ratios)
        metrics = {"memory_saving": saving, "weight_bytes": s.memory.bytes(ratios)}
        if feasible:
            metrics.update(self._evaluate(ratios))
        trial.set_user_attr("evaluated", feasible)
        run_id = self._log(trial, ratios, config, metrics, feasible)
        trial.set_user_attr("mlflow_run_id", run_id)
        values = (metrics.get("val_acc", 0.0), saving)
        return values + ((-metrics.get("energy_mj", 0.0),) if self.energy_objective else ())

    def _evaluate(self, ratios: dict[str, float]) -> dict[str, float]:
        s = self.setup
        model = pruned_model(s, ratios)
        if self.recovery_epochs:
            train_model(model, s.base.splits.train, epochs=self.recovery_epochs, seed=s.cfg.seed,
                        device=s.cfg.device, progress=False, **{k: v for k, v in s.cfg.finetune.items()
                                                                 if k != "epochs"})
        val_acc = evaluate(model.eval(), s.base.splits.val, device=s.cfg.device)
        report = cost_report(model.cpu(), sample_images(s.base.splits), latency_repeats=self.latency_repeats)
        return {"val_acc": val_acc, **report.to_dict()}

    def _log(self, trial: optuna.Trial, ratios: dict[str, float], config: dict, metrics: dict[str, float],
             feasible: bool) -> str:
        widths = {k: v for k, v in config.items() if k.endswith("_dims") or k == "embed_dim"}
        with tracking.run(self.setup.cfg.mlflow.tracking_uri, self.setup.cfg.mlflow.experiment,
                          f"trial-{trial.number}", parent_run_id=self.parent_run_id,
                          tags={"psvit.study": self.study_name, "trial_number": trial.number,
                                "state": "COMPLETE", "feasible": str(feasible).lower(), "pareto": "false",
                                "evaluated": str(feasible).lower()}) as active:
            tracking.log_params({"ratio": ratios, "width": widths})
            tracking.log_metrics(metrics)
        return active.info.run_id
