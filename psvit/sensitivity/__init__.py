"""Layer-wise sensitivity analysis, cached by base checkpoint + data split + grid + importance + constraints
(computed once when several processes ask at once: :func:`psvit.cache.load_or_make`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from psvit.budget import MemoryModel
from psvit.cache import atomic_path, load_or_make
from psvit.prune import Group, PruneConstraints
from psvit.sensitivity.analysis import SensitivitySettings, recalibrated, run_sensitivity
from psvit.sensitivity.table import SensitivityTable
from psvit.train.base import BaseModel, config_hash, file_hash
from psvit.train.compute import Compute

__all__ = [
    "SensitivitySettings",
    "SensitivityTable",
    "get_sensitivity",
    "recalibrated",
    "run_sensitivity",
    "sensitivity_cache_path",
]


def sensitivity_cache_path(
    base_path: Path,
    groups: Sequence[Group],
    constraints: PruneConstraints,
    settings: SensitivitySettings,
    *,
    data_cfg: dict,
    cache_dir: str | Path,
) -> Path:
    """Where the table of these inputs is cached: keyed by the base checkpoint (whose name holds the split policy,
    :func:`psvit.train.base.base_cache_path`), data, groups and settings."""
    key = config_hash(base_path.name, data_cfg, [g.name for g in groups], asdict(constraints), settings.key())
    return Path(cache_dir).expanduser() / f"sensitivity-{key}.json"


def get_sensitivity(
    base: BaseModel,
    groups: Sequence[Group],
    memory: MemoryModel,
    constraints: PruneConstraints,
    settings: SensitivitySettings,
    *,
    data_cfg: dict,
    cache_dir: str | Path,
    compute: Compute | None = None,
    progress: bool = True,
) -> tuple[SensitivityTable, bool]:
    """The cached sensitivity table for these inputs, or a fresh analysis (then cached); and whether cached."""
    path = sensitivity_cache_path(base.path, groups, constraints, settings, data_cfg=data_cfg, cache_dir=cache_dir)

    def make() -> SensitivityTable:
        table = run_sensitivity(
            base.model,
            base.splits,
            groups,
            memory,
            constraints,
            settings,
            base_val_acc=base.val_acc,
            compute=compute,
            progress=progress,
        )
        table.meta = {
            "key": path.stem.removeprefix("sensitivity-"),
            "base": base.path.name,
            "settings": settings.key(),
            "split": base.splits.policy,
            "split_listing": {"file": base.splits_file.name, "sha256": file_hash(base.splits_file)},
        }
        with atomic_path(path) as tmp:
            table.to_json(tmp)
        return table

    return load_or_make(path, SensitivityTable.from_json, make, "sensitivity table")
