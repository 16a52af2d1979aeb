"""Layer-wise sensitivity analysis (PSViT step 2): prune one group at a time over a grid of keep ratios.

For every (group, keep ratio) pair, every other group intact, it records validation accuracy (raw, and after
BatchNorm recalibration when enabled), the accuracy drop against the base model, and the exact memory saving.
Only validation data is used: the test split stays untouched for reporting.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from psvit.allocation.budget import MemoryModel
from psvit.data import DataSplits
from psvit.prune import Group, PruneConstraints, prune, recalibrate_bn
from psvit.sensitivity.table import SensitivityTable
from psvit.train.loop import batches, evaluate


@dataclass(frozen=True)
class SensitivitySettings:
    """What the analysis sweeps: keep ratios, channel importance, and BN recalibration batches (0 = off)."""

    grid: tuple[float, ...]
    importance: str = "l1"
    recalibration_batches: int = 8
    batch_size: int = 64
    seed: int = 0


def recalibrated(model: nn.Module, splits: DataSplits, num_batches: int, batch_size: int, seed: int) -> nn.Module:
    """``model`` with BatchNorm statistics re-estimated on ``num_batches`` shuffled training batches."""
    return recalibrate_bn(model, batches(splits.train, batch_size, shuffle=True, seed=seed), num_batches)


def importance_batches(splits: DataSplits, settings: SensitivitySettings) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches for data-driven importances (Taylor, spike activity)."""
    loader = batches(splits.train, settings.batch_size, shuffle=True, seed=settings.seed)
    return list(itertools.islice(loader, 4))


def run_sensitivity(
    model: nn.Module,
    splits: DataSplits,
    groups: Sequence[Group],
    memory: MemoryModel,
    constraints: PruneConstraints,
    settings: SensitivitySettings,
    *,
    base_val_acc: float,
    progress: bool = True,
) -> SensitivityTable:
    """Prune each group alone at each keep ratio of ``settings.grid``; evaluate on the validation split."""
    data = importance_batches(splits, settings)
    rows = []
    grid = list(itertools.product(groups, settings.grid))
    for group, ratio in tqdm(grid, desc="sensitivity", unit="eval", disable=not progress or None):
        ratios = {group.name: ratio}
        pruned = prune(model, ratios, settings.importance, constraints, data).eval()
        raw = evaluate(pruned, splits.val)
        acc = raw
        if settings.recalibration_batches:
            recalibrated(pruned, splits, settings.recalibration_batches, settings.batch_size, settings.seed)
            acc = evaluate(pruned, splits.val)
        config = memory.config(ratios)
        rows.append({
            "group": group.name,
            "kind": group.kind,
            "ratio": float(ratio),
            "width": group.width,
            "kept": _width(config, group),
            "val_acc_raw": raw,
            "val_acc": acc,
            "acc_drop": base_val_acc - acc,
            "memory_saving": memory.saving(ratios),
        })
    return SensitivityTable(rows=rows, base_val_acc=base_val_acc)


def _width(config: dict, group: Group) -> int:
    value = config[group.config_key]
    return int(value if group.index is None else value[group.index])
