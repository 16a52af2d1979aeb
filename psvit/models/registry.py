"""Model registry: ``register_model`` decorates a model class, ``create_model`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from psvit.errors import ConfigError

_MODELS: dict[str, type[nn.Module]] = {}
_ANALYTICS: dict[str, Analytics] = {}


@dataclass(frozen=True)
class Analytics:
    """A family's closed-form cost functions of its config alone (no model built); :mod:`psvit.cost` uses them.

    ``layer_macs`` gives MACs per image and time step by layer key; ``spike_probes`` maps each spike-driven
    layer key to ``(module name, "input" | "output")``, the tensor whose non-zero fraction is that layer's
    input firing rate. Layer keys without a probe take analog (non-spike) inputs.
    """

    count_params: Callable[[dict[str, Any], bool], int]
    layer_macs: Callable[[dict[str, Any]], dict[str, int]]
    spike_probes: Callable[[dict[str, Any]], dict[str, tuple[str, str]]]


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a model class under ``name``. The class takes its whole config as keyword arguments and
    exposes the resolved config (every width included) as ``self.config``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        _MODELS[name] = cls
        cls.model_name = name
        return cls

    return decorate


def register_analytics(name: str, analytics: Analytics) -> None:
    """Attach a family's :class:`Analytics` to the registered model ``name``."""
    _ANALYTICS[name] = analytics


def get_analytics(name: str) -> Analytics:
    """The :class:`Analytics` of model ``name``."""
    if name not in _ANALYTICS:
        raise ConfigError(f"no cost functions for model {name!r}; known: {', '.join(sorted(_ANALYTICS))}")
    return _ANALYTICS[name]


def list_models() -> list[str]:
    return sorted(_MODELS)


def create_model(name: str, **config: Any) -> nn.Module:
    """Build the registered model ``name`` from its config (see the model's module for the keys)."""
    if name not in _MODELS:
        raise ConfigError(f"unknown model {name!r}; registered models: {', '.join(list_models())}")
    try:
        return _MODELS[name](**config)
    except TypeError as exc:  # an unknown or missing config key
        raise ConfigError(f"bad config for model {name!r}: {exc}") from None
