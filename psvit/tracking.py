"""MLflow tracking, imported lazily (``import mlflow`` costs ~2 s): runs, params, metrics and artifacts.

The default store is ``sqlite:///mlflow.db`` in the working directory; any tracking URI works, including an
``mlflow server`` over HTTP. :func:`ensure_store` creates the database once, before parallel workers start.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any


def import_mlflow():
    """``mlflow``, imported on first use, with its INFO chatter silenced."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def ensure_store(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at ``tracking_uri``, create the experiment (and so the DB) if needed; returns its id."""
    mlflow = import_mlflow()
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        return found.experiment_id
    try:
        return mlflow.create_experiment(experiment)
    except Exception:  # another worker created it first
        return mlflow.get_experiment_by_name(experiment).experiment_id


@contextlib.contextmanager
def run(tracking_uri: str, experiment: str, name: str, *, run_id: str | None = None,
        parent_run_id: str | None = None, tags: Mapping[str, Any] | None = None) -> Iterator[Any]:
    """An MLflow run (new, or resumed by ``run_id``), ended when the block exits.

    ``parent_run_id`` nests it under that run (via the ``mlflow.parentRunId`` tag, which the UI shows as a tree;
    unlike ``start_run(parent_run_id=...)`` it does not need the parent to be active in this process).
    """
    mlflow = import_mlflow()
    experiment_id = ensure_store(tracking_uri, experiment)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(run_id=run_id, run_name=None if run_id else name, experiment_id=experiment_id,
                          tags=tags) as active:
        yield active


def flat_params(cfg: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """A nested config as MLflow params (``a.b.c`` keys, string values cut to MLflow's 6000 chars)."""
    out: dict[str, str] = {}
    for key, value in cfg.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            out.update(flat_params(value, f"{name}."))
        else:
            out[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return {k: v[:6000] for k, v in out.items()}


def _client_and_run(run_id: str | None) -> tuple[Any, str]:
    """An MLflow client and the run to write to: ``run_id``, or else the active run of this process."""
    mlflow = import_mlflow()
    return mlflow.MlflowClient(), run_id or mlflow.active_run().info.run_id


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    """Log a (nested) config as flat params, in one batch."""
    from mlflow.entities import Param

    client, run = _client_and_run(run_id)
    client.log_batch(run, params=[Param(k, v) for k, v in flat_params(params).items()])


def log_metrics(metrics: Mapping[str, float], run_id: str | None = None) -> None:
    """Log metrics (``None`` values skipped), in one batch."""
    from mlflow.entities import Metric

    client, run = _client_and_run(run_id)
    now = int(time.time() * 1000)
    client.log_batch(run, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None])


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    """Set tags (values as strings), in one batch."""
    from mlflow.entities import RunTag

    client, run = _client_and_run(run_id)
    client.log_batch(run, tags=[RunTag(k, str(v)) for k, v in tags.items()])


def end_run(run_id: str, status: str = "FINISHED") -> None:
    """Mark ``run_id`` ended (``FINISHED``, ``FAILED`` or ``KILLED``), so the UI stops showing it RUNNING."""
    import_mlflow().MlflowClient().set_terminated(run_id, status)


def child_runs_tagged(parent_run_id: str, key: str, value: str) -> set[str]:
    """Ids of the child runs of ``parent_run_id`` whose tag ``key`` is ``value`` (one search query)."""
    return {r.info.run_id for r in _child_runs(parent_run_id, f"tags.`{key}` = '{value}'")}


def _child_runs(parent_run_id: str, condition: str) -> list[Any]:
    """The child runs of ``parent_run_id`` that meet an MLflow search ``condition`` (one search query)."""
    client = import_mlflow().MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    return client.search_runs([experiment_id], max_results=50000,
                              filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and {condition}")


def start_child_run(parent_run_id: str, name: str, tags: Mapping[str, Any]) -> str:
    """Create a RUNNING child run of ``parent_run_id`` without making it this process's active run; its id."""
    client = import_mlflow().MlflowClient()
    experiment_id = client.get_run(parent_run_id).info.experiment_id
    tags = {**{k: str(v) for k, v in tags.items()}, "mlflow.parentRunId": parent_run_id}
    return client.create_run(experiment_id, run_name=name, tags=tags).info.run_id


def running_child_runs(parent_run_id: str) -> dict[str, dict[str, str]]:
    """The child runs of ``parent_run_id`` still RUNNING: run id -> tags (one search query)."""
    return {r.info.run_id: r.data.tags for r in _child_runs(parent_run_id, "attributes.status = 'RUNNING'")}


def log_artifact(path: str | Path, run_id: str | None = None, artifact_path: str | None = None) -> None:
    client, run = _client_and_run(run_id)
    client.log_artifact(run, str(path), artifact_path=artifact_path)


def log_text(text: str, file_name: str, run_id: str | None = None) -> None:
    """Write ``text`` as artifact ``file_name`` of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(text)
        log_artifact(path, run_id)

