"""Model families and their named variants behind a registry, as in timm: ``create_model`` builds one by name.

A family is one model file: the model class, decorated with :func:`register_model`, which names its config
resolver and its coupled-channel groups, and the family's named variants (:func:`register_variant`: an
architecture and the data config it expects: input size, normalization, crop). Pruning, cost, allocation and
search only ever look a family up here, so adding one needs no change outside its file. The variants carry the
names of ``conf/model/*.yaml``, which hold the same values (a test compares them).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from torch import nn

from psvit.errors import ConfigError
from psvit.models.channels import Group

Config = dict[str, Any]


@dataclass(frozen=True)
class Family:
    """Everything psvit needs to know about a model family besides its ``nn.Module``.

    * ``resolve_config(**config)``: validates a config and fills in every width (the result rebuilds the model);
    * ``groups(resolved_config)``: the prunable widths as :class:`~psvit.models.channels.Group`, in a stable order;
    * ``kinds``: the group kinds it has (what ``prune.enabled`` selects by);
    * ``analog_layers``: cost-layer keys fed by non-spike values (pixels, time-averaged features): their MACs are
      analog MACs, the others' are synaptic operations;
    * ``matmuls``: names of the matrix products a module computes in its own ``forward`` (not in a child conv or
      linear), in execution order, each mapped to the sibling LIF whose output spikes are its binary operand.
    """

    name: str
    model: type[nn.Module]
    resolve_config: Callable[..., Config]
    groups: Callable[[Config], list[Group]]
    kinds: tuple[str, ...]
    analog_layers: tuple[str, ...] = ()
    matmuls: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Variant:
    """A named architecture of a family (``config``: its keys, without channels and classes) and the data
    config it expects (``data``: ``img_size``, and where fixed, ``mean``/``std``/``crop_pct``)."""

    name: str
    family: str
    config: Mapping[str, Any]
    data: Mapping[str, Any]


#: The data config of the official ImageNet checkpoints: 224 px, ImageNet's normalization, center crop 0.875.
IMAGENET_DATA = MappingProxyType(
    {"img_size": 224, "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225), "crop_pct": 0.875}
)

_FAMILIES: dict[str, Family] = {}
_VARIANTS: dict[str, Variant] = {}


def register_model(
    name: str,
    *,
    resolve_config: Callable[..., Config],
    groups: Callable[[Config], list[Group]],
    kinds: tuple[str, ...],
    analog_layers: tuple[str, ...] = (),
    matmuls: Mapping[str, str] | None = None,
) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator registering a model family under ``name`` (see :class:`Family` for the arguments).

    The class takes its whole config as keyword arguments and exposes the resolved config (every width included)
    as ``self.config``; it gets ``model_name = name``.
    """

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        if name in _FAMILIES:
            raise ValueError(f"model family {name!r} is already registered")
        _FAMILIES[name] = Family(
            name, cls, resolve_config, groups, tuple(kinds), tuple(analog_layers), MappingProxyType(dict(matmuls or {}))
        )
        cls.model_name = name  # type: ignore[attr-defined]
        return cls

    return decorate


def get_family(name: str) -> Family:
    """The registered :class:`Family` called ``name``."""
    if name not in _FAMILIES:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    return _FAMILIES[name]


def register_variant(name: str, family: str, *, data: Mapping[str, Any], **config: Any) -> None:
    """Name an architecture of ``family`` (its config keys) with the data config it expects."""
    if name in _VARIANTS or name in _FAMILIES:
        raise ValueError(f"model {name!r} is already registered")
    _VARIANTS[name] = Variant(name, family, MappingProxyType(dict(config)), MappingProxyType(dict(data)))


def get_variant(name: str) -> Variant:
    """The registered :class:`Variant` called ``name``."""
    if name not in _VARIANTS:
        raise ConfigError(f"unknown model variant {name!r}; variants: {', '.join(sorted(_VARIANTS))}")
    return _VARIANTS[name]


def list_models() -> list[str]:
    """Every name :func:`create_model` takes: the named variants, then the families (configured in full)."""
    return sorted(_VARIANTS) + sorted(_FAMILIES)


def group_kinds() -> tuple[str, ...]:
    """Every group kind of every registered family, in registration order."""
    return tuple(dict.fromkeys(kind for family in _FAMILIES.values() for kind in family.kinds))


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the model ``name``: a variant (``spikformer_cifar``; ``config`` overrides its keys, e.g.
    ``num_classes``) or a family (``spikformer``, configured by ``config``; see the model's module for the keys)."""
    if name in _VARIANTS:
        variant = _VARIANTS[name]
        name, config = variant.family, {**variant.config, **config}
    family = get_family(name)
    try:
        return family.model(**config)
    except TypeError as exc:  # an unknown or missing config key
        raise ConfigError(f"bad config for model {name!r}: {exc}") from None
