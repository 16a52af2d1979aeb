"""Data-parallel fine-tuning: ``torchrun --nproc_per_node=2 -m psvit.finetune`` (gloo, CPU) with batch B gives the
same model as one process with ``finetune.accumulate=2`` and batch B; gradient accumulation counts optimizer
steps; a missing checkpoint is one line."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import TINY
from torch import nn
from torch.utils.data import DataLoader, RandomSampler

from psvit.data import build_splits
from psvit.train.compute import Compute
from psvit.train.distributed import StepBatches
from psvit.train.loop import train_model

BATCH = 32
CPU = Compute(torch.device("cpu"), num_workers=0)


def run(args: list[str], cwd: Path, cache_dir: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PSVIT_CACHE_DIR": str(cache_dir), "HYDRA_FULL_ERROR": "0"}
    return subprocess.run(args, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


def finetune(cwd: Path, cache_dir: Path, *overrides: str, processes: int = 1) -> subprocess.CompletedProcess:
    launcher = (
        [shutil.which("torchrun") or "torchrun", "--standalone", f"--nproc_per_node={processes}"]
        if processes > 1
        else [sys.executable]
    )
    cwd.mkdir(parents=True, exist_ok=True)
    done = run([*launcher, "-m", "psvit.finetune", *overrides], cwd, cache_dir)
    assert done.returncode == 0, f"{done.args} failed ({done.returncode}):\n{done.stdout}\n{done.stderr}"
    return done


@pytest.fixture(scope="module")
def pruned(tmp_path_factory: pytest.TempPathFactory, cache_dir: Path) -> tuple[Path, Path]:
    """A tiny base model (digits) pruned uniformly to keep 0.5, not fine-tuned, and its base: (pruned.pt, base.pt)."""
    folder = tmp_path_factory.mktemp("prune")
    done = run(
        [
            sys.executable,
            "-m",
            "psvit.prune",
            "strategy=uniform",
            "+ratio=0.5",
            *TINY,
            "finetune.epochs=0",
            "hydra.run.dir=out",
        ],
        folder,
        cache_dir,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    path = folder / "out" / "pruned.pt"
    base = cache_dir / torch.load(path, weights_only=True)["meta"]["base"]
    assert base.is_file()
    return path, base


def weights(path: Path) -> dict[str, torch.Tensor]:
    return torch.load(path, weights_only=True)["state_dict"]


def test_two_gloo_processes_match_one_process_accumulating_two(
    pruned: tuple[Path, Path], tmp_path: Path, cache_dir: Path
) -> None:
    checkpoint, base = pruned
    common = [
        f"checkpoint={checkpoint}",
        f"teacher={base}",
        "finetune.epochs=1",
        f"finetune.batch_size={BATCH}",
        "device=cpu",
        "progress=false",
    ]  # gloo on the CPU, also on a machine with a GPU
    two = finetune(tmp_path / "two", cache_dir, *common, processes=2)  # Hydra picks the output folder
    one = finetune(tmp_path / "one", cache_dir, *common, "finetune.accumulate=2", "hydra.run.dir=out")
    assert f"global batch: {2 * BATCH} (2 process(es) x accumulate 1 x batch {BATCH})" in two.stdout
    assert f"global batch: {2 * BATCH} (1 process(es) x accumulate 2 x batch {BATCH})" in one.stdout
    assert two.stdout.count("finetuned checkpoint:") == 1  # rank 0 alone prints ...
    written = sorted((tmp_path / "two").rglob("finetuned.pt"))
    assert len(written) == 1  # ... and writes, and rank 1 leaves no output folder of its own
    assert [p.parent for p in (tmp_path / "two" / "outputs").glob("*/*/.hydra")] == [written[0].parent]

    got, expected, start = weights(written[0]), weights(tmp_path / "one" / "out" / "finetuned.pt"), weights(checkpoint)
    assert got.keys() == expected.keys() == start.keys()
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)
    moved = [k for k in start if k.endswith("weight") and not torch.allclose(expected[k], start[k])]
    assert len(moved) > len(start) // 4  # fine-tuned: the best epoch was epoch 1, not the starting weights
    meta_two, meta_one = (
        torch.load(p, weights_only=True)["meta"] for p in (written[0], tmp_path / "one" / "out" / "finetuned.pt")
    )
    assert [h["epoch"] for h in meta_one["history"]] == [0, 1]
    for a, b in zip(meta_two["history"], meta_one["history"], strict=True):  # losses and accuracies of all ranks
        assert a == pytest.approx(b, abs=1e-6)
    assert meta_two["data"] == meta_one["data"] == torch.load(checkpoint, weights_only=True)["meta"]["data"]


def test_step_batches_shard_each_global_batch() -> None:
    """One process, accumulate 1: a plain shuffled DataLoader's batches. Two ranks x accumulate 2: contiguous
    quarters of the same global batches, the short last one split evenly."""
    data = list(range(70))

    def shuffled(**sampling) -> list[list[int]]:  # as train_model loads them: the loader shares the generator
        generator = torch.Generator().manual_seed(3)
        if "batch_size" in sampling:
            return [b.tolist() for b in DataLoader(data, shuffle=True, generator=generator, **sampling)]
        plan = StepBatches(RandomSampler(data, generator=generator), len(data), 8, **sampling)
        return [b.tolist() for b in DataLoader(data, batch_sampler=plan, generator=generator)]

    assert shuffled() == shuffled(batch_size=8)
    (order,) = shuffled(batch_size=70)  # the epoch's permutation, as one batch
    ranks = [shuffled(accumulate=2, world=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == 2 * 3  # 70 = 2 x 32 + 6: three steps, the last 2 + 2 + 1 + 1 images
    for step in range(3):
        parts = ranks[0][2 * step : 2 * step + 2] + ranks[1][2 * step : 2 * step + 2]
        assert [i for part in parts for i in part] == order[32 * step : 32 * (step + 1)]
    assert [len(p) for p in ranks[0][4:] + ranks[1][4:]] == [2, 2, 1, 1]


@pytest.mark.parametrize("batchnorm", [False, True], ids=["no-BN", "BN"])
def test_accumulation_equals_a_batch_as_large_but_for_batchnorm(batchnorm: bool) -> None:
    """accumulate=2 x batch B takes the steps of batch 2B (the cosine schedule counts optimizer steps): the same
    weights without BatchNorm; with it, each micro-batch is normalised on its own, so they differ."""
    train = build_splits("digits", img_size=8).train
    results = []
    for accumulate, batch in ((2, 16), (1, 32)):
        torch.manual_seed(0)
        model = nn.Sequential(
            nn.Flatten(), nn.Linear(64, 32), *([nn.BatchNorm1d(32)] if batchnorm else []), nn.ReLU(), nn.Linear(32, 10)
        )
        history = train_model(
            model, train, epochs=2, batch_size=batch, accumulate=accumulate, lr=0.01, compute=CPU, progress=False
        )
        results.append((model.state_dict(), history))
    (a, history_a), (b, history_b) = results
    losses_a, losses_b = ([h["loss"] for h in history] for history in (history_a, history_b))
    assert len(losses_a) == len(losses_b) == 2
    same = all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-5) for k in a)
    assert same == (losses_a == pytest.approx(losses_b, rel=1e-5)) == (not batchnorm)


def test_finetune_without_checkpoint_is_one_line(tmp_path: Path, cache_dir: Path) -> None:
    done = run([sys.executable, "-m", "psvit.finetune", "finetune.epochs=1"], tmp_path, cache_dir)
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [
        "error: name the model: checkpoint=<path to a psvit checkpoint, e.g. pruned.pt>"
    ]
    assert not list(tmp_path.iterdir())  # nothing left behind
