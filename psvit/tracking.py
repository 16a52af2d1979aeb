"""MLflow tracking, imported lazily (``import mlflow`` costs ~2 s): runs, params, metrics and artifacts.

The default store is ``sqlite:///mlflow.db`` in the working directory; any tracking URI works, including an
``mlflow server`` over HTTP. :func:`ensure_store` creates the database once, before parallel workers start.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
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


def log_params(params: Mapping[str, Any], run_id: str | None = None) -> None:
    mlflow = import_mlflow()
    flat = flat_params(params)
    if run_id is None:
        mlflow.log_params(flat)
    else:
        client = mlflow.MlflowClient()
        for k, v in flat.items():
            client.log_param(run_id, k, v)


def log_metrics(metrics: Mapping[str, float], run_id: str | None = None, step: int | None = None) -> None:
    mlflow = import_mlflow()
    clean = {k: float(v) for k, v in metrics.items() if v is not None}
    if run_id is None:
        mlflow.log_metrics(clean, step=step)
    else:
        client = mlflow.MlflowClient()
        for k, v in clean.items():
            client.log_metric(run_id, k, v, step=step or 0)


def log_artifact(path: str | Path, run_id: str | None = None, artifact_path: str | None = None) -> None:
    mlflow = import_mlflow()
    if run_id is None:
        mlflow.log_artifact(str(path), artifact_path=artifact_path)
    else:
        mlflow.MlflowClient().log_artifact(run_id, str(path), artifact_path=artifact_path)


def log_text(text: str, file_name: str, run_id: str | None = None) -> None:
    """Write ``text`` as artifact ``file_name`` of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(text)
        log_artifact(path, run_id)


def set_tags(tags: Mapping[str, Any], run_id: str | None = None) -> None:
    mlflow = import_mlflow()
    if run_id is None:
        mlflow.set_tags({k: str(v) for k, v in tags.items()})
    else:
        client = mlflow.MlflowClient()
        for k, v in tags.items():
            client.set_tag(run_id, k, str(v))
