"""Structured (channel) pruning: groups of coupled channels, importance scores, and a pruner that builds a
physically narrower model from a keep ratio per group."""

from psvit.prune.constraints import PruneConstraints, kept_channels, kept_per_head
from psvit.prune.groups import Group, Slice, Spikes, group_kinds, list_groups
from psvit.prune.importance import IMPORTANCES, Importance, firing_rates, get_importance
from psvit.prune.pruner import narrowed_config, prune, select_channels, width_config
from psvit.prune.recalibrate import recalibrate_bn

__all__ = [
    "IMPORTANCES",
    "Group",
    "Importance",
    "PruneConstraints",
    "Slice",
    "Spikes",
    "firing_rates",
    "get_importance",
    "group_kinds",
    "kept_channels",
    "kept_per_head",
    "list_groups",
    "narrowed_config",
    "prune",
    "recalibrate_bn",
    "select_channels",
    "width_config",
]
