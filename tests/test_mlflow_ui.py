"""The MLflow UI as a user sees it: a tiny search, then ``mlflow ui`` on 127.0.0.1 opened in headless Chromium.

The screenshots go to the test's temporary folder, or to ``$PSVIT_UI_SCREENSHOTS`` when set; the README's picture
is made with ``PSVIT_UI_SCREENSHOTS=docs OMP_NUM_THREADS=1 python -m pytest tests/test_mlflow_ui.py``.
"""

from __future__ import annotations

import io
import os
import re
import time
from html import escape
from pathlib import Path

import numpy as np
from PIL import Image
from services import browse, chromium, live_page, mlflow_server

from psvit import tracking
from psvit.search.front import front_filter, front_runs_page, trials_chart_page, trials_filter

STUDY = "ui"
FRONT_FILTER, TRIALS_FILTER = front_filter(STUDY), trials_filter(STUDY)


def shown_trials(dom: str) -> set[int]:
    """Trial numbers of the run names the runs table shows."""
    return {int(n) for n in re.findall(r">trial-(\d+)<", dom)}


def shown_runs(dom: str, runs: list) -> set[str]:
    """The ids of ``runs`` that the page links to."""
    return {r.info.run_id for r in runs if f"/runs/{r.info.run_id}" in dom}


def front_line_pixels(png: bytes) -> int:
    """Pixels of the colour plotly draws the interactive front's line in (its second trace colour, #EF553B); the
    MLflow UI itself uses none of it."""
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"), dtype=int)
    return int((np.abs(rgb - [0xEF, 0x55, 0x3B]).max(axis=2) < 40).sum())


def column_ids(dom: str) -> set[str]:
    """Ids of the runs table's columns (``metrics.`val_acc``` for a metric)."""
    return set(re.findall(r'col-id="([^"]+)"', dom))


