"""One search worker per GPU: ``sweeps/workers_gpus_local.yaml`` (joblib, job k on ``cuda:k``) and
``sweeps/workers_gpus_slurm.yaml`` (submitit, one GPU per SLURM job), composed by Hydra through the real CLI; the
joblib one also runs on a CPU with the device overridden."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

SWEEPS = Path(__file__).resolve().parents[1] / "sweeps"


@pytest.mark.parametrize(
    ("sweep", "expected"),
    [
        ("workers_gpus_local", ["JoblibLauncher", "n_jobs: 2", "+worker: 0,1"]),
        ("workers_gpus_slurm", ["SlurmLauncher", "gpus_per_task: 1", "+worker: range(4)"]),
    ],
)
def test_gpu_sweeps_compose(run_cli, sweep: str, expected: list[str]) -> None:
    flags = ("--config-dir", str(SWEEPS), "--config-name", sweep)
    hydra = run_cli("search", flags=(*flags, "--cfg", "hydra"), tiny=False).stdout
    for text in expected:
        assert text in hydra
    job = run_cli("search", flags=(*flags, "--cfg", "job"), tiny=False).stdout
    assert ("device: cuda:${hydra:job.num}" if sweep.endswith("local") else "device: cuda") in job.splitlines()


@pytest.mark.skipif(torch.cuda.is_available(), reason="the refusal needs a machine without CUDA")
def test_each_local_worker_gets_the_gpu_of_its_job_number(run_cli, tmp_path: Path) -> None:
    """The sweep's pre-check resolves every job's device as its launcher will: job 0 asks for cuda:0."""
    result = run_cli(
        "search", "+budget=0.3", flags=("--config-dir", str(SWEEPS), "--config-name", "workers_gpus_local"), check=False
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: sweep job 0 (+worker=0): device=cuda:0 but this machine has no CUDA GPU that torch can use; "
        "use device=auto"
    ]


def test_local_gpu_sweep_runs_its_workers_on_cpu(run_cli, tmp_path: Path) -> None:
    """With ``device=cpu`` the same file launches its two workers (dry runs: each prints its estimate)."""
    out = run_cli(
        "search",
        "+budget=0.3",
        "device=cpu",
        "search.dry_run=true",
        flags=("--config-dir", str(SWEEPS), "--config-name", "workers_gpus_local"),
        env={"OMP_NUM_THREADS": "1"},
    ).stdout
    assert out.count("estimate: ~") == 2 and out.count("on cpu") == 2
    assert (tmp_path / "optuna.db").is_file()  # made once, before the workers, by the sweep's callback
