"""Prunable widths of a model as named groups of coupled channels.

A :class:`Group` is one width of the model (an entry of its config) together with every tensor slice that must
shrink with it: the producing filters, their bias and BatchNorm, the consuming weights of the next layer(s),
and, for the residual stream, everything that reads or writes it. Groups depend only on the model's config,
so they can be listed without building the model.

Spikformer groups, in order: ``sps.stage{j}`` (j = 0, 1, 2), ``embed``, then per block ``block{i}.attn.qk``,
``block{i}.attn.v`` and ``block{i}.mlp``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from psvit.errors import ConfigError
from psvit.models.spikformer import resolve_config

#: Group kinds. ``qk`` and ``v`` groups are split into equal heads; the others have one head.
KINDS = ("mlp", "qk", "v", "sps", "embed")


@dataclass(frozen=True)
class Slice:
    """One tensor of the ``state_dict`` whose axis ``dim`` is indexed by the group's channels.

    ``role`` says what the tensor is to the channel: ``out`` (its filter: conv/linear weight rows), ``bias``,
    ``bn_weight``/``bn_bias`` (BatchNorm affine), ``bn_stat`` (running mean/var), ``in`` (its outgoing weights
    in a consuming conv/linear) or ``unused`` (the LayerNorms that Spikformer keeps but never calls).
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
    entry is ``config[config_key]`` or, for per-layer widths, ``config[config_key][index]``.
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


def _in(layer: str) -> Slice:
    """The channel's outgoing weights: input axis 1 of a consuming conv/linear."""
    return Slice(f"{layer}.weight", 1, "in")


def _filters(layer: str, bn: str, bias: bool) -> tuple[Slice, ...]:
    """The channel's producers: its conv/linear filter (output axis 0), bias, and BatchNorm."""
    return (
        Slice(f"{layer}.weight", 0, "out"),
        *((Slice(f"{layer}.bias", 0, "bias"),) if bias else ()),
        Slice(f"{bn}.weight", 0, "bn_weight"),
        Slice(f"{bn}.bias", 0, "bn_bias"),
        Slice(f"{bn}.running_mean", 0, "bn_stat"),
        Slice(f"{bn}.running_var", 0, "bn_stat"),
    )


def _spikformer_groups(cfg: dict[str, Any]) -> list[Group]:
    """Groups of a resolved Spikformer config."""
    cifar = cfg["variant"] == "cifar"
    op = "linear" if cifar else "conv"  # q/k/v/proj/fc layers are Linear (cifar) or 1x1 Conv (imagenet)
    qkv_bias = cifar  # the imagenet q/k/v convs have no bias
    token_axis = 3 if cifar else 2  # channel axis of block outputs: (T, B, N, C) or (T, B, C, H, W)
    heads = cfg["num_heads"]
    sps = "patch_embed"
    stage = ["", "1", "2", "3"]  # module-name suffix of stem stage j

    groups = [
        Group(
            f"sps.stage{j}", "sps", cfg["sps_dims"][j], 1, "sps_dims", j,
            (*_filters(f"{sps}.proj_conv{stage[j]}", f"{sps}.proj_bn{stage[j]}", False),
             _in(f"{sps}.proj_conv{stage[j + 1]}")),
            (Spikes(f"{sps}.proj_lif{stage[j]}", 2),),
        )
        for j in range(3)
    ]
    embed = [*_filters(f"{sps}.proj_conv3", f"{sps}.proj_bn3", False), _in(f"{sps}.rpe_conv"),
             *_filters(f"{sps}.rpe_conv", f"{sps}.rpe_bn", False)]
    embed_spikes = [Spikes(f"{sps}.proj_lif3", 2), Spikes(f"{sps}.rpe_lif", 2)]
    blocks = []
    for i in range(cfg["depth"]):
        attn, mlp = f"block.{i}.attn", f"block.{i}.mlp"
        embed += [Slice(f"block.{i}.{n}.{p}", 0, "unused") for n in ("norm1", "norm2") for p in ("weight", "bias")]
        embed += [_in(f"{attn}.{name}_{op}") for name in "qkv"]
        embed += [*_filters(f"{attn}.proj_{op}", f"{attn}.proj_bn", True), _in(f"{mlp}.fc1_{op}")]
        embed += _filters(f"{mlp}.fc2_{op}", f"{mlp}.fc2_bn", True)
        embed_spikes += [Spikes(f"{attn}.proj_lif", token_axis), Spikes(f"{mlp}.fc2_lif", token_axis)]
        qk = [s for name in "qk" for s in _filters(f"{attn}.{name}_{op}", f"{attn}.{name}_bn", qkv_bias)]
        blocks += [
            Group(f"block{i}.attn.qk", "qk", cfg["qk_dims"][i], heads, "qk_dims", i, tuple(qk),
                  (Spikes(f"{attn}.q_lif", 3), Spikes(f"{attn}.k_lif", 3))),
            Group(f"block{i}.attn.v", "v", cfg["v_dims"][i], heads, "v_dims", i,
                  (*_filters(f"{attn}.v_{op}", f"{attn}.v_bn", qkv_bias), _in(f"{attn}.proj_{op}")),
                  (Spikes(f"{attn}.attn_lif", 3),)),
            Group(f"block{i}.mlp", "mlp", cfg["mlp_dims"][i], 1, "mlp_dims", i,
                  (*_filters(f"{mlp}.fc1_{op}", f"{mlp}.fc1_bn", True), _in(f"{mlp}.fc2_{op}")),
                  (Spikes(f"{mlp}.fc1_lif", token_axis),)),
        ]
    embed.append(_in("head"))
    groups.append(Group("embed", "embed", cfg["embed_dim"], 1, "embed_dim", None, tuple(embed), tuple(embed_spikes)))
    return groups + blocks


Config = dict[str, Any]
#: Per model: its config resolver (fills in every width) and its group enumerator (on a resolved config).
_FAMILIES: dict[str, tuple[Callable[..., Config], Callable[[Config], list[Group]]]] = {
    "spikformer": (resolve_config, _spikformer_groups),
}


def resolved_groups(model_name: str, config: Config) -> tuple[Config, list[Group]]:
    """The resolved ``config`` (every width explicit) and its groups."""
    if model_name not in _FAMILIES:
        supported = ", ".join(sorted(_FAMILIES))
        raise ConfigError(f"channel pruning does not support model {model_name!r}; supported: {supported}")
    resolve, enumerate_groups = _FAMILIES[model_name]
    resolved = resolve(**config)
    return resolved, enumerate_groups(resolved)


def list_groups(model: nn.Module | tuple[str, Config]) -> list[Group]:
    """Every prunable width of ``model`` (a psvit model, or its ``(model_name, config)``), in a stable order."""
    name, config = (model.model_name, model.config) if isinstance(model, nn.Module) else model
    return resolved_groups(name, config)[1]
