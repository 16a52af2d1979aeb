"""Moving any keep-ratio dict onto a memory saving exactly: how a search never wastes a trial on the budget.

A *projection* slides the ratios along a direction ``u >= 0`` (per group), ``r(s) = clip(r - s * u, 0, 1)``,
and picks the smallest ``s`` (negative ``s`` gives channels back) whose exact saving reaches the target. The
saving grows with ``s``, and channel counts are integers, so bisection finds the exact threshold: the result
saves at least the target and giving back any more would miss it (up to the bisection's resolution).

The result is written as kept fractions (kept channels per head / head width), which name the pruned model's
shape exactly: two ratio dicts with the same kept fractions prune to the same widths.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from psvit.budget import Bits, MemoryModel

#: Bisection steps on ``s``: far finer than one channel of the widest group.
_STEPS = 40


def kept_fractions(memory: MemoryModel, ratios: Mapping[str, float], names: Sequence[str]) -> dict[str, float]:
    """``ratios`` written as the fraction of each group's channels the pruned model keeps (prunes identically)."""
    kept = memory.kept(ratios)
    widths = {g.name: g.head_width for g in memory.groups}
    return {n: kept[n] / widths[n] for n in names}


def project_to_saving(
    memory: MemoryModel,
    ratios: Mapping[str, float],
    target: float,
    direction: Mapping[str, float] | None = None,
    bits: Bits = None,
) -> dict[str, float] | None:
    """``ratios`` moved along ``direction`` (default: proportional to each group's pruned fraction, plus a
    little of every group so that unpruned groups can move too) to the smallest change that saves ``target``
    with the weights at bit-widths ``bits`` (held fixed: a projection over both axes moves the widths for the
    bit-widths it is given).

    Only the groups in ``ratios`` move. Returns kept fractions, or None when the direction cannot reach the
    target (every moving group at its minimum).
    """
    names = list(ratios)
    if direction is None:
        direction = {n: (1.0 - ratios[n]) + 0.05 for n in names}
    moving = {n: float(direction.get(n, 0.0)) for n in names if direction.get(n, 0.0) > 0}
    if not moving:
        return None

    def at(s: float) -> dict[str, float]:
        return {n: min(1.0, max(0.0, ratios[n] - s * moving.get(n, 0.0))) for n in names}

    reach = 1.0 / min(moving.values())  # beyond +-reach every moving group is at 0 or 1
    lo, hi = -reach, reach
    kept_hi = memory.kept(at(hi))
    if memory.kept_saving(kept_hi, bits) < target:
        return None
    kept_lo = memory.kept(at(lo))
    if memory.kept_saving(kept_lo, bits) >= target:
        return kept_fractions(memory, at(lo), names)
    for _ in range(_STEPS):
        if _adjacent(kept_lo, kept_hi, memory.constraints.round_to):
            break  # every s in (lo, hi] keeps kept_lo or kept_hi, and kept_lo misses: the bisection's end keeps kept_hi
        mid = 0.5 * (lo + hi)
        kept_mid = memory.kept(at(mid))
        if memory.kept_saving(kept_mid, bits) >= target:
            hi, kept_hi = mid, kept_mid
        else:
            lo, kept_lo = mid, kept_mid
    return kept_fractions(memory, at(hi), names)


def _adjacent(a: Mapping[str, int], b: Mapping[str, int], step: int) -> bool:
    """``a`` and ``b`` differ in one group, by at most ``step`` channels per head, so no kept count lies between.

    Along a projection each group's kept count is monotone in ``s``, and below a group's full width every count it
    can keep is a multiple of ``step`` (:mod:`psvit.prune.constraints`), so no ``s`` between two such settings
    keeps a third."""
    differ = [n for n in a if a[n] != b[n]]
    return len(differ) == 1 and abs(a[differ[0]] - b[differ[0]]) <= step


def repair_to_budget(
    memory: MemoryModel, ratios: Mapping[str, float], budget: float, bits: Bits = None
) -> dict[str, float]:
    """``ratios`` if they meet ``budget`` (at bit-widths ``bits``); else the proportional projection onto it (a
    sample that misses the budget is pruned deeper along its own direction instead of being thrown away)."""
    if memory.saving(ratios, bits) >= budget:
        return dict(ratios)
    projected = project_to_saving(memory, ratios, budget, bits=bits)
    if projected is None:  # unreachable along its own direction: fall back to pruning every group evenly
        projected = project_to_saving(memory, ratios, budget, {n: 1.0 for n in ratios}, bits)
    if projected is None:
        raise ValueError(f"budget {budget} is beyond the reach of groups {sorted(ratios)}")
    return projected
