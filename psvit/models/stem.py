"""The spiking patch-splitting stem both families share (``patch_embed``: four conv-BN-LIF stages and a
relative position conv): its config checks and its channel groups.

Spikformer and the Spike-driven Transformer name the stem's modules alike, so a family file calls these
helpers instead of repeating them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from psvit.errors import ConfigError
from psvit.models.channels import Group, Slice, Spikes, consumer, producer

#: The stem module and the suffix of stage ``j``'s modules (``proj_conv``, ``proj_conv1``, ...).
STEM = "patch_embed"
STAGE = ("", "1", "2", "3")


def check_patch(img_size: int, patch_size: int | None, expected: int, why: str) -> int:
    """The patch size (``expected``, which the stem's pooling fixes, when None) after checking it and that the
    image size is a multiple of it; ``why`` names what fixes it, for the error."""
    patch_size = expected if patch_size is None else patch_size
    if patch_size != expected:
        raise ConfigError(f"model.patch_size must be {expected} for {why}, got {patch_size}")
    if img_size % patch_size:
        raise ConfigError(f"model.img_size ({img_size}) must be a multiple of the patch size ({patch_size})")
    return patch_size


def check_widths(widths: Mapping[str, list[int]], depth: int, per_block: Sequence[str]) -> None:
    """Three stem widths (the fourth is ``embed_dim``) and one width per block for each key of ``per_block``."""
    if len(widths["sps_dims"]) != 3:
        raise ConfigError(f"model.sps_dims needs 3 stage widths (the 4th is embed_dim), got {widths['sps_dims']}")
    for key in per_block:
        if len(widths[key]) != depth:
            raise ConfigError(f"model.{key} needs one width per block ({depth}), got {widths[key]}")


def stem_groups(cfg: Mapping[str, Any]) -> list[Group]:
    """The groups ``sps.stage{0,1,2}``: each stage's filters, BN and the next stage's input."""
    return [
        Group(
            f"sps.stage{j}",
            "sps",
            cfg["sps_dims"][j],
            1,
            "sps_dims",
            j,
            (
                *producer(f"{STEM}.proj_conv{STAGE[j]}", f"{STEM}.proj_bn{STAGE[j]}", False),
                consumer(f"{STEM}.proj_conv{STAGE[j + 1]}"),
            ),
            (Spikes(f"{STEM}.proj_lif{STAGE[j]}", 2),),
        )
        for j in range(3)
    ]


def stem_embed_slices() -> list[Slice]:
    """The stem's part of the ``embed`` group: the last stage's filters and BN, and the position conv."""
    return [
        *producer(f"{STEM}.proj_conv3", f"{STEM}.proj_bn3", False),
        consumer(f"{STEM}.rpe_conv"),
        *producer(f"{STEM}.rpe_conv", f"{STEM}.rpe_bn", False),
    ]
