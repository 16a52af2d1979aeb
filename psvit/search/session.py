"""One worker's view of a search: base model, sensitivity priors, study, MLflow parent run, trials, final model."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
from omegaconf import DictConfig, OmegaConf
from optuna.trial import FrozenTrial, TrialState
from tqdm.auto import tqdm

from psvit import tracking
from psvit.config import config_sections
from psvit.errors import PsvitError
from psvit.search.fidelity import Fidelity
from psvit.search.front import front_trials, update_front
from psvit.search.guided import GuidedSampler
from psvit.search.objective import BASE_ATTR, TrialObjective
from psvit.search.priors import prior_allocations
from psvit.search.runs import parent_run
from psvit.search.samplers import STRATEGY_SAMPLERS, PriorFirstSampler, base_sampler
from psvit.search.settings import bit_choices, recovery_epochs
from psvit.search.space import SearchSpace, trial_bits, trial_ratios
from psvit.search.study import check_identity, count, make_storage, open_study, run_trials
from psvit.search.trial_runs import TrialRuns
from psvit.train.base import config_hash
from psvit.workflow import Finished, Setup, finish, sensitivity, setup, write_sensitivity

#: A worker rewrites the front's plots and table in MLflow after a trial at most this often (the runs' ``pareto``
#: tags are current after every trial), and always when the search ends (:meth:`SearchSession.front`).
FRONT_REFRESH_SECONDS = 30.0


@dataclass
class SearchSession:
    cfg: DictConfig
    budget: float | None
    setup: Setup
    study: optuna.Study
    study_name: str
    parent_run_id: str
    objective: TrialObjective
    n_trials: int

    @classmethod
    def start(
        cls, cfg: DictConfig, budget: float | None, seed_offset: int = 0, s: Setup | None = None
    ) -> SearchSession:
        """Open (or resume) the study of ``cfg``'s search at ``budget``: the base model (``s``, or the config's
        base, trained or read from the cache), its sensitivity priors, the sampler, the MLflow parent run."""
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        sc = cfg.search
        s = s if s is not None else setup(cfg)
        choices = bit_choices(cfg)
        if budget is not None:  # one line, before any evaluation
            s.memory.check_feasible(budget, s.groups, {g.name: min(choices) for g in s.groups})
        table, _ = sensitivity(s)
        use_priors = sc.priors or sc.sampler in STRATEGY_SAMPLERS
        priors = prior_allocations(s, table, sc.sampler, budget, sc.n_trials, choices) if use_priors else []
        if sc.sampler == "guided":  # it proposes exact allocations: continuous, the whole range
            space = SearchSpace.full(s.groups, None, priors, choices)
        elif sc.priors:
            space = SearchSpace.from_priors(s.groups, table, sc.prior_tolerance, priors, sc.step, choices)
        else:
            space = SearchSpace.full(s.groups, sc.step, priors, choices)
        name = sc.study_name or default_study_name(cfg, s, budget)
        seed = sc.seed + seed_offset
        fidelity = Fidelity(float(sc.fidelity.subset), float(sc.fidelity.promote))
        n_scored = len(s.base.splits.val_subset(fidelity.subset, cfg.seed))  # the noisiest score's image count
        inner = (
            GuidedSampler(s.memory, table, space, budget, n_scored, seed, sc.front_every)
            if sc.sampler == "guided"
            else base_sampler(sc.sampler, seed, sc.n_startup_trials, sc.n_trials)
        )
        sampler = PriorFirstSampler(inner, priors)
        n_objectives = 3 if sc.energy_objective else 2
        study = open_study(
            name, make_storage(sc.storage, sc.heartbeat_interval, sc.grace_period), sampler, n_objectives
        )
        check_identity(study, name, study_identity(cfg, s, budget, space))
        parent_id, created = parent_run(cfg.mlflow.tracking_uri, cfg.mlflow.experiment, name)
        if created:
            tracking.log_params(
                {"config": OmegaConf.to_container(cfg, resolve=True), "budget": budget, "study_name": name},
                run_id=parent_id,
            )
            tracking.log_metrics(
                {
                    "base_val_acc": s.base.val_acc,
                    "base_test_acc": s.base.test_acc,
                    "base_weight_bytes": s.memory.base_bytes,
                },
                run_id=parent_id,
            )
            tracking.set_tags({f"psvit.{BASE_ATTR}": s.base.sha256}, run_id=parent_id)
            tracking.log_artifact(s.base.splits_file, run_id=parent_id, artifact_path="data")
            out = Path(cfg.cache_dir).expanduser() / f"sensitivity-artifacts-{name}"
            for f in write_sensitivity(table, out):
                tracking.log_artifact(f, run_id=parent_id, artifact_path="sensitivity")
        objective = TrialObjective(
            s,
            space,
            budget,
            TrialRuns(parent_id, name),
            recovery_epochs(cfg),
            sc.energy_objective,
            sc.latency_repeats,
            len(priors),
            sc.repair,
            fidelity,
        )
        n_trials = len(priors) if sc.sampler in STRATEGY_SAMPLERS else sc.n_trials
        return cls(cfg, budget, s, study, name, parent_id, objective, n_trials)

    def run(self) -> int:
        """Run this worker's share of the missing trials; the front is updated after each one."""
        bar = tqdm(
            total=self.n_trials,
            initial=self.n_complete(),
            desc="trials",
            unit="trial",
            disable=not self.cfg.progress or None,
        )

        written = -math.inf  # when this worker last rewrote the front's artifacts

        def after_each(study: optuna.Study) -> None:
            nonlocal written
            artifacts = time.monotonic() - written >= FRONT_REFRESH_SECONDS
            front = update_front(study, self.parent_run_id, self.budget, artifacts)
            if artifacts:
                written = time.monotonic()
            bar.n = self.n_complete()
            bar.set_postfix(front=len(front))

        runs = self.objective.runs
        try:
            return run_trials(
                self.study,
                self.objective,
                self.n_trials,
                callbacks=[runs.close],
                before_each=runs.reconcile,
                after_each=after_each,
            )
        except KeyboardInterrupt:
            runs.abort(self.study)
            raise
        finally:
            bar.close()

    def n_complete(self) -> int:
        return count(self.study, TrialState.COMPLETE)

    def front(self) -> list[FrozenTrial]:
        """The study's front, with every artifact of it in MLflow rewritten."""
        return update_front(self.study, self.parent_run_id, self.budget)

    def chosen_trial(self) -> FrozenTrial:
        """With a budget: the most accurate feasible trial (ties: larger saving). Without: the largest saving
        whose val accuracy is within ``search.select_tolerance`` of the base model's (else the most accurate)."""
        front = front_trials(self.study)
        if not front:
            raise PsvitError(
                f"no trial of study {self.study_name!r} met the budget; raise search.n_trials or "
                "keep search.priors=true (the prior trials always meet it)"
            )
        if self.budget is None:
            floor = self.setup.base.val_acc - self.cfg.search.select_tolerance
            close = [t for t in front if t.values[0] >= floor]
            if close:
                return max(close, key=lambda t: t.values[1])
        return max(front, key=lambda t: (t.values[0], t.values[1]))

    def finalize(self, out_dir: Path) -> tuple[Finished, FrozenTrial]:
        """Fine-tune the chosen trial's model, test it, and log it (checkpoint + table row) to the parent run."""
        trial = self.chosen_trial()
        done = finish(self.setup, trial_ratios(trial), out_dir, desc="fine-tune chosen", bits=trial_bits(trial))
        pid = self.parent_run_id
        tracking.log_metrics(
            {f"final_{k}": v for k, v in {**done.row.metrics(), **done.cost.to_dict()}.items()}, run_id=pid
        )
        tracking.set_tags({"chosen_trial": trial.number}, run_id=pid)
        if done.bits:
            tracking.log_params({"final_bits": done.bits}, run_id=pid)
        tracking.log_text(done.row.markdown() + "\n", "result_row.md", run_id=pid)
        tracking.log_artifact(done.checkpoint, run_id=pid, artifact_path="final_model")
        return done, trial


