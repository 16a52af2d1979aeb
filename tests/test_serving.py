"""The chosen model out of a real tiny search: its ONNX file and MLflow Model (logged, registered with tags,
loaded back without pickle), the export CLI on its checkpoint, and ``mlflow models serve`` answering good and bad
requests over HTTP. Real MLflow SQLite store, real onnxruntime, real subprocesses."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import TINY

import psvit
from psvit.data import build_splits
from psvit.train import predict

NAME = "psvit-served"
SEARCH = [
    "+budget=0.3",
    "search.n_trials=3",
    "search.latency_repeats=1",
    "search.n_startup_trials=2",
    "search.export=true",
    f"search.register_model={NAME}",
]


@dataclass(frozen=True)
class Searched:
    folder: Path
    out: str
    err: str
    checkpoint: Path
    tracking_uri: str
    env: dict[str, str]


@pytest.fixture(scope="module")
def searched(cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Searched:
    """``python -m psvit.search +budget=0.3 search.register_model=psvit-served`` (tiny), run once for the file."""
    folder = tmp_path_factory.mktemp("served")
    env = {**os.environ, "PSVIT_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0", "OMP_NUM_THREADS": "1"}
    args = [sys.executable, "-m", "psvit.search", *TINY, *SEARCH]
    run = subprocess.run(args, cwd=folder, env=env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    checkpoint = Path(re.search(r"^pruned checkpoint: (.+)$", run.stdout, re.MULTILINE)[1])
    return Searched(folder, run.stdout, run.stderr, checkpoint, f"sqlite:///{folder / 'mlflow.db'}", env)


@pytest.fixture
def mlflow_at(searched: Searched) -> Iterator:
    """``mlflow``, pointed at the search's store for this test only."""
    import mlflow

    old = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(searched.tracking_uri)
    yield mlflow
    mlflow.set_tracking_uri(old)


def digit_images(count: int) -> torch.Tensor:
    test = build_splits("digits", img_size=16).test
    return torch.stack([test[i][0] for i in range(count)])


def test_search_exports_logs_and_registers_the_chosen_model(searched: Searched, mlflow_at) -> None:
    out = searched.out
    onnx = searched.checkpoint.with_suffix(".onnx")
    assert f"onnx: {onnx}\n" in out and onnx.is_file()
    parity = re.search(
        r"^parity \(onnxruntime CPUExecutionProvider, (\d+) images\): vs torch graph \(BN folded\) logits within "
        r"0\.0001 on (\S+)%, max \|dlogit\| \S+, top-1 (\S+)%; vs psvit model max \|dlogit\| \S+, top-1 (\S+)%$",
        out,
        re.MULTILINE,
    )
    assert parity and int(parity[1]) > 100 and float(parity[2]) >= 99.0 and float(parity[3]) >= 99.0
    assert float(parity[4]) >= 99.0
    assert re.search(r"^  onnxruntime +batch 1: [\d.]+, batch 64: [\d.]+$", out, re.MULTILINE)
    assert f"registered: models:/{NAME}/1  (mlflow models serve -m models:/{NAME}/1 --env-manager local)" in out
    run_id = re.search(r"\(pyfunc, logged to run (\w+)\)", out)[1]
    client = mlflow_at.MlflowClient()
    run = client.get_run(run_id)
    assert run.data.tags["psvit.export"] == "ok" and run.data.metrics["parity_top1_graph"] >= 0.99
    assert {"latency_onnxruntime_b1_ms", "latency_torch_eager_b64_ms"} <= set(run.data.metrics)
    assert {a.path for a in client.list_artifacts(run_id, "final_model")} == {
        "final_model/pruned.pt",
        "final_model/pruned.onnx",
    }
    model_id = re.search(r"^MLflow Model: models:/(\S+) ", out, re.MULTILINE)[1]
    logged = mlflow_at.get_logged_model(model_id)
    assert logged.source_run_id == run_id and logged.name == "model"
    assert "Warning" not in searched.err, searched.err[-2000:]  # e.g. MLflow's on a predict without type hints


