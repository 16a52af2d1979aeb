"""The Pareto front of memory saving vs validation accuracy, kept current in MLflow as trials finish.

The front is what Optuna's ``study.best_trials`` would be over the feasible trials (those meeting the memory
budget) scored at full fidelity: the non-dominated ones. Every trial's child run carries ``pareto=true|false``;
the parent run holds the front as ``pareto_front.html`` (interactive: each point names its trial, kept widths and
MLflow run), ``pareto_front.csv`` and ``pareto_front.png``, and as its description: a table of the front, linked
to the trials' runs. The experiment holds two saved views of the UI's runs page per study (the front's runs, all
its trials), with the objectives as columns and as a scatter chart.
"""

from __future__ import annotations

import csv
import re
import tempfile
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from psvit import tracking
from psvit.search.fidelity import FIDELITY_ATTR, FULL
from psvit.search.space import trial_bits, trial_ratios


def front_filter(study_name: str) -> str:
    """The MLflow search filter that selects the front's runs of study ``study_name``."""
    return f'tags.pareto = "true" and tags.`psvit.study` = "{study_name}"'


def trials_filter(study_name: str) -> str:
    """The MLflow search filter that selects the trials of ``study_name`` scored at full fidelity (not those that
    repeated an evaluated shape, nor those scored on the validation subset only)."""
    return f'tags.evaluated = "true" and tags.fidelity = "full" and tags.`psvit.study` = "{study_name}"'


def view_ids(study_name: str) -> tuple[str, str]:
    """The ids of the two saved views of the UI's runs page that :func:`update_front` keeps for a study: its
    front's runs, and all its trials (an experiment tag key holds letters, digits and ``_-. /`` only)."""
    key = re.sub(r"[^\w.-]", "_", study_name)
    return f"psvit-front-{key}", f"psvit-trials-{key}"


