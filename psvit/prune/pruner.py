"""Structured channel pruning: a keep ratio per group gives a new, physically narrower model.

No masks: the pruned model is an ordinary model of the same family, built from a narrower width config (see
:func:`width_config`) and filled with the kept slices of the original's tensors. The widths follow the rule in
:mod:`psvit.prune.constraints`, so ``width_config`` predicts the pruned model exactly.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping

import torch
from torch import nn

from psvit.models import create_model
from psvit.models.channels import set_widths
from psvit.prune.constraints import PruneConstraints, kept_channels
from psvit.prune.groups import Config, Group, resolved_groups
from psvit.prune.importance import Batches, Importance, get_importance


def narrowed_config(config: Config, groups: list[Group], kept: Mapping[str, int]) -> Config:
    """``config`` with each group's width set to its kept channels (per head times heads)."""
    return set_widths(config, groups, {g.name: kept[g.name] * g.heads for g in groups})


def width_config(
    model_name: str,
    config: Config,
    ratios: Mapping[str, float],
    constraints: PruneConstraints = PruneConstraints(),
) -> Config:
    """The resolved config of the model that :func:`prune` makes with ``ratios``; touches no weights.

    ``ratios`` maps group names (see :func:`~psvit.prune.groups.list_groups`) to keep ratios in [0, 1]; groups
    left out keep everything. With :mod:`psvit.cost`, this gives the exact size of any pruning up front.
    """
    resolved, groups = resolved_groups(model_name, config)
    return narrowed_config(resolved, groups, kept_channels(groups, ratios, constraints))


def select_channels(scores: torch.Tensor, group: Group, per_head: int) -> torch.Tensor:
    """Indices (ascending) of the ``per_head`` best-scored channels of every head; ties keep the lower index."""
    by_head = scores.reshape(group.heads, group.head_width)
    best = torch.argsort(by_head, dim=1, descending=True, stable=True)[:, :per_head].sort(dim=1).values
    offsets = torch.arange(group.heads, device=best.device).unsqueeze(1) * group.head_width
    return (best + offsets).flatten()


def prune(
    model: nn.Module,
    ratios: Mapping[str, float],
    importance: str | Importance = "l1",
    constraints: PruneConstraints = PruneConstraints(),
    data: Batches | None = None,
) -> nn.Module:
    """A new, narrower copy of ``model`` keeping, per group, the channels that ``importance`` scores highest.

    ``model`` is left untouched. ``data`` (a few ``(images, labels)`` batches) feeds data-driven importances.
    The copy is on ``model``'s device and in its train/eval mode.
    """
    score = get_importance(importance)
    config, groups = resolved_groups(model.model_name, model.config)
    kept = kept_channels(groups, ratios, constraints)
    cut = [g for g in groups if kept[g.name] < g.head_width]
    scores = score(model, cut, data) if cut else {}
    selections: dict[str, list[tuple[int, torch.Tensor]]] = defaultdict(list)
    for g in cut:
        index = select_channels(scores[g.name], g, kept[g.name])
        for s in g.slices:
            selections[s.key].append((s.dim, index))
    state = {}
    for key, tensor in model.state_dict().items():
        for dim, index in selections.get(key, ()):
            tensor = tensor.index_select(dim, index.to(tensor.device))
        state[key] = tensor
    pruned = create_model(model.model_name, **narrowed_config(config, groups, kept))
    pruned.load_state_dict(state)
    return pruned.to(next(model.parameters()).device).train(model.training)
