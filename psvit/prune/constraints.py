"""How many channels a keep ratio keeps: one exact rule, shared by ``width_config`` and ``prune``.

For a group of ``w`` channels in ``h`` heads (``w_h = w / h`` per head) and keep ratio ``r`` in [0, 1]:

* ``r == 1`` keeps every channel;
* otherwise each head keeps ``k_h = clamp(round_to * floor(r * w_h / round_to + 1/2), lo, w_h)`` channels, where
  ``lo = min(w_h, round_up(ceil(min_channels / h), round_to))`` (the floor, itself a multiple of ``round_to``).

Every head keeps the same number of channels, so ``q``/``k``/``v`` stay split into equal heads. A head that
would keep 0 channels (possible only with ``min_channels=0``) is an error.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from psvit.errors import ConfigError
from psvit.prune.groups import Group


@dataclass(frozen=True)
class PruneConstraints:
    """``min_channels``: the fewest channels a group keeps (spread over its heads); ``round_to``: kept channels
    per head are a multiple of this (8 suits most hardware). Build from a config dict: ``PruneConstraints(**cfg)``.
    """

    min_channels: int = 1
    round_to: int = 1

    def __post_init__(self) -> None:
        for field, low in (("min_channels", 0), ("round_to", 1)):
            value = getattr(self, field)
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"prune.{field} must be an integer >= {low}, got {value!r}")


def _check_ratio(name: str, ratio: object) -> float:
    if isinstance(ratio, bool) or not isinstance(ratio, (int, float)) or not 0.0 <= ratio <= 1.0:
        raise ConfigError(f"keep ratio for group {name!r} must be a number in [0, 1], got {ratio!r}")
    return float(ratio)


@dataclass(frozen=True)
class KeepRule:
    """The module docstring's rule for one group, with its floor worked out once: ``rule(ratio)`` is the number of
    channels each head keeps (a search applies it millions of times)."""

    name: str
    head_width: int
    floor: int  #: ``lo``: the fewest channels a head keeps below ratio 1
    step: int  #: ``round_to``

    def __call__(self, ratio: float) -> int:
        ratio = _check_ratio(self.name, ratio)
        w = self.head_width
        if ratio == 1.0:
            return w
        k = min(w, max(self.floor, self.step * math.floor(ratio * w / self.step + 0.5)))
        if k == 0:
            raise ConfigError(
                f"keep ratio {ratio} for group {self.name!r} leaves a head with 0 of its {w} channels; "
                "raise the ratio or set prune.min_channels >= 1"
            )
        return k


def keep_rule(group: Group, constraints: PruneConstraints) -> KeepRule:
    """The :class:`KeepRule` of ``group`` under ``constraints``."""
    w, step = group.head_width, constraints.round_to
    floor = min(w, step * math.ceil(math.ceil(constraints.min_channels / group.heads) / step))
    return KeepRule(group.name, w, floor, step)


def kept_per_head(group: Group, ratio: float, constraints: PruneConstraints) -> int:
    """Channels each head of ``group`` keeps at keep ratio ``ratio`` (the module docstring's rule)."""
    return keep_rule(group, constraints)(ratio)


def check_known(groups: Sequence[Group], ratios: Mapping[str, float]) -> None:
    """Raise :class:`ConfigError` naming the first group of ``ratios`` that is not one of ``groups``."""
    names = {g.name for g in groups}
    unknown = [name for name in ratios if name not in names]
    if unknown:
        raise ConfigError(f"unknown prune group {unknown[0]!r}; groups: {', '.join(g.name for g in groups)}")


def kept_channels(
    groups: Sequence[Group], ratios: Mapping[str, float], constraints: PruneConstraints
) -> dict[str, int]:
    """Kept channels per head for every group (ratio 1.0 for groups missing from ``ratios``).

    Raises :class:`ConfigError` naming the group for an unknown group or a ratio outside [0, 1].
    """
    check_known(groups, ratios)
    return {g.name: kept_per_head(g, ratios.get(g.name, 1.0), constraints) for g in groups}