def test_ui_shows_the_search_its_artifacts_and_its_front(run_cli, tmp_path: Path) -> None:
    import mlflow

    chromium()  # skip before the search if there is no browser
    run_cli("search", "+budget=0.3", f"search.study_name={STUDY}", "search.n_trials=6", "search.latency_repeats=1")
    # another search in the same experiment, whose runs the views of the first must not show
    run_cli(
        "search",
        "+budget=0.4",
        "search.study_name=other",
        "search.n_trials=2",
        "search.latency_repeats=1",
        "search.finalize=false",
    )
    shots = Path(os.environ.get("PSVIT_UI_SCREENSHOTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)

    with mlflow_server(f"sqlite:///{tmp_path / 'mlflow.db'}", tmp_path, command="ui") as url:
        # what the REST API says, to check the pages against
        client = mlflow.MlflowClient(tracking_uri=url)
        experiment = client.get_experiment_by_name("psvit")
        assert experiment.tags[tracking.EXPERIMENT_KIND_TAG] == tracking.MODEL_TRAINING
        eid = experiment.experiment_id
        (parent,) = client.search_runs(
            [eid], filter_string=f"tags.`psvit.role` = 'search' and tags.`psvit.study` = '{STUDY}'"
        )
        children = [r for r in client.search_runs([eid]) if "trial_number" in r.data.tags]
        front = {int(r.data.tags["trial_number"]) for r in client.search_runs([eid], filter_string=FRONT_FILTER)}
        trials = {int(r.data.tags["trial_number"]) for r in children if r.data.tags["psvit.study"] == STUDY}
        assert front and front < trials  # some trials are off the front, so the filter has something to hide

        # the runs table, model-training view: the search's parent run (its trials folded under it)
        dom = browse(f"{url}/#/experiments/{eid}/runs?workflowType=machine_learning", tmp_path / "profile-runs")
        assert ">search-ui<" in dom and "Model training" in dom

        # the parent run: the front as its description (linked to the front's runs), and the front's artifacts
        run_page = f"{url}/{tracking.run_page(eid, parent.info.run_id)}"
        dom = browse(run_page, tmp_path / "profile-run")
        assert "Pareto front" in dom and f"trial-{max(front)}" in dom
        for link in (front_runs_page(eid, STUDY), trials_chart_page(eid, STUDY)):  # the links to the two saved views
            assert f'href="{escape(link)}"' in dom
        browse(run_page, tmp_path / "profile-run", screenshot=shots / "mlflow_ui_parent.png", size=(1800, 1100))
        artifacts = (
            f"{url}/#/experiments/{eid}/runs/{parent.info.run_id}/artifacts/pareto_front.png"
            "?workflowType=machine_learning"
        )  # the artifact list, with the static front open
        dom = browse(artifacts, tmp_path / "profile-artifacts")
        for name in ("pareto_front.png", "pareto_front.html", "pareto_front.csv", "sensitivity"):
            assert name in dom
        browse(artifacts, tmp_path / "profile-artifacts", screenshot=shots / "mlflow_ui_artifacts.png")

        # MLflow's own preview of the interactive front, looked at live (see services.LivePage): plotly draws it
        preview = artifacts.replace("pareto_front.png", "pareto_front.html")
        with live_page(tmp_path / "profile-preview") as live:
            live.open(preview)
            deadline = time.monotonic() + 90
            while front_line_pixels(shot := live.screenshot()) < 300 and time.monotonic() < deadline:
                time.sleep(2)
        (shots / "mlflow_ui_preview.png").write_bytes(shot)
        assert front_line_pixels(shot) >= 300, "the preview of pareto_front.html shows no front"

        # the front's saved view: exactly the front's trials, listed flat, with their val_acc and memory_saving
        page = f"{url}/{front_runs_page(eid, STUDY)}"
        dom = browse(page, tmp_path / "profile-front")
        assert shown_trials(dom) == front and ">search-ui<" not in dom
        assert shown_runs(dom, children) == {
            r.info.run_id for r in client.search_runs([eid], filter_string=FRONT_FILTER)
        }
        assert {"metrics.`val_acc`", "metrics.`memory_saving`"} <= column_ids(dom)
        for run in client.search_runs([eid], filter_string=FRONT_FILTER):
            for metric in ("val_acc", "memory_saving"):  # the UI prints a number as its shortest repr, as Python
                assert f">{run.data.metrics[metric]!r}<" in dom
        browse(page, tmp_path / "profile-front", screenshot=shots / "mlflow_ui_front.png", size=(1800, 700))

        # the trials' saved view in the chart view: one scatter of memory_saving vs val_acc, a point per trial
        # (the chart loads lazily: 60 s of virtual time, where 30 s left it out about one time in six)
        scored = {int(r.data.tags["trial_number"]) for r in client.search_runs([eid], filter_string=TRIALS_FILTER)}
        assert front <= scored
        page = f"{url}/{trials_chart_page(eid, STUDY)}"
        dom = browse(page, tmp_path / "profile-chart", budget_ms=60000)
        assert shown_trials(dom) == scored and "memory_saving vs. val_acc" in dom
        assert shown_runs(dom, children) == {
            r.info.run_id for r in client.search_runs([eid], filter_string=TRIALS_FILTER)
        }
        (scatter,) = re.findall(r'<g class="trace scatter.*?<g class="text">', dom)
        assert scatter.count('<path class="point') == len(scored)
        browse(
            page,
            tmp_path / "profile-chart",
            screenshot=shots / "mlflow_ui_chart.png",
            size=(1800, 1000),
            budget_ms=60000,
        )

        # the interactive front: every front trial's point names its trial and its run
        html = Path(
            client.download_artifacts(parent.info.run_id, "pareto_front.html", str(tmp_path / "dl"))
        ).read_text()
        assert "plotly" in html
        for run in client.search_runs([eid], filter_string=FRONT_FILTER):
            assert f"trial {run.data.tags['trial_number']}" in html and run.info.run_id in html
    for shot in (
        "mlflow_ui_parent.png",
        "mlflow_ui_artifacts.png",
        "mlflow_ui_preview.png",
        "mlflow_ui_front.png",
        "mlflow_ui_chart.png",
    ):
        assert (shots / shot).stat().st_size > 10_000
