"""psvit.tracking against a real MLflow SQLite store: a new store seeded from the empty-schema template is the
store MLflow itself would have made."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from psvit import tracking


def schema(db: Path) -> tuple[list, list]:
    """Every table and index with its definition's lines, in sorted order (MLflow's migrations write a table's
    constraints in an order that varies from process to process), and the schema revision."""
    with sqlite3.connect(db) as con:
        rows = con.execute("SELECT type, name, sql FROM sqlite_master").fetchall()
        revision = con.execute("SELECT version_num FROM alembic_version").fetchall()
    return sorted((kind, name, sorted((sql or "").splitlines())) for kind, name, sql in rows), revision


def test_a_seeded_store_is_the_store_mlflow_makes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    mlflow = tracking.import_mlflow()
    mlflow.MlflowClient("sqlite:///by-mlflow.db").search_experiments()  # MLflow's own migrations

    assert tracking.seed_sqlite_store("sqlite:///seeded.db")
    assert (tmp_path / "cache" / "psvit" / f"mlflow-{mlflow.__version__}-empty.db").is_file()
    assert schema(tmp_path / "seeded.db") == schema(tmp_path / "by-mlflow.db")
    assert not list(tmp_path.glob(".seeded.db.*"))  # no temporary copy left behind

    experiment_id = tracking.ensure_store("sqlite:///seeded.db", "psvit")
    client = mlflow.MlflowClient("sqlite:///seeded.db")
    # MLflow adds its Default experiment on first open, with this store's artifact root, not the template's
    assert Path(client.get_experiment("0").artifact_location) == tmp_path / "mlruns" / "0"
    assert client.get_experiment(experiment_id).tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING
    with tracking.run("sqlite:///seeded.db", "psvit", "a run") as active:
        tracking.log_metrics({"acc": 0.5}, run_id=active.info.run_id)
    assert client.get_run(active.info.run_id).data.metrics == {"acc": 0.5}

    # an existing store is never touched; other URIs are left to MLflow
    before = (tmp_path / "seeded.db").read_bytes()
    assert not tracking.seed_sqlite_store("sqlite:///seeded.db")
    assert (tmp_path / "seeded.db").read_bytes() == before
    assert not tracking.seed_sqlite_store("http://127.0.0.1:5000")
    assert not tracking.seed_sqlite_store("sqlite:///no-such-folder/mlflow.db")