def test_registered_version_has_the_searchs_tags(searched: Searched, mlflow_at) -> None:
    version = mlflow_at.MlflowClient().get_model_version(NAME, "1")
    tags = version.tags
    assert set(tags) == {"budget", "saving", "val_acc", "test_acc", "study", "trial"}
    chosen = re.search(r"^chosen: trial (\d+) \(val acc ([\d.]+), saving ([\d.]+)\)", searched.out, re.MULTILINE)
    assert tags["budget"] == "0.3" and tags["trial"] == chosen[1]
    assert abs(float(tags["val_acc"]) - float(chosen[2])) < 1e-4 and float(tags["saving"]) >= 0.3
    assert re.search(rf"^study '{re.escape(tags['study'])}': ran 3 trials here", searched.out, re.MULTILINE)
    assert float(tags["test_acc"]) == pytest.approx(
        psvit.checkpoint.read(searched.checkpoint)["meta"]["test_acc"], abs=1e-6
    )


def test_pyfunc_loads_without_pickle_and_predicts_as_psvit(
    searched: Searched, mlflow_at, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "false")  # a cloudpickled model would not load
    model = mlflow_at.pyfunc.load_model(f"models:/{NAME}/1")
    images = digit_images(50)
    logits = model.predict(images.numpy())
    want = predict(psvit.load(searched.checkpoint), images).numpy()
    assert np.array_equal(logits, want)
    assert model.metadata.get_input_schema().inputs[0].shape == (-1, 1, 16, 16)
    assert model.metadata.get_output_schema().inputs[0].shape == (-1, 10)
    local = Path(mlflow_at.artifacts.download_artifacts(f"models:/{NAME}/1", dst_path=str(tmp_path)))
    assert {"MLmodel", "model_code.py", "serving_input_example.json"} <= {p.name for p in local.iterdir()}
    assert {p.name for p in (local / "artifacts").iterdir()} == {"pruned.pt", "pruned.onnx"}
    assert not list(local.rglob("*.pkl"))
    assert "psvit==" in (local / "requirements.txt").read_text()


