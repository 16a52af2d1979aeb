"""MLflow tracking, imported lazily (``import mlflow`` costs ~2 s): runs, params, metrics and artifacts.

The default store is ``sqlite:///mlflow.db`` in the working directory; any tracking URI works, including an
``mlflow server`` over HTTP. :func:`ensure_store` creates the database once, before parallel workers start, and
marks the experiment as model training (``mlflow.experimentKind``), not GenAI. A new SQLite store starts as a copy
of an empty one at MLflow's current schema (:func:`seed_sqlite_store`), not by MLflow's ~3 s of migrations.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from psvit.cache import atomic_path, file_lock

#: The experiment tag MLflow 3 reads for an experiment's kind, and the kind of a psvit experiment.
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"
MODEL_TRAINING = "custom_model_development"
#: The run tag MLflow shows as a run's description (markdown).
DESCRIPTION_TAG = "mlflow.note.content"
#: The experiment tag prefix under which MLflow 3.17's UI keeps a saved view of the runs page, and the URL parameter
#: that opens one.
SAVED_VIEW_TAG = "mlflow.sharedViewState."
SAVED_VIEW_PARAM = "viewStateShareKey"


def import_mlflow():
    """``mlflow``, imported on first use, with its INFO chatter silenced."""
    import logging

    import mlflow

    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("alembic").setLevel(logging.WARNING)
    return mlflow


def schema_template_dir() -> Path:
    """Where :func:`seed_sqlite_store` keeps its empty stores: ``$XDG_CACHE_HOME/psvit`` (``~/.cache/psvit``)."""
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "psvit"


def seed_sqlite_store(tracking_uri: str) -> bool:
    """Start the SQLite store of ``tracking_uri`` (``sqlite:///<file>``) as a copy of an empty store at this
    MLflow's schema, if the file does not exist yet; returns whether it did.

    A new store costs MLflow ~3 s of CPU: it replays every schema migration since its first release. The empty
    store (the tables at head, no rows: exactly what MLflow's own initialization creates, before it adds the
    ``Default`` experiment on first open) is made once per MLflow version in :func:`schema_template_dir`, and
    each new store is a copy of it, linked into place only if no other worker made the file first. When the
    template cannot be made (a read-only home, another MLflow), MLflow creates the store itself as before."""
    if not tracking_uri.startswith("sqlite:///") or "?" in tracking_uri:
        return False
    target = Path(tracking_uri.removeprefix("sqlite:///"))
    if target.exists() or not target.parent.is_dir():
        return False
    mlflow = import_mlflow()
    try:
        from mlflow.store.db.utils import _initialize_tables
        from sqlalchemy import create_engine

        template = schema_template_dir() / f"mlflow-{mlflow.__version__}-empty.db"
        with file_lock(template.with_name(f".{template.name}.lock")):
            if not template.is_file():
                with atomic_path(template) as tmp:
                    engine = create_engine(f"sqlite:///{tmp}")
                    _initialize_tables(engine)
                    engine.dispose()
        copy = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")  # made with the umask's mode, as MLflow's
        try:
            shutil.copyfile(template, copy)
            os.link(copy, target)  # fails if another worker made the store meanwhile: theirs stands
        finally:
            copy.unlink(missing_ok=True)
    except Exception:  # any failure (another MLflow's private API, a full disk): MLflow makes the store itself
        return False
    return True


def ensure_store(tracking_uri: str, experiment: str) -> str:
    """Point MLflow at ``tracking_uri``, create the experiment (and so the DB) if needed, as a model-training
    experiment (experiments made before that was so are tagged now); returns its id."""
    mlflow = import_mlflow()
    seed_sqlite_store(tracking_uri)
    mlflow.set_tracking_uri(tracking_uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is None:
        try:
            return mlflow.create_experiment(experiment, tags={EXPERIMENT_KIND_TAG: MODEL_TRAINING})
        except Exception:  # another worker created it first
            found = mlflow.get_experiment_by_name(experiment)
    if found.tags.get(EXPERIMENT_KIND_TAG) != MODEL_TRAINING:
        set_experiment_tag(found.experiment_id, EXPERIMENT_KIND_TAG, MODEL_TRAINING)
    return found.experiment_id


def set_experiment_tag(experiment_id: str, key: str, value: str) -> None:
    """Set an experiment tag, safe against a parallel worker setting the same tag at the same moment.

    MLflow's SQL store writes a new tag as a look-up-then-insert, so two workers that both find it missing both
    insert and one fails on the unique key; by then the tag exists, and the second try updates it.
    """
    mlflow = import_mlflow()
    client = mlflow.MlflowClient()
    try:
        client.set_experiment_tag(experiment_id, key, value)
    except mlflow.exceptions.MlflowException:  # lost the insert race: the row is there now
        client.set_experiment_tag(experiment_id, key, value)


def saved_view_page(experiment_id: str, view: str, chart: bool = False) -> str:
    """The runs page of an experiment opened on its saved view ``view`` (see :func:`save_runs_views`), as a link
    relative to the UI's address: in the table, or with ``chart`` in the chart view (``compareRunsMode=CHART``).

    Like every link psvit writes, it opens the model-training view: MLflow 3.17 picks the view from the
    ``workflowType`` parameter, or else from the browser's last choice (local storage ``mlflow.workflowType_v1``),
    GenAI in a fresh browser; it does not read the experiment's ``mlflow.experimentKind`` tag for that.
    """
    query = {"workflowType": "machine_learning", SAVED_VIEW_PARAM: view}
    if chart:
        query["compareRunsMode"] = "CHART"
    return f"#/experiments/{experiment_id}/runs?{urlencode(query)}"


def metric_column(key: str) -> str:
    """The runs table's column (and sort key) of metric ``key``."""
    return f"metrics.`{key}`"


def tag_column(key: str) -> str:
    """The runs table's column of run tag ``key``."""
    return f"tags.`{key}`"


def runs_view(
    name: str, *, search_filter: str, order_by: str, columns: list[str], column_widths: int, scatter: tuple[str, str]
) -> dict[str, Any]:
    """A saved view of the runs page, as MLflow 3.17's UI stores one (see :func:`save_runs_views`).

    Its ``state`` holds the search (``searchFilter``, ``orderByKey`` descending) and the UI state: the table's
    ``selectedColumns`` (``columns``: :func:`metric_column` / :func:`tag_column` ids) after the run name, creation
    time and duration, each ``column_widths`` pixels wide; every matching run shown (``runsHiddenMode``); and the
    chart view: one scatter card of metrics ``scatter`` = (x, y) in a section of its own named ``name``.
    """
    x, y = scatter
    chart = {
        "uuid": f"scatter-{x}-{y}",
        "type": "SCATTER",
        "metricSectionId": name,
        "runsCountToCompare": 100,
        "xaxis": {"key": x, "type": "METRIC"},
        "yaxis": {"key": y, "type": "METRIC"},
        "deleted": False,
        "isGenerated": False,
    }
    state = {
        "searchFilter": search_filter,
        "orderByKey": order_by,
        "orderByAsc": False,
        "selectedColumns": columns,
        "columnOrder": ["attributes.`Run Name`", "runDateAndNestInfo", "duration", *columns],
        "columnWidths": dict.fromkeys(columns, column_widths),
        "runsHiddenMode": "SHOW_ALL",
        "compareRunCharts": [chart],
        "compareRunSections": [
            {
                "uuid": name,
                "name": name,
                "display": True,
                "isReordered": False,
                "deleted": False,
                "columns": 2,
                "cardHeight": 480,
            }
        ],
    }
    return {"name": name, "state": json.dumps(state)}


def save_runs_views(experiment_id: str, views: Mapping[str, dict[str, Any]]) -> None:
    """Save :func:`runs_view` views of an experiment's runs page under their ids, those not saved yet or changed.

    MLflow 3.17's UI keeps a saved view (its *Views* menu) as the experiment tag ``mlflow.sharedViewState.<id>``: a
    JSON envelope ``{name, createdAt, updatedAt, state}`` whose ``state`` is JSON text. :func:`saved_view_page`
    opens one. One read of the experiment, and a write per view that differs.
    """
    client = import_mlflow().MlflowClient()
    saved = client.get_experiment(experiment_id).tags
    now = int(time.time() * 1000)
    for view, content in views.items():
        key = f"{SAVED_VIEW_TAG}{view}"
        old = json.loads(saved.get(key, "{}"))
        if {k: old.get(k) for k in content} != content:
            set_experiment_tag(
                experiment_id, key, json.dumps({**content, "createdAt": old.get("createdAt", now), "updatedAt": now})
            )


def ui_address(tracking_uri: str, page: str) -> str:
    """Where to open ``page`` (a :func:`saved_view_page` / :func:`run_page` link): on the tracking server itself, or on
    ``mlflow ui``'s default address for a local store (with the command that starts it)."""
    if tracking_uri.startswith(("http://", "https://")):
        return f"{tracking_uri.rstrip('/')}/{page}"
    return f"http://127.0.0.1:5000/{page}  (after: mlflow ui --backend-store-uri {tracking_uri})"


def run_page(experiment_id: str, run_id: str) -> str:
    """A run's page in the MLflow UI, as a link relative to the UI's address."""
    return f"#/experiments/{experiment_id}/runs/{run_id}?workflowType=machine_learning"


@contextlib.contextmanager
def run(
    tracking_uri: str,
    experiment: str,
    name: str,
    *,
    run_id: str | None = None,
    parent_run_id: str | None = None,
    tags: Mapping[str, Any] | None = None,
) -> Iterator[Any]:
    """An MLflow run (new, or resumed by ``run_id``), ended when the block exits.

    ``parent_run_id`` nests it under that run (via the ``mlflow.parentRunId`` tag, which the UI shows as a tree;
    unlike ``start_run(parent_run_id=...)`` it does not need the parent to be active in this process).
    """
    mlflow = import_mlflow()
    experiment_id = ensure_store(tracking_uri, experiment)
    tags = {k: str(v) for k, v in (tags or {}).items()}
    if parent_run_id:
        tags["mlflow.parentRunId"] = parent_run_id
    with mlflow.start_run(
        run_id=run_id, run_name=None if run_id else name, experiment_id=experiment_id, tags=tags
    ) as active:
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


def experiment_of(run_id: str) -> str:
    return import_mlflow().MlflowClient().get_run(run_id).info.experiment_id


def child_runs_tagged(experiment_id: str, parent_run_id: str, key: str, value: str) -> set[str]:
    """Ids of the child runs of ``parent_run_id`` whose tag ``key`` is ``value`` (one search query)."""
    return {r.info.run_id for r in _child_runs(experiment_id, parent_run_id, f"tags.`{key}` = '{value}'")}


def _child_runs(experiment_id: str, parent_run_id: str, condition: str) -> list[Any]:
    """The child runs of ``parent_run_id`` that meet an MLflow search ``condition`` (one search query)."""
    return (
        import_mlflow()
        .MlflowClient()
        .search_runs(
            [experiment_id],
            max_results=50000,
            filter_string=f"tags.`mlflow.parentRunId` = '{parent_run_id}' and {condition}",
        )
    )


def start_child_run(parent_run_id: str, name: str, tags: Mapping[str, Any]) -> str:
    """Create a RUNNING child run of ``parent_run_id`` without making it this process's active run; its id."""
    tags = {**{k: str(v) for k, v in tags.items()}, "mlflow.parentRunId": parent_run_id}
    return import_mlflow().MlflowClient().create_run(experiment_of(parent_run_id), run_name=name, tags=tags).info.run_id


def running_child_runs(parent_run_id: str) -> dict[str, dict[str, str]]:
    """The child runs of ``parent_run_id`` still RUNNING: run id -> tags (one search query)."""
    runs = _child_runs(experiment_of(parent_run_id), parent_run_id, "attributes.status = 'RUNNING'")
    return {r.info.run_id: r.data.tags for r in runs}


def log_artifact(path: str | Path, run_id: str | None = None, artifact_path: str | None = None) -> None:
    client, run = _client_and_run(run_id)
    client.log_artifact(run, str(path), artifact_path=artifact_path)


def log_figure(figure: Any, file_name: str, run_id: str | None = None, **save_kwargs: Any) -> None:
    """Write a matplotlib or plotly figure as artifact ``file_name`` (``.html`` for an interactive plotly one)."""
    client, run = _client_and_run(run_id)
    client.log_figure(run, figure, file_name, save_kwargs=save_kwargs or None)


def log_text(text: str, file_name: str, run_id: str | None = None) -> None:
    """Write ``text`` as artifact ``file_name`` of the run."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / file_name
        path.write_text(text)
        log_artifact(path, run_id)
