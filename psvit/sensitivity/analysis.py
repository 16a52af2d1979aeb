"""Layer-wise sensitivity analysis (PSViT step 2): prune one group at a time over a grid of keep ratios.

For every (group, keep ratio) pair, every other group intact, it records validation accuracy (raw, and after
BatchNorm recalibration when enabled), the accuracy drop against the base model, and the exact memory saving.
Only validation data is used: the test split stays untouched for reporting.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import asdict, dataclass

import torch
from torch import nn
from tqdm.auto import tqdm

from psvit.budget import MemoryModel
from psvit.data import DataSplits
from psvit.prune import Group, PruneConstraints, list_groups, prune, recalibrate_bn
from psvit.quant import layers_for, quantize_weights
from psvit.sensitivity.table import SensitivityTable
from psvit.train.compute import Compute
from psvit.train.loop import batches, evaluate


@dataclass(frozen=True)
class SensitivitySettings:
    """What the analysis sweeps: keep ratios, channel importance, and BN recalibration batches (0 = off)."""

    grid: tuple[float, ...]
    importance: str = "l1"
    recalibration_batches: int = 8
    batch_size: int = 64
    seed: int = 0
    val_fraction: float = 1.0  #: the stratified part of the validation split each cell is scored on
    bits: tuple[int, ...] = ()  #: the bits grid: weight bit-widths (below 32) each group is quantized at alone

    def key(self) -> dict:
        """What the cache key holds: every setting (an empty bits grid left out, as before it existed)."""
        fields = asdict(self)
        if not self.bits:
            fields.pop("bits")
        return fields


def recalibrated(
    model: nn.Module, splits: DataSplits, settings: SensitivitySettings, compute: Compute | None = None
) -> nn.Module:
    """``model`` with BatchNorm statistics re-estimated on ``settings.recalibration_batches`` shuffled training
    batches (loaded with ``compute``'s settings)."""
    loader = batches(splits.train, settings.batch_size, shuffle=True, seed=settings.seed, compute=compute)
    return recalibrate_bn(model, loader, settings.recalibration_batches)


def importance_batches(
    splits: DataSplits, settings: SensitivitySettings, compute: Compute | None = None
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """A few training batches for data-driven importances (Taylor, spike activity)."""
    loader = batches(splits.train, settings.batch_size, shuffle=True, seed=settings.seed, compute=compute)
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
    compute: Compute | None = None,
    progress: bool = True,
) -> SensitivityTable:
    """Prune each group alone at each keep ratio of ``settings.grid``, BatchNorm-recalibrate (if enabled) and
    evaluate once on the validation split (or its stratified ``settings.val_fraction``), on ``compute``."""
    data = importance_batches(splits, settings, compute)
    val = splits.val_subset(settings.val_fraction, settings.seed)
    if val is not splits.val:  # drops are measured against the base model on the same images
        base_val_acc = evaluate(model, val, compute)
    rows, bits_rows = [], []
    cells = [*itertools.product(groups, settings.grid, [None]), *itertools.product(groups, [1.0], settings.bits)]
    all_groups = list_groups(model)
    for group, ratio, bits in tqdm(cells, desc="sensitivity", unit="eval", disable=not progress or None):
        ratios = {group.name: ratio}
        pruned = prune(model, ratios, settings.importance, constraints, data).eval()
        if bits is not None:
            quantize_weights(pruned, layers_for(all_groups, {group.name: bits}))
        if settings.recalibration_batches:
            recalibrated(pruned, splits, settings, compute)
        acc = evaluate(pruned, val, compute)
        row = {"group": group.name, "kind": group.kind}
        if bits is None:
            row.update(ratio=float(ratio), width=group.width, kept=_width(memory.config(ratios), group))
        else:
            row["bits"] = int(bits)
        row.update(
            val_acc=acc,
            acc_drop=base_val_acc - acc,
            memory_saving=memory.saving(ratios, None if bits is None else {group.name: bits}),
        )
        (rows if bits is None else bits_rows).append(row)
    return SensitivityTable(rows=rows, base_val_acc=base_val_acc, bits_rows=bits_rows)


def _width(config: dict, group: Group) -> int:
    value = config[group.config_key]
    return int(value if group.index is None else value[group.index])
