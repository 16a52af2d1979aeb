"""psvit works as a real, non-editable install: its Hydra configs ship inside the wheel (pkg://psvit.conf)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_wheel_install_composes_configs(tmp_path: Path) -> None:
    wheel_dir, target, workdir = tmp_path / "wheel", tmp_path / "site", tmp_path / "work"
    workdir.mkdir()
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run([*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", str(wheel_dir), str(REPO)], check=True)
    (wheel,) = wheel_dir.glob("psvit-*.whl")
    subprocess.run([*pip, "install", "--no-deps", "--target", str(target), str(wheel)], check=True)

    in_repo = {p.parent.relative_to(REPO) for p in (REPO / "psvit").rglob("__init__.py")}
    in_wheel = {p.parent.relative_to(target) for p in (target / "psvit").rglob("__init__.py")}
    assert in_repo | {Path("psvit/conf")} == in_wheel  # every subpackage ships, and the configs with them
    assert (target / "psvit/conf/model/spikformer_tiny.yaml").is_file()

    env = {**os.environ, "PYTHONPATH": str(target)}
    where = subprocess.run(
        [sys.executable, "-c", "import psvit, psvit.conf; print(psvit.__file__)"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip().startswith(str(target)), where.stdout  # the wheel's copy, not the checkout

    job = subprocess.run(
        [sys.executable, "-m", "psvit.train", "--cfg", "job", "data=mnist_idx", "model=spikformer_imagenet"],
        cwd=workdir,
        env=env,
        capture_output=True,
        text=True,
    )
    assert job.returncode == 0, job.stderr
    assert "name: mnist_idx" in job.stdout and "embed_dim: 512" in job.stdout
