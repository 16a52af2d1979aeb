"""Spike-driven Transformer v1 (Yao et al., NeurIPS 2023) with the official module names and state_dict layout.

As in BICLab's reference code (``model/spikeformer.py``, ``module/ms_conv.py``, ``module/sps.py``, static
images, ``spike_mode="lif"``):

* ``MS_SPS`` stem: conv-BN-LIF stages (max-pooled after the LIF where ``pooling_stat`` has a ``1``), except the
  last one, which is conv-BN-(pool) *before* its LIF; a conv relative position embedding is added to the
  last stage's membrane input (``x_feat``). The stream between blocks is membrane potential, not spikes.
* Spike-driven self-attention (``MS_SSA_Conv``): ``shortcut_lif`` on the stream, q/k/v 1x1 conv-BN-LIF, then
  ``q * LIF_0.5(sum over tokens of k * v)`` (element-wise: no matmul, no softmax), a 1x1 conv-BN ``proj`` and
  a membrane shortcut ``x + attn``.
* MLP (``MS_MLP_Conv``): ``LIF -> 1x1 conv-BN -> LIF -> 1x1 conv-BN``, plus a membrane shortcut.
* Head: mean over tokens, ``head_lif``, a linear layer per time step, then the mean over time steps.

``talking_heads`` (a ``Conv1d(heads, heads, 1)``) is in the official state_dict but never called; the official
``attn_lif`` and ``rpe_lif`` modules hold no state and are never called either, so they are left out.

Since q, k and v meet only in element-wise products, channel ``c`` of q, k, v and proj's input are one coupled
width (``qkv_dims``), independent of the heads. The official MLP adds an inner residual when its hidden width
equals ``embed_dim`` (``mlp_ratio=1``): that case is rejected, so pruning can never switch it on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from psvit.errors import ConfigError
from psvit.models.channels import Group, Spikes, consumer, producer
from psvit.models.lif import lif
from psvit.models.registry import IMAGENET_DATA, register_model, register_variant
from psvit.models.stem import STEM, check_patch, check_widths, stem_embed_slices, stem_groups

TALKING_HEADS_THRESHOLD = 0.5


def _steps(fn: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Apply a per-image layer to a ``(T, B, ...)`` sequence."""
    y = fn(x.flatten(0, 1))
    return y.reshape(*x.shape[:2], *y.shape[1:])


