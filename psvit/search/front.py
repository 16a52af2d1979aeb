"""The Pareto front of memory saving vs validation accuracy, kept current in MLflow as trials finish.

The front is what Optuna's ``study.best_trials`` would be over the feasible trials (those meeting the memory
budget) scored at full fidelity: the non-dominated ones. Every trial's child run carries ``pareto=true|false``; the parent run holds the front as
``pareto_front.csv`` and ``pareto_front.png``.
"""

from __future__ import annotations

import csv
import tempfile
from pathlib import Path

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvit import tracking
from psvit.search.fidelity import FIDELITY_ATTR, FULL
from psvit.search.space import trial_ratios


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated COMPLETE trials scored at full fidelity, by increasing memory saving.

    Left out: trials scored only on the validation subset (multi-fidelity; the front never mixes fidelities) and
    trials that repeated an evaluated pruned shape (the trial they repeat stands for them). All objectives are
    maximized."""
    scored = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if is_feasible(t) and t.user_attrs.get(FIDELITY_ATTR, FULL) == FULL
              and "duplicate_of" not in t.user_attrs]
    front = [t for t in scored if not any(dominates(o.values, t.values) for o in scored)]
    return sorted(front, key=lambda t: t.values[1])


def dominates(a: list[float], b: list[float]) -> bool:
    """``a`` is at least as good as ``b`` in every (maximized) objective and better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def update_front(study: optuna.Study, parent_run_id: str, budget: float | None) -> list[FrozenTrial]:
    """Re-tag the child runs whose ``pareto`` status changed, and rewrite the parent's front table and plot.

    Child runs are created with ``pareto=false``; one query finds the runs tagged ``true`` now, so each update
    writes only the runs that join or leave the front (not every run, which grows quadratically over a search).
    """
    front = front_trials(study)
    on_front = {t.user_attrs["mlflow_run_id"] for t in front if "mlflow_run_id" in t.user_attrs}
    tagged = tracking.child_runs_tagged(parent_run_id, "pareto", "true")
    for run_id in on_front - tagged:
        tracking.set_tags({"pareto": "true"}, run_id=run_id)
    for run_id in tagged - on_front:
        tracking.set_tags({"pareto": "false"}, run_id=run_id)
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "pareto_front.csv"
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            names = sorted(trial_ratios(front[0])) if front else []
            writer.writerow(["trial", "val_acc", "memory_saving", "mlflow_run_id", *names])
            for t in front:
                writer.writerow([t.number, t.values[0], t.values[1], t.user_attrs.get("mlflow_run_id", ""),
                                 *(trial_ratios(t)[k] for k in names)])
        tracking.log_artifact(table, run_id=parent_run_id)
        tracking.log_artifact(plot_front(complete, front, budget, Path(tmp) / "pareto_front.png"), run_id=parent_run_id)
    tracking.log_metrics({"n_complete_trials": len(complete), "pareto_size": len(front)}, run_id=parent_run_id)
    return front


def plot_front(trials: list[FrozenTrial], front: list[FrozenTrial], budget: float | None, path: Path) -> Path:
    """Scatter of all evaluated trials (memory saving vs val accuracy), the front as a line, the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [t for t in trials if t.user_attrs.get("evaluated")]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    skipped = len(trials) - len(evaluated)
    label = f"evaluated trials ({len(evaluated)})" + (f"; {skipped} missed the budget, not evaluated" if skipped else "")
    ax.scatter([100 * t.values[1] for t in evaluated], [100 * t.values[0] for t in evaluated], s=18, c="tab:blue",
               alpha=0.6, label=label)
    if front:
        ax.plot([100 * t.values[1] for t in front], [100 * t.values[0] for t in front], "-o", c="tab:red", ms=5,
                label=f"Pareto front ({len(front)})")
    if budget is not None:
        ax.axvline(100 * budget, ls="--", c="k", lw=1, label=f"budget {100 * budget:.1f}%")
    ax.set_xlabel("memory saving (% of base weight bytes)")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("psvit search: memory saving vs accuracy")
    if evaluated:
        accs = [100 * t.values[0] for t in evaluated]
        ax.set_ylim(max(0, min(accs) - 5), min(100, max(accs) + 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
