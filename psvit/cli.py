"""Helpers shared by the Hydra entry points (``python -m psvit.<entry>``)."""

from __future__ import annotations

from typing import Any

from omegaconf import DictConfig, OmegaConf


def config_sections(cfg: DictConfig, *names: str) -> list[dict[str, Any]]:
    """Resolve the named config groups to plain dicts (interpolations resolved)."""
    return [OmegaConf.to_container(cfg[name], resolve=True) for name in names]
