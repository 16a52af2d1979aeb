"""PSViT step 3: fine-grained per-group keep ratios from the sensitivity table, for a memory budget; and the same
greedy rule over bit-widths too.

The rule (greedy on accuracy drop per byte saved):

1. Every enabled group starts at keep ratio 1 and may step down a ladder of ratios ``1, 1 - s, 1 - 2s, ...``
   (``s = step``, default 1/32) to 0, where the constraints' minimum channel count takes over.
2. A group's predicted accuracy drop at any ratio is its sensitivity curve made monotone, linearly
   interpolated between grid points and extrapolated below the lowest one
   (:meth:`~psvit.sensitivity.SensitivityTable.predicted_drop`). Drops of different groups add up.
3. While the exact memory saving (from the width config) is below the budget, take the one step, over all
   groups, with the smallest increase in predicted drop per byte it saves; ties go to the larger saving.
   Steps that save no byte (rounding) are taken with the next one.

:func:`greedy_allocation` adds a second kind of step when it is given bit-width choices: a group's weights one
bit-width down the ladder of choices that store smaller (3 bits is stored in 4, so 4 -> 3 saves nothing and is
skipped), at the increase of the bits grid's predicted drop
(:meth:`~psvit.sensitivity.SensitivityTable.predicted_bits_drop`), which adds to the width drop. Steps of both
kinds compete on the same drop per byte. With ``widths=False`` only bit steps are taken: quantization alone, in
the greedy manner of AQ4SViT's per-layer bit search.
"""

from __future__ import annotations

from collections.abc import Sequence

from psvit.budget import Bits, InfeasibleBudget, MemoryModel
from psvit.prune import Group
from psvit.quant.packing import container_bits
from psvit.quant.quantizer import FLOAT_BITS
from psvit.sensitivity.table import SensitivityTable

DEFAULT_STEP = 1 / 32


def sensitivity_greedy(
    memory: MemoryModel,
    groups: Sequence[Group],
    table: SensitivityTable,
    budget: float,
    step: float = DEFAULT_STEP,
    bits: Bits = None,
) -> dict[str, float]:
    """Per-group keep ratios meeting ``budget`` with the least predicted accuracy drop (see module doc), for
    weights stored at bit-widths ``bits`` (the widths that are left to prune once they are counted)."""
    memory.check_feasible(budget, groups, bits)
    ratios, _ = greedy_allocation(memory, groups, table, budget, step, bits=bits)
    return ratios


def bit_ladder(choices: Sequence[int]) -> list[int]:
    """``choices`` from the widest down, keeping only the bit-widths that store smaller than the one above."""
    ladder = sorted(set(choices), reverse=True)
    return [b for i, b in enumerate(ladder) if i == 0 or container_bits(b) < container_bits(ladder[i - 1])]


def greedy_allocation(
    memory: MemoryModel,
    groups: Sequence[Group],
    table: SensitivityTable,
    budget: float,
    step: float = DEFAULT_STEP,
    bits: Bits = None,
    choices: Sequence[int] | None = None,
    widths: bool = True,
) -> tuple[dict[str, float], dict[str, int]]:
    """Keep ratios and bit-widths per group meeting ``budget`` with the least predicted drop (module doc).

    Without ``choices`` the bit-widths stay at ``bits`` (float32 where absent) and only widths step down; with
    ``choices`` every group starts at the widest one and also steps down the :func:`bit_ladder`. ``widths=False``
    keeps every group unpruned. Raises :class:`InfeasibleBudget` when no step is left before the budget holds."""
    ladder = bit_ladder(choices) if choices else []
    current_bits = dict(bits or {})
    if ladder:
        current_bits.update({g.name: ladder[0] for g in groups})
    n_steps = round(1 / step)
    level = {g.name: n_steps for g in groups}  # ratio = level / n_steps
    ratios = {g.name: 1.0 for g in groups}
    current = memory.bytes(ratios, current_bits)
    target = memory.base_bytes * (1 - budget)
    while current > target:
        steps = []  # (drop increase, bytes after, group, width level, bit-width) of each group's next step
        for g in groups:
            b = current_bits.get(g.name, FLOAT_BITS)
            if widths:
                lvl = level[g.name]
                # walk down until this group saves at least one byte (or hits the bottom of its ladder)
                while lvl > 0:
                    lvl -= 1
                    lower_ratio = lvl / n_steps
                    after = memory.bytes({**ratios, g.name: lower_ratio}, current_bits)
                    if after < current:
                        drop = table.predicted_drop(g.name, lower_ratio) - table.predicted_drop(g.name, ratios[g.name])
                        steps.append((drop, after, g.name, lvl, b))
                        break
            if b in ladder and b != ladder[-1]:
                lower = ladder[ladder.index(b) + 1]
                after = memory.bytes(ratios, {**current_bits, g.name: lower})
                if after < current:
                    drop = table.predicted_bits_drop(g.name, lower) - table.predicted_bits_drop(g.name, b)
                    steps.append((drop, after, g.name, level[g.name], lower))
        # least drop per byte saved, ties to the larger saving, then to the first group (min is stable)
        best = min(steps, key=lambda st: (max(st[0], 0.0) / (current - st[1]), st[1]), default=None)
        if best is None:
            raise InfeasibleBudget(
                f"budget {budget} is out of reach: at most {memory.saving(ratios, current_bits):.4f} saved "
                f"{'by quantization alone' if not widths else 'under the constraints'}"
            )
        _, current, name, lvl, b = best
        level[name] = lvl
        ratios[name] = lvl / n_steps
        if b != FLOAT_BITS:
            current_bits[name] = b
    return ratios, current_bits


def predicted_total_drop(table: SensitivityTable, ratios: dict[str, float]) -> float:
    """Sum of the groups' predicted accuracy drops (the additivity assumption of the greedy rule)."""
    return sum(table.predicted_drop(name, r) for name, r in ratios.items())
