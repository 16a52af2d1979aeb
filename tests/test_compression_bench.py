"""``bench/compression.py --quick``: every method runs through the real pipeline and the report is written."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_compression_benchmark_quick_path(cache_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "bc"
    args = [
        sys.executable,
        str(ROOT / "bench" / "compression.py"),
        "--quick",
        "--trials",
        "2",  # the first two prior trials of each search: every method still runs through the whole pipeline
        "--cache-dir",
        str(cache_dir),
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT / "bench")}
    result = subprocess.run(args, cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)
    assert result.returncode == 0, result.stderr[-3000:]
    (run_json,) = out.glob("run-*.json")
    blob = json.loads(run_json.read_text())
    assert blob["command"].startswith("python bench/compression.py --quick") and len(blob["git_commit"]) == 40
    runs = {r["method"]: r for r in blob["runs"]}
    assert set(runs) == {"uniform8", "uniform4", "uniform3", "uniform2", "greedy_bits", "pruning", "joint"}
    for method in ("greedy_bits", "pruning", "joint"):
        assert runs[method]["saving"] >= 0.9, method  # every budgeted method meets the budget
    assert (
        runs["uniform8"]["saving"]
        < runs["uniform4"]["saving"]
        == runs["uniform3"]["saving"]
        < runs["uniform2"]["saving"]
    )
    assert set(runs["uniform2"]["bits"].values()) == {2} and not runs["pruning"]["bits"]
    assert min(runs["joint"]["bits"].values()) < 32
    for r in blob["runs"]:  # the recovery keeps its best validation epoch: never below where it started
        assert r["val_after"] >= r["val_before"]
        assert r["file_bytes"] > 0 and 0 <= r["test_before"] <= 1
    quantized, pruned = runs["uniform2"]["file_bytes"], runs["pruning"]["file_bytes"]
    assert quantized < pruned  # the saving is in the file, not only in the accounting
    table = (out / "compression.md").read_text()
    assert "| digits | 0 | joint | 0.9 |" in table and "hypervolume" in table
    assert (out / "compression.png").stat().st_size > 10_000