def test_export_cli_on_the_searchs_checkpoint(searched: Searched, tmp_path: Path) -> None:
    out_file = tmp_path / "chosen.onnx"
    args = [
        sys.executable,
        "-m",
        "psvit.export",
        f"checkpoint={searched.checkpoint}",
        "format=onnx",
        f"out={out_file}",
        "parity.images=128",
        "latency.repeats=5",
    ]
    run = subprocess.run(args, cwd=tmp_path, env=searched.env, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    assert lines[0] == f"onnx: {out_file}" and out_file.is_file()
    assert lines[1].startswith("exporter: torch.onnx dynamo exporter")
    assert re.match(
        r"parity \(onnxruntime CPUExecutionProvider, 128 images\): .* top-1 100\.00%; .* top-1 \S+%$", lines[2]
    )
    latency = {
        m[1]: (float(m[2]), float(m[3]))
        for m in re.finditer(
            r"^  (torch eager|onnxruntime) +batch 1: ([\d.]+), batch 64: ([\d.]+)$", run.stdout, re.MULTILINE
        )
    }
    assert set(latency) == {"torch eager", "onnxruntime"}
    assert latency["onnxruntime"][0] <= latency["torch eager"][0]  # the goal: batch 1 at least as fast as eager


def test_a_parity_failure_is_reported_and_logged_and_the_search_succeeds(searched: Searched, tmp_path: Path) -> None:
    """An impossible tolerance (top-1 agreement above 100%) makes the chosen model's parity check fail: the search
    prints and logs it, still logs the MLflow Model, and ends with exit code 0 and its parent run FINISHED."""
    import mlflow

    args = [
        sys.executable,
        "-m",
        "psvit.search",
        *TINY,
        "+budget=0.3",
        "search.n_trials=2",
        "search.n_startup_trials=1",
        "search.latency_repeats=1",
        "search.export=true",
        "++search.parity.min_top1_model=1.01",
    ]
    run = subprocess.run(args, cwd=tmp_path, env=searched.env, capture_output=True, text=True, timeout=900)
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"  # the cache is warm: the searched fixture's base
    failed = re.search(r"^parity FAILED: (top-1 agreement [\d.]+% < 101% vs the psvit model)$", run.stdout, re.M)
    assert failed, run.stdout
    failure = failed[1]
    checkpoint = Path(re.search(r"^pruned checkpoint: (.+)$", run.stdout, re.MULTILINE)[1])
    assert checkpoint.with_suffix(".onnx").is_file()  # the file stays, for inspection
    run_id = re.search(r"^MLflow Model: models:/\S+ \(pyfunc, logged to run (\w+)\)$", run.stdout, re.MULTILINE)[1]
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'mlflow.db'}")
    parent = client.get_run(run_id)
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["psvit.export"] == f"parity failed: {failure}"
    assert parent.data.metrics["parity_top1_model"] >= 0.99 and parent.data.metrics["parity_match_graph"] >= 0.99
    assert {a.path for a in client.list_artifacts(run_id, "final_model")} == {
        "final_model/pruned.pt",
        "final_model/pruned.onnx",
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def post(url: str, body: bytes, timeout: float = 60) -> tuple[int, str]:
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@contextlib.contextmanager
def serving(searched: Searched, log: Path, startup: float = 240) -> Iterator[str]:
    """``mlflow models serve -m models:/<NAME>/1 --env-manager local`` on a free local port; its base URL.
    The server's whole process group is stopped at the end."""
    port = free_port()
    env = {**searched.env, "MLFLOW_TRACKING_URI": searched.tracking_uri, "MLFLOW_ALLOW_PICKLE_DESERIALIZATION": "false"}
    args = [
        sys.executable,
        "-m",
        "mlflow",
        "models",
        "serve",
        "-m",
        f"models:/{NAME}/1",
        "--env-manager",
        "local",
        "-h",
        "127.0.0.1",
        "-p",
        str(port),
        "-w",
        "1",
    ]
    with open(log, "w") as sink:
        proc = subprocess.Popen(
            args, cwd=searched.folder, env=env, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + startup
        while True:
            assert proc.poll() is None, f"the server exited ({proc.returncode}):\n{log.read_text()}"
            assert time.monotonic() < deadline, f"no answer on {url}/ping in {startup} s:\n{log.read_text()}"
            with contextlib.suppress(OSError), urllib.request.urlopen(f"{url}/ping", timeout=5) as response:
                if response.status == 200:
                    break
            time.sleep(1)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)


def test_mlflow_models_serve_answers_good_and_bad_requests(searched: Searched, tmp_path: Path) -> None:
    images = digit_images(20)
    want = predict(psvit.load(searched.checkpoint), images).numpy()
    with serving(searched, tmp_path / "serve.log") as url:
        status, body = post(f"{url}/invocations", json.dumps({"inputs": images.tolist()}).encode())
        assert status == 200, body
        logits = np.array(json.loads(body)["predictions"], dtype=np.float32)
        assert np.array_equal(logits.argmax(1), want.argmax(1)) and np.abs(logits - want).max() <= 1e-5
        bad = {
            "wrong shape": json.dumps({"inputs": images[:, :, :8, :8].tolist()}),
            "wrong dtype": json.dumps({"inputs": [[[["pixel"] * 16] * 16]]}),
            "NaN": json.dumps({"inputs": torch.full((1, 1, 16, 16), float("nan")).tolist()}),
            "empty batch": json.dumps({"inputs": []}),
        }
        for what, request in bad.items():
            status, body = post(f"{url}/invocations", request.encode())
            assert 400 <= status < 500, (what, status, body)
            assert json.loads(body)["message"], (what, body)
        status, body = post(f"{url}/invocations", json.dumps({"inputs": images[:1].tolist()}).encode())
        assert status == 200 and np.array(json.loads(body)["predictions"]).shape == (1, 10)  # still serving


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["search.export=false", f"search.register_model={NAME}"],
            "search.register_model needs search.finalize=true and search.export=true",
        ),
        (["search.register_model=''"], "search.register_model must be null or a model name"),
    ],
)
def test_register_model_needs_an_export(overrides: list[str], message: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "psvit.search", "+budget=0.3", *overrides],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 2 and run.stderr.startswith(f"error: {message}"), run.stderr
    assert not list(tmp_path.iterdir())  # nothing written
