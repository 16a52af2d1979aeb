"""``python -m psvit.train`` for real: trains the tiny base, caches it, and reports clear errors."""

from __future__ import annotations

from pathlib import Path

import torch

import psvit
from psvit.data import build_splits
from psvit.train import Compute, evaluate, seed_everything, train_model


def test_train_cli_trains_then_reuses_the_cached_base(run_cli) -> None:
    first = run_cli("train").stdout
    assert "test accuracy:" in first and "params" in first and "energy" in first
    second = run_cli("train").stdout
    assert "reused cached" in second
    path = Path(second.split("reused cached ")[1].split()[0])
    acc = float(second.split("test accuracy: ")[1].split()[0])
    assert acc > 0.5  # eight epochs of a tiny model beat chance (0.1) by far
    assert abs(evaluate(psvit.load(path), build_splits("digits", img_size=16).test) - acc) < 1e-4


def test_bad_data_path_is_a_one_line_error(run_cli, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-dir"
    result = run_cli("train", "data=mnist_idx", f"data.root={missing}", check=False)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and str(missing) in lines[0]


def test_training_is_deterministic_under_a_seed() -> None:
    """Bit-identical weights on the CPU (a GPU's cuDNN kernels may sum in a different order from run to run)."""
    splits = build_splits("digits", img_size=16)
    subset = torch.utils.data.Subset(splits.train, range(128))
    weights = []
    for _ in range(2):
        seed_everything(3)
        model = psvit.create_model(
            "spikformer",
            variant="cifar",
            img_size=16,
            embed_dim=16,
            num_heads=2,
            depth=1,
            T=2,
            in_channels=1,
            num_classes=10,
        )
        train_model(
            model, subset, epochs=1, batch_size=32, seed=3, progress=False, compute=Compute(torch.device("cpu"))
        )
        weights.append(torch.cat([p.detach().flatten() for p in model.parameters()]))
    assert torch.equal(weights[0], weights[1])
