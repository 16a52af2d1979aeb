"""Coupled-channel groups: how a model family declares the widths that structured pruning may change.

A :class:`Group` is one width of the model (an entry of its config) together with every tensor slice that must
shrink with it: the producing filters, their bias and BatchNorm, the consuming weights of the next layer(s),
and, for a residual stream, everything that reads or writes it. A family lists its groups from its resolved
config alone (see :class:`psvit.models.registry.Family`), so they are known without building the model.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Slice:
    """One tensor of the ``state_dict`` whose axis ``dim`` is indexed by the group's channels.

    ``role`` says what the tensor is to the channel: ``out`` (its filter: conv/linear weight rows), ``bias``,
    ``bn_weight``/``bn_bias`` (BatchNorm affine), ``bn_stat`` (running mean/var), ``in`` (its outgoing weights
    in a consuming conv/linear) or ``unused`` (layers kept in the official state_dict but never called).
    """

    key: str
    dim: int
    role: str


@dataclass(frozen=True)
class Spikes:
    """A LIF module whose output carries the group's channels on axis ``dim`` (for activity-based scores)."""

    module: str
    dim: int


@dataclass(frozen=True)
class Group:
    """A prunable width: its stable ``name``, the config entry it sets and the tensor slices it couples.

    ``width`` channels in ``heads`` equal heads (channel ``c`` is in head ``c // (width // heads)``); the config
    entry is ``config[config_key]`` or, for per-layer widths, ``config[config_key][index]``. ``kind`` is what
    ``prune.enabled`` selects by (e.g. ``mlp``, ``embed``).
    """

    name: str
    kind: str
    width: int
    heads: int
    config_key: str
    index: int | None
    slices: tuple[Slice, ...]
    spikes: tuple[Spikes, ...]

    @property
    def head_width(self) -> int:
        return self.width // self.heads


def consumer(layer: str) -> Slice:
    """The channel's outgoing weights: input axis 1 of a consuming conv/linear ``layer``."""
    return Slice(f"{layer}.weight", 1, "in")


def producer(layer: str, bn: str, bias: bool) -> tuple[Slice, ...]:
    """The channel's producers: its conv/linear filter (output axis 0), bias, and BatchNorm ``bn``."""
    return (
        Slice(f"{layer}.weight", 0, "out"),
        *((Slice(f"{layer}.bias", 0, "bias"),) if bias else ()),
        Slice(f"{bn}.weight", 0, "bn_weight"),
        Slice(f"{bn}.bias", 0, "bn_bias"),
        Slice(f"{bn}.running_mean", 0, "bn_stat"),
        Slice(f"{bn}.running_var", 0, "bn_stat"),
    )


def unused(module: str, dim: int = 0) -> tuple[Slice, ...]:
    """The weight and bias of a layer that is in the state_dict but never called (e.g. Spikformer's norms)."""
    return (Slice(f"{module}.weight", dim, "unused"), Slice(f"{module}.bias", dim, "unused"))


def set_widths(config: Mapping[str, Any], groups: Sequence[Group], widths: Mapping[str, int]) -> dict[str, Any]:
    """A copy of ``config`` with the width of each group named in ``widths`` set to that value."""
    new = {k: list(v) if isinstance(v, list) else v for k, v in config.items()}
    for g in groups:
        if g.name in widths:
            if g.index is None:
                new[g.config_key] = widths[g.name]
            else:
                new[g.config_key][g.index] = widths[g.name]
    return new
