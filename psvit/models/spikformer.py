"""Spikformer (Zhou et al., ICLR 2023) with the official module names and forward semantics.

Two variants, as in the reference code:

* ``cifar``: SSA and MLP use ``nn.Linear`` + ``BatchNorm1d`` on token-major ``(T, B, N, C)`` tensors; the SPS
  stem max-pools after stages 2 and 3 (patch 4).
* ``imagenet``: SSA uses ``Conv1d(k=1)`` (q/k/v without bias) and the MLP ``Conv2d(1x1)`` + ``BatchNorm2d`` on
  channel-major ``(T, B, C, H, W)`` tensors; the stem max-pools after all four stages (patch 16).

``stem_pool`` says where the stem max-pools: ``after_lif`` (the official code: on spikes) or ``before_lif`` (on
BN outputs, as spikingjelly 2.0's own ``spikformer_ti``/``spikformer_s`` do; see
:mod:`psvit.models.spikingjelly_convert`).

Every width that structured pruning can change is an explicit constructor argument (``sps_dims``, ``qk_dims``,
``v_dims``, ``mlp_dims`` and ``embed_dim``), so a pruned model is an ordinary Spikformer described by its
config. The defaults reproduce the unpruned architecture and the official ``state_dict`` layout.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from psvit.errors import ConfigError
from psvit.models.channels import Group, Spikes, consumer, producer, unused
from psvit.models.lif import lif
from psvit.models.registry import IMAGENET_DATA, register_model, register_variant
from psvit.models.stem import STEM, check_patch, check_widths, stem_embed_slices, stem_groups

VARIANTS = ("cifar", "imagenet")
#: Stem stages followed by MaxPool2d(3, 2, 1), per variant (stage 3 is the last, embed_dim-wide one).
POOLED_STAGES = {"cifar": (2, 3), "imagenet": (0, 1, 2, 3)}
STEM_POOL = ("after_lif", "before_lif")
ATTN_SCALE = 0.125
ATTN_LIF_THRESHOLD = 0.5


def _bn_tokens(bn: nn.BatchNorm1d, x: torch.Tensor) -> torch.Tensor:
    """BatchNorm1d over the channel axis of a ``(TB, N, C)`` tensor."""
    return bn(x.transpose(-1, -2)).transpose(-1, -2)


class SPS(nn.Module):
    """Spiking Patch Splitting stem: four conv-BN-LIF stages, then a conv relative position embedding."""

    def __init__(self, variant: str, in_channels: int, dims: Sequence[int], stem_pool: str = "after_lif") -> None:
        super().__init__()
        self.variant = variant
        self.pool_before_lif = stem_pool == "before_lif"
        widths = [in_channels, *dims]
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            setattr(self, f"proj_conv{sfx}", nn.Conv2d(widths[i], widths[i + 1], 3, 1, 1, bias=False))
            setattr(self, f"proj_bn{sfx}", nn.BatchNorm2d(widths[i + 1]))
            setattr(self, f"proj_lif{sfx}", lif())
            if i in POOLED_STAGES[variant]:
                setattr(self, f"maxpool{sfx}", nn.MaxPool2d(kernel_size=3, stride=2, padding=1))
        embed_dim = dims[-1]
        self.rpe_conv = nn.Conv2d(embed_dim, embed_dim, 3, 1, 1, bias=False)
        self.rpe_bn = nn.BatchNorm2d(embed_dim)
        self.rpe_lif = lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` image sequence to tokens: ``(T, B, N, D)`` (cifar) or ``(T, B, D, H', W')``."""
        T, B = x.shape[:2]
        x = x.flatten(0, 1)
        for i in range(4):
            sfx = "" if i == 0 else str(i)
            pooled = i in POOLED_STAGES[self.variant]
            x = getattr(self, f"proj_bn{sfx}")(getattr(self, f"proj_conv{sfx}")(x))
            if pooled and self.pool_before_lif:
                x = getattr(self, f"maxpool{sfx}")(x)
            x = getattr(self, f"proj_lif{sfx}")(x.reshape(T, B, *x.shape[1:])).flatten(0, 1)
            if pooled and not self.pool_before_lif:
                x = getattr(self, f"maxpool{sfx}")(x)
        x_feat = x
        x = self.rpe_bn(self.rpe_conv(x))
        x = self.rpe_lif(x.reshape(T, B, *x.shape[1:])).flatten(0, 1)
        x = (x + x_feat).reshape(T, B, *x.shape[1:])
        if self.variant == "cifar":
            x = x.flatten(-2).transpose(-1, -2)
        return x


