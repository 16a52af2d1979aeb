"""End to end: the real ``python -m psvit.search`` CLI in subprocesses, against real Optuna and MLflow stores."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import open_study_storage

import psvit
from psvit.data import build_splits
from psvit.train import evaluate

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
SEARCH = ["search.n_trials=5", "search.latency_repeats=1", "search.n_startup_trials=2"]


def study(tmp_path: Path, name: str):
    import optuna

    return optuna.load_study(study_name=name, storage=f"sqlite:///{tmp_path / 'optuna.db'}")


def mlflow_runs(tmp_path: Path):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    (experiment,) = [e for e in client.search_experiments() if e.name == "psvit"]
    runs = client.search_runs([experiment.experiment_id], max_results=10000)
    parents = [r for r in runs if r.data.tags.get("psvit.role") == "search"]
    children = [r for r in runs if "mlflow.parentRunId" in r.data.tags]
    return client, parents, children


def dominated(a: tuple[float, float], b: tuple[float, float]) -> bool:
    """``a`` is dominated by ``b`` (both objectives maximized)."""
    return b[0] >= a[0] and b[1] >= a[1] and b != a


def test_search_end_to_end_and_resume(run_cli, tmp_path: Path) -> None:
    out = run_cli("search", "+budget=0.3", "search.study_name=e2e", *SEARCH).stdout
    assert "| original acc | pruned acc, no fine-tune | pruned acc, fine-tuned |" in out
    st = study(tmp_path, "e2e")
    assert len(st.trials) == 5 and all(t.state.name == "COMPLETE" for t in st.trials)

    client, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == len(st.trials)
    assert {c.data.tags["mlflow.parentRunId"] for c in children} == {parents[0].info.run_id}
    by_trial = {int(c.data.tags["trial_number"]): c for c in children}
    assert sorted(by_trial) == [t.number for t in st.trials]

    # every pareto=true run is feasible (meets the budget) and non-dominated among feasible runs
    feasible = {
        n: (c.data.metrics["val_acc"], c.data.metrics["memory_saving"])
        for n, c in by_trial.items()
        if c.data.tags["feasible"] == "true"
    }
    front = [n for n, c in by_trial.items() if c.data.tags["pareto"] == "true"]
    assert front and sorted(front) == sorted(t.number for t in st.best_trials if "duplicate_of" not in t.user_attrs)
    assert parents[0].info.status == "FINISHED"  # the search's parent run is ended, not left RUNNING
    for n in front:
        assert n in feasible and feasible[n][1] >= 0.3
        assert not any(dominated(feasible[n], other) for other in feasible.values())
    for n, c in by_trial.items():
        assert ("ratio.embed" in c.data.params) and ("width.embed_dim" in c.data.params)
        assert c.data.metrics["memory_saving"] == pytest.approx(st.trials[n].values[1])

    # the final checkpoint loads and reproduces the logged test accuracy
    parent = client.get_run(parents[0].info.run_id)
    local = client.download_artifacts(parent.info.run_id, "final_model/pruned.pt", str(tmp_path / "dl"))
    model = psvit.load(local)
    acc = evaluate(model, build_splits("digits", img_size=16).test)
    assert acc == pytest.approx(parent.data.metrics["final_test_finetuned_acc"], abs=1e-9)
    assert parent.data.metrics["final_memory_saving"] >= 0.3
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"pareto_front.csv", "pareto_front.png", "result_row.md", "sensitivity", "final_model"} <= artifacts

    # resume: same study, more trials -> only the missing ones run; MLflow keeps one child per trial
    out = run_cli(
        "search", "+budget=0.3", "search.study_name=e2e", *SEARCH[1:], "search.n_trials=7", "search.finalize=false"
    ).stdout
    assert "ran 2 trials here; 7 complete" in out
    out = run_cli(
        "search", "+budget=0.3", "search.study_name=e2e", *SEARCH[1:], "search.n_trials=7", "search.finalize=false"
    ).stdout
    assert "ran 0 trials here; 7 complete" in out
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1 and len(children) == len(study(tmp_path, "e2e").trials) == 7


@pytest.mark.parametrize("budget", ["1.5", "0", "-0.2", "abc", "1"])
def test_bad_budget_is_one_line_error_before_any_work(run_cli, tmp_path: Path, budget: str) -> None:
    result = run_cli("search", f"+budget={budget}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: budget must be a number strictly between 0 and 1")
    assert not (tmp_path / "optuna.db").exists() and not (tmp_path / "mlflow.db").exists()


def test_two_parallel_workers_share_one_study(run_cli, tiny_cache, tmp_path: Path) -> None:
    # tiny_cache: the base and sensitivity caches are warm, so both workers start straight away
    result = run_cli(
        "search",
        "+budget=0.3",
        "search.study_name=par",
        "search.n_trials=6",
        "search.latency_repeats=1",
        flags=("--config-dir", str(SWEEPS), "--config-name", "workers_local"),
        env={"OMP_NUM_THREADS": "1"},
    )  # one thread per worker on a 2-core machine
    assert result.returncode == 0
    st = study(tmp_path, "par")
    complete = [t for t in st.trials if t.state.name == "COMPLETE"]
    assert 6 <= len(complete) <= 7 and len(st.trials) == len(complete)  # none lost; at most workers-1 extra
    _, parents, children = mlflow_runs(tmp_path)
    assert len(parents) == 1
    numbers = sorted(int(c.data.tags["trial_number"]) for c in children)
    assert numbers == sorted(t.number for t in complete)  # one child run per trial, no duplicates


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("budget_sweep", ["+budget: 0.1,0.224,0.3,0.4", "mode: MULTIRUN"]),
        ("workers_local", ["JoblibLauncher", "n_jobs: 2", "+worker: 0,1"]),
        ("workers_slurm", ["SlurmLauncher", "partition: gpu", "+worker: range(8)"]),
    ],
)
def test_sweep_configs_compose(run_cli, sweep: str, expected: list[str]) -> None:
    out = run_cli(
        "search", flags=("--config-dir", str(SWEEPS), "--config-name", sweep, "--cfg", "hydra"), tiny=False
    ).stdout
    for text in expected:
        assert text in out


def test_search_without_budget_builds_the_unconstrained_front(run_cli, tmp_path: Path) -> None:
    out = run_cli("search", "search.study_name=front", "search.n_trials=4", "search.latency_repeats=1").stdout
    assert "4 complete" in out and "chosen: trial" in out
    st = study(tmp_path, "front")
    assert all(t.constraints == {} for t in st.trials)  # no budget, no constraint
    front = {t.number for t in st.best_trials}
    values = {t.number: tuple(t.values) for t in st.trials}
    for n in front:
        assert not any(dominated(values[n], v) for v in values.values())
    savings = sorted(values[n][1] for n in front)
    assert savings[-1] > 0.3  # the prior allocations reach far along the memory axis


def test_killed_worker_leaves_no_trial_running_forever(run_cli, cache_dir: Path, tiny_cache, tmp_path: Path) -> None:
    import optuna
    from helpers import TINY
    from optuna.trial import TrialState

    # tiny_cache: the caches are warm, so the worker reaches its trials quickly
    args = [
        sys.executable,
        "-m",
        "psvit.search",
        *TINY,
        "+budget=0.3",
        "search.study_name=killed",
        "search.n_trials=3",
        "search.finalize=false",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
    ]
    env = {**os.environ, "PSVIT_CACHE_DIR": str(cache_dir)}
    worker = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    storage = None
    try:
        for _ in range(1200):  # wait (up to ~2 min) until a trial is RUNNING, then kill the worker mid-trial
            if worker.poll() is not None:
                break
            storage = storage or open_study_storage(tmp_path / "optuna.db", "killed")
            trials = (  # none until the worker has made its study
                optuna.load_study(study_name="killed", storage=storage).get_trials(states=(TrialState.RUNNING,))
                if storage is not None
                else []
            )
            # all its parameters are recorded (its MLflow run is opened after the last one): the retry must reuse them
            if trials and "mlflow_run_id" in trials[0].user_attrs:
                worker.kill()
                break
            time.sleep(0.1)
    finally:
        worker.kill()
        worker.wait()
    assert trials, "the worker never started a trial"
    killed = trials[0].number
    time.sleep(3)  # past the grace period: the dead worker's heartbeat is stale
    out = run_cli(
        "search",
        "+budget=0.3",
        "search.study_name=killed",
        "search.n_trials=3",
        "search.finalize=false",
        "search.heartbeat_interval=1",
        "search.grace_period=2",
    ).stdout
    assert "3 complete" in out
    st = optuna.load_study(study_name="killed", storage=storage)
    states = {t.number: t.state for t in st.trials}
    assert states[killed] == TrialState.FAIL and TrialState.RUNNING not in states.values()
    retried = [t for t in st.trials if t.system_attrs.get("failed_trial") == killed]
    assert len(retried) == 1 and retried[0].state == TrialState.COMPLETE
    assert retried[0].params == st.trials[killed].params


def test_strategy_sampler_evaluates_only_its_allocations(run_cli, tmp_path: Path) -> None:
    out = run_cli(
        "search",
        "+budget=0.3",
        "search.study_name=psv",
        "search.sampler=psvit",
        "search.priors=false",
        "search.n_trials=3",
        "search.finalize=false",
        "search.latency_repeats=1",
    ).stdout
    assert "3 complete" in out
    savings = [t.values[1] for t in study(tmp_path, "psv").trials]
    assert len(savings) == 3 and savings == sorted(savings) and savings[0] >= 0.3  # a ladder of budgets from 0.3