class MS_SPS(nn.Module):
    """The stem: four conv-BN stages (LIF after the first three, pooled per ``pooling_stat``) and the rpe."""

    def __init__(self, in_channels: int, dims: Sequence[int], pooling_stat: str) -> None:
        super().__init__()
        self.pooling_stat = pooling_stat
        widths = [in_channels, *dims]
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            setattr(self, f"proj_conv{sfx}", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{sfx}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"proj_lif{sfx}", lif())
            setattr(self, f"maxpool{sfx}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        self.rpe_conv = nn.Conv2d(dims[-1], dims[-1], 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(dims[-1])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` images to the membrane stream ``(T, B, D, H', W')``."""
        for i in range(3):
            sfx = "" if i == 0 else str(i)
            conv, bn = getattr(self, f"proj_conv{sfx}"), getattr(self, f"proj_bn{sfx}")
            x = getattr(self, f"proj_lif{sfx}")(_steps(bn, _steps(conv, x)))
            if self.pooling_stat[i] == "1":
                x = _steps(getattr(self, f"maxpool{sfx}"), x)
        x = _steps(self.proj_bn3, _steps(self.proj_conv3, x))
        if self.pooling_stat[3] == "1":
            x = _steps(self.maxpool3, x)
        x_feat = x
        x = _steps(self.rpe_bn, _steps(self.rpe_conv, self.proj_lif3(x)))
        return x + x_feat


class MS_SSA_Conv(nn.Module):
    """Spike-driven self-attention with its membrane shortcut: ``x + proj(q * LIF(sum_tokens(k * v)))``."""

    def __init__(self, dim: int, num_heads: int, qkv_dim: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.shortcut_lif = lif()
        for name in "qkv":
            setattr(self, f"{name}_conv", nn.Conv2d(dim, qkv_dim, kernel_size=1, stride=1, bias=False))
            setattr(self, f"{name}_bn", nn.BatchNorm2d(qkv_dim))
            setattr(self, f"{name}_lif", lif())
        self.talking_heads = nn.Conv1d(num_heads, num_heads, kernel_size=1, stride=1, bias=False)
        self.talking_heads_lif = lif(v_threshold=TALKING_HEADS_THRESHOLD)
        self.proj_conv = nn.Conv2d(qkv_dim, dim, kernel_size=1, stride=1)
        self.proj_bn = nn.BatchNorm2d(dim)

    def _spikes(self, name: str, x: torch.Tensor) -> torch.Tensor:
        conv, bn, neuron = (getattr(self, f"{name}_{part}") for part in ("conv", "bn", "lif"))
        return neuron(_steps(bn, _steps(conv, x)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.shortcut_lif(x)
        q, k, v = (self._spikes(name, s) for name in "qkv")
        kv = self.talking_heads_lif((k * v).sum(dim=(3, 4), keepdim=True))  # per channel, over tokens
        return x + _steps(self.proj_bn, _steps(self.proj_conv, q * kv))


class MS_MLP_Conv(nn.Module):
    """``x + BN(fc2(LIF(BN(fc1(LIF(x))))))`` with 1x1 convs."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
        self.fc1_bn = nn.BatchNorm2d(hidden)
        self.fc1_lif = lif()
        self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
        self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc2_lif = lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _steps(self.fc1_bn, _steps(self.fc1_conv, self.fc1_lif(x)))
        return x + _steps(self.fc2_bn, _steps(self.fc2_conv, self.fc2_lif(y)))


class MS_Block_Conv(nn.Module):
    def __init__(self, dim: int, num_heads: int, qkv_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.attn = MS_SSA_Conv(dim, num_heads, qkv_dim)
        self.mlp = MS_MLP_Conv(dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attn(x))


def resolve_config(
    *,
    img_size: int = 32,
    pooling_stat: str = "0011",
    patch_size: int | None = None,
    embed_dim: int = 256,
    num_heads: int = 8,
    mlp_ratio: float = 4.0,
    depth: int = 2,
    T: int = 4,
    in_channels: int = 3,
    num_classes: int = 10,
    sps_dims: Sequence[int] | None = None,
    qkv_dims: Sequence[int] | None = None,
    mlp_dims: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Validate a Spike-driven Transformer config and fill in default widths (stem at embed/8, /4, /2; q/k/v at
    embed; MLP hidden at ``int(embed * mlp_ratio)``); the result fully describes the model."""
    if len(pooling_stat) != 4 or set(pooling_stat) - {"0", "1"}:
        raise ConfigError(f"model.pooling_stat must be 4 characters of 0/1 (one per stem stage), got {pooling_stat!r}")
    patch_size = check_patch(img_size, patch_size, 2 ** pooling_stat.count("1"), f"pooling_stat {pooling_stat}")
    if int(embed_dim * mlp_ratio) == embed_dim:
        raise ConfigError(
            "model.mlp_ratio must not give an MLP as wide as embed_dim (its inner residual is not supported)"
        )
    widths = {
        "sps_dims": (
            [int(w) for w in sps_dims] if sps_dims is not None else [embed_dim // 8, embed_dim // 4, embed_dim // 2]
        ),
        "qkv_dims": [int(w) for w in qkv_dims] if qkv_dims is not None else [embed_dim] * depth,
        "mlp_dims": [int(w) for w in mlp_dims] if mlp_dims is not None else [int(embed_dim * mlp_ratio)] * depth,
    }
    check_widths(widths, depth, ("qkv_dims", "mlp_dims"))
    if min(widths["sps_dims"] + widths["qkv_dims"] + widths["mlp_dims"] + [embed_dim, num_heads]) <= 0:
        raise ConfigError("every width of a Spike-driven Transformer config must be positive")
    return {
        "img_size": int(img_size),
        "pooling_stat": str(pooling_stat),
        "patch_size": int(patch_size),
        "embed_dim": int(embed_dim),
        "num_heads": int(num_heads),
        "mlp_ratio": float(mlp_ratio),
        "depth": int(depth),
        "T": int(T),
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        **widths,
    }


def spike_driven_groups(cfg: dict[str, Any]) -> list[Group]:
    """Prunable widths: ``sps.stage{0,1,2}``, ``embed`` (the membrane stream: last stem stage, rpe, every
    block's q/k/v input, proj output, fc1 input, fc2 output and the head input), then per block
    ``block{i}.attn.qkv`` (q, k, v and proj's input) and ``block{i}.mlp``."""
    groups = stem_groups(cfg)
    embed = stem_embed_slices()
    embed_spikes = [Spikes(f"{STEM}.proj_lif3", 2)]
    blocks = []
    for i in range(cfg["depth"]):
        attn, mlp = f"block.{i}.attn", f"block.{i}.mlp"
        embed += [consumer(f"{attn}.{name}_conv") for name in "qkv"]
        embed += [*producer(f"{attn}.proj_conv", f"{attn}.proj_bn", True), consumer(f"{mlp}.fc1_conv")]
        embed += producer(f"{mlp}.fc2_conv", f"{mlp}.fc2_bn", True)
        embed_spikes += [Spikes(f"{attn}.shortcut_lif", 2), Spikes(f"{mlp}.fc1_lif", 2)]
        qkv = [s for name in "qkv" for s in producer(f"{attn}.{name}_conv", f"{attn}.{name}_bn", False)]
        blocks += [
            Group(
                f"block{i}.attn.qkv",
                "qkv",
                cfg["qkv_dims"][i],
                1,
                "qkv_dims",
                i,
                (*qkv, consumer(f"{attn}.proj_conv")),
                tuple(Spikes(f"{attn}.{name}_lif", 2) for name in "qkv"),
            ),
            Group(
                f"block{i}.mlp",
                "mlp",
                cfg["mlp_dims"][i],
                1,
                "mlp_dims",
                i,
                (*producer(f"{mlp}.fc1_conv", f"{mlp}.fc1_bn", True), consumer(f"{mlp}.fc2_conv")),
                (Spikes(f"{mlp}.fc2_lif", 2),),
            ),
        ]
    embed.append(consumer("head"))
    embed_spikes.append(Spikes("head_lif", 2))
    groups.append(Group("embed", "embed", cfg["embed_dim"], 1, "embed_dim", None, tuple(embed), tuple(embed_spikes)))
    return groups + blocks


@register_model(
    "sdt",
    resolve_config=resolve_config,
    groups=spike_driven_groups,
    kinds=("sps", "embed", "qkv", "mlp"),
    analog_layers=("patch_embed.proj_conv",),  # the head is fed by head_lif's spikes
)
class SpikeDrivenTransformer(nn.Module):
    """Spike-driven Transformer v1 with explicit per-layer widths; ``self.config`` rebuilds it."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = resolve_config(**config)
        self.config = cfg
        self.T = cfg["T"]
        self.patch_embed = MS_SPS(cfg["in_channels"], [*cfg["sps_dims"], cfg["embed_dim"]], cfg["pooling_stat"])
        self.block = nn.ModuleList(
            MS_Block_Conv(cfg["embed_dim"], cfg["num_heads"], qkv, m)
            for qkv, m in zip(cfg["qkv_dims"], cfg["mlp_dims"])
        )
        self.head_lif = lif()
        self.head = nn.Linear(cfg["embed_dim"], cfg["num_classes"])
        for m in self.modules():  # the official initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` images to per-step features ``(T, B, D)`` (mean over tokens)."""
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.flatten(3).mean(3)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """``head_lif``, the linear classifier at every time step, then the mean over time steps."""
        return self.head(self.head_lif(features)).mean(0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)``, repeated over ``T`` steps, to logits ``(B, classes)``; reset neuron state
        between batches (``spikingjelly...functional.reset_net``)."""
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        return self.forward_head(self.forward_features(x))


#: A small Spike-driven Transformer for 16-px digits (conf/model/sdt_tiny.yaml).
register_variant(
    "sdt_tiny",
    "sdt",
    data={"img_size": 16},
    img_size=16,
    pooling_stat="0011",
    embed_dim=64,
    num_heads=4,
    mlp_ratio=4.0,
    depth=2,
    T=4,
)
#: The Spike-driven Transformer 8-512 on 224-px ImageNet.
register_variant(
    "sdt_imagenet",
    "sdt",
    data=IMAGENET_DATA,
    img_size=224,
    pooling_stat="1111",
    embed_dim=512,
    num_heads=8,
    mlp_ratio=4.0,
    depth=8,
    T=4,
)
