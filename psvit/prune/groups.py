"""Prunable widths of a model as named groups of coupled channels.

Each model family declares its groups in its own file (see :class:`psvit.models.registry.Family` and
:mod:`psvit.models.channels`); this module looks them up for any registered model. Groups depend only on the
model's config, so they can be listed without building the model.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from psvit.models.channels import Group, Slice, Spikes
from psvit.models.registry import get_family, group_kinds

Config = dict[str, Any]

__all__ = ["Config", "Group", "Slice", "Spikes", "group_kinds", "list_groups", "resolved_groups"]


def resolved_groups(model_name: str, config: Config) -> tuple[Config, list[Group]]:
    """The resolved ``config`` (every width explicit) and its groups."""
    family = get_family(model_name)
    resolved = family.resolve_config(**config)
    return resolved, family.groups(resolved)


def list_groups(model: nn.Module | tuple[str, Config]) -> list[Group]:
    """Every prunable width of ``model`` (a psvit model, or its ``(model_name, config)``), in a stable order."""
    name, config = (model.model_name, model.config) if isinstance(model, nn.Module) else model
    return resolved_groups(name, config)[1]