def front_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Feasible, non-dominated COMPLETE trials scored at full fidelity, by increasing memory saving.

    Left out: trials scored only on the validation subset (multi-fidelity; the front never mixes fidelities) and
    trials that repeated an evaluated pruned shape (the trial they repeat stands for them). All objectives are
    maximized."""
    scored = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if is_feasible(t) and t.user_attrs.get(FIDELITY_ATTR, FULL) == FULL and "duplicate_of" not in t.user_attrs
    ]
    front = [t for t in scored if not any(dominates(o.values, t.values) for o in scored)]
    return sorted(front, key=lambda t: t.values[1])


def dominates(a: list[float], b: list[float]) -> bool:
    """``a`` is at least as good as ``b`` in every (maximized) objective and better in one."""
    return all(x >= y for x, y in zip(a, b)) and any(x > y for x, y in zip(a, b))


def is_feasible(trial: FrozenTrial) -> bool:
    return all(v <= 0 for v in trial.constraints.values())


def update_front(
    study: optuna.Study, parent_run_id: str, budget: float | None, artifacts: bool = True
) -> list[FrozenTrial]:
    """Re-tag the child runs whose ``pareto`` status changed, and (with ``artifacts``) rewrite the parent's front
    table, plots, description and saved views.

    Child runs are created with ``pareto=false``; one query finds the runs tagged ``true`` now, so each update
    writes only the runs that join or leave the front (not every run, which grows quadratically over a search).
    The artifacts cost ~0.4 s of CPU (two plots and a self-contained HTML page), which is why a search rewrites
    them at most every :data:`psvit.search.session.FRONT_REFRESH_SECONDS` and once at its end.
    """
    front = front_trials(study)
    on_front = {t.user_attrs["mlflow_run_id"] for t in front if "mlflow_run_id" in t.user_attrs}
    experiment_id = tracking.experiment_of(parent_run_id)
    tagged = tracking.child_runs_tagged(experiment_id, parent_run_id, "pareto", "true")
    for run_id in on_front - tagged:
        tracking.set_tags({"pareto": "true"}, run_id=run_id)
    for run_id in tagged - on_front:
        tracking.set_tags({"pareto": "false"}, run_id=run_id)
    if artifacts:
        write_front_artifacts(study, front, parent_run_id, experiment_id, budget)
    return front


def write_front_artifacts(
    study: optuna.Study, front: list[FrozenTrial], parent_run_id: str, experiment_id: str, budget: float | None
) -> None:
    """The parent run's ``pareto_front.{csv,png,html}``, description, front metrics, and the experiment's two
    saved views of the study."""
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
    with tempfile.TemporaryDirectory() as tmp:
        table = Path(tmp) / "pareto_front.csv"
        with table.open("w", newline="") as f:
            writer = csv.writer(f)
            names = sorted(trial_ratios(front[0])) if front else []
            quantized = any(trial_bits(t) for t in front)
            bits_columns = [f"bits.{k}" for k in names] if quantized else []
            writer.writerow(["trial", "val_acc", "memory_saving", "mlflow_run_id", *names, *bits_columns])
            for t in front:
                bits = trial_bits(t) or {}
                writer.writerow(
                    [
                        t.number,
                        t.values[0],
                        t.values[1],
                        t.user_attrs.get("mlflow_run_id", ""),
                        *(trial_ratios(t)[k] for k in names),
                        *((bits.get(k, 32) for k in names) if quantized else ()),
                    ]
                )
        tracking.log_artifact(table, run_id=parent_run_id)
        tracking.log_artifact(plot_front(complete, front, budget, Path(tmp) / "pareto_front.png"), run_id=parent_run_id)
    tracking.log_figure(
        interactive_front(complete, front, budget), "pareto_front.html", run_id=parent_run_id, include_plotlyjs=True
    )  # self-contained: the UI previews it without reaching a CDN
    tracking.save_runs_views(experiment_id, runs_views(study.study_name))
    tracking.set_tags(
        {tracking.DESCRIPTION_TAG: describe_front(front, experiment_id, study.study_name, budget)}, run_id=parent_run_id
    )
    tracking.log_metrics({"n_complete_trials": len(complete), "pareto_size": len(front)}, run_id=parent_run_id)


def plot_front(trials: list[FrozenTrial], front: list[FrozenTrial], budget: float | None, path: Path) -> Path:
    """Scatter of all evaluated trials (memory saving vs val accuracy), the front as a line, the budget."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [t for t in trials if t.user_attrs.get("evaluated")]
    full, subset = by_fidelity(evaluated)
    fig, ax = plt.subplots(figsize=(7, 4.5))
    skipped = len(trials) - len(evaluated)
    label = f"evaluated trials ({len(full)})" + (f"; {skipped} missed the budget, not evaluated" if skipped else "")
    ax.scatter(
        [100 * t.values[1] for t in full], [100 * t.values[0] for t in full], s=18, c="tab:blue", alpha=0.6, label=label
    )
    if subset:
        ax.scatter(
            [100 * t.values[1] for t in subset],
            [100 * t.values[0] for t in subset],
            s=18,
            facecolors="none",
            edgecolors="tab:gray",
            label=f"scored on the validation subset only ({len(subset)})",
        )
    if front:
        ax.plot(
            [100 * t.values[1] for t in front],
            [100 * t.values[0] for t in front],
            "-o",
            c="tab:red",
            ms=5,
            label=f"Pareto front ({len(front)})",
        )
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


def by_fidelity(trials: list[FrozenTrial]) -> tuple[list[FrozenTrial], list[FrozenTrial]]:
    """``trials`` split into those scored at full fidelity and those scored on the validation subset only."""
    full = [t for t in trials if t.user_attrs.get(FIDELITY_ATTR, FULL) == FULL]
    return full, [t for t in trials if t.user_attrs.get(FIDELITY_ATTR, FULL) != FULL]


def _percent(fraction: float) -> str:
    return f"{100 * fraction:.2f}%"


def hover_text(trial: FrozenTrial) -> str:
    """A trial as the interactive front shows it: number, objectives, MLflow run, kept width of every group."""
    ratios, bits = trial_ratios(trial), trial_bits(trial) or {}
    widths = "<br>".join(
        f"  {name}: {ratios[name]:.3f}" + (f" at {bits[name]} bits" if name in bits else "") for name in sorted(ratios)
    )
    return (
        f"<b>trial {trial.number}</b><br>val acc {_percent(trial.values[0])}, saving {_percent(trial.values[1])}"
        f"<br>run {trial.user_attrs.get('mlflow_run_id', '-')}<br>kept widths:<br>{widths}"
    )


