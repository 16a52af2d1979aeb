"""``bench/gpu.py --tiny`` (what CI runs on a CPU): every part runs and the JSON holds every cell it promises."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_bench_tiny_setting_writes_its_json(tmp_path: Path) -> None:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(
        [sys.executable, "bench/gpu.py", "--tiny", "--out", str(tmp_path)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
        timeout=900,
    )
    (path,) = tmp_path.glob("gpu-*.json")
    blob = json.loads(path.read_text())
    assert (tmp_path / path.name.replace(".json", ".md")).is_file()
    assert blob["command"] == f"python bench/gpu.py --tiny --out {tmp_path}" and blob["setting"] == "tiny"
    assert len(blob["git_commit"]) == 40 and int(blob["git_commit"], 16) >= 0
    cells = {(r["keep"], r["precision"], r["mode"], r["batch"]) for r in blob["throughput"]}
    assert cells == {
        (k, p, m, b)
        for k in (1.0, 0.75, 0.5)
        for p in ("fp32", "bf16")
        for m in ("eager", "compiled")
        for b in blob["batches"]
    }
    for row in blob["throughput"]:
        assert row.get("images_per_s", 0) > 0 or row.get("skipped") == "time budget"
        if "agreement" in row:
            assert 0.0 <= row["agreement"] <= 1.0 and row["batch"] == max(blob["batches"])
    assert any(
        r["mode"] == "eager" and r["precision"] == "fp32" and r["agreement"] == 1.0
        for r in blob["throughput"]
        if "agreement" in r
    )  # the reference agrees with itself
    split = blob["trial"]["split"]
    assert {"prune", "recalibrate", "evaluate", "cost", "rest", "trial"} <= set(split) and split["trial"] > 0
    for run in ("cold", "warm"):
        assert blob["main"][run]["wall_seconds"] > 0 and blob["main"][run]["estimate_seconds"] > 0