class SSA(nn.Module):
    """Spiking Self-Attention: ``attn_lif(q @ (k^T @ v) * 0.125)`` per head, no softmax, then a spiking proj.

    ``qk_dim`` (the q and k width) and ``v_dim`` (the v and proj-input width) are totals over heads; each must be
    a multiple of ``num_heads``.
    """

    def __init__(self, variant: str, dim: int, num_heads: int, qk_dim: int, v_dim: int) -> None:
        super().__init__()
        self.variant = variant
        self.num_heads = num_heads
        self.scale = ATTN_SCALE
        if variant == "cifar":
            for name, width in (("q", qk_dim), ("k", qk_dim), ("v", v_dim)):
                setattr(self, f"{name}_linear", nn.Linear(dim, width))
                setattr(self, f"{name}_bn", nn.BatchNorm1d(width))
                setattr(self, f"{name}_lif", lif())
            self.proj_linear = nn.Linear(v_dim, dim)
            self.proj_bn = nn.BatchNorm1d(dim)
        else:
            for name, width in (("q", qk_dim), ("k", qk_dim), ("v", v_dim)):
                setattr(self, f"{name}_conv", nn.Conv1d(dim, width, kernel_size=1, stride=1, bias=False))
                setattr(self, f"{name}_bn", nn.BatchNorm1d(width))
                setattr(self, f"{name}_lif", lif())
            self.proj_conv = nn.Conv1d(v_dim, dim, kernel_size=1, stride=1)
            self.proj_bn = nn.BatchNorm1d(dim)
        self.attn_lif = lif(v_threshold=ATTN_LIF_THRESHOLD)
        self.proj_lif = lif()

    def _heads(self, name: str, x: torch.Tensor, T: int, B: int) -> torch.Tensor:
        """Project ``x`` (flattened over T and B) with q/k/v ``name``; spikes as ``(T, B, heads, N, d)``."""
        if self.variant == "cifar":
            y = _bn_tokens(getattr(self, f"{name}_bn"), getattr(self, f"{name}_linear")(x))  # (TB, N, C')
        else:
            y = getattr(self, f"{name}_bn")(getattr(self, f"{name}_conv")(x)).transpose(-1, -2)  # (TB, N, C')
        y = getattr(self, f"{name}_lif")(y.reshape(T, B, *y.shape[1:]))
        N, C = y.shape[-2:]
        return y.reshape(T, B, N, self.num_heads, C // self.num_heads).permute(0, 1, 3, 2, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        spatial = x.shape[3:]
        x = x.flatten(0, 1)
        if self.variant == "imagenet":
            x = x.flatten(2)  # (TB, C, N)
        q, k, v = (self._heads(name, x, T, B) for name in ("q", "k", "v"))
        y = (q @ (k.transpose(-2, -1) @ v)) * self.scale  # (T, B, heads, N, dv)
        N = y.shape[3]
        y = self.attn_lif(y.transpose(2, 3).reshape(T, B, N, -1))  # heads concatenated: (T, B, N, v_dim)
        y = y.flatten(0, 1)
        if self.variant == "cifar":
            y = _bn_tokens(self.proj_bn, self.proj_linear(y))
            return self.proj_lif(y.reshape(T, B, *y.shape[1:]))
        y = self.proj_bn(self.proj_conv(y.transpose(-1, -2)))
        return self.proj_lif(y.reshape(T, B, y.shape[1], *spatial))


class MLP(nn.Module):
    """Two spiking fully-connected layers: ``LIF(BN(fc2(LIF(BN(fc1(x))))))``."""

    def __init__(self, variant: str, dim: int, hidden: int) -> None:
        super().__init__()
        self.variant = variant
        if variant == "cifar":
            self.fc1_linear = nn.Linear(dim, hidden)
            self.fc1_bn = nn.BatchNorm1d(hidden)
            self.fc2_linear = nn.Linear(hidden, dim)
            self.fc2_bn = nn.BatchNorm1d(dim)
        else:
            self.fc1_conv = nn.Conv2d(dim, hidden, kernel_size=1, stride=1)
            self.fc1_bn = nn.BatchNorm2d(hidden)
            self.fc2_conv = nn.Conv2d(hidden, dim, kernel_size=1, stride=1)
            self.fc2_bn = nn.BatchNorm2d(dim)
        self.fc1_lif = lif()
        self.fc2_lif = lif()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        T, B = x.shape[:2]
        for i in (1, 2):
            bn = getattr(self, f"fc{i}_bn")
            if self.variant == "cifar":
                y = _bn_tokens(bn, getattr(self, f"fc{i}_linear")(x.flatten(0, 1)))
            else:
                y = bn(getattr(self, f"fc{i}_conv")(x.flatten(0, 1)))
            x = getattr(self, f"fc{i}_lif")(y.reshape(T, B, *y.shape[1:]))
        return x


class Block(nn.Module):
    """``x + SSA(x)`` then ``x + MLP(x)``. ``norm1``/``norm2`` are in the official state_dict but never used."""

    def __init__(self, variant: str, dim: int, num_heads: int, qk_dim: int, v_dim: int, mlp_dim: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = SSA(variant, dim, num_heads, qk_dim, v_dim)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLP(variant, dim, mlp_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(x)
        return x + self.mlp(x)


def default_widths(embed_dim: int, mlp_ratio: float, depth: int) -> dict[str, list[int]]:
    """The unpruned widths: SPS stages at embed/8, /4, /2; q/k/v at embed; MLP hidden at embed * mlp_ratio."""
    return {
        "sps_dims": [embed_dim // 8, embed_dim // 4, embed_dim // 2],
        "qk_dims": [embed_dim] * depth,
        "v_dims": [embed_dim] * depth,
        "mlp_dims": [int(embed_dim * mlp_ratio)] * depth,
    }


def resolve_config(
    *,
    variant: str = "cifar",
    img_size: int = 32,
    patch_size: int | None = None,
    embed_dim: int = 384,
    num_heads: int = 12,
    mlp_ratio: float = 4.0,
    depth: int = 4,
    T: int = 4,
    in_channels: int = 3,
    num_classes: int = 10,
    sps_dims: Sequence[int] | None = None,
    qk_dims: Sequence[int] | None = None,
    v_dims: Sequence[int] | None = None,
    mlp_dims: Sequence[int] | None = None,
    stem_pool: str = "after_lif",
) -> dict[str, Any]:
    """Validate a Spikformer config and fill in default widths; the result fully describes the model."""
    if variant not in VARIANTS:
        raise ConfigError(f"model.variant must be one of {VARIANTS}, got {variant!r}")
    if stem_pool not in STEM_POOL:
        raise ConfigError(f"model.stem_pool must be one of {STEM_POOL}, got {stem_pool!r}")
    patch_size = check_patch(img_size, patch_size, 2 ** len(POOLED_STAGES[variant]), f"the {variant} variant")
    widths = default_widths(embed_dim, mlp_ratio, depth)
    given = {"sps_dims": sps_dims, "qk_dims": qk_dims, "v_dims": v_dims, "mlp_dims": mlp_dims}
    for key, value in given.items():
        if value is not None:
            widths[key] = [int(w) for w in value]
    check_widths(widths, depth, ("qk_dims", "v_dims", "mlp_dims"))
    for key in ("qk_dims", "v_dims"):
        for i, w in enumerate(widths[key]):
            if w <= 0 or w % num_heads:
                raise ConfigError(f"model.{key}[{i}]={w} must be a positive multiple of num_heads={num_heads}")
    if min(widths["sps_dims"] + widths["mlp_dims"] + [embed_dim]) <= 0:
        raise ConfigError("every width in a Spikformer config must be positive")
    return {
        "variant": variant,
        "img_size": int(img_size),
        "patch_size": int(patch_size),
        "embed_dim": int(embed_dim),
        "num_heads": int(num_heads),
        "mlp_ratio": float(mlp_ratio),
        "depth": int(depth),
        "T": int(T),
        "in_channels": int(in_channels),
        "num_classes": int(num_classes),
        "stem_pool": stem_pool,
        **widths,
    }


def spikformer_groups(cfg: dict[str, Any]) -> list[Group]:
    """Prunable widths of a resolved config: ``sps.stage{0,1,2}``, ``embed`` (the residual stream: last stem
    stage, rpe, every block's q/k/v input, proj output, fc1 input, fc2 output, the head input and the unused
    LayerNorms), then per block ``block{i}.attn.qk`` (q and k, per head), ``block{i}.attn.v`` (per head, with
    proj's input) and ``block{i}.mlp``."""
    cifar = cfg["variant"] == "cifar"
    op = "linear" if cifar else "conv"  # q/k/v/proj/fc layers are Linear (cifar) or 1x1 Conv (imagenet)
    qkv_bias = cifar  # the imagenet q/k/v convs have no bias
    token_axis = 3 if cifar else 2  # channel axis of block outputs: (T, B, N, C) or (T, B, C, H, W)
    heads = cfg["num_heads"]
    groups = stem_groups(cfg)
    embed = stem_embed_slices()
    embed_spikes = [Spikes(f"{STEM}.proj_lif3", 2), Spikes(f"{STEM}.rpe_lif", 2)]
    blocks = []
    for i in range(cfg["depth"]):
        attn, mlp = f"block.{i}.attn", f"block.{i}.mlp"
        embed += [*unused(f"block.{i}.norm1"), *unused(f"block.{i}.norm2")]
        embed += [consumer(f"{attn}.{name}_{op}") for name in "qkv"]
        embed += [*producer(f"{attn}.proj_{op}", f"{attn}.proj_bn", True), consumer(f"{mlp}.fc1_{op}")]
        embed += producer(f"{mlp}.fc2_{op}", f"{mlp}.fc2_bn", True)
        embed_spikes += [Spikes(f"{attn}.proj_lif", token_axis), Spikes(f"{mlp}.fc2_lif", token_axis)]
        qk = [s for name in "qk" for s in producer(f"{attn}.{name}_{op}", f"{attn}.{name}_bn", qkv_bias)]
        blocks += [
            Group(
                f"block{i}.attn.qk",
                "qk",
                cfg["qk_dims"][i],
                heads,
                "qk_dims",
                i,
                tuple(qk),
                (Spikes(f"{attn}.q_lif", 3), Spikes(f"{attn}.k_lif", 3)),
            ),
            Group(
                f"block{i}.attn.v",
                "v",
                cfg["v_dims"][i],
                heads,
                "v_dims",
                i,
                (*producer(f"{attn}.v_{op}", f"{attn}.v_bn", qkv_bias), consumer(f"{attn}.proj_{op}")),
                (Spikes(f"{attn}.attn_lif", 3),),
            ),
            Group(
                f"block{i}.mlp",
                "mlp",
                cfg["mlp_dims"][i],
                1,
                "mlp_dims",
                i,
                (*producer(f"{mlp}.fc1_{op}", f"{mlp}.fc1_bn", True), consumer(f"{mlp}.fc2_{op}")),
                (Spikes(f"{mlp}.fc1_lif", token_axis),),
            ),
        ]
    embed.append(consumer("head"))
    groups.append(Group("embed", "embed", cfg["embed_dim"], 1, "embed_dim", None, tuple(embed), tuple(embed_spikes)))
    return groups + blocks


@register_model(
    "spikformer",
    resolve_config=resolve_config,
    groups=spikformer_groups,
    kinds=("sps", "embed", "qk", "v", "mlp"),
    # the first stem conv sees pixels; the head sees time-averaged features
    analog_layers=("patch_embed.proj_conv", "head"),
    # SSA computes q @ (k^T @ v): k^T @ v first (k's spikes are its binary operand), then q @ (...)
    matmuls={"kv_matmul": "k_lif", "qkv_matmul": "q_lif"},
)
class Spikformer(nn.Module):
    """Spikformer with explicit per-layer widths. ``self.config`` rebuilds the model via ``create_model``."""

    def __init__(self, **config: Any) -> None:
        super().__init__()
        cfg = resolve_config(**config)
        self.config = cfg
        self.T = cfg["T"]
        self.patch_embed = SPS(
            cfg["variant"], cfg["in_channels"], [*cfg["sps_dims"], cfg["embed_dim"]], cfg["stem_pool"]
        )
        self.block = nn.ModuleList(
            Block(cfg["variant"], cfg["embed_dim"], cfg["num_heads"], qk, v, m)
            for qk, v, m in zip(cfg["qk_dims"], cfg["v_dims"], cfg["mlp_dims"])
        )
        self.head = nn.Linear(cfg["embed_dim"], cfg["num_classes"])

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``(T, B, C, H, W)`` spikes-in to per-step features ``(T, B, D)`` (mean over tokens)."""
        x = self.patch_embed(x)
        for blk in self.block:
            x = blk(x)
        return x.mean(2) if self.config["variant"] == "cifar" else x.flatten(3).mean(3)

    def forward_head(self, features: torch.Tensor) -> torch.Tensor:
        """Mean over time steps, then the linear classifier."""
        return self.head(features.mean(0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Images ``(B, C, H, W)``, repeated over ``T`` steps, to logits ``(B, classes)``.

        The caller resets neuron state between batches (``spikingjelly...functional.reset_net``);
        :func:`psvit.train.predict` does this.
        """
        x = x.unsqueeze(0).repeat(self.T, 1, 1, 1, 1)
        return self.forward_head(self.forward_features(x))


#: CIFAR-10's normalization.
CIFAR10_MEAN, CIFAR10_STD = (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616)
#: The default base model: a small Spikformer for 16-px digits (conf/model/spikformer_tiny.yaml).
register_variant(
    "spikformer_tiny",
    "spikformer",
    data={"img_size": 16},
    variant="cifar",
    img_size=16,
    patch_size=4,
    embed_dim=64,
    num_heads=4,
    mlp_ratio=4.0,
    depth=2,
    T=4,
)
#: Spikformer-4-384 on 32-px CIFAR (the paper's CIFAR model).
register_variant(
    "spikformer_cifar",
    "spikformer",
    data={"img_size": 32, "mean": CIFAR10_MEAN, "std": CIFAR10_STD},
    variant="cifar",
    img_size=32,
    patch_size=4,
    embed_dim=384,
    num_heads=12,
    mlp_ratio=4.0,
    depth=4,
    T=4,
)
#: Spikformer-8-512 on 224-px ImageNet (the PSViT paper's model).
register_variant(
    "spikformer_imagenet",
    "spikformer",
    data=IMAGENET_DATA,
    variant="imagenet",
    img_size=224,
    patch_size=16,
    embed_dim=512,
    num_heads=8,
    mlp_ratio=4.0,
    depth=8,
    T=4,
)
#: spikingjelly 2.0's Spikformer-S and -Ti layouts (stem max-pools before its LIFs).
register_variant(
    "spikformer_sj_s",
    "spikformer",
    data=IMAGENET_DATA,
    variant="imagenet",
    stem_pool="before_lif",
    img_size=224,
    patch_size=16,
    embed_dim=384,
    num_heads=12,
    mlp_ratio=4.0,
    depth=6,
    T=4,
)
register_variant(
    "spikformer_sj_ti",
    "spikformer",
    data=IMAGENET_DATA,
    variant="imagenet",
    stem_pool="before_lif",
    img_size=224,
    patch_size=16,
    embed_dim=256,
    num_heads=8,
    mlp_ratio=4.0,
    depth=4,
    T=4,
)