def interactive_front(trials: list[FrozenTrial], front: list[FrozenTrial], budget: float | None):
    """The front as a plotly figure: all evaluated trials, the front as a line, the budget; hover for details."""
    import plotly.graph_objects as go

    full, subset = by_fidelity([t for t in trials if t.user_attrs.get("evaluated")])
    fig = go.Figure()
    subset_trace = (
        subset,
        f"scored on the validation subset only ({len(subset)})",
        {"mode": "markers", "marker": {"symbol": "circle-open", "color": "gray"}},
    )
    for shown, name, style in (
        (full, f"evaluated trials ({len(full)})", {"mode": "markers"}),
        *((subset_trace,) if subset else ()),
        (front, f"Pareto front ({len(front)})", {"mode": "lines+markers"}),
    ):
        fig.add_trace(
            go.Scatter(
                x=[100 * t.values[1] for t in shown],
                y=[100 * t.values[0] for t in shown],
                name=name,
                hovertext=[hover_text(t) for t in shown],
                hoverinfo="text",
                **style,
            )
        )
    if budget is not None:
        fig.add_vline(x=100 * budget, line_dash="dash", annotation_text=f"budget {100 * budget:.1f}%")
    fig.update_layout(
        title="psvit search: memory saving vs validation accuracy (hover a point)",
        xaxis_title="memory saving (% of base weight bytes)",
        yaxis_title="validation accuracy (%)",
        template="plotly_white",
        legend={"x": 0.01, "y": 0.01},
    )
    return fig


def runs_views(study_name: str) -> dict[str, dict[str, Any]]:
    """The saved views of the runs page for a study: its front's runs, and every trial scored at full fidelity
    (with its ``pareto`` tag); both most accurate first, with val_acc and memory_saving as columns and, in the
    chart view, as a scatter (saving on x, accuracy on y)."""
    objectives = [tracking.metric_column("val_acc"), tracking.metric_column("memory_saving")]
    shared = {
        "order_by": tracking.metric_column("val_acc"),
        "column_widths": 150,
        "scatter": ("memory_saving", "val_acc"),
    }
    front_view, trials_view = view_ids(study_name)
    return {
        front_view: tracking.runs_view(
            f"psvit {study_name}: Pareto front", search_filter=front_filter(study_name), columns=objectives, **shared
        ),
        trials_view: tracking.runs_view(
            f"psvit {study_name}: trials",
            search_filter=trials_filter(study_name),
            columns=[*objectives, tracking.tag_column("pareto")],
            **shared,
        ),
    }


def front_runs_page(experiment_id: str, study_name: str) -> str:
    """The UI's runs table showing a study's front's runs (flat, most accurate first, with their val_acc and
    memory_saving), relative to the UI's address."""
    return tracking.saved_view_page(experiment_id, view_ids(study_name)[0])


def trials_chart_page(experiment_id: str, study_name: str) -> str:
    """The UI's chart view of a study's trials scored at full fidelity: memory saving vs val_acc as a scatter."""
    return tracking.saved_view_page(experiment_id, view_ids(study_name)[1], chart=True)


def describe_front(front: list[FrozenTrial], experiment_id: str, study_name: str, budget: float | None) -> str:
    """The parent run's description: the front as a markdown table, each trial linked to its run."""
    target = "" if budget is None else f" meeting the budget (saving >= {_percent(budget)})"
    lines = [
        f"**Pareto front** of memory saving vs validation accuracy{target}: {len(front)} trials. "
        f"[Open them as runs]({front_runs_page(experiment_id, study_name)}); "
        f"[all trials as a scatter chart]({trials_chart_page(experiment_id, study_name)}); "
        "the interactive plot is the artifact `pareto_front.html`.",
        "",
        "| trial | val acc | memory saving | run |",
        "|---|---|---|---|",
    ]
    for t in sorted(front, key=lambda t: -t.values[0]):
        run_id = t.user_attrs.get("mlflow_run_id")
        run = f"[trial-{t.number}]({tracking.run_page(experiment_id, run_id)})" if run_id else "-"
        lines.append(f"| {t.number} | {_percent(t.values[0])} | {_percent(t.values[1])} | {run} |")
    return "\n".join(lines)
