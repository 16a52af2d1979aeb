"""spikingjelly 2.0's own Spikformer (``spikingjelly.activation_based.model.spikformer``) in psvit's layout.

spikingjelly 2.0 ships ``spikformer_ti`` (256 wide, 8 heads, 4 blocks), ``spikformer_s`` (384, 12, 6) and
``spikformer_cifar10`` (384, 12, 4, patch 4). Their state_dicts differ from the official Spikformer layout:

* the stem is ``patch_embed.stages.{i}.conv_bn.block.{0,1}`` (conv, BN) and ``positional_encoding``; it
  max-pools the BN output *before* the LIF (psvit: ``stem_pool="before_lif"``);
* attention has one fused ``qkv_conv_bn`` (``Conv1d(C, 3C)`` + ``BatchNorm1d(3C)``, q then k then v) and a
  bias-free ``proj_conv_bn``; the MLP is ``fc1``/``fc2`` ``SeqToANNContainer(Conv1d, BatchNorm1d)``, bias-free;
* the head is a multi-step linear layer: logits per time step, ``(T, B, classes)``, with no mean (psvit's
  logits are their mean over ``T``: the head is linear, so the two agree);
* there are no ``norm1``/``norm2`` LayerNorms (psvit keeps them, unused, at their initial values).

:func:`convert_state_dict` maps such a state_dict onto a psvit Spikformer config: ``imagenet`` variant for
patch 16 (1x1 convs), ``cifar`` for patch 4 (linear layers, whose biases become zero), ``stem_pool="before_lif"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from psvit.errors import CheckpointError, ConfigError

#: A key only spikingjelly's layout has.
MARKER = "patch_embed.positional_encoding.conv_bn.block.0.weight"
FORMATS = ("auto", "official", "spikingjelly")
_BN = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_spikingjelly_spikformer(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """Whether ``state_dict`` is in spikingjelly 2.0's Spikformer layout."""
    return MARKER in state_dict


def _bn(sd: Mapping[str, torch.Tensor], src: str, dst: str, part: slice = slice(None)) -> dict[str, torch.Tensor]:
    return {f"{dst}.{p}": sd[f"{src}.{p}"] if p == "num_batches_tracked" else sd[f"{src}.{p}"][part] for p in _BN}


def convert_state_dict(sd: Mapping[str, torch.Tensor], config: Mapping[str, Any]) -> dict[str, torch.Tensor]:
    """``sd`` (spikingjelly 2.0 Spikformer layout) as the state_dict of the psvit Spikformer ``config``.

    Raises :class:`CheckpointError` (one line) when ``config`` cannot hold it exactly: another model family, or
    the official stem order. Shape mismatches surface when the result is loaded with ``strict=True``.
    """
    if config.get("stem_pool") != "before_lif":
        raise CheckpointError(
            "a spikingjelly 2.0 Spikformer checkpoint needs a spikformer model with "
            "model.stem_pool=before_lif (e.g. model=spikformer_sj_ti or spikformer_sj_s)"
        )
    linear = config["variant"] == "cifar"
    out: dict[str, torch.Tensor] = {}

    def dense(src: str, dst: str) -> None:
        """A bias-free ``Conv1d(k=1)`` as psvit's linear / 1x1 conv layer ``dst`` with a zero bias."""
        weight = sd[f"{src}.weight"]
        out[f"{dst}.weight"] = weight[..., 0] if linear else weight
        out[f"{dst}.bias"] = weight.new_zeros(weight.shape[0])

    for i in range(4):
        sfx = "" if i == 0 else str(i)
        stage = f"patch_embed.stages.{i}.conv_bn.block"
        out[f"patch_embed.proj_conv{sfx}.weight"] = sd[f"{stage}.0.weight"]
        out.update(_bn(sd, f"{stage}.1", f"patch_embed.proj_bn{sfx}"))
    rpe = "patch_embed.positional_encoding.conv_bn.block"
    out["patch_embed.rpe_conv.weight"] = sd[f"{rpe}.0.weight"]
    out.update(_bn(sd, f"{rpe}.1", "patch_embed.rpe_bn"))
    op = "linear" if linear else "conv"
    depth = 1 + max(int(k.split(".")[1]) for k in sd if k.startswith("blocks."))
    width = out["patch_embed.rpe_conv.weight"].shape[0]
    for b in range(depth):
        src, dst = f"blocks.{b}", f"block.{b}"
        qkv_weight = sd[f"{src}.attn.qkv_conv_bn.0.weight"]
        dim = qkv_weight.shape[0] // 3
        for j, name in enumerate("qkv"):
            part = slice(j * dim, (j + 1) * dim)
            weight = qkv_weight[part]
            if linear:
                out[f"{dst}.attn.{name}_linear.weight"] = weight[..., 0]
                out[f"{dst}.attn.{name}_linear.bias"] = weight.new_zeros(dim)
            else:
                out[f"{dst}.attn.{name}_conv.weight"] = weight
            out.update(_bn(sd, f"{src}.attn.qkv_conv_bn.1", f"{dst}.attn.{name}_bn", part))
        dense(f"{src}.attn.proj_conv_bn.0", f"{dst}.attn.proj_{op}")
        out.update(_bn(sd, f"{src}.attn.proj_conv_bn.1", f"{dst}.attn.proj_bn"))
        for fc in ("fc1", "fc2"):
            dense(f"{src}.mlp.{fc}.0", f"{dst}.mlp.{fc}_{op}")
            if not linear:  # Conv1d(k=1) -> Conv2d(1x1)
                out[f"{dst}.mlp.{fc}_conv.weight"] = out[f"{dst}.mlp.{fc}_conv.weight"][..., None]
            out.update(_bn(sd, f"{src}.mlp.{fc}.1", f"{dst}.mlp.{fc}_bn"))
        for norm in ("norm1", "norm2"):  # never used; LayerNorm's initial values
            out[f"{dst}.{norm}.weight"] = torch.ones(width)
            out[f"{dst}.{norm}.bias"] = torch.zeros(width)
    out["head.weight"], out["head.bias"] = sd["head.weight"], sd["head.bias"]
    return out


def to_psvit_layout(
    state_dict: Mapping[str, torch.Tensor], model_name: str, config: Mapping[str, Any], checkpoint_format: str = "auto"
) -> dict[str, torch.Tensor]:
    """``state_dict`` in the layout of psvit's ``model_name``: as is for ``official``, converted for
    ``spikingjelly``; ``auto`` tells the two apart by their keys."""
    if checkpoint_format not in FORMATS:
        raise ConfigError(f"model.checkpoint_format must be one of {', '.join(FORMATS)}, got {checkpoint_format!r}")
    if checkpoint_format == "auto":
        checkpoint_format = "spikingjelly" if is_spikingjelly_spikformer(state_dict) else "official"
    if checkpoint_format == "official":
        return dict(state_dict)
    if model_name != "spikformer" or not is_spikingjelly_spikformer(state_dict):
        raise CheckpointError(
            f"not a spikingjelly 2.0 Spikformer checkpoint for a spikformer model (model {model_name!r})"
        )
    return convert_state_dict(state_dict, config)
