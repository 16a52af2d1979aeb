"""The search's parent MLflow run: exactly one per study, even when several workers start at once.

Each worker looks for the run tagged with the study; if none exists it creates one, then all workers elect
the oldest such run (start time, then run id) and a worker whose own run lost deletes it.
"""

from __future__ import annotations

from psvit import tracking

ROLE_TAG = "psvit.role"
STUDY_TAG = "psvit.study"


def _candidates(client, experiment_id: str, study_name: str) -> list:
    runs = client.search_runs(
        [experiment_id], filter_string=f"tags.`{STUDY_TAG}` = '{study_name}' and tags.`{ROLE_TAG}` = 'search'"
    )
    return sorted(runs, key=lambda r: (r.info.start_time, r.info.run_id))


def parent_run(tracking_uri: str, experiment: str, study_name: str) -> tuple[str, bool]:
    """The parent run id of ``study_name``'s search, and whether this call created it."""
    mlflow = tracking.import_mlflow()
    experiment_id = tracking.ensure_store(tracking_uri, experiment)
    client = mlflow.MlflowClient()
    found = _candidates(client, experiment_id, study_name)
    if found:
        return found[0].info.run_id, False
    mine = client.create_run(
        experiment_id,
        run_name=f"search-{study_name}",
        tags={STUDY_TAG: study_name, ROLE_TAG: "search", "psvit.command": "search"},
    )
    winner = _candidates(client, experiment_id, study_name)[0]
    if winner.info.run_id != mine.info.run_id:
        client.delete_run(mine.info.run_id)
    return winner.info.run_id, winner.info.run_id == mine.info.run_id
