"""Model registry: ``register_model`` decorates a model class, ``create_model`` builds one by name."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from psvit.errors import ConfigError

_MODELS: dict[str, type[nn.Module]] = {}


def register_model(name: str) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Register a model class under ``name``. The class takes its whole config as keyword arguments and
    exposes the resolved config (every width included) as ``self.config``."""

    def decorate(cls: type[nn.Module]) -> type[nn.Module]:
        _MODELS[name] = cls
        cls.model_name = name
        return cls

    return decorate


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
