"""``python -m psvit.search +budget=0.224``: the budget-constrained width search (Optuna, Hydra, MLflow).

Trains or reuses the base model, runs or reuses the sensitivity analysis, runs the Optuna trials (each one a
nested MLflow run), keeps the Pareto front in MLflow, then fine-tunes the chosen model and prints its row.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from psvit.cli.interrupt import Interrupted
from psvit.cli.launcher import hydra_main
from psvit.cli.preflight import check_plan
from psvit.config import check_budget_value, check_numbers

if TYPE_CHECKING:
    from psvit.search.session import SearchSession


def check_request(cfg: DictConfig) -> float | None:
    """Validate the numeric keys (types and ranges), budget, search settings (:func:`check_settings`) and
    constraints, then the cache, MLflow and Optuna stores, then the enabled groups and that the budget is
    reachable at all (from the config and the data, nothing trained); returns the budget."""
    check_numbers(cfg)  # also in every command's launcher; here for the sweep's check of each job before any runs
    budget = cfg.get("budget")
    if budget is not None:
        budget = check_budget_value(budget)
    from psvit.search.settings import bit_choices, check_settings  # imports torch: after the checks that need none
    from psvit.workflow import compute_of

    check_settings(cfg)
    compute_of(cfg)
    check_plan(cfg, budget, min(bit_choices(cfg)))
    return budget


def worker_index() -> int:
    """This job's index in a Hydra multirun (0 for a single run): offsets the sampler seed per worker."""
    hc = HydraConfig.get()
    return int(hc.job.num) if hc.mode.name == "MULTIRUN" and hc.job.num is not None else 0


@hydra_main("search")
def main(cfg: DictConfig) -> None:
    budget = check_request(cfg)
    from psvit import tracking
    from psvit.search.estimate import estimate_search
    from psvit.search.session import SearchSession

    print(estimate_search(cfg).format())
    if cfg.search.dry_run:
        return

    session = SearchSession.start(cfg, budget, seed_offset=worker_index())
    try:  # the parent run says how this worker ended; the error still propagates
        run_and_print(cfg, session)
    except KeyboardInterrupt as exc:
        tracking.end_run(session.parent_run_id, "KILLED")
        raise Interrupted.of(
            exc,
            f"study {session.study_name!r} keeps its {session.n_complete()} complete trials "
            "(a trial in progress is marked FAIL); rerun the same command to resume",
        ) from None
    except BaseException:
        tracking.end_run(session.parent_run_id, "FAILED")
        raise
    tracking.end_run(session.parent_run_id, "FINISHED")


def run_and_print(cfg: DictConfig, session: SearchSession) -> None:
    """Run this worker's trials, then print the front and (with ``search.finalize``) the chosen model."""
    from psvit import tracking
    from psvit.search.front import front_runs_page, trials_chart_page

    print(session.setup.compute.describe())
    print(session.setup.base.describe())
    ran = session.run()
    front = session.front()
    print(
        f"study {session.study_name!r}: ran {ran} trials here; {session.n_complete()} complete; "
        f"Pareto front of {len(front)} (memory saving vs val accuracy)"
    )
    if cfg.search.finalize:
        done, trial = session.finalize(Path(HydraConfig.get().runtime.output_dir))
        print(
            f"chosen: trial {trial.number} (val acc {trial.values[0]:.4f}, saving {trial.values[1]:.4f}); "
            f"fine-tuned and tested:"
        )
        print(done.row.markdown())
        print(done.cost.format())
        print(f"pruned checkpoint: {done.checkpoint}")
        if cfg.search.export:
            from psvit.search.publish import publish

            print("\n".join(publish(session, done, trial, Path(HydraConfig.get().runtime.output_dir))))
    experiment_id, uri = tracking.experiment_of(session.parent_run_id), cfg.mlflow.tracking_uri
    print(f"MLflow: parent run {session.parent_run_id} in experiment {cfg.mlflow.experiment!r} at {uri}; in its UI")
    print(f"  the front's runs:  {tracking.ui_address(uri, front_runs_page(experiment_id, session.study_name))}")
    print(f"  all trials, chart: {tracking.ui_address(uri, trials_chart_page(experiment_id, session.study_name))}")
