"""The distributed stack for real: three workers started by Hydra's submitit launcher (local mode) on one study,
logging to a real ``mlflow server``, with the Optuna study and the server's store in SQLite or in a real PostgreSQL.

The SQLite variant always runs; the PostgreSQL one wherever Debian's ``postgresql`` is installed (``.ci/run``
installs it).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import mlflow_server, postgres

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"
N_TRIALS, N_WORKERS = 6, 3


@pytest.fixture(params=["sqlite", "postgresql"])
def stores(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """(Optuna storage URL, MLflow tracking URI of a running ``mlflow server``) for the variant."""
    if request.param == "sqlite":
        with mlflow_server(f"sqlite:///{tmp_path / 'mlflow-server.db'}", tmp_path) as url:
            yield f"sqlite:///{tmp_path / 'optuna.db'}", url
    else:
        with postgres("optuna", "mlflow") as server, mlflow_server(f"{server}/mlflow", tmp_path) as url:
            yield f"{server}/optuna", url


def test_submitit_workers_share_one_study(run_cli, tiny_cache, stores: tuple[str, str], tmp_path: Path) -> None:
    """``tiny_cache``: the base and sensitivity caches are warm, so the workers start straight away."""
    import mlflow
    import optuna

    storage, tracking_uri = stores
    run_cli(
        "search",
        "+budget=0.3",
        f"search.n_trials={N_TRIALS}",
        "search.latency_repeats=1",
        f"search.storage={storage}",
        f"mlflow.tracking_uri={tracking_uri}",
        flags=("--config-dir", str(SWEEPS), "--config-name", "workers_submitit_local"),
        env={"OMP_NUM_THREADS": "1"},
    )  # submitit passes it on: one thread per worker

    # the three workers were submitit jobs; together they ran every trial of the study
    logs = sorted(tmp_path.glob("multirun/*/*/.submitit/*/*_log.*"))
    outs = [p.read_text() for p in logs if p.suffix == ".out"]
    assert len(outs) == N_WORKERS
    ran = [int(m) for text in outs for m in re.findall(r"ran (\d+) trials here", text)]
    assert len(ran) == N_WORKERS

    study = optuna.load_study(study_name="psvit-submitit-workers", storage=storage)
    numbers = [t.number for t in study.trials]
    complete = sorted(t.number for t in study.trials if t.state.name == "COMPLETE")
    assert sum(ran) == len(study.trials) and len(set(numbers)) == len(numbers)
    assert complete == sorted(numbers)  # none failed or left running
    assert N_TRIALS <= len(complete) <= N_TRIALS + N_WORKERS - 1  # each worker overshoots by at most one

    client = mlflow.MlflowClient(tracking_uri=tracking_uri)
    experiment = client.get_experiment_by_name("psvit")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("psvit.role") == "search"]
    assert len(parents) == 1 and parents[0].info.status == "FINISHED"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    finished = [int(r.data.tags["trial_number"]) for r in children if r.info.status == "FINISHED"]
    assert len(children) == len(runs) - 1
    assert sorted(finished) == complete  # one FINISHED child run per COMPLETE trial, no duplicate

    for path in [*logs, tmp_path / "mlflow-server.log"]:
        assert "database is locked" not in path.read_text(), path
