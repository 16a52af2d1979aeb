"""Layer-wise sensitivity analysis, cached by base checkpoint + data split + grid + importance + constraints
(computed once when several processes ask at once: :func:`psvit.cache.load_or_make`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from psvit.allocation.budget import MemoryModel
from psvit.cache import atomic_path, load_or_make
from psvit.prune import Group, PruneConstraints
from psvit.sensitivity.analysis import SensitivitySettings, recalibrated, run_sensitivity
from psvit.sensitivity.table import SensitivityTable
from psvit.train.base import BaseModel, config_hash

__all__ = ["SensitivitySettings", "SensitivityTable", "get_sensitivity", "recalibrated", "run_sensitivity"]


def get_sensitivity(
    base: BaseModel,
    groups: Sequence[Group],
    memory: MemoryModel,
    constraints: PruneConstraints,
    settings: SensitivitySettings,
    *,
    data_cfg: dict,
    cache_dir: str | Path,
    progress: bool = True,
) -> tuple[SensitivityTable, bool]:
    """The cached sensitivity table for these inputs, or a fresh analysis (then cached); and whether cached."""
    key = config_hash(base.path.name, data_cfg, [g.name for g in groups], asdict(constraints), asdict(settings))
    path = Path(cache_dir).expanduser() / f"sensitivity-{key}.json"

    def make() -> SensitivityTable:
        table = run_sensitivity(base.model, base.splits, groups, memory, constraints, settings,
                                base_val_acc=base.val_acc, progress=progress)
        table.meta = {"key": key, "base": base.path.name, "settings": asdict(settings)}
        with atomic_path(path) as tmp:
            table.to_json(tmp)
        return table

    return load_or_make(path, SensitivityTable.from_json, make, "sensitivity table")
