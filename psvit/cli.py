"""Helpers shared by the Hydra entry points (``python -m psvit.<entry>``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf

from psvit.errors import ConfigError


def config_sections(cfg: DictConfig, *names: str) -> list[dict[str, Any]]:
    """Resolve the named config groups to plain dicts (interpolations resolved)."""
    return [OmegaConf.to_container(cfg[name], resolve=True) for name in names]


def check_pruning_plan(cfg: DictConfig, budget: float | None = None, min_bits: int = 32) -> None:
    """Before any training: ``sensitivity.grid`` holds keep ratios, a pretrained model's validation split does not
    come from its training images, ``prune.enabled`` names groups of the configured base model, and they can save
    ``budget`` (if given) at all, with weights at ``min_bits``.

    The data is read (its channels and classes size the model; inside a command it is then reused, see
    :func:`psvit.data.remember_splits`) but nothing is trained or written; the checks are
    the ones every command makes again on the trained base (``select_groups``, ``MemoryModel.check_feasible``).
    """
    from psvit.allocation import MemoryModel, select_groups
    from psvit.errors import DataError
    from psvit.train.base import base_splits, model_config
    from psvit.workflow import plan

    constraints, enabled = plan(cfg)
    grid = list(cfg.sensitivity.grid) if "sensitivity" in cfg else []
    bad = [r for r in grid if isinstance(r, bool) or not isinstance(r, (int, float)) or not 0 < r <= 1]
    if bad or ("sensitivity" in cfg and not grid):
        raise ConfigError(f"sensitivity.grid must be keep ratios in (0, 1], got {grid}")
    model_cfg, data_cfg = config_sections(cfg, "model", "data")
    splits = base_splits(model_cfg, data_cfg)
    if splits.leak:  # a pretrained model's validation from its training images (checked before any work)
        raise DataError(splits.leak)
    arch = model_config(model_cfg, splits)
    memory = MemoryModel(model_cfg.get("name", "spikformer"), arch, constraints)
    groups = select_groups(memory.groups, enabled)
    if budget is not None:
        memory.check_feasible(budget, groups, {g.name: min_bits for g in groups})