def study_identity(cfg: DictConfig, s: Setup, budget: float | None, space: SearchSpace) -> dict[str, Any]:
    """What a study's trials mean, by readable name: reusing the study with any of it changed is refused."""
    sc = cfg.search
    return {
        "budget": budget,
        "base model": s.base.sha256[:16],
        "search.sampler": sc.sampler,
        "search.priors": sc.priors,
        "search.repair": sc.repair,
        "search.recovery_epochs": recovery_epochs(cfg),
        **({"search.bits": list(space.bits)} if space.quantizes else {}),
        "search.energy_objective": sc.energy_objective,
        "groups": list(space.bounds),
        "search.step": space.step,
        **{f"range of {g}": [round(lo, 6), round(hi, 6)] for g, (lo, hi) in space.bounds.items()},
        **{f"prune.{k}": v for k, v in tracking.flat_params(config_sections(cfg, "prune")[0]).items()},
    }


def default_study_name(cfg: DictConfig, s: Setup, budget: float | None) -> str:
    """A name that changes whenever the search would: base model, budget, sampler and search settings."""
    keyed = config_sections(cfg, "prune", "sensitivity", "search")
    for k in (
        "n_trials",
        "storage",
        "study_name",
        "finalize",
        "export",
        "register_model",
        "parity",
        "heartbeat_interval",
        "grace_period",
    ):
        keyed[2].pop(k, None)
    tag = "front" if budget is None else f"b{budget:g}"
    return f"psvit-{s.base.path.stem.removeprefix('base-')[:8]}-{tag}-{cfg.search.sampler}-{config_hash(*keyed)[:6]}"
